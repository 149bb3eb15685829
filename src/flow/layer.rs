//! Layers: [`Flow::partition`], [`Flow::shuffle`], merging flows, and the routing
//! between layers.

use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use super::exec::node::LayerNode;
use super::exec::sinks::{PartitionRouter, RoundRobinRouter, Speaker};
use super::exec::{self, Built, Cx, Inbox, LaneCtx, LaneIn, SinkFactory};
use super::options::Resolved;
use super::window::entry::Entry;
use super::{err_flow, hash, Flow, FlowError, Options, Shape};

impl<'a, T: Send + 'a> Flow<'a, T> {
    /// Checks the rules that apply when the current layer is closed.
    pub(crate) fn closable(&self) -> Result<(), FlowError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.idle_window {
            return Err(FlowError::Build(
                "a window was set but no computation is happening on this partition".into(),
            ));
        }
        Ok(())
    }

    /// A new layer of `opts.stages` stages; every event goes to the stage chosen by
    /// hashing the event (FxHash; a stage's events all share their partition).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iter(1..=10u32)
    ///     .partition(Options::new().stages(4))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(v.len(), 4);
    /// assert_eq!(v.iter().sum::<u32>(), 55);
    /// ```
    pub fn partition(self, opts: Options<T>) -> Flow<'a, T>
    where
        T: Hash,
    {
        Self::layer(
            vec![self],
            opts,
            Dispatch::Hash(Arc::new(|x: &T, n| Some(hash::partition_of(x, n)))),
        )
    }

    /// Like [`Flow::partition`], hashing `key(event)` instead of the event (Elixir's
    /// `:key` option).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<Vec<u32>> = Flow::from_iter(vec![(1, 1), (2, 2), (1, 3)])
    ///     .partition_by(Options::new().stages(2), |e: &(u32, u32)| e.0)
    ///     .reduce(Vec::new, |mut v, e| { v.push(e.1); v })
    ///     .emit_state()
    ///     .collect();
    /// // Both events of key 1 went to the same stage.
    /// assert!(v.iter().any(|stage| stage.contains(&1) && stage.contains(&3)));
    /// ```
    pub fn partition_by<K, F>(self, opts: Options<T>, key: F) -> Flow<'a, T>
    where
        K: Hash,
        F: Fn(&T) -> K + Send + Sync + 'a,
    {
        Self::layer(
            vec![self],
            opts,
            Dispatch::Hash(Arc::new(move |x: &T, n| {
                Some(hash::partition_of(&key(x), n))
            })),
        )
    }

    /// Like [`Flow::partition`] with a custom hash (Elixir's `:hash` option): it returns
    /// the partition in `0..stages`, or `None` to discard the event (counted in
    /// [`RunReport::discarded_events`](super::RunReport::discarded_events)). A partition out of range stops the flow with
    /// an error.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iter(1..=10u32)
    ///     .partition_with(Options::new().stages(2), |x: &u32| if *x > 8 { None } else { Some(0) })
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(v.iter().sum::<u32>(), 36);
    /// ```
    pub fn partition_with<H>(self, opts: Options<T>, hash: H) -> Flow<'a, T>
    where
        H: Fn(&T) -> Option<usize> + Send + Sync + 'a,
    {
        Self::layer(
            vec![self],
            opts,
            Dispatch::Hash(Arc::new(move |x: &T, _n| hash(x))),
        )
    }

    /// A new layer without routing: whole batches go to the stages in turn.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let s: u64 = Flow::from_iter(1..=100u64)
    ///     .shuffle(Options::new().stages(3))
    ///     .map(|x| x * 2)
    ///     .sum();
    /// assert_eq!(s, 10100);
    /// ```
    pub fn shuffle(self, opts: Options<T>) -> Flow<'a, T> {
        Self::layer(
            vec![self],
            opts,
            Dispatch::<T, fn(&T, usize) -> Option<usize>>::RoundRobin,
        )
    }

    /// Merges several flows into one new layer, partitioned by hashing the events
    /// (Elixir's `partition([flow1, flow2], opts)`).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let a = Flow::from_iter((1..=100u64).step_by(2));
    /// let b = Flow::from_iter((2..=100u64).step_by(2));
    /// let s: u64 = Flow::partition_flows(vec![a, b], Options::new().stages(4)).sum();
    /// assert_eq!(s, 5050);
    /// ```
    pub fn partition_flows(flows: Vec<Flow<'a, T>>, opts: Options<T>) -> Flow<'a, T>
    where
        T: Hash,
    {
        Self::layer(
            flows,
            opts,
            Dispatch::Hash(Arc::new(|x: &T, n| Some(hash::partition_of(x, n)))),
        )
    }

    /// Merges several flows into one new layer without routing (Elixir's
    /// `shuffle([flow1, flow2], opts)`, i.e. `merge/3` with a DemandDispatcher).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let a = Flow::from_iter(vec![1u32, 2]);
    /// let b = Flow::from_iter(vec![3u32]);
    /// assert_eq!(Flow::merge(vec![a, b], Options::new()).sum::<u32>(), 6);
    /// ```
    pub fn merge(flows: Vec<Flow<'a, T>>, opts: Options<T>) -> Flow<'a, T> {
        Self::layer(
            flows,
            opts,
            Dispatch::<T, fn(&T, usize) -> Option<usize>>::RoundRobin,
        )
    }

    fn layer<H>(flows: Vec<Flow<'a, T>>, opts: Options<T>, dispatch: Dispatch<T, H>) -> Flow<'a, T>
    where
        H: Fn(&T, usize) -> Option<usize> + Send + Sync + 'a,
    {
        if flows.is_empty() {
            return err_flow(FlowError::Build(
                "expected a flow or a non-empty list of flows as first argument, got: []".into(),
            ));
        }
        for f in &flows {
            if let Err(e) = f.closable() {
                return err_flow(e);
            }
        }
        let r = match opts.resolve() {
            Ok(r) => r,
            Err(e) => return err_flow(e),
        };
        let dispatch = Arc::new(dispatch);
        Flow {
            build: Box::new(move |tail: SinkFactory<'a, T>, cx: &Cx| {
                // Spares for a quarter of a round: buffers come back within the round,
                // so more would only hold memory (measurements: docs/BENCHMARKS.md).
                let inbox = Inbox::<T>::recycling(r.stages, cx.max_round_events / 4);
                let mut ups = Vec::new();
                let mut producers = 0usize;
                // Routers send one bucket per lane and input batch, however large: the
                // lane cuts it to its batch size where its chain can tell. Capping
                // buckets at the batch size spared that copy but multiplied the
                // vectors freed on another thread than the one that allocated them,
                // and malloc's arena lock made that the larger cost (measurements:
                // docs/BENCHMARKS.md).
                for f in flows {
                    // A source layer without a reducer passes its iterators' events on
                    // in order: its routers speak for the iterators (sinks::Speaker).
                    let for_iters = f.shape != Shape::Triggered;
                    let router =
                        router_factory(inbox.clone(), producers, dispatch.clone(), cx, for_iters);
                    let built = (f.build)(router, cx)?;
                    producers += built.producers(for_iters);
                    ups.push(built.node);
                }
                let lanes = make_lanes(&r, producers, &tail, cx, None);
                Ok(Built {
                    node: Box::new(LayerNode::new(ups, inbox, lanes, "a partition layer")),
                    lanes: r.stages,
                    iters: None,
                })
            }),
            shape: Shape::Fresh,
            error: None,
            idle_window: false,
        }
    }
}

/// The lanes of a layer fed by `producers` producers; `iters` is `Some(iterators)`
/// for a source layer.
pub(crate) fn make_lanes<'a, T: Send + 'a>(
    r: &Resolved<T>,
    producers: usize,
    tail: &SinkFactory<'a, T>,
    cx: &Cx,
    iters: Option<usize>,
) -> Vec<Box<dyn LaneIn<T> + 'a>> {
    (0..r.stages)
        .map(|i| {
            let lcx = LaneCtx {
                index: i,
                total: r.stages,
                kind: r.window.kind(),
                tag: Arc::new(exec::Tag::default()),
                iters,
            };
            Box::new(Entry::new(
                &r.window,
                r.batch_size,
                producers,
                tail(&lcx),
                cx.stats.late.clone(),
                lcx.tag.clone(),
            )) as Box<dyn LaneIn<T> + 'a>
        })
        .collect()
}

/// How a layer's input is routed.
pub(crate) enum Dispatch<T, H> {
    /// `h(event, stages)`: partition or None to discard.
    Hash(Arc<H>),
    RoundRobin,
    #[allow(dead_code)]
    Phantom(PhantomData<fn(&T)>),
}

/// The routers of an upstream flow into a layer: its producers are numbered from
/// `offset`; `for_iters`: the flow's last layer has no reducer (see `sinks::Speaker`).
fn router_factory<'a, T, H>(
    inbox: Arc<Inbox<T>>,
    offset: usize,
    dispatch: Arc<Dispatch<T, H>>,
    cx: &Cx,
    for_iters: bool,
) -> SinkFactory<'a, T>
where
    T: Send + 'a,
    H: Fn(&T, usize) -> Option<usize> + Send + Sync + 'a,
{
    let stats = cx.stats.clone();
    Arc::new(move |lcx: &LaneCtx| match &*dispatch {
        Dispatch::Hash(h) => Box::new(PartitionRouter {
            inbox: inbox.clone(),
            hash: h.clone(),
            speaker: Speaker::new(lcx, offset, for_iters),
            seq: 0,
            stats: stats.clone(),
        }),
        _ => Box::new(RoundRobinRouter {
            inbox: inbox.clone(),
            speaker: Speaker::new(lcx, offset, for_iters),
            seq: 0,
        }),
    })
}
