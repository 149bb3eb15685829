//! Helpers of the distributed modes' tests: the real Redis (and PostgreSQL), a stream
//! key and table of its own per test, removed at the end, and waits on what the
//! servers show (table counts, pending entries) with generous timeouts.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{expected, lines, text, Expected};

/// A stream entry as `XRANGE` returns it.
type RawEntry = (String, Vec<(String, Vec<u8>)>);
/// Rows and rejects of the tables by (input, line).
type Rows = BTreeMap<(String, u64), Expected>;
type Rejects = BTreeMap<(String, u64), Vec<u8>>;

/// The Redis the tests use: `STAGEFLOW_REDIS_URL`, else the local default.
pub fn redis_url() -> String {
    std::env::var("STAGEFLOW_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A connection to it; these tests require the server (CI runs them with
/// `--all-features` and starts it), so an unreachable one fails them clearly.
pub fn redis() -> redis::Connection {
    let url = redis_url();
    redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(10)))
        .unwrap_or_else(|e| {
            panic!("Redis not reachable at {url} ({e}): start it or run without --features redis")
        })
}

/// The PostgreSQL connection string: `STAGEFLOW_PG_URL`, else the local default.
#[cfg(feature = "postgres")]
pub fn pg_conn() -> String {
    std::env::var("STAGEFLOW_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

#[cfg(feature = "postgres")]
pub fn pg() -> postgres::Client {
    let conn = pg_conn();
    postgres::Client::connect(&conn, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "PostgreSQL not reachable with {conn:?} ({e}): start it or run without --features postgres"
        )
    })
}

/// A name unique to this test and this process (stream keys, tables, consumers).
pub fn unique(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "etltest_{test}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the workers of a test write.
#[derive(Clone, Debug)]
pub enum Sink {
    Sqlite(std::path::PathBuf),
    #[cfg(feature = "postgres")]
    Postgres,
}

/// A test's stream (and table): removed when dropped, also when the test fails.
pub struct Load {
    pub stream: String,
    pub table: String,
    pub sink: Sink,
}

impl Load {
    pub fn new(test: &str, sink: Sink) -> Load {
        let name = unique(test);
        let load = Load {
            stream: name.clone(),
            table: name,
            sink,
        };
        load.remove();
        load
    }

    fn remove(&self) {
        let mut con = redis();
        let _: () = redis::cmd("DEL")
            .arg(&self.stream)
            .arg(format!("{}:enqueued", self.stream))
            .arg(format!("{}:dead", self.stream))
            .query(&mut con)
            .unwrap();
        #[cfg(feature = "postgres")]
        if let Sink::Postgres = self.sink {
            let t = &self.table;
            pg().batch_execute(&format!(
                "DROP TABLE IF EXISTS {t}; DROP TABLE IF EXISTS {t}_rejects; DROP TABLE IF EXISTS {t}_workers;"
            ))
            .unwrap();
        }
    }

    /// `--stream`, `--table` and the sink's option, for `work` and `check`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--redis".into(),
            redis_url(),
            "--stream".into(),
            self.stream.clone(),
            "--table".into(),
            self.table.clone(),
        ];
        match &self.sink {
            Sink::Sqlite(path) => {
                args.push("--db".into());
                args.push(path.display().to_string());
            }
            #[cfg(feature = "postgres")]
            Sink::Postgres => {
                args.push("--postgres".into());
                args.push(pg_conn());
            }
        }
        args
    }

    /// `etl enqueue` of `files` (paths relative to `dir`).
    pub fn enqueue(&self, dir: &Path, files: &[&str], extra: &[&str]) -> Output {
        etl_in(dir)
            .arg("enqueue")
            .args(["--redis", &redis_url(), "--stream", &self.stream])
            .args(extra)
            .args(files)
            .output()
            .expect("etl enqueue runs")
    }

    /// Starts `etl work` as `consumer`, its outputs piped.
    pub fn worker(&self, dir: &Path, consumer: &str, extra: &[&str]) -> Child {
        etl_in(dir)
            .arg("work")
            .args(self.args())
            .args(["--consumer", consumer])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("etl work starts")
    }

    /// `etl check`.
    pub fn check(&self, dir: &Path) -> Output {
        etl_in(dir)
            .arg("check")
            .args(self.args())
            .output()
            .expect("etl check runs")
    }

    /// Entries of the group delivered and not acknowledged.
    pub fn pending(&self) -> u64 {
        let (n, ..): (u64, Option<String>, Option<String>, redis::Value) = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg("etl")
            .query(&mut redis())
            .unwrap();
        n
    }

    /// Entries pending for one consumer.
    pub fn pending_of(&self, consumer: &str) -> u64 {
        let entries: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg("etl")
            .arg("-")
            .arg("+")
            .arg(1_000_000)
            .arg(consumer)
            .query(&mut redis())
            .unwrap();
        entries.len() as u64
    }

    /// The dead letters: each entry's fields.
    pub fn dead_letters(&self) -> Vec<BTreeMap<String, String>> {
        let entries: Vec<RawEntry> = redis::cmd("XRANGE")
            .arg(format!("{}:dead", self.stream))
            .arg("-")
            .arg("+")
            .query(&mut redis())
            .unwrap();
        entries
            .into_iter()
            .map(|(_, fields)| {
                fields
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            })
            .collect()
    }

    /// Rows and rejects in the tables (0 before they exist).
    pub fn committed(&self) -> u64 {
        self.rows_and_rejects().map_or(0, |(r, j)| r + j)
    }

    fn rows_and_rejects(&self) -> Option<(u64, u64)> {
        let t = &self.table;
        let q = format!("SELECT (SELECT COUNT(*) FROM {t}), (SELECT COUNT(*) FROM {t}_rejects)");
        match &self.sink {
            Sink::Sqlite(path) => {
                let db = rusqlite::Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .ok()?;
                db.busy_timeout(Duration::from_secs(30)).ok()?;
                db.query_row(&q, [], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                })
                .ok()
            }
            #[cfg(feature = "postgres")]
            Sink::Postgres => {
                let row = pg().query_one(&q, &[]).ok()?;
                Some((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
            }
        }
    }

    /// Every row and reject of the tables, by (input, line).
    fn table(&self) -> (Rows, Rejects) {
        let t = &self.table;
        let rows_q = format!("SELECT input, line, id, name, email, amount, tags, ts FROM {t}");
        let rejects_q = format!("SELECT input, line, error, raw FROM {t}_rejects");
        let row =
            |input: String, line: i64, id: i64, name, email, amount: f64, tags: String, ts| {
                (
                    (input, line as u64),
                    Expected::Row {
                        id,
                        name,
                        email,
                        amount_bits: amount.to_bits(),
                        tags: serde_json::from_str(&tags).expect("tags are JSON text"),
                        ts,
                    },
                )
            };
        let mut rows = BTreeMap::new();
        let mut rejects = BTreeMap::new();
        match &self.sink {
            Sink::Sqlite(path) => {
                let db = rusqlite::Connection::open(path).unwrap();
                let mut q = db.prepare(&rows_q).unwrap();
                for r in q
                    .query_map([], |r| {
                        Ok(row(
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    })
                    .unwrap()
                {
                    let (k, v) = r.unwrap();
                    assert!(rows.insert(k.clone(), v).is_none(), "row {k:?} twice");
                }
                let mut q = db.prepare(&rejects_q).unwrap();
                for r in q
                    .query_map([], |r| {
                        let error: String = r.get(2)?;
                        assert!(!error.is_empty());
                        Ok((
                            (r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64),
                            r.get::<_, Vec<u8>>(3)?,
                        ))
                    })
                    .unwrap()
                {
                    let (k, v) = r.unwrap();
                    assert!(rejects.insert(k.clone(), v).is_none(), "reject {k:?} twice");
                }
            }
            #[cfg(feature = "postgres")]
            Sink::Postgres => {
                let mut client = pg();
                for r in client.query(&rows_q, &[]).unwrap() {
                    let (k, v) = row(
                        r.get(0),
                        r.get(1),
                        r.get(2),
                        r.get(3),
                        r.get(4),
                        r.get(5),
                        r.get(6),
                        r.get(7),
                    );
                    assert!(rows.insert(k.clone(), v).is_none(), "row {k:?} twice");
                }
                for r in client.query(&rejects_q, &[]).unwrap() {
                    let error: String = r.get(2);
                    assert!(!error.is_empty());
                    let k = (r.get::<_, String>(0), r.get::<_, i64>(1) as u64);
                    assert!(
                        rejects.insert(k.clone(), r.get::<_, Vec<u8>>(3)).is_none(),
                        "reject {k:?} twice"
                    );
                }
            }
        }
        (rows, rejects)
    }

    /// Checks the tables against the inputs line by line: every valid line exactly
    /// one row with every field equal, every other line one reject with its bytes,
    /// nothing else. `inputs` are the files' bytes. Returns (rows, rejects).
    pub fn verify(&self, inputs: &[&[u8]]) -> (u64, u64) {
        let (mut rows, mut rejects) = self.table();
        let (mut n_rows, mut n_rejects) = (0, 0);
        for bytes in inputs {
            let identity = format!(
                "file:{}:{:032x}",
                bytes.len(),
                xxhash_rust::xxh3::xxh3_128(bytes)
            );
            for (i, line) in lines(bytes).into_iter().enumerate() {
                let key = (identity.clone(), i as u64 + 1);
                match expected(line) {
                    Expected::Reject => {
                        assert!(!rows.contains_key(&key), "bad line {key:?} became a row");
                        let got = rejects
                            .remove(&key)
                            .unwrap_or_else(|| panic!("line {key:?} neither row nor reject"));
                        assert_eq!(got, line, "reject {key:?} keeps the line's bytes");
                        n_rejects += 1;
                    }
                    row => {
                        assert!(!rejects.contains_key(&key), "good line {key:?} rejected");
                        let got = rows
                            .remove(&key)
                            .unwrap_or_else(|| panic!("line {key:?} was not loaded"));
                        assert_eq!(got, row, "row {key:?}");
                        n_rows += 1;
                    }
                }
            }
        }
        assert!(
            rows.is_empty() && rejects.is_empty(),
            "rows or rejects of no input line: {:?} {:?}",
            rows.keys().take(3).collect::<Vec<_>>(),
            rejects.keys().take(3).collect::<Vec<_>>()
        );
        (n_rows, n_rejects)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Cuts every Redis connection of the workers named `consumers` (the Redis source
/// names its connections `stageflow-<role>:<consumer>`), as a Redis restart would;
/// other clients (other tests) keep theirs. Returns how many were cut.
pub fn cut_connections(consumers: &[&str]) -> u64 {
    let mut con = redis();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    let mut cut = 0;
    for client in list.lines() {
        let field = |key: &str| {
            client
                .split(' ')
                .find_map(|f| f.strip_prefix(key).and_then(|f| f.strip_prefix('=')))
        };
        let (Some(id), Some(name)) = (field("id"), field("name")) else {
            continue;
        };
        if name.starts_with("stageflow-")
            && consumers
                .iter()
                .any(|c| name.rsplit_once(':').is_some_and(|(_, n)| n == *c))
        {
            let n: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query(&mut con)
                .unwrap();
            cut += n;
        }
    }
    cut
}

/// `etl` run in `dir`, its temporary files there.
pub fn etl_in(dir: &Path) -> std::process::Command {
    // Not `etl()`: its `--no-progress` comes first, and a mode's name must.
    let bin = std::env::var_os("ETL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_etl").into());
    let mut c = std::process::Command::new(bin);
    c.current_dir(dir).env("TMPDIR", dir.join("tmp"));
    c
}

/// Polls `ready` until it holds, for at most two minutes; fails with `what`, or as
/// soon as one of `workers` ended (they run until the load is done).
pub fn wait_until(workers: &mut [&mut Child], what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(120);
    while !ready() {
        for w in workers.iter_mut() {
            if let Some(status) = w.try_wait().unwrap() {
                // Its own words say why: both pipes are at their end now.
                let mut out = String::new();
                if let Some(mut stderr) = w.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut out);
                }
                if let Some(mut stdout) = w.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
                }
                panic!("a worker ended ({status}) before {what}:\n{out}");
            }
        }
        assert!(
            Instant::now() < until,
            "timed out (120 s) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for a worker to end (at most five minutes) and returns its output.
pub fn finish(child: Child, what: &str) -> Output {
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!("{what} (pid {id}) did not end within 300 s");
        }
    }
}

/// Asserts a successful run, showing its output otherwise.
pub fn ok(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(out));
}
