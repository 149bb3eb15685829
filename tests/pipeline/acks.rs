//! Acknowledgements through the pipeline parts, with no broker: `AckingSource` ->
//! `Batcher` -> a sink that acknowledges after its "commit"; failures redelivered
//! then dead-lettered; `RetrySource` and dead letters carrying acks; drains that wait
//! for acknowledgements and report what stayed unacknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use stageflow::pipeline::{
    AckingSource, Acks, Attempt, Batch, Batcher, BatcherOptions, DeadLetters, InMemoryAcks,
    Message, Outcomes, RetryPolicy, RetrySource,
};
use stageflow::prelude::*;

use crate::support::{exit_reason, TIMEOUT};

/// A sink of batches: `decide(n, delivery)` says whether message `n`, on its
/// `delivery`-th arrival here, is stored (`true`) or failed; stored ones are kept
/// and acknowledged after the batch, as a sink does after its commit.
struct Sink {
    decide: fn(u64, u32) -> bool,
    deliveries: HashMap<u64, u32>,
    stored: Arc<Mutex<Vec<u64>>>,
}

impl Stage for Sink {
    type In = Batch<Message<u64>>;
    type Out = Never;
}

impl Consumer for Sink {
    fn handle_events(
        &mut self,
        batches: Vec<Self::In>,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        for batch in batches {
            let mut acks = Acks::new();
            let mut stored = self.stored.lock();
            for m in &batch.events {
                let delivery = self.deliveries.entry(m.data).or_default();
                *delivery += 1;
                if (self.decide)(m.data, *delivery) {
                    stored.push(m.data);
                    acks.successful(m);
                } else {
                    acks.failed(m, format!("{} refused on delivery {delivery}", m.data));
                }
            }
            drop(stored);
            acks.send();
        }
    }
}

fn batcher(size: usize) -> Batcher<Message<u64>> {
    Batcher::new(
        BatcherOptions::new()
            .batch_size(size)
            .batch_timeout(Duration::from_millis(5)),
    )
    .unwrap()
}

#[test]
fn acking_source_to_batcher_to_a_sink_that_acks_everything() {
    let source = AckingSource::new(
        0..10_000u64,
        DeadLetters::from_fn(|_| panic!("no dead letter")),
    );
    let stats = source.stats();
    let stored = Arc::new(Mutex::new(Vec::new()));
    let mut topology = Topology::new();
    topology.acknowledger("numbers", source.acknowledger());
    let source = topology
        .source(source, ProducerOptions::new().name("numbers"))
        .unwrap();
    let batches = topology
        .producer_consumer(
            batcher(100),
            ProducerConsumerOptions::new()
                .name("batch")
                .subscribe_to(&source, SubscribeOptions::new()),
        )
        .unwrap();
    topology
        .consumer(
            Sink {
                decide: |_, _| true,
                deliveries: HashMap::new(),
                stored: stored.clone(),
            },
            ConsumerOptions::new()
                .name("sink")
                .subscribe_to(&batches, SubscribeOptions::new()),
        )
        .unwrap();
    let report = topology.start().unwrap().wait(TIMEOUT);
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.ack("numbers").unwrap().unacked, Some(0));
    let mut stored = stored.lock().clone();
    stored.sort_unstable();
    assert_eq!(stored, (0..10_000).collect::<Vec<_>>(), "each exactly once");
    let c = stats.snapshot();
    assert_eq!(
        (
            c.acked,
            c.failed,
            c.redelivered,
            c.dead_lettered,
            c.in_flight,
            c.pending
        ),
        (10_000, 0, 0, 0, 0, 0)
    );
}

#[test]
fn failed_messages_are_redelivered_then_dead_lettered_with_their_error() {
    let (dead_tx, dead_rx) = unbounded();
    let source = AckingSource::new(0..1000u64, DeadLetters::channel(dead_tx))
        .max_deliveries(3)
        .unwrap();
    let stats = source.stats();
    let stored = Arc::new(Mutex::new(Vec::new()));
    let source = source.start(ProducerOptions::new()).unwrap();
    let batches = batcher(64)
        .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))
        .unwrap();
    // Multiples of 10 fail their first two deliveries; multiples of 100 always fail.
    let sink = start_consumer(
        Sink {
            decide: |n, delivery| n % 10 != 0 || (delivery >= 3 && n % 100 != 0),
            deliveries: HashMap::new(),
            stored: stored.clone(),
        },
        ConsumerOptions::new().subscribe_to(&batches, SubscribeOptions::new()),
    )
    .unwrap();
    assert_eq!(exit_reason(&sink), Reason::Normal);
    assert_eq!(exit_reason(&source), Reason::Normal);
    let mut stored = stored.lock().clone();
    stored.sort_unstable();
    let expected: Vec<u64> = (0..1000).filter(|n| n % 100 != 0).collect();
    assert_eq!(stored, expected, "each stored exactly once");
    let mut dead: Vec<_> = dead_rx.try_iter().collect();
    dead.sort_by_key(|d| d.event);
    assert_eq!(
        dead.iter().map(|d| d.event).collect::<Vec<_>>(),
        (0..1000).step_by(100).collect::<Vec<_>>()
    );
    for d in &dead {
        assert_eq!(d.attempts, 3);
        assert_eq!(d.error, format!("{} refused on delivery 3", d.event));
    }
    let c = stats.snapshot();
    assert_eq!(c.redelivered, 100 * 2, "{c:?}");
    assert_eq!(c.failed, 100 * 2 + 10, "{c:?}");
    assert_eq!(
        (c.acked, c.dead_lettered, c.in_flight, c.pending),
        (990, 10, 0, 0),
        "{c:?}"
    );
}

/// Works on attempts of messages: fails multiples of 5 every time (the retry source
/// retries them, then dead-letters them), acknowledges the rest itself, as a sink.
struct Work {
    outcomes: Outcomes<Message<u64>, String>,
}
impl Stage for Work {
    type In = Attempt<Message<u64>>;
    type Out = Never;
}
impl Consumer for Work {
    fn handle_events(
        &mut self,
        batch: Vec<Self::In>,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        let mut acks = Acks::new();
        let mut done = 0;
        for attempt in batch {
            if attempt.event.data % 5 == 0 {
                let error = format!("{} failed", attempt.event.data);
                self.outcomes.failed(attempt, error).expect("source alive");
            } else {
                acks.successful(&attempt.event);
                done += 1;
            }
        }
        acks.send();
        self.outcomes.done(done);
    }
}

#[test]
fn retry_keeps_the_ack_through_attempts_and_dead_letters_ack_as_failed() {
    let acks = Arc::new(InMemoryAcks::new());
    let messages: Vec<Message<u64>> = (0..100).map(|n| Message::new(n, acks.hand_out())).collect();
    let policy = RetryPolicy::new(3)
        .unwrap()
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .unwrap();
    // The dead letters are kept (a channel here), then acknowledged as failed.
    let (dead_tx, dead_rx) = unbounded();
    let source = RetrySource::new(
        messages,
        policy,
        DeadLetters::channel(dead_tx).then_ack_failed(),
    )
    .start(ProducerOptions::new())
    .unwrap();
    let work = start_consumer(
        Work {
            outcomes: RetrySource::outcomes(&source),
        },
        ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(8)),
    )
    .unwrap();
    assert_eq!(exit_reason(&work), Reason::Normal);
    assert_eq!((acks.acked(), acks.in_flight().count()), (80, 0));
    let mut failed = acks.failed();
    failed.sort_by_key(|f| f.id);
    assert_eq!(failed.len(), 20);
    for f in &failed {
        // Ids are 1-based hand-outs of 0..100: message n has id n + 1.
        let n = f.id.0 as u64 - 1;
        assert_eq!(n % 5, 0, "{f}");
        assert_eq!(
            f.error,
            format!("{n} failed (gave up after 3 attempts: attempts exhausted)")
        );
    }
    // The letters kept their message and its acknowledgement reference.
    let dead: Vec<_> = dead_rx.try_iter().collect();
    assert_eq!(dead.len(), 20);
    assert!(dead
        .iter()
        .all(|d| d.event.ack_ref().unwrap().id().0 as u64 == d.event.data + 1));
}

/// Hands every batch to the test and acknowledges nothing itself.
struct Handover(Sender<Batch<Message<u64>>>);
impl Stage for Handover {
    type In = Batch<Message<u64>>;
    type Out = Never;
}
impl Consumer for Handover {
    fn handle_events(
        &mut self,
        batches: Vec<Self::In>,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        for b in batches {
            let _ = self.0.send(b);
        }
    }
}

/// An endless acking source -> batcher -> `sink`; the pipeline knows the acknowledger.
fn endless<S: Consumer<In = Batch<Message<u64>>>>(
    sink: S,
) -> (
    stageflow::pipeline::Pipeline,
    stageflow::pipeline::AckingStats,
    StageRef<S>,
) {
    let source = AckingSource::new(0u64.., DeadLetters::from_fn(|_| {}));
    let stats = source.stats();
    let mut topology = Topology::new();
    topology.acknowledger("numbers", source.acknowledger());
    let source = topology
        .source(source, ProducerOptions::new().name("numbers"))
        .unwrap();
    let batches = topology
        .producer_consumer(
            batcher(10),
            ProducerConsumerOptions::new()
                .name("batch")
                .subscribe_to(&source, SubscribeOptions::new().max_demand(20)),
        )
        .unwrap();
    let sink = topology
        .consumer(
            sink,
            ConsumerOptions::new()
                .name("sink")
                .subscribe_to(&batches, SubscribeOptions::new().max_demand(2)),
        )
        .unwrap();
    (topology.start().unwrap(), stats, sink)
}

#[test]
fn drain_waits_for_acknowledgements_that_come_after_the_stages_ended() {
    let (tx, rx) = unbounded();
    let (pipeline, stats, sink) = endless(Handover(tx));
    let first = rx.recv_timeout(TIMEOUT).expect("a first batch");
    // Acknowledge from another thread, and only once the sink has exited: the drain
    // has then nothing but the acknowledgements to wait for.
    let acker = std::thread::spawn(move || {
        assert_eq!(exit_reason(&sink), Reason::Normal);
        for batch in std::iter::once(first).chain(rx.try_iter()) {
            batch.ack_successful();
        }
    });
    let report = pipeline.drain(TIMEOUT);
    acker.join().unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.ack("numbers").unwrap().unacked, Some(0), "{report}");
    assert!(
        report
            .to_string()
            .contains("acks of numbers: all acknowledged"),
        "{report}"
    );
    let c = stats.snapshot();
    assert!(c.acked >= 10, "{c:?}");
    assert_eq!((c.in_flight, c.pending), (0, 0), "{c:?}");
    let source_out = report.stage("numbers").unwrap().events_out;
    assert_eq!(
        c.acked, source_out,
        "everything delivered before the halt was acknowledged"
    );
}

/// Acknowledges each batch once the test lets it (a slow sink).
struct Slow {
    entered: Sender<()>,
    go: Receiver<()>,
}
impl Stage for Slow {
    type In = Batch<Message<u64>>;
    type Out = Never;
}
impl Consumer for Slow {
    fn handle_events(
        &mut self,
        batches: Vec<Self::In>,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        for b in batches {
            let _ = self.entered.send(());
            let _ = self.go.recv();
            b.ack_successful();
        }
    }
}

#[test]
fn drain_with_a_slow_sink_reports_what_stayed_unacknowledged() {
    let (entered_tx, entered) = unbounded();
    let (go_tx, go) = bounded(0);
    let (pipeline, stats, sink) = endless(Slow {
        entered: entered_tx,
        go,
    });
    entered
        .recv_timeout(TIMEOUT)
        .expect("the sink holds a first batch");
    // The sink stays inside its first batch past the deadline.
    let report = pipeline
        .stop_grace(Duration::from_millis(50))
        .drain(Duration::ZERO);
    assert!(report.deadline_hit && !report.is_complete(), "{report}");
    let unacked = report.ack("numbers").unwrap().unacked.unwrap();
    assert!(unacked >= 10, "at least the sink's batch: {report}");
    assert_eq!(stats.snapshot().acked, 0);
    assert_eq!(stats.snapshot().in_flight, unacked);
    assert!(
        report
            .to_string()
            .contains(&format!("acks of numbers: {unacked} unacknowledged")),
        "{report}"
    );
    // Let the sink go: it acknowledges the batches it holds and the stop gets in.
    drop(go_tx);
    exit_reason(&sink);
    assert!(
        stats.snapshot().in_flight <= unacked - 10,
        "{:?}",
        stats.snapshot()
    );
}

/// Acknowledges two batches, panics on the third.
struct Panicky(u32);
impl Stage for Panicky {
    type In = Batch<Message<u64>>;
    type Out = Never;
}
impl Consumer for Panicky {
    fn handle_events(
        &mut self,
        batches: Vec<Self::In>,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        for b in batches {
            self.0 += 1;
            if self.0 == 3 {
                panic!("sink failed at batch 3");
            }
            b.ack_successful();
        }
    }
}

#[test]
fn a_sink_that_panics_leaves_its_batch_in_flight_and_reported() {
    let (pipeline, stats, _sink) = endless(Panicky(0));
    // The panic drains the pipeline by itself; nothing acknowledges what was left, so
    // the wait for acknowledgements lasts the deadline.
    let report = pipeline.wait(Duration::from_secs(2));
    assert_eq!(
        report.stage("sink").unwrap().exit,
        Some(Reason::Panic("sink failed at batch 3".into())),
        "{report}"
    );
    assert!(!report.is_complete());
    let c = stats.snapshot();
    assert_eq!(c.acked, 20, "two batches acknowledged: {c:?}");
    let unacked = report.ack("numbers").unwrap().unacked.unwrap();
    assert!(
        unacked >= 10,
        "the panicked batch stays in flight: {report}"
    );
    assert_eq!(c.in_flight, unacked);
    assert_eq!(
        c.acked + unacked,
        report.stage("numbers").unwrap().events_out,
        "{report}"
    );
}
