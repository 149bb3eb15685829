//! `cargo bench --bench compare`: stageflow against hand-written baselines, side by side.
//!
//! For every workload the harness runs stageflow and its baseline in the same process,
//! alternating, `COMPARE_RUNS` times (default 7), and prints the medians and their
//! ratio (stageflow / baseline). Every run checks its result exactly and the process
//! exits non-zero on a wrong result. docs/BENCHMARKS.md defines the workloads and
//! this output contract:
//!
//! - default output: a markdown table
//!   `| workload | events | stageflow s | baseline | baseline s | ratio | stageflow M events/s |`
//! - `--json`: one JSON object per line with keys `workload, events, stageflow_s,
//!   baseline, baseline_s, ratio, stageflow_meps`
//! - positional arguments filter workloads by id (`W1 W5`)
//! - `COMPARE_EVENTS=N` scales the event count down for a quick run; `COMPARE_RUNS=N`
//!   sets the timed runs per side.

mod harness;
mod stages;
mod w3;
mod w4;
mod w5;
mod w6;
mod w7;
mod w8;
mod w9;
mod words;

use harness::Workload;

fn workloads(events: Option<u64>) -> Vec<Workload> {
    let mut all: Vec<Workload> = Vec::new();
    all.extend(stages::workloads(events));
    all.push(w3::workload(events));
    all.push(w4::workload(events));
    // W5's input is generated and verified once, cached in target/.
    all.push(w5::workload(events));
    all.push(w6::workload(events));
    all.push(w7::workload(events));
    // W8's input is generated once per process, in its warm-up run.
    all.extend(w8::workloads(events));
    // W9 needs the `redis` feature and a reachable Redis; it says why when skipped.
    all.extend(w9::workloads(events));
    all
}

fn main() {
    // W9 starts this binary again as its worker processes.
    if w9::worker() {
        return;
    }
    harness::main(workloads);
}
