//! Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8), `test/gen_stage_test.exs`,
//! describes "$gen_producer message errors" and "$gen_consumer message errors".
//! Each test keeps the original's name in snake
//! case. All five are A tests: the test process speaks the protocol by hand, which is
//! what `stageflow::stage::raw` (`RawConsumer`, `send_events`) does here.
//!
//! Deliberate deviations, checked as such:
//! - "unknown demand" and "unknown events": GenStage answers `{:cancel,
//!   :unknown_subscription}` to the sender. In stageflow an ask and an events message
//!   carry only the subscription tag, not a return address (they are the hot path), so
//!   the receiving stage logs it instead (an error for events; info level for an ask,
//!   whose usual cause is a consumer that cancelled and re-asked for events already on
//!   their way), drops the message and goes on. The tests check the log line, that
//!   nothing else happened, and that the stage lives on.
//! - "not a producer": GenStage only logs; stageflow also answers the would-be consumer
//!   with a cancel, so it does not wait for events forever. Only a consumer of `Never`
//!   can even try (the types forbid subscribing a consumer of `T` to a consumer).
//! - "not a consumer": a producer's input type is `Never`, so only an empty message can
//!   be forged; it is ignored.

use stageflow::log::Level;
use stageflow::prelude::*;
use stageflow::stage::raw::{send_events, RawConsumer, RawMessage};

use crate::support::*;

// ----- describe "$gen_producer message errors" ---------------------------------------------------

#[test]
fn gen_producer_message_errors_duplicated_subscriptions() {
    let log = LogCapture::new();
    let producer = start_producer(Counter::new(0), ProducerOptions::new().log(log.sink())).unwrap();
    let raw = RawConsumer::new();
    let tag = Tag::new();
    raw.subscribe(&producer, tag, SubscribeOptions::new());
    raw.subscribe(&producer, tag, SubscribeOptions::new());
    assert_eq!(
        raw.recv_timeout(TIMEOUT),
        Some(RawMessage::Cancel(
            tag,
            CancelReason::Cancel(Reason::DuplicatedSubscription)
        ))
    );
    assert!(log
        .take()
        .iter()
        .any(|r| r.level == Level::Error && r.message.contains("duplicated subscription")));
    assert!(producer.is_alive());
}

#[test]
fn gen_producer_message_errors_unknown_demand() {
    let log = LogCapture::new();
    let producer = start_producer(Counter::new(0), ProducerOptions::new().log(log.sink())).unwrap();
    let raw = RawConsumer::new();
    let tag = Tag::new();
    raw.address(&producer, tag).ask(10);
    eventually("the unknown-subscription error", || {
        log.text().contains("ask for unknown subscription")
    });
    assert_eq!(raw.try_recv(), None);
    assert_eq!(producer.metrics().events_out, 0);
    assert!(producer.is_alive());
}

/// A consumer of nothing: the only kind of stage that can try to subscribe to a consumer.
struct NeverConsumer;
impl Stage for NeverConsumer {
    type In = Never;
    type Out = Never;
}
impl Consumer for NeverConsumer {
    fn handle_events(&mut self, _: Vec<Never>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
}

#[test]
fn gen_producer_message_errors_not_a_producer() {
    let log = LogCapture::new();
    let consumer = start_consumer(NeverConsumer, ConsumerOptions::new().log(log.sink())).unwrap();
    let raw = RawConsumer::<Never>::new();
    let tag = Tag::new();
    raw.subscribe(&consumer, tag, SubscribeOptions::new());
    match raw.recv_timeout(TIMEOUT) {
        Some(RawMessage::Cancel(t, CancelReason::Cancel(_))) => assert_eq!(t, tag),
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert!(log.text().contains(&format!(
        "consumer cannot be subscribed to (subscription {tag})"
    )));
    assert!(consumer.is_alive());

    // Through the handle API the mistake is refused before anything is sent.
    let other = start_consumer(NeverConsumer, ConsumerOptions::new()).unwrap();
    assert_eq!(
        other.subscribe(&consumer, SubscribeOptions::new()),
        Err(stageflow::SubscribeError::NotAProducer)
    );
}

// ----- describe "$gen_consumer message errors" ----------------------------------------------------

#[test]
fn gen_consumer_message_errors_unknown_events() {
    let inbox = Inbox::new();
    let log = LogCapture::new();
    let consumer = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().log(log.sink()),
    )
    .unwrap();
    let tag = Tag::new();
    assert!(send_events(&consumer, tag, ints([1, 2, 3])));
    eventually("the unknown-subscription error", || {
        log.text()
            .contains(&format!("received 3 events for unknown subscription {tag}"))
    });
    refute_receive!(inbox, Msg::Consumed(_));
    assert!(consumer.is_alive());
}

#[test]
fn gen_consumer_message_errors_not_a_consumer() {
    let producer = producer(Counter::new(0));
    assert!(send_events(&producer, Tag::new(), Vec::new()));
    // Still serving: a call goes through.
    assert_eq!(producer.call(Queue(vec![])).unwrap(), 0);
    assert!(producer.is_alive());
}
