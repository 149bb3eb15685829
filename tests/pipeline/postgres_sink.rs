//! `PostgresSink` and `insert_rows` against a real PostgreSQL (feature `postgres`).
//!
//! The server is 127.0.0.1:5432, user postgres, database `test` (trust auth), or
//! whatever `STAGEFLOW_PG_URL` says. Each test writes to its own table, named after
//! the process and a counter, and drops it at the end, even when it fails.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Transaction};
use stageflow::pipeline::{Batch, InMemoryAcks, Message};
use stageflow::postgres::{insert_rows, PostgresSink, PostgresSinkOptions, PostgresSinkStats};
use stageflow::prelude::*;

use crate::support::{eventually, exit_reason, TIMEOUT};

type Row = (i64, String);

fn url() -> String {
    std::env::var("STAGEFLOW_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".to_string())
}

fn connect() -> Client {
    let url = url();
    Client::connect(&url, NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL not reachable at {url:?}: {e}: start it (or set STAGEFLOW_PG_URL), \
             or run without --features postgres"
        )
    })
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A table of this test's own, `(id bigint primary key, body text)`, dropped on drop.
struct Table {
    name: String,
    admin: Client,
}

impl Table {
    fn new(what: &str) -> Table {
        let name = format!(
            "stageflow_test_{}_{}_{what}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = connect();
        admin
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id bigint PRIMARY KEY, body text NOT NULL)"
            ))
            .expect("create the test table");
        Table { name, admin }
    }

    /// The ids in the table, in order.
    fn ids(&mut self) -> Vec<i64> {
        self.admin
            .query(&format!("SELECT id FROM {} ORDER BY id", self.name), &[])
            .expect("read the test table")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The sink's write: rows keyed by id, written once.
    fn write(&self) -> impl FnMut(&mut Transaction<'_>, &[Row]) -> Result<(), postgres::Error> {
        let table = self.name.clone();
        move |tx, rows| insert(tx, &table, rows).map(drop)
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.name));
    }
}

fn insert(tx: &mut Transaction<'_>, table: &str, rows: &[Row]) -> Result<u64, postgres::Error> {
    let params: Vec<[&(dyn ToSql + Sync); 2]> =
        rows.iter().map(|(id, body)| [id as _, body as _]).collect();
    let params: Vec<&[&(dyn ToSql + Sync)]> = params.iter().map(|r| &r[..]).collect();
    insert_rows(tx, table, &["id", "body"], &["id"], &params)
}

/// `count` messages of one acknowledger, ids `from..from + count`, in batches of `size`.
fn batches(
    acks: &Arc<InMemoryAcks>,
    ids: std::ops::Range<i64>,
    size: usize,
) -> Vec<Batch<Message<Row>>> {
    let messages: Vec<Message<Row>> = ids
        .map(|id| Message::new((id, format!("record {id}")), acks.hand_out()))
        .collect();
    messages
        .chunks(size)
        .map(|c| Batch {
            key: (),
            events: c.to_vec(),
        })
        .collect()
}

fn options() -> PostgresSinkOptions {
    PostgresSinkOptions::new(url()).backoff(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(10),
    )
}

/// Runs `sink` over `input` (one subscription, batches in order) to its end.
fn run(sink: PostgresSink<Row>, input: Vec<Batch<Message<Row>>>) -> (Reason, PostgresSinkStats) {
    let stats = sink.stats();
    let source = from_iter(input, FromIterOptions::new()).unwrap();
    let sink = sink
        .start(ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(2)))
        .unwrap();
    (exit_reason(&sink), stats)
}

#[test]
fn a_batch_delivered_twice_lands_once_and_is_acked_both_times() {
    let mut table = Table::new("twice");
    let acks = Arc::new(InMemoryAcks::new());
    let input = batches(&acks, 0..300, 100);
    // The same messages again, as a source redelivers what it thinks was lost.
    let twice: Vec<_> = input.iter().chain(&input).cloned().collect();
    let sink = PostgresSink::new(options(), table.write()).unwrap();
    let (reason, stats) = run(sink, twice);
    assert_eq!(reason, Reason::Normal);
    assert_eq!(table.ids(), (0..300).collect::<Vec<_>>());
    assert_eq!(acks.acked(), 600, "both deliveries acknowledged");
    assert!(acks.failed().is_empty(), "{:?}", acks.failed());
    let c = stats.snapshot();
    assert_eq!((c.committed_batches, c.committed_messages), (6, 600));
    assert_eq!(
        (c.failed_attempts, c.reconnects, c.failed_batches),
        (0, 0, 0)
    );
}

#[test]
fn insert_rows_chunks_under_the_parameter_limit_and_counts_what_it_inserted() {
    let mut table = Table::new("chunks");
    let mut client = connect();
    // 40 000 rows of 2 parameters: 80 000 parameters, more than one statement takes.
    let rows: Vec<Row> = (0..40_000).map(|id| (id, format!("r{id}"))).collect();
    let mut tx = client.transaction().unwrap();
    assert_eq!(
        insert(&mut tx, &table.name, &rows[..30_000]).unwrap(),
        30_000
    );
    // Overlapping: only the 10 000 new ones are inserted.
    assert_eq!(insert(&mut tx, &table.name, &rows).unwrap(), 10_000);
    assert_eq!(insert(&mut tx, &table.name, &[]).unwrap(), 0);
    tx.commit().unwrap();
    assert_eq!(table.ids(), (0..40_000).collect::<Vec<_>>());

    // A row of the wrong width is an error, and nothing of the call is written.
    let mut tx = client.transaction().unwrap();
    let (a, b) = (50_000i64, 50_001i64);
    let rows: [&[&(dyn ToSql + Sync)]; 2] = [&[&a, &"ok"], &[&b]];
    let err = insert_rows(&mut tx, &table.name, &["id", "body"], &["id"], &rows).unwrap_err();
    assert!(
        err.to_string().contains("expected 2 parameters but got 1"),
        "{err}"
    );
    drop(tx);
    assert_eq!(table.ids().len(), 40_000);
}

/// A write that reports each attempt and waits for the test's go-ahead; it writes
/// its rows, then fails with a server error while `fail(attempt)` holds.
struct Gated {
    table: String,
    attempt: u32,
    fail: fn(u32) -> bool,
    entered: Sender<u32>,
    go: Receiver<()>,
}

impl Gated {
    fn write(mut self) -> impl FnMut(&mut Transaction<'_>, &[Row]) -> Result<(), postgres::Error> {
        move |tx, rows| {
            self.attempt += 1;
            insert(tx, &self.table, rows)?;
            self.entered.send(self.attempt).unwrap();
            self.go
                .recv_timeout(TIMEOUT)
                .expect("the test lets the write go on");
            if (self.fail)(self.attempt) {
                tx.execute("SELECT 1 / 0", &[])?;
            }
            Ok(())
        }
    }
}

#[test]
fn acks_only_after_commit_and_a_failed_attempt_is_not_acked() {
    let mut table = Table::new("after_commit");
    let acks = Arc::new(InMemoryAcks::new());
    let (entered_tx, entered) = unbounded();
    let (go_tx, go) = bounded(0);
    let write = Gated {
        table: table.name.clone(),
        attempt: 0,
        fail: |attempt| attempt == 1,
        entered: entered_tx,
        go,
    }
    .write();
    let sink = PostgresSink::new(options(), write).unwrap();
    let stats = sink.stats();
    let source = from_iter(batches(&acks, 0..50, 50), FromIterOptions::new()).unwrap();
    let sink = sink
        .start(ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new()))
        .unwrap();
    // Attempt 1 wrote its rows and waits: nothing is acknowledged, nothing visible.
    assert_eq!(entered.recv_timeout(TIMEOUT), Ok(1));
    assert_eq!((acks.acked(), acks.in_flight().count()), (0, 50));
    assert_eq!(table.ids(), Vec::<i64>::new());
    go_tx.send(()).unwrap(); // ... and fails: rolled back, not acknowledged.
    assert_eq!(entered.recv_timeout(TIMEOUT), Ok(2));
    assert_eq!((acks.acked(), acks.in_flight().count()), (0, 50));
    assert!(acks.failed().is_empty());
    assert_eq!(
        table.ids(),
        Vec::<i64>::new(),
        "the failed attempt was rolled back"
    );
    go_tx.send(()).unwrap(); // Attempt 2 commits.
    assert_eq!(exit_reason(&sink), Reason::Normal);
    assert_eq!((acks.acked(), acks.in_flight().count()), (50, 0));
    assert_eq!(table.ids(), (0..50).collect::<Vec<_>>());
    let c = stats.snapshot();
    assert_eq!(
        (c.failed_attempts, c.committed_batches, c.failed_batches),
        (1, 1, 0)
    );
}

#[test]
fn after_max_attempts_the_batch_is_acked_as_failed_with_the_error() {
    let mut table = Table::new("gives_up");
    let acks = Arc::new(InMemoryAcks::new());
    let name = table.name.clone();
    let sink = PostgresSink::new(options().max_attempts(3), move |tx, rows: &[Row]| {
        insert(tx, &name, rows)?;
        tx.execute("SELECT 1 / 0", &[])?;
        Ok(())
    })
    .unwrap();
    let (reason, stats) = run(sink, batches(&acks, 0..30, 20));
    assert_eq!(reason, Reason::Normal);
    assert_eq!(table.ids(), Vec::<i64>::new());
    assert_eq!((acks.acked(), acks.in_flight().count()), (0, 0));
    let failed = acks.failed();
    assert_eq!(failed.len(), 30);
    assert!(
        failed
            .iter()
            .all(|f| f.error.contains("after 3 attempts") && f.error.contains("division by zero")),
        "{failed:?}"
    );
    let c = stats.snapshot();
    assert_eq!(
        (c.failed_batches, c.failed_messages, c.failed_attempts),
        (2, 30, 6)
    );
}

/// Terminates the backends whose `application_name` is `name` and waits until they
/// are gone (`pg_terminate_backend` only signals them); returns how many there were.
fn terminate(admin: &mut Client, name: &str) -> usize {
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .expect("terminate the sink's backend")
        .len();
    let admin = std::cell::RefCell::new(admin);
    eventually("the terminated backend to exit", || {
        let row = admin
            .borrow_mut()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .expect("read pg_stat_activity");
        row.get::<_, i64>(0) == 0
    });
    killed
}

#[test]
fn a_connection_killed_mid_batch_is_reconnected_and_the_rows_are_exact() {
    let mut table = Table::new("killed");
    let app = format!("stageflow-test-killed-{}", std::process::id());
    let acks = Arc::new(InMemoryAcks::new());
    let (entered_tx, entered) = unbounded();
    let (go_tx, go) = bounded(0);
    let write = Gated {
        table: table.name.clone(),
        attempt: 0,
        fail: |_| false,
        entered: entered_tx,
        go,
    }
    .write();
    let sink = PostgresSink::new(options().application_name(&app), write).unwrap();
    let stats = sink.stats();
    let source = from_iter(batches(&acks, 0..1000, 100), FromIterOptions::new()).unwrap();
    let sink = sink
        .start(ConsumerOptions::new().subscribe_to(&source, SubscribeOptions::new().max_demand(2)))
        .unwrap();
    let mut admin = connect();
    // 10 batches, one attempt each, and the batch that was cut once more.
    for attempt in 1..=11 {
        assert_eq!(
            entered.recv_timeout(TIMEOUT),
            Ok(attempt),
            "attempt {attempt}"
        );
        if attempt == 4 {
            // Batch 4 wrote its rows and has not committed: cut the session there.
            assert_eq!(terminate(&mut admin, &app), 1, "one sink backend to kill");
        }
        go_tx.send(()).unwrap();
    }
    assert_eq!(exit_reason(&sink), Reason::Normal);
    assert_eq!(table.ids(), (0..1000).collect::<Vec<_>>());
    assert_eq!((acks.acked(), acks.in_flight().count()), (1000, 0));
    assert!(acks.failed().is_empty(), "{:?}", acks.failed());
    let c = stats.snapshot();
    assert_eq!(
        (c.committed_batches, c.failed_attempts, c.reconnects),
        (10, 1, 1),
        "{c:?}"
    );
}

/// Emits the batches it is cast, as they come.
struct Manual;
impl Stage for Manual {
    type In = Never;
    type Out = Batch<Message<Row>>;
}
impl Producer for Manual {
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) {}
}
impl HandleCast<Batch<Message<Row>>> for Manual {
    fn handle_cast(&mut self, batch: Batch<Message<Row>>, ctx: &mut Context<'_, Self>) {
        ctx.emit(batch);
    }
}

#[test]
fn a_connection_killed_between_batches_is_reconnected() {
    let mut table = Table::new("idle_kill");
    let app = format!("stageflow-test-idle-kill-{}", std::process::id());
    let acks = Arc::new(InMemoryAcks::new());
    let sink = PostgresSink::new(options().application_name(&app), table.write()).unwrap();
    let stats = sink.stats();
    let producer = start_producer(Manual, ProducerOptions::new()).unwrap();
    let sink = sink
        .start(ConsumerOptions::new().subscribe_to(&producer, SubscribeOptions::new()))
        .unwrap();
    let mut admin = connect();
    let input = batches(&acks, 0..300, 100);
    for (i, batch) in input.into_iter().enumerate() {
        producer.cast(batch).unwrap();
        eventually("the batch to commit", || {
            stats.snapshot().committed_batches == i as u64 + 1
        });
        if i == 0 {
            // The sink's session sits idle between batches: cut it there.
            assert_eq!(terminate(&mut admin, &app), 1, "one sink backend to kill");
        }
    }
    producer.stop(Reason::Normal).unwrap();
    assert_eq!(exit_reason(&sink), Reason::Normal);
    assert_eq!(table.ids(), (0..300).collect::<Vec<_>>());
    assert_eq!((acks.acked(), acks.in_flight().count()), (300, 0));
    let c = stats.snapshot();
    assert_eq!((c.committed_batches, c.reconnects), (3, 1), "{c:?}");
    assert!(c.failed_attempts <= 1, "{c:?}");
}

#[test]
fn a_sink_that_panics_acks_nothing_of_its_batch() {
    let table = Table::new("panics");
    let acks = Arc::new(InMemoryAcks::new());
    let sink = PostgresSink::new(options(), |_: &mut Transaction<'_>, _: &[Row]| {
        panic!("the write panicked")
    })
    .unwrap();
    let (reason, stats) = run(sink, batches(&acks, 0..10, 10));
    assert_eq!(reason, Reason::Panic("the write panicked".into()));
    assert_eq!((acks.acked(), acks.in_flight().count()), (0, 10));
    assert!(acks.failed().is_empty());
    assert_eq!(stats.snapshot().committed_batches, 0);
    drop(table);
}

#[test]
fn a_drained_pipeline_acknowledged_exactly_the_rows_it_committed() {
    let mut table = Table::new("drained");
    let source = stageflow::pipeline::AckingSource::new(
        (0i64..).map(|id| (id, format!("record {id}"))),
        stageflow::pipeline::DeadLetters::from_fn(|d| panic!("dead letter {d:?}")),
    );
    let counts = source.stats();
    let sink = PostgresSink::new(options(), table.write()).unwrap();
    let stats = sink.stats();
    let mut topology = Topology::new();
    topology.acknowledger("records", source.acknowledger());
    let source = topology
        .source(source, ProducerOptions::new().name("records"))
        .unwrap();
    let batches = topology
        .producer_consumer(
            stageflow::pipeline::Batcher::new(
                stageflow::pipeline::BatcherOptions::new().batch_size(100),
            )
            .unwrap(),
            ProducerConsumerOptions::new()
                .name("batch")
                .subscribe_to(&source, SubscribeOptions::new().max_demand(400)),
        )
        .unwrap();
    topology
        .consumer(
            sink,
            ConsumerOptions::new()
                .name("postgres")
                .subscribe_to(&batches, SubscribeOptions::new().max_demand(2)),
        )
        .unwrap();
    let pipeline = topology.start().unwrap();
    eventually("five batches committed", || {
        stats.snapshot().committed_batches >= 5
    });
    let report = pipeline.drain(TIMEOUT);
    assert!(report.is_complete(), "{report}");
    assert_eq!(report.ack("records").unwrap().unacked, Some(0), "{report}");
    let delivered = report.stage("records").unwrap().events_out;
    let ids = table.ids();
    assert_eq!(ids, (0..delivered as i64).collect::<Vec<_>>(), "{report}");
    let c = counts.snapshot();
    assert_eq!((c.acked, c.failed, c.in_flight), (delivered, 0, 0), "{c:?}");
}
