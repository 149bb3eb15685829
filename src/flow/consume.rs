//! Consumers: what runs a flow to its end (`collect`, `sum`, `run`, ...).

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use super::exec::sinks::FoldSink;
use super::exec::{self, Built, Cx, LaneCtx, SinkFactory, Stats};
use super::{Flow, FlowError};

/// What [`Flow::try_run`] reports about events dropped by design.
///
/// ```
/// use stageflow::flow::{Flow, RunReport};
/// assert_eq!(Flow::from_iter(vec![1u8]).run(), RunReport::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Events a custom partition hash discarded.
    pub discarded_events: u64,
    /// Events that reached a fixed window after it closed (dropped, as in Elixir Flow).
    pub late_events: u64,
}

impl<'a, T: Send + 'a> Flow<'a, T> {
    /// Starts the flow with `sink` as the output of its last layer.
    pub(crate) fn start(self, sink: SinkFactory<'a, T>, cx: &Cx) -> Result<Built<'a>, FlowError> {
        self.closable()?;
        exec::raise_malloc_thresholds();
        (self.build)(sink, cx)
    }

    /// Runs the flow into a fold done inside the last layer's stages.
    fn fold_lanes<R, F>(self, f: F) -> Result<(Vec<R>, RunReport), FlowError>
    where
        R: Send + 'a,
        F: Fn(Vec<T>) -> Option<R> + Send + Sync + 'a,
    {
        self.fold_lanes_with(exec::MAX_FOLD_ROUND_EVENTS, f)
    }

    /// [`Flow::fold_lanes`] with rounds of at most `max_round_events` source events;
    /// the partial results come in stage order (each stage's in its order).
    fn fold_lanes_with<R, F>(
        self,
        max_round_events: usize,
        f: F,
    ) -> Result<(Vec<R>, RunReport), FlowError>
    where
        R: Send + 'a,
        F: Fn(Vec<T>) -> Option<R> + Send + Sync + 'a,
    {
        let out = Arc::new(Mutex::new(Vec::new()));
        let f = Arc::new(f);
        let o = out.clone();
        let sink: SinkFactory<'a, T> = Arc::new(move |lcx: &LaneCtx| {
            Box::new(FoldSink {
                f: f.clone(),
                lane: lcx.index,
                partials: Vec::new(),
                out: o.clone(),
                _t: PhantomData,
            })
        });
        let cx = Cx {
            stats: Arc::new(Stats::default()),
            max_round_events,
        };
        let mut built = self.start(sink, &cx)?;
        // The driver runs on a pool worker: lane jobs it spawns go to its own deque and
        // it runs them itself, instead of sleeping until a woken worker has (one
        // wake-up less per round). Not when it reads stage streams (Node::reads_stages).
        let node = &mut built.node;
        let stages = node.reads_stages();
        let mut drive = move || -> Result<(), FlowError> {
            while !exec::round(node)? {}
            Ok(())
        };
        if stages {
            drive()?;
        } else {
            rayon::scope(|_| drive())?;
        }
        drop(built);
        let mut parts = std::mem::take(&mut *out.lock());
        // Stages finish in any order; stage order makes small flows deterministic.
        parts.sort_by_key(|(lane, _)| *lane);
        Ok((
            parts.into_iter().flat_map(|(_, p)| p).collect(),
            report(&cx),
        ))
    }

    /// Runs the flow for its effects, discarding its output as it is produced
    /// (quirk 1), and reports events dropped by design.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let report = Flow::from_iter(1..=10u32)
    ///     .partition_with(Options::new().stages(2), |x: &u32| if *x % 2 == 0 { Some(0) } else { None })
    ///     .try_run()?;
    /// assert_eq!(report.discarded_events, 5);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn try_run(self) -> Result<RunReport, FlowError> {
        self.fold_lanes(|_v: Vec<T>| None::<()>).map(|(_, r)| r)
    }

    /// [`Flow::try_run`], panicking on failure: a panic of a user closure is re-raised
    /// with its own payload (as rayon does), another error panics with its message.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// Flow::from_iter(vec![1, 2, 3]).map(|x| x + 1).run();
    /// ```
    pub fn run(self) -> RunReport {
        unwrap(self.try_run())
    }

    /// Calls `f` on every output event, inside the stages (in parallel).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use stageflow::flow::Flow;
    /// let total = AtomicU64::new(0);
    /// Flow::from_iter(1..=4u64).try_for_each(|x| { total.fetch_add(x, Ordering::Relaxed); })?;
    /// assert_eq!(total.load(Ordering::Relaxed), 10);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn try_for_each<F>(self, f: F) -> Result<(), FlowError>
    where
        F: Fn(T) + Send + Sync + 'a,
    {
        self.fold_lanes(move |v: Vec<T>| {
            v.into_iter().for_each(&f);
            None::<()>
        })
        .map(|_| ())
    }

    /// [`Flow::try_for_each`], panicking on failure.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// Flow::from_iter(vec![1, 2]).for_each(|x| assert!(x > 0));
    /// ```
    pub fn for_each<F>(self, f: F)
    where
        F: Fn(T) + Send + Sync + 'a,
    {
        unwrap(self.try_for_each(f))
    }

    /// Counts the output events (inside the stages).
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// assert_eq!(Flow::from_iter(0..1000).filter(|x| x % 3 == 0).try_count()?, 334);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn try_count(self) -> Result<usize, FlowError> {
        self.fold_lanes(|v: Vec<T>| Some(v.len()))
            .map(|(v, _)| v.into_iter().sum())
    }

    /// [`Flow::try_count`], panicking on failure.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// assert_eq!(Flow::from_iter(0..10).count(), 10);
    /// ```
    pub fn count(self) -> usize {
        unwrap(self.try_count())
    }

    /// Sums the output events (partial sums per batch inside the stages).
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let s: u64 = Flow::from_iter(0..10u64).map(|x| x * 2).filter(|x| x % 3 == 0).try_sum()?;
    /// assert_eq!(s, 0 + 6 + 12 + 18);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn try_sum<S>(self) -> Result<S, FlowError>
    where
        S: std::iter::Sum<T> + std::iter::Sum<S> + Send + 'a,
    {
        self.fold_lanes(|v: Vec<T>| Some(v.into_iter().sum::<S>()))
            .map(|(v, _)| v.into_iter().sum())
    }

    /// [`Flow::try_sum`], panicking on failure.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// assert_eq!(Flow::from_iter(1..=100u64).sum::<u64>(), 5050);
    /// ```
    pub fn sum<S>(self) -> S
    where
        S: std::iter::Sum<T> + std::iter::Sum<S> + Send + 'a,
    {
        unwrap(self.try_sum())
    }

    /// Collects the output events; a failure (a panic in a closure, a build error)
    /// is returned as an error.
    ///
    /// Each stage of the last layer keeps what it emits until the flow ends; the
    /// result is stage 0's events in the order it emitted them, then stage 1's, and so
    /// on (a one-stage layer keeps its order; Elixir's `Enum.to_list` interleaves the
    /// stages as they happen to emit). To take events as they are emitted, iterate
    /// over the flow instead (`for x in flow`).
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<u8> = Flow::from_iter(vec![1u8, 2]).try_collect()?;
    /// assert_eq!(v, [1, 2]);
    /// # Ok::<(), stageflow::flow::FlowError>(())
    /// ```
    pub fn try_collect<B: FromIterator<T>>(self) -> Result<B, FlowError> {
        // Each stage of the last layer keeps what it emits, and the driving loop runs
        // as for the folds (on a pool worker unless the flow reads stage streams): no
        // output queue to lock per emission and drain between rounds (the other
        // worker would fall asleep during that drain and wake late for the next
        // round). Rounds stay at the streaming size, which stays in the cores' caches
        // between layers (see `MAX_ROUND_EVENTS`; measurements: docs/BENCHMARKS.md).
        let (parts, _) = self.fold_lanes_with(exec::MAX_ROUND_EVENTS, |v: Vec<T>| Some(v))?;
        let mut all = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for part in parts {
            all.extend(part);
        }
        Ok(all.into_iter().collect())
    }

    /// [`Flow::try_collect`], panicking on failure: a panic of a user closure is
    /// re-raised with its own payload (as rayon does), another error panics with its
    /// message.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<u8> = Flow::from_iter(vec![1u8, 2]).collect();
    /// assert_eq!(v, [1, 2]);
    /// ```
    pub fn collect<B: FromIterator<T>>(self) -> B {
        unwrap(self.try_collect())
    }
}

/// The plain consumers' ending: a user closure's panic is re-raised with its own
/// payload (as rayon does), another failure panics with its message.
fn unwrap<R>(r: Result<R, FlowError>) -> R {
    r.unwrap_or_else(|e| e.raise())
}

pub(super) fn report(cx: &Cx) -> RunReport {
    RunReport {
        discarded_events: cx.stats.discarded.load(Ordering::Relaxed),
        late_events: cx.stats.late.load(Ordering::Relaxed),
    }
}
