//! Helpers of the process-level tests: run `etl` as a user runs it, then check the
//! database and the rejects file line by line against the input.

#![allow(dead_code)]

#[cfg(feature = "redis")]
pub mod dist;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// The `etl` binary cargo built for these tests, or the one `ETL_BIN` names (to run
/// these tests against another build, an older one for instance).
pub fn etl() -> Command {
    let bin = std::env::var_os("ETL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_etl").into());
    let mut c = Command::new(bin);
    c.arg("--no-progress");
    c
}

/// A fresh scratch directory for one test; its `tmp/` is the TMPDIR of the runs.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stageflow-etl-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).expect("scratch directory");
    dir
}

/// Runs `etl` with `args` in `dir` and returns its output.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    etl()
        .args(args)
        .current_dir(dir)
        .env("TMPDIR", dir.join("tmp"))
        .output()
        .expect("etl runs")
}

/// Starts `etl` with `args` in `dir`, its outputs piped.
pub fn spawn(dir: &Path, args: &[&str]) -> Child {
    etl()
        .args(args)
        .current_dir(dir)
        .env("TMPDIR", dir.join("tmp"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etl starts")
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A good record line with these values (`amount` printed in Rust's shortest form
/// that reads back to the same bits).
pub fn record(id: u64, name: &str, amount: f64, tags: &[&str], ts: &str) -> String {
    serde_json::json!({
        "id": id, "name": name, "email": format!("{name}@example.com"),
        "amount": amount, "tags": tags, "ts": ts,
    })
    .to_string()
}

/// What a line of the input must become.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Row {
        id: i64,
        name: String,
        email: String,
        amount_bits: u64,
        tags: Vec<String>,
        ts: String,
    },
    Reject,
}

/// The text of the JSON number that follows `"key":` in `line`.
fn number_text<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\""))?;
    let rest = line[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Decides independently of the loader what `line` must become: a record is a JSON
/// object with exactly the six fields and their types, and an id SQLite can hold.
/// The amount's bits come from the standard library's (correctly rounded) parser
/// applied to the number's text in the line.
pub fn expected(line: &[u8]) -> Expected {
    let Ok(text) = std::str::from_utf8(line) else {
        return Expected::Reject;
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Expected::Reject;
    };
    let keys = ["id", "name", "email", "amount", "tags", "ts"];
    if map.len() != 6 || !keys.iter().all(|k| map.contains_key(*k)) {
        return Expected::Reject;
    }
    let (Some(id), Some(name), Some(email), Some(_), Some(tags), Some(ts)) = (
        map["id"].as_u64(),
        map["name"].as_str(),
        map["email"].as_str(),
        map["amount"].as_f64(),
        map["tags"].as_array(),
        map["ts"].as_str(),
    ) else {
        return Expected::Reject;
    };
    let Ok(id) = i64::try_from(id) else {
        return Expected::Reject;
    };
    let Some(tags) = tags
        .iter()
        .map(|t| t.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
    else {
        return Expected::Reject;
    };
    let amount: f64 = number_text(text, "amount")
        .and_then(|t| t.parse().ok())
        .expect("the amount's text parses");
    Expected::Row {
        id,
        name: name.into(),
        email: email.into(),
        amount_bits: amount.to_bits(),
        tags,
        ts: ts.into(),
    }
}

/// The lines of `bytes` as the loader numbers them (1-based; `\n` or `\r\n` ends).
pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if bytes.ends_with(b"\n") || bytes.is_empty() {
        out.pop();
    }
    out.into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

/// Undoes `escape_ascii` (`\xNN`, `\\`, `\"`, `\'`, `\n`, `\r`, `\t`).
pub fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b[i + 1] {
            b'x' => {
                let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 4;
                continue;
            }
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            c => out.push(c),
        }
        i += 2;
    }
    out
}

/// Checks the table and the rejects file against the inputs, line by line: every
/// valid line is exactly one row with every field equal (the amount bit for bit),
/// every other line exactly one reject carrying its original bytes, nothing else.
/// `inputs` are (name as given to etl, bytes). Returns (rows, rejects).
pub fn check_load(db: &Path, rejects: &Path, inputs: &[(&str, &[u8])]) -> (u64, u64) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut rejected: BTreeMap<(String, u64), Vec<u8>> = BTreeMap::new();
    let rejects_text = std::fs::read_to_string(rejects).expect("rejects file");
    for line in rejects_text.lines() {
        let v: Value = serde_json::from_str(line).expect("a reject is JSON");
        let key = (
            v["file"].as_str().unwrap().to_string(),
            v["line"].as_u64().unwrap(),
        );
        assert!(
            !v["error"].as_str().unwrap().is_empty(),
            "reject without a reason: {line}"
        );
        let original = match (v["text"].as_str(), v["bytes_escaped"].as_str()) {
            (Some(t), None) => t.as_bytes().to_vec(),
            (None, Some(e)) => unescape(e),
            _ => panic!("a reject has its text or its escaped bytes: {line}"),
        };
        assert!(
            rejected.insert(key.clone(), original).is_none(),
            "reject {key:?} written twice"
        );
    }
    let (mut n_rows, mut n_rejects) = (0, 0);
    let mut q = conn
        .prepare(
            "SELECT r.line, r.id, r.name, r.email, r.amount, r.tags, r.ts
             FROM records r JOIN etl_files f ON f.file = r.file
             WHERE f.path = ?1 ORDER BY r.line",
        )
        .unwrap();
    for (name, bytes) in inputs {
        // The rows of this input in line order, walked beside its lines: a missing,
        // extra or duplicated row shows as a mismatch of line numbers.
        let mut rows = q
            .query_map([name], |r| {
                let tags: String = r.get(5)?;
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    Expected::Row {
                        id: r.get(1)?,
                        name: r.get(2)?,
                        email: r.get(3)?,
                        amount_bits: r.get::<_, f64>(4)?.to_bits(),
                        tags: serde_json::from_str(&tags).expect("tags are JSON text"),
                        ts: r.get(6)?,
                    },
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .peekable();
        for (i, line) in lines(bytes).into_iter().enumerate() {
            let number = i as u64 + 1;
            let key = (name.to_string(), number);
            match expected(line) {
                Expected::Reject => {
                    assert_ne!(
                        rows.peek().map(|r| r.0),
                        Some(number),
                        "bad line {key:?} became a row"
                    );
                    let got = rejected
                        .remove(&key)
                        .unwrap_or_else(|| panic!("line {key:?} neither row nor reject"));
                    assert_eq!(got, line, "reject {key:?} keeps the line's bytes");
                    n_rejects += 1;
                }
                row => {
                    assert!(!rejected.contains_key(&key), "good line {key:?} rejected");
                    let (at, got) = rows
                        .next()
                        .unwrap_or_else(|| panic!("line {key:?} was not loaded"));
                    assert_eq!(at, number, "{name}: row of line {at} where line {number} was expected (missing or duplicated)");
                    assert_eq!(got, row, "row {key:?}");
                    n_rows += 1;
                }
            }
        }
        if let Some((at, _)) = rows.next() {
            panic!("{name}: a row for line {at}, which is no valid line (or a duplicate)");
        }
    }
    let all: i64 = conn
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(all as u64, n_rows, "rows of other inputs in the table");
    assert!(
        rejected.is_empty(),
        "rejects of no input line: {:?}",
        rejected.keys().take(5).collect::<Vec<_>>()
    );
    (n_rows, n_rejects)
}

/// Whether some connection holds the database's write lock (a batch is being
/// written): `BEGIN IMMEDIATE` fails at once then.
pub fn writer_active(db: &Path) -> bool {
    let Ok(conn) = Connection::open(db) else {
        return false;
    };
    conn.busy_timeout(Duration::ZERO).unwrap();
    match conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => {
            conn.execute_batch("ROLLBACK").unwrap();
            false
        }
        Err(_) => true,
    }
}

/// Whether the loader registered its inputs (its bookkeeping is committed).
pub fn registered(db: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    conn.query_row("SELECT COUNT(*) FROM etl_files", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|n| n > 0)
}

/// Rows committed so far (0 while the table does not exist yet).
pub fn committed(db: &Path) -> u64 {
    let Ok(conn) = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row("SELECT COUNT(*) FROM records", [], |r| r.get::<_, i64>(0))
        .map_or(0, |n| n as u64)
}

/// Polls `ready` every few milliseconds until it holds; fails after two minutes
/// (or when the process ended first) with `what`.
pub fn wait_for(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("etl ended ({status}) before {what}");
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `signal` (`-INT`, `-TERM`, `-KILL`) to the process.
#[cfg(unix)]
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}
