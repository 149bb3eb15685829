//! The counters of a [`RedisStreamSource`](super::RedisStreamSource).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::pipeline::InFlight;

/// Shared by the source, its reader thread and its acknowledger; each counter is
/// added to once per batch.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) acked: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) reclaimed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// The group's lag as last sampled; `u64::MAX` while unknown.
    pub(crate) lag: AtomicU64,
    pub(crate) in_flight: InFlight,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            lag: AtomicU64::new(u64::MAX),
            ..Default::default()
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
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
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lag = get(&c.lag);
        RedisStreamCounts {
            delivered: get(&c.delivered),
            acked: get(&c.acked),
            redelivered: get(&c.redelivered),
            reclaimed: get(&c.reclaimed),
            dead_lettered: get(&c.dead_lettered),
            lost: get(&c.lost),
            reconnects: get(&c.reconnects),
            pending: c.in_flight.count(),
            lag: (lag != u64::MAX).then_some(lag),
        }
    }
}
