//! Every event to every consumer, at the pace of the slowest one
//! (GenStage's `BroadcastDispatcher`).

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{Dispatcher, Subscriber};
use crate::stage::log::{Level, LogSink};
use crate::stage::reason::{Reason, Tag};
use crate::stage::subscription::{Selector, SubscribeOptions};

struct Entry<T> {
    /// Demand of this consumer not yet covered by `waiting`.
    counter: usize,
    sub: Subscriber<T>,
    selector: Option<Selector<T>>,
}

/// Sends every event to every consumer (GenStage's `BroadcastDispatcher`).
///
/// The producer is asked only for the *minimum* outstanding demand across consumers,
/// so the slowest consumer sets the pace. A consumer may pass a
/// [`selector`](crate::SubscribeOptions::selector): it then receives only the events
/// the selector accepts, and for the events it filtered out the dispatcher asks its
/// producer again on that consumer's behalf, so filtering never starves demand
/// (GenStage #133).
///
/// Two fixes of GenStage 1.3 are part of the algorithm: a new subscriber holds back
/// the events already asked for until it asks too (#310), and demand already
/// requested upstream is never requested twice (#318). One consumer may subscribe only
/// once: a second subscription of the same consumer is rejected with
/// [`Reason::AlreadySubscribed`], which stops neither side.
///
/// Events are cloned for every consumer but the last, which gets the batch itself;
/// a message whose events were all filtered out is not sent.
///
/// Demand already requested but met by events the producer could not broadcast yet
/// (they wait in its buffer) is served from that buffer as soon as every consumer
/// has asked for them ([`Dispatcher::buffered_demand`], and
/// [`Dispatcher::buffer_in_forwarded_demand`] is true). This is a deliberate
/// difference from GenStage 1.3.2, whose producer takes from its buffer only when the
/// dispatcher reports *new* demand: a producer started in accumulate mode, with
/// consumers of `max_demand` 100 and 10, calls `handle_demand(100)` once on the switch
/// to forward, broadcasts 10 events, buffers 90 that `requested` already counts, and
/// never moves again. Here those 90 follow as the consumers ask.
///
/// ```
/// use stageflow::dispatcher::{BroadcastDispatcher, Dispatcher, Probe, Received};
/// use stageflow::SubscribeOptions;
///
/// let probe = Probe::<u32>::new();
/// let mut d = BroadcastDispatcher::new();
/// let (a, b) = (probe.subscriber(), probe.subscriber());
/// let (ta, tb) = (a.tag(), b.tag());
/// d.subscribe(a, &SubscribeOptions::new()).unwrap();
/// d.subscribe(b, &SubscribeOptions::new()).unwrap();
/// assert_eq!(d.ask(ta, 3), 0); // b has not asked yet
/// assert_eq!(d.ask(tb, 2), 2); // the minimum of 3 and 2
/// assert_eq!(d.dispatch(vec![1, 2, 3]), vec![3]);
/// let got = probe.take();
/// assert!(got.contains(&Received::Events(ta, vec![1, 2])));
/// assert!(got.contains(&Received::Events(tb, vec![1, 2])));
/// ```
pub struct BroadcastDispatcher<T> {
    /// Most recently subscribed or asking consumer first (GenStage's list order).
    demands: Vec<Entry<T>>,
    /// Demand every consumer has: events that may be broadcast now.
    waiting: usize,
    /// Demand forwarded upstream and not yet fulfilled.
    requested: usize,
    /// Consumers (by stage id) with a subscription.
    subscribed: HashSet<u64>,
    error: Option<Reason>,
    log: LogSink,
}

impl<T> std::fmt::Debug for BroadcastDispatcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastDispatcher")
            .field("consumers", &self.demands.len())
            .field("waiting", &self.waiting)
            .field("requested", &self.requested)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + 'static> Default for BroadcastDispatcher<T> {
    fn default() -> Self {
        BroadcastDispatcher {
            demands: Vec::new(),
            waiting: 0,
            requested: 0,
            subscribed: HashSet::new(),
            error: None,
            log: LogSink::default(),
        }
    }
}

impl<T: Clone + Send + 'static> BroadcastDispatcher<T> {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where warnings go (the owning stage sets its own sink).
    pub fn log_to(mut self, log: LogSink) -> Self {
        self.log = log;
        self
    }

    /// `(demand, tag)` per consumer, in GenStage's order (for tests and diagnostics).
    pub fn demands(&self) -> Vec<(usize, Tag)> {
        self.demands
            .iter()
            .map(|e| (e.counter, e.sub.tag))
            .collect()
    }

    /// Events every consumer has asked for and that may be broadcast now.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Demand forwarded to the producer and not yet fulfilled.
    pub fn requested(&self) -> usize {
        self.requested
    }

    /// Number of consumers subscribed.
    pub fn subscribers(&self) -> usize {
        self.subscribed.len()
    }

    /// Moves the common part of the consumers' demands into `waiting` and returns what
    /// must be requested upstream beyond what already was (GenStage's `sync_demands`).
    fn sync(&mut self) -> usize {
        let min = self.demands.iter().map(|e| e.counter).min().unwrap_or(0);
        if min > 0 {
            for e in &mut self.demands {
                e.counter -= min;
            }
        }
        self.waiting = self.waiting.saturating_add(min);
        let request = self.waiting.saturating_sub(self.requested);
        self.requested += request;
        request
    }
}

impl<T: Clone + Send + 'static> Dispatcher<T> for BroadcastDispatcher<T> {
    fn subscribe(
        &mut self,
        sub: Subscriber<T>,
        opts: &SubscribeOptions<T>,
    ) -> Result<usize, Reason> {
        if self.subscribed.contains(&sub.consumer_id) {
            self.log.log(
                Level::Error,
                format!(
                    "consumer #{} is already registered with this producer. This subscription \
                     ({}) has been discarded.",
                    sub.consumer_id, sub.tag
                ),
            );
            return Err(Reason::AlreadySubscribed);
        }
        self.subscribed.insert(sub.consumer_id);
        // Nothing is broadcast until the newcomer asks: give the demand that was
        // already common back to the others (GenStage #310).
        let waiting = std::mem::take(&mut self.waiting);
        for e in &mut self.demands {
            e.counter = e.counter.saturating_add(waiting);
        }
        self.demands.insert(
            0,
            Entry {
                counter: 0,
                sub,
                selector: opts.selector_fn().cloned(),
            },
        );
        Ok(0)
    }

    fn cancel(&mut self, tag: Tag) -> usize {
        let Some(i) = self.demands.iter().position(|e| e.sub.tag == tag) else {
            return 0;
        };
        let entry = self.demands.remove(i);
        self.subscribed.remove(&entry.sub.consumer_id);
        if self.demands.is_empty() {
            self.waiting = 0;
            return 0;
        }
        // Removing the slowest consumer can release demand.
        self.sync()
    }

    fn ask(&mut self, tag: Tag, n: usize) -> usize {
        if let Some(i) = self.demands.iter().position(|e| e.sub.tag == tag) {
            let mut entry = self.demands.remove(i);
            entry.counter = entry.counter.saturating_add(n);
            self.demands.insert(0, entry);
        }
        self.sync()
    }

    fn dispatch(&mut self, mut events: Vec<T>) -> Vec<T> {
        if self.waiting == 0 || self.demands.is_empty() {
            return events;
        }
        let later = if events.len() > self.waiting {
            events.split_off(self.waiting)
        } else {
            Vec::new()
        };
        let now = events.len();
        self.waiting -= now;
        self.requested = self.requested.saturating_sub(now);
        let last = self.demands.len() - 1;
        let mut batch = Some(events);
        for (i, e) in self.demands.iter().enumerate() {
            let events: Vec<T> = if i == last && e.selector.is_none() {
                batch.take().unwrap_or_default()
            } else {
                let all = batch.as_deref().unwrap_or(&[]);
                match &e.selector {
                    None => all.to_vec(),
                    Some(select) => {
                        // A selector is user code: a panic stops the producer with
                        // its message instead of unwinding through the stage loop.
                        match catch_unwind(AssertUnwindSafe(|| {
                            all.iter()
                                .filter(|x| select(x))
                                .cloned()
                                .collect::<Vec<T>>()
                        })) {
                            Ok(selected) => selected,
                            Err(payload) => {
                                self.error = Some(Reason::Panic(
                                    format!(
                                        "selector panicked: {}",
                                        crate::panic::message(payload.as_ref())
                                    )
                                    .into(),
                                ));
                                continue;
                            }
                        }
                    }
                }
            };
            // Filtered events still count as delivered for this consumer: ask again on
            // its behalf so that its demand is not lost (GenStage #133).
            e.sub.ask_owner(now - events.len());
            if !events.is_empty() {
                e.sub.send(events);
            }
        }
        later
    }

    fn set_log(&mut self, log: LogSink) {
        self.log = log;
    }

    fn take_error(&mut self) -> Option<Reason> {
        self.error.take()
    }

    fn buffered_demand(&self) -> usize {
        // `waiting` is demand every consumer has; when `requested` already covers it,
        // the events for it were produced and wait in the producer's buffer.
        if self.demands.is_empty() {
            0
        } else {
            self.waiting
        }
    }

    fn buffer_in_forwarded_demand(&self) -> bool {
        // `requested` counts events produced and not yet broadcast: those in the
        // producer's buffer too. What `ask` returns is demand beyond them.
        true
    }
}
