//! A reusable conformance suite for stageflow producers, in the spirit of the Reactive
//! Streams TCK (rule numbers in brackets refer to the Reactive Streams 1.0
//! specification: 1.x Publisher, 2.x Subscriber, 3.x Subscription).
//!
//! The suite is parameterised by a [`Factory`]: something that starts a producer of
//! `u64` events over a given iterator (with some dispatcher, possibly behind a
//! producer-consumer) and says how the k-th subscriber must subscribe (a partition
//! dispatcher needs a `partition`). Every rule is checked through a manual-demand
//! probe consumer ([`Probe`]), which asks exactly what the test asks and records every
//! signal it receives. [`conformance_suite!`] expands to one `#[test]` per rule for a
//! factory; `tests/stage/conformance.rs` runs it against every built-in producer and
//! dispatcher.
//!
//! Mapping of the rules onto GenStage's protocol: `onNext` is a message of events,
//! `onComplete`/`onError` is the subscription ending with a normal/abnormal reason
//! (the consumer's `handle_cancel`), `request(n)` is `ask(n)`, `cancel()` is
//! `SubscriptionRef::cancel`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use stageflow::prelude::*;
use stageflow::SourceRef;

pub use crate::support::{QUIET, TIMEOUT as WAIT};

/// The events a producer under test emits: any iterator of `u64`.
pub type Events = Box<dyn Iterator<Item = u64> + Send>;

/// A running producer under test.
pub struct Fixture {
    /// Where probes subscribe.
    pub source: SourceRef<u64>,
    /// Subscription options of the k-th subscriber (0-based).
    pub opts: Arc<dyn Fn(usize) -> SubscribeOptions<u64> + Send + Sync>,
    /// Whether every subscriber receives every event (broadcast) rather than a share.
    pub every_subscriber_gets_all: bool,
    /// Stops the stages of the fixture (for infinite sources).
    pub stop: Box<dyn FnOnce() + Send>,
    /// Called after each probe subscribed: lets a source that waits in accumulate
    /// mode start flowing (a producer must not finish before its first subscriber
    /// arrives, or that subscriber finds it gone).
    pub started: Arc<dyn Fn() + Send + Sync>,
}

/// Starts producers under test.
pub struct Factory {
    /// Shown in failures.
    pub name: &'static str,
    /// Starts a producer over these events.
    pub start: fn(Events) -> Fixture,
}

/// What a probe received, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A message of events (`onNext` × len).
    Events(Vec<u64>),
    /// The subscription ended (`onComplete` / `onError` / cancel confirmation).
    Done(CancelReason),
}

pub struct ProbeStage {
    signals: Sender<Signal>,
    subscribed: Sender<SubscriptionRef>,
}

impl Stage for ProbeStage {
    type In = u64;
    type Out = Never;
    fn handle_subscribe(
        &mut self,
        _peer: Peer,
        _info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        let _ = self.subscribed.send(from.clone());
        Ok(Demand::Manual)
    }
    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        _from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        let _ = self.signals.send(Signal::Done(reason));
    }
}

impl Consumer for ProbeStage {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        let _ = self.signals.send(Signal::Events(events));
    }
}

/// A manual-demand consumer recording every signal (the TCK's manual subscriber).
pub struct Probe {
    /// Its subscription (ask, cancel).
    pub sub: SubscriptionRef,
    signals: Receiver<Signal>,
    stage: StageRef<ProbeStage>,
    asked: usize,
    received: usize,
}

impl Probe {
    /// Subscribes a new probe to the fixture as its `k`-th subscriber. The
    /// subscription is temporary, so the probe outlives it and can prove that
    /// nothing comes after the end.
    pub fn subscribe(f: &Fixture, k: usize) -> Probe {
        let (signals_tx, signals) = unbounded();
        let (sub_tx, sub_rx) = unbounded();
        let stage = start_consumer(
            ProbeStage {
                signals: signals_tx,
                subscribed: sub_tx,
            },
            ConsumerOptions::new(),
        )
        .expect("probe starts");
        stage
            .subscribe(&f.source, (f.opts)(k).cancel(CancelMode::Temporary))
            .expect("probe subscribes");
        let sub = sub_rx.recv_timeout(WAIT).expect("handle_subscribe ran");
        (f.started)();
        Probe {
            sub,
            signals,
            stage,
            asked: 0,
            received: 0,
        }
    }

    /// `request(n)`.
    pub fn ask(&mut self, n: usize) {
        self.asked = self.asked.saturating_add(n);
        self.sub.ask(n);
    }

    /// Next signal within `timeout`; checks rule 1.1 on every message of events.
    pub fn next(&mut self, timeout: Duration) -> Option<Signal> {
        let s = self.signals.recv_timeout(timeout).ok()?;
        if let Signal::Events(e) = &s {
            self.received += e.len();
            assert!(
                self.received <= self.asked,
                "[1.1] received {} events, asked for {}",
                self.received,
                self.asked
            );
        }
        Some(s)
    }

    /// Receives events until `n` arrived (or fails after `WAIT`).
    pub fn expect_events(&mut self, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Signal::Events(e)) => got.extend(e),
                Some(Signal::Done(r)) => {
                    panic!("ended with {r:?} after {} of {n} events", got.len())
                }
                None => panic!("only {} of {n} events arrived", got.len()),
            }
        }
        assert_eq!(got.len(), n, "[1.1] more events than asked for");
        got
    }

    /// Receives events until the end and returns them with the end's reason.
    pub fn expect_end(&mut self) -> (Vec<u64>, CancelReason) {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Signal::Events(e)) => got.extend(e),
                Some(Signal::Done(r)) => return (got, r),
                None => panic!("no end after {} events", got.len()),
            }
        }
    }

    /// Nothing arrives for `QUIET`.
    pub fn expect_nothing(&mut self, rule: &str) {
        if let Some(s) = self.next(QUIET) {
            panic!("[{rule}] unexpected signal {s:?}");
        }
    }

    /// The probe's stage (to stop it).
    pub fn stage(&self) -> &StageRef<ProbeStage> {
        &self.stage
    }
}

fn counting() -> Events {
    Box::new(0u64..)
}

/// A source that fails (panics) after `n` events.
fn failing(n: u64) -> Events {
    Box::new((0u64..).inspect(move |&i| {
        if i == n {
            panic!("source failed after {n} events");
        }
    }))
}

/// [1.1] The number of events delivered never exceeds the demand asked for.
pub fn never_more_than_requested(factory: &Factory) {
    let f = (factory.start)(counting());
    let mut p = Probe::subscribe(&f, 0);
    p.ask(3);
    let got = p.expect_events(3);
    p.expect_nothing("1.1");
    p.ask(5);
    let more = p.expect_events(5);
    p.expect_nothing("1.1");
    let all: Vec<u64> = got.into_iter().chain(more).collect();
    if f.every_subscriber_gets_all {
        assert_eq!(all, (0..8).collect::<Vec<_>>(), "{}", factory.name);
    }
    (f.stop)();
}

/// [1.6, 1.7] A finite source completes exactly once, after its last event, and
/// nothing follows the completion.
pub fn completes_exactly_once_and_nothing_after(factory: &Factory) {
    let f = (factory.start)(Box::new(0u64..10));
    let mut p = Probe::subscribe(&f, 0);
    p.ask(100);
    let (events, end) = p.expect_end();
    assert_eq!(
        events,
        (0..10).collect::<Vec<_>>(),
        "{}: [1.6] all events before the end",
        factory.name
    );
    assert!(
        end.reason().is_normal(),
        "{}: [1.6] normal completion, got {end:?}",
        factory.name
    );
    p.ask(10);
    p.expect_nothing("1.7");
    (f.stop)();
}

/// [2.9] An empty source signals completion without any event, even before demand.
pub fn empty_source_completes(factory: &Factory) {
    let f = (factory.start)(Box::new(std::iter::empty()));
    let mut p = Probe::subscribe(&f, 0);
    p.ask(1);
    let (events, end) = p.expect_end();
    assert!(
        events.is_empty(),
        "{}: [2.9] events from an empty source",
        factory.name
    );
    assert!(
        end.reason().is_normal(),
        "{}: [2.9] got {end:?}",
        factory.name
    );
    p.expect_nothing("1.7");
    (f.stop)();
}

/// [2.10, 1.7] A failing source signals its failure exactly once, with its reason,
/// after the events it produced; nothing follows.
pub fn failing_source_signals_failure(factory: &Factory) {
    let f = (factory.start)(failing(3));
    let mut p = Probe::subscribe(&f, 0);
    p.ask(10);
    let (events, end) = p.expect_end();
    assert!(events.len() <= 3, "{}: too many events", factory.name);
    assert!(
        !end.reason().is_normal(),
        "{}: [2.10] failure expected, got {end:?}",
        factory.name
    );
    assert!(
        end.reason()
            .to_string()
            .contains("source failed after 3 events"),
        "{}: [2.10] the reason carries the failure: {end:?}",
        factory.name
    );
    p.expect_nothing("1.7");
    (f.stop)();
}

/// [3.8, 3.17] Demand accumulates across asks, and demand up to and beyond
/// `usize::MAX` saturates instead of overflowing.
pub fn demand_accumulates_and_saturates(factory: &Factory) {
    let f = (factory.start)(counting());
    let mut p = Probe::subscribe(&f, 0);
    p.ask(2);
    p.ask(3);
    p.expect_events(5);
    p.expect_nothing("3.8");
    (f.stop)();

    let f = (factory.start)(Box::new(0u64..1_000));
    let mut p = Probe::subscribe(&f, 0);
    p.ask(usize::MAX);
    p.ask(usize::MAX);
    p.ask(1);
    let (events, end) = p.expect_end();
    assert!(
        end.reason().is_normal(),
        "{}: [3.17] got {end:?}",
        factory.name
    );
    if f.every_subscriber_gets_all {
        assert_eq!(events, (0..1_000).collect::<Vec<_>>(), "{}", factory.name);
    } else {
        assert!(!events.is_empty(), "{}", factory.name);
    }
    (f.stop)();
}

/// [3.9] A zero ask is unrepresentable on the wire: `ask(0)` is a no-op that delivers
/// nothing and does not break the subscription.
pub fn zero_ask_is_a_no_op(factory: &Factory) {
    let f = (factory.start)(counting());
    let mut p = Probe::subscribe(&f, 0);
    p.ask(0);
    p.expect_nothing("3.9");
    p.ask(1);
    p.expect_events(1);
    (f.stop)();
}

/// [3.5, 3.6, 3.7, 3.12] Cancel stops delivery; cancelling again, or asking after a
/// cancel, has no effect (one confirmation only); the producer keeps running.
pub fn cancel_is_idempotent_and_stops_delivery(factory: &Factory) {
    let f = (factory.start)(counting());
    let mut p = Probe::subscribe(&f, 0);
    p.ask(4);
    p.expect_events(4);
    assert!(p.sub.cancel(Reason::Normal));
    let _ = p.sub.cancel(Reason::Normal);
    match p.next(WAIT) {
        Some(Signal::Done(CancelReason::Cancel(Reason::Normal))) => {}
        other => panic!(
            "{}: [3.12] cancel confirmation expected, got {other:?}",
            factory.name
        ),
    }
    p.ask(10);
    p.expect_nothing("3.6/3.7");
    // The producer goes on serving others.
    let mut q = Probe::subscribe(&f, 0);
    q.ask(2);
    q.expect_events(2);
    (f.stop)();
}

/// [3.13] A cancelled subscriber is released by the producer: its demand and its
/// place (a partition, a broadcast slot) go, so a new subscriber in the same place
/// is accepted and served, and the remaining ones are not held back by it.
pub fn cancelled_subscribers_are_released(factory: &Factory) {
    let f = (factory.start)(counting());
    let mut a = Probe::subscribe(&f, 0);
    a.ask(5);
    a.expect_events(5);
    // Outstanding demand at cancel time must not keep anything alive either.
    a.ask(0);
    a.sub.cancel(Reason::Normal);
    let _ = a.expect_end();
    a.stage().stop(Reason::Normal).expect("probe stops");
    for round in 0..3 {
        let mut b = Probe::subscribe(&f, 0);
        b.ask(5);
        let got = b.expect_events(5);
        assert_eq!(got.len(), 5, "{}: round {round}", factory.name);
        b.sub.cancel(Reason::Normal);
        match b.expect_end().1 {
            CancelReason::Cancel(Reason::Normal) => {}
            other => panic!("{}: [3.13] {other:?}", factory.name),
        }
    }
    (f.stop)();
}

/// One `#[test]` per rule for a factory: `conformance_suite!(module_name, factory);`
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn rule_1_1_never_more_than_requested() {
                rules::never_more_than_requested(&$factory);
            }
            #[test]
            fn rule_1_6_1_7_completes_exactly_once_and_nothing_after() {
                rules::completes_exactly_once_and_nothing_after(&$factory);
            }
            #[test]
            fn rule_2_9_empty_source_completes() {
                rules::empty_source_completes(&$factory);
            }
            #[test]
            fn rule_2_10_failing_source_signals_failure() {
                rules::failing_source_signals_failure(&$factory);
            }
            #[test]
            fn rule_3_8_3_17_demand_accumulates_and_saturates() {
                rules::demand_accumulates_and_saturates(&$factory);
            }
            #[test]
            fn rule_3_9_zero_ask_is_a_no_op() {
                rules::zero_ask_is_a_no_op(&$factory);
            }
            #[test]
            fn rule_3_5_3_7_3_12_cancel_is_idempotent_and_stops_delivery() {
                rules::cancel_is_idempotent_and_stops_delivery(&$factory);
            }
            #[test]
            fn rule_3_13_cancelled_subscribers_are_released() {
                rules::cancelled_subscribers_are_released(&$factory);
            }
        }
    };
}
