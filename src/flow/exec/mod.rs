//! The rayon engine: lanes, inboxes, rounds.
//!
//! A running flow is a tree of [`Node`]s. A node is a *layer* of `stages` lanes (Elixir's
//! stages); each lane owns its state (window, trigger, accumulator) and a fused chain of
//! [`Sink`]s built from the flow's operations. One driving loop runs the tree in
//! *rounds*: the root asks its upstream nodes for one round each and processes its
//! inbox meanwhile. A source layer's round runs its lanes in parallel (one rayon task
//! per lane, so a lane's state is touched by one worker at a time); each lane pulls
//! batches from the shared iterators itself and pushes them through its chain at once,
//! so a batch is made and consumed on the same core (see `node::Pull` for the
//! exceptions: the first round, and stage streams, are pulled by the driving thread and
//! dealt to the lanes in turn). Lanes route their output batches into the downstream
//! node's [`Inbox`], whose lanes process them while the upstream runs its next round.
//! Folds (`sum`, `count`, `for_each`, `run`) run the driving loop on a pool worker
//! (inside `rayon::scope`), so the lane jobs it spawns go to its own deque; a streaming
//! `FlowIter` (`collect`, `into_iter`) drives from the calling thread, which keeps its
//! allocations in one arena (flatter peak RSS). No worker ever waits for another task
//! other than by rayon's work-stealing join; a worker can wait inside a source's
//! `next()` (an iterator that blocks), and a lane waits at most `PULL_WAIT` for the lock
//! of a source another lane is pulling from, then leaves the rest of the round to it.
//!
//! Memory: a round moves at most `MAX_ROUND_EVENTS` source events (`MAX_FOLD_ROUND_EVENTS`
//! for folds; rounded to whole batches per lane) through the tree, at most two rounds
//! per layer are in flight, so in-flight data is bounded independently of the input length; what
//! stays is the reducers' state.

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
/// (both rounded up to whole batches per lane). Rounds adapt to last about [`ROUND_TARGET`]: cheap events get
/// large rounds (the fork/join and wake-ups of a round cost tens of microseconds),
/// costly ones small rounds (less data in flight, timers checked more often).
pub(crate) const MIN_ROUND_EVENTS: usize = 1 << 12;

/// How long a round should take.
pub(crate) const ROUND_TARGET: std::time::Duration = std::time::Duration::from_micros(2000);

/// Batches are allocated on the driving thread and freed on rayon's workers; glibc's
/// malloc returns the freed top of its heap to the OS once more than 128 KiB are free
/// (the default trim threshold), so every round page-faulted its memory back in (it
/// was most of the system time of a flow). glibc raises its mmap and trim thresholds
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

/// A running node: one layer and, recursively, its upstream.
pub(crate) trait Node: Send {
    /// Runs one round; returns true once the node has finished (its lanes fired their
    /// last triggers and routed everything downstream).
    fn round(&mut self) -> Result<bool, FlowError>;
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

/// Runs every lane over its messages, in parallel when there is more than one lane
/// with work; a panic in user code becomes `FlowError::Panic`.
pub(crate) fn run_lanes<'a, T: Send>(
    lanes: &mut [Box<dyn LaneIn<T> + 'a>],
    msgs: Vec<Vec<Envelope<T>>>,
    finish: bool,
    place: &str,
) -> Result<(), FlowError> {
    let total = lanes.len();
    let work = |i: usize, lane: &mut Box<dyn LaneIn<T> + 'a>, msgs: Vec<Envelope<T>>| {
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
        .map_err(|p| FlowError::Panic {
            place: format!("stage {i} of {total} in {place}"),
            message: panic_message(p),
        })
    };
    let busy = msgs.iter().filter(|m| !m.is_empty()).count();
    if total == 1 || (busy <= 1 && !finish) {
        for (i, (lane, m)) in lanes.iter_mut().zip(msgs).enumerate() {
            work(i, lane, m)?;
        }
        Ok(())
    } else {
        lanes
            .par_iter_mut()
            .zip(msgs.into_par_iter())
            .enumerate()
            .map(|(i, (lane, m))| work(i, lane, m))
            .collect::<Result<Vec<()>, FlowError>>()
            .map(|_| ())
    }
}
