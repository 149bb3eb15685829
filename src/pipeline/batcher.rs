//! Groups events into batches of `batch_size`, or whatever arrived within
//! `batch_timeout` of a batch's first event, whichever comes first (Broadway's
//! batchers: defaults 100 and 1 s), optionally one batch per key.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::error::{OptionsError, StartError};
use crate::observe::Counter;
use crate::stage::{
    start_producer_consumer, CancelReason, Context, Demand, HandleInfo, Init, Peer,
    ProducerConsumer, ProducerConsumerOptions, Reason, Stage, StageRef, SubscriptionInfo,
    SubscriptionRef, Tag,
};

/// A batch of events that share a key (`()` for an unkeyed batcher).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<T, K = ()> {
    /// The events' key.
    pub key: K,
    /// The events, in arrival order; never empty.
    pub events: Vec<T>,
}

/// A batcher's size and timeout. Defaults: 100 events, 1 second (Broadway's).
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::BatcherOptions;
/// let o = BatcherOptions::new().batch_size(500).batch_timeout(Duration::from_millis(200));
/// assert!(o.validate().is_ok());
/// let err = BatcherOptions::new().batch_size(0).validate().unwrap_err();
/// assert_eq!(err.to_string(), "expected batch_size to be greater than 0, got: 0");
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BatcherOptions {
    batch_size: usize,
    batch_timeout: Duration,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        BatcherOptions {
            batch_size: 100,
            batch_timeout: Duration::from_secs(1),
        }
    }
}

impl BatcherOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Largest batch (default 100; must be > 0).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }
    /// Longest time a batch waits for more events after its first (default 1 s;
    /// must be > 0).
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
        self
    }
    /// Checks the values.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.batch_size == 0 {
            return Err(OptionsError::new(
                "expected batch_size to be greater than 0, got: 0",
            ));
        }
        if self.batch_timeout.is_zero() {
            return Err(OptionsError::new(
                "expected batch_timeout to be greater than 0, got: 0ns",
            ));
        }
        Ok(())
    }
}

/// Ask a batcher to emit its partial batches now.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Flush;

/// The timer's wake-up (sent with `Context::send_after`), for the deadline it names.
#[derive(Debug)]
pub struct BatchTimeout(Instant);

/// Sent to itself when its last producer ended normally, behind the last batches.
#[derive(Debug)]
pub struct ProducersEnded(());

struct Pending<T> {
    events: Vec<T>,
    deadline: Instant,
}

type KeyFn<T, K> = Box<dyn Fn(&T) -> K + Send>;

/// A producer-consumer that turns events `T` into [`Batch`]es.
///
/// A batch is emitted when it holds `batch_size` events, when `batch_timeout` has
/// passed since its first event, on [`Flush`], and when the last producer is gone.
///
/// When its last producer ends normally, the batcher delivers what it has and stops
/// normally. With several producers (fan-in), subscribe with
/// [`CancelMode::Transient`](crate::CancelMode::Transient): a permanent subscription
/// would stop it as soon as the *first* producer ends.
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::{Batcher, BatcherOptions};
/// use stageflow::prelude::*;
/// let source = from_iter(0..250u32, FromIterOptions::new())?;
/// let batcher = Batcher::new(BatcherOptions::new().batch_size(100))?.start(
///     ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()),
/// )?;
/// let sizes: Vec<usize> = stream(&batcher).map(|b| b.map(|b| b.events.len())).collect::<Result<_, _>>()?;
/// assert_eq!(sizes, [100, 100, 50]);
///
/// // Per key: odd and even numbers in separate batches.
/// let source = from_iter(0..10u32, FromIterOptions::new())?;
/// let keyed = Batcher::keyed(BatcherOptions::new().batch_size(5), |n: &u32| n % 2)?.start(
///     ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()),
/// )?;
/// let mut batches: Vec<(u32, Vec<u32>)> = stream(&keyed).map(|b| b.map(|b| (b.key, b.events))).collect::<Result<_, _>>()?;
/// batches.sort();
/// assert_eq!(batches, [(0, vec![0, 2, 4, 6, 8]), (1, vec![1, 3, 5, 7, 9])]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Batcher<T, K = ()> {
    options: BatcherOptions,
    key: KeyFn<T, K>,
    pending: HashMap<K, Pending<T>>,
    /// Tags of our subscriptions to producers (to tell them from consumers').
    producers: HashSet<Tag>,
    /// The wake-up already requested, if any: one at a time.
    armed: Option<Instant>,
    /// Published counters, registered in `init`.
    counts: Option<FlushCounts>,
}

/// Batches emitted, by cause: published as the stage's counters `batches_by_size`,
/// `batches_by_timeout` and `batches_flushed` (see [`crate::observe`]).
struct FlushCounts {
    by_size: Counter,
    by_timeout: Counter,
    flushed: Counter,
}

impl FlushCounts {
    fn register<S: Stage>(ctx: &Context<'_, S>) -> Result<Self, OptionsError> {
        Ok(FlushCounts {
            by_size: ctx.counter("batches_by_size", "Batches emitted because they were full")?,
            by_timeout: ctx.counter(
                "batches_by_timeout",
                "Batches emitted because their batch_timeout passed",
            )?,
            flushed: ctx.counter(
                "batches_flushed",
                "Partial batches emitted by a Flush or because every producer ended",
            )?,
        })
    }
}

impl<T, K> fmt::Debug for Batcher<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher")
            .field("options", &self.options)
            .field("pending_batches", &self.pending.len())
            .finish()
    }
}

impl<T: Send + 'static> Batcher<T, ()> {
    /// An unkeyed batcher; `Err` names a bad option.
    pub fn new(options: BatcherOptions) -> Result<Self, OptionsError> {
        Batcher::keyed(options, |_: &T| ())
    }
}

impl<T, K> Batcher<T, K>
where
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    /// A batcher that keeps one batch per key (`key(event)`), like Broadway's
    /// `batch_key`.
    pub fn keyed(
        options: BatcherOptions,
        key: impl Fn(&T) -> K + Send + 'static,
    ) -> Result<Self, OptionsError> {
        options.validate()?;
        Ok(Batcher {
            options,
            key: Box::new(key),
            pending: HashMap::new(),
            producers: HashSet::new(),
            armed: None,
            counts: None,
        })
    }

    /// Starts the batcher as a producer-consumer.
    pub fn start(
        self,
        options: ProducerConsumerOptions<T, Batch<T, K>>,
    ) -> Result<StageRef<Self>, StartError> {
        start_producer_consumer(self, options)
    }

    fn emit(&mut self, key: K, ctx: &mut Context<'_, Self>) {
        if let Some(p) = self.pending.remove(&key) {
            ctx.emit(Batch {
                key,
                events: p.events,
            });
        }
    }

    fn flush_all(&mut self, ctx: &mut Context<'_, Self>) {
        if let Some(c) = &self.counts {
            c.flushed.add(self.pending.len() as u64);
        }
        for (key, p) in self.pending.drain() {
            ctx.emit(Batch {
                key,
                events: p.events,
            });
        }
    }

    /// Arms a timer (`Context::send_after`) for the earliest batch deadline, unless
    /// one is armed for that deadline or earlier.
    fn arm(&mut self, ctx: &mut Context<'_, Self>) {
        let Some(earliest) = self.pending.values().map(|p| p.deadline).min() else {
            return;
        };
        if self.armed.is_some_and(|at| at <= earliest) {
            return;
        }
        let delay = earliest.saturating_duration_since(Instant::now());
        ctx.send_after(delay, BatchTimeout(earliest));
        self.armed = Some(earliest);
    }
}

impl<T, K> Stage for Batcher<T, K>
where
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    type In = T;
    type Out = Batch<T, K>;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        match FlushCounts::register(ctx) {
            Ok(counts) => {
                self.counts = Some(counts);
                Init::Ok
            }
            Err(e) => Init::Stop(Reason::custom(e.message())),
        }
    }

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        _: &SubscriptionInfo,
        from: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if peer == Peer::Producer {
            self.producers.insert(from.tag);
        }
        Ok(Demand::Automatic)
    }

    fn handle_cancel(
        &mut self,
        reason: CancelReason,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        // Only our producers' subscriptions count; a consumer leaving changes nothing.
        if self.producers.remove(&from.tag) && self.producers.is_empty() {
            // No more input can complete these batches: deliver them now.
            self.flush_all(ctx);
            self.armed = None;
            if reason.reason().is_normal() {
                // Behind the batches just emitted: stop once they are delivered.
                let _ = ctx.myself().async_info(ProducersEnded(()));
            }
        }
    }
}

impl<T, K> ProducerConsumer for Batcher<T, K>
where
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    fn handle_events(&mut self, events: Vec<T>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
        let size = self.options.batch_size;
        let timeout = self.options.batch_timeout;
        let mut now = None;
        let mut full = 0;
        for event in events {
            let key = (self.key)(&event);
            let pending = match self.pending.get_mut(&key) {
                Some(p) => p,
                None => {
                    let at = *now.get_or_insert_with(Instant::now);
                    self.pending.entry(key.clone()).or_insert(Pending {
                        events: Vec::with_capacity(size.min(4096)),
                        deadline: at + timeout,
                    })
                }
            };
            pending.events.push(event);
            if pending.events.len() >= size {
                self.emit(key, ctx);
                full += 1;
            }
        }
        if let Some(c) = &self.counts {
            c.by_size.add(full);
        }
        self.arm(ctx);
    }
}

impl<T, K> HandleInfo<BatchTimeout> for Batcher<T, K>
where
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    fn handle_info(&mut self, BatchTimeout(at): BatchTimeout, ctx: &mut Context<'_, Self>) {
        // Everything due by now (the loop runs a timer at or after its deadline).
        let now = Instant::now().max(at);
        if self.armed.is_some_and(|at| at <= now) {
            self.armed = None;
        }
        let due: Vec<K> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(c) = &self.counts {
            c.by_timeout.add(due.len() as u64);
        }
        for key in due {
            self.emit(key, ctx);
        }
        self.arm(ctx);
    }
}

impl<T, K> HandleInfo<ProducersEnded> for Batcher<T, K>
where
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    fn handle_info(&mut self, _: ProducersEnded, ctx: &mut Context<'_, Self>) {
        // A producer subscribed meanwhile: keep going.
        if self.producers.is_empty() {
            ctx.stop(Reason::Normal);
        }
    }
}

impl<T, K> HandleInfo<Flush> for Batcher<T, K>
where
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + 'static,
{
    fn handle_info(&mut self, _: Flush, ctx: &mut Context<'_, Self>) {
        self.flush_all(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crossbeam_channel::{bounded, Sender};

    const WAIT: Duration = Duration::from_secs(10);
    const NEVER: Duration = Duration::from_secs(3600);

    struct Collect(Sender<Batch<u32, u32>>);
    impl Stage for Collect {
        type In = Batch<u32, u32>;
        type Out = Never;
    }
    impl Consumer for Collect {
        fn handle_events(
            &mut self,
            e: Vec<Self::In>,
            _: &SubscriptionRef,
            _: &mut Context<'_, Self>,
        ) {
            for b in e {
                self.0.send(b).unwrap();
            }
        }
    }

    struct Manual;
    impl Stage for Manual {
        type In = Never;
        type Out = u32;
    }
    impl Producer for Manual {
        fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
    }
    impl HandleCast<Vec<u32>> for Manual {
        fn handle_cast(&mut self, e: Vec<u32>, ctx: &mut Context<'_, Self>) {
            ctx.emit_all(e);
        }
    }

    #[test]
    fn bad_options_are_rejected_by_name() {
        let e =
            Batcher::<u8>::new(BatcherOptions::new().batch_timeout(Duration::ZERO)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "expected batch_timeout to be greater than 0, got: 0ns"
        );
        assert!(Batcher::<u8>::new(BatcherOptions::new().batch_size(0)).is_err());
    }

    #[test]
    fn size_flush_and_end_without_a_timeout() {
        let producer = start_producer(Manual, ProducerOptions::new()).unwrap();
        let batcher = Batcher::keyed(
            BatcherOptions::new().batch_size(3).batch_timeout(NEVER),
            |n: &u32| n % 2,
        )
        .unwrap()
        .start(ProducerConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()))
        .unwrap();
        let (tx, rx) = bounded(100);
        let sink = start_consumer(
            Collect(tx),
            ConsumerOptions::new().subscribe_to(&batcher, SubscribeOptions::new()),
        )
        .unwrap();
        producer.cast(vec![1, 2, 3, 4, 5]).unwrap();
        let b = rx.recv_timeout(WAIT).expect("a full batch of odd numbers");
        assert_eq!((b.key, b.events), (1, vec![1, 3, 5]));
        // The even batch is partial and the timeout is an hour away: a flush sends it.
        batcher.send_info(Flush).unwrap();
        let b = rx.recv_timeout(WAIT).expect("flushed batch");
        assert_eq!((b.key, b.events), (0, vec![2, 4]));
        // The last producer leaving delivers what is pending, then everything stops.
        producer.cast(vec![7]).unwrap();
        producer.stop(Reason::Normal).unwrap();
        let b = rx.recv_timeout(WAIT).expect("batch flushed at the end");
        assert_eq!((b.key, b.events), (1, vec![7]));
        assert_eq!(batcher.join(), Reason::Normal);
        assert_eq!(sink.join(), Reason::Normal);
    }

    #[test]
    fn a_partial_batch_is_emitted_after_the_timeout() {
        let producer = start_producer(Manual, ProducerOptions::new()).unwrap();
        let batcher = Batcher::keyed(
            BatcherOptions::new()
                .batch_size(100)
                .batch_timeout(Duration::from_millis(20)),
            |_: &u32| 0u32,
        )
        .unwrap()
        .start(ProducerConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()))
        .unwrap();
        let (tx, rx) = bounded(100);
        let _sink = start_consumer(
            Collect(tx),
            ConsumerOptions::new().subscribe_to(&batcher, SubscribeOptions::new()),
        )
        .unwrap();
        let sent = Instant::now();
        producer.cast(vec![1, 2]).unwrap();
        // Nothing else arrives, the size is never reached: only the timeout sends it.
        let b = rx.recv_timeout(WAIT).expect("batch emitted by its timeout");
        assert_eq!(b.events, vec![1, 2]);
        // It cannot have left before its timeout.
        assert!(sent.elapsed() >= Duration::from_millis(20));
        producer.cast(vec![3]).unwrap();
        let b = rx
            .recv_timeout(WAIT)
            .expect("the timer re-arms for the next batch");
        assert_eq!(b.events, vec![3]);
    }

    #[test]
    fn fan_in_with_transient_subscriptions_ends_after_the_last_producer() {
        let a = from_iter(0..500u32, FromIterOptions::new()).unwrap();
        let b = from_iter(500..1000u32, FromIterOptions::new()).unwrap();
        let transient = || SubscribeOptions::new().cancel(CancelMode::Transient);
        let batcher = Batcher::new(BatcherOptions::new().batch_size(64).batch_timeout(NEVER))
            .unwrap()
            .start(
                ProducerConsumerOptions::new()
                    .subscribe_to(&a, transient())
                    .subscribe_to(&b, transient()),
            )
            .unwrap();
        let mut got: Vec<u32> = stream(&batcher).flat_map(|b| b.unwrap().events).collect();
        got.sort_unstable();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(batcher.join(), Reason::Normal);
    }

    #[test]
    fn no_event_lost_when_downstream_is_slow_to_ask() {
        // 1000 events into batches of 7, through a consumer asking one batch at a time:
        // the batcher's output waits in its buffer and the end waits behind it.
        let source = from_iter(0..1000u32, FromIterOptions::new()).unwrap();
        let batcher = Batcher::new(BatcherOptions::new().batch_size(7).batch_timeout(NEVER))
            .unwrap()
            .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))
            .unwrap();
        let got: Vec<u32> = crate::StageStream::new()
            .subscribe(&batcher, SubscribeOptions::new().max_demand(1))
            .unwrap()
            .flat_map(|b| b.unwrap().events)
            .collect();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        assert_eq!(batcher.join(), Reason::Normal);
    }
}
