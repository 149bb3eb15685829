//! The start race, for good: small and empty topologies built with [`Topology`] run
//! many times over, with every dispatcher, must never fail to start, never hang, and
//! deliver exactly what they should.
//!
//! Before `Topology`, a `from_iter` source over a short input served its first
//! subscriber and was gone before the next one subscribed: the second
//! `start_producer_consumer` failed with `NoProc` in 197 of 200 runs at 10 events and
//! 190 of 200 at 1 000, and the quick-start shape over an empty iterator returned
//! `Err(noproc)` in about 196 of 200.
//!
//! How the runs are bounded (200 runs of every combination took minutes in a debug
//! build on 2 shared cores): the race needs a source that is done after its first
//! demand, which is every size up to one `max_demand`. The sizes where it was most
//! likely, 0, 1 and 10 events, run 200 times for every dispatcher and number of
//! consumers (1 to 4) in the direct fan-out, 3 200 topologies per size; 1 000 events
//! (one default demand, the same mechanism) run 50 times each; 5 000 events take
//! several demands and run 10 times each for exact counts on more data. The shape
//! through producer-consumers has twice the threads per run and runs a quarter as
//! often. Before the fix the failure rate was above 95 % per run, so even one run of
//! a combination would catch it.

use crossbeam_channel::{unbounded, Receiver, Sender};
use stageflow::dispatcher::{
    BroadcastDispatcher, DemandDispatcher, FairDispatcher, PartitionDispatcher,
};
use stageflow::prelude::*;
use stageflow::PartitionKey;

use crate::support::TIMEOUT;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Dispatch {
    Demand,
    Broadcast,
    Partition,
    Fair,
}

const DISPATCHERS: [Dispatch; 4] = [
    Dispatch::Demand,
    Dispatch::Broadcast,
    Dispatch::Partition,
    Dispatch::Fair,
];

fn dispatcher(
    d: Dispatch,
    consumers: usize,
) -> Box<dyn FnOnce(FromIterOptions<u64>) -> FromIterOptions<u64>> {
    match d {
        Dispatch::Demand => Box::new(|o| o.dispatcher(DemandDispatcher::new())),
        Dispatch::Broadcast => Box::new(|o| o.dispatcher(BroadcastDispatcher::new())),
        Dispatch::Partition => Box::new(move |o| {
            o.dispatcher(
                PartitionDispatcher::with_hash(consumers, move |x: u64| {
                    Some((x, PartitionKey::Index((x % consumers as u64) as usize)))
                })
                .unwrap(),
            )
        }),
        Dispatch::Fair => Box::new(|o| o.dispatcher(FairDispatcher::new())),
    }
}

fn subscription(d: Dispatch, i: usize, max: usize) -> SubscribeOptions<u64> {
    let o = SubscribeOptions::new().max_demand(max);
    if d == Dispatch::Partition {
        o.partition(i)
    } else {
        o
    }
}

/// What consumer `i` of `consumers` must receive of `0..n`, in order.
fn expected(d: Dispatch, n: u64, i: usize, consumers: usize) -> Option<Vec<u64>> {
    match d {
        Dispatch::Broadcast => Some((0..n).collect()),
        Dispatch::Partition => Some(
            (0..n)
                .filter(|x| x % consumers as u64 == i as u64)
                .collect(),
        ),
        // Shared by demand: only the union is known.
        Dispatch::Demand | Dispatch::Fair => None,
    }
}

/// Checks what each consumer got; `got[i]` is consumer `i`'s events in order.
fn check(d: Dispatch, n: u64, got: &[Vec<u64>]) -> Result<(), String> {
    let c = got.len();
    for (i, events) in got.iter().enumerate() {
        if let Some(want) = expected(d, n, i, c) {
            if *events != want {
                return Err(format!(
                    "consumer {i} got {} events, expected {}",
                    events.len(),
                    want.len()
                ));
            }
        } else if events.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("consumer {i} got its events out of order"));
        }
    }
    if matches!(d, Dispatch::Demand | Dispatch::Fair) {
        let mut all: Vec<u64> = got.iter().flatten().copied().collect();
        all.sort_unstable();
        if all != (0..n).collect::<Vec<_>>() {
            return Err(format!(
                "the consumers got {} events of {n}, or duplicates",
                all.len()
            ));
        }
    }
    Ok(())
}

/// Collects its events; reports them (with its index) when it terminates.
struct Collect {
    index: usize,
    got: Vec<u64>,
    report: Sender<(usize, Vec<u64>)>,
}

impl Stage for Collect {
    type In = u64;
    type Out = Never;
    fn terminate(&mut self, _: &Reason) {
        let _ = self
            .report
            .send((self.index, std::mem::take(&mut self.got)));
    }
}

impl Consumer for Collect {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.got.extend(events);
    }
}

/// Passes events on.
struct Pass;

impl Stage for Pass {
    type In = u64;
    type Out = u64;
}

impl ProducerConsumer for Pass {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_batch(events);
    }
}

fn reports(rx: &Receiver<(usize, Vec<u64>)>, consumers: usize) -> Result<Vec<Vec<u64>>, String> {
    let mut got = vec![Vec::new(); consumers];
    for _ in 0..consumers {
        let (i, events) = rx
            .recv_timeout(TIMEOUT)
            .map_err(|_| "a consumer never reported".to_string())?;
        got[i] = events;
    }
    Ok(got)
}

fn join_all<S: Stage>(stages: &[StageRef<S>]) -> Result<(), String> {
    for s in stages {
        match s.join_timeout(TIMEOUT) {
            Some(Reason::Normal) => {}
            Some(other) => return Err(format!("{} exited with {other}", s.name())),
            None => return Err(format!("{} still running after {TIMEOUT:?}", s.name())),
        }
    }
    Ok(())
}

/// `from_iter(0..n)` with dispatcher `d` → `consumers` consumers.
fn fan_out(d: Dispatch, n: u64, consumers: usize) -> Result<(), String> {
    let mut topology = Topology::new();
    let source = topology
        .from_iter(0..n, dispatcher(d, consumers)(FromIterOptions::new()))
        .map_err(|e| e.to_string())?;
    let (tx, rx) = unbounded();
    let mut sinks = Vec::new();
    for i in 0..consumers {
        let sink = topology
            .consumer(
                Collect {
                    index: i,
                    got: Vec::new(),
                    report: tx.clone(),
                },
                ConsumerOptions::new().subscribe_to(&source, subscription(d, i, 100)),
            )
            .map_err(|e| format!("consumer {i} did not start: {e}"))?;
        sinks.push(sink);
    }
    topology.start().map_err(|e| e.to_string())?;
    join_all(&sinks)?;
    join_all(&[source])?;
    check(d, n, &reports(&rx, consumers)?)
}

/// The ETL shape: `from_iter(0..n)` with dispatcher `d` → `consumers` producer-consumers
/// → streams, one per producer-consumer.
fn fan_out_through_stages(d: Dispatch, n: u64, consumers: usize) -> Result<(), String> {
    let mut topology = Topology::new();
    let source = topology
        .from_iter(0..n, dispatcher(d, consumers)(FromIterOptions::new()))
        .map_err(|e| e.to_string())?;
    let mut streams = Vec::new();
    for i in 0..consumers {
        let pass = topology
            .producer_consumer(
                Pass,
                ProducerConsumerOptions::new().subscribe_to(&source, subscription(d, i, 1000)),
            )
            .map_err(|e| format!("producer-consumer {i} did not start: {e}"))?;
        streams.push(
            topology
                .stream(&pass, SubscribeOptions::new().max_demand(100))
                .map_err(|e| e.to_string())?,
        );
    }
    topology.start().map_err(|e| e.to_string())?;
    // Each stream on its own thread: with a broadcast, the slowest one sets the pace
    // of all, so reading them one after the other would wait forever.
    let (tx, rx) = unbounded();
    for (i, s) in streams.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, s.collect::<Result<Vec<u64>, _>>()));
        });
    }
    let mut got = vec![Vec::new(); consumers];
    for _ in 0..consumers {
        let (i, events) = rx
            .recv_timeout(TIMEOUT)
            .map_err(|_| format!("a stream still running after {TIMEOUT:?}"))?;
        got[i] = events.map_err(|e| e.to_string())?;
    }
    check(d, n, &got)
}

fn run_many(
    what: &str,
    runs_for: impl Fn(u64) -> usize,
    f: impl Fn(Dispatch, u64, usize) -> Result<(), String>,
) {
    let mut failures = Vec::new();
    let mut total = 0;
    for d in DISPATCHERS {
        for n in [0u64, 1, 10, 1_000, 5_000] {
            for consumers in 1..=4 {
                for run in 0..runs_for(n) {
                    total += 1;
                    if let Err(e) = f(d, n, consumers) {
                        failures.push(format!(
                            "{d:?}, {n} events, {consumers} consumers, run {run}: {e}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {total} runs failed; the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

fn runs(n: u64) -> usize {
    match n {
        0..=10 => 200,
        11..=1_000 => 50,
        _ => 10,
    }
}

#[test]
fn fan_out_topologies_start_every_time_and_deliver_exactly() {
    run_many("from_iter → consumers", runs, fan_out);
}

#[test]
fn fan_out_through_producer_consumers_starts_every_time_and_delivers_exactly() {
    // Twice the threads per run: a quarter of the runs still cover the race 50 times
    // per combination of the smallest sizes.
    run_many(
        "from_iter → producer-consumers → streams",
        |n| (runs(n) / 4).max(3),
        fan_out_through_stages,
    );
}

/// The README's quick start, through a topology: an empty input is an empty result.
#[test]
fn quick_start_shape_through_a_topology() {
    for n in [0u64, 1, 10, 1_000, 5_000] {
        for run in 0..runs(n) {
            let mut topology = Topology::new();
            let numbers = topology.from_iter(1..=n, FromIterOptions::new()).unwrap();
            let pass = topology
                .producer_consumer(
                    Pass,
                    ProducerConsumerOptions::new()
                        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100)),
                )
                .unwrap();
            let results = topology.stream(&pass, SubscribeOptions::new()).unwrap();
            topology.start().unwrap();
            let total: Result<u64, _> = results.sum();
            assert_eq!(total, Ok(n * (n + 1) / 2), "n = {n}, run {run}");
        }
    }
}

/// A topology dropped without `start` stops its stages: nothing is left waiting for
/// demand that would never come.
#[test]
fn an_unstarted_topology_stops_its_stages_when_dropped() {
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(0..10u64, FromIterOptions::new())
        .unwrap();
    let (tx, _rx) = unbounded();
    let sink = topology
        .consumer(
            Collect {
                index: 0,
                got: Vec::new(),
                report: tx,
            },
            ConsumerOptions::new().subscribe_to(&numbers, SubscribeOptions::new()),
        )
        .unwrap();
    drop(topology);
    assert_eq!(numbers.join_timeout(TIMEOUT), Some(Reason::Shutdown));
    assert!(sink.join_timeout(TIMEOUT).is_some());
}

/// A source asked to accumulate stays so after `start`: the user switches it.
#[test]
fn a_source_that_asks_to_accumulate_is_left_to_the_user() {
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(
            0..10u64,
            FromIterOptions::new().demand(DemandMode::Accumulate),
        )
        .unwrap();
    let s = topology.stream(&numbers, SubscribeOptions::new()).unwrap();
    topology.start().unwrap();
    assert_eq!(numbers.demand_mode().unwrap(), DemandMode::Accumulate);
    numbers.set_demand_mode(DemandMode::Forward).unwrap();
    assert_eq!(
        s.collect::<Result<Vec<_>, _>>().unwrap(),
        (0..10).collect::<Vec<_>>()
    );
}

/// `start` fails, naming the source, when a held source died while the topology was
/// being wired, and stops the rest.
#[test]
fn start_reports_a_source_that_died_before_it() {
    let mut topology = Topology::new();
    let numbers = topology
        .from_iter(0..10u64, FromIterOptions::new().name("doomed"))
        .unwrap();
    let other = topology
        .from_iter(0..10u64, FromIterOptions::new())
        .unwrap();
    numbers.stop(Reason::custom("boom")).unwrap();
    let err = topology.start().unwrap_err();
    assert!(err.to_string().contains("doomed"), "{err}");
    assert_eq!(other.join_timeout(TIMEOUT), Some(Reason::Shutdown));
}

/// A drain requested before `start` halts the held sources; one that already
/// stopped (normally) when `start` releases it is not an error. `start` used to
/// return `NoProc` when the halted source won that race (seen in the
/// `Topology::handle` example under load); waiting for the source's exit first makes
/// the race certain.
#[test]
fn start_after_a_drain_that_already_stopped_the_sources() {
    let mut topology = Topology::new();
    let numbers = topology
        .source(
            stageflow::pipeline::LineSource::new().reader("in", std::io::Cursor::new("a\nb\n")),
            ProducerOptions::new().name("lines"),
        )
        .unwrap();
    let out = topology.stream(&numbers, SubscribeOptions::new()).unwrap();
    topology.handle().drain();
    assert_eq!(
        numbers.join_timeout(TIMEOUT),
        Some(Reason::Normal),
        "the halted source did not stop within {TIMEOUT:?}"
    );
    let pipeline = topology
        .start()
        .expect("start after a drain that stopped the sources");
    assert_eq!(out.count(), 0);
    assert!(pipeline.wait(TIMEOUT).is_complete());
}
