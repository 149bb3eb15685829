//! The distributed modes: several `etl work` processes, on one machine or many, share
//! one load through a Redis stream and write into one table.
//!
//! ```text
//!  etl enqueue FILES ──XADD──► stream ──XREADGROUP──► etl work ─┐
//!   (progress in Redis,         (group G)            etl work ─┼─► table (SQLite or
//!    same MULTI as the XADDs)                        etl work ─┘    PostgreSQL), then XACK
//! ```
//!
//! - [`enqueue`](mod@enqueue) turns every line of the inputs into one stream entry
//!   `{input, name, line, data}`: `input` is the input's content identity (the file
//!   mode's), `line` its 1-based line number, `data` the line's bytes. The number of
//!   lines enqueued per input is kept in the hash `<stream>:enqueued`, updated in the
//!   same `MULTI`/`EXEC` as the entries it counts, so an enqueue killed at any moment
//!   and run again adds every line exactly once. It waits while the group's lag is
//!   above a cap, and trims the entries every group has acknowledged, so Redis holds
//!   a bounded window of the load, not all of it.
//! - `work` (see [`work`](mod@work)) reads the stream in a consumer group, parses,
//!   batches and writes each batch in one transaction, keyed by `(input, line)` with
//!   `INSERT .. ON CONFLICT DO NOTHING`: an entry delivered twice (its worker died
//!   after the commit, before the `XACK`) is never written twice. Entries are
//!   acknowledged only after the commit.
//! - [`check`](mod@check) compares what was enqueued with the table, the rejects, the
//!   dead letters and what is still pending.
//!
//! The whole cycle with one worker, in this process (it needs Redis, at
//! `STAGEFLOW_REDIS_URL` or 127.0.0.1:6379):
//!
//! ```
//! use stageflow_etl::dist::{check::*, enqueue::*, progress_key, work::*, Sink, DEFAULT_REDIS_URL};
//! use stageflow_etl::InputSpec;
//! let redis = std::env::var("STAGEFLOW_REDIS_URL").unwrap_or(DEFAULT_REDIS_URL.into());
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("in.jsonl");
//! std::fs::write(&input, concat!(
//!     r#"{"id": 1, "name": "a", "email": "a@x", "amount": 1.5, "tags": [], "ts": "2024"}"#, "\n",
//!     "not json\n",
//! ))?;
//! let stream = format!("etl-doc-{}", std::process::id());
//! let db = Sink::Sqlite(dir.path().join("out.db"));
//!
//! let enqueued = enqueue(EnqueueConfig::new(&redis, &stream, "etl", vec![InputSpec::Path(input)]))?;
//! assert_eq!(enqueued.added(), 2);
//! let mut worker = WorkConfig::new(&redis, &stream, "etl", "w1", db.clone());
//! worker.until_done = true;
//! let done = work(worker)?;
//! assert_eq!((done.read, done.written, done.rejected), (2, 1, 1));
//! let report = check(&CheckConfig::new(&redis, &stream, "etl", db))?;
//! assert!(report.is_done(), "{report}");
//!
//! // The stream and its bookkeeping are the caller's to remove.
//! let mut con = redis::Client::open(redis.as_str())?.get_connection()?;
//! redis::cmd("DEL").arg(&stream).arg(progress_key(&stream)).exec(&mut con)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod check;
pub mod enqueue;
pub(crate) mod store;
pub mod work;

use crate::EtlError;

/// The Redis URL when none is given (the `STAGEFLOW_REDIS_URL` environment variable
/// overrides it in the binary).
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// The consumer group when none is given.
pub const DEFAULT_GROUP: &str = "etl";

/// The table when none is given; its rejects go to `<table>_rejects` and the
/// workers' counts to `<table>_workers`.
pub const DEFAULT_TABLE: &str = "records";

/// The hash that records, per input, the lines enqueued so far (`<input>`), the
/// input's name (`<input>:name`) and, once it is enqueued whole, its length in lines
/// (`<input>:lines`).
///
/// ```
/// assert_eq!(stageflow_etl::dist::progress_key("load"), "load:enqueued");
/// ```
pub fn progress_key(stream: &str) -> String {
    format!("{stream}:enqueued")
}

/// The dead-letter stream of `stream` (the Redis source's default).
///
/// ```
/// assert_eq!(stageflow_etl::dist::dead_letter_key("load"), "load:dead");
/// ```
pub fn dead_letter_key(stream: &str) -> String {
    format!("{stream}:dead")
}

/// Checks a table name given with `--table`: a plain SQL identifier (it is put into
/// statements as it is, so nothing that needs quoting is accepted).
///
/// ```
/// use stageflow_etl::dist::validate_table;
/// assert!(validate_table("records_2024").is_ok());
/// assert_eq!(
///     validate_table("drop table;").unwrap_err(),
///     "--table must be a plain SQL name (letters, digits, _; not starting with a digit; \
///      at most 40 characters), got: \"drop table;\"",
/// );
/// ```
pub fn validate_table(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--table must be a plain SQL name (letters, digits, _; not starting with a digit; \
             at most 40 characters), got: {name:?}"
        ))
    }
}

/// A Redis failure as the ETL reports it (exit code 3, like a database failure).
pub(crate) fn redis_error(url: &str, what: &str, e: impl std::fmt::Display) -> EtlError {
    EtlError::Redis(format!("{what} ({url}): {e}"))
}

/// Opens a connection; a URL that does not parse is a usage error naming it.
pub(crate) fn connect(url: &str) -> Result<redis::Connection, EtlError> {
    let client = redis::Client::open(url)
        .map_err(|e| EtlError::Usage(format!("--redis {url:?} is not a Redis URL: {e}")))?;
    let con = client
        .get_connection_with_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| redis_error(url, "cannot connect to Redis", e))?;
    // A Redis that stops answering fails the command instead of hanging the process.
    con.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .and_then(|()| con.set_write_timeout(Some(std::time::Duration::from_secs(60))))
        .map_err(|e| redis_error(url, "setting timeouts", e))?;
    Ok(con)
}

/// Creates the consumer group at the stream's start (and the stream) if missing, so
/// that workers started after `enqueue` still read every entry (the Redis source
/// does the same for workers started first).
pub(crate) fn ensure_group(
    con: &mut redis::Connection,
    url: &str,
    stream: &str,
    group: &str,
) -> Result<(), EtlError> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(redis_error(
            url,
            &format!("creating group {group} of stream {stream}"),
            e,
        )),
    }
}

/// One consumer group as `XINFO GROUPS` describes it (Redis 7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    pub name: String,
    pub pending: u64,
    pub last_delivered: String,
    /// Entries not delivered to the group yet; `None` when Redis cannot tell (after
    /// deletions in the middle of the stream).
    pub lag: Option<u64>,
}

pub(crate) fn groups(
    con: &mut redis::Connection,
    url: &str,
    stream: &str,
) -> Result<Vec<GroupInfo>, EtlError> {
    use redis::Value;
    let exists: bool = redis::cmd("EXISTS")
        .arg(stream)
        .query(con)
        .map_err(|e| redis_error(url, "EXISTS", e))?;
    if !exists {
        return Ok(Vec::new());
    }
    let raw: Vec<Vec<(String, Value)>> =
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query(con)
            .map_err(|e| redis_error(url, &format!("XINFO GROUPS {stream}"), e))?;
    let int = |v: &Value| match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    Ok(raw
        .into_iter()
        .map(|fields| {
            let mut g = GroupInfo::default();
            for (k, v) in &fields {
                match k.as_str() {
                    "name" => g.name = text(v),
                    "pending" => g.pending = int(v).unwrap_or(0),
                    "last-delivered-id" => g.last_delivered = text(v),
                    "lag" => g.lag = int(v),
                    _ => {}
                }
            }
            g
        })
        .collect())
}

/// Where `work` writes and `check` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    /// A SQLite database file (workers on one machine).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string, as libpq takes it (workers on many machines);
    /// needs the `postgres` feature.
    Postgres(String),
}

impl Sink {
    /// The error for a PostgreSQL sink in a build without the feature.
    #[cfg(not(feature = "postgres"))]
    pub(crate) fn unsupported() -> EtlError {
        EtlError::Usage(
            "--postgres needs the ETL built with PostgreSQL: \
             cargo build -p stageflow-etl --features redis,postgres"
                .into(),
        )
    }
}

/// The totals of `inputs` in the sink's tables.
pub(crate) fn totals(
    sink: &Sink,
    tables: &store::Tables,
    stream: &str,
    inputs: &[String],
) -> Result<store::Totals, EtlError> {
    match sink {
        Sink::Sqlite(path) => {
            let db = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| EtlError::Database(format!("{}: {e}", path.display())))?;
            db.busy_timeout(std::time::Duration::from_secs(60))
                .and_then(|()| store::sqlite_totals(&db, tables, stream, inputs))
                .map_err(|e| EtlError::Database(format!("{}: {e}", path.display())))
        }
        #[cfg(feature = "postgres")]
        Sink::Postgres(conn) => {
            let mut client = store::pg::connect(conn).map_err(EtlError::Database)?;
            store::pg::totals(&mut client, tables, stream, inputs)
                .map_err(|e| EtlError::Database(format!("PostgreSQL: {e}")))
        }
        #[cfg(not(feature = "postgres"))]
        Sink::Postgres(_) => Err(Sink::unsupported()),
    }
}
