//! The default dispatcher: each batch goes to the consumer with the most outstanding
//! demand (GenStage's `DemandDispatcher`).

use super::demands::Demands;
use super::{Dispatcher, Subscriber};
use crate::stage::log::{Level, LogSink};
use crate::stage::reason::{Reason, Tag};
use crate::stage::subscription::SubscribeOptions;

/// Options of a [`DemandDispatcher`].
///
/// ```
/// use stageflow::dispatcher::DemandDispatcherOptions;
/// let o = DemandDispatcherOptions::default();
/// assert!(!o.shuffle_demands_on_first_dispatch);
/// assert_eq!(o.max_demand, None);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemandDispatcherOptions {
    /// Shuffle the consumers once, before the first dispatch, so that the first
    /// subscriber is not always served first at start-up (default false).
    pub shuffle_demands_on_first_dispatch: bool,
    /// The maximum demand consumers are expected to ask for; an ask above it logs a
    /// warning, once per subscription (GenStage logs it at every such ask, hundreds of
    /// lines in one run). Default: the first ask received.
    pub max_demand: Option<usize>,
}

/// Sends each batch of events to the consumer with the largest outstanding demand,
/// first come first served among equals (GenStage's `DemandDispatcher`).
///
/// Demand of a consumer that leaves is remembered as "pending": it was already
/// forwarded to the producer, so the next asks of other consumers are served from it
/// instead of being forwarded again.
///
/// ```
/// use stageflow::dispatcher::{DemandDispatcher, Dispatcher, Probe, Received};
/// use stageflow::SubscribeOptions;
///
/// let probe = Probe::<char>::new();
/// let mut d = DemandDispatcher::new();
/// let (a, b) = (probe.subscriber(), probe.subscriber());
/// let (ta, tb) = (a.tag(), b.tag());
/// d.subscribe(a, &SubscribeOptions::new()).unwrap();
/// d.subscribe(b, &SubscribeOptions::new()).unwrap();
/// d.ask(ta, 2);
/// d.ask(tb, 3);
/// assert_eq!(d.dispatch(vec!['a', 'b', 'c', 'd', 'e', 'f']), vec!['f']);
/// assert_eq!(
///     probe.take(),
///     vec![Received::Events(tb, vec!['a', 'b', 'c']), Received::Events(ta, vec!['d', 'e'])]
/// );
/// ```
pub struct DemandDispatcher<T> {
    /// Largest outstanding demand first, ties by arrival.
    demands: Demands<T>,
    max_demand: Option<usize>,
    /// Subscriptions already warned about a demand above `max_demand`: once each.
    warned: Vec<Tag>,
    shuffle: bool,
    seed: u64,
    log: LogSink,
}

impl<T> std::fmt::Debug for DemandDispatcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemandDispatcher")
            .field("consumers", &self.demands.entries.len())
            .field("pending", &self.demands.pending())
            .field("max_demand", &self.max_demand)
            .field("shuffle", &self.shuffle)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Default for DemandDispatcher<T> {
    fn default() -> Self {
        Self::with_options(DemandDispatcherOptions::default())
    }
}

impl<T: Send + 'static> DemandDispatcher<T> {
    /// A dispatcher with the default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// A dispatcher with these options.
    pub fn with_options(opts: DemandDispatcherOptions) -> Self {
        DemandDispatcher {
            demands: Demands::new(),
            max_demand: opts.max_demand,
            warned: Vec::new(),
            shuffle: opts.shuffle_demands_on_first_dispatch,
            seed: crate::stage::reason::next_id()
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9E37_79B9_7F4A_7C15)),
            log: LogSink::default(),
        }
    }

    /// Where warnings go (the owning stage sets its own sink).
    pub fn log_to(mut self, log: LogSink) -> Self {
        self.log = log;
        self
    }

    /// `(demand, tag)` per consumer in dispatch order (for tests and diagnostics).
    pub fn demands(&self) -> Vec<(usize, Tag)> {
        self.demands.by_tag()
    }

    /// Demand already forwarded upstream on behalf of consumers that left.
    pub fn pending(&self) -> usize {
        self.demands.pending()
    }

    /// The maximum demand asks are checked against: the option if given, else the
    /// first ask received (`None` until then).
    pub fn max_demand(&self) -> Option<usize> {
        self.max_demand
    }

    /// Whether the one-time shuffle is still to happen.
    pub fn shuffle_pending(&self) -> bool {
        self.shuffle
    }

    fn insert(&mut self, counter: usize, sub: Subscriber<T>) {
        // Before the first entry with a strictly smaller demand (GenStage's add_demand).
        let entries = &mut self.demands.entries;
        let at = entries
            .iter()
            .position(|(c, _)| counter > *c)
            .unwrap_or(entries.len());
        entries.insert(at, (counter, sub));
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: enough to spread the first dispatch, no crate needed.
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl<T: Send + 'static> Dispatcher<T> for DemandDispatcher<T> {
    fn subscribe(
        &mut self,
        sub: Subscriber<T>,
        _opts: &SubscribeOptions<T>,
    ) -> Result<usize, Reason> {
        self.demands.subscribe(sub)
    }

    fn cancel(&mut self, tag: Tag) -> usize {
        self.demands.cancel(tag);
        self.warned.retain(|t| *t != tag);
        0
    }

    fn ask(&mut self, tag: Tag, n: usize) -> usize {
        let max = *self.max_demand.get_or_insert(n);
        if n > max && !self.warned.contains(&tag) {
            // Once per subscription: such a consumer asks like this all along.
            self.warned.push(tag);
            self.log.log(
                Level::Warning,
                format!(
                    "DemandDispatcher expects a maximum demand of {max}. Using different maximum \
                     demands will overload greedy consumers. Got demand for {n} events from {tag}"
                ),
            );
        }
        if let Some(i) = self.demands.position(tag) {
            let (counter, sub) = self.demands.entries.remove(i);
            self.insert(counter.saturating_add(n), sub);
        }
        self.demands.forward(n)
    }

    fn dispatch(&mut self, mut events: Vec<T>) -> Vec<T> {
        if self.shuffle {
            self.shuffle = false;
            for i in (1..self.demands.entries.len()).rev() {
                let j = (self.next_random() % (i as u64 + 1)) as usize;
                self.demands.entries.swap(i, j);
            }
        }
        while !events.is_empty() {
            let Some(&(counter, _)) = self.demands.entries.first() else {
                break;
            };
            if counter == 0 {
                break;
            }
            let (counter, sub) = self.demands.entries.remove(0);
            let n = counter.min(events.len());
            let batch = if n == events.len() {
                std::mem::take(&mut events)
            } else {
                events.drain(..n).collect()
            };
            sub.send(batch);
            self.insert(counter - n, sub);
        }
        self.demands.leftovers(events)
    }

    fn set_log(&mut self, log: LogSink) {
        self.log = log;
    }
}
