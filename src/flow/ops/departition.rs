//! `departition` and `take_sort`: merging the partitions' per-window results in one
//! stage (Elixir Flow's functions of the same names).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::flow::exec::node::LayerNode;
use crate::flow::exec::sinks::{TagRouter, Tagged, TriggerFn};
use crate::flow::exec::{BoxSink, Built, Cx, Inbox, LaneCtx, Sink, SinkFactory};
use crate::flow::window::{TriggerName, WindowKind};
use crate::flow::{make_lanes, Flow, FlowError, Options, Reduced, Shape, TriggerInfo};

/// A window's identity, passed to the `done` function of a departition.
///
/// ```
/// use stageflow::flow::{Flow, Options, Window, WindowId, WindowKind};
/// let ids: Vec<WindowId> = Flow::from_iter(1..=4u64)
///     .partition(Options::new().stages(2).window(Window::count(10)))
///     .reduce(|| 0, |a, x| a + x)
///     .departition(|| 0, |s, a| s + a, |_, w| w)
///     .collect();
/// assert_eq!(ids, [WindowId { kind: WindowKind::Count, id: 0 }]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowId {
    /// The upstream layer's window type.
    pub kind: WindowKind,
    /// The window id (0 for the global window).
    pub id: i64,
}

type Merge<'a, S, D> = Arc<dyn Fn(S, D) -> D + Send + Sync + 'a>;
type Done<'a, D, R> = Arc<dyn Fn(D, WindowId) -> R + Send + Sync + 'a>;

struct Pending<D> {
    done: Vec<bool>,
    left: usize,
    acc: Option<D>,
    kind: WindowKind,
}

/// The single stage of a departition layer.
struct DepartitionSink<'a, S, D, R> {
    parts: usize,
    windows: BTreeMap<i64, Pending<D>>,
    init: Arc<dyn Fn() -> D + Send + Sync + 'a>,
    merge: Merge<'a, S, D>,
    done: Done<'a, D, R>,
    next: BoxSink<'a, R>,
}

impl<'a, S: Send, D: Send, R: Send> Sink<Tagged<S>> for DepartitionSink<'a, S, D, R> {
    fn events(&mut self, w: i64, batch: Vec<Tagged<S>>) {
        let mut out = Vec::new();
        for t in batch {
            let (parts, init) = (self.parts, &self.init);
            let p = self.windows.entry(t.window).or_insert_with(|| Pending {
                done: vec![false; parts],
                left: parts,
                acc: Some(init()),
                kind: t.kind,
            });
            match t.item {
                Some(x) => {
                    let acc = p.acc.take().expect("departition accumulator present");
                    p.acc = Some((self.merge)(x, acc));
                }
                None => {
                    if !p.done[t.part] {
                        p.done[t.part] = true;
                        p.left -= 1;
                    }
                    if p.left == 0 {
                        let p = self.windows.remove(&t.window).expect("window present");
                        let id = WindowId {
                            kind: p.kind,
                            id: t.window,
                        };
                        out.push((self.done)(p.acc.expect("accumulator present"), id));
                    }
                }
            }
        }
        if !out.is_empty() {
            self.next.events(w, out);
        }
    }
    fn trigger(&mut self, w: i64, name: &TriggerName, complete: bool) {
        if complete {
            // The departition's own end: complete what is left, by window id.
            let mut out = Vec::new();
            for (id, p) in std::mem::take(&mut self.windows) {
                let wid = WindowId { kind: p.kind, id };
                out.push((self.done)(p.acc.expect("accumulator present"), wid));
            }
            if !out.is_empty() {
                self.next.events(w, out);
            }
        }
        self.next.trigger(w, name, complete);
    }
    fn finish(&mut self) {
        self.next.finish()
    }
}

pub(crate) fn departition<'a, S, D, R>(
    upstream: Flow<'a, S>,
    init: Arc<dyn Fn() -> D + Send + Sync + 'a>,
    merge: Merge<'a, S, D>,
    done: Done<'a, D, R>,
    opts: Options<Tagged<S>>,
) -> Flow<'a, R>
where
    S: Send + 'a,
    D: Send + 'a,
    R: Send + 'a,
{
    if let Some(e) = upstream.error.clone() {
        return crate::flow::err_flow(e);
    }
    let r = match opts.stages(1).resolve() {
        Ok(r) => r,
        Err(e) => return crate::flow::err_flow(e),
    };
    Flow {
        build: Box::new(move |tail: SinkFactory<'a, R>, cx: &Cx| {
            let inbox = Inbox::<Tagged<S>>::new(1);
            let i = inbox.clone();
            let tagger: SinkFactory<'a, S> = Arc::new(move |lcx: &LaneCtx| {
                Box::new(TagRouter {
                    inbox: i.clone(),
                    cx: lcx.clone(),
                    seq: 0,
                })
            });
            let up = upstream.start(tagger, cx)?;
            let parts = up.lanes;
            let core: SinkFactory<'a, Tagged<S>> = Arc::new(move |lcx: &LaneCtx| {
                Box::new(DepartitionSink {
                    parts,
                    windows: BTreeMap::new(),
                    init: init.clone(),
                    merge: merge.clone(),
                    done: done.clone(),
                    next: tail(lcx),
                })
            });
            let lanes = make_lanes(&r, parts, &core, cx, None);
            Ok(Built {
                node: Box::new(LayerNode::new(
                    vec![up.node],
                    inbox,
                    lanes,
                    "a departition layer",
                )),
                lanes: 1,
                iters: None,
            })
        }),
        shape: Shape::Fresh,
        error: None,
        idle_window: false,
    }
}

const DEPARTITION_FIRST: &str = "departition/5 must be called after a group_by/reduce/emit_and_reduce operation as it works on the accumulated state";

impl<'a, S: Send + 'a> Flow<'a, S> {
    /// Merges, in one new stage, what the stages of a reducer layer emit per window:
    /// every event emitted by a stage's triggers is folded with `merge(event, acc)`
    /// into the window's accumulator (made by `init`); when every stage has completed
    /// the window, `done(acc, window)` is emitted. Must follow `on_trigger`/`emit_*`.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<Vec<u64>> = Flow::from_iter(1..=10u64)
    ///     .partition(Options::new().stages(4))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .emit_state()
    ///     .departition(Vec::new, |s, mut acc: Vec<u64>| { acc.push(s); acc }, |mut acc, _| { acc.sort(); acc })
    ///     .collect();
    /// assert_eq!(v.len(), 1);
    /// assert_eq!(v[0].len(), 4);
    /// assert_eq!(v[0].iter().sum::<u64>(), 55);
    /// ```
    pub fn departition<D, R, I, M, F>(self, init: I, merge: M, done: F) -> Flow<'a, R>
    where
        D: Send + 'a,
        R: Send + 'a,
        I: Fn() -> D + Send + Sync + 'a,
        M: Fn(S, D) -> D + Send + Sync + 'a,
        F: Fn(D, WindowId) -> R + Send + Sync + 'a,
    {
        if self.shape != Shape::Triggered && self.error.is_none() {
            return crate::flow::err_flow(FlowError::Build(DEPARTITION_FIRST.into()));
        }
        departition(
            self,
            Arc::new(init),
            Arc::new(merge),
            Arc::new(done),
            Options::new(),
        )
    }
}

impl<'a, A: Send + 'a> Reduced<'a, A> {
    /// [`Flow::departition`] over the stages' accumulators (what Elixir does when no
    /// `on_trigger` is given): at each trigger a stage's accumulator is merged (cloned
    /// unless the window completes).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options, WindowKind};
    /// let v: Vec<(WindowKind, u64)> = Flow::from_iter(1..=10u64)
    ///     .partition(Options::new().stages(4))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .departition(|| 0, |s, acc| s + acc, |acc, w| (w.kind, acc))
    ///     .collect();
    /// assert_eq!(v, [(WindowKind::Global, 55)]);
    /// ```
    pub fn departition<D, R, I, M, F>(self, init: I, merge: M, done: F) -> Flow<'a, R>
    where
        A: Clone,
        D: Send + 'a,
        R: Send + 'a,
        I: Fn() -> D + Send + Sync + 'a,
        M: Fn(A, D) -> D + Send + Sync + 'a,
        F: Fn(D, WindowId) -> R + Send + Sync + 'a,
    {
        self.emit_state().departition(init, merge, done)
    }

    /// The `n` smallest items of the accumulators of all stages, per window, as one
    /// sorted `Vec` (ascending; see [`Reduced::take_sort_by`]).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let top: Vec<Vec<u32>> = Flow::from_iter(vec![5u32, 3, 9, 1, 7])
    ///     .partition(Options::new().stages(2))
    ///     .reduce(Vec::new, |mut v, x| { v.push(x); v })
    ///     .take_sort(2)
    ///     .collect();
    /// assert_eq!(top, [vec![1, 3]]);
    /// ```
    pub fn take_sort(self, n: usize) -> Flow<'a, Vec<A::Item>>
    where
        A: IntoIterator + Clone,
        A::Item: Ord + Send + 'a,
    {
        self.take_sort_by(n, |a: &A::Item, b: &A::Item| a.cmp(b))
    }

    /// The first `n` items of all stages' accumulators in the order of `cmp`, per
    /// window: each stage sorts and truncates at every trigger, one departition stage
    /// merges (stable: on ties the earlier list's item first).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use stageflow::flow::{Flow, Options};
    /// let urls = ["www.foo.com", "www.bar.com", "www.foo.com", "www.foo.com", "www.baz.com"];
    /// let top: Vec<Vec<(&str, u32)>> = Flow::from_iter(urls)
    ///     .partition(Options::new())
    ///     .reduce(HashMap::new, |mut m: HashMap<&str, u32>, u| { *m.entry(u).or_default() += 1; m })
    ///     .take_sort_by(1, |a, b| b.1.cmp(&a.1))
    ///     .collect();
    /// assert_eq!(top, [vec![("www.foo.com", 3)]]);
    /// ```
    pub fn take_sort_by<C>(self, n: usize, cmp: C) -> Flow<'a, Vec<A::Item>>
    where
        A: IntoIterator + Clone,
        A::Item: Send + 'a,
        C: Fn(&A::Item, &A::Item) -> Ordering + Send + Sync + 'a,
    {
        if n == 0 {
            return crate::flow::err_flow(crate::flow::error::invalid(
                "take_sort",
                n,
                "expected a positive integer",
            ));
        }
        let cmp = Arc::new(cmp);
        let c1 = cmp.clone();
        let trig: TriggerFn<'a, A, Vec<A::Item>> =
            Arc::new(move |a: A, _: &TriggerInfo, complete: bool| {
                let (items, keep): (Vec<A::Item>, Option<A>) = if complete {
                    (a.into_iter().collect(), None)
                } else {
                    (a.clone().into_iter().collect(), Some(a))
                };
                let mut items = items;
                items.sort_by(|x, y| c1(x, y));
                items.truncate(n);
                (vec![items], keep)
            });
        let upstream = self.with_trigger(trig);
        let merge = move |new: Vec<A::Item>, acc: Vec<A::Item>| -> Vec<A::Item> {
            let mut out = Vec::with_capacity(n.min(new.len() + acc.len()));
            let (mut a, mut b) = (acc.into_iter().peekable(), new.into_iter().peekable());
            while out.len() < n {
                match (a.peek(), b.peek()) {
                    (Some(x), Some(y)) => {
                        if cmp(y, x) == Ordering::Less {
                            out.push(b.next().unwrap())
                        } else {
                            out.push(a.next().unwrap())
                        }
                    }
                    (Some(_), None) => out.push(a.next().unwrap()),
                    (None, Some(_)) => out.push(b.next().unwrap()),
                    (None, None) => break,
                }
            }
            out
        };
        departition(
            upstream,
            Arc::new(Vec::new),
            Arc::new(merge),
            Arc::new(|v, _| v),
            Options::new(),
        )
    }
}
