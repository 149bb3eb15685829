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
//! Folds (`sum`, `count`, `for_each`, `run`) and `collect` run the driving loop on a
//! pool worker (inside `rayon::scope`), unless the tree reads stage streams
//! ([`Node::reads_stages`]); a streaming `FlowIter` (`into_iter`) drives from the
//! calling thread, which keeps its allocations in one arena (flatter peak RSS). No worker ever waits for another task other than by rayon's work-stealing
//! join; a worker can wait inside a source's `next()` (an iterator that blocks), and a
//! lane waits at most `PULL_WAIT` for the lock of a source another lane is pulling
//! from, then leaves the rest of the round to it.
//!
//! Memory: a round moves at most `MAX_ROUND_EVENTS` source events (`MAX_FOLD_ROUND_EVENTS`
//! for folds; rounded to whole batches per lane) through the tree, and at most two rounds
//! per layer are in flight, so in-flight data is bounded independently of the input
//! length; what stays is the reducers' state.

pub(crate) mod entry;
pub(crate) mod node;
pub(crate) mod sinks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::Mutex;
use rayon::prelude::*;

use crate::flow::error::{panic_message, FlowError};
use crate::flow::window::{TriggerName, WindowKind};

/// Source events per round (rounded up to whole batches): the bound on in-flight data.
pub(crate) const MAX_ROUND_EVENTS: usize = 1 << 16;

/// [`MAX_ROUND_EVENTS`] for folds (`sum`, `count`, `for_each`, `run`).
pub(crate) const MAX_FOLD_ROUND_EVENTS: usize = 1 << 18;

/// The first round of a source (dealt by the driving thread), and its smallest round
/// (both rounded up to whole batches per lane). Rounds adapt to last about
/// [`ROUND_TARGET`]: cheap events get large rounds (the fork/join and wake-ups of a
/// round cost tens of microseconds), costly ones small rounds (less data in flight,
/// timers checked more often).
pub(crate) const MIN_ROUND_EVENTS: usize = 1 << 12;

/// How long a round should take: the time from planning a round to settling it, so it
/// includes every layer's work and the wake-ups around it (on a 2-core VM a round costs
/// 50-100 us on top of its work; at 2 ms, W5 lost a fifth of its speed to them). Timers
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
    fn events_from(&mut self, w: i64, events: &mut Run<'_, T>) {
        self.events(w, events.collect())
    }
    /// Events a reducer emitted for trigger `name` of window `w`.
    fn emitted(&mut self, w: i64, _name: &TriggerName, batch: Vec<T>) {
        self.events(w, batch)
    }
    /// Fire trigger `name` on window `w`; `complete` means the window is over.
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool);
    /// The lane's input ended (after every trigger).
    fn finish(&mut self);
    /// Whether the chain observes batch boundaries (`map_batch`), so the lane must cut
    /// its input into batches of exactly the layer's batch size.
    fn exact_batches(&self) -> bool {
        false
    }
}

/// A run of events taken from a batch in order ([`Sink::events_from`]).
pub(crate) type Run<'r, T> = std::iter::Take<&'r mut std::vec::IntoIter<T>>;

pub(crate) type BoxSink<'a, T> = Box<dyn Sink<T> + 'a>;
/// Builds the chain of one lane.
pub(crate) type SinkFactory<'a, T> = Arc<dyn Fn(&LaneCtx) -> BoxSink<'a, T> + Send + Sync + 'a>;

/// A message from an upstream producer (lane) to a lane of the next layer.
pub(crate) enum Msg<T> {
    Batch(Vec<T>),
    /// The producer finished; it no longer holds back fixed-window watermarks.
    Done,
}

pub(crate) struct Envelope<T> {
    pub from: usize,
    pub seq: u64,
    pub msg: Msg<T>,
}

/// The input queues of a layer, one per lane, filled by the upstream lanes' routers
/// during the upstream round and emptied by this layer's round. Bounded by one round of
/// upstream output. Locked once per routed batch, never per event.
pub(crate) struct Inbox<T> {
    lanes: Vec<Mutex<Vec<Envelope<T>>>>,
}

impl<T> Inbox<T> {
    pub fn new(lanes: usize) -> Arc<Self> {
        Arc::new(Inbox {
            lanes: (0..lanes).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }
    pub fn push(&self, lane: usize, env: Envelope<T>) {
        self.lanes[lane].lock().push(env);
    }
    /// Takes every lane's messages, each in FIFO order per producer.
    pub fn take(&self) -> Vec<Vec<Envelope<T>>> {
        self.lanes
            .iter()
            .map(|l| {
                let mut v = std::mem::take(&mut *l.lock());
                // Producers push concurrently; per-producer FIFO is what GenStage
                // guarantees, so order by (producer, sequence).
                v.sort_by_key(|e| (e.from, e.seq));
                v
            })
            .collect()
    }
}

/// The input side of a lane: window logic in front of the lane's chain.
pub(crate) trait LaneIn<T>: Send {
    fn batch(&mut self, from: usize, items: Vec<T>);
    fn producer_done(&mut self, from: usize);
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
pub(crate) fn lane_task<'s, 'a: 's, T: Send + 'a>(
    (i, total, place): (usize, usize, &'s str),
    lane: &'s mut Box<dyn LaneIn<T> + 'a>,
    msgs: Vec<Envelope<T>>,
    finish: bool,
) -> Task<'s> {
    Box::new(move || {
        catch_unwind(AssertUnwindSafe(|| {
            for env in msgs {
                match env.msg {
                    Msg::Batch(items) => lane.batch(env.from, items),
                    Msg::Done => lane.producer_done(env.from),
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
    FlowError::Panic {
        place: format!("stage {i} of {total} in {place}"),
        message: panic_message(p),
    }
}

pub(crate) type BoxNode<'a> = Box<dyn Node + 'a>;

/// A node and the number of its lanes (the producers its downstream sees).
pub(crate) struct Built<'a> {
    pub node: BoxNode<'a>,
    pub lanes: usize,
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
        .map(|(i, (lane, m))| lane_task((i, total, place), lane, m, finish))
        .collect();
    run_tasks(tasks)
}
