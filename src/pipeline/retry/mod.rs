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

mod dead_letters;
mod policy;
mod source;

pub use dead_letters::{DeadLetter, DeadLetters};
pub use policy::{GiveUp, Jitter, RetryDecision, RetryPolicy};
pub use source::{
    Attempt, Carry, Outcome, Outcomes, RetriesFinished, RetryCounts, RetryDue, RetrySource,
    RetryStats,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::error::OptionsError;
    use crate::pipeline::Halt;

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
