//! Running nodes: iterator sources and layers fed by an inbox.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::flow::error::{FailureSlot, FlowError};
use crate::flow::exec::{
    lane_panic, lane_task, push_task, run_lanes, BoxNode, Cols, Envelope, Inbox, LaneIn, Msg, Node,
    MIN_ROUND_EVENTS, ROUND_TARGET,
};

/// Most events a lane takes from a source at once: large enough to amortise the lock
/// and the allocation, small enough that the batch stays in the lane's cache (it is
/// written by the pull and read by the chain on the same worker) and below malloc's
/// mmap threshold (peak RSS stays flat over long runs).
const PULL_LIMIT: usize = 4096;

/// How long a lane waits for another lane's pull before it ends its part of the round.
/// A pull from an iterator takes microseconds; a source that blocks (a stage stream
/// waiting for events) then holds up one worker only, not every lane's.
const PULL_WAIT: Duration = Duration::from_millis(2);

/// The iterators of a source layer, shared by its lanes (one producer each).
struct Sources<I> {
    iters: Vec<Option<I>>,
    /// Where the round-robin over the live iterators continues.
    next_iter: usize,
    /// An iterator panicked: nothing is pulled any more.
    failed: bool,
    /// Events the lanes may still take in this round beyond their own share
    /// ([`Pull::Lanes`]): shared, so a lane whose worker is free takes more than one
    /// that started late.
    budget: usize,
    /// The order of the next pull: pulls are numbered as they leave the iterators.
    order: u64,
    /// Where stage streams leave their failure (they end, and the flow stops with it).
    failure: Option<FailureSlot>,
}

/// What one pull took.
struct Pulled<T> {
    /// The iterator the events come from.
    k: usize,
    /// The pull's number: the order of its chunk among all the source's chunks.
    order: u64,
    items: Vec<T>,
    /// Iterators found exhausted by this pull.
    ended: Vec<usize>,
}

impl<I: Iterator> Sources<I> {
    /// The failure a stage stream left behind its last pull, if any: nothing is pulled
    /// any more, and the events of that pull are not delivered.
    fn failure(&mut self) -> Option<FlowError> {
        let e = self.failure.as_ref()?.lock().take()?;
        self.failed = true;
        Some(e)
    }

    /// Pulls up to `max` events from the next live iterator, round-robin; an empty
    /// batch means every iterator is exhausted. An iterator that returns fewer events
    /// than asked for is exhausted (dropped). Called under the lock, so chunks are
    /// numbered in the order they leave the iterators, whichever lane pulls them.
    fn pull(&mut self, max: usize) -> Pulled<I::Item> {
        let m = self.iters.len();
        let order = self.order;
        self.order += 1;
        let mut ended = Vec::new();
        for _ in 0..m {
            let k = self.next_iter % m;
            self.next_iter = (self.next_iter + 1) % m;
            let Some(it) = self.iters[k].as_mut() else {
                continue;
            };
            let mut v = Vec::with_capacity(max);
            v.extend(it.by_ref().take(max));
            if v.len() < max {
                self.iters[k] = None;
                ended.push(k);
            }
            if !v.is_empty() {
                return Pulled {
                    k,
                    order,
                    items: v,
                    ended,
                };
            }
        }
        Pulled {
            k: 0,
            order,
            items: Vec::new(),
            ended,
        }
    }

    fn exhausted(&self) -> bool {
        self.failed || self.iters.iter().all(|i| i.is_none())
    }
}

/// Where a source layer's iterators are pulled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pull {
    /// By the lanes, on rayon's workers (iterators that compute their events).
    Lanes,
    /// By the driving thread, which deals the batches to the lanes (stage streams:
    /// they wait for other threads, and a flow waiting for events must not hold a
    /// rayon worker, since the flows that feed those stages may need every one).
    Driver,
}

/// A source layer. With [`Pull::Lanes`] its lanes pull batches from the iterators
/// themselves, each on its own worker, and run them through their chains at once:
/// GenStage's demand (whichever stage is ready takes the next batch from the
/// producer), and the batch is consumed on the core that made it instead of crossing
/// from a driving thread. With [`Pull::Driver`] the driving thread pulls a round and
/// deals its batches to the lanes in turn.
pub(crate) struct SourceNode<'a, I: Iterator> {
    src: Mutex<Sources<I>>,
    pull: Pull,
    /// The lane the driver deals the next batch to ([`Pull::Driver`]).
    next_lane: usize,
    lanes: Vec<Box<dyn LaneIn<I::Item> + 'a>>,
    /// Per lane, which producers it has been told are done.
    told: Vec<Vec<bool>>,
    batch_size: usize,
    finished: bool,
    /// Source events per round, adapted to [`ROUND_TARGET`].
    round_events: usize,
    /// Upper bound of `round_events` for this run.
    max_round_events: usize,
    /// No round has run yet.
    first: bool,
    /// When the current round was planned.
    started: Instant,
}

impl<'a, I> SourceNode<'a, I>
where
    I: Iterator + Send + 'a,
    I::Item: Send + 'a,
{
    pub fn new(
        iters: Vec<Option<I>>,
        lanes: Vec<Box<dyn LaneIn<I::Item> + 'a>>,
        batch_size: usize,
        max_round_events: usize,
        pull: Pull,
        failure: Option<FailureSlot>,
    ) -> Self {
        let producers = iters.len();
        let n = lanes.len();
        let batch_size = batch_size.max(1);
        SourceNode {
            src: Mutex::new(Sources {
                iters,
                next_iter: 0,
                failed: false,
                budget: 0,
                order: 0,
                failure,
            }),
            pull,
            next_lane: 0,
            told: vec![vec![false; producers]; n],
            lanes,
            batch_size,
            finished: false,
            // The first round is small and dealt by the driver (see `plan`); rounds
            // then grow toward the maximum while they stay short.
            round_events: MIN_ROUND_EVENTS.min(max_round_events),
            first: true,
            started: Instant::now(),
            max_round_events,
        }
    }
}

/// One lane's part of a round: pull, process, repeat until its own share and the
/// round's shared budget are spent or the sources are exhausted (or busy for longer
/// than [`PULL_WAIT`]). The own share makes every lane advance in every round: a lane
/// that reduces and got nothing for many rounds would hold back the fixed windows'
/// watermark of the next layer, whose producers are then the lanes. (Lanes that only
/// map speak for the iterators, and hold nothing back.)
fn lane_round<T, I>(
    lane: &mut (dyn LaneIn<T> + '_),
    told: &mut [bool],
    src: &Mutex<Sources<I>>,
    chunk: usize,
    mut own: usize,
    (i, total): (usize, usize),
) -> Result<(), FlowError>
where
    I: Iterator<Item = T>,
{
    let mut newly_done: Vec<usize> = Vec::new();
    loop {
        let Some(mut g) = src.try_lock_for(PULL_WAIT) else {
            break;
        };
        if g.failed || own + g.budget == 0 {
            break;
        }
        // Always a whole chunk (the round may end up to a chunk per lane larger than
        // planned): the source's chunks, hence the batches the next layer sees, are
        // the same however many lanes pull and whatever their share.
        let pulled = match catch_unwind(AssertUnwindSafe(|| g.pull(chunk))) {
            Ok(p) => p,
            Err(p) => {
                g.failed = true;
                return Err(source_error(p));
            }
        };
        if let Some(e) = g.failure() {
            return Err(e);
        }
        let Pulled {
            k,
            order,
            items,
            ended,
        } = pulled;
        let from_own = items.len().min(own);
        own -= from_own;
        g.budget -= (items.len() - from_own).min(g.budget);
        newly_done.extend((0..told.len()).filter(|&j| !told[j] && g.iters[j].is_none()));
        drop(g);
        let empty = items.is_empty();
        catch_unwind(AssertUnwindSafe(|| {
            if !empty {
                drop(lane.batch(k, order, items));
            }
            // Behind their last chunk: routers that speak for the iterators announce
            // their end downstream.
            for j in ended {
                lane.source_ended(j, order);
            }
            // After the lane's last batch from them: fixed windows stop waiting for
            // these producers' watermarks.
            for j in newly_done.drain(..) {
                told[j] = true;
                lane.producer_done(j);
            }
        }))
        .map_err(|p| lane_panic((i, total, SOURCE_PLACE), p))?;
        if empty {
            break;
        }
    }
    catch_unwind(AssertUnwindSafe(|| lane.tick()))
        .map_err(|p| lane_panic((i, total, SOURCE_PLACE), p))
}

impl<'a, I> SourceNode<'a, I>
where
    I: Iterator + Send + 'a,
    I::Item: Send + 'a,
{
    /// Pulls `total` events on the driving thread in batches, round-robin over the
    /// iterators, and deals them to the lanes in turn (each producer's end follows
    /// its last batch in every lane).
    fn deal(&mut self, total: usize) -> Result<Vec<Vec<Envelope<I::Item>>>, FlowError> {
        let n = self.lanes.len();
        let bs = self.batch_size;
        let mut msgs: Vec<Vec<Envelope<I::Item>>> = (0..n).map(|_| Vec::new()).collect();
        let src = self.src.get_mut();
        let mut pulled = 0;
        while pulled < total && !src.exhausted() {
            let p = catch_unwind(AssertUnwindSafe(|| src.pull(bs))).map_err(|p| {
                src.failed = true;
                source_error(p)
            })?;
            if let Some(e) = src.failure() {
                return Err(e);
            }
            pulled += p.items.len();
            let lane = self.next_lane % n;
            if !p.items.is_empty() {
                msgs[lane].push(Envelope {
                    from: p.k,
                    order: p.order,
                    seq: p.order,
                    msg: Msg::Batch(p.items),
                });
                self.next_lane += 1;
            }
            for j in p.ended {
                msgs[lane].push(Envelope {
                    from: j,
                    order: p.order,
                    seq: u64::MAX,
                    msg: Msg::Ended,
                });
            }
            for (j, it) in src.iters.iter().enumerate() {
                if it.is_none() && !self.told[0][j] {
                    for (lane, told) in msgs.iter_mut().zip(self.told.iter_mut()) {
                        told[j] = true;
                        lane.push(Envelope {
                            from: j,
                            order: u64::MAX,
                            seq: u64::MAX,
                            msg: Msg::Done,
                        });
                    }
                }
            }
        }
        Ok(msgs)
    }
}

/// The error for a panic that unwound out of a source iterator.
fn source_error(p: Box<dyn std::any::Any + Send>) -> FlowError {
    FlowError::panic("source".into(), p)
}

const SOURCE_PLACE: &str = "the source layer";

impl<'a, I> Node for SourceNode<'a, I>
where
    I: Iterator + Send + 'a,
    I::Item: Send + 'a,
{
    fn plan<'s>(&'s mut self, cols: &mut Cols<'s>) -> Result<(), FlowError> {
        if self.finished {
            return Ok(());
        }
        self.started = Instant::now();
        let n = self.lanes.len();
        let bs = self.batch_size;
        // The first round is always dealt by the driver, batch by batch in turn:
        // small inputs (up to MIN_ROUND_EVENTS) are spread over the stages the same
        // way on every run (quirk 5), independently of which worker is free first.
        // Its size is whole batches, not whole batches per lane: where it ends (and
        // the lanes' chunks start) does not depend on the number of lanes.
        if self.pull == Pull::Driver || std::mem::take(&mut self.first) {
            let msgs = self.deal(self.round_events.div_ceil(bs).max(1) * bs)?;
            for (i, (lane, m)) in self.lanes.iter_mut().zip(msgs).enumerate() {
                push_task(
                    cols,
                    i,
                    lane_task((i, n, SOURCE_PLACE), lane, m, false, None),
                );
            }
            return Ok(());
        }
        // Pull::Lanes: the lanes pull and process `total` events between them (a pull
        // takes several batches at once; the lane cuts them back to the batch size
        // where its chain can tell).
        let chunk = (PULL_LIMIT / bs).max(1) * bs;
        // Whole batches per lane.
        let total = self.round_events.div_ceil(n).div_ceil(bs).max(1) * bs * n;
        let SourceNode {
            src, lanes, told, ..
        } = self;
        // Half the round is shared out evenly, half goes to whoever is free.
        let own = (total / (2 * n)).div_ceil(chunk) * chunk;
        src.get_mut().budget = total.saturating_sub(own * n);
        let src: &'s Mutex<Sources<I>> = src;
        for (i, (lane, told)) in lanes.iter_mut().zip(told.iter_mut()).enumerate() {
            push_task(
                cols,
                i,
                Box::new(move || lane_round(&mut **lane, told, src, chunk, own, (i, n))),
            );
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<bool, FlowError> {
        if self.finished {
            return Ok(true);
        }
        if self.src.get_mut().exhausted() {
            // Every producer is done: tell the lanes that have not heard yet, and fire
            // their last triggers.
            let msgs = self
                .told
                .iter_mut()
                .map(|told| {
                    (0..told.len())
                        .filter(|&j| !std::mem::replace(&mut told[j], true))
                        .map(|j| Envelope {
                            from: j,
                            order: u64::MAX,
                            seq: u64::MAX,
                            msg: Msg::Done,
                        })
                        .collect()
                })
                .collect();
            run_lanes(&mut self.lanes, msgs, true, SOURCE_PLACE)?;
            self.finished = true;
            return Ok(true);
        }
        // Double or halve the next rounds toward ROUND_TARGET.
        let took = self.started.elapsed();
        if took < ROUND_TARGET / 2 {
            self.round_events = (self.round_events * 2).min(self.max_round_events);
        } else if took > ROUND_TARGET * 2 {
            self.round_events = (self.round_events / 2).max(MIN_ROUND_EVENTS);
        }
        Ok(false)
    }

    fn reads_stages(&self) -> bool {
        self.pull == Pull::Driver
    }
}

/// A layer fed by the routers of one or more upstream nodes. Its lanes process what
/// the upstream routed in the previous round while the upstream runs the next one (in
/// the same parallel region), so at most two rounds per layer are in flight.
pub(crate) struct LayerNode<'a, T> {
    ups: Vec<BoxNode<'a>>,
    ups_done: Vec<bool>,
    inbox: Arc<Inbox<T>>,
    lanes: Vec<Box<dyn LaneIn<T> + 'a>>,
    name: String,
    finished: bool,
    /// Messages of the upstream round already run, and whether every upstream had
    /// finished by then; processed in the next round.
    pending: Option<(Vec<Vec<Envelope<T>>>, bool)>,
    /// The planned round fires the lanes' last triggers.
    finishing: bool,
}

impl<'a, T: Send + 'a> LayerNode<'a, T> {
    pub fn new(
        ups: Vec<BoxNode<'a>>,
        inbox: Arc<Inbox<T>>,
        lanes: Vec<Box<dyn LaneIn<T> + 'a>>,
        name: impl Into<String>,
    ) -> Self {
        LayerNode {
            ups_done: vec![false; ups.len()],
            ups,
            inbox,
            lanes,
            name: name.into(),
            finished: false,
            pending: None,
            finishing: false,
        }
    }
}

impl<'a, T: Send + 'a> Node for LayerNode<'a, T> {
    fn plan<'s>(&'s mut self, cols: &mut Cols<'s>) -> Result<(), FlowError> {
        if self.finished {
            return Ok(());
        }
        let LayerNode {
            ups,
            ups_done,
            lanes,
            name,
            pending,
            finishing,
            inbox,
            ..
        } = self;
        let n = lanes.len();
        // The first round only runs the upstream: there is nothing to process yet.
        if let Some((msgs, all)) = pending.take() {
            *finishing = all;
            for (i, (lane, m)) in lanes.iter_mut().zip(msgs).enumerate() {
                push_task(
                    cols,
                    i,
                    lane_task((i, n, name.as_str()), lane, m, all, Some(&**inbox)),
                );
            }
            if all {
                return Ok(());
            }
        }
        for (up, done) in ups.iter_mut().zip(ups_done.iter()) {
            if !*done {
                up.plan(cols)?;
            }
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<bool, FlowError> {
        if self.finished || self.finishing {
            self.finished = true;
            return Ok(true);
        }
        for (up, done) in self.ups.iter_mut().zip(self.ups_done.iter_mut()) {
            if !*done {
                *done = up.settle()?;
            }
        }
        let all = self.ups_done.iter().all(|d| *d);
        self.pending = Some((self.inbox.take(), all));
        Ok(false)
    }

    fn reads_stages(&self) -> bool {
        self.ups.iter().any(|u| u.reads_stages())
    }
}
