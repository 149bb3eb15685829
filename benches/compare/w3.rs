//! W3: a producer with a `PartitionDispatcher` (2 partitions, hash `x % 2`) feeding two
//! consumers (`max_demand` 10 000, so batches of 5 000) that sum their events; the baseline is one producer thread routing
//! batches to two consumer threads over bounded channels (docs/BENCHMARKS.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::bounded;
use stageflow::dispatcher::{Dispatcher, PartitionDispatcher};
use stageflow::prelude::*;
use stageflow::PartitionKey;

use crate::harness::Workload;

/// Emits `next..=last` from `handle_demand`, then stops after its last events.
pub struct Numbers {
    pub next: u64,
    pub last: u64,
}

/// Sent to itself once everything was emitted.
pub struct Done;

impl Stage for Numbers {
    type In = Never;
    type Out = u64;
}

impl Producer for Numbers {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        if self.next > self.last {
            return;
        }
        let end = (self.next + demand as u64 - 1).min(self.last);
        ctx.emit_batch((self.next..=end).collect());
        self.next = end + 1;
        if self.next > self.last {
            let _ = ctx.myself().async_info(Done);
        }
    }
}

impl HandleInfo<Done> for Numbers {
    fn handle_info(&mut self, _: Done, ctx: &mut Context<'_, Self>) {
        ctx.stop(Reason::Normal);
    }
}

/// Sums its events; publishes the sum when it terminates.
pub struct Sum {
    pub sum: u64,
    pub out: Arc<AtomicU64>,
}

impl Stage for Sum {
    type In = u64;
    type Out = Never;
    fn terminate(&mut self, _reason: &Reason) {
        self.out.store(self.sum, Ordering::Relaxed);
    }
}

impl Consumer for Sum {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.sum += events.iter().sum::<u64>();
    }
}

/// Starts `Numbers(1..=n)` with `dispatcher` in accumulate mode, subscribes two `Sum`
/// consumers with `opts(i)`, switches to forward and returns both sums.
pub fn run_two<D: Dispatcher<u64>>(
    n: u64,
    dispatcher: D,
    opts: impl Fn(usize) -> SubscribeOptions<u64>,
) -> Result<[u64; 2], String> {
    let producer = start_producer(
        Numbers { next: 1, last: n },
        ProducerOptions::new()
            .dispatcher(dispatcher)
            .demand(DemandMode::Accumulate),
    )
    .map_err(|e| e.to_string())?;
    let outs = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut consumers = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        let c = start_consumer(
            Sum {
                sum: 0,
                out: out.clone(),
            },
            ConsumerOptions::new().subscribe_to(&producer, opts(i)),
        )
        .map_err(|e| e.to_string())?;
        consumers.push(c);
    }
    producer
        .set_demand_mode(DemandMode::Forward)
        .map_err(|e| e.to_string())?;
    for c in &consumers {
        let r = c.join();
        if r != Reason::Normal {
            return Err(format!("consumer exited with {r}"));
        }
    }
    producer.join();
    Ok([
        outs[0].load(Ordering::Relaxed),
        outs[1].load(Ordering::Relaxed),
    ])
}

/// Consumers' `max_demand` on the stageflow side; they re-ask every half of it.
pub const MAX_DEMAND: usize = 10_000;
/// Batch size of the hand-written sides: what the consumers re-ask at a time.
pub const BATCH: u64 = (MAX_DEMAND / 2) as u64;

fn expected(n: u64) -> [u64; 2] {
    let m = n / 2;
    let evens = m * (m + 1);
    [evens, n * (n + 1) / 2 - evens]
}

fn stageflow_side(n: u64) -> Result<(), String> {
    let d = PartitionDispatcher::with_hash(2, |x: u64| {
        Some((x, PartitionKey::Index((x & 1) as usize)))
    })
    .map_err(|e| e.to_string())?;
    let got = run_two(n, d, |i| {
        SubscribeOptions::new().max_demand(MAX_DEMAND).partition(i)
    })?;
    check(n, got)
}

fn check(n: u64, got: [u64; 2]) -> Result<(), String> {
    if got != expected(n) {
        return Err(format!("sums {got:?}, expected {:?}", expected(n)));
    }
    Ok(())
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
            let mut parts = [
                Vec::with_capacity(batch.len() / 2 + 1),
                Vec::with_capacity(batch.len() / 2 + 1),
            ];
            for x in batch {
                parts[(x & 1) as usize].push(x);
            }
            let [p0, p1] = parts;
            tx0.send(p0).unwrap();
            tx1.send(p1).unwrap();
            next = end + 1;
        }
    });
    producer.join().map_err(|_| "producer panicked")?;
    let got = [h0.join().unwrap(), h1.join().unwrap()];
    check(n, got)
}

pub fn workload(events: Option<u64>) -> Workload {
    let n = events.unwrap_or(10_000_000);
    Workload {
        id: "W3".into(),
        events: n,
        baseline: "thread routing batches of 5000 to 2 threads, bounded channels",
        stageflow: Box::new(move || stageflow_side(n)),
        hand_written: Box::new(move || hand_written(n)),
    }
}
