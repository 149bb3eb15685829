//! Source layers: [`Flow::from_iter`] and its siblings.

use super::error::FailureSlot;
use super::exec::node::{Pull, SourceNode};
use super::exec::{Built, Cx, SinkFactory};
use super::layer::make_lanes;
use super::{err_flow, Flow, FlowError, Options, Shape};

impl<'a, T: Send + 'a> Flow<'a, T> {
    /// A flow reading one iterator, in batches of `max_demand - min_demand` events
    /// (default options).
    ///
    /// The source stages call the iterator's `next()` themselves, on rayon's workers
    /// (one at a time, under a lock), as `par_bridge` does. An iterator that waits for
    /// another thread holds a worker while it waits; one that waits for work the same
    /// rayon pool must do can deadlock it. Read such sources through a producer stage
    /// with [`Flow::from_stages`], whose streams are read by the driving thread.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let v: Vec<u32> = Flow::from_iter(vec![1, 2, 3]).map(|x| x * 2).collect();
    /// assert_eq!(v, [2, 4, 6]);
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'a,
    {
        Self::from_iters_with([iter], Options::new())
    }

    /// [`Flow::from_iter`] with options.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// let n = Flow::from_iter_with(0..10u64, Options::new().stages(2).max_demand(4)).count();
    /// assert_eq!(n, 10);
    /// ```
    pub fn from_iter_with<I>(iter: I, opts: Options<T>) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'a,
    {
        Self::from_iters_with([iter], opts)
    }

    /// A flow reading several iterators (one producer each), with default options.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let mut v: Vec<u32> = Flow::from_iters(vec![vec![1, 2, 3], vec![1, 2, 3]])
    ///     .map(|x| x * 2)
    ///     .collect();
    /// v.sort();
    /// assert_eq!(v, [2, 2, 4, 4, 6, 6]);
    /// ```
    pub fn from_iters<S, I>(iters: S) -> Self
    where
        S: IntoIterator<Item = I>,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'a,
    {
        Self::from_iters_with(iters, Options::new())
    }

    /// [`Flow::from_iters`] with options. An empty list is an error.
    ///
    /// ```
    /// use stageflow::flow::{Flow, FlowError, Options};
    /// let none: Vec<Vec<u8>> = vec![];
    /// let err = Flow::from_iters_with(none, Options::new()).try_count().unwrap_err();
    /// assert!(matches!(err, FlowError::Build(m) if m.starts_with("from_enumerables/2 expects")));
    /// ```
    pub fn from_iters_with<S, I>(iters: S, opts: Options<T>) -> Self
    where
        S: IntoIterator<Item = I>,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'a,
    {
        Self::source(iters, opts, Pull::Lanes, None)
    }

    /// A source layer over `iters`, pulled as `pull` says; iterators that can fail
    /// (stage streams) leave their failure in `failure`.
    pub(crate) fn source<S, I>(
        iters: S,
        opts: Options<T>,
        pull: Pull,
        failure: Option<FailureSlot>,
    ) -> Self
    where
        S: IntoIterator<Item = I>,
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'a,
    {
        let iters: Vec<Option<I::IntoIter>> =
            iters.into_iter().map(|i| Some(i.into_iter())).collect();
        if iters.is_empty() {
            return err_flow(FlowError::Build(
                "from_enumerables/2 expects a non-empty list as argument, got: []".into(),
            ));
        }
        let r = match opts.resolve() {
            Ok(r) => r,
            Err(e) => return err_flow(e),
        };
        let idle_window = r.window_given;
        Flow {
            build: Box::new(move |tail: SinkFactory<'a, T>, cx: &Cx| {
                let producers = iters.len();
                let lanes = make_lanes(&r, producers, &tail, cx, Some(producers));
                Ok(Built {
                    node: Box::new(SourceNode::new(
                        iters,
                        lanes,
                        r.batch_size,
                        cx.max_round_events,
                        pull,
                        failure.clone(),
                    )),
                    lanes: r.stages,
                    iters: Some(producers),
                })
            }),
            shape: Shape::Fresh,
            error: None,
            idle_window,
        }
    }
}

/// Starts a flow from anything iterable, the way rayon's `into_par_iter()` starts a
/// parallel iterator: `(0..n).into_flow()` is [`Flow::from_iter`]`(0..n)`.
///
/// Implemented for every [`IntoIterator`] whose iterator and items can move to the
/// flow's threads (`Send`) and live as long as the flow (`'a`, so a flow can borrow).
///
/// ```
/// use stageflow::flow::{IntoFlow, Options};
///
/// let squares: u64 = (1..=10u64).into_flow().map(|x| x * x).sum();
/// assert_eq!(squares, 385);
///
/// let words = vec!["a", "bb", "a"];
/// let mut lens: Vec<usize> = words.iter().into_flow_with(Options::new().stages(2)).map(|w| w.len()).collect();
/// lens.sort();
/// assert_eq!(lens, [1, 1, 2]);
/// ```
pub trait IntoFlow<'a>: IntoIterator {
    /// A flow reading this iterator, with default options ([`Flow::from_iter`]).
    fn into_flow(self) -> Flow<'a, Self::Item>;

    /// A flow reading this iterator, with options ([`Flow::from_iter_with`]).
    fn into_flow_with(self, opts: Options<Self::Item>) -> Flow<'a, Self::Item>;
}

impl<'a, I> IntoFlow<'a> for I
where
    I: IntoIterator,
    I::IntoIter: Send + 'a,
    I::Item: Send + 'a,
{
    fn into_flow(self) -> Flow<'a, I::Item> {
        Flow::from_iter(self)
    }

    fn into_flow_with(self, opts: Options<I::Item>) -> Flow<'a, I::Item> {
        Flow::from_iter_with(self, opts)
    }
}
