//! Port of Elixir Flow's window tests: dashbitco/flow v1.2.4,
//! `test/flow/window_test.exs` (and the `Flow.Window` doctests),
//! `test/flow/window/global_test.exs`, `count_test.exs`, `fixed_test.exs` and
//! `periodic_test.exs`.
//!
//! [timing] tests upstream use real timers and `Stream.timer/1` sources that block;
//! here time is a `ManualClock` that the test's source advances, so they are
//! deterministic: a stage checks its timers once per round, after the round's batches,
//! so a periodic trigger fires after the events pulled before the source moved the
//! clock (all of them, in these small tests). [BEAM] tests that
//! post `{:trigger, name}` messages to a stage have no counterpart (there is no
//! mailbox); punctuation triggers cover custom triggers.
//!
//! Every test runs on rayon pools of 1, 2, 4 and 8 threads (`pools`): the
//! results must not depend on the thread count, which sets the default number of
//! source stages.

use crate::support::pools;

use std::sync::Arc;
use std::time::Duration;

use pools::each_pool;
use stageflow::flow::{
    Flow, FlowError, ManualClock, Options, Punctuation, TriggerInfo, TriggerName, Unit, Window,
    WindowKind,
};

const KEEP: [u64; 11] = [55, 210, 465, 820, 1275, 1830, 2485, 3240, 4095, 5050, 5050];
const DISCARD: [u64; 11] = [55, 155, 255, 355, 455, 555, 655, 755, 855, 955, 0];

/// `from_enumerable(1..100) |> partition(window: w, stages: 1)` with optional demand.
fn hundred(w: Window<u64>, small: bool) -> Flow<'static, u64> {
    let mut opts = Options::new().stages(1).window(w);
    if small {
        opts = opts.max_demand(5);
    }
    Flow::from_iter(1..=100u64).partition(opts)
}

fn every(n: u64) -> TriggerName {
    TriggerName::Every(n)
}

// window_test.exs and Flow.Window doctests

#[test]
fn periodic_trigger_units() {
    for (unit, ms) in [
        (Unit::Second, 10_000),
        (Unit::Minute, 600_000),
        (Unit::Hour, 36_000_000),
    ] {
        assert_eq!(unit.to_ms(10), ms);
        let w = Window::<u64>::global().trigger_periodically(10, unit);
        assert!(format!("{w:?}").contains(&format!("Periodically(10, {unit:?})")));
    }
}

fn moving_trigger(emitted: Vec<&'static str>) -> Window<&'static str> {
    Window::global().trigger(
        Vec::new,
        move |events: Vec<&'static str>, acc: Vec<&'static str>| {
            let mut new = acc;
            new.extend(events);
            if new.len() >= 2 {
                let pre = new[..2].to_vec();
                let pos = new[1..].to_vec();
                Punctuation::Trigger {
                    name: "moving_event_trigger".into(),
                    pre,
                    pos,
                    state: Vec::new(),
                }
            } else {
                Punctuation::Cont(emitted.clone(), new)
            }
        },
    )
}

fn run_moving(emitted: Vec<&'static str>) -> Vec<Vec<&'static str>> {
    Flow::from_iters_with(
        vec![vec!["a", "b", "c"], vec!["a", "b", "c"]],
        Options::new().stages(1),
    )
    .partition(Options::new().stages(1).window(moving_trigger(emitted)))
    .reduce(Vec::new, |mut acc: Vec<&str>, x| {
        acc.insert(0, x);
        acc
    })
    .on_trigger(|mut s, _| {
        s.sort();
        (vec![s], Vec::new())
    })
    .collect()
}

#[test]
fn custom_trigger_skip_on_cont_with_reset() {
    each_pool(|_| {
        let got = run_moving(vec![]);
        assert_eq!(
            &got[..5],
            [
                vec!["a", "b"],
                vec!["b", "c"],
                vec!["a", "c"],
                vec!["a", "b"],
                vec!["b", "c"]
            ]
        );
        assert!(!got.contains(&vec!["a"]) && !got.contains(&vec!["c"]));
    });
}

#[test]
fn custom_trigger_emit_on_cont_with_reset() {
    each_pool(|_| {
        let got = run_moving(vec!["elixir"]);
        assert_eq!(
            &got[..5],
            [
                vec!["a", "b"],
                vec!["b", "c"],
                vec!["a", "c", "elixir"],
                vec!["a", "b"],
                vec!["b", "c"]
            ]
        );
        assert!(
            !got.contains(&vec!["a", "c"])
                && !got.contains(&vec!["a"])
                && !got.contains(&vec!["c"])
        );
    });
}

type Words = Vec<(&'static str, i64)>;

fn word_windows(data: Words, w: Window<(&'static str, i64)>) -> Vec<Vec<(&'static str, u64)>> {
    Flow::from_iter_with(data, Options::new().max_demand(5).stages(1))
        .partition(Options::new().window(w).stages(1).max_demand(5))
        .reduce(std::collections::BTreeMap::new, |mut m, (word, _)| {
            *m.entry(word).or_insert(0u64) += 1;
            m
        })
        .emit_state()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|m| m.into_iter().collect())
        .collect()
}

#[test]
fn doctest_fixed_windows_in_order_late_and_lateness() {
    each_pool(|_| {
        let hour = || Window::fixed(1, Unit::Hour, |e: &(&'static str, i64)| e.1);
        let data: Words = vec![
            ("elixir", 0),
            ("elixir", 1_000),
            ("erlang", 60_000),
            ("concurrency", 3_200_000),
            ("elixir", 4_000_000),
            ("erlang", 5_000_000),
            ("erlang", 6_000_000),
        ];
        assert_eq!(
            word_windows(data.clone(), hour()),
            [
                vec![("concurrency", 1), ("elixir", 2), ("erlang", 1)],
                vec![("elixir", 1), ("erlang", 2)]
            ]
        );
        let mut late = data[1..].to_vec();
        late.push(("elixir", 0));
        assert_eq!(
            word_windows(late.clone(), hour()),
            [
                vec![("concurrency", 1), ("elixir", 1), ("erlang", 1)],
                vec![("elixir", 1), ("erlang", 2)]
            ]
        );
        assert_eq!(
            word_windows(late, hour().allowed_lateness(5, Unit::Minute)),
            [
                vec![("concurrency", 1), ("elixir", 1), ("erlang", 1)],
                vec![("concurrency", 1), ("elixir", 2), ("erlang", 1)],
                vec![("elixir", 1), ("erlang", 2)]
            ]
        );
    });
}

#[test]
fn doctest_session_windows_by_hand() {
    each_pool(|_| {
        let data: Words = vec![
            ("elixir", 2_000_000),
            ("erlang", 3_100_000),
            ("elixir", 3_200_000),
            ("erlang", 4_000_000),
            ("elixir", 4_100_000),
            ("erlang", 4_150_000),
        ];
        type Session = std::collections::HashMap<&'static str, (u64, i64)>;
        let mut v: Vec<(&str, (u64, i64))> = Flow::from_iter_with(data, Options::new().stages(1))
            .partition_by(Options::new().stages(1), |e: &(&str, i64)| e.0)
            .emit_and_reduce(Session::new, |mut m: Session, (word, time)| {
                let mut out = Vec::new();
                match m.get(word) {
                    Some(&(count, last)) if time - last <= 1_000_000 => {
                        m.insert(word, (count + 1, time));
                    }
                    Some(&(count, last)) => {
                        out.push((word, (count, last)));
                        m.insert(word, (1, time));
                    }
                    None => {
                        m.insert(word, (1, time));
                    }
                }
                (out, m)
            })
            .on_trigger(|m, _| (m.into_iter().collect(), Session::new()))
            .collect();
        v.sort();
        assert_eq!(
            v,
            [
                ("elixir", (1, 2_000_000)),
                ("elixir", (2, 4_100_000)),
                ("erlang", (3, 4_150_000))
            ]
        );
    });
}

// global_test.exs

#[test]
fn global_trigger_keep_and_discard_with_large_and_small_demand() {
    each_pool(|_| {
        for small in [false, true] {
            let v: Vec<u64> = hundred(Window::global().trigger_every(10), small)
                .reduce(|| 0, |a, x| a + x)
                .emit_state()
                .collect();
            assert_eq!(v, KEEP);
            let v: Vec<u64> = hundred(Window::global().trigger_every(10), small)
                .reduce(|| 0, |a, x| a + x)
                .on_trigger(|a, _| (vec![a], 0))
                .collect();
            assert_eq!(v, DISCARD);
        }
    });
}

fn all_even_trigger(w: Window<u64>) -> Window<u64> {
    // Punctuation sees raw events (before the layer's mappers), one batch.
    w.trigger(
        || true,
        |events: Vec<u64>, _| {
            let all = events.iter().all(|x| x % 2 == 0);
            Punctuation::Cont(events, all)
        },
    )
}

fn trigger_ordering(w: Window<u64>) {
    let v: Vec<u64> = Flow::from_iter(1..=10u64)
        .partition(Options::new().stages(1).window(all_even_trigger(w)))
        .map(|x| x + 1)
        .map(|x| x * 2)
        .reduce(|| 0, |a, x| a + x)
        .emit_state()
        .collect();
    assert_eq!(v, [130]);
}

#[test]
fn global_trigger_ordering() {
    each_pool(|_| {
        trigger_ordering(Window::global());
    });
}

fn trigger_names(w: Window<u64>, kind: WindowKind, id: i64) {
    let mut v: Vec<(TriggerName, u64)> = hundred(w, false)
        .reduce(|| 0, |a, x| a + x)
        .on_trigger(move |a, info: &TriggerInfo| {
            assert_eq!((info.kind, info.window), (kind, id));
            (vec![(info.trigger.clone(), a)], 0)
        })
        .collect();
    v.sort_by_key(|(name, a)| (matches!(name, TriggerName::Every(_)), *a));
    let mut want = vec![(TriggerName::Done, 0)];
    want.extend([55, 155, 255, 355, 455, 555, 655, 755, 855, 955].map(|s| (every(10), s)));
    assert_eq!(v, want);
}

#[test]
fn global_trigger_names() {
    each_pool(|_| {
        trigger_names(Window::global().trigger_every(10), WindowKind::Global, 0);
    });
}

/// `Stream.concat(1..10, Stream.timer(60_000))`: ten events, then the source moves
/// the clock past the periodic deadline and ends.
fn ten_then_time(clock: Arc<ManualClock>, by: Duration) -> impl Iterator<Item = u64> + Send {
    (1..=10u64).chain(std::iter::from_fn(move || {
        clock.advance(by);
        None
    }))
}

fn trigger_based_on_intervals(w: Window<u64>) {
    let clock = ManualClock::new();
    let w = w
        .trigger_periodically(100, Unit::Millisecond)
        .clock(clock.clone());
    let v: Vec<u64> = Flow::from_iter_with(
        ten_then_time(clock, Duration::from_millis(100)),
        Options::new().max_demand(5),
    )
    .partition(Options::new().stages(1).max_demand(10).window(w))
    .reduce(|| 0, |a, x| a + x)
    .on_trigger(|a, _| (vec![a * 2], a))
    .into_iter()
    .take(1)
    .collect();
    assert_eq!(v, [110]);
}

#[test]
fn global_trigger_based_on_intervals() {
    each_pool(|_| {
        trigger_based_on_intervals(Window::global());
    });
}

// count_test.exs

#[test]
fn count_single_window_with_multiple_mappers_and_reducers() {
    each_pool(|_| {
        let s: u64 = Flow::from_iter_with(1..=100u64, Options::new().stages(4).max_demand(5))
            .map(|x| x)
            .partition(Options::new().window(Window::count(1000)).stages(4))
            .reduce(|| 0, |a, x| a + x)
            .emit_state()
            .sum();
        assert_eq!(s, 5050);
    });
}

#[test]
fn count_single_window_triggers() {
    each_pool(|_| {
        for small in [false, true] {
            let v: Vec<u64> = hundred(Window::count(1000).trigger_every(10), small)
                .reduce(|| 0, |a, x| a + x)
                .emit_state()
                .collect();
            assert_eq!(v, KEEP);
            let v: Vec<u64> = hundred(Window::count(1000).trigger_every(10), small)
                .reduce(|| 0, |a, x| a + x)
                .on_trigger(|a, _| (vec![a], 0))
                .collect();
            assert_eq!(v, DISCARD);
        }
        trigger_ordering(Window::count(1000));
        trigger_names(Window::count(1000).trigger_every(10), WindowKind::Count, 0);
        trigger_based_on_intervals(Window::count(1000));
    });
}

#[test]
fn count_doctest_emits_per_window() {
    each_pool(|_| {
        let v: Vec<u64> = hundred(Window::count(10), false)
            .reduce(|| 0, |a, x| a + x)
            .emit_state()
            .collect();
        assert_eq!(v, DISCARD);
    });
}

fn count50(small: bool) -> Flow<'static, u64> {
    let mut opts = Options::new().stages(1).window(Window::count(50));
    if small {
        opts = opts.max_demand(5).min_demand(0);
    }
    Flow::from_iter_with(1..=100u64, Options::new().stages(1)).partition(opts)
}

#[test]
fn count_double_ordered_windows() {
    each_pool(|_| {
        for small in [false, true] {
            let v: Vec<u64> = count50(small)
                .reduce(|| 0, |a, x| a + x)
                .emit_state()
                .collect();
            assert_eq!(v, [1275, 3775, 0]);
        }
        let e = every(12);
        for small in [false, true] {
            let mut opts = Options::new()
                .stages(1)
                .window(Window::count(50).trigger_every(12));
            if small {
                opts = opts.max_demand(5).min_demand(0);
            }
            let v: Vec<(u64, i64, TriggerName)> =
                Flow::from_iter_with(1..=100u64, Options::new().stages(1))
                    .partition(opts)
                    .reduce(|| 0, |a, x| a + x)
                    .on_trigger(|a, info| (vec![(a, info.window, info.trigger.clone())], a))
                    .collect();
            assert_eq!(
                v,
                [
                    (78, 0, e.clone()),
                    (300, 0, e.clone()),
                    (666, 0, e.clone()),
                    (1176, 0, e.clone()),
                    (1275, 0, TriggerName::Done),
                    (678, 1, e.clone()),
                    (1500, 1, e.clone()),
                    (2466, 1, e.clone()),
                    (3576, 1, e.clone()),
                    (3775, 1, TriggerName::Done),
                    (0, 2, TriggerName::Done)
                ]
            );
        }
    });
}

// fixed_test.exs

#[test]
fn fixed_single_window() {
    each_pool(|_| {
        let w = || Window::fixed(1, Unit::Second, |_: &u64| 0);
        let s: u64 = Flow::from_iter_with(1..=100u64, Options::new().stages(4).max_demand(5))
            .map(|x| x)
            .partition(Options::new().window(w()).stages(4))
            .reduce(|| 0, |a, x| a + x)
            .emit_state()
            .sum();
        assert_eq!(s, 5050);
        for small in [false, true] {
            let v: Vec<u64> = hundred(w().trigger_every(10), small)
                .reduce(|| 0, |a, x| a + x)
                .emit_state()
                .collect();
            assert_eq!(v, KEEP);
        }
        trigger_ordering(w());
        trigger_names(w().trigger_every(10), WindowKind::Fixed, 0);
        trigger_based_on_intervals(w());
    });
}

type Emitted = Vec<(u64, i64, TriggerName)>;

fn fixed_run(
    by: fn(&u64) -> i64,
    lateness: bool,
    trig: bool,
    small: bool,
    src_stages: usize,
    mapper: bool,
) -> Emitted {
    let mut w = Window::fixed(1, Unit::Second, by);
    if lateness {
        w = w.allowed_lateness(1, Unit::Hour);
    }
    if trig {
        w = w.trigger_every(12);
    }
    let mut opts = Options::new().stages(1).window(w);
    if small {
        opts = opts.max_demand(5).min_demand(0);
    }
    let src = Flow::from_iter_with(1..=100u64, Options::new().stages(src_stages));
    let src = if mapper { src.map(|x| x) } else { src };
    src.partition(opts)
        .reduce(|| 0, |a, x| a + x)
        .on_trigger(|a, info| (vec![(a, info.window, info.trigger.clone())], a))
        .collect()
}

fn states(v: &Emitted) -> Vec<u64> {
    v.iter().map(|e| e.0).collect()
}

fn ordered(x: &u64) -> i64 {
    if *x <= 50 {
        *x as i64
    } else {
        1000 + *x as i64
    }
}

fn unordered(x: &u64) -> i64 {
    match *x {
        0..=40 => 0,
        41..=80 => 2000,
        _ => 0,
    }
}

#[test]
fn fixed_double_ordered_windows() {
    each_pool(|_| {
        let e = every(12);
        for small in [false, true] {
            assert_eq!(
                states(&fixed_run(ordered, false, false, small, 1, false)),
                [1275, 3775]
            );
        }
        let large = fixed_run(ordered, false, true, false, 1, false);
        assert_eq!(
            large,
            [
                (78, 0, e.clone()),
                (300, 0, e.clone()),
                (666, 0, e.clone()),
                (1176, 0, e.clone()),
                (678, 1000, e.clone()),
                (1500, 1000, e.clone()),
                (2466, 1000, e.clone()),
                (3576, 1000, e.clone()),
                (1275, 0, TriggerName::Done),
                (3775, 1000, TriggerName::Done)
            ]
        );
        let small = fixed_run(ordered, false, true, true, 1, false);
        assert_eq!(
            small,
            [
                (78, 0, e.clone()),
                (300, 0, e.clone()),
                (666, 0, e.clone()),
                (1176, 0, e.clone()),
                (1275, 0, TriggerName::Done),
                (678, 1000, e.clone()),
                (1500, 1000, e.clone()),
                (2466, 1000, e.clone()),
                (3576, 1000, e.clone()),
                (3775, 1000, TriggerName::Done)
            ]
        );
    });
}

#[test]
fn fixed_double_ordered_windows_periodic_trigger() {
    each_pool(|_| {
        // Upstream [timing]: trigger_periodically(100 ms) with a source that blocks after
        // 100 events; Enum.take(2) = [{1275, 0, :done}, {3775, 1000, periodically}].
        let clock = ManualClock::new();
        let w = Window::fixed(1, Unit::Second, ordered)
            .trigger_periodically(100, Unit::Millisecond)
            .clock(clock.clone());
        let c = clock.clone();
        let source = (1..=100u64).chain(std::iter::from_fn(move || {
            c.advance(Duration::from_millis(100));
            None
        }));
        let v: Emitted = Flow::from_iter_with(source, Options::new().max_demand(5).stages(1))
            .partition(
                Options::new()
                    .stages(1)
                    .max_demand(5)
                    .min_demand(0)
                    .window(w),
            )
            .reduce(|| 0, |a, x| a + x)
            .on_trigger(|a, info| (vec![(a, info.window, info.trigger.clone())], a))
            .into_iter()
            .take(2)
            .collect();
        assert_eq!(
            v,
            [
                (1275, 0, TriggerName::Done),
                (
                    3775,
                    1000,
                    TriggerName::Periodically(100, Unit::Millisecond)
                )
            ]
        );
    });
}

#[test]
fn fixed_double_unordered_windows_without_lateness() {
    each_pool(|_| {
        let e = every(12);
        for src_stages in [1, 2] {
            assert_eq!(
                states(&fixed_run(
                    unordered, false, false, false, src_stages, false
                )),
                [2630, 0, 2420]
            );
            assert_eq!(
                fixed_run(unordered, false, true, false, src_stages, false),
                [
                    (78, 0, e.clone()),
                    (300, 0, e.clone()),
                    (666, 0, e.clone()),
                    (558, 2000, e.clone()),
                    (1260, 2000, e.clone()),
                    (2106, 2000, e.clone()),
                    (1496, 0, e.clone()),
                    (2630, 0, e.clone()),
                    (2630, 0, TriggerName::Done),
                    (0, 1000, TriggerName::Done),
                    (2420, 2000, TriggerName::Done)
                ]
            );
        }
        assert_eq!(
            states(&fixed_run(unordered, false, false, true, 1, false)),
            [820, 0, 2420]
        );
        let small = [
            (78, 0, e.clone()),
            (300, 0, e.clone()),
            (666, 0, e.clone()),
            (820, 0, TriggerName::Done),
            (0, 1000, TriggerName::Done),
            (558, 2000, e.clone()),
            (1260, 2000, e.clone()),
            (2106, 2000, e.clone()),
            (2420, 2000, TriggerName::Done),
        ];
        assert_eq!(fixed_run(unordered, false, true, true, 1, false), small);
        // Two source stages with a mapper: either result upstream ([dispatch][timing]),
        // where the partition stage has two producers. Here the stages pass the
        // iterator's events on as its single producer: the result of one stage.
        let two = states(&fixed_run(unordered, false, false, true, 2, true));
        assert_eq!(two, [820, 0, 2420]);
    });
}

#[test]
fn fixed_double_unordered_windows_late_events_are_counted() {
    each_pool(|_| {
        let w = Window::fixed(1, Unit::Second, unordered);
        let mut it = Flow::from_iter_with(1..=100u64, Options::new().stages(1))
            .partition(
                Options::new()
                    .stages(1)
                    .max_demand(5)
                    .min_demand(0)
                    .window(w),
            )
            .reduce(|| 0, |a, x| a + x)
            .emit_state()
            .into_iter();
        let v: Vec<u64> = (&mut it).collect();
        assert_eq!(v, [820, 0, 2420]);
        assert_eq!(it.report().late_events, 20);
    });
}

#[test]
fn fixed_double_unordered_windows_with_lateness() {
    each_pool(|_| {
        let e = every(12);
        assert_eq!(
            states(&fixed_run(unordered, true, false, false, 1, false)),
            [2630, 0, 2630, 0, 2420]
        );
        assert_eq!(
            fixed_run(unordered, true, true, false, 1, false),
            [
                (78, 0, e.clone()),
                (300, 0, e.clone()),
                (666, 0, e.clone()),
                (558, 2000, e.clone()),
                (1260, 2000, e.clone()),
                (2106, 2000, e.clone()),
                (1496, 0, e.clone()),
                (2630, 0, e.clone()),
                (2630, 0, TriggerName::Watermark),
                (0, 1000, TriggerName::Watermark),
                (2630, 0, TriggerName::Done),
                (0, 1000, TriggerName::Done),
                (2420, 2000, TriggerName::Done)
            ]
        );
        assert_eq!(
            states(&fixed_run(unordered, true, false, true, 1, false)),
            [820, 0, 2630, 0, 2420]
        );
        assert_eq!(
            fixed_run(unordered, true, true, true, 1, false),
            [
                (78, 0, e.clone()),
                (300, 0, e.clone()),
                (666, 0, e.clone()),
                (820, 0, TriggerName::Watermark),
                (0, 1000, TriggerName::Watermark),
                (558, 2000, e.clone()),
                (1260, 2000, e.clone()),
                (2106, 2000, e.clone()),
                (1496, 0, e.clone()),
                (2630, 0, e.clone()),
                (2630, 0, TriggerName::Done),
                (0, 1000, TriggerName::Done),
                (2420, 2000, TriggerName::Done)
            ]
        );
    });
}

#[test]
fn fixed_lateness_expires_on_the_clock() {
    each_pool(|_| {
        // Allowed lateness is processing time: once the clock passes it, a watermarked
        // window completes without waiting for the end of input.
        let clock = ManualClock::new();
        let w = Window::fixed(1, Unit::Second, |x: &u64| *x as i64 * 1000)
            .allowed_lateness(1, Unit::Minute)
            .clock(clock.clone());
        let c = clock.clone();
        let source = (0..3u64).chain(std::iter::from_fn(move || {
            c.advance(Duration::from_secs(61));
            None
        }));
        let v: Vec<(i64, TriggerName)> =
            Flow::from_iter_with(source, Options::new().stages(1).max_demand(2).min_demand(1))
                .partition(
                    Options::new()
                        .stages(1)
                        .max_demand(2)
                        .min_demand(1)
                        .window(w),
                )
                .reduce(|| 0, |a, x| a + x)
                .on_trigger(|a, info| (vec![(info.window, info.trigger.clone())], a))
                .collect();
        assert!(v.contains(&(0, TriggerName::Watermark)));
        assert!(v.contains(&(0, TriggerName::Done)));
    });
}

// periodic_test.exs

#[test]
fn periodic_emits_based_on_intervals() {
    each_pool(|_| {
        let clock = ManualClock::new();
        let w = Window::periodic(100, Unit::Millisecond).clock(clock.clone());
        let v: Vec<(u64, (usize, usize), i64)> = Flow::from_iter_with(
            ten_then_time(clock, Duration::from_millis(100)),
            Options::new().max_demand(5),
        )
        .partition(Options::new().stages(1).max_demand(10).window(w))
        .reduce(|| 0, |a, x| a + x)
        .on_trigger(|a, info| {
            assert_eq!(
                (info.kind, &info.trigger),
                (WindowKind::Periodic, &TriggerName::Done)
            );
            (vec![(a, (info.index, info.total), info.window)], a)
        })
        .into_iter()
        .take(2)
        .collect();
        assert_eq!(v, [(55, (0, 1), 0), (0, (0, 1), 1)]);
    });
}

#[test]
fn periodic_emits_based_on_intervals_with_count_triggers() {
    each_pool(|_| {
        let clock = ManualClock::new();
        let w = Window::periodic(100, Unit::Millisecond)
            .trigger_every(5)
            .clock(clock.clone());
        let v: Vec<(u64, i64, TriggerName)> = Flow::from_iter_with(
            ten_then_time(clock, Duration::from_millis(100)),
            Options::new().max_demand(5).stages(2),
        )
        .partition(Options::new().stages(1).max_demand(10).window(w))
        .reduce(|| 0, |a, x| a + x)
        .on_trigger(|a, info| (vec![(a, info.window, info.trigger.clone())], a))
        .into_iter()
        .take(3)
        .collect();
        // Upstream, which 5 events come first depends on how the two source stages
        // interleave; here the partition stage sees the iterator's order: 1..=5.
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], (15, 0, every(5)));
        assert_eq!(v[1], (55, 0, every(5)));
        assert_eq!(v[2], (55, 0, TriggerName::Done));
    });
}

/// Not in Elixir's suite: the `Duration` forms of the window constructors are the
/// `(n, Unit)` forms, and a duration windows cannot count (under a millisecond, or not
/// whole milliseconds) is an error naming the option and the value.
#[test]
fn duration_forms_match_the_unit_forms() {
    let events: Vec<(u32, i64)> = (0..400u32).map(|i| (i, i64::from(i) * 37)).collect();
    let run = |w: Window<(u32, i64)>| -> Vec<(i64, usize)> {
        Flow::from_iter(events.clone())
            .partition(Options::new().stages(1).window(w))
            .reduce(|| 0usize, |n, _| n + 1)
            .on_trigger(|n, info| (vec![(info.window, n)], 0))
            .collect()
    };
    let by_unit =
        run(Window::fixed(2, Unit::Second, |e: &(u32, i64)| e.1).allowed_lateness(1, Unit::Minute));
    let by_duration = run(
        Window::fixed_duration(Duration::from_secs(2), |e: &(u32, i64)| e.1)
            .allowed_lateness_duration(Duration::from_secs(60)),
    );
    assert_eq!(by_unit, by_duration);
    assert!(by_unit.len() > 2, "several windows: {by_unit:?}");

    let error = |w: Window<u64>| {
        Flow::from_iter(0..3u64)
            .partition(Options::new().window(w))
            .reduce(|| 0, |a, x| a + x)
            .emit_state()
            .try_collect::<Vec<u64>>()
            .unwrap_err()
    };
    for (err, option, value) in [
        (
            error(Window::fixed_duration(Duration::ZERO, |x: &u64| *x as i64)),
            "fixed",
            "0ns",
        ),
        (
            error(Window::periodic_duration(Duration::from_micros(999))),
            "periodic",
            "999µs",
        ),
        (
            error(Window::global().trigger_periodically_duration(Duration::from_micros(1500))),
            "trigger_periodically",
            "1.5ms",
        ),
    ] {
        assert!(
            matches!(&err, FlowError::InvalidOption { option: o, value: v, .. } if *o == option && v == value),
            "{err:?}"
        );
    }
}
