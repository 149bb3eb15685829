//! Port of GenStage's `test/gen_stage/broadcast_dispatcher_test.exs` (all 11 tests) and
//! of the broadcast cases of `test/gen_stage_test.exs` (elixir-lang/gen_stage at
//! 72198f8, v1.3.2). Test names follow the
//! originals. The dispatcher's state tuple `{demands, waiting, requested, subscribed}`
//! is read through `demands()`, `waiting()`, `requested()` and `subscribers()`; the
//! messages the test process received are what a `Probe` recorded.

use crate::support::dispatch;

use std::sync::{Arc, Mutex};

use dispatch::{Counter, Forwarder, Inbox, Msg, NothingProducer, Queue, Sleeper};
use stageflow::dispatcher::{BroadcastDispatcher, Dispatcher, Probe, Received};
use stageflow::log::LogSink;
use stageflow::prelude::*;
use stageflow::Source;

type State = (Vec<(usize, Tag)>, usize, usize, usize);

fn state<T: Clone + Send + 'static>(d: &BroadcastDispatcher<T>) -> State {
    (d.demands(), d.waiting(), d.requested(), d.subscribers())
}

fn opts<T>() -> SubscribeOptions<T> {
    SubscribeOptions::new()
}

#[test]
fn subscribes_and_cancels() {
    let probe = Probe::<u32>::new();
    let mut d = BroadcastDispatcher::new();
    let s = probe.subscriber();
    let r = s.tag();
    assert_eq!(d.subscribe(s, &opts()).unwrap(), 0);
    assert_eq!(state(&d), (vec![(0, r)], 0, 0, 1));
    assert_eq!(d.cancel(r), 0);
    assert_eq!(state(&d), (vec![], 0, 0, 0));
}

#[test]
fn subscribes_asks_and_cancels() {
    let probe = Probe::<u32>::new();
    let mut d = BroadcastDispatcher::new();
    let s = probe.subscriber();
    let r = s.tag();
    assert_eq!(d.subscribe(s, &opts()).unwrap(), 0);
    assert_eq!(state(&d), (vec![(0, r)], 0, 0, 1));
    assert_eq!(d.ask(r, 10), 10);
    assert_eq!(state(&d), (vec![(0, r)], 10, 10, 1));
    assert_eq!(d.cancel(r), 0);
    assert_eq!(state(&d), (vec![], 0, 10, 0));
    // Now attempt to dispatch with no consumers.
    assert_eq!(d.dispatch(vec![1, 2, 3]), vec![1, 2, 3]);
    assert_eq!(state(&d), (vec![], 0, 10, 0));
    assert!(probe.take().is_empty());
}

#[test]
fn multiple_subscriptions_with_early_demand() {
    let probe = Probe::<u32>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (r1, r2) = (s1.tag(), s2.tag());
    assert_eq!(d.subscribe(s1, &opts()).unwrap(), 0);
    assert_eq!(state(&d), (vec![(0, r1)], 0, 0, 1));
    assert_eq!(d.ask(r1, 10), 10);
    assert_eq!(state(&d), (vec![(0, r1)], 10, 10, 1));
    assert_eq!(d.subscribe(s2, &opts()).unwrap(), 0);
    assert_eq!(state(&d), (vec![(0, r2), (10, r1)], 0, 10, 2));
    assert_eq!(d.cancel(r1), 0);
    assert_eq!(state(&d), (vec![(0, r2)], 0, 10, 1));
    assert_eq!(d.ask(r2, 10), 0);
    assert_eq!(state(&d), (vec![(0, r2)], 10, 10, 1));
}

#[test]
fn multiple_subscriptions_with_late_demand() {
    let probe = Probe::<u32>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (r1, r2) = (s1.tag(), s2.tag());
    assert_eq!(d.subscribe(s1, &opts()).unwrap(), 0);
    assert_eq!(state(&d), (vec![(0, r1)], 0, 0, 1));
    assert_eq!(d.subscribe(s2, &opts()).unwrap(), 0);
    assert_eq!(state(&d), (vec![(0, r2), (0, r1)], 0, 0, 2));
    assert_eq!(d.ask(r1, 10), 0);
    assert_eq!(state(&d), (vec![(10, r1), (0, r2)], 0, 0, 2));
    assert_eq!(d.cancel(r2), 10);
    assert_eq!(state(&d), (vec![(0, r1)], 10, 10, 1));
    assert_eq!(d.ask(r1, 10), 10);
    assert_eq!(state(&d), (vec![(0, r1)], 20, 20, 1));
}

#[test]
fn subscribes_asks_and_dispatches_to_multiple_consumers() {
    let probe = Probe::<char>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2, s3) = (probe.subscriber(), probe.subscriber(), probe.subscriber());
    let (r1, r2, r3) = (s1.tag(), s2.tag(), s3.tag());
    d.subscribe(s1, &opts()).unwrap();
    d.subscribe(s2, &opts()).unwrap();
    assert_eq!(d.ask(r1, 3), 0);
    assert_eq!(d.ask(r2, 2), 2);
    assert_eq!(state(&d), (vec![(0, r2), (1, r1)], 2, 2, 2));

    // One batch fits all
    assert_eq!(d.dispatch(vec!['a', 'b']), Vec::<char>::new());
    assert_eq!(state(&d), (vec![(0, r2), (1, r1)], 0, 0, 2));
    let got = probe.take();
    assert!(got.contains(&Received::Events(r1, vec!['a', 'b'])));
    assert!(got.contains(&Received::Events(r2, vec!['a', 'b'])));

    // A batch with left-over
    assert_eq!(d.ask(r2, 2), 1);
    assert_eq!(d.dispatch(vec!['c', 'd']), vec!['d']);
    assert_eq!(state(&d), (vec![(1, r2), (0, r1)], 0, 0, 2));
    let got = probe.take();
    assert!(got.contains(&Received::Events(r1, vec!['c'])));
    assert!(got.contains(&Received::Events(r2, vec!['c'])));

    // A batch with no demand
    assert_eq!(d.dispatch(vec!['d']), vec!['d']);
    assert_eq!(state(&d), (vec![(1, r2), (0, r1)], 0, 0, 2));
    assert!(probe.take().is_empty());

    // Add a late subscriber
    assert_eq!(d.ask(r1, 1), 1);
    d.subscribe(s3, &opts()).unwrap();
    assert_eq!(d.dispatch(vec!['d', 'e']), vec!['d', 'e']);
    assert_eq!(state(&d), (vec![(0, r3), (1, r1), (1, r2)], 0, 1, 3));

    // Even out
    assert_eq!(d.ask(r1, 2), 0);
    assert_eq!(d.ask(r2, 2), 0);
    assert_eq!(d.ask(r3, 3), 2);
    assert_eq!(d.dispatch(vec!['d', 'e', 'f']), Vec::<char>::new());
    assert_eq!(state(&d), (vec![(0, r3), (0, r2), (0, r1)], 0, 0, 3));
    let got = probe.take();
    for r in [r1, r2, r3] {
        assert!(got.contains(&Received::Events(r, vec!['d', 'e', 'f'])));
    }
}

#[test]
fn subscribes_asks_dispatches_and_repeats() {
    let probe = Probe::<char>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (r1, r2) = (s1.tag(), s2.tag());
    d.subscribe(s1, &opts()).unwrap();
    assert_eq!(state(&d), (vec![(0, r1)], 0, 0, 1));
    assert_eq!(d.ask(r1, 10), 10);
    assert_eq!(state(&d), (vec![(0, r1)], 10, 10, 1));
    assert!(d.dispatch(vec!['a', 'b', 'c']).is_empty());
    assert_eq!(state(&d), (vec![(0, r1)], 7, 7, 1));
    assert_eq!(
        probe.take(),
        vec![Received::Events(r1, vec!['a', 'b', 'c'])]
    );

    d.subscribe(s2, &opts()).unwrap();
    assert_eq!(state(&d), (vec![(0, r2), (7, r1)], 0, 7, 2));
    assert_eq!(d.ask(r2, 20), 0);
    assert_eq!(state(&d), (vec![(13, r2), (0, r1)], 7, 7, 2));
    let evs: Vec<char> = "defghij".chars().collect();
    assert!(d.dispatch(evs.clone()).is_empty());
    assert_eq!(state(&d), (vec![(13, r2), (0, r1)], 0, 0, 2));
    let got = probe.take();
    assert!(got.contains(&Received::Events(r1, evs.clone())));
    assert!(got.contains(&Received::Events(r2, evs)));
}

#[test]
fn subscribes_asks_cancels_and_dispatcher_reuses_events_for_another_subscriber() {
    let probe = Probe::<char>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (r1, r2) = (s1.tag(), s2.tag());
    d.subscribe(s1, &opts()).unwrap();
    assert_eq!(state(&d), (vec![(0, r1)], 0, 0, 1));
    assert_eq!(d.ask(r1, 10), 10);
    assert_eq!(state(&d), (vec![(0, r1)], 10, 10, 1));
    assert_eq!(d.cancel(r1), 0);
    assert_eq!(state(&d), (vec![], 0, 10, 0));
    d.subscribe(s2, &opts()).unwrap();
    assert_eq!(state(&d), (vec![(0, r2)], 0, 10, 1));
    // The demand is already requested upstream: no duplicate ask (GenStage #318).
    assert_eq!(d.ask(r2, 5), 0);
    assert_eq!(state(&d), (vec![(0, r2)], 5, 10, 1));
    assert!(d.dispatch(vec!['a', 'b', 'c']).is_empty());
    assert_eq!(state(&d), (vec![(0, r2)], 2, 7, 1));
    assert_eq!(
        probe.take(),
        vec![Received::Events(r2, vec!['a', 'b', 'c'])]
    );
}

#[test]
fn cancels_blocking_subscriber_while_there_is_already_a_requested_demand() {
    let probe = Probe::<char>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (r1, r2) = (s1.tag(), s2.tag());
    d.subscribe(s1, &opts()).unwrap();
    assert_eq!(d.ask(r1, 10), 10);
    assert_eq!(state(&d), (vec![(0, r1)], 10, 10, 1));
    d.subscribe(s2, &opts()).unwrap();
    assert_eq!(state(&d), (vec![(0, r2), (10, r1)], 0, 10, 2));
    assert_eq!(d.ask(r1, 5), 0);
    assert_eq!(state(&d), (vec![(15, r1), (0, r2)], 0, 10, 2));
    assert_eq!(d.cancel(r2), 5);
    assert_eq!(state(&d), (vec![(0, r1)], 15, 15, 1));
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Keyed {
    key: &'static str,
}

#[test]
fn subscribing_with_a_selector_function() {
    let probe = Probe::<Keyed>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (r1, r2) = (s1.tag(), s2.tag());
    d.subscribe(s1, &opts().selector(|e: &Keyed| e.key.starts_with("pre")))
        .unwrap();
    d.subscribe(s2, &opts().selector(|e: &Keyed| e.key.starts_with("pref")))
        .unwrap();
    assert_eq!(state(&d), (vec![(0, r2), (0, r1)], 0, 0, 2));
    assert_eq!(d.ask(r2, 4), 0);
    assert_eq!(d.ask(r1, 4), 4);
    let events = vec![
        Keyed { key: "pref-1234" },
        Keyed { key: "pref-5678" },
        Keyed { key: "pre0000" },
        Keyed { key: "foo0000" },
    ];
    assert!(d.dispatch(events.clone()).is_empty());
    let got = probe.take();
    assert!(got.contains(&Received::SelfAsk(r1, 1)));
    assert!(got.contains(&Received::SelfAsk(r2, 2)));
    assert!(got.contains(&Received::Events(r1, events[..3].to_vec())));
    assert!(got.contains(&Received::Events(r2, events[..2].to_vec())));
}

#[test]
fn delivers_info_to_current_process() {
    let probe = Probe::<u32>::new();
    let mut d = BroadcastDispatcher::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let r1 = s1.tag();
    d.subscribe(s1, &opts()).unwrap();
    d.subscribe(s2, &opts()).unwrap();
    assert_eq!(d.ask(r1, 3), 0);
    let before = state(&d);
    let info = probe.info();
    let id = info.id();
    d.info(info);
    assert_eq!(state(&d), before);
    assert_eq!(probe.take(), vec![Received::Info(id)]);
}

#[test]
fn subscribing_is_idempotent() {
    let probe = Probe::<u32>::new();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    let mut d = BroadcastDispatcher::new().log_to(LogSink::new(move |r| {
        l.lock().unwrap().push(r.message.clone())
    }));
    let s1 = probe.subscriber_for(42);
    let r1 = s1.tag();
    d.subscribe(s1, &opts()).unwrap();
    let again = probe.subscriber_for(42);
    assert_eq!(d.subscribe(again, &opts()), Err(Reason::AlreadySubscribed));
    assert_eq!(state(&d), (vec![(0, r1)], 0, 0, 1));
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains("already registered")));
}

// ----- test/gen_stage_test.exs, broadcast cases ------------------------------------

/// "producer-to-consumer demand" / "with shared (broadcast) demand"
#[test]
fn with_shared_broadcast_demand() {
    let inbox = Inbox::new();
    let producer = start_producer(
        Counter(0),
        ProducerOptions::new().dispatcher(BroadcastDispatcher::new()),
    )
    .unwrap();
    let c1 = start_consumer(Forwarder::new("c1", &inbox), ConsumerOptions::new()).unwrap();
    let c2 = start_consumer(Forwarder::new("c2", &inbox), ConsumerOptions::new()).unwrap();
    c1.async_subscribe(
        &producer,
        SubscribeOptions::new().max_demand(10).min_demand(0),
    )
    .unwrap();
    c2.async_subscribe(
        &producer,
        SubscribeOptions::new().max_demand(20).min_demand(0),
    )
    .unwrap();
    // Both eventually receive the same batch (the subscriptions race at the start).
    let mut seen1 = false;
    let mut seen2 = false;
    let want: Vec<u64> = (1000..1010).collect();
    while !(seen1 && seen2) {
        match inbox
            .next(crate::support::TIMEOUT)
            .expect("a message in time")
        {
            Msg::Consumed("c1", e) if e == want => seen1 = true,
            Msg::Consumed("c2", e) if e == want => seen2 = true,
            _ => {}
        }
    }
}

/// "producer-to-consumer demand" / "with shared (broadcast) demand and synchronizer
/// subscriber" (A: the raw subscriber that never asks is a manual-demand consumer).
#[test]
fn with_shared_broadcast_demand_and_synchronizer_subscriber() {
    let producer = start_producer(
        Counter(0),
        ProducerOptions::new().dispatcher(BroadcastDispatcher::new()),
    )
    .unwrap();
    synchronizer_holds_back_until_cancelled(&producer, (1000..1010).collect());
}

/// "with shared (broadcast) demand and synchronizer subscriber", on a broadcasting
/// `source` (a producer, or a producer-consumer): a subscriber that never asks holds
/// the others back; once it is cancelled, both receive `want`.
fn synchronizer_holds_back_until_cancelled(source: &impl Source<u64>, want: Vec<u64>) {
    let inbox = Inbox::new();
    let sync = start_consumer(Forwarder::manual("sync", &inbox), ConsumerOptions::new()).unwrap();
    let stale = sync
        .subscribe(
            source,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    let c1 = start_consumer(Forwarder::new("c1", &inbox), ConsumerOptions::new()).unwrap();
    let c2 = start_consumer(Forwarder::new("c2", &inbox), ConsumerOptions::new()).unwrap();
    c1.subscribe(source, SubscribeOptions::new().max_demand(10).min_demand(0))
        .unwrap();
    c2.subscribe(source, SubscribeOptions::new().max_demand(20).min_demand(0))
        .unwrap();
    inbox.refute_receive(|m| matches!(m, Msg::Consumed(..)));
    // Cancel the stale one (from outside, as the test sends the raw cancel).
    assert!(subscription_of(&sync, stale).cancel(Reason::Killed));
    both_receive(&inbox, want);
}

/// A `SubscriptionRef` for a tag, obtained from the consumer's thread.
fn subscription_of(consumer: &StageRef<Forwarder>, tag: Tag) -> SubscriptionRef {
    consumer
        .call(GetRef(tag))
        .unwrap()
        .expect("known subscription")
}

struct GetRef(Tag);

impl HandleCall<GetRef> for Forwarder {
    type Reply = Option<SubscriptionRef>;
    fn handle_call(
        &mut self,
        _r: GetRef,
        _from: &ReplyTo<Self::Reply>,
        _ctx: &mut Context<'_, Self>,
    ) -> Option<Self::Reply> {
        Some(self.refs.iter().find(|r| r.tag() == _r.0).cloned())
    }
}

/// "with shared (broadcast) demand does not result in duplicate upstream demand"
#[test]
fn with_shared_broadcast_demand_does_not_result_in_duplicate_upstream_demand() {
    let inbox = Inbox::new();
    let producer = start_producer(
        NothingProducer(inbox.tx.clone()),
        ProducerOptions::new().dispatcher(BroadcastDispatcher::new()),
    )
    .unwrap();
    let (_hold1, rx1) = crossbeam_channel::bounded::<()>(0);
    let (_hold2, rx2) = crossbeam_channel::bounded::<()>(0);
    let c1 = start_consumer(Sleeper(rx1), ConsumerOptions::new()).unwrap();
    let c2 = start_consumer(Sleeper(rx2), ConsumerOptions::new()).unwrap();
    c1.subscribe(
        &producer,
        SubscribeOptions::new().max_demand(10).min_demand(0),
    )
    .unwrap();
    c2.subscribe(
        &producer,
        SubscribeOptions::new().max_demand(20).min_demand(0),
    )
    .unwrap();
    inbox.assert_receive(|m| *m == Msg::Demand(10));
    inbox.refute_receive(|m| matches!(m, Msg::Demand(_)));
}

fn both_receive(inbox: &Inbox, want: Vec<u64>) {
    let mut seen = (false, false);
    while !(seen.0 && seen.1) {
        match inbox
            .next(crate::support::TIMEOUT)
            .expect("a message in time")
        {
            Msg::Consumed("c1", e) if e == want => seen.0 = true,
            Msg::Consumed("c2", e) if e == want => seen.1 = true,
            Msg::Consumed("sync", _) => panic!("the stale subscriber never asked"),
            _ => {}
        }
    }
}

fn doubled(r: std::ops::Range<u64>) -> Vec<u64> {
    r.flat_map(|e| [e, e]).collect()
}

/// "producer-producer_consumer-consumer demand" / "with shared (broadcast) demand"
#[test]
fn producer_consumer_with_shared_broadcast_demand() {
    let inbox = Inbox::new();
    let producer = start_producer(Counter(0), ProducerOptions::new()).unwrap();
    let doubler = start_producer_consumer(
        dispatch::Doubler,
        ProducerConsumerOptions::new()
            .dispatcher(BroadcastDispatcher::new())
            .subscribe_to(&producer, SubscribeOptions::new().max_demand(10)),
    )
    .unwrap();
    let c1 = start_consumer(Forwarder::new("c1", &inbox), ConsumerOptions::new()).unwrap();
    let c2 = start_consumer(Forwarder::new("c2", &inbox), ConsumerOptions::new()).unwrap();
    c1.async_subscribe(
        &doubler,
        SubscribeOptions::new().max_demand(10).min_demand(0),
    )
    .unwrap();
    c2.async_subscribe(
        &doubler,
        SubscribeOptions::new().max_demand(20).min_demand(0),
    )
    .unwrap();
    both_receive(&inbox, doubled(200..205));
}

/// "producer-producer_consumer-consumer demand" / "with shared (broadcast) demand and
/// synchronizer subscriber" (A: manual-demand consumer as the raw subscriber)
#[test]
fn producer_consumer_with_shared_broadcast_demand_and_synchronizer_subscriber() {
    let producer = start_producer(Counter(0), ProducerOptions::new()).unwrap();
    let doubler = start_producer_consumer(
        dispatch::Doubler,
        ProducerConsumerOptions::new()
            .dispatcher(BroadcastDispatcher::new())
            .subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    synchronizer_holds_back_until_cancelled(&doubler, doubled(200..205));
}

/// "demand" / "can be set to :accumulate via API using broadcast"
#[test]
fn can_be_set_to_accumulate_via_api_using_broadcast() {
    let inbox = Inbox::new();
    let producer = start_producer(
        dispatch::Queued,
        ProducerOptions::new().dispatcher(BroadcastDispatcher::new()),
    )
    .unwrap();
    assert_eq!(producer.demand_mode().unwrap(), DemandMode::Forward);
    let first = |name| {
        start_consumer(
            Forwarder::new(name, &inbox),
            ConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
        )
        .unwrap()
    };
    let (a, b) = (first("old1"), first("old2"));
    producer.set_demand_mode(DemandMode::Accumulate).unwrap();
    assert_eq!(producer.demand_mode().unwrap(), DemandMode::Accumulate);
    a.stop(Reason::Normal).unwrap();
    b.stop(Reason::Normal).unwrap();
    for i in 1..=4 {
        producer.cast(Queue(vec![i])).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _c1 = start_consumer(
        Forwarder::new("c1", &inbox),
        ConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    let _c2 = start_consumer(
        Forwarder::new("c2", &inbox),
        ConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    inbox.refute_receive(|m| matches!(m, Msg::Consumed(..)));
    producer.set_demand_mode(DemandMode::Forward).unwrap();
    assert_eq!(producer.demand_mode().unwrap(), DemandMode::Forward);
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    while got1.len() < 4 || got2.len() < 4 {
        match inbox
            .next(crate::support::TIMEOUT)
            .expect("a message in time")
        {
            Msg::Consumed("c1", e) => got1.push(e),
            Msg::Consumed("c2", e) => got2.push(e),
            _ => {}
        }
    }
    let want: Vec<Vec<u64>> = (1..=4).map(|i| vec![i]).collect();
    assert_eq!(got1, want);
    assert_eq!(got2, want);
    // The buffer ends empty (`:sys.get_state(producer).buffer` in the original).
    assert_eq!(producer.estimate_buffered_count().unwrap(), 0);
}

/// "sync_subscribe/2" / "handles subscription error gracefully"
#[test]
fn handles_subscription_error_gracefully() {
    let inbox = Inbox::new();
    let producer = start_producer(
        Counter(0),
        ProducerOptions::new()
            .dispatcher(BroadcastDispatcher::new())
            .log(LogSink::silent()),
    )
    .unwrap();
    let consumer = start_consumer(Forwarder::new("c1", &inbox), ConsumerOptions::new()).unwrap();
    let consumer2 = start_consumer(Forwarder::new("c2", &inbox), ConsumerOptions::new()).unwrap();
    let first = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    let second = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    // The second one is cancelled with AlreadySubscribed; the consumer survives.
    inbox.assert_receive(|m| {
        matches!(
            m,
            Msg::Cancelled("c1", CancelReason::Cancel(Reason::AlreadySubscribed))
        )
    });
    assert!(consumer.is_alive());
    assert!(producer.is_alive());
    // Each side keeps exactly one subscription: the first one still delivers.
    inbox.assert_receive(|m| matches!(m, Msg::Consumed("c1", _)));
    assert!(subscription_of(&consumer, first).tag() == first);
    let _ = second;

    consumer2
        .async_subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    consumer2
        .async_subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    inbox.assert_receive(|m| {
        matches!(
            m,
            Msg::Cancelled("c2", CancelReason::Cancel(Reason::AlreadySubscribed))
        )
    });
    inbox.assert_receive(|m| matches!(m, Msg::Consumed("c2", _)));
    assert!(consumer2.is_alive());
    assert!(producer.is_alive());
}

/// Beyond the originals: a selector that panics stops the producer with a reason
/// that says so, instead of unwinding through the stage loop.
#[test]
fn a_panicking_selector_stops_the_producer_with_its_message() {
    let inbox = Inbox::new();
    let producer = start_producer(
        Counter(0),
        ProducerOptions::new()
            .dispatcher(BroadcastDispatcher::new())
            .log(LogSink::silent()),
    )
    .unwrap();
    let c = start_consumer(
        Forwarder::new("c1", &inbox),
        ConsumerOptions::new().log(LogSink::silent()),
    )
    .unwrap();
    c.subscribe(
        &producer,
        SubscribeOptions::new()
            .selector(|x: &u64| if *x == 3 { panic!("bad event 3") } else { true }),
    )
    .unwrap();
    match producer.join() {
        Reason::Panic(m) => assert!(m.contains("bad event 3"), "{m}"),
        other => panic!("unexpected {other:?}"),
    }
}
