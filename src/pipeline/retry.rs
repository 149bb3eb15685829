//! Retrying events that failed, and keeping those that still fail.
//!
//! - [`RetryPolicy`]: how many attempts, exponential backoff with jitter, and which
//!   errors are worth retrying.
//! - [`DeadLetters`]: where an event goes, with its error, once the policy gives up —
//!   a channel or a function of yours. Nothing is dropped silently.
//! - [`RetrySource`]: a producer of [`Attempt`]s over your events that takes failed
//!   attempts back (through [`Outcomes`]) and emits them again when their backoff has
//!   passed. Retries so go through the same stages as first attempts: behind a
//!   [`RateLimiter`](super::RateLimiter), a retry is rate-limited too (Broadway's
//!   producers redeliver the same way). It ends when its events are exhausted and
//!   every attempt was reported done or dead-lettered.

use std::cmp::Ordering as CmpOrdering;
use std::collections::hash_map::RandomState;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::{OptionsError, StartError};
use crate::observe::Counter;
use crate::stage::{
    start_producer, Context, HandleCast, HandleInfo, Init, Never, Producer, ProducerOptions,
    Reason, Stage, StageRef,
};

use super::ack::{Acks, Message};
use super::drain::Halt;

/// Why a policy stopped retrying an event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The error is not one the policy retries.
    NotRetryable,
    /// The event failed `max_attempts` times.
    AttemptsExhausted,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::NotRetryable => f.write_str("not retryable"),
            GiveUp::AttemptsExhausted => f.write_str("attempts exhausted"),
        }
    }
}

/// What to do with an event whose attempt failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop: the event goes to the dead letters.
    GiveUp(GiveUp),
}

/// A small random source for backoff jitter (xorshift64*). Seed it for repeatable
/// tests; [`Jitter::from_entropy`] for programs.
///
/// ```
/// let mut a = stageflow::pipeline::Jitter::seeded(7);
/// let mut b = stageflow::pipeline::Jitter::seeded(7);
/// let x = a.unit();
/// assert!((0.0..1.0).contains(&x));
/// assert_eq!(x, b.unit());
/// ```
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator with this seed.
    pub fn seeded(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Jitter(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// A generator seeded from the process's hashing randomness.
    pub fn from_entropy() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        Jitter::seeded(h.finish())
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Retryable<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;

/// How a failed event is retried: at most `max_attempts` attempts in all; before
/// attempt `n + 1` it waits `initial_backoff * multiplier^(n-1)`, at most
/// `max_backoff`, spread by `± jitter` (a fraction) so that failures do not retry in
/// lockstep; only errors for which `retry_if` holds are retried (default: all).
///
/// Defaults: 3 attempts, 100 ms initial backoff, 10 s maximum, multiplier 2, jitter
/// 0.2. Bad values are errors naming the option.
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::{GiveUp, Jitter, RetryDecision, RetryPolicy};
/// let policy = RetryPolicy::<u16>::new(4)?
///     .backoff(Duration::from_millis(100), Duration::from_millis(250))?
///     .jitter(0.0)?
///     .retry_if(|status| *status >= 500);
/// let mut jitter = Jitter::seeded(1);
/// assert_eq!(policy.decide(1, &503, &mut jitter), RetryDecision::RetryAfter(Duration::from_millis(100)));
/// assert_eq!(policy.decide(2, &503, &mut jitter), RetryDecision::RetryAfter(Duration::from_millis(200)));
/// assert_eq!(policy.decide(3, &503, &mut jitter), RetryDecision::RetryAfter(Duration::from_millis(250)));
/// assert_eq!(policy.decide(4, &503, &mut jitter), RetryDecision::GiveUp(GiveUp::AttemptsExhausted));
/// assert_eq!(policy.decide(1, &404, &mut jitter), RetryDecision::GiveUp(GiveUp::NotRetryable));
/// assert_eq!(
///     RetryPolicy::<u16>::new(0).unwrap_err().to_string(),
///     "expected max_attempts to be greater than 0, got: 0"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RetryPolicy<E> {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    jitter: f64,
    retryable: Retryable<E>,
}

impl<E> Clone for RetryPolicy<E> {
    fn clone(&self) -> Self {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            multiplier: self.multiplier,
            jitter: self.jitter,
            retryable: self.retryable.clone(),
        }
    }
}

impl<E> fmt::Debug for RetryPolicy<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("multiplier", &self.multiplier)
            .field("jitter", &self.jitter)
            .finish()
    }
}

impl<E> RetryPolicy<E> {
    /// At most `max_attempts` attempts per event (1: never retry), with the default
    /// backoff.
    pub fn new(max_attempts: u32) -> Result<Self, OptionsError> {
        if max_attempts == 0 {
            return Err(OptionsError::new(
                "expected max_attempts to be greater than 0, got: 0",
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            retryable: Arc::new(|_| true),
        })
    }

    /// The first delay and the largest one (`0 < initial <= max`).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Result<Self, OptionsError> {
        if initial.is_zero() {
            return Err(OptionsError::new(
                "expected initial_backoff to be greater than 0, got: 0ns",
            ));
        }
        if max < initial {
            return Err(OptionsError::new(format!(
                "expected max_backoff to be at least initial_backoff ({initial:?}), got: {max:?}"
            )));
        }
        self.initial_backoff = initial;
        self.max_backoff = max;
        Ok(self)
    }

    /// Growth of the delay per attempt (`>= 1`).
    pub fn multiplier(mut self, multiplier: f64) -> Result<Self, OptionsError> {
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(OptionsError::new(format!(
                "expected multiplier to be at least 1, got: {multiplier}"
            )));
        }
        self.multiplier = multiplier;
        Ok(self)
    }

    /// Spread of each delay, a fraction in `[0, 1]`: the delay is multiplied by a
    /// random factor in `[1 - jitter, 1 + jitter]` (then capped at `max_backoff`).
    pub fn jitter(mut self, jitter: f64) -> Result<Self, OptionsError> {
        if !(0.0..=1.0).contains(&jitter) {
            return Err(OptionsError::new(format!(
                "expected jitter to be between 0 and 1, got: {jitter}"
            )));
        }
        self.jitter = jitter;
        Ok(self)
    }

    /// Retry only errors for which `retryable` returns true.
    pub fn retry_if(mut self, retryable: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.retryable = Arc::new(retryable);
        self
    }

    /// The most attempts an event gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before attempt `failed_attempts + 1`, for a random `unit` in `[0, 1)`.
    pub fn delay(&self, failed_attempts: u32, unit: f64) -> Duration {
        let exp = self
            .multiplier
            .powi(failed_attempts.saturating_sub(1).min(1000) as i32);
        let base = self.initial_backoff.as_secs_f64() * exp;
        let spread = 1.0 + self.jitter * (2.0 * unit - 1.0);
        let secs = (base * spread).min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }

    /// What to do after attempt number `attempt` (1-based) failed with `error`.
    pub fn decide(&self, attempt: u32, error: &E, jitter: &mut Jitter) -> RetryDecision {
        if !(self.retryable)(error) {
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        } else if attempt >= self.max_attempts {
            RetryDecision::GiveUp(GiveUp::AttemptsExhausted)
        } else {
            RetryDecision::RetryAfter(self.delay(attempt, jitter.unit()))
        }
    }
}

/// An event that the retry policy gave up on, with its last error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter<T, E> {
    /// The event.
    pub event: T,
    /// The error of its last attempt.
    pub error: E,
    /// How many attempts it had.
    pub attempts: u32,
    /// Why the policy gave up.
    pub reason: GiveUp,
}

type DeadFn<T, E> = Box<dyn FnMut(DeadLetter<T, E>) -> Result<(), DeadLetter<T, E>> + Send>;

/// Where dead letters go: a channel or a function of yours.
///
/// ```
/// use stageflow::pipeline::{DeadLetter, DeadLetters, GiveUp};
/// let (tx, rx) = crossbeam_channel::unbounded();
/// let mut dead = DeadLetters::channel(tx);
/// dead.send(DeadLetter { event: 7, error: "boom", attempts: 3, reason: GiveUp::AttemptsExhausted }).unwrap();
/// assert_eq!(rx.recv().unwrap().event, 7);
/// drop(rx);
/// // A destination that is gone hands the letter back.
/// let back = dead.send(DeadLetter { event: 8, error: "boom", attempts: 1, reason: GiveUp::NotRetryable });
/// assert_eq!(back.unwrap_err().event, 8);
/// ```
pub struct DeadLetters<T, E> {
    send: DeadFn<T, E>,
}

impl<T, E> fmt::Debug for DeadLetters<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeadLetters")
    }
}

impl<T: Send + 'static, E: Send + 'static> DeadLetters<T, E> {
    /// Dead letters are sent on `tx`.
    pub fn channel(tx: Sender<DeadLetter<T, E>>) -> Self {
        DeadLetters {
            send: Box::new(move |letter| tx.send(letter).map_err(|e| e.into_inner())),
        }
    }

    /// Dead letters are passed to `f` (write them to a file, a table, a log).
    pub fn from_fn(mut f: impl FnMut(DeadLetter<T, E>) + Send + 'static) -> Self {
        DeadLetters {
            send: Box::new(move |letter| {
                f(letter);
                Ok(())
            }),
        }
    }

    /// Delivers one letter; hands it back if the destination is gone.
    pub fn send(&mut self, letter: DeadLetter<T, E>) -> Result<(), DeadLetter<T, E>> {
        (self.send)(letter)
    }
}

/// Dead letters of [`Message`]s acknowledge their message as failed, so that its
/// source decides what happens next (a broker redelivers it or moves it to its own
/// dead-letter queue). The failure's text is the last error, with the attempts and
/// why the policy gave up: `"timeout (gave up after 3 attempts: attempts exhausted)"`.
///
/// ```
/// use std::sync::Arc;
/// use stageflow::pipeline::{DeadLetter, DeadLetters, GiveUp, InMemoryAcks, Message};
/// let source = Arc::new(InMemoryAcks::new());
/// let letter = |i| DeadLetter {
///     event: Message::new(i, source.hand_out()),
///     error: "timeout",
///     attempts: 3,
///     reason: GiveUp::AttemptsExhausted,
/// };
/// // Only acknowledge:
/// let mut dead = DeadLetters::ack_failed();
/// dead.send(letter(1)).unwrap();
/// assert_eq!(source.failed()[0].error, "timeout (gave up after 3 attempts: attempts exhausted)");
///
/// // Keep the letter (here in a channel), then acknowledge; a destination that is gone
/// // hands the letter back and acknowledges nothing.
/// let (tx, rx) = crossbeam_channel::unbounded();
/// let mut dead = DeadLetters::channel(tx).then_ack_failed();
/// dead.send(letter(2)).unwrap();
/// assert_eq!((rx.recv().unwrap().event.data, source.failed().len()), (2, 2));
/// drop(rx);
/// assert!(dead.send(letter(3)).is_err());
/// assert_eq!((source.failed().len(), source.in_flight().count()), (2, 1));
/// ```
impl<T: Send + 'static, E: fmt::Display + Send + 'static> DeadLetters<Message<T>, E> {
    /// Acknowledges each letter's message as failed, and keeps nothing else.
    pub fn ack_failed() -> Self {
        DeadLetters::from_fn(|letter| {
            let error = failure_text(&letter);
            let mut acks = Acks::new();
            acks.failed(&letter.event, error);
            acks.send();
        })
    }

    /// Delivers each letter here first, then acknowledges its message as failed; a
    /// letter handed back (the destination is gone) is not acknowledged.
    pub fn then_ack_failed(mut self) -> Self {
        DeadLetters {
            send: Box::new(move |letter| {
                let ack = letter.event.ack_ref().cloned();
                let error = failure_text(&letter);
                (self.send)(letter)?;
                if let Some(ack) = ack {
                    let mut acks = Acks::new();
                    acks.failed_ref(&ack, error);
                    acks.send();
                }
                Ok(())
            }),
        }
    }
}

fn failure_text<T, E: fmt::Display>(letter: &DeadLetter<T, E>) -> String {
    format!(
        "{} (gave up after {} attempt{}: {})",
        letter.error,
        letter.attempts,
        if letter.attempts == 1 { "" } else { "s" },
        letter.reason
    )
}

/// One attempt at processing an event: attempt `number` (1 for the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt<T> {
    /// The event.
    pub event: T,
    /// 1-based attempt number.
    pub number: u32,
}

/// What downstream stages report to a [`RetrySource`] about its attempts.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// This many attempts succeeded (or were otherwise finished with).
    Done(u64),
    /// This attempt failed with this error.
    Failed(Attempt<T>, E),
}

type ReportFn<T, E> = Arc<dyn Fn(Outcome<T, E>) -> Result<(), Outcome<T, E>> + Send + Sync>;

/// A cloneable reporter of outcomes to a [`RetrySource`]. Every attempt it emitted
/// must be reported once, done or failed: the source ends only when all were.
pub struct Outcomes<T, E> {
    report: ReportFn<T, E>,
}

impl<T, E> Clone for Outcomes<T, E> {
    fn clone(&self) -> Self {
        Outcomes {
            report: self.report.clone(),
        }
    }
}

impl<T, E> fmt::Debug for Outcomes<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Outcomes")
    }
}

impl<T, E> Outcomes<T, E> {
    /// `n` attempts are done. False if the source is gone.
    pub fn done(&self, n: u64) -> bool {
        n == 0 || (self.report)(Outcome::Done(n)).is_ok()
    }

    /// `attempt` failed with `error`: the source retries it or dead-letters it. If the
    /// source is gone, both are handed back.
    pub fn failed(&self, attempt: Attempt<T>, error: E) -> Result<(), (Attempt<T>, E)> {
        match (self.report)(Outcome::Failed(attempt, error)) {
            Ok(()) => Ok(()),
            Err(Outcome::Failed(a, e)) => Err((a, e)),
            Err(Outcome::Done(_)) => unreachable!("a failure is handed back as a failure"),
        }
    }
}

/// Counters of a [`RetrySource`], readable while it runs and after.
#[derive(Clone, Debug, Default)]
pub struct RetryStats {
    inner: Arc<RetryCounters>,
}

#[derive(Debug, Default)]
struct RetryCounters {
    first_attempts: AtomicU64,
    retries: AtomicU64,
    done: AtomicU64,
    dead_lettered: AtomicU64,
}

/// A snapshot of [`RetryStats`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryCounts {
    /// Events emitted for their first attempt.
    pub first_attempts: u64,
    /// Attempts emitted again after a failure.
    pub retries: u64,
    /// Attempts reported done.
    pub done: u64,
    /// Events given up on and sent to the dead letters.
    pub dead_lettered: u64,
}

impl RetryStats {
    /// The counters now.
    pub fn snapshot(&self) -> RetryCounts {
        let c = &self.inner;
        RetryCounts {
            first_attempts: c.first_attempts.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            done: c.done.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

struct Due<T> {
    at: Instant,
    seq: u64,
    attempt: Attempt<T>,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Due<T> {}
impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Due<T> {
    // Reversed: the max-heap yields the earliest first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The timer's wake-up (sent with `Context::send_after`).
#[derive(Debug)]
pub struct RetryDue(());

/// Sent to itself when everything is finished, behind its last events.
#[derive(Debug)]
pub struct RetriesFinished(());

/// A producer of [`Attempt`]s: first attempts of the events of an iterator, and
/// retries of failed attempts once their backoff passed (retries first). Failed
/// attempts come back through [`Outcomes`]; the [`RetryPolicy`] decides between a
/// retry and the [`DeadLetters`]. It stops normally when the iterator is exhausted
/// (or the source is halted with [`Halt`]) and every attempt was reported.
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::{Attempt, DeadLetters, Outcomes, RetryPolicy, RetrySource};
/// use stageflow::prelude::*;
///
/// // Fails odd numbers on their first attempt, and 5 always.
/// struct Work(Outcomes<u32, String>, Vec<u32>);
/// impl Stage for Work { type In = Attempt<u32>; type Out = Never; }
/// impl Consumer for Work {
///     fn handle_events(&mut self, batch: Vec<Attempt<u32>>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
///         let mut done = 0;
///         for a in batch {
///             if a.event == 5 || (a.event % 2 == 1 && a.number == 1) {
///                 let error = format!("{} failed", a.event);
///                 self.0.failed(a, error).expect("source alive");
///             } else {
///                 self.1.push(a.event);
///                 done += 1;
///             }
///         }
///         self.0.done(done);
///     }
/// }
/// let (dead_tx, dead_rx) = crossbeam_channel::unbounded();
/// let policy = RetryPolicy::new(3)?.backoff(Duration::from_millis(1), Duration::from_millis(5))?;
/// let source = RetrySource::new(0..8u32, policy, DeadLetters::channel(dead_tx));
/// let stats = source.stats();
/// let source = source.start(ProducerOptions::new())?;
/// let work = start_consumer(
///     Work(RetrySource::outcomes(&source), Vec::new()),
///     ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()),
/// )?;
/// assert_eq!(work.join(), Reason::Normal);
/// let dead: Vec<_> = dead_rx.try_iter().collect();
/// assert_eq!(dead.len(), 1);
/// assert_eq!((dead[0].event, dead[0].attempts, dead[0].error.as_str()), (5, 3, "5 failed"));
/// let counts = stats.snapshot();
/// assert_eq!((counts.first_attempts, counts.done, counts.dead_lettered), (8, 7, 1));
/// assert_eq!(counts.retries, 3 + 2); // 1, 3, 7 once; 5 twice
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RetrySource<I: Iterator, E> {
    fresh: Option<I>,
    policy: RetryPolicy<E>,
    jitter: Jitter,
    dead: DeadLetters<I::Item, E>,
    due: BinaryHeap<Due<I::Item>>,
    seq: u64,
    demand: usize,
    in_flight: u64,
    armed: Option<Instant>,
    finishing: bool,
    stats: RetryStats,
    /// Published as the stage's counters `retries` and `dead_letters`, registered
    /// in `init`.
    published: Option<(Counter, Counter)>,
}

impl<I: Iterator, E> fmt::Debug for RetrySource<I, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrySource")
            .field("in_flight", &self.in_flight)
            .field("waiting_retries", &self.due.len())
            .finish()
    }
}

impl<I, E> RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    /// A source over `events`, retrying by `policy`, giving up into `dead`.
    pub fn new(
        events: impl IntoIterator<IntoIter = I>,
        policy: RetryPolicy<E>,
        dead: DeadLetters<I::Item, E>,
    ) -> Self {
        RetrySource {
            fresh: Some(events.into_iter()),
            policy,
            jitter: Jitter::from_entropy(),
            dead,
            due: BinaryHeap::new(),
            seq: 0,
            demand: 0,
            in_flight: 0,
            armed: None,
            finishing: false,
            stats: RetryStats::default(),
            published: None,
        }
    }

    /// Use this jitter generator (seed it for repeatable runs).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Its counters, to read while it runs and after.
    pub fn stats(&self) -> RetryStats {
        self.stats.clone()
    }

    /// Starts it as a producer.
    pub fn start(
        self,
        options: ProducerOptions<Attempt<I::Item>>,
    ) -> Result<StageRef<Self>, StartError> {
        start_producer(self, options)
    }

    /// The reporter for downstream stages.
    pub fn outcomes(source: &StageRef<Self>) -> Outcomes<I::Item, E> {
        let source = source.clone();
        Outcomes {
            report: Arc::new(move |outcome| {
                // A cast fails only when the stage is gone, and then hands the
                // message back.
                source.cast(Carry(outcome)).map_err(|e| e.into_inner().0)
            }),
        }
    }

    /// Emits due retries, then first attempts, up to the demand.
    fn serve(&mut self, ctx: &mut Context<'_, Self>) {
        let now = Instant::now();
        let mut first = 0;
        let mut retries = 0;
        while self.demand > 0 {
            if self.due.peek().is_some_and(|d| d.at <= now) {
                let due = self.due.pop().expect("peeked");
                ctx.emit(due.attempt);
                retries += 1;
            } else if let Some(fresh) = &mut self.fresh {
                match fresh.next() {
                    Some(event) => {
                        ctx.emit(Attempt { event, number: 1 });
                        first += 1;
                    }
                    None => {
                        self.fresh = None;
                        continue;
                    }
                }
            } else {
                break;
            }
            self.demand -= 1;
        }
        self.in_flight += first + retries;
        self.stats
            .inner
            .first_attempts
            .fetch_add(first, Ordering::Relaxed);
        self.stats
            .inner
            .retries
            .fetch_add(retries, Ordering::Relaxed);
        if let (Some((published, _)), true) = (&self.published, retries > 0) {
            published.add(retries);
        }
        if self.demand > 0 {
            if let Some(next) = self.due.peek().map(|d| d.at) {
                if self.armed.map_or(true, |at| next < at) {
                    let delay = next.saturating_duration_since(Instant::now());
                    ctx.send_after(delay, RetryDue(()));
                    self.armed = Some(next);
                }
            }
        }
        self.check_end(ctx);
    }

    fn check_end(&mut self, ctx: &mut Context<'_, Self>) {
        if !self.finishing && self.fresh.is_none() && self.due.is_empty() && self.in_flight == 0 {
            self.finishing = true;
            let _ = ctx.myself().async_info(RetriesFinished(()));
        }
    }

    fn failed(&mut self, attempt: Attempt<I::Item>, error: E, ctx: &mut Context<'_, Self>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match self.policy.decide(attempt.number, &error, &mut self.jitter) {
            RetryDecision::RetryAfter(delay) => {
                self.seq += 1;
                self.due.push(Due {
                    at: Instant::now() + delay,
                    seq: self.seq,
                    attempt: Attempt {
                        event: attempt.event,
                        number: attempt.number + 1,
                    },
                });
                self.serve(ctx);
            }
            RetryDecision::GiveUp(reason) => {
                crate::stage::trace::dead_lettered(attempt.number, &reason);
                let letter = DeadLetter {
                    event: attempt.event,
                    error,
                    attempts: attempt.number,
                    reason,
                };
                if self.dead.send(letter).is_err() {
                    // Losing it silently is not an option: stop, with the reason.
                    ctx.stop(Reason::custom(
                        "the dead-letter destination is gone; an event that failed could not be recorded",
                    ));
                    return;
                }
                self.stats
                    .inner
                    .dead_lettered
                    .fetch_add(1, Ordering::Relaxed);
                if let Some((_, dead)) = &self.published {
                    dead.add(1);
                }
                self.check_end(ctx);
            }
        }
    }
}

/// An outcome on its way to the source.
pub struct Carry<T, E>(Outcome<T, E>);

impl<T, E> fmt::Debug for Carry<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Carry")
    }
}

impl<I, E> Stage for RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    type In = Never;
    type Out = Attempt<I::Item>;

    fn init(&mut self, ctx: &mut Context<'_, Self>) -> Init {
        let published = ctx
            .counter("retries", "Attempts emitted again after a failure")
            .and_then(|r| {
                let d = ctx.counter("dead_letters", "Events given up on and dead-lettered")?;
                Ok((r, d))
            });
        match published {
            Ok(p) => {
                self.published = Some(p);
                Init::Ok
            }
            Err(e) => Init::Stop(Reason::custom(e.message())),
        }
    }
}

impl<I, E> Producer for RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        self.demand += demand;
        self.serve(ctx);
    }
}

impl<I, E> HandleCast<Carry<I::Item, E>> for RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    fn handle_cast(&mut self, carry: Carry<I::Item, E>, ctx: &mut Context<'_, Self>) {
        match carry.0 {
            Outcome::Done(n) => {
                self.in_flight = self.in_flight.saturating_sub(n);
                self.stats.inner.done.fetch_add(n, Ordering::Relaxed);
                self.check_end(ctx);
            }
            Outcome::Failed(attempt, error) => self.failed(attempt, error, ctx),
        }
    }
}

impl<I, E> HandleInfo<RetryDue> for RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    fn handle_info(&mut self, _: RetryDue, ctx: &mut Context<'_, Self>) {
        self.armed = None;
        self.serve(ctx);
    }
}

impl<I, E> HandleInfo<RetriesFinished> for RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    fn handle_info(&mut self, _: RetriesFinished, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// Halting stops taking new events; attempts already taken (and their retries) are
/// finished first.
impl<I, E> HandleInfo<Halt> for RetrySource<I, E>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
    E: Send + 'static,
{
    fn handle_info(&mut self, _: Halt, ctx: &mut Context<'_, Self>) {
        self.fresh = None;
        self.check_end(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy<&'static str> {
        RetryPolicy::new(5).unwrap()
    }

    #[test]
    fn bad_options_name_the_option_and_value() {
        let e = |r: Result<RetryPolicy<&str>, OptionsError>| r.unwrap_err().to_string();
        assert_eq!(
            e(policy().backoff(Duration::ZERO, Duration::from_secs(1))),
            "expected initial_backoff to be greater than 0, got: 0ns"
        );
        assert_eq!(
            e(policy().backoff(Duration::from_secs(2), Duration::from_secs(1))),
            "expected max_backoff to be at least initial_backoff (2s), got: 1s"
        );
        assert_eq!(
            e(policy().multiplier(0.5)),
            "expected multiplier to be at least 1, got: 0.5"
        );
        assert_eq!(
            e(policy().multiplier(-2.0)),
            "expected multiplier to be at least 1, got: -2"
        );
        assert_eq!(
            e(policy().jitter(-0.1)),
            "expected jitter to be between 0 and 1, got: -0.1"
        );
        assert_eq!(
            e(policy().jitter(1.5)),
            "expected jitter to be between 0 and 1, got: 1.5"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jitter_stays_in_bounds() {
        let p = policy()
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .unwrap()
            .jitter(0.5)
            .unwrap();
        let mut j = Jitter::seeded(42);
        for attempt in 1..5u32 {
            let base = 0.1 * 2f64.powi(attempt as i32 - 1);
            for _ in 0..200 {
                let RetryDecision::RetryAfter(d) = p.decide(attempt, &"e", &mut j) else {
                    panic!("attempt {attempt} must be retried");
                };
                let s = d.as_secs_f64();
                assert!(
                    s >= base * 0.5 - 1e-9 && s <= (base * 1.5).min(1.0) + 1e-9,
                    "{s} for {attempt}"
                );
            }
        }
        assert_eq!(
            p.decide(5, &"e", &mut j),
            RetryDecision::GiveUp(GiveUp::AttemptsExhausted)
        );
        // Jitter actually varies the delay.
        let a = p.delay(2, 0.0);
        let b = p.delay(2, 0.999);
        assert!(b > a);
    }

    use crate::prelude::*;
    use crossbeam_channel::{bounded, unbounded, Receiver};

    /// Fails every attempt of the events it is told to, reports the rest done.
    struct Worker {
        outcomes: Outcomes<u32, &'static str>,
        fail: fn(&Attempt<u32>) -> bool,
        seen: crossbeam_channel::Sender<Attempt<u32>>,
    }
    impl Stage for Worker {
        type In = Attempt<u32>;
        type Out = Never;
    }
    impl Consumer for Worker {
        fn handle_events(
            &mut self,
            batch: Vec<Attempt<u32>>,
            _: &SubscriptionRef,
            _: &mut Context<'_, Self>,
        ) {
            let mut done = 0;
            for a in batch {
                let _ = self.seen.send(a.clone());
                if (self.fail)(&a) {
                    self.outcomes.failed(a, "boom").expect("source alive");
                } else {
                    done += 1;
                }
            }
            self.outcomes.done(done);
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    type Source = StageRef<RetrySource<std::ops::Range<u32>, &'static str>>;
    type Run = (Source, StageRef<Worker>, RetryStats, Receiver<Attempt<u32>>);

    fn fast(attempts: u32) -> RetryPolicy<&'static str> {
        RetryPolicy::new(attempts)
            .unwrap()
            .backoff(Duration::from_millis(1), Duration::from_millis(2))
            .unwrap()
    }

    fn run(
        events: std::ops::Range<u32>,
        policy: RetryPolicy<&'static str>,
        dead: DeadLetters<u32, &'static str>,
        fail: fn(&Attempt<u32>) -> bool,
    ) -> Run {
        let source = RetrySource::new(events, policy, dead).jitter(Jitter::seeded(9));
        let stats = source.stats();
        let source = source.start(ProducerOptions::new()).unwrap();
        let (seen_tx, seen) = unbounded();
        let worker = start_consumer(
            Worker {
                outcomes: RetrySource::outcomes(&source),
                fail,
                seen: seen_tx,
            },
            ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(4)),
        )
        .unwrap();
        (source, worker, stats, seen)
    }

    #[test]
    fn every_event_ends_done_or_dead_lettered_with_its_attempts() {
        let (dead_tx, dead_rx) = unbounded();
        let (source, worker, stats, seen) =
            run(0..20, fast(3), DeadLetters::channel(dead_tx), |n| {
                n.event % 5 == 0
            });
        assert_eq!(worker.join(), Reason::Normal);
        assert_eq!(source.join(), Reason::Normal);
        let dead: Vec<_> = dead_rx.try_iter().collect();
        let mut dead_events: Vec<u32> = dead.iter().map(|d| d.event).collect();
        dead_events.sort_unstable();
        assert_eq!(dead_events, vec![0, 5, 10, 15]);
        assert!(dead.iter().all(|d| d.attempts == 3 && d.error == "boom"));
        assert!(dead.iter().all(|d| d.reason == GiveUp::AttemptsExhausted));
        let c = stats.snapshot();
        assert_eq!(
            c,
            RetryCounts {
                first_attempts: 20,
                retries: 8,
                done: 16,
                dead_lettered: 4
            }
        );
        // Attempts are numbered: 1, 2, 3 for a failing event.
        let numbers: Vec<u32> = seen
            .try_iter()
            .filter(|a| a.event == 5)
            .map(|a| a.number)
            .collect();
        assert_eq!(numbers, vec![1, 2, 3]);
    }

    #[test]
    fn not_retryable_errors_go_straight_to_the_dead_letters() {
        let letters = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let l = letters.clone();
        let policy = fast(5).retry_if(|e: &&str| *e != "boom");
        let (_source, worker, stats, _) = run(
            0..3,
            policy,
            DeadLetters::from_fn(move |d| l.lock().push(d)),
            |n| n.event == 1,
        );
        assert_eq!(worker.join(), Reason::Normal);
        let letters = letters.lock();
        assert_eq!(letters.len(), 1);
        assert_eq!(
            (letters[0].event, letters[0].attempts, letters[0].reason),
            (1, 1, GiveUp::NotRetryable)
        );
        assert_eq!(stats.snapshot().retries, 0);
    }

    #[test]
    fn a_dead_letter_destination_that_is_gone_stops_the_source_with_a_reason() {
        let (dead_tx, dead_rx) = bounded(1);
        drop(dead_rx);
        let (source, _worker, _, _) = run(0..3, fast(1), DeadLetters::channel(dead_tx), |_| true);
        let reason = source.join_timeout(WAIT).expect("the source stops");
        assert!(
            reason
                .to_string()
                .contains("dead-letter destination is gone"),
            "{reason}"
        );
    }

    #[test]
    fn halt_finishes_what_was_taken_including_retries() {
        // An endless source; every event fails its first attempt, then succeeds, so
        // retries are pending when the halt comes.
        let source = RetrySource::new(0u32.., fast(3), DeadLetters::from_fn(|_| {}));
        let stats = source.stats();
        let source = source.start(ProducerOptions::new()).unwrap();
        let (seen_tx, seen) = unbounded::<Attempt<u32>>();
        let outcomes = RetrySource::outcomes(&source);
        let worker = start_consumer(
            Worker {
                outcomes,
                fail: |a| a.number == 1,
                seen: seen_tx,
            },
            ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(4)),
        )
        .unwrap();
        seen.recv_timeout(WAIT).expect("work started");
        source.send_info(Halt).unwrap();
        assert_eq!(worker.join_timeout(WAIT), Some(Reason::Normal));
        let c = stats.snapshot();
        assert_eq!(c.done + c.dead_lettered, c.first_attempts, "{c:?}");
        assert_eq!(
            c.retries, c.first_attempts,
            "every taken event was retried: {c:?}"
        );
    }

    #[test]
    fn outcomes_to_a_gone_source_are_handed_back() {
        let source = RetrySource::new(0..1u32, fast(2), DeadLetters::from_fn(|_| {}))
            .start(ProducerOptions::new())
            .unwrap();
        let outcomes: Outcomes<u32, &str> = RetrySource::outcomes(&source);
        source.stop(Reason::Shutdown).unwrap();
        let back = outcomes
            .failed(
                Attempt {
                    event: 7,
                    number: 1,
                },
                "boom",
            )
            .unwrap_err();
        assert_eq!(
            back,
            (
                Attempt {
                    event: 7,
                    number: 1
                },
                "boom"
            )
        );
        assert!(!outcomes.done(1));
    }

    #[test]
    fn jitter_is_uniformish() {
        let mut j = Jitter::seeded(3);
        let n = 10_000;
        let below_half = (0..n).filter(|_| j.unit() < 0.5).count();
        assert!((4_000..6_000).contains(&below_half), "{below_half}");
    }
}
