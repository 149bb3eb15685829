//! W8: the ETL against its limit. 1 M records from the ETL's own generator (about 1
//! in 1 000 bad) in a file → parse → SQLite in batches of 1 000, one transaction per
//! batch, rejects counted.
//!
//! The stageflow side is the ETL's loader itself (`stageflow_etl::load`), with its
//! exactly-once bookkeeping on (the input's identity hashed upfront, committed line
//! ranges and rejects in each batch's transaction, the rejects file rewritten at the
//! end). Two baselines, one row each:
//! - `W8`: one thread, `BufRead` lines → serde_json → one prepared INSERT, a
//!   transaction per 1 000 rows;
//! - `W8-writer`: the same prepared inserts of rows parsed before the timed run (the
//!   writer alone: the physical limit of this pipeline on one SQLite file).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::{params, Connection};
use serde::Deserialize;
use stageflow_etl::{load, Config, InputSpec};

use crate::harness::Workload;

/// A record as the ETL defines it: every field required, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    id: u64,
    name: String,
    email: String,
    amount: f64,
    tags: Vec<String>,
    ts: String,
}

/// A parsed row, as the writer takes it (tags as JSON text, as the ETL stores them).
struct Row {
    line: i64,
    id: i64,
    name: String,
    email: String,
    amount: f64,
    tags: String,
    ts: String,
}

struct Input {
    path: PathBuf,
    lines: u64,
    bad: u64,
}

fn dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("w8");
    std::fs::create_dir_all(&dir).expect("target/w8");
    dir
}

/// The input, generated once per process (outside the timed runs: the warm-up).
fn input(n: u64) -> &'static Input {
    static INPUT: OnceLock<Input> = OnceLock::new();
    INPUT.get_or_init(|| {
        let path = dir().join(format!("w8-{n}.jsonl"));
        let mut file = std::fs::File::create(&path).expect("w8 input");
        let bad = stageflow_etl::generate::sample(&mut file, n).expect("w8 input written");
        Input {
            path,
            lines: n,
            bad,
        }
    })
}

/// A fresh database file (the previous run's removed).
fn fresh_db(name: &str) -> PathBuf {
    let path = dir().join(name);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    path
}

/// The same table as the ETL's, with its settings.
fn open(path: &Path) -> Result<Connection, String> {
    let db = Connection::open(path).map_err(|e| e.to_string())?;
    db.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| e.to_string())?;
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| e.to_string())?;
    db.execute_batch(
        "CREATE TABLE records (
             file INTEGER NOT NULL, line INTEGER NOT NULL,
             id INTEGER NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
             amount REAL NOT NULL, tags TEXT NOT NULL, ts TEXT NOT NULL)",
    )
    .map_err(|e| e.to_string())?;
    Ok(db)
}

fn parse(line: &str, number: i64) -> Option<Row> {
    let r: Record = serde_json::from_str(line).ok()?;
    Some(Row {
        line: number,
        id: i64::try_from(r.id).ok()?,
        name: r.name,
        email: r.email,
        amount: r.amount,
        tags: serde_json::to_string(&r.tags).ok()?,
        ts: r.ts,
    })
}

/// Inserts `rows` with one prepared statement, a transaction per 1 000.
fn write(db: &mut Connection, rows: impl Iterator<Item = Row>) -> Result<u64, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let mut written = 0;
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let tx = db.transaction().map_err(e)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO records (file, line, id, name, email, amount, tags, ts)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            for r in rows.by_ref().take(1000) {
                insert
                    .execute(params![
                        r.line, r.id, r.name, r.email, r.amount, r.tags, r.ts
                    ])
                    .map_err(e)?;
                written += 1;
            }
        }
        tx.commit().map_err(e)?;
    }
    Ok(written)
}

fn check(what: &str, written: u64, rejected: u64, input: &Input) -> Result<(), String> {
    if written != input.lines - input.bad || rejected != input.bad {
        return Err(format!(
            "{what}: {written} rows and {rejected} rejects, expected {} and {}",
            input.lines - input.bad,
            input.bad
        ));
    }
    Ok(())
}

/// The ETL's loader into a fresh database, bookkeeping on.
fn stageflow_side(n: u64) -> Result<(), String> {
    let input = input(n);
    let db = fresh_db("w8-stageflow.db");
    let mut config = Config::new(vec![InputSpec::Path(input.path.clone())], &db);
    config.rejects = dir().join("w8-rejects.jsonl");
    let outcome = load(config).map_err(|e| e.to_string())?;
    if !outcome.is_complete() {
        return Err(format!("W8: the load is not complete: {outcome:?}"));
    }
    check("W8 stageflow", outcome.written, outcome.rejected, input)
}

fn single_threaded(n: u64) -> Result<(), String> {
    let input = input(n);
    let mut db = open(&fresh_db("w8-loop.db"))?;
    let file = std::fs::File::open(&input.path).map_err(|e| e.to_string())?;
    let mut rejected = 0;
    let lines = std::io::BufReader::with_capacity(256 * 1024, file).lines();
    let rows = lines.enumerate().filter_map(|(i, line)| {
        match line.ok().and_then(|l| parse(&l, i as i64 + 1)) {
            Some(row) => Some(row),
            None => {
                rejected += 1;
                None
            }
        }
    });
    let written = write(&mut db, rows)?;
    check("W8 loop", written, rejected, input)
}

/// The rows parsed once, outside the timed runs (the warm-up).
fn parsed(n: u64) -> &'static (Vec<Row>, u64) {
    static ROWS: OnceLock<(Vec<Row>, u64)> = OnceLock::new();
    ROWS.get_or_init(|| {
        let text = std::fs::read_to_string(&input(n).path).expect("w8 input");
        let mut rejected = 0;
        let rows = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let row = parse(l, i as i64 + 1);
                rejected += u64::from(row.is_none());
                row
            })
            .collect();
        (rows, rejected)
    })
}

fn writer_alone(n: u64) -> Result<(), String> {
    let (rows, rejected) = parsed(n);
    let mut db = open(&fresh_db("w8-writer.db"))?;
    let e = |e: rusqlite::Error| e.to_string();
    let mut written = 0;
    for chunk in rows.chunks(1000) {
        let tx = db.transaction().map_err(e)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO records (file, line, id, name, email, amount, tags, ts)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            for r in chunk {
                insert
                    .execute(params![
                        r.line, r.id, r.name, r.email, r.amount, r.tags, r.ts
                    ])
                    .map_err(e)?;
                written += 1;
            }
        }
        tx.commit().map_err(e)?;
    }
    check("W8 writer", written, *rejected, input(n))
}

pub fn workloads(events: Option<u64>) -> Vec<Workload> {
    let n = events.unwrap_or(1_000_000);
    vec![
        Workload {
            id: "W8".into(),
            events: n,
            baseline: "1 thread: lines → serde_json → prepared INSERT, tx per 1000",
            stageflow: Box::new(move || stageflow_side(n)),
            hand_written: Box::new(move || single_threaded(n)),
        },
        Workload {
            id: "W8-writer".into(),
            events: n,
            baseline: "prepared INSERTs of rows parsed beforehand, tx per 1000",
            stageflow: Box::new(move || stageflow_side(n)),
            hand_written: Box::new(move || writer_alone(n)),
        },
    ]
}
