//! Clocks for time-based windows and triggers: the real one and a manual one for tests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
