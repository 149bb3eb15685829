//! Running nodes: iterator sources and layers fed by an inbox.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crate::flow::error::{panic_message, FlowError};
use crate::flow::exec::{run_lanes, BoxNode, Envelope, Inbox, LaneIn, Msg, Node, ROUND_EVENTS};

/// A source layer: pulls batches from one or more iterators (on the driving thread,
/// which is never a rayon worker waiting for other tasks) and hands them in turn to the
/// layer's lanes.
pub(crate) struct SourceNode<'a, I: Iterator> {
    pub iters: Vec<Option<I>>,
    pub lanes: Vec<Box<dyn LaneIn<I::Item> + 'a>>,
    pub batch_size: usize,
    pub next_lane: usize,
    pub next_iter: usize,
    pub finished: bool,
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
        let n = self.lanes.len();
        let bs = self.batch_size;
        let max_batches = (ROUND_EVENTS / bs).max(n).max(1);
        let mut per_lane: Vec<Vec<Envelope<I::Item>>> = (0..n).map(|_| Vec::new()).collect();
        let (iters, next_iter, next_lane) =
            (&mut self.iters, &mut self.next_iter, &mut self.next_lane);
        catch_unwind(AssertUnwindSafe(|| {
            let mut pulled = 0;
            while pulled < max_batches {
                let live = iters.iter().filter(|i| i.is_some()).count();
                if live == 0 {
                    break;
                }
                // Round-robin over the live iterators, one batch each.
                let k = *next_iter % iters.len();
                *next_iter += 1;
                let Some(it) = iters[k].as_mut() else { continue };
                let mut batch = Vec::with_capacity(bs);
                batch.extend(it.by_ref().take(bs));
                let exhausted = batch.len() < bs;
                if !batch.is_empty() {
                    let lane = *next_lane % n;
                    *next_lane += 1;
                    per_lane[lane].push(Envelope {
                        from: k,
                        seq: pulled as u64,
                        msg: Msg::Batch(batch),
                    });
                    pulled += 1;
                }
                if exhausted {
                    iters[k] = None;
                    // The iterator is one producer; tell every lane it is done (for
                    // fixed-window watermarks), behind its last batch.
                    for lane in per_lane.iter_mut() {
                        lane.push(Envelope { from: k, seq: u64::MAX, msg: Msg::Done });
                    }
                }
            }
        }))
        .map_err(|p| FlowError::Panic { place: "source".into(), message: panic_message(p) })?;
        let done = self.iters.iter().all(|i| i.is_none());
        run_lanes(&mut self.lanes, per_lane, done, "the source layer")?;
        self.finished = done;
        Ok(done)
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
}

impl<'a, T: Send + 'a> Node for LayerNode<'a, T> {
    fn round(&mut self) -> Result<bool, FlowError> {
        if self.finished {
            return Ok(true);
        }
        for (up, done) in self.ups.iter_mut().zip(self.ups_done.iter_mut()) {
            if !*done {
                *done = up.round()?;
            }
        }
        let all = self.ups_done.iter().all(|d| *d);
        let msgs = self.inbox.take();
        run_lanes(&mut self.lanes, msgs, all, &self.name)?;
        self.finished = all;
        Ok(all)
    }
}
