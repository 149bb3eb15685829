//! `bounded_join` and `window_join`: two flows joined by key (Elixir Flow's functions of
//! the same names).

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::flow::exec::node::LayerNode;
use crate::flow::exec::sinks::{PartitionRouter, Speaker, Xform};
use crate::flow::exec::{BoxSink, Built, Cx, Inbox, LaneCtx, Sink, SinkFactory};
use crate::flow::hash::partition_of;
use crate::flow::window::TriggerName;
use crate::flow::{err_flow, make_lanes, Flow, Options, Shape, Window};

/// Which unmatched events a join also emits, at the end of each window.
///
/// ```
/// use stageflow::flow::{Flow, JoinMode, Options};
/// let v: Vec<(Option<u8>, Option<u8>)> = Flow::bounded_join(
///     JoinMode::RightOuter, Flow::from_iter(vec![1u8]), Flow::from_iter(vec![2u8]),
///     |l: &u8| *l, |r: &u8| *r, |l, r| (l, r), Options::new()).collect();
/// assert_eq!(v, [(None, Some(2))]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinMode {
    /// Only matches.
    Inner,
    /// Matches, and left events whose key never appeared on the right.
    LeftOuter,
    /// Matches, and right events whose key never appeared on the left.
    RightOuter,
    /// Both (left ones first).
    FullOuter,
}

/// An event of a join layer, before joining: which side it came from. Windows of a
/// join are over `Side<L, R>` (e.g. a fixed window's `by` reads either side's time).
///
/// ```
/// use stageflow::flow::{Side, Unit, Window};
/// let _w = Window::fixed(1, Unit::Second, |e: &Side<(i64, u8), (i64, char)>| match e {
///     Side::Left((t, _)) | Side::Right((t, _)) => *t,
/// });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side<L, R> {
    /// From the left flow.
    Left(L),
    /// From the right flow.
    Right(R),
}

type State<K, L, R> = (HashMap<K, Vec<L>>, HashMap<K, Vec<R>>);

struct JoinSink<'a, K, L, R, O, KL, KR, J> {
    mode: JoinMode,
    lk: Arc<KL>,
    rk: Arc<KR>,
    join: Arc<J>,
    windows: Vec<(i64, State<K, L, R>)>,
    next: BoxSink<'a, O>,
}

impl<'a, K, L, R, O, KL, KR, J> JoinSink<'a, K, L, R, O, KL, KR, J> {
    fn state(&mut self, w: i64) -> &mut State<K, L, R> {
        let p = match self.windows.iter().position(|(id, _)| *id == w) {
            Some(p) => p,
            None => {
                self.windows.push((w, (HashMap::new(), HashMap::new())));
                self.windows.len() - 1
            }
        };
        &mut self.windows[p].1
    }
}

impl<'a, K, L, R, O, KL, KR, J> Sink<Side<L, R>> for JoinSink<'a, K, L, R, O, KL, KR, J>
where
    K: Hash + Eq + Send,
    L: Clone + Send,
    R: Clone + Send,
    O: Send,
    KL: Fn(&L) -> K + Send + Sync,
    KR: Fn(&R) -> K + Send + Sync,
    J: Fn(Option<L>, Option<R>) -> O + Send + Sync,
{
    fn events(&mut self, w: i64, batch: Vec<Side<L, R>>) {
        let (lk, rk, join) = (self.lk.clone(), self.rk.clone(), self.join.clone());
        let mut out = Vec::new();
        let (lefts, rights) = self.state(w);
        for e in batch {
            match e {
                Side::Left(l) => {
                    let k = lk(&l);
                    if let Some(rs) = rights.get(&k) {
                        out.extend(rs.iter().map(|r| join(Some(l.clone()), Some(r.clone()))));
                    }
                    lefts.entry(k).or_default().push(l);
                }
                Side::Right(r) => {
                    let k = rk(&r);
                    if let Some(ls) = lefts.get(&k) {
                        out.extend(ls.iter().map(|l| join(Some(l.clone()), Some(r.clone()))));
                    }
                    rights.entry(k).or_default().push(r);
                }
            }
        }
        if !out.is_empty() {
            self.next.events(w, out);
        }
    }
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool) {
        if complete {
            if let Some(p) = self.windows.iter().position(|(id, _)| *id == w) {
                let (_, (lefts, rights)) = self.windows.swap_remove(p);
                let mut out = Vec::new();
                if matches!(self.mode, JoinMode::LeftOuter | JoinMode::FullOuter) {
                    for (k, ls) in &lefts {
                        if !rights.contains_key(k) {
                            out.extend(ls.iter().map(|l| (self.join)(Some(l.clone()), None)));
                        }
                    }
                }
                if matches!(self.mode, JoinMode::RightOuter | JoinMode::FullOuter) {
                    for (k, rs) in &rights {
                        if !lefts.contains_key(k) {
                            out.extend(rs.iter().map(|r| (self.join)(None, Some(r.clone()))));
                        }
                    }
                }
                if !out.is_empty() {
                    self.next.events(w, out);
                }
            }
        }
        self.next.trigger(w, name, complete);
    }
    fn finish(&mut self) {
        self.next.finish()
    }
}

/// Ends one side's last layer: tags its events with their side and routes them by key
/// to the join layer's `inbox`, as producers from `offset` on.
fn side_sink<'a, T, L, R, H>(
    side: fn(T) -> Side<L, R>,
    inbox: &Arc<Inbox<Side<L, R>>>,
    hash: &Arc<H>,
    cx: &Cx,
    offset: usize,
    for_iters: bool,
) -> SinkFactory<'a, T>
where
    T: Send + 'a,
    L: Send + 'a,
    R: Send + 'a,
    H: Fn(&Side<L, R>, usize) -> Option<usize> + Send + Sync + 'a,
{
    let (inbox, hash, stats) = (inbox.clone(), hash.clone(), cx.stats.clone());
    Arc::new(move |lcx: &LaneCtx| {
        Box::new(Xform {
            f: move |v: Vec<T>| v.into_iter().map(side).collect(),
            exact: false,
            next: Box::new(PartitionRouter {
                inbox: inbox.clone(),
                hash: hash.clone(),
                speaker: Speaker::new(lcx, offset, for_iters),
                seq: 0,
                stats: stats.clone(),
            }),
            _t: PhantomData,
        })
    })
}

impl<'a, O: Send + 'a> Flow<'a, O> {
    /// Joins two flows on keys with the global window: the state grows with the input
    /// (Elixir's `bounded_join/7`). `join(left, right)` gets `None` for the missing side
    /// of outer rows, which are emitted at the end of input.
    ///
    /// ```
    /// use stageflow::flow::{Flow, JoinMode, Options};
    /// let mut v: Vec<(Option<u32>, Option<u32>)> = Flow::bounded_join(
    ///     JoinMode::LeftOuter,
    ///     Flow::from_iter(vec![0u32, 1, 2, 3]),
    ///     Flow::from_iter(vec![4u32, 5, 6, 7, 8]),
    ///     |l: &u32| *l,
    ///     |r: &u32| r - 3,
    ///     |l, r| (l, r),
    ///     Options::new(),
    /// )
    /// .collect();
    /// v.sort();
    /// assert_eq!(v, [(Some(0), None), (Some(1), Some(4)), (Some(2), Some(5)), (Some(3), Some(6))]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn bounded_join<L, R, K, KL, KR, J>(
        mode: JoinMode,
        left: Flow<'a, L>,
        right: Flow<'a, R>,
        left_key: KL,
        right_key: KR,
        join: J,
        opts: Options<Side<L, R>>,
    ) -> Flow<'a, O>
    where
        L: Clone + Send + 'a,
        R: Clone + Send + 'a,
        K: Hash + Eq + Send + 'a,
        KL: Fn(&L) -> K + Send + Sync + 'a,
        KR: Fn(&R) -> K + Send + Sync + 'a,
        J: Fn(Option<L>, Option<R>) -> O + Send + Sync + 'a,
    {
        Self::window_join(
            mode,
            left,
            right,
            Window::global(),
            left_key,
            right_key,
            join,
            opts,
        )
    }

    /// Joins two flows on keys per window: both are partitioned by key into a new layer
    /// of `opts.stages` stages; each left event is joined with the right events of its
    /// key seen so far in its window and vice versa; when a window completes, outer
    /// rows are emitted and its join state is dropped (other triggers keep it).
    ///
    /// ```
    /// use stageflow::flow::{Flow, JoinMode, Options, Side, Unit, Window};
    /// let time = |e: &Side<u64, u64>| match e { Side::Left(x) | Side::Right(x) => *x as i64 };
    /// let mut v: Vec<(Option<u64>, Option<u64>)> = Flow::window_join(
    ///     JoinMode::Inner,
    ///     Flow::from_iter(vec![0u64, 1, 2, 3, 9, 10, 11]),
    ///     Flow::from_iter(vec![4u64, 5, 6, 7, 8, 12, 13]),
    ///     Window::fixed(10, Unit::Millisecond, time),
    ///     |l: &u64| *l,
    ///     |r: &u64| r - 3,
    ///     |l, r| (l, r),
    ///     Options::new(),
    /// )
    /// .collect();
    /// v.sort();
    /// assert_eq!(v, [(Some(1), Some(4)), (Some(2), Some(5)), (Some(3), Some(6)), (Some(10), Some(13))]);
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub fn window_join<L, R, K, KL, KR, J>(
        mode: JoinMode,
        left: Flow<'a, L>,
        right: Flow<'a, R>,
        window: Window<Side<L, R>>,
        left_key: KL,
        right_key: KR,
        join: J,
        opts: Options<Side<L, R>>,
    ) -> Flow<'a, O>
    where
        L: Clone + Send + 'a,
        R: Clone + Send + 'a,
        K: Hash + Eq + Send + 'a,
        KL: Fn(&L) -> K + Send + Sync + 'a,
        KR: Fn(&R) -> K + Send + Sync + 'a,
        J: Fn(Option<L>, Option<R>) -> O + Send + Sync + 'a,
    {
        if let Some(e) = left.error.clone().or_else(|| right.error.clone()) {
            return err_flow(e);
        }
        let r = match opts.window(window).resolve() {
            Ok(r) => r,
            Err(e) => return err_flow(e),
        };
        let (lk, rk, join) = (Arc::new(left_key), Arc::new(right_key), Arc::new(join));
        Flow {
            build: Box::new(move |tail: SinkFactory<'a, O>, cx: &Cx| {
                let n = r.stages;
                let inbox = Inbox::<Side<L, R>>::new(n);
                let (lk2, rk2) = (lk.clone(), rk.clone());
                let hash = Arc::new(move |e: &Side<L, R>, n: usize| {
                    Some(match e {
                        Side::Left(l) => partition_of(&lk2(l), n),
                        Side::Right(r) => partition_of(&rk2(r), n),
                    })
                });
                // A side without a reducer speaks for its iterators (sinks::Speaker).
                let (left_iters, right_iters) = (
                    left.shape != Shape::Triggered,
                    right.shape != Shape::Triggered,
                );
                let lsink = side_sink(Side::Left, &inbox, &hash, cx, 0, left_iters);
                let lb = left.start(lsink, cx)?;
                let offset = lb.producers(left_iters);
                let rsink = side_sink(Side::Right, &inbox, &hash, cx, offset, right_iters);
                let rb = right.start(rsink, cx)?;
                let producers = lb.producers(left_iters) + rb.producers(right_iters);
                let (lk, rk, join) = (lk.clone(), rk.clone(), join.clone());
                let core: SinkFactory<'a, Side<L, R>> = Arc::new(move |lcx: &LaneCtx| {
                    Box::new(JoinSink {
                        mode,
                        lk: lk.clone(),
                        rk: rk.clone(),
                        join: join.clone(),
                        windows: Vec::new(),
                        next: tail(lcx),
                    })
                });
                let lanes = make_lanes(&r, producers, &core, cx, None);
                Ok(Built {
                    node: Box::new(LayerNode::new(
                        vec![lb.node, rb.node],
                        inbox,
                        lanes,
                        "a join layer",
                    )),
                    lanes: n,
                    iters: None,
                })
            }),
            shape: Shape::Fresh,
            error: None,
            idle_window: false,
        }
    }
}
