//! How many attempts, how long between them, and which errors are worth retrying.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::error::OptionsError;

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
