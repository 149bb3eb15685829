//! Port of GenStage's `test/gen_stage/partition_dispatcher_test.exs` (all 14 tests;
//! elixir-lang/gen_stage at 72198f8, v1.3.2), plus the
//! bounded-queue tests that go beyond GenStage (its issues #282 and #320).
//!
//! Partitioning: GenStage's default hash is `:erlang.phash2(event, 2)`, which places
//! the test's integers 1, 2, 5, 6, 7, 8, 9 in partition 0. These tests do not rely on
//! stageflow's default hash (a different function); they pass `phash2_2`, a test-local
//! hash that returns phash2's partitions for the integers 0..=12 (values from
//! Erlang's `:erlang.phash2(n, 2)`), so every scenario partitions exactly as the original.
//! The dispatcher's `{waiting, pending}` pair is read through `waiting()` and
//! `pending()`; an `info` reaching the producer is `Received::Info`.

use crate::support::dispatch;

use std::time::Duration;

use dispatch::{eventually, Counter, Forwarder, Inbox, Msg};
use stageflow::dispatcher::{Dispatcher, PartitionDispatcher, Probe, Received};
use stageflow::log::LogSink;
use stageflow::prelude::*;
use stageflow::PartitionKey;

/// `:erlang.phash2(i, 2)` for i in 0..=12.
const PHASH2_2: [usize; 13] = [1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1];

fn phash2_2(x: u64) -> Option<(u64, PartitionKey)> {
    Some((x, PartitionKey::Index(PHASH2_2[x as usize])))
}

type Phash2 = fn(u64) -> Option<(u64, PartitionKey)>;

fn dispatcher(partitions: usize) -> PartitionDispatcher<u64, Phash2> {
    PartitionDispatcher::with_hash(partitions, phash2_2 as Phash2).unwrap()
}

fn wp<H: Fn(u64) -> Option<(u64, PartitionKey)> + Send + 'static>(
    d: &PartitionDispatcher<u64, H>,
) -> (usize, usize) {
    (d.waiting(), d.pending())
}

fn part<T>(p: impl Into<PartitionKey>) -> SubscribeOptions<T> {
    SubscribeOptions::new().partition(p)
}

#[test]
fn subscribes_asks_and_cancels() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    // Subscribe, ask and cancel and leave some demand
    let s = probe.subscriber();
    let r = s.tag();
    assert_eq!(d.subscribe(s, &part(0)).unwrap(), 0);
    assert_eq!(d.ask(r, 10), 10);
    assert_eq!(wp(&d), (10, 0));
    assert_eq!(d.cancel(r), 0);
    assert_eq!(wp(&d), (10, 10));
    // Subscribe again and the same demand is back
    let s = probe.subscriber();
    let r = s.tag();
    assert_eq!(d.subscribe(s, &part(1)).unwrap(), 0);
    assert_eq!(d.ask(r, 5), 0);
    assert_eq!(wp(&d), (10, 5));
    assert_eq!(d.cancel(r), 0);
    assert_eq!(wp(&d), (10, 10));
    // Now attempt to dispatch with no consumers
    assert_eq!(d.dispatch(vec![0, 1, 2, 3]), Vec::<u64>::new());
    assert_eq!(wp(&d), (6, 10));
}

#[test]
fn subscribes_asks_and_dispatches() {
    let probe = Probe::<u64>::new();
    // One partition: `:erlang.phash2(x, 1)` is 0 for every event.
    let mut d =
        PartitionDispatcher::with_hash(1, |x: u64| Some((x, PartitionKey::Index(0)))).unwrap();
    let s = probe.subscriber();
    let r = s.tag();
    d.subscribe(s, &part(0)).unwrap();
    assert_eq!(d.ask(r, 3), 3);
    assert!(d.dispatch(vec![1]).is_empty());
    assert_eq!(wp(&d), (2, 0));
    assert_eq!(probe.take(), vec![Received::Events(r, vec![1])]);
    assert_eq!(d.ask(r, 3), 3);
    assert_eq!(wp(&d), (5, 0));
    assert_eq!(d.dispatch(vec![2, 5, 6, 7, 8, 9, 11]), vec![9, 11]);
    assert_eq!(wp(&d), (0, 0));
    assert_eq!(probe.take(), vec![Received::Events(r, vec![2, 5, 6, 7, 8])]);
}

fn odd_even(x: u64) -> Option<(u64, PartitionKey)> {
    Some((
        x,
        PartitionKey::from(if x % 2 == 0 { "even" } else { "odd" }),
    ))
}

#[test]
fn subscribes_asks_and_dispatches_to_custom_partitions() {
    let probe = Probe::<u64>::new();
    let mut d = PartitionDispatcher::with_hash(vec!["odd", "even"], odd_even).unwrap();
    let s = probe.subscriber();
    let r = s.tag();
    d.subscribe(s, &part("odd")).unwrap();
    assert_eq!(d.ask(r, 3), 3);
    assert!(d.dispatch(vec![1]).is_empty());
    assert_eq!(wp(&d), (2, 0));
    assert_eq!(probe.take(), vec![Received::Events(r, vec![1])]);
    assert_eq!(d.ask(r, 3), 3);
    assert_eq!(wp(&d), (5, 0));
    assert_eq!(d.dispatch(vec![5, 7, 9, 11, 13, 15, 17]), vec![15, 17]);
    assert_eq!(wp(&d), (0, 0));
    assert_eq!(
        probe.take(),
        vec![Received::Events(r, vec![5, 7, 9, 11, 13])]
    );
}

#[test]
fn subscribes_asks_and_dispatches_to_partitions_or_none() {
    let probe = Probe::<u64>::new();
    let mut d = PartitionDispatcher::with_hash(vec!["odd", "even"], |x: u64| {
        if x % 3 == 0 {
            None
        } else {
            odd_even(x)
        }
    })
    .unwrap();
    let stats = d.stats();
    let (even, odd) = (probe.subscriber(), probe.subscriber());
    let (re, ro) = (even.tag(), odd.tag());
    d.subscribe(even, &part("even")).unwrap();
    d.subscribe(odd, &part("odd")).unwrap();
    assert_eq!(d.ask(re, 4), 4);
    assert_eq!(d.ask(ro, 4), 4);
    assert_eq!(d.dispatch((1..=12).collect()), vec![12]);
    let got = probe.take();
    assert!(got.contains(&Received::Events(re, vec![2, 4, 8, 10])));
    assert!(got.contains(&Received::Events(ro, vec![1, 5, 7, 11])));
    assert_eq!(wp(&d), (0, 0));
    // Discarded events are counted (3, 6, 9; 12 was left over, not hashed).
    assert_eq!(stats.discarded(), 3);
}

#[test]
fn buffers_events_before_subscription() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    // Use one subscription to queue
    let s = probe.subscriber();
    let r = s.tag();
    d.subscribe(s, &part(1)).unwrap();
    assert_eq!(d.ask(r, 5), 5);
    assert!(d.dispatch(vec![1, 2, 5, 6, 7]).is_empty());
    assert_eq!(wp(&d), (0, 0));
    assert!(probe.take().is_empty());
    assert_eq!(d.dispatch(vec![8, 9]), vec![8, 9]);
    assert_eq!(wp(&d), (0, 0));
    // Use another subscription to get events back
    let s = probe.subscriber();
    let r = s.tag();
    d.subscribe(s, &part(0)).unwrap();
    assert_eq!(d.ask(r, 5), 5);
    assert_eq!(wp(&d), (5, 0));
    assert_eq!(probe.take(), vec![Received::Events(r, vec![1, 2, 5, 6, 7])]);
    assert!(d.dispatch(vec![1, 2]).is_empty());
    assert_eq!(wp(&d), (3, 0));
}

#[test]
fn buffers_events_after_subscription() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    let s0 = probe.subscriber();
    let r0 = s0.tag();
    d.subscribe(s0, &part(0)).unwrap();
    assert_eq!(d.ask(r0, 5), 5);
    assert_eq!(wp(&d), (5, 0));
    let s1 = probe.subscriber();
    let r1 = s1.tag();
    d.subscribe(s1, &part(1)).unwrap();
    assert_eq!(d.ask(r1, 5), 5);
    assert_eq!(wp(&d), (10, 0));
    // Send all events to the same partition, half of them will be buffered
    assert!(d.dispatch(vec![1, 2]).is_empty());
    assert!(d.dispatch(vec![5, 6, 7, 1, 2, 5, 6, 7]).is_empty());
    assert_eq!(wp(&d), (0, 0));
    assert_eq!(
        probe.take(),
        vec![
            Received::Events(r0, vec![1, 2]),
            Received::Events(r0, vec![5, 6, 7])
        ]
    );
    assert_eq!(d.ask(r0, 5), 5);
    assert_eq!(wp(&d), (5, 0));
    assert_eq!(
        probe.take(),
        vec![Received::Events(r0, vec![1, 2, 5, 6, 7])]
    );
}

#[test]
fn subscribes_asks_and_cancels_with_buffer() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    let stats = d.stats();
    let s1 = probe.subscriber();
    let r1 = s1.tag();
    d.subscribe(s1, &part(1)).unwrap();
    assert_eq!(d.ask(r1, 5), 5);
    assert_eq!(wp(&d), (5, 0));
    let s0 = probe.subscriber();
    let r0 = s0.tag();
    d.subscribe(s0, &part(0)).unwrap();
    assert!(d.dispatch(vec![1, 2, 5, 6, 7]).is_empty());
    assert_eq!(wp(&d), (0, 0));
    assert!(probe.take().is_empty());
    // The info should not count as an event
    let info = probe.info();
    let id = info.id();
    d.info(info);
    assert_eq!(d.cancel(r0), 5);
    assert_eq!(wp(&d), (5, 0));
    assert_eq!(probe.take(), vec![Received::Info(id)]);
    // The dropped events are reported.
    assert_eq!(stats.discarded(), 5);
}

#[test]
fn delivers_info_to_current_process() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    let (s0, s1) = (probe.subscriber(), probe.subscriber());
    let r1 = s1.tag();
    d.subscribe(s0, &part(0)).unwrap();
    d.subscribe(s1, &part(1)).unwrap();
    assert_eq!(d.ask(r1, 3), 3);
    let before = wp(&d);
    let info = probe.info();
    let id = info.id();
    d.info(info);
    assert_eq!(wp(&d), before);
    assert_eq!(probe.take(), vec![Received::Info(id)]);
}

#[test]
fn does_not_queue_info_for_non_existing_consumers() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    let info = probe.info();
    let id = info.id();
    d.info(info);
    assert_eq!(probe.take(), vec![Received::Info(id)]);
}

#[test]
fn queues_info_to_backed_up_consumers() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    let (s0, s1) = (probe.subscriber(), probe.subscriber());
    let (r0, r1) = (s0.tag(), s1.tag());
    d.subscribe(s0, &part(0)).unwrap();
    d.subscribe(s1, &part(1)).unwrap();
    assert_eq!(d.ask(r1, 3), 3);
    assert!(d.dispatch(vec![1, 2, 5]).is_empty());
    let info = probe.info();
    let id = info.id();
    d.info(info);
    assert!(probe.take().is_empty());
    assert_eq!(d.ask(r0, 5), 5);
    assert_eq!(
        probe.take(),
        vec![Received::Events(r0, vec![1, 2, 5]), Received::Info(id)]
    );
}

#[test]
fn raises_on_unknown_partition() {
    let probe = Probe::<u64>::new();
    let mut d = PartitionDispatcher::with_hash(vec!["foo", "bar"], |x: u64| {
        Some((x, PartitionKey::from("oops")))
    })
    .unwrap();
    let s = probe.subscriber();
    let r = s.tag();
    d.subscribe(s, &part("foo")).unwrap();
    assert_eq!(d.ask(r, 3), 3);
    // GenStage raises inside the producer; here the dispatcher reports an error that
    // stops the producer with it, and hands the unhashed rest back.
    assert_eq!(d.dispatch(vec![1, 2, 5]), vec![2, 5]);
    let err = d.take_error().expect("an error").to_string();
    assert!(err.contains("unknown partition \"oops\""), "{err}");
    assert!(err.contains("[\"foo\", \"bar\"]"), "{err}");
}

/// GenStage's hash may return any term, and a non-tuple raises. A Rust hash returns
/// `Option<(T, PartitionKey)>`, so a malformed answer cannot be written; the failure
/// left to port is a hash that panics, which must stop the producer with a message.
#[test]
fn errors_if_the_hash_function_returns_a_bad_value() {
    let probe = Probe::<u64>::new();
    let mut d = PartitionDispatcher::with_hash(
        vec!["foo", "bar"],
        |_x: u64| -> Option<(u64, PartitionKey)> { panic!("not a tuple") },
    )
    .unwrap()
    .log_to_silent();
    let s = probe.subscriber();
    let r = s.tag();
    d.subscribe(s, &part("foo")).unwrap();
    assert_eq!(d.ask(r, 3), 3);
    let _ = d.dispatch(vec![1, 2, 5]);
    let err = d.take_error().expect("an error").to_string();
    assert!(
        err.contains("the partition hash panicked: not a tuple"),
        "{err}"
    );
}

trait Silent {
    fn log_to_silent(self) -> Self;
}

impl<H: Fn(u64) -> Option<(u64, PartitionKey)> + Send + 'static> Silent
    for PartitionDispatcher<u64, H>
{
    fn log_to_silent(mut self) -> Self {
        self.set_log(LogSink::silent());
        self
    }
}

#[test]
fn errors_on_init() {
    // A missing `partitions` option cannot be written in Rust (it is an argument);
    // zero partitions is the remaining way to give none.
    let err = PartitionDispatcher::<u64>::new(0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("must name at least one partition"), "{err}");
    let err = PartitionDispatcher::<u64>::new(vec!["even", "odd"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("when partitions contains partitions that are not integers"),
        "{err}"
    );
}

#[test]
fn errors_on_subscribe() {
    let probe = Probe::<u64>::new();
    let mut d = dispatcher(2);
    let err = d
        .subscribe(probe.subscriber(), &SubscribeOptions::new())
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("the partition option is required when subscribing"));
    d.subscribe(probe.subscriber(), &part(0)).unwrap();
    let err = d.subscribe(probe.subscriber(), &part(0)).unwrap_err();
    assert!(
        err.to_string()
            .contains("the partition 0 is already taken by"),
        "{err}"
    );
    for bad in [PartitionKey::Index(2), PartitionKey::from("oops")] {
        let err = d.subscribe(probe.subscriber(), &part(bad)).unwrap_err();
        assert!(
            err.to_string().contains("partition must be one of [0, 1]"),
            "{err}"
        );
    }
    // (`partition: -1` cannot be written: indexes are unsigned.)
}

// ----- beyond GenStage: the producer survives bad subscriptions --------------------

#[test]
fn a_rejected_subscription_does_not_stop_the_producer() {
    let inbox = Inbox::new();
    let producer = start_producer(
        Counter(0),
        ProducerOptions::new().dispatcher(
            PartitionDispatcher::with_hash(2, |x: u64| {
                Some((x, PartitionKey::Index((x % 2) as usize)))
            })
            .unwrap(),
        ),
    )
    .unwrap();
    let quiet = || ConsumerOptions::new().log(LogSink::silent());
    let good = start_consumer(Forwarder::new("even", &inbox), quiet()).unwrap();
    good.subscribe(&producer, part(0)).unwrap();
    inbox.assert_receive(|m| matches!(m, Msg::Consumed("even", e) if e.iter().all(|x| x % 2 == 0)));
    for (name, opts) in [
        ("none", SubscribeOptions::new()),
        ("taken", part(0)),
        ("unknown", part(7)),
    ] {
        let bad = start_consumer(Forwarder::new(name, &inbox), quiet()).unwrap();
        bad.subscribe(&producer, opts.cancel(CancelMode::Temporary))
            .unwrap();
        let m = inbox.assert_receive(|m| matches!(m, Msg::Cancelled(n, _) if *n == name));
        let Msg::Cancelled(_, CancelReason::Cancel(reason)) = m else {
            panic!("{m:?}")
        };
        assert!(reason.to_string().contains("partition"), "{reason}");
        assert!(bad.is_alive());
    }
    assert!(producer.is_alive());
}

// ----- beyond GenStage: bounded partition queues (#282, #320) ----------------------

/// A consumer that handles each batch slowly (a stalled partition).
struct Slow {
    pause: Duration,
}

impl Stage for Slow {
    type In = u64;
    type Out = Never;
}

impl Consumer for Slow {
    fn handle_events(&mut self, _: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        std::thread::sleep(self.pause);
    }
}

/// Runs a 90/10 key skew for `run`: 90 % of the events go to partition 0, whose
/// consumer is stalled (it takes 2 ms per batch of at most 10 events), 10 % to
/// partition 1, whose consumer is fast. Returns the dispatcher's stats.
fn skewed(max_queue: usize, run: Duration) -> stageflow::dispatcher::PartitionStats {
    let inbox = Inbox::new();
    let d = PartitionDispatcher::with_hash(2, |x: u64| {
        Some((x, PartitionKey::Index(if x % 10 == 0 { 1 } else { 0 })))
    })
    .unwrap()
    .max_queue(max_queue);
    let stats = d.stats();
    let producer = start_producer(Counter(0), ProducerOptions::new().dispatcher(d)).unwrap();
    let slow = start_consumer(
        Slow {
            pause: Duration::from_millis(2),
        },
        ConsumerOptions::new(),
    )
    .unwrap();
    slow.subscribe(&producer, part(0).max_demand(10).min_demand(0))
        .unwrap();
    let fast = start_consumer(Forwarder::new("fast", &inbox), ConsumerOptions::new()).unwrap();
    fast.subscribe(&producer, part(1)).unwrap();
    std::thread::sleep(run);
    producer.kill();
    producer.join();
    stats
}

/// The hot partition is stalled: without a bound, its queue takes up everything the
/// fast partition's demand pulls in (GenStage #282, #320); with `max_queue(200)` it
/// never holds more than 200 events, and the flow goes on at the stalled pace.
#[test]
fn memory_stays_bounded_with_a_90_10_skew_and_a_stalled_partition() {
    const MAX_QUEUE: usize = 200;
    let bounded = skewed(MAX_QUEUE, Duration::from_millis(500));
    assert!(bounded.max_queued() <= MAX_QUEUE as u64, "{bounded:?}");
    assert!(
        bounded.max_queued() >= MAX_QUEUE as u64 / 2,
        "the scenario fills the queue: {bounded:?}"
    );
    let unbounded = skewed(usize::MAX, Duration::from_millis(500));
    assert!(
        unbounded.max_queued() > 3 * MAX_QUEUE as u64,
        "bounded {bounded:?}, unbounded {unbounded:?}"
    );
}

/// A partition that never asks: its queue is bounded and the producer pauses.
#[test]
fn memory_stays_bounded_with_a_partition_that_never_asks() {
    const MAX_QUEUE: usize = 300;
    let inbox = Inbox::new();
    let d = PartitionDispatcher::with_hash(2, |x: u64| {
        Some((x, PartitionKey::Index(if x % 10 == 0 { 1 } else { 0 })))
    })
    .unwrap()
    .max_queue(MAX_QUEUE);
    let stats = d.stats();
    let producer = start_producer(Counter(0), ProducerOptions::new().dispatcher(d)).unwrap();
    let fast = start_consumer(Forwarder::new("fast", &inbox), ConsumerOptions::new()).unwrap();
    fast.subscribe(&producer, part(0)).unwrap();
    let stalled =
        start_consumer(Forwarder::manual("stalled", &inbox), ConsumerOptions::new()).unwrap();
    let stalled_tag = stalled.subscribe(&producer, part(1)).unwrap();
    let mut last = producer.metrics().events_out;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = producer.metrics().events_out;
        if now == last {
            break;
        }
        last = now;
    }
    assert!(stats.max_queued() <= MAX_QUEUE as u64, "{stats:?}");
    assert!(stats.max_queued() >= MAX_QUEUE as u64 / 2, "{stats:?}");
    assert!(producer.estimate_buffered_count().unwrap() <= 1_000);
    // The stalled partition asks for what is queued: it gets it, in order.
    let sub = stalled_ref(&stalled, stalled_tag);
    sub.ask(stats.queued() as usize + 10);
    let m = inbox.assert_receive(|m| matches!(m, Msg::Consumed("stalled", _)));
    let Msg::Consumed(_, first) = m else {
        unreachable!()
    };
    assert_eq!(first[0], 0);
    assert!(first.windows(2).all(|w| w[1] == w[0] + 10));
}

/// Same with a partition that nobody subscribed to (absent): its queue is bounded too.
#[test]
fn memory_stays_bounded_with_an_absent_partition() {
    const MAX_QUEUE: usize = 500;
    let inbox = Inbox::new();
    let d = PartitionDispatcher::with_hash(2, |x: u64| {
        Some((x, PartitionKey::Index(if x % 10 == 0 { 1 } else { 0 })))
    })
    .unwrap()
    .max_queue(MAX_QUEUE);
    let stats = d.stats();
    let producer = start_producer(Counter(0), ProducerOptions::new().dispatcher(d)).unwrap();
    let fast = start_consumer(Forwarder::new("fast", &inbox), ConsumerOptions::new()).unwrap();
    fast.subscribe(&producer, part(0)).unwrap();
    eventually("demand is held back", || stats.held_demand() > 0);
    std::thread::sleep(Duration::from_millis(200));
    let a = producer.metrics().events_out;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(producer.metrics().events_out, a, "the producer is paused");
    assert!(stats.max_queued() <= MAX_QUEUE as u64, "{stats:?}");
    // A late subscriber of partition 1 gets the queued events first, in order.
    let late = start_consumer(Forwarder::new("late", &inbox), ConsumerOptions::new()).unwrap();
    late.subscribe(&producer, part(1)).unwrap();
    let m = inbox.assert_receive(|m| matches!(m, Msg::Consumed("late", _)));
    let Msg::Consumed(_, first) = m else {
        unreachable!()
    };
    assert_eq!(first[0], 0);
    assert!(first.windows(2).all(|w| w[1] == w[0] + 10));
}

fn stalled_ref(c: &StageRef<Forwarder>, tag: Tag) -> SubscriptionRef {
    c.call(Refs)
        .unwrap()
        .into_iter()
        .find(|r| r.tag() == tag)
        .unwrap()
}

struct Refs;

impl HandleCall<Refs> for Forwarder {
    type Reply = Vec<SubscriptionRef>;
    fn handle_call(
        &mut self,
        _: Refs,
        _: &ReplyTo<Self::Reply>,
        _: &mut Context<'_, Self>,
    ) -> Option<Self::Reply> {
        Some(self.refs.clone())
    }
}
