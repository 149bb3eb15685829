//! The producer-consumer's input queue: events, infos and cancels from upstream wait
//! here until downstream demand lets them through.

use super::super::reason::{CancelReason, Tag};
use super::super::Stage;
use super::{InfoFn, Runtime};

/// A producer-consumer's unprocessed input, in arrival order.
pub(super) enum Queued<S: Stage> {
    Events(Tag, Vec<S::In>),
    Info(InfoFn<S>),
    Cancel(Tag, CancelReason),
}

impl<S: Stage> Runtime<S> {
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
    pub(super) fn process_queue(&mut self) {
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
}
