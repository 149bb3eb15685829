//! Runs `examples/rate_limited_api.rs` as a real process (its HTTP server and client
//! talk over a real loopback socket) and checks the rate the server saw and that
//! every item was processed or dead-lettered.

use crate::support::examples;

use std::process::Command;

/// One run of the example: what its server saw.
struct Run {
    rate: u64,
    burst: u64,
    fetchers: u64,
    items: u64,
    stats: serde_json::Value,
}

impl Run {
    fn new(rate: u64, burst: u64, items: u64, fetchers: u64) -> Run {
        let out = Command::new(examples::example("rate_limited_api"))
            .args(["--no-progress", "--stats-json", "--process-ms", "0"])
            // No slow answers: they would hold fetchers and keep the high rates from
            // being approached at all.
            .args(["--slow-percent", "0"])
            .args(["--rate", &rate.to_string(), "--burst", &burst.to_string()])
            .args(["--items", &items.to_string()])
            .args(["--fetchers", &fetchers.to_string()])
            .output()
            .expect("the example runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "--rate {rate}: {}\n{stdout}\n{stderr}",
            out.status
        );
        let json = stdout
            .lines()
            .find_map(|l| l.strip_prefix("STATS "))
            .expect("a STATS line");
        Run {
            rate,
            burst,
            fetchers,
            items,
            stats: serde_json::from_str(json).unwrap(),
        }
    }

    fn ids(&self, key: &str) -> Vec<u64> {
        self.stats[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in the STATS line"))
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    }

    /// Every item was either processed or dead-lettered, exactly once.
    fn check_nothing_lost(&self) {
        let processed = self.ids("processed");
        let dead = self.ids("dead");
        let mut all: Vec<u64> = processed.iter().chain(&dead).copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..self.items).collect::<Vec<_>>(),
            "--rate {}: processed {processed:?} dead {dead:?}",
            self.rate
        );
        if self.items > 101 {
            // The server's permanent failures: 66 always answers 500 (retried, then
            // given up), 100 answers 404 (not retryable).
            assert!(dead.contains(&66) && dead.contains(&100), "dead: {dead:?}");
        }
    }

    /// No 1-second window, wherever it starts, held more than rate + burst requests
    /// at the server, give or take the requests on their way: counted by this test
    /// from the arrival times, and as the example itself reports it.
    ///
    /// The limiter keeps rate + burst exactly at its output (its unit tests check
    /// that with explicit instants). The server sees each request some time later,
    /// after a fetcher thread woke, built it and sent it; that delay varies (a new
    /// connection, a busy machine: tens of milliseconds here), so a window that
    /// starts at the server can also hold requests that left the limiter before
    /// it and were still on their way. Each fetcher has at most one on its way (it
    /// asks for the next when its request is answered), so at most `fetchers` more.
    /// A limiter that counts per interval of its own fails this at once: at 10 per
    /// second the server saw 20 requests within one second, ten of them within 13 ms.
    fn check_sliding_windows(&self) {
        let mut arrivals = self.ids("arrivals_us");
        arrivals.sort_unstable();
        assert!(
            arrivals.len() as u64 >= self.items,
            "--rate {}: {} requests for {} items",
            self.rate,
            arrivals.len(),
            self.items
        );
        let limit = self.rate + self.burst + self.fetchers;
        let mut end = 0;
        for (start, &t) in arrivals.iter().enumerate() {
            while end < arrivals.len() && arrivals[end] < t + 1_000_000 {
                end += 1;
            }
            assert!(
                (end - start) as u64 <= limit,
                "--rate {} --burst {} --fetchers {}: {} requests in the second from {} us: {:?}",
                self.rate,
                self.burst,
                self.fetchers,
                end - start,
                t,
                &arrivals[start..end.min(start + 40)]
            );
        }
        let reported = self.stats["sliding_max"].as_u64().unwrap();
        eprintln!(
            "--rate {} --burst {} --fetchers {}: {} requests, busiest 1 s window {reported}",
            self.rate,
            self.burst,
            self.fetchers,
            arrivals.len()
        );
        assert!(
            reported <= limit,
            "the example reports {reported} in a window"
        );
        // Nor can the run have been faster than the rate allows overall: n requests
        // need at least (n - limit) / rate seconds after the first window.
        let span_us = arrivals.last().unwrap() - arrivals.first().unwrap();
        let n = arrivals.len() as u64;
        assert!(
            n <= limit || span_us >= (n - limit) * 1_000_000 / self.rate,
            "--rate {}: {n} requests in {span_us} us",
            self.rate
        );
    }
}

/// The rate is a promise about every 1-second window, not about seconds of the
/// limiter's own schedule: a window that straddles two of them must not see two
/// seconds' worth. A slow machine spreads the limiter's output further apart, never
/// closer, and the allowance for requests on their way covers the rest, so the bound
/// holds however loaded the machine is. Runs are sized to about two seconds each at
/// their rate; the high rates get more fetchers so that the limiter, not the
/// fetchers, sets the pace.
#[test]
fn no_second_of_server_arrivals_exceeds_rate_plus_burst() {
    for (rate, burst, items, fetchers) in [
        (10, 0, 20, 2),
        (50, 0, 100, 3),
        (200, 0, 400, 4),
        (1000, 0, 2000, 8),
        (50, 10, 100, 3),
    ] {
        let run = Run::new(rate, burst, items, fetchers);
        run.check_nothing_lost();
        run.check_sliding_windows();
        if items >= 100 {
            // Retries happened, and went through the limiter like first attempts:
            // the server counted them in its windows above.
            assert!(run.stats["retries"].as_u64().unwrap() > 0);
        }
    }
}

#[test]
fn bad_flags_are_rejected_clearly() {
    for (args, message) in [
        (
            &["--rate", "0"][..],
            "--rate must be greater than 0, got: 0",
        ),
        (
            &["--rate", "-3"][..],
            "--rate must be greater than 0, got: -3",
        ),
        (&["--burst", "-1"][..], "--burst must be 0 or more, got: -1"),
        (
            &["--fail-percent", "140"][..],
            "--fail-percent must be between 0 and 100, got: 140",
        ),
    ] {
        let out = Command::new(examples::example("rate_limited_api"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}
