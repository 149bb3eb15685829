//! The counters of a [`RedisStreamSource`](super::RedisStreamSource).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::OptionsError;
use crate::pipeline::InFlight;
use crate::stage::{Context, Counter, Gauge, Stage};

/// One of the source's counters: its own atomic (read by
/// [`RedisStreamStats`]) and, once the stage runs, the counter of the same name it
/// publishes among the stage's metrics (snapshots, and the `metrics` facade with
/// that feature), so that a topology's picture and a Prometheus scrape show it
/// without the program reading the stats.
#[derive(Debug, Default)]
pub(crate) struct Stat {
    value: AtomicU64,
    published: OnceLock<Counter>,
}

impl Stat {
    pub(crate) fn add(&self, n: usize) {
        if n > 0 {
            self.value.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(counter) = self.published.get() {
                counter.add(n as u64);
            }
        }
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }

    fn publish(&self, counter: Counter) {
        // Published in `init`, before the reader and acknowledger threads start,
        // so nothing is counted between the two lines.
        counter.add(self.get());
        let _ = self.published.set(counter);
    }
}

/// Shared by the source, its reader thread and its acknowledger; each counter is
/// added to once per batch.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) acked: Stat,
    pub(crate) redelivered: Stat,
    pub(crate) reclaimed: Stat,
    pub(crate) dead_lettered: Stat,
    pub(crate) lost: Stat,
    pub(crate) delivered: Stat,
    pub(crate) reconnects: Stat,
    /// The group's lag as last sampled; `u64::MAX` while unknown.
    lag: AtomicU64,
    pub(crate) in_flight: InFlight,
    lag_gauge: OnceLock<Gauge>,
    pending_gauge: OnceLock<Gauge>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            lag: AtomicU64::new(u64::MAX),
            ..Default::default()
        }
    }

    /// Publishes every counter, and `pending` and `lag` as gauges, among the
    /// stage's metrics (names as in [`RedisStreamCounts`]).
    pub(crate) fn publish<S: Stage>(&self, ctx: &Context<'_, S>) -> Result<(), OptionsError> {
        let stats: [(&Stat, &str, &str); 7] = [
            (
                &self.delivered,
                "delivered",
                "Stream entries handed out (first deliveries and again)",
            ),
            (
                &self.acked,
                "acked",
                "Stream entries acknowledged (XACK) after the sink's commit",
            ),
            (
                &self.redelivered,
                "redelivered",
                "Failed stream entries delivered again",
            ),
            (
                &self.reclaimed,
                "reclaimed",
                "Idle entries of other consumers taken over (XAUTOCLAIM)",
            ),
            (
                &self.dead_lettered,
                "dead_lettered",
                "Stream entries moved to the dead-letter stream",
            ),
            (
                &self.lost,
                "lost",
                "Pending stream entries found trimmed or deleted",
            ),
            (
                &self.reconnects,
                "reconnects",
                "Connections to Redis lost and made again",
            ),
        ];
        for (stat, name, help) in stats {
            stat.publish(ctx.counter(name, help)?);
        }
        let pending = ctx.gauge(
            "pending",
            "Stream entries handed out and not yet acknowledged",
        )?;
        pending.set(self.in_flight.count() as i64);
        let _ = self.pending_gauge.set(pending);
        let lag = ctx.gauge(
            "lag",
            "Entries of the stream not yet delivered to the group, as last sampled (-1: unknown)",
        )?;
        lag.set(self.lag_now().map_or(-1, |l| l as i64));
        let _ = self.lag_gauge.set(lag);
        Ok(())
    }

    /// The group's lag as sampled now (`None`: Redis cannot tell).
    pub(crate) fn set_lag(&self, lag: Option<u64>) {
        self.lag.store(lag.unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(gauge) = self.lag_gauge.get() {
            gauge.set(lag.map_or(-1, |l| l as i64));
        }
    }

    fn lag_now(&self) -> Option<u64> {
        let lag = self.lag.load(Ordering::Relaxed);
        (lag != u64::MAX).then_some(lag)
    }

    /// `n` more entries handed out.
    pub(crate) fn handed_out(&self, n: u64) {
        self.in_flight.add(n);
        self.pending_changed();
    }

    /// `n` entries no longer held (acknowledged, dead-lettered, lost, left).
    pub(crate) fn settled(&self, n: u64) {
        self.in_flight.done(n);
        self.pending_changed();
    }

    fn pending_changed(&self) {
        if let Some(gauge) = self.pending_gauge.get() {
            gauge.set(self.in_flight.count() as i64);
        }
    }
}

/// A handle on a source's counters: cheap to clone, readable from any thread, while
/// the source runs and after it stopped.
///
/// ```
/// use stageflow::redis::{RedisStreamCounts, RedisStreamStats};
/// // A source gives its own handle (`RedisStreamSource::stats`); an unattached
/// // one reads all zeros.
/// let stats = RedisStreamStats::default();
/// assert_eq!(stats.snapshot(), RedisStreamCounts::default());
/// ```
#[derive(Clone, Debug)]
pub struct RedisStreamStats {
    pub(crate) counters: Arc<Counters>,
}

impl Default for RedisStreamStats {
    fn default() -> Self {
        RedisStreamStats {
            counters: Arc::new(Counters::new()),
        }
    }
}

/// A snapshot of a source's counters (see docs/REDIS.md for what each one means
/// in the delivery semantics).
///
/// ```
/// let counts = stageflow::redis::RedisStreamCounts::default();
/// assert_eq!((counts.acked, counts.pending, counts.lag), (0, 0, None));
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisStreamCounts {
    /// Entries handed to the pipeline, all deliveries counted.
    pub delivered: u64,
    /// Entries acknowledged as done (`XACK`ed).
    pub acked: u64,
    /// Entries acknowledged as failed and delivered again.
    pub redelivered: u64,
    /// Entries taken over from other consumers that left them idle (`XAUTOCLAIM`),
    /// or found pending for this consumer name at start or after a reconnect.
    pub reclaimed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries that were pending but no longer exist in the stream (trimmed or
    /// deleted before anyone acknowledged them): nobody can process them any more.
    pub lost: u64,
    /// Times a connection was lost and made again.
    pub reconnects: u64,
    /// Entries this source handed out, or holds to hand out, not yet acknowledged.
    pub pending: u64,
    /// The group's lag when the source last looked (`XINFO GROUPS`): entries in the
    /// stream not yet delivered to any consumer of the group. `None` before the first
    /// look, or when Redis cannot tell (after deletions in the middle of the stream).
    pub lag: Option<u64>,
}

impl RedisStreamStats {
    /// The counters now.
    pub fn snapshot(&self) -> RedisStreamCounts {
        let c = &self.counters;
        RedisStreamCounts {
            delivered: c.delivered.get(),
            acked: c.acked.get(),
            redelivered: c.redelivered.get(),
            reclaimed: c.reclaimed.get(),
            dead_lettered: c.dead_lettered.get(),
            lost: c.lost.get(),
            reconnects: c.reconnects.get(),
            pending: c.in_flight.count(),
            lag: c.lag_now(),
        }
    }
}
