//! The producer of attempts that takes failed ones back and emits them again.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::error::StartError;
use crate::observe::Counter;
use crate::stage::{
    start_producer, Context, HandleCast, HandleInfo, Init, Never, Producer, ProducerOptions,
    Reason, Stage, StageRef,
};

use super::{DeadLetter, DeadLetters, Jitter, RetryDecision, RetryPolicy};
use crate::pipeline::Halt;

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
