//! Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8), `test/gen_stage_test.exs`,
//! describes "buffer" and "info". Each test keeps the
//! original's name in snake case, its scenario and its assertions.
//!
//! BEAM powers and their stand-ins:
//! - `capture_log` → a [`LogCapture`] given to the stage as its `LogSink`.
//! - The raw `{:"$gen_producer", _, {:subscribe, nil, []}}` and `{:ask, n}` messages that
//!   the test process sends as a hand-made consumer → a `Forwarder` whose subscription
//!   is manual: it subscribes without asking, and the test asks on its
//!   `SubscriptionRef` exactly as the original sends `ask`.
//! - The log line names the stage by its name instead of `inspect(pid)`.
//!
//! Nothing of these two describes is skipped.

use crate::support::*;
use stageflow::log::Level;
use stageflow::prelude::*;

fn counter_with(c: Counter, opts: ProducerOptions<V>) -> StageRef<Counter> {
    start_producer(c, opts).unwrap()
}

fn manual_sub(inbox: &Inbox) -> SubscriptionRef {
    match assert_receive!(inbox, Msg::ConsumerSubscribed(_)) {
        Msg::ConsumerSubscribed(s) => s,
        _ => unreachable!(),
    }
}

// ----- describe "buffer" ------------------------------------------------------------------------

#[test]
fn buffer_stores_events_when_there_is_no_demand() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    producer.send_info(Queue(atoms(&["a", "b", "c"]))).unwrap();
    producer.cast(Queue(atoms(&["d", "e"]))).unwrap();

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(4, 0)).unwrap();

    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["e"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == ints(0..3));
    assert_receive!(inbox, Msg::Consumed(b) if *b == ints(3..7));
}

#[test]
fn buffer_emits_warning_and_keeps_first_when_it_exceeds_configured_size() {
    let inbox = Inbox::new();
    let log = LogCapture::new();
    let producer = counter_with(
        Counter::new(0),
        ProducerOptions::new()
            .buffer_size(BufferSize::Finite(5))
            .buffer_keep(BufferKeep::First)
            .name("keep-first")
            .log(log.sink()),
    );
    assert_eq!(
        producer
            .call(Queue(atoms(&["a", "b", "c", "d", "e"])))
            .unwrap(),
        0
    );
    assert_eq!(log.text(), "");
    assert_eq!(producer.call(Queue(atoms(&["f", "g", "h"]))).unwrap(), 0);
    let lines = log.take();
    assert!(
        lines.iter().any(|r| r.level == Level::Warning
            && &*r.stage == "keep-first"
            && r.message
                .contains("keep-first has discarded 3 events from buffer")),
        "{lines:?}"
    );

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(4, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["e"]));
}

#[test]
fn buffer_emits_warning_and_keeps_last_when_it_exceeds_configured_size() {
    let inbox = Inbox::new();
    let log = LogCapture::new();
    let producer = counter_with(
        Counter::new(0),
        ProducerOptions::new()
            .buffer_size(BufferSize::Finite(5))
            .name("keep-last")
            .log(log.sink()),
    );
    assert_eq!(
        producer
            .call(Queue(atoms(&["a", "b", "c", "d", "e"])))
            .unwrap(),
        0
    );
    assert_eq!(producer.call(Queue(atoms(&["f", "g", "h"]))).unwrap(), 0);
    assert!(
        log.text()
            .contains("keep-last has discarded 3 events from buffer"),
        "{}",
        log.text()
    );

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(4, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["d", "e", "f", "g"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["h"]));
}

#[test]
fn buffer_may_have_limit_set_to_infinity() {
    let inbox = Inbox::new();
    let producer = counter_with(
        Counter::new(0),
        ProducerOptions::new().buffer_size(BufferSize::Infinite),
    );
    assert_eq!(
        producer
            .call(Queue(atoms(&["a", "b", "c", "d", "e"])))
            .unwrap(),
        0
    );
    assert_eq!(producer.call(Queue(atoms(&["f", "g", "h"]))).unwrap(), 0);

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(4, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["e", "f", "g", "h"]));
}

fn discarded_buffer_logger(
    log_discarded: bool,
    log: &LogCapture,
) -> StageRef<DiscardedBufferLogger> {
    start_producer(
        DiscardedBufferLogger {
            log_discarded,
            log: log.clone(),
        },
        ProducerOptions::new()
            .buffer_size(BufferSize::Finite(5))
            .buffer_keep(BufferKeep::First)
            .name("discarded-buffer-logger")
            .log(log.sink()),
    )
    .unwrap()
}

const DEFAULT_LINE: &str = "discarded-buffer-logger has discarded 3 events from buffer";

#[test]
fn buffer_calls_optional_format_discarded_callback_with_discarded_count_when_it_exceeds_configured_size(
) {
    let inbox = Inbox::new();
    let log = LogCapture::new();
    let producer = discarded_buffer_logger(false, &log);
    producer
        .call(Queue(atoms(&["a", "b", "c", "d", "e", "f", "g", "h"])))
        .unwrap();
    let text = log
        .take()
        .iter()
        .map(|r| r.message.clone())
        .collect::<Vec<_>>();
    assert!(
        text.iter()
            .any(|l| l.contains("DiscardedBufferLogger has discarded 3 events from buffer")),
        "{text:?}"
    );

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(4, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["e"]));
    assert_eq!(log.text(), "");
}

#[test]
fn buffer_format_discarded_can_allow_printing_the_default_log_when_items_are_discarded() {
    let inbox = Inbox::new();
    let log = LogCapture::new();
    let producer = discarded_buffer_logger(true, &log);
    producer
        .call(Queue(atoms(&["a", "b", "c", "d", "e", "f", "g", "h"])))
        .unwrap();
    assert!(log.text().contains(DEFAULT_LINE), "{}", log.text());
    log.take();

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(5, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d", "e"]));
    assert_eq!(log.text(), "");
}

#[test]
fn buffer_format_discarded_can_prevent_printing_the_default_log_when_items_are_discarded() {
    let inbox = Inbox::new();
    let log = LogCapture::new();
    let producer = discarded_buffer_logger(false, &log);
    producer
        .call(Queue(atoms(&["a", "b", "c", "d", "e", "f", "g", "h"])))
        .unwrap();
    assert!(!log.text().contains(DEFAULT_LINE), "{}", log.text());
    log.take();

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(5, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d", "e"]));
    assert_eq!(log.text(), "");
}

#[test]
fn buffer_returns_the_correct_buffer_count_when_polled() {
    let inbox = Inbox::new();
    let producer = counter_with(
        Counter::new(0),
        ProducerOptions::new().buffer_size(BufferSize::Infinite),
    );
    assert_eq!(
        producer
            .call(Queue(atoms(&["a", "b", "c", "d", "e"])))
            .unwrap(),
        0
    );
    assert_eq!(producer.estimate_buffered_count().unwrap(), 5);
    assert_eq!(producer.call(Queue(atoms(&["f", "g", "h"]))).unwrap(), 0);
    assert_eq!(producer.estimate_buffered_count().unwrap(), 8);

    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.async_subscribe(&producer, sub(4, 0)).unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c", "d"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["e", "f", "g", "h"]));
    assert_eq!(producer.estimate_buffered_count().unwrap(), 0);
}

// ----- describe "info" ------------------------------------------------------------------------------

#[test]
fn info_delivers_info_to_consumer() {
    let inbox = Inbox::new();
    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.sync_info("sync").unwrap();
    assert_receive!(inbox, Msg::Info("sync"));
    consumer.async_info("async").unwrap();
    assert_receive!(inbox, Msg::Info("async"));
}

#[test]
fn info_delivers_info_to_producer_consumer_immediately_when_there_is_no_incoming_buffer() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let doubler = start_producer_consumer(
        Doubler::new(inbox.tx()),
        ProducerConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    let _c = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().subscribe_to(&doubler, SubscribeOptions::new()),
    )
    .unwrap();
    doubler.sync_info("sync").unwrap();
    assert_receive!(inbox, Msg::Info("sync"));
    doubler.async_info("async").unwrap();
    assert_receive!(inbox, Msg::Info("async"));
}

#[test]
fn info_delivers_info_to_producer_consumer_immediately_when_there_is_incoming_buffer() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    let doubler = start_producer_consumer(
        Doubler::new(inbox.tx()),
        ProducerConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    // The producer has the subscription; its events then reach the doubler's input.
    assert_receive!(inbox, Msg::ProducerSubscribed(_));
    producer.call(Queue(ints(0..10))).unwrap();

    doubler.sync_info("sync").unwrap();
    refute_received!(inbox, Msg::Info("sync"));
    doubler.async_info("async").unwrap();
    refute_received!(inbox, Msg::Info("async"));

    let _c = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().subscribe_to(&doubler, SubscribeOptions::new()),
    )
    .unwrap();
    assert_receive!(inbox, Msg::Info("sync"));
    assert_receive!(inbox, Msg::Info("async"));
}

#[test]
fn info_delivers_info_to_producer_immediately_when_there_is_no_buffer() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    producer.sync_info("sync").unwrap();
    assert_receive!(inbox, Msg::Info("sync"));
    producer.async_info("async").unwrap();
    assert_receive!(inbox, Msg::Info("async"));
}

fn eventually_with_buffer(size: BufferSize, queued: Vec<V>) {
    let inbox = Inbox::new();
    let producer = counter_with(
        Counter::pid(inbox.tx()),
        ProducerOptions::new().buffer_size(size),
    );
    let consumer = consumer(Forwarder::new(inbox.tx()));
    producer.call(Queue(queued.clone())).unwrap();
    producer.sync_info("sync").unwrap();
    refute_received!(inbox, Msg::Info("sync"));
    consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_receive!(inbox, Msg::Consumed(b) if *b == queued);
    assert_receive!(inbox, Msg::Info("sync"));
}

#[test]
fn info_delivers_info_to_producer_eventually_with_infinity_buffer_size() {
    eventually_with_buffer(BufferSize::Infinite, atoms(&["a", "b", "c"]));
}

#[test]
fn info_delivers_info_to_producer_eventually_with_one_item_filled_buffer() {
    eventually_with_buffer(BufferSize::Finite(3), atoms(&["a"]));
}

#[test]
fn info_delivers_info_to_producer_eventually_with_mid_filled_buffer() {
    eventually_with_buffer(BufferSize::Finite(3), atoms(&["a", "b"]));
}

#[test]
fn info_delivers_info_to_producer_eventually_with_filled_buffer() {
    eventually_with_buffer(BufferSize::Finite(3), atoms(&["a", "b", "c"]));
}

#[test]
fn info_delivers_info_to_producer_eventually_with_moving_buffer() {
    let inbox = Inbox::new();
    let producer = counter_with(
        Counter::pid(inbox.tx()),
        ProducerOptions::new().buffer_size(BufferSize::Finite(3)),
    );
    // Subscribe (the hand-made consumer of the original: manual, never asks by itself).
    let consumer = consumer(Forwarder::manual(inbox.tx()));
    consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    let sub = manual_sub(&inbox);
    assert_receive!(inbox, Msg::ProducerSubscribed(_));

    // Queue events and notification.
    producer.call(Queue(atoms(&["a", "b", "c"]))).unwrap();
    producer.sync_info("sync1").unwrap();

    // Ask for event and notification.
    sub.ask(2);
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b"]));
    refute_received!(inbox, Msg::Info("sync1"));

    // Queue more events and another notification.
    producer.call(Queue(atoms(&["d", "e"]))).unwrap();
    producer.sync_info("sync2").unwrap();

    // Ask the remaining events and notifications.
    sub.ask(1);
    sub.ask(2);
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["c"]));
    assert_receive!(inbox, Msg::Info("sync1"));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["d", "e"]));
    assert_receive!(inbox, Msg::Info("sync2"));
}

#[test]
fn info_delivers_info_to_producer_eventually_when_dropping_buffer() {
    let inbox = Inbox::new();
    let producer = counter_with(
        Counter::pid(inbox.tx()),
        ProducerOptions::new()
            .buffer_keep(BufferKeep::Last)
            .buffer_size(BufferSize::Finite(3))
            .log(LogCapture::new().sink()),
    );
    producer.call(Queue(atoms(&["a", "b"]))).unwrap();
    producer.sync_info("sync").unwrap();
    refute_received!(inbox, Msg::Info("sync"));

    let consumer = consumer(Forwarder::manual(inbox.tx()));
    consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    producer.call(Queue(atoms(&["c", "d", "e"]))).unwrap();
    assert_receive!(inbox, Msg::Info("sync"));
}

#[test]
fn info_delivers_multiple_info_to_producer_in_fifo_order() {
    let inbox = Inbox::new();
    let producer = counter_with(
        Counter::pid(inbox.tx()),
        ProducerOptions::new().buffer_size(BufferSize::Finite(10)),
    );
    let consumer = consumer(Forwarder::manual(inbox.tx()));
    consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_receive!(inbox, Msg::ProducerSubscribed(_));
    let sub = manual_sub(&inbox);

    producer.call(Queue(atoms(&["a", "b", "c"]))).unwrap();
    producer.sync_info("d").unwrap();
    producer.sync_info("e").unwrap();
    producer.sync_info("f").unwrap();
    producer.call(Queue(atoms(&["g", "h"]))).unwrap();
    producer.sync_info("i").unwrap();

    refute_received!(inbox, Msg::Info("d"));

    consumer.call(AskCall(sub, 5)).unwrap();

    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["a", "b", "c"]));
    assert_receive!(inbox, Msg::Consumed(b) if *b == atoms(&["g", "h"]));

    let messages: Vec<&'static str> = (1..=4)
        .map(|n| match inbox.next(TIMEOUT) {
            Some(Msg::Info(i)) => i,
            Some(other) => panic!("expected an info, got {other:?}"),
            None => panic!(
                "Did not receive expected number of messages (got {})",
                n - 1
            ),
        })
        .collect();
    assert_eq!(messages, vec!["d", "e", "f", "i"]);
}
