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
/// The tests that the original writes twice, for a consumer and for the consumer side of
/// a producer-consumer, written once. For the kind `$kind` (a stage of role `$role`
/// whose output is `$out`, started by `$start` with `$options`), this defines:
/// `InitAs<$kind>`; `$refuser`, whose `handle_subscribe` refuses with a reason; and the
/// tests `$init` ("init/1": `:ignore` and `{:stop, reason}`) and `$invalid_demand`
/// ("handle_subscribe/4 with invalid demand": the refusal stops the stage with its
/// reason), under the original names.
macro_rules! consumer_side_twins {
    (
        kind: $kind:ident,
        role: $role:ident,
        out: $out:ty,
        start: $start:ident,
        options: $options:ident,
        refuser: $refuser:ident,
        init: $init:ident,
        invalid_demand: $invalid_demand:ident $(,)?
    ) => {
        impl Stage for InitAs<$kind> {
            type In = V;
            type Out = $out;
            fn init(&mut self, _ctx: &mut Context<'_, Self>) -> Init {
                self.0.clone()
            }
        }
        impl $role for InitAs<$kind> {
            fn handle_events(&mut self, _: Vec<V>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
            }
        }

        #[test]
        fn $init() {
            let r = $start(init_as::<$kind>(Init::Ignore), $options::new());
            assert_eq!(r.unwrap_err(), StartError::Ignored);
            let r = $start(
                init_as::<$kind>(Init::Stop(Reason::custom("oops"))),
                $options::new(),
            );
            assert_eq!(r.unwrap_err(), StartError::Stopped(Reason::custom("oops")));
        }

        /// A stage whose `handle_subscribe` refuses with a reason.
        struct $refuser;
        impl Stage for $refuser {
            type In = V;
            type Out = $out;
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
        impl $role for $refuser {
            fn handle_events(&mut self, _: Vec<V>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
            }
        }

        #[test]
        fn $invalid_demand() {
            let producer = producer(Counter::new(0));
            let consumer = $start($refuser, $options::new()).unwrap();
            consumer
                .async_subscribe(&producer, SubscribeOptions::new())
                .unwrap();
            assert_eq!(exit_reason(&consumer), Reason::BadReturn("unknown".into()));
        }
    };
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

consumer_side_twins! {
    kind: C,
    role: Consumer,
    out: Never,
    start: start_consumer,
    options: ConsumerOptions,
    refuser: Refuser,
    init: consumer_callbacks_init_1,
    invalid_demand: consumer_callbacks_handle_subscribe_4_with_invalid_demand,
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

// The "handle_cancel/3" tests of a consumer and of a producer-consumer's consumer side
// are one scenario each, run on either kind (`ConsumerSide`, below).

#[test]
fn consumer_callbacks_handle_cancel_3_with_temporary_subscription() {
    cancel_keeps_stage::<Forwarder>(CancelMode::Temporary, Reason::custom("oops"));
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_normal_transient_subscription() {
    cancel_keeps_stage::<Forwarder>(CancelMode::Transient, Reason::Normal);
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_non_normal_transient_subscription() {
    cancel_stops_stage::<Forwarder>(CancelMode::Transient);
}

#[test]
fn consumer_callbacks_handle_cancel_3_with_permanent_subscription() {
    cancel_stops_stage::<Forwarder>(CancelMode::Permanent);
}

#[test]
fn consumer_callbacks_handle_cancel_3_on_producer_down_with_temporary_subscription() {
    let consumer = producer_down::<Forwarder>(CancelMode::Temporary, Reason::Killed);
    assert!(consumer.join_timeout(QUIET).is_none());
}

#[test]
fn consumer_callbacks_handle_cancel_3_on_producer_down_with_transient_subscription() {
    let consumer = producer_down::<Forwarder>(CancelMode::Transient, Reason::Killed);
    assert_eq!(exit_reason(&consumer), Reason::Killed);
}

#[test]
fn consumer_callbacks_handle_cancel_3_on_producer_down_with_permanent_subscription() {
    let consumer = producer_down::<Forwarder>(CancelMode::Permanent, Reason::Killed);
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

consumer_side_twins! {
    kind: PC,
    role: ProducerConsumer,
    out: V,
    start: start_producer_consumer,
    options: ProducerConsumerOptions,
    refuser: PcRefuser,
    init: producer_consumer_callbacks_init_1,
    invalid_demand: producer_consumer_callbacks_consumer_handle_subscribe_4_with_invalid_demand,
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

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_with_temporary_subscription() {
    cancel_keeps_stage::<Doubler>(CancelMode::Temporary, Reason::custom("oops"));
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_with_permanent_subscription() {
    cancel_stops_stage::<Doubler>(CancelMode::Permanent);
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_down_with_temporary_subscription(
) {
    let pc = producer_down::<Doubler>(CancelMode::Temporary, Reason::Killed);
    assert!(pc.join_timeout(QUIET).is_none());
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_normal_down_with_transient_subscription(
) {
    let pc = producer_down::<Doubler>(CancelMode::Transient, Reason::Shutdown);
    assert!(pc.join_timeout(QUIET).is_none());
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_non_normal_down_with_transient_subscription(
) {
    let pc = producer_down::<Doubler>(CancelMode::Transient, Reason::Killed);
    assert_eq!(exit_reason(&pc), Reason::Killed);
}

#[test]
fn producer_consumer_callbacks_consumer_handle_cancel_3_on_producer_down_with_permanent_subscription(
) {
    let pc = producer_down::<Doubler>(CancelMode::Permanent, Reason::Killed);
    assert_eq!(exit_reason(&pc), Reason::Killed);
}

// ----- the consumer side, for either kind ---------------------------------------------------

/// A stage with a consumer side under test: a consumer (`Forwarder`), or a
/// producer-consumer (`Doubler`, with a forwarder downstream).
trait ConsumerSide: Stage<In = V> + Sized {
    /// Starts the stage (its log captured) and subscribes it to a fresh counter with
    /// `mode`: the counter, the stage and the subscription's tag.
    fn chain(inbox: &Inbox, mode: CancelMode) -> (StageRef<Counter>, StageRef<Self>, Tag);
    /// The stage's `SubscriptionRef` for `tag`, from its `handle_subscribe` report.
    fn subscribed(inbox: &Inbox, tag: Tag) -> SubscriptionRef;
    /// Whether `m` is the stage's `handle_cancel` report for `tag` with `why`.
    fn cancelled(m: &Msg, tag: Tag, why: &CancelReason) -> bool;
}

impl ConsumerSide for Forwarder {
    fn chain(inbox: &Inbox, mode: CancelMode) -> (StageRef<Counter>, StageRef<Self>, Tag) {
        let producer = producer(Counter::new(0));
        let consumer = start_consumer(
            Forwarder::new(inbox.tx()),
            ConsumerOptions::new().log(LogCapture::new().sink()),
        )
        .unwrap();
        let tag = consumer
            .subscribe(&producer, SubscribeOptions::new().cancel(mode))
            .unwrap();
        (producer, consumer, tag)
    }
    fn subscribed(inbox: &Inbox, tag: Tag) -> SubscriptionRef {
        subscribed(inbox, tag)
    }
    fn cancelled(m: &Msg, tag: Tag, why: &CancelReason) -> bool {
        matches!(m, Msg::ConsumerCancelled(t, r) if *t == tag && r == why)
    }
}

impl ConsumerSide for Doubler {
    /// A producer, a doubler with a forwarder downstream, and the doubler subscribed to
    /// the producer with `mode`.
    fn chain(inbox: &Inbox, mode: CancelMode) -> (StageRef<Counter>, StageRef<Self>, Tag) {
        let producer = producer(Counter::new(0));
        let pc = doubler(inbox);
        let _forwarder = start_consumer(
            Forwarder::new(inbox.tx()),
            ConsumerOptions::new()
                .subscribe_to(&pc, SubscribeOptions::new())
                .log(LogCapture::new().sink()),
        )
        .unwrap();
        let tag = pc
            .subscribe(&producer, SubscribeOptions::new().cancel(mode))
            .unwrap();
        (producer, pc, tag)
    }
    fn subscribed(inbox: &Inbox, tag: Tag) -> SubscriptionRef {
        pc_subscribed(inbox, Peer::Producer, tag)
    }
    fn cancelled(m: &Msg, tag: Tag, why: &CancelReason) -> bool {
        matches!(m, Msg::PcCancelled(t, r) if *t == tag && r == why)
    }
}

/// Cancelling the subscription with `reason` reaches `handle_cancel`; the stage lives on.
fn cancel_keeps_stage<S: ConsumerSide>(mode: CancelMode, reason: Reason) {
    let inbox = Inbox::new();
    let (_producer, stage, tag) = S::chain(&inbox, mode);
    S::subscribed(&inbox, tag).cancel(reason.clone());
    let why = CancelReason::Cancel(reason);
    assert_receive!(inbox, m if S::cancelled(m, tag, &why));
    assert!(stage.join_timeout(QUIET).is_none());
}

/// Cancelling the subscription with a non-normal reason reaches `handle_cancel`, then
/// stops the stage with that reason.
fn cancel_stops_stage<S: ConsumerSide>(mode: CancelMode) {
    let inbox = Inbox::new();
    let (_producer, stage, tag) = S::chain(&inbox, mode);
    S::subscribed(&inbox, tag).cancel(test_process());
    let why = CancelReason::Cancel(test_process());
    assert_receive!(inbox, m if S::cancelled(m, tag, &why));
    assert_eq!(exit_reason(&stage), test_process());
}

/// The producer goes down with `reason` (killed, or stopped): `handle_cancel` learns
/// it. Returns the stage, whose fate depends on `mode`.
fn producer_down<S: ConsumerSide>(mode: CancelMode, reason: Reason) -> StageRef<S> {
    let inbox = Inbox::new();
    let (producer, stage, tag) = S::chain(&inbox, mode);
    if reason == Reason::Killed {
        producer.kill();
    } else {
        producer.stop(reason.clone()).unwrap();
    }
    let why = CancelReason::Down(reason);
    assert_receive!(inbox, m if S::cancelled(m, tag, &why));
    stage
}
