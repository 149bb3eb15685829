//! W4: a producer with a `BroadcastDispatcher` feeding two consumers (`max_demand`
//! 10 000) that each sum every event; the baseline is one producer thread copying batches to two consumer
//! threads over bounded channels (docs/BENCHMARKS.md).

use std::thread;

use crossbeam_channel::bounded;
use stageflow::dispatcher::BroadcastDispatcher;
use stageflow::prelude::*;

use crate::harness::Workload;
use crate::w3::{run_two, BATCH, MAX_DEMAND};

fn check(n: u64, got: [u64; 2]) -> Result<(), String> {
    let want = n * (n + 1) / 2;
    if got != [want, want] {
        return Err(format!("sums {got:?}, expected {want} each"));
    }
    Ok(())
}

fn stageflow_side(n: u64) -> Result<(), String> {
    let got = run_two(n, BroadcastDispatcher::new(), |_| {
        SubscribeOptions::new().max_demand(MAX_DEMAND)
    })?;
    check(n, got)
}

fn hand_written(n: u64) -> Result<(), String> {
    let (tx0, rx0) = bounded::<Vec<u64>>(4);
    let (tx1, rx1) = bounded::<Vec<u64>>(4);
    let consumer = |rx: crossbeam_channel::Receiver<Vec<u64>>| {
        thread::spawn(move || rx.iter().map(|b| b.iter().sum::<u64>()).sum::<u64>())
    };
    let (h0, h1) = (consumer(rx0), consumer(rx1));
    let producer = thread::spawn(move || {
        let mut next = 1;
        while next <= n {
            let end = (next + BATCH - 1).min(n);
            let batch: Vec<u64> = (next..=end).collect();
            tx0.send(batch.clone()).unwrap();
            tx1.send(batch).unwrap();
            next = end + 1;
        }
    });
    producer.join().map_err(|_| "producer panicked")?;
    let got = [h0.join().unwrap(), h1.join().unwrap()];
    check(n, got)
}

pub fn workload(events: Option<u64>) -> Workload {
    let n = events.unwrap_or(5_000_000);
    Workload {
        id: "W4".into(),
        events: n,
        baseline: "thread copying batches of 5000 to 2 threads, bounded channels",
        stageflow: Box::new(move || stageflow_side(n)),
        hand_written: Box::new(move || hand_written(n)),
    }
}
