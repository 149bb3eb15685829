//! Reducers (`reduce`, `emit_and_reduce`, `group_by`, `group_by_key`) and what they
//! emit (`on_trigger`, `emit_*`).

use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::flow::exec::sinks::{
    Accs, ByValue, EmitReduceSink, Fire, FireEmit, FireEmitFactory, FireFactory, FireImpl, Fold,
    InPlace, PerLane, ReduceSink, TriggerFn,
};
use crate::flow::exec::{BoxSink, Build, Built, Cx, LaneCtx, SinkFactory};
use crate::flow::{Flow, FlowError, Shape, TriggerInfo};

const SECOND_REDUCE: &str = "cannot call group_by/reduce/emit_and_reduce on a flow after another group_by/reduce/emit_and_reduce operation (these functions can only be called once per partition, for subsequent transformations, consider using on_trigger/2 instead)";

/// A reducer's layer, to be built once what fires its triggers (`F`) is known.
type LayerBuild<'a, F> = Box<dyn FnOnce(F, &Cx) -> Result<Built<'a>, FlowError> + Send + 'a>;
type ReducedBuild<'a, A> = LayerBuild<'a, FireFactory<'a, A>>;
type EmitBuild<'a, A, O> = LayerBuild<'a, FireEmitFactory<'a, A, O>>;

/// A layer that ends with a reducer, before its emission is chosen.
///
/// Choose what each trigger emits: [`Reduced::on_trigger`] (any events, and the
/// accumulator to keep), [`Reduced::emit_events`] (the accumulator's items: Elixir's
/// default), [`Reduced::emit_state`] (the accumulator itself) or
/// [`Reduced::emit_nothing`]; or merge the partitions with [`Reduced::departition`] /
/// [`Reduced::take_sort`]. Mappers are not available here: that is the boundary rule.
///
/// ```
/// use stageflow::flow::{Flow, Options};
/// let total: u64 = Flow::from_iter(1..=100u64)
///     .partition(Options::new().stages(2))
///     .reduce(|| 0, |acc, x| acc + x)
///     .emit_state()
///     .sum();
/// assert_eq!(total, 5050);
/// ```
#[must_use = "a flow does nothing until it is consumed"]
pub struct Reduced<'a, A> {
    build: ReducedBuild<'a, A>,
    error: Option<FlowError>,
}

impl<'a, A> std::fmt::Debug for Reduced<'a, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reduced")
            .field("error", &self.error)
            .finish()
    }
}

/// A layer that ends with [`Flow::emit_and_reduce`]: it emits events of type `O` while
/// reducing into `A`; choose what its triggers emit.
///
/// ```
/// use stageflow::flow::{Flow, Options};
/// let v: Vec<u64> = Flow::from_iter_with(1..=3u64, Options::new().stages(1))
///     .emit_and_reduce(|| 0, |acc, x| (vec![x * 10], acc + x))
///     .on_trigger(|acc, _| (vec![acc], acc))
///     .collect();
/// assert_eq!(v, [10, 20, 30, 6]);
/// ```
#[must_use = "a flow does nothing until it is consumed"]
pub struct EmitReduced<'a, A, O> {
    build: EmitBuild<'a, A, O>,
    error: Option<FlowError>,
}

impl<'a, A, O> std::fmt::Debug for EmitReduced<'a, A, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitReduced")
            .field("error", &self.error)
            .finish()
    }
}

/// A layer ending with a reducer: each lane's chain ends with `sink(lcx, fire)`,
/// `fire` being what fires its triggers, which the emission chosen later provides.
fn reducer_layer<'a, T: 'a, F: ?Sized + 'a>(
    prev: Build<'a, T>,
    sink: impl Fn(&LaneCtx, Box<F>) -> BoxSink<'a, T> + Send + Sync + 'a,
) -> LayerBuild<'a, PerLane<'a, F>> {
    Box::new(move |fire: PerLane<'a, F>, cx: &Cx| {
        let sink: SinkFactory<'a, T> = Arc::new(move |lcx: &LaneCtx| sink(lcx, fire(lcx)));
        prev(sink, cx)
    })
}

/// Ends a reducer's layer: in each lane, `fire(next)` makes what fires the reducer's
/// triggers ([`Fire`], or [`FireEmit`] for `emit_and_reduce`), `next` being the rest
/// of the lane's chain.
fn triggered<'a, O: Send + 'a, F: ?Sized + 'a>(
    build: LayerBuild<'a, PerLane<'a, F>>,
    error: Option<FlowError>,
    fire: impl Fn(BoxSink<'a, O>) -> Box<F> + Send + Sync + 'a,
) -> Flow<'a, O> {
    Flow {
        build: Box::new(move |tail: SinkFactory<'a, O>, cx: &Cx| {
            let fire: PerLane<'a, F> = Arc::new(move |lcx: &LaneCtx| fire(tail(lcx)));
            build(fire, cx)
        }),
        shape: Shape::Triggered,
        error,
        idle_window: false,
    }
}

/// `on_trigger(f)` in the internal form: the accumulator `f` returns is kept.
fn on_trigger_fn<'a, A, O>(
    f: impl Fn(A, &TriggerInfo) -> (Vec<O>, A) + Send + Sync + 'a,
) -> TriggerFn<'a, A, O> {
    Arc::new(move |a, info, _complete| {
        let (e, a) = f(a, info);
        (e, Some(a))
    })
}

/// Emits the accumulator's items and keeps it; a completing window moves the
/// accumulator instead of cloning it.
fn emit_items<'a, A>() -> TriggerFn<'a, A, A::Item>
where
    A: IntoIterator + Clone,
{
    Arc::new(|a: A, _: &TriggerInfo, complete| {
        if complete {
            (a.into_iter().collect(), None)
        } else {
            (a.clone().into_iter().collect(), Some(a))
        }
    })
}

/// Emits nothing and keeps the accumulator.
fn emit_none<'a, A, O>() -> TriggerFn<'a, A, O> {
    Arc::new(|a: A, _: &TriggerInfo, _| (Vec::new(), Some(a)))
}

fn reducer_error<T>(flow: &Flow<'_, T>) -> Option<FlowError> {
    if let Some(e) = &flow.error {
        return Some(e.clone());
    }
    if flow.shape == Shape::Triggered {
        return Some(FlowError::Build(SECOND_REDUCE.into()));
    }
    None
}

impl<'a, T: Send + 'a> Flow<'a, T> {
    /// Folds the layer's events into one accumulator per stage and window: `init` makes
    /// it at the start of every window, `f(acc, event)` folds.
    ///
    /// For an accumulator bigger than a few words (a map, a vector), prefer
    /// [`Flow::reduce_mut`]: it updates the accumulator where it is instead of moving it
    /// through every call.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use stageflow::flow::{Flow, Options};
    /// let letters = "the quick brown fox".chars();
    /// let mut counts: Vec<(char, usize)> = Flow::from_iter(letters)
    ///     .partition(Options::new())
    ///     .reduce(HashMap::new, |mut m: HashMap<char, usize>, c| { *m.entry(c).or_default() += 1; m })
    ///     .emit_events()
    ///     .collect();
    /// counts.sort();
    /// assert_eq!(counts[0], (' ', 3));
    /// assert_eq!(counts.len(), 16);
    /// ```
    pub fn reduce<A, I, F>(self, init: I, f: F) -> Reduced<'a, A>
    where
        A: Send + 'a,
        I: Fn() -> A + Send + Sync + 'a,
        F: Fn(A, T) -> A + Send + Sync + 'a,
    {
        self.reducer(init, ByValue(f))
    }

    /// [`Flow::reduce`] with an accumulator updated in place: `init` makes it at the
    /// start of every window, `f(&mut acc, event)` folds. Same layer, same triggers and
    /// emissions; only the calling convention differs (Elixir has only `reduce/3`).
    ///
    /// Why it exists: `reduce` moves the accumulator into and out of `f` at every event.
    /// For a hash map, the compiler copies the map's header through the stack each time,
    /// and the next lookup waits for that copy; folding in place is the loop a
    /// hand-written `for` over a `&mut HashMap` compiles to (W6 in `cargo bench --bench
    /// compare` uses it; docs/BENCHMARKS.md has the measurements). `group_by` and
    /// `group_by_key` fold in place.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use stageflow::flow::{Flow, Options};
    /// let mut counts: Vec<(char, usize)> = Flow::from_iter("the quick brown fox".chars())
    ///     .partition(Options::new())
    ///     .reduce_mut(HashMap::new, |m: &mut HashMap<char, usize>, c| *m.entry(c).or_default() += 1)
    ///     .emit_events()
    ///     .collect();
    /// counts.sort();
    /// assert_eq!(counts[0], (' ', 3));
    /// assert_eq!(counts.len(), 16);
    /// ```
    pub fn reduce_mut<A, I, F>(self, init: I, f: F) -> Reduced<'a, A>
    where
        A: Send + 'a,
        I: Fn() -> A + Send + Sync + 'a,
        F: Fn(&mut A, T) + Send + Sync + 'a,
    {
        self.reducer(init, InPlace(f))
    }

    fn reducer<A, I, F>(self, init: I, fold: F) -> Reduced<'a, A>
    where
        A: Send + 'a,
        I: Fn() -> A + Send + Sync + 'a,
        F: Fold<A, T> + 'a,
    {
        let error = reducer_error(&self);
        let init: Arc<dyn Fn() -> A + Send + Sync + 'a> = Arc::new(init);
        let f = Arc::new(fold);
        Reduced {
            build: reducer_layer(self.build, move |lcx, fire| {
                Box::new(ReduceSink {
                    accs: Accs::new(init.clone(), fire, lcx),
                    f: f.clone(),
                    _u: PhantomData,
                })
            }),
            error,
        }
    }

    /// Reduces like [`Flow::reduce`], and emits at once the events `f` returns.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// // Emit the last three events seen, at every event.
    /// let v: Vec<Vec<u32>> = Flow::from_iter_with(1..=5u32, Options::new().stages(1))
    ///     .emit_and_reduce(Vec::new, |mut acc: Vec<u32>, x| {
    ///         acc.push(x);
    ///         if acc.len() > 3 { acc.remove(0); }
    ///         (vec![acc.clone()], acc)
    ///     })
    ///     .emit_nothing()
    ///     .collect();
    /// assert_eq!(v, [vec![1], vec![1, 2], vec![1, 2, 3], vec![2, 3, 4], vec![3, 4, 5]]);
    /// ```
    pub fn emit_and_reduce<A, O, I, G>(self, init: I, g: G) -> EmitReduced<'a, A, O>
    where
        A: Send + 'a,
        O: Send + 'a,
        I: Fn() -> A + Send + Sync + 'a,
        G: Fn(A, T) -> (Vec<O>, A) + Send + Sync + 'a,
    {
        let error = reducer_error(&self);
        let init: Arc<dyn Fn() -> A + Send + Sync + 'a> = Arc::new(init);
        let g = Arc::new(g);
        EmitReduced {
            build: reducer_layer(self.build, move |lcx, fire| {
                Box::new(EmitReduceSink {
                    accs: Accs::new(init.clone(), fire, lcx),
                    g: g.clone(),
                    _u: PhantomData,
                })
            }),
            error,
        }
    }

    /// Groups values by key: `HashMap<key, Vec<value>>` per stage and window, values in
    /// arrival order (Elixir keeps them newest first).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let mut groups: Vec<(usize, Vec<&str>)> =
    ///     Flow::from_iter_with(["the", "quick", "brown", "fox"], Options::new().stages(1))
    ///         .group_by(|w: &&str| w.len(), |w| w)
    ///         .emit_events()
    ///         .collect();
    /// groups.sort();
    /// assert_eq!(groups, [(3, vec!["the", "fox"]), (5, vec!["quick", "brown"])]);
    /// ```
    pub fn group_by<K, V, KF, VF>(self, key: KF, value: VF) -> Reduced<'a, HashMap<K, Vec<V>>>
    where
        K: Hash + Eq + Send + 'a,
        V: Send + 'a,
        KF: Fn(&T) -> K + Send + Sync + 'a,
        VF: Fn(T) -> V + Send + Sync + 'a,
    {
        self.reduce_mut(HashMap::new, move |m: &mut HashMap<K, Vec<V>>, x| {
            m.entry(key(&x)).or_default().push(value(x));
        })
    }

    /// [`Flow::group_by`] for `(key, value)` events.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use stageflow::flow::{Flow, Options};
    /// let states: Vec<HashMap<&str, Vec<u32>>> =
    ///     Flow::from_iter_with([("foo", 1), ("foo", 2), ("bar", 3), ("foo", 4), ("bar", 5)],
    ///                          Options::new().stages(1))
    ///         .group_by_key()
    ///         .emit_state()
    ///         .collect();
    /// assert_eq!(states[0]["foo"], [1, 2, 4]);
    /// assert_eq!(states[0]["bar"], [3, 5]);
    /// ```
    pub fn group_by_key<K, V>(self) -> Reduced<'a, HashMap<K, Vec<V>>>
    where
        T: Into<(K, V)>,
        K: Hash + Eq + Send + 'a,
        V: Send + 'a,
    {
        self.reduce_mut(HashMap::new, |m: &mut HashMap<K, Vec<V>>, x: T| {
            let (k, v) = x.into();
            m.entry(k).or_default().push(v);
        })
    }
}

impl<'a, A: Send + 'a> Reduced<'a, A> {
    pub(crate) fn with_trigger<O: Send + 'a>(self, trig: TriggerFn<'a, A, O>) -> Flow<'a, O> {
        triggered(
            self.build,
            self.error,
            move |next| -> Box<dyn Fire<A> + 'a> {
                Box::new(FireImpl {
                    f: trig.clone(),
                    next,
                })
            },
        )
    }

    /// At every trigger, `f(acc, info)` returns the events to emit and the accumulator
    /// to keep (ignored when the window completes: the next window starts afresh).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options, TriggerName};
    /// let v: Vec<(u64, TriggerName)> = Flow::from_iter(1..=4u64)
    ///     .partition(Options::new().stages(1))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .on_trigger(|acc, info| (vec![(acc, info.trigger.clone())], acc))
    ///     .collect();
    /// assert_eq!(v, [(10, TriggerName::Done)]);
    /// ```
    pub fn on_trigger<O, F>(self, f: F) -> Flow<'a, O>
    where
        O: Send + 'a,
        F: Fn(A, &TriggerInfo) -> (Vec<O>, A) + Send + Sync + 'a,
    {
        self.with_trigger(on_trigger_fn(f))
    }

    /// Emits the accumulator itself at every trigger (Elixir's `emit(:state)`).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u64> = Flow::from_iter_with(1..=4u64, Options::new().stages(1))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(v, [10]);
    /// ```
    pub fn emit_state(self) -> Flow<'a, A>
    where
        A: Clone,
    {
        self.with_trigger(Arc::new(|a: A, _: &TriggerInfo, complete| {
            if complete {
                (vec![a], None)
            } else {
                (vec![a.clone()], Some(a))
            }
        }))
    }

    /// Emits the accumulator's items at every trigger and keeps it: Elixir's default
    /// (`emit(:events)`). A completing window moves the accumulator (no clone).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u64> = Flow::from_iter_with(1..=3u64, Options::new().stages(1))
    ///     .reduce(Vec::new, |mut v, x| { v.push(x); v })
    ///     .emit_events()
    ///     .collect();
    /// assert_eq!(v, [1, 2, 3]);
    /// ```
    pub fn emit_events(self) -> Flow<'a, A::Item>
    where
        A: IntoIterator + Clone,
        A::Item: Send + 'a,
    {
        self.with_trigger(emit_items())
    }

    /// Emits nothing (Elixir's `emit(:nothing)`): for reducers run for their effects.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let n = Flow::from_iter(1..=3u64).reduce(|| 0, |a, x| a + x).emit_nothing().count();
    /// assert_eq!(n, 0);
    /// ```
    pub fn emit_nothing(self) -> Flow<'a, A> {
        self.with_trigger(emit_none())
    }
}

impl<'a, A: Send + 'a, O: Send + 'a> EmitReduced<'a, A, O> {
    fn with_trigger(self, trig: TriggerFn<'a, A, O>) -> Flow<'a, O> {
        triggered(
            self.build,
            self.error,
            move |next| -> Box<dyn FireEmit<A, O> + 'a> {
                Box::new(FireImpl {
                    f: trig.clone(),
                    next,
                })
            },
        )
    }

    /// At every trigger, `f(acc, info)` returns events to emit and the accumulator.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let total: u64 = Flow::from_iters_with(vec![vec![1u64, 2, 3], vec![4, 5, 6]], Options::new().stages(2))
    ///     .emit_and_reduce(|| 0, |acc, x| (vec![x], acc + x))
    ///     .on_trigger(|acc, _| (vec![acc], acc))
    ///     .sum();
    /// assert_eq!(total, 42);
    /// ```
    pub fn on_trigger<F>(self, f: F) -> Flow<'a, O>
    where
        F: Fn(A, &TriggerInfo) -> (Vec<O>, A) + Send + Sync + 'a,
    {
        self.with_trigger(on_trigger_fn(f))
    }

    /// Emits the accumulator's items at every trigger (the default).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iter_with(1..=3u32, Options::new().stages(1))
    ///     .emit_and_reduce(Vec::new, |mut acc: Vec<u32>, x| { acc.push(x); (vec![x * 10], acc) })
    ///     .emit_events()
    ///     .collect();
    /// assert_eq!(v, [10, 20, 30, 1, 2, 3]);
    /// ```
    pub fn emit_events(self) -> Flow<'a, O>
    where
        A: IntoIterator<Item = O> + Clone,
    {
        self.with_trigger(emit_items())
    }

    /// Emits nothing at triggers: only what the reducer emits.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let v: Vec<u32> = Flow::from_iter_with(1..=3u32, Options::new().stages(1))
    ///     .emit_and_reduce(|| (), |(), x| (vec![x], ()))
    ///     .emit_nothing()
    ///     .collect();
    /// assert_eq!(v, [1, 2, 3]);
    /// ```
    pub fn emit_nothing(self) -> Flow<'a, O> {
        self.with_trigger(emit_none())
    }
}
