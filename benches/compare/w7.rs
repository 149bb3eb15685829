//! W7: `Flow::from_iter(0..N).map(x * 2).filter(x % 3 == 0).sum()` against rayon.

use rayon::prelude::*;
use stageflow::flow::Flow;

use crate::harness::Workload;

fn expected(n: u64) -> u64 {
    // x*2 % 3 == 0 exactly when x % 3 == 0: 2 * (0 + 3 + 6 + ...).
    let k = n.div_ceil(3);
    2 * 3 * (k * k.saturating_sub(1) / 2)
}

fn check(sum: u64, n: u64) -> Result<(), String> {
    if sum != expected(n) {
        return Err(format!("W7: sum {sum}, expected {}", expected(n)));
    }
    Ok(())
}

pub fn workload(events: Option<u64>) -> Workload {
    let n = events.unwrap_or(10_000_000);
    Workload {
        id: "W7".into(),
        events: n,
        baseline: "rayon into_par_iter map/filter/sum",
        stageflow: Box::new(move || {
            let s: u64 = Flow::from_iter(0..n)
                .map(|x| x * 2)
                .filter(|x| x % 3 == 0)
                .try_sum()
                .map_err(|e| e.to_string())?;
            check(s, n)
        }),
        hand_written: Box::new(move || {
            let s: u64 = (0..n)
                .into_par_iter()
                .map(|x| x * 2)
                .filter(|x| x % 3 == 0)
                .sum();
            check(s, n)
        }),
    }
}
