//! The distributed modes with the real servers: `etl enqueue` into a Redis stream,
//! `etl work` processes sharing it (SQLite or PostgreSQL), `etl check`. Compiled
//! with the `redis` feature only, and then they require Redis at 127.0.0.1:6379 (or
//! `STAGEFLOW_REDIS_URL`); the PostgreSQL cases need the `postgres` feature and the
//! server (`STAGEFLOW_PG_URL`). Each test has its own stream and table and removes
//! them. Waits are on what the servers show, never on time.

#![cfg(all(unix, feature = "redis"))]

mod common;

use common::dist::*;
use common::{scratch, signal, text};

/// The sample input of `n` records (about 1 in 1 000 bad), written to `dir/name`.
fn sample(dir: &std::path::Path, name: &str, n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    stageflow_etl::generate::sample(&mut out, n).unwrap();
    std::fs::write(dir.join(name), &out).unwrap();
    out
}

/// Adds entries that are no ETL lines (no `data` field) to the stream.
fn add_poison(load: &Load, n: usize) {
    let mut con = redis();
    for i in 0..n {
        let _: String = redis::cmd("XADD")
            .arg(&load.stream)
            .arg("*")
            .arg("poison")
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
}

fn check_ok(load: &Load, dir: &std::path::Path, enqueued: u64) {
    let out = load.check(dir);
    ok(&out, "etl check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("check"))
        .unwrap_or_else(|| panic!("no check line: {}", text(&out)));
    assert!(
        line.starts_with(&format!(
            "check    enqueued = written + rejected + dead-lettered: {enqueued} = "
        )) && line.ends_with(" ok"),
        "{line}"
    );
}

/// 100 000 records through `workers` worker processes, each to the end
/// (`--until-done`): the table holds the input exactly, nothing is pending.
fn load_100k(test: &str, sink_of: impl Fn(&std::path::Path) -> Sink, workers: usize) {
    let dir = scratch(test);
    let input = sample(&dir, "in.jsonl", 100_000);
    let load = Load::new(test, sink_of(&dir));
    // The workers first: `--until-done` must not end them before the enqueue,
    // which runs beside them, held back by their lag.
    let children: Vec<_> = (1..=workers)
        .map(|i| load.worker(&dir, &format!("w{i}"), &["--until-done", "--parsers", "1"]))
        .collect();
    ok(
        &load.enqueue(&dir, &["in.jsonl"], &["--max-lag", "5000"]),
        "etl enqueue",
    );
    let mut read = 0;
    for (i, child) in children.into_iter().enumerate() {
        let out = finish(child, &format!("worker {}", i + 1));
        ok(&out, "etl work");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find(|l| l.starts_with("worker")).unwrap();
        read += line
            .split("read ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{line}"));
    }
    assert_eq!(read, 100_000, "the workers read each entry once");
    let (rows, rejects) = load.verify(&[&input]);
    assert_eq!(rows + rejects, 100_000);
    assert_eq!(load.pending(), 0);
    check_ok(&load, &dir, 100_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_worker_loads_100k_records_exactly_into_sqlite() {
    load_100k("one", |dir| Sink::Sqlite(dir.join("out.db")), 1);
}

#[test]
fn three_workers_load_100k_records_exactly_into_sqlite() {
    load_100k("three_sqlite", |dir| Sink::Sqlite(dir.join("out.db")), 3);
}

#[cfg(feature = "postgres")]
#[test]
fn three_workers_load_100k_records_exactly_into_postgres() {
    load_100k("three_pg", |_| Sink::Postgres, 3);
}

/// An entry that is no ETL line is acknowledged as failed at each delivery and,
/// over the delivery limit, lands in the dead-letter stream with its error; the
/// ETL's lines around it are loaded.
#[test]
fn a_poison_entry_lands_in_the_dead_letter_stream_with_its_error() {
    let dir = scratch("poison");
    let input = sample(&dir, "in.jsonl", 2_000);
    let load = Load::new("poison", Sink::Sqlite(dir.join("out.db")));
    add_poison(&load, 2);
    ok(&load.enqueue(&dir, &["in.jsonl"], &[]), "etl enqueue");
    let worker = load.worker(
        &dir,
        "w1",
        &[
            "--until-done",
            "--max-deliveries",
            "2",
            "--claim-idle-ms",
            "100",
        ],
    );
    let out = finish(worker, "the worker");
    ok(&out, "etl work");
    let dead = load.dead_letters();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        assert!(
            d.contains_key("poison"),
            "the original fields are kept: {d:?}"
        );
        assert_eq!(
            d.get("error").map(String::as_str),
            Some("not an ETL entry: no field `input`"),
            "{d:?}"
        );
        assert!(
            d.contains_key("deliveries") && d.contains_key("id"),
            "{d:?}"
        );
    }
    load.verify(&[&input]);
    assert_eq!(load.pending(), 0);
    let out = load.check(&dir);
    ok(&out, "etl check");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 lines of the inputs, 2 other entries"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One of three workers is killed with SIGKILL in the middle of a batch (its
/// transaction open), a replacement starts: every valid line is exactly once in the
/// table, the dead letters are exactly the poison entries, nothing is pending.
fn sigkill_one_of_three(test: &str, sink: Sink, in_transaction: impl Fn(&Load) -> bool) {
    let dir = scratch(test);
    let input = sample(&dir, "in.jsonl", 30_000);
    let load = Load::new(test, sink);
    ok(&load.enqueue(&dir, &["in.jsonl"], &[]), "etl enqueue");
    add_poison(&load, 3);
    let args = [
        "--until-done",
        "--parsers",
        "1",
        "--batch-size",
        "200",
        "--slow-db-ms",
        "30",
        // Longer than a worker holds an entry while the others write (SQLite takes
        // one writer at a time): only the killed worker's entries are taken over.
        "--claim-idle-ms",
        "5000",
        "--max-deliveries",
        "3",
    ];
    let mut w1 = load.worker(&dir, "w1", &args);
    let mut w2 = load.worker(&dir, "w2", &args);
    let mut w3 = load.worker(&dir, "w3", &args);
    wait_until(&mut [&mut w1, &mut w2, &mut w3], "w2 mid-batch", || {
        load.committed() > 2_000 && load.pending_of("w2") > 0 && in_transaction(&load)
    });
    w2.kill().unwrap();
    w2.wait().unwrap();
    assert!(load.pending_of("w2") > 0, "w2 died holding entries");
    let w4 = load.worker(&dir, "w4", &args);
    for (w, name) in [(w1, "w1"), (w3, "w3"), (w4, "w4")] {
        ok(&finish(w, name), name);
    }
    load.verify(&[&input]);
    let dead = load.dead_letters();
    assert_eq!(dead.len(), 3, "exactly the poison entries: {dead:?}");
    assert!(dead.iter().all(|d| d.contains_key("poison")), "{dead:?}");
    assert_eq!(load.pending(), 0);
    check_ok(&load, &dir, 30_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "postgres")]
#[test]
fn sigkill_one_of_three_workers_mid_batch_then_a_replacement_loads_exactly_once_postgres() {
    sigkill_one_of_three("kill_pg", Sink::Postgres, |load| {
        // w2's session has a transaction open: its batch is being written.
        pg().query_one(
            "SELECT COUNT(*) FROM pg_stat_activity
             WHERE application_name = $1 AND xact_start IS NOT NULL",
            &[&format!("etl w2@{}", load.stream)],
        )
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
    });
}

#[test]
fn sigkill_one_of_three_workers_mid_batch_then_a_replacement_loads_exactly_once_sqlite() {
    let dir = scratch("kill_sqlite_db");
    let db = dir.join("out.db");
    sigkill_one_of_three("kill_sqlite", Sink::Sqlite(db.clone()), move |_| {
        common::writer_active(&db)
    });
}

/// Every connection of the workers is cut (`CLIENT KILL`, twice, while rows are
/// being committed): the workers reconnect and finish with the same exact
/// result. (This Redis keeps nothing on disk, so a restart would lose the stream;
/// cutting the connections is what a restart does to the clients.)
#[test]
fn connections_cut_mid_run_then_the_workers_reconnect_and_finish_exactly() {
    let dir = scratch("cut");
    let input = sample(&dir, "in.jsonl", 30_000);
    let load = Load::new("cut", Sink::Sqlite(dir.join("out.db")));
    ok(&load.enqueue(&dir, &["in.jsonl"], &[]), "etl enqueue");
    let args = [
        "--until-done",
        "--parsers",
        "1",
        "--batch-size",
        "200",
        "--slow-db-ms",
        "10",
        "--claim-idle-ms",
        "5000",
    ];
    // Names of their own: only these workers' connections are cut.
    let (n1, n2) = (unique("cut_w1"), unique("cut_w2"));
    let mut w1 = load.worker(&dir, &n1, &args);
    let mut w2 = load.worker(&dir, &n2, &args);
    for at in [5_000, 15_000] {
        wait_until(&mut [&mut w1, &mut w2], &format!("{at} rows"), || {
            load.committed() >= at
        });
        let cut = cut_connections(&[&n1, &n2]);
        assert!(cut >= 2, "the workers' connections were cut: {cut}");
    }
    for (w, name) in [(w1, "w1"), (w2, "w2")] {
        let out = finish(w, name);
        ok(&out, name);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("reconnected") && !stdout.contains("reconnected 0 times"),
            "{name}: {}",
            text(&out)
        );
    }
    load.verify(&[&input]);
    assert_eq!(load.pending(), 0);
    check_ok(&load, &dir, 30_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Entries trimmed from the stream while a (killed) worker held them are reported
/// as lost by the worker that finds them gone, and `etl check` does not pass.
#[test]
fn entries_trimmed_while_pending_are_reported_lost() {
    let dir = scratch("trim");
    sample(&dir, "in.jsonl", 3_000);
    let load = Load::new("trim", Sink::Sqlite(dir.join("out.db")));
    ok(&load.enqueue(&dir, &["in.jsonl"], &[]), "etl enqueue");
    // A batch that never commits: the worker holds its entries until killed.
    let mut w1 = load.worker(&dir, "w1", &["--slow-db-ms", "600000", "--parsers", "1"]);
    wait_until(&mut [&mut w1], "w1 holding entries", || {
        load.pending_of("w1") > 0
    });
    w1.kill().unwrap();
    w1.wait().unwrap();
    let held = load.pending_of("w1");
    // Trim up to its last pending entry: what it held goes, the unread rest stays.
    let (_, _, last, _): (u64, String, String, redis::Value) = redis::cmd("XPENDING")
        .arg(&load.stream)
        .arg("etl")
        .query(&mut redis())
        .unwrap();
    let (ms, seq) = last.split_once('-').unwrap();
    let _: u64 = redis::cmd("XTRIM")
        .arg(&load.stream)
        .arg("MINID")
        .arg(format!("{ms}-{}", seq.parse::<u64>().unwrap() + 1))
        .query(&mut redis())
        .unwrap();
    // The same worker again: its own pending entries first, and they are gone.
    let out = finish(load.worker(&dir, "w1", &["--until-done"]), "w1 again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout.contains(&format!("LOST     {held:>9} entries")),
        "{held} lost: {}",
        text(&out)
    );
    let out = load.check(&dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("MISMATCH"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGINT and SIGTERM drain a worker: what it committed is acknowledged, what it
/// took and did not commit stays pending for the others, it exits with 130; another
/// worker then completes the load exactly.
#[test]
fn sigint_and_sigterm_drain_a_worker_then_another_completes_the_load() {
    for signal_name in ["-INT", "-TERM"] {
        let test = format!("drain_{}", &signal_name[1..]);
        let dir = scratch(&test);
        let input = sample(&dir, "in.jsonl", 20_000);
        let load = Load::new(&test, Sink::Sqlite(dir.join("out.db")));
        ok(&load.enqueue(&dir, &["in.jsonl"], &[]), "etl enqueue");
        let mut w1 = load.worker(
            &dir,
            "w1",
            &[
                "--batch-size",
                "100",
                "--slow-db-ms",
                "20",
                "--parsers",
                "1",
            ],
        );
        wait_until(&mut [&mut w1], "rows committed", || load.committed() > 0);
        signal(&w1, signal_name);
        let out = finish(w1, "the drained worker");
        assert_eq!(
            out.status.code(),
            Some(130),
            "{signal_name}: {}",
            text(&out)
        );
        let committed = load.committed();
        assert!(committed < 19_000, "the drain stopped reading: {committed}");
        // Acknowledged = committed: every entry of the group is either committed,
        // pending (taken, not committed) or unread.
        let left: u64 = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&load.stream)
            .query::<Vec<std::collections::HashMap<String, redis::Value>>>(&mut redis())
            .unwrap()
            .iter()
            .find_map(|g| match g.get("lag") {
                Some(redis::Value::Int(n)) => Some(*n as u64),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            committed + load.pending_of("w1") + left,
            20_000,
            "committed + pending + unread"
        );
        let out = finish(
            load.worker(&dir, "w2", &["--until-done", "--claim-idle-ms", "100"]),
            "w2",
        );
        ok(&out, "w2");
        load.verify(&[&input]);
        check_ok(&load, &dir, 20_000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `etl enqueue` run again adds nothing; killed mid-way and run again, it adds each
/// line exactly once; it waits for the workers while the group's lag is above
/// `--max-lag`.
#[test]
fn enqueue_is_resumable_exactly_once_and_bounded_by_the_lag() {
    let dir = scratch("enqueue");
    sample(&dir, "a.jsonl", 5_000);
    let b = sample(&dir, "b.jsonl", 7_000);
    let load = Load::new("enqueue", Sink::Sqlite(dir.join("out.db")));
    let xlen = || -> u64 {
        redis::cmd("XLEN")
            .arg(&load.stream)
            .query(&mut redis())
            .unwrap()
    };
    // Bounded: with no worker, it stops at the cap and waits; SIGKILL it there.
    let mut child = etl_in(&dir)
        .arg("enqueue")
        .args(["--redis", &redis_url(), "--stream", &load.stream])
        .args([
            "--max-lag",
            "2000",
            "--batch-size",
            "500",
            "a.jsonl",
            "b.jsonl",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // 2 000 entries unread is not above the cap: one more batch, then it waits.
    wait_until(&mut [&mut child], "the cap reached", || xlen() >= 2_500);
    let progress = || -> u64 {
        let all: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{}:enqueued", load.stream))
            .query(&mut redis())
            .unwrap();
        all.iter()
            .filter(|(k, _)| !k.contains(':') || k.matches(':').count() == 2)
            .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
            .sum()
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let len = xlen();
    assert_eq!(len, 2_500, "bounded by the lag");
    assert_eq!(progress(), len, "progress counted with the entries");
    // Resumed with a worker running: it completes, each line once.
    let worker = load.worker(&dir, "w1", &["--parsers", "1"]);
    let out = load.enqueue(&dir, &["a.jsonl", "b.jsonl"], &["--max-lag", "2000"]);
    ok(&out, "the resumed enqueue");
    assert!(String::from_utf8_lossy(&out.stdout).contains("enqueued whole: 5000 lines"));
    // Again: nothing added.
    let out = load.enqueue(&dir, &["b.jsonl", "a.jsonl"], &[]);
    ok(&out, "the same enqueue again");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("enqueued 0 lines"),
        "{}",
        text(&out)
    );
    let mut worker = worker;
    wait_until(&mut [&mut worker], "everything loaded", || {
        load.committed() == 12_000 && load.pending() == 0
    });
    signal(&worker, "-TERM");
    assert_eq!(finish(worker, "w1").status.code(), Some(130));
    let a = std::fs::read(dir.join("a.jsonl")).unwrap();
    load.verify(&[&a, &b]);
    check_ok(&load, &dir, 12_000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Bad arguments are refused with the option named; the file mode's table is not
/// taken for a stream's rows.
#[test]
fn bad_arguments_are_refused_naming_the_option() {
    let dir = scratch("args");
    let run = |args: &[&str]| etl_in(&dir).args(args).output().unwrap();
    let out = run(&["work", "--stream", "s", "--db", "x.db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--consumer NAME is required"));
    let out = run(&[
        "work",
        "--stream",
        "s",
        "--consumer",
        "c",
        "--table",
        "a b",
        "--db",
        "x.db",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--table must be a plain SQL name"));
    let out = run(&["check", "--stream", "s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --db PATH"));
    let out = run(&["enqueue", "--stream", "s", "--max-lag", "0", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-lag must be greater than 0, got: 0")
    );
    // A database holding the file mode's table `records`.
    sample(&dir, "in.jsonl", 10);
    let file_mode = common::run(
        &dir,
        &["in.jsonl", "--db", "file.db", "--rejects", "r.jsonl"],
    );
    ok(&file_mode, "the file mode");
    let load = Load::new("args", Sink::Sqlite(dir.join("file.db")));
    let out = etl_in(&dir)
        .args(["work", "--redis", &redis_url(), "--stream", &load.stream])
        .args(["--consumer", "c", "--db", "file.db", "--until-done"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was not made by `etl work`"),
        "{}",
        text(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
