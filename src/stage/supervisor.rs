//! `ConsumerSupervisor`: a consumer that runs one job per event, concurrently, on a
//! pool of reused worker threads (GenStage's `ConsumerSupervisor`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::error::{CallError, OptionsError, StartError};

use super::handle::{Source, StageRef};
use super::log::{Level, LogSink};
use super::options::ConsumerOptions;
use super::reason::{next_id, CancelReason, Reason, Tag};
use super::subscription::{Demand, SubscribeOptions, SubscriptionInfo, SubscriptionRef};
use super::{Consumer, Context, HandleCall, Init, Never, Peer, ReplyTo, Stage};

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
    /// Always. Rejected by [`ConsumerSupervisor::start`], as GenStage rejects it: a job
    /// that is restarted even after it succeeds never frees its slot.
    Permanent,
}

/// Identifies one job (GenStage's child pid).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildId(u64);

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "child #{}", self.0)
    }
}

/// What a running job can ask: whether it was terminated (its supervisor stopped or
/// [`terminate_child`](StageRef::terminate_child) was called). Threads cannot be
/// killed, so a long job should check it and return early.
#[derive(Clone, Debug)]
pub struct JobContext {
    id: ChildId,
    cancelled: Arc<AtomicBool>,
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

/// The work a [`ConsumerSupervisor`] runs for each event: GenStage's child template.
/// `Ok(())` is a normal exit; `Err(reason)` and a panic are failures (a normal
/// `reason`, such as [`Reason::Shutdown`], counts as a normal exit).
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

/// Options of a [`ConsumerSupervisor`], with GenStage's defaults: restart
/// [`Restart::Temporary`], `max_restarts` 3 within `max_seconds` 5, shutdown 5 s.
///
/// ```
/// use stageflow::{ConsumerSupervisorOptions, Restart};
/// let o = ConsumerSupervisorOptions::<u32>::new().restart(Restart::Transient).max_restarts(10);
/// # let _ = o;
/// ```
pub struct ConsumerSupervisorOptions<T> {
    consumer: ConsumerOptions<T>,
    restart: Restart,
    max_restarts: usize,
    max_seconds: u64,
    shutdown: Duration,
    log: Option<LogSink>,
}

impl<T> std::fmt::Debug for ConsumerSupervisorOptions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSupervisorOptions")
            .field("consumer", &self.consumer)
            .field("restart", &self.restart)
            .field("max_restarts", &self.max_restarts)
            .field("max_seconds", &self.max_seconds)
            .field("shutdown", &self.shutdown)
            .field("log", &self.log)
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
            log: None,
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
        self.consumer = self.consumer.log(sink.clone());
        self.log = Some(sink);
        self
    }
}

/// One job as [`which_children`](StageRef::which_children) reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// The job.
    pub id: ChildId,
    /// How many times it was restarted.
    pub restarts: usize,
}

/// GenStage's `count_children` map.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildCounts {
    /// Always 1: the one job template.
    pub specs: usize,
    /// Jobs running or queued to run.
    pub active: usize,
    /// Jobs (all are workers).
    pub workers: usize,
    /// Always 0.
    pub supervisors: usize,
}

/// Why [`terminate_child`](StageRef::terminate_child) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TerminateChildError {
    /// No such job (it ended, or was terminated already).
    #[error("not found")]
    NotFound,
    /// The supervisor could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
}

struct Task<T> {
    id: ChildId,
    event: T,
    cancelled: Arc<AtomicBool>,
}

struct Child {
    /// The subscription whose demand this job uses (`None`: `start_child`).
    producer: Option<Tag>,
    cancelled: Arc<AtomicBool>,
    restarts: usize,
}

struct ProducerSlots {
    from: SubscriptionRef,
    /// Jobs started from this producer's events and still holding a slot.
    count: usize,
    /// Freed slots not yet asked for again.
    pending: usize,
    min: usize,
    max: usize,
}

/// Reused worker threads: a thread is spawned only when every existing one is busy,
/// so the pool grows to the peak number of jobs in flight (at most the
/// subscriptions' `max_demand` plus jobs from `start_child`) and no further.
struct Pool<T> {
    tx: Option<Sender<Task<T>>>,
    rx: Receiver<Task<T>>,
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
    threads: usize,
    busy: usize,
}

/// A consumer that runs one job per event, concurrently (GenStage's
/// `ConsumerSupervisor`).
///
/// Subscribe it to producers as any consumer. For each subscription it asks
/// `max_demand` events and runs a job per event on a pool of reused worker threads,
/// so at most `max_demand` jobs per producer are in flight. A job's slot is freed
/// when it ends for good (or is terminated); freed slots are asked for again once
/// `min_demand` of them accumulate (GenStage's rule). A job restarting under
/// [`Restart::Transient`] keeps its slot. More than `max_restarts` restarts within
/// `max_seconds` stop the supervisor with [`Reason::ShutdownWith`] saying so.
///
/// When the supervisor stops (for instance because the producer of a permanent
/// subscription finished), every job is asked to stop ([`JobContext::is_cancelled`];
/// queued jobs still run, with the flag set) and it waits up to `shutdown` for the
/// workers; jobs that ignore the flag finish on their own afterwards. A job that
/// ends is reported to the supervisor through its mailbox, once per job.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use stageflow::prelude::*;
/// use stageflow::{ConsumerSupervisor, ConsumerSupervisorOptions, JobContext};
///
/// let total = Arc::new(AtomicU64::new(0));
/// let t = total.clone();
/// let job = move |x: &u64, _: &JobContext| -> Result<(), Reason> {
///     t.fetch_add(*x, Ordering::Relaxed);
///     Ok(())
/// };
/// let source = from_iter(1..=100u64, FromIterOptions::new())?;
/// let sup = ConsumerSupervisor::start(
///     job,
///     ConsumerSupervisorOptions::new()
///         .subscribe_to(&source, SubscribeOptions::new().max_demand(8)),
/// )?;
/// assert_eq!(sup.join(), Reason::Normal);
/// assert_eq!(total.load(Ordering::Relaxed), 5050);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ConsumerSupervisor<T: Send + 'static> {
    job: Arc<dyn Job<T>>,
    restart: Restart,
    max_restarts: usize,
    max_seconds: u64,
    shutdown: Duration,
    children: BTreeMap<ChildId, Child>,
    producers: HashMap<Tag, ProducerSlots>,
    /// Restart times, in whole seconds since `epoch` (OTP's granularity).
    restarts: VecDeque<u64>,
    epoch: Instant,
    pool: Option<Pool<T>>,
    me: Option<StageRef<Self>>,
}

impl<T: Send + 'static> std::fmt::Debug for ConsumerSupervisor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSupervisor")
            .field("restart", &self.restart)
            .field("max_restarts", &self.max_restarts)
            .field("max_seconds", &self.max_seconds)
            .field("shutdown", &self.shutdown)
            .field("children", &self.children.len())
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ConsumerSupervisor<T> {
    /// Starts a supervisor running `job` for each event. Fails with
    /// [`StartError::BadOptions`] for [`Restart::Permanent`] or bad subscription
    /// options.
    pub fn start(
        job: impl Job<T>,
        options: ConsumerSupervisorOptions<T>,
    ) -> Result<StageRef<Self>, StartError> {
        if options.restart == Restart::Permanent {
            return Err(StartError::BadOptions(OptionsError::new(
                "a child specification with restart set to Permanent is not supported by \
                 ConsumerSupervisor: a job is started per event and a permanent job would \
                 never free its demand slot; use Temporary or Transient",
            )));
        }
        let stage = ConsumerSupervisor {
            job: Arc::new(job),
            restart: options.restart,
            max_restarts: options.max_restarts,
            max_seconds: options.max_seconds,
            shutdown: options.shutdown,
            children: BTreeMap::new(),
            producers: HashMap::new(),
            restarts: VecDeque::new(),
            epoch: Instant::now(),
            pool: None,
            me: None,
        };
        let _ = options.log;
        super::start_consumer(stage, options.consumer)
    }

    fn submit(&mut self, id: ChildId, event: T, cancelled: Arc<AtomicBool>) {
        let (Some(pool), Some(me)) = (self.pool.as_mut(), self.me.as_ref()) else {
            return;
        };
        pool.busy += 1;
        if pool.busy > pool.threads {
            let rx = pool.rx.clone();
            let done = pool.done_tx.clone();
            let job = self.job.clone();
            let me = me.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-worker-{}", me.name(), pool.threads))
                .spawn(move || worker(rx, job, me, done));
            if spawned.is_ok() {
                pool.threads += 1;
            }
        }
        if let Some(tx) = &pool.tx {
            let _ = tx.send(Task {
                id,
                event,
                cancelled,
            });
        }
    }

    fn start_job(&mut self, event: T, producer: Option<Tag>) -> ChildId {
        let id = ChildId(next_id());
        let cancelled = Arc::new(AtomicBool::new(false));
        self.children.insert(
            id,
            Child {
                producer,
                cancelled: cancelled.clone(),
                restarts: 0,
            },
        );
        self.submit(id, event, cancelled);
        id
    }

    /// GenStage's `maybe_ask`: `events` new jobs from `tag`, `down` slots freed.
    fn slots(&mut self, tag: Tag, events: usize, down: usize, ctx: &Context<'_, Self>) {
        let Some(p) = self.producers.get_mut(&tag) else {
            return;
        };
        if p.count + events > p.max {
            ctx.log(
                Level::Error,
                format!(
                    "ConsumerSupervisor has received {} events in excess from subscription {tag}",
                    p.count + events - p.max
                ),
            );
        }
        p.count = (p.count + events).saturating_sub(down);
        p.pending += down;
        if p.pending > 0 && p.pending >= p.min {
            p.from.ask(p.pending);
            p.pending = 0;
        }
    }

    fn job_exited(
        &mut self,
        id: ChildId,
        outcome: Result<(), Reason>,
        event: T,
        ctx: &mut Context<'_, Self>,
    ) {
        if let Some(pool) = self.pool.as_mut() {
            pool.busy = pool.busy.saturating_sub(1);
        }
        let Some(child) = self.children.get_mut(&id) else {
            return; // terminated meanwhile
        };
        let failed = match &outcome {
            Ok(()) => false,
            Err(r) => !r.is_normal(),
        };
        if failed {
            if let Err(r) = &outcome {
                ctx.log(Level::Error, format!("{id} failed: {r}"));
            }
        }
        if failed && self.restart == Restart::Transient && !child.cancelled.load(Ordering::Relaxed)
        {
            child.restarts += 1;
            let cancelled = child.cancelled.clone();
            let now = self.epoch.elapsed().as_secs();
            self.restarts.push_back(now);
            while let Some(&t) = self.restarts.front() {
                if now - t > self.max_seconds {
                    self.restarts.pop_front();
                } else {
                    break;
                }
            }
            if self.restarts.len() > self.max_restarts {
                ctx.log(
                    Level::Error,
                    format!("{id} reached the maximum restart intensity; stopping"),
                );
                ctx.stop(Reason::shutdown_with(format!(
                    "reached maximum restart intensity: more than {} restarts within {} s",
                    self.max_restarts, self.max_seconds
                )));
                return;
            }
            // The restarting job keeps its slot.
            self.submit(id, event, cancelled);
            return;
        }
        let child = self.children.remove(&id).expect("child was just found");
        if let Some(tag) = child.producer {
            self.slots(tag, 0, 1, ctx);
        }
    }
}

fn worker<T: Send + 'static>(
    rx: Receiver<Task<T>>,
    job: Arc<dyn Job<T>>,
    me: StageRef<ConsumerSupervisor<T>>,
    done: Sender<()>,
) {
    for task in rx.iter() {
        let ctx = JobContext {
            id: task.id,
            cancelled: task.cancelled,
        };
        let outcome = match catch_unwind(AssertUnwindSafe(|| job.run(&task.event, &ctx))) {
            Ok(r) => r,
            Err(payload) => Err(Reason::Panic(
                crate::panic::message(payload.as_ref()).into(),
            )),
        };
        let (id, event) = (task.id, task.event);
        let delivered = me.exec(move |rt| {
            rt.run_info(Box::new(move |s: &mut ConsumerSupervisor<T>, ctx| {
                s.job_exited(id, outcome, event, ctx)
            }))
        });
        if !delivered {
            break;
        }
    }
    let _ = done.send(());
}

impl<T: Send + 'static> Stage for ConsumerSupervisor<T> {
    type In = T;
    type Out = Never;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        // Task and completion channels: bounded by the jobs in flight (see `Pool`).
        let (tx, rx) = unbounded();
        let (done_tx, done_rx) = unbounded();
        self.pool = Some(Pool {
            tx: Some(tx),
            rx,
            done_tx,
            done_rx,
            threads: 0,
            busy: 0,
        });
        self.me = Some(ctx.myself().clone());
        Init::Ok
    }

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        info: &SubscriptionInfo,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if peer == Peer::Producer {
            self.producers.insert(
                info.tag,
                ProducerSlots {
                    from: from.clone(),
                    count: 0,
                    pending: 0,
                    min: info.min_demand,
                    max: info.max_demand,
                },
            );
            from.ask(info.max_demand);
        }
        Ok(Demand::Manual)
    }

    fn handle_cancel(
        &mut self,
        _reason: CancelReason,
        from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) {
        // Its jobs keep running; their exits no longer ask anyone.
        self.producers.remove(&from.tag());
    }

    fn terminate(&mut self, _reason: &Reason) {
        for child in self.children.values() {
            child.cancelled.store(true, Ordering::Relaxed);
        }
        if let Some(mut pool) = self.pool.take() {
            // Closing the task channel lets idle workers exit; busy ones get until
            // the shutdown deadline to notice the cancel.
            pool.tx = None;
            let deadline = Instant::now() + self.shutdown;
            for _ in 0..pool.threads {
                let left = deadline.saturating_duration_since(Instant::now());
                if pool.done_rx.recv_timeout(left).is_err() {
                    break;
                }
            }
        }
        self.me = None;
    }
}

impl<T: Send + 'static> Consumer for ConsumerSupervisor<T> {
    fn handle_events(
        &mut self,
        events: Vec<T>,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        let tag = from.tag();
        let n = events.len();
        let known = self.producers.contains_key(&tag);
        for event in events {
            self.start_job(event, known.then_some(tag));
        }
        self.slots(tag, n, 0, ctx);
    }
}

/// `start_child`: run a job for `event` outside any subscription.
struct StartChild<T>(T);
/// `terminate_child`.
struct TerminateChild(ChildId);
/// `which_children`.
struct WhichChildren;
/// `count_children`.
struct CountChildren;

impl<T: Send + 'static> HandleCall<StartChild<T>> for ConsumerSupervisor<T> {
    type Reply = ChildId;
    fn handle_call(
        &mut self,
        r: StartChild<T>,
        _: &ReplyTo<ChildId>,
        _: &mut Context<'_, Self>,
    ) -> Option<ChildId> {
        Some(self.start_job(r.0, None))
    }
}

impl<T: Send + 'static> HandleCall<TerminateChild> for ConsumerSupervisor<T> {
    type Reply = bool;
    fn handle_call(
        &mut self,
        r: TerminateChild,
        _: &ReplyTo<bool>,
        ctx: &mut Context<'_, Self>,
    ) -> Option<bool> {
        let Some(child) = self.children.remove(&r.0) else {
            return Some(false);
        };
        child.cancelled.store(true, Ordering::Relaxed);
        if let Some(tag) = child.producer {
            self.slots(tag, 0, 1, ctx);
        }
        Some(true)
    }
}

impl<T: Send + 'static> HandleCall<WhichChildren> for ConsumerSupervisor<T> {
    type Reply = Vec<ChildInfo>;
    fn handle_call(
        &mut self,
        _: WhichChildren,
        _: &ReplyTo<Vec<ChildInfo>>,
        _: &mut Context<'_, Self>,
    ) -> Option<Vec<ChildInfo>> {
        Some(
            self.children
                .iter()
                .map(|(id, c)| ChildInfo {
                    id: *id,
                    restarts: c.restarts,
                })
                .collect(),
        )
    }
}

impl<T: Send + 'static> HandleCall<CountChildren> for ConsumerSupervisor<T> {
    type Reply = ChildCounts;
    fn handle_call(
        &mut self,
        _: CountChildren,
        _: &ReplyTo<ChildCounts>,
        _: &mut Context<'_, Self>,
    ) -> Option<ChildCounts> {
        let n = self.children.len();
        Some(ChildCounts {
            specs: 1,
            active: n,
            workers: n,
            supervisors: 0,
        })
    }
}

/// GenStage calls the supervisor with timeout `:infinity`; an hour stands in for it.
const SUPERVISOR_TIMEOUT: Duration = Duration::from_secs(3600);

impl<T: Send + 'static> StageRef<ConsumerSupervisor<T>> {
    /// Runs a job for `event` outside any subscription: it holds no demand slot.
    pub fn start_child(&self, event: T) -> Result<ChildId, CallError> {
        self.call_timeout(StartChild(event), SUPERVISOR_TIMEOUT)
    }

    /// Terminates a job: it is asked to stop ([`JobContext::is_cancelled`]), is never
    /// restarted, and its slot is freed at once.
    pub fn terminate_child(&self, id: ChildId) -> Result<(), TerminateChildError> {
        match self.call_timeout(TerminateChild(id), SUPERVISOR_TIMEOUT)? {
            true => Ok(()),
            false => Err(TerminateChildError::NotFound),
        }
    }

    /// The jobs running (or about to run again), oldest first.
    pub fn which_children(&self) -> Result<Vec<ChildInfo>, CallError> {
        self.call_timeout(WhichChildren, SUPERVISOR_TIMEOUT)
    }

    /// GenStage's `count_children`.
    pub fn count_children(&self) -> Result<ChildCounts, CallError> {
        self.call_timeout(CountChildren, SUPERVISOR_TIMEOUT)
    }
}
