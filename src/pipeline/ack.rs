//! Acknowledgements: a message remembers where it came from, and the end of the
//! pipeline tells its source once the message is done (Broadway's model).
//!
//! A source that needs to know when its messages are safe (a broker that redelivers
//! what nobody acknowledged, a queue that must not forget a record before it is
//! stored) wraps each event in a [`Message`] carrying an [`AckRef`]: a shared
//! [`Acknowledger`] and the message's [`AckId`]. Stages in between transform
//! `message.data` and pass the message on (a [`Batcher`](super::Batcher) batches
//! messages like any event). The sink, after its commit, acknowledges the whole batch
//! at once through [`Acks`], which groups the batch by acknowledger: one
//! [`Acknowledger::ack`] call per source per batch, never one per event.
//!
//! A message that failed and will not be retried by this pipeline is acknowledged as
//! failed, with its error; the acknowledger decides what that means (redeliver it,
//! move it to a dead-letter queue, count it). A message nobody acknowledges stays
//! in flight: [`InFlight`] counts those, so a drain can wait for them and report the
//! ones left.
//!
//! ```
//! use std::sync::Arc;
//! use parking_lot::Mutex;
//! use stageflow::pipeline::{AckId, AckRef, Acknowledger, Acks, Failure, Message};
//!
//! // An acknowledger that remembers what it was told.
//! #[derive(Debug, Default)]
//! struct Log(Mutex<Vec<String>>);
//! impl Acknowledger for Log {
//!     fn ack(&self, successful: &[AckId], failed: &[Failure]) {
//!         self.0.lock().push(format!("ok {successful:?} failed {failed:?}"));
//!     }
//! }
//!
//! let log = Arc::new(Log::default());
//! let batch: Vec<Message<&str>> = (1..=3)
//!     .map(|i| Message::new(["a", "bad", "c"][i - 1], AckRef::new(log.clone(), AckId(i as u128))))
//!     .collect();
//!
//! // The sink stored the good ones; the bad one failed for good.
//! let mut acks = Acks::new();
//! for message in &batch {
//!     match message.data {
//!         "bad" => acks.failed(message, "no such field"),
//!         _ => acks.successful(message),
//!     }
//! }
//! assert_eq!(acks.send(), 3);
//! assert_eq!(
//!     log.0.lock().as_slice(),
//!     [r#"ok [AckId(1), AckId(3)] failed [Failure { id: AckId(2), error: "no such field" }]"#],
//! );
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::batcher::Batch;

/// Identifies one message for its [`Acknowledger`]. What the number means is the
/// acknowledger's business: a sequence number, a broker's delivery tag, or a Redis
/// stream entry id packed as `milliseconds << 64 | sequence`. An acknowledger whose
/// broker names messages by longer handles keeps a table from these ids to them.
///
/// ```
/// use stageflow::pipeline::AckId;
/// let id = AckId(1_700_000_000_000u128 << 64 | 3);
/// assert_eq!(id.0 >> 64, 1_700_000_000_000);
/// assert_eq!(id.0 as u64, 3);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AckId(pub u128);

/// A message that failed, with its error, as its acknowledger receives it.
///
/// ```
/// use stageflow::pipeline::{AckId, Failure};
/// let f = Failure { id: AckId(7), error: "missing field `line`".into() };
/// assert_eq!(f.to_string(), "message 7 failed: missing field `line`");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The message.
    pub id: AckId,
    /// Why it failed, as text: it may be stored with the message (in a dead-letter
    /// queue, say), so it must outlive the error value.
    pub error: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message {} failed: {}", self.id.0, self.error)
    }
}

/// The source side of acknowledgements: told which of its messages are done.
///
/// Called from whichever thread finished the messages (usually the sink's), once per
/// batch with every message of that batch that came from this acknowledger, so an
/// implementation may do one round trip per call (one `XACK` with many ids, say).
/// It must not block for long: the sink waits for it.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use stageflow::pipeline::{AckId, Acknowledger, Failure};
/// #[derive(Debug, Default)]
/// struct Count { ok: AtomicU64, failed: AtomicU64 }
/// impl Acknowledger for Count {
///     fn ack(&self, successful: &[AckId], failed: &[Failure]) {
///         self.ok.fetch_add(successful.len() as u64, Ordering::Relaxed);
///         self.failed.fetch_add(failed.len() as u64, Ordering::Relaxed);
///     }
/// }
/// let count = Count::default();
/// count.ack(&[AckId(1), AckId(2)], &[]);
/// assert_eq!(count.ok.load(Ordering::Relaxed), 2);
/// ```
pub trait Acknowledger: Send + Sync + fmt::Debug + 'static {
    /// `successful` were committed by the end of the pipeline; `failed` were not
    /// and this pipeline gives up on them.
    fn ack(&self, successful: &[AckId], failed: &[Failure]);

    /// The count of messages handed out and not acknowledged yet, if this
    /// acknowledger keeps one (the default says it does not). A drain waits for it
    /// to reach zero and reports what is left.
    fn in_flight(&self) -> Option<&InFlight> {
        None
    }
}

/// Where a message came from: its acknowledger and its id there.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{AckId, AckRef, InMemoryAcks};
/// let acks = Arc::new(InMemoryAcks::new());
/// let r = AckRef::new(acks.clone(), AckId(5));
/// assert_eq!(r.id(), AckId(5));
/// ```
#[derive(Clone)]
pub struct AckRef {
    acker: Arc<dyn Acknowledger>,
    id: AckId,
}

impl fmt::Debug for AckRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckRef")
            .field("acker", &self.acker)
            .field("id", &self.id)
            .finish()
    }
}

impl AckRef {
    /// Message `id` of `acker`.
    pub fn new(acker: Arc<dyn Acknowledger>, id: AckId) -> Self {
        AckRef { acker, id }
    }

    /// The message's id at its acknowledger.
    pub fn id(&self) -> AckId {
        self.id
    }

    /// The acknowledger.
    pub fn acknowledger(&self) -> &Arc<dyn Acknowledger> {
        &self.acker
    }

    fn same_acker(&self, other: &Arc<dyn Acknowledger>) -> bool {
        // Compare the data pointers only: the same object may be reached through
        // different vtable pointers.
        std::ptr::eq(
            Arc::as_ptr(&self.acker) as *const (),
            Arc::as_ptr(other) as *const (),
        )
    }
}

/// An event with the [`AckRef`] of where it came from (or none, for events of a
/// source that needs no acknowledgement).
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{AckId, AckRef, InMemoryAcks, Message};
/// let acks = Arc::new(InMemoryAcks::new());
/// let m = Message::new("42", AckRef::new(acks, AckId(1)));
/// let parsed = m.map(|s| s.parse::<u32>().unwrap());
/// assert_eq!(parsed.data, 42);
/// assert_eq!(parsed.ack_ref().unwrap().id(), AckId(1));
/// assert!(Message::unacked(1).ack_ref().is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Message<T> {
    /// The event.
    pub data: T,
    ack: Option<AckRef>,
}

impl<T> Message<T> {
    /// `data`, to be acknowledged through `ack`.
    pub fn new(data: T, ack: AckRef) -> Self {
        Message {
            data,
            ack: Some(ack),
        }
    }

    /// `data` that needs no acknowledgement: acknowledging it does nothing.
    pub fn unacked(data: T) -> Self {
        Message { data, ack: None }
    }

    /// Where the message came from, if anywhere.
    pub fn ack_ref(&self) -> Option<&AckRef> {
        self.ack.as_ref()
    }

    /// The same message with its data transformed: the acknowledgement follows.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Message<U> {
        Message {
            data: f(self.data),
            ack: self.ack,
        }
    }

    /// The data and the acknowledgement reference, apart.
    pub fn into_parts(self) -> (T, Option<AckRef>) {
        (self.data, self.ack)
    }

    /// A message from its parts.
    pub fn from_parts(data: T, ack: Option<AckRef>) -> Self {
        Message { data, ack }
    }
}

struct Group {
    acker: Arc<dyn Acknowledger>,
    successful: Vec<AckId>,
    failed: Vec<Failure>,
}

/// The acknowledgements of one batch, grouped by acknowledger; [`send`](Self::send)
/// makes one [`Acknowledger::ack`] call per acknowledger.
///
/// Collect after the commit, send right away. Dropping an `Acks` without sending it
/// acknowledges nothing (a sink that panicked half-way must not confirm its batch):
/// those messages stay in flight, for their source to redeliver.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{AckId, AckRef, Acks, InMemoryAcks, Message};
/// let source = Arc::new(InMemoryAcks::new());
/// let batch: Vec<_> = (0..4).map(|i| Message::new(i, source.hand_out())).collect();
/// assert_eq!(source.in_flight().count(), 4);
/// Acks::all_successful(&batch);
/// assert_eq!(source.in_flight().count(), 0);
/// assert_eq!(source.acked(), 4);
/// ```
#[derive(Default)]
pub struct Acks {
    groups: Vec<Group>,
    count: usize,
}

impl fmt::Debug for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acks")
            .field("acknowledgers", &self.groups.len())
            .field("messages", &self.count)
            .finish()
    }
}

impl Acks {
    /// No acknowledgements yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn group(&mut self, ack: &AckRef) -> &mut Group {
        // Batches come from a handful of sources: a linear search beats hashing.
        let at = match self.groups.iter().position(|g| ack.same_acker(&g.acker)) {
            Some(at) => at,
            None => {
                self.groups.push(Group {
                    acker: ack.acker.clone(),
                    successful: Vec::new(),
                    failed: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[at]
    }

    /// `message` is done.
    pub fn successful<T>(&mut self, message: &Message<T>) {
        if let Some(ack) = &message.ack {
            self.successful_ref(ack);
        }
    }

    /// The message of `ack` is done.
    pub fn successful_ref(&mut self, ack: &AckRef) {
        let id = ack.id;
        self.group(ack).successful.push(id);
        self.count += 1;
    }

    /// `message` failed with `error`, for good as far as this pipeline goes.
    pub fn failed<T>(&mut self, message: &Message<T>, error: impl fmt::Display) {
        if let Some(ack) = &message.ack {
            self.failed_ref(ack, error);
        }
    }

    /// The message of `ack` failed with `error`.
    pub fn failed_ref(&mut self, ack: &AckRef, error: impl fmt::Display) {
        let id = ack.id;
        self.group(ack).failed.push(Failure {
            id,
            error: error.to_string(),
        });
        self.count += 1;
    }

    /// How many acknowledgements are collected.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Tells every acknowledger its part; returns how many messages were
    /// acknowledged.
    pub fn send(self) -> usize {
        for group in &self.groups {
            group.acker.ack(&group.successful, &group.failed);
        }
        self.count
    }

    /// Acknowledges every message of `batch` as successful, one call per
    /// acknowledger; returns how many had an acknowledger.
    pub fn all_successful<'a, T: 'a>(batch: impl IntoIterator<Item = &'a Message<T>>) -> usize {
        let mut acks = Acks::new();
        for message in batch {
            acks.successful(message);
        }
        acks.send()
    }

    /// Acknowledges every message of `batch` as failed with `error`.
    pub fn all_failed<'a, T: 'a>(
        batch: impl IntoIterator<Item = &'a Message<T>>,
        error: impl fmt::Display,
    ) -> usize {
        let error = error.to_string();
        let mut acks = Acks::new();
        for message in batch {
            acks.failed(message, &error);
        }
        acks.send()
    }
}

/// A batch of messages (from a [`Batcher`](super::Batcher)) is acknowledged in one
/// line once the sink committed it: one [`Acknowledger::ack`] call per source.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{Batch, InMemoryAcks, Message};
/// let source = Arc::new(InMemoryAcks::new());
/// let batch = Batch { key: (), events: (0..3).map(|i| Message::new(i, source.hand_out())).collect() };
/// // ... the sink stores batch.events, commits, then:
/// assert_eq!(batch.ack_successful(), 3);
/// assert_eq!((source.acked(), source.in_flight().count()), (3, 0));
///
/// let failing = Batch { key: (), events: vec![Message::new(9, source.hand_out())] };
/// failing.ack_failed("disk full");
/// assert_eq!(source.failed()[0].error, "disk full");
/// ```
impl<T, K> Batch<Message<T>, K> {
    /// Acknowledges every message of the batch as successful; returns how many had
    /// an acknowledger.
    pub fn ack_successful(&self) -> usize {
        Acks::all_successful(&self.events)
    }

    /// Acknowledges every message of the batch as failed with `error`.
    pub fn ack_failed(&self, error: impl fmt::Display) -> usize {
        Acks::all_failed(&self.events, error)
    }
}

/// A count of messages handed out and not yet acknowledged, that a drain can wait
/// on. Acknowledgers keep one and return it from [`Acknowledger::in_flight`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use stageflow::pipeline::InFlight;
/// let f = InFlight::new();
/// f.add(3);
/// f.done(2);
/// assert_eq!(f.count(), 1);
/// assert_eq!(f.wait_until_zero(Instant::now() + Duration::from_millis(1)), 1);
/// f.done(1);
/// assert_eq!(f.wait_until_zero(Instant::now() + Duration::from_secs(30)), 0);
/// ```
#[derive(Debug, Default)]
pub struct InFlight {
    count: Mutex<u64>,
    settled: Condvar,
}

impl InFlight {
    /// Nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// `n` more messages were handed out.
    pub fn add(&self, n: u64) {
        *self.count.lock() += n;
    }

    /// `n` messages were acknowledged (either way). Saturates at zero: an
    /// acknowledgement for a message this count never saw (handed out before a
    /// restart, say) is not an error.
    pub fn done(&self, n: u64) {
        let mut count = self.count.lock();
        *count = count.saturating_sub(n);
        if *count == 0 {
            self.settled.notify_all();
        }
    }

    /// Messages in flight now.
    pub fn count(&self) -> u64 {
        *self.count.lock()
    }

    /// Waits until nothing is in flight or `deadline` passes; returns what is
    /// still in flight.
    pub fn wait_until_zero(&self, deadline: Instant) -> u64 {
        let mut count = self.count.lock();
        while *count > 0 {
            if self.settled.wait_until(&mut count, deadline).timed_out() {
                break;
            }
        }
        *count
    }
}

/// An acknowledger for messages that live in this process only: it counts what it
/// handed out, what was acknowledged and what failed, and keeps the failures. For
/// tests, and for sources that only need to know that everything they produced
/// reached the end of the pipeline.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{Acks, InMemoryAcks, Message};
/// let acks = Arc::new(InMemoryAcks::new());
/// let a = Message::new("a", acks.hand_out());
/// let b = Message::new("b", acks.hand_out());
/// let mut batch = Acks::new();
/// batch.successful(&a);
/// batch.failed(&b, "bad");
/// batch.send();
/// assert_eq!((acks.acked(), acks.failed().len(), acks.in_flight().count()), (1, 1, 0));
/// assert_eq!(acks.failed()[0].error, "bad");
/// ```
#[derive(Debug, Default)]
pub struct InMemoryAcks {
    next: AtomicU64,
    acked: AtomicU64,
    failed: Mutex<Vec<Failure>>,
    in_flight: InFlight,
}

impl InMemoryAcks {
    /// Nothing handed out yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reference for the next message (ids 1, 2, 3, ...), counted in flight.
    pub fn hand_out(self: &Arc<Self>) -> AckRef {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight.add(1);
        AckRef::new(self.clone(), AckId(id as u128))
    }

    /// Messages acknowledged as successful.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// The failures, in the order they were acknowledged.
    pub fn failed(&self) -> Vec<Failure> {
        self.failed.lock().clone()
    }

    /// The in-flight count.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }
}

impl Acknowledger for InMemoryAcks {
    fn ack(&self, successful: &[AckId], failed: &[Failure]) {
        self.acked
            .fetch_add(successful.len() as u64, Ordering::Relaxed);
        if !failed.is_empty() {
            self.failed.lock().extend_from_slice(failed);
        }
        self.in_flight
            .done((successful.len() + failed.len()) as u64);
    }

    fn in_flight(&self) -> Option<&InFlight> {
        Some(&self.in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_one_call_per_acknowledger_per_batch() {
        let a = Arc::new(InMemoryAcks::new());
        let b = Arc::new(InMemoryAcks::new());
        let batch: Vec<Message<u32>> = (0..10)
            .map(|i| {
                let source = if i % 2 == 0 { &a } else { &b };
                Message::new(i, source.hand_out())
            })
            .chain(std::iter::once(Message::unacked(99)))
            .collect();
        let mut acks = Acks::new();
        for m in &batch {
            if m.data == 3 {
                acks.failed(m, "three");
            } else {
                acks.successful(m);
            }
        }
        assert_eq!(acks.len(), 10, "the unacked message is not counted");
        assert_eq!(acks.groups.len(), 2);
        assert_eq!(acks.send(), 10);
        assert_eq!((a.acked(), a.failed().len()), (5, 0));
        assert_eq!((b.acked(), b.failed().len()), (4, 1));
        assert_eq!(b.failed()[0].error, "three");
        assert_eq!(a.in_flight().count() + b.in_flight().count(), 0);
    }

    #[test]
    fn dropped_acks_acknowledge_nothing() {
        let a = Arc::new(InMemoryAcks::new());
        let m = Message::new(1, a.hand_out());
        let mut acks = Acks::new();
        acks.successful(&m);
        drop(acks);
        assert_eq!((a.acked(), a.in_flight().count()), (0, 1));
    }

    #[test]
    fn in_flight_wakes_a_waiter_from_another_thread() {
        let a = Arc::new(InMemoryAcks::new());
        let batch: Vec<_> = (0..100).map(|i| Message::new(i, a.hand_out())).collect();
        let acker = std::thread::spawn(move || {
            for chunk in batch.chunks(7) {
                Acks::all_successful(chunk);
            }
        });
        let left = a
            .in_flight()
            .wait_until_zero(Instant::now() + std::time::Duration::from_secs(60));
        acker.join().unwrap();
        assert_eq!(left, 0, "acks from another thread did not settle in 60 s");
        assert_eq!(a.acked(), 100);
    }
}
