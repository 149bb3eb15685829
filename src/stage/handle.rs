//! Typed handles to running stages: subscribe, call, cast, info, stop, join.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};

use crate::error::{CallError, Operation, OptionsError, SendError, SubscribeError};

use super::mailbox::{Deliver, Mail, Mailbox, Upstream};
use super::metrics::{Counter, Gauge, StageMetrics};
use super::reason::{Reason, Tag};
use super::runtime::{OnDeadProducer, Runtime};
pub(crate) use super::shared::Shared;
use super::subscription::SubscribeOptions;
use super::{DemandMode, HandleCall, HandleCast, HandleInfo, Kind, Stage};

/// GenStage's default timeout of synchronous requests.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to a running stage of type `S`. Cheap to clone; every clone addresses the
/// same stage. Requests to a stage that has exited fail at once with
/// [`CallError::NoProc`], which names the stage and the request.
pub struct StageRef<S: Stage> {
    pub(crate) mailbox: Mailbox<S>,
    pub(crate) shared: Arc<Shared>,
}

impl<S: Stage> Clone for StageRef<S> {
    fn clone(&self) -> Self {
        StageRef {
            mailbox: self.mailbox.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: Stage> fmt::Debug for StageRef<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageRef({} #{})", self.shared.name, self.shared.id)
    }
}

/// The other end of a call: send the reply with [`ReplyTo::reply`]. Clone it to
/// answer later, from another callback.
pub struct ReplyTo<R> {
    pub(crate) tx: Sender<R>,
}

impl<R> Clone for ReplyTo<R> {
    fn clone(&self) -> Self {
        ReplyTo {
            tx: self.tx.clone(),
        }
    }
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplyTo")
    }
}

impl<R> ReplyTo<R> {
    /// Sends the reply. Returns false if the caller no longer waits (it timed out, or
    /// a reply was already sent).
    pub fn reply(&self, reply: R) -> bool {
        self.tx.try_send(reply).is_ok()
    }
}

/// Something consumers can subscribe to for events of type `T`: a producer or a
/// producer-consumer handle.
pub trait Source<T> {
    /// The type-erased address consumers subscribe with.
    fn source(&self) -> SourceRef<T>;
}

/// The address of a producer of `T`, whatever its stage type.
pub struct SourceRef<T> {
    pub(crate) upstream: Arc<dyn Upstream<T>>,
    pub(crate) kind: Kind,
    pub(crate) id: u64,
    pub(crate) forward: Arc<dyn Fn() + Send + Sync>,
    /// The producing stage's name and exit, for errors that name it.
    pub(crate) shared: Arc<Shared>,
}

impl<T> std::fmt::Debug for SourceRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRef")
            .field("name", &self.shared.name)
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for SourceRef<T> {
    fn clone(&self) -> Self {
        SourceRef {
            upstream: self.upstream.clone(),
            kind: self.kind,
            id: self.id,
            forward: self.forward.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Source<T> for SourceRef<T> {
    fn source(&self) -> SourceRef<T> {
        self.clone()
    }
}

impl<T> SourceRef<T> {
    /// The producing stage's unique id.
    pub fn stage_id(&self) -> u64 {
        self.id
    }
    /// Switches the producer to [`DemandMode::Forward`] (a no-op on other kinds).
    pub fn forward(&self) {
        (self.forward)()
    }

    /// The producing stage's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The producing stage's exit reason, once it has exited.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.shared.exit_reason()
    }
}

impl<S: Stage> Source<S::Out> for StageRef<S> {
    fn source(&self) -> SourceRef<S::Out> {
        let me = self.clone();
        SourceRef {
            upstream: Arc::new(self.mailbox.clone()),
            kind: self.shared.kind,
            id: self.shared.id,
            forward: Arc::new(move || {
                let _ = me.set_demand_mode(DemandMode::Forward);
            }),
            shared: self.shared.clone(),
        }
    }
}

impl<S: Stage> StageRef<S> {
    /// The stage's unique id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The stage's name (its thread's name).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Producer, producer-consumer or consumer.
    pub fn kind(&self) -> Kind {
        self.shared.kind
    }

    /// Whether the stage is still running.
    pub fn is_alive(&self) -> bool {
        self.shared.exit_reason().is_none()
    }

    /// The exit reason, once the stage has exited.
    pub fn exit_reason(&self) -> Option<Reason> {
        self.shared.exit_reason()
    }

    /// The stage's counters now ([`StageMetrics`]).
    pub fn metrics(&self) -> StageMetrics {
        self.shared.metrics.snapshot()
    }

    /// The counter `name` this stage publishes ([`Counter`]), registered now if it
    /// is new. Fails with an error naming `name` if it is not a valid metric name or
    /// is already a gauge of this stage.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, OptionsError> {
        self.shared.metrics.counter(name, help)
    }

    /// The gauge `name` this stage publishes ([`Gauge`]), registered now if it is
    /// new. Fails like [`counter`](Self::counter).
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, OptionsError> {
        self.shared.metrics.gauge(name, help)
    }

    /// Sends `()` on `watcher` when the stage exits (at once if it has).
    pub(crate) fn watch_exit(&self, watcher: Sender<()>) {
        self.shared.watch_exit(watcher);
    }

    fn no_proc(&self, operation: Operation) -> CallError {
        CallError::NoProc(self.shared.not_alive(operation))
    }

    pub(crate) fn exec(&self, f: impl FnOnce(&mut Runtime<S>) + Send + 'static) -> bool {
        self.mailbox.send(Mail::Exec(Box::new(f)))
    }

    /// Runs `f` on the stage's thread and waits for its answer.
    pub(crate) fn request<R: Send + 'static>(
        &self,
        operation: Operation,
        timeout: Duration,
        f: impl FnOnce(&mut Runtime<S>, &ReplyTo<R>) + Send + 'static,
    ) -> Result<R, CallError> {
        if *self.shared.thread_id.lock() == Some(std::thread::current().id()) {
            return Err(CallError::CallToSelf);
        }
        let (tx, rx) = bounded(1);
        let reply = ReplyTo { tx };
        if !self.exec(move |rt| f(rt, &reply)) {
            return Err(self.no_proc(operation));
        }
        let deadline = Instant::now() + timeout;
        match rx.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(CallError::Timeout(timeout)),
            // The request was dropped unanswered: the stage exited.
            Err(RecvTimeoutError::Disconnected) => {
                Err(match self.shared.wait_exit(Some(deadline)) {
                    Some(reason) => CallError::Exited(reason),
                    None => CallError::Timeout(timeout),
                })
            }
        }
    }

    /// Sends `request` to `handle_call` and waits up to 5 seconds for the reply.
    pub fn call<R: Send + 'static>(&self, request: R) -> Result<S::Reply, CallError>
    where
        S: HandleCall<R>,
    {
        self.call_timeout(request, DEFAULT_TIMEOUT)
    }

    /// [`call`](Self::call) with a timeout of your choice.
    pub fn call_timeout<R: Send + 'static>(
        &self,
        request: R,
        timeout: Duration,
    ) -> Result<S::Reply, CallError>
    where
        S: HandleCall<R>,
    {
        self.request(Operation::Call, timeout, move |rt, reply| {
            rt.handle_call(request, reply)
        })
    }

    /// Sends `message` wrapped so that it comes back if the stage is gone.
    fn deliver<M: Send + 'static>(
        &self,
        operation: Operation,
        message: M,
        run: fn(&mut Runtime<S>, M),
    ) -> Result<(), SendError<M>> {
        match self
            .mailbox
            .queue
            .send(Mail::Deliver(Box::new(Envelope { message, run })))
        {
            Ok(()) => Ok(()),
            Err(Mail::Deliver(back)) => {
                let envelope = back
                    .into_any()
                    .downcast::<Envelope<S, M>>()
                    .expect("the mailbox hands back the envelope it was given");
                Err(SendError::new(
                    envelope.message,
                    self.shared.not_alive(operation),
                ))
            }
            Err(_) => unreachable!("the mailbox hands back the mail it was given"),
        }
    }

    /// Sends `message` to `handle_cast` without waiting. Fails only when the stage is
    /// not alive; the error then hands the message back.
    ///
    /// ```
    /// use stageflow::prelude::*;
    /// # struct Nothing;
    /// # impl Stage for Nothing { type In = Never; type Out = u8; }
    /// # impl Producer for Nothing {
    /// #     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
    /// # }
    /// # impl HandleCast<String> for Nothing {
    /// #     fn handle_cast(&mut self, _: String, _: &mut Context<'_, Self>) {}
    /// # }
    /// let p = start_producer(Nothing, ProducerOptions::new())?;
    /// p.cast("hello".to_string())?;
    /// p.stop(Reason::Shutdown)?;
    /// let err = p.cast("late".to_string()).unwrap_err();
    /// assert_eq!(err.into_inner(), "late");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cast<M: Send + 'static>(&self, message: M) -> Result<(), SendError<M>>
    where
        S: HandleCast<M>,
    {
        self.deliver(Operation::Cast, message, |rt, message| {
            rt.handle_cast(message)
        })
    }

    /// Sends `message` to `handle_info` at once (like sending a plain message). Fails
    /// only when the stage is not alive; the error then hands the message back.
    pub fn send_info<M: Send + 'static>(&self, message: M) -> Result<(), SendError<M>>
    where
        S: HandleInfo<M>,
    {
        self.deliver(Operation::Info, message, |rt, message| {
            rt.run_info(Box::new(move |s, ctx| s.handle_info(message, ctx)))
        })
    }

    /// Queues `message` for `handle_info` behind every event the stage has buffered
    /// now, and waits until it is queued (GenStage's `sync_info`). On a consumer it is
    /// delivered at once.
    pub fn sync_info<M: Send + 'static>(&self, message: M) -> Result<(), CallError>
    where
        S: HandleInfo<M>,
    {
        self.request(Operation::Call, DEFAULT_TIMEOUT, move |rt, reply| {
            rt.queue_info(Box::new(move |s, ctx| s.handle_info(message, ctx)));
            reply.reply(());
        })
    }

    /// [`sync_info`](Self::sync_info) without waiting (GenStage's `async_info`).
    /// A stage may use it on itself to stop after its last events were dispatched.
    /// Fails only when the stage is not alive; the error then hands the message back.
    pub fn async_info<M: Send + 'static>(&self, message: M) -> Result<(), SendError<M>>
    where
        S: HandleInfo<M>,
    {
        self.deliver(Operation::Info, message, |rt, message| {
            rt.queue_info(Box::new(move |s, ctx| s.handle_info(message, ctx)))
        })
    }

    fn check_subscribe<T>(&self, producer: &SourceRef<T>) -> Result<(), SubscribeError> {
        if self.shared.kind == Kind::Producer {
            return Err(SubscribeError::NotAConsumer);
        }
        if producer.kind == Kind::Consumer {
            return Err(SubscribeError::NotAProducer);
        }
        Ok(())
    }

    /// Subscribes this consumer (or producer-consumer) to `producer` and waits until
    /// the subscription is sent (GenStage's `sync_subscribe`: it does not wait for the
    /// producer). Returns the subscription's tag.
    ///
    /// A producer that has already exited is known then: the call returns
    /// [`SubscribeError::NoProc`] naming it and its exit reason, nothing is
    /// subscribed, and this stage goes on. (GenStage returns `{:ok, ref}` and then
    /// ends the subscription with `:noproc`, which stops a permanent consumer; a
    /// producer that exits after the subscription was sent still ends it that way.)
    pub fn subscribe(
        &self,
        producer: &impl Source<S::In>,
        opts: SubscribeOptions<S::In>,
    ) -> Result<Tag, SubscribeError> {
        self.resubscribe_inner(producer.source(), opts, None)
    }

    /// Like [`subscribe`](Self::subscribe), but the producer first cancels the
    /// subscription `old` with `reason` (GenStage's `sync_resubscribe`). The old
    /// subscription's cancel then reaches this consumer, which reacts by that
    /// subscription's cancel mode: use [`CancelMode::Temporary`](super::CancelMode)
    /// for subscriptions you plan to replace.
    pub fn resubscribe(
        &self,
        old: Tag,
        reason: Reason,
        producer: &impl Source<S::In>,
        opts: SubscribeOptions<S::In>,
    ) -> Result<Tag, SubscribeError> {
        self.resubscribe_inner(producer.source(), opts, Some((old, reason)))
    }

    fn resubscribe_inner(
        &self,
        producer: SourceRef<S::In>,
        opts: SubscribeOptions<S::In>,
        current: Option<(Tag, Reason)>,
    ) -> Result<Tag, SubscribeError> {
        self.check_subscribe(&producer)?;
        opts.validate()?;
        self.request(Operation::Subscribe, DEFAULT_TIMEOUT, move |rt, reply| {
            reply.reply(rt.consumer_subscribe(
                producer,
                opts,
                current,
                OnDeadProducer::Error(Operation::Subscribe),
            ));
        })?
    }

    /// Subscribes without waiting (GenStage's `async_subscribe`). Option errors are
    /// still returned, since they are known before anything is sent.
    pub fn async_subscribe(
        &self,
        producer: &impl Source<S::In>,
        opts: SubscribeOptions<S::In>,
    ) -> Result<(), SubscribeError> {
        self.async_resubscribe_inner(producer.source(), opts, None)
    }

    /// Resubscribes without waiting (GenStage's `async_resubscribe`).
    pub fn async_resubscribe(
        &self,
        old: Tag,
        reason: Reason,
        producer: &impl Source<S::In>,
        opts: SubscribeOptions<S::In>,
    ) -> Result<(), SubscribeError> {
        self.async_resubscribe_inner(producer.source(), opts, Some((old, reason)))
    }

    fn async_resubscribe_inner(
        &self,
        producer: SourceRef<S::In>,
        opts: SubscribeOptions<S::In>,
        current: Option<(Tag, Reason)>,
    ) -> Result<(), SubscribeError> {
        self.check_subscribe(&producer)?;
        opts.validate()?;
        if self.exec(move |rt| {
            let _ = rt.consumer_subscribe(producer, opts, current, OnDeadProducer::Down);
        }) {
            Ok(())
        } else {
            Err(SubscribeError::Call(self.no_proc(Operation::Subscribe)))
        }
    }

    /// The producer's demand mode ([`DemandMode::Forward`] for other kinds).
    pub fn demand_mode(&self) -> Result<DemandMode, CallError> {
        self.request(Operation::Call, DEFAULT_TIMEOUT, |rt, reply| {
            reply.reply(rt.demand_mode());
        })
    }

    /// Switches a producer's demand mode without waiting (GenStage's `demand/2`).
    /// Switching to `Forward` replays what was accumulated, oldest first. On other
    /// kinds it logs an error, as GenStage does (`Forward` on a producer-consumer is a
    /// silent no-op).
    pub fn set_demand_mode(&self, mode: DemandMode) -> Result<(), CallError> {
        if self.exec(move |rt| rt.set_demand_mode(mode)) {
            Ok(())
        } else {
            Err(self.no_proc(Operation::SetDemandMode))
        }
    }

    /// Events in the output buffer (not counting a producer-consumer's unprocessed
    /// input). 0 on a consumer.
    pub fn estimate_buffered_count(&self) -> Result<usize, CallError> {
        self.request(Operation::Call, DEFAULT_TIMEOUT, |rt, reply| {
            reply.reply(rt.buffered_count());
        })
    }

    /// Stops the stage with `reason` and waits until it has exited (`terminate` runs).
    /// Fails with [`CallError::NoProc`] if it had already exited. Like GenStage's
    /// `stop/3`, it waits as long as it takes: a stage stuck in a callback is stopped
    /// only when the callback returns (see [`stop_timeout`](Self::stop_timeout)).
    pub fn stop(&self, reason: Reason) -> Result<(), CallError> {
        self.send_stop(reason)?;
        self.join();
        Ok(())
    }

    /// [`stop`](Self::stop), waiting at most `timeout` for the exit; the stop request
    /// stays queued if the stage has not exited by then.
    pub fn stop_timeout(&self, reason: Reason, timeout: Duration) -> Result<(), CallError> {
        self.send_stop(reason)?;
        match self.join_timeout(timeout) {
            Some(_) => Ok(()),
            None => Err(CallError::Timeout(timeout)),
        }
    }

    fn send_stop(&self, reason: Reason) -> Result<(), CallError> {
        if *self.shared.thread_id.lock() == Some(std::thread::current().id()) {
            return Err(CallError::CallToSelf);
        }
        if !self.exec(move |rt| rt.request_stop(reason)) {
            return Err(self.no_proc(Operation::Stop));
        }
        Ok(())
    }

    /// Makes the stage exit with [`Reason::Killed`] as soon as it reads this request,
    /// without running `terminate` (the analogue of BEAM's `Process.exit(pid, :kill)`;
    /// a thread cannot be killed from outside, so messages already queued before it
    /// are still handled). Returns false if the stage had already exited.
    pub fn kill(&self) -> bool {
        self.exec(|rt| rt.kill())
    }

    /// Waits until the stage has exited and returns its exit reason. A stage must not
    /// join itself (it would wait forever): stop it with [`Context::stop`](super::Context::stop).
    pub fn join(&self) -> Reason {
        let reason = self
            .shared
            .wait_exit(None)
            .expect("wait_exit without deadline returns a reason");
        if let Some(handle) = self.shared.thread.lock().take() {
            let _ = handle.join();
        }
        reason
    }

    /// Waits at most `timeout` for the stage to exit; `None` if it is still running.
    pub fn join_timeout(&self, timeout: Duration) -> Option<Reason> {
        let reason = self.shared.wait_exit(Some(Instant::now() + timeout))?;
        if let Some(handle) = self.shared.thread.lock().take() {
            let _ = handle.join();
        }
        Some(reason)
    }
}

/// A cast or info on its way: the message and what the stage does with it.
struct Envelope<S: Stage, M> {
    message: M,
    run: fn(&mut Runtime<S>, M),
}

impl<S: Stage, M: Send + 'static> Deliver<S> for Envelope<S, M> {
    fn deliver(self: Box<Self>, rt: &mut Runtime<S>) {
        (self.run)(rt, self.message)
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}
