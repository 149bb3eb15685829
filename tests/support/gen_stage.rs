//! The helper stages of GenStage's `test/gen_stage_test.exs` (elixir-lang/gen_stage
//! 1.3.2, commit 72198f8), re-created as Rust stages that report to the test's
//! [`Inbox`]: the ported GenStage suites use these.
//!
//! Differences with the Elixir helpers, all forced by static typing:
//! - Events are [`V`]: an integer or an "atom", since the Elixir tests mix both.
//! - Options that GenStage passes through to `handle_subscribe` (`:producer_demand`,
//!   `:consumer_demand`, `:producer_consumer_demand`) are fields of the helper stage.
//! - The test process's pid is a `Sender<Msg>`; `Counter` in "pid mode" holds one.
//! - `Counter` in pid mode also reports `terminate` (the Elixir suite uses `Forwarder`
//!   started as a producer for that, which a typed consumer cannot be).

use crossbeam_channel::{Receiver, Sender};
use stageflow::log::Level;
use stageflow::prelude::*;

use super::{LogCapture, Mailbox};

/// An event of the helper stages: the Elixir tests mix integers and atoms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum V {
    I(u64),
    A(&'static str),
}

/// `Enum.to_list(range)` as events.
pub fn ints(r: impl IntoIterator<Item = u64>) -> Vec<V> {
    r.into_iter().map(V::I).collect()
}

/// `Enum.flat_map(range, &[&1, &1])` as events.
pub fn doubled(r: impl IntoIterator<Item = u64>) -> Vec<V> {
    r.into_iter().flat_map(|i| [V::I(i), V::I(i)]).collect()
}

/// A list of atoms as events.
pub fn atoms(a: &[&'static str]) -> Vec<V> {
    a.iter().map(|s| V::A(s)).collect()
}

/// What the helper stages tell the test (the messages the Elixir helpers `send`).
#[derive(Clone, Debug)]
pub enum Msg {
    // Forwarder (consumer)
    Consumed(Vec<V>),
    ConsumerSubscribed(SubscriptionRef),
    ConsumerCancelled(Tag, CancelReason),
    Terminated(Reason),
    // Counter (producer, pid mode)
    ProducerSubscribed(Tag),
    ProducerCancelled(Tag, CancelReason),
    // Doubler (producer-consumer)
    PcSubscribed(Peer, SubscriptionRef),
    PcCancelled(Tag, CancelReason),
    PcConsumed(Vec<V>),
    // NothingProducer
    Demand(usize),
    // Postponer, Sleeper, Discarder
    Postponed(Vec<V>),
    Sleep(Vec<V>),
    Discarded(Vec<V>),
    /// An info message (an Elixir atom such as `:sync`) forwarded by `handle_info`.
    Info(&'static str),
}

/// The test process's mailbox, receiving what these helper stages report.
pub type Inbox = Mailbox<Msg>;

// ----- Counter -----------------------------------------------------------------------

/// `Counter`: a producer counting in batches, or, in "pid mode", a producer that emits
/// nothing on demand and reports subscribes, cancels and infos to the test.
pub struct Counter {
    pub counter: u64,
    pub pid: Option<Sender<Msg>>,
    /// What `handle_subscribe(:consumer, ...)` returns (`:producer_demand`).
    pub producer_demand: Demand,
}

impl Counter {
    /// `{:producer, counter}`.
    pub fn new(counter: u64) -> Counter {
        Counter {
            counter,
            pid: None,
            producer_demand: Demand::Automatic,
        }
    }
    /// `{:producer, self()}`.
    pub fn pid(tx: Sender<Msg>) -> Counter {
        Counter {
            counter: 0,
            pid: Some(tx),
            producer_demand: Demand::Automatic,
        }
    }
    fn send(&self, m: Msg) {
        if let Some(tx) = &self.pid {
            let _ = tx.send(m);
        }
    }
}

/// `{:queue, events}` (call, cast and info). The dispatcher suites' producers take
/// it with `u64` events.
pub struct Queue<E = V>(pub Vec<E>);
/// `{:early_reply_queue, events}`: reply first, then emit.
pub struct EarlyReplyQueue(pub Vec<V>);
/// `:stop` call: `{:stop, :shutdown, :ok, state}`.
pub struct StopCall;

impl Stage for Counter {
    type In = Never;
    type Out = V;

    fn handle_subscribe(
        &mut self,
        _peer: Peer,
        _info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        self.send(Msg::ProducerSubscribed(from.tag()));
        Ok(self.producer_demand)
    }

    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        self.send(Msg::ProducerCancelled(from.tag(), reason));
    }

    fn terminate(&mut self, reason: &Reason) {
        self.send(Msg::Terminated(reason.clone()));
    }
}

impl Producer for Counter {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        assert!(demand > 0, "handle_demand called with 0");
        if self.pid.is_some() {
            return;
        }
        let n = demand as u64;
        ctx.emit_all((self.counter..self.counter + n).map(V::I));
        self.counter += n;
    }
}

impl HandleCall<Queue> for Counter {
    type Reply = u64;
    fn handle_call(
        &mut self,
        q: Queue,
        _: &ReplyTo<u64>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<u64> {
        ctx.emit_all(q.0);
        Some(self.counter)
    }
}

impl HandleCall<EarlyReplyQueue> for Counter {
    type Reply = u64;
    fn handle_call(
        &mut self,
        q: EarlyReplyQueue,
        from: &ReplyTo<u64>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<u64> {
        from.reply(self.counter);
        ctx.emit_all(q.0);
        None
    }
}

impl HandleCall<StopCall> for Counter {
    type Reply = ();
    fn handle_call(
        &mut self,
        _: StopCall,
        _: &ReplyTo<()>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<()> {
        ctx.stop(Reason::Shutdown);
        Some(())
    }
}

impl HandleCast<Queue> for Counter {
    fn handle_cast(&mut self, q: Queue, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(q.0);
    }
}

impl HandleInfo<Queue> for Counter {
    fn handle_info(&mut self, q: Queue, ctx: &mut Context<'_, Self>) {
        ctx.emit_all(q.0);
    }
}

impl HandleInfo<&'static str> for Counter {
    fn handle_info(&mut self, other: &'static str, _ctx: &mut Context<'_, Self>) {
        self.send(Msg::Info(other));
    }
}

// ----- DemandProducer, NothingProducer --------------------------------------------------

/// `DemandProducer`: emits one event equal to each demand, records the demands.
#[derive(Default)]
pub struct DemandProducer {
    pub past_demands: Vec<usize>,
}

impl Stage for DemandProducer {
    type In = Never;
    type Out = V;
}

impl Producer for DemandProducer {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        ctx.emit(V::I(demand as u64));
        self.past_demands.push(demand);
    }
}

/// `NothingProducer`: never emits; reports each demand.
pub struct NothingProducer(pub Sender<Msg>);

impl Stage for NothingProducer {
    type In = Never;
    type Out = V;
}

impl Producer for NothingProducer {
    fn handle_demand(&mut self, demand: usize, _ctx: &mut Context<'_, Self>) {
        let _ = self.0.send(Msg::Demand(demand));
    }
}

// ----- Doubler, Postponer, Discarder ------------------------------------------------------

/// `Doubler`: a producer-consumer emitting every event twice.
pub struct Doubler {
    pub pid: Sender<Msg>,
    /// What `handle_subscribe` returns (`:producer_consumer_demand`).
    pub demand: Demand,
}

impl Doubler {
    pub fn new(pid: Sender<Msg>) -> Doubler {
        Doubler {
            pid,
            demand: Demand::Automatic,
        }
    }
}

impl Stage for Doubler {
    type In = V;
    type Out = V;

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        _info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        let _ = self.pid.send(Msg::PcSubscribed(peer, from.clone()));
        Ok(self.demand)
    }

    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        let _ = self.pid.send(Msg::PcCancelled(from.tag(), reason));
    }
}

impl ProducerConsumer for Doubler {
    fn handle_events(&mut self, events: Vec<V>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        let _ = self.pid.send(Msg::PcConsumed(events.clone()));
        ctx.emit_all(events.into_iter().flat_map(|e| [e.clone(), e]));
    }
}

impl HandleInfo<&'static str> for Doubler {
    fn handle_info(&mut self, other: &'static str, _ctx: &mut Context<'_, Self>) {
        let _ = self.pid.send(Msg::Info(other));
    }
}

/// `Postponer`: returns nothing from `handle_events` and re-emits the events from
/// `handle_info` (events emitted outside `handle_events`).
pub struct Postponer(pub Sender<Msg>);

/// `{:postponed, events}`, sent by the stage to itself.
pub struct Postponed(pub Vec<V>);

impl Stage for Postponer {
    type In = V;
    type Out = V;
}

impl ProducerConsumer for Postponer {
    fn handle_events(&mut self, events: Vec<V>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        // `send(self(), {:postponed, events})`: a plain message, not queued behind the
        // buffer.
        let _ = ctx.myself().send_info(Postponed(events));
    }
}

impl HandleInfo<Postponed> for Postponer {
    fn handle_info(&mut self, p: Postponed, ctx: &mut Context<'_, Self>) {
        let _ = self.0.send(Msg::Postponed(p.0.clone()));
        ctx.emit_all(p.0);
    }
}

/// `Discarder`: a producer-consumer that drops everything.
pub struct Discarder(pub Sender<Msg>);

impl Stage for Discarder {
    type In = V;
    type Out = V;
}

impl ProducerConsumer for Discarder {
    fn handle_events(&mut self, events: Vec<V>, _: &SubscriptionRef, _ctx: &mut Context<'_, Self>) {
        let _ = self.0.send(Msg::Discarded(events));
    }
}

// ----- Sleeper, Forwarder -------------------------------------------------------------------

/// `Sleeper`: a consumer that blocks inside its first `handle_events`
/// (`Process.sleep(:infinity)`) until the test drops the returned waker, so that its
/// thread ends with the test.
pub struct Sleeper {
    pid: Sender<Msg>,
    wake: Receiver<()>,
}

impl Sleeper {
    pub fn new(pid: Sender<Msg>) -> (Sleeper, Sender<()>) {
        let (tx, rx) = crossbeam_channel::bounded(0);
        (Sleeper { pid, wake: rx }, tx)
    }
}

impl Stage for Sleeper {
    type In = V;
    type Out = Never;
}

impl Consumer for Sleeper {
    fn handle_events(&mut self, events: Vec<V>, _: &SubscriptionRef, _ctx: &mut Context<'_, Self>) {
        let _ = self.pid.send(Msg::Sleep(events));
        let _ = self.wake.recv();
    }
}

/// `Forwarder`: a consumer reporting everything to the test.
pub struct Forwarder {
    pub pid: Sender<Msg>,
    /// What `handle_subscribe(:producer, ...)` returns (`:consumer_demand`).
    pub demand: Demand,
}

impl Forwarder {
    pub fn new(pid: Sender<Msg>) -> Forwarder {
        Forwarder {
            pid,
            demand: Demand::Automatic,
        }
    }
    pub fn manual(pid: Sender<Msg>) -> Forwarder {
        Forwarder {
            pid,
            demand: Demand::Manual,
        }
    }
}

/// `{:ask, to, n}`: the forwarder asks on a manual subscription, from its own thread.
pub struct AskCall(pub SubscriptionRef, pub usize);

impl Stage for Forwarder {
    type In = V;
    type Out = Never;

    fn handle_subscribe(
        &mut self,
        _peer: Peer,
        _info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        let _ = self.pid.send(Msg::ConsumerSubscribed(from.clone()));
        Ok(self.demand)
    }

    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        let _ = self.pid.send(Msg::ConsumerCancelled(from.tag(), reason));
    }

    fn terminate(&mut self, reason: &Reason) {
        let _ = self.pid.send(Msg::Terminated(reason.clone()));
    }
}

impl Consumer for Forwarder {
    fn handle_events(&mut self, events: Vec<V>, _: &SubscriptionRef, _ctx: &mut Context<'_, Self>) {
        let _ = self.pid.send(Msg::Consumed(events));
    }
}

impl HandleCall<AskCall> for Forwarder {
    type Reply = ();
    fn handle_call(
        &mut self,
        a: AskCall,
        _: &ReplyTo<()>,
        _ctx: &mut Context<'_, Self>,
    ) -> Option<()> {
        a.0.ask(a.1);
        Some(())
    }
}

impl HandleInfo<&'static str> for Forwarder {
    fn handle_info(&mut self, other: &'static str, _ctx: &mut Context<'_, Self>) {
        let _ = self.pid.send(Msg::Info(other));
    }
}

// ----- DiscardedBufferLogger ------------------------------------------------------------------

/// `DiscardedBufferLogger`: a producer whose `format_discarded` logs its own line and
/// returns `log_discarded`.
pub struct DiscardedBufferLogger {
    pub log_discarded: bool,
    pub log: LogCapture,
}

impl Stage for DiscardedBufferLogger {
    type In = Never;
    type Out = V;

    fn format_discarded(&mut self, discarded: usize) -> bool {
        self.log.push(
            Level::Info,
            "DiscardedBufferLogger",
            format!("DiscardedBufferLogger has discarded {discarded} events from buffer"),
        );
        self.log_discarded
    }
}

impl Producer for DiscardedBufferLogger {
    fn handle_demand(&mut self, _demand: usize, _ctx: &mut Context<'_, Self>) {}
}

impl HandleCall<Queue> for DiscardedBufferLogger {
    type Reply = ();
    fn handle_call(
        &mut self,
        q: Queue,
        _: &ReplyTo<()>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<()> {
        ctx.emit_all(q.0);
        Some(())
    }
}

// ----- shorthands ----------------------------------------------------------------------------------

pub fn sub(max: usize, min: usize) -> SubscribeOptions<V> {
    SubscribeOptions::new().max_demand(max).min_demand(min)
}

pub fn producer<S: Producer<Out = V>>(s: S) -> StageRef<S> {
    start_producer(s, ProducerOptions::new()).expect("producer starts")
}

pub fn consumer<S: Consumer<In = V>>(s: S) -> StageRef<S> {
    start_consumer(s, ConsumerOptions::new()).expect("consumer starts")
}
