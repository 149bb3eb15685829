//! W9: a Redis stream through a consumer group. 1 M entries of about 100 bytes in
//! a stream → `RedisStreamSource` → a consumer that counts them and acknowledges
//! each batch (`Acks::all_successful`), the source ending once the group has
//! nothing pending (`stop_when_idle`); against a hand-written loop of
//! `XREADGROUP COUNT 1000` + `XACK` on one connection.
//!
//! Rows:
//! - `W9`: one process, the source against the loop;
//! - `W9-2proc`, `W9-3proc`: N worker processes (this bench binary started again in
//!   worker mode) sharing one group, stageflow workers against hand-written ones;
//!   the time runs from starting the workers to the last one's exit.
//!
//! Each run reads the stream through a new consumer group (created at `0`,
//! destroyed after the run), so every run reads all the entries. The stream is
//! made once and kept under `stageflow-bench:w9:<n>` for later runs (about
//! 150 MB in Redis for 1 M entries; `DEL` it to free them). Runs only with
//! `--features redis` and a Redis at `STAGEFLOW_REDIS_URL` (default
//! `redis://127.0.0.1:6379/`); otherwise it says why it is skipped.

use crate::harness::Workload;

/// The environment variable that makes this binary a W9 worker.
const WORKER: &str = "COMPARE_W9_WORKER";

#[cfg(not(feature = "redis"))]
pub fn workloads(_events: Option<u64>) -> Vec<Workload> {
    eprintln!("compare: W9 skipped: it needs the `redis` feature (cargo bench --bench compare --features redis)");
    Vec::new()
}

/// Runs as a W9 worker if started as one; true then (the process should exit).
#[cfg(not(feature = "redis"))]
pub fn worker() -> bool {
    std::env::var_os(WORKER).is_some()
}

#[cfg(feature = "redis")]
pub use with_redis::{worker, workloads};

#[cfg(feature = "redis")]
mod with_redis {
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use redis::{Connection, Value};
    use stageflow::pipeline::{Acks, Message};
    use stageflow::prelude::*;
    use stageflow::redis::{RedisStreamOptions, RedisStreamSource, StreamEntry};

    use super::{Workload, WORKER};

    fn url() -> String {
        std::env::var("STAGEFLOW_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
    }

    fn connect() -> Result<Connection, String> {
        let client = redis::Client::open(url().as_str()).map_err(|e| e.to_string())?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(|e| e.to_string())?;
        Ok(con)
    }

    fn key(n: u64) -> String {
        format!("stageflow-bench:w9:{n}")
    }

    /// About 100 bytes per entry: `n` and a 90-byte payload.
    fn fill(con: &mut Connection, n: u64) -> Result<(), String> {
        let key = key(n);
        let len: u64 = redis::cmd("XLEN")
            .arg(&key)
            .query(con)
            .map_err(|e| e.to_string())?;
        if len == n {
            return Ok(());
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&key)
            .query(con)
            .map_err(|e| e.to_string())?;
        let payload = "p".repeat(90);
        let mut i = 0;
        while i < n {
            let mut pipe = redis::pipe();
            for j in i..(i + 10_000).min(n) {
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("n")
                    .arg(j)
                    .arg("data")
                    .arg(&payload)
                    .ignore();
            }
            pipe.exec(con).map_err(|e| e.to_string())?;
            i += 10_000;
        }
        Ok(())
    }

    /// The stream, filled once per process (in the first run: the warm-up).
    fn filled(con: &mut Connection, n: u64) -> Result<(), String> {
        static FILLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        FILLED.get_or_init(|| fill(con, n)).clone()
    }

    fn new_group(con: &mut Connection, n: u64) -> Result<String, String> {
        filled(con, n)?;
        static RUN: AtomicU64 = AtomicU64::new(0);
        let group = format!(
            "w9-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        );
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key(n))
            .arg(&group)
            .arg("0")
            .exec(con)
            .map_err(|e| e.to_string())?;
        Ok(group)
    }

    /// Checks that the group read every entry and has nothing pending, and
    /// destroys it.
    fn finish(con: &mut Connection, n: u64, group: &str) -> Result<(), String> {
        let summary: Value = redis::cmd("XPENDING")
            .arg(key(n))
            .arg(group)
            .query(con)
            .map_err(|e| e.to_string())?;
        let pending = match &summary {
            Value::Array(parts) => match parts.first() {
                Some(Value::Int(p)) => *p,
                _ => -1,
            },
            _ => -1,
        };
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key(n))
            .query(con)
            .map_err(|e| e.to_string())?;
        let _: i64 = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(key(n))
            .arg(group)
            .query(con)
            .map_err(|e| e.to_string())?;
        if pending != 0 {
            return Err(format!("group {group}: {pending} entries still pending"));
        }
        if !group_read(&groups, group, n) {
            return Err(format!(
                "group {group} did not read all {n} entries: {groups:?}"
            ));
        }
        Ok(())
    }

    /// Whether `XINFO GROUPS` says `group` read `n` entries.
    fn group_read(groups: &Value, group: &str, n: u64) -> bool {
        let Value::Array(groups) = groups else {
            return false;
        };
        groups.iter().any(|g| {
            let Value::Array(kv) = g else { return false };
            let text = |v: &Value| match v {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => String::new(),
            };
            let mut name = false;
            let mut read = false;
            for pair in kv.chunks(2) {
                match (text(&pair[0]).as_str(), &pair[1]) {
                    ("name", v) => name = text(v) == group,
                    ("entries-read", Value::Int(r)) => read = *r as u64 == n,
                    _ => {}
                }
            }
            name && read
        })
    }

    struct Count(u64);
    impl Stage for Count {
        type In = Message<StreamEntry>;
        type Out = Never;
    }
    impl Consumer for Count {
        fn handle_events(
            &mut self,
            batch: Vec<Message<StreamEntry>>,
            _: &SubscriptionRef,
            _: &mut Context<'_, Self>,
        ) {
            self.0 += batch.len() as u64;
            Acks::all_successful(&batch);
        }
    }

    /// One stageflow worker: the source until the group has nothing left; returns
    /// how many entries it counted.
    fn stageflow_worker(n: u64, group: &str, consumer: &str) -> Result<u64, String> {
        let options = RedisStreamOptions::new(url(), key(n), group, consumer)
            .stop_when_idle(true)
            .block(Duration::from_millis(20));
        let source = RedisStreamSource::new(options).map_err(|e| e.to_string())?;
        let stats = source.stats();
        let source = start_producer(source, ProducerOptions::new()).map_err(|e| e.to_string())?;
        let count = start_consumer(
            Count(0),
            ConsumerOptions::new().subscribe_to(
                &source,
                SubscribeOptions::new().max_demand(2000).min_demand(1000),
            ),
        )
        .map_err(|e| e.to_string())?;
        let reason = source.join();
        if reason != Reason::Normal {
            return Err(format!("the source stopped with {reason}"));
        }
        count.join();
        let counts = stats.snapshot();
        Ok(counts.acked)
    }

    /// One hand-written worker: `XREADGROUP COUNT 1000` + `XACK` of the ids read,
    /// on one connection, until a read finds nothing new.
    fn hand_written_worker(n: u64, group: &str, consumer: &str) -> Result<u64, String> {
        let mut con = connect()?;
        let key = key(n);
        let mut count = 0;
        loop {
            let reply: Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(group)
                .arg(consumer)
                .arg("COUNT")
                .arg(1000)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .query(&mut con)
                .map_err(|e| e.to_string())?;
            let mut xack = redis::cmd("XACK");
            xack.arg(&key).arg(group);
            let mut read = 0;
            if let Value::Array(streams) = reply {
                for stream in streams {
                    let Value::Array(mut pair) = stream else {
                        continue;
                    };
                    let Some(Value::Array(entries)) = pair.pop() else {
                        continue;
                    };
                    for entry in entries {
                        let Value::Array(mut parts) = entry else {
                            continue;
                        };
                        // The fields, as a consumer would take them.
                        let fields = parts.pop();
                        let Some(Value::BulkString(id)) = parts.pop() else {
                            continue;
                        };
                        if let Some(Value::Array(fields)) = fields {
                            std::hint::black_box(fields);
                        }
                        xack.arg(id);
                        read += 1;
                    }
                }
            }
            if read == 0 {
                return Ok(count);
            }
            let _: u64 = xack.query(&mut con).map_err(|e| e.to_string())?;
            count += read;
        }
    }

    /// Worker mode: `COMPARE_W9_WORKER=side,n,group,consumer`.
    pub fn worker() -> bool {
        let Ok(spec) = std::env::var(WORKER) else {
            return false;
        };
        let parts: Vec<&str> = spec.split(',').collect();
        let [side, n, group, consumer] = parts[..] else {
            eprintln!("compare: bad {WORKER}={spec}");
            std::process::exit(2);
        };
        let n: u64 = n.parse().expect("entry count");
        let result = match side {
            "stageflow" => stageflow_worker(n, group, consumer),
            _ => hand_written_worker(n, group, consumer),
        };
        match result {
            Ok(count) => {
                println!("{count}");
                std::process::exit(0)
            }
            Err(e) => {
                eprintln!("compare: W9 worker {consumer}: {e}");
                std::process::exit(1)
            }
        }
    }

    /// Runs `workers` processes of `side` on a new group; checks that together they
    /// acknowledged every entry once and left nothing pending.
    fn processes(side: &str, n: u64, workers: usize) -> Result<(), String> {
        let mut con = connect()?;
        let group = new_group(&mut con, n)?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let children: Vec<Child> = (0..workers)
            .map(|i| {
                Command::new(&exe)
                    .env(WORKER, format!("{side},{n},{group},w{i}"))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        let mut total = 0;
        for child in children {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("a {side} worker failed: {}", out.status));
            }
            total += String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .map_err(|e| e.to_string())?;
        }
        finish(&mut con, n, &group)?;
        if total != n {
            return Err(format!(
                "{workers} {side} workers acknowledged {total} entries, expected {n}"
            ));
        }
        Ok(())
    }

    fn in_process(side: &str, n: u64) -> Result<(), String> {
        let mut con = connect()?;
        let group = new_group(&mut con, n)?;
        let count = match side {
            "stageflow" => stageflow_worker(n, &group, "w0")?,
            _ => hand_written_worker(n, &group, "w0")?,
        };
        finish(&mut con, n, &group)?;
        if count != n {
            return Err(format!(
                "{side}: acknowledged {count} entries, expected {n}"
            ));
        }
        Ok(())
    }

    pub fn workloads(events: Option<u64>) -> Vec<Workload> {
        let n = events.unwrap_or(1_000_000);
        if let Err(e) = connect() {
            eprintln!(
                "compare: W9 skipped: Redis not reachable at {} ({e})",
                url()
            );
            return Vec::new();
        }
        let mut all = vec![Workload {
            id: "W9".into(),
            events: n,
            baseline: "1 connection: XREADGROUP COUNT 1000 + XACK of the ids, in a loop",
            stageflow: Box::new(move || in_process("stageflow", n)),
            hand_written: Box::new(move || in_process("loop", n)),
        }];
        for workers in [1usize, 2, 3] {
            all.push(Workload {
                id: format!("W9-{workers}proc"),
                events: n,
                baseline: "the same loop in as many processes, one group",
                stageflow: Box::new(move || processes("stageflow", n, workers)),
                hand_written: Box::new(move || processes("loop", n, workers)),
            });
        }
        all
    }
}
