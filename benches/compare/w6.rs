//! W6: fixed 1 s windows over event time t = i, sum of `value` per key (8 keys) per
//! window (docs/BENCHMARKS.md). Both sides use FxHash maps.

use std::collections::HashMap;

use rayon::prelude::*;
use stageflow::flow::{Flow, FxBuildHasher, Options, Unit, Window};

use crate::harness::Workload;

type Event = (u64, u64, u64); // (t_ms, key, value)

fn expected(n: u64) -> (usize, u64) {
    let windows = n.div_ceil(1000);
    let rows = (windows * 8).min(windows * 1000).min(n.max(1) * 8) as usize;
    let rows = if n < 8 { n as usize } else { rows };
    let full = n / 1000;
    let rest = n % 1000;
    let sum = full * (999 * 1000 / 2) + rest * rest.saturating_sub(1) / 2;
    (rows, sum)
}

fn check(rows: usize, sum: u64, n: u64) -> Result<(), String> {
    let (want_rows, want_sum) = expected(n);
    if rows != want_rows || sum != want_sum {
        return Err(format!(
            "W6: {rows} rows summing to {sum}, expected {want_rows} and {want_sum}"
        ));
    }
    Ok(())
}

pub fn workload(events: Option<u64>) -> Workload {
    let n = events.unwrap_or(5_000_000);
    Workload {
        id: "W6".into(),
        events: n,
        baseline:
            "rayon fold over chunks of 1024 / reduce into HashMap<(window, key), sum>, FxHash",
        stageflow: Box::new(move || {
            let window = Window::fixed(1, Unit::Second, |e: &Event| e.0 as i64);
            // The events are made by the source layer's stages (in parallel), not by
            // the iterator (on the driving thread).
            let rows: Vec<(i64, u64, u64)> = Flow::from_iter(0..n)
                .map(|i| (i, i % 8, i % 1000))
                .partition_by(Options::new().window(window), |e: &Event| e.1)
                .reduce_mut(
                    HashMap::<u64, u64, FxBuildHasher>::default,
                    |m, e: Event| *m.entry(e.1).or_insert(0) += e.2,
                )
                .on_trigger(|m, info| {
                    (
                        m.into_iter().map(|(k, s)| (info.window, k, s)).collect(),
                        HashMap::default(),
                    )
                })
                .try_collect()
                .map_err(|e| e.to_string())?;
            check(rows.len(), rows.iter().map(|r| r.2).sum(), n)
        }),
        hand_written: Box::new(move || {
            // Folded over chunks of consecutive i with a plain loop inside, so the
            // per-event work is inlined in every build (folding per event left inlining
            // to the compiler, whose choice depended on how the crate was split into
            // codegen units; docs/BENCHMARKS.md has the timings).
            const CHUNK: u64 = 1024;
            let m = (0..n.div_ceil(CHUNK))
                .into_par_iter()
                .fold(
                    HashMap::<(u64, u64), u64, FxBuildHasher>::default,
                    |mut m, c| {
                        for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
                            *m.entry((i / 1000 * 1000, i % 8)).or_insert(0) += i % 1000;
                        }
                        m
                    },
                )
                .reduce(HashMap::default, |mut a, b| {
                    for (k, v) in b {
                        *a.entry(k).or_insert(0) += v;
                    }
                    a
                });
            check(m.len(), m.values().sum(), n)
        }),
    }
}
