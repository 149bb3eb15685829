//! Time for windows and triggers: clocks (the real one and a manual one for tests) and
//! units of time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::flow::error::{invalid, FlowError};

/// A source of processing time for periodic windows and triggers.
///
/// ```
/// use std::time::Duration;
/// use stageflow::flow::{Clock, SystemClock};
/// assert!(SystemClock::default().now() < Duration::from_secs(3600));
/// ```
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The real clock (`Instant`); the default of every window.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::flow::{SystemClock, Unit, Window};
/// let _w = Window::<u8>::periodic(1, Unit::Second).clock(Arc::new(SystemClock::default()));
/// ```
#[derive(Debug)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that moves only when told to: makes time-based tests deterministic.
///
/// ```
/// use std::time::Duration;
/// use stageflow::flow::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(clock.now(), Duration::from_millis(250));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at time zero, shareable with `Arc`.
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A unit of time for window durations and periodic triggers.
///
/// ```
/// use stageflow::flow::Unit;
/// assert_eq!(Unit::Minute.to_ms(2), 120_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// 1 ms.
    Millisecond,
    /// 1 000 ms.
    Second,
    /// 60 000 ms.
    Minute,
    /// 3 600 000 ms.
    Hour,
}

impl Unit {
    /// Milliseconds in `n` units (Elixir's private `to_ms`).
    ///
    /// ```
    /// use stageflow::flow::Unit;
    /// assert_eq!(Unit::Hour.to_ms(10), 36_000_000);
    /// ```
    pub fn to_ms(self, n: u64) -> u64 {
        n.saturating_mul(match self {
            Unit::Millisecond => 1,
            Unit::Second => 1_000,
            Unit::Minute => 60_000,
            Unit::Hour => 3_600_000,
        })
    }

    /// `n` units as a [`Duration`] (saturating, as [`Unit::to_ms`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::flow::Unit;
    /// assert_eq!(Unit::Minute.duration(2), Duration::from_secs(120));
    /// ```
    pub fn duration(self, n: u64) -> Duration {
        Duration::from_millis(self.to_ms(n))
    }
}

/// `d` in whole milliseconds, or the error naming `option` if it is under one
/// millisecond or not whole (windows count time in milliseconds, as Elixir Flow).
pub(super) fn whole_ms(option: &'static str, d: Duration) -> Result<u64, FlowError> {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || d.subsec_nanos() % 1_000_000 != 0 {
        return Err(invalid(
            option,
            format!("{d:?}"),
            "expected a duration of whole milliseconds, at least one",
        ));
    }
    Ok(ms)
}
