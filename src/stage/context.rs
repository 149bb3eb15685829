//! What a callback may do: emit events, stop the stage, reach its own handle, log.

use super::handle::StageRef;
use super::log::{Level, LogSink};
use super::reason::Reason;
use super::Stage;

/// Handed to every callback of a stage.
///
/// Emitted events are dispatched when the callback returns, in order, before any
/// reply of a call. On a consumer (`Out = Never`) nothing can be emitted.
pub struct Context<'a, S: Stage> {
    pub(crate) out: &'a mut Vec<S::Out>,
    pub(crate) stop: &'a mut Option<Reason>,
    pub(crate) me: &'a StageRef<S>,
    pub(crate) log: &'a LogSink,
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

    /// Writes a line to the stage's log sink.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        self.log.log(level, message);
    }
}
