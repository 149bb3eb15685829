//! `etl work`: one worker of a consumer group. Stream entries → parse (in parallel)
//! → batches → one transaction per batch → `XACK` after the commit.
//!
//! Stages: `redis` (a [`RedisStreamSource`]: its own pending entries first, then new
//! ones, then those other consumers left idle) → `parse-1..n` → `batch` → `write`
//! (SQLite, or PostgreSQL through [`PostgresSink`](stageflow::postgres::PostgresSink)).
//! An entry that is not an ETL line (no `data` field, say) is acknowledged as failed
//! by the parser with its error: the source delivers it again, and after its
//! delivery limit moves it to the dead-letter stream with that error. A line that is
//! not a valid record is no failure: it becomes a reject, committed like a row.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stageflow::pipeline::{
    Acknowledger, Acks, Batch, Batcher, BatcherOptions, Message, PipelineReport,
};
use stageflow::prelude::*;
use stageflow::redis::{
    RedisSourceError, RedisStreamCounts, RedisStreamOptions, RedisStreamSource, StreamEntry,
};

use crate::dist::store::{self, Inserted, Item, Tables};
use crate::dist::{dead_letter_key, Sink};
use crate::record::{self, Parsed, RawLine};
use crate::{Counters, EtlError, Interrupt};

/// A worker to run.
#[derive(Debug)]
pub struct WorkConfig {
    /// The Redis URL.
    pub redis: String,
    /// The stream key.
    pub stream: String,
    /// The consumer group (created at the stream's start if missing).
    pub group: String,
    /// This worker's name in the group: unique among the workers running at once;
    /// a worker started again under the same name first finishes its own pending
    /// entries.
    pub consumer: String,
    /// Where the rows go.
    pub sink: Sink,
    /// The table (rejects in `<table>_rejects`, counts in `<table>_workers`).
    pub table: String,
    /// Parser stages (default: the number of cores).
    pub parsers: usize,
    /// Rows per transaction (default 1 000).
    pub batch_size: usize,
    /// A partial batch is written after this long (default 1 s).
    pub batch_timeout: Duration,
    /// Extra time per batch inside its transaction, to simulate a slow database.
    pub slow_db: Duration,
    /// How long a drain may take before the stages still running are stopped.
    pub drain_deadline: Duration,
    /// End normally once every input registered by `enqueue` is enqueued whole and
    /// the group has nothing unread and nothing pending.
    pub until_done: bool,
    /// Entries other consumers left unacknowledged this long are taken over
    /// (default 30 s).
    pub claim_idle: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream (default 5).
    pub max_deliveries: u32,
    /// The dead-letter stream (default `<stream>:dead`).
    pub dead_letters: String,
    /// Drain requests (signals).
    pub interrupt: Arc<Interrupt>,
    /// Live counters (`read`: entries received; `written`, `rejected`: rows and
    /// rejects in batches written, counted when written).
    pub counters: Arc<Counters>,
}

impl WorkConfig {
    /// Worker `consumer` of `group` on `stream`, writing into `sink`, with the
    /// defaults.
    pub fn new(
        redis: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
        sink: Sink,
    ) -> Self {
        let stream = stream.into();
        WorkConfig {
            redis: redis.into(),
            dead_letters: dead_letter_key(&stream),
            stream,
            group: group.into(),
            consumer: consumer.into(),
            sink,
            table: super::DEFAULT_TABLE.into(),
            parsers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_size: 1000,
            batch_timeout: Duration::from_secs(1),
            slow_db: Duration::ZERO,
            drain_deadline: Duration::from_secs(30),
            until_done: false,
            claim_idle: Duration::from_secs(30),
            max_deliveries: 5,
            interrupt: Arc::default(),
            counters: Arc::default(),
        }
    }
}

/// What one worker did.
#[derive(Debug)]
pub struct WorkOutcome {
    /// The worker's name.
    pub consumer: String,
    /// Entries received from the stream (redeliveries included).
    pub read: u64,
    /// Rows this worker inserted (committed).
    pub written: u64,
    /// Rejects this worker inserted (committed).
    pub rejected: u64,
    /// Entries that were no ETL lines, acknowledged as failed.
    pub failed: u64,
    /// Entries handed to the pipeline whose acknowledgement had not reached Redis
    /// when the drain deadline passed (they stay pending: another worker takes
    /// them over, and writing them again adds nothing).
    pub unacked: u64,
    /// The source's counters at the end (acked, redelivered, reclaimed,
    /// dead-lettered, lost, pending, lag).
    pub source: RedisStreamCounts,
    /// A drain was requested (a signal).
    pub interrupted: bool,
    /// The stages' report.
    pub report: PipelineReport,
    /// Time the worker ran.
    pub elapsed: Duration,
}

impl WorkOutcome {
    /// Entries acknowledged as written that were in the tables already: delivered
    /// again after a worker committed them and died before its `XACK`.
    pub fn duplicates(&self) -> u64 {
        self.source
            .acked
            .saturating_sub(self.written + self.rejected)
    }
}

impl fmt::Display for WorkOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.source;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "worker   {}: read {} entries in {secs:.2} s ({:.0}/s); {} redelivered, {} taken over from other consumers; reconnected {} times",
            self.consumer,
            self.read,
            self.read as f64 / secs,
            s.redelivered,
            s.reclaimed,
            s.reconnects
        )?;
        writeln!(f, "written  {:>9} rows", self.written)?;
        writeln!(f, "rejected {:>9} lines", self.rejected)?;
        writeln!(
            f,
            "already  {:>9} entries committed by an earlier delivery (not written again)",
            self.duplicates()
        )?;
        writeln!(
            f,
            "failed   {:>9} entries that are no ETL lines ({} dead-lettered by this worker)",
            self.failed, s.dead_lettered
        )?;
        writeln!(f, "acked    {:>9} entries", s.acked)?;
        if self.unacked > 0 {
            writeln!(
                f,
                "unacked  {:>9} entries handed out and not acknowledged by the drain deadline",
                self.unacked
            )?;
        }
        if s.lost > 0 {
            writeln!(
                f,
                "LOST     {:>9} entries trimmed from the stream while pending",
                s.lost
            )?;
        }
        let lag = s
            .lag
            .map_or("an unknown number of".into(), |n| n.to_string());
        write!(
            f,
            "left     {} entries taken by this worker and not acknowledged; {lag} entries unread in the group",
            s.pending
        )
    }
}

/// Turns a stream entry into a parsed line, or says why it is no ETL line.
fn item(entry: StreamEntry) -> Result<Item, String> {
    let mut input = None;
    let mut line = None;
    let mut data = None;
    for (name, value) in entry.fields {
        match name.as_str() {
            "input" => input = Some(value),
            "line" => line = Some(value),
            "data" => data = Some(value),
            _ => {}
        }
    }
    let missing = |field: &str| format!("not an ETL entry: no field `{field}`");
    let input = String::from_utf8(input.ok_or_else(|| missing("input"))?)
        .map_err(|_| "not an ETL entry: field `input` is not UTF-8".to_string())?;
    let line = line.ok_or_else(|| missing("line"))?;
    let line = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.parse::<u64>().ok())
        .filter(|&l| l > 0)
        .ok_or_else(|| {
            format!(
                "not an ETL entry: field `line` is not a line number: {:?}",
                String::from_utf8_lossy(&line)
            )
        })?;
    let data = data.ok_or_else(|| missing("data"))?;
    let mut parsed = record::parse(RawLine {
        input: 0,
        line,
        bytes: data,
        hash: None,
    });
    // What the tables cannot hold is a reject, decided here so that SQLite and
    // PostgreSQL hold the same rows.
    if let Parsed::Row { row, text, .. } = &parsed {
        let refusal = if i64::try_from(row.id).is_err() {
            Some(format!(
                "id {} is out of range for the database (at most {})",
                row.id,
                i64::MAX
            ))
        } else if [row.name(), row.email(), row.tags(), row.ts()]
            .iter()
            .any(|s| s.contains('\0'))
        {
            Some("a text field holds a NUL character, which PostgreSQL text cannot hold".into())
        } else {
            None
        };
        if let Some(error) = refusal {
            parsed = Parsed::Reject {
                input: 0,
                line,
                hash: None,
                error,
                raw: text.as_bytes().to_vec(),
            };
        }
    }
    Ok(Item { input, parsed })
}

/// Parses entries; one of several running in parallel. Entries that are no ETL
/// lines are acknowledged as failed here, one call per batch of them.
struct Parse {
    counters: Arc<Counters>,
    failed: Arc<AtomicU64>,
    /// The source's acknowledger, taken from the first message: a drain waits for
    /// its acknowledgements to reach Redis before the process exits.
    acker: Arc<OnceLock<Arc<dyn Acknowledger>>>,
}

impl Stage for Parse {
    type In = Message<StreamEntry>;
    type Out = Message<Item>;
}

impl ProducerConsumer for Parse {
    fn handle_events(
        &mut self,
        entries: Vec<Message<StreamEntry>>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        self.counters
            .read
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        if self.acker.get().is_none() {
            if let Some(ack) = entries.first().and_then(|m| m.ack_ref()) {
                let _ = self.acker.set(ack.acknowledger().clone());
            }
        }
        let mut failures = Acks::new();
        let mut out = Vec::with_capacity(entries.len());
        for message in entries {
            let (entry, ack) = message.into_parts();
            let id = entry.id;
            match item(entry) {
                Ok(item) => out.push(Message::from_parts(item, ack)),
                Err(error) => {
                    log::warn!("entry {id}: {error}");
                    if let Some(ack) = &ack {
                        failures.failed_ref(ack, error);
                    }
                }
            }
        }
        self.failed
            .fetch_add(failures.len() as u64, Ordering::Relaxed);
        failures.send();
        ctx.emit_all(out);
    }
}

/// Writes each batch into SQLite in one transaction, then acknowledges it.
struct SqliteWrite {
    db: rusqlite::Connection,
    tables: Tables,
    stream: String,
    consumer: String,
    slow: Duration,
    counters: Arc<Counters>,
    fatal: Arc<Mutex<Option<String>>>,
}

impl SqliteWrite {
    fn write(&mut self, batch: &[Message<Item>]) -> rusqlite::Result<Inserted> {
        // IMMEDIATE: take the write lock at BEGIN, where SQLite's busy handler waits
        // for another worker's batch, rather than upgrading later.
        let tx = self
            .db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let items: Vec<&Item> = batch.iter().map(|m| &m.data).collect();
        let inserted =
            store::sqlite_write(&tx, &self.tables, &self.stream, &self.consumer, &items)?;
        if !self.slow.is_zero() {
            // A slow database: the time is spent inside the transaction.
            std::thread::sleep(self.slow);
        }
        tx.commit()?;
        Ok(inserted)
    }
}

impl Stage for SqliteWrite {
    type In = Batch<Message<Item>>;
    type Out = Never;
}

impl Consumer for SqliteWrite {
    fn handle_events(
        &mut self,
        batches: Vec<Batch<Message<Item>>>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        for batch in batches {
            match self.write(&batch.events) {
                Ok(inserted) => {
                    // After the commit, never before: a crash in between leaves the
                    // entries pending, and their second write inserts nothing.
                    Acks::all_successful(&batch.events);
                    self.counters
                        .written
                        .fetch_add(inserted.rows, Ordering::Relaxed);
                    self.counters
                        .rejected
                        .fetch_add(inserted.rejects, Ordering::Relaxed);
                }
                Err(e) => {
                    // Not the entries' fault: they stay pending (unacknowledged) for
                    // this worker's next run or another worker.
                    *self.fatal.lock() = Some(e.to_string());
                    ctx.stop(Reason::custom(format!("database write failed: {e}")));
                    return;
                }
            }
        }
    }
}

/// Whether the load is finished: every input `enqueue` registered is enqueued
/// whole, and the group has nothing unread and nothing pending. (`enqueue` adds
/// entries and counts them in one `MULTI`, and registers all its inputs before
/// adding any, so once this holds, every line of them was written and
/// acknowledged.)
fn load_finished(
    con: &mut redis::Connection,
    url: &str,
    stream: &str,
    group: &str,
) -> Result<bool, EtlError> {
    let progress: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(super::progress_key(stream))
        .query(con)
        .map_err(|e| super::redis_error(url, "HGETALL", e))?;
    let mut inputs = 0;
    for (field, value) in &progress {
        if field.ends_with(":name") || field.ends_with(":lines") {
            continue;
        }
        inputs += 1;
        if progress.get(&format!("{field}:lines")) != Some(value) {
            return Ok(false);
        }
    }
    if inputs == 0 {
        return Ok(false);
    }
    let groups = super::groups(con, url, stream)?;
    Ok(groups
        .iter()
        .find(|g| g.name == group)
        .is_some_and(|g| g.pending == 0 && g.lag == Some(0)))
}

/// `--until-done`: drains the worker once the load is finished, looking four
/// times a second (a few cheap commands; Redis has nothing to wait on for this).
fn until_done(
    url: &str,
    stream: &str,
    group: &str,
    handle: &stageflow::pipeline::PipelineHandle,
    finished: &std::sync::atomic::AtomicBool,
) {
    let mut con = None;
    while !handle.is_draining() {
        std::thread::sleep(Duration::from_millis(250));
        if con.is_none() {
            con = super::connect(url).ok();
        }
        let Some(c) = con.as_mut() else { continue };
        match load_finished(c, url, stream, group) {
            Ok(true) => {
                finished.store(true, Ordering::SeqCst);
                handle.drain();
                return;
            }
            Ok(false) => {}
            // The source reconnects on its own; this looks again with a new
            // connection.
            Err(e) => {
                log::warn!("--until-done: {e}");
                con = None;
            }
        }
    }
}

/// The counts of this worker in the tables (to tell what this run added).
fn worker_counts(config: &WorkConfig, tables: &Tables) -> Result<Inserted, EtlError> {
    match &config.sink {
        Sink::Sqlite(path) => {
            let db = rusqlite::Connection::open(path)
                .map_err(|e| EtlError::Database(format!("{}: {e}", path.display())))?;
            db.busy_timeout(Duration::from_secs(60))
                .and_then(|()| {
                    store::retry_busy(Instant::now() + Duration::from_secs(60), || {
                        store::sqlite_worker(&db, tables, &config.stream, &config.consumer)
                    })
                })
                .map_err(|e| EtlError::Database(format!("{}: {e}", path.display())))
        }
        #[cfg(feature = "postgres")]
        Sink::Postgres(conn) => {
            let mut client = store::pg::connect(conn).map_err(EtlError::Database)?;
            store::pg::worker(&mut client, tables, &config.stream, &config.consumer)
                .map_err(|e| EtlError::Database(format!("PostgreSQL: {e}")))
        }
        #[cfg(not(feature = "postgres"))]
        Sink::Postgres(_) => Err(Sink::unsupported()),
    }
}

/// Runs a worker until a signal drains it or, with `until_done`, until the stream
/// has nothing unread and nothing pending.
///
/// ```no_run
/// use stageflow_etl::dist::work::{work, WorkConfig};
/// use stageflow_etl::dist::Sink;
/// let mut config = WorkConfig::new(
///     "redis://127.0.0.1:6379/", "load", "etl", "worker-1", Sink::Sqlite("etl.db".into()),
/// );
/// config.until_done = true;
/// let outcome = work(config)?;
/// println!("{outcome}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn work(config: WorkConfig) -> Result<WorkOutcome, EtlError> {
    super::validate_table(&config.table).map_err(EtlError::Usage)?;
    if config.consumer.is_empty() {
        return Err(EtlError::Usage(
            "--consumer needs a name, got an empty one".into(),
        ));
    }
    let started = Instant::now();
    let tables = Tables::new(&config.table);
    let failed_start =
        |e: &dyn fmt::Display| EtlError::Failed(format!("starting the pipeline: {e}"));
    let fatal = Arc::new(Mutex::new(None::<String>));
    // The sink first: a database that cannot be used is refused before anything is
    // read from the stream.
    enum Writer {
        Sqlite(Box<SqliteWrite>),
        #[cfg(feature = "postgres")]
        Postgres(Box<stageflow::postgres::PostgresSink<Item>>),
    }
    let writer = match &config.sink {
        Sink::Sqlite(path) => Writer::Sqlite(Box::new(SqliteWrite {
            db: store::sqlite_open(path, &tables).map_err(EtlError::Database)?,
            tables: tables.clone(),
            stream: config.stream.clone(),
            consumer: config.consumer.clone(),
            slow: config.slow_db,
            counters: config.counters.clone(),
            fatal: fatal.clone(),
        })),
        #[cfg(feature = "postgres")]
        Sink::Postgres(conn) => {
            let mut client = store::pg::connect(conn).map_err(EtlError::Database)?;
            store::pg::create(&mut client, &tables).map_err(EtlError::Database)?;
            drop(client);
            let (tables, stream, consumer) = (
                tables.clone(),
                config.stream.clone(),
                config.consumer.clone(),
            );
            let (slow, counters) = (config.slow_db, config.counters.clone());
            // Named in `pg_stat_activity` (PostgreSQL keeps 63 bytes of it).
            let options = stageflow::postgres::PostgresSinkOptions::new(conn.clone())
                .application_name(format!("etl {}@{}", config.consumer, config.stream));
            let sink =
                stageflow::postgres::PostgresSink::new(options, move |tx, items: &[Item]| {
                    let inserted = store::pg::write(tx, &tables, &stream, &consumer, items)?;
                    if !slow.is_zero() {
                        std::thread::sleep(slow);
                    }
                    // Counted per attempt (a progress display); the summary counts from
                    // the committed tables.
                    counters.written.fetch_add(inserted.rows, Ordering::Relaxed);
                    counters
                        .rejected
                        .fetch_add(inserted.rejects, Ordering::Relaxed);
                    Ok(())
                })
                .map_err(|e| EtlError::Database(format!("PostgreSQL: {e}")))?;
            Writer::Postgres(Box::new(sink))
        }
        #[cfg(not(feature = "postgres"))]
        Sink::Postgres(_) => return Err(Sink::unsupported()),
    };
    let before = worker_counts(&config, &tables)?;
    let options = RedisStreamOptions::new(
        config.redis.clone(),
        config.stream.clone(),
        config.group.clone(),
        config.consumer.clone(),
    )
    .claim_idle(config.claim_idle)
    .max_deliveries(config.max_deliveries)
    .dead_letter_stream(config.dead_letters.clone())
    // `--until-done` is decided here, not by the source's own idle end: an idle
    // stream is not a finished load while `enqueue` is still running (workers
    // started first, or faster than it). See `until_done`.
    .stop_when_idle(false)
    // At most what the parsers ask for at once: entries read ahead of demand would
    // sit in this process, pending, instead of being available to the others.
    .max_count(1000);
    let source = RedisStreamSource::new(options).map_err(|e| match e {
        RedisSourceError::Options(e) => EtlError::Usage(e.to_string()),
        e => EtlError::Redis(format!("{} ({}): {e}", config.stream, config.redis)),
    })?;
    let stats = source.stats();
    let failed = Arc::new(AtomicU64::new(0));
    let acker = Arc::new(OnceLock::new());

    // What a worker holds at once (read from Redis, not yet committed) is bounded by
    // these demands: about parsers x (parse demand + batch size) + 2 batches. Kept
    // small, since those entries age in the group while they wait here, and one
    // held longer than `claim_idle` is taken over by another worker (a second
    // delivery, which costs a duplicate write and counts towards the limit).
    let parse_demand = config.batch_size.clamp(10, 500);
    let mut topology = Topology::new();
    let redis = topology
        .source(source, ProducerOptions::new().name("redis"))
        .map_err(|e| failed_start(&e))?;
    let mut parse = Vec::new();
    for i in 1..=config.parsers.max(1) {
        parse.push(
            topology
                .producer_consumer(
                    Parse {
                        counters: config.counters.clone(),
                        failed: failed.clone(),
                        acker: acker.clone(),
                    },
                    ProducerConsumerOptions::new()
                        .name(format!("parse-{i}"))
                        .subscribe_to(&redis, SubscribeOptions::new().max_demand(parse_demand)),
                )
                .map_err(|e| failed_start(&e))?,
        );
    }
    let mut batch_opts = ProducerConsumerOptions::new().name("batch");
    for p in &parse {
        // Transient: the batcher outlives all parsers but the last (fan-in).
        batch_opts = batch_opts.subscribe_to(
            p,
            SubscribeOptions::new()
                .max_demand(config.batch_size.max(2))
                .cancel(CancelMode::Transient),
        );
    }
    let batcher = Batcher::new(
        BatcherOptions::new()
            .batch_size(config.batch_size)
            .batch_timeout(config.batch_timeout),
    )
    .map_err(|e| EtlError::Usage(e.to_string()))?;
    let batcher = topology
        .producer_consumer(batcher, batch_opts)
        .map_err(|e| failed_start(&e))?;
    let write_opts = ConsumerOptions::new()
        .name("write")
        .subscribe_to(&batcher, SubscribeOptions::new().max_demand(2));
    match writer {
        Writer::Sqlite(w) => {
            topology
                .consumer(*w, write_opts)
                .map_err(|e| failed_start(&e))?;
        }
        #[cfg(feature = "postgres")]
        Writer::Postgres(w) => {
            topology
                .consumer(*w, write_opts)
                .map_err(|e| failed_start(&e))?;
        }
    }
    config.interrupt.attach(topology.handle());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if config.until_done {
        let (handle, finished) = (topology.handle(), finished.clone());
        let (url, stream, group) = (
            config.redis.clone(),
            config.stream.clone(),
            config.group.clone(),
        );
        std::thread::Builder::new()
            .name("etl-until-done".into())
            .spawn(move || until_done(&url, &stream, &group, &handle, &finished))
            .map_err(|e| failed_start(&e))?;
    }
    let pipeline = topology.start().map_err(|e| failed_start(&e))?;
    let drain_started = Instant::now();
    let report = pipeline.wait(config.drain_deadline);
    // The source's acknowledger sends its `XACK`s from a thread of its own: after a
    // drain, wait (within the deadline) until the last ones reached Redis, or the
    // process would exit with committed entries still pending.
    let unacked = match acker.get().and_then(|a| a.in_flight()) {
        Some(in_flight) if config.interrupt.is_requested() => {
            in_flight.wait_until_zero(drain_started + config.drain_deadline)
        }
        _ => 0,
    };
    let failure = report.stages.iter().find_map(|s| match &s.exit {
        Some(reason) if !reason.is_normal() && !matches!(reason, Reason::Shutdown) => {
            Some(format!("stage {}: {reason}", s.name))
        }
        _ => None,
    });
    if let Some(e) = fatal.lock().take() {
        return Err(EtlError::Database(e));
    }
    if let Some(f) = failure {
        return Err(if f.starts_with("stage redis") {
            EtlError::Redis(f)
        } else if f.starts_with("stage write") {
            EtlError::Database(f)
        } else {
            EtlError::Failed(f)
        });
    }
    let after = worker_counts(&config, &tables)?;
    Ok(WorkOutcome {
        consumer: config.consumer.clone(),
        read: config.counters.read.load(Ordering::Relaxed),
        written: after.rows - before.rows,
        rejected: after.rejects - before.rejects,
        failed: failed.load(Ordering::Relaxed),
        unacked,
        source: stats.snapshot(),
        interrupted: config.interrupt.is_requested() && !finished.load(Ordering::SeqCst),
        report,
        elapsed: started.elapsed(),
    })
}
