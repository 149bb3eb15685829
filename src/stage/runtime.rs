//! The thread loop of a stage: mailbox → callbacks → dispatcher.
//!
//! One `Runtime` per stage, owned by the stage's thread; nothing in it is shared, so
//! no lock guards user state. The algorithms follow GenStage's code exactly
//! (`docs/DESIGN.md` describes them): the consumer's batch split and re-ask rule, the
//! producer's buffer-first demand handling, accumulate/forward replay, and the
//! producer-consumer's input queue processed only while downstream demand lasts.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::bounded;

use crate::error::{Operation, StartError, SubscribeError};

use super::buffer::Buffer;
use super::context::Context;
use super::dispatcher::{DemandDispatcher, Dispatcher, PendingInfo, Subscriber};
use super::handle::{Counters, ReplyTo, Shared, SourceRef, StageRef};
use super::log::{Level, LogSink};
use super::mailbox::{
    DispatcherOwner, DownGuard, Downstream, Mail, MailQueue, Mailbox, SubscribeMsg,
};
use super::options::Spec;
use super::reason::{next_id, CancelReason, Reason, Tag};
use super::subscription::{CancelMode, Demand, DemandState, SubscribeOptions, SubscriptionRef};
use super::{
    Consumer, DemandMode, HandleCall, HandleCast, Init, Kind, Peer, Producer, ProducerConsumer,
    Stage,
};

/// Messages of at most this many events (or asks for at most this many) count as
/// little work; see `Runtime::handle`.
const SPIN_WORK_LIMIT: usize = 2048;

/// A deferred call of `handle_info` (or any callback-like work) on the stage.
pub(crate) type InfoFn<S> = Box<dyn FnOnce(&mut S, &mut Context<'_, S>) + Send>;

/// `subscribe_to` entries.
type Subscriptions<T> = Vec<(SourceRef<T>, SubscribeOptions<T>)>;
type DemandFn<S> = fn(&mut S, usize, &mut Context<'_, S>);
type EventsFn<S> = fn(&mut S, Vec<<S as Stage>::In>, &SubscriptionRef, &mut Context<'_, S>);

/// The kind-specific callbacks, chosen by the `start_*` function.
pub(crate) struct Callbacks<S: Stage> {
    kind: Kind,
    handle_demand: DemandFn<S>,
    handle_events: EventsFn<S>,
}

fn no_demand<S: Stage>(_: &mut S, _: usize, _: &mut Context<'_, S>) {}
fn no_events<S: Stage>(_: &mut S, _: Vec<S::In>, _: &SubscriptionRef, _: &mut Context<'_, S>) {}

impl<S: Producer> Callbacks<S> {
    pub(crate) fn producer() -> Self {
        Callbacks {
            kind: Kind::Producer,
            handle_demand: S::handle_demand,
            handle_events: no_events::<S>,
        }
    }
}

impl<S: ProducerConsumer> Callbacks<S> {
    pub(crate) fn producer_consumer() -> Self {
        Callbacks {
            kind: Kind::ProducerConsumer,
            handle_demand: no_demand::<S>,
            handle_events: <S as ProducerConsumer>::handle_events,
        }
    }
}

impl<S: Consumer> Callbacks<S> {
    pub(crate) fn consumer() -> Self {
        Callbacks {
            kind: Kind::Consumer,
            handle_demand: no_demand::<S>,
            handle_events: <S as Consumer>::handle_events,
        }
    }
}

/// What a subscription does when its producer is found dead as it is sent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum OnDeadProducer {
    /// Nothing is subscribed; the caller gets an error naming the producer.
    Error(Operation),
    /// The subscription ends at once with `Down(NoProc)` and the consumer reacts by
    /// its cancel mode (GenStage's monitor of a dead process; for async requests,
    /// which have nobody to return an error to).
    Down,
}

/// What a producer stored while in accumulate mode, replayed on forward.
enum Accumulated<T> {
    Demand(usize),
    Dispatch(Vec<T>),
    /// An info queued behind stored events (it must not overtake them).
    Info(u64),
}

/// A producer-consumer's unprocessed input, in arrival order.
enum Queued<S: Stage> {
    Events(Tag, Vec<S::In>),
    Info(InfoFn<S>),
    Cancel(Tag, CancelReason),
}

struct ConsumerEntry<T> {
    consumer: Arc<dyn Downstream<T>>,
    from: SubscriptionRef,
}

struct ProducerEntry {
    from: SubscriptionRef,
    cancel: CancelMode,
    /// `None`: manual demand.
    demand: Option<DemandState>,
    /// A cancel is queued behind unprocessed input: send no more asks.
    cancelled: bool,
}

pub(crate) struct Runtime<S: Stage> {
    stage: S,
    kind: Kind,
    cb: Callbacks<S>,
    me: StageRef<S>,
    owner: Arc<dyn DispatcherOwner>,
    log: LogSink,
    out: Vec<S::Out>,
    stop: Option<Reason>,
    killed: bool,
    /// Poll the mailbox briefly before parking (set by `handle`).
    spin_next: bool,
    // Producer side.
    consumers: HashMap<Tag, ConsumerEntry<S::Out>>,
    dispatcher: Box<dyn Dispatcher<S::Out>>,
    buffer: Buffer<S::Out>,
    accumulate: Option<VecDeque<Accumulated<S::Out>>>,
    infos: HashMap<u64, InfoFn<S>>,
    // Consumer side.
    producers: HashMap<Tag, ProducerEntry>,
    /// Producer-consumer input waiting for downstream demand. Bounded by the
    /// subscriptions' `max_demand`: upstream is asked again only after processing.
    queue: VecDeque<Queued<S>>,
    /// Producer-consumer: downstream demand not yet satisfied.
    counter: usize,
    /// Producer-consumer: a normal stop waiting for the buffered output to be taken.
    deferred_stop: Option<Reason>,
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> Arc<str> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Arc::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Arc::from(s.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}

fn internal_panic(payload: Box<dyn std::any::Any + Send>) -> Reason {
    Reason::Panic(Arc::from(
        format!("stageflow engine: {}", panic_message(payload)).as_str(),
    ))
}

/// Spawns the stage's thread, runs `init` and the initial subscriptions there, and
/// returns once they are done (GenStage's `start_link` returns after `init`).
pub(crate) fn start<S: Stage>(
    stage: S,
    spec: Spec<S::In, S::Out>,
    cb: Callbacks<S>,
) -> Result<StageRef<S>, StartError> {
    let id = next_id();
    let kind = cb.kind;
    let default_name = match kind {
        Kind::Producer => "producer",
        Kind::ProducerConsumer => "producer_consumer",
        Kind::Consumer => "consumer",
    };
    let name: Arc<str> = Arc::from(
        spec.name
            .clone()
            .unwrap_or_else(|| format!("stageflow-{default_name}-{id}"))
            .as_str(),
    );
    let queue = Arc::new(MailQueue::new());
    let me = StageRef {
        mailbox: Mailbox {
            queue: queue.clone(),
        },
        shared: Arc::new(Shared::new(id, name.clone(), kind)),
    };
    let (ready_tx, ready_rx) = bounded::<Result<(), StartError>>(1);
    let thread_me = me.clone();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            *thread_me.shared.thread_id.lock() = Some(std::thread::current().id());
            super::mailbox::LIVE_STAGES.fetch_add(1, Ordering::Relaxed);
            let mut rt = Runtime::new(
                stage,
                spec.log.clone(),
                spec.buffer_size,
                spec.buffer_keep,
                spec.dispatcher,
                spec.demand,
                cb,
                thread_me,
            );
            let mut unread = VecDeque::new();
            // User callbacks are guarded one by one; this guard is for the engine
            // itself (a dispatcher's bug, say): whatever panics, the stage still
            // records why it exited and tells its peers, so nobody waits forever.
            let subscribe_to = spec.subscribe_to;
            let started = catch_unwind(AssertUnwindSafe(|| rt.init(subscribe_to)))
                .unwrap_or_else(|p| Err(StartError::Stopped(internal_panic(p))));
            match started {
                Ok(()) => {
                    let _ = ready_tx.send(Ok(()));
                    let reason = catch_unwind(AssertUnwindSafe(|| rt.run(&queue, &mut unread)))
                        .unwrap_or_else(internal_panic);
                    rt.finish(reason);
                }
                Err(e) => {
                    let reason = match &e {
                        StartError::Stopped(r) => r.clone(),
                        _ => Reason::Normal,
                    };
                    rt.abandon(reason);
                    let _ = ready_tx.send(Err(e));
                }
            }
            // Exit is announced before the mailbox closes, so that a caller whose
            // request is dropped unanswered finds the reason. Unread messages are
            // dropped now: subscribe messages among them tell their consumers that
            // this stage is gone, calls fail with the exit reason.
            super::mailbox::LIVE_STAGES.fetch_sub(1, Ordering::Relaxed);
            let closed = queue.close();
            drop(rt);
            drop(unread);
            drop(closed);
        })
        .map_err(|e| StartError::Spawn(e.to_string()))?;
    *me.shared.thread.lock() = Some(handle);
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(me),
        Ok(Err(e)) => {
            me.join();
            Err(e)
        }
        Err(_) => {
            let reason = me.join();
            Err(StartError::Stopped(reason))
        }
    }
}

impl<S: Stage> Runtime<S> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        stage: S,
        log: Option<LogSink>,
        buffer_size: super::BufferSize,
        buffer_keep: super::BufferKeep,
        dispatcher: Option<Box<dyn Dispatcher<S::Out>>>,
        demand: DemandMode,
        cb: Callbacks<S>,
        me: StageRef<S>,
    ) -> Self {
        let log = log.unwrap_or_default().named(me.shared.name.clone());
        let mut dispatcher = dispatcher.unwrap_or_else(|| Box::new(DemandDispatcher::new()));
        dispatcher.set_log(log.clone());
        dispatcher.set_stall_counter(super::dispatcher::StallCounter(
            me.shared.metrics.stalls.clone(),
        ));
        let owner: Arc<dyn DispatcherOwner> = Arc::new(me.mailbox.clone());
        Runtime {
            stage,
            kind: cb.kind,
            cb,
            owner,
            log,
            out: Vec::new(),
            stop: None,
            killed: false,
            spin_next: true,
            consumers: HashMap::new(),
            dispatcher,
            buffer: Buffer::new(buffer_size, buffer_keep),
            accumulate: match demand {
                DemandMode::Accumulate if me.shared.kind == Kind::Producer => Some(VecDeque::new()),
                _ => None,
            },
            infos: HashMap::new(),
            producers: HashMap::new(),
            queue: VecDeque::new(),
            counter: 0,
            deferred_stop: None,
            me,
        }
    }

    // ----- running user code -------------------------------------------------------

    /// Runs one callback, catching a panic (which stops the stage with its message).
    /// Returns `None` if it panicked.
    fn invoke<R>(&mut self, f: impl FnOnce(&mut S, &mut Context<'_, S>) -> R) -> Option<R> {
        let mut ctx = Context {
            out: &mut self.out,
            stop: &mut self.stop,
            me: &self.me,
            log: &self.log,
        };
        let stage = &mut self.stage;
        match catch_unwind(AssertUnwindSafe(|| f(stage, &mut ctx))) {
            Ok(r) => Some(r),
            Err(payload) => {
                // Events emitted by a callback that crashed are not dispatched, as in
                // GenStage, where a crashed callback returns nothing.
                self.out.clear();
                self.stop = Some(Reason::Panic(panic_message(payload)));
                None
            }
        }
    }

    fn stopped(&self) -> bool {
        self.stop.is_some()
    }

    /// Dispatches what the last callback emitted.
    fn dispatch_out(&mut self) {
        if !self.out.is_empty() {
            let events = std::mem::take(&mut self.out);
            self.dispatch_events(events);
        }
    }

    fn init(&mut self, subscribe_to: Subscriptions<S::In>) -> Result<(), StartError> {
        match self.invoke(|s, ctx| s.init(ctx)) {
            None => {
                return Err(StartError::Stopped(
                    self.stop.take().unwrap_or(Reason::Normal),
                ))
            }
            Some(Init::Ignore) => return Err(StartError::Ignored),
            Some(Init::Stop(reason)) => return Err(StartError::Stopped(reason)),
            Some(Init::Ok) => {}
        }
        if let Some(reason) = self.stop.take() {
            return Err(StartError::Stopped(reason));
        }
        self.dispatch_out();
        for (producer, opts) in subscribe_to {
            // A temporary subscription to a dead producer just ends, as in GenStage;
            // any other one fails the start with an error naming the producer.
            let on_dead = if opts.cancel == CancelMode::Temporary {
                OnDeadProducer::Down
            } else {
                OnDeadProducer::Error(Operation::Start)
            };
            match self.subscribe_inner(producer, opts, None, on_dead) {
                Ok(_) => {}
                Err(SubscribeError::Stopped(r)) => return Err(StartError::Stopped(r)),
                Err(SubscribeError::BadOptions(e)) => return Err(StartError::BadOptions(e)),
                Err(SubscribeError::NoProc(e)) => return Err(StartError::NoProc(e)),
                Err(_) => return Err(StartError::Stopped(Reason::NoProc)),
            }
            if let Some(reason) = self.stop.take() {
                return Err(StartError::Stopped(reason));
            }
        }
        Ok(())
    }

    /// Handles mail until the stage stops; what it took but did not handle is left in
    /// `batch`.
    fn run(&mut self, queue: &MailQueue<Mail<S>>, batch: &mut VecDeque<Mail<S>>) -> Reason {
        loop {
            queue.recv_all(batch, self.spin_next);
            while let Some(mail) = batch.pop_front() {
                self.handle(mail);
                if let Some(reason) = self.stop.take() {
                    return reason;
                }
            }
        }
    }

    fn handle(&mut self, mail: Mail<S>) {
        // Spin before the next park only while messages carry little work: then the
        // wake-up is what costs. Big batches outlast the spin, which then only takes
        // CPU time from the other stage (measurements: docs/BENCHMARKS.md).
        self.spin_next = match &mail {
            Mail::Ask { n, .. } => *n <= SPIN_WORK_LIMIT,
            Mail::Events { events, .. } => events.len() <= SPIN_WORK_LIMIT,
            _ => self.spin_next,
        };
        match mail {
            Mail::Subscribe(msg) => self.producer_subscribe(*msg),
            Mail::Ask { tag, n } => self.producer_ask(tag, n),
            Mail::ConsumerCancel { tag, reason } => self.producer_cancel(tag, reason),
            Mail::Events { tag, events } => self.consumer_events(tag, events),
            Mail::ProducerCancel { tag, reason } => self.consumer_cancel(tag, reason),
            Mail::ReleaseInfo(id) => {
                if let Some(f) = self.infos.remove(&id) {
                    self.run_info(f);
                }
            }
            Mail::Exec(f) => f(self),
        }
    }

    /// Exit: `terminate`, then every subscriber and producer learns the reason.
    fn finish(&mut self, reason: Reason) {
        if !self.killed {
            let r = reason.clone();
            let stage = &mut self.stage;
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| stage.terminate(&r))) {
                self.log.log(
                    Level::Error,
                    format!("terminate panicked: {}", panic_message(payload)),
                );
            }
        }
        self.abandon(reason);
    }

    /// Tells everyone the stage is gone, without running `terminate`.
    fn abandon(&mut self, reason: Reason) {
        for (tag, entry) in self.consumers.drain() {
            entry
                .consumer
                .cancelled(tag, CancelReason::Down(reason.clone()));
        }
        for (tag, entry) in self.producers.drain() {
            entry.from.producer.consumer_down(tag, reason.clone());
        }
        self.queue.clear();
        self.infos.clear();
        self.me.shared.set_exit(reason);
    }

    pub(crate) fn request_stop(&mut self, reason: Reason) {
        if self.stop.is_none() {
            self.stop = Some(reason);
        }
    }

    pub(crate) fn kill(&mut self) {
        self.killed = true;
        self.stop = Some(Reason::Killed);
    }

    // ----- calls, casts, infos -----------------------------------------------------

    pub(crate) fn handle_call<R>(&mut self, request: R, reply: &ReplyTo<S::Reply>)
    where
        S: HandleCall<R>,
    {
        let answer = self.invoke(|s, ctx| s.handle_call(request, reply, ctx));
        // Events emitted by the call are dispatched before the reply is sent.
        self.dispatch_out();
        if let Some(Some(answer)) = answer {
            reply.reply(answer);
        }
    }

    pub(crate) fn handle_cast<M>(&mut self, message: M)
    where
        S: HandleCast<M>,
    {
        self.invoke(|s, ctx| s.handle_cast(message, ctx));
        self.dispatch_out();
    }

    pub(crate) fn run_info(&mut self, f: InfoFn<S>) {
        self.invoke(f);
        self.dispatch_out();
    }

    /// `sync_info`/`async_info`: behind the buffered events (or the queued input of a
    /// producer-consumer); at once on a consumer or when nothing is buffered.
    pub(crate) fn queue_info(&mut self, f: InfoFn<S>) {
        match self.kind {
            Kind::Consumer => self.run_info(f),
            Kind::ProducerConsumer if !self.queue.is_empty() => {
                self.queue.push_back(Queued::Info(f));
            }
            _ => {
                let id = next_id();
                self.infos.insert(id, f);
                if let Some(acc) = &mut self.accumulate {
                    // Events emitted while accumulating count as buffered: the info
                    // waits behind them (GenStage lets it overtake them).
                    if acc.iter().any(|e| matches!(e, Accumulated::Dispatch(_))) {
                        acc.push_back(Accumulated::Info(id));
                        return;
                    }
                }
                self.info_behind_buffer(id);
            }
        }
    }

    /// Releases info `id` behind the events buffered now (at once if there are none).
    fn info_behind_buffer(&mut self, id: u64) {
        if !self.buffer.attach_info(id) {
            self.dispatcher.info(PendingInfo {
                id,
                owner: self.owner.clone(),
            });
        }
    }

    pub(crate) fn demand_mode(&self) -> DemandMode {
        if self.accumulate.is_some() {
            DemandMode::Accumulate
        } else {
            DemandMode::Forward
        }
    }

    pub(crate) fn set_demand_mode(&mut self, mode: DemandMode) {
        match (self.kind, mode) {
            (Kind::Producer, DemandMode::Accumulate) => {
                if self.accumulate.is_none() {
                    self.accumulate = Some(VecDeque::new());
                }
            }
            (Kind::Producer, DemandMode::Forward) => {
                if let Some(entries) = self.accumulate.take() {
                    self.replay(entries);
                    self.offer_buffer();
                }
            }
            (Kind::ProducerConsumer, DemandMode::Forward) => {}
            _ => self
                .log
                .log(Level::Error, "demand mode can only be set for producers"),
        }
    }

    /// Leaves accumulate mode: serves each stored demand in turn, never combined
    /// (GenStage's replay), from the buffer first, then from the events emitted while
    /// accumulating, then with `handle_demand`; what is left of the stored events and
    /// infos is then dispatched in order (leftovers are buffered).
    ///
    /// GenStage replays demands and events in arrival order, so that `handle_demand`
    /// called for an early demand emits events ahead of older stored ones; serving the
    /// demands from the older events first keeps every producer's events in order.
    fn replay(&mut self, entries: VecDeque<Accumulated<S::Out>>) {
        let mut demands = Vec::new();
        let mut stored = VecDeque::new();
        for entry in entries {
            match entry {
                Accumulated::Demand(k) => demands.push(k),
                other => stored.push_back(other),
            }
        }
        for k in demands {
            let mut k = self.buffer_first(k);
            while k > 0 && !self.stopped() {
                match stored.pop_front() {
                    None => break,
                    Some(Accumulated::Dispatch(mut events)) => {
                        if events.len() > k {
                            let rest = events.split_off(k);
                            stored.push_front(Accumulated::Dispatch(rest));
                        }
                        k -= events.len();
                        self.dispatch_events(events);
                    }
                    Some(Accumulated::Info(id)) => self.info_behind_buffer(id),
                    Some(Accumulated::Demand(_)) => unreachable!("demands were set apart"),
                }
            }
            if k > 0 && !self.stopped() {
                self.demand_callback(k);
            }
            if self.stopped() {
                return;
            }
        }
        for entry in stored {
            match entry {
                Accumulated::Dispatch(events) => self.dispatch_events(events),
                Accumulated::Info(id) => self.info_behind_buffer(id),
                Accumulated::Demand(_) => unreachable!("demands were set apart"),
            }
            if self.stopped() {
                return;
            }
        }
    }

    pub(crate) fn buffered_count(&self) -> usize {
        self.buffer.len()
    }

    // ----- producer side -----------------------------------------------------------

    fn producer_subscribe(&mut self, mut msg: SubscribeMsg<S::Out>) {
        msg.guard.defuse();
        let tag = msg.tag;
        if self.kind == Kind::Consumer {
            self.log.log(
                Level::Error,
                format!("consumer cannot be subscribed to (subscription {tag})"),
            );
            msg.consumer
                .cancelled(tag, CancelReason::Cancel(Reason::custom("not a producer")));
            return;
        }
        if self.consumers.contains_key(&tag) {
            self.log.log(
                Level::Error,
                format!("received duplicated subscription {tag}"),
            );
            msg.consumer
                .cancelled(tag, CancelReason::Cancel(Reason::DuplicatedSubscription));
            return;
        }
        if let Some((old, reason)) = msg.current.take() {
            self.producer_cancel(old, CancelReason::Cancel(reason));
            if self.stopped() {
                return;
            }
        }
        let from = SubscriptionRef {
            tag,
            producer: Arc::new(self.me.mailbox.clone()),
        };
        let info = match msg.opts.info(tag) {
            Ok(info) => info,
            Err(e) => {
                msg.consumer
                    .cancelled(tag, CancelReason::Cancel(Reason::custom(e.message())));
                return;
            }
        };
        self.consumers.insert(
            tag,
            ConsumerEntry {
                consumer: msg.consumer.clone(),
                from: from.clone(),
            },
        );
        match self.invoke(|s, ctx| s.handle_subscribe(Peer::Consumer, &info, &from, ctx)) {
            None => return,
            Some(Ok(Demand::Automatic)) => {}
            Some(Ok(Demand::Manual)) => {
                self.stop = Some(Reason::BadReturn(Arc::from(
                    "handle_subscribe returned Demand::Manual for a consumer; producers only accept Automatic",
                )));
                return;
            }
            Some(Err(reason)) => {
                self.stop = Some(reason);
                return;
            }
        }
        self.dispatch_out();
        if self.stopped() {
            return;
        }
        let subscriber = Subscriber {
            tag,
            consumer_id: msg.consumer_id,
            consumer: msg.consumer.clone(),
            owner: self.owner.clone(),
        };
        match self.dispatcher.subscribe(subscriber, &msg.opts) {
            Ok(k) => self.serve_demand(k),
            Err(reason) => {
                // Rejected by the dispatcher: the consumer learns why; the producer
                // goes on (GenStage would also call the dispatcher's cancel here).
                self.consumers.remove(&tag);
                msg.consumer
                    .cancelled(tag, CancelReason::Cancel(reason.clone()));
                self.invoke(|s, ctx| s.handle_cancel(CancelReason::Cancel(reason), &from, ctx));
                self.dispatch_out();
            }
        }
    }

    fn producer_ask(&mut self, tag: Tag, n: usize) {
        if !self.consumers.contains_key(&tag) {
            // GenStage answers `{:cancel, :unknown_subscription}`, silently; we have no
            // address for an unknown tag, so it is logged instead, at info level: the
            // usual cause is benign, a consumer that cancelled and still re-asked for
            // events that were on their way before our confirmation reached it.
            self.log.log(
                Level::Info,
                format!("received ask for unknown subscription {tag}"),
            );
            return;
        }
        let k = self.dispatcher.ask(tag, n);
        self.serve_demand(k);
    }

    fn producer_cancel(&mut self, tag: Tag, reason: CancelReason) {
        let Some(entry) = self.consumers.remove(&tag) else {
            return;
        };
        if let CancelReason::Cancel(r) = &reason {
            entry
                .consumer
                .cancelled(tag, CancelReason::Cancel(r.clone()));
        }
        self.invoke(|s, ctx| s.handle_cancel(reason, &entry.from, ctx));
        self.dispatch_out();
        if self.stopped() {
            return;
        }
        if self.consumers.is_empty() {
            if let Some(r) = self.deferred_stop.take() {
                // Nobody is left to take the buffered output the stop waited for.
                self.stop = Some(r);
                return;
            }
        }
        let k = self.dispatcher.cancel(tag);
        self.serve_demand(k);
    }

    /// Demand reported by the dispatcher.
    fn serve_demand(&mut self, k: usize) {
        if self.stopped() {
            return;
        }
        match self.kind {
            Kind::Producer => {
                if k > 0 {
                    self.producer_demand(k);
                }
                self.offer_buffer();
            }
            Kind::ProducerConsumer => {
                // As GenStage does after every dispatcher callback, even one reporting
                // no new demand: serve the whole outstanding demand from the buffer
                // first. A consumer whose ask is covered by a departed consumer's
                // pending demand is then served the buffered events, in order.
                self.counter = self.counter.saturating_add(k);
                let outstanding = self.counter;
                self.take_from_buffer(outstanding);
                self.process_queue();
            }
            Kind::Consumer => {}
        }
    }

    /// Offers buffered events that the dispatcher would deliver beyond the demand it
    /// reported ([`Dispatcher::buffered_demand`]). Costs one check of the buffer when
    /// it is empty, the usual case.
    fn offer_buffer(&mut self) {
        if self.buffer.is_empty() || self.accumulate.is_some() || self.stopped() {
            return;
        }
        let owed = self.dispatcher.buffered_demand();
        if owed > 0 {
            self.take_from_buffer(owed);
        }
    }

    /// A producer's demand: buffer first, then `handle_demand` (or store it while
    /// accumulating: all of it, the buffer is served at replay so that its events keep
    /// their place ahead of those emitted meanwhile).
    fn producer_demand(&mut self, k: usize) {
        if let Some(acc) = &mut self.accumulate {
            acc.push_back(Accumulated::Demand(k));
            return;
        }
        let k = self.buffer_first(k);
        if k == 0 || self.stopped() {
            return;
        }
        self.demand_callback(k);
    }

    /// Serves what the buffer can of new demand `k` and returns the demand left for
    /// `handle_demand`. GenStage's rule is buffer first: buffered events meet new
    /// demand. A dispatcher that reports [`Dispatcher::buffered_demand`] counts the
    /// buffered events in the demand it already forwarded (they were produced for it),
    /// so its new demand `k` is beyond them: the buffer is offered to the demand it
    /// has, and all of `k` goes to `handle_demand`. Serving `k` from that buffer would
    /// count those events twice and leave the producer owing nothing while the
    /// dispatcher waits for them.
    fn buffer_first(&mut self, k: usize) -> usize {
        if self.dispatcher.buffered_demand() > 0 {
            self.offer_buffer();
            k
        } else {
            self.take_from_buffer(k)
        }
    }

    /// Calls `handle_demand(k)` and dispatches what it emitted.
    fn demand_callback(&mut self, k: usize) {
        let handle_demand = self.cb.handle_demand;
        self.invoke(|s, ctx| handle_demand(s, k, ctx));
        self.dispatch_out();
    }

    /// Serves up to `k` demand from the buffer; returns what is left.
    fn take_from_buffer(&mut self, mut k: usize) -> usize {
        while k > 0 && !self.buffer.is_empty() && !self.stopped() {
            let taken = self.buffer.take(k);
            if taken.events.is_empty() && taken.infos.is_empty() {
                break;
            }
            let n = taken.events.len();
            // Events that the dispatcher cannot take now go back to the front of the
            // buffer, with the infos behind them: appending them (as GenStage does)
            // would put them behind newer events. It happens when the demand being
            // served was already met by events emitted beyond demand (an accumulated
            // demand replayed late, a departed consumer's pending demand).
            let left = self.dispatch_buffered(taken.events);
            k -= n - left.len();
            if !left.is_empty() {
                self.buffer.unshift(left, taken.infos);
                break;
            }
            for id in taken.infos {
                self.dispatcher.info(PendingInfo {
                    id,
                    owner: self.owner.clone(),
                });
            }
        }
        self.me.shared.metrics.buffered.store(
            self.buffer.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        k
    }

    /// Dispatches events taken from the buffer; returns what the dispatcher left.
    /// Hands `events` to the dispatcher now and returns what it could not deliver.
    /// Shared by fresh events and events taken from the buffer, so both get the same
    /// accounting and the dispatcher's errors and released demand are always seen.
    fn dispatch_buffered(&mut self, events: Vec<S::Out>) -> Vec<S::Out> {
        if events.is_empty() {
            return events;
        }
        let n = events.len();
        let left = self.dispatcher.dispatch(events);
        if let Some(reason) = self.dispatcher.take_error() {
            self.request_stop(reason);
        }
        let released = self.dispatcher.take_demand();
        if released > 0 {
            let _ = self.me.exec(move |rt| rt.serve_demand(released));
        }
        let delivered = n - left.len();
        Counters::add(&self.me.shared.metrics.events_out, delivered);
        if self.kind == Kind::ProducerConsumer {
            self.counter = self.counter.saturating_sub(delivered);
        }
        left
    }

    fn dispatch_events(&mut self, events: Vec<S::Out>) {
        if events.is_empty() {
            return;
        }
        if let Some(acc) = &mut self.accumulate {
            acc.push_back(Accumulated::Dispatch(events));
            return;
        }
        let left = self.dispatch_buffered(events);
        if !left.is_empty() {
            self.buffer_events(left);
        }
    }

    fn buffer_events(&mut self, events: Vec<S::Out>) {
        let stored = self.buffer.store(events);
        let metrics = &self.me.shared.metrics;
        metrics.buffered.store(
            self.buffer.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if stored.discarded > 0 {
            Counters::add(&metrics.discarded, stored.discarded);
            let d = stored.discarded;
            let stage = &mut self.stage;
            let print =
                catch_unwind(AssertUnwindSafe(|| stage.format_discarded(d))).unwrap_or(true);
            if print {
                self.log.log(
                    Level::Warning,
                    format!(
                        "producer {} has discarded {d} events from buffer",
                        self.me.shared.name
                    ),
                );
            }
        }
        for id in stored.released {
            self.owner.release_info(id);
        }
    }

    // ----- consumer side -----------------------------------------------------------

    /// Subscribes to `producer` (GenStage's `consumer_subscribe`): register, send the
    /// subscribe message, `handle_subscribe(Producer)`, then the initial ask.
    pub(crate) fn consumer_subscribe(
        &mut self,
        producer: SourceRef<S::In>,
        opts: SubscribeOptions<S::In>,
        current: Option<(Tag, Reason)>,
        on_dead: OnDeadProducer,
    ) -> Result<Tag, SubscribeError> {
        self.subscribe_inner(producer, opts, current, on_dead)
    }

    fn subscribe_inner(
        &mut self,
        producer: SourceRef<S::In>,
        opts: SubscribeOptions<S::In>,
        current: Option<(Tag, Reason)>,
        on_dead: OnDeadProducer,
    ) -> Result<Tag, SubscribeError> {
        if self.kind == Kind::Producer {
            return Err(SubscribeError::NotAConsumer);
        }
        let tag = Tag::new();
        let info = opts.info(tag)?;
        let from = SubscriptionRef {
            tag,
            producer: producer.upstream.clone().control(),
        };
        let me: Arc<Mailbox<S>> = Arc::new(self.me.mailbox.clone());
        let msg = Box::new(SubscribeMsg {
            tag,
            consumer_id: self.me.shared.id,
            consumer: me.clone(),
            opts,
            current,
            guard: DownGuard::new(tag, me, producer.shared.clone()),
        });
        self.producers.insert(
            tag,
            ProducerEntry {
                from: from.clone(),
                cancel: info.cancel,
                demand: None,
                cancelled: false,
            },
        );
        if let Err(mut msg) = producer.upstream.subscribe(msg) {
            if let OnDeadProducer::Error(operation) = on_dead {
                msg.guard.defuse();
                self.producers.remove(&tag);
                return Err(SubscribeError::NoProc(producer.shared.not_alive(operation)));
            }
            // Dropping the message tells us, through our own mailbox, that the
            // producer is gone: the subscription then ends by its cancel mode, as
            // a monitor of a dead process does in GenStage.
            msg.guard.never_delivered();
            drop(msg);
        }
        match self.invoke(|s, ctx| s.handle_subscribe(Peer::Producer, &info, &from, ctx)) {
            None => {
                return Err(SubscribeError::Stopped(
                    self.stop.clone().unwrap_or(Reason::Normal),
                ))
            }
            Some(Err(reason)) => {
                self.stop = Some(reason.clone());
                return Err(SubscribeError::Stopped(reason));
            }
            Some(Ok(Demand::Automatic)) => {
                if let Some(entry) = self.producers.get_mut(&tag) {
                    entry.demand = Some(DemandState::new(info.max_demand, info.min_demand));
                }
                from.producer.ask(tag, info.max_demand);
            }
            Some(Ok(Demand::Manual)) => {}
        }
        self.dispatch_out();
        Ok(tag)
    }

    fn consumer_events(&mut self, tag: Tag, events: Vec<S::In>) {
        if events.is_empty() {
            return;
        }
        Counters::add(&self.me.shared.metrics.events_in, events.len());
        match self.kind {
            Kind::Consumer => self.consume(tag, events),
            Kind::ProducerConsumer => {
                self.queue.push_back(Queued::Events(tag, events));
                self.process_queue();
            }
            Kind::Producer => {}
        }
    }

    /// Splits one message into batches by the demand rule and calls `handle_events`
    /// for each, asking upstream after each batch as the rule says.
    fn consume(&mut self, tag: Tag, mut events: Vec<S::In>) {
        let Some(entry) = self.producers.get(&tag) else {
            self.log.log(
                Level::Error,
                format!(
                    "received {} events for unknown subscription {tag}",
                    events.len()
                ),
            );
            return;
        };
        let from = entry.from.clone();
        let cancelled = entry.cancelled;
        let handle_events = self.cb.handle_events;
        let Some(mut state) = entry.demand.clone() else {
            // Manual demand: one batch per message, no accounting.
            self.invoke(|s, ctx| handle_events(s, events, &from, ctx));
            self.dispatch_out();
            return;
        };
        loop {
            let (plan, excess) = state.next_batch(events.len());
            if excess > 0 {
                self.log.log(
                    Level::Error,
                    format!(
                        "consumer has received {excess} events in excess from subscription {tag}"
                    ),
                );
            }
            let batch = if plan.len == events.len() {
                std::mem::take(&mut events)
            } else {
                let rest = events.split_off(plan.len);
                std::mem::replace(&mut events, rest)
            };
            self.invoke(|s, ctx| handle_events(s, batch, &from, ctx));
            self.dispatch_out();
            if plan.ask > 0 && !cancelled && !self.stopped() {
                from.producer.ask(tag, plan.ask);
            }
            if self.stopped() || events.is_empty() {
                break;
            }
        }
        if let Some(entry) = self.producers.get_mut(&tag) {
            entry.demand = Some(state);
        }
    }

    /// A producer-consumer handles queued input while its consumers have demand; a
    /// whole message is handled even if demand runs out in the middle.
    ///
    ///
    /// Demand already covered by buffered events does not count for events: GenStage
    /// handles input while its counter is positive, but events its dispatcher could not
    /// deliver (a consumer left with demand unmet) never lower that counter, so with no
    /// consumer left it pulls and buffers its input forever. We handle queued events
    /// only while the buffer does not cover the counter, which bounds the buffer by the
    /// departed consumers' unmet demand. Queued infos and cancels keep GenStage's rule.
    fn process_queue(&mut self) {
        while self.counter > 0 && !self.stopped() {
            if self.counter <= self.buffer.len()
                && matches!(self.queue.front(), Some(Queued::Events(..)))
            {
                break;
            }
            let Some(item) = self.queue.pop_front() else {
                break;
            };
            match item {
                Queued::Events(tag, events) => self.consume(tag, events),
                Queued::Info(f) => self.run_info(f),
                Queued::Cancel(tag, reason) => {
                    if let Some(entry) = self.producers.remove(&tag) {
                        self.invoke_cancel(entry, reason);
                    }
                }
            }
        }
    }

    fn consumer_cancel(&mut self, tag: Tag, reason: CancelReason) {
        let Some(entry) = self.producers.get_mut(&tag) else {
            return;
        };
        if entry.cancelled {
            return;
        }
        if self.kind == Kind::ProducerConsumer && !self.queue.is_empty() {
            // Behind the queued input: the events before it are handled first.
            entry.cancelled = true;
            self.queue.push_back(Queued::Cancel(tag, reason));
            return;
        }
        let entry = self.producers.remove(&tag).expect("entry was just found");
        self.invoke_cancel(entry, reason);
    }

    fn invoke_cancel(&mut self, entry: ProducerEntry, reason: CancelReason) {
        let r = reason.reason().clone();
        self.invoke(|s, ctx| s.handle_cancel(reason, &entry.from, ctx));
        self.dispatch_out();
        if !self.stopped() && entry.cancel.stops_on(&r) {
            self.log.log(
                Level::Info,
                format!(
                    "stopping after receiving cancel from producer (subscription {}) with reason: {r}",
                    entry.from.tag
                ),
            );
            if r.is_normal()
                && self.kind == Kind::ProducerConsumer
                && !self.buffer.is_empty()
                && !self.consumers.is_empty()
            {
                // A normal end travels behind the last events (invariant 3): output
                // still buffered for lack of downstream demand is delivered first. The
                // stop rides on an info marker after the last buffered event; should
                // every consumer leave before that, the stop happens then.
                self.deferred_stop = Some(r.clone());
                self.queue_info(Box::new(move |_, ctx| ctx.stop(r)));
            } else {
                self.stop = Some(r);
            }
        }
    }
}
