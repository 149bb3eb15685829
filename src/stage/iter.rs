//! Bridges between stages and iterators: [`from_iter`] turns any iterator into a
//! producer, [`stream`] consumes producers as a blocking iterator.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::error::{OptionsError, StartError};

use super::dispatcher::Dispatcher;
use super::handle::{Source, SourceRef, StageRef};
use super::options::ProducerOptions;
use super::raw::{RawInbox, RawMessage};
use super::reason::{next_id, CancelReason, Reason, Tag};
use super::subscription::{CancelMode, DemandState, SubscribeOptions, SubscriptionRef};
use super::{Context, DemandMode, HandleInfo, Kind, Never, Peer, Producer, Stage};
use super::{Demand, SubscriptionInfo};

/// What a [`from_iter`] producer does when its consumers cancel.
///
/// ```
/// assert_eq!(stageflow::OnCancel::default(), stageflow::OnCancel::Continue);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum OnCancel {
    /// Keep running (GenStage's default).
    #[default]
    Continue,
    /// Stop normally when the last subscribed consumer cancels (never triggers if
    /// nobody subscribed).
    Stop,
}

/// Options of [`from_iter`]: GenStage's `from_enumerable` options.
///
/// ```
/// use stageflow::{DemandMode, FromIterOptions, OnCancel};
/// let o = FromIterOptions::<u8>::new().on_cancel(OnCancel::Stop).demand(DemandMode::Accumulate);
/// # let _ = o;
/// ```
pub struct FromIterOptions<T> {
    producer: ProducerOptions<T>,
    on_cancel: OnCancel,
}

impl<T> std::fmt::Debug for FromIterOptions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromIterOptions")
            .field("producer", &self.producer)
            .field("on_cancel", &self.on_cancel)
            .finish()
    }
}

impl<T: Send + 'static> Default for FromIterOptions<T> {
    fn default() -> Self {
        FromIterOptions {
            producer: ProducerOptions::new(),
            on_cancel: OnCancel::Continue,
        }
    }
}

impl<T: Send + 'static> FromIterOptions<T> {
    /// The defaults: continue on cancel, forward demand, demand dispatcher.
    pub fn new() -> Self {
        Self::default()
    }
    /// What to do when consumers cancel (default [`OnCancel::Continue`]).
    pub fn on_cancel(mut self, mode: OnCancel) -> Self {
        self.on_cancel = mode;
        self
    }
    /// Initial demand mode (default forward).
    pub fn demand(mut self, mode: DemandMode) -> Self {
        self.producer = self.producer.demand(mode);
        self
    }
    /// The dispatcher (default demand dispatcher).
    pub fn dispatcher(mut self, d: impl Dispatcher<T>) -> Self {
        self.producer = self.producer.dispatcher(d);
        self
    }
    /// The stage's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.producer = self.producer.name(name);
        self
    }
    /// Where the stage's log lines go (default: the `log` facade, see
    /// [`LogSink`](super::log::LogSink)).
    pub fn log(mut self, sink: super::log::LogSink) -> Self {
        self.producer = self.producer.log(sink);
        self
    }
    pub(crate) fn into_parts(self) -> (ProducerOptions<T>, OnCancel) {
        (self.producer, self.on_cancel)
    }
    pub(crate) fn from_parts(producer: ProducerOptions<T>, on_cancel: OnCancel) -> Self {
        FromIterOptions {
            producer,
            on_cancel,
        }
    }
}

/// The producer behind [`from_iter`]: pulls exactly the demanded number of items.
pub struct IterProducer<I> {
    iter: Option<I>,
    on_cancel: OnCancel,
    consumers: usize,
}

impl<I> std::fmt::Debug for IterProducer<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IterProducer")
            .field("exhausted", &self.iter.is_none())
            .field("on_cancel", &self.on_cancel)
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

/// The message an [`IterProducer`] sends itself when its iterator is exhausted, so
/// that it stops only after the events buffered before it were dispatched.
#[derive(Debug)]
pub struct IterExhausted;

impl<I> Stage for IterProducer<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type In = Never;
    type Out = I::Item;

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        _info: &SubscriptionInfo,
        _from: &SubscriptionRef,
        _ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if peer == Peer::Consumer {
            self.consumers += 1;
        }
        Ok(Demand::Automatic)
    }

    fn handle_cancel(&mut self, _: CancelReason, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        self.consumers = self.consumers.saturating_sub(1);
        if self.on_cancel == OnCancel::Stop && self.consumers == 0 {
            ctx.stop(Reason::Normal);
        }
    }
}

impl<I> Producer for IterProducer<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        let Some(iter) = &mut self.iter else {
            return;
        };
        let mut ended = false;
        for _ in 0..demand {
            match iter.next() {
                Some(item) => ctx.emit(item),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        // An exact iterator (range, vec) tells us it is done without another pull.
        if ended || iter.size_hint().1 == Some(0) {
            self.iter = None;
            let _ = ctx.myself().async_info(IterExhausted);
        }
    }
}

impl<I> HandleInfo<IterExhausted> for IterProducer<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    fn handle_info(&mut self, _: IterExhausted, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// Starts a producer over `iter` (GenStage's `from_enumerable`). Each demand of `n`
/// pulls `n` items; when the iterator ends, the producer stops with
/// [`Reason::Normal`] after its last events were dispatched, so permanent and
/// transient consumers finish too. A blocking iterator blocks the stage until the
/// batch is full (as in GenStage).
///
/// The producer ends only from `handle_demand`: over an empty iterator it waits for
/// the first demand, then ends, and a stream over it is empty. Once it has ended,
/// stages that subscribe to it get [`SubscribeError::NoProc`](crate::SubscribeError).
/// So with several consumers, or short inputs, wire them all before demand flows:
/// start it through a [`Topology`](crate::Topology), which holds demand back until
/// every subscription is made (or start it with [`DemandMode::Accumulate`] and
/// switch it to forward yourself).
///
/// ```
/// use stageflow::prelude::*;
/// let p = from_iter(vec!["a", "b", "c"].into_iter(), FromIterOptions::new())?;
/// let got: Vec<&str> = stream(&p).collect::<Result<_, _>>()?;
/// assert_eq!(got, vec!["a", "b", "c"]);
/// assert_eq!(p.join(), Reason::Normal);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn from_iter<I>(
    iter: I,
    options: FromIterOptions<I::Item>,
) -> Result<StageRef<IterProducer<I::IntoIter>>, StartError>
where
    I: IntoIterator,
    I::IntoIter: Send + 'static,
    I::Item: Send + 'static,
{
    let stage = IterProducer {
        iter: Some(iter.into_iter()),
        on_cancel: options.on_cancel,
        consumers: 0,
    };
    super::start_producer(stage, options.producer)
}

/// A permanent or transient subscription of a [`StageStream`] ended abnormally.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a stream subscription ended: {reason}")]
pub struct StreamError {
    /// The producer's exit or cancel reason.
    pub reason: Reason,
}

struct StreamSub {
    from: SubscriptionRef,
    cancel: CancelMode,
    demand: DemandState,
}

/// Producers consumed as a blocking iterator, in the calling thread (GenStage's
/// `stream/2`). Nothing happens until the first `next()`; then it subscribes to every
/// producer (switching producers in accumulate mode to forward) and asks
/// `max_demand`. Events come batch by batch, by the same rule as a consumer's, and the
/// ask for a batch is sent only when iteration moves past it, so a slow loop slows the
/// producers.
///
/// Each item is `Ok(event)`, or one `Err` when a permanent or transient subscription
/// ends abnormally. A normal end (a finite source ran out) just ends that
/// subscription — also for permanent ones, where GenStage would exit the caller with
/// `:normal`; for an iterator, the end of a source is the end of its items. Likewise a
/// stream over a stage that has already exited normally is empty, and one over a
/// stage that failed yields its exit reason (GenStage exits with `:noproc` in both
/// cases). The iterator ends when no subscription remains.
///
/// Events are handed over ahead of iteration: each subscription asks for
/// `max_demand` events at once, and what the producers delivered belongs to the
/// stream. Dropping the stream cancels its subscriptions and **drops the events
/// delivered but not yet yielded** (up to `max_demand` per subscription): they do not
/// go back to the producer, so a later stream over the same producer starts after
/// them. To stop early without losing them, call [`cancel`](Self::cancel), which
/// returns them.
pub struct StageStream<T: Send + 'static> {
    pending: Vec<(SourceRef<T>, SubscribeOptions<T>)>,
    rx: Receiver<RawMessage<T>>,
    inbox: Arc<RawInbox<T>>,
    id: u64,
    subs: HashMap<Tag, StreamSub>,
    batch: std::vec::IntoIter<T>,
    ask_after_batch: Option<(Tag, usize)>,
    incoming: Option<(Tag, Vec<T>)>,
    error: Option<StreamError>,
    done: bool,
    /// Switch producers in accumulate mode to forward when subscribing (not when a
    /// [`Topology`](crate::Topology) does it once everything is wired).
    forward_on_start: bool,
}

impl<T: Send + 'static> fmt::Debug for StageStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageStream")
            .field("subscriptions", &self.subs.len())
            .field("done", &self.done)
            .finish()
    }
}

/// Consumes `producer` with the default subscription options as a blocking iterator.
/// See [`StageStream`]: dropping the stream early drops the events already delivered
/// to it (up to `max_demand`, 1000 by default); [`StageStream::cancel`] returns them.
///
/// ```
/// use stageflow::prelude::*;
/// let p = from_iter(0..1_000_000u64, FromIterOptions::new())?;
/// let first: Vec<u64> = stream(&p).take(10).collect::<Result<_, _>>()?;
/// assert_eq!(first, (0..10).collect::<Vec<_>>());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stream<T: Send + 'static>(producer: &impl Source<T>) -> StageStream<T> {
    StageStream::new()
        .subscribe(producer, SubscribeOptions::new())
        .expect("default subscription options are valid")
}

impl<T: Send + 'static> Default for StageStream<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> StageStream<T> {
    /// A stream with no subscriptions yet.
    pub fn new() -> Self {
        let (inbox, rx) = RawInbox::channel();
        StageStream {
            pending: Vec::new(),
            rx,
            inbox,
            id: next_id(),
            subs: HashMap::new(),
            batch: Vec::new().into_iter(),
            ask_after_batch: None,
            incoming: None,
            error: None,
            done: false,
            forward_on_start: true,
        }
    }

    /// Adds a producer to consume, with these options (checked now: GenStage raises
    /// "invalid options for ... producer").
    ///
    /// ```
    /// use stageflow::prelude::*;
    /// use stageflow::StageStream;
    /// let p = from_iter(0..3u8, FromIterOptions::new())?;
    /// let err = StageStream::new().subscribe(&p, SubscribeOptions::new().max_demand(0)).unwrap_err();
    /// assert!(err.to_string().starts_with("invalid options for producer"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn subscribe(
        mut self,
        producer: &impl Source<T>,
        opts: SubscribeOptions<T>,
    ) -> Result<Self, OptionsError> {
        let source = producer.source();
        if let Err(e) = opts.validate() {
            return Err(OptionsError::new(format!(
                "invalid options for producer #{} ({e})",
                source.id
            )));
        }
        if source.kind == Kind::Consumer {
            return Err(OptionsError::new(format!(
                "invalid options for producer #{} (it is a consumer)",
                source.id
            )));
        }
        self.pending.push((source, opts));
        Ok(self)
    }

    fn start(&mut self) {
        for (source, opts) in std::mem::take(&mut self.pending) {
            let tag = Tag::new();
            let (max, min) = opts.validate().expect("validated in subscribe");
            let from = SubscriptionRef {
                tag,
                producer: source.upstream.clone().control(),
            };
            self.subs.insert(
                tag,
                StreamSub {
                    from: from.clone(),
                    cancel: opts.cancel,
                    demand: DemandState::new(max, min),
                },
            );
            let info = opts.info(tag).expect("validated in subscribe");
            // Known to snapshots of the topology from now on, before the producer
            // could end it (it ends it in its log).
            let log = &source.shared.subscriptions;
            log.subscribed(source.id, self.id, &info);
            if let Err(mut msg) = self.inbox.subscribe(self.id, &source, tag, opts) {
                // The producer has already exited. One that ran out normally has
                // nothing more to give: the subscription just ends (GenStage would
                // exit with `noproc`). Any other exit is reported with its reason.
                msg.guard.defuse();
                log.forget(tag);
                let sub = self.subs.remove(&tag).expect("inserted above");
                let reason = source.exit_reason().unwrap_or(Reason::NoProc);
                if !reason.is_normal() && sub.cancel.stops_on(&reason) && self.error.is_none() {
                    self.error = Some(StreamError { reason });
                }
                continue;
            }
            from.producer.ask(tag, max);
            if source.kind == Kind::Producer && self.forward_on_start {
                source.forward();
            }
        }
    }

    /// Subscribes now instead of at the first `next()`, leaving producers' demand
    /// mode alone (for [`Topology`](crate::Topology), which releases them later).
    pub(crate) fn connect_held(&mut self) {
        self.forward_on_start = false;
        if !self.pending.is_empty() {
            self.start();
        }
    }

    /// Cancels every subscription and hands back, in order, the events that were
    /// delivered to this stream and not yet yielded: what is left of the current
    /// batch, then everything the producers sent before they confirmed the cancel.
    /// Nothing a producer delivered is lost this way (dropping the stream loses them).
    ///
    /// It waits for each producer's confirmation, as GenStage's stream does when
    /// halted: a producer stuck in a callback delays it until the callback returns.
    ///
    /// ```
    /// use stageflow::prelude::*;
    /// let p = from_iter(0..1_000u64, FromIterOptions::new())?;
    /// let mut s = stream(&p);
    /// let first: Vec<u64> = s.by_ref().take(10).collect::<Result<_, _>>()?;
    /// let rest = s.cancel();
    /// // The first ask was for 1000 events: they were all delivered, and come back.
    /// assert_eq!(first.len() + rest.len(), 1_000);
    /// assert_eq!(rest[0], 10);
    /// // A new stream goes on where the delivered events end.
    /// let next: Vec<u64> = stream(&p).collect::<Result<_, _>>()?;
    /// assert!(next.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel(mut self) -> Vec<T> {
        let mut left: Vec<T> = self.batch.by_ref().collect();
        if let Some((_, events)) = self.incoming.take() {
            left.extend(events);
        }
        self.ask_after_batch = None;
        self.pending.clear();
        self.done = true;
        let mut open: HashMap<Tag, StreamSub> = std::mem::take(&mut self.subs);
        for (tag, sub) in &open {
            sub.from.producer.cancel(*tag, Reason::Normal);
        }
        // Per producer, its events arrive before its answer to the cancel (or before
        // the notice of its exit): so everything it delivered is read here.
        while !open.is_empty() {
            match self.rx.recv() {
                Ok(RawMessage::Events(tag, events)) => {
                    if open.contains_key(&tag) {
                        left.extend(events);
                    }
                }
                Ok(RawMessage::Cancel(tag, _)) => {
                    open.remove(&tag);
                }
                Err(_) => break,
            }
        }
        left
    }

    fn cancel_all(&mut self) {
        for (tag, sub) in self.subs.drain() {
            sub.from.producer.cancel(tag, Reason::Normal);
        }
    }
}

impl<T: Send + 'static> Iterator for StageStream<T> {
    type Item = Result<T, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.batch.next() {
                return Some(Ok(x));
            }
            if let Some((tag, n)) = self.ask_after_batch.take() {
                if let Some(sub) = self.subs.get(&tag) {
                    sub.from.producer.ask(tag, n);
                }
            }
            if let Some(e) = self.error.take() {
                self.done = true;
                self.cancel_all();
                return Some(Err(e));
            }
            if self.done {
                return None;
            }
            if let Some((tag, mut events)) = self.incoming.take() {
                if let Some(sub) = self.subs.get_mut(&tag) {
                    let (plan, _excess) = sub.demand.next_batch(events.len());
                    let rest = events.split_off(plan.len);
                    if !rest.is_empty() {
                        self.incoming = Some((tag, rest));
                    }
                    if plan.ask > 0 {
                        self.ask_after_batch = Some((tag, plan.ask));
                    }
                    self.batch = events.into_iter();
                }
                continue;
            }
            if !self.pending.is_empty() {
                self.start();
                // A producer found dead may have left an error to report.
                continue;
            }
            if self.subs.is_empty() {
                self.done = true;
                return None;
            }
            match self.rx.recv() {
                Ok(RawMessage::Events(tag, events)) => {
                    if self.subs.contains_key(&tag) && !events.is_empty() {
                        self.incoming = Some((tag, events));
                    }
                }
                Ok(RawMessage::Cancel(tag, reason)) => {
                    if let Some(sub) = self.subs.remove(&tag) {
                        let r = reason.reason();
                        if !r.is_normal() && sub.cancel.stops_on(r) {
                            self.error = Some(StreamError { reason: r.clone() });
                        }
                    }
                }
                // We hold a sender ourselves, so this cannot happen; end cleanly.
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl<T: Send + 'static> Drop for StageStream<T> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}
