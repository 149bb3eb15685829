//! The supervisor's worker threads: reused, and spawned only when every one is busy.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::super::handle::StageRef;
use super::super::reason::Reason;
use super::{ChildId, ConsumerSupervisor, Job, JobContext};

/// One run of a job.
pub(super) struct Task<T> {
    pub(super) id: ChildId,
    pub(super) event: T,
    pub(super) cancelled: Arc<AtomicBool>,
}

/// Reused worker threads: a thread is spawned only when every existing one is busy,
/// so the pool grows to the peak number of jobs in flight (at most the
/// subscriptions' `max_demand` plus jobs from `start_child`) and no further.
pub(super) struct Pool<T> {
    tx: Option<Sender<Task<T>>>,
    rx: Receiver<Task<T>>,
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
    threads: usize,
    busy: usize,
}

impl<T: Send + 'static> Pool<T> {
    pub(super) fn new() -> Self {
        // Task and completion channels: bounded by the jobs in flight (see above).
        let (tx, rx) = unbounded();
        let (done_tx, done_rx) = unbounded();
        Pool {
            tx: Some(tx),
            rx,
            done_tx,
            done_rx,
            threads: 0,
            busy: 0,
        }
    }

    /// Queues `task` for a worker, spawning one if every worker is busy. Each worker
    /// reports the end of each job to `me`, the supervisor.
    pub(super) fn submit(
        &mut self,
        task: Task<T>,
        job: &Arc<dyn Job<T>>,
        me: &StageRef<ConsumerSupervisor<T>>,
    ) {
        self.busy += 1;
        if self.busy > self.threads {
            let rx = self.rx.clone();
            let done = self.done_tx.clone();
            let job = job.clone();
            let me = me.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-worker-{}", me.name(), self.threads))
                .spawn(move || worker(rx, job, me, done));
            if spawned.is_ok() {
                self.threads += 1;
            }
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(task);
        }
    }

    /// A job ended: its worker is free again.
    pub(super) fn job_ended(&mut self) {
        self.busy = self.busy.saturating_sub(1);
    }

    /// Closes the task channel, which lets idle workers exit, and gives busy ones
    /// until `shutdown` has passed to notice the cancel.
    pub(super) fn shut_down(mut self, shutdown: Duration) {
        self.tx = None;
        let deadline = Instant::now() + shutdown;
        for _ in 0..self.threads {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done_rx.recv_timeout(left).is_err() {
                break;
            }
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
