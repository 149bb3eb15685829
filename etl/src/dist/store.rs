//! The tables of the distributed modes, in SQLite and PostgreSQL alike: rows and
//! rejects keyed by `(input, line)`, so that writing an entry again (a redelivery
//! after a crash) changes nothing, and the workers' counts, updated in the same
//! transaction as the rows they count.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use crate::record::{Parsed, Row};

/// The three tables of one `--table` name.
#[derive(Clone, Debug)]
pub(crate) struct Tables {
    /// The rows: `input, line, id, name, email, amount, tags, ts`.
    pub rows: String,
    /// The rejected lines: `input, line, error, raw`.
    pub rejects: String,
    /// Per stream and consumer, the rows and rejects it inserted (duplicates not
    /// counted): `stream, consumer, rows, rejects`.
    pub workers: String,
}

impl Tables {
    /// The tables of `table` (a name [`validate_table`](super::validate_table) accepted).
    pub fn new(table: &str) -> Self {
        Tables {
            rows: table.to_string(),
            rejects: format!("{table}_rejects"),
            workers: format!("{table}_workers"),
        }
    }

    /// The schema, for SQLite (`blob`) or PostgreSQL (`bytea`).
    fn schema(&self, blob: &str) -> String {
        let Tables {
            rows,
            rejects,
            workers,
        } = self;
        format!(
            "CREATE TABLE IF NOT EXISTS {rows} (
                input TEXT NOT NULL, line BIGINT NOT NULL,
                id BIGINT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
                amount DOUBLE PRECISION NOT NULL, tags TEXT NOT NULL, ts TEXT NOT NULL,
                PRIMARY KEY (input, line));
             CREATE TABLE IF NOT EXISTS {rejects} (
                input TEXT NOT NULL, line BIGINT NOT NULL,
                error TEXT NOT NULL, raw {blob} NOT NULL,
                PRIMARY KEY (input, line));
             CREATE TABLE IF NOT EXISTS {workers} (
                stream TEXT NOT NULL, consumer TEXT NOT NULL,
                rows BIGINT NOT NULL DEFAULT 0, rejects BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (stream, consumer));"
        )
    }
}

/// One stream entry of the ETL, parsed: its input's identity and its line.
#[derive(Debug)]
pub(crate) struct Item {
    pub input: String,
    pub parsed: Parsed,
}

/// What a line becomes in the tables.
pub(crate) enum Place<'a> {
    Row(&'a Row),
    Reject(&'a str, &'a [u8]),
}

impl Item {
    pub fn line(&self) -> i64 {
        self.parsed.place().1 as i64
    }

    pub fn place(&self) -> Place<'_> {
        match &self.parsed {
            Parsed::Row { row, .. } => Place::Row(row),
            Parsed::Reject { error, raw, .. } => Place::Reject(error, raw),
        }
    }
}

/// What one batch inserted: rows and rejects new to the tables (the rest of the
/// batch was there already).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Inserted {
    pub rows: u64,
    pub rejects: u64,
}

/// The rows and rejects the tables hold, per worker and in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Per input identity: (rows, rejects).
    pub per_input: Vec<(String, u64, u64)>,
    /// Per consumer of the stream: (consumer, rows, rejects).
    pub workers: Vec<(String, u64, u64)>,
}

// ---------------------------------------------------------------------------------
// SQLite

/// Opens the worker's SQLite database and creates the tables; a table of that name
/// that the file mode made (or anything else) is refused.
pub(crate) fn sqlite_open(path: &Path, tables: &Tables) -> Result<Connection, String> {
    let fail = |e: rusqlite::Error| format!("{}: {e}", path.display());
    let db = Connection::open(path).map_err(fail)?;
    // Several workers share the file: a writer waits for another's transaction
    // (each holds the lock for one batch) rather than failing.
    db.busy_timeout(Duration::from_secs(60)).map_err(fail)?;
    // Workers started together set the file up together: switching a new file to
    // WAL and creating the tables can meet another worker doing the same, and
    // SQLite then answers "database is locked" without waiting (the busy handler
    // does not cover every step of a journal-mode change). Both are idempotent:
    // try again until the deadline.
    retry_busy(Instant::now() + Duration::from_secs(60), || {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")
    })
    .map_err(fail)?;
    sqlite_refuse_foreign(&db, &tables.rows).map_err(|e| format!("{}: {e}", path.display()))?;
    retry_busy(Instant::now() + Duration::from_secs(60), || {
        db.execute_batch(&tables.schema("BLOB"))
    })
    .map_err(fail)?;
    Ok(db)
}

/// Runs `step` again while SQLite says the database is busy or locked, up to
/// `deadline`, waiting a little longer each time (from 1 ms up to 100 ms).
pub(crate) fn retry_busy<T>(
    deadline: Instant,
    mut step: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let mut wait = Duration::from_millis(1);
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && Instant::now() + wait < deadline =>
            {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn sqlite_refuse_foreign(db: &Connection, table: &str) -> Result<(), String> {
    let mut q = db
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(|e| e.to_string())?;
    let columns: Vec<String> = q
        .query_map([table], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| e.to_string())?;
    if !columns.is_empty() && !columns.iter().any(|c| c == "input") {
        return Err(format!(
            "table {table} exists and was not made by `etl work` (it has no column `input`; \
             the file mode's tables cannot take a stream's rows): use --table for another \
             table or --db for another database"
        ));
    }
    Ok(())
}

/// Writes a batch in the open transaction; returns what was new.
pub(crate) fn sqlite_write(
    tx: &rusqlite::Transaction<'_>,
    tables: &Tables,
    stream: &str,
    consumer: &str,
    items: &[&Item],
) -> rusqlite::Result<Inserted> {
    let mut inserted = Inserted::default();
    let mut row_stmt = tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {} (input, line, id, name, email, amount, tags, ts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        tables.rows
    ))?;
    let mut reject_stmt = tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {} (input, line, error, raw) VALUES (?1, ?2, ?3, ?4)",
        tables.rejects
    ))?;
    for item in items {
        match item.place() {
            Place::Row(row) => {
                inserted.rows += row_stmt.execute(params![
                    item.input,
                    item.line(),
                    row.id as i64,
                    row.name(),
                    row.email(),
                    row.amount,
                    row.tags(),
                    row.ts()
                ])? as u64;
            }
            Place::Reject(error, raw) => {
                inserted.rejects +=
                    reject_stmt.execute(params![item.input, item.line(), error, raw])? as u64;
            }
        }
    }
    tx.execute(
        &format!(
            "INSERT INTO {w} (stream, consumer, rows, rejects) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream, consumer) DO UPDATE
             SET rows = {w}.rows + excluded.rows, rejects = {w}.rejects + excluded.rejects",
            w = tables.workers
        ),
        params![
            stream,
            consumer,
            inserted.rows as i64,
            inserted.rejects as i64
        ],
    )?;
    Ok(inserted)
}

/// The rows and rejects of `inputs`, and the workers' counts for `stream`.
pub(crate) fn sqlite_totals(
    db: &Connection,
    tables: &Tables,
    stream: &str,
    inputs: &[String],
) -> rusqlite::Result<Totals> {
    let mut totals = Totals::default();
    let exists = db
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [&tables.workers],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        totals.per_input = inputs.iter().map(|i| (i.clone(), 0, 0)).collect();
        return Ok(totals);
    }
    let mut rows = db.prepare(&format!(
        "SELECT (SELECT COUNT(*) FROM {} WHERE input = ?1),
                (SELECT COUNT(*) FROM {} WHERE input = ?1)",
        tables.rows, tables.rejects
    ))?;
    for input in inputs {
        let (r, j) = rows.query_row([input], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        totals.per_input.push((input.clone(), r as u64, j as u64));
    }
    let mut q = db.prepare(&format!(
        "SELECT consumer, rows, rejects FROM {} WHERE stream = ?1 ORDER BY consumer",
        tables.workers
    ))?;
    totals.workers = q
        .query_map([stream], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(totals)
}

/// The counts of one worker (zero before its first batch).
pub(crate) fn sqlite_worker(
    db: &Connection,
    tables: &Tables,
    stream: &str,
    consumer: &str,
) -> rusqlite::Result<Inserted> {
    db.query_row(
        &format!(
            "SELECT rows, rejects FROM {} WHERE stream = ?1 AND consumer = ?2",
            tables.workers
        ),
        [stream, consumer],
        |r| {
            Ok(Inserted {
                rows: r.get::<_, i64>(0)? as u64,
                rejects: r.get::<_, i64>(1)? as u64,
            })
        },
    )
    .optional()
    .map(Option::unwrap_or_default)
}

// ---------------------------------------------------------------------------------
// PostgreSQL

#[cfg(feature = "postgres")]
pub(crate) mod pg {
    use super::*;
    use postgres::types::ToSql;

    /// Connects (the connection string as libpq takes it).
    pub fn connect(conn: &str) -> Result<postgres::Client, String> {
        postgres::Client::connect(conn, postgres::NoTls)
            .map_err(|e| format!("cannot connect to PostgreSQL ({conn}): {e}"))
    }

    /// Creates the tables; refuses a table of that name made by something else.
    /// Several workers start at once: an advisory lock serialises their `CREATE
    /// TABLE IF NOT EXISTS`, which PostgreSQL does not make safe by itself.
    pub fn create(client: &mut postgres::Client, tables: &Tables) -> Result<(), String> {
        let fail = |e: postgres::Error| format!("creating table {}: {e}", tables.rows);
        let mut tx = client.transaction().map_err(fail)?;
        tx.execute("SELECT pg_advisory_xact_lock(7482018113)", &[])
            .map_err(fail)?;
        let columns: Vec<String> = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&tables.rows],
            )
            .map_err(fail)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !columns.is_empty() && !columns.iter().any(|c| c == "input") {
            return Err(format!(
                "table {} exists and was not made by `etl work` (it has no column `input`): \
                 use --table for another table",
                tables.rows
            ));
        }
        tx.batch_execute(&tables.schema("BYTEA")).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    /// Writes a batch in the transaction; returns what was new.
    pub fn write(
        tx: &mut postgres::Transaction<'_>,
        tables: &Tables,
        stream: &str,
        consumer: &str,
        items: &[Item],
    ) -> Result<Inserted, postgres::Error> {
        let mut rows: Vec<[&(dyn ToSql + Sync); 8]> = Vec::new();
        let mut rejects: Vec<[&(dyn ToSql + Sync); 4]> = Vec::new();
        // The values that are not stored in the items as PostgreSQL takes them.
        let extra: Vec<(i64, i64, &str, &str, &str, &str)> = items
            .iter()
            .map(|item| match item.place() {
                Place::Row(row) => (
                    item.line(),
                    row.id as i64,
                    row.name(),
                    row.email(),
                    row.tags(),
                    row.ts(),
                ),
                Place::Reject(..) => (item.line(), 0, "", "", "", ""),
            })
            .collect();
        for (item, extra) in items.iter().zip(&extra) {
            match &item.parsed {
                Parsed::Row { row, .. } => rows.push([
                    &item.input,
                    &extra.0,
                    &extra.1,
                    &extra.2,
                    &extra.3,
                    &row.amount,
                    &extra.4,
                    &extra.5,
                ]),
                Parsed::Reject { error, raw, .. } => {
                    rejects.push([&item.input, &extra.0, error, raw])
                }
            }
        }
        let rows: Vec<&[&(dyn ToSql + Sync)]> = rows.iter().map(|r| &r[..]).collect();
        let rejects: Vec<&[&(dyn ToSql + Sync)]> = rejects.iter().map(|r| &r[..]).collect();
        let inserted = Inserted {
            rows: stageflow::postgres::insert_rows(
                tx,
                &tables.rows,
                &[
                    "input", "line", "id", "name", "email", "amount", "tags", "ts",
                ],
                &["input", "line"],
                &rows,
            )?,
            rejects: stageflow::postgres::insert_rows(
                tx,
                &tables.rejects,
                &["input", "line", "error", "raw"],
                &["input", "line"],
                &rejects,
            )?,
        };
        tx.execute(
            &format!(
                "INSERT INTO {w} (stream, consumer, rows, rejects) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (stream, consumer) DO UPDATE
                 SET rows = {w}.rows + EXCLUDED.rows, rejects = {w}.rejects + EXCLUDED.rejects",
                w = tables.workers
            ),
            &[
                &stream,
                &consumer,
                &(inserted.rows as i64),
                &(inserted.rejects as i64),
            ],
        )?;
        Ok(inserted)
    }

    /// The rows and rejects of `inputs`, and the workers' counts for `stream`.
    pub fn totals(
        client: &mut postgres::Client,
        tables: &Tables,
        stream: &str,
        inputs: &[String],
    ) -> Result<Totals, postgres::Error> {
        let mut totals = Totals::default();
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&tables.workers])?
            .get(0);
        if !exists {
            totals.per_input = inputs.iter().map(|i| (i.clone(), 0, 0)).collect();
            return Ok(totals);
        }
        let q = format!(
            "SELECT (SELECT COUNT(*) FROM {} WHERE input = $1),
                    (SELECT COUNT(*) FROM {} WHERE input = $1)",
            tables.rows, tables.rejects
        );
        for input in inputs {
            let r = client.query_one(&q, &[input])?;
            totals.per_input.push((
                input.clone(),
                r.get::<_, i64>(0) as u64,
                r.get::<_, i64>(1) as u64,
            ));
        }
        totals.workers = client
            .query(
                &format!(
                    "SELECT consumer, rows, rejects FROM {} WHERE stream = $1 ORDER BY consumer",
                    tables.workers
                ),
                &[&stream],
            )?
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1) as u64,
                    r.get::<_, i64>(2) as u64,
                )
            })
            .collect();
        Ok(totals)
    }

    /// The counts of one worker (zero before its first batch).
    pub fn worker(
        client: &mut postgres::Client,
        tables: &Tables,
        stream: &str,
        consumer: &str,
    ) -> Result<Inserted, postgres::Error> {
        Ok(client
            .query_opt(
                &format!(
                    "SELECT rows, rejects FROM {} WHERE stream = $1 AND consumer = $2",
                    tables.workers
                ),
                &[&stream, &consumer],
            )?
            .map(|r| Inserted {
                rows: r.get::<_, i64>(0) as u64,
                rejects: r.get::<_, i64>(1) as u64,
            })
            .unwrap_or_default())
    }
}
