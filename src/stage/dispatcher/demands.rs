//! The bookkeeping of the dispatchers that send each event to one consumer
//! ([`DemandDispatcher`](super::DemandDispatcher), [`FairDispatcher`](super::FairDispatcher)):
//! outstanding demand per consumer, and demand forwarded for consumers that left.

use super::Subscriber;
use crate::stage::reason::{Reason, Tag};

/// Outstanding demand per subscription, and the demand already forwarded upstream on
/// behalf of consumers that have since left (GenStage's `pending`): the next asks
/// are served from it before any new demand is forwarded.
pub(super) struct Demands<T> {
    /// `(outstanding demand, subscriber)`, in the order the dispatcher keeps.
    pub(super) entries: Vec<(usize, Subscriber<T>)>,
    pending: usize,
}

impl<T> Demands<T> {
    pub(super) fn new() -> Self {
        Demands {
            entries: Vec::new(),
            pending: 0,
        }
    }

    /// A consumer subscribed: it is added last, with no demand yet, which asks for
    /// no demand to be served.
    pub(super) fn subscribe(&mut self, sub: Subscriber<T>) -> Result<usize, Reason> {
        self.entries.push((0, sub));
        Ok(0)
    }

    /// Where subscription `tag` is in `entries`.
    pub(super) fn position(&self, tag: Tag) -> Option<usize> {
        self.entries.iter().position(|(_, s)| s.tag == tag)
    }

    /// Subscription `tag` ended: its outstanding demand, already forwarded, becomes
    /// pending. Returns where it was in `entries`.
    pub(super) fn cancel(&mut self, tag: Tag) -> Option<usize> {
        let i = self.position(tag)?;
        let (counter, _) = self.entries.remove(i);
        self.pending = self.pending.saturating_add(counter);
        Some(i)
    }

    /// Of `n` newly asked events, those to forward upstream: the rest is covered by
    /// pending demand.
    pub(super) fn forward(&mut self, n: usize) -> usize {
        let already = self.pending.min(n);
        self.pending -= already;
        n - already
    }

    /// Events no consumer took: they were made for pending demand, which they now
    /// meet (GenStage #311). Returns them, for the producer's buffer.
    #[inline]
    pub(super) fn leftovers(&mut self, events: Vec<T>) -> Vec<T> {
        self.pending = self.pending.saturating_sub(events.len());
        events
    }

    /// Demand already forwarded upstream on behalf of consumers that left.
    pub(super) fn pending(&self) -> usize {
        self.pending
    }

    /// `(demand, tag)` per consumer, in the order of `entries`.
    pub(super) fn by_tag(&self) -> Vec<(usize, Tag)> {
        self.entries.iter().map(|(n, s)| (*n, s.tag)).collect()
    }
}
