//! The thread loop of a stage: mailbox → callbacks → dispatcher.
//!
//! One `Runtime` per stage, owned by the stage's thread; nothing in it is shared, so
//! no lock guards user state. The algorithms follow GenStage's code exactly
//! (`docs/DESIGN.md` describes them): the consumer's batch split and re-ask rule, the
//! producer's buffer-first demand handling, accumulate/forward replay, and the
//! producer-consumer's input queue processed only while downstream demand lasts.
//!
//! The files follow the roles, since every message belongs to one side of a
//! subscription:
//!
//! - this file: the stage's thread (`start`), the loop over the mailbox (`run`,
//!   `handle`), running user callbacks (`invoke`), exit, and calls, casts and infos;
//! - `producer.rs`: the side that has consumers: their subscriptions, asks and
//!   cancels, the dispatcher, the buffer and accumulate/forward demand;
//! - `consumer.rs`: the side that has producers: subscribing, the demand rule that
//!   splits incoming events into batches, and cancels from producers;
//! - `producer_consumer.rs`: the input queue a producer-consumer only works through
//!   while its consumers have demand.
//!
//! A producer-consumer runs the code of both sides; `Kind` picks the path where they
//! differ.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::bounded;

use crate::error::{Operation, StartError, SubscribeError};

use super::buffer::Buffer;
use super::context::Context;
use super::dispatcher::{DemandDispatcher, Dispatcher};
use super::handle::{ReplyTo, Shared, SourceRef, StageRef};
use super::log::{Level, LogSink};
use super::mailbox::{DispatcherOwner, Mail, MailQueue, Mailbox};
use super::metrics::BusyClock;
use super::options::Spec;
use super::reason::{next_id, CancelReason, Reason, Tag};
use super::subscription::{CancelMode, SubscribeOptions, SubscriptionRef};
use super::{
    Consumer, DemandMode, HandleCall, HandleCast, Init, Kind, Producer, ProducerConsumer, Stage,
};

mod consumer;
mod producer;
mod producer_consumer;
mod timers;

use consumer::ProducerEntry;
use producer::{Accumulated, ConsumerEntry};
use producer_consumer::Queued;
pub(crate) use timers::Timers;

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
    /// Times callbacks for the busy counter.
    busy: BusyClock,
    // Producer side.
    consumers: HashMap<Tag, ConsumerEntry<S::Out>>,
    dispatcher: Box<dyn Dispatcher<S::Out>>,
    buffer: Buffer<S::Out>,
    accumulate: Option<VecDeque<Accumulated<S::Out>>>,
    infos: HashMap<u64, InfoFn<S>>,
    /// `Context::send_after` messages; the loop waits no longer than the earliest.
    timers: Timers<S>,
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

fn internal_panic(payload: Box<dyn std::any::Any + Send>) -> Reason {
    Reason::Panic(Arc::from(
        format!(
            "stageflow engine: {}",
            crate::panic::message(payload.as_ref())
        )
        .as_str(),
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
        shared: Arc::new(Shared::new(
            id,
            name.clone(),
            kind,
            match kind {
                Kind::Consumer => None,
                _ => Some(spec.dispatcher_name.unwrap_or("DemandDispatcher")),
            },
        )),
    };
    let (ready_tx, ready_rx) = bounded::<Result<(), StartError>>(1);
    let thread_me = me.clone();
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            *thread_me.shared.thread_id.lock() = Some(std::thread::current().id());
            let _span = super::trace::stage(&thread_me.shared.name, kind, id);
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
        .map_err(StartError::Spawn)?;
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
            busy: BusyClock::default(),
            consumers: HashMap::new(),
            dispatcher,
            buffer: Buffer::new(buffer_size, buffer_keep),
            accumulate: match demand {
                DemandMode::Accumulate if me.shared.kind == Kind::Producer => Some(VecDeque::new()),
                _ => None,
            },
            infos: HashMap::new(),
            timers: Timers::new(),
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
            timers: &mut self.timers,
        };
        let stage = &mut self.stage;
        // The clock is read around a callback (some short ones are only sampled).
        let started = self.busy.start();
        let result = catch_unwind(AssertUnwindSafe(|| f(stage, &mut ctx)));
        self.busy.stop(started, &self.me.shared.metrics);
        match result {
            Ok(r) => Some(r),
            Err(payload) => {
                // Events emitted by a callback that crashed are not dispatched, as in
                // GenStage, where a crashed callback returns nothing.
                self.out.clear();
                self.stop = Some(Reason::Panic(Arc::from(crate::panic::message(
                    payload.as_ref(),
                ))));
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
        self.count_subscriptions();
        Ok(())
    }

    /// Handles mail until the stage stops; what it took but did not handle is left in
    /// `batch`.
    fn run(&mut self, queue: &MailQueue<Mail<S>>, batch: &mut VecDeque<Mail<S>>) -> Reason {
        loop {
            match self.timers.next_deadline() {
                None => queue.recv_all(batch, self.spin_next),
                Some(deadline) => queue.recv_all_until(batch, deadline),
            }
            while let Some(mail) = batch.pop_front() {
                self.handle(mail);
                if let Some(reason) = self.stop.take() {
                    return reason;
                }
            }
            // Timers due now run after the mail that arrived before them.
            let now = std::time::Instant::now();
            while let Some(f) = self.timers.pop_due(now) {
                self.run_info(f);
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
        // Mail that can change the subscriptions; events and asks never do.
        let wiring = !matches!(mail, Mail::Events { .. } | Mail::Ask { .. });
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
            Mail::Deliver(m) => m.deliver(self),
        }
        if wiring {
            self.count_subscriptions();
        }
    }

    /// Publishes the number of subscriptions on each side (after a change).
    fn count_subscriptions(&self) {
        self.me
            .shared
            .metrics
            .subscriptions(self.consumers.len(), self.producers.len());
    }

    /// Exit: `terminate`, then every subscriber and producer learns the reason.
    fn finish(&mut self, reason: Reason) {
        if !self.killed {
            let r = reason.clone();
            let stage = &mut self.stage;
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| stage.terminate(&r))) {
                self.log.log(
                    Level::Error,
                    format!(
                        "terminate panicked: {}",
                        crate::panic::message(payload.as_ref())
                    ),
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
        self.timers.clear();
        self.count_subscriptions();
        self.me.shared.subscriptions.all_ended();
        super::trace::exited(&reason, reason.is_normal());
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
}
