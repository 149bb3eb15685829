//! Events spread evenly over the consumers that have demand, whatever their
//! `max_demand` (GenStage PR #111, never merged).

use super::demands::Demands;
use super::{Dispatcher, Subscriber};
use crate::stage::reason::{Reason, Tag};
use crate::stage::subscription::SubscribeOptions;

/// Spreads each batch evenly over the consumers that have demand, taking turns
/// (GenStage's unmerged `FairDispatcher`, PR #111).
///
/// The [`DemandDispatcher`](super::DemandDispatcher) sends each batch to the consumer
/// with the most outstanding demand, so a consumer subscribed with a larger
/// `max_demand` takes most of the events while others wait. This dispatcher instead
/// gives every consumer with demand an equal share of each batch (a consumer that
/// wants less gets what it wants, and the rest is shared among the others), sends
/// each consumer at most one message per batch, and rotates who comes first so that
/// small batches take turns. Consumers may therefore use different `max_demand`s.
///
/// Demand is forwarded upstream as the demand dispatcher does it: demand of departed
/// consumers is remembered as pending and served before new demand is forwarded.
///
/// ```
/// use stageflow::dispatcher::{Dispatcher, FairDispatcher, Probe, Received};
/// use stageflow::SubscribeOptions;
///
/// let probe = Probe::<u32>::new();
/// let mut d = FairDispatcher::new();
/// let (small, big) = (probe.subscriber(), probe.subscriber());
/// let (ts, tb) = (small.tag(), big.tag());
/// d.subscribe(small, &SubscribeOptions::new()).unwrap();
/// d.subscribe(big, &SubscribeOptions::new()).unwrap();
/// d.ask(ts, 10);
/// d.ask(tb, 100);
/// assert!(d.dispatch((0..8).collect()).is_empty());
/// assert_eq!(
///     probe.take(),
///     vec![Received::Events(ts, vec![0, 1, 2, 3]), Received::Events(tb, vec![4, 5, 6, 7])]
/// );
/// ```
pub struct FairDispatcher<T> {
    /// In subscription order.
    demands: Demands<T>,
    /// Who is served first at the next dispatch.
    cursor: usize,
}

impl<T> std::fmt::Debug for FairDispatcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairDispatcher")
            .field("consumers", &self.demands.entries.len())
            .field("cursor", &self.cursor)
            .field("pending", &self.demands.pending())
            .finish()
    }
}

impl<T: Send + 'static> Default for FairDispatcher<T> {
    fn default() -> Self {
        FairDispatcher {
            demands: Demands::new(),
            cursor: 0,
        }
    }
}

impl<T: Send + 'static> FairDispatcher<T> {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// `(demand, tag)` per consumer, in subscription order.
    pub fn demands(&self) -> Vec<(usize, Tag)> {
        self.demands.by_tag()
    }

    /// Demand already forwarded upstream on behalf of consumers that left.
    pub fn pending(&self) -> usize {
        self.demands.pending()
    }

    /// How many of `total` events each consumer gets: equal shares in turn order,
    /// capped by each one's demand, the rest shared again (water filling).
    fn shares(&self, total: usize) -> Vec<usize> {
        let demands = &self.demands.entries;
        let k = demands.len();
        let mut alloc = vec![0usize; k];
        let mut left = total;
        while left > 0 {
            let open: Vec<usize> = (0..k)
                .map(|i| (self.cursor + i) % k)
                .filter(|&i| demands[i].0 > alloc[i])
                .collect();
            if open.is_empty() {
                break;
            }
            let share = (left / open.len()).max(1);
            for i in open {
                let give = share.min(demands[i].0 - alloc[i]).min(left);
                alloc[i] += give;
                left -= give;
                if left == 0 {
                    break;
                }
            }
        }
        alloc
    }
}

impl<T: Send + 'static> Dispatcher<T> for FairDispatcher<T> {
    fn subscribe(
        &mut self,
        sub: Subscriber<T>,
        _opts: &SubscribeOptions<T>,
    ) -> Result<usize, Reason> {
        self.demands.subscribe(sub)
    }

    fn cancel(&mut self, tag: Tag) -> usize {
        if let Some(i) = self.demands.cancel(tag) {
            if self.cursor > i {
                self.cursor -= 1;
            }
            if self.cursor >= self.demands.entries.len() {
                self.cursor = 0;
            }
        }
        0
    }

    fn ask(&mut self, tag: Tag, n: usize) -> usize {
        if let Some(i) = self.demands.position(tag) {
            let entry = &mut self.demands.entries[i];
            entry.0 = entry.0.saturating_add(n);
        }
        self.demands.forward(n)
    }

    fn dispatch(&mut self, mut events: Vec<T>) -> Vec<T> {
        let k = self.demands.entries.len();
        if k == 0 {
            return self.demands.leftovers(events);
        }
        let shares = self.shares(events.len());
        let given: usize = shares.iter().sum();
        let mut rest = events.split_off(given);
        std::mem::swap(&mut events, &mut rest);
        // `rest` now holds the events to send, `events` the leftovers.
        let mut sending = rest.into_iter();
        let start = self.cursor;
        for j in 0..k {
            let i = (start + j) % k;
            let n = shares[i];
            if n == 0 {
                continue;
            }
            let batch: Vec<T> = sending.by_ref().take(n).collect();
            let (demand, sub) = &mut self.demands.entries[i];
            *demand -= n;
            sub.send(batch);
        }
        // The next batch starts with the next consumer in turn.
        self.cursor = (start + 1) % k;
        self.demands.leftovers(events)
    }
}
