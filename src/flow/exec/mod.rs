//! The rayon engine: lanes, inboxes, rounds.
//!
//! A running flow is a tree of [`Node`]s. A node is a *layer* of `stages` lanes (Elixir's
//! stages); each lane owns its state (window, trigger, accumulator) and a fused chain of
//! [`Sink`]s built from the flow's operations. One driving loop runs the tree in
//! *rounds* ([`round`]): every node *plans* one task per lane, all the tasks of the tree
//! run in one parallel region (one rayon job each, so a lane's state is touched by one
//! worker at a time, and no layer waits for another's fork/join), then every node
//! *settles* (takes its inbox for the next round, notices the end of its input).
//!
//! A source lane's task pulls batches from the shared iterators itself, as long as the
//! round's budget lasts, and pushes each through its chain at once, so a batch is made
//! and consumed on the same core (see `node::Pull` for the exceptions: the first round,
//! and stage streams, are pulled by the driving thread and dealt to the lanes in turn).
//! Lanes route their output batches into the downstream node's [`Inbox`]; a layer's
//! task processes what its upstream routed in the previous round, while the upstream
//! runs the next one in the same region.
//!
//! Order: pulls are numbered under the source's lock, every batch carries the number
//! of the source chunk it descends from ([`Tag`], [`Envelope::order`]), and an inbox
//! hands a lane its round's messages sorted by it, so no lane sees which worker ran
//! first. The routers of a source lane without a reducer speak for the iterators
//! (`sinks::Speaker`): the next layer's producers are the iterators, not the lanes, and
//! its windows do not depend on the number of lanes (the flow module docs say what is
//! guaranteed).
//!
//! Folds (`sum`, `count`, `for_each`, `run`) and `collect` run inside the last
//! layer's lanes (`collect` keeps each lane's output there until the end) and run the
//! driving loop on a pool worker (inside `rayon::scope`), unless the tree reads stage
//! streams ([`Node::reads_stages`]); a streaming `FlowIter` (`into_iter`) drives from
//! the calling thread, which keeps its allocations in one arena (flatter peak RSS).
//! No worker ever waits for another task other than by rayon's work-stealing join; a
//! worker can wait inside a source's `next()` (an iterator that blocks), and a lane
//! waits at most `PULL_WAIT` for the lock of a source another lane is pulling from,
//! then leaves the rest of the round to it.
//!
//! Memory: a round moves at most `MAX_ROUND_EVENTS` source events
//! (`MAX_FOLD_ROUND_EVENTS` for folds other than `collect`; rounded to whole batches
//! per lane, plus at most one pulled chunk per lane) through the tree, and at most two
//! rounds per layer are in flight, so
//! in-flight data is bounded independently of the input length; what stays is the
//! reducers' state (and, for `collect`, its output). Inboxes keep the allocations of
//! consumed batches up to a quarter of a round's worth.

pub(crate) mod node;
pub(crate) mod sinks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rayon::prelude::*;

use crate::flow::error::FlowError;
use crate::flow::window::{TriggerName, WindowKind};

/// Source events per round (rounded up to whole batches): the bound on in-flight data.
/// Also `collect`'s: the data of larger rounds no longer stays in the cores' caches
/// between layers (measurements: docs/BENCHMARKS.md).
pub(crate) const MAX_ROUND_EVENTS: usize = 1 << 16;

/// [`MAX_ROUND_EVENTS`] for folds (`sum`, `count`, `for_each`, `run`): fewer rounds,
/// fewer wake-ups of the other workers.
pub(crate) const MAX_FOLD_ROUND_EVENTS: usize = 1 << 18;

/// The first round of a source (dealt by the driving thread; rounded up to a whole
/// batch), and its smallest round (rounded up to whole batches per lane). Rounds adapt
/// to last about
/// [`ROUND_TARGET`]: cheap events get large rounds (the fork/join and wake-ups of a
/// round cost tens of microseconds), costly ones small rounds (less data in flight,
/// timers checked more often).
pub(crate) const MIN_ROUND_EVENTS: usize = 1 << 12;

/// How long a round should take: the time from planning a round to settling it, so it
/// includes every layer's work and the wake-ups around it, a fixed cost per round that
/// shorter rounds pay too often (measurements: docs/BENCHMARKS.md). Timers
/// (periodic windows and triggers, lateness) are checked once per round.
pub(crate) const ROUND_TARGET: std::time::Duration = std::time::Duration::from_micros(5000);

/// Batches are allocated on one thread and freed on another; glibc's malloc returns
/// the freed top of its heap to the OS once more than 128 KiB are free (the default
/// trim threshold), so every round page-faulted its memory back in (it was most of the
/// system time of a flow). glibc raises its mmap and trim thresholds
/// to the size of the largest mmap-ed block freed so far: allocating and freeing one
/// untouched 16 MiB block once does that (nothing is written, so nothing is faulted
/// in). Elsewhere this is one harmless allocation.
pub(crate) fn raise_malloc_thresholds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(16 << 20))));
}

/// What a lane of a layer knows about itself.
#[derive(Clone, Debug)]
pub(crate) struct LaneCtx {
    pub index: usize,
    pub total: usize,
    pub kind: WindowKind,
    /// Where the batch the lane is processing came from (see [`Tag`]).
    pub tag: Arc<Tag>,
    /// `Some(iterators)` for the lanes of a source layer: their routers may speak for
    /// the iterators instead of the lanes (see `sinks::Speaker`).
    pub iters: Option<usize>,
}

/// The origin of the batch a lane is processing: the source chunk it descends from
/// (its *order*) and, in a source layer, the iterator that chunk came from. The lane's
/// entry sets it before each batch and its routers stamp their output with it. Set
/// and read by the one worker that runs the lane in a round (rayon's job boundaries
/// order the rounds), so relaxed atomics suffice: one store and one load per batch.
#[derive(Debug, Default)]
pub(crate) struct Tag {
    order: AtomicU64,
    from: AtomicUsize,
}

impl Tag {
    pub fn set(&self, order: u64, from: usize) {
        self.order.store(order, Ordering::Relaxed);
        self.from.store(from, Ordering::Relaxed);
    }
    pub fn order(&self) -> u64 {
        self.order.load(Ordering::Relaxed)
    }
    pub fn from(&self) -> usize {
        self.from.load(Ordering::Relaxed)
    }
}

/// One step of a lane's fused operation chain. Batches of one window at a time flow
/// down; triggers and the end of input travel the same way so that a reducer at the end
/// of the chain can emit.
pub(crate) trait Sink<T>: Send {
    /// Events belonging to window `w` (a window id as in `TriggerInfo::window`).
    fn events(&mut self, w: i64, batch: Vec<T>);
    /// Events of window `w` taken one by one from a larger batch (fixed windows hand
    /// each window's run over this way); sinks that consume events one at a time
    /// override it to skip collecting them into a vector of their own.
    fn events_from(&mut self, w: i64, events: &mut Run<'_, '_, T>) {
        self.events(w, events.collect())
    }
    /// Events a reducer emitted for trigger `name` of window `w`.
    fn emitted(&mut self, w: i64, _name: &TriggerName, batch: Vec<T>) {
        self.events(w, batch)
    }
    /// Fire trigger `name` on window `w`; `complete` means the window is over.
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool);
    /// Iterator `from` of the source ended (after its last batch). Only mappers pass
    /// it on, to routers that speak for the iterators; a reducer's lane is a producer
    /// of its own, whose end is its `finish`.
    fn producer_done(&mut self, _from: usize) {}
    /// The lane's input ended (after every trigger).
    fn finish(&mut self);
    /// Whether the chain observes batch boundaries (`map_batch`), so the lane must cut
    /// its input into batches of exactly the layer's batch size.
    fn exact_batches(&self) -> bool {
        false
    }
}

/// A run of events taken from a batch in order ([`Sink::events_from`]). Drained, so
/// that the batch's allocation can go back to its inbox's spares.
pub(crate) type Run<'r, 'd, T> = std::iter::Take<&'r mut std::vec::Drain<'d, T>>;

pub(crate) type BoxSink<'a, T> = Box<dyn Sink<T> + 'a>;
/// Builds the chain of one lane.
pub(crate) type SinkFactory<'a, T> = Arc<dyn Fn(&LaneCtx) -> BoxSink<'a, T> + Send + Sync + 'a>;

/// A message from an upstream producer (lane) to a lane of the next layer.
pub(crate) enum Msg<T> {
    Batch(Vec<T>),
    /// The producer finished; it no longer holds back fixed-window watermarks.
    Done,
    /// To a source lane from the driver: iterator `from` ended with the batch before;
    /// the lane tells its chain ([`Sink::producer_done`]).
    Ended,
}

pub(crate) struct Envelope<T> {
    pub from: usize,
    /// The source chunk the batch descends from (see [`Tag`]); `u64::MAX` for a
    /// producer's end of input, which follows everything.
    pub order: u64,
    pub seq: u64,
    pub msg: Msg<T>,
}

/// The input queues of a layer, one per lane, filled by the upstream lanes' routers
/// during the upstream round and emptied by this layer's round. Bounded by one round of
/// upstream output. Locked once per routed batch, never per event.
///
/// It also keeps the allocations of batches its lanes have consumed, for the routers
/// to fill again. Without them, a batch allocated by one worker is freed by another:
/// glibc then takes the allocating thread's arena lock, and threads sleep on that lock
/// (measurements: docs/BENCHMARKS.md).
pub(crate) struct Inbox<T> {
    lanes: Vec<Mutex<Vec<Envelope<T>>>>,
    /// Per pool worker: a batch's allocation goes back to the worker that consumed
    /// it, and that worker's routers fill it next, while it may still be in its cache.
    spares: Vec<Mutex<Spares<T>>>,
    /// Most elements (summed capacities) the spares of one worker may hold: a part of
    /// what one round has in flight, so keeping them adds little memory to what the
    /// round needed anyway.
    spare_limit: usize,
}

struct Spares<T> {
    bufs: Vec<Vec<T>>,
    elems: usize,
}

impl<T> Inbox<T> {
    /// An inbox that keeps no spare allocations.
    pub fn new(lanes: usize) -> Arc<Self> {
        Self::recycling(lanes, 0)
    }
    /// An inbox that keeps up to `spare_limit` elements of consumed batches' capacity.
    pub fn recycling(lanes: usize, spare_limit: usize) -> Arc<Self> {
        Arc::new(Inbox {
            lanes: (0..lanes).map(|_| Mutex::new(Vec::new())).collect(),
            spares: (0..rayon::current_num_threads().max(1))
                .map(|_| {
                    Mutex::new(Spares {
                        bufs: Vec::new(),
                        elems: 0,
                    })
                })
                .collect(),
            spare_limit: spare_limit / rayon::current_num_threads().max(1),
        })
    }
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }
    pub fn push(&self, lane: usize, env: Envelope<T>) {
        self.lanes[lane].lock().push(env);
    }
    /// `n` empty vectors with room for `cap` elements each: spares first (the most
    /// recently returned, likeliest to be in cache), then new ones.
    pub fn buffers(&self, n: usize, cap: usize) -> Vec<Vec<T>> {
        let mut out = Vec::with_capacity(n);
        if self.spare_limit > 0 {
            let mut s = self.my_spares().lock();
            while out.len() < n {
                let Some(b) = s.bufs.pop() else { break };
                s.elems -= b.capacity();
                out.push(b);
            }
        }
        for b in &mut out {
            b.reserve(cap);
        }
        out.resize_with(n, || Vec::with_capacity(cap));
        out
    }
    /// Keeps the allocation of a consumed batch for [`Inbox::buffers`], if there is
    /// room; otherwise it is freed here.
    pub fn recycle(&self, mut buf: Vec<T>) {
        if buf.capacity() == 0 || self.spare_limit == 0 {
            return;
        }
        buf.clear();
        let mut s = self.my_spares().lock();
        if s.elems + buf.capacity() <= self.spare_limit {
            s.elems += buf.capacity();
            s.bufs.push(buf);
            return;
        }
        drop(s);
    }
    fn my_spares(&self) -> &Mutex<Spares<T>> {
        let i = rayon::current_thread_index().unwrap_or(0);
        &self.spares[i % self.spares.len()]
    }
    /// Takes every lane's messages in the order of the source chunks they descend
    /// from, each producer's in FIFO order.
    pub fn take(&self) -> Vec<Vec<Envelope<T>>> {
        self.lanes
            .iter()
            .map(|l| {
                let mut v = std::mem::take(&mut *l.lock());
                // Producers push concurrently. A producer stamps its messages with
                // non-decreasing orders and increasing sequence numbers, so this keeps
                // GenStage's per-producer FIFO; across producers it puts the batches
                // in the order their events left the source, whichever worker ran
                // them first: what a lane sees does not depend on the thread count.
                v.sort_by_key(|e| (e.order, e.from, e.seq));
                v
            })
            .collect()
    }
}

/// The input side of a lane: window logic in front of the lane's chain.
pub(crate) trait LaneIn<T>: Send {
    /// Processes a batch of producer `from` descending from source chunk `order`;
    /// returns its allocation if the lane emptied it without keeping it (for the
    /// inbox's spares), else an unallocated vector.
    fn batch(&mut self, from: usize, order: u64, items: Vec<T>) -> Vec<T>;
    fn producer_done(&mut self, from: usize);
    /// In a source layer: iterator `from` ended, found so by the pull of chunk
    /// `order` (told to one lane only, unlike `producer_done`).
    fn source_ended(&mut self, from: usize, order: u64);
    /// Lets timers fire (periodic windows and triggers, lateness).
    fn tick(&mut self);
    fn finish(&mut self);
}

/// One lane's work in a round.
pub(crate) type Task<'s> = Box<dyn FnOnce() -> Result<(), FlowError> + Send + 's>;

/// A round's tasks by lane index (`cols[i]`: the tasks of lane `i` of every layer).
pub(crate) type Cols<'s> = Vec<Vec<Task<'s>>>;

/// A running node: one layer and, recursively, its upstream.
pub(crate) trait Node: Send {
    /// Plans this node's part of the next round: one task per lane of this layer and,
    /// recursively, of its upstream, pushed to `cols[lane index]`.
    fn plan<'s>(&'s mut self, cols: &mut Cols<'s>) -> Result<(), FlowError>;
    /// Runs after the round's tasks; returns true once the node has finished (its
    /// lanes fired their last triggers and routed everything downstream).
    fn settle(&mut self) -> Result<bool, FlowError>;
    /// Whether a source of this tree is a stage stream, read by the driving thread:
    /// then the driving loop stays on the caller's thread, so that a flow waiting for
    /// stage events never holds a pool worker (the flows feeding those stages may need
    /// every one, and a pool may have a single worker).
    fn reads_stages(&self) -> bool;
}

/// Adds `task` to the tasks of lane `i`.
pub(crate) fn push_task<'s>(cols: &mut Cols<'s>, i: usize, task: Task<'s>) {
    if cols.len() <= i {
        cols.resize_with(i + 1, Vec::new);
    }
    cols[i].push(task);
}

/// Runs one round of the tree under `node`: every lane of every layer is one task, and
/// all of them run in one parallel region (no layer waits for another's fork/join).
/// They are ordered lane by lane (lane 0 of each layer, then lane 1, ...), so that
/// rayon's halving splits give each worker a share of every layer's work. Returns true
/// once the tree has finished.
pub(crate) fn round(node: &mut BoxNode<'_>) -> Result<bool, FlowError> {
    {
        let mut cols: Cols<'_> = Vec::new();
        node.plan(&mut cols)?;
        run_tasks(cols.into_iter().flatten().collect())?;
    }
    node.settle()
}

/// Runs tasks in parallel (one rayon job each); the first error wins.
pub(crate) fn run_tasks(tasks: Vec<Task<'_>>) -> Result<(), FlowError> {
    match tasks.len() {
        0 => Ok(()),
        1 => tasks.into_iter().try_for_each(|t| t()),
        _ => tasks.into_par_iter().with_max_len(1).try_for_each(|t| t()),
    }
}

/// The task that feeds `msgs` to `lane`, lets its timers fire and, if `finish`, fires
/// its last triggers; a panic in user code becomes `FlowError::Panic` naming the lane.
/// Emptied batches go back to `spares` (the inbox they came from).
pub(crate) fn lane_task<'s, 'a: 's, T: Send + 'a>(
    (i, total, place): (usize, usize, &'s str),
    lane: &'s mut Box<dyn LaneIn<T> + 'a>,
    msgs: Vec<Envelope<T>>,
    finish: bool,
    spares: Option<&'s Inbox<T>>,
) -> Task<'s> {
    Box::new(move || {
        catch_unwind(AssertUnwindSafe(|| {
            for env in msgs {
                match env.msg {
                    Msg::Batch(items) => {
                        let buf = lane.batch(env.from, env.order, items);
                        if let Some(inbox) = spares {
                            inbox.recycle(buf);
                        }
                    }
                    Msg::Done => lane.producer_done(env.from),
                    Msg::Ended => lane.source_ended(env.from, env.order),
                }
            }
            lane.tick();
            if finish {
                lane.finish();
            }
        }))
        .map_err(|p| lane_panic((i, total, place), p))
    })
}

/// The error for a panic caught in lane `i` of `total` of the layer `place`.
pub(crate) fn lane_panic(
    (i, total, place): (usize, usize, &str),
    p: Box<dyn std::any::Any + Send>,
) -> FlowError {
    FlowError::panic(format!("stage {i} of {total} in {place}"), p)
}

pub(crate) type BoxNode<'a> = Box<dyn Node + 'a>;

/// A node and the number of its lanes.
pub(crate) struct Built<'a> {
    pub node: BoxNode<'a>,
    pub lanes: usize,
    /// `Some(iterators)` if the node is a source layer.
    pub iters: Option<usize>,
}

impl Built<'_> {
    /// The producers the next layer sees: the source's iterators if the routers speak
    /// for them (`sinks::Speaker`), else the lanes.
    pub fn producers(&self, for_iters: bool) -> usize {
        match self.iters {
            Some(m) if for_iters => m,
            _ => self.lanes,
        }
    }
}

/// How a flow is turned into running nodes once its consumer is known: given the sink
/// factory for its output events, build the tree.
pub(crate) type Build<'a, T> =
    Box<dyn FnOnce(SinkFactory<'a, T>, &Cx) -> Result<Built<'a>, FlowError> + Send + 'a>;

/// Shared by every node of one run: counters of events dropped by design.
#[derive(Default, Debug)]
pub(crate) struct Stats {
    /// Events a custom partition hash discarded (returned `None`).
    pub discarded: std::sync::atomic::AtomicU64,
    /// Events of fixed windows that arrived after their window closed.
    pub late: Arc<std::sync::atomic::AtomicU64>,
}

/// What building a run shares.
pub(crate) struct Cx {
    pub stats: Arc<Stats>,
    /// Most source events per round for this run: folds driven from a pool worker
    /// take larger rounds (fewer wake-ups of the other workers per event) than
    /// streaming iterators (less data in flight between the caller and the pool).
    pub max_round_events: usize,
}

/// Runs every lane over its messages (in parallel) and, if `finish`, fires their last
/// triggers: the work of a round outside the flat plan (a source's last pass).
pub(crate) fn run_lanes<'a, T: Send + 'a>(
    lanes: &mut [Box<dyn LaneIn<T> + 'a>],
    msgs: Vec<Vec<Envelope<T>>>,
    finish: bool,
    place: &str,
) -> Result<(), FlowError> {
    let total = lanes.len();
    let tasks = lanes
        .iter_mut()
        .zip(msgs)
        .enumerate()
        .map(|(i, (lane, m))| lane_task((i, total, place), lane, m, finish, None))
        .collect();
    run_tasks(tasks)
}
