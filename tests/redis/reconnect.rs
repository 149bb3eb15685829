//! RedisStreamSource when connections drop: cut connections, a server that stops
//! answering for longer than the read timeout, a group that disappears.
//!
//! Connections are cut with `CLIENT KILL ID` of this test's own source connections
//! (found by their client names), not `CLIENT KILL TYPE normal`: the tests of this
//! binary run in parallel and must not cut each other's connections. Redis here
//! keeps nothing on disk, so "Redis restarted" is the stream and its group vanishing
//! plus the connections cut.

use std::collections::HashSet;
use std::time::Duration;

use stageflow::prelude::*;
use stageflow::redis::{RedisStreamSource, StreamId};

use crate::util::*;

fn start(source: RedisStreamSource, sink: Sink) -> (StageRef<RedisStreamSource>, StageRef<Sink>) {
    let source = start_source(source);
    let sink = start_consumer(
        sink,
        ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(500)),
    )
    .expect("sink starts");
    (source, sink)
}

fn kill(con: &mut Con, consumer: &str) -> usize {
    let ids = client_ids(con, consumer);
    for id in &ids {
        let _: redis::RedisResult<i64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(con);
    }
    ids.len()
}

#[test]
fn connections_cut_mid_run_lose_nothing_and_duplicate_nothing() {
    let key = Key::new("cut");
    let mut con = redis();
    let total = 20_000;
    let ids = add(&mut con, &key.stream, 0, total);
    let options = key
        .options("a")
        .max_count(200)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200));
    let source = RedisStreamSource::new(options).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink);
    let consumer = key.consumer("a");
    let mut seen = HashSet::new();
    let mut duplicates = Vec::new();
    for cut_at in [2_000, 8_000, 14_000] {
        while seen.len() < cut_at {
            for got in receive(&rx, 1) {
                if !seen.insert(got.entry.id) {
                    duplicates.push(got.entry.id);
                }
            }
        }
        assert_eq!(
            kill(&mut con, &consumer),
            2,
            "the reader's and the acknowledger's connections"
        );
        // Both come back under their names before the next cut.
        eventually("the source to reconnect", || {
            client_ids(&mut con, &consumer).len() == 2
        });
    }
    while seen.len() < total as usize {
        for got in receive(&rx, 1) {
            if !seen.insert(got.entry.id) {
                duplicates.push(got.entry.id);
            }
        }
    }
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    eventually("every ack counted", || stats.snapshot().acked == total);
    duplicates.extend(rx.try_iter().map(|g| g.entry.id));
    assert_eq!(duplicates, Vec::<StreamId>::new(), "delivered twice");
    let mut seen: Vec<StreamId> = seen.into_iter().collect();
    seen.sort();
    assert_eq!(seen, ids);
    let counts = stats.snapshot();
    assert!(counts.reconnects >= 3, "{counts:?}");
    assert_eq!((counts.pending, counts.lost), (0, 0));
    assert!(source.is_alive());
    stop(&source);
}

#[test]
fn a_read_that_times_out_is_a_reconnect_not_a_failure() {
    let key = Key::new("timeout");
    let mut con = redis();
    let options = key
        .options("a")
        .block(Duration::from_millis(200))
        .connect_timeout(Duration::from_millis(300))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100));
    let source = RedisStreamSource::new(options).unwrap();
    let stats = source.stats();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink);
    add(&mut con, &key.stream, 0, 10);
    receive(&rx, 10);
    // Redis holds write commands (XREADGROUP is one) for 2 s: the source's reads
    // outlast its 500 ms read timeout (block + connect_timeout).
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("WRITE")
        .query(&mut con)
        .unwrap();
    eventually("a reconnect", || stats.snapshot().reconnects >= 1);
    // (This XADD waits for the pause to end.)
    add(&mut con, &key.stream, 10, 10);
    let got = receive(&rx, 10);
    let numbers: Vec<u64> = got.iter().map(|g| number(&g.entry)).collect();
    assert_eq!(numbers, (10..20).collect::<Vec<_>>());
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    assert!(source.is_alive(), "{:?}", source.exit_reason());
    stop(&source);
}

#[test]
fn a_vanished_group_is_created_again() {
    let key = Key::new("vanished");
    let mut con = redis();
    add(&mut con, &key.stream, 0, 100);
    let options = key
        .options("a")
        .block(Duration::from_millis(100))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100));
    let source = RedisStreamSource::new(options).unwrap();
    let (sink, rx) = Sink::acking();
    let (source, _sink) = start(source, sink);
    receive(&rx, 100);
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    // As after a restart of a Redis without persistence: no stream, no group, no
    // connections.
    let _: i64 = redis::cmd("DEL").arg(&key.stream).query(&mut con).unwrap();
    kill(&mut con, &key.consumer("a"));
    add(&mut con, &key.stream, 100, 50);
    let got = receive(&rx, 50);
    let numbers: Vec<u64> = got.iter().map(|g| number(&g.entry)).collect();
    assert_eq!(numbers, (100..150).collect::<Vec<_>>());
    eventually("nothing pending", || pending(&mut con, &key.stream) == 0);
    stop(&source);
}
