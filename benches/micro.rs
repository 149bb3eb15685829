//! `cargo bench --bench micro`: criterion micro-benchmarks of single operations, to catch
//! regressions that the whole-workload `compare` harness would blur.
//!
//! - `dispatch/*`: one batch of 1 000 events through each built-in dispatcher to two
//!   subscribers, driven directly through [`Probe`] (no threads): the per-batch cost of
//!   a dispatcher's bookkeeping and routing.
//! - `stage/from_iter_stream`: starting a `from_iter` producer, draining 100 000 events
//!   through `stream`, and tearing it down: a topology's fixed cost plus its throughput.
//! - `flow/*`: small flows (100 000 events) whose time is dominated by the engine's
//!   per-run and per-round costs rather than by the user's closures.
//!
//! Every iteration checks its result, so a benchmark that stops doing its work fails
//! instead of getting faster.

use std::collections::HashMap;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use stageflow::dispatcher::{
    BroadcastDispatcher, DemandDispatcher, Dispatcher, PartitionDispatcher, Probe, Received,
};
use stageflow::flow::{Flow, Options};
use stageflow::prelude::*;

const BATCH: u64 = 1_000;
const EVENTS: u64 = 100_000;

/// Two subscribers of `dispatcher`, each with demand for a whole batch, ready to take one.
fn primed<D: Dispatcher<u64>>(mut dispatcher: D, probe: &Probe<u64>) -> D {
    for partition in 0..2usize {
        let sub = probe.subscriber();
        let tag = sub.tag();
        // The partition option is ignored by the other dispatchers.
        dispatcher
            .subscribe(sub, &SubscribeOptions::new().partition(partition))
            .expect("subscribe to the dispatcher under test");
        dispatcher.ask(tag, BATCH as usize);
    }
    dispatcher
}

fn delivered(probe: &Probe<u64>) -> usize {
    probe
        .take()
        .iter()
        .map(|r| match r {
            Received::Events(_, events) => events.len(),
            _ => 0,
        })
        .sum()
}

/// One batch through a dispatcher primed by `make`; `expect` events must reach the
/// subscribers and nothing may be left over.
fn bench_dispatch<D: Dispatcher<u64>>(
    c: &mut Criterion,
    name: &str,
    make: impl Fn() -> D,
    expect: usize,
) {
    let batch: Vec<u64> = (0..BATCH).collect();
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                let probe = Probe::new();
                (primed(make(), &probe), probe, batch.clone())
            },
            |(mut dispatcher, probe, events)| {
                let rest = dispatcher.dispatch(events);
                assert!(rest.is_empty(), "{name}: {} events left over", rest.len());
                assert_eq!(delivered(&probe), expect, "{name}: events delivered");
            },
            BatchSize::SmallInput,
        )
    });
}

fn dispatchers(c: &mut Criterion) {
    let n = BATCH as usize;
    bench_dispatch(c, "dispatch/demand", DemandDispatcher::new, n);
    bench_dispatch(c, "dispatch/broadcast", BroadcastDispatcher::new, 2 * n);
    bench_dispatch(
        c,
        "dispatch/partition",
        || PartitionDispatcher::new(2).expect("two partitions"),
        n,
    );
}

fn stages(c: &mut Criterion) {
    c.bench_function("stage/from_iter_stream", |b| {
        b.iter(|| {
            let producer = from_iter(0..EVENTS, FromIterOptions::new()).expect("start from_iter");
            let sum: u64 = stream(&producer).map(|e| e.expect("stream event")).sum();
            assert_eq!(sum, EVENTS * (EVENTS - 1) / 2);
        })
    });
}

fn flows(c: &mut Criterion) {
    c.bench_function("flow/map_filter_sum", |b| {
        b.iter(|| {
            let sum: u64 = Flow::from_iter(0..black_box(EVENTS))
                .map(|x| x * 2)
                .filter(|x| x % 3 == 0)
                .sum();
            assert_eq!(
                sum,
                (0..EVENTS)
                    .map(|x| x * 2)
                    .filter(|x| x % 3 == 0)
                    .sum::<u64>()
            );
        })
    });
    c.bench_function("flow/partition_reduce", |b| {
        b.iter(|| {
            let rows: Vec<(u64, u64)> = Flow::from_iter(0..black_box(EVENTS))
                .map(|x| (x % 8, x))
                .partition_by(Options::new(), |e: &(u64, u64)| e.0)
                .reduce_mut(HashMap::new, |acc: &mut HashMap<u64, u64>, (k, v)| {
                    *acc.entry(k).or_default() += v;
                })
                .emit_events()
                .collect();
            assert_eq!(rows.len(), 8);
            assert_eq!(
                rows.iter().map(|(_, v)| v).sum::<u64>(),
                EVENTS * (EVENTS - 1) / 2
            );
        })
    });
}

fn config() -> Criterion {
    // Short runs: these guard against regressions, the compare harness carries the
    // speed claims.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! {
    name = micro;
    config = config();
    targets = dispatchers, stages, flows
}
criterion_main!(micro);
