//! [`FlowIter`]: a flow's output as an iterator, streamed as triggers fire.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use super::consume::report;
use super::exec::sinks::{RoundRobinRouter, Speaker};
use super::exec::{self, Cx, Inbox, LaneCtx, SinkFactory, Stats};
use super::{Flow, FlowError, RunReport};

/// Streams a flow's output as it is emitted; dropping it stops the flow.
///
/// ```
/// use stageflow::flow::Flow;
/// // An endless source: take what you need, the rest is never computed.
/// let firsts: Vec<u64> = Flow::from_iter(0u64..).map(|x| x * 2).into_iter().take(3).collect();
/// assert_eq!(firsts.len(), 3);
/// ```
pub struct FlowIter<'a, T> {
    node: Option<exec::BoxNode<'a>>,
    inbox: Arc<Inbox<T>>,
    buf: VecDeque<T>,
    error: Option<FlowError>,
    _cx: Cx,
}

impl<'a, T> fmt::Debug for FlowIter<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowIter")
            .field("running", &self.node.is_some())
            .field("buffered", &self.buf.len())
            .field("error", &self.error)
            .finish()
    }
}

impl<'a, T> FlowIter<'a, T> {
    /// The error that ended the flow early, if any (taken).
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let mut it = Flow::from_iter(vec![1, 2]).map(|x: i32| -> i32 { panic!("bad {x}") }).into_iter();
    /// assert_eq!(it.next(), None);
    /// assert!(it.take_error().unwrap().to_string().contains("bad 1"));
    /// ```
    pub fn take_error(&mut self) -> Option<FlowError> {
        self.error.take()
    }

    /// A report of events dropped by design so far.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// let mut it = Flow::from_iter(vec![1]).into_iter();
    /// while it.next().is_some() {}
    /// assert_eq!(it.report().late_events, 0);
    /// ```
    pub fn report(&self) -> RunReport {
        report(&self._cx)
    }
}

impl<'a, T: Send + 'a> Iterator for FlowIter<'a, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(x) = self.buf.pop_front() {
                return Some(x);
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
                    self.node = None;
                    self.error = Some(e);
                    return None;
                }
            }
        }
    }
}

impl<'a, T: Send + 'a> IntoIterator for Flow<'a, T> {
    type Item = T;
    type IntoIter = FlowIter<'a, T>;
    fn into_iter(self) -> FlowIter<'a, T> {
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
            Ok(b) => FlowIter {
                node: Some(b.node),
                inbox,
                buf: VecDeque::new(),
                error: None,
                _cx: cx,
            },
            Err(e) => FlowIter {
                node: None,
                inbox,
                buf: VecDeque::new(),
                error: Some(e),
                _cx: cx,
            },
        }
    }
}
