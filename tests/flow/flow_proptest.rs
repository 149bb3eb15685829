//! Differential property tests: for random inputs, source stage counts, partition
//! counts and demands, each operator's result, as a multiset, equals the same
//! computation with std iterators. The window properties hold on rayon pools of 1, 2,
//! 4 and 8 threads (`pools`), and windows over one iterator give the same
//! output on every pool.

use crate::support::pools;

use std::collections::{BTreeMap, HashMap, HashSet};

use pools::{pool, THREADS};
use proptest::prelude::*;
use stageflow::flow::{Flow, JoinMode, Options, Window};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn src(xs: &[u32], stages: usize, max_demand: usize) -> Flow<'static, u32> {
    Flow::from_iter_with(
        xs.to_vec(),
        Options::new().stages(stages).max_demand(max_demand),
    )
}

prop_compose! {
    fn setup()(xs in prop::collection::vec(0u32..1000, 0..600),
               stages in 1usize..5,
               parts in 1usize..6,
               max_demand in 1usize..40) -> (Vec<u32>, usize, usize, usize) {
        (xs, stages, parts, max_demand)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn mappers_match_std((xs, stages, _parts, md) in setup()) {
        let got: Vec<u64> = src(&xs, stages, md)
            .map(|x| x as u64 * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .reject(|x| x % 5 == 0)
            .filter_map(|x| if x % 7 == 0 { None } else { Some(x / 2) })
            .collect();
        let want: Vec<u64> = xs.iter()
            .map(|&x| x as u64 * 3)
            .filter(|x| x % 2 == 0)
            .flat_map(|x| [x, x + 1])
            .filter(|x| x % 5 != 0)
            .filter_map(|x| if x % 7 == 0 { None } else { Some(x / 2) })
            .collect();
        prop_assert_eq!(sorted(got), sorted(want));
    }

    #[test]
    fn partition_preserves_events((xs, stages, parts, md) in setup()) {
        let got: Vec<u32> = src(&xs, stages, md).partition(Options::new().stages(parts)).collect();
        prop_assert_eq!(sorted(got), sorted(xs.clone()));
        let got: Vec<u32> = src(&xs, stages, md).shuffle(Options::new().stages(parts)).map(|x| x + 1).collect();
        prop_assert_eq!(sorted(got), sorted(xs.iter().map(|x| x + 1).collect()));
    }

    #[test]
    fn uniq_after_key_partition_is_distinct((xs, stages, parts, md) in setup()) {
        let got: Vec<u32> = src(&xs, stages, md).partition(Options::new().stages(parts)).uniq().collect();
        let want: HashSet<u32> = xs.iter().copied().collect();
        prop_assert_eq!(sorted(got), sorted(want.into_iter().collect()));
    }

    #[test]
    fn reduce_and_group_by_match_std((xs, stages, parts, md) in setup()) {
        let total: u64 = src(&xs, stages, md)
            .partition(Options::new().stages(parts).max_demand(md + 1))
            .reduce(|| 0u64, |a, x| a + x as u64)
            .emit_state()
            .sum();
        prop_assert_eq!(total, xs.iter().map(|&x| x as u64).sum::<u64>());
        let groups: Vec<(u32, Vec<u32>)> = src(&xs, stages, md)
            .partition_by(Options::new().stages(parts), |x| x % 10)
            .group_by(|x| x % 10, |x| x)
            .emit_events()
            .collect();
        let mut want: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &x in &xs {
            want.entry(x % 10).or_default().push(x);
        }
        let got: BTreeMap<u32, Vec<u32>> = groups.into_iter().map(|(k, v)| (k, sorted(v))).collect();
        let want: BTreeMap<u32, Vec<u32>> = want.into_iter().map(|(k, v)| (k, sorted(v))).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn reduce_mut_matches_reduce_and_std((xs, stages, parts, md) in setup()) {
        let by_value: Vec<(u32, u64)> = src(&xs, stages, md)
            .partition_by(Options::new().stages(parts).max_demand(md + 1), |x| x % 7)
            .reduce(BTreeMap::new, |mut m: BTreeMap<u32, u64>, x| {
                *m.entry(x % 7).or_default() += x as u64;
                m
            })
            .emit_events()
            .collect();
        let in_place: Vec<(u32, u64)> = src(&xs, stages, md)
            .partition_by(Options::new().stages(parts).max_demand(md + 1), |x| x % 7)
            .reduce_mut(BTreeMap::new, |m: &mut BTreeMap<u32, u64>, x| {
                *m.entry(x % 7).or_default() += x as u64;
            })
            .emit_events()
            .collect();
        let mut want: BTreeMap<u32, u64> = BTreeMap::new();
        for &x in &xs {
            *want.entry(x % 7).or_default() += x as u64;
        }
        let want: Vec<(u32, u64)> = want.into_iter().collect();
        prop_assert_eq!(sorted(by_value), want.clone());
        prop_assert_eq!(sorted(in_place), want);
    }

    #[test]
    fn emit_and_reduce_emits_every_event((xs, stages, parts, md) in setup()) {
        let got: Vec<u32> = src(&xs, stages, md)
            .partition(Options::new().stages(parts))
            .emit_and_reduce(|| (), |(), x| (vec![x], ()))
            .emit_nothing()
            .collect();
        prop_assert_eq!(sorted(got), sorted(xs.clone()));
    }

    #[test]
    fn count_windows_cover_every_event((xs, stages, parts, md) in setup(), n in 1u64..50) {
        for threads in THREADS {
            let sums: Vec<u64> = pool(threads).install(|| {
                src(&xs, stages, md)
                    .partition(Options::new().stages(parts).window(Window::count(n).trigger_every(3)))
                    .reduce(|| 0u64, |a, x| a + x as u64)
                    .on_trigger(|a, info| {
                        let done = info.trigger == stageflow::flow::TriggerName::Done;
                        (if done { vec![a] } else { vec![] }, a)
                    })
                    .collect()
            });
            prop_assert_eq!(sums.iter().sum::<u64>(), xs.iter().map(|&x| x as u64).sum::<u64>());
        }
    }

    #[test]
    fn fixed_windows_in_order_lose_nothing((xs, stages, parts, md) in setup()) {
        // Event time = position: the source sends in order, nothing is late, however
        // many source stages pass the events on.
        let events: Vec<(i64, u32)> = xs.iter().enumerate().map(|(i, &x)| (i as i64, x)).collect();
        let mut want: HashMap<i64, u64> = HashMap::new();
        for (i, &x) in xs.iter().enumerate() {
            *want.entry(i as i64 / 10 * 10).or_default() += x as u64;
        }
        want.retain(|_, s| *s > 0);
        for threads in THREADS {
            let w = Window::fixed(10, stageflow::flow::Unit::Millisecond, |e: &(i64, u32)| e.0);
            let got: Vec<(i64, u64)> = pool(threads).install(|| {
                Flow::from_iter_with(events.clone(), Options::new().stages(stages).max_demand(md))
                    .partition_by(Options::new().stages(parts).window(w), |e| e.1)
                    .reduce(|| 0u64, |a, e| a + e.1 as u64)
                    .on_trigger(|a, info| (vec![(info.window, a)], a))
                    .collect()
            });
            let mut merged: HashMap<i64, u64> = HashMap::new();
            for (w, s) in got {
                *merged.entry(w).or_default() += s;
            }
            merged.retain(|_, s| *s > 0);
            prop_assert_eq!(&merged, &want, "{} threads", threads);
        }
    }

    #[test]
    fn windows_over_one_iterator_do_not_depend_on_the_thread_count(
        ts in prop::collection::vec(0i64..300, 0..600),
        parts in 1usize..4,
        md in 1usize..40,
        lateness in any::<bool>(),
    ) {
        // Unordered event times: which events are late depends on the order they
        // reach the partition stages. Source stages default to the thread count.
        let events: Vec<(i64, u32)> = ts.iter().enumerate().map(|(i, &t)| (t, i as u32)).collect();
        let run = |threads: usize| {
            pool(threads).install(|| {
                let mut w = Window::fixed(10, stageflow::flow::Unit::Millisecond, |e: &(i64, u32)| e.0)
                    .clock(stageflow::flow::ManualClock::new());
                if lateness {
                    w = w.allowed_lateness(1, stageflow::flow::Unit::Hour);
                }
                let mut it = Flow::from_iter(events.clone())
                    .partition_by(Options::new().stages(parts).max_demand(md).window(w), |e| e.1 % 3)
                    .reduce(Vec::new, |mut a: Vec<u32>, e| { a.push(e.1); a })
                    .on_trigger(|a, info| (vec![(info.index, info.window, info.trigger.clone(), a.clone())], a))
                    .into_iter();
                let mut got: Vec<_> = (&mut it).collect();
                got.sort_by_key(|e| e.0); // stage by stage, each stage's in its order
                (got, it.report().late_events)
            })
        };
        let one = run(1);
        for threads in [2, 4, 8] {
            prop_assert_eq!(&run(threads), &one, "{} threads", threads);
        }
    }

    #[test]
    fn take_sort_matches_sort_take((xs, stages, parts, md) in setup(), n in 1usize..20) {
        let got: Vec<Vec<u32>> = src(&xs, stages, md)
            .partition(Options::new().stages(parts))
            .reduce(Vec::new, |mut v, x| { v.push(x); v })
            .take_sort(n)
            .collect();
        let all = sorted(xs.clone());
        prop_assert_eq!(got, vec![all.into_iter().take(n).collect::<Vec<u32>>()]);
    }

    #[test]
    fn departition_merges_all_partitions((xs, stages, parts, md) in setup()) {
        let got: Vec<u64> = src(&xs, stages, md)
            .partition(Options::new().stages(parts))
            .reduce(|| 0u64, |a, x| a + x as u64)
            .departition(|| 0u64, |s, acc| s + acc, |acc, _| acc)
            .collect();
        prop_assert_eq!(got, vec![xs.iter().map(|&x| x as u64).sum::<u64>()]);
    }

    #[test]
    fn joins_match_nested_loops(
        ls in prop::collection::vec(0u32..30, 0..60),
        rs in prop::collection::vec(0u32..30, 0..60),
        parts in 1usize..5,
    ) {
        for mode in [JoinMode::Inner, JoinMode::LeftOuter, JoinMode::RightOuter, JoinMode::FullOuter] {
            let got: Vec<(Option<u32>, Option<u32>)> = Flow::bounded_join(
                mode,
                Flow::from_iter(ls.clone()),
                Flow::from_iter(rs.clone()),
                |l: &u32| l % 7,
                |r: &u32| r % 7,
                |l, r| (l, r),
                Options::new().stages(parts),
            )
            .collect();
            let mut want = Vec::new();
            for &l in &ls {
                for &r in &rs {
                    if l % 7 == r % 7 {
                        want.push((Some(l), Some(r)));
                    }
                }
            }
            if matches!(mode, JoinMode::LeftOuter | JoinMode::FullOuter) {
                want.extend(ls.iter().filter(|l| !rs.iter().any(|r| r % 7 == *l % 7)).map(|&l| (Some(l), None)));
            }
            if matches!(mode, JoinMode::RightOuter | JoinMode::FullOuter) {
                want.extend(rs.iter().filter(|r| !ls.iter().any(|l| l % 7 == *r % 7)).map(|&r| (None, Some(r))));
            }
            prop_assert_eq!(sorted(got), sorted(want));
        }
    }
}
