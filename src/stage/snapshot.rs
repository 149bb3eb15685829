//! Snapshots of a topology: every stage with its counters, every subscription with
//! its options, taken in one call ([`PipelineHandle::snapshot`](crate::pipeline::PipelineHandle::snapshot))
//! and drawn by [`TopologySnapshot::to_dot`] and [`TopologySnapshot::to_mermaid`].

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::handle::Shared;
use super::metrics::{NamedMetric, StageMetrics};
use super::reason::{Kind, Tag};
use super::subscription::SubscriptionInfo;
use super::CancelMode;

/// Ended subscriptions a producer remembers, newest last, so that a finished
/// pipeline can still be drawn; older ones are forgotten (a stage that resubscribes
/// forever must not grow).
const ENDED_KEPT: usize = 64;

/// One subscription of a consumer to a producer.
///
/// ```
/// use stageflow::prelude::*;
///
/// let mut topology = Topology::new();
/// let numbers = topology.from_iter(0..4u64, FromIterOptions::new().name("numbers"))?;
/// let out = topology.stream(&numbers, SubscribeOptions::new().max_demand(2).cancel(CancelMode::Temporary))?;
/// let snapshot = topology.handle().snapshot();
/// let s = &snapshot.subscriptions[0];
/// assert_eq!((s.max_demand, s.min_demand, s.cancel, s.active), (2, 1, CancelMode::Temporary, true));
/// assert_eq!(s.producer, snapshot.stage("numbers").unwrap().id);
/// topology.start()?;
/// assert_eq!(out.count(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SubscriptionSnapshot {
    /// The subscription's tag ([`Tag::id`]).
    pub tag: u64,
    /// The producing stage's id.
    pub producer: u64,
    /// The consuming stage's id (a [`StageStream`](crate::StageStream) has one too).
    pub consumer: u64,
    /// Its `max_demand`.
    pub max_demand: usize,
    /// Its `min_demand`.
    pub min_demand: usize,
    /// What the consumer does when it ends.
    pub cancel: CancelMode,
    /// The partition it takes from a partition dispatcher, as written in logs
    /// (`0`, `"odd"`).
    pub partition: Option<String>,
    /// False once it ended (a snapshot keeps the last ones that ended, so that a
    /// finished pipeline still shows its wiring).
    pub active: bool,
}

/// The subscriptions a producer serves, kept in its shared state. The consumer
/// records a subscription as it sends it (so a topology is whole in a snapshot as
/// soon as it is wired); the producer records its end. Locked at those moments and
/// for snapshots: never on the data path.
#[derive(Default)]
pub(crate) struct SubscriptionLog {
    entries: Mutex<Vec<SubscriptionSnapshot>>,
}

impl SubscriptionLog {
    pub(crate) fn subscribed(&self, producer: u64, consumer: u64, info: &SubscriptionInfo) {
        self.entries.lock().push(SubscriptionSnapshot {
            tag: info.tag.id(),
            producer,
            consumer,
            max_demand: info.max_demand,
            min_demand: info.min_demand,
            cancel: info.cancel,
            partition: info.partition.as_ref().map(|p| p.to_string()),
            active: true,
        });
    }

    pub(crate) fn ended(&self, tag: Tag) {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.iter_mut().find(|e| e.tag == tag.id()) {
            e.active = false;
        }
        Self::forget_old(&mut entries);
    }

    /// A subscription that was never sent (its producer was gone).
    pub(crate) fn forget(&self, tag: Tag) {
        self.entries.lock().retain(|e| e.tag != tag.id());
    }

    /// The stage exited: none of its subscriptions is active any more.
    pub(crate) fn all_ended(&self) {
        let mut entries = self.entries.lock();
        for e in entries.iter_mut() {
            e.active = false;
        }
        Self::forget_old(&mut entries);
    }

    fn forget_old(entries: &mut Vec<SubscriptionSnapshot>) {
        let ended = entries.iter().filter(|e| !e.active).count();
        if ended > ENDED_KEPT {
            let mut drop = ended - ENDED_KEPT;
            entries.retain(|e| {
                if !e.active && drop > 0 {
                    drop -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn list(&self) -> Vec<SubscriptionSnapshot> {
        self.entries.lock().clone()
    }
}

/// One stage in a [`TopologySnapshot`].
///
/// ```
/// use std::time::Duration;
/// use stageflow::prelude::*;
///
/// let mut topology = Topology::new();
/// let numbers = topology.from_iter(0..4u64, FromIterOptions::new().name("numbers"))?;
/// let out = topology.stream(&numbers, SubscribeOptions::new())?;
/// let handle = topology.handle();
/// // The source ends once the stream has its 4 events.
/// assert!(topology.start()?.wait(Duration::from_secs(30)).is_complete());
/// assert_eq!(out.count(), 4);
/// let numbers = handle.snapshot().stage("numbers").unwrap().clone();
/// assert_eq!((numbers.kind, numbers.metrics.events_out), (stageflow::Kind::Producer, 4));
/// assert_eq!(numbers.dispatcher.as_deref(), Some("DemandDispatcher"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StageSnapshot {
    /// The stage's unique id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The type of its dispatcher (`DemandDispatcher`, `PartitionDispatcher`, ...):
    /// `None` for consumers.
    pub dispatcher: Option<String>,
    /// Whether it still runs.
    pub alive: bool,
    /// Its exit reason, once it has exited.
    pub exit: Option<String>,
    /// The runtime's counters.
    pub metrics: StageMetrics,
    /// What the stage published itself ([`Counter`](crate::observe::Counter),
    /// [`Gauge`](crate::observe::Gauge)), in registration order.
    pub published: Vec<NamedMetric>,
}

impl StageSnapshot {
    /// The value of the counter or gauge the stage published as `name`.
    ///
    /// ```
    /// use stageflow::prelude::*;
    /// use stageflow::pipeline::Pipeline;
    /// # struct Idle;
    /// # impl Stage for Idle { type In = Never; type Out = u64; }
    /// # impl Producer for Idle { fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {} }
    /// let source = start_producer(Idle, ProducerOptions::new().name("broker"))?;
    /// source.counter("redelivered", "Entries delivered again")?.add(3);
    /// let snapshot = Pipeline::new().stage(&source).handle().snapshot();
    /// assert_eq!(snapshot.stage("broker").unwrap().published("redelivered"), Some(3.0));
    /// source.stop(Reason::Normal)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn published(&self, name: &str) -> Option<f64> {
        self.published
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value.as_f64())
    }
}

/// The stages of a pipeline and their subscriptions at one moment, with every
/// counter: what [`PipelineHandle::snapshot`](crate::pipeline::PipelineHandle::snapshot)
/// returns. Draw it with [`to_dot`](Self::to_dot) or [`to_mermaid`](Self::to_mermaid);
/// with the `serde` feature it serializes.
///
/// ```
/// use stageflow::prelude::*;
///
/// let mut topology = Topology::new();
/// let numbers = topology.from_iter(0..4u64, FromIterOptions::new().name("numbers"))?;
/// let out = topology.stream(&numbers, SubscribeOptions::new())?;
/// let snapshot = topology.handle().snapshot();
/// assert_eq!(snapshot.stages.len(), 1); // the stream is not a stage of the pipeline
/// assert_eq!(snapshot.subscriptions.len(), 1); // but its subscription is known
/// assert!(snapshot.subscriptions_between("numbers", "nobody").is_empty());
/// topology.start()?;
/// assert_eq!(out.count(), 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TopologySnapshot {
    /// When it was taken, on a monotonic clock that starts with the process's first
    /// snapshot or stage: the difference between two snapshots is the time between
    /// them (for rates).
    pub at: Duration,
    /// The stages, in pipeline order (sources first).
    pub stages: Vec<StageSnapshot>,
    /// The subscriptions served by these stages, by producer in pipeline order.
    pub subscriptions: Vec<SubscriptionSnapshot>,
}

impl TopologySnapshot {
    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageSnapshot> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The subscriptions from the stage named `producer` to the stage named
    /// `consumer` (both must be stages of the snapshot).
    pub fn subscriptions_between(
        &self,
        producer: &str,
        consumer: &str,
    ) -> Vec<&SubscriptionSnapshot> {
        let (Some(p), Some(c)) = (self.stage(producer), self.stage(consumer)) else {
            return Vec::new();
        };
        self.subscriptions
            .iter()
            .filter(|s| s.producer == p.id && s.consumer == c.id)
            .collect()
    }
}

/// The clock of [`TopologySnapshot::at`].
pub(crate) fn clock() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The snapshot of one stage and the subscriptions it serves.
pub(crate) fn stage_snapshot(shared: &Shared) -> (StageSnapshot, Vec<SubscriptionSnapshot>) {
    let exit = shared.exit_reason();
    let mut subscriptions = shared.subscriptions.list();
    if exit.is_some() {
        // A subscription sent as the producer exited was never served.
        for s in &mut subscriptions {
            s.active = false;
        }
    }
    let stage = StageSnapshot {
        id: shared.id,
        name: shared.name.to_string(),
        kind: shared.kind,
        dispatcher: shared.dispatcher.map(str::to_string),
        alive: exit.is_none(),
        exit: exit.map(|r| r.to_string()),
        metrics: shared.metrics.snapshot(),
        published: shared.metrics.published(),
    };
    (stage, subscriptions)
}

/// The short name of a dispatcher type: `PartitionDispatcher` for
/// `stageflow::stage::dispatcher::partition::PartitionDispatcher<u64, ...>`.
pub(crate) fn short_type_name(full: &'static str) -> &'static str {
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_shortened() {
        assert_eq!(
            short_type_name("stageflow::stage::dispatcher::partition::PartitionDispatcher<u64, alloc::sync::Arc<dyn Fn(&u64)>>"),
            "PartitionDispatcher"
        );
        assert_eq!(short_type_name("Mine"), "Mine");
    }

    #[test]
    fn ended_subscriptions_are_bounded() {
        let log = SubscriptionLog::default();
        for _ in 0..(ENDED_KEPT + 10) {
            let tag = Tag::new();
            let info = SubscriptionInfo {
                tag,
                max_demand: 10,
                min_demand: 5,
                cancel: CancelMode::Permanent,
                partition: None,
            };
            log.subscribed(1, 2, &info);
            log.ended(tag);
        }
        let live = Tag::new();
        log.subscribed(
            1,
            3,
            &SubscriptionInfo {
                tag: live,
                max_demand: 1,
                min_demand: 0,
                cancel: CancelMode::Temporary,
                partition: Some(2.into()),
            },
        );
        let list = log.list();
        assert_eq!(list.len(), ENDED_KEPT + 1);
        let last = list.last().unwrap();
        assert!(last.active && last.partition.as_deref() == Some("2"));
        log.all_ended();
        assert!(log.list().iter().all(|s| !s.active));
    }
}
