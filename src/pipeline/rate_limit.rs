//! At most `allowed` events per `interval` through a stage (Broadway's
//! `rate_limiting: [allowed_messages:, interval:]`), enforced by demand.
//!
//! The [`RateLimiter`] subscribes to its producers with manual demand and asks them
//! only for what it may pass. It counts as "held" every event it asked for and has
//! not delivered yet (asked, in flight, queued in it, in its output buffer). At the
//! start of each interval it asks for `allowed - held` more. So the events it
//! delivers within one interval never exceed `allowed`: all of them were asked for
//! by that interval's start, when at most `allowed` were held. Nothing is dropped:
//! what a slow consumer does not take simply stays held, and no more is asked.
//!
//! The guarantee is per interval of the limiter's own schedule; a window of the same
//! length that straddles two intervals can see up to two intervals' worth, and any
//! window of `w` intervals at most `allowed * (w + 1)`.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::{OptionsError, StartError};
use crate::stage::{
    start_producer_consumer, CancelReason, Context, Demand, HandleCast, HandleInfo, Init, Peer,
    ProducerConsumer, ProducerConsumerOptions, Reason, Stage, StageRef, SubscriptionInfo,
    SubscriptionRef, Tag,
};

use super::timer::Timer;

/// A rate: at most `allowed` events per `interval`.
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::RateLimit;
/// let r = RateLimit::new(50, Duration::from_secs(1))?;
/// assert_eq!((r.allowed(), r.interval()), (50, Duration::from_secs(1)));
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
}

impl RateLimit {
    /// `allowed` events per `interval`; both must be greater than zero.
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
        Ok(RateLimit { allowed, interval })
    }

    /// A rate in events per second: whole rates get 1-second intervals, fractional
    /// ones (0.5/s) one event per `1/rate` seconds.
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

    /// Events allowed per interval.
    pub fn allowed(&self) -> usize {
        self.allowed
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// What starts a new interval.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Ticks {
    /// The limiter's own timer, every `interval` (the default).
    #[default]
    Clock,
    /// Only [`Tick`] messages you send (`send_info(Tick)`): for tests, or to drive
    /// the limiter from a clock of your own.
    Manual,
}

/// Starts a new interval of a [`RateLimiter`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tick;

struct Upstream {
    from: SubscriptionRef,
    asked: u64,
    received: u64,
}

/// A producer-consumer that passes its events on unchanged, at most
/// [`RateLimit::allowed`] per interval. Change the rate while it runs with
/// `cast(RateLimit)`: the new rate applies from the next interval.
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::{RateLimit, RateLimiter, Tick, Ticks};
/// use stageflow::prelude::*;
/// let source = from_iter(0..10u32, FromIterOptions::new())?;
/// let limiter = RateLimiter::new(RateLimit::new(4, Duration::from_secs(1))?)
///     .ticks(Ticks::Manual)
///     .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))?;
/// let mut out = stream(&limiter);
/// let first: Vec<u32> = out.by_ref().take(4).collect::<Result<_, _>>()?;
/// assert_eq!(first, [0, 1, 2, 3]);
/// limiter.send_info(Tick)?; // the next interval: 4 more
/// let next: Vec<u32> = out.by_ref().take(4).collect::<Result<_, _>>()?;
/// assert_eq!(next, [4, 5, 6, 7]);
/// assert_eq!(limiter.metrics().events_out, 8);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RateLimiter<T> {
    limit: RateLimit,
    ticks: Ticks,
    upstream: HashMap<Tag, Upstream>,
    /// Asked of producers still subscribed, plus received from gone ones.
    asked: u64,
    timer: Option<Timer>,
    next_tick: Option<Instant>,
    _events: std::marker::PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for RateLimiter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("ticks", &self.ticks)
            .field("asked", &self.asked)
            .finish()
    }
}

/// The timer's wake-up.
#[derive(Debug)]
pub struct IntervalElapsed(Instant);

impl<T: Send + 'static> RateLimiter<T> {
    /// A limiter with this rate, driven by its own clock.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            ticks: Ticks::Clock,
            upstream: HashMap::new(),
            asked: 0,
            timer: None,
            next_tick: None,
            _events: std::marker::PhantomData,
        }
    }

    /// What starts intervals (default [`Ticks::Clock`]).
    pub fn ticks(mut self, ticks: Ticks) -> Self {
        self.ticks = ticks;
        self
    }

    /// Starts the limiter as a producer-consumer.
    pub fn start(
        self,
        options: ProducerConsumerOptions<T, T>,
    ) -> Result<StageRef<Self>, StartError> {
        start_producer_consumer(self, options)
    }

    /// Asks producers for what may pass in this interval.
    fn top_up(&mut self, ctx: &mut Context<'_, Self>) {
        let delivered = ctx.myself().metrics().events_out;
        let held = self.asked.saturating_sub(delivered);
        let allowed = self.limit.allowed as u64;
        if held >= allowed || self.upstream.is_empty() {
            return;
        }
        let may = allowed - held;
        // Shared among producers; the first ones get the remainder.
        let n = self.upstream.len() as u64;
        let mut subs: Vec<&mut Upstream> = self.upstream.values_mut().collect();
        subs.sort_by_key(|u| u.from.tag());
        for (i, up) in subs.into_iter().enumerate() {
            let share = may / n + u64::from((i as u64) < may % n);
            if share > 0 {
                up.asked += share;
                self.asked += share;
                up.from.ask(share as usize);
            }
        }
    }

    fn schedule(&mut self, after: Instant) {
        if let Some(timer) = &self.timer {
            let at = after + self.limit.interval;
            self.next_tick = Some(at);
            timer.schedule(at);
        }
    }
}

impl<T: Send + 'static> Stage for RateLimiter<T> {
    type In = T;
    type Out = T;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        if self.ticks == Ticks::Manual {
            return Init::Ok;
        }
        let me = ctx.myself().clone();
        match Timer::start(ctx.myself().name(), move |now| {
            me.send_info(IntervalElapsed(now)).is_ok()
        }) {
            Ok(timer) => {
                self.timer = Some(timer);
                self.schedule(Instant::now());
                Init::Ok
            }
            Err(e) => Init::Stop(Reason::custom(format!(
                "rate limiter could not start its timer thread: {e}"
            ))),
        }
    }

    fn handle_subscribe(
        &mut self,
        peer: Peer,
        _: &SubscriptionInfo,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Demand, Reason> {
        if peer == Peer::Producer {
            self.upstream.insert(
                from.tag(),
                Upstream {
                    from: from.clone(),
                    asked: 0,
                    received: 0,
                },
            );
            // The current interval's budget, if any is left.
            self.top_up(ctx);
            return Ok(Demand::Manual);
        }
        Ok(Demand::Automatic)
    }

    fn handle_cancel(
        &mut self,
        _: CancelReason,
        from: &SubscriptionRef,
        _: &mut Context<'_, Self>,
    ) {
        if let Some(up) = self.upstream.remove(&from.tag()) {
            // What it was asked and never sent will not come: stop counting it held.
            self.asked -= up.asked - up.received;
        }
    }

    fn terminate(&mut self, _: &Reason) {
        self.timer = None;
    }
}

impl<T: Send + 'static> ProducerConsumer for RateLimiter<T> {
    fn handle_events(
        &mut self,
        events: Vec<T>,
        from: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        if let Some(up) = self.upstream.get_mut(&from.tag()) {
            up.received += events.len() as u64;
        }
        ctx.emit_batch(events);
    }
}

impl<T: Send + 'static> HandleInfo<Tick> for RateLimiter<T> {
    fn handle_info(&mut self, _: Tick, ctx: &mut Context<'_, Self>) {
        self.top_up(ctx);
    }
}

impl<T: Send + 'static> HandleInfo<IntervalElapsed> for RateLimiter<T> {
    fn handle_info(&mut self, IntervalElapsed(now): IntervalElapsed, ctx: &mut Context<'_, Self>) {
        let Some(due) = self.next_tick else {
            return;
        };
        if now < due {
            return;
        }
        // The next interval starts a full interval after this one began (or now, if
        // the stage fell behind by more than an interval): never two in one.
        let start = if now - due >= self.limit.interval {
            now
        } else {
            due
        };
        self.schedule(start);
        self.top_up(ctx);
    }
}

impl<T: Send + 'static> HandleCast<RateLimit> for RateLimiter<T> {
    fn handle_cast(&mut self, limit: RateLimit, _: &mut Context<'_, Self>) {
        self.limit = limit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crossbeam_channel::{bounded, Receiver, Sender};

    const WAIT: Duration = Duration::from_secs(10);

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
    type Setup = (
        StageRef<RateLimiter<u32>>,
        Receiver<Vec<u32>>,
        StageRef<Sink>,
        Source,
    );

    fn setup(allowed: usize, items: u32, gate: Option<Receiver<()>>) -> Setup {
        let source = from_iter(0..items, FromIterOptions::new()).unwrap();
        let limiter = RateLimiter::new(RateLimit::new(allowed, Duration::from_secs(1)).unwrap())
            .ticks(Ticks::Manual)
            .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))
            .unwrap();
        let (tx, rx) = bounded(1000);
        let sink = start_consumer(
            Sink { tx, gate },
            ConsumerOptions::new().subscribe_to(&limiter, SubscribeOptions::new().max_demand(3)),
        )
        .unwrap();
        (limiter, rx, sink, source)
    }

    /// Receives until `n` events came.
    fn take(rx: &Receiver<Vec<u32>>, n: usize) -> Vec<u32> {
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(rx.recv_timeout(WAIT).expect("events within the budget"));
        }
        got
    }

    #[test]
    fn passes_at_most_allowed_per_interval_and_nothing_is_lost() {
        let (limiter, rx, sink, _source) = setup(5, 12, None);
        assert_eq!(take(&rx, 5), vec![0, 1, 2, 3, 4]);
        // Only a tick asks for more: whatever else happens, no sixth event.
        assert_eq!(limiter.estimate_buffered_count().unwrap(), 0);
        assert_eq!(limiter.metrics().events_out, 5, "no more than the budget");
        assert!(rx.try_recv().is_err());
        limiter.send_info(Tick).unwrap();
        assert_eq!(take(&rx, 5), vec![5, 6, 7, 8, 9]);
        limiter.send_info(Tick).unwrap();
        assert_eq!(take(&rx, 2), vec![10, 11]);
        assert_eq!(sink.join(), Reason::Normal);
        assert_eq!(limiter.join(), Reason::Normal);
    }

    #[test]
    fn a_slow_consumer_gets_no_burst_after_it_catches_up() {
        // The sink is held in its first batch while three intervals pass: events it
        // did not take stay held, so no budget piles up for when it catches up.
        let (gate_tx, gate) = bounded(0);
        let (limiter, rx, _sink, source) = setup(4, 100, Some(gate));
        rx.recv_timeout(WAIT).expect("first batch");
        for _ in 0..3 {
            limiter.send_info(Tick).unwrap();
        }
        // Round trips in order: the limiter handled the ticks (and sent its asks), the
        // source answered them, the limiter received the answers.
        limiter.estimate_buffered_count().unwrap();
        source.estimate_buffered_count().unwrap();
        limiter.estimate_buffered_count().unwrap();
        let m = limiter.metrics();
        assert!(
            m.events_in <= m.events_out + 4,
            "held more than one interval: {m:?}"
        );
        // Without the held rule three ticks would have asked 3 x 4 more.
        assert!(m.events_in < 4 + 3 * 4, "{m:?}");
        drop(gate_tx);
    }

    #[test]
    fn rate_change_applies_from_the_next_interval() {
        let (limiter, rx, _sink, _source) = setup(2, 100, None);
        assert_eq!(take(&rx, 2).len(), 2);
        limiter
            .cast(RateLimit::new(6, Duration::from_secs(1)).unwrap())
            .unwrap();
        limiter.send_info(Tick).unwrap();
        assert_eq!(take(&rx, 6), vec![2, 3, 4, 5, 6, 7]);
        assert_eq!(limiter.estimate_buffered_count().unwrap(), 0);
        assert_eq!(limiter.metrics().events_out, 8);
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
        // 30 events at 10 per 50 ms: at least 2 intervals must pass, so at least
        // 100 ms; and the run ends (no event lost or stuck).
        let source = from_iter(0..30u32, FromIterOptions::new()).unwrap();
        let started = Instant::now();
        let limiter = RateLimiter::new(RateLimit::new(10, Duration::from_millis(50)).unwrap())
            .start(ProducerConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))
            .unwrap();
        let got: Vec<u32> = stream(&limiter).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, (0..30).collect::<Vec<_>>());
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
