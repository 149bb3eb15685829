//! The side-by-side timing harness shared by every workload of `compare`.

use std::time::Instant;

/// A run of one side of a workload: does the work, checks the result exactly, and
/// returns an error message on a wrong result.
pub type Run = Box<dyn FnMut() -> Result<(), String>>;

/// One workload: stageflow and its hand-written baseline over the same events.
pub struct Workload {
    /// `W1`, `W1-10k`, ...: what the positional filter matches (by prefix up to `-`).
    pub id: String,
    /// Events per run (for M events/s).
    pub events: u64,
    /// Short description of the baseline.
    pub baseline: &'static str,
    /// The stageflow side.
    pub stageflow: Run,
    /// The hand-written side.
    pub hand_written: Run,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn time(run: &mut Run) -> Result<f64, String> {
    let start = Instant::now();
    run()?;
    Ok(start.elapsed().as_secs_f64())
}

/// `COMPARE_ONLY=stageflow|baseline` runs one side only (for profilers); its
/// ratio column then means nothing.
fn skip(side: &str) -> bool {
    matches!(std::env::var("COMPARE_ONLY"), Ok(only) if only != side)
}

/// Parses the command line, builds the workloads and prints the comparison.
pub fn main(build: fn(Option<u64>) -> Vec<Workload>) {
    let mut json = false;
    let mut filters: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => json = true,
            // cargo bench passes --bench to harness=false targets
            "--bench" => {}
            a if a.starts_with('-') => {}
            a => filters.push(a.to_uppercase()),
        }
    }
    let events = std::env::var("COMPARE_EVENTS").ok().map(|v| {
        v.parse::<u64>()
            .expect("COMPARE_EVENTS must be a whole number")
    });
    let runs: usize = std::env::var("COMPARE_RUNS")
        .ok()
        .map(|v| v.parse().expect("COMPARE_RUNS must be a whole number"))
        .unwrap_or(7)
        .max(1);

    let selected: Vec<Workload> = build(events)
        .into_iter()
        .filter(|w| {
            let base = w.id.split('-').next().unwrap_or(&w.id).to_uppercase();
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| *f == base || *f == w.id.to_uppercase())
        })
        .collect();
    if selected.is_empty() {
        eprintln!("compare: no workload matches {filters:?}");
        std::process::exit(2);
    }
    if !json {
        println!("| workload | events | stageflow s | baseline | baseline s | ratio | stageflow M events/s |");
        println!("|---|---:|---:|---|---:|---:|---:|");
    }
    let mut failed = false;
    for mut w in selected {
        let mut ours = Vec::with_capacity(runs);
        let mut theirs = Vec::with_capacity(runs);
        let mut error = None;
        // One warm-up of each side, then alternate so drift hits both equally.
        let warm = if skip("stageflow") {
            Ok(0.0)
        } else {
            time(&mut w.stageflow)
        };
        let warm = warm.and_then(|_| {
            if skip("baseline") {
                Ok(0.0)
            } else {
                time(&mut w.hand_written)
            }
        });
        if let Err(e) = warm {
            error = Some(e);
        }
        for _ in 0..runs {
            if error.is_some() {
                break;
            }
            let a = if skip("stageflow") {
                Ok(1.0)
            } else {
                time(&mut w.stageflow)
            };
            let pair = a.and_then(|a| {
                if skip("baseline") {
                    Ok((a, 1.0))
                } else {
                    time(&mut w.hand_written).map(|b| (a, b))
                }
            });
            match pair {
                Ok((a, b)) => {
                    ours.push(a);
                    theirs.push(b);
                }
                Err(e) => error = Some(e),
            }
        }
        if let Some(e) = error {
            eprintln!("compare: {} produced a wrong result: {e}", w.id);
            failed = true;
            continue;
        }
        let (s, b) = (median(ours), median(theirs));
        let ratio = s / b;
        let meps = w.events as f64 / s / 1e6;
        if json {
            println!(
                "{{\"workload\":\"{}\",\"events\":{},\"stageflow_s\":{:.6},\"baseline\":\"{}\",\"baseline_s\":{:.6},\"ratio\":{:.3},\"stageflow_meps\":{:.2}}}",
                w.id, w.events, s, w.baseline, b, ratio, meps
            );
        } else {
            println!(
                "| {} | {} | {:.4} | {} | {:.4} | {:.2} | {:.1} |",
                w.id, w.events, s, w.baseline, b, ratio, meps
            );
        }
    }
    if failed {
        std::process::exit(1);
    }
}
