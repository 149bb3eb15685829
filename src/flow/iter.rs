//! A flow's output as an iterator, streamed as triggers fire: [`FlowIter`] (plain
//! events; a failure is raised as `collect` raises it) and [`FlowTryIter`] (every item a
//! `Result`, as a stage's `stream()` yields them).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::consume::report;
use super::exec::sinks::{RoundRobinRouter, Speaker};
use super::exec::{self, Cx, Inbox, LaneCtx, SinkFactory, Stats};
use super::{Flow, FlowError, RunReport};

/// Streams a flow's output as it is emitted; dropping it stops the flow.
///
/// A failure ends the iteration the way it ends [`Flow::collect`]: a panic of a user
/// closure is re-raised with its own payload, another error panics with its message.
/// To get failures as values, iterate over [`Flow::try_iter`] instead.
///
/// ```
/// use stageflow::flow::Flow;
/// // An endless source: take what you need, the rest is never computed.
/// let firsts: Vec<u64> = Flow::from_iter(0u64..).map(|x| x * 2).into_iter().take(3).collect();
/// assert_eq!(firsts.len(), 3);
/// ```
pub struct FlowIter<'a, T> {
    inner: FlowTryIter<'a, T>,
}

impl<'a, T> fmt::Debug for FlowIter<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowIter")
            .field("running", &self.inner.node.is_some())
            .field("buffered", &self.inner.buf.len())
            .finish()
    }
}

impl<'a, T> FlowIter<'a, T> {
    /// A report of events dropped by design so far.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let mut it = Flow::from_iter(vec![1]).into_iter();
    /// while it.next().is_some() {}
    /// assert_eq!(it.report().late_events, 0);
    /// ```
    pub fn report(&self) -> RunReport {
        self.inner.report()
    }
}

impl<'a, T: Send + 'a> Iterator for FlowIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self.inner.next()? {
            Ok(x) => Some(x),
            Err(e) => e.raise(),
        }
    }
}

/// Streams a flow's output as `Ok` events; a failure is the last item, as `Err`
/// (what [`Flow::try_iter`] returns). Dropping it stops the flow.
///
/// ```
/// use stageflow::flow::{Flow, FlowError};
/// let items: Vec<Result<i32, FlowError>> = Flow::from_iter(vec![1, 2])
///     .map(|x: i32| -> i32 { panic!("bad {x}") })
///     .try_iter()
///     .collect();
/// assert_eq!(items.len(), 1);
/// assert!(matches!(&items[0], Err(FlowError::Panic { message, .. }) if message == "bad 1"));
/// ```
pub struct FlowTryIter<'a, T> {
    node: Option<exec::BoxNode<'a>>,
    inbox: Arc<Inbox<T>>,
    buf: VecDeque<T>,
    error: Option<FlowError>,
    _cx: Cx,
}

impl<'a, T> fmt::Debug for FlowTryIter<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTryIter")
            .field("running", &self.node.is_some())
            .field("buffered", &self.buf.len())
            .field("error", &self.error)
            .finish()
    }
}

impl<'a, T> FlowTryIter<'a, T> {
    /// A report of events dropped by design so far.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let mut it = Flow::from_iter(vec![1]).try_iter();
    /// while it.next().is_some() {}
    /// assert_eq!(it.report().late_events, 0);
    /// ```
    pub fn report(&self) -> RunReport {
        report(&self._cx)
    }
}

impl<'a, T: Send + 'a> Iterator for FlowTryIter<'a, T> {
    type Item = Result<T, FlowError>;
    fn next(&mut self) -> Option<Result<T, FlowError>> {
        loop {
            if let Some(x) = self.buf.pop_front() {
                return Some(Ok(x));
            }
            // A build error, or the failure that stopped the flow: once, last.
            if let Some(e) = self.error.take() {
                return Some(Err(e));
            }
            let node = self.node.as_mut()?;
            match exec::round(node) {
                Ok(done) => {
                    if done {
                        self.node = None;
                    }
                    for env in self.inbox.take().into_iter().flatten() {
                        if let exec::Msg::Batch(v) = env.msg {
                            self.buf.extend(v);
                        }
                    }
                }
                Err(e) => {
                    // What the failed round emitted stays in the inbox: it may be
                    // partial, so it is not delivered.
                    self.node = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl<'a, T: Send + 'a> Flow<'a, T> {
    /// Streams the output as [`FlowIter`] does, with every item a `Result`: the events
    /// as `Ok`, then, if the flow fails, its error as the last item (as a stage's
    /// `stream()` yields them). The plain iterator (`for x in flow`) raises the
    /// failure instead, as [`Flow::collect`] does.
    ///
    /// ```
    /// use stageflow::flow::{Flow, FlowError};
    /// let v: Result<Vec<u32>, FlowError> = Flow::from_iter(1..=3u32).map(|x| x * 2).try_iter().collect();
    /// assert_eq!(v?, [2, 4, 6]);
    /// # Ok::<(), FlowError>(())
    /// ```
    pub fn try_iter(self) -> FlowTryIter<'a, T> {
        let inbox = Inbox::<T>::new(1);
        let cx = Cx {
            stats: Arc::new(Stats::default()),
            max_round_events: exec::MAX_ROUND_EVENTS,
        };
        let i = inbox.clone();
        let sink: SinkFactory<'a, T> = Arc::new(move |lcx: &LaneCtx| {
            Box::new(RoundRobinRouter {
                inbox: i.clone(),
                speaker: Speaker::new(lcx, 0, false),
                seq: 0,
            })
        });
        match self.start(sink, &cx) {
            Ok(b) => FlowTryIter {
                node: Some(b.node),
                inbox,
                buf: VecDeque::new(),
                error: None,
                _cx: cx,
            },
            Err(e) => FlowTryIter {
                node: None,
                inbox,
                buf: VecDeque::new(),
                error: Some(e),
                _cx: cx,
            },
        }
    }
}

impl<'a, T: Send + 'a> IntoIterator for Flow<'a, T> {
    type Item = T;
    type IntoIter = FlowIter<'a, T>;
    fn into_iter(self) -> FlowIter<'a, T> {
        FlowIter {
            inner: self.try_iter(),
        }
    }
}
