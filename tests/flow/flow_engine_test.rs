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
        FlowError::Panic { place, message, .. } => {
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
        FlowError::Panic { place, message, .. } => {
            assert!(
                place.starts_with("stage ") && place.ends_with(" of 2 in the source layer"),
                "{place}"
            );
            assert_eq!(message, "no 123456");
        }
        other => panic!("expected a closure panic, got {other:?}"),
    }
}

/// A panic payload no formatting could produce: a plain consumer must hand back this
/// very value, as rayon does, not a new panic with a message.
#[derive(Debug, PartialEq)]
struct Marker(u32);

/// Runs `f`, expects it to panic, and returns the payload as a `Marker`.
fn marker_of(f: impl FnOnce()) -> Marker {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the consumer should panic");
    match payload.downcast::<Marker>() {
        Ok(m) => *m,
        Err(p) => panic!(
            "the payload is not the closure's: {:?} / {:?}",
            p.downcast_ref::<String>(),
            p.downcast_ref::<&str>()
        ),
    }
}

/// A flow whose mapper panics with `Marker(id)` on one event, after the first round
/// (so the panic happens in a lane on a pool worker, not on the driving thread).
fn failing(id: u32) -> Flow<'static, u64> {
    Flow::from_iter_with(0..N, Options::new().stages(2)).map(move |x| {
        if x == 100_000 {
            std::panic::panic_any(Marker(id));
        }
        x
    })
}

#[test]
fn plain_consumers_reraise_the_closures_own_panic_payload() {
    each_pool(|_| {
        assert_eq!(
            marker_of(|| drop(failing(1).collect::<Vec<u64>>())),
            Marker(1)
        );
        assert_eq!(
            marker_of(|| {
                let _ = failing(2).run();
            }),
            Marker(2)
        );
        assert_eq!(
            marker_of(|| {
                let _ = failing(3).sum::<u64>();
            }),
            Marker(3)
        );
        assert_eq!(
            marker_of(|| {
                let _ = failing(4).count();
            }),
            Marker(4)
        );
        assert_eq!(marker_of(|| failing(5).for_each(drop)), Marker(5));
        assert_eq!(
            marker_of(|| failing(6).into_iter().for_each(drop)),
            Marker(6)
        );
        // A reducer's closure, in a later layer.
        assert_eq!(
            marker_of(|| {
                Flow::from_iter(0..N)
                    .partition(Options::new().stages(2))
                    .reduce(
                        || 0u64,
                        |a, x| {
                            if x == 7 {
                                std::panic::panic_any(Marker(7));
                            }
                            a + x
                        },
                    )
                    .emit_state()
                    .run();
            }),
            Marker(7)
        );
    });
}

#[test]
fn the_try_forms_keep_the_payload_for_resume_unwind() {
    let err = failing(8).try_count().unwrap_err();
    assert!(
        matches!(&err, FlowError::Panic { message, .. } if message == "non-string panic payload"),
        "{err:?}"
    );
    // Clones share the payload; the first to take it gets it.
    let copy = err.clone();
    let payload = copy.take_panic().expect("the payload");
    assert_eq!(payload.downcast_ref::<Marker>(), Some(&Marker(8)));
    assert!(err.take_panic().is_none());
}

#[test]
fn plain_consumers_panic_with_the_message_of_errors_that_are_not_panics() {
    let payload = std::panic::catch_unwind(|| {
        Flow::from_iter(0..10u64)
            .partition_with(Options::new().stages(2), |_| Some(9))
            .count()
    })
    .expect_err("an out-of-range partition stops the flow");
    let message = payload.downcast_ref::<String>().expect("a message payload");
    assert!(message.contains("9"), "{message}");
}

#[test]
fn try_iter_yields_the_events_then_the_failure_as_the_last_item() {
    let mut ok = 0u64;
    let mut errors = Vec::new();
    let mut after_error = 0;
    for item in failing(9).try_iter() {
        match item {
            Ok(_) if errors.is_empty() => ok += 1,
            Ok(_) => after_error += 1,
            Err(e) => errors.push(e),
        }
    }
    assert_eq!(errors.len(), 1, "one error, last: {errors:?}");
    assert_eq!(after_error, 0);
    assert!(ok < N, "the flow stopped early ({ok} events)");
    assert_eq!(
        errors[0]
            .take_panic()
            .and_then(|p| p.downcast::<Marker>().ok())
            .map(|m| *m),
        Some(Marker(9))
    );
    // A build error is the first and only item.
    let items: Vec<Result<u64, FlowError>> =
        Flow::from_iter_with(0..3u64, Options::new().stages(0))
            .try_iter()
            .collect();
    assert!(
        matches!(
            items.as_slice(),
            [Err(FlowError::InvalidOption {
                option: "stages",
                ..
            })]
        ),
        "{items:?}"
    );
    // Without a failure it streams what the plain iterator streams.
    let v: Result<Vec<u64>, FlowError> = Flow::from_iter(0..N).map(|x| x + 1).try_iter().collect();
    assert_eq!(v.expect("no failure").len(), N as usize);
}

#[test]
fn a_flow_consumed_inside_install_runs_on_that_pool_only() {
    use stageflow::flow::IntoFlow;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .thread_name(|i| format!("own-pool-{i}"))
        .build()
        .expect("build a rayon pool");
    let foreign = std::sync::atomic::AtomicUsize::new(0);
    let on_own = |_: &u64| {
        let name = std::thread::current().name().map(str::to_owned);
        if !name.is_some_and(|n| n.starts_with("own-pool-")) {
            foreign.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let per_stage: Vec<u64> = pool.install(|| {
        (0..N)
            .into_flow()
            .inspect(on_own)
            .partition(Options::new())
            .reduce(
                || 0,
                |a, x| {
                    on_own(&x);
                    a + x
                },
            )
            .emit_state()
            .collect()
    });
    assert_eq!(foreign.into_inner(), 0, "closures ran outside the pool");
    // Default stage counts follow the pool's thread count, not the global pool's.
    assert_eq!(per_stage.len(), 3);
    assert_eq!(per_stage.iter().sum::<u64>(), N * (N - 1) / 2);
}

#[test]
fn into_flow_starts_a_flow_from_any_iterable() {
    use stageflow::flow::IntoFlow;
    let v = vec![3u64, 1, 2];
    let from_vec: Vec<u64> = v.clone().into_flow_with(Options::new().stages(1)).collect();
    assert_eq!(from_vec, v);
    let borrowed: u64 = v.iter().into_flow().map(|x| *x).sum();
    assert_eq!(borrowed, 6);
    assert_eq!((0..N).into_flow().count(), Flow::from_iter(0..N).count());
}
