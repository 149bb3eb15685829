//! Port of the stage-bridge tests of Elixir Flow: dashbitco/flow v1.2.4,
//! `test/flow_test.exs` (describes "stages-unpartioned-stream", the into_stages /
//! through_stages tests of "enumerable-stream" and "enumerable-partitioned-stream",
//! and "coordinator": "can be consumed as a stream", "sets demand to proxied").
//! The helper stages (Counter, Forwarder, Copier)
//! are ported as stage-layer stages. [dispatch] expectations about how events are
//! split into batches are replaced by the multiset of events each stage saw.
//! Waits use channels with generous timeouts and fail with a message.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use stageflow::flow::{Flow, FlowError, Options};
use stageflow::prelude::*;

// `Counter` emits n, n+1, ... forever, as asked.
use crate::support::dispatch::Counter;
use crate::support::TIMEOUT;

/// Sends every batch it consumes to the test.
struct Forwarder(Sender<Vec<u64>>);
impl Stage for Forwarder {
    type In = u64;
    type Out = Never;
}
impl Consumer for Forwarder {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        let _ = self.0.send(events);
    }
}

/// Passes events through and tells the test what it saw.
struct Copier(Sender<Vec<u64>>);
impl Stage for Copier {
    type In = u64;
    type Out = u64;
}
impl ProducerConsumer for Copier {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        let _ = self.0.send(events.clone());
        ctx.emit_all(events);
    }
}

fn counter() -> StageRef<Counter> {
    start_producer(Counter(0), ProducerOptions::new()).expect("start counter")
}

/// Every event received until `total` events arrived (or the wait times out).
fn gather(rx: &Receiver<Vec<u64>>, total: usize) -> Vec<u64> {
    let mut all = Vec::new();
    while all.len() < total {
        match rx.recv_timeout(TIMEOUT) {
            Ok(v) => all.extend(v),
            Err(e) => panic!("waited {TIMEOUT:?} for {total} events, got {all:?}: {e}"),
        }
    }
    all.sort();
    all
}

fn take5(f: Flow<'static, u64>) -> Vec<u64> {
    let mut v: Vec<u64> = f.into_iter().take(5).collect();
    v.sort();
    v
}

#[test]
fn stages_unpartitioned_stream() {
    let one = || Options::new().stages(1);
    let c = counter();
    assert_eq!(
        take5(Flow::from_stages(vec![c.clone()], one())),
        [0, 1, 2, 3, 4]
    );
    let c = counter();
    assert_eq!(
        take5(Flow::from_stages(vec![c.clone()], one()).filter(|x| x % 2 == 0)),
        [0, 2, 4, 6, 8]
    );
    let c = counter();
    assert_eq!(
        take5(Flow::from_stages(vec![c.clone()], one()).flat_map(|x| [x, x])),
        [0, 0, 1, 1, 2]
    );
    let c = counter();
    assert_eq!(
        take5(Flow::from_stages(vec![c.clone()], one()).map(|x| x * 2)),
        [0, 2, 4, 6, 8]
    );
    let c = counter();
    assert_eq!(
        take5(Flow::from_stages(vec![c.clone()], one()).reject(|x| x % 2 == 0)),
        [1, 3, 5, 7, 9]
    );
    let c = counter();
    let f = Flow::from_stages(vec![c.clone()], one())
        .filter(|x| x % 2 == 0)
        .map(|x| x + 1)
        .map(|x| x * 2);
    assert_eq!(take5(f), [2, 6, 10, 14, 18]);
}

#[test]
fn specs_map_batch_sees_batches_of_the_layer() {
    // Upstream: batches of exactly 500 (1000 - 500): sums of 0..499, 500..999, ...
    let c = counter();
    let v: Vec<u64> = Flow::from_stages(vec![c.clone()], Options::new().stages(1))
        .map_batch(|b: Vec<u64>| vec![b.iter().sum::<u64>()])
        .into_iter()
        .take(5)
        .collect();
    assert_eq!(v, [124_750, 374_750, 624_750, 874_750, 1_124_750]);
}

#[test]
fn from_stages_of_finite_producers_ends() {
    let a = from_iter(1..=50u64, FromIterOptions::new()).unwrap();
    let b = from_iter(51..=100u64, FromIterOptions::new()).unwrap();
    let s: u64 = Flow::from_stages(vec![a.clone(), b.clone()], Options::new()).sum();
    assert_eq!(s, 5050);
    assert_eq!(a.join(), Reason::Normal);
}

#[test]
fn from_stages_reports_a_failing_producer() {
    struct Fragile;
    impl Stage for Fragile {
        type In = Never;
        type Out = u64;
    }
    impl Producer for Fragile {
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {
            panic!("disk on fire");
        }
    }
    let p = start_producer(Fragile, ProducerOptions::new()).unwrap();
    let err = Flow::from_stages(vec![p], Options::new())
        .try_count()
        .unwrap_err();
    assert!(
        matches!(err, FlowError::Stage(ref cause) if cause.to_string().contains("disk on fire")),
        "{err}"
    );
    // The stage layer's error is kept as the cause, not flattened to a string.
    let cause = std::error::Error::source(&err).expect("the stage error as source");
    assert!(cause.to_string().contains("disk on fire"), "{cause}");
    let none: Vec<StageRef<Counter>> = vec![];
    assert!(matches!(
        Flow::from_stages(none, Options::new()).try_count(),
        Err(FlowError::Build(_))
    ));
}

fn two_lists() -> Flow<'static, u64> {
    Flow::from_iters_with(
        vec![vec![1u64, 2, 3], vec![4, 5, 6]],
        Options::new().stages(2),
    )
}

#[test]
fn into_stages() {
    let (tx, rx) = channel();
    let fwd = start_consumer(Forwarder(tx), ConsumerOptions::new()).unwrap();
    let producer = two_lists()
        .filter(|x| x % 2 == 0)
        .into_stages(&[&fwd])
        .unwrap();
    assert_eq!(gather(&rx, 3), [2, 4, 6]);
    assert_eq!(producer.join(), Reason::Normal);
    fwd.stop(Reason::Normal).unwrap();
}

#[test]
fn into_stages_partitioned() {
    let (tx, rx) = channel();
    let fwd = start_consumer(Forwarder(tx), ConsumerOptions::new()).unwrap();
    let lists: Vec<Vec<u64>> = vec![vec![1, 2, 3], vec![4, 5, 6], (7..=10).collect()];
    let producer = Flow::from_iters_with(lists, Options::new().stages(4))
        .partition(Options::new().stages(4))
        .filter(|x| x % 2 == 0)
        .into_stages(&[&fwd])
        .unwrap();
    assert_eq!(gather(&rx, 5), [2, 4, 6, 8, 10]);
    assert_eq!(producer.join(), Reason::Normal);
    fwd.stop(Reason::Normal).unwrap();
}

#[test]
fn through_stages_and_into_stages() {
    let (tx1, rx1) = channel();
    let (tx2, rx2) = channel();
    let (tx3, rx3) = channel();
    let printer1 = start_producer_consumer(Copier(tx1), ProducerConsumerOptions::new()).unwrap();
    let printer2 = start_producer_consumer(Copier(tx2), ProducerConsumerOptions::new()).unwrap();
    let fwd = start_consumer(Forwarder(tx3), ConsumerOptions::new()).unwrap();
    let producer = two_lists()
        .through_stages(vec![printer1.clone()], Options::new())
        .filter(|x| x % 2 == 0)
        .through_stages(vec![printer2.clone()], Options::new())
        .map(|x| x)
        .into_stages(&[&fwd])
        .unwrap();
    assert_eq!(gather(&rx1, 6), [1, 2, 3, 4, 5, 6]);
    assert_eq!(gather(&rx2, 3), [2, 4, 6]);
    assert_eq!(gather(&rx3, 3), [2, 4, 6]);
    assert_eq!(producer.join(), Reason::Normal);
    assert_eq!(printer1.join(), Reason::Normal);
    assert_eq!(printer2.join(), Reason::Normal);
    fwd.stop(Reason::Normal).unwrap();
}

#[test]
fn can_be_consumed_as_a_stream() {
    let c = counter();
    let p = Flow::from_stages(vec![c.clone()], Options::new().stages(1).max_demand(1))
        .filter(|x| x % 2 == 1)
        .into_producer()
        .unwrap();
    p.set_demand_mode(DemandMode::Forward).unwrap();
    let got: Vec<u64> = stream(&p).take(5).map(|r| r.unwrap()).collect();
    assert_eq!(got, [1, 3, 5, 7, 9]);
    let _ = p.stop(Reason::Normal);
    let _ = c.stop(Reason::Normal);
}

#[test]
fn demand_is_accumulated_until_forwarded() {
    // Upstream "sets demand to proxied": nothing is consumed before forwarding.
    let (tx, rx) = channel();
    let fwd = start_consumer(Forwarder(tx), ConsumerOptions::new()).unwrap();
    let p = Flow::from_iter(vec![1u64]).into_producer().unwrap();
    fwd.subscribe(&p, SubscribeOptions::new().cancel(CancelMode::Transient))
        .unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "events before forward"
    );
    p.set_demand_mode(DemandMode::Forward).unwrap();
    assert_eq!(gather(&rx, 1), [1]);
    fwd.stop(Reason::Normal).unwrap();
}

#[test]
fn a_failing_flow_stops_its_producer_with_the_message() {
    let p = Flow::from_iter(vec![1u64, 2])
        .map(|_| -> u64 { panic!("oops") })
        .into_producer()
        .unwrap();
    p.set_demand_mode(DemandMode::Forward).unwrap();
    let got: Vec<Result<u64, _>> = stream(&p).collect();
    assert!(got.iter().any(|r| r.is_err()));
    match p.join() {
        Reason::Panic(m) => assert!(m.contains("oops"), "{m}"),
        other => panic!("expected a panic reason, got {other:?}"),
    }
}
