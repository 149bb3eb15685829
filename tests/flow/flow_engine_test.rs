//! The engine's own properties with inputs large enough for source stages to pull
//! their batches themselves (the first 4 096 events of a source are dealt by the
//! driving thread; the ported suites and the property tests mostly stay below that).
//! Results are compared with the same computation on std iterators; nothing here
//! depends on timing. The window tests run on rayon pools of 1, 2, 4 and 8 threads
//! (`pools`).

use crate::support::pools;

use std::collections::{BTreeMap, HashMap};

use pools::each_pool;
use stageflow::flow::{Flow, FlowError, Options, TriggerInfo, Unit, Window};

const N: u64 = 200_000;

#[test]
fn several_iterators_pulled_by_the_stages_deliver_every_event_once() {
    let iters = vec![0..N, N..N + 70_000, 5..17];
    let mut got: Vec<u64> = Flow::from_iters_with(iters.clone(), Options::new().stages(3))
        .map(|x| x * 3)
        .filter(|x| x % 2 == 0)
        .collect();
    got.sort_unstable();
    let mut want: Vec<u64> = iters
        .into_iter()
        .flatten()
        .map(|x| x * 3)
        .filter(|x| x % 2 == 0)
        .collect();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn folds_over_pulled_sources_match_std() {
    for stages in [1, 2, 5] {
        let opts = || Options::new().stages(stages);
        let sum: u64 = Flow::from_iter_with(0..N, opts())
            .map(|x| x * 2)
            .filter(|x| x % 3 == 0)
            .sum();
        assert_eq!(
            sum,
            (0..N).map(|x| x * 2).filter(|x| x % 3 == 0).sum::<u64>()
        );
        let count = Flow::from_iter_with(0..N, opts())
            .flat_map(|x| [x, x])
            .count();
        assert_eq!(count, 2 * N as usize, "stages {stages}");
    }
}

#[test]
fn partitioned_reduce_over_pulled_sources_matches_std() {
    let got: HashMap<u64, u64> = Flow::from_iter_with(0..N, Options::new().stages(3))
        .map(|x| (x % 97, x))
        .partition_by(Options::new().stages(4), |e: &(u64, u64)| e.0)
        .reduce(HashMap::new, |mut m: HashMap<u64, u64>, (k, v)| {
            *m.entry(k).or_default() += v;
            m
        })
        .emit_events()
        .collect();
    let mut want: HashMap<u64, u64> = HashMap::new();
    for x in 0..N {
        *want.entry(x % 97).or_default() += x;
    }
    assert_eq!(got, want);
}

/// A window's `(window, key, sum)` rows.
type Rows = Vec<(i64, u64, u64)>;

/// Emits a window's `key -> sum` map as `(window, key, sum)` rows.
fn window_rows(m: BTreeMap<u64, u64>, info: &TriggerInfo) -> (Rows, BTreeMap<u64, u64>) {
    let rows = m.into_iter().map(|(k, s)| (info.window, k, s)).collect();
    (rows, BTreeMap::new())
}

/// Checks `(window, key, sum of t)` rows of 1 s windows over t = 0..N ms, key t % 5:
/// every window and key once, with std's sums.
fn assert_window_sums(rows: Vec<(i64, u64, u64)>) {
    let mut got: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for (w, k, s) in rows {
        assert!(
            got.insert((w, k), s).is_none(),
            "window {w} key {k} emitted twice"
        );
    }
    let mut want: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for t in 0..N {
        *want.entry(((t / 1000 * 1000) as i64, t % 5)).or_default() += t;
    }
    assert_eq!(got, want);
}

#[test]
fn fixed_windows_fed_by_several_pulling_stages_close_every_window_once() {
    each_pool(|_| {
        // Event time t = i ms: the source stages pull interleaved runs of the input, and
        // each partition stage takes them in the input's order, closing a window once
        // the input has moved past it.
        let window = Window::fixed(1, Unit::Second, |e: &(u64, u64)| e.0 as i64);
        let rows: Vec<(i64, u64, u64)> = Flow::from_iter_with(0..N, Options::new().stages(3))
            .map(|i| (i, i % 5))
            .partition_by(Options::new().stages(2).window(window), |e: &(u64, u64)| {
                e.1
            })
            .reduce(BTreeMap::new, |mut m: BTreeMap<u64, u64>, (t, k)| {
                *m.entry(k).or_default() += t;
                m
            })
            .on_trigger(window_rows)
            .collect();
        assert_window_sums(rows);
    });
}

#[test]
fn fixed_windows_reduced_in_place_in_pieces_match_std() {
    each_pool(|_| {
        // reduce_mut, and partition stages whose batch size (max_demand 300) cuts every
        // routed batch into pieces: each piece's runs are drained from the batch, whose
        // allocation then goes back to the inbox for the routers to fill again.
        let window = Window::fixed(1, Unit::Second, |e: &(u64, u64)| e.0 as i64);
        let rows: Vec<(i64, u64, u64)> = Flow::from_iter_with(0..N, Options::new().stages(3))
            .map(|i| (i, i % 5))
            .partition_by(
                Options::new().stages(2).max_demand(300).window(window),
                |e: &(u64, u64)| e.1,
            )
            .reduce_mut(BTreeMap::new, |m: &mut BTreeMap<u64, u64>, (t, k)| {
                *m.entry(k).or_default() += t;
            })
            .on_trigger(window_rows)
            .collect();
        assert_window_sums(rows);
    });
}

#[test]
fn collect_over_many_rounds_keeps_a_single_stage_in_order() {
    // collect gathers each stage's output in the stage; one stage keeps input order.
    let got: Vec<u64> = Flow::from_iter_with(0..N, Options::new().stages(1))
        .map(|x| x + 1)
        .collect();
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    let got: Vec<u64> = Flow::from_iter_with(0..N, Options::new().stages(3))
        .shuffle(Options::new().stages(1))
        .filter(|x| x % 2 == 0)
        .collect();
    let mut got = got;
    got.sort_unstable();
    assert_eq!(got, (0..N).filter(|x| x % 2 == 0).collect::<Vec<_>>());
}

#[test]
fn partition_routers_at_every_stage_count_keep_discard_and_reject_alike() {
    // The router has its own paths for one stage (the batch goes as it is), two to
    // four stages (buckets in local variables) and more: each must keep, discard and
    // reject events the same way.
    for stages in [1usize, 2, 3, 4, 5] {
        let keep = |x: &u64| x % 10 != 0;
        let got: Vec<u64> = Flow::from_iter_with(0..N, Options::new().stages(2))
            .partition_with(Options::new().stages(stages), move |x: &u64| {
                keep(x).then_some(*x as usize % stages)
            })
            .map(|x| x * 2)
            .collect();
        let mut got = got;
        got.sort_unstable();
        let want: Vec<u64> = (0..N).filter(keep).map(|x| x * 2).collect();
        assert_eq!(got, want, "{stages} stages");

        let report = Flow::from_iter_with(0..N, Options::new().stages(2))
            .partition_with(Options::new().stages(stages), move |x: &u64| {
                keep(x).then_some(*x as usize % stages)
            })
            .try_run()
            .unwrap();
        assert_eq!(report.discarded_events, N / 10, "{stages} stages");

        let err = Flow::from_iter_with(0..N, Options::new().stages(2))
            .partition_with(Options::new().stages(stages), move |x: &u64| {
                Some(if *x == N - 1 { stages } else { 0 })
            })
            .try_run()
            .unwrap_err();
        let want = format!("returned partition {stages}, but the layer has {stages} stages");
        assert!(err.to_string().contains(&want), "{stages} stages: {err}");

        // Each event reaches the stage its hash names.
        let seen: Vec<(usize, Vec<usize>)> = Flow::from_iter_with(0..N, Options::new().stages(2))
            .partition_with(Options::new().stages(stages), move |x: &u64| {
                Some(*x as usize % stages)
            })
            .reduce(std::collections::BTreeSet::new, move |mut s, x: u64| {
                s.insert(x as usize % stages);
                s
            })
            .on_trigger(|s, info| (vec![(info.index, s.iter().copied().collect())], s))
            .collect();
        assert_eq!(seen.len(), stages, "{stages} stages");
        for (index, residues) in seen {
            assert_eq!(residues, [index], "{stages} stages");
        }

        // The default hash sends each key to exactly one stage.
        let sets: Vec<Vec<u64>> = Flow::from_iter_with(0..N, Options::new().stages(2))
            .partition_by(Options::new().stages(stages), |x: &u64| x % 97)
            .reduce(BTreeMap::new, |mut m: BTreeMap<u64, u64>, x| {
                *m.entry(x % 97).or_default() += 1;
                m
            })
            .on_trigger(|m, _| (vec![m.keys().copied().collect::<Vec<u64>>()], m))
            .collect();
        let mut all: Vec<u64> = sets.concat();
        all.sort_unstable();
        assert_eq!(all, (0..97).collect::<Vec<u64>>(), "{stages} stages");
    }
}

#[test]
fn every_source_stage_takes_part_in_every_round() {
    // Half of each round is shared out evenly among the source stages, so none of
    // them starves (a starving source stage that reduces would hold back the
    // watermarks of the layer after it, whose producers are those stages).
    let per_stage: HashMap<usize, u64> =
        Flow::from_iter_with(0..1_000_000u64, Options::new().stages(2))
            .reduce(|| 0u64, |n, _| n + 1)
            .on_trigger(|n, info| (vec![(info.index, n)], n))
            .collect();
    assert_eq!(per_stage.values().sum::<u64>(), 1_000_000);
    for (stage, n) in &per_stage {
        assert!(
            *n >= 100_000,
            "stage {stage} got only {n} of 1 000 000 events"
        );
    }
}

#[test]
fn a_source_that_panics_after_the_first_round_reports_its_message() {
    let source = (0..N).inspect(|i| {
        if *i == 150_000 {
            panic!("bad item {i}");
        }
    });
    let err = Flow::from_iter_with(source, Options::new().stages(2))
        .map(|x| x + 1)
        .try_sum::<u64>()
        .unwrap_err();
    match err {
        FlowError::Panic { place, message } => {
            assert_eq!(place, "source");
            assert_eq!(message, "bad item 150000");
        }
        other => panic!("expected a source panic, got {other:?}"),
    }
}

#[test]
fn a_closure_that_panics_in_a_pulling_stage_names_the_stage() {
    let err = Flow::from_iter_with(0..N, Options::new().stages(2))
        .inspect(|x| assert!(*x != 123_456, "no {x}"))
        .try_count()
        .unwrap_err();
    match err {
        FlowError::Panic { place, message } => {
            assert!(
                place.starts_with("stage ") && place.ends_with(" of 2 in the source layer"),
                "{place}"
            );
            assert_eq!(message, "no 123456");
        }
        other => panic!("expected a closure panic, got {other:?}"),
    }
}
