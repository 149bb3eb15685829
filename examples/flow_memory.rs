//! Peak memory of a streaming flow does not grow with its input: N events (t = i ms,
//! key = i % 8, value = i % 1000) from an iterator, partitioned by key, summed per key
//! in fixed 1 s windows, rows streamed out as windows close. Prints the rows, a checksum
//! and the process's peak RSS (VmHWM).
//!
//! ```text
//! cargo run --release --example flow_memory -- 1000000
//! cargo run --release --example flow_memory -- 100000000
//! cargo run --release --example flow_memory -- 100000000 mapper   # map + for_each
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use stageflow::flow::{Flow, FxBuildHasher, Options, Unit, Window};

type Event = (u64, u64, u64);

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

const USAGE: &str = "usage: flow_memory [EVENTS] [windowed|mapper]

Runs EVENTS events (default 1000000) through a windowed reduce (default) or a map +
for_each, checks the result and prints the process's peak RSS.";

/// (events, mode), or `None` when help was asked for.
fn parse_args() -> Result<Option<(u64, String)>, String> {
    use lexopt::prelude::*;
    let (mut n, mut mode) = (None, None);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) if n.is_none() => {
                let v = v.to_string_lossy().into_owned();
                n = Some(
                    v.parse::<u64>()
                        .map_err(|e| format!("EVENTS must be a whole number, got {v:?}: {e}"))?,
                );
            }
            Value(v) if mode.is_none() => mode = Some(v.to_string_lossy().into_owned()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Some((
        n.unwrap_or(1_000_000),
        mode.unwrap_or_else(|| "windowed".into()),
    )))
}

fn main() -> std::process::ExitCode {
    // Stages log through the `log` facade: show their warnings and errors on stderr
    // unless RUST_LOG says otherwise (env_logger alone would show only errors).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let (n, mode) = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("flow_memory: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(n, &mode) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flow_memory: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run(n: u64, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let (rows, checksum) = match mode {
        "windowed" => {
            let window = Window::fixed(1, Unit::Second, |e: &Event| e.0 as i64);
            let flow = Flow::from_iter((0..n).map(|i| (i, i % 8, i % 1000)))
                .partition_by(Options::new().window(window), |e: &Event| e.1)
                .reduce(
                    HashMap::<u64, u64, FxBuildHasher>::default,
                    |mut m, e: Event| {
                        *m.entry(e.1).or_insert(0) += e.2;
                        m
                    },
                )
                .on_trigger(|m, info| {
                    (
                        m.into_iter().map(|(k, s)| (info.window, k, s)).collect(),
                        HashMap::default(),
                    )
                });
            let (mut rows, mut sum) = (0u64, 0u64);
            for item in flow.try_iter() {
                let (_, _, s) = item?;
                rows += 1;
                sum += s;
            }
            (rows, sum)
        }
        "mapper" => {
            let sum = AtomicU64::new(0);
            Flow::from_iter(0..n).map(|i| i % 1000).try_for_each(|x| {
                sum.fetch_add(x, Ordering::Relaxed);
            })?;
            (n, sum.into_inner())
        }
        other => return Err(format!("mode must be windowed or mapper, got {other:?}").into()),
    };
    let want: u64 = (n / 1000) * 499_500 + (n % 1000) * (n % 1000).saturating_sub(1) / 2;
    if checksum != want {
        return Err(format!("checksum {checksum}, expected {want}").into());
    }
    println!(
        "mode={mode} events={n} rows={rows} checksum=ok time={:.2}s peak_rss={} KiB",
        start.elapsed().as_secs_f64(),
        peak_rss_kib()
    );
    Ok(())
}
