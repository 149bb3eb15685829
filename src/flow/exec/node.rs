//! Running nodes: iterator sources and layers fed by an inbox.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rayon::prelude::*;

use crate::flow::error::{panic_message, FlowError};
use crate::flow::exec::{
    run_lanes, BoxNode, Envelope, Inbox, LaneIn, Msg, Node, MIN_ROUND_EVENTS, ROUND_TARGET,
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
}

impl<I: Iterator> Sources<I> {
    /// Pulls up to `max` events from the next live iterator, round-robin; an empty
    /// batch means every iterator is exhausted. An iterator that returns fewer events
    /// than asked for is exhausted (dropped).
    fn pull(&mut self, max: usize) -> (usize, Vec<I::Item>) {
        let m = self.iters.len();
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
            }
            if !v.is_empty() {
                return (k, v);
            }
        }
        (0, Vec::new())
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
    ) -> Self {
        let producers = iters.len();
        let n = lanes.len();
        let batch_size = batch_size.max(1);
        SourceNode {
            src: Mutex::new(Sources {
                iters,
                next_iter: 0,
                failed: false,
            }),
            pull,
            next_lane: 0,
            told: vec![vec![false; producers]; n],
            lanes,
            batch_size,
            finished: false,
            // The first round is small and dealt by the driver (see `round`); rounds
            // then grow toward the maximum while they stay short.
            round_events: MIN_ROUND_EVENTS.min(max_round_events),
            first: true,
            max_round_events,
        }
    }
}

/// One lane's part of a round: pull, process, repeat until its quota is met or the
/// sources are exhausted (or busy for longer than [`PULL_WAIT`]).
fn lane_round<T, I>(
    lane: &mut (dyn LaneIn<T> + '_),
    told: &mut [bool],
    src: &Mutex<Sources<I>>,
    quota: usize,
    chunk: usize,
    place: &str,
) -> Result<(), FlowError>
where
    I: Iterator<Item = T>,
{
    let mut pulled = 0;
    let mut newly_done: Vec<usize> = Vec::new();
    while pulled < quota {
        let Some(mut g) = src.try_lock_for(PULL_WAIT) else {
            break;
        };
        if g.failed {
            break;
        }
        let max = chunk.min(quota - pulled);
        let (k, items) = match catch_unwind(AssertUnwindSafe(|| g.pull(max))) {
            Ok(p) => p,
            Err(p) => {
                g.failed = true;
                return Err(source_error(p));
            }
        };
        newly_done.extend((0..told.len()).filter(|&j| !told[j] && g.iters[j].is_none()));
        drop(g);
        let empty = items.is_empty();
        pulled += items.len();
        catch_unwind(AssertUnwindSafe(|| {
            if !empty {
                lane.batch(k, items);
            }
            // After the lane's last batch from them: fixed windows stop waiting for
            // these producers' watermarks.
            for j in newly_done.drain(..) {
                told[j] = true;
                lane.producer_done(j);
            }
        }))
        .map_err(|p| FlowError::Panic {
            place: place.to_string(),
            message: panic_message(p),
        })?;
        if empty {
            break;
        }
    }
    catch_unwind(AssertUnwindSafe(|| lane.tick())).map_err(|p| FlowError::Panic {
        place: place.to_string(),
        message: panic_message(p),
    })
}

impl<'a, I> SourceNode<'a, I>
where
    I: Iterator + Send + 'a,
    I::Item: Send + 'a,
{
    /// [`Pull::Driver`]: pulls `total` events in batches, round-robin over the
    /// iterators, deals them to the lanes in turn (each producer's end follows its
    /// last batch in every lane), then runs the lanes.
    fn driver_round(&mut self, total: usize) -> Result<(), FlowError> {
        let n = self.lanes.len();
        let bs = self.batch_size;
        let mut msgs: Vec<Vec<Envelope<I::Item>>> = (0..n).map(|_| Vec::new()).collect();
        let src = self.src.get_mut();
        let mut pulled = 0;
        let mut seq = 0u64;
        while pulled < total && !src.exhausted() {
            let (k, items) = catch_unwind(AssertUnwindSafe(|| src.pull(bs))).map_err(|p| {
                src.failed = true;
                source_error(p)
            })?;
            pulled += items.len();
            seq += 1;
            if !items.is_empty() {
                msgs[self.next_lane % n].push(Envelope {
                    from: k,
                    seq,
                    msg: Msg::Batch(items),
                });
                self.next_lane += 1;
            }
            for (j, it) in src.iters.iter().enumerate() {
                if it.is_none() && !self.told[0][j] {
                    for (lane, told) in msgs.iter_mut().zip(self.told.iter_mut()) {
                        told[j] = true;
                        lane.push(Envelope {
                            from: j,
                            seq: u64::MAX,
                            msg: Msg::Done,
                        });
                    }
                }
            }
        }
        let done = src.exhausted();
        run_lanes(&mut self.lanes, msgs, done, "the source layer")?;
        self.finished = done;
        Ok(())
    }

    /// [`Pull::Lanes`]: every lane pulls and processes up to `quota` events (a pull
    /// takes several batches at once; the lane cuts them back to the batch size where
    /// its chain can tell); once the sources are exhausted the lanes finish.
    fn lanes_round(&mut self, quota: usize) -> Result<(), FlowError> {
        let n = self.lanes.len();
        let chunk = (PULL_LIMIT / self.batch_size).max(1) * self.batch_size;
        let src = &self.src;
        if n == 1 {
            lane_round(
                &mut *self.lanes[0],
                &mut self.told[0],
                src,
                quota,
                chunk,
                "stage 0 of 1 in the source layer",
            )?;
        } else {
            self.lanes
                .par_iter_mut()
                .zip(self.told.par_iter_mut())
                .enumerate()
                .map(|(i, (lane, told))| {
                    let place = format!("stage {i} of {n} in the source layer");
                    lane_round(&mut **lane, told, src, quota, chunk, &place)
                })
                .collect::<Result<Vec<()>, FlowError>>()?;
        }
        if !self.src.get_mut().exhausted() {
            return Ok(());
        }
        // Every producer is done: tell the lanes that have not heard yet, and fire
        // their last triggers.
        let msgs = self
            .told
            .iter()
            .map(|told| {
                (0..told.len())
                    .filter(|&j| !told[j])
                    .map(|j| Envelope {
                        from: j,
                        seq: u64::MAX,
                        msg: Msg::Done,
                    })
                    .collect()
            })
            .collect();
        run_lanes(&mut self.lanes, msgs, true, "the source layer")?;
        self.finished = true;
        Ok(())
    }
}

/// The error for a panic that unwound out of a source iterator.
fn source_error(p: Box<dyn std::any::Any + Send>) -> FlowError {
    match p.downcast::<crate::flow::ops::stages::StageFailure>() {
        Ok(f) => FlowError::Stage(f.0),
        Err(p) => FlowError::Panic {
            place: "source".into(),
            message: panic_message(p),
        },
    }
}

impl<'a, I> Node for SourceNode<'a, I>
where
    I: Iterator + Send + 'a,
    I::Item: Send + 'a,
{
    fn round(&mut self) -> Result<bool, FlowError> {
        if self.finished {
            return Ok(true);
        }
        let started = std::time::Instant::now();
        let n = self.lanes.len();
        let bs = self.batch_size;
        // Whole batches per lane.
        let quota = self.round_events.div_ceil(n).div_ceil(bs).max(1) * bs;
        // The first round is always dealt by the driver, batch by batch in turn:
        // small inputs (up to MIN_ROUND_EVENTS) are spread over the stages the same
        // way on every run (quirk 5), independently of which worker is free first.
        match (self.pull, std::mem::take(&mut self.first)) {
            (Pull::Driver, _) | (Pull::Lanes, true) => self.driver_round(quota * n)?,
            (Pull::Lanes, false) => self.lanes_round(quota)?,
        }
        if self.finished {
            return Ok(true);
        }
        // Double or halve the next rounds toward ROUND_TARGET.
        let took = started.elapsed();
        if took < ROUND_TARGET / 2 {
            self.round_events = (self.round_events * 2).min(self.max_round_events);
        } else if took > ROUND_TARGET * 2 {
            self.round_events = (self.round_events / 2).max(MIN_ROUND_EVENTS);
        }
        Ok(false)
    }
}

/// A layer fed by the routers of one or more upstream nodes.
pub(crate) struct LayerNode<'a, T> {
    pub ups: Vec<BoxNode<'a>>,
    pub ups_done: Vec<bool>,
    pub inbox: Arc<Inbox<T>>,
    pub lanes: Vec<Box<dyn LaneIn<T> + 'a>>,
    pub name: String,
    pub finished: bool,
    /// Messages of the upstream round already run, and whether every upstream had
    /// finished by then; processed while the upstream runs its next round.
    pub pending: Option<(Vec<Vec<Envelope<T>>>, bool)>,
}

impl<'a, T: Send + 'a> LayerNode<'a, T> {
    fn pull_ups(ups: &mut [BoxNode<'a>], done: &mut [bool]) -> Result<bool, FlowError> {
        for (up, d) in ups.iter_mut().zip(done.iter_mut()) {
            if !*d {
                *d = up.round()?;
            }
        }
        Ok(done.iter().all(|d| *d))
    }
}

impl<'a, T: Send + 'a> Node for LayerNode<'a, T> {
    fn round(&mut self) -> Result<bool, FlowError> {
        if self.finished {
            return Ok(true);
        }
        let (msgs, all) = match self.pending.take() {
            Some(p) => p,
            None => {
                let all = Self::pull_ups(&mut self.ups, &mut self.ups_done)?;
                (self.inbox.take(), all)
            }
        };
        if all {
            run_lanes(&mut self.lanes, msgs, true, &self.name)?;
            self.finished = true;
            return Ok(true);
        }
        // Pipelining: this layer's lanes process the previous upstream round on the
        // pool while the upstream runs its next round (its routers fill the inbox,
        // which the lanes no longer read). At most two rounds per layer in flight.
        let mut processed = Ok(());
        let mut lanes = std::mem::take(&mut self.lanes);
        let name = self.name.clone();
        let (ups, ups_done) = (&mut self.ups, &mut self.ups_done);
        let pulled = rayon::in_place_scope(|s| {
            s.spawn(|_| processed = run_lanes(&mut lanes, msgs, false, &name));
            Self::pull_ups(ups, ups_done)
        });
        self.lanes = lanes;
        processed?;
        let all = pulled?;
        self.pending = Some((self.inbox.take(), all));
        Ok(false)
    }
}
