//! Each event to one partition, chosen by a hash; one consumer per partition
//! (GenStage's `PartitionDispatcher`), with a bound on what a partition may hoard.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Dispatcher, PendingInfo, StallCounter, Subscriber};
use crate::error::OptionsError;
use crate::stage::log::{Level, LogSink};
use crate::stage::reason::{Reason, Tag};
use crate::stage::subscription::{PartitionKey, SubscribeOptions};

/// Default bound of a partition's overflow queue, in events.
pub const DEFAULT_MAX_QUEUE: usize = 10_000;

/// The partitions of a [`PartitionDispatcher`]: a count `n` (partitions `0..n`) or a
/// list of names.
///
/// ```
/// use stageflow::dispatcher::Partitions;
/// assert_eq!(Partitions::from(2).len(), 2);
/// assert_eq!(Partitions::from(vec!["odd", "even"]).len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partitions {
    /// Partitions `0..n`.
    Count(usize),
    /// Partitions with these names, in this order.
    Names(Vec<PartitionKey>),
}

impl Partitions {
    /// Number of partitions.
    pub fn len(&self) -> usize {
        match self {
            Partitions::Count(n) => *n,
            Partitions::Names(v) => v.len(),
        }
    }

    /// Whether there is no partition (an invalid configuration).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(&self, i: usize) -> PartitionKey {
        match self {
            Partitions::Count(_) => PartitionKey::Index(i),
            Partitions::Names(v) => v[i].clone(),
        }
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = (0..self.len()).map(|i| self.key(i).to_string()).collect();
        format!("[{}]", keys.join(", "))
    }
}

impl From<usize> for Partitions {
    fn from(n: usize) -> Self {
        Partitions::Count(n)
    }
}

impl From<Vec<&str>> for Partitions {
    fn from(v: Vec<&str>) -> Self {
        Partitions::Names(v.into_iter().map(PartitionKey::from).collect())
    }
}

impl From<Vec<PartitionKey>> for Partitions {
    fn from(v: Vec<PartitionKey>) -> Self {
        Partitions::Names(v)
    }
}

/// A boxed partition hash: the (possibly rewritten) event and its partition, or `None`
/// to discard the event. For named partitions, [`PartitionKey::Index`] `i` also names
/// the `i`-th partition of the list, which spares a hot hash from building names.
/// It is the default type of the hash of a [`PartitionDispatcher`]; a dispatcher
/// built by [`with_hash`](PartitionDispatcher::with_hash) keeps the closure's own
/// type instead, so that the per-event call is inlined.
pub type HashFn<T> = Box<dyn Fn(T) -> Option<(T, PartitionKey)> + Send + Sync>;

/// Counters of a [`PartitionDispatcher`] that stay readable after the dispatcher has
/// moved into its producer. Updated once per dispatcher call, never per event.
#[derive(Clone, Default)]
pub struct PartitionStats {
    inner: Arc<StatsInner>,
}

#[derive(Default)]
struct StatsInner {
    discarded: AtomicU64,
    queued: AtomicU64,
    max_queued: AtomicU64,
    held: AtomicU64,
}

impl fmt::Debug for PartitionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionStats")
            .field("discarded", &self.discarded())
            .field("queued", &self.queued())
            .field("max_queued", &self.max_queued())
            .field("held_demand", &self.held_demand())
            .finish()
    }
}

impl PartitionStats {
    /// Events the hash discarded (returned `None` for), plus events dropped from the
    /// queue of a partition whose consumer left.
    pub fn discarded(&self) -> u64 {
        self.inner.discarded.load(Ordering::Relaxed)
    }
    /// Events waiting in the partitions' overflow queues now (all partitions).
    pub fn queued(&self) -> u64 {
        self.inner.queued.load(Ordering::Relaxed)
    }
    /// The most events ever waiting in one partition's queue.
    pub fn max_queued(&self) -> u64 {
        self.inner.max_queued.load(Ordering::Relaxed)
    }
    /// Demand of consumers held back by the queue bound.
    pub fn held_demand(&self) -> u64 {
        self.inner.held.load(Ordering::Relaxed)
    }
}

enum Slot<T> {
    Event(T),
    /// An info marker: the info is released once every backed-up partition passed it.
    Info(u64),
}

enum State<T> {
    /// Outstanding demand of the partition's consumer.
    Demand(usize),
    /// Events (and info markers) waiting for demand; `events` counts the events.
    Queue {
        slots: VecDeque<Slot<T>>,
        events: usize,
    },
}

struct Partition<T> {
    sub: Option<Subscriber<T>>,
    state: State<T>,
    /// Events hashed to this partition by the current `dispatch` call.
    staged: Vec<T>,
    /// The stall this partition causes without a consumer was reported (reset when a
    /// consumer subscribes).
    stall_reported: bool,
}

/// Sends each event to one partition, chosen by a hash of the event; each partition
/// has at most one consumer (GenStage's `PartitionDispatcher`).
///
/// Consumers subscribe with [`SubscribeOptions::partition`]. A missing, unknown or
/// taken partition rejects that subscription with a reason that names it; the
/// producer keeps running (GenStage crashes the producer instead).
///
/// Events for a partition without demand (or without a consumer yet) wait in that
/// partition's overflow queue and are sent when its consumer asks. Unlike GenStage,
/// whose queues may together hoard as much as the consumers' summed `max_demand`
/// (GenStage #282, #320), each queue is bounded by `max_queue` events (default
/// [`DEFAULT_MAX_QUEUE`]): the dispatcher forwards demand upstream only while the
/// longest queue plus the events already requested stays within the bound, and holds
/// the rest back until queues drain. Since any requested event could hash to the
/// longest queue, no queue ever exceeds `max_queue`, so a slow or absent partition
/// cannot make the producer's memory grow; the price is that the other partitions
/// wait for it (a partition whose consumer never asks stops the producer once its
/// queue is full). Keep `max_queue` at least the consumers' summed `max_demand` for
/// full throughput.
///
/// A partition that has *no consumer* is the usual cause of such a stall: its events
/// wait for a subscriber that may never come, and once its queue is full no partition
/// gets events. The bound stays (an absent consumer must not grow the producer's
/// memory), but the dispatcher logs a warning once per partition, naming it and the
/// number of events waiting, and counts the stall in the stage's
/// [`StageMetrics::stalls`](crate::StageMetrics::stalls). Subscribe a consumer to every
/// partition before events flow (a [`Topology`](crate::Topology) does this for you).
/// Even before its queue is full, a partition without a consumer takes its share of
/// the events that the other partitions' demand pulls, so they receive fewer than they
/// asked for (as in GenStage).
///
/// Events for which the hash returns `None` are discarded and counted
/// ([`PartitionStats::discarded`]). A hash that panics or names an unknown partition
/// stops the producer with a reason that says so.
///
/// ```
/// use stageflow::dispatcher::{Dispatcher, PartitionDispatcher, Probe, Received};
/// use stageflow::{PartitionKey, SubscribeOptions};
///
/// let probe = Probe::<u64>::new();
/// let mut d = PartitionDispatcher::with_hash(2, |x: u64| Some((x, PartitionKey::Index((x % 2) as usize))))?;
/// let (even, odd) = (probe.subscriber(), probe.subscriber());
/// let (te, to) = (even.tag(), odd.tag());
/// d.subscribe(even, &SubscribeOptions::new().partition(0)).unwrap();
/// d.subscribe(odd, &SubscribeOptions::new().partition(1)).unwrap();
/// assert_eq!(d.ask(te, 2), 2);
/// assert_eq!(d.ask(to, 2), 2);
/// assert_eq!(d.dispatch(vec![1, 2, 3, 4, 5]), vec![5]);
/// let got = probe.take();
/// assert!(got.contains(&Received::Events(te, vec![2, 4])));
/// assert!(got.contains(&Received::Events(to, vec![1, 3])));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PartitionDispatcher<T, H = HashFn<T>> {
    names: Partitions,
    /// Named partitions: name → position.
    index: HashMap<PartitionKey, usize>,
    hash: H,
    partitions: Vec<Partition<T>>,
    /// Demand forwarded upstream and not yet dispatched.
    waiting: usize,
    /// Demand of consumers that left, already forwarded upstream.
    pending: usize,
    /// Demand held back by the queue bound.
    held: usize,
    /// Held demand released during `dispatch`, for `take_demand`.
    release: usize,
    max_queue: usize,
    /// Infos waiting for backed-up partitions: id → (info, partitions still to pass).
    infos: HashMap<u64, (PendingInfo, usize)>,
    stats: PartitionStats,
    stalls: StallCounter,
    error: Option<Reason>,
    log: LogSink,
}

impl<T, H> std::fmt::Debug for PartitionDispatcher<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionDispatcher")
            .field("partitions", &self.names)
            .field("waiting", &self.waiting)
            .field("pending", &self.pending)
            .field("held", &self.held)
            .field("max_queue", &self.max_queue)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn default_hash<T: Hash>(n: usize) -> HashFn<T> {
    Box::new(move |event: T| {
        let p = partition_of(&event, n);
        Some((event, PartitionKey::Index(p)))
    })
}

/// Start state of the partition hash, unlike a map's (zero), so that partitioning does
/// not correlate with the reducer's own hash table on the same keys.
const PARTITION_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// 2^64 divided by the golden ratio: an odd constant whose multiples spread well.
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// The partition of `key` among `n` (at least 1): the default of both layers, the
/// [`PartitionDispatcher`] and Flow's partitioning
/// ([`default_partition`](crate::flow::default_partition) is its public face).
///
/// rustc-hash's `FxHasher` with a fixed seed (deterministic across runs and
/// processes), then a folded multiply, then a multiply-shift range reduction on the top
/// bits. The fold is needed: Fx leaves its best bits in the middle of the word (hash
/// tables take both ends), so without it integer keys that differ only in their high
/// bits would all land in one partition.
#[inline]
pub(crate) fn partition_of<K: Hash + ?Sized>(key: &K, n: usize) -> usize {
    // On 32-bit targets the seed is truncated: still fixed, so still deterministic.
    let mut h = rustc_hash::FxHasher::with_seed(PARTITION_SEED as usize);
    key.hash(&mut h);
    let m = u128::from(h.finish()) * u128::from(MIX);
    let x = (m as u64) ^ ((m >> 64) as u64);
    ((u128::from(x) * n as u128) >> 64) as usize
}

impl<T: Send + 'static> PartitionDispatcher<T> {
    /// `partitions` partitions (a count) with the default hash: the partition
    /// [`flow::default_partition`](crate::flow::default_partition) gives the event, the
    /// same as in Flow's [`partition`](crate::flow::Flow::partition) layers. It hashes
    /// the event's [`Hash`] value with rustc-hash's Fx hash from a fixed seed, so an
    /// event goes to the same partition in every run and every process (GenStage uses
    /// `:erlang.phash2/2`, so the partition of an event differs from GenStage's).
    ///
    /// Errors: no partition; named partitions (they need a hash that names them, see
    /// [`with_hash`](Self::with_hash)).
    ///
    /// ```
    /// use stageflow::dispatcher::{Dispatcher, PartitionDispatcher, Probe, Received};
    /// use stageflow::flow::default_partition;
    /// use stageflow::SubscribeOptions;
    ///
    /// let probe = Probe::<u64>::new();
    /// let mut d = PartitionDispatcher::new(3)?;
    /// let mut tags = Vec::new();
    /// for p in 0..3 {
    ///     let sub = probe.subscriber();
    ///     tags.push(sub.tag());
    ///     d.subscribe(sub, &SubscribeOptions::new().partition(p)).unwrap();
    ///     d.ask(tags[p], 100);
    /// }
    /// assert!(d.dispatch((0..30).collect()).is_empty());
    /// for got in probe.take() {
    ///     if let Received::Events(tag, events) = got {
    ///         let p = tags.iter().position(|t| *t == tag).unwrap();
    ///         assert!(events.iter().all(|e| default_partition(e, 3) == p));
    ///     }
    /// }
    ///
    /// let err = PartitionDispatcher::<u64>::new(vec!["even", "odd"]).err().unwrap();
    /// assert!(err.to_string().starts_with("when partitions contains partitions that are not integers"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(partitions: impl Into<Partitions>) -> Result<Self, OptionsError>
    where
        T: Hash,
    {
        let partitions = partitions.into();
        if let Partitions::Names(_) = partitions {
            return Err(OptionsError::new(
                "when partitions contains partitions that are not integers, you have to pass \
                 in a hash function as well (PartitionDispatcher::with_hash)",
            ));
        }
        let n = partitions.len();
        PartitionDispatcher::build(partitions, default_hash(n.max(1)))
    }

    /// Partitions with a hash function that returns the (possibly rewritten) event and
    /// its partition, or `None` to discard it.
    pub fn with_hash<H>(
        partitions: impl Into<Partitions>,
        hash: H,
    ) -> Result<PartitionDispatcher<T, H>, OptionsError>
    where
        H: Fn(T) -> Option<(T, PartitionKey)> + Send + 'static,
    {
        PartitionDispatcher::build(partitions.into(), hash)
    }
}

impl<T, H> PartitionDispatcher<T, H>
where
    T: Send + 'static,
    H: Fn(T) -> Option<(T, PartitionKey)> + Send + 'static,
{
    fn build(partitions: Partitions, hash: H) -> Result<Self, OptionsError> {
        if partitions.is_empty() {
            return Err(OptionsError::new(
                "the partitions option of the partition dispatcher must name at least one \
                 partition, got: 0",
            ));
        }
        let mut index = HashMap::new();
        if let Partitions::Names(names) = &partitions {
            for (i, name) in names.iter().enumerate() {
                if index.insert(name.clone(), i).is_some() {
                    return Err(OptionsError::new(format!(
                        "the partitions option of the partition dispatcher lists {name} twice"
                    )));
                }
            }
        }
        let partitions_state = (0..partitions.len())
            .map(|_| Partition {
                sub: None,
                state: State::Demand(0),
                staged: Vec::new(),
                stall_reported: false,
            })
            .collect();
        Ok(PartitionDispatcher {
            names: partitions,
            index,
            hash,
            partitions: partitions_state,
            waiting: 0,
            pending: 0,
            held: 0,
            release: 0,
            max_queue: DEFAULT_MAX_QUEUE,
            infos: HashMap::new(),
            stats: PartitionStats::default(),
            stalls: StallCounter::default(),
            error: None,
            log: LogSink::default(),
        })
    }

    /// Bound of each partition's overflow queue, in events (default
    /// [`DEFAULT_MAX_QUEUE`]; at least 1). Demand that could overfill a queue is held
    /// back instead of forwarded upstream until queues drain. It also bounds the
    /// demand in flight upstream, so keep it at least the consumers' summed
    /// `max_demand` for full throughput.
    pub fn max_queue(mut self, events: usize) -> Self {
        self.max_queue = events.max(1);
        self
    }

    /// A handle on the dispatcher's counters, readable from any thread.
    pub fn stats(&self) -> PartitionStats {
        self.stats.clone()
    }

    /// Demand forwarded upstream and not yet dispatched (GenStage's `waiting`).
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Demand of consumers that left, already forwarded upstream (`pending`).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Demand held back by the queue bound.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Events queued for `partition` (0 if unknown).
    pub fn queued(&self, partition: impl Into<PartitionKey>) -> usize {
        match self.position(&partition.into()) {
            Some(i) => match &self.partitions[i].state {
                State::Queue { events, .. } => *events,
                State::Demand(_) => 0,
            },
            None => 0,
        }
    }

    fn position(&self, key: &PartitionKey) -> Option<usize> {
        match (&self.names, key) {
            (_, PartitionKey::Index(i)) if *i < self.partitions.len() => Some(*i),
            (Partitions::Names(_), PartitionKey::Name(_)) => self.index.get(key).copied(),
            _ => None,
        }
    }

    /// Events that may still be requested upstream without letting any partition's
    /// queue exceed `max_queue`, even if every one of them hashed to that partition.
    fn headroom(&self) -> usize {
        self.max_queue
            .saturating_sub(self.longest_queue().saturating_add(self.waiting))
    }

    /// The partition whose consumer has subscription `tag`.
    fn partition_of_subscription(&self, tag: Tag) -> Option<usize> {
        self.partitions
            .iter()
            .position(|p| p.sub.as_ref().is_some_and(|s| s.tag == tag))
    }

    /// Events in the longest partition queue.
    fn longest_queue(&self) -> usize {
        self.partitions
            .iter()
            .map(|p| match p.state {
                State::Queue { events, .. } => events,
                State::Demand(_) => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// Applies the queue bound to `forward` demand (plus what was held before):
    /// forwards what fits in the headroom, holds the rest.
    fn bound(&mut self, forward: usize) -> usize {
        let total = forward.saturating_add(std::mem::take(&mut self.held));
        let now = total.min(self.headroom());
        self.held = total - now;
        now
    }

    fn publish(&self) {
        let mut queued = 0;
        let mut max = 0;
        for p in &self.partitions {
            if let State::Queue { events, .. } = p.state {
                queued += events;
                max = max.max(events);
            }
        }
        let s = &self.stats.inner;
        s.queued.store(queued as u64, Ordering::Relaxed);
        if max as u64 > s.max_queued.load(Ordering::Relaxed) {
            s.max_queued.store(max as u64, Ordering::Relaxed);
        }
        s.held.store(self.held as u64, Ordering::Relaxed);
    }

    /// Demand is held back and a partition without a consumer has the longest queue:
    /// it stalls every partition until a consumer subscribes to it. Said once per
    /// partition (until it gets a consumer) and counted in the stage's metrics. Costs
    /// nothing unless demand is held.
    fn report_stall(&mut self) {
        if self.held == 0 {
            return;
        }
        let longest = self.longest_queue();
        for i in 0..self.partitions.len() {
            let p = &mut self.partitions[i];
            let State::Queue { events, .. } = p.state else {
                continue;
            };
            if p.sub.is_some() || p.stall_reported || events < longest {
                continue;
            }
            p.stall_reported = true;
            self.stalls.add(1);
            self.log.log(
                Level::Warning,
                format!(
                    "partition {} has no consumer and {events} events wait in its queue \
                     (max_queue {}): demand is held back, so every partition stalls until a \
                     consumer subscribes to partition {}",
                    self.names.key(i),
                    self.max_queue,
                    self.names.key(i),
                ),
            );
        }
    }

    /// An info marker of partition `p` was passed (sent or dropped).
    fn passed_info(&mut self, id: u64) {
        if let Some((_, left)) = self.infos.get_mut(&id) {
            *left -= 1;
            if *left == 0 {
                if let Some((info, _)) = self.infos.remove(&id) {
                    info.deliver();
                }
            }
        }
    }

    /// Sends up to `n` queued events of partition `i` (GenStage's `send_from_queue`).
    fn send_from_queue(&mut self, i: usize, mut n: usize) {
        let State::Queue { slots, events } = &mut self.partitions[i].state else {
            return;
        };
        let mut slots = std::mem::take(slots);
        let mut count = *events;
        let mut batch = Vec::new();
        let mut passed = Vec::new();
        let sub = self.partitions[i].sub.clone();
        let flush = |batch: &mut Vec<T>| {
            if !batch.is_empty() {
                if let Some(s) = &sub {
                    s.send(std::mem::take(batch));
                }
            }
        };
        let drained = loop {
            if n == 0 {
                break false;
            }
            match slots.pop_front() {
                Some(Slot::Event(e)) => {
                    batch.push(e);
                    count -= 1;
                    n -= 1;
                }
                Some(Slot::Info(id)) => {
                    flush(&mut batch);
                    passed.push(id);
                }
                None => break true,
            }
        };
        flush(&mut batch);
        self.partitions[i].state = if drained {
            State::Demand(n)
        } else {
            State::Queue {
                slots,
                events: count,
            }
        };
        for id in passed {
            self.passed_info(id);
        }
    }
}

impl<T, H> Dispatcher<T> for PartitionDispatcher<T, H>
where
    T: Send + 'static,
    H: Fn(T) -> Option<(T, PartitionKey)> + Send + 'static,
{
    fn subscribe(
        &mut self,
        sub: Subscriber<T>,
        opts: &SubscribeOptions<T>,
    ) -> Result<usize, Reason> {
        let Some(key) = opts.partition_key() else {
            return Err(Reason::custom(
                "the partition option is required when subscribing to a producer with \
                 partition dispatcher",
            ));
        };
        let Some(i) = self.position(key) else {
            return Err(Reason::custom(format!(
                "partition must be one of {}, got: {key}",
                self.names.describe()
            )));
        };
        if let Some(taken) = &self.partitions[i].sub {
            return Err(Reason::custom(format!(
                "the partition {key} is already taken by consumer #{} (subscription {})",
                taken.consumer_id, taken.tag
            )));
        }
        self.partitions[i].sub = Some(sub);
        self.partitions[i].stall_reported = false;
        Ok(0)
    }

    fn cancel(&mut self, tag: Tag) -> usize {
        let Some(i) = self.partition_of_subscription(tag) else {
            return 0;
        };
        let p = &mut self.partitions[i];
        p.sub = None;
        let forward = match std::mem::replace(&mut p.state, State::Demand(0)) {
            State::Demand(d) => {
                self.pending = self.pending.saturating_add(d);
                self.bound(0)
            }
            State::Queue { slots, events } => {
                // The queued events are dropped; the demand they used is asked again.
                let mut passed = Vec::new();
                for slot in slots {
                    if let Slot::Info(id) = slot {
                        passed.push(id);
                    }
                }
                for id in passed {
                    self.passed_info(id);
                }
                if events > 0 {
                    self.stats
                        .inner
                        .discarded
                        .fetch_add(events as u64, Ordering::Relaxed);
                    self.log.log(
                        Level::Warning,
                        format!(
                            "partition {} lost its consumer; {events} queued events were discarded",
                            self.names.key(i)
                        ),
                    );
                }
                self.bound(events)
            }
        };
        self.waiting = self.waiting.saturating_add(forward);
        self.report_stall();
        self.publish();
        forward
    }

    fn ask(&mut self, tag: Tag, n: usize) -> usize {
        let Some(i) = self.partition_of_subscription(tag) else {
            return 0;
        };
        match &mut self.partitions[i].state {
            State::Demand(d) => *d = d.saturating_add(n),
            State::Queue { .. } => self.send_from_queue(i, n),
        }
        let already = self.pending.min(n);
        self.pending -= already;
        let forward = self.bound(n - already);
        self.waiting = self.waiting.saturating_add(forward);
        self.report_stall();
        self.publish();
        forward
    }

    fn dispatch(&mut self, events: Vec<T>) -> Vec<T> {
        if self.waiting == 0 {
            return events;
        }
        let per_partition = (events.len().min(self.waiting) / self.partitions.len()).max(16);
        for p in &mut self.partitions {
            p.staged.reserve(per_partition + per_partition / 4);
        }
        let mut iter = events.into_iter();
        let mut waiting = self.waiting;
        let mut discarded = 0u64;
        let mut error = None;
        {
            let hash = &self.hash;
            let names = &self.names;
            let index = &self.index;
            let partitions = &mut self.partitions;
            let n = partitions.len();
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                while waiting > 0 {
                    let Some(event) = iter.next() else { break };
                    match hash(event) {
                        None => discarded += 1,
                        Some((event, key)) => {
                            let at = match (&key, names) {
                                (PartitionKey::Index(i), _) if *i < n => Some(*i),
                                (PartitionKey::Name(_), Partitions::Names(_)) => {
                                    index.get(&key).copied()
                                }
                                _ => None,
                            };
                            match at {
                                Some(i) => {
                                    partitions[i].staged.push(event);
                                    waiting -= 1;
                                }
                                None => {
                                    discarded += 1;
                                    return Err(Reason::custom(format!(
                                        "unknown partition {key} computed for an event. The \
                                         known partitions are {}. This event has been discarded.",
                                        names.describe()
                                    )));
                                }
                            }
                        }
                    }
                }
                Ok(())
            }));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => error = Some(reason),
                Err(payload) => {
                    discarded += 1;
                    error = Some(Reason::Panic(
                        format!(
                            "the partition hash panicked: {}",
                            crate::panic::message(payload.as_ref())
                        )
                        .into(),
                    ))
                }
            }
        }
        self.waiting = waiting;
        if discarded > 0 {
            self.stats
                .inner
                .discarded
                .fetch_add(discarded, Ordering::Relaxed);
        }
        if let Some(reason) = error {
            self.log.log(Level::Error, reason.to_string());
            self.error = Some(reason);
        }
        for p in &mut self.partitions {
            if p.staged.is_empty() {
                continue;
            }
            let mut staged = std::mem::take(&mut p.staged);
            match &mut p.state {
                State::Demand(d) => {
                    let d0 = *d;
                    if staged.len() <= d0 {
                        *d -= staged.len();
                        if let Some(s) = &p.sub {
                            s.send(staged);
                        }
                    } else {
                        let rest = staged.split_off(d0);
                        if d0 > 0 {
                            if let Some(s) = &p.sub {
                                s.send(staged);
                            }
                        }
                        p.state = State::Queue {
                            events: rest.len(),
                            slots: rest.into_iter().map(Slot::Event).collect(),
                        };
                    }
                }
                State::Queue { slots, events } => {
                    *events += staged.len();
                    slots.extend(staged.drain(..).map(Slot::Event));
                    // Keep the allocation for the next call.
                    p.staged = staged;
                }
            }
        }
        // Events went straight to consumers or into queues: demand held back may fit
        // now. It is handed to the stage through `take_demand`.
        if self.held > 0 {
            let now = self.bound(0);
            self.waiting += now;
            self.release += now;
        }
        self.report_stall();
        self.publish();
        iter.collect()
    }

    fn info(&mut self, info: PendingInfo) {
        let mut backed_up = 0;
        for p in &mut self.partitions {
            if let State::Queue { slots, .. } = &mut p.state {
                slots.push_back(Slot::Info(info.id));
                backed_up += 1;
            }
        }
        if backed_up == 0 {
            info.deliver();
        } else {
            self.infos.insert(info.id, (info, backed_up));
        }
    }

    fn set_log(&mut self, log: LogSink) {
        self.log = log;
    }

    fn set_stall_counter(&mut self, counter: StallCounter) {
        self.stalls = counter;
    }

    fn take_error(&mut self) -> Option<Reason> {
        self.error.take()
    }

    fn take_demand(&mut self) -> usize {
        std::mem::take(&mut self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::partition_of;

    /// A fixed seed, no per-process randomness: these values were computed once by
    /// the same function and hold in every process of a 64-bit build (a random seed, as
    /// std's `RandomState`, fails this).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn partition_of_is_the_same_in_every_process() {
        assert_eq!(partition_of(&42u64, 1 << 16), 63827);
        assert_eq!(partition_of("word", 1 << 16), 21502);
        assert_eq!(partition_of(&(7u32, "k"), 1 << 16), 39075);
    }

    /// Integer keys differing only in their high bits must not share a partition: Fx
    /// alone leaves those bits out of the top of its output, which the range reduction
    /// reads (all 100 keys landed in one partition before the final mix).
    #[test]
    fn partition_of_spreads_keys_that_differ_in_high_bits() {
        let mut counts = [0usize; 2];
        for k in 0..100u64 {
            counts[partition_of(&(k << 40), 2)] += 1;
        }
        assert!(counts.iter().all(|&c| c >= 30), "{counts:?}");
    }

    #[test]
    fn partition_of_stays_in_range() {
        for n in 1..20 {
            for k in 0..200u32 {
                assert!(partition_of(&k, n) < n);
            }
        }
        assert_eq!(partition_of(&u64::MAX, 1), 0);
    }
}
