//! A PostgreSQL sink that acknowledges messages only after their batch is committed
//! (feature `postgres`).
//!
//! [`PostgresSink`] is the end of a pipeline that reads from a broker: it receives
//! [`Batch`]es of [`Message`]s (from a [`Batcher`](crate::pipeline::Batcher)), writes
//! each batch in one transaction with a closure of yours, and acknowledges the batch's
//! messages (one [`Acknowledger::ack`](crate::pipeline::Acknowledger::ack) call per
//! source) only once `COMMIT` succeeded. Nothing is confirmed to the source before it
//! is durable.
//!
//! # Failures
//!
//! - **A connection error** (the server restarted, the backend was terminated, the
//!   network dropped): the sink reconnects, with backoff, and writes the *whole
//!   batch* again in a new transaction. A `COMMIT` that was cut may or may not have
//!   happened, so **writes must be idempotent**: key every row by the record's
//!   identity (a stream id, a natural key) and insert with `ON CONFLICT DO NOTHING`,
//!   as [`insert_rows`] does. The same holds for a message its source redelivers
//!   after a crash: writing it twice leaves one row.
//! - **Any other error** (the closure's, a constraint, a deadlock) rolls the
//!   transaction back and is retried the same way, since some are transient.
//! - After [`max_attempts`](PostgresSinkOptions::max_attempts) attempts the batch is
//!   acknowledged as **failed**, every message with the last error: the source
//!   decides (a broker redelivers it, then dead-letters it). A batch fails as a whole,
//!   so a record that can never be written should be acknowledged as failed before
//!   the sink (while parsing, say) rather than sink its batch-mates.
//! - **A panic** in the closure stops the sink (with the panic as its reason) and
//!   acknowledges nothing of that batch: its messages stay in flight for their source
//!   to redeliver.
//!
//! The sink waits out its backoff inside its callback (the stage answers calls and
//! stops once the batch is settled): at most `max_attempts - 1` waits of at most the
//! maximum backoff each.
//!
//! # COPY or INSERT
//!
//! Rows are written with multi-row `INSERT ... ON CONFLICT (key) DO NOTHING`
//! ([`insert_rows`]), not `COPY`: `COPY FROM` cannot skip rows that are already there
//! (one duplicate fails the whole statement), and idempotence by key is what makes a
//! redelivered batch harmless. `COPY` into a temporary table followed by
//! `INSERT ... SELECT ... ON CONFLICT DO NOTHING` would keep the idempotence at the
//! price of a second statement and a table per connection; a batch of a few thousand
//! rows is one or a few multi-row statements with binary parameters, one round trip
//! each.
//!
//! Measured once (release build, PostgreSQL 15 on the same 2-core virtual machine,
//! load average above 30 from other builds; 200 000 rows of a `bigint` key and a
//! 50-byte `text`, batches of 1 000, one transaction each, three alternating rounds):
//! `insert_rows` 54 000 – 60 000 rows/s; `COPY` into a temporary table then
//! `INSERT ... SELECT ... ON CONFLICT DO NOTHING` 37 000 – 49 000 rows/s; a plain
//! `COPY` into the table (not idempotent: no use for redelivered batches) 71 000 –
//! 89 000 rows/s.
//!
//! # Connections
//!
//! The connection string is a libpq key/value string (`host=127.0.0.1 user=postgres
//! dbname=test`) or a URL (`postgresql://postgres@127.0.0.1/test`). The sink sets the
//! session's `application_name` (default `stageflow`, or the one in the string, or
//! [`PostgresSinkOptions::application_name`]), so its backend is easy to find in
//! `pg_stat_activity`. Connections are made without TLS.
//!
//! ```no_run
//! use std::time::Duration;
//! use stageflow::pipeline::{Batcher, BatcherOptions, InMemoryAcks, Message};
//! use stageflow::postgres::{insert_rows, PostgresSink, PostgresSinkOptions};
//! use stageflow::prelude::*;
//!
//! let acks = std::sync::Arc::new(InMemoryAcks::new());
//! let messages: Vec<Message<(i64, String)>> =
//!     (0..1000).map(|i| Message::new((i, format!("record {i}")), acks.hand_out())).collect();
//!
//! let options = PostgresSinkOptions::new("host=127.0.0.1 user=postgres dbname=test");
//! let mut client = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls)?;
//! client.batch_execute("CREATE TABLE IF NOT EXISTS records (id bigint PRIMARY KEY, body text)")?;
//! let sink = PostgresSink::new(options, |tx, records: &[(i64, String)]| {
//!     let rows: Vec<[&(dyn postgres::types::ToSql + Sync); 2]> =
//!         records.iter().map(|(id, body)| [id as _, body as _]).collect();
//!     let rows: Vec<&[_]> = rows.iter().map(|r| &r[..]).collect();
//!     insert_rows(tx, "records", &["id", "body"], &["id"], &rows)?;
//!     Ok(())
//! })?;
//!
//! let mut topology = Topology::new();
//! let source = topology.from_iter(messages, FromIterOptions::new())?;
//! let batches = topology.producer_consumer(
//!     Batcher::new(BatcherOptions::new().batch_size(500))?,
//!     ProducerConsumerOptions::new().name("batch").subscribe_to(&source, SubscribeOptions::new()),
//! )?;
//! topology.consumer(sink, ConsumerOptions::new().name("postgres").subscribe_to(&batches, SubscribeOptions::new().max_demand(2)))?;
//! let report = topology.start()?.wait(Duration::from_secs(60));
//! assert!(report.is_complete(), "{report}");
//! assert_eq!(acks.acked(), 1000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::postgres::config::Host;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, NoTls, Transaction};

use crate::error::{OptionsError, StartError};
use crate::pipeline::{AckRef, Acks, Batch, Jitter, Message, RetryDecision, RetryPolicy};
use crate::stage::{
    start_consumer, Consumer, ConsumerOptions, Context, Never, Stage, StageRef, SubscriptionRef,
};

/// The most parameters one statement may carry: the protocol counts them in 16 bits.
pub const MAX_PARAMETERS: usize = u16::MAX as usize;

/// Where and how a [`PostgresSink`] writes. Defaults: 5 attempts per batch, backoff
/// from 100 ms doubling up to 5 s (± 20 % jitter), `application_name` `stageflow`
/// unless the connection string names one, a connect timeout of 10 s unless it names
/// one.
///
/// ```
/// use std::time::Duration;
/// use stageflow::postgres::PostgresSinkOptions;
/// let options = PostgresSinkOptions::new("host=127.0.0.1 user=postgres dbname=test")
///     .max_attempts(10)
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))
///     .application_name("etl-worker-1");
/// assert!(options.validate().is_ok());
/// let err = PostgresSinkOptions::new("host=127.0.0.1").max_attempts(0).validate().unwrap_err();
/// assert_eq!(err.to_string(), "expected max_attempts to be greater than 0, got: 0");
/// let err = PostgresSinkOptions::new("host=127.0.0.1 port=x").validate().unwrap_err();
/// assert!(err.to_string().starts_with("expected conn to be a PostgreSQL connection string or URL, got: \"host=127.0.0.1 port=x\""), "{err}");
/// ```
#[derive(Clone)]
pub struct PostgresSinkOptions {
    conn: String,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    application_name: Option<String>,
}

impl fmt::Debug for PostgresSinkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection string may hold a password: show what the parsed config
        // shows (it redacts the password), or nothing.
        let conn = match self.conn.parse::<Config>() {
            Ok(config) => format!("{config:?}"),
            Err(_) => "<unparsable>".to_string(),
        };
        f.debug_struct("PostgresSinkOptions")
            .field("conn", &conn)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl PostgresSinkOptions {
    /// Options for the database at `conn` (a key/value string or a URL).
    pub fn new(conn: impl Into<String>) -> Self {
        PostgresSinkOptions {
            conn: conn.into(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            application_name: None,
        }
    }

    /// Attempts per batch before it is acknowledged as failed (default 5; must be
    /// > 0). A reconnection that fails counts as an attempt.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait before the second attempt and the longest wait; the wait doubles
    /// between (default 100 ms .. 5 s; `0 < initial <= max`).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// The session's `application_name`, shown in `pg_stat_activity` (default: the
    /// connection string's, else `stageflow`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Checks the values; the error names the option and the value.
    pub fn validate(&self) -> Result<(), OptionsError> {
        self.config()?;
        self.policy()?;
        Ok(())
    }

    fn config(&self) -> Result<Config, OptionsError> {
        let mut config: Config = self.conn.parse().map_err(|e| {
            OptionsError::new(format!(
                "expected conn to be a PostgreSQL connection string or URL, got: {:?} ({e})",
                self.conn
            ))
        })?;
        if let Some(name) = &self.application_name {
            config.application_name(name);
        } else if config.get_application_name().is_none() {
            config.application_name("stageflow");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(config)
    }

    fn policy(&self) -> Result<RetryPolicy<postgres::Error>, OptionsError> {
        RetryPolicy::new(self.max_attempts)?.backoff(self.initial_backoff, self.max_backoff)
    }
}

/// Why a [`PostgresSink`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PostgresSinkError {
    /// An option is invalid.
    #[error("bad options: {0}")]
    BadOptions(#[from] OptionsError),
    /// The first connection failed.
    #[error("PostgreSQL not reachable at {target}: {}", full_text(source))]
    Connect {
        /// Hosts, ports, database and user, as configured.
        target: String,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
}

/// Counters of a [`PostgresSink`], readable from any thread while it runs and after.
///
/// ```
/// let stats = stageflow::postgres::PostgresSinkStats::default();
/// assert_eq!(stats.snapshot().committed_batches, 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PostgresSinkStats {
    inner: Arc<SinkCounters>,
}

#[derive(Debug, Default)]
struct SinkCounters {
    committed_batches: AtomicU64,
    committed_messages: AtomicU64,
    failed_attempts: AtomicU64,
    reconnects: AtomicU64,
    failed_batches: AtomicU64,
    failed_messages: AtomicU64,
}

/// A snapshot of [`PostgresSinkStats`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PostgresSinkCounts {
    /// Batches committed (and acknowledged as successful).
    pub committed_batches: u64,
    /// Messages in those batches.
    pub committed_messages: u64,
    /// Attempts that failed (each was rolled back, then retried or given up).
    pub failed_attempts: u64,
    /// Connections made after the first (after a connection error).
    pub reconnects: u64,
    /// Batches given up on after `max_attempts` (acknowledged as failed).
    pub failed_batches: u64,
    /// Messages in those batches.
    pub failed_messages: u64,
}

impl PostgresSinkStats {
    /// The counters now.
    pub fn snapshot(&self) -> PostgresSinkCounts {
        let c = &self.inner;
        PostgresSinkCounts {
            committed_batches: c.committed_batches.load(Ordering::Relaxed),
            committed_messages: c.committed_messages.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            failed_messages: c.failed_messages.load(Ordering::Relaxed),
        }
    }
}

type WriteFn<T> = Box<dyn FnMut(&mut Transaction<'_>, &[T]) -> Result<(), postgres::Error> + Send>;

/// A consumer of [`Batch`]es of [`Message`]s that writes each batch in one
/// transaction and acknowledges its messages after the commit (see the
/// [module docs](self) for the failure handling and an example).
///
/// `write` gets the transaction and the batch's data, in arrival order; it must be
/// idempotent (the same data written twice leaves the rows of one write), since a
/// batch is written again after a connection error and a source redelivers what was
/// not acknowledged. `K` is the batch key of a keyed batcher (`()` by default).
///
/// Its events are whole batches: subscribe it with a small `max_demand` (2 to 4) so
/// that few batches wait in its mailbox, since those are in flight for a drain.
pub struct PostgresSink<T, K = ()> {
    config: Config,
    policy: RetryPolicy<postgres::Error>,
    jitter: Jitter,
    client: Option<Client>,
    write: WriteFn<T>,
    stats: PostgresSinkStats,
    key: PhantomData<fn() -> K>,
}

impl<T, K> fmt::Debug for PostgresSink<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSink")
            .field("config", &self.config)
            .field("policy", &self.policy)
            .field("connected", &self.client.is_some())
            .field("counts", &self.stats.snapshot())
            .finish()
    }
}

impl<T: Send + 'static, K: Send + 'static> PostgresSink<T, K> {
    /// Checks the options and connects once, so that a wrong address or database is an
    /// error here rather than a stream of failed batches later.
    pub fn new(
        options: PostgresSinkOptions,
        write: impl FnMut(&mut Transaction<'_>, &[T]) -> Result<(), postgres::Error> + Send + 'static,
    ) -> Result<Self, PostgresSinkError> {
        let config = options.config()?;
        let policy = options.policy()?;
        let client = config
            .connect(NoTls)
            .map_err(|source| PostgresSinkError::Connect {
                target: describe(&config),
                source,
            })?;
        Ok(PostgresSink {
            config,
            policy,
            jitter: Jitter::from_entropy(),
            client: Some(client),
            write: Box::new(write),
            stats: PostgresSinkStats::default(),
            key: PhantomData,
        })
    }

    /// Its counters, to read while it runs and after.
    pub fn stats(&self) -> PostgresSinkStats {
        self.stats.clone()
    }

    /// Starts it as a consumer.
    pub fn start(
        self,
        options: ConsumerOptions<Batch<Message<T>, K>>,
    ) -> Result<StageRef<Self>, StartError> {
        start_consumer(self, options)
    }

    /// Writes one batch until it commits or the policy gives up, then acknowledges.
    fn write_batch(&mut self, messages: Vec<Message<T>>, ctx: &Context<'_, Self>) {
        let (data, refs): (Vec<T>, Vec<Option<AckRef>>) =
            messages.into_iter().map(Message::into_parts).unzip();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let Err(error) = self.attempt(&data) else {
                break Ok(());
            };
            self.stats
                .inner
                .failed_attempts
                .fetch_add(1, Ordering::Relaxed);
            match self.policy.decide(attempt, &error, &mut self.jitter) {
                RetryDecision::RetryAfter(delay) => {
                    ctx.log(
                        crate::stage::log::Level::Warning,
                        format!(
                            "attempt {attempt} at a batch of {} failed, retrying in {delay:?}: {}",
                            data.len(),
                            full_text(&error)
                        ),
                    );
                    std::thread::sleep(delay);
                }
                RetryDecision::GiveUp(_) => break Err(error),
            }
        };
        let mut acks = Acks::new();
        let counters = &self.stats.inner;
        match outcome {
            Ok(()) => {
                for r in refs.iter().flatten() {
                    acks.successful_ref(r);
                }
                counters.committed_batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .committed_messages
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                let error = format!(
                    "PostgreSQL write failed after {attempt} attempts: {}",
                    full_text(&error)
                );
                ctx.log(
                    crate::stage::log::Level::Warning,
                    format!(
                        "a batch of {} is acknowledged as failed: {error}",
                        data.len()
                    ),
                );
                for r in refs.iter().flatten() {
                    acks.failed_ref(r, &error);
                }
                counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .failed_messages
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        acks.send();
    }

    /// One transaction: connect if needed, write, commit.
    fn attempt(&mut self, data: &[T]) -> Result<(), postgres::Error> {
        if self.client.as_ref().map_or(true, Client::is_closed) {
            self.client = None;
            let client = self.config.connect(NoTls)?;
            self.stats.inner.reconnects.fetch_add(1, Ordering::Relaxed);
            self.client = Some(client);
        }
        let client = self.client.as_mut().expect("connected above");
        let result = (|| {
            let mut tx = client.transaction()?;
            (self.write)(&mut tx, data)?;
            tx.commit()
        })();
        if let Err(error) = &result {
            if lost_connection(error) {
                // Start the next attempt on a new connection rather than find out
                // with another failed statement.
                self.client = None;
            }
        }
        result
    }
}

/// Whether `error` means the session is gone: no server error (the socket failed or
/// closed), or a server error of class 08 (connection exception) or 57P (the server
/// shut the session down: `pg_terminate_backend`, a shutdown, a crash).
fn lost_connection(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || code.starts_with("57P")
        }
        // A client-side error with no server code: a conversion error of the
        // closure's, or the socket. Reconnecting costs one connection; keeping a dead
        // one would cost the next attempt.
        None => true,
    }
}

/// The error with its causes: the client's `Display` says only "db error" for a
/// server error, and the server's message is what a dead letter needs.
fn full_text(error: &::postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "host={} port={} dbname={} user={}",
        if hosts.is_empty() {
            "(default)".to_string()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".to_string()
        } else {
            ports.join(",")
        },
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)"),
    )
}

impl<T: Send + 'static, K: Send + 'static> Stage for PostgresSink<T, K> {
    type In = Batch<Message<T>, K>;
    type Out = Never;
}

impl<T: Send + 'static, K: Send + 'static> Consumer for PostgresSink<T, K> {
    fn handle_events(
        &mut self,
        batches: Vec<Batch<Message<T>, K>>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        for batch in batches {
            self.write_batch(batch.events, ctx);
        }
    }
}

/// Inserts `rows` into `table` with multi-row `INSERT INTO table (columns) VALUES
/// (..), (..) ON CONFLICT (conflict_key) DO NOTHING`, in as few statements as the
/// protocol's limit of 65 535 parameters allows; returns how many rows were inserted
/// (rows whose key was already there are not counted).
///
/// An empty `conflict_key` writes `ON CONFLICT DO NOTHING`: any unique violation skips
/// the row. `table`, `columns` and `conflict_key` are written into the statement as
/// given (quote them yourself if they need it): they must come from the program,
/// never from input. Values travel as binary parameters. A row whose length is not
/// `columns.len()` is an error (the client's parameter-count error) and nothing of
/// the call is written.
///
/// ```no_run
/// use postgres::types::ToSql;
/// let mut client = postgres::Client::connect("host=127.0.0.1 user=postgres dbname=test", postgres::NoTls)?;
/// client.batch_execute("CREATE TEMP TABLE t (id int PRIMARY KEY, name text)")?;
/// let mut tx = client.transaction()?;
/// let (a, b, c) = (1i32, 2i32, 1i32);
/// let rows: [&[&(dyn ToSql + Sync)]; 3] = [&[&a, &"one"], &[&b, &"two"], &[&c, &"one again"]];
/// let inserted = stageflow::postgres::insert_rows(&mut tx, "t", &["id", "name"], &["id"], &rows)?;
/// assert_eq!(inserted, 2); // the second id 1 was skipped
/// tx.commit()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn insert_rows(
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &[&str],
    conflict_key: &[&str],
    rows: &[&[&(dyn ToSql + Sync)]],
) -> Result<u64, postgres::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let width = columns.len();
    if let Some(bad) = rows.iter().find(|r| r.len() != width) {
        // The client checks parameter counts against the statement; let it say
        // what is wrong, as a `postgres::Error`, before anything is written.
        let statement = tx.prepare(&insert_statement(table, columns, conflict_key, 1))?;
        tx.execute(&statement, bad)?;
    }
    let per_statement = (MAX_PARAMETERS / width.max(1)).max(1);
    let mut inserted = 0;
    let mut full: Option<postgres::Statement> = None;
    let mut params: Vec<&(dyn ToSql + Sync)> =
        Vec::with_capacity(per_statement.min(rows.len()) * width);
    for chunk in rows.chunks(per_statement) {
        params.clear();
        for row in chunk {
            params.extend_from_slice(row);
        }
        let statement = if chunk.len() == per_statement {
            // Every full chunk has the same statement: prepare it once.
            match &full {
                Some(s) => s.clone(),
                None => full
                    .insert(tx.prepare(&insert_statement(
                        table,
                        columns,
                        conflict_key,
                        chunk.len(),
                    ))?)
                    .clone(),
            }
        } else {
            tx.prepare(&insert_statement(table, columns, conflict_key, chunk.len()))?
        };
        inserted += tx.execute(&statement, &params)?;
    }
    Ok(inserted)
}

fn insert_statement(table: &str, columns: &[&str], conflict_key: &[&str], rows: usize) -> String {
    use std::fmt::Write as _;
    let width = columns.len();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            n += 1;
            let _ = write!(sql, "{}${n}", if column == 0 { "" } else { ", " });
        }
        sql.push(')');
    }
    if conflict_key.is_empty() {
        sql.push_str(" ON CONFLICT DO NOTHING");
    } else {
        let _ = write!(sql, " ON CONFLICT ({}) DO NOTHING", conflict_key.join(", "));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_numbers_parameters_row_by_row() {
        assert_eq!(
            insert_statement("t", &["a", "b"], &["a"], 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT (a) DO NOTHING"
        );
        assert_eq!(
            insert_statement("s.t", &["x"], &[], 1),
            "INSERT INTO s.t (x) VALUES ($1) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn bad_options_name_the_option_and_the_value() {
        let e = |o: PostgresSinkOptions| o.validate().unwrap_err().to_string();
        let o = || PostgresSinkOptions::new("host=127.0.0.1");
        assert_eq!(
            e(o().backoff(Duration::ZERO, Duration::from_secs(1))),
            "expected initial_backoff to be greater than 0, got: 0ns"
        );
        assert_eq!(
            e(o().backoff(Duration::from_secs(2), Duration::from_secs(1))),
            "expected max_backoff to be at least initial_backoff (2s), got: 1s"
        );
        assert!(e(PostgresSinkOptions::new("postgresql://[bad")).contains("\"postgresql://[bad\""));
    }

    #[test]
    fn the_application_name_and_a_connect_timeout_are_set() {
        let c = PostgresSinkOptions::new("host=h").config().unwrap();
        assert_eq!(c.get_application_name(), Some("stageflow"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
        let c = PostgresSinkOptions::new("host=h application_name=mine connect_timeout=3")
            .config()
            .unwrap();
        assert_eq!(c.get_application_name(), Some("mine"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        let c = PostgresSinkOptions::new("host=h application_name=mine")
            .application_name("theirs")
            .config()
            .unwrap();
        assert_eq!(c.get_application_name(), Some("theirs"));
    }

    #[test]
    fn an_unreachable_server_is_an_error_naming_it() {
        // Port 1 on the loopback: nothing listens there, the refusal is immediate.
        let err = PostgresSink::<u32>::new(
            PostgresSinkOptions::new("host=127.0.0.1 port=1 user=u dbname=d"),
            |_, _| Ok(()),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("PostgreSQL not reachable at host=127.0.0.1 port=1 dbname=d user=u: ")
                && text.contains("refused"),
            "{text}"
        );
    }
}
