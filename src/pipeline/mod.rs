//! The parts real pipelines need, built on the stage layer: read lines from files
//! ([`LineSource`]), group events into batches ([`Batcher`]), hold a rate
//! ([`RateLimiter`]), retry failures and keep what still fails ([`RetryPolicy`],
//! [`RetrySource`], [`DeadLetters`]), shut down gracefully ([`Pipeline`]) and show
//! progress ([`Progress`]).
//!
//! The ETL in `etl/` (files → JSON → SQLite) and `examples/rate_limited_api.rs`
//! (a polite HTTP client) put them together.

mod batcher;
mod drain;
mod lines;
mod progress;
mod rate_limit;
mod retry;
mod timer;

pub use batcher::{Batch, BatchTimeout, Batcher, BatcherOptions, Flush, ProducersEnded};
pub use drain::{Halt, Pipeline, PipelineHandle, PipelineReport, StageReport, StageStatus};
pub use lines::{Line, LineError, LineEvent, LineSource, LinesExhausted};
pub use progress::{Progress, ProgressReport, StageProgress};
pub use rate_limit::{IntervalElapsed, RateLimit, RateLimiter, Tick, Ticks};
pub use retry::{
    Attempt, Carry, DeadLetter, DeadLetters, GiveUp, Jitter, Outcome, Outcomes, RetriesFinished,
    RetryCounts, RetryDecision, RetryDue, RetryPolicy, RetrySource, RetryStats,
};
