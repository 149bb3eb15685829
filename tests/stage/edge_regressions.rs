//! Regressions of the stage layer's edge cases: small and empty inputs, unusual demand
//! settings, and errors that must say what failed. Every test here failed before its
//! fix; each names the behaviour it pins.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Sender};
use parking_lot::Mutex;
use stageflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, PartitionDispatcher};
use stageflow::log::{Level, LogSink};
use stageflow::prelude::*;
use stageflow::{PartitionKey, StageStream, StreamError};

use support::{LogCapture, TIMEOUT};

/// Collects what it receives and reports it when it terminates.
struct Collect {
    got: Vec<u64>,
    report: Sender<Vec<u64>>,
}

impl Stage for Collect {
    type In = u64;
    type Out = Never;
    fn terminate(&mut self, _: &Reason) {
        let _ = self.report.send(std::mem::take(&mut self.got));
    }
}

impl Consumer for Collect {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.got.extend(events);
    }
}

/// Passes events on unchanged.
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

fn join<S: Stage>(what: &str, stage: &StageRef<S>) -> Reason {
    stage
        .join_timeout(TIMEOUT)
        .unwrap_or_else(|| panic!("{what} still running after {TIMEOUT:?}: it hangs"))
}

// ----- Broadcast + accumulate ----------------------------------------------------------

/// A broadcasting source started in accumulate mode, two consumers subscribed with
/// `max_demand` `a` then `b`, then switched to forward: both consumers must receive
/// every event. Before the fix, (100, 10), (1000, 1) and (2, 1) stalled for good:
/// `handle_demand` was called once, each consumer got the smaller demand's worth of
/// events, and the rest sat in the producer's buffer.
#[test]
fn broadcast_from_accumulate_delivers_everything_whatever_the_demands() {
    let n = 2_000u64;
    for (a, b) in [(100, 10), (1000, 1), (2, 1), (10, 100), (100, 99), (1, 1)] {
        let source = from_iter(
            0..n,
            FromIterOptions::new()
                .dispatcher(BroadcastDispatcher::new())
                .demand(DemandMode::Accumulate),
        )
        .unwrap();
        let (tx, rx) = unbounded();
        let consumers: Vec<_> = [a, b]
            .into_iter()
            .map(|max| {
                start_consumer(
                    Collect {
                        got: Vec::new(),
                        report: tx.clone(),
                    },
                    ConsumerOptions::new()
                        .subscribe_to(&source, SubscribeOptions::new().max_demand(max)),
                )
                .unwrap()
            })
            .collect();
        source.set_demand_mode(DemandMode::Forward).unwrap();
        for c in &consumers {
            assert_eq!(
                join(&format!("consumer of demands ({a}, {b})"), c),
                Reason::Normal
            );
        }
        for _ in 0..2 {
            let got = rx.recv_timeout(TIMEOUT).expect("each consumer reports");
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "demands ({a}, {b})");
        }
    }
}

// ----- the start race: the quick-start shape ------------------------------------------

/// `from_iter` → producer-consumer → `stream`, without any care for the start order:
/// a producer-consumer whose source ran out before the stream subscribed has stopped
/// normally, and a stream over it is empty, not an error. With an empty iterator this
/// returned `Err(noproc)` in about 196 of 200 runs.
#[test]
fn quick_start_shape_over_an_empty_or_short_iterator_never_errs() {
    for n in [0u64, 1, 10] {
        for run in 0..200 {
            let numbers = from_iter(1..=n, FromIterOptions::new()).unwrap();
            let pass = start_producer_consumer(
                Pass,
                ProducerConsumerOptions::new()
                    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(100)),
            )
            .unwrap();
            let got: Result<Vec<u64>, _> = stream(&pass).collect();
            assert_eq!(
                got,
                Ok((1..=n).collect::<Vec<_>>()),
                "n = {n}, run {run} of 200"
            );
        }
    }
}

/// A stream subscribing to a stage that already exited abnormally reports that exit
/// reason, which says more than "noproc".
#[test]
fn stream_over_a_stage_that_failed_reports_its_reason() {
    let numbers = from_iter(0..10u64, FromIterOptions::new()).unwrap();
    numbers.stop(Reason::custom("disk on fire")).unwrap();
    let got: Vec<_> = stream(&numbers).collect();
    assert_eq!(
        got,
        vec![Err(StreamError {
            reason: Reason::custom("disk on fire")
        })]
    );
}

/// A `from_iter` producer over an empty iterator stays up until demand reaches it
/// (it can only end from `handle_demand`), then ends normally.
#[test]
fn from_iter_over_nothing_waits_for_demand() {
    let empty = from_iter(std::iter::empty::<u64>(), FromIterOptions::new()).unwrap();
    assert!(empty.join_timeout(Duration::from_millis(50)).is_none());
    assert!(empty.is_alive());
    let got: Vec<_> = stream(&empty).collect::<Result<_, _>>().unwrap();
    assert!(got.is_empty());
    assert_eq!(join("empty from_iter", &empty), Reason::Normal);
}

/// `LineSource` with no input, and over an empty reader, behaves the same way.
#[test]
fn line_source_over_nothing_waits_for_demand() {
    use stageflow::pipeline::LineSource;
    for source in [
        LineSource::new(),
        LineSource::new().reader("empty", std::io::Cursor::new(Vec::new())),
    ] {
        let lines = source.start(ProducerOptions::new()).unwrap();
        assert!(lines.join_timeout(Duration::from_millis(50)).is_none());
        let got: Vec<_> = stream(&lines).collect::<Result<_, _>>().unwrap();
        assert!(got.is_empty());
        assert_eq!(join("empty LineSource", &lines), Reason::Normal);
    }
}

/// `RetrySource` over no events ends only once demand reached it, too.
#[test]
fn retry_source_over_nothing_waits_for_demand() {
    use stageflow::pipeline::{DeadLetters, RetryPolicy, RetrySource};
    let policy = RetryPolicy::<String>::new(3).unwrap();
    let source = RetrySource::new(
        std::iter::empty::<u32>(),
        policy,
        DeadLetters::from_fn(|_| {}),
    )
    .start(ProducerOptions::new())
    .unwrap();
    assert!(source.join_timeout(Duration::from_millis(50)).is_none());
    let got: Vec<_> = stream(&source).collect::<Result<_, _>>().unwrap();
    assert!(got.is_empty());
    assert_eq!(join("empty RetrySource", &source), Reason::Normal);
}

// ----- errors that say what failed ------------------------------------------------------

/// Subscribing to a producer that has already stopped fails at once, naming the
/// producer and the operation; the consumer is not harmed (before, `subscribe`
/// returned `Ok(tag)` and the consumer then died with `noproc`).
#[test]
fn subscribing_to_a_stopped_producer_is_an_error_that_names_it() {
    let numbers = from_iter(
        0..10u64,
        FromIterOptions::new().name("numbers-for-subscribe"),
    )
    .unwrap();
    numbers.stop(Reason::Shutdown).unwrap();
    let (tx, _rx) = unbounded();
    let consumer = start_consumer(
        Collect {
            got: Vec::new(),
            report: tx,
        },
        ConsumerOptions::new(),
    )
    .unwrap();
    for cancel in [
        CancelMode::Permanent,
        CancelMode::Transient,
        CancelMode::Temporary,
    ] {
        let err = consumer
            .subscribe(&numbers, SubscribeOptions::new().cancel(cancel))
            .expect_err("the producer is gone");
        let text = err.to_string();
        assert!(text.contains("numbers-for-subscribe"), "{text}");
        assert!(text.contains("subscribe"), "{text}");
        assert!(text.contains("shutdown"), "{text}");
    }
    assert!(consumer.join_timeout(Duration::from_millis(50)).is_none());
    assert!(consumer.is_alive());
}

/// A call to a stopped stage names the stage and the call.
#[test]
fn calls_to_a_stopped_stage_name_it() {
    let numbers = from_iter(0..10u64, FromIterOptions::new().name("numbers-for-call")).unwrap();
    numbers.stop(Reason::Normal).unwrap();
    let text = numbers.estimate_buffered_count().unwrap_err().to_string();
    assert!(text.contains("numbers-for-call"), "{text}");
    assert!(text.contains("call"), "{text}");
    let text = numbers
        .set_demand_mode(DemandMode::Forward)
        .unwrap_err()
        .to_string();
    assert!(text.contains("numbers-for-call"), "{text}");
}

/// Starting a consumer whose `subscribe_to` names a stopped producer fails with an
/// error naming the producer and saying it happened at start.
#[test]
fn starting_against_a_stopped_producer_names_it() {
    let numbers = from_iter(0..10u64, FromIterOptions::new().name("numbers-for-start")).unwrap();
    numbers.stop(Reason::Normal).unwrap();
    let (tx, _rx) = unbounded();
    let err = start_consumer(
        Collect {
            got: Vec::new(),
            report: tx,
        },
        ConsumerOptions::new().subscribe_to(&numbers, SubscribeOptions::new()),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("numbers-for-start"), "{text}");
    assert!(text.contains("start"), "{text}");
}

/// The demand dispatcher's "expects a maximum demand" warning comes once per
/// subscription, not at every ask (hundreds of lines in one run before).
#[test]
fn demand_dispatcher_mismatch_warning_once_per_subscription() {
    let log = LogCapture::new();
    let source = from_iter(
        0..5_000u64,
        FromIterOptions::new()
            .dispatcher(DemandDispatcher::new())
            .demand(DemandMode::Accumulate)
            .log(log.sink()),
    )
    .unwrap();
    let (tx, rx) = unbounded();
    let consumers: Vec<_> = [10, 100]
        .into_iter()
        .map(|max| {
            start_consumer(
                Collect {
                    got: Vec::new(),
                    report: tx.clone(),
                },
                ConsumerOptions::new()
                    .subscribe_to(&source, SubscribeOptions::new().max_demand(max)),
            )
            .unwrap()
        })
        .collect();
    source.set_demand_mode(DemandMode::Forward).unwrap();
    for c in &consumers {
        join("consumer", c);
    }
    let total: usize = (0..2)
        .map(|_| rx.recv_timeout(TIMEOUT).unwrap().len())
        .sum();
    assert_eq!(total, 5_000);
    let warnings = log
        .take()
        .into_iter()
        .filter(|r| r.message.contains("expects a maximum demand"))
        .count();
    assert_eq!(
        warnings, 1,
        "one warning for the one mismatched subscription"
    );
}

/// A partition with no consumer fills its bounded queue and stalls every partition:
/// the dispatcher says so once, naming the partition and the events waiting, and the
/// stage counts it.
#[test]
fn partition_without_consumer_warns_once_and_is_counted() {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = warnings.clone();
    let log = LogSink::new(move |r| {
        if r.level == Level::Warning {
            w.lock().push(r.message.clone());
        }
    });
    let dispatcher = PartitionDispatcher::with_hash(2, |x: u64| {
        Some((x, PartitionKey::Index((x % 2) as usize)))
    })
    .unwrap()
    .max_queue(50);
    let source = from_iter(
        0..1_000u64,
        FromIterOptions::new().dispatcher(dispatcher).log(log),
    )
    .unwrap();
    // Only partition 0 gets a consumer, asking for more than the queue bound: the
    // odd events fill partition 1's queue, and then nobody gets anything.
    let (tx, _rx) = unbounded();
    let evens = start_consumer(
        Collect {
            got: Vec::new(),
            report: tx,
        },
        ConsumerOptions::new().subscribe_to(
            &source,
            SubscribeOptions::new().partition(0).max_demand(200),
        ),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while source.metrics().stalls == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dispatcher never reported the stall: {:?}, {:?}, {:?}",
            source.metrics(),
            evens.metrics(),
            warnings.lock()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        evens.metrics().events_in < 100,
        "partition 0 is stalled too"
    );
    let text = warnings.lock().join("\n");
    assert!(text.contains("partition 1"), "{text}");
    assert!(text.contains("no consumer"), "{text}");
    assert!(text.contains("events wait"), "{text}");
    source.stop(Reason::Shutdown).unwrap();
    join("consumer of partition 0", &evens);
    assert_eq!(source.metrics().stalls, 1);
    let count = warnings
        .lock()
        .iter()
        .filter(|m| m.contains("no consumer"))
        .count();
    assert_eq!(count, 1, "warned once");
}

// ----- a dropped stream -----------------------------------------------------------------

/// Counts up forever, as consumers ask.
struct Naturals(u64);

impl Stage for Naturals {
    type In = Never;
    type Out = u64;
}

impl Producer for Naturals {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(self.0..self.0 + demand as u64);
        self.0 += demand as u64;
    }
}

/// Taking 1 500 events of a stream whose subscription asked 2 000: dropping it loses
/// what was delivered and not yet yielded (documented), `cancel` hands it back, so
/// that the events taken, those returned and the next stream's are 0, 1, 2, ... with
/// no gap.
#[test]
fn cancelling_a_stream_returns_what_was_delivered_and_not_yet_taken() {
    let numbers = start_producer(Naturals(0), ProducerOptions::new()).unwrap();
    let mut s = StageStream::new()
        .subscribe(&numbers, SubscribeOptions::new().max_demand(2_000))
        .unwrap();
    let taken: Vec<u64> = s.by_ref().take(1_500).collect::<Result<_, _>>().unwrap();
    let back = s.cancel();
    assert!(
        back.len() >= 500,
        "at least the rest of the first 2 000: {}",
        back.len()
    );
    let mut all = taken;
    all.extend(back);
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());
    let next = stream(&numbers).next().unwrap().unwrap();
    assert_eq!(
        next,
        all.len() as u64,
        "the next stream starts where they end"
    );

    // Dropping instead loses them: the next stream starts after the delivered ones.
    let mut s = stream(&numbers);
    let first = s.next().unwrap().unwrap();
    drop(s);
    let after_drop = stream(&numbers).next().unwrap().unwrap();
    assert!(after_drop > first + 1, "{first} then {after_drop}");
    numbers.stop(Reason::Normal).unwrap();
}
