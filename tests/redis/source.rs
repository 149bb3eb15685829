//! RedisStreamSource: group creation, reading by demand, acknowledgements,
//! redelivery, dead letters, reclaiming, lost entries, reconnects, drain.

use redis::Value;
use stageflow::prelude::*;
use stageflow::redis::{RedisStreamSource, StreamId};

use crate::util::*;

fn start(
    source: RedisStreamSource,
    sink: Sink,
    max_demand: usize,
) -> (StageRef<RedisStreamSource>, StageRef<Sink>) {
    let source = start_producer(source, ProducerOptions::new()).expect("source starts");
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
    source.stop(Reason::Shutdown).unwrap();
}
