//! Windowed output must not depend on the number of rayon threads. The source layer
//! has one stage per thread by default, and those stages pull batches of the iterator
//! in whatever order their workers get to them; the layer they feed must still see
//! the iterator's events as a single producer sends them (as Elixir's
//! `from_enumerable` does): in the iterator's order, one watermark for the iterator.
//! Every test runs on pools of 1, 2, 4 and 8 threads (`pools`).

use crate::support::pools;

use std::collections::BTreeMap;

use pools::{each_pool, on_pools};
use stageflow::flow::{Flow, ManualClock, Options, TriggerName, Unit, Window};

type Ev = (i64, u64);

fn by_t(e: &Ev) -> i64 {
    e.0
}

/// Fixed 10 ms windows on `t`, one partition stage taking one event at a time,
/// summing `v`: the flow of the regression example.
fn ten_ms_sums(events: Vec<Ev>, window: Window<Ev>) -> Vec<u64> {
    Flow::from_iter(events)
        .partition(Options::new().stages(1).max_demand(1).window(window))
        .reduce(|| 0, |a, e: Ev| a + e.1)
        .emit_state()
        .collect()
}

#[test]
fn a_late_event_is_dropped_whatever_the_thread_count() {
    // t = 12 moves the watermark past window 0, so t = 7 comes too late and is
    // dropped. Source stages that got no batch used to hold the watermark back until
    // the end of input: on 2 threads the sums were [5, 2].
    let events = vec![(1, 1), (12, 2), (7, 4)];
    each_pool(|_| {
        let w = Window::fixed(10, Unit::Millisecond, by_t);
        assert_eq!(ten_ms_sums(events.clone(), w), [1, 2]);
    });
}

#[test]
fn a_late_event_within_the_lateness_joins_its_window_whatever_the_thread_count() {
    // With allowed lateness (on a clock that never moves) the watermark fires window
    // 0 with 1, the late event joins it, and the end of input completes it with 5.
    let events = vec![(1, 1), (12, 2), (7, 4)];
    each_pool(|_| {
        let w = Window::fixed(10, Unit::Millisecond, by_t)
            .allowed_lateness(1, Unit::Hour)
            .clock(ManualClock::new());
        assert_eq!(ten_ms_sums(events.clone(), w), [1, 5, 2]);
        let w = Window::fixed(10, Unit::Millisecond, by_t)
            .allowed_lateness(1, Unit::Hour)
            .clock(ManualClock::new());
        let names: Vec<TriggerName> = Flow::from_iter(events.clone())
            .partition(Options::new().stages(1).max_demand(1).window(w))
            .reduce(|| 0, |a, e: Ev| a + e.1)
            .on_trigger(|a, info| (vec![info.trigger.clone()], a))
            .collect();
        assert_eq!(
            names,
            [TriggerName::Watermark, TriggerName::Done, TriggerName::Done]
        );
    });
}

const N: u64 = 200_000;

#[test]
fn count_windows_see_the_iterator_in_order_over_many_rounds() {
    // Far more than the first round, so the source stages pull their own batches.
    let want: Vec<u64> = (0..N)
        .collect::<Vec<_>>()
        .chunks(10_000)
        .map(|c| c.iter().sum())
        .chain([0])
        .collect();
    each_pool(|_| {
        let got: Vec<u64> = Flow::from_iter(0..N)
            .map(|x| x * 3)
            .partition(Options::new().stages(1).window(Window::count(10_000)))
            .reduce(|| 0, |a, x| a + x / 3)
            .emit_state()
            .collect();
        assert_eq!(got, want);
    });
}

#[test]
fn every_triggers_of_several_partition_stages_see_the_iterator_in_order() {
    // Each partition stage fires after every 7 of its events and resets: the sums are
    // those of consecutive runs of 7 of its events in the iterator's order.
    let mut want: Vec<(usize, u64)> = Vec::new();
    for stage in 0..2u64 {
        let mine: Vec<u64> = (0..N).filter(|x| x % 2 == stage).collect();
        want.extend(mine.chunks(7).map(|c| (stage as usize, c.iter().sum())));
        if mine.len() % 7 == 0 {
            want.push((stage as usize, 0));
        }
    }
    each_pool(|_| {
        let got: Vec<(usize, u64)> = Flow::from_iter(0..N)
            .partition_with(
                Options::new()
                    .stages(2)
                    .window(Window::global().trigger_every(7)),
                |x: &u64| Some(*x as usize % 2),
            )
            .reduce(|| 0, |a, x| a + x)
            .on_trigger(|a, info| (vec![(info.index, a)], 0))
            .collect();
        assert_eq!(got, want);
    });
}

/// Event `i`: key `i % 5`, time `i` ms, except that every 1000th event (at 500) is
/// 3 s late: its window closed long ago.
fn unordered(i: u64) -> Ev {
    let t = if i % 1000 == 500 {
        i as i64 - 3000
    } else {
        i as i64
    };
    (t, i % 5)
}

/// `(window, key, sum of t)` rows sorted, and the late events dropped.
fn window_rows(flow: Flow<'static, Ev>, stages: usize) -> (Vec<(i64, u64, i64)>, u64) {
    let w = Window::fixed(1, Unit::Second, by_t);
    let mut it = flow
        .partition_by(Options::new().stages(stages).window(w), |e: &Ev| e.1)
        .reduce(BTreeMap::new, |mut m: BTreeMap<u64, i64>, (t, k)| {
            *m.entry(k).or_default() += t;
            m
        })
        .on_trigger(|m, info| {
            let rows: Vec<(i64, u64, i64)> = m.iter().map(|(k, s)| (info.window, *k, *s)).collect();
            (rows, BTreeMap::new())
        })
        .into_iter();
    let mut rows: Vec<(i64, u64, i64)> = (&mut it).collect();
    rows.sort_unstable();
    (rows, it.report().late_events)
}

#[test]
fn late_events_over_several_partition_stages_are_those_of_a_single_producer() {
    // On one thread the source has one stage: the single producer. Every pool must
    // give its rows and drop the same late events.
    for stages in [1, 3] {
        let (rows, late) = on_pools(|| window_rows(Flow::from_iter((0..N).map(unordered)), stages));
        // Most of the 200 events that are 3 s late come after their window closed.
        assert!(late >= N / 1000 / 2, "only {late} late events dropped");
        let kept: i64 = rows.iter().map(|r| r.2).sum();
        let all: i64 = (0..N).map(|i| unordered(i).0).sum();
        assert!(kept < all);
    }
}

#[test]
fn several_iterators_give_the_same_windows_on_every_pool() {
    // One producer per iterator: chunks of the iterators are taken in turn, the same
    // way on every pool, and each iterator's watermark is its own.
    let iters = || {
        vec![
            (0..N).map(unordered).collect::<Vec<Ev>>(),
            (0..N / 3).map(|i| unordered(i * 3)).collect(),
            (0..5_000).map(unordered).collect(),
        ]
    };
    let (rows, _late) = on_pools(|| window_rows(Flow::from_iters(iters()), 2));
    assert!(!rows.is_empty());
}

#[test]
fn an_iterator_that_ended_no_longer_holds_the_watermark() {
    // The short iterator ends in the first round; afterwards only the long one
    // decides when windows close, so its final event (t = 0) is late and dropped.
    each_pool(|_| {
        let long: Vec<Ev> = (0..N as i64).map(|t| (t, 1)).chain([(0, 1)]).collect();
        let short: Vec<Ev> = vec![(0, 1)];
        let (rows, late) = window_rows(Flow::from_iters(vec![short, long]), 1);
        assert_eq!(late, 1);
        let w0 = rows.iter().find(|r| r.0 == 0).expect("window 0");
        assert_eq!(w0.2, (0..1000).sum::<i64>());
    });
}

#[test]
fn a_window_after_a_partition_layer_sees_its_stages_in_a_fixed_order() {
    // The windowed layer's producers are the 3 stages of the layer before it (their
    // count is set, not the thread count's): they reach it in the same order on every
    // pool, so the same events are late.
    let (rows, late) = on_pools(|| {
        let mid = Flow::from_iter((0..N).map(unordered))
            .partition_by(Options::new().stages(3), |e: &Ev| e.1)
            .map(|(t, k)| (t, k + 1));
        window_rows(mid, 2)
    });
    assert!(late > 0);
    assert!(!rows.is_empty());
}

#[test]
fn shuffle_stages_get_the_same_chunks_on_every_pool() {
    // A shuffle hands the source's chunks to its stages in turn by their order, not by
    // which source stage pulled them; flows merged into one layer start their turns
    // on different stages.
    let per_stage = on_pools(|| {
        Flow::from_iter(0..N)
            .shuffle(Options::new().stages(3))
            .reduce(|| 0u64, |a, x| a + x)
            .on_trigger(|a, info| (vec![(info.index, a)], a))
            .collect::<Vec<(usize, u64)>>()
    });
    assert_eq!(per_stage.len(), 3);
    assert!(per_stage.iter().all(|(_, s)| *s > 0), "{per_stage:?}");
    let merged = on_pools(|| {
        let a = Flow::from_iter([1u64]);
        let b = Flow::from_iter([2u64]);
        Flow::merge(vec![a, b], Options::new().stages(2))
            .reduce(Vec::new, |mut v: Vec<u64>, x| {
                v.push(x);
                v
            })
            .emit_state()
            .collect::<Vec<Vec<u64>>>()
    });
    assert_eq!(merged, [vec![1], vec![2]]);
}

#[test]
fn each_iterator_holds_the_watermark_until_it_ends() {
    // One producer per iterator: while the slow iterator (all in window 0) lasts,
    // window 0 stays open and the fast one's late event (t = 7) joins it; once the
    // slow one ended, the fast one's last event (t = 3) is late and dropped.
    each_pool(|_| {
        let slow: Vec<Ev> = vec![(5, 1); 100_000];
        let mut fast: Vec<Ev> = (0..N as i64).map(|t| (t, 1)).collect();
        fast.insert(20_000, (7, 1));
        fast.push((3, 1));
        let (rows, late) = window_rows(Flow::from_iters(vec![slow, fast]), 1);
        assert_eq!(late, 1);
        let w0 = rows.iter().find(|r| r.0 == 0).expect("window 0");
        assert_eq!(w0.2, 100_000 * 5 + (0..1000).sum::<i64>() + 7);
    });
}
