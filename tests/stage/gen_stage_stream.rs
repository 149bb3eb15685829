//! Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8), `test/gen_stage_test.exs`,
//! describes "stream" and "from_enumerable/2". Each test
//! keeps the original's name in snake case, its scenario and its assertions.
//!
//! `GenStage.stream/2` is [`StageStream`] (an `Iterator` of `Result<T, StreamError>`):
//! where the Elixir stream exits the caller with `{reason, {GenStage, :close_stream,
//! _}}`, ours yields one `Err(StreamError { reason })` and ends.
//! `GenStage.from_enumerable/2` is [`from_iter`].
//!
//! Stand-ins and parts not ported, with why:
//! - "may consume 10 events out of demand of 1000" / "... 300 events ...": the
//!   `refute_received {:"$gen_consumer", _, _}` half checks that the caller's mailbox is
//!   left clean; a `StageStream` has its own channel, dropped with it, so there is no
//!   caller mailbox to pollute. We check instead that dropping the stream cancels the
//!   subscription (the producer sees the cancel).
//! - "does not remove unknown $gen_consumer and DOWN messages" (B/A): same reason, the
//!   stream never reads the caller's messages.
//! - "exits when there is no named producer and subscription is permanent/transient"
//!   and "... temporary" (A): no name registry in stageflow; the dead-producer tests
//!   cover the behaviour.
//! - "exits when producer does not ack ..." (A): the Elixir fake producer is a bare
//!   process answering the subscribe with `{:cancel, :no_thanks}`; ours is a producer
//!   stage that cancels the subscription from its `handle_subscribe` (the producer then
//!   sends the consumer that cancel, as GenStage does), and for the variants where the
//!   fake process ends, stops normally right after.
//! - "from_enumerable/2 accepts a :link option" (B): no links between threads.
//! - "from_enumerable/2 accepts a :name option" (A): the name is the stage's (thread)
//!   name, checked through the handle instead of a process registry.

use std::time::Duration;

use stageflow::prelude::*;
use stageflow::{OnCancel, StageStream, StreamError};

use crate::support::*;

fn take<T: Send + 'static>(s: StageStream<T>, n: usize) -> Vec<Result<T, StreamError>> {
    s.take(n).collect()
}

fn values(v: Vec<Result<V, StreamError>>) -> Vec<V> {
    v.into_iter().map(|r| r.unwrap()).collect()
}

// ----- describe "stream" --------------------------------------------------------------------------

#[test]
fn stream_may_consume_10_events_out_of_demand_of_1000() {
    let producer = producer(Counter::new(0));
    let stream = StageStream::new()
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_eq!(values(take(stream, 10)), ints(0..10));
    assert!(producer.is_alive());
}

#[test]
fn stream_may_consume_10_events_out_of_demand_of_1000_and_cancels_when_dropped() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    producer.call(Queue(ints(0..10))).unwrap();
    let stream = StageStream::new()
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_eq!(values(take(stream, 10)), ints(0..10));
    assert_receive!(
        inbox,
        Msg::ProducerCancelled(_, CancelReason::Cancel(Reason::Normal))
    );
}

#[test]
fn stream_may_consume_300_events_out_of_demand_of_100() {
    let producer = producer(Counter::new(0));
    let stream = StageStream::new()
        .subscribe(&producer, SubscribeOptions::new().max_demand(100))
        .unwrap();
    let got = values(take(stream, 300));
    assert_eq!(got.len(), 300);
    assert_eq!(got, ints(0..300));
}

#[test]
fn stream_exits_when_producer_is_dead_and_subscription_is_permanent_transient() {
    // Deliberate difference: GenStage exits with `noproc`; a stream knows the dead
    // producer's exit reason and reports it.
    for mode in [CancelMode::Permanent, CancelMode::Transient] {
        let producer = producer(Counter::new(0));
        producer.stop(Reason::custom("gone")).unwrap();
        let stream = StageStream::new()
            .subscribe(&producer, SubscribeOptions::new().cancel(mode))
            .unwrap();
        assert_eq!(
            take(stream, 10),
            vec![Err(StreamError {
                reason: Reason::custom("gone")
            })],
            "{mode:?}"
        );
        // A producer that ended normally has nothing more to give: an empty stream,
        // as for a normal end while streaming.
        let producer = self::producer(Counter::new(0));
        producer.stop(Reason::Normal).unwrap();
        let stream = StageStream::new()
            .subscribe(&producer, SubscribeOptions::new().cancel(mode))
            .unwrap();
        assert_eq!(take(stream, 10), vec![], "{mode:?}");
    }
}

/// The "producer that does not ack": it cancels every subscription with `:no_thanks`
/// as soon as it arrives, then (if `then_exit`) stops normally.
struct NoThanks {
    then_exit: bool,
}

struct Exit;

impl Stage for NoThanks {
    type In = Never;
    type Out = V;
    fn handle_subscribe(
        &mut self,
        _: Peer,
        _: &SubscriptionInfo,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        from.cancel(Reason::custom("no_thanks"));
        if self.then_exit {
            let _ = ctx.myself().async_info(Exit);
        }
        Ok(Demand::Automatic)
    }
}

impl Producer for NoThanks {
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
}

impl HandleInfo<Exit> for NoThanks {
    fn handle_info(&mut self, _: Exit, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

fn no_thanks(then_exit: bool, mode: CancelMode) -> Vec<Result<V, StreamError>> {
    let producer = start_producer(NoThanks { then_exit }, ProducerOptions::new()).unwrap();
    let stream = StageStream::new()
        .subscribe(&producer, SubscribeOptions::new().cancel(mode))
        .unwrap();
    let got = take(stream, 10);
    if then_exit {
        assert_eq!(exit_reason(&producer), Reason::Normal);
    } else {
        assert!(producer.is_alive());
    }
    got
}

#[test]
fn stream_exits_when_producer_does_not_ack_and_subscription_is_permanent_transient() {
    for mode in [CancelMode::Permanent, CancelMode::Transient] {
        assert_eq!(
            no_thanks(true, mode),
            vec![Err(StreamError {
                reason: Reason::custom("no_thanks")
            })]
        );
    }
}

#[test]
fn stream_exits_when_producer_does_not_ack_and_lives_and_subscription_is_permanent_transient() {
    for mode in [CancelMode::Permanent, CancelMode::Transient] {
        assert_eq!(
            no_thanks(false, mode),
            vec![Err(StreamError {
                reason: Reason::custom("no_thanks")
            })]
        );
    }
}

#[test]
fn stream_exits_when_producer_is_dead_and_subscription_is_temporary() {
    let producer = producer(Counter::new(0));
    producer.stop(Reason::Normal).unwrap();
    let stream = StageStream::new()
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    assert_eq!(take(stream, 10), vec![]);
}

#[test]
fn stream_exits_when_producer_does_not_ack_and_subscription_is_temporary() {
    assert_eq!(no_thanks(true, CancelMode::Temporary), vec![]);
}

#[test]
fn stream_exits_when_producer_does_not_ack_and_lives_and_subscription_is_temporary() {
    assert_eq!(no_thanks(false, CancelMode::Temporary), vec![]);
}

#[test]
fn stream_sends_termination_message_on_done() {
    let producer = from_iter(0u64.., FromIterOptions::new()).unwrap();
    let stream = StageStream::new()
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Transient),
        )
        .unwrap();
    let got: Vec<u64> = stream.take(10).map(Result::unwrap).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(producer.join_timeout(QUIET).is_none());
}

#[test]
fn stream_sends_termination_message_on_halt() {
    let producer = from_iter((0u64..).take(10), FromIterOptions::new()).unwrap();
    let stream = StageStream::new()
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Transient),
        )
        .unwrap();
    let got: Vec<u64> = stream.map(Result::unwrap).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(exit_reason(&producer), Reason::Normal);
}

#[test]
fn stream_sends_termination_message_on_halt_of_an_inexact_iterator() {
    // `Stream.take/2` has no exact length in Elixir; a filter hides ours too, so the
    // producer only learns the end by pulling past it.
    let producer = from_iter((0u64..10).filter(|_| true), FromIterOptions::new()).unwrap();
    let stream = StageStream::new()
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Transient),
        )
        .unwrap();
    let got: Vec<u64> = stream.map(Result::unwrap).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(exit_reason(&producer), Reason::Normal);
}

#[test]
fn stream_raises_on_bad_options() {
    let producer = producer(Counter::new(0));
    let e = StageStream::new()
        .subscribe(&producer, SubscribeOptions::new().max_demand(0))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid options for producer #{} (expected max_demand to be equal to or greater than 1, got: 0)",
            producer.id()
        )
    );
}

// ----- describe "from_enumerable/2" -------------------------------------------------------------------

#[test]
fn from_enumerable_2_accepts_a_name_option() {
    let producer = from_iter(
        Vec::<u8>::new(),
        FromIterOptions::new().name("gen_stage_from_enumerable"),
    )
    .unwrap();
    assert_eq!(producer.name(), "gen_stage_from_enumerable");
}

#[test]
fn from_enumerable_2_accepts_a_on_cancel_option() {
    let cycle = || [1u64, 2, 3].into_iter().cycle();

    let p = from_iter(cycle(), FromIterOptions::new()).unwrap();
    let got: Vec<u64> = stream(&p).take(5).map(Result::unwrap).collect();
    assert_eq!(got, vec![1, 2, 3, 1, 2]);
    assert!(p.join_timeout(QUIET).is_none());

    let p = from_iter(
        cycle(),
        FromIterOptions::new().on_cancel(OnCancel::Continue),
    )
    .unwrap();
    let got: Vec<u64> = stream(&p).take(5).map(Result::unwrap).collect();
    assert_eq!(got, vec![1, 2, 3, 1, 2]);
    assert!(p.join_timeout(QUIET).is_none());

    let p = from_iter(cycle(), FromIterOptions::new().on_cancel(OnCancel::Stop)).unwrap();
    let got: Vec<u64> = stream(&p).take(5).map(Result::unwrap).collect();
    assert_eq!(got, vec![1, 2, 3, 1, 2]);
    assert_eq!(p.join_timeout(Duration::from_secs(5)), Some(Reason::Normal));
}
