//! The subscription protocol by hand: a consumer end that is not a stage, for tests and
//! protocol-level tools.
//!
//! GenStage's own tests drive stages with raw `$gen_producer`/`$gen_consumer` messages
//! sent from the test process: subscribing without asking, asking exact amounts,
//! reusing a subscription tag, sending events for a tag the consumer does not know.
//! [`RawConsumer`] and [`send_events`] are the same powers over stageflow's typed
//! mailboxes. Ordinary programs use [`StageRef::subscribe`] and consumers instead.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::handle::{Source, SourceRef, StageRef};
use super::mailbox::{DownGuard, Downstream, DownstreamControl, Mail, SubscribeMsg};
use super::reason::{next_id, CancelReason, Tag};
use super::subscription::{SubscribeOptions, SubscriptionRef};
use super::Stage;

/// What a producer sent a [`RawConsumer`] (GenStage's `$gen_consumer` messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawMessage<T> {
    /// Events for the subscription `tag`.
    Events(Tag, Vec<T>),
    /// The subscription `tag` was cancelled (confirmed, refused, or the producer exited).
    Cancel(Tag, CancelReason),
}

/// A consumer end outside any stage, for [`RawConsumer`] and
/// [`StageStream`](super::StageStream): what producers send arrives on a channel,
/// unbounded because every producer sends at most what was asked.
pub(crate) struct RawInbox<T> {
    tx: Sender<RawMessage<T>>,
}

impl<T: Send + 'static> RawInbox<T> {
    /// An inbox and the receiving end of its channel.
    pub(crate) fn channel() -> (Arc<Self>, Receiver<RawMessage<T>>) {
        let (tx, rx) = unbounded();
        (Arc::new(RawInbox { tx }), rx)
    }

    /// Sends `source` the subscribe message of subscription `tag`, whose events and
    /// cancel come to this inbox. A producer that is not alive hands the message back
    /// (its guard would report the producer's exit to this inbox when dropped).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        consumer_id: u64,
        source: &SourceRef<T>,
        tag: Tag,
        opts: SubscribeOptions<T>,
    ) -> Result<(), Box<SubscribeMsg<T>>> {
        let msg = Box::new(SubscribeMsg {
            tag,
            consumer_id,
            consumer: self.clone(),
            opts,
            current: None,
            guard: DownGuard::new(tag, self.clone(), source.shared.clone()),
        });
        source.upstream.subscribe(msg)
    }
}

impl<T: Send> DownstreamControl for RawInbox<T> {
    fn cancelled(&self, tag: Tag, reason: CancelReason) -> bool {
        self.tx.send(RawMessage::Cancel(tag, reason)).is_ok()
    }
}

impl<T: Send> Downstream<T> for RawInbox<T> {
    fn events(&self, tag: Tag, events: Vec<T>) -> bool {
        self.tx.send(RawMessage::Events(tag, events)).is_ok()
    }
}

/// A consumer end driven by hand: it subscribes with the tag you choose and never asks
/// by itself; ask and cancel through the returned [`SubscriptionRef`], and read what
/// the producer sent with [`recv_timeout`](RawConsumer::recv_timeout).
///
/// ```
/// use std::time::Duration;
/// use stageflow::prelude::*;
/// use stageflow::stage::raw::{RawConsumer, RawMessage};
///
/// let producer = from_iter(0..10u32, FromIterOptions::new())?;
/// let raw = RawConsumer::new();
/// let tag = Tag::new();
/// let sub = raw.subscribe(&producer, tag, SubscribeOptions::new());
/// sub.ask(3);
/// assert_eq!(
///     raw.recv_timeout(Duration::from_secs(5)),
///     Some(RawMessage::Events(tag, vec![0, 1, 2]))
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawConsumer<T> {
    id: u64,
    inbox: Arc<RawInbox<T>>,
    rx: Receiver<RawMessage<T>>,
}

impl<T> fmt::Debug for RawConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawConsumer(#{})", self.id)
    }
}

impl<T: Send + 'static> Default for RawConsumer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> RawConsumer<T> {
    /// A consumer end with an empty inbox and a fresh consumer identity.
    pub fn new() -> Self {
        let (inbox, rx) = RawInbox::channel();
        RawConsumer {
            id: next_id(),
            inbox,
            rx,
        }
    }

    /// Sends `producer` a subscribe message for `tag` (GenStage's `{:subscribe, nil,
    /// opts}`) and asks for nothing. The same tag may be sent twice, to see how a
    /// producer treats a duplicated subscription. If the producer is not alive, the
    /// inbox receives a `Cancel(tag, Down(NoProc))`.
    pub fn subscribe(
        &self,
        producer: &impl Source<T>,
        tag: Tag,
        opts: SubscribeOptions<T>,
    ) -> SubscriptionRef {
        let source = producer.source();
        // A dead producer drops the message; its guard reports it to our inbox.
        if let Err(mut msg) = self.inbox.subscribe(self.id, &source, tag, opts) {
            msg.guard.never_delivered();
        }
        self.address(producer, tag)
    }

    /// The address of subscription `tag` at `producer`, whether or not it exists: asks
    /// and cancels sent through it reach the producer as they are.
    pub fn address(&self, producer: &impl Source<T>, tag: Tag) -> SubscriptionRef {
        SubscriptionRef {
            tag,
            producer: producer.source().upstream.control(),
        }
    }

    /// The next message, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<RawMessage<T>> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next message if one has arrived.
    pub fn try_recv(&self) -> Option<RawMessage<T>> {
        self.rx.try_recv().ok()
    }
}

/// Sends `events` to `consumer` as if a producer had, for the subscription `tag`
/// (GenStage's `{:"$gen_consumer", {pid, tag}, events}`), whether or not the consumer
/// knows that tag. Returns false when the consumer is not alive.
///
/// ```
/// use stageflow::prelude::*;
/// use stageflow::stage::raw::send_events;
///
/// struct Sink;
/// impl Stage for Sink { type In = u8; type Out = Never; }
/// impl Consumer for Sink {
///     fn handle_events(&mut self, _: Vec<u8>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
/// }
/// let sink = start_consumer(Sink, ConsumerOptions::new().log(stageflow::log::LogSink::silent()))?;
/// // Events of a subscription the consumer never made are refused (and logged).
/// assert!(send_events(&sink, Tag::new(), vec![1, 2, 3]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_events<S: Stage>(consumer: &StageRef<S>, tag: Tag, events: Vec<S::In>) -> bool {
    consumer.mailbox.send(Mail::Events { tag, events })
}
