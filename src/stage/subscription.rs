//! Subscription options, cancel modes and the consumer's demand rule.

use std::fmt;
use std::sync::Arc;

use crate::error::OptionsError;
use crate::stage::mailbox::UpstreamControl;
use crate::stage::reason::{Reason, Tag};

/// What a consumer does when one of its subscriptions ends (GenStage's `:cancel`).
///
/// ```
/// assert_eq!(stageflow::CancelMode::default(), stageflow::CancelMode::Permanent);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CancelMode {
    /// The consumer stops with the subscription's reason, whatever it is (the default).
    /// The one exception is [`Reason::AlreadySubscribed`], which never stops a consumer.
    #[default]
    Permanent,
    /// The consumer stops unless the reason is normal ([`Reason::is_normal`]).
    Transient,
    /// The consumer never stops because a subscription ended.
    Temporary,
}

impl CancelMode {
    /// Whether a consumer with this mode stops when a subscription ends with `reason`.
    ///
    /// ```
    /// use stageflow::{CancelMode, Reason};
    /// assert!(CancelMode::Permanent.stops_on(&Reason::Normal));
    /// assert!(!CancelMode::Transient.stops_on(&Reason::Shutdown));
    /// assert!(CancelMode::Transient.stops_on(&Reason::Killed));
    /// assert!(!CancelMode::Temporary.stops_on(&Reason::Killed));
    /// ```
    pub fn stops_on(self, reason: &Reason) -> bool {
        if *reason == Reason::AlreadySubscribed {
            return false;
        }
        match self {
            CancelMode::Permanent => true,
            CancelMode::Transient => !reason.is_normal(),
            CancelMode::Temporary => false,
        }
    }
}

/// Whether a consumer's subscription asks for events by itself (GenStage's
/// `{:automatic, state}`) or only when the consumer calls
/// [`SubscriptionRef::ask`] (`{:manual, state}`).
///
/// ```
/// assert_eq!(stageflow::Demand::default(), stageflow::Demand::Automatic);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Demand {
    /// The consumer asks `max_demand` at once and re-asks by GenStage's rule.
    #[default]
    Automatic,
    /// The consumer asks explicitly; each message of events is handled as one batch.
    Manual,
}

/// The name of a partition of a partition dispatcher: an index or a name.
///
/// ```
/// use stageflow::PartitionKey;
/// assert_eq!(PartitionKey::from(1), PartitionKey::Index(1));
/// assert_eq!(PartitionKey::from("odd"), PartitionKey::Name("odd".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PartitionKey {
    /// Partition number `n` of `0..partitions`.
    Index(usize),
    /// A named partition.
    Name(Arc<str>),
}

impl From<usize> for PartitionKey {
    fn from(i: usize) -> Self {
        PartitionKey::Index(i)
    }
}

impl From<&str> for PartitionKey {
    fn from(s: &str) -> Self {
        PartitionKey::Name(Arc::from(s))
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionKey::Index(i) => write!(f, "{i}"),
            PartitionKey::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// A per-consumer filter for a broadcast dispatcher: only events for which it returns
/// true are sent to that consumer.
pub type Selector<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// Options of one subscription (GenStage's subscription options).
///
/// Defaults: `max_demand` 1000, `min_demand` `max_demand / 2`, `cancel`
/// [`CancelMode::Permanent`]. `partition` and `selector` are read by the partition and
/// broadcast dispatchers.
///
/// ```
/// use stageflow::{CancelMode, SubscribeOptions};
/// let o = SubscribeOptions::<u64>::new().max_demand(100).cancel(CancelMode::Temporary);
/// assert_eq!(o.validate().unwrap(), (100, 50));
/// let bad = SubscribeOptions::<u64>::new().max_demand(0);
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "expected max_demand to be equal to or greater than 1, got: 0"
/// );
/// ```
pub struct SubscribeOptions<T> {
    pub(crate) max_demand: usize,
    pub(crate) min_demand: Option<usize>,
    pub(crate) cancel: CancelMode,
    pub(crate) partition: Option<PartitionKey>,
    pub(crate) selector: Option<Selector<T>>,
}

impl<T> Clone for SubscribeOptions<T> {
    fn clone(&self) -> Self {
        SubscribeOptions {
            max_demand: self.max_demand,
            min_demand: self.min_demand,
            cancel: self.cancel,
            partition: self.partition.clone(),
            selector: self.selector.clone(),
        }
    }
}

impl<T> fmt::Debug for SubscribeOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeOptions")
            .field("max_demand", &self.max_demand)
            .field("min_demand", &self.min_demand)
            .field("cancel", &self.cancel)
            .field("partition", &self.partition)
            .field("selector", &self.selector.as_ref().map(|_| "fn"))
            .finish()
    }
}

impl<T> Default for SubscribeOptions<T> {
    fn default() -> Self {
        SubscribeOptions {
            max_demand: 1000,
            min_demand: None,
            cancel: CancelMode::Permanent,
            partition: None,
            selector: None,
        }
    }
}

impl<T> SubscribeOptions<T> {
    /// The defaults (1000 / 500 / permanent).
    pub fn new() -> Self {
        Self::default()
    }
    /// Most events the consumer has outstanding at once (≥ 1; default 1000).
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = n;
        self
    }
    /// Re-ask threshold (< `max_demand`; default `max_demand / 2`).
    pub fn min_demand(mut self, n: usize) -> Self {
        self.min_demand = Some(n);
        self
    }
    /// What the consumer does when this subscription ends (default permanent).
    pub fn cancel(mut self, mode: CancelMode) -> Self {
        self.cancel = mode;
        self
    }
    /// The partition to subscribe to (partition dispatcher).
    pub fn partition(mut self, key: impl Into<PartitionKey>) -> Self {
        self.partition = Some(key.into());
        self
    }
    /// A filter for this consumer (broadcast dispatcher).
    pub fn selector(mut self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.selector = Some(Arc::new(f));
        self
    }
    /// The cancel mode.
    pub fn cancel_mode(&self) -> CancelMode {
        self.cancel
    }
    /// The partition, if one was given.
    pub fn partition_key(&self) -> Option<&PartitionKey> {
        self.partition.as_ref()
    }
    /// The selector, if one was given.
    pub fn selector_fn(&self) -> Option<&Selector<T>> {
        self.selector.as_ref()
    }

    /// Checks the demand options and returns `(max_demand, min_demand)` with the
    /// default applied, or GenStage's error message with Rust names.
    pub fn validate(&self) -> Result<(usize, usize), OptionsError> {
        if self.max_demand < 1 {
            return Err(OptionsError::new(format!(
                "expected max_demand to be equal to or greater than 1, got: {}",
                self.max_demand
            )));
        }
        let min = self.min_demand.unwrap_or(self.max_demand / 2);
        if min > self.max_demand - 1 {
            return Err(OptionsError::new(format!(
                "expected min_demand to be equal to or less than {}, got: {}",
                self.max_demand - 1,
                min
            )));
        }
        Ok((self.max_demand, min))
    }

    /// The options without the event-typed selector, as callbacks see them.
    pub(crate) fn info(&self, tag: Tag) -> Result<SubscriptionInfo, OptionsError> {
        let (max_demand, min_demand) = self.validate()?;
        Ok(SubscriptionInfo {
            tag,
            max_demand,
            min_demand,
            cancel: self.cancel,
            partition: self.partition.clone(),
        })
    }
}

/// What `handle_subscribe` learns about a new subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The subscription's tag.
    pub tag: Tag,
    /// Its `max_demand`.
    pub max_demand: usize,
    /// Its `min_demand` (default applied).
    pub min_demand: usize,
    /// Its cancel mode.
    pub cancel: CancelMode,
    /// The partition asked for, if any.
    pub partition: Option<PartitionKey>,
}

/// One subscription as seen from either side (GenStage's `from`): its tag and the
/// producer's address. A consumer uses it to [`ask`](SubscriptionRef::ask) for events
/// (manual demand) or to [`cancel`](SubscriptionRef::cancel) the subscription; a
/// producer can cancel it too.
#[derive(Clone)]
pub struct SubscriptionRef {
    pub(crate) tag: Tag,
    pub(crate) producer: Arc<dyn UpstreamControl>,
}

impl fmt::Debug for SubscriptionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubscriptionRef({})", self.tag)
    }
}

impl PartialEq for SubscriptionRef {
    fn eq(&self, other: &Self) -> bool {
        self.tag == other.tag
    }
}

impl SubscriptionRef {
    /// The subscription's tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// Asks the producer for `n` more events (GenStage's `ask/3`), for subscriptions in
    /// [`Demand::Manual`] mode. `ask(0)` does nothing. Returns false when the producer
    /// is no longer alive.
    pub fn ask(&self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        self.producer.ask(self.tag, n)
    }

    /// Cancels the subscription with `reason` (GenStage's `cancel/3`). May be called
    /// from any thread; the producer confirms the cancel to the consumer, which then
    /// reacts by its cancel mode. Returns false when the producer is no longer alive.
    pub fn cancel(&self, reason: Reason) -> bool {
        self.producer.cancel(self.tag, reason)
    }
}

/// Demand accounting of one automatic subscription: GenStage's `split_batches`
/// (`docs/DESIGN.md`, "The demand protocol"), which the tests check to the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DemandState {
    /// Events asked for and not yet received.
    pub(crate) demand: usize,
    pub(crate) min: usize,
    pub(crate) max: usize,
}

/// One slice of an incoming message: `len` events, then ask `ask` (0: none).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct BatchPlan {
    pub(crate) len: usize,
    pub(crate) ask: usize,
}

impl DemandState {
    pub(crate) fn new(max: usize, min: usize) -> DemandState {
        DemandState {
            demand: max,
            min,
            max,
        }
    }

    /// Plans the next batch out of `remaining` received events. Returns the plan and
    /// the number of events received in excess of demand (logged by the caller; the
    /// events are still delivered, as GenStage does).
    pub(crate) fn next_batch(&mut self, remaining: usize) -> (BatchPlan, usize) {
        let len = remaining.min(self.max - self.min);
        let (counted, excess) = if len > self.demand {
            (self.demand, len - self.demand)
        } else {
            (len, 0)
        };
        let d = self.demand - counted;
        let ask = if d <= self.min {
            self.demand = self.max;
            self.max - d
        } else {
            self.demand = d;
            0
        };
        (BatchPlan { len, ask }, excess)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(max: usize, min: usize, messages: &[usize]) -> Vec<(usize, usize)> {
        let mut s = DemandState::new(max, min);
        let mut out = vec![];
        for &m in messages {
            let mut left = m;
            while left > 0 {
                let (p, _) = s.next_batch(left);
                out.push((p.len, p.ask));
                left -= p.len;
            }
        }
        out
    }

    #[test]
    fn default_demand_splits_in_halves() {
        assert_eq!(plan(1000, 500, &[1000]), vec![(500, 500), (500, 500)]);
    }

    #[test]
    fn twenty_percent_min() {
        // [0..79] ask 80, [80..99] no ask, [100..179] ask 100, [180..259] ask 80, ...
        assert_eq!(
            plan(100, 20, &[100, 80, 100]),
            vec![(80, 80), (20, 0), (80, 100), (80, 80), (20, 0)]
        );
    }

    #[test]
    fn docs_discrepancy_follows_code() {
        // max 1000 / min 750, producer sends 100 at a time: third message asks 300.
        assert_eq!(
            plan(1000, 750, &[100, 100, 100]),
            vec![(100, 0), (100, 0), (100, 300)]
        );
    }
}
