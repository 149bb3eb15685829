//! Flows chained through stages finish on a rayon pool with a single worker: a flow
//! that reads stage streams drives its rounds from the calling thread, so waiting for
//! stage events never holds the worker that the flow feeding those stages needs. It
//! sets the global pool to one thread, so it is the only test of this binary.

use std::sync::mpsc::channel;
use std::time::Duration;

use stageflow::flow::{Flow, Options};
use stageflow::prelude::*;

struct Double;
impl Stage for Double {
    type In = u64;
    type Out = u64;
}
impl ProducerConsumer for Double {
    fn handle_events(
        &mut self,
        events: Vec<u64>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_all(events.into_iter().map(|x| x * 2));
    }
}

#[test]
fn chained_flows_finish_on_a_single_worker_pool() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("this test is the first to use the global pool");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let double =
            start_producer_consumer(Double, ProducerConsumerOptions::new()).expect("start Double");
        // Two stages upstream: its rounds need the pool (one stage would run inline).
        let sum: u64 = Flow::from_iter_with(1..=20_000u64, Options::new().stages(2))
            .through_stages(vec![double], Options::new())
            .filter(|x| x % 4 == 0)
            .sum();
        let double =
            start_producer_consumer(Double, ProducerConsumerOptions::new()).expect("start Double");
        let mut v: Vec<u64> = Flow::from_iter_with(1..=20_000u64, Options::new().stages(2))
            .through_stages(vec![double], Options::new())
            .collect();
        v.sort_unstable();
        let _ = tx.send((sum, v));
    });
    let (sum, v) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("chained flows on a one-worker pool did not finish within 120 s");
    assert_eq!(
        sum,
        (1..=20_000u64)
            .map(|x| x * 2)
            .filter(|x| x % 4 == 0)
            .sum::<u64>()
    );
    assert_eq!(v, (1..=20_000u64).map(|x| x * 2).collect::<Vec<_>>());
}
