//! The database side: schema, what an earlier run left, and the writer stage that
//! commits each batch's rows, rejects and committed line ranges in one transaction.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use stageflow::pipeline::Batch;
use stageflow::prelude::*;

use crate::record::{Parsed, Row};
use crate::source::Done;
use crate::Counters;

/// The tables. `records` holds the rows; `etl_files` one row per input ever loaded
/// (identity, path, its length in lines once complete, and its rows and rejects so
/// far, counted in the batches' transactions); `etl_done` the committed
/// line ranges of each input (rows and rejects alike); `etl_rejects` the rejected
/// lines with their original bytes.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    file INTEGER NOT NULL, line INTEGER NOT NULL,
    id INTEGER NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
    amount REAL NOT NULL, tags TEXT NOT NULL, ts TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS etl_files (
    file INTEGER PRIMARY KEY, identity TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
    lines INTEGER, complete INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0, rejects INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS etl_done (
    file INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, hash BLOB,
    PRIMARY KEY (file, first));
CREATE TABLE IF NOT EXISTS etl_rejects (
    file INTEGER NOT NULL, line INTEGER NOT NULL, error TEXT NOT NULL, raw BLOB NOT NULL,
    PRIMARY KEY (file, line));
";

const DROP: &str = "
DROP TABLE IF EXISTS records; DROP TABLE IF EXISTS etl_files;
DROP TABLE IF EXISTS etl_done; DROP TABLE IF EXISTS etl_rejects;
";

pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    // Another process holding the database (a reader, a second loader) gets a few
    // seconds before the load fails with "database is locked".
    db.busy_timeout(Duration::from_secs(5))?;
    // One writer, batch transactions: WAL and NORMAL sync are the usual bulk-load
    // settings (each commit survives a crash of the process).
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(db)
}

/// A row of `etl_files`.
#[derive(Clone, Debug)]
pub(crate) struct FileRow {
    pub file: i64,
    pub identity: String,
    pub path: String,
    pub lines: Option<u64>,
    pub complete: bool,
}

/// What the database holds before this run.
pub(crate) struct State {
    pub records: bool,
    pub bookkeeping: bool,
    pub files: Vec<FileRow>,
}

fn table_exists(db: &Connection, name: &str) -> rusqlite::Result<bool> {
    db.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

pub(crate) fn inspect(db: &Connection) -> rusqlite::Result<State> {
    let records = table_exists(db, "records")?;
    let bookkeeping = table_exists(db, "etl_files")?;
    let mut files = Vec::new();
    if bookkeeping {
        let mut q = db.prepare("SELECT file, identity, path, lines, complete FROM etl_files")?;
        let rows = q.query_map([], |r| {
            Ok(FileRow {
                file: r.get(0)?,
                identity: r.get(1)?,
                path: r.get(2)?,
                lines: r.get::<_, Option<i64>>(3)?.map(|n| n as u64),
                complete: r.get(4)?,
            })
        })?;
        for row in rows {
            files.push(row?);
        }
    }
    Ok(State {
        records,
        bookkeeping,
        files,
    })
}

/// Creates the tables (dropping the old ones first when `replace`) and registers the
/// inputs not known yet; returns each input's row, in the inputs' order.
pub(crate) fn prepare(
    db: &mut Connection,
    replace: bool,
    inputs: &[(String, String)],
) -> rusqlite::Result<Vec<FileRow>> {
    let tx = db.transaction()?;
    if replace {
        tx.execute_batch(DROP)?;
    }
    tx.execute_batch(SCHEMA)?;
    for (identity, path) in inputs {
        tx.execute(
            "INSERT OR IGNORE INTO etl_files (identity, path) VALUES (?1, ?2)",
            params![identity, path],
        )?;
    }
    tx.commit()?;
    let state = inspect(db)?;
    Ok(inputs
        .iter()
        .map(|(identity, _)| {
            state
                .files
                .iter()
                .find(|f| &f.identity == identity)
                .cloned()
                .expect("registered above")
        })
        .collect())
}

pub(crate) fn done_ranges(db: &Connection, file: i64) -> rusqlite::Result<Vec<Done>> {
    let mut q =
        db.prepare("SELECT first, last, hash FROM etl_done WHERE file = ?1 ORDER BY first")?;
    let rows = q.query_map([file], |r| {
        let hash: Option<Vec<u8>> = r.get(2)?;
        Ok(Done {
            first: r.get::<_, i64>(0)? as u64,
            last: r.get::<_, i64>(1)? as u64,
            hash: hash.and_then(|h| <[u8; 16]>::try_from(h).ok().map(u128::from_be_bytes)),
        })
    })?;
    rows.collect()
}

/// Marks a file complete when its committed ranges are exactly `1..=lines`.
pub(crate) fn complete_if_done(db: &Connection, file: i64, lines: u64) -> rusqlite::Result<bool> {
    let ranges = done_ranges(db, file)?;
    let whole = match ranges.as_slice() {
        [] => lines == 0,
        [d] => d.first == 1 && d.last == lines,
        _ => false,
    };
    if whole {
        db.execute(
            "UPDATE etl_files SET complete = 1, lines = ?2 WHERE file = ?1",
            params![file, lines as i64],
        )?;
    }
    Ok(whole)
}

/// Rows and rejects the database holds for `file` (as counted by the batches).
pub(crate) fn counts(db: &Connection, file: i64) -> rusqlite::Result<(u64, u64)> {
    db.query_row(
        "SELECT rows, rejects FROM etl_files WHERE file = ?1",
        [file],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )
}

/// Whether a failed INSERT is the row's fault (a constraint, a value out of range):
/// the row becomes a reject. Anything else is the database's failure.
fn is_row_error(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.code,
            ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig
        ),
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::IntegralValueOutOfRange(..) => true,
        _ => false,
    }
}

/// Writes each batch in one transaction: its rows, its rejects and the line ranges
/// they complete, so a crash at any moment leaves either all of a batch or none.
pub(crate) struct Writer {
    pub db: Connection,
    /// `etl_files.file` of each input, by input index.
    pub files: Vec<i64>,
    /// The committed ranges of each input, by first line.
    pub done: Vec<BTreeMap<u64, (u64, Option<u128>)>>,
    pub slow: Duration,
    pub counters: Arc<Counters>,
    pub fatal: Arc<Mutex<Option<String>>>,
    /// Where written batches go to be freed.
    pub garbage: std::sync::mpsc::SyncSender<Vec<Parsed>>,
}

/// A thread that frees what `Writer::garbage` sends it; it ends with the writer.
pub(crate) fn garbage_collector() -> std::io::Result<std::sync::mpsc::SyncSender<Vec<Parsed>>> {
    // Bounded: a collector that falls behind slows the writer instead of holding
    // batches without limit.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Parsed>>(4);
    std::thread::Builder::new()
        .name("etl-free".into())
        .spawn(move || rx.into_iter().for_each(drop))?;
    Ok(tx)
}

fn hash_blob(hash: Option<u128>) -> Option<[u8; 16]> {
    hash.map(u128::to_be_bytes)
}

impl Writer {
    fn write(&mut self, batch: Vec<Parsed>) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        let (mut written, mut rejected) = (0, 0);
        // Rows and rejects per input, by input index.
        let mut per_input: Vec<(u64, u64)> = vec![(0, 0); self.files.len()];
        let mut places = Vec::with_capacity(batch.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO records (file, line, id, name, email, amount, tags, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut reject = tx.prepare_cached(
                "INSERT INTO etl_rejects (file, line, error, raw) VALUES (?1, ?2, ?3, ?4)",
            )?;
            // By reference: the batch is freed after the commit, off this thread.
            for parsed in &batch {
                places.push(parsed.place());
                let (input, line, error, raw) = match parsed {
                    Parsed::Row {
                        input,
                        line,
                        row,
                        text,
                        ..
                    } => {
                        let file = self.files[*input];
                        match insert_row(&mut insert, file, *line, row)? {
                            Ok(()) => {
                                written += 1;
                                per_input[*input].0 += 1;
                                continue;
                            }
                            Err(e) => (*input, *line, e, text.as_bytes()),
                        }
                    }
                    Parsed::Reject {
                        input,
                        line,
                        error,
                        raw,
                        ..
                    } => (*input, *line, error.clone(), raw.as_slice()),
                };
                reject.execute(params![self.files[input], line as i64, error, raw])?;
                rejected += 1;
                per_input[input].1 += 1;
            }
            let mut count = tx.prepare_cached(
                "UPDATE etl_files SET rows = rows + ?2, rejects = rejects + ?3 WHERE file = ?1",
            )?;
            for (input, &(rows, rejects)) in per_input.iter().enumerate() {
                if rows + rejects > 0 {
                    count.execute(params![self.files[input], rows as i64, rejects as i64])?;
                }
            }
        }
        record_done(&tx, &self.files, &mut self.done, places)?;
        if !self.slow.is_zero() {
            // A slow database: the time is spent inside the transaction, holding its
            // write lock, as a slow commit would.
            std::thread::sleep(self.slow);
        }
        tx.commit()?;
        // Freeing a batch (a few allocations per row, made on the parsers' threads)
        // is a noticeable share of this thread's time, and this thread is the
        // pipeline's bottleneck: another thread does it.
        // (Were the collector gone, the batch would be freed here.)
        let _ = self.garbage.send(batch);
        self.counters.written.fetch_add(written, Ordering::Relaxed);
        self.counters
            .rejected
            .fetch_add(rejected, Ordering::Relaxed);
        Ok(())
    }
}

/// Merges a batch's lines into the committed ranges `done`, in the transaction.
fn record_done(
    tx: &rusqlite::Transaction<'_>,
    files: &[i64],
    done: &mut [BTreeMap<u64, (u64, Option<u128>)>],
    mut places: Vec<(usize, u64, Option<u128>)>,
) -> rusqlite::Result<()> {
    places.sort_unstable_by_key(|&(input, line, _)| (input, line));
    let mut runs: Vec<(usize, u64, u64, Option<u128>)> = Vec::new();
    for (input, line, hash) in places {
        match runs.last_mut() {
            Some(run) if run.0 == input && run.2 + 1 == line => {
                run.2 = line;
                run.3 = hash;
            }
            _ => runs.push((input, line, line, hash)),
        }
    }
    let mut delete =
        tx.prepare_cached("DELETE FROM etl_done WHERE file = ?1 AND first BETWEEN ?2 AND ?3")?;
    let mut insert = tx
        .prepare_cached("INSERT INTO etl_done (file, first, last, hash) VALUES (?1, ?2, ?3, ?4)")?;
    for (input, first, last, hash) in runs {
        let done = &mut done[input];
        let (mut first, mut last, mut hash) = (first, last, hash);
        // A range ending just before (or overlapping) this run joins it.
        if let Some((&f, &(l, h))) = done.range(..first).next_back() {
            if l + 1 >= first {
                first = f;
                if l > last {
                    (last, hash) = (l, h);
                }
            }
        }
        // So do the ranges starting inside it or right after it.
        let absorbed: Vec<u64> = done.range(first..=last + 1).map(|(&f, _)| f).collect();
        for f in absorbed {
            let (l, h) = done.remove(&f).expect("listed above");
            if l > last {
                (last, hash) = (l, h);
            }
        }
        done.remove(&first);
        done.insert(first, (last, hash));
        let file = files[input];
        delete.execute(params![file, first as i64, last as i64])?;
        insert.execute(params![file, first as i64, last as i64, hash_blob(hash)])?;
    }
    Ok(())
}

/// Inserts one row: `Ok(Err(reason))` when the row is refused (it becomes a reject),
/// `Err` when the database itself failed.
fn insert_row(
    insert: &mut rusqlite::CachedStatement<'_>,
    file: i64,
    line: u64,
    row: &Row,
) -> rusqlite::Result<Result<(), String>> {
    let Ok(id) = i64::try_from(row.id) else {
        return Ok(Err(format!(
            "id {} is out of range for the database (at most {})",
            row.id,
            i64::MAX
        )));
    };
    match insert.execute(params![
        file,
        line as i64,
        id,
        row.name(),
        row.email(),
        row.amount,
        row.tags(),
        row.ts()
    ]) {
        Ok(_) => Ok(Ok(())),
        Err(e) if is_row_error(&e) => Ok(Err(format!("the database refused the row: {e}"))),
        Err(e) => Err(e),
    }
}

impl Stage for Writer {
    type In = Batch<Parsed>;
    type Out = Never;
}

impl Consumer for Writer {
    fn handle_events(
        &mut self,
        batches: Vec<Batch<Parsed>>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        for batch in batches {
            if let Err(e) = self.write(batch.events) {
                *self.fatal.lock() = Some(e.to_string());
                ctx.stop(Reason::custom(format!("database write failed: {e}")));
                return;
            }
        }
    }
}
