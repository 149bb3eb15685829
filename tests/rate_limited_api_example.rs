//! Runs `examples/rate_limited_api.rs` as a real process (its HTTP server and client
//! talk over a real loopback socket) and checks the rate the server saw and that
//! every item was processed or dead-lettered.

#[path = "examples_common/mod.rs"]
mod common;

use std::process::Command;

#[test]
fn the_server_never_sees_more_than_the_rate_and_no_item_is_lost() {
    let rate = 40u64;
    let items = 150u64;
    let fetchers = 3u64;
    let out = Command::new(common::example("rate_limited_api"))
        .args([
            "--no-progress",
            "--stats-json",
            "--process-ms",
            "2",
            "--fetchers",
            "3",
        ])
        .args(["--rate", &rate.to_string(), "--items", &items.to_string()])
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    let json = stdout
        .lines()
        .find_map(|l| l.strip_prefix("STATS "))
        .expect("a STATS line");
    let stats: serde_json::Value = serde_json::from_str(json).unwrap();
    let ids = |key: &str| -> Vec<u64> {
        stats[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };

    // Every item was either processed or dead-lettered, exactly once.
    let processed = ids("processed");
    let dead = ids("dead");
    let mut all: Vec<u64> = processed.iter().chain(&dead).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..items).collect::<Vec<_>>(),
        "processed {processed:?} dead {dead:?}"
    );
    // The server's permanent failures: 66 always answers 500 (retried, then given
    // up), 100 answers 404 (not retryable).
    assert!(dead.contains(&66) && dead.contains(&100), "dead: {dead:?}");
    assert!(stats["retries"].as_u64().unwrap() > 0);

    // The rate. The limiter delivers at most `rate` attempts per 1-second interval
    // of its own schedule. The server's windows are not aligned with those
    // intervals: a window of w seconds overlaps at most w + 1 of them, the +1 being
    // the interval it starts in (for w = 1, the tail of one interval and the head of
    // the next). A request can also reach the server later than its attempt left
    // the limiter, but only while a fetcher holds it, and each fetcher holds at most
    // one (max_demand 1: it asks for the next after its request is answered). So no
    // window of w seconds may hold more than (w + 1) * rate + fetchers requests. A
    // limiter that let requests through unpaced would put all of them in the first
    // second.
    let arrivals = ids("arrivals_ms");
    assert!(
        arrivals.len() as u64 >= items,
        "{} requests",
        arrivals.len()
    );
    let span_s = (arrivals.last().unwrap() - arrivals.first().unwrap()) / 1000 + 1;
    for w in 1..=span_s {
        let mut most = 0;
        let mut end = 0;
        for (start, &t) in arrivals.iter().enumerate() {
            while end < arrivals.len() && arrivals[end] < t + w * 1000 {
                end += 1;
            }
            most = most.max(end - start);
        }
        assert!(
            most as u64 <= (w + 1) * rate + fetchers,
            "{most} requests within {w} s, more than ({w} + 1) x {rate} + {fetchers}"
        );
    }
    // And the run cannot have been faster than the rate allows.
    let needed = arrivals.len() as u64 / rate;
    assert!(
        span_s >= needed,
        "{} requests in about {span_s} s",
        arrivals.len()
    );
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
        (
            &["--fail-percent", "140"][..],
            "--fail-percent must be between 0 and 100, got: 140",
        ),
    ] {
        let out = Command::new(common::example("rate_limited_api"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}
