//! A stage's counters: the runtime's own, always on and paid per batch, and the named
//! counters and gauges a stage publishes itself ([`Counter`], [`Gauge`]).
//!
//! Every counter is an atomic in the stage's shared state, written by the stage's
//! thread only, once per batch (never per event), and read by anyone
//! ([`StageRef::metrics`](super::StageRef::metrics), a pipeline's
//! [`snapshot`](crate::pipeline::PipelineHandle::snapshot)). With the `metrics` cargo
//! feature, the same adds also go to the [`metrics`](https://docs.rs/metrics) facade,
//! through handles registered once when the stage starts.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::OptionsError;

use super::reason::Kind;

#[cfg(feature = "metrics")]
mod facade;

/// A snapshot of a stage's counters.
///
/// All of them are counted per batch by the stage's own thread, so reading them costs
/// a few atomic loads and never stops the stage.
///
/// ```
/// use stageflow::prelude::*;
/// use std::time::Duration;
///
/// struct Sum(u64);
/// impl Stage for Sum { type In = u64; type Out = Never; }
/// impl Consumer for Sum {
///     fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
///         self.0 += e.iter().sum::<u64>();
///     }
/// }
/// let numbers = from_iter(0..100u64, FromIterOptions::new())?;
/// let sum = start_consumer(
///     Sum(0),
///     ConsumerOptions::new().subscribe_to(&numbers, SubscribeOptions::new().max_demand(10)),
/// )?;
/// sum.join();
/// let m = sum.metrics();
/// assert_eq!(m.events_in, 100);
/// // Batches of max_demand - min_demand = 5 events.
/// assert_eq!(m.batches, 20);
/// // An ask of 10 at the start, then one of 5 after each batch.
/// assert_eq!(m.demand_requested, 10 + 20 * 5);
/// assert_eq!(numbers.metrics().events_out, 100);
/// assert!(m.busy <= Duration::from_secs(60));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StageMetrics {
    /// Events received from producers.
    pub events_in: u64,
    /// Events delivered to consumers.
    pub events_out: u64,
    /// Events dropped from the output buffer (its `buffer_keep` policy).
    pub discarded: u64,
    /// Events in the output buffer at the last change.
    pub buffered: u64,
    /// Times the stage's dispatcher stopped asking for events because one of its
    /// consumers is missing: a [`PartitionDispatcher`](super::dispatcher::PartitionDispatcher)
    /// partition without a consumer whose queue is full (each is also logged once).
    pub stalls: u64,
    /// Demand the stage's consumers asked of it (the sum of their asks).
    pub demand_received: u64,
    /// Demand the stage asked of its producers by the automatic demand rule (asks
    /// made by hand with [`SubscriptionRef::ask`](super::SubscriptionRef::ask) are
    /// counted by the producer, as received).
    pub demand_requested: u64,
    /// Batches handled: `handle_events` calls of consumers and producer-consumers,
    /// `handle_demand` calls of producers.
    pub batches: u64,
    /// Time spent in the stage's callbacks (all of them, `handle_info` and calls
    /// included). Callbacks of 20 µs or more are each timed; shorter ones are
    /// sampled (one in 16 is timed and stands for the others), since reading the
    /// clock costs about as much as a short callback: an estimate then, close
    /// once a stage has handled a few hundred batches.
    pub busy: Duration,
    /// Subscriptions of consumers to this stage, now.
    pub consumers: u64,
    /// Subscriptions of this stage to producers, now.
    pub producers: u64,
}

/// The stage's counters, in its shared state.
pub(crate) struct Counters {
    events_in: AtomicU64,
    events_out: AtomicU64,
    discarded: AtomicU64,
    buffered: AtomicU64,
    /// Shared with the stage's dispatcher ([`StallCounter`](super::dispatcher::StallCounter)).
    pub(crate) stalls: Arc<AtomicU64>,
    demand_received: AtomicU64,
    demand_requested: AtomicU64,
    batches: AtomicU64,
    busy_nanos: AtomicU64,
    consumers: AtomicU64,
    producers: AtomicU64,
    /// What the stage published itself, in registration order. Locked to register
    /// and to take a snapshot only.
    published: Mutex<Vec<Published>>,
    labels: Labels,
    #[cfg(feature = "metrics")]
    facade: facade::Handles,
}

/// The stage's name and kind, the labels of everything it publishes.
#[derive(Clone)]
pub(crate) struct Labels {
    pub(crate) stage: Arc<str>,
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) kind: Kind,
}

/// Adds to a counter that only the stage's thread writes: a load and a store, no
/// read-modify-write (which costs a locked instruction per batch for nothing, as
/// there is one writer). Readers see every value it goes through, in order.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Callbacks shorter than this are timed one in [`SAMPLE`]; longer ones always.
const SHORT: Duration = Duration::from_micros(20);
/// One short callback in this many is timed; the time it took counts for the
/// callbacks not timed since the last one.
const SAMPLE: u32 = 16;

/// Times the stage's callbacks for [`StageMetrics::busy`]. Reading the clock twice
/// costs about as much as handling a small batch, so while callbacks are short (a
/// producer answering demand, a consumer summing a few hundred numbers) one in
/// [`SAMPLE`] is timed and stands for the ones in between; a callback of
/// [`SHORT`] or more is always timed, so slow stages are measured exactly.
#[derive(Debug, Default)]
pub(crate) struct BusyClock {
    /// Callbacks still to let pass untimed.
    skip: u32,
    /// Callbacks let pass since the last one timed.
    untimed: u32,
}

impl BusyClock {
    /// Before a callback: the clock, if this one is timed.
    #[inline]
    pub(crate) fn start(&mut self) -> Option<std::time::Instant> {
        if self.skip == 0 {
            Some(std::time::Instant::now())
        } else {
            self.skip -= 1;
            self.untimed += 1;
            None
        }
    }

    /// After the callback.
    #[inline]
    pub(crate) fn stop(&mut self, started: Option<std::time::Instant>, counters: &Counters) {
        if let Some(started) = started {
            let spent = started.elapsed();
            counters.busy(spent.saturating_mul(self.untimed + 1));
            self.untimed = 0;
            if spent < SHORT {
                self.skip = SAMPLE - 1;
            }
        }
    }
}

impl Counters {
    pub(crate) fn new(stage: Arc<str>, kind: Kind) -> Self {
        let labels = Labels { stage, kind };
        Counters {
            events_in: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            buffered: AtomicU64::new(0),
            stalls: Arc::new(AtomicU64::new(0)),
            demand_received: AtomicU64::new(0),
            demand_requested: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            consumers: AtomicU64::new(0),
            producers: AtomicU64::new(0),
            published: Mutex::new(Vec::new()),
            #[cfg(feature = "metrics")]
            facade: facade::Handles::register(&labels),
            labels,
        }
    }

    pub(crate) fn events_in(&self, n: usize) {
        add(&self.events_in, n as u64);
        #[cfg(feature = "metrics")]
        self.facade.events_in.increment(n as u64);
    }

    pub(crate) fn events_out(&self, n: usize) {
        add(&self.events_out, n as u64);
        #[cfg(feature = "metrics")]
        self.facade.events_out.increment(n as u64);
    }

    pub(crate) fn discarded(&self, n: usize) {
        add(&self.discarded, n as u64);
        #[cfg(feature = "metrics")]
        self.facade.discarded.increment(n as u64);
    }

    pub(crate) fn buffered(&self, n: usize) {
        self.buffered.store(n as u64, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.buffered.set(n as f64);
    }

    pub(crate) fn demand_received(&self, n: usize) {
        add(&self.demand_received, n as u64);
        #[cfg(feature = "metrics")]
        self.facade.demand_received.increment(n as u64);
    }

    pub(crate) fn demand_requested(&self, n: usize) {
        add(&self.demand_requested, n as u64);
        #[cfg(feature = "metrics")]
        self.facade.demand_requested.increment(n as u64);
    }

    pub(crate) fn batch(&self) {
        add(&self.batches, 1);
        #[cfg(feature = "metrics")]
        self.facade.batches.increment(1);
    }

    pub(crate) fn busy(&self, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        let total = self.busy_nanos.load(Ordering::Relaxed).wrapping_add(nanos);
        self.busy_nanos.store(total, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.busy.set(total as f64 / 1e9);
        #[cfg(not(feature = "metrics"))]
        let _ = total;
    }

    /// The number of subscriptions on each side, after a change.
    pub(crate) fn subscriptions(&self, consumers: usize, producers: usize) {
        self.consumers.store(consumers as u64, Ordering::Relaxed);
        self.producers.store(producers as u64, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        {
            self.facade.consumers.set(consumers as f64);
            self.facade.producers.set(producers as f64);
        }
    }

    /// Passes stalls the dispatcher counted since the last call on to the facade (the
    /// dispatcher only knows its atomic). A relaxed load per dispatch; stalls are rare.
    #[cfg(feature = "metrics")]
    pub(crate) fn sync_stalls(&self) {
        self.facade.sync_stalls(self.stalls.load(Ordering::Relaxed));
    }

    pub(crate) fn snapshot(&self) -> StageMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StageMetrics {
            events_in: load(&self.events_in),
            events_out: load(&self.events_out),
            discarded: load(&self.discarded),
            buffered: load(&self.buffered),
            stalls: load(&self.stalls),
            demand_received: load(&self.demand_received),
            demand_requested: load(&self.demand_requested),
            batches: load(&self.batches),
            busy: Duration::from_nanos(load(&self.busy_nanos)),
            consumers: load(&self.consumers),
            producers: load(&self.producers),
        }
    }

    /// The published counters and gauges now, in registration order.
    pub(crate) fn published(&self) -> Vec<NamedMetric> {
        self.published
            .lock()
            .iter()
            .map(|p| NamedMetric {
                name: p.name.to_string(),
                help: p.help.to_string(),
                value: match &p.value {
                    Value::Counter(c) => MetricValue::Counter(c.load(Ordering::Relaxed)),
                    Value::Gauge(g) => MetricValue::Gauge(g.load(Ordering::Relaxed)),
                },
            })
            .collect()
    }

    fn publish(&self, name: &str, help: &str, counter: bool) -> Result<Value, OptionsError> {
        check_name(name)?;
        let mut published = self.published.lock();
        if let Some(p) = published.iter().find(|p| &*p.name == name) {
            return match (&p.value, counter) {
                (Value::Counter(_), true) | (Value::Gauge(_), false) => Ok(p.value.clone()),
                _ => Err(OptionsError::new(format!(
                    "metric {name:?} of stage {} is already published as a {}",
                    self.labels.stage,
                    if counter { "gauge" } else { "counter" }
                ))),
            };
        }
        let value = if counter {
            Value::Counter(Arc::new(AtomicU64::new(0)))
        } else {
            Value::Gauge(Arc::new(AtomicI64::new(0)))
        };
        published.push(Published {
            name: Arc::from(name),
            help: Arc::from(help),
            value: value.clone(),
        });
        Ok(value)
    }

    /// Registers (or finds) the counter `name` of this stage.
    pub(crate) fn counter(&self, name: &str, help: &str) -> Result<Counter, OptionsError> {
        let Value::Counter(value) = self.publish(name, help, true)? else {
            unreachable!("publish returns the kind asked for")
        };
        Ok(Counter {
            value,
            #[cfg(feature = "metrics")]
            facade: facade::counter(&self.labels, name, help),
        })
    }

    /// Registers (or finds) the gauge `name` of this stage.
    pub(crate) fn gauge(&self, name: &str, help: &str) -> Result<Gauge, OptionsError> {
        let Value::Gauge(value) = self.publish(name, help, false)? else {
            unreachable!("publish returns the kind asked for")
        };
        Ok(Gauge {
            value,
            #[cfg(feature = "metrics")]
            facade: facade::gauge(&self.labels, name, help),
        })
    }
}

/// Names of the runtime's own counters, which a stage cannot publish again.
const RESERVED: &[&str] = &[
    "events_in",
    "events_out",
    "events_discarded",
    "buffered",
    "stalls",
    "demand_received",
    "demand_requested",
    "batches",
    "busy_seconds",
    "consumers",
    "producers",
];

/// A published name: `[a-z_][a-z0-9_]*`, which is valid in Prometheus and every other
/// backend of the `metrics` facade once prefixed with `stageflow_`.
fn check_name(name: &str) -> Result<(), OptionsError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || name.ends_with("_total")
    {
        return Err(OptionsError::new(format!(
            "expected a metric name of lowercase letters, digits and underscores, \
             not starting with a digit nor ending in _total, got: {name:?}"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(OptionsError::new(format!(
            "metric name {name:?} is one of the runtime's own counters"
        )));
    }
    Ok(())
}

#[derive(Clone)]
enum Value {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
}

struct Published {
    name: Arc<str>,
    help: Arc<str>,
    value: Value,
}

/// A counter a stage publishes under its own name, beside the runtime's counters: it
/// appears in the stage's [`StageSnapshot`](crate::observe::StageSnapshot) and, with the
/// `metrics` feature, in the facade as `stageflow_<name>_total` labelled by stage
/// name and kind.
///
/// Get one from [`Context::counter`](super::Context::counter) (in `init`, say) or
/// [`StageRef::counter`](super::StageRef::counter); registering the same name again
/// returns the same counter. Clones share the count, so a helper thread of the stage
/// can count too. Count per batch, as the runtime does: one `add` per batch, not one
/// per event.
///
/// ```
/// use stageflow::prelude::*;
///
/// struct Evens { kept: Option<stageflow::observe::Counter> }
/// impl Stage for Evens {
///     type In = u64;
///     type Out = u64;
///     fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
///         self.kept = Some(ctx.counter("kept", "Even numbers passed on").expect("a valid name"));
///         Init::Ok
///     }
/// }
/// impl ProducerConsumer for Evens {
///     fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
///         let before = ctx.emitted();
///         ctx.emit_all(e.into_iter().filter(|x| x % 2 == 0));
///         if let Some(kept) = &self.kept {
///             kept.add((ctx.emitted() - before) as u64);
///         }
///     }
/// }
/// let numbers = from_iter(0..10u64, FromIterOptions::new())?;
/// let evens = start_producer_consumer(
///     Evens { kept: None },
///     ProducerConsumerOptions::new().subscribe_to(&numbers, SubscribeOptions::new()),
/// )?;
/// assert_eq!(stream(&evens).count(), 5);
/// assert_eq!(evens.counter("kept", "Even numbers passed on")?.get(), 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Counter {
    value: Arc<AtomicU64>,
    #[cfg(feature = "metrics")]
    facade: metrics::Counter,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl Counter {
    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.increment(n);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A gauge a stage publishes under its own name (a level that goes up and down:
/// entries pending, consumer lag). See [`Counter`] for where it appears; in the
/// facade its name is `stageflow_<name>`.
///
/// ```
/// use stageflow::prelude::*;
/// # struct Idle;
/// # impl Stage for Idle { type In = Never; type Out = u64; }
/// # impl Producer for Idle { fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {} }
/// let source = start_producer(Idle, ProducerOptions::new().name("broker"))?;
/// let pending = source.gauge("pending", "Entries read and not yet acknowledged")?;
/// pending.set(7);
/// pending.add(-2);
/// assert_eq!(pending.get(), 5);
/// let bad = source.gauge("Pending!", "").unwrap_err();
/// assert!(bad.to_string().contains("\"Pending!\""));
/// source.stop(Reason::Normal)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Gauge {
    value: Arc<AtomicI64>,
    #[cfg(feature = "metrics")]
    facade: metrics::Gauge,
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

impl Gauge {
    /// Sets the level.
    pub fn set(&self, level: i64) {
        self.value.store(level, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.facade.set(level as f64);
    }

    /// Moves the level by `delta` (negative: down).
    pub fn add(&self, delta: i64) {
        let now = self.value.fetch_add(delta, Ordering::Relaxed) + delta;
        #[cfg(feature = "metrics")]
        self.facade.set(now as f64);
        #[cfg(not(feature = "metrics"))]
        let _ = now;
    }

    /// The level now.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// One counter or gauge a stage published, as a snapshot shows it.
///
/// ```
/// use stageflow::observe::{MetricValue, NamedMetric};
/// let m = NamedMetric { name: "retries".into(), help: "Attempts retried".into(), value: MetricValue::Counter(3) };
/// assert_eq!(m.value.as_f64(), 3.0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NamedMetric {
    /// Its name (without the `stageflow_` prefix and `_total` suffix the facade adds).
    pub name: String,
    /// What it counts.
    pub help: String,
    /// Its value now.
    pub value: MetricValue,
}

/// The value of a [`NamedMetric`].
///
/// ```
/// assert_eq!(stageflow::observe::MetricValue::Gauge(-2).as_f64(), -2.0);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MetricValue {
    /// A count that only grows.
    Counter(u64),
    /// A level.
    Gauge(i64),
}

impl MetricValue {
    /// The value as a float (for display and rates).
    pub fn as_f64(self) -> f64 {
        match self {
            MetricValue::Counter(c) => c as f64,
            MetricValue::Gauge(g) => g as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_kinds_kept() {
        let c = Counters::new(Arc::from("s"), Kind::Producer);
        assert!(c.counter("retries", "").is_ok());
        assert_eq!(c.counter("retries", "again").unwrap().get(), 0);
        let e = c.gauge("retries", "").unwrap_err().to_string();
        assert!(e.contains("already published as a counter"), "{e}");
        for bad in ["", "9lives", "Upper", "dash-ed", "x_total", "events_in"] {
            assert!(c.gauge(bad, "").is_err(), "{bad:?} was accepted");
        }
        c.counter("retries", "").unwrap().add(2);
        c.gauge("lag", "").unwrap().set(-4);
        let names: Vec<(String, MetricValue)> = c
            .published()
            .into_iter()
            .map(|m| (m.name, m.value))
            .collect();
        assert_eq!(
            names,
            [
                ("retries".to_string(), MetricValue::Counter(2)),
                ("lag".to_string(), MetricValue::Gauge(-4))
            ]
        );
    }
}
