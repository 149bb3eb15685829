//! Dispatchers: how a producer spreads its events over its consumers.
//!
//! A dispatcher is owned by one producer (or producer-consumer) and runs on its thread.
//! It learns about subscriptions, cancels and asks, tells the stage how much demand to
//! serve, and sends events to consumers itself. This is GenStage's
//! `GenStage.Dispatcher` behaviour with Rust types:
//! events that cannot be delivered are handed back as leftovers and go to the
//! producer's buffer.
//!
//! [`DemandDispatcher`] is the default; [`BroadcastDispatcher`] sends every event to
//! every consumer, [`PartitionDispatcher`] each event to one partition and
//! [`FairDispatcher`] spreads events evenly over consumers with different demands. Every dispatcher can be tested on its own with
//! a [`Probe`], which records what the dispatcher sent.

mod broadcast;
mod demand;
mod demands;
mod fair;
mod partition;
mod probe;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use broadcast::BroadcastDispatcher;
pub use demand::{DemandDispatcher, DemandDispatcherOptions};
pub use fair::FairDispatcher;
pub(crate) use partition::partition_of;
pub use partition::{HashFn, PartitionDispatcher, PartitionStats, Partitions, DEFAULT_MAX_QUEUE};
pub use probe::{Probe, Received};

use super::log::LogSink;
use super::mailbox::{DispatcherOwner, Downstream};
use super::reason::{Reason, Tag};
use super::subscription::SubscribeOptions;

/// How a producer hands events to its consumers.
///
/// The stage calls these methods on its own thread, in the order the protocol events
/// happen. Demand values returned are what the stage must now serve: first from its
/// buffer, then by calling `handle_demand`.
pub trait Dispatcher<T: Send + 'static>: Send + 'static {
    /// A consumer subscribed. Returns demand to serve now (the built-in dispatchers
    /// return 0), or a reason to reject the subscription: the consumer then receives
    /// a cancel with that reason and the producer keeps running.
    fn subscribe(
        &mut self,
        subscriber: Subscriber<T>,
        opts: &SubscribeOptions<T>,
    ) -> Result<usize, Reason>;

    /// The subscription `tag` ended. Returns demand to serve now. Called only for
    /// subscriptions that `subscribe` accepted.
    fn cancel(&mut self, tag: Tag) -> usize;

    /// The consumer of `tag` asked for `n > 0` more events. Returns demand to serve.
    fn ask(&mut self, tag: Tag, n: usize) -> usize;

    /// Sends what it can of `events` (never empty) to consumers and returns the rest,
    /// in order, which the producer buffers.
    fn dispatch(&mut self, events: Vec<T>) -> Vec<T>;

    /// Delivers `info` to the stage's `handle_info` once every event the dispatcher
    /// holds internally has been sent. The default delivers it at once.
    fn info(&mut self, info: PendingInfo) {
        info.deliver();
    }

    /// The owning stage hands over its log sink when it starts, so the dispatcher's
    /// warnings go where the stage's go. The default ignores it.
    fn set_log(&mut self, log: LogSink) {
        let _ = log;
    }

    /// The owning stage hands over the counter behind
    /// [`StageMetrics::stalls`](crate::StageMetrics::stalls) when it starts. The
    /// default ignores it.
    fn set_stall_counter(&mut self, counter: StallCounter) {
        let _ = counter;
    }

    /// An error that must stop the owning stage, such as a partition hash that
    /// panicked or named an unknown partition. The stage checks it after every
    /// `dispatch` and stops with the reason (GenStage would crash the producer inside
    /// the dispatcher). The default never reports one.
    fn take_error(&mut self) -> Option<Reason> {
        None
    }

    /// Demand the dispatcher released on its own during `dispatch` (demand it had
    /// held back, e.g. while a partition queue was full). The stage checks it after
    /// every `dispatch` and serves it like demand returned by `ask`, from its mailbox
    /// (never recursively). The default never releases any.
    fn take_demand(&mut self) -> usize {
        0
    }

    /// Events the dispatcher would deliver now, beyond the demand it last reported to
    /// the stage. After every `subscribe`, `ask` and `cancel`, a producer whose buffer
    /// holds events offers up to this many of them to `dispatch`, even when the
    /// reported demand was 0. The default is 0 (nothing beyond reported demand).
    ///
    /// A dispatcher needs it when it can owe consumers events that were produced for
    /// demand it already forwarded and that are now in the producer's buffer: the
    /// [`BroadcastDispatcher`] after consumers with different `max_demand` subscribed
    /// to a producer in accumulate mode. Such a dispatcher also says so with
    /// [`buffer_in_forwarded_demand`](Self::buffer_in_forwarded_demand).
    fn buffered_demand(&self) -> usize {
        0
    }

    /// Whether the events waiting in the producer's buffer are already counted in the
    /// demand this dispatcher forwarded. It decides how the producer serves the new
    /// demand `subscribe`, `ask` and `cancel` return (and demand stored in
    /// accumulate mode, when it is replayed):
    ///
    /// - `false` (the default, GenStage's rule): buffered events meet new demand
    ///   first, and only the rest goes to `handle_demand`. Right for a dispatcher
    ///   whose returned demand is what its consumers are owed in all, such as the
    ///   [`DemandDispatcher`].
    /// - `true`: new demand is beyond the buffered events, which were produced for
    ///   demand forwarded earlier; all of it goes to `handle_demand`, and the buffer
    ///   is handed out only as [`buffered_demand`](Self::buffered_demand) reports the
    ///   consumers ready for it. Serving new demand from that buffer would count its
    ///   events twice: the producer would owe nothing while the dispatcher waits for
    ///   events nobody makes. The [`BroadcastDispatcher`] works this way.
    ///
    /// ```
    /// use stageflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, Dispatcher};
    /// assert!(!DemandDispatcher::<u32>::new().buffer_in_forwarded_demand());
    /// assert!(BroadcastDispatcher::<u32>::new().buffer_in_forwarded_demand());
    /// ```
    fn buffer_in_forwarded_demand(&self) -> bool {
        false
    }
}

/// Counts the stalls a dispatcher reports: times it stopped asking for events because
/// one of its consumers is missing. The owning stage shows the count as
/// [`StageMetrics::stalls`](crate::StageMetrics::stalls).
///
/// ```
/// use stageflow::dispatcher::StallCounter;
/// let c = StallCounter::default();
/// c.add(1);
/// assert_eq!(c.get(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct StallCounter(pub(crate) Arc<AtomicU64>);

impl StallCounter {
    /// Counts `n` more stalls.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The stalls counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One subscription as a dispatcher sees it: where to send events, and who the
/// consumer is.
pub struct Subscriber<T> {
    pub(crate) tag: Tag,
    pub(crate) consumer_id: u64,
    pub(crate) consumer: Arc<dyn Downstream<T>>,
    pub(crate) owner: Arc<dyn DispatcherOwner>,
}

impl<T> Clone for Subscriber<T> {
    fn clone(&self) -> Self {
        Subscriber {
            tag: self.tag,
            consumer_id: self.consumer_id,
            consumer: self.consumer.clone(),
            owner: self.owner.clone(),
        }
    }
}

impl<T> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("tag", &self.tag)
            .field("consumer_id", &self.consumer_id)
            .finish()
    }
}

impl<T: Send + 'static> Subscriber<T> {
    /// The subscription's tag.
    pub fn tag(&self) -> Tag {
        self.tag
    }

    /// Identifies the consuming stage: two subscriptions of the same consumer have the
    /// same id (the broadcast dispatcher refuses the second one).
    pub fn consumer_id(&self) -> u64 {
        self.consumer_id
    }

    /// Sends one message of events to the consumer. Returns false when the consumer
    /// is gone (its exit reaches the producer as a cancel, so nothing else to do).
    pub fn send(&self, events: Vec<T>) -> bool {
        self.consumer.events(self.tag, events)
    }

    /// Asks the owning producer, on this subscriber's behalf, for `n` more events
    /// (the broadcast dispatcher does this for events a selector filtered out).
    pub fn ask_owner(&self, n: usize) {
        if n > 0 {
            self.owner.self_ask(self.tag, n);
        }
    }
}

/// An info message (from `sync_info`/`async_info`) that a dispatcher must deliver to
/// its stage once everything queued before it was sent.
pub struct PendingInfo {
    pub(crate) id: u64,
    pub(crate) owner: Arc<dyn DispatcherOwner>,
}

impl fmt::Debug for PendingInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PendingInfo({})", self.id)
    }
}

impl PendingInfo {
    /// The info's identity (stable, for tests and logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands the info to the stage: it reaches `handle_info` after the messages the
    /// stage already has.
    pub fn deliver(self) {
        self.owner.release_info(self.id);
    }
}
