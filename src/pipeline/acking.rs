//! An in-memory source of acknowledged messages: what a broker does, in one process,
//! for tests and in-process queues.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{OptionsError, StartError};
use crate::stage::{
    start_producer, Context, HandleInfo, Init, Never, Producer, ProducerOptions, Reason, Stage,
    StageRef,
};

use super::ack::{AckId, AckRef, Acknowledger, Failure, InFlight, Message};
use super::drain::Halt;
use super::retry::{DeadLetter, DeadLetters, GiveUp};

/// A producer of [`Message`]s over the events of an iterator, each with its own
/// acknowledgement, that behaves like a broker's consumer group: a message
/// acknowledged as failed is delivered again (before new events), up to
/// `max_deliveries` deliveries in all; then it goes to the [`DeadLetters`] with its
/// last error. It keeps a copy of every message in flight (hence `T: Clone`) and
/// counts what happened ([`AckingStats`]).
///
/// It ends normally once its events are exhausted and every message was
/// acknowledged or dead-lettered. [`Halt`] (a drain) stops it taking new events and
/// redelivering: it stops at once, behind what it delivered; acknowledgements still
/// arrive afterwards (the acknowledger outlives the stage), and failures that come
/// then stay [`pending`](AckingCounts::pending), as a broker would keep them for
/// another consumer. An acknowledgement for a message that is not in flight (a second
/// delivery of the same batch acknowledged twice, say) is ignored.
///
/// ```
/// use stageflow::pipeline::{Acks, AckingSource, DeadLetters, Message};
/// use stageflow::prelude::*;
///
/// // Fails "bad" every time, acknowledges the rest after "storing" them.
/// struct Sink(Vec<&'static str>);
/// impl Stage for Sink { type In = Message<&'static str>; type Out = Never; }
/// impl Consumer for Sink {
///     fn handle_events(&mut self, batch: Vec<Self::In>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
///         let mut acks = Acks::new();
///         for m in &batch {
///             if m.data == "bad" {
///                 acks.failed(m, "not a record");
///             } else {
///                 self.0.push(m.data);
///                 acks.successful(m);
///             }
///         }
///         acks.send();
///     }
/// }
/// let (dead_tx, dead_rx) = crossbeam_channel::unbounded();
/// let source = AckingSource::new(["a", "bad", "b"], DeadLetters::channel(dead_tx)).max_deliveries(3)?;
/// let stats = source.stats();
/// let source = source.start(ProducerOptions::new())?;
/// let sink = start_consumer(Sink(Vec::new()), ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))?;
/// assert_eq!(sink.join(), Reason::Normal);
/// let dead = dead_rx.recv()?;
/// assert_eq!((dead.event, dead.error.as_str(), dead.attempts), ("bad", "not a record", 3));
/// let c = stats.snapshot();
/// assert_eq!((c.acked, c.failed, c.redelivered, c.dead_lettered, c.in_flight, c.pending), (2, 3, 2, 1, 0, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AckingSource<I: Iterator> {
    fresh: Option<I>,
    shared: Arc<Shared<I::Item>>,
    dead: DeadLetters<I::Item, String>,
    max_deliveries: u32,
    demand: usize,
    next_id: u128,
    halted: bool,
    finishing: bool,
}

impl<I: Iterator> fmt::Debug for AckingSource<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckingSource")
            .field("max_deliveries", &self.max_deliveries)
            .field("counts", &self.shared.counters.snapshot())
            .finish()
    }
}

/// A message out of the source, with the deliveries it had.
struct Out<T> {
    event: T,
    deliveries: u32,
}

struct State<T> {
    /// Delivered, not acknowledged.
    out: HashMap<AckId, Out<T>>,
    /// Acknowledged as failed, not yet decided on by the stage.
    failed: Vec<(AckId, Out<T>, String)>,
    /// To deliver again, before new events.
    again: VecDeque<(AckId, Out<T>)>,
}

type Wake = Box<dyn Fn() -> bool + Send + Sync>;

/// What the stage and its acknowledger share: the acknowledger runs on the sink's
/// thread, the stage decides on failures on its own.
struct Shared<T> {
    state: Mutex<State<T>>,
    counters: Arc<Counters>,
    /// Wakes the stage (set by its `init`); false once it is gone.
    wake: Mutex<Option<Wake>>,
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckingSource")
            .field("counts", &self.counters.snapshot())
            .finish()
    }
}

impl<T> Shared<T> {
    fn pending(&self, state: &State<T>) {
        self.counters.pending.store(
            (state.failed.len() + state.again.len()) as u64,
            Ordering::Relaxed,
        );
    }
}

impl<T: Send + 'static> Acknowledger for Shared<T> {
    fn ack(&self, successful: &[AckId], failed: &[Failure]) {
        let (mut ok, mut bad) = (0, 0);
        let settled = {
            let mut state = self.state.lock();
            for id in successful {
                ok += u64::from(state.out.remove(id).is_some());
            }
            for f in failed {
                if let Some(out) = state.out.remove(&f.id) {
                    state.failed.push((f.id, out, f.error.clone()));
                    bad += 1;
                }
            }
            self.pending(&state);
            state.out.is_empty()
        };
        let c = &self.counters;
        c.acked.fetch_add(ok, Ordering::Relaxed);
        c.failed.fetch_add(bad, Ordering::Relaxed);
        c.in_flight.done(ok + bad);
        // The stage decides on failures; and nothing out may be its end.
        if bad > 0 || settled {
            if let Some(wake) = &*self.wake.lock() {
                let _ = wake();
            }
        }
    }

    fn in_flight(&self) -> Option<&InFlight> {
        Some(&self.counters.in_flight)
    }
}

#[derive(Debug, Default)]
struct Counters {
    acked: AtomicU64,
    failed: AtomicU64,
    redelivered: AtomicU64,
    dead_lettered: AtomicU64,
    pending: AtomicU64,
    in_flight: InFlight,
}

impl Counters {
    fn snapshot(&self) -> AckingCounts {
        AckingCounts {
            acked: self.acked.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            in_flight: self.in_flight.count(),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

/// The counters of an [`AckingSource`], readable from any thread while it runs and
/// after.
#[derive(Clone, Debug)]
pub struct AckingStats {
    counters: Arc<Counters>,
}

impl AckingStats {
    /// The counters now.
    pub fn snapshot(&self) -> AckingCounts {
        self.counters.snapshot()
    }
}

/// A snapshot of [`AckingStats`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct AckingCounts {
    /// Messages acknowledged as successful.
    pub acked: u64,
    /// Acknowledgements as failed (a message failing on three deliveries counts 3).
    pub failed: u64,
    /// Deliveries after the first.
    pub redelivered: u64,
    /// Messages handed to the dead letters after `max_deliveries`.
    pub dead_lettered: u64,
    /// Messages delivered and not acknowledged yet.
    pub in_flight: u64,
    /// Messages that failed and wait to be delivered again (after a halt, they stay).
    pub pending: u64,
}

/// Wakes the source: acknowledgements arrived that it must act on.
#[derive(Debug)]
pub struct AcksArrived(());

/// Sent to itself when everything is acknowledged, behind its last events.
#[derive(Debug)]
pub struct AckingFinished(());

impl<I> AckingSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Clone + Send + 'static,
{
    /// A source over `events`; messages failed `max_deliveries` times (default 5) go to
    /// `dead` with their last error.
    pub fn new(
        events: impl IntoIterator<IntoIter = I>,
        dead: DeadLetters<I::Item, String>,
    ) -> Self {
        AckingSource {
            fresh: Some(events.into_iter()),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    out: HashMap::new(),
                    failed: Vec::new(),
                    again: VecDeque::new(),
                }),
                counters: Arc::default(),
                wake: Mutex::new(None),
            }),
            dead,
            max_deliveries: 5,
            demand: 0,
            next_id: 0,
            halted: false,
            finishing: false,
        }
    }

    /// Deliveries per message before it is dead-lettered (default 5; must be > 0; 1:
    /// never redeliver).
    pub fn max_deliveries(mut self, deliveries: u32) -> Result<Self, OptionsError> {
        if deliveries == 0 {
            return Err(OptionsError::new(
                "expected max_deliveries to be greater than 0, got: 0",
            ));
        }
        self.max_deliveries = deliveries;
        Ok(self)
    }

    /// Its counters, to read while it runs and after.
    pub fn stats(&self) -> AckingStats {
        AckingStats {
            counters: self.shared.counters.clone(),
        }
    }

    /// Its acknowledger, to register with a [`Pipeline`](super::Pipeline) so that a
    /// drain waits for its messages and reports those left unacknowledged.
    pub fn acknowledger(&self) -> Arc<dyn Acknowledger> {
        self.shared.clone()
    }

    /// Starts it as a producer.
    pub fn start(
        self,
        options: ProducerOptions<Message<I::Item>>,
    ) -> Result<StageRef<Self>, StartError> {
        start_producer(self, options)
    }

    /// Delivers redeliveries first, then new events, up to the demand.
    fn serve(&mut self, ctx: &mut Context<'_, Self>) {
        if self.halted || self.demand == 0 {
            return;
        }
        let acker: Arc<dyn Acknowledger> = self.shared.clone();
        let mut sent = 0u64;
        let mut again = 0u64;
        {
            let mut state = self.shared.state.lock();
            while self.demand > 0 {
                let (id, out) = if let Some(next) = state.again.pop_front() {
                    again += 1;
                    next
                } else if let Some(event) = self.fresh.as_mut().and_then(Iterator::next) {
                    self.next_id += 1;
                    let out = Out {
                        event,
                        deliveries: 0,
                    };
                    (AckId(self.next_id), out)
                } else {
                    self.fresh = None;
                    break;
                };
                ctx.emit(Message::new(
                    out.event.clone(),
                    AckRef::new(acker.clone(), id),
                ));
                state.out.insert(
                    id,
                    Out {
                        event: out.event,
                        deliveries: out.deliveries + 1,
                    },
                );
                self.demand -= 1;
                sent += 1;
            }
            self.shared.pending(&state);
        }
        let c = &self.shared.counters;
        c.in_flight.add(sent);
        c.redelivered.fetch_add(again, Ordering::Relaxed);
    }

    /// Decides on failed messages: again, or to the dead letters.
    fn decide(&mut self, ctx: &mut Context<'_, Self>) {
        let failed = std::mem::take(&mut self.shared.state.lock().failed);
        let mut again = Vec::new();
        for (id, out, error) in failed {
            if out.deliveries < self.max_deliveries {
                again.push((id, out));
                continue;
            }
            let letter = DeadLetter {
                event: out.event,
                error,
                attempts: out.deliveries,
                reason: GiveUp::AttemptsExhausted,
            };
            if self.dead.send(letter).is_err() {
                ctx.stop(Reason::custom(
                    "the dead-letter destination is gone; a message that failed could not be recorded",
                ));
                return;
            }
            self.shared
                .counters
                .dead_lettered
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut state = self.shared.state.lock();
        state.again.extend(again);
        self.shared.pending(&state);
    }

    fn check_end(&mut self, ctx: &mut Context<'_, Self>) {
        if self.finishing || self.fresh.is_some() {
            return;
        }
        let state = self.shared.state.lock();
        if self.halted
            || (state.out.is_empty() && state.failed.is_empty() && state.again.is_empty())
        {
            self.finishing = true;
            // Behind the events it delivered: they reach its consumers first.
            let _ = ctx.myself().async_info(AckingFinished(()));
        }
    }
}

impl<I> Stage for AckingSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Clone + Send + 'static,
{
    type In = Never;
    type Out = Message<I::Item>;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        let me = ctx.myself().clone();
        *self.shared.wake.lock() = Some(Box::new(move || me.send_info(AcksArrived(())).is_ok()));
        Init::Ok
    }

    fn terminate(&mut self, _: &Reason) {
        // Acknowledgements outlive the stage; nobody is there to wake any more.
        *self.shared.wake.lock() = None;
    }
}

impl<I> Producer for AckingSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Clone + Send + 'static,
{
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        self.demand += demand;
        self.serve(ctx);
        self.check_end(ctx);
    }
}

impl<I> HandleInfo<AcksArrived> for AckingSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Clone + Send + 'static,
{
    fn handle_info(&mut self, _: AcksArrived, ctx: &mut Context<'_, Self>) {
        if self.halted {
            return;
        }
        self.decide(ctx);
        self.serve(ctx);
        self.check_end(ctx);
    }
}

impl<I> HandleInfo<AckingFinished> for AckingSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Clone + Send + 'static,
{
    fn handle_info(&mut self, _: AckingFinished, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// Halting stops taking new events and redelivering: the source stops behind what it
/// delivered; what is in flight is acknowledged later, failures then stay pending.
impl<I> HandleInfo<Halt> for AckingSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Clone + Send + 'static,
{
    fn handle_info(&mut self, _: Halt, ctx: &mut Context<'_, Self>) {
        self.halted = true;
        self.fresh = None;
        self.check_end(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Acks;
    use crate::prelude::*;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(60);

    #[test]
    fn zero_deliveries_is_rejected_by_name() {
        let e = AckingSource::new(0..1u8, DeadLetters::from_fn(|_| {}))
            .max_deliveries(0)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected max_deliveries to be greater than 0, got: 0"
        );
    }

    #[test]
    fn acks_of_unknown_or_twice_acked_messages_are_ignored() {
        let source = AckingSource::new(0..3u32, DeadLetters::from_fn(|_| {}));
        let stats = source.stats();
        let source = source.start(ProducerOptions::new()).unwrap();
        let got: Vec<Message<u32>> = stream(&source).take(3).map(Result::unwrap).collect();
        Acks::all_successful(&got);
        Acks::all_successful(&got);
        Acks::all_failed(&got, "late");
        let c = stats.snapshot();
        assert_eq!((c.acked, c.failed, c.in_flight), (3, 0, 0));
        assert_eq!(source.join_timeout(WAIT), Some(Reason::Normal));
    }
}
