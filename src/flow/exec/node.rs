//! Running nodes: iterator sources and layers fed by an inbox.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::flow::error::{panic_message, FlowError};
use crate::flow::exec::{
    run_lanes, BoxNode, Envelope, Inbox, LaneIn, Msg, Node, MIN_ROUND_EVENTS, ROUND_TARGET,
};

/// A source layer: pulls batches from one or more iterators (on the driving thread)
/// and hands them in turn to the layer's lanes.
pub(crate) struct SourceNode<'a, I: Iterator> {
    pub iters: Vec<Option<I>>,
    pub lanes: Vec<Box<dyn LaneIn<I::Item> + 'a>>,
    pub batch_size: usize,
    pub next_lane: usize,
    pub next_iter: usize,
    pub finished: bool,
    /// The round pulled ahead while the previous one was processed.
    pub pending: Option<Pulled<I::Item>>,
    /// Source events per round, adapted to [`ROUND_TARGET`].
    pub round_events: usize,
    /// Upper bound of `round_events` for this run.
    pub max_round_events: usize,
}

type Pulled<T> = (Vec<Vec<Envelope<T>>>, bool);

/// Most events appended into one source vector: large enough to amortise the
/// allocation, small enough to stay below malloc's mmap threshold and recycle well
/// between threads (peak RSS stays flat over long runs).
const APPEND_LIMIT: usize = 4096;

impl<'a, I> SourceNode<'a, I>
where
    I: Iterator + Send + 'a,
    I::Item: Send + 'a,
{
    /// Pulls one round of batches (on the driving thread), round-robin over the live
    /// iterators, and deals them to the lanes in turn.
    fn pull(&mut self, n: usize) -> Result<Pulled<I::Item>, FlowError> {
        let bs = self.batch_size;
        let max_batches = (self.round_events / bs).max(n).max(1);
        let mut per_lane: Vec<Vec<Envelope<I::Item>>> = (0..n).map(|_| Vec::new()).collect();
        let (iters, next_iter, next_lane) =
            (&mut self.iters, &mut self.next_iter, &mut self.next_lane);
        let per_lane_cap = (max_batches / n + 1) * bs;
        catch_unwind(AssertUnwindSafe(|| {
            let mut pulled = 0;
            while pulled < max_batches {
                if iters.iter().all(|i| i.is_none()) {
                    break;
                }
                let k = *next_iter % iters.len();
                *next_iter += 1;
                let Some(it) = iters[k].as_mut() else {
                    continue;
                };
                let lane = *next_lane % n;
                // Batches dealt to a lane from the same iterator are appended to one
                // vector: the lane cuts it back into batches of `bs` (all pulls but an
                // iterator's last are full), and the allocation happens once per lane
                // and round instead of once per batch on this thread.
                let env = match per_lane[lane].last_mut() {
                    Some(Envelope {
                        from,
                        msg: Msg::Batch(v),
                        ..
                    }) if *from == k && v.len() + bs <= APPEND_LIMIT.max(bs) => v,
                    _ => {
                        per_lane[lane].push(Envelope {
                            from: k,
                            seq: pulled as u64,
                            msg: Msg::Batch(Vec::with_capacity(
                                per_lane_cap.min(APPEND_LIMIT.max(bs)),
                            )),
                        });
                        match per_lane[lane].last_mut() {
                            Some(Envelope {
                                msg: Msg::Batch(v), ..
                            }) => v,
                            _ => unreachable!(),
                        }
                    }
                };
                let before = env.len();
                env.extend(it.by_ref().take(bs));
                let got = env.len() - before;
                if got > 0 {
                    *next_lane += 1;
                    pulled += 1;
                }
                if got < bs {
                    iters[k] = None;
                    // The iterator is one producer; tell every lane it is done (for
                    // fixed-window watermarks), behind its last batch.
                    for lane in per_lane.iter_mut() {
                        lane.retain(|e| !matches!(&e.msg, Msg::Batch(v) if v.is_empty()));
                        lane.push(Envelope {
                            from: k,
                            seq: u64::MAX,
                            msg: Msg::Done,
                        });
                    }
                }
            }
        }))
        .map_err(
            |p| match p.downcast::<crate::flow::ops::stages::StageFailure>() {
                Ok(f) => FlowError::Stage(f.0),
                Err(p) => FlowError::Panic {
                    place: "source".into(),
                    message: panic_message(p),
                },
            },
        )?;
        let done = self.iters.iter().all(|i| i.is_none());
        Ok((per_lane, done))
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
        let (msgs, done) = match self.pending.take() {
            Some(p) => p,
            None => self.pull(self.lanes.len())?,
        };
        if done {
            run_lanes(&mut self.lanes, msgs, true, "the source layer")?;
            self.finished = true;
            return Ok(true);
        }
        // Pipelining: the pool processes this round while the driving thread pulls the
        // next one (so in-flight data is at most two rounds).
        let mut processed = Ok(());
        let mut lanes = std::mem::take(&mut self.lanes);
        let n = lanes.len();
        let next = rayon::in_place_scope(|s| {
            s.spawn(|_| processed = run_lanes(&mut lanes, msgs, false, "the source layer"));
            self.pull(n)
        });
        self.lanes = lanes;
        processed?;
        self.pending = Some(next?);
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
