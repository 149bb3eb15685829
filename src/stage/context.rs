//! What a callback may do: emit events, stop the stage, reach its own handle, log.

use std::time::{Duration, Instant};

use crate::error::OptionsError;

use super::handle::StageRef;
use super::log::{Level, LogSink};
use super::metrics::{Counter, Gauge};
use super::reason::Reason;
use super::runtime::Timers;
use super::{HandleInfo, Stage};

/// A timer armed with [`Context::send_after`]; cancel it with
/// [`Context::cancel_timer`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimerRef(pub(crate) u64);

/// Handed to every callback of a stage.
///
/// Emitted events are dispatched when the callback returns, in order, before any
/// reply of a call. On a consumer (`Out = Never`) nothing can be emitted.
pub struct Context<'a, S: Stage> {
    pub(crate) out: &'a mut Vec<S::Out>,
    pub(crate) stop: &'a mut Option<Reason>,
    pub(crate) me: &'a StageRef<S>,
    pub(crate) log: &'a LogSink,
    pub(crate) timers: &'a mut Timers<S>,
}

impl<S: Stage> std::fmt::Debug for Context<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("stage", self.me)
            .field("emitted", &self.out.len())
            .field("stop", self.stop)
            .finish_non_exhaustive()
    }
}

impl<S: Stage> Context<'_, S> {
    /// Emits one event.
    pub fn emit(&mut self, event: S::Out) {
        self.out.push(event);
    }

    /// Emits every event of `events`, in order.
    pub fn emit_all(&mut self, events: impl IntoIterator<Item = S::Out>) {
        self.out.extend(events);
    }

    /// Emits a whole batch; when nothing else was emitted yet the vector is passed on
    /// as it is, without copying.
    pub fn emit_batch(&mut self, mut events: Vec<S::Out>) {
        if self.out.is_empty() {
            std::mem::swap(self.out, &mut events);
        } else {
            self.out.append(&mut events);
        }
    }

    /// Events emitted so far by this callback.
    pub fn emitted(&self) -> usize {
        self.out.len()
    }

    /// Stops the stage with `reason` once this callback returns (after its events
    /// are dispatched). `terminate` runs; subscribers react by their cancel mode.
    pub fn stop(&mut self, reason: Reason) {
        if self.stop.is_none() {
            *self.stop = Some(reason);
        }
    }

    /// Whether `stop` was called.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// This stage's own handle, e.g. to `async_info` itself. Synchronous calls to
    /// itself return [`CallError::CallToSelf`](crate::CallError::CallToSelf).
    pub fn myself(&self) -> &StageRef<S> {
        self.me
    }

    /// Delivers `message` to this stage's own `handle_info` once `delay` has passed
    /// (Elixir's `Process.send_after` to itself). The stage's thread waits for it on
    /// its mailbox, with a deadline: no thread is started. It runs after the mail
    /// that arrived before it was due; a stage that exits first never receives it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::prelude::*;
    ///
    /// struct Ticker;
    /// impl Stage for Ticker {
    ///     type In = Never;
    ///     type Out = u8;
    ///     fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
    ///         // Due first, but cancelled: never delivered.
    ///         let never = ctx.send_after(Duration::from_millis(1), "cancelled");
    ///         ctx.send_after(Duration::from_millis(2), "tick");
    ///         assert!(ctx.cancel_timer(never));
    ///         Init::Ok
    ///     }
    /// }
    /// impl Producer for Ticker {
    ///     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
    /// }
    /// impl HandleInfo<&'static str> for Ticker {
    ///     fn handle_info(&mut self, text: &'static str, ctx: &mut Context<'_, Self>) {
    ///         ctx.stop(Reason::custom(text));
    ///     }
    /// }
    /// let ticker = start_producer(Ticker, ProducerOptions::new())?;
    /// assert_eq!(ticker.join(), Reason::custom("tick"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_after<M: Send + 'static>(&mut self, delay: Duration, message: M) -> TimerRef
    where
        S: HandleInfo<M>,
    {
        let at = Instant::now().checked_add(delay).unwrap_or_else(far_future);
        self.timers
            .add(at, Box::new(move |s, ctx| s.handle_info(message, ctx)))
    }

    /// Cancels a timer armed with [`send_after`](Self::send_after). True if it was
    /// still armed: its message will not be delivered. False if it already fired or
    /// was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerRef) -> bool {
        self.timers.cancel(timer)
    }

    /// Writes a line to the stage's log sink.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        self.log.log(level, message);
    }

    /// The counter `name` this stage publishes beside the runtime's own (see
    /// [`Counter`], which has an example): registered now if it is new. Fails with
    /// an error naming `name` if it is not a valid metric name or is already a gauge
    /// of this stage.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, OptionsError> {
        self.me.counter(name, help)
    }

    /// The gauge `name` this stage publishes ([`Gauge`]); see
    /// [`counter`](Self::counter).
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, OptionsError> {
        self.me.gauge(name, help)
    }
}

/// A deadline for a delay too long to add to now: about 30 years.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 24 * 3600)
}
