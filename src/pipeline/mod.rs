//! The parts real pipelines need, built on the stage layer: read lines from files
//! ([`LineSource`]), group events into batches ([`Batcher`]), hold a rate
//! ([`RateLimiter`]), retry failures and keep what still fails ([`RetryPolicy`],
//! [`RetrySource`], [`DeadLetters`]), shut down gracefully ([`Pipeline`]) and show
//! progress ([`Progress`]), and tell a source when its messages are done
//! ([`Message`], [`Acks`], [`Batch::ack_successful`], an in-memory [`AckingSource`],
//! and [`Pipeline::acknowledger`] for a drain that waits for acknowledgements).
//!
//! Wire them with a [`Topology`](crate::Topology): it starts every stage, makes every
//! subscription and only then lets demand reach the sources, so that a short or empty
//! input cannot be done before all its consumers are subscribed; its `start` returns
//! the [`Pipeline`] to wait for or drain.
//!
//! ```
//! use std::time::Duration;
//! use stageflow::pipeline::{Batcher, BatcherOptions, LineSource};
//! use stageflow::prelude::*;
//!
//! let mut topology = Topology::new();
//! let lines = topology.source(
//!     LineSource::new().reader("in", std::io::Cursor::new("")), // empty: still fine
//!     ProducerOptions::new().name("lines"),
//! )?;
//! let batches = topology.producer_consumer(
//!     Batcher::new(BatcherOptions::new().batch_size(2))?,
//!     ProducerConsumerOptions::new().name("batch").subscribe_to(&lines, SubscribeOptions::new()),
//! )?;
//! let out = topology.stream(&batches, SubscribeOptions::new())?;
//! let pipeline = topology.start()?;
//! assert_eq!(out.count(), 0);
//! assert!(pipeline.wait(Duration::from_secs(10)).is_complete());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The ETL in `etl/` (files → JSON → SQLite) and `examples/rate_limited_api.rs`
//! (a polite HTTP client) put them together.

mod ack;
mod acking;
mod batcher;
mod drain;
mod lines;
mod progress;
mod rate_limit;
mod retry;

pub use ack::{AckId, AckRef, Acknowledger, Acks, Failure, InFlight, InMemoryAcks, Message};
pub use acking::{AckingCounts, AckingFinished, AckingSource, AckingStats, AcksArrived};
pub use batcher::{Batch, BatchTimeout, Batcher, BatcherOptions, Flush, ProducersEnded};
pub use drain::{
    AckReport, Halt, Pipeline, PipelineHandle, PipelineReport, StageReport, StageStatus,
};
pub use lines::{Line, LineError, LineEvent, LineSource, LinesExhausted};
pub use progress::{Progress, ProgressReport, StageProgress};
pub use rate_limit::{NextDue, RateLimit, RateLimiter, Tick, Ticks};
pub use retry::{
    Attempt, Carry, DeadLetter, DeadLetters, GiveUp, Jitter, Outcome, Outcomes, RetriesFinished,
    RetryCounts, RetryDecision, RetryDue, RetryPolicy, RetrySource, RetryStats,
};
