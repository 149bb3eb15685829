//! Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8), `test/gen_stage_test.exs`,
//! describes "producer callbacks", "consumer callbacks" and "producer_consumer
//! callbacks". Each test keeps the original's
//! name in snake case, its scenario and its assertions.
//!
//! BEAM powers and their stand-ins:
//! - `Process.exit(pid, :kill)` → [`StageRef::kill`] (exit reason `Killed`, no
//!   `terminate`); `Process.exit(pid, :shutdown)` on a stage that does not trap exits →
//!   `stop(Reason::Shutdown)`.
//! - `{:EXIT, pid, reason}` after `trap_exit` → [`StageRef::join_timeout`].
//! - The exact order of the test process's mailbox ("handle_call/3 sends events before
//!   reply" / "allows replies before sending events") → a marker `sync_info` sent to the
//!   consumer right after the reply arrives: the consumer handles its mailbox in order,
//!   so the marker reaches the test after the events iff the events were sent first.
//! - The pid given to `cancel` as a reason → `Reason::custom("test process")`.
//!
//! Parts not ported, with why:
//! - "init/1" (all three kinds): only `:ignore` and `{:stop, reason}` are portable. A bad
//!   return value, `buffer_size: -1`, `dispatcher: 0` and unknown options cannot be
//!   written in Rust (`Init` is an enum, sizes are `usize`, options are typed builders);
//!   names and `{:already_started, pid}` are BEAM registry features (B).
//! - "handle_subscribe/4 with invalid demand" (consumer and producer_consumer): a
//!   `handle_subscribe` cannot return anything but `Ok(Demand)` or `Err(Reason)`; we port
//!   the meaningful part: `Err(reason)` stops the stage with that reason.
//! - "handle_info/2 is called for unmatched down messages": monitors are internal to the
//!   runtime and cannot be forged; we check that a message that is not part of the
//!   protocol reaches `handle_info`.
//! - "emit warning if trying to dispatch events from a consumer": a consumer's output
//!   type is `Never`, so it cannot emit; the mistake does not compile.
//! - "format_status/2" (three kinds): `:sys.get_status` (B).
//! - The top-level "generates child_spec/1" (B): `use GenStage` child specs.
//! - The producer "terminate/2" test starts `Forwarder` as a producer; a typed consumer
//!   cannot be one, so `Counter` in pid mode reports `terminate` instead.

use crossbeam_channel::Receiver;
use stageflow::prelude::*;
use stageflow::StartError;

use crate::support::*;

fn test_process() -> Reason {
    Reason::custom("test process")
}

fn subscribed(inbox: &Inbox, tag: Tag) -> SubscriptionRef {
    match assert_receive!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == tag) {
        Msg::ConsumerSubscribed(s) => s,
        _ => unreachable!(),
    }
}

fn pc_subscribed(inbox: &Inbox, peer: Peer, tag: Tag) -> SubscriptionRef {
    match assert_receive!(inbox, Msg::PcSubscribed(p, s) if *p == peer && s.tag() == tag) {
        Msg::PcSubscribed(_, s) => s,
        _ => unreachable!(),
    }
}

/// A stage whose `init` returns what it is given (the Elixir helpers' `init(init)`).
struct InitAs<K>(Init, std::marker::PhantomData<K>);

fn init_as<K>(init: Init) -> InitAs<K> {
    InitAs(init, std::marker::PhantomData)
}

struct P;
struct C;
struct PC;

impl Stage for InitAs<P> {
    type In = Never;
    type Out = V;
    fn init(&mut self, _ctx: &mut Context<'_, Self>) -> Init {
        self.0.clone()
    }
}
impl Producer for InitAs<P> {
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
}
impl Stage for InitAs<C> {
    type In = V;
    type Out = Never;
    fn init(&mut self, _ctx: &mut Context<'_, Self>) -> Init {
        self.0.clone()
    }
}
impl Consumer for InitAs<C> {
    fn handle_events(&mut self, _: Vec<V>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
}
impl Stage for InitAs<PC> {
    type In = V;
    type Out = V;
    fn init(&mut self, _ctx: &mut Context<'_, Self>) -> Init {
        self.0.clone()
    }
}
impl ProducerConsumer for InitAs<PC> {
    fn handle_events(&mut self, _: Vec<V>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
}

// ----- describe "producer callbacks" -------------------------------------------------------------

#[test]
fn producer_callbacks_init_1() {
    let r = start_producer(init_as::<P>(Init::Ignore), ProducerOptions::new());
    assert_eq!(r.unwrap_err(), StartError::Ignored);
    let r = start_producer(
        init_as::<P>(Init::Stop(Reason::custom("oops"))),
        ProducerOptions::new(),
    );
    assert_eq!(r.unwrap_err(), StartError::Stopped(Reason::custom("oops")));
    // GenStage's `buffer_size: 0` passes validation and then crashes init; here it
    // is a valid "never buffer" producer.
    let p = start_producer(
        init_as::<P>(Init::Ok),
        ProducerOptions::new().buffer_size(BufferSize::Finite(0)),
    )
    .unwrap();
    assert_eq!(p.estimate_buffered_count().unwrap(), 0);
}

#[test]
fn producer_callbacks_handle_subscribe_4() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_receive!(inbox, Msg::ProducerSubscribed(t) if *t == tag);
}

#[test]
fn producer_callbacks_handle_subscribe_4_does_not_accept_manual_demand() {
    let inbox = Inbox::new();
    let mut counter = Counter::pid(inbox.tx());
    counter.producer_demand = Demand::Manual;
    let producer = start_producer(
        counter,
        ProducerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap();
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_receive!(inbox, Msg::ProducerSubscribed(t) if *t == tag);
    assert!(matches!(exit_reason(&producer), Reason::BadReturn(_)));
}

#[test]
fn producer_callbacks_handle_cancel_3() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    assert_receive!(inbox, Msg::ProducerSubscribed(t) if *t == tag);
    subscribed(&inbox, tag).cancel(Reason::custom("oops"));
    assert_receive!(
        inbox,
        Msg::ProducerCancelled(t, CancelReason::Cancel(r)) if *t == tag && *r == Reason::custom("oops")
    );
}

#[test]
fn producer_callbacks_handle_cancel_3_on_consumer_down() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    assert_receive!(inbox, Msg::ProducerSubscribed(t) if *t == tag);
    consumer.kill();
    assert_receive!(
        inbox,
        Msg::ProducerCancelled(t, CancelReason::Down(Reason::Killed)) if *t == tag
    );
}

/// Counter's `{:early_reply_queue, events}`, held after the reply until `gate` opens,
/// so the test can look at what happened between the reply and the dispatch.
struct GatedEarlyReplyQueue(Vec<V>, Receiver<()>);

impl HandleCall<GatedEarlyReplyQueue> for Counter {
    type Reply = u64;
    fn handle_call(
        &mut self,
        q: GatedEarlyReplyQueue,
        from: &ReplyTo<u64>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<u64> {
        from.reply(self.counter);
        let _ = q.1.recv();
        ctx.emit_all(q.0);
        None
    }
}

/// Subscribes a hand-driven (manual) consumer that has asked for 3 events.
fn subscribe_and_ask_3(inbox: &Inbox) -> (StageRef<Counter>, StageRef<Forwarder>, Tag) {
    let producer = producer(Counter::pid(inbox.tx()));
    let consumer = consumer(Forwarder::manual(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    subscribed(inbox, tag).ask(3);
    assert_receive!(inbox, Msg::ProducerSubscribed(t) if *t == tag);
    (producer, consumer, tag)
}

#[test]
fn producer_callbacks_handle_call_3_sends_events_before_reply() {
    let inbox = Inbox::new();
    let (producer, consumer, _tag) = subscribe_and_ask_3(&inbox);
    producer.call(Queue(ints([1, 2, 3]))).unwrap();
    consumer.sync_info("reply received").unwrap();
    producer.stop(Reason::Normal).unwrap();

    let order: Vec<Msg> = std::iter::from_fn(|| inbox.next(QUIET)).collect();
    let events = order
        .iter()
        .position(|m| matches!(m, Msg::Consumed(b) if *b == ints([1, 2, 3])));
    let reply = order
        .iter()
        .position(|m| matches!(m, Msg::Info("reply received")));
    assert!(events.is_some() && reply.is_some(), "{order:?}");
    assert!(events < reply, "events must precede the reply: {order:?}");
}

#[test]
fn producer_callbacks_handle_call_3_allows_replies_before_sending_events() {
    let inbox = Inbox::new();
    let (producer, consumer, _tag) = subscribe_and_ask_3(&inbox);
    let (open, gate) = crossbeam_channel::bounded(1);
    producer
        .call(GatedEarlyReplyQueue(ints([1, 2, 3]), gate))
        .unwrap();
    consumer.sync_info("reply received").unwrap();
    open.send(()).unwrap();
    producer.stop(Reason::Normal).unwrap();

    let order: Vec<Msg> = std::iter::from_fn(|| inbox.next(QUIET)).collect();
    let events = order
        .iter()
        .position(|m| matches!(m, Msg::Consumed(b) if *b == ints([1, 2, 3])));
    let reply = order
        .iter()
        .position(|m| matches!(m, Msg::Info("reply received")));
    assert!(events.is_some() && reply.is_some(), "{order:?}");
    assert!(
        reply < events,
        "the reply must precede the events: {order:?}"
    );
}

#[test]
fn producer_callbacks_handle_call_3_may_shut_stage_down() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    assert_eq!(producer.call(StopCall), Ok(()));
    assert_eq!(exit_reason(&producer), Reason::Shutdown);
}

#[test]
fn producer_callbacks_handle_info_2_is_called_for_unmatched_down_messages() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    producer.send_info("DOWN").unwrap();
    assert_receive!(inbox, Msg::Info("DOWN"));
}

#[test]
fn producer_callbacks_terminate_2() {
    let inbox = Inbox::new();
    let producer = producer(Counter::pid(inbox.tx()));
    producer.stop(Reason::Normal).unwrap();
    assert_receive!(inbox, Msg::Terminated(Reason::Normal));
}

// ----- describe "consumer callbacks" ----------------------------------------------------------------

#[test]
fn consumer_callbacks_init_1() {
    let r = start_consumer(init_as::<C>(Init::Ignore), ConsumerOptions::new());
    assert_eq!(r.unwrap_err(), StartError::Ignored);
    let r = start_consumer(
        init_as::<C>(Init::Stop(Reason::custom("oops"))),
        ConsumerOptions::new(),
    );
    assert_eq!(r.unwrap_err(), StartError::Stopped(Reason::custom("oops")));
}

#[test]
fn consumer_callbacks_handle_subscribe_4() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_receive!(inbox, Msg::ConsumerSubscribed(s) if s.tag() == tag);
}

/// A consumer whose `handle_subscribe` refuses with a reason.
struct Refuser;
impl Stage for Refuser {
    type In = V;
    type Out = Never;
    fn handle_subscribe(
        &mut self,
        _: Peer,
        _: &SubscriptionInfo,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        Err(Reason::BadReturn("unknown".into()))
    }
}
impl Consumer for Refuser {
    fn handle_events(&mut self, _: Vec<V>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
}

#[test]
fn consumer_callbacks_handle_subscribe_4_with_invalid_demand() {
    let producer = producer(Counter::new(0));
    let consumer = consumer(Refuser);
    consumer
        .async_subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_eq!(exit_reason(&consumer), Reason::BadReturn("unknown".into()));
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_temporary_subscription() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    subscribed(&inbox, tag).cancel(Reason::custom("oops"));
    assert_receive!(
        inbox,
        Msg::ConsumerCancelled(t, CancelReason::Cancel(r)) if *t == tag && *r == Reason::custom("oops")
    );
    assert!(consumer.join_timeout(QUIET).is_none());
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_normal_transient_subscription() {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Transient),
        )
        .unwrap();
    subscribed(&inbox, tag).cancel(Reason::Normal);
    assert_receive!(
        inbox,
        Msg::ConsumerCancelled(t, CancelReason::Cancel(Reason::Normal)) if *t == tag
    );
    assert!(consumer.join_timeout(QUIET).is_none());
}

fn cancel_stops_consumer(mode: CancelMode) {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap();
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new().cancel(mode))
        .unwrap();
    subscribed(&inbox, tag).cancel(test_process());
    assert_receive!(
        inbox,
        Msg::ConsumerCancelled(t, CancelReason::Cancel(r)) if *t == tag && *r == test_process()
    );
    assert_eq!(exit_reason(&consumer), test_process());
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_non_normal_transient_subscription() {
    cancel_stops_consumer(CancelMode::Transient);
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_permanent_subscription() {
    cancel_stops_consumer(CancelMode::Permanent);
}

fn producer_killed(mode: CancelMode) -> (StageRef<Forwarder>, Inbox) {
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap();
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new().cancel(mode))
        .unwrap();
    producer.kill();
    assert_receive!(
        inbox,
        Msg::ConsumerCancelled(t, CancelReason::Down(Reason::Killed)) if *t == tag
    );
    (consumer, inbox)
}

#[test]
fn consumer_callbacks_handle_cancel_3_on_producer_down_with_temporary_subscription() {
    let (consumer, _inbox) = producer_killed(CancelMode::Temporary);
    assert!(consumer.join_timeout(QUIET).is_none());
}

#[test]
fn consumer_callbacks_handle_cancel_3_on_producer_down_with_transient_subscription() {
    let (consumer, _inbox) = producer_killed(CancelMode::Transient);
    assert_eq!(exit_reason(&consumer), Reason::Killed);
}

#[test]
fn consumer_callbacks_handle_cancel_3_on_producer_down_with_permanent_subscription() {
    let (consumer, _inbox) = producer_killed(CancelMode::Permanent);
    assert_eq!(exit_reason(&consumer), Reason::Killed);
}

#[test]
fn consumer_callbacks_handle_info_2_is_called_for_unmatched_down_messages() {
    let inbox = Inbox::new();
    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.send_info("DOWN").unwrap();
    assert_receive!(inbox, Msg::Info("DOWN"));
}

#[test]
fn consumer_callbacks_terminate_1() {
    let inbox = Inbox::new();
    let consumer = consumer(Forwarder::new(inbox.tx()));
    consumer.stop(Reason::Normal).unwrap();
    assert_receive!(inbox, Msg::Terminated(Reason::Normal));
}

// ----- describe "producer_consumer callbacks" --------------------------------------------------

fn doubler(inbox: &Inbox) -> StageRef<Doubler> {
    start_producer_consumer(
        Doubler::new(inbox.tx()),
        ProducerConsumerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap()
}

#[test]
fn producer_consumer_callbacks_init_1() {
    let r = start_producer_consumer(init_as::<PC>(Init::Ignore), ProducerConsumerOptions::new());
    assert_eq!(r.unwrap_err(), StartError::Ignored);
    let r = start_producer_consumer(
        init_as::<PC>(Init::Stop(Reason::custom("oops"))),
        ProducerConsumerOptions::new(),
    );
    assert_eq!(r.unwrap_err(), StartError::Stopped(Reason::custom("oops")));
}

#[test]
fn producer_consumer_callbacks_producer_handle_subscribe_4() {
    let inbox = Inbox::new();
    let producer = doubler(&inbox);
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    pc_subscribed(&inbox, Peer::Consumer, tag);
}

#[test]
fn producer_consumer_callbacks_producer_handle_subscribe_4_does_not_accept_manual_demand() {
    let inbox = Inbox::new();
    let producer = start_producer_consumer(
        Doubler {
            pid: inbox.tx(),
            demand: Demand::Manual,
        },
        ProducerConsumerOptions::new().log(LogCapture::new().sink()),
    )
    .unwrap();
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    pc_subscribed(&inbox, Peer::Consumer, tag);
    assert!(matches!(exit_reason(&producer), Reason::BadReturn(_)));
}

#[test]
fn producer_consumer_callbacks_producer_handle_cancel_3() {
    let inbox = Inbox::new();
    let producer = doubler(&inbox);
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    pc_subscribed(&inbox, Peer::Consumer, tag);
    subscribed(&inbox, tag).cancel(Reason::custom("oops"));
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Cancel(r)) if *t == tag && *r == Reason::custom("oops")
    );
}

#[test]
fn producer_consumer_callbacks_producer_handle_cancel_3_on_consumer_down() {
    let inbox = Inbox::new();
    let producer = doubler(&inbox);
    let consumer = consumer(Forwarder::new(inbox.tx()));
    let tag = consumer
        .subscribe(
            &producer,
            SubscribeOptions::new().cancel(CancelMode::Temporary),
        )
        .unwrap();
    pc_subscribed(&inbox, Peer::Consumer, tag);
    consumer.kill();
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Down(Reason::Killed | Reason::NoProc)) if *t == tag
    );
}

#[test]
fn producer_consumer_callbacks_consumer_handle_subscribe_4() {
    // The original starts Doubler as a plain consumer; ours is a producer-consumer,
    // whose consumer side is what is checked.
    let inbox = Inbox::new();
    let producer = producer(Counter::new(0));
    let consumer = doubler(&inbox);
    let tag = consumer
        .subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    pc_subscribed(&inbox, Peer::Producer, tag);
}

/// A producer-consumer whose `handle_subscribe` refuses with a reason.
struct PcRefuser;
impl Stage for PcRefuser {
    type In = V;
    type Out = V;
    fn handle_subscribe(
        &mut self,
        _: Peer,
        _: &SubscriptionInfo,
        _: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        Err(Reason::BadReturn("unknown".into()))
    }
}
impl ProducerConsumer for PcRefuser {
    fn handle_events(&mut self, _: Vec<V>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
}

#[test]
fn producer_consumer_callbacks_consumer_handle_subscribe_4_with_invalid_demand() {
    let producer = producer(Counter::new(0));
    let consumer = start_producer_consumer(PcRefuser, ProducerConsumerOptions::new()).unwrap();
    consumer
        .async_subscribe(&producer, SubscribeOptions::new())
        .unwrap();
    assert_eq!(exit_reason(&consumer), Reason::BadReturn("unknown".into()));
}

/// A producer, a doubler with a forwarder downstream, and the doubler subscribed to the
/// producer with `mode`.
fn pc_chain(
    inbox: &Inbox,
    mode: CancelMode,
) -> (
    StageRef<Counter>,
    StageRef<Doubler>,
    StageRef<Forwarder>,
    Tag,
) {
    let producer = producer(Counter::new(0));
    let pc = doubler(inbox);
    let forwarder = start_consumer(
        Forwarder::new(inbox.tx()),
        ConsumerOptions::new()
            .subscribe_to(&pc, SubscribeOptions::new())
            .log(LogCapture::new().sink()),
    )
    .unwrap();
    let tag = pc
        .subscribe(&producer, SubscribeOptions::new().cancel(mode))
        .unwrap();
    (producer, pc, forwarder, tag)
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_with_temporary_subscription() {
    let inbox = Inbox::new();
    let (_p, pc, _f, tag) = pc_chain(&inbox, CancelMode::Temporary);
    pc_subscribed(&inbox, Peer::Producer, tag).cancel(Reason::custom("oops"));
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Cancel(r)) if *t == tag && *r == Reason::custom("oops")
    );
    assert!(pc.join_timeout(QUIET).is_none());
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_with_permanent_subscription() {
    let inbox = Inbox::new();
    let (_p, pc, _f, tag) = pc_chain(&inbox, CancelMode::Permanent);
    pc_subscribed(&inbox, Peer::Producer, tag).cancel(test_process());
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Cancel(r)) if *t == tag && *r == test_process()
    );
    assert_eq!(exit_reason(&pc), test_process());
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_down_with_temporary_subscription(
) {
    let inbox = Inbox::new();
    let (producer, pc, _f, tag) = pc_chain(&inbox, CancelMode::Temporary);
    producer.kill();
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Down(Reason::Killed)) if *t == tag
    );
    assert!(pc.join_timeout(QUIET).is_none());
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_normal_down_with_transient_subscription(
) {
    let inbox = Inbox::new();
    let (producer, pc, _f, tag) = pc_chain(&inbox, CancelMode::Transient);
    producer.stop(Reason::Shutdown).unwrap();
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Down(Reason::Shutdown)) if *t == tag
    );
    assert!(pc.join_timeout(QUIET).is_none());
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_non_normal_down_with_transient_subscription(
) {
    let inbox = Inbox::new();
    let (producer, pc, _f, tag) = pc_chain(&inbox, CancelMode::Transient);
    producer.kill();
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Down(Reason::Killed)) if *t == tag
    );
    assert_eq!(exit_reason(&pc), Reason::Killed);
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_down_with_permanent_subscription(
) {
    let inbox = Inbox::new();
    let (producer, pc, _f, tag) = pc_chain(&inbox, CancelMode::Permanent);
    producer.kill();
    assert_receive!(
        inbox,
        Msg::PcCancelled(t, CancelReason::Down(Reason::Killed)) if *t == tag
    );
    assert_eq!(exit_reason(&pc), Reason::Killed);
}
