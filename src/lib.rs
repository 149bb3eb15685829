//! stageflow: Elixir's GenStage and Flow for synchronous Rust.
//!
//! Two layers in one crate:
//!
//! - **The stage layer** ([`stage`]) is GenStage: producers, producer-consumers and
//!   consumers, each on its own OS thread, exchanging demand upstream and batches of
//!   events downstream. A producer never sends a consumer more than it asked for, so
//!   memory stays bounded whatever the input size.
//! - **The flow layer** ([`flow`]) is Flow: lazy, typed, parallel map / filter /
//!   partition / reduce / windows on rayon, with bridges to and from stages.
//!
//! On top of the stage layer, [`pipeline`] has the parts real programs need: a line
//! source, a batcher, a rate limiter, retries with dead letters, graceful drain and
//! progress reporting (the ETL in `etl/` and `examples/rate_limited_api.rs` use them).
//!
//! # A tour of the stage layer
//!
//! A stage is a value of yours. Its [`Stage`] impl names the event types it takes and
//! gives; its [`Producer`], [`ProducerConsumer`] or [`Consumer`] impl says what it does.
//!
//! ```
//! use stageflow::prelude::*;
//!
//! /// Emits 0, 1, 2, ... as consumers ask.
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
//! /// Prints pairs it receives; stops after 10.
//! struct Printer(usize);
//! impl Stage for Printer {
//!     type In = u64;
//!     type Out = Never;
//! }
//! impl Consumer for Printer {
//!     fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
//!         self.0 += events.len();
//!         if self.0 >= 10 {
//!             ctx.stop(Reason::Normal);
//!         }
//!     }
//! }
//!
//! let counter = start_producer(Counter(0), ProducerOptions::new())?;
//! let printer = start_consumer(
//!     Printer(0),
//!     ConsumerOptions::new().subscribe_to(&counter, SubscribeOptions::new().max_demand(5)),
//! )?;
//! assert_eq!(printer.join(), Reason::Normal);
//! counter.stop(Reason::Normal)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Wiring is checked by the compiler: a consumer of `String` cannot subscribe to a
//! producer of `u64`.
//!
//! ```compile_fail
//! use stageflow::prelude::*;
//! struct Words;
//! impl Stage for Words { type In = String; type Out = Never; }
//! impl Consumer for Words {
//!     fn handle_events(&mut self, _: Vec<String>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
//! }
//! let numbers = from_iter(0..10u64, FromIterOptions::new()).unwrap();
//! // error: expected `String`, found `u64`
//! let _ = start_consumer(Words, ConsumerOptions::new().subscribe_to(&numbers, SubscribeOptions::new()));
//! ```
//!
//! Requests to a running stage are typed too: a stage that implements
//! [`HandleCall<R>`] answers [`StageRef::call`] with requests of type `R`.
//!
//! ```
//! use stageflow::prelude::*;
//!
//! struct Queue(Vec<u32>);
//! impl Stage for Queue { type In = Never; type Out = u32; }
//! impl Producer for Queue {
//!     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
//! }
//! /// Emits the given events at once (buffered until someone asks).
//! struct Push(Vec<u32>);
//! impl HandleCall<Push> for Queue {
//!     type Reply = usize;
//!     fn handle_call(&mut self, Push(events): Push, _: &ReplyTo<usize>, ctx: &mut Context<'_, Self>) -> Option<usize> {
//!         let n = events.len();
//!         ctx.emit_all(events);
//!         Some(n)
//!     }
//! }
//!
//! let q = start_producer(Queue(vec![]), ProducerOptions::new())?;
//! assert_eq!(q.call(Push(vec![1, 2, 3]))?, 3);
//! assert_eq!(q.estimate_buffered_count()?, 3);
//! let got: Vec<u32> = stream(&q).take(3).collect::<Result<_, _>>()?;
//! assert_eq!(got, vec![1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A topology of several stages is best wired through a [`Topology`]: it starts every
//! stage and makes every subscription before demand reaches the sources, so that a
//! short or empty source cannot be done (or broadcast its first events) before all its
//! consumers are subscribed.
//!
//! ```
//! use stageflow::prelude::*;
//!
//! let mut topology = Topology::new();
//! let words = topology.from_iter(Vec::<String>::new(), FromIterOptions::new())?;
//! let a = topology.stream(&words, SubscribeOptions::new())?;
//! let b = topology.stream(&words, SubscribeOptions::new())?;
//! topology.start()?;
//! assert_eq!(a.count() + b.count(), 0); // nothing to read is not an error
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Failures are values: a panic in a callback stops that stage with
//! [`Reason::Panic`] carrying the message, `terminate` runs, and its consumers react by
//! their [`CancelMode`].
//!
//! ```
//! use stageflow::prelude::*;
//! struct Fragile;
//! impl Stage for Fragile { type In = Never; type Out = u8; }
//! impl Producer for Fragile {
//!     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {
//!         panic!("disk on fire");
//!     }
//! }
//! let p = start_producer(Fragile, ProducerOptions::new())?;
//! let mut s = stream(&p);
//! let err = s.next().unwrap().unwrap_err();
//! assert_eq!(err.reason, Reason::Panic("disk on fire".into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

pub mod error;
pub mod flow;
pub mod observe;
mod panic;
pub mod pipeline;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
pub mod stage;

pub use error::{CallError, NotAlive, OptionsError, SendError, StartError, SubscribeError};
pub use stage::dispatcher;
pub use stage::log;
pub use stage::{
    from_iter, start_consumer, start_producer, start_producer_consumer, stream, BufferKeep,
    BufferSize, CancelMode, CancelReason, Consumer, ConsumerOptions, Context, Demand, DemandMode,
    FromIterOptions, HandleCall, HandleCast, HandleInfo, Init, Kind, Never, OnCancel, PartitionKey,
    Peer, Producer, ProducerConsumer, ProducerConsumerOptions, ProducerOptions, Reason, ReplyTo,
    Source, SourceRef, SpinPolicy, Stage, StageMetrics, StageRef, StageStream, StreamError,
    SubscribeOptions, SubscriptionInfo, SubscriptionRef, Tag, TimerRef, Topology,
};
pub use stage::{
    ChildCounts, ChildId, ChildInfo, ConsumerSupervisor, ConsumerSupervisorOptions, Job,
    JobContext, Restart, TerminateChildError,
};

/// Everything a stage program usually needs, in one `use`.
pub mod prelude {
    pub use crate::stage::{
        from_iter, start_consumer, start_producer, start_producer_consumer, stream, BufferKeep,
        BufferSize, CancelMode, CancelReason, Consumer, ConsumerOptions, Context, Demand,
        DemandMode, FromIterOptions, HandleCall, HandleCast, HandleInfo, Init, Never, OnCancel,
        PartitionKey, Peer, Producer, ProducerConsumer, ProducerConsumerOptions, ProducerOptions,
        Reason, ReplyTo, Source, SourceRef, Stage, StageRef, SubscribeOptions, SubscriptionInfo,
        SubscriptionRef, Tag, Topology,
    };
}
