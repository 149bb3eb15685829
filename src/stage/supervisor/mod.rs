//! `ConsumerSupervisor`: a consumer that runs one job per event, concurrently, on a
//! pool of reused worker threads (GenStage's `ConsumerSupervisor`).
//!
//! The files follow the roles: `job.rs` is what the user hands over (the job, its
//! restart rule, the options), `mod.rs` the running supervisor (demand slots, restarts,
//! its stage callbacks), `pool.rs` the worker threads and `calls.rs` what can be asked
//! of a running supervisor (`start_child`, `terminate_child`, ...).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{OptionsError, StartError};

use super::handle::StageRef;
use super::log::Level;
use super::reason::{next_id, CancelReason, Reason, Tag};
use super::subscription::{Demand, SubscriptionInfo, SubscriptionRef};
use super::{Consumer, Context, Init, Never, Peer, Stage};

mod calls;
mod job;
mod pool;

pub use calls::{ChildCounts, ChildInfo, TerminateChildError};
pub use job::{ChildId, ConsumerSupervisorOptions, Job, JobContext, Restart};
use pool::{Pool, Task};

/// A job the supervisor knows: running, queued, or about to run again.
struct Child {
    /// The subscription whose demand this job uses (`None`: `start_child`).
    producer: Option<Tag>,
    cancelled: Arc<AtomicBool>,
    restarts: usize,
}

/// The demand slots of one subscription: jobs started from its events are its slots.
struct ProducerSlots {
    from: SubscriptionRef,
    /// Jobs started from this producer's events and still holding a slot.
    count: usize,
    /// Freed slots not yet asked for again.
    pending: usize,
    min: usize,
    max: usize,
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
        super::start_consumer(stage, options.consumer)
    }

    fn submit(&mut self, id: ChildId, event: T, cancelled: Arc<AtomicBool>) {
        let (Some(pool), Some(me)) = (self.pool.as_mut(), self.me.as_ref()) else {
            return;
        };
        let task = Task {
            id,
            event,
            cancelled,
        };
        pool.submit(task, &self.job, me);
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
            pool.job_ended();
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

impl<T: Send + 'static> Stage for ConsumerSupervisor<T> {
    type In = T;
    type Out = Never;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        self.pool = Some(Pool::new());
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
        if let Some(pool) = self.pool.take() {
            pool.shut_down(self.shutdown);
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
