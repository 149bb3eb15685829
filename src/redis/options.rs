//! The options of a [`RedisStreamSource`](super::RedisStreamSource).

use std::time::Duration;

use crate::error::OptionsError;

/// Where a [`RedisStreamSource`](super::RedisStreamSource) reads and how: the server,
/// the stream, the consumer group and this consumer's name, and the knobs of the
/// delivery semantics, each with a documented default.
///
/// ```
/// use std::time::Duration;
/// use stageflow::redis::RedisStreamOptions;
///
/// let options = RedisStreamOptions::new("redis://127.0.0.1:6379/", "jobs", "workers", "worker-1")
///     .max_count(500)
///     .claim_idle(Duration::from_secs(60));
/// assert_eq!(options.dead_letter_key(), "jobs:dead");
/// options.validate()?;
///
/// let bad = RedisStreamOptions::new("redis://127.0.0.1/", "jobs", "workers", "w").max_count(0);
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "expected max_count to be equal to or greater than 1, got: 0"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisStreamOptions {
    pub(crate) url: String,
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) block: Duration,
    pub(crate) max_count: usize,
    pub(crate) claim_idle: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) dead_letter_stream: Option<String>,
    pub(crate) stop_when_idle: bool,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
}

impl RedisStreamOptions {
    /// Read `stream` at `url` (`redis://host:port/db`) as `consumer` of `group`.
    /// Every process (or source) sharing the work uses the same group and its own
    /// consumer name; a consumer name that comes back (a restarted worker) first
    /// takes up the entries it left pending.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        RedisStreamOptions {
            url: url.into(),
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            block: Duration::from_secs(2),
            max_count: 1000,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            dead_letter_stream: None,
            stop_when_idle: false,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// How long one `XREADGROUP` waits for new entries (its `BLOCK`), default 2 s.
    /// It bounds how late the source notices a halt when Redis cannot be told to
    /// wake it, and how often idle entries of other consumers are looked for while
    /// nothing new arrives. At least 1 ms (`BLOCK 0` would wait forever).
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    /// The most entries one read asks for, default 1000: a read's `COUNT` is the
    /// consumers' unmet demand, capped by this.
    pub fn max_count(mut self, max_count: usize) -> Self {
        self.max_count = max_count;
        self
    }

    /// How long an entry must have been pending with another consumer, unacknowledged,
    /// before this one takes it over (`XAUTOCLAIM`'s min-idle-time), default 30 s.
    /// Longer than the slowest batch takes from read to commit, or busy consumers'
    /// entries get processed twice (harmless with an idempotent sink, but wasted).
    pub fn claim_idle(mut self, claim_idle: Duration) -> Self {
        self.claim_idle = claim_idle;
        self
    }

    /// How many deliveries an entry gets, default 5. An entry acknowledged as failed
    /// after its last delivery, or found pending with more deliveries than this
    /// (its consumers died on it), goes to the dead-letter stream instead.
    pub fn max_deliveries(mut self, max_deliveries: u32) -> Self {
        self.max_deliveries = max_deliveries;
        self
    }

    /// The stream dead letters are added to, default `"<stream>:dead"`.
    pub fn dead_letter_stream(mut self, key: impl Into<String>) -> Self {
        self.dead_letter_stream = Some(key.into());
        self
    }

    /// Whether the source ends normally once a read finds nothing new and the
    /// group has no lag and no pending entries at all (every entry was delivered
    /// and acknowledged, by any consumer), default false: a worker that should
    /// exit when the work is done, rather than wait for more.
    pub fn stop_when_idle(mut self, stop: bool) -> Self {
        self.stop_when_idle = stop;
        self
    }

    /// The wait before reconnecting after a dropped connection: `initial`, doubled
    /// at each failed attempt up to `max`; default 100 ms up to 5 s.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// How long connecting may take before the attempt counts as failed, default
    /// 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The stream's key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The dead-letter stream's key (the default if none was set).
    pub fn dead_letter_key(&self) -> String {
        self.dead_letter_stream
            .clone()
            .unwrap_or_else(|| format!("{}:dead", self.stream))
    }

    /// Checks every option; the error names the option and the value.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let bad = |option: &str, expected: &str, got: String| {
            Err(OptionsError::new(format!(
                "expected {option} to be {expected}, got: {got}"
            )))
        };
        for (option, value) in [
            ("url", &self.url),
            ("stream", &self.stream),
            ("group", &self.group),
            ("consumer", &self.consumer),
        ] {
            if value.is_empty() {
                return bad(option, "a non-empty string", format!("{value:?}"));
            }
        }
        if let Err(e) = redis::Client::open(self.url.as_str()) {
            return bad(
                "url",
                "a Redis URL (redis://host:port/db)",
                format!("{:?} ({e})", self.url),
            );
        }
        if self.block < Duration::from_millis(1) {
            return bad("block", "at least 1 ms", format!("{:?}", self.block));
        }
        if self.max_count < 1 {
            return bad(
                "max_count",
                "equal to or greater than 1",
                self.max_count.to_string(),
            );
        }
        if self.claim_idle < Duration::from_millis(1) {
            return bad(
                "claim_idle",
                "at least 1 ms",
                format!("{:?}", self.claim_idle),
            );
        }
        if self.max_deliveries < 1 {
            return bad(
                "max_deliveries",
                "equal to or greater than 1",
                self.max_deliveries.to_string(),
            );
        }
        let dead = self.dead_letter_key();
        if dead.is_empty() || dead == self.stream {
            return bad(
                "dead_letter_stream",
                "a key other than the stream's",
                format!("{dead:?}"),
            );
        }
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            return bad(
                "reconnect_backoff",
                "0 < initial <= max",
                format!("{:?} .. {:?}", self.backoff_initial, self.backoff_max),
            );
        }
        if self.connect_timeout.is_zero() {
            return bad(
                "connect_timeout",
                "more than 0",
                format!("{:?}", self.connect_timeout),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> RedisStreamOptions {
        RedisStreamOptions::new("redis://127.0.0.1:6379/", "s", "g", "c")
    }

    #[test]
    fn defaults_are_valid() {
        let o = ok();
        assert_eq!(o.block, Duration::from_secs(2));
        assert_eq!(o.max_count, 1000);
        assert_eq!(o.claim_idle, Duration::from_secs(30));
        assert_eq!(o.max_deliveries, 5);
        assert!(!o.stop_when_idle);
        assert_eq!(
            (o.backoff_initial, o.backoff_max),
            (Duration::from_millis(100), Duration::from_secs(5))
        );
        assert_eq!(o.validate(), Ok(()));
    }

    #[test]
    fn every_bad_option_is_named_with_its_value() {
        let cases: Vec<(RedisStreamOptions, &str)> = vec![
            (
                RedisStreamOptions::new("", "s", "g", "c"),
                "expected url to be a non-empty string, got: \"\"",
            ),
            (
                RedisStreamOptions::new("u", "s", "g", "c"),
                "expected url to be a Redis URL",
            ),
            (
                RedisStreamOptions::new("redis://h/", "", "g", "c"),
                "expected stream to be",
            ),
            (
                RedisStreamOptions::new("redis://h/", "s", "", "c"),
                "expected group to be",
            ),
            (
                RedisStreamOptions::new("redis://h/", "s", "g", ""),
                "expected consumer to be",
            ),
            (
                ok().block(Duration::ZERO),
                "expected block to be at least 1 ms, got: 0ns",
            ),
            (
                ok().max_count(0),
                "expected max_count to be equal to or greater than 1, got: 0",
            ),
            (
                ok().claim_idle(Duration::ZERO),
                "expected claim_idle to be at least 1 ms, got: 0ns",
            ),
            (
                ok().max_deliveries(0),
                "expected max_deliveries to be equal to or greater than 1, got: 0",
            ),
            (
                ok().dead_letter_stream("s"),
                "expected dead_letter_stream to be a key other than the stream's, got: \"s\"",
            ),
            (
                ok().reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "expected reconnect_backoff to be 0 < initial <= max, got: 2s .. 1s",
            ),
            (
                ok().connect_timeout(Duration::ZERO),
                "expected connect_timeout to be more than 0",
            ),
        ];
        for (options, expected) in cases {
            let err = options.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(expected),
                "{err:?} does not start with {expected:?}"
            );
        }
    }
}
