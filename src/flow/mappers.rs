//! Mappers: the per-event and per-batch operations fused into a layer's stages.

use std::collections::HashSet;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use super::exec::sinks::Xform;
use super::exec::{Cx, LaneCtx, SinkFactory};
use super::{Flow, FlowError, FxBuildHasher, Shape};

const AFTER_REDUCE: &str = "cannot be called after group_by/reduce/emit_and_reduce operation (use on_trigger/2 if you want to further emit events or the accumulated state)";

impl<'a, T: Send + 'a> Flow<'a, T> {
    /// Appends a batch transformation made fresh for every stage by `make`.
    pub(crate) fn then<U, M, G>(self, op: &str, make: M) -> Flow<'a, U>
    where
        U: Send + 'a,
        M: Fn() -> G + Send + Sync + 'a,
        G: FnMut(Vec<T>) -> Vec<U> + Send + 'a,
    {
        self.then_exact(op, false, make)
    }

    fn then_exact<U, M, G>(self, op: &str, exact: bool, make: M) -> Flow<'a, U>
    where
        U: Send + 'a,
        M: Fn() -> G + Send + Sync + 'a,
        G: FnMut(Vec<T>) -> Vec<U> + Send + 'a,
    {
        let mut error = self.error;
        if self.shape == Shape::Triggered && error.is_none() {
            error = Some(FlowError::Build(format!("{op} {AFTER_REDUCE}")));
        }
        let prev = self.build;
        Flow {
            build: Box::new(move |tail: SinkFactory<'a, U>, cx: &Cx| {
                let factory: SinkFactory<'a, T> = Arc::new(move |lcx: &LaneCtx| {
                    Box::new(Xform {
                        f: make(),
                        exact,
                        next: tail(lcx),
                        _t: PhantomData,
                    })
                });
                prev(factory, cx)
            }),
            shape: if self.shape == Shape::Triggered {
                Shape::Triggered
            } else {
                Shape::Mapped
            },
            error,
            idle_window: false,
        }
    }

    /// Applies `f` to every event.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<i32> = Flow::from_iter(vec![1, 2, 3]).map(|x| x * 2).collect();
    /// assert_eq!(v, [2, 4, 6]);
    /// ```
    pub fn map<U, F>(self, f: F) -> Flow<'a, U>
    where
        U: Send + 'a,
        F: Fn(T) -> U + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("map/2", move || {
            let f = f.clone();
            move |v: Vec<T>| v.into_iter().map(|x| f(x)).collect()
        })
    }

    /// Keeps the events for which `f` is true.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<i32> = Flow::from_iter(vec![1, 2, 3]).filter(|x| x % 2 == 0).collect();
    /// assert_eq!(v, [2]);
    /// ```
    pub fn filter<F>(self, f: F) -> Flow<'a, T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("filter/2", move || {
            let f = f.clone();
            move |mut v: Vec<T>| {
                v.retain(|x| f(x));
                v
            }
        })
    }

    /// Drops the events for which `f` is true.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<i32> = Flow::from_iter(vec![1, 2, 3]).reject(|x| x % 2 == 0).collect();
    /// assert_eq!(v, [1, 3]);
    /// ```
    pub fn reject<F>(self, f: F) -> Flow<'a, T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("reject/2", move || {
            let f = f.clone();
            move |mut v: Vec<T>| {
                v.retain(|x| !f(x));
                v
            }
        })
    }

    /// Replaces every event by the events of the iterator `f` returns, in order.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let mut v: Vec<i32> = Flow::from_iter(vec![1, 2, 3]).flat_map(|x| [x, x * 2]).collect();
    /// v.sort();
    /// assert_eq!(v, [1, 2, 2, 3, 4, 6]);
    /// ```
    pub fn flat_map<U, I, F>(self, f: F) -> Flow<'a, U>
    where
        U: Send + 'a,
        I: IntoIterator<Item = U>,
        F: Fn(T) -> I + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("flat_map/2", move || {
            let f = f.clone();
            move |v: Vec<T>| {
                let n = v.len();
                let mut out = Vec::with_capacity(n);
                for (i, x) in v.into_iter().enumerate() {
                    out.extend(f(x));
                    // Once the fan-out is known, reserve for the rest of the batch at
                    // once instead of doubling (and copying) several times.
                    if i == 7 && n > 16 {
                        out.reserve((out.len() / 8 + 1) * (n - 8) * 9 / 8);
                    }
                }
                out
            }
        })
    }

    /// Maps and keeps the `Some` results (Elixir's removed `filter_map/3`, in one step).
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<i32> = Flow::from_iter(vec!["1", "x", "3"])
    ///     .filter_map(|s: &str| s.parse().ok())
    ///     .collect();
    /// assert_eq!(v, [1, 3]);
    /// ```
    pub fn filter_map<U, F>(self, f: F) -> Flow<'a, U>
    where
        U: Send + 'a,
        F: Fn(T) -> Option<U> + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("filter_map/2", move || {
            let f = f.clone();
            move |v: Vec<T>| v.into_iter().filter_map(|x| f(x)).collect()
        })
    }

    /// Calls `f` on every event and passes it on (Elixir's `each/2`).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use stageflow::flow::Flow;
    /// let seen = AtomicUsize::new(0);
    /// let n = Flow::from_iter(0..10).inspect(|_| { seen.fetch_add(1, Ordering::Relaxed); }).count();
    /// assert_eq!((n, seen.load(Ordering::Relaxed)), (10, 10));
    /// ```
    pub fn inspect<F>(self, f: F) -> Flow<'a, T>
    where
        F: Fn(&T) + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("each/2", move || {
            let f = f.clone();
            move |v: Vec<T>| {
                v.iter().for_each(|x| f(x));
                v
            }
        })
    }

    /// Alias of [`Flow::inspect`] under Elixir's (deprecated) name.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<u8> = Flow::from_iter(vec![1u8]).each(|x| assert_eq!(*x, 1)).collect();
    /// assert_eq!(v, [1]);
    /// ```
    pub fn each<F>(self, f: F) -> Flow<'a, T>
    where
        F: Fn(&T) + Send + Sync + 'a,
    {
        self.inspect(f)
    }

    /// Transforms each whole batch a stage receives. Only at the start of a layer.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iters_with(vec![vec![1, 2, 3], vec![4, 5, 6]], Options::new().stages(1))
    ///     .map_batch(|b: Vec<u32>| vec![b.iter().sum()])
    ///     .collect();
    /// assert_eq!(v, [6, 15]);
    /// ```
    pub fn map_batch<U, F>(self, f: F) -> Flow<'a, U>
    where
        U: Send + 'a,
        F: Fn(Vec<T>) -> Vec<U> + Send + Sync + 'a,
    {
        let shape = self.shape;
        let mut out = {
            let f = Arc::new(f);
            self.then_exact("map_batch/2", true, move || {
                let f = f.clone();
                move |v: Vec<T>| f(v)
            })
        };
        if !matches!(shape, Shape::Fresh | Shape::Batch) {
            out.error = Some(FlowError::Build(
                "map_batch/2 can only be called at the beginning of the stage/partition, before any map or reduce operation".into(),
            ));
        }
        if matches!(shape, Shape::Fresh | Shape::Batch) {
            out.shape = Shape::Batch;
        }
        out
    }

    /// Keeps the first event of each key `by(event)`, per stage (see quirk 3 in the
    /// module docs: streaming, in input order).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iter(1..=100u32)
    ///     .partition(Options::new().stages(1))
    ///     .uniq_by(|x| x % 2)
    ///     .collect();
    /// assert_eq!(v, [1, 2]);
    /// ```
    pub fn uniq_by<K, F>(self, by: F) -> Flow<'a, T>
    where
        K: Hash + Eq + Send + 'a,
        F: Fn(&T) -> K + Send + Sync + 'a,
    {
        let shape = self.shape;
        let by = Arc::new(by);
        let mut out = self.then("uniq_by/2", move || {
            let by = by.clone();
            let mut seen: HashSet<K, FxBuildHasher> = HashSet::default();
            move |mut v: Vec<T>| {
                v.retain(|x| seen.insert(by(x)));
                v
            }
        });
        if shape == Shape::Triggered {
            out.error = Some(FlowError::Build(
                "uniq/uniq_by cannot be called after group_by/reduce/emit_and_reduce".into(),
            ));
        }
        out
    }

    /// Keeps the first occurrence of each event, per stage.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iter_with(vec![3, 1, 2, 3, 1, 5], Options::new().stages(1))
    ///     .uniq()
    ///     .collect();
    /// assert_eq!(v, [3, 1, 2, 5]);
    /// ```
    pub fn uniq(self) -> Flow<'a, T>
    where
        T: Hash + Eq + Clone,
    {
        self.uniq_by(|x: &T| x.clone())
    }
}

impl<'a, K: Send + 'a, V: Send + 'a> Flow<'a, (K, V)> {
    /// Applies `f` to the value of every `(key, value)` event (Elixir's `map_values/2`:
    /// a plain mapper despite its doc's mention of state, so like `map` it cannot
    /// follow a reducer in the same layer).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<(char, u32)> =
    ///     Flow::from_iter_with([('a', 1), ('b', 2), ('c', 3), ('d', 4), ('e', 5)], Options::new().stages(1))
    ///         .map_values(|v| v * 2)
    ///         .collect();
    /// assert_eq!(v, [('a', 2), ('b', 4), ('c', 6), ('d', 8), ('e', 10)]);
    /// ```
    pub fn map_values<W, F>(self, f: F) -> Flow<'a, (K, W)>
    where
        W: Send + 'a,
        F: Fn(V) -> W + Send + Sync + 'a,
    {
        let f = Arc::new(f);
        self.then("map_values/2", move || {
            let f = f.clone();
            move |v: Vec<(K, V)>| v.into_iter().map(|(k, x)| (k, f(x))).collect()
        })
    }
}
