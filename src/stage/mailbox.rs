//! A stage's mailbox and the type-erased addresses other stages use to reach it.
//!
//! Every stage has one mailbox: a queue behind a mutex and a condition variable. The
//! stage takes *every* waiting message with one lock and handles them in order, and a
//! sender wakes it only when it sleeps. Before it sleeps, an idle stage polls for up
//! to 30 µs, in the way that suits the number of stages alive (see `spin_allowed`):
//! waking a parked thread costs far more than a message on a virtual machine. The
//! process can turn polling off ([`SpinPolicy`]). It is
//! not a crossbeam channel: with more stage threads than cores, crossbeam's receivers
//! spin with PAUSE and `sched_yield` in a way that takes CPU time from the very threads
//! they wait for. `docs/DESIGN.md` ("The mailbox") gives the reasons,
//! `docs/BENCHMARKS.md` the measurements.
//!
//! The mailbox has no capacity limit, on purpose: a blocking send between two stages could deadlock (a producer blocked on a full
//! consumer while the consumer blocks sending its ask back). What bounds it is the
//! demand protocol (invariant 1 of `docs/DESIGN.md`): a producer sends a consumer at most the events the
//! consumer asked for, so events queued in a mailbox never exceed the sum of the
//! subscriptions' `max_demand`; asks are sent only after events were handled, so they
//! are bounded by the same credit. Only calls, casts and infos from outside callers are
//! not bounded by demand; callers that flood a stage with casts own that queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long an idle stage polls its queue before it parks.
const SPIN: Duration = Duration::from_micros(30);

/// How an idle stage waits for its next message: poll its mailbox for a moment, or
/// park its thread at once. One setting for the whole process, like the rule it
/// governs (which counts every stage thread alive against the cores).
///
/// Polling trades CPU time for wake-up latency. Waking a parked thread costs tens of
/// microseconds on bare metal and hundreds on a virtual machine whose other CPU went
/// idle, which is more than handling a small batch; a stage that polls for a moment
/// sees the next message at once. The price is CPU time that other threads of the
/// machine (yours, other processes) do not get while the stage polls.
///
/// - [`Adaptive`](SpinPolicy::Adaptive), the default, measured on a 2-core virtual
///   machine (`docs/BENCHMARKS.md`): while there are no more stage threads than
///   cores, an idle stage that just handled a small message polls plainly for up to
///   30 µs (the thread it waits for is running); with more stage threads than cores
///   it polls for up to 30 µs calling [`yield_now`](std::thread::yield_now) between
///   polls, so the threads it waits for get the CPU; on a single core it parks at once.
/// - [`Park`](SpinPolicy::Park): park at once. Turn polling off when the CPU matters
///   more than the latency of each message: stages that are idle most of the time
///   (a long-running service with sparse events), a machine shared with other busy
///   programs, battery-powered or CPU-billed environments, or when profiling shows
///   the stages' threads busy while they have nothing to do.
///
/// ```
/// use stageflow::prelude::*;
/// use stageflow::SpinPolicy;
///
/// assert_eq!(SpinPolicy::global(), SpinPolicy::Adaptive);
/// SpinPolicy::Park.set_global();
/// assert_eq!(SpinPolicy::global(), SpinPolicy::Park);
///
/// // Stages behave the same, they only sleep sooner.
/// let numbers = from_iter(0..1_000u64, FromIterOptions::new())?;
/// let sum: u64 = stream(&numbers).map(|e| e.unwrap()).sum();
/// assert_eq!(sum, 999 * 1_000 / 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpinPolicy {
    /// Poll briefly before parking, in the way that suits the number of stage threads
    /// alive (the default).
    #[default]
    Adaptive,
    /// Park at once: no polling.
    Park,
}

/// The process's [`SpinPolicy`]: 0 is `Adaptive`, 1 is `Park`.
static POLICY: AtomicU8 = AtomicU8::new(0);

impl SpinPolicy {
    /// Makes this the policy of every stage of the process, from its next wait on.
    pub fn set_global(self) {
        let code = match self {
            SpinPolicy::Adaptive => 0,
            SpinPolicy::Park => 1,
        };
        POLICY.store(code, Ordering::Relaxed);
    }

    /// The policy in force ([`SpinPolicy::Adaptive`] unless
    /// [`set_global`](Self::set_global) said otherwise).
    pub fn global() -> SpinPolicy {
        match POLICY.load(Ordering::Relaxed) {
            0 => SpinPolicy::Adaptive,
            _ => SpinPolicy::Park,
        }
    }
}

/// Stage threads alive now (see [`spin_allowed`]).
pub(crate) static LIVE_STAGES: AtomicUsize = AtomicUsize::new(0);

fn cores() -> usize {
    static CORES: AtomicUsize = AtomicUsize::new(0);
    match CORES.load(Ordering::Relaxed) {
        0 => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            CORES.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Plain polling pays only while there are no more stages than cores: then the thread
/// it waits for is running, and parking would cost a wake-up (hundreds of
/// microseconds on a virtual machine whose other CPU went idle). With more stages than
/// cores, plain polling takes the CPU from the thread it waits for, so `recv_all` polls
/// with `yield_now` instead. Measurements: docs/BENCHMARKS.md.
/// The caller polls plainly only after small messages (see `Runtime::spin_next`).
fn spin_allowed() -> bool {
    let cores = cores();
    cores > 1 && LIVE_STAGES.load(Ordering::Relaxed) <= cores
}

use parking_lot::{Condvar, Mutex};

use super::handle::Shared;
use super::reason::{CancelReason, Reason, Tag};
use super::runtime::Runtime;
use super::subscription::SubscribeOptions;
use super::Stage;

/// Work for a stage's thread, run with access to its whole runtime (calls, casts,
/// infos, subscription requests, demand-mode switches).
pub(crate) type Exec<S> = Box<dyn FnOnce(&mut Runtime<S>) + Send>;

/// A user's message (cast or info) that is handed back to the sender when the stage
/// is gone: unlike a closure, it can be turned back into its concrete type.
pub(crate) trait Deliver<S: Stage>: Send {
    fn deliver(self: Box<Self>, rt: &mut Runtime<S>);
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}

pub(crate) enum Mail<S: Stage> {
    /// A consumer subscribes to us.
    Subscribe(Box<SubscribeMsg<S::Out>>),
    /// A consumer asks for `n` more events.
    Ask {
        tag: Tag,
        n: usize,
    },
    /// A consumer's subscription ends: cancelled (by anyone) or the consumer exited.
    ConsumerCancel {
        tag: Tag,
        reason: CancelReason,
    },
    /// Events from a producer we subscribed to.
    Events {
        tag: Tag,
        events: Vec<S::In>,
    },
    /// A producer confirms a cancel, cancels us, or exited.
    ProducerCancel {
        tag: Tag,
        reason: CancelReason,
    },
    /// A dispatcher releases an info marker.
    ReleaseInfo(u64),
    Exec(Exec<S>),
    Deliver(Box<dyn Deliver<S>>),
}

pub(crate) struct SubscribeMsg<T> {
    pub(crate) tag: Tag,
    pub(crate) consumer_id: u64,
    pub(crate) consumer: Arc<dyn Downstream<T>>,
    pub(crate) opts: SubscribeOptions<T>,
    pub(crate) current: Option<(Tag, Reason)>,
    pub(crate) guard: DownGuard,
}

/// Tells a consumer that its producer is gone if the subscribe message is dropped
/// unread (the producer exited before reading it): BEAM's monitor of a dead pid.
pub(crate) struct DownGuard {
    target: Option<(Tag, Arc<dyn DownstreamControl>)>,
    /// The producer the message was sent to: if it exits with the message unread, its
    /// exit reason is what the consumer learns (GenStage's monitor reports the real
    /// reason of a process that dies after it was monitored).
    producer: Option<Arc<Shared>>,
}

impl DownGuard {
    pub(crate) fn new(
        tag: Tag,
        consumer: Arc<dyn DownstreamControl>,
        producer: Arc<Shared>,
    ) -> Self {
        DownGuard {
            target: Some((tag, consumer)),
            producer: Some(producer),
        }
    }
    pub(crate) fn defuse(&mut self) {
        self.target = None;
    }
    /// The message never reached the producer, already dead when it was sent: the
    /// consumer learns `NoProc` (GenStage's monitor of a dead process).
    pub(crate) fn never_delivered(&mut self) {
        self.producer = None;
    }
}

impl Drop for DownGuard {
    fn drop(&mut self) {
        if let Some((tag, consumer)) = self.target.take() {
            let reason = self
                .producer
                .as_ref()
                .and_then(|p| p.exit_reason())
                .unwrap_or(Reason::NoProc);
            consumer.cancelled(tag, CancelReason::Down(reason));
        }
    }
}

pub(crate) trait UpstreamControl: Send + Sync {
    fn ask(&self, tag: Tag, n: usize) -> bool;
    fn cancel(&self, tag: Tag, reason: Reason) -> bool;
    fn consumer_down(&self, tag: Tag, reason: Reason) -> bool;
}

/// A producer of `T` as consumers see it.
pub(crate) trait Upstream<T>: UpstreamControl {
    /// Sends the subscribe message; hands it back when the producer is gone.
    fn subscribe(&self, msg: Box<SubscribeMsg<T>>) -> Result<(), Box<SubscribeMsg<T>>>;
    fn control(self: Arc<Self>) -> Arc<dyn UpstreamControl>;
}

/// What a producer may send a consumer about a subscription, whatever its event type.
pub(crate) trait DownstreamControl: Send + Sync {
    fn cancelled(&self, tag: Tag, reason: CancelReason) -> bool;
}

/// A consumer of `T` as producers (and their dispatchers) see it.
pub(crate) trait Downstream<T>: DownstreamControl {
    fn events(&self, tag: Tag, events: Vec<T>) -> bool;
}

/// What a dispatcher may send the stage that owns it.
pub(crate) trait DispatcherOwner: Send + Sync {
    fn self_ask(&self, tag: Tag, n: usize);
    fn release_info(&self, id: u64);
}

/// A FIFO queue of messages for one receiving thread.
pub(crate) struct MailQueue<T> {
    /// Something is queued: read without the lock while spinning.
    queued: AtomicBool,
    state: Mutex<QueueState<T>>,
    wake: Condvar,
}

struct QueueState<T> {
    items: VecDeque<T>,
    /// The receiver sleeps on `wake` and must be notified.
    sleeping: bool,
    /// The receiver is gone: sends fail and hand the message back.
    closed: bool,
}

impl<T> MailQueue<T> {
    pub(crate) fn new() -> Self {
        MailQueue {
            queued: AtomicBool::new(false),
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                sleeping: false,
                closed: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Appends `item`, or hands it back if the receiver has closed the queue.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(item);
        }
        state.items.push_back(item);
        self.queued.store(true, Ordering::Release);
        let sleeping = std::mem::replace(&mut state.sleeping, false);
        drop(state);
        if sleeping {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Waits until something is queued, then moves everything queued into `batch`
    /// (which must be empty), in order.
    /// `spin`: poll briefly before parking (see [`spin_allowed`]).
    pub(crate) fn recv_all(&self, batch: &mut VecDeque<T>, spin: bool) {
        let adaptive = SpinPolicy::global() == SpinPolicy::Adaptive;
        if adaptive && !self.queued.load(Ordering::Acquire) && !spin_allowed() && cores() > 1 {
            // More stages than cores: poll, but hand the CPU to any other runnable
            // thread between polls, so the stage we wait for is not starved while the
            // virtual CPU stays awake for the next message (measurements:
            // docs/BENCHMARKS.md).
            let start = std::time::Instant::now();
            while !self.queued.load(Ordering::Acquire) && start.elapsed() < SPIN {
                std::thread::yield_now();
            }
        }
        if adaptive && spin && !self.queued.load(Ordering::Acquire) && spin_allowed() {
            // The clock is read once per 512 polls: on some virtual machines reading it
            // is a system call.
            let start = std::time::Instant::now();
            'spin: loop {
                // Plain polling, no `spin_loop` hint: a hypervisor that sees many
                // PAUSE instructions takes the virtual CPU away (pause-loop exiting),
                // which is exactly the wake-up delay the spin is meant to avoid.
                for _ in 0..512 {
                    if self.queued.load(Ordering::Acquire) {
                        break 'spin;
                    }
                }
                if start.elapsed() >= SPIN {
                    break;
                }
            }
        }
        let mut state = self.state.lock();
        while state.items.is_empty() {
            state.sleeping = true;
            self.wake.wait(&mut state);
        }
        state.sleeping = false;
        std::mem::swap(&mut state.items, batch);
        self.queued.store(false, Ordering::Relaxed);
    }

    /// [`recv_all`](Self::recv_all) for a stage with a timer armed: waits until
    /// something is queued or `deadline` passes, without spinning (the timer, not a
    /// message, is usually what comes next). Returns at once if something is queued.
    pub(crate) fn recv_all_until(&self, batch: &mut VecDeque<T>, deadline: std::time::Instant) {
        let mut state = self.state.lock();
        while state.items.is_empty() {
            state.sleeping = true;
            if self.wake.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.sleeping = false;
        std::mem::swap(&mut state.items, batch);
        self.queued.store(false, Ordering::Relaxed);
    }

    /// Closes the queue: later sends fail. What was queued is returned, to be dropped
    /// by the caller outside the lock (dropping a message may send messages).
    pub(crate) fn close(&self) -> VecDeque<T> {
        let mut state = self.state.lock();
        state.closed = true;
        std::mem::take(&mut state.items)
    }
}

/// The sending end of a stage's mailbox.
pub(crate) struct Mailbox<S: Stage> {
    pub(crate) queue: Arc<MailQueue<Mail<S>>>,
}

impl<S: Stage> Clone for Mailbox<S> {
    fn clone(&self) -> Self {
        Mailbox {
            queue: self.queue.clone(),
        }
    }
}

impl<S: Stage> Mailbox<S> {
    pub(crate) fn send(&self, mail: Mail<S>) -> bool {
        self.queue.send(mail).is_ok()
    }
}

impl<S: Stage> UpstreamControl for Mailbox<S> {
    fn ask(&self, tag: Tag, n: usize) -> bool {
        self.send(Mail::Ask { tag, n })
    }
    fn cancel(&self, tag: Tag, reason: Reason) -> bool {
        self.send(Mail::ConsumerCancel {
            tag,
            reason: CancelReason::Cancel(reason),
        })
    }
    fn consumer_down(&self, tag: Tag, reason: Reason) -> bool {
        self.send(Mail::ConsumerCancel {
            tag,
            reason: CancelReason::Down(reason),
        })
    }
}

impl<S: Stage> Upstream<S::Out> for Mailbox<S> {
    fn subscribe(&self, msg: Box<SubscribeMsg<S::Out>>) -> Result<(), Box<SubscribeMsg<S::Out>>> {
        self.queue.send(Mail::Subscribe(msg)).map_err(|e| match e {
            Mail::Subscribe(m) => m,
            _ => unreachable!("send hands back what it was given"),
        })
    }
    fn control(self: Arc<Self>) -> Arc<dyn UpstreamControl> {
        self
    }
}

impl<S: Stage> DownstreamControl for Mailbox<S> {
    fn cancelled(&self, tag: Tag, reason: CancelReason) -> bool {
        self.send(Mail::ProducerCancel { tag, reason })
    }
}

impl<S: Stage> Downstream<S::In> for Mailbox<S> {
    fn events(&self, tag: Tag, events: Vec<S::In>) -> bool {
        self.send(Mail::Events { tag, events })
    }
}

impl<S: Stage> DispatcherOwner for Mailbox<S> {
    fn self_ask(&self, tag: Tag, n: usize) {
        self.send(Mail::Ask { tag, n });
    }
    fn release_info(&self, id: u64) {
        self.send(Mail::ReleaseInfo(id));
    }
}
