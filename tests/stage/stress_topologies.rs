//! Stress tests of whole topologies (docs/DESIGN.md invariant 4, no deadlock; and 1 and 3):
//! fan-in, fan-out, a chain of 8 producer-consumers, `max_demand` 1 everywhere, manual
//! demand, a diamond, a mesh, and producers that emit far beyond demand while being fed
//! from outside. Our machines have 2 cores, so every topology has more threads than
//! cores. Each must finish; every wait has a deadline that fails naming the topology.
//! The stages check the demand rule per subscription and per-producer order from the
//! inside (`support::checked`), and the test checks that every event arrived once.

use crate::support;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;
use stageflow::log::{Level, LogSink};
use stageflow::prelude::*;

use support::checked::*;
use support::TIMEOUT;

/// A whole topology moves many events: it gets twice the usual wait. A deadlock fails
/// here.
const DEADLINE: Duration = Duration::from_secs(TIMEOUT.as_secs() * 2);

type Report = (String, Vec<u64>);

/// One topology under test: its stages, where sinks report, and what must arrive.
struct Topology {
    name: &'static str,
    errors: Arc<Mutex<Vec<String>>>,
    reports: (Sender<Report>, Receiver<Report>),
    producers: Vec<(StageRef<Finite>, u64)>,
    relays: Vec<StageRef<Relay>>,
    sinks: Vec<StageRef<Sink>>,
    started: Instant,
}

impl Topology {
    fn new(name: &'static str) -> Topology {
        Topology {
            name,
            errors: Arc::new(Mutex::new(Vec::new())),
            reports: unbounded(),
            producers: Vec::new(),
            relays: Vec::new(),
            sinks: Vec::new(),
            started: Instant::now(),
        }
    }

    fn log(&self) -> LogSink {
        let e = self.errors.clone();
        LogSink::new(move |r| {
            // Errors only: consumers of one producer with different max_demands draw
            // the DemandDispatcher's (expected) warning.
            if r.level >= Level::Error {
                e.lock().push(r.to_string());
            }
        })
    }

    /// A finite producer, in accumulate mode until `run` (so that a short source cannot
    /// finish before its last consumer subscribes).
    fn producer(&mut self, len: u64, modes: Vec<Emit>) -> StageRef<Finite> {
        let index = self.producers.len() as u64;
        let p = start_producer(
            Finite::new(index, len, modes),
            ProducerOptions::new()
                .buffer_size(BufferSize::Infinite)
                .demand(DemandMode::Accumulate)
                .log(self.log()),
        )
        .unwrap();
        self.producers.push((p.clone(), len));
        p
    }

    fn relay<S: Source<u64>>(
        &mut self,
        upstream: &[&S],
        max: usize,
        min: usize,
    ) -> StageRef<Relay> {
        let mut opts = ProducerConsumerOptions::new().log(self.log());
        for u in upstream {
            opts = opts.subscribe_to(*u, transient(max, min));
        }
        let r = start_producer_consumer(
            Relay::new(format!("{} relay {}", self.name, self.relays.len())),
            opts,
        )
        .unwrap();
        self.relays.push(r.clone());
        r
    }

    fn sink<S: Source<u64>>(&mut self, upstream: &[&S], max: usize, min: usize) {
        let mut opts = ConsumerOptions::new().log(self.log());
        for u in upstream {
            opts = opts.subscribe_to(*u, transient(max, min));
        }
        let who = format!("{} sink {}", self.name, self.sinks.len());
        let s = start_consumer(Sink::new(who, self.reports.0.clone()), opts).unwrap();
        self.sinks.push(s);
    }

    /// A sink that leaves after `n` events.
    fn leaving_sink<S: Source<u64>>(&mut self, upstream: &S, max: usize, min: usize, n: usize) {
        let who = format!("{} leaving sink {}", self.name, self.sinks.len());
        let s = start_consumer(
            Sink::new(who, self.reports.0.clone()).cancel_after(n),
            ConsumerOptions::new()
                .subscribe_to(upstream, transient(max, min))
                .log(self.log()),
        )
        .unwrap();
        self.sinks.push(s);
    }

    fn manual_sink<S: Source<u64>>(&mut self, upstream: &S, each: usize) {
        let who = format!("{} manual sink", self.name);
        let sink = Sink::manual(
            who,
            self.reports.0.clone(),
            Arc::new(AtomicUsize::new(0)),
            each,
        );
        let s = start_consumer(
            sink,
            ConsumerOptions::new()
                .subscribe_to(
                    upstream,
                    SubscribeOptions::new().cancel(CancelMode::Transient),
                )
                .log(self.log()),
        )
        .unwrap();
        self.sinks.push(s);
    }

    fn join<S: Stage>(&self, what: &str, stage: &StageRef<S>) {
        let left = (self.started + DEADLINE).saturating_duration_since(Instant::now());
        match stage.join_timeout(left) {
            Some(Reason::Normal) => {}
            Some(other) => panic!("{}: {what} {stage:?} exited with {other}", self.name),
            None => panic!(
                "{}: {what} {stage:?} still running after {DEADLINE:?} (deadlock?)",
                self.name
            ),
        }
    }

    /// Starts the flow and waits for every stage; checks that each event arrived once.
    fn run(self) {
        self.run_with(Vec::new);
    }

    /// Like `run`, with `feed` running on this thread while the topology works; it
    /// returns the sinks it started, which count like the others.
    fn run_with(mut self, feed: impl FnOnce() -> Vec<StageRef<Sink>>) {
        for (p, _) in &self.producers {
            p.set_demand_mode(DemandMode::Forward).unwrap();
        }
        let more = feed();
        self.sinks.extend(more);
        for s in &self.sinks {
            self.join("consumer", s);
        }
        for r in &self.relays {
            self.join("producer-consumer", r);
        }
        for (p, _) in &self.producers {
            self.join("producer", p);
        }
        let mut seen = BTreeSet::new();
        for _ in &self.sinks {
            let (who, events) = self
                .reports
                .1
                .recv_timeout(TIMEOUT)
                .unwrap_or_else(|_| panic!("{}: a sink did not report", self.name));
            for e in events {
                assert!(seen.insert(e), "{}: {who} received {e} twice", self.name);
            }
        }
        let expected: BTreeSet<u64> = self
            .producers
            .iter()
            .enumerate()
            .flat_map(|(i, (_, len))| (0..*len).map(move |k| i as u64 * SPAN + k))
            .collect();
        assert_eq!(seen.len(), expected.len(), "{}: events lost", self.name);
        assert!(seen == expected, "{}: events lost or foreign", self.name);
        let errors = self.errors.lock();
        assert!(
            errors.is_empty(),
            "{}: {} errors logged: {:?}",
            self.name,
            errors.len(),
            *errors
        );
    }
}

#[test]
fn fan_in_four_producers_into_one_consumer() {
    let mut t = Topology::new("fan-in 4 -> 1");
    let ps: Vec<_> = (0..4)
        .map(|i| t.producer(50_000 + i, vec![Emit::Exactly, Emit::Fewer]))
        .collect();
    let refs: Vec<&StageRef<Finite>> = ps.iter().collect();
    t.sink(&refs, 100, 50);
    t.run();
}

#[test]
fn fan_out_one_producer_to_four_consumers() {
    let mut t = Topology::new("fan-out 1 -> 4");
    let p = t.producer(200_000, vec![Emit::Exactly, Emit::More(100)]);
    for (max, min) in [(1000, 500), (100, 0), (10, 9), (1, 0)] {
        t.sink(&[&p], max, min);
    }
    t.run();
}

#[test]
fn chain_of_8_producer_consumers() {
    let mut t = Topology::new("chain of 8 producer-consumers");
    let p = t.producer(100_000, vec![Emit::Exactly]);
    let mut last = t.relay(&[&p], 100, 50);
    for i in 1..8 {
        let (max, min) = [(100, 50), (7, 3), (1000, 0), (2, 1)][i % 4];
        last = t.relay(&[&last], max, min);
    }
    t.sink(&[&last], 50, 25);
    t.run();
}

#[test]
fn max_demand_1_everywhere() {
    let mut t = Topology::new("max_demand 1 everywhere");
    let p = t.producer(5_000, vec![Emit::Exactly, Emit::Fewer]);
    let r1 = t.relay(&[&p], 1, 0);
    let r2 = t.relay(&[&r1], 1, 0);
    let r3 = t.relay(&[&r2], 1, 0);
    t.sink(&[&r3], 1, 0);
    t.sink(&[&r3], 1, 0);
    t.run();
}

#[test]
fn manual_demand_consumers() {
    let mut t = Topology::new("manual demand");
    let p = t.producer(20_000, vec![Emit::Fewer, Emit::More(3)]);
    t.manual_sink(&p, 7);
    let p2 = t.producer(5_000, vec![Emit::Exactly]);
    let r = t.relay(&[&p2], 10, 5);
    t.manual_sink(&r, 1);
    t.run();
}

#[test]
fn diamond() {
    let mut t = Topology::new("diamond");
    let p = t.producer(50_000, vec![Emit::Exactly]);
    let left = t.relay(&[&p], 10, 5);
    let right = t.relay(&[&p], 100, 0);
    t.sink(&[&left, &right], 20, 10);
    t.run();
}

#[test]
fn mesh_three_by_three_by_three() {
    let mut t = Topology::new("mesh 3 x 3 x 3");
    let ps: Vec<_> = (0..3)
        .map(|_| t.producer(30_000, vec![Emit::Exactly, Emit::More(50), Emit::Fewer]))
        .collect();
    let prefs: Vec<&StageRef<Finite>> = ps.iter().collect();
    let rs: Vec<_> = (0..3).map(|i| t.relay(&prefs, 5 + 20 * i, i)).collect();
    let rrefs: Vec<&StageRef<Relay>> = rs.iter().collect();
    for (max, min) in [(1, 0), (30, 10), (200, 100)] {
        t.sink(&rrefs, max, min);
    }
    t.run();
}

#[test]
fn producers_emitting_without_demand() {
    let mut t = Topology::new("emitting without demand");
    let p = t.producer(100_000, vec![Emit::More(500), Emit::More(1)]);
    let r1 = t.relay(&[&p], 10, 0);
    let r2 = t.relay(&[&r1], 3, 1);
    t.sink(&[&r2], 2, 0);
    t.sink(&[&r1], 1000, 999);
    // Meanwhile, push events from outside with casts, as fast as possible.
    t.run_with(|| {
        while p.cast(Push(1000)).is_ok() {
            std::thread::yield_now();
        }
        Vec::new()
    });
}

/// Consumers leaving mid-stream (their unmet demand becomes the dispatcher's pending
/// demand) and consumers joining late, on a producer and on a producer-consumer. Events
/// already sent to a leaving consumer are still handled by it, so every event is still
/// received exactly once, by someone.
#[test]
fn consumers_leaving_and_joining_mid_stream() {
    let mut t = Topology::new("consumer churn");
    let p = t.producer(300_000, vec![Emit::Exactly, Emit::More(20), Emit::Fewer]);
    let r = t.relay(&[&p], 50, 10);
    t.sink(&[&r], 20, 10);
    t.leaving_sink(&r, 100, 0, 300);
    t.leaving_sink(&r, 7, 3, 1);
    t.sink(&[&p], 30, 15);
    t.leaving_sink(&p, 1000, 500, 1000);
    t.leaving_sink(&p, 1, 0, 5);
    let (r2, p2) = (r.clone(), p.clone());
    let reports = t.reports.0.clone();
    let errors = t.log();
    t.run_with(|| {
        let mut late = Vec::new();
        // Late joiners, while the events flow (temporary: they may find the stage gone).
        for (i, (max, min)) in [(10, 5), (500, 250), (1, 0)].into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis(2));
            let s = start_consumer(
                Sink::new(format!("late sink {i}"), reports.clone()),
                ConsumerOptions::new().log(errors.clone()),
            )
            .unwrap();
            let opts = SubscribeOptions::new()
                .max_demand(max)
                .min_demand(min)
                .cancel(CancelMode::Temporary);
            if i % 2 == 0 {
                s.subscribe(&r2, opts).unwrap();
            } else {
                s.subscribe(&p2, opts).unwrap();
            }
            late.push(s);
        }
        late
    });
}
