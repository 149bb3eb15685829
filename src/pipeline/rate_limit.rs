//! At most `allowed` events per `interval` through a stage, in every window of that
//! length wherever it starts (Broadway's `rate_limiting: [allowed_messages:,
//! interval:]`, made to hold in sliding windows), enforced by demand. The promise,
//! how it is kept and what a change of rate does are documented on [`RateLimiter`],
//! where users see them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{OptionsError, StartError};
use crate::observe::Counter;
use crate::stage::{
    start_producer_consumer, CancelReason, Context, Demand, HandleCast, HandleInfo, Init, Peer,
    ProducerConsumer, ProducerConsumerOptions, Reason, Stage, StageRef, SubscriptionInfo,
    SubscriptionRef, Tag,
};

/// A rate: at most `allowed` events in any window of length `interval`, plus an
/// optional burst (default 0: events evenly spaced, `interval / allowed` apart).
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::RateLimit;
/// let r = RateLimit::new(50, Duration::from_secs(1))?;
/// assert_eq!((r.allowed(), r.interval(), r.burst()), (50, Duration::from_secs(1), 0));
/// assert_eq!(r.spacing(), Duration::from_millis(20));
/// assert_eq!(r.with_burst(10).burst(), 10);
/// let err = RateLimit::new(0, Duration::from_secs(1)).unwrap_err();
/// assert_eq!(err.to_string(), "expected allowed_messages to be greater than 0, got: 0");
/// let err = RateLimit::per_second(-5.0).unwrap_err();
/// assert_eq!(err.to_string(), "expected a rate greater than 0 per second, got: -5");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    allowed: usize,
    interval: Duration,
    burst: usize,
}

impl RateLimit {
    /// `allowed` events per `interval`; both must be greater than zero. No burst.
    pub fn new(allowed: usize, interval: Duration) -> Result<Self, OptionsError> {
        if allowed == 0 {
            return Err(OptionsError::new(
                "expected allowed_messages to be greater than 0, got: 0",
            ));
        }
        if interval.is_zero() {
            return Err(OptionsError::new(
                "expected interval to be greater than 0, got: 0ns",
            ));
        }
        Ok(RateLimit {
            allowed,
            interval,
            burst: 0,
        })
    }

    /// A rate in events per second: whole rates get 1-second intervals, fractional
    /// ones (0.5/s) one event per `1/rate` seconds. No burst.
    pub fn per_second(rate: f64) -> Result<Self, OptionsError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(OptionsError::new(format!(
                "expected a rate greater than 0 per second, got: {rate}"
            )));
        }
        if rate >= 1.0 && rate.fract() == 0.0 && rate <= usize::MAX as f64 {
            RateLimit::new(rate as usize, Duration::from_secs(1))
        } else {
            RateLimit::new(1, Duration::from_secs_f64(1.0 / rate))
        }
    }

    /// The same rate with a burst of `burst` events: after idling, up to `burst`
    /// events may go early, so a window of `interval` holds at most
    /// `allowed + burst`. The burst is earned back at the rate's own pace (one
    /// event's worth per [`spacing`](Self::spacing) of idling).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::pipeline::RateLimit;
    /// let r = RateLimit::new(10, Duration::from_secs(1))?.with_burst(5);
    /// assert_eq!((r.allowed(), r.burst()), (10, 5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_burst(mut self, burst: usize) -> Self {
        self.burst = burst;
        self
    }

    /// Events allowed per interval (beyond the burst).
    pub fn allowed(&self) -> usize {
        self.allowed
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Events that may go early after idling (default 0).
    pub fn burst(&self) -> usize {
        self.burst
    }

    /// The smallest distance between two events without burst: `interval /
    /// allowed`, rounded up to the nanosecond.
    pub fn spacing(&self) -> Duration {
        duration_from_nanos(self.spacing_nanos())
    }

    fn spacing_nanos(&self) -> u128 {
        self.interval.as_nanos().div_ceil(self.allowed as u128)
    }

    /// How far ahead of its smooth schedule the burst lets an event go.
    fn tolerance_nanos(&self) -> u128 {
        self.spacing_nanos().saturating_mul(self.burst as u128)
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// The arithmetic of the limit, on plain nanosecond timestamps (since any origin),
/// so that it can be checked with explicit instants.
///
/// Why it holds: each passed event `k` at `t_k` satisfies `t_k >= tat_{k-1} - tau`
/// and sets `tat_k >= max(tat_{k-1}, t_k) + spacing`, so `tat` grows by at least
/// `spacing` per event. For events `i < j`:
/// `t_j >= tat_{j-1} - tau >= t_i + (j - i) * spacing - tau`. If `i..=j` fit in a
/// window of length `interval`, `t_j - t_i < interval <= allowed * spacing`, hence
/// `j - i < allowed + burst`: at most `allowed + burst` events.
#[derive(Clone, Debug)]
struct Gcra {
    spacing: u128,
    tau: u128,
    /// When the next event is due on the smooth schedule.
    tat: u128,
}

impl Gcra {
    fn new(limit: &RateLimit) -> Self {
        Gcra {
            spacing: limit.spacing_nanos(),
            tau: limit.tolerance_nanos(),
            tat: 0,
        }
    }

    /// The earliest instant at which the next event may pass.
    fn earliest(&self) -> u128 {
        self.tat.saturating_sub(self.tau)
    }

    fn admits(&self, now: u128) -> bool {
        now >= self.earliest()
    }

    /// An event passes at `now` (which the caller checked with `admits`).
    fn pass(&mut self, now: u128) {
        self.tat = self.tat.max(now).saturating_add(self.spacing);
    }

    /// The rate changes at `now`: what passed stays paid for at the old spacing and
    /// the new burst starts used up, so the next event is due at the later of `now`
    /// and the old smooth schedule, and after it the new spacing applies.
    fn change(&mut self, now: u128, limit: &RateLimit) {
        let next = self.tat.max(now);
        self.spacing = limit.spacing_nanos();
        self.tau = limit.tolerance_nanos();
        self.tat = next.saturating_add(self.tau);
    }
}

/// What wakes the limiter when the next event becomes due.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Ticks {
    /// A timer on the limiter's own loop (`Context::send_after`, the default).
    #[default]
    Clock,
    /// Only [`Tick`] messages you send (`send_info(Tick)`): for tests with a clock
    /// of your own ([`RateLimiter::clock`]), or to drive the limiter yourself.
    Manual,
}

/// Makes a [`RateLimiter`] look at its clock now and pass what is due.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tick;

/// The timer's wake-up: the next event may be due.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NextDue;

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// A producer-consumer that passes its events on unchanged, at most
/// [`RateLimit::allowed`] `+` [`RateLimit::burst`] in any window of
/// [`RateLimit::interval`], wherever it starts. Change the rate while it runs with
/// `cast(RateLimit)`.
///
/// # The promise
///
/// With a limit of `allowed` per `interval` and a burst of `b` (default 0), no window
/// `[t, t + interval)` holds more than `allowed + b` events that left the limiter,
/// for any `t`. With no burst the events are spaced at least `interval / allowed`
/// apart (rounded up to the nanosecond, so never closer); a burst lets up to `b`
/// events go early after the limiter has been idle, and is earned back at the
/// limit's pace.
///
/// A fixed-window counter ("at most 50 in each second of the limiter's schedule")
/// does not give this: 50 at the end of one second and 50 at the start of the next
/// are 100 within a few milliseconds. The limiter is therefore a GCRA (generic cell
/// rate algorithm, a token bucket kept as one timestamp): it remembers the
/// theoretical arrival time `tat` of the next event, lets an event pass at `now` if
/// `now >= tat - b * spacing`, and then sets `tat = max(tat, now) + spacing`.
///
/// # Enforced by demand
///
/// The limiter subscribes to its producers with manual demand and asks them
/// for one event at a time, only when that event may pass now. The event is handed
/// to the limiter only while its consumers have demand for it (that is how a
/// producer-consumer works), so it leaves the limiter the moment it arrives, and
/// what the limiter passes is what its consumers receive, at the times the limit
/// allows. Nothing is dropped and nothing piles up: an event that nobody takes is
/// simply not asked for, and a slow consumer gets no burst when it catches up
/// (beyond the configured one).
///
/// One event per ask costs a message round trip to the producer per event: the
/// limiter is meant for the rates of outside services (its tests run an HTTP client
/// at up to 1 000 per second), not as a throttle for an in-memory pipeline. With several
/// producers it asks them in turn; a producer with nothing to send holds the others
/// up until it sends or leaves, so merge idle-prone sources before the limiter.
///
/// # Changing the rate while running
///
/// `cast(RateLimit)` changes it. The events that already passed stay paid for at the
/// old rate: the next event passes no sooner than the old rate's smooth schedule
/// (its schedule without burst) allows and never before the change, the ones after
/// it at the new spacing, and the new burst has to be earned back by idling. An
/// event asked for before the change passes on the old terms and the change takes
/// effect right after it. So a window that spans a change holds no more events than
/// the faster of the two rates allows in it without burst, and a window wholly on
/// one side keeps that side's `allowed + burst`.
///
/// # Example
///
/// Here with a clock of the example's own, so that nothing depends on timing: 4 per
/// second means one event every 250 ms.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use parking_lot::Mutex;
/// use stageflow::pipeline::{RateLimit, RateLimiter, Tick, Ticks};
/// use stageflow::prelude::*;
/// let now = Arc::new(Mutex::new(Instant::now()));
/// let clock = now.clone();
/// let source = from_iter(0..10u32, FromIterOptions::new())?;
/// let limiter = RateLimiter::new(RateLimit::new(4, Duration::from_secs(1))?)
///     .ticks(Ticks::Manual)
///     .clock(move || *clock.lock())
///     .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))?;
/// let mut out = stream(&limiter);
/// assert_eq!(out.next().transpose()?, Some(0)); // the first passes at once
/// *now.lock() += Duration::from_millis(250);
/// limiter.send_info(Tick)?; // 250 ms later: the next one
/// assert_eq!(out.next().transpose()?, Some(1));
/// assert_eq!(limiter.metrics().events_out, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimiter<T> {
    limit: RateLimit,
    gcra: Gcra,
    ticks: Ticks,
    clock: Clock,
    /// Timestamps are nanoseconds since this instant (set when the stage starts).
    origin: Option<Instant>,
    /// The last reading of the clock: time never runs backwards for the limiter,
    /// whatever the clock does.
    last_now: u128,
    /// Producers in the order they are asked.
    producers: Vec<SubscriptionRef>,
    turn: usize,
    /// The producer asked for one event that has not come yet.
    asked: Option<Tag>,
    /// A change of rate waiting for the asked event to pass.
    change: Option<RateLimit>,
    /// The wake-up the timer has been asked for.
    armed: Option<u128>,
    /// Published as the stage's counter `rate_limited`, registered in `init`.
    waits: Option<Counter>,
    _events: std::marker::PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for RateLimiter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("ticks", &self.ticks)
            .field("producers", &self.producers.len())
            .field("asked", &self.asked)
            .finish()
    }
}

impl<T: Send + 'static> RateLimiter<T> {
    /// A limiter with this rate, driven by its own timer and the system clock.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            gcra: Gcra::new(&limit),
            ticks: Ticks::Clock,
            clock: Arc::new(Instant::now),
            origin: None,
            last_now: 0,
            producers: Vec::new(),
            turn: 0,
            asked: None,
            change: None,
            armed: None,
            waits: None,
            _events: std::marker::PhantomData,
        }
    }

    /// What wakes the limiter when the next event becomes due (default
    /// [`Ticks::Clock`]).
    pub fn ticks(mut self, ticks: Ticks) -> Self {
        self.ticks = ticks;
        self
    }

    /// Where the limiter reads the time (default [`Instant::now`]). With a clock of
    /// your own, use [`Ticks::Manual`] and send [`Tick`] after moving it: the
    /// limiter's timer sleeps by the system clock.
    pub fn clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Starts the limiter as a producer-consumer.
    pub fn start(
        self,
        options: ProducerConsumerOptions<T, T>,
    ) -> Result<StageRef<Self>, StartError> {
        start_producer_consumer(self, options)
    }

    fn now(&mut self) -> u128 {
        let t = (self.clock)();
        let origin = *self.origin.get_or_insert(t);
        self.last_now = self
            .last_now
            .max(t.saturating_duration_since(origin).as_nanos());
        self.last_now
    }

    /// Asks the next producer for one event if one may pass now, or arms the timer
    /// for when it may.
    fn pump(&mut self, ctx: &mut Context<'_, Self>) {
        if self.asked.is_some() || self.producers.is_empty() {
            return;
        }
        let now = self.now();
        if !self.gcra.admits(now) {
            if let Some(waits) = &self.waits {
                waits.add(1);
            }
            self.arm(self.gcra.earliest(), ctx);
            return;
        }
        let from = &self.producers[self.turn % self.producers.len()];
        self.turn = (self.turn + 1) % self.producers.len();
        self.asked = Some(from.tag());
        from.ask(1);
    }

    fn arm(&mut self, at: u128, ctx: &mut Context<'_, Self>) {
        let Some(origin) = self.origin else {
            return;
        };
        if self.ticks == Ticks::Manual {
            return;
        }
        if self.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        // Beyond what an Instant can hold: never due.
        if let Some(instant) = origin.checked_add(duration_from_nanos(at)) {
            self.armed = Some(at);
            ctx.send_after(instant.saturating_duration_since(Instant::now()), NextDue);
        }
    }

    fn set_limit(&mut self, limit: RateLimit) {
        if limit == self.limit {
            return;
        }
        let now = self.now();
        self.gcra.change(now, &limit);
        self.limit = limit;
    }
}

impl<T: Send + 'static> Stage for RateLimiter<T> {
    type In = T;
    type Out = T;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        self.now(); // the origin
        match ctx.counter(
            "rate_limited",
            "Times the limiter held an ask back because the rate did not allow it yet",
        ) {
            Ok(c) => self.waits = Some(c),
            Err(e) => return Init::Stop(Reason::custom(e.message())),
        }
        Init::Ok
    }

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        _: &SubscriptionInfo,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if peer == Peer::Producer {
            self.producers.push(from.clone());
            self.pump(ctx);
            return Ok(Demand::Manual);
        }
        Ok(Demand::Automatic)
    }

    fn handle_cancel(
        &mut self,
        _: CancelReason,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        let tag = from.tag();
        if let Some(i) = self.producers.iter().position(|p| p.tag() == tag) {
            self.producers.remove(i);
            if self.turn > i {
                self.turn -= 1;
            }
        }
        if self.asked == Some(tag) {
            // What it was asked and never sent will not come: ask another.
            self.asked = None;
            if let Some(limit) = self.change.take() {
                self.set_limit(limit);
            }
            self.pump(ctx);
        }
    }
}

impl<T: Send + 'static> ProducerConsumer for RateLimiter<T> {
    fn handle_events(
        &mut self,
        events: Vec<T>,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        // The runtime hands input to a producer-consumer only while its consumers
        // have demand, so what is emitted here leaves now. It is the one event asked
        // for when it could pass, and nothing passed since: it may pass now.
        let now = self.now();
        for event in events {
            debug_assert!(self.gcra.admits(now), "an event came that was not asked");
            self.gcra.pass(now);
            ctx.emit(event);
        }
        if self.asked == Some(from.tag()) {
            self.asked = None;
        }
        if let Some(limit) = self.change.take() {
            self.set_limit(limit);
        }
        self.pump(ctx);
    }
}

impl<T: Send + 'static> HandleInfo<Tick> for RateLimiter<T> {
    fn handle_info(&mut self, _: Tick, ctx: &mut Context<'_, Self>) {
        self.pump(ctx);
    }
}

impl<T: Send + 'static> HandleInfo<NextDue> for RateLimiter<T> {
    fn handle_info(&mut self, _: NextDue, ctx: &mut Context<'_, Self>) {
        let now = self.now();
        if self.armed.is_some_and(|armed| armed <= now) {
            self.armed = None;
        }
        self.pump(ctx);
    }
}

impl<T: Send + 'static> HandleCast<RateLimit> for RateLimiter<T> {
    fn handle_cast(&mut self, limit: RateLimit, ctx: &mut Context<'_, Self>) {
        if self.asked.is_some() {
            // The asked event passes on the terms it was asked under.
            self.change = Some(limit);
            return;
        }
        self.set_limit(limit);
        self.pump(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crossbeam_channel::{bounded, Receiver, Sender};
    use parking_lot::Mutex;
    use proptest::prelude::*;

    const WAIT: Duration = Duration::from_secs(10);
    const SECOND: u128 = 1_000_000_000;
    const MS: u128 = 1_000_000;

    fn limit(allowed: usize, burst: usize) -> RateLimit {
        RateLimit::new(allowed, Duration::from_secs(1))
            .unwrap()
            .with_burst(burst)
    }

    /// Passes an event as soon as the limit allows, at or after `at`.
    fn pass_from(g: &mut Gcra, at: u128) -> u128 {
        let t = at.max(g.earliest());
        assert!(g.admits(t));
        g.pass(t);
        t
    }

    /// The most events of `times` (sorted) in any window `[t, t + len)`.
    fn busiest(times: &[u128], len: u128) -> usize {
        let mut end = 0;
        let mut most = 0;
        for (start, &t) in times.iter().enumerate() {
            while end < times.len() && times[end] < t + len {
                end += 1;
            }
            most = most.max(end - start);
        }
        most
    }

    #[test]
    fn gcra_spaces_events_and_bursts_only_after_idling() {
        // 50 per second: one every 20 ms, the first at once.
        let mut g = Gcra::new(&limit(50, 0));
        let times: Vec<u128> = (0..100).map(|_| pass_from(&mut g, 0)).collect();
        assert_eq!(&times[..3], &[0, 20 * MS, 40 * MS]);
        assert_eq!(busiest(&times, SECOND), 50);

        // A burst of 3: four at once, then the pace; after a second of idling the
        // burst is back.
        let mut g = Gcra::new(&limit(50, 3));
        let first: Vec<u128> = (0..6).map(|_| pass_from(&mut g, 0)).collect();
        assert_eq!(first, [0, 0, 0, 0, 20 * MS, 40 * MS]);
        let later: Vec<u128> = (0..5).map(|_| pass_from(&mut g, 2 * SECOND)).collect();
        assert_eq!(
            later,
            [
                2 * SECOND,
                2 * SECOND,
                2 * SECOND,
                2 * SECOND,
                2 * SECOND + 20 * MS
            ]
        );
        let mut g = Gcra::new(&limit(50, 3));
        let all: Vec<u128> = (0..200).map(|_| pass_from(&mut g, 0)).collect();
        assert_eq!(busiest(&all, SECOND), 53, "allowed + burst");
    }

    #[test]
    fn gcra_spacing_rounds_up() {
        // 3 per second is 333_333_333.3 ns apart: rounded up, never closer.
        let l = RateLimit::new(3, Duration::from_secs(1)).unwrap();
        assert_eq!(l.spacing(), Duration::from_nanos(333_333_334));
        let mut g = Gcra::new(&l);
        let times: Vec<u128> = (0..30).map(|_| pass_from(&mut g, 0)).collect();
        assert_eq!(busiest(&times, SECOND), 3);
        // Huge values saturate instead of overflowing.
        let huge = RateLimit::new(1, Duration::MAX)
            .unwrap()
            .with_burst(usize::MAX);
        let mut g = Gcra::new(&huge);
        pass_from(&mut g, 0);
        pass_from(&mut g, 0);
    }

    #[test]
    fn gcra_change_keeps_what_passed_paid_for() {
        // 10/s (100 ms apart); after one event, 100/s: the next is still due at
        // 100 ms (the old schedule), then 10 ms apart.
        let mut g = Gcra::new(&limit(10, 0));
        assert_eq!(pass_from(&mut g, 0), 0);
        g.change(MS, &limit(100, 0));
        assert_eq!(pass_from(&mut g, 0), 100 * MS);
        assert_eq!(pass_from(&mut g, 0), 110 * MS);
        // Idle, then a change to a rate with a burst: the burst starts used up.
        g.change(5 * SECOND, &limit(100, 5));
        assert_eq!(pass_from(&mut g, 5 * SECOND), 5 * SECOND);
        assert_eq!(pass_from(&mut g, 5 * SECOND), 5 * SECOND + 10 * MS);
        // ... and comes back after idling.
        assert_eq!(pass_from(&mut g, 10 * SECOND), 10 * SECOND);
        assert_eq!(pass_from(&mut g, 10 * SECOND), 10 * SECOND);
    }

    /// Gaps between the wishes to send: often at once, sometimes a pause long
    /// enough to earn a burst back.
    fn gap() -> impl Strategy<Value = u128> {
        prop_oneof![
            3 => Just(0u128),
            2 => 0u128..50 * MS,
            1 => 0u128..3 * SECOND,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any interval and rate, any pattern of arrivals: no window of the interval
        /// holds more than allowed + burst.
        #[test]
        fn no_window_holds_more_than_allowed_plus_burst(
            allowed in 1usize..80,
            burst in 0usize..6,
            interval_ms in 1u64..3000,
            gaps in prop::collection::vec(gap(), 1..400),
        ) {
            let l = RateLimit::new(allowed, Duration::from_millis(interval_ms))
                .unwrap()
                .with_burst(burst);
            let mut g = Gcra::new(&l);
            let mut t = 0;
            let mut times = Vec::new();
            for gap in gaps {
                t = pass_from(&mut g, t + gap);
                times.push(t);
            }
            let most = busiest(&times, Duration::from_millis(interval_ms).as_nanos());
            prop_assert!(most <= allowed + burst, "{} in a window", most);
        }

        /// Rates changing while events flow: a window wholly under one rate keeps
        /// its allowed + burst, and one that spans changes the largest of them.
        #[test]
        fn changes_keep_every_window(
            first in (1usize..60, 0usize..6),
            steps in prop::collection::vec(
                (gap(), prop::option::weighted(0.1, (1usize..60, 0usize..6))),
                1..400,
            ),
        ) {
            let mut current = limit(first.0, first.1);
            let mut g = Gcra::new(&current);
            // (from when, limit)
            let mut regimes = vec![(0u128, current)];
            let mut t = 0;
            let mut times = Vec::new();
            for (gap, change) in steps {
                let at = t + gap;
                if let Some((a, b)) = change {
                    let new = limit(a, b);
                    if new != current {
                        g.change(at, &new);
                        regimes.push((at, new));
                        current = new;
                    }
                }
                t = pass_from(&mut g, at);
                times.push(t);
            }
            let mut end = 0;
            for (start, &w) in times.iter().enumerate() {
                while end < times.len() && times[end] < w + SECOND {
                    end += 1;
                }
                // The limits in force at some point of [w, w + 1 s) (one in force
                // for no time at all still let events pass at that instant).
                let bound = regimes
                    .iter()
                    .enumerate()
                    .filter(|(k, (from, _))| {
                        let until = regimes.get(k + 1).map_or(u128::MAX, |r| r.0);
                        *from < w + SECOND && until >= w
                    })
                    .map(|(_, (_, l))| l.allowed() + l.burst())
                    .max()
                    .unwrap();
                prop_assert!(
                    end - start <= bound,
                    "{} events in the second from {} ns, bound {}",
                    end - start, w, bound
                );
            }
        }
    }

    // ----- the stage, on a clock of the test's own ------------------------------

    /// Records each batch and can be held inside a callback by a gate.
    struct Sink {
        tx: Sender<Vec<u32>>,
        gate: Option<Receiver<()>>,
    }
    impl Stage for Sink {
        type In = u32;
        type Out = Never;
    }
    impl Consumer for Sink {
        fn handle_events(&mut self, e: Vec<u32>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
            self.tx.send(e).unwrap();
            if let Some(g) = &self.gate {
                let _ = g.recv();
            }
        }
    }

    type Source = StageRef<crate::stage::IterProducer<std::ops::Range<u32>>>;

    struct Rig {
        limiter: StageRef<RateLimiter<u32>>,
        rx: Receiver<Vec<u32>>,
        sink: StageRef<Sink>,
        source: Source,
        now: Arc<Mutex<Instant>>,
    }

    impl Rig {
        fn new(l: RateLimit, items: u32, max_demand: usize, gate: Option<Receiver<()>>) -> Rig {
            let now = Arc::new(Mutex::new(Instant::now()));
            let clock = now.clone();
            let source = from_iter(0..items, FromIterOptions::new()).unwrap();
            let limiter = RateLimiter::new(l)
                .ticks(Ticks::Manual)
                .clock(move || *clock.lock())
                .start(
                    ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()),
                )
                .unwrap();
            let (tx, rx) = bounded(1000);
            let sink = start_consumer(
                Sink { tx, gate },
                ConsumerOptions::new()
                    .subscribe_to(&limiter, SubscribeOptions::new().max_demand(max_demand)),
            )
            .unwrap();
            Rig {
                limiter,
                rx,
                sink,
                source,
                now,
            }
        }

        /// Moves the clock on and tells the limiter.
        fn advance(&self, by: Duration) {
            *self.now.lock() += by;
            self.limiter.send_info(Tick).unwrap();
        }

        /// Waits until whatever the limiter may pass now has passed: round trips in
        /// order, each behind the messages the one before caused (the limiter's
        /// ask, the source's event, the limiter's emission), a few times over for
        /// bursts passing one ask at a time.
        fn settle(&self) -> u64 {
            for _ in 0..8 {
                self.limiter.estimate_buffered_count().unwrap();
                self.source.estimate_buffered_count().unwrap();
            }
            self.limiter.estimate_buffered_count().unwrap();
            self.limiter.metrics().events_out
        }

        /// Receives until `n` events came.
        fn take(&self, n: usize) -> Vec<u32> {
            let mut got = Vec::new();
            while got.len() < n {
                got.extend(self.rx.recv_timeout(WAIT).expect("events within the limit"));
            }
            got
        }
    }

    #[test]
    fn passes_one_per_spacing_and_nothing_is_lost() {
        let rig = Rig::new(limit(50, 0), 5, 10, None);
        assert_eq!(rig.take(1), [0], "the first passes at once");
        assert_eq!(rig.settle(), 1);
        rig.advance(Duration::from_millis(19));
        assert_eq!(rig.settle(), 1, "not before 20 ms");
        rig.advance(Duration::from_millis(1));
        assert_eq!(rig.take(1), [1]);
        // A long pause earns nothing without a burst: one, then the pace again.
        rig.advance(Duration::from_secs(5));
        assert_eq!(rig.take(1), [2]);
        rig.limiter.send_info(Tick).unwrap();
        assert_eq!(rig.settle(), 3);
        for expected in 3..5 {
            rig.advance(Duration::from_millis(20));
            assert_eq!(rig.take(1), [expected]);
        }
        assert_eq!(rig.sink.join(), Reason::Normal);
        assert_eq!(rig.limiter.join(), Reason::Normal);
    }

    #[test]
    fn a_burst_goes_at_once_and_comes_back_after_idling() {
        let rig = Rig::new(limit(10, 2), 100, 10, None);
        assert_eq!(rig.take(3), [0, 1, 2], "burst 2: three at once");
        assert_eq!(rig.settle(), 3);
        rig.advance(Duration::from_millis(100));
        assert_eq!(rig.take(1), [3]);
        assert_eq!(rig.settle(), 4);
        // 300 ms of idling earns the burst back (one event's worth per 100 ms).
        rig.advance(Duration::from_millis(300));
        assert_eq!(rig.take(3), [4, 5, 6]);
        assert_eq!(rig.settle(), 7);
    }

    #[test]
    fn a_consumer_that_stops_taking_gets_no_burst_when_it_resumes() {
        // The sink takes one event at a time and is held in its first callback
        // while a second passes of the limiter's clock.
        let (gate_tx, gate) = bounded(0);
        let rig = Rig::new(limit(50, 0), 100, 1, Some(gate));
        assert_eq!(rig.take(1), [0]);
        for _ in 0..5 {
            rig.advance(Duration::from_millis(200));
        }
        // One more was asked for and waits in the limiter for demand; nothing else.
        assert_eq!(rig.settle(), 1);
        assert!(rig.limiter.metrics().events_in <= 2);
        gate_tx.send(()).unwrap();
        assert_eq!(rig.take(1), [1]);
        rig.limiter.send_info(Tick).unwrap();
        assert_eq!(rig.settle(), 2, "one, then the pace: no catching up");
        drop(gate_tx);
    }

    #[test]
    fn a_rate_change_applies_after_what_passed_is_paid_for() {
        let rig = Rig::new(limit(10, 0), 100, 10, None);
        assert_eq!(rig.take(1), [0]);
        // Faster: the next is still due 100 ms after the first, then 10 ms apart.
        rig.limiter.cast(limit(100, 0)).unwrap();
        rig.advance(Duration::from_millis(10));
        assert_eq!(rig.settle(), 1);
        rig.advance(Duration::from_millis(90));
        assert_eq!(rig.take(1), [1]);
        rig.advance(Duration::from_millis(10));
        assert_eq!(rig.take(1), [2]);
        // Slower: 2 per second, 500 ms apart.
        rig.limiter.cast(limit(2, 0)).unwrap();
        rig.advance(Duration::from_millis(10));
        assert_eq!(rig.take(1), [3], "due on the old schedule");
        rig.advance(Duration::from_millis(499));
        assert_eq!(rig.settle(), 4);
        rig.advance(Duration::from_millis(1));
        assert_eq!(rig.take(1), [4]);
    }

    /// A producer that emits one event each time it is told to, once asked.
    struct Gate {
        next: u32,
        demand: usize,
        released: usize,
    }
    impl Gate {
        fn flush(&mut self, ctx: &mut Context<'_, Self>) {
            while self.demand > 0 && self.released > 0 {
                self.demand -= 1;
                self.released -= 1;
                ctx.emit(self.next);
                self.next += 1;
            }
        }
    }
    #[derive(Debug)]
    struct Release;
    impl Stage for Gate {
        type In = Never;
        type Out = u32;
    }
    impl Producer for Gate {
        fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
            self.demand += demand;
            self.flush(ctx);
        }
    }
    impl HandleInfo<Release> for Gate {
        fn handle_info(&mut self, _: Release, ctx: &mut Context<'_, Self>) {
            self.released += 1;
            self.flush(ctx);
        }
    }

    #[test]
    fn a_change_while_an_event_is_asked_for_applies_after_it_passes() {
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = now.clone();
        let gate = start_producer(
            Gate {
                next: 0,
                demand: 0,
                released: 0,
            },
            ProducerOptions::new(),
        )
        .unwrap();
        let limiter = RateLimiter::new(limit(10, 0))
            .ticks(Ticks::Manual)
            .clock(move || *clock.lock())
            .start(ProducerConsumerOptions::new().subscribe_to(&gate, SubscribeOptions::new()))
            .unwrap();
        let (tx, rx) = bounded(100);
        let _sink = start_consumer(
            Sink { tx, gate: None },
            ConsumerOptions::new().subscribe_to(&limiter, SubscribeOptions::new()),
        )
        .unwrap();
        let next = || {
            rx.recv_timeout(WAIT)
                .expect("the next event within the limit")
        };
        let advance = |ms: u64| {
            *now.lock() += Duration::from_millis(ms);
            limiter.send_info(Tick).unwrap();
            limiter.estimate_buffered_count().unwrap();
        };
        // The first event is asked for at once and passes at 0 ms.
        gate.send_info(Release).unwrap();
        assert_eq!(next(), [0]);
        // At 100 ms the next is asked for; the rate drops to 1 per second while the
        // gate holds it.
        advance(100);
        limiter.cast(limit(1, 0)).unwrap();
        advance(50);
        gate.send_info(Release).unwrap();
        assert_eq!(
            next(),
            [1],
            "asked before the change: passes on the old terms"
        );
        // The change applies once it passed at 150 ms: the next is due on the old
        // schedule (250 ms), the one after a second later.
        let passed = |n: u64| {
            // Round trips: the gate took the release, the limiter anything it sent.
            gate.estimate_buffered_count().unwrap();
            limiter.estimate_buffered_count().unwrap();
            assert_eq!(limiter.metrics().events_out, n);
        };
        gate.send_info(Release).unwrap();
        advance(99);
        passed(2);
        advance(1);
        assert_eq!(next(), [2]);
        gate.send_info(Release).unwrap();
        advance(999);
        passed(3);
        advance(1);
        assert_eq!(next(), [3]);
    }

    #[test]
    fn bad_rates_are_rejected_by_name() {
        assert_eq!(
            RateLimit::new(5, Duration::ZERO).unwrap_err().to_string(),
            "expected interval to be greater than 0, got: 0ns"
        );
        assert!(RateLimit::per_second(0.0).is_err());
        assert!(RateLimit::per_second(f64::NAN).is_err());
        let half = RateLimit::per_second(0.5).unwrap();
        assert_eq!(
            (half.allowed(), half.interval()),
            (1, Duration::from_secs(2))
        );
    }

    #[test]
    fn the_clock_keeps_the_rate() {
        // 30 events at 10 per 50 ms, 5 ms apart: the last cannot pass before
        // 29 x 5 ms; and the run ends (no event lost or stuck).
        let source = from_iter(0..30u32, FromIterOptions::new()).unwrap();
        let started = Instant::now();
        let limiter = RateLimiter::new(RateLimit::new(10, Duration::from_millis(50)).unwrap())
            .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))
            .unwrap();
        let got: Vec<u32> = stream(&limiter).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, (0..30).collect::<Vec<_>>());
        assert!(started.elapsed() >= Duration::from_millis(145));
    }

    #[test]
    fn producers_are_asked_in_turn() {
        let a = from_iter(0..3u32, FromIterOptions::new()).unwrap();
        let b = from_iter(100..103u32, FromIterOptions::new()).unwrap();
        let transient = || SubscribeOptions::new().cancel(CancelMode::Transient);
        let limiter = RateLimiter::new(limit(1000, 0))
            .start(
                ProducerConsumerOptions::new()
                    .subscribe_to(&a, transient())
                    .subscribe_to(&b, transient()),
            )
            .unwrap();
        let mut got: Vec<u32> = stream(&limiter).take(6).collect::<Result<_, _>>().unwrap();
        // Both were drained, each in order.
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 100, 101, 102]);
    }
}
