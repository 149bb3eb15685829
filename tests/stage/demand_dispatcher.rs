//! Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8),
//! `test/gen_stage/demand_dispatcher_test.exs`: all 9
//! tests, none skipped. Each test keeps the original's name in snake case.
//!
//! The Elixir tests compare the dispatcher's state tuple `{demands, pending, max,
//! shuffle}`; ours is read through `demands()`, `pending()`, `max_demand()` and
//! `shuffle_pending()`. The messages the test process receives as the consumer are
//! recorded by a [`Probe`]. `capture_log` is a `LogSink` handed to the dispatcher.

use std::sync::{Arc, Mutex};

use stageflow::dispatcher::{
    DemandDispatcher, DemandDispatcherOptions, Dispatcher, Probe, Received, Subscriber,
};
use stageflow::log::LogSink;
use stageflow::{SubscribeOptions, Tag};

type D = DemandDispatcher<char>;

/// `{demands, pending, max, shuffle}`.
fn state(d: &D) -> (Vec<(usize, Tag)>, usize, Option<usize>, bool) {
    (
        d.demands(),
        d.pending(),
        d.max_demand(),
        d.shuffle_pending(),
    )
}

fn subscribe(d: &mut D, s: &Subscriber<char>) {
    assert_eq!(d.subscribe(s.clone(), &SubscribeOptions::new()), Ok(0));
}

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

#[test]
fn subscribes_and_cancels() {
    let probe = Probe::new();
    let s = probe.subscriber();
    let t = s.tag();
    let mut d = D::new();
    subscribe(&mut d, &s);
    assert_eq!(state(&d), (vec![(0, t)], 0, None, false));
    assert_eq!(d.cancel(t), 0);
    assert_eq!(state(&d), (vec![], 0, None, false));
}

#[test]
fn subscribes_asks_and_cancels() {
    let probe = Probe::new();
    let s = probe.subscriber();
    let t = s.tag();
    let mut d = D::new();

    // Subscribe, ask and cancel and leave some demand.
    subscribe(&mut d, &s);
    assert_eq!(state(&d), (vec![(0, t)], 0, None, false));
    assert_eq!(d.ask(t, 10), 10);
    assert_eq!(state(&d), (vec![(10, t)], 0, Some(10), false));
    assert_eq!(d.cancel(t), 0);
    assert_eq!(state(&d), (vec![], 10, Some(10), false));

    // Subscribe, ask and cancel and leave the same demand.
    subscribe(&mut d, &s);
    assert_eq!(state(&d), (vec![(0, t)], 10, Some(10), false));
    assert_eq!(d.ask(t, 5), 0);
    assert_eq!(state(&d), (vec![(5, t)], 5, Some(10), false));
    assert_eq!(d.cancel(t), 0);
    assert_eq!(state(&d), (vec![], 10, Some(10), false));

    // Now attempt to dispatch with no consumers.
    assert_eq!(d.dispatch(chars("abc")), chars("abc"));
    assert_eq!(state(&d), (vec![], 7, Some(10), false));
    let ten: Vec<char> = ('0'..='9').collect();
    assert_eq!(d.dispatch(ten.clone()), ten);
    assert_eq!(state(&d), (vec![], 0, Some(10), false));
    assert_eq!(probe.take(), vec![]);
}

#[test]
fn subscribes_twice_asks_twice_and_cancel_one() {
    let probe = Probe::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (t1, t2) = (s1.tag(), s2.tag());
    let mut d = D::new();

    // Subscribe twice and ask twice.
    subscribe(&mut d, &s1);
    assert_eq!(d.ask(t1, 3), 3);
    subscribe(&mut d, &s2);
    assert_eq!(d.ask(t2, 3), 3);
    assert_eq!(state(&d), (vec![(3, t1), (3, t2)], 0, Some(3), false));

    // Cancel and leave some demand.
    assert_eq!(d.cancel(t1), 0);
    assert_eq!(state(&d), (vec![(3, t2)], 3, Some(3), false));

    // Send events for both subscriptions.
    assert_eq!(d.dispatch(chars("abcde")), chars("de"));
    assert_eq!(state(&d), (vec![(0, t2)], 1, Some(3), false));
    assert_eq!(probe.take(), vec![Received::Events(t2, chars("abc"))]);
}

#[test]
fn subscribes_asks_and_dispatches() {
    let probe = Probe::new();
    let s = probe.subscriber();
    let t = s.tag();
    let mut d = D::new();
    subscribe(&mut d, &s);

    assert_eq!(d.ask(t, 3), 3);
    assert_eq!(state(&d), (vec![(3, t)], 0, Some(3), false));

    assert_eq!(d.dispatch(chars("a")), chars(""));
    assert_eq!(state(&d), (vec![(2, t)], 0, Some(3), false));
    assert_eq!(probe.take(), vec![Received::Events(t, chars("a"))]);

    assert_eq!(d.ask(t, 3), 3);
    assert_eq!(state(&d), (vec![(5, t)], 0, Some(3), false));

    assert_eq!(d.dispatch(chars("bcdefgh")), chars("gh"));
    assert_eq!(state(&d), (vec![(0, t)], 0, Some(3), false));
    assert_eq!(probe.take(), vec![Received::Events(t, chars("bcdef"))]);

    assert_eq!(d.dispatch(chars("ij")), chars("ij"));
    assert_eq!(state(&d), (vec![(0, t)], 0, Some(3), false));
    assert_eq!(probe.take(), vec![]);
}

#[test]
fn subscribes_asks_multiple_consumers() {
    let probe = Probe::new();
    let (s1, s2, s3) = (probe.subscriber(), probe.subscriber(), probe.subscriber());
    let (t1, t2, t3) = (s1.tag(), s2.tag(), s3.tag());
    let mut d = D::new();
    subscribe(&mut d, &s1);
    subscribe(&mut d, &s2);
    subscribe(&mut d, &s3);

    assert_eq!(d.ask(t1, 4), 4);
    assert_eq!(d.ask(t2, 2), 2);
    assert_eq!(d.ask(t3, 3), 3);
    assert_eq!(
        state(&d),
        (vec![(4, t1), (3, t3), (2, t2)], 0, Some(4), false)
    );

    assert_eq!(d.ask(t3, 2), 2);
    assert_eq!(
        state(&d),
        (vec![(5, t3), (4, t1), (2, t2)], 0, Some(4), false)
    );

    assert_eq!(d.ask(t2, 4), 4);
    assert_eq!(
        state(&d),
        (vec![(6, t2), (5, t3), (4, t1)], 0, Some(4), false)
    );
}

#[test]
fn subscribes_asks_and_dispatches_to_multiple_consumers() {
    let probe = Probe::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (t1, t2) = (s1.tag(), s2.tag());
    let mut d = D::new();
    subscribe(&mut d, &s1);
    subscribe(&mut d, &s2);

    assert_eq!(d.ask(t1, 3), 3);
    assert_eq!(d.ask(t2, 2), 2);
    assert_eq!(state(&d), (vec![(3, t1), (2, t2)], 0, Some(3), false));

    // One batch fits all.
    assert_eq!(d.dispatch(chars("abcde")), chars(""));
    assert_eq!(
        probe.take(),
        vec![
            Received::Events(t1, chars("abc")),
            Received::Events(t2, chars("de"))
        ]
    );

    assert_eq!(d.dispatch(chars("abc")), chars("abc"));
    assert_eq!(state(&d), (vec![(0, t1), (0, t2)], 0, Some(3), false));
    assert_eq!(probe.take(), vec![]);

    // Two batches with left over.
    assert_eq!(d.ask(t1, 3), 3);
    assert_eq!(d.ask(t2, 3), 3);
    assert_eq!(state(&d), (vec![(3, t1), (3, t2)], 0, Some(3), false));

    assert_eq!(d.dispatch(chars("ab")), chars(""));
    assert_eq!(state(&d), (vec![(3, t2), (1, t1)], 0, Some(3), false));
    assert_eq!(probe.take(), vec![Received::Events(t1, chars("ab"))]);

    assert_eq!(d.dispatch(chars("cd")), chars(""));
    assert_eq!(state(&d), (vec![(1, t1), (1, t2)], 0, Some(3), false));
    assert_eq!(probe.take(), vec![Received::Events(t2, chars("cd"))]);

    // Eliminate the left-over.
    assert_eq!(d.dispatch(chars("efg")), chars("g"));
    assert_eq!(state(&d), (vec![(0, t1), (0, t2)], 0, Some(3), false));
    assert_eq!(
        probe.take(),
        vec![
            Received::Events(t1, chars("e")),
            Received::Events(t2, chars("f"))
        ]
    );
}

#[test]
fn subscribes_asks_and_dispatches_to_multiple_consumers_with_shuffled_demands() {
    let probe = Probe::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (t1, t2) = (s1.tag(), s2.tag());
    let mut d = D::with_options(DemandDispatcherOptions {
        shuffle_demands_on_first_dispatch: true,
        ..Default::default()
    });
    subscribe(&mut d, &s1);
    subscribe(&mut d, &s2);

    assert_eq!(d.ask(t1, 3), 3);
    assert_eq!(d.ask(t2, 2), 2);
    assert_eq!(state(&d), (vec![(3, t1), (2, t2)], 0, Some(3), true));

    // Demands are shuffled on the first dispatch.
    assert_eq!(d.dispatch(chars("abcde")), chars(""));

    // The shuffle flag is reset after the first dispatch.
    let (demands, pending, max, shuffle) = state(&d);
    assert_eq!((pending, max, shuffle), (0, Some(3), false));
    if demands == vec![(0, t1), (0, t2)] {
        assert_eq!(
            probe.take(),
            vec![
                Received::Events(t1, chars("abc")),
                Received::Events(t2, chars("de"))
            ]
        );
    } else {
        assert_eq!(demands, vec![(0, t2), (0, t1)]);
        assert_eq!(
            probe.take(),
            vec![
                Received::Events(t2, chars("ab")),
                Received::Events(t1, chars("cde"))
            ]
        );
    }
}

#[test]
fn delivers_info_to_current_process() {
    let probe = Probe::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let (t1, _t2) = (s1.tag(), s2.tag());
    let mut d = D::new();
    subscribe(&mut d, &s1);
    subscribe(&mut d, &s2);
    assert_eq!(d.ask(t1, 3), 3);

    let before = state(&d);
    let info = probe.info();
    let id = info.id();
    d.info(info);
    assert_eq!(state(&d), before);
    assert_eq!(probe.take(), vec![Received::Info(id)]);
}

#[test]
fn warns_on_demand_mismatch() {
    let probe = Probe::new();
    let (s1, s2) = (probe.subscriber(), probe.subscriber());
    let t2 = s2.tag();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let mut d = D::with_options(DemandDispatcherOptions {
        max_demand: Some(3),
        ..Default::default()
    })
    .log_to(LogSink::new(move |r| {
        l.lock().unwrap().push(r.message.clone())
    }));
    subscribe(&mut d, &s1);
    subscribe(&mut d, &s2);

    assert_eq!(d.ask(t2, 4), 4);
    let log = lines.lock().unwrap().join("\n");
    assert!(
        log.contains("DemandDispatcher expects a maximum demand of 3"),
        "{log}"
    );
}
