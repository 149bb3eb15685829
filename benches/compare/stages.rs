//! W1 and W2: the stage layer against hand-written threads and channels.

use std::thread;

use crossbeam_channel::{bounded, Receiver, Sender};
use stageflow::prelude::*;

use crate::harness::Workload;

/// Emits `1..=last` from `handle_demand`, then stops normally behind its last events.
struct Numbers {
    next: u64,
    last: u64,
}

struct Done;

impl Stage for Numbers {
    type In = Never;
    type Out = u64;
}

impl Producer for Numbers {
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
        let end = (self.next + demand as u64).min(self.last + 1);
        ctx.emit_batch((self.next..end).collect());
        self.next = end;
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

struct Double;

impl Stage for Double {
    type In = u64;
    type Out = u64;
}

impl ProducerConsumer for Double {
    fn handle_events(
        &mut self,
        mut events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        for x in &mut events {
            *x *= 2;
        }
        ctx.emit_batch(events);
    }
}

/// Sums what it receives and reports `(count, sum)` when it terminates.
struct Sum {
    count: u64,
    sum: u64,
    report: Sender<(u64, u64)>,
}

impl Stage for Sum {
    type In = u64;
    type Out = Never;
    fn terminate(&mut self, _: &Reason) {
        let _ = self.report.send((self.count, self.sum));
    }
}

impl Consumer for Sum {
    fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
        self.count += events.len() as u64;
        self.sum += events.iter().sum::<u64>();
    }
}

fn check(what: &str, got: (u64, u64), want: (u64, u64)) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got (count, sum) {got:?}, want {want:?}"))
    }
}

fn sum_consumer(report: Sender<(u64, u64)>) -> Sum {
    Sum {
        count: 0,
        sum: 0,
        report,
    }
}

/// W1 with stageflow: the producer accumulates until the consumer subscribed.
fn w1_stageflow(n: u64, max_demand: usize) -> Result<(), String> {
    let producer = start_producer(
        Numbers { next: 1, last: n },
        ProducerOptions::new().demand(DemandMode::Accumulate),
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = bounded(1);
    let consumer = start_consumer(
        sum_consumer(tx),
        ConsumerOptions::new()
            .subscribe_to(&producer, SubscribeOptions::new().max_demand(max_demand)),
    )
    .map_err(|e| e.to_string())?;
    producer
        .set_demand_mode(DemandMode::Forward)
        .map_err(|e| e.to_string())?;
    consumer.join();
    producer.join();
    let got = rx.recv().map_err(|e| e.to_string())?;
    check("W1", got, (n, n * (n + 1) / 2))
}

/// W2 with stageflow: producer → producer-consumer (x*2) → consumer.
fn w2_stageflow(n: u64) -> Result<(), String> {
    let producer = start_producer(
        Numbers { next: 1, last: n },
        ProducerOptions::new().demand(DemandMode::Accumulate),
    )
    .map_err(|e| e.to_string())?;
    let double = start_producer_consumer(
        Double,
        ProducerConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()),
    )
    .map_err(|e| e.to_string())?;
    let (tx, rx) = bounded(1);
    let consumer = start_consumer(
        sum_consumer(tx),
        ConsumerOptions::new().subscribe_to(&double, SubscribeOptions::new()),
    )
    .map_err(|e| e.to_string())?;
    producer
        .set_demand_mode(DemandMode::Forward)
        .map_err(|e| e.to_string())?;
    consumer.join();
    double.join();
    producer.join();
    let got = rx.recv().map_err(|e| e.to_string())?;
    check("W2", got, (n, n * (n + 1)))
}

/// The producer half of GenStage's protocol by hand: answer each credit with one
/// batch of at most that many numbers.
fn credit_producer(n: u64, credits: Receiver<usize>, events: Sender<Vec<u64>>) {
    let mut next = 1u64;
    while next <= n {
        let Ok(credit) = credits.recv() else { return };
        let end = (next + credit as u64).min(n + 1);
        if events.send((next..end).collect()).is_err() {
            return;
        }
        next = end;
    }
}

/// W1 by hand: two threads; the consumer grants credit as GenStage's rule does
/// (max at first, then max - min after each batch), the producer answers in batches.
fn w1_hand(n: u64, max_demand: usize) -> Result<(), String> {
    let min = max_demand / 2;
    let (credit_tx, credit_rx) = bounded::<usize>(64);
    let (event_tx, event_rx) = bounded::<Vec<u64>>(64);
    let producer = thread::spawn(move || credit_producer(n, credit_rx, event_tx));
    credit_tx.send(max_demand).map_err(|e| e.to_string())?;
    let (mut count, mut sum) = (0u64, 0u64);
    let mut outstanding = max_demand;
    for batch in event_rx.iter() {
        for chunk in batch.chunks(max_demand - min) {
            count += chunk.len() as u64;
            sum += chunk.iter().sum::<u64>();
            outstanding -= chunk.len();
            if outstanding <= min {
                let _ = credit_tx.send(max_demand - outstanding);
                outstanding = max_demand;
            }
        }
    }
    drop(credit_tx);
    producer
        .join()
        .map_err(|_| "producer panicked".to_string())?;
    check("W1 baseline", (count, sum), (n, n * (n + 1) / 2))
}

/// W2 by hand: three threads joined by bounded channels of batches.
fn w2_hand(n: u64) -> Result<(), String> {
    let (a_tx, a_rx) = bounded::<Vec<u64>>(4);
    let (b_tx, b_rx) = bounded::<Vec<u64>>(4);
    let producer = thread::spawn(move || {
        let mut next = 1u64;
        while next <= n {
            let end = (next + 500).min(n + 1);
            if a_tx.send((next..end).collect()).is_err() {
                return;
            }
            next = end;
        }
    });
    let doubler = thread::spawn(move || {
        for mut batch in a_rx.iter() {
            for x in &mut batch {
                *x *= 2;
            }
            if b_tx.send(batch).is_err() {
                return;
            }
        }
    });
    let (mut count, mut sum) = (0u64, 0u64);
    for batch in b_rx.iter() {
        count += batch.len() as u64;
        sum += batch.iter().sum::<u64>();
    }
    producer
        .join()
        .map_err(|_| "producer panicked".to_string())?;
    doubler.join().map_err(|_| "doubler panicked".to_string())?;
    check("W2 baseline", (count, sum), (n, n * (n + 1)))
}

pub fn workloads(events: Option<u64>) -> Vec<Workload> {
    let n = events.unwrap_or(10_000_000);
    vec![
        Workload {
            id: "W1".into(),
            events: n,
            baseline: "2 threads, credit-batched channels",
            stageflow: Box::new(move || w1_stageflow(n, 1000)),
            hand_written: Box::new(move || w1_hand(n, 1000)),
        },
        Workload {
            id: "W1-max10k".into(),
            events: n,
            baseline: "2 threads, credit-batched channels",
            stageflow: Box::new(move || w1_stageflow(n, 10_000)),
            hand_written: Box::new(move || w1_hand(n, 10_000)),
        },
        Workload {
            id: "W2".into(),
            events: n,
            baseline: "3 threads, bounded batch channels",
            stageflow: Box::new(move || w2_stageflow(n)),
            hand_written: Box::new(move || w2_hand(n)),
        },
    ]
}
