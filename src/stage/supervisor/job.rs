//! What a [`ConsumerSupervisor`](crate::ConsumerSupervisor) runs and how: the job,
//! its restart rule and the supervisor's options (GenStage's child specification
//! and supervisor options).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::super::handle::Source;
use super::super::log::LogSink;
use super::super::options::ConsumerOptions;
use super::super::reason::Reason;
use super::super::subscription::SubscribeOptions;

/// When a job that ended is run again (GenStage's child `:restart`).
///
/// ```
/// assert_eq!(stageflow::Restart::default(), stageflow::Restart::Temporary);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Restart {
    /// Never (the default).
    #[default]
    Temporary,
    /// When it failed: returned an abnormal reason (see [`Reason::is_normal`]) or
    /// panicked. It runs again with the same event and keeps its demand slot.
    Transient,
    /// Always. Rejected by [`ConsumerSupervisor::start`](crate::ConsumerSupervisor::start),
    /// as GenStage rejects it: a job that is restarted even after it succeeds never
    /// frees its slot.
    Permanent,
}

/// Identifies one job (GenStage's child pid).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(pub(super) u64);

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "child #{}", self.0)
    }
}

/// What a running job can ask: whether it was terminated (its supervisor stopped or
/// [`terminate_child`](crate::StageRef::terminate_child) was called). Threads cannot be
/// killed, so a long job should check it and return early.
#[derive(Clone, Debug)]
pub struct JobContext {
    pub(super) id: ChildId,
    pub(super) cancelled: Arc<AtomicBool>,
}

impl JobContext {
    /// This job's id.
    pub fn id(&self) -> ChildId {
        self.id
    }
    /// True once the job should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// The work a [`ConsumerSupervisor`](crate::ConsumerSupervisor) runs for each event:
/// GenStage's child template. `Ok(())` is a normal exit; `Err(reason)` and a panic are
/// failures (a normal `reason`, such as [`Reason::Shutdown`], counts as a normal exit).
///
/// Closures `Fn(&T, &JobContext) -> Result<(), Reason>` are jobs, and so are
/// `Box<dyn Job<T>>` and `Arc<dyn Job<T>>`, for a job chosen at run time.
///
/// ```
/// use stageflow::{Job, JobContext, Reason};
/// struct Parse;
/// impl Job<String> for Parse {
///     fn run(&self, line: &String, _: &JobContext) -> Result<(), Reason> {
///         line.parse::<u32>().map(|_| ()).map_err(|e| Reason::custom(e.to_string()))
///     }
/// }
/// let job: Box<dyn Job<String>> = Box::new(Parse);
/// # let _ = job;
/// ```
pub trait Job<T>: Send + Sync + 'static {
    /// Runs on a worker thread for `event`.
    fn run(&self, event: &T, ctx: &JobContext) -> Result<(), Reason>;
}

impl<T: 'static> Job<T> for Box<dyn Job<T>> {
    fn run(&self, event: &T, ctx: &JobContext) -> Result<(), Reason> {
        (**self).run(event, ctx)
    }
}

impl<T: 'static> Job<T> for Arc<dyn Job<T>> {
    fn run(&self, event: &T, ctx: &JobContext) -> Result<(), Reason> {
        (**self).run(event, ctx)
    }
}

impl<T, F> Job<T> for F
where
    F: Fn(&T, &JobContext) -> Result<(), Reason> + Send + Sync + 'static,
{
    fn run(&self, event: &T, ctx: &JobContext) -> Result<(), Reason> {
        self(event, ctx)
    }
}

/// Options of a [`ConsumerSupervisor`](crate::ConsumerSupervisor), with GenStage's
/// defaults: restart [`Restart::Temporary`], `max_restarts` 3 within `max_seconds` 5,
/// shutdown 5 s.
///
/// ```
/// use stageflow::{ConsumerSupervisorOptions, Restart};
/// let o = ConsumerSupervisorOptions::<u32>::new().restart(Restart::Transient).max_restarts(10);
/// # let _ = o;
/// ```
pub struct ConsumerSupervisorOptions<T> {
    pub(super) consumer: ConsumerOptions<T>,
    pub(super) restart: Restart,
    pub(super) max_restarts: usize,
    pub(super) max_seconds: u64,
    pub(super) shutdown: Duration,
}

impl<T> std::fmt::Debug for ConsumerSupervisorOptions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSupervisorOptions")
            .field("consumer", &self.consumer)
            .field("restart", &self.restart)
            .field("max_restarts", &self.max_restarts)
            .field("max_seconds", &self.max_seconds)
            .field("shutdown", &self.shutdown)
            .finish()
    }
}

impl<T: Send + 'static> Default for ConsumerSupervisorOptions<T> {
    fn default() -> Self {
        ConsumerSupervisorOptions {
            consumer: ConsumerOptions::new(),
            restart: Restart::Temporary,
            max_restarts: 3,
            max_seconds: 5,
            shutdown: Duration::from_secs(5),
        }
    }
}

impl<T: Send + 'static> ConsumerSupervisorOptions<T> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// When a job is run again (default [`Restart::Temporary`]).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }
    /// More restarts than this within `max_seconds` stop the supervisor (default 3).
    pub fn max_restarts(mut self, n: usize) -> Self {
        self.max_restarts = n;
        self
    }
    /// The restart intensity window, in whole seconds (default 5).
    pub fn max_seconds(mut self, s: u64) -> Self {
        self.max_seconds = s;
        self
    }
    /// How long the supervisor waits for running jobs when it stops (default 5 s);
    /// jobs still running then are left to finish on their own.
    pub fn shutdown(mut self, d: Duration) -> Self {
        self.shutdown = d;
        self
    }
    /// Subscribe to `producer` when the supervisor starts.
    pub fn subscribe_to(mut self, producer: &impl Source<T>, opts: SubscribeOptions<T>) -> Self {
        self.consumer = self.consumer.subscribe_to(producer, opts);
        self
    }
    /// The stage's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.consumer = self.consumer.name(name);
        self
    }
    /// Where the stage's log lines go.
    pub fn log(mut self, sink: LogSink) -> Self {
        self.consumer = self.consumer.log(sink);
        self
    }
}
