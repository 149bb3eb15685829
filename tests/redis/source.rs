//! RedisStreamSource: group creation, reading by demand, acknowledgements,
//! redelivery, dead letters, reclaiming, lost entries, reconnects, drain.

use std::time::Duration;

use redis::Value;
use stageflow::prelude::*;
use stageflow::redis::{RedisStreamSource, StreamId};

use crate::util::*;

fn start(
    source: RedisStreamSource,
    sink: Sink,
    max_demand: usize,
) -> (StageRef<RedisStreamSource>, StageRef<Sink>) {
    let source = start_source(source);
    let sink = start_consumer(
        sink,
        ConsumerOptions::new()
            .subscribe_to(&source, SubscribeOptions::new().max_demand(max_demand)),
    )
    .expect("sink starts");
    (source, sink)
}

#[test]
fn creates_the_group_and_the_stream_if_missing() {
    let key = Key::new("create");
    let mut con = redis();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key.stream)
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, 0);
    let source = RedisStreamSource::new(key.options("a")).expect("connects");
    let kind: String = redis::cmd("TYPE").arg(&key.stream).query(&mut con).unwrap();
    assert_eq!(kind, "stream", "MKSTREAM made the stream");
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key.stream)
        .query(&mut con)
        .unwrap();
    assert!(format!("{groups:?}").contains("\"g\""), "{groups:?}");
    drop(source);
    // An existing group is fine.
    RedisStreamSource::new(key.options("b")).expect("the group exists: fine");
}

#[test]
fn delivers_every_entry_once_and_acks_per_batch() {
    let key = Key::new("basic");
    let mut con = redis();
    let ids = add(&mut con, &key.stream, 0, 2500);
    let source = RedisStreamSource::new(key.options("a").max_count(300)).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink, 100);
    let got = receive(&rx, 2500);
    let mut seen: Vec<StreamId> = got.iter().map(|g| g.entry.id).collect();
    assert!(got.iter().all(|g| g.entry.deliveries == 1));
    seen.sort();
    assert_eq!(seen, ids, "every entry exactly once");
    eventually("XPENDING to show nothing after the acks", || {
        pending(&mut con, &key.stream) == 0
    });
    eventually("the acked counter", || stats.snapshot().acked == 2500);
    let counts = stats.snapshot();
    assert_eq!(
        (
            counts.delivered,
            counts.pending,
            counts.redelivered,
            counts.lost
        ),
        (2500, 0, 0, 0)
    );
    // The same counts are published among the stage's metrics, for snapshots,
    // pictures and the `metrics` facade.
    let published = |name: &str| source.counter(name, "").unwrap().get();
    assert_eq!(
        (
            published("delivered"),
            published("acked"),
            published("lost")
        ),
        (2500, 2500, 0)
    );
    assert_eq!(source.gauge("pending", "").unwrap().get(), 0);
    source.stop(Reason::Shutdown).unwrap();
}

#[test]
fn takes_up_its_own_pending_entries_first() {
    let key = Key::new("own-pending");
    let mut con = redis();
    create_group(&mut con, &key.stream);
    let ids = add(&mut con, &key.stream, 0, 10);
    // A run of consumer "a" that read 4 entries and died before acknowledging.
    let left = read_as(&mut con, &key.stream, &key.consumer("a"), 4);
    assert_eq!(left, ids[..4]);
    add(&mut con, &key.stream, 10, 5);
    let source = RedisStreamSource::new(key.options("a")).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink, 100);
    let got = receive(&rx, 15);
    let first: Vec<(StreamId, u64)> = got[..4]
        .iter()
        .map(|g| (g.entry.id, g.entry.deliveries))
        .collect();
    assert_eq!(
        first,
        left.iter().map(|&id| (id, 2)).collect::<Vec<_>>(),
        "own pending first, second delivery"
    );
    let rest: Vec<u64> = got[4..].iter().map(|g| number(&g.entry)).collect();
    assert_eq!(rest, (4..15).collect::<Vec<_>>());
    assert!(got[4..].iter().all(|g| g.entry.deliveries == 1));
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    let counts = stats.snapshot();
    assert_eq!((counts.reclaimed, counts.delivered), (4, 15));
    stop(&source);
}

#[test]
fn reads_only_what_its_consumers_ask_for() {
    let key = Key::new("demand");
    let mut con = redis();
    add(&mut con, &key.stream, 0, 100);
    let source = RedisStreamSource::new(key.options("a")).unwrap();
    let (sink, rx) = Sink::acking();
    let (sink, subscriptions) = sink.manual();
    let (source, _sink) = start(source, sink, 10);
    let subscription = subscriptions.recv_timeout(TIMEOUT).expect("subscribed");
    for round in 1..=3u64 {
        subscription.ask(10);
        let got = receive(&rx, 10);
        assert!(got.iter().all(|g| number(&g.entry) < 10 * round));
        eventually("the acks", || pending(&mut con, &key.stream) == 0);
        // Read from Redis: exactly what was asked, the rest is still there for others.
        let (read, lag) = group_progress(&mut con, &key.stream);
        assert_eq!((read, lag), (10 * round, Some(100 - 10 * round)));
        assert!(rx.try_recv().is_err(), "more than asked");
    }
    stop(&source);
}

#[test]
fn a_failed_entry_is_delivered_again_with_one_more_delivery() {
    let key = Key::new("redeliver");
    let mut con = redis();
    add(&mut con, &key.stream, 0, 20);
    let source = RedisStreamSource::new(key.options("a")).unwrap();
    let stats = source.stats();
    let mut failed_once = std::collections::HashSet::new();
    // Entries 3 and 7 fail at their first delivery.
    let (sink, rx) = Sink::new(Box::new(move |e| {
        let n = number(e);
        if (n == 3 || n == 7) && failed_once.insert(n) {
            Verdict::Fail(format!("entry {n} failed"))
        } else {
            Verdict::Ack
        }
    }));
    let (source, _sink) = start(source, sink, 50);
    let got = receive(&rx, 22);
    let again: Vec<(u64, u64)> = got
        .iter()
        .filter(|g| matches!(number(&g.entry), 3 | 7))
        .map(|g| (number(&g.entry), g.entry.deliveries))
        .collect();
    assert_eq!(again.len(), 4, "{again:?}");
    for n in [3, 7] {
        let d: Vec<u64> = again.iter().filter(|a| a.0 == n).map(|a| a.1).collect();
        assert_eq!(
            d,
            [1, 2],
            "entry {n}: first delivery failed, second one counted"
        );
    }
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    eventually("acked counter", || stats.snapshot().acked == 20);
    let counts = stats.snapshot();
    assert_eq!(
        (counts.redelivered, counts.delivered, counts.dead_lettered),
        (2, 22, 0)
    );
    stop(&source);
}

#[test]
fn an_entry_over_max_deliveries_goes_to_the_dead_letter_stream_with_its_error() {
    let key = Key::new("dead");
    let mut con = redis();
    let ids = add(&mut con, &key.stream, 0, 10);
    let source = RedisStreamSource::new(key.options("a").max_deliveries(3)).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::new(Box::new(|e| {
        if number(e) == 4 {
            Verdict::Fail(format!("no good at delivery {}", e.deliveries))
        } else {
            Verdict::Ack
        }
    }));
    let (source, _sink) = start(source, sink, 50);
    let got = receive(&rx, 12);
    let poison: Vec<u64> = got
        .iter()
        .filter(|g| number(&g.entry) == 4)
        .map(|g| g.entry.deliveries)
        .collect();
    assert_eq!(poison, [1, 2, 3]);
    eventually("the dead letter", || stats.snapshot().dead_lettered == 1);
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    let dead = entries(&mut con, &key.dead());
    assert_eq!(dead.len(), 1, "{dead:?}");
    let fields = &dead[0].1;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("n"), Some("4"), "the original fields are kept");
    assert_eq!(field("pad"), Some("x".repeat(16).as_str()));
    assert_eq!(field("error"), Some("no good at delivery 3"));
    assert_eq!(field("deliveries"), Some("3"));
    assert_eq!(field("id"), Some(ids[4].to_string().as_str()));
    assert!(rx.try_recv().is_err(), "no fourth delivery");
    let counts = stats.snapshot();
    assert_eq!(
        (
            counts.acked,
            counts.redelivered,
            counts.dead_lettered,
            counts.pending
        ),
        (9, 2, 1, 0)
    );
    stop(&source);
}

#[test]
fn takes_over_the_idle_entries_of_a_dead_consumer() {
    let key = Key::new("reclaim");
    let mut con = redis();
    create_group(&mut con, &key.stream);
    add(&mut con, &key.stream, 0, 30);
    let dead = read_as(&mut con, &key.stream, &key.consumer("dead"), 6);
    let source =
        RedisStreamSource::new(key.options("alive").claim_idle(Duration::from_millis(20))).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink, 100);
    let got = receive(&rx, 30);
    let mut reclaimed: Vec<StreamId> = got
        .iter()
        .filter(|g| g.entry.deliveries == 2)
        .map(|g| g.entry.id)
        .collect();
    reclaimed.sort();
    assert_eq!(reclaimed, dead);
    let mut all: Vec<u64> = got.iter().map(|g| number(&g.entry)).collect();
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<_>>(), "every entry once");
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    assert_eq!(stats.snapshot().reclaimed, 6);
    stop(&source);
}

#[test]
fn entries_trimmed_while_pending_are_counted_as_lost() {
    let key = Key::new("lost");
    let mut con = redis();
    create_group(&mut con, &key.stream);
    let ids = add(&mut con, &key.stream, 0, 20);
    // Consumer "a" (a previous run) holds 0..5, a dead consumer holds 5..10.
    read_as(&mut con, &key.stream, &key.consumer("a"), 5);
    read_as(&mut con, &key.stream, &key.consumer("dead"), 5);
    // Two of each are deleted before anyone acknowledged them.
    for i in [1, 3, 6, 8] {
        let _: i64 = redis::cmd("XDEL")
            .arg(&key.stream)
            .arg(ids[i].to_string())
            .query(&mut con)
            .unwrap();
    }
    let source =
        RedisStreamSource::new(key.options("a").claim_idle(Duration::from_millis(20))).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink, 100);
    let got = receive(&rx, 16);
    let mut numbers: Vec<u64> = got.iter().map(|g| number(&g.entry)).collect();
    numbers.sort();
    assert_eq!(
        numbers,
        [0, 2, 4, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    );
    eventually("the lost entries to be counted", || {
        stats.snapshot().lost == 4
    });
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    stop(&source);
}

#[test]
fn halt_stops_reading_and_leaves_unacknowledged_entries_pending() {
    let key = Key::new("halt");
    let mut con = redis();
    add(&mut con, &key.stream, 0, 1000);
    let source = RedisStreamSource::new(
        key.options("a")
            .max_count(10)
            .block(Duration::from_secs(30)),
    )
    .unwrap();
    let stats = source.stats();
    // The sink commits entries below 30 and never gets to the others.
    let (sink, rx) = Sink::new(Box::new(|e| {
        if number(e) < 30 {
            Verdict::Ack
        } else {
            Verdict::Keep
        }
    }));
    let (source, sink) = start(source, sink, 10);
    let got = receive(&rx, 50);
    source.send_info(stageflow::pipeline::Halt).unwrap();
    assert_eq!(
        source.join_timeout(TIMEOUT),
        Some(Reason::Normal),
        "a halted source stops normally"
    );
    assert_eq!(
        sink.join_timeout(TIMEOUT),
        Some(Reason::Normal),
        "and its consumer after it"
    );
    let received = got.len() + rx.try_iter().count();
    // The reader thread ends (woken from its 30 s block) and its connection closes.
    let reader = key.consumer("a");
    eventually("the reader's connection to close", || {
        client_ids(&mut con, &reader).len() <= 1
    });
    eventually("the acks", || stats.snapshot().acked == 30);
    let (read, _) = group_progress(&mut con, &key.stream);
    assert!(read < 1000, "read the whole stream after a halt: {read}");
    let pending_now = pending_entries(&mut con, &key.stream);
    assert!(pending_now.iter().all(|p| p.1 == reader));
    // Everything handed out and not acknowledged, plus whatever was read and not
    // handed out, stays pending.
    assert_eq!(pending_now.len() as u64, read - 30, "{received} received");
    assert!(received as u64 <= read);
    // Nothing is read any more.
    let (again, _) = group_progress(&mut con, &key.stream);
    assert_eq!(again, read);
}

#[test]
fn ends_by_itself_when_idle_if_asked_to() {
    let key = Key::new("idle");
    let mut con = redis();
    add(&mut con, &key.stream, 0, 250);
    let source = RedisStreamSource::new(
        key.options("a")
            .stop_when_idle(true)
            .block(Duration::from_millis(50)),
    )
    .unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, sink) = start(source, sink, 100);
    assert_eq!(source.join_timeout(TIMEOUT), Some(Reason::Normal));
    assert_eq!(sink.join_timeout(TIMEOUT), Some(Reason::Normal));
    assert_eq!(rx.try_iter().count(), 250);
    assert_eq!(pending(&mut con, &key.stream), 0);
    let counts = stats.snapshot();
    assert_eq!(
        (counts.acked, counts.pending, counts.lag),
        (250, 0, Some(0))
    );
}

#[test]
fn bad_options_and_an_unreachable_server_are_errors() {
    let key = Key::new("errors");
    let err = RedisStreamSource::new(key.options("a").block(Duration::ZERO)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad options: expected block to be at least 1 ms, got: 0ns"
    );
    let nobody =
        stageflow::redis::RedisStreamOptions::new("redis://127.0.0.1:1/", &key.stream, "g", "a")
            .connect_timeout(Duration::from_secs(2));
    let err = RedisStreamSource::new(nobody).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot connect to Redis at redis://127.0.0.1:1/"),
        "{err}"
    );
    // A key that is not a stream.
    let mut con = redis();
    let _: () = redis::cmd("SET")
        .arg(&key.stream)
        .arg("text")
        .query(&mut con)
        .unwrap();
    let err = RedisStreamSource::new(key.options("a")).unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[test]
fn an_error_retrying_cannot_fix_stops_the_source_with_a_reason_naming_it() {
    let key = Key::new("wrongtype");
    let mut con = redis();
    let source = RedisStreamSource::new(key.options("a").block(Duration::from_millis(50))).unwrap();
    let (sink, _rx) = Sink::acking();
    let (source, sink) = start(source, sink, 10);
    // The stream is replaced by a string while the source reads it.
    let _: () = redis::pipe()
        .atomic()
        .cmd("DEL")
        .arg(&key.stream)
        .ignore()
        .cmd("SET")
        .arg(&key.stream)
        .arg("not a stream")
        .ignore()
        .query(&mut con)
        .unwrap();
    let reason = source.join_timeout(TIMEOUT).expect("the source stops");
    let text = reason.to_string();
    assert!(
        text.contains("WRONGTYPE") && text.contains(&key.stream),
        "{text}"
    );
    assert!(
        sink.join_timeout(TIMEOUT).is_some(),
        "its consumer stops too"
    );
}
