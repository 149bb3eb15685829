//! Tests of the `FairDispatcher` (GenStage PR #111, never merged, so there is no
//! original suite to port): even shares whatever the consumers' demands, one message
//! per consumer per batch, turns for small batches, the demand dispatcher's pending
//! accounting, and a running pipeline with consumers of very different `max_demand`.

use crate::support::dispatch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stageflow::dispatcher::{Dispatcher, FairDispatcher, Probe, Received};
use stageflow::prelude::*;

fn opts() -> SubscribeOptions<u32> {
    SubscribeOptions::new()
}

#[test]
fn shares_a_batch_evenly_whatever_the_demands() {
    let probe = Probe::<u32>::new();
    let mut d = FairDispatcher::new();
    let (a, b) = (probe.subscriber(), probe.subscriber());
    let (ta, tb) = (a.tag(), b.tag());
    d.subscribe(a, &opts()).unwrap();
    d.subscribe(b, &opts()).unwrap();
    assert_eq!(d.ask(ta, 10), 10);
    assert_eq!(d.ask(tb, 100), 100);
    assert!(d.dispatch((0..20).collect()).is_empty());
    assert_eq!(
        probe.take(),
        vec![
            Received::Events(ta, (0..10).collect()),
            Received::Events(tb, (10..20).collect())
        ]
    );
    assert_eq!(d.demands(), vec![(0, ta), (90, tb)]);
}

#[test]
fn a_consumer_that_wants_less_leaves_the_rest_to_the_others() {
    let probe = Probe::<u32>::new();
    let mut d = FairDispatcher::new();
    let (a, b, c) = (probe.subscriber(), probe.subscriber(), probe.subscriber());
    let (ta, tb, tc) = (a.tag(), b.tag(), c.tag());
    for s in [a, b, c] {
        d.subscribe(s, &opts()).unwrap();
    }
    d.ask(ta, 2);
    d.ask(tb, 100);
    d.ask(tc, 100);
    // 2 for a, the other 28 shared by b and c; then 5 events are left over.
    assert_eq!(d.dispatch((0..35).collect()).len(), 0);
    let got = probe.take();
    let sizes: Vec<(Tag, usize)> = got
        .iter()
        .map(|r| match r {
            Received::Events(t, e) => (*t, e.len()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes.len(), 3, "one message per consumer");
    assert!(sizes.contains(&(ta, 2)));
    let b_n = sizes.iter().find(|(t, _)| *t == tb).unwrap().1;
    let c_n = sizes.iter().find(|(t, _)| *t == tc).unwrap().1;
    assert_eq!(b_n + c_n, 33);
    assert!(b_n.abs_diff(c_n) <= 1);
}

#[test]
fn small_batches_take_turns() {
    let probe = Probe::<u32>::new();
    let mut d = FairDispatcher::new();
    let (a, b) = (probe.subscriber(), probe.subscriber());
    let (ta, tb) = (a.tag(), b.tag());
    d.subscribe(a, &opts()).unwrap();
    d.subscribe(b, &opts()).unwrap();
    d.ask(ta, 5);
    d.ask(tb, 5);
    for x in 0..4 {
        assert!(d.dispatch(vec![x]).is_empty());
    }
    assert_eq!(
        probe.take(),
        vec![
            Received::Events(ta, vec![0]),
            Received::Events(tb, vec![1]),
            Received::Events(ta, vec![2]),
            Received::Events(tb, vec![3])
        ]
    );
}

#[test]
fn leftovers_and_pending_demand_as_the_demand_dispatcher() {
    let probe = Probe::<u32>::new();
    let mut d = FairDispatcher::new();
    let (a, b) = (probe.subscriber(), probe.subscriber());
    let (ta, tb) = (a.tag(), b.tag());
    d.subscribe(a, &opts()).unwrap();
    d.subscribe(b, &opts()).unwrap();
    assert_eq!(d.ask(ta, 3), 3);
    assert_eq!(d.ask(tb, 2), 2);
    assert_eq!(d.cancel(ta), 0);
    assert_eq!(d.pending(), 3);
    // b's next ask is served from the departed consumer's demand.
    assert_eq!(d.ask(tb, 2), 0);
    assert_eq!(d.pending(), 1);
    assert_eq!(d.dispatch(vec![1, 2, 3, 4, 5, 6]), vec![5, 6]);
    assert_eq!(probe.take(), vec![Received::Events(tb, vec![1, 2, 3, 4])]);
    // Leftovers count against pending demand (GenStage #311).
    assert_eq!(d.pending(), 0);
    assert_eq!(d.dispatch(vec![7]), vec![7]);
}

struct Count(Arc<AtomicU64>);

impl Stage for Count {
    type In = u64;
    type Out = Never;
}

impl Consumer for Count {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.0.fetch_add(events.len() as u64, Ordering::Relaxed);
    }
}

/// A call that returns once the consumer has handled every message sent to it before.
struct Sync;

impl HandleCall<Sync> for Count {
    type Reply = ();
    fn handle_call(&mut self, _: Sync, _: &ReplyTo<()>, _: &mut Context<'_, Self>) -> Option<()> {
        Some(())
    }
}

/// Events arrive from outside in batches of 20 while two consumers with `max_demand`
/// 10 and 1000 wait: returns how many events each one got out of 2000.
///
/// Each batch is dispatched only when both consumers wait with all the demand they
/// will ask for: the producer's call returns after it dispatched the batch (the
/// events are then in the consumers' mailboxes), and each consumer answers a call
/// only after it handled those events and sent the asks that follow them, which thus
/// reach the producer ahead of the next batch. So the shares depend on the
/// dispatcher alone, not on how the threads happen to run.
fn scarce_events(d: impl Dispatcher<u64>) -> (u64, u64) {
    let source = start_producer(dispatch::Queued, ProducerOptions::new().dispatcher(d)).unwrap();
    let small = Arc::new(AtomicU64::new(0));
    let big = Arc::new(AtomicU64::new(0));
    let a = start_consumer(
        Count(small.clone()),
        ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(10)),
    )
    .unwrap();
    let b = start_consumer(
        Count(big.clone()),
        ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(1000)),
    )
    .unwrap();
    for i in 0..100u64 {
        source
            .call(dispatch::Queue((i * 20..i * 20 + 20).collect()))
            .unwrap();
        a.call(Sync).unwrap();
        b.call(Sync).unwrap();
    }
    let (small, big) = (small.load(Ordering::Relaxed), big.load(Ordering::Relaxed));
    assert_eq!(small + big, 2_000, "every batch was taken at once");
    (small, big)
}

/// When events are scarce, the demand dispatcher gives every batch to the consumer
/// with the larger `max_demand`; the fair dispatcher shares them.
#[test]
fn consumers_with_different_max_demands_share_the_work() {
    // The small consumer re-asks to 10 after every batch (min_demand 5), so each
    // batch of 20 is shared 10 and 10.
    let (small, _) = scarce_events(FairDispatcher::new());
    assert_eq!(small, 1_000, "fair: the small consumer's share of 2000");
    let (greedy_small, _) = scarce_events(stageflow::dispatcher::DemandDispatcher::new());
    assert_eq!(
        greedy_small, 0,
        "demand dispatcher: the big consumer takes all"
    );
}
