//! Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8), `test/gen_stage_test.exs`,
//! describes "sync_subscribe/2", "sync_resubscribe/2", "async_resubscribe/2", "manual
//! demand" and "subscribe_to names". Each test keeps
//! the original's name in snake case, its scenario and its assertions.
//!
//! `sync_subscribe` is [`StageRef::subscribe`], `async_subscribe` is
//! [`StageRef::async_subscribe`], `sync_resubscribe`/`async_resubscribe` are
//! [`StageRef::resubscribe`]/[`StageRef::async_resubscribe`]. `{:EXIT, consumer, reason}`
//! is [`StageRef::join_timeout`].
//!
//! Not ported, with why:
//! - "consumer exits when there is no named producer and subscription is permanent",
//!   "consumer does not exit when there is no named producer and subscription is
//!   temporary", "subscribe_to names: can be an atom name" (A): stageflow has no name
//!   registry; a producer is addressed by its handle, so "a name that is not registered"
//!   does not exist. The dead-producer variants below cover the behaviour.
//! - "handles subscription error gracefully": BroadcastDispatcher (`:already_subscribed`),
//!   ported with the broadcast dispatcher by its own suite.
//! - "subscribe_to names: can be a via/global name ...", "logs warning about ambiguity
//!   ..." (B): `:via`/`:global` registries.

use stageflow::prelude::*;
use stageflow::{CallError, SubscribeError};

use crate::support::*;

fn bad_opts(e: SubscribeError) -> String {
    match e {
        SubscribeError::BadOptions(o) => o.message().to_string(),
        other => panic!("expected bad options, got {other:?}"),
    }
}

// ----- describe "sync_subscribe/2" ---------------------------------------------------------------

#[test]
fn sync_subscribe_2_returns_ok_with_reference() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_receive!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == tag);
}

#[test]
fn sync_subscribe_2_caller_exits_when_the_consumer_is_dead() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.stop(Reason::Normal).unwrap();
    let err = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap_err();
    assert!(
        matches!(&err, SubscribeError::Call(CallError::NoProc(e)) if e.id == consumer.id()),
        "{err:?}"
    );
}

#[test]
fn sync_subscribe_2_returns_errors_on_bad_options() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let e = consumer
        .subscribe(&producer, SubscribeOptions::new().max_demand(0))
        .unwrap_err();
    assert_eq!(
        bad_opts(e),
        "expected max_demand to be equal to or greater than 1, got: 0"
    );
    let e = consumer
        .subscribe(&producer, SubscribeOptions::new().min_demand(2000))
        .unwrap_err();
    assert_eq!(
        bad_opts(e),
        "expected min_demand to be equal to or less than 999, got: 2000"
    );
    assert!(consumer.is_alive());
}

#[test]
fn sync_subscribe_2_consumer_exits_when_producer_is_dead_and_subscription_is_permanent() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    producer.stop(Reason::Normal).unwrap();
    let consumer = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap();
    // Deliberate difference: GenStage replies `{:ok, ref}` and the consumer then exits
    // with `:noproc`. The producer is known to be gone when the subscription is sent,
    // so `subscribe` says so, naming it, and the consumer is left alone.
    let err = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap_err();
    assert!(
        matches!(&err, SubscribeError::NoProc(e) if e.id == producer.id() && e.exit == Some(Reason::Normal)),
        "{err:?}"
    );
    assert!(consumer.join_timeout(QUIET).is_none());
}

#[test]
fn sync_subscribe_2_consumer_does_not_exit_when_producer_is_dead_and_subscription_is_temporary() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    producer.stop(Reason::Normal).unwrap();
    let consumer = consumer(Forwarder::new(inbox.tx()));
    // As for a permanent subscription, `subscribe` reports the dead producer (GenStage
    // replies `{:ok, ref}` and ends the subscription with `:noproc`).
    let err = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap_err();
    assert!(matches!(err, SubscribeError::NoProc(_)), "{err:?}");
    assert!(consumer.join_timeout(QUIET).is_none());
    // The asynchronous form has nobody to tell: like a monitor of a dead pid, the
    // subscription ends at once with `noproc`, and the temporary consumer survives.
    consumer
        .async_subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    assert_receive!(
        inbox,
        Msg::ConsumerCancelled(_, CancelReason::Down(Reason::NoProc))
    );
    assert!(consumer.join_timeout(QUIET).is_none());
}

// ----- describe "sync_resubscribe/2" ------------------------------------------------------------

#[test]
fn sync_resubscribe_2_returns_ok_with_reference() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let old = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    let new = consumer
        .resubscribe(
            old,
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new(),
        )
        .unwrap();
    assert_ne!(old, new);
    assert_received!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == old);
    assert_received!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == new);
}

#[test]
fn sync_resubscribe_2_returns_ok_with_reference_even_if_previous_subscription_does_not_exist() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .resubscribe(
            Tag::new(),
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new(),
        )
        .unwrap();
    assert_received!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == tag);
}

#[test]
fn sync_resubscribe_2_returns_errors_on_bad_options() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let e = consumer
        .resubscribe(
            Tag::new(),
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new().max_demand(0),
        )
        .unwrap_err();
    assert_eq!(
        bad_opts(e),
        "expected max_demand to be equal to or greater than 1, got: 0"
    );
    let e = consumer
        .resubscribe(
            Tag::new(),
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new().min_demand(2000),
        )
        .unwrap_err();
    assert_eq!(
        bad_opts(e),
        "expected min_demand to be equal to or less than 999, got: 2000"
    );
}

// ----- describe "async_resubscribe/2" -------------------------------------------------------------

#[test]
fn async_resubscribe_2_returns_ok_with_reference() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let old = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    consumer
        .async_resubscribe(
            old,
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new(),
        )
        .unwrap();
    assert_receive!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == old);
    assert_receive!(inbox, Msg::ConsumerSubscribed(s) if s.tag() != old);
    // The producer cancelled the old subscription on the consumer's behalf.
    assert_receive!(
        inbox,
        Msg::ConsumerCancelled(t, CancelReason::Cancel(r))
            if *t == old && *r == Reason::custom("resubscribe")
    );
}

#[test]
fn async_resubscribe_2_returns_ok_with_reference_even_if_previous_subscription_does_not_exist() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer
        .async_resubscribe(
            Tag::new(),
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new(),
        )
        .unwrap();
    assert_receive!(inbox, Msg::ConsumerSubscribed(_));
}

// ----- describe "manual demand" ---------------------------------------------------------------------

fn manual_asks(inbox: &Inbox, consumer: &StageRef<Forwarder>) {
    let Msg::ConsumerSubscribed(sub) = assert_receive!(inbox, Msg::ConsumerSubscribed(_)) else {
        unreachable!()
    };
    consumer.call(AskCall(sub.clone(), 50)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == ints(0..50));
    consumer.call(AskCall(sub, 50)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == ints(50..100));
}

#[test]
fn manual_demand_can_be_set_on_subscribe() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::manual(inbox.tx()));
    consumer
        .async_subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    manual_asks(&inbox, &consumer);
}

#[test]
fn manual_demand_can_be_set_on_subscribe_on_init() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = start_consumer(
        Forwarder::manual(inbox.tx()),
        ConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    manual_asks(&inbox, &consumer);
}

// ----- describe "subscribe_to names" ---------------------------------------------------------------

#[test]
fn subscribe_to_names_can_be_pid() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let _c = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    assert_receive!(inbox, Msg::Consumed(_));
}
