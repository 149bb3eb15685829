//! A stand-in for a producer and its consumers, to test a dispatcher on its own.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{PendingInfo, Subscriber};
use crate::stage::mailbox::{DispatcherOwner, Downstream, DownstreamControl};
use crate::stage::reason::{next_id, CancelReason, Tag};

/// Something a dispatcher did, as recorded by a [`Probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received<T> {
    /// Events sent to the subscription `tag`.
    Events(Tag, Vec<T>),
    /// The dispatcher asked its producer for `n` events on behalf of `tag`.
    SelfAsk(Tag, usize),
    /// The dispatcher delivered the info with this id to its producer.
    Info(u64),
}

/// Records everything a dispatcher sends, in order, so a test can check it exactly
/// (the Elixir tests check the messages the test process received).
///
/// ```
/// use stageflow::dispatcher::{DemandDispatcher, Dispatcher, Probe, Received};
/// use stageflow::SubscribeOptions;
///
/// let probe = Probe::<u32>::new();
/// let mut d = DemandDispatcher::new();
/// let sub = probe.subscriber();
/// let tag = sub.tag();
/// assert_eq!(d.subscribe(sub, &SubscribeOptions::new()).unwrap(), 0);
/// assert_eq!(d.ask(tag, 3), 3);
/// assert_eq!(d.dispatch(vec![1, 2, 3, 4]), vec![4]);
/// assert_eq!(probe.take(), vec![Received::Events(tag, vec![1, 2, 3])]);
/// ```
pub struct Probe<T> {
    log: Arc<Mutex<Vec<Received<T>>>>,
}

impl<T> std::fmt::Debug for Probe<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl<T> Clone for Probe<T> {
    fn clone(&self) -> Self {
        Probe {
            log: self.log.clone(),
        }
    }
}

impl<T: Send + 'static> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

struct ProbeConsumer<T> {
    log: Arc<Mutex<Vec<Received<T>>>>,
}

impl<T: Send> DownstreamControl for ProbeConsumer<T> {
    fn cancelled(&self, _tag: Tag, _reason: CancelReason) -> bool {
        true
    }
}

impl<T: Send> Downstream<T> for ProbeConsumer<T> {
    fn events(&self, tag: Tag, events: Vec<T>) -> bool {
        self.log.lock().push(Received::Events(tag, events));
        true
    }
}

impl<T: Send> DispatcherOwner for ProbeConsumer<T> {
    fn self_ask(&self, tag: Tag, n: usize) {
        self.log.lock().push(Received::SelfAsk(tag, n));
    }
    fn release_info(&self, id: u64) {
        self.log.lock().push(Received::Info(id));
    }
}

impl<T: Send + 'static> Probe<T> {
    /// An empty probe.
    pub fn new() -> Self {
        Probe {
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn endpoint(&self) -> Arc<ProbeConsumer<T>> {
        Arc::new(ProbeConsumer {
            log: self.log.clone(),
        })
    }

    /// A new subscriber with a fresh tag and a fresh consumer identity.
    pub fn subscriber(&self) -> Subscriber<T> {
        self.subscriber_for(next_id())
    }

    /// A new subscription (fresh tag) of the consumer `consumer_id`: two subscribers
    /// with the same id stand for one consumer subscribing twice.
    pub fn subscriber_for(&self, consumer_id: u64) -> Subscriber<T> {
        let e = self.endpoint();
        Subscriber {
            tag: Tag::new(),
            consumer_id,
            consumer: e.clone(),
            owner: e,
        }
    }

    /// An info to hand to `Dispatcher::info`; its delivery shows up as
    /// [`Received::Info`] with the returned info's id.
    pub fn info(&self) -> PendingInfo {
        PendingInfo {
            id: next_id(),
            owner: self.endpoint(),
        }
    }

    /// Everything recorded since the last call, in order.
    pub fn take(&self) -> Vec<Received<T>> {
        std::mem::take(&mut *self.log.lock())
    }
}
