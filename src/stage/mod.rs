//! The stage layer: GenStage's producers, producer-consumers and consumers, one OS
//! thread each, exchanging events for demand.
//!
//! A stage is a value of yours that implements [`Stage`] (its input and output event
//! types and the optional callbacks) and one of [`Producer`], [`ProducerConsumer`] or
//! [`Consumer`]. Starting it ([`start_producer`], [`start_producer_consumer`],
//! [`start_consumer`]) moves it onto its own thread and gives back a typed
//! [`StageRef`]. Consumers subscribe to producers; demand flows upstream, events
//! downstream in batches, and a producer never sends a consumer more than it asked for.
//!
//! ```
//! use stageflow::prelude::*;
//!
//! struct Counter(u64);
//! impl Stage for Counter {
//!     type In = Never;
//!     type Out = u64;
//! }
//! impl Producer for Counter {
//!     fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
//!         ctx.emit_all(self.0..self.0 + demand as u64);
//!         self.0 += demand as u64;
//!     }
//! }
//!
//! let producer = start_producer(Counter(0), ProducerOptions::new())?;
//! let first: Vec<u64> = stream(&producer).take(3).collect::<Result<_, _>>()?;
//! assert_eq!(first, vec![0, 1, 2]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod buffer;
mod context;
mod diagram;
pub mod dispatcher;
pub(crate) mod handle;
mod iter;
pub mod log;
pub(crate) mod mailbox;
pub(crate) mod metrics;
mod options;
pub mod raw;
pub(crate) mod reason;
pub(crate) mod runtime;
mod shared;
pub(crate) mod snapshot;
mod subscription;
mod supervisor;
mod topology;
pub(crate) mod trace;

pub use buffer::{BufferKeep, BufferSize};
pub use context::{Context, TimerRef};
pub use diagram::DiagramOptions;
pub use handle::{ReplyTo, Source, SourceRef, StageRef};
pub use iter::{
    from_iter, stream, FromIterOptions, IterProducer, OnCancel, StageStream, StreamError,
};
pub use mailbox::SpinPolicy;
pub use metrics::{Counter, Gauge, MetricValue, NamedMetric, StageMetrics};
pub use options::{ConsumerOptions, ProducerConsumerOptions, ProducerOptions};
pub use reason::{CancelReason, Kind, Reason, Tag};
pub use snapshot::{StageSnapshot, SubscriptionSnapshot, TopologySnapshot};
pub use subscription::{
    CancelMode, Demand, PartitionKey, Selector, SubscribeOptions, SubscriptionInfo, SubscriptionRef,
};
pub use supervisor::{
    ChildCounts, ChildId, ChildInfo, ConsumerSupervisor, ConsumerSupervisorOptions, Job,
    JobContext, Restart, TerminateChildError,
};
pub use topology::Topology;

use crate::error::StartError;

/// The type of a side that has no events: the input of a producer, the output of a
/// consumer. No value of it exists, so such events cannot be emitted by mistake.
pub type Never = std::convert::Infallible;

/// What `init` decided (GenStage's `init/1` return).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Init {
    /// Start running.
    #[default]
    Ok,
    /// Do not run: the stage exits normally and `start_*` returns
    /// [`StartError::Ignored`]. `terminate` is not called.
    Ignore,
    /// Do not run: `start_*` returns [`StartError::Stopped`] with this reason.
    Stop(Reason),
}

/// Which side of a subscription a `handle_subscribe`/`handle_cancel` call is about:
/// the other end is a `Producer` (we are its consumer) or a `Consumer`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// We subscribed to a producer.
    Producer,
    /// A consumer subscribed to us.
    Consumer,
}

/// Whether a producer answers demand now (`Forward`) or stores it until switched back
/// (`Accumulate`). GenStage's `:demand` option and `demand/2`.
///
/// ```
/// assert_eq!(stageflow::DemandMode::default(), stageflow::DemandMode::Forward);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum DemandMode {
    /// Serve demand as it arrives (default).
    #[default]
    Forward,
    /// Store demand (and events emitted meanwhile) until switched to `Forward`; stored
    /// demands are replayed one by one, never added together.
    ///
    /// On the switch, the events emitted while accumulating are dispatched first, then
    /// the stored demands are served (buffer first, then `handle_demand`), so events
    /// reach consumers in the order the producer emitted them. GenStage replays both
    /// kinds of entry in arrival order, which lets events emitted at replay overtake
    /// older stored ones; stageflow deliberately does not.
    Accumulate,
}

/// A stage: its event types and the callbacks every kind of stage shares. All callbacks
/// have defaults; a stage also implements [`Producer`], [`ProducerConsumer`] or
/// [`Consumer`].
///
/// Callbacks run on the stage's thread and get a [`Context`] to emit events and stop
/// the stage. A panic in any callback stops the stage with [`Reason::Panic`] carrying
/// the message; `terminate` still runs.
pub trait Stage: Send + Sized + 'static {
    /// Events this stage receives ([`Never`] for producers).
    type In: Send + 'static;
    /// Events this stage emits ([`Never`] for consumers).
    type Out: Send + 'static;

    /// Runs first, on the stage's thread, before any subscription.
    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        let _ = ctx;
        Init::Ok
    }

    /// A subscription starts. `peer` says which end the other stage is. On the consumer
    /// side return [`Demand::Manual`] to ask explicitly; producers must return
    /// `Automatic`. `Err(reason)` stops the stage.
    fn handle_subscribe(
        &mut self,
        peer: Peer,
        info: &SubscriptionInfo,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        let _ = (peer, info, from, ctx);
        Ok(Demand::Automatic)
    }

    /// A subscription ended (on either side). On the consumer side, after this
    /// returns, the stage may stop according to the subscription's [`CancelMode`].
    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        let _ = (reason, from, ctx);
    }

    /// The stage is about to exit with `reason` (not called after `Init::Ignore`,
    /// `Init::Stop` or [`StageRef::kill`]).
    fn terminate(&mut self, reason: &Reason) {
        let _ = reason;
    }

    /// `discarded` events were dropped from the output buffer. Return false to
    /// suppress the default warning.
    fn format_discarded(&mut self, discarded: usize) -> bool {
        let _ = discarded;
        true
    }
}

/// A stage that emits events when consumers ask for them.
pub trait Producer: Stage<In = Never> {
    /// Consumers asked for `demand` (> 0) more events than were delivered. Emit up to
    /// that many through `ctx` now or later (demand is never re-sent: remember unmet
    /// demand); events beyond demand are buffered.
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>);
}

/// A stage that receives events from producers and emits events to consumers. It
/// processes input only while its consumers have demand (as in GenStage).
pub trait ProducerConsumer: Stage {
    /// A batch of at most `max_demand - min_demand` events from `from`.
    fn handle_events(
        &mut self,
        events: Vec<Self::In>,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    );
}

/// A stage that receives events.
pub trait Consumer: Stage<Out = Never> {
    /// A batch of at most `max_demand - min_demand` events from `from`. Demand for
    /// more is sent after this returns, so a slow consumer slows its producers.
    fn handle_events(
        &mut self,
        events: Vec<Self::In>,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    );
}

/// A stage that answers requests of type `R` ([`StageRef::call`]).
pub trait HandleCall<R>: Stage {
    /// The answer's type.
    type Reply: Send + 'static;
    /// Return `Some(reply)` to answer now: events emitted here are dispatched before
    /// the reply is sent. Return `None` to answer later with a clone of `from`
    /// (from any callback).
    fn handle_call(
        &mut self,
        request: R,
        from: &ReplyTo<Self::Reply>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<Self::Reply>;
}

/// A stage that takes fire-and-forget messages of type `M` ([`StageRef::cast`]).
pub trait HandleCast<M>: Stage {
    /// Handles one message.
    fn handle_cast(&mut self, message: M, ctx: &mut Context<'_, Self>);
}

/// A stage that takes informational messages of type `M` ([`StageRef::send_info`],
/// [`StageRef::sync_info`], [`StageRef::async_info`]).
pub trait HandleInfo<M>: Stage {
    /// Handles one message.
    fn handle_info(&mut self, message: M, ctx: &mut Context<'_, Self>);
}

/// Starts a producer on its own thread.
///
/// ```
/// use stageflow::prelude::*;
/// struct Nothing;
/// impl Stage for Nothing { type In = Never; type Out = u8; }
/// impl Producer for Nothing {
///     fn handle_demand(&mut self, _demand: usize, _ctx: &mut Context<'_, Self>) {}
/// }
/// let p = start_producer(Nothing, ProducerOptions::new().buffer_size(BufferSize::Finite(5)))?;
/// assert_eq!(p.estimate_buffered_count()?, 0);
/// p.stop(Reason::Normal)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn start_producer<S: Producer>(
    stage: S,
    options: ProducerOptions<S::Out>,
) -> Result<StageRef<S>, StartError> {
    runtime::start(stage, options.into_spec(), runtime::Callbacks::producer())
}

/// Starts a producer-consumer on its own thread.
///
/// ```
/// use stageflow::prelude::*;
/// struct Double;
/// impl Stage for Double { type In = u32; type Out = u32; }
/// impl ProducerConsumer for Double {
///     fn handle_events(&mut self, events: Vec<u32>, _from: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
///         ctx.emit_all(events.into_iter().map(|x| x * 2));
///     }
/// }
/// let source = from_iter(1..=3u32, FromIterOptions::new())?;
/// let double = start_producer_consumer(
///     Double,
///     ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()),
/// )?;
/// let out: Vec<u32> = stream(&double).collect::<Result<_, _>>()?;
/// assert_eq!(out, vec![2, 4, 6]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn start_producer_consumer<S: ProducerConsumer>(
    stage: S,
    options: ProducerConsumerOptions<S::In, S::Out>,
) -> Result<StageRef<S>, StartError> {
    let spec = options.into_spec()?;
    runtime::start(stage, spec, runtime::Callbacks::producer_consumer())
}

/// Starts a consumer on its own thread.
///
/// ```
/// use stageflow::prelude::*;
/// struct Sum(u64);
/// impl Stage for Sum {
///     type In = u64;
///     type Out = Never;
///     fn terminate(&mut self, _reason: &Reason) { assert_eq!(self.0, 5050); }
/// }
/// impl Consumer for Sum {
///     fn handle_events(&mut self, events: Vec<u64>, _from: &SubscriptionRef, _ctx: &mut Context<'_, Self>) {
///         self.0 += events.iter().sum::<u64>();
///     }
/// }
/// let source = from_iter(1..=100u64, FromIterOptions::new())?;
/// let sum = start_consumer(Sum(0), ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))?;
/// assert_eq!(sum.join(), Reason::Normal);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn start_consumer<S: Consumer>(
    stage: S,
    options: ConsumerOptions<S::In>,
) -> Result<StageRef<S>, StartError> {
    let spec = options.into_spec()?;
    runtime::start(stage, spec, runtime::Callbacks::consumer())
}
