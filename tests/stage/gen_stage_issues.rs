//! Regression scenarios from GenStage's issue tracker and GenStage quirks that this
//! port decides on deliberately (`docs/DESIGN.md` lists the decisions). Not ported tests: scenarios
//! written from the issue descriptions (elixir-lang/gen_stage 1.3.2, commit 72198f8).

use stageflow::prelude::*;

use crate::support::*;

/// An identity producer-consumer of `V`.
struct Identity;
impl Stage for Identity {
    type In = V;
    type Out = V;
}
impl ProducerConsumer for Identity {
    fn handle_events(&mut self, events: Vec<V>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        ctx.emit_batch(events);
    }
}

fn manual_subscription(inbox: &Inbox) -> SubscriptionRef {
    match assert_receive!(inbox, Msg::ConsumerSubscribed(_)) {
        Msg::ConsumerSubscribed(s) => s,
        _ => unreachable!(),
    }
}

/// Issue #311, "Events from internal buffer are not sent after consumer reconnect": a
/// consumer leaves with unmet demand (the dispatcher keeps it as pending), events are
/// buffered while nobody is subscribed, and a new consumer must get them.
#[test]
fn issue_311_buffered_events_reach_a_consumer_that_reconnects() {
    let (pinbox, ainbox, binbox) = (Inbox::new(), Inbox::new(), Inbox::new());
    let producer = producer(Counter::pid(pinbox.tx()));
    let a = consumer(Forwarder::manual(ainbox.tx()));
    a.subscribe(
        &producer,
        SubscribeOptions::new().cancel(CancelMode::Temporary),
    )
    .unwrap();
    let sub_a = manual_subscription(&ainbox);
    sub_a.ask(10);
    producer.call(Queue(ints(0..4))).unwrap();
    assert_receive!(ainbox, Msg::Consumed(b) if *b == ints(0..4));
    sub_a.cancel(Reason::custom("gone"));
    assert_receive!(ainbox, Msg::ConsumerCancelled(..));

    // Nobody subscribed: buffered.
    producer.call(Queue(ints(4..7))).unwrap();
    assert_eq!(producer.estimate_buffered_count().unwrap(), 3);

    let b = consumer(Forwarder::manual(binbox.tx()));
    b.subscribe(&producer, SubscribeOptions::new()).unwrap();
    manual_subscription(&binbox).ask(10);
    assert_receive!(binbox, Msg::Consumed(e) if *e == ints(4..7));
}

/// The same with a producer-consumer in the middle. Its consumer leaves with 6 events
/// of demand unmet; 3 events it then processes are buffered (and cover 3 of that
/// pending demand); a new consumer asking 2 is fully covered by the rest of the pending
/// demand, so the dispatcher reports no new demand — and the producer-consumer must
/// still serve it from its buffer (GenStage serves its whole demand counter from the
/// buffer on every dispatcher callback), first and in order.
#[test]
fn issue_311_producer_consumer_serves_its_buffer_when_pending_demand_covers_an_ask() {
    let (pinbox, ainbox, binbox) = (Inbox::new(), Inbox::new(), Inbox::new());
    let producer = producer(Counter::pid(pinbox.tx()));
    let pc = start_producer_consumer(
        Identity,
        ProducerConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .unwrap();
    assert_receive!(pinbox, Msg::ProducerSubscribed(_));

    let a = consumer(Forwarder::manual(ainbox.tx()));
    a.subscribe(&pc, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .unwrap();
    let sub_a = manual_subscription(&ainbox);
    // Sent before the call below, so it reaches the producer-consumer before the
    // events that the call makes the producer send.
    sub_a.ask(10);
    producer.call(Queue(ints(0..4))).unwrap();
    assert_receive!(ainbox, Msg::Consumed(b) if *b == ints(0..4));
    sub_a.cancel(Reason::custom("gone"));
    assert_receive!(ainbox, Msg::ConsumerCancelled(..));

    producer.call(Queue(ints(4..7))).unwrap();
    eventually("the producer-consumer to buffer 3 events", || {
        pc.estimate_buffered_count().unwrap() == 3
    });

    let b = consumer(Forwarder::manual(binbox.tx()));
    b.subscribe(&pc, SubscribeOptions::new()).unwrap();
    let sub_b = manual_subscription(&binbox);
    sub_b.ask(2);
    assert_receive!(binbox, Msg::Consumed(e) if *e == ints(4..6));

    // Newer events come after the one still buffered.
    producer.call(Queue(ints(7..9))).unwrap();
    sub_b.ask(10);
    let mut got = Vec::new();
    while got.len() < 3 {
        match assert_receive!(binbox, Msg::Consumed(_)) {
            Msg::Consumed(e) => got.extend(e),
            _ => unreachable!(),
        }
    }
    assert_eq!(got, ints(6..9));
}

/// GenStage quirk "`buffer_size: 0`" (GenStage crashes in init): here a producer that never
/// buffers; events nobody asked for are discarded and counted, with the usual warning.
#[test]
fn quirk_buffer_size_0_never_buffers() {
    let log = LogCapture::new();
    let producer = start_producer(
        Counter::new(0),
        ProducerOptions::new()
            .buffer_size(BufferSize::Finite(0))
            .name("no-buffer")
            .log(log.sink()),
    )
    .unwrap();
    producer.call(Queue(atoms(&["a", "b"]))).unwrap();
    assert_eq!(producer.estimate_buffered_count().unwrap(), 0);
    assert_eq!(producer.metrics().discarded, 2);
    assert!(log
        .text()
        .contains("no-buffer has discarded 2 events from buffer"));
}

/// GenStage quirk "`demand/1` crashes a producer_consumer": here it answers `Forward`, and
/// switching a producer-consumer to accumulate is refused with an error log, as GenStage
/// does for `demand/2`.
#[test]
fn quirk_demand_mode_of_a_producer_consumer() {
    let log = LogCapture::new();
    let inbox = Inbox::new();
    let pc = start_producer_consumer(
        Doubler::new(inbox.tx()),
        ProducerConsumerOptions::new().log(log.sink()),
    )
    .unwrap();
    assert_eq!(pc.demand_mode().unwrap(), DemandMode::Forward);
    pc.set_demand_mode(DemandMode::Forward).unwrap();
    pc.set_demand_mode(DemandMode::Accumulate).unwrap();
    assert_eq!(pc.demand_mode().unwrap(), DemandMode::Forward);
    assert!(log
        .text()
        .contains("demand mode can only be set for producers"));
    assert!(pc.is_alive());
}

/// GenStage quirk "`sync_resubscribe` killing permanent consumers": kept, as documented on
/// `StageRef::resubscribe`: the old subscription's cancel reaches the consumer, which
/// reacts by that subscription's mode.
#[test]
fn quirk_resubscribe_stops_a_consumer_whose_old_subscription_is_permanent() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap();
    let old = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    consumer
        .resubscribe(
            old,
            Reason::custom("resubscribe"),
            &producer,
            SubscribeOptions::new(),
        )
        .unwrap();
    assert_eq!(exit_reason(&consumer), Reason::custom("resubscribe"));
}

/// Found while porting (GenStage does the same): a producer-consumer whose only
/// consumer leaves with demand unmet keeps a positive demand counter that undelivered
/// events never lower, so it used to pull from its producer and buffer forever. Its
/// buffer must stay bounded by that unmet demand (docs/DESIGN.md invariant 2), and the
/// events must still reach the next consumer.
#[test]
fn producer_consumer_buffer_stays_bounded_after_a_consumer_leaves_with_unmet_demand() {
    let ainbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let pc = start_producer_consumer(
        Identity,
        ProducerConsumerOptions::new().subscribe_to(&producer, sub(10, 5)),
    )
    .unwrap();
    let a = consumer(Forwarder::manual(ainbox.tx()));
    a.subscribe(&pc, SubscribeOptions::new().cancel(CancelMode::Temporary))
        .unwrap();
    let sub_a = manual_subscription(&ainbox);
    sub_a.ask(1000);
    let Msg::Consumed(mut seen_by_a) = assert_receive!(ainbox, Msg::Consumed(_)) else {
        unreachable!()
    };
    sub_a.cancel(Reason::custom("gone"));
    assert_receive!(ainbox, Msg::ConsumerCancelled(..));

    std::thread::sleep(std::time::Duration::from_millis(200));
    let settled = pc.estimate_buffered_count().unwrap();
    let pulled = producer.metrics().events_out;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        pc.estimate_buffered_count().unwrap(),
        settled,
        "still buffering"
    );
    assert_eq!(producer.metrics().events_out, pulled, "still pulling");
    // The unmet demand (at most 1000) plus one batch.
    assert!(settled <= 1000 + 5, "{settled} events buffered");

    // A new consumer gets what was buffered, from the start, in order.
    let binbox = Inbox::new();
    let b = consumer(Forwarder::manual(binbox.tx()));
    b.subscribe(&pc, SubscribeOptions::new()).unwrap();
    manual_subscription(&binbox).ask(10);
    let Msg::Consumed(first) = assert_receive!(binbox, Msg::Consumed(_)) else {
        unreachable!()
    };
    while let Some(m) = ainbox.next(QUIET) {
        if let Msg::Consumed(e) = m {
            seen_by_a = e;
        }
    }
    let (V::I(a_last), V::I(b_first)) = (seen_by_a.last().unwrap(), &first[0]) else {
        panic!("integers expected")
    };
    assert_eq!(*b_first, a_last + 1);
}
