//! Crashes and interruptions: the same command run again completes the load, every
//! valid line exactly once as a row and every bad line exactly once as a reject.

#![cfg(unix)]

mod common;

use common::*;
use rusqlite::Connection;
use std::time::Duration;

const LINES: u64 = 1_000_000;

/// SIGKILL during the very first batch, then at five points of a 1 M-line load
/// chosen by watching the rows committed; each time the same command again. The
/// last run completes the load, checked line by line.
#[test]
fn sigkill_at_any_moment_then_the_same_command_loads_exactly_once() {
    let dir = scratch("sigkill");
    let path = dir.join("big.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let bad = stageflow_etl::generate::sample(&mut file, LINES).unwrap();
    drop(file);
    let input = std::fs::read(&path).unwrap();
    let db = dir.join("big.db");
    let args = [
        "big.jsonl",
        "--db",
        "big.db",
        "--rejects",
        "big-rejects.jsonl",
    ];
    let with =
        |extra: &[&'static str]| -> Vec<&str> { args.iter().chain(extra).copied().collect() };

    // During the first batch: its transaction is open (it holds the write lock) and
    // nothing is committed yet. The slow database keeps it open until the kill.
    let mut child = spawn(&dir, &with(&["--slow-db-ms", "600000"]));
    wait_for(&mut child, "the first batch's transaction", || {
        registered(&db) && writer_active(&db) && committed(&db) == 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(committed(&db), 0);

    // Five more points, each in a run of the same command that resumes the last.
    for k in 1..=5 {
        let at = k * LINES * 3 / 20;
        // 1 ms more per batch, so a run lasts long enough to be caught anywhere.
        let mut child = spawn(&dir, &with(&["--slow-db-ms", "1"]));
        wait_for(&mut child, &format!("{at} rows committed"), || {
            committed(&db) >= at
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let rows = committed(&db);
        assert!(rows >= at && rows < LINES - bad, "killed at {rows} rows");
    }

    let out = run(&dir, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("complete"), "{stdout}");
    let (rows, rejects) = check_load(
        &db,
        &dir.join("big-rejects.jsonl"),
        &[("big.jsonl", &input)],
    );
    assert_eq!((rows, rejects), (LINES - bad, bad));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn small_input(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    stageflow_etl::generate::sample(&mut out, n).unwrap();
    out
}

/// SIGINT and SIGTERM drain, print the summary, exit 130 and say how to resume;
/// the same command then completes the load.
#[test]
fn sigint_and_sigterm_drain_and_exit_130_then_the_same_command_resumes() {
    for signal_name in ["-INT", "-TERM"] {
        let dir = scratch(&format!("signal{signal_name}"));
        let input = small_input(40_000);
        std::fs::write(dir.join("in.jsonl"), &input).unwrap();
        let db = dir.join("s.db");
        let args = [
            "in.jsonl",
            "--db",
            "s.db",
            "--rejects",
            "r.jsonl",
            "--batch-size",
            "100",
        ];
        let slow: Vec<&str> = args.iter().copied().chain(["--slow-db-ms", "20"]).collect();
        let mut child = spawn(&dir, &slow);
        wait_for(&mut child, "rows committed", || committed(&db) > 0);
        signal(&child, signal_name);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "{signal_name}: {}",
            text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = stdout
            .lines()
            .find(|l| l.contains("read = written + rejected"))
            .unwrap_or_else(|| panic!("no summary: {}", text(&out)));
        assert!(summary.ends_with(" ok"), "{summary}");
        assert!(stdout.contains("partial"), "{stdout}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Run the same command to resume"),
            "{}",
            text(&out)
        );
        let rows = committed(&db);
        assert!(
            rows > 0 && rows < 39_000,
            "the drain stopped reading: {rows} rows"
        );

        let out = run(&dir, &args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        check_load(&db, &dir.join("r.jsonl"), &[("in.jsonl", &input)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// A failing database (locked by another process) stops the run at once with exit
/// code 3 and says so; once it is free, the same command completes the load.
#[test]
fn a_database_failure_stops_the_run_with_exit_3_and_the_same_command_resumes() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = scratch("locked");
    let input = small_input(40_000);
    let db = dir.join("l.db");
    let args = [
        "-",
        "--db",
        "l.db",
        "--rejects",
        "r.jsonl",
        "--batch-timeout-ms",
        "100",
    ];
    let spawn_piped = || {
        etl()
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The first half through a pipe (more than the MiB that identifies a stream),
    // loaded completely while the pipe stays open: the loader then waits for input.
    let half = input.len() / 2;
    let cut = half + input[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let first: Vec<&[u8]> = lines(&input[..cut]);
    let valid = first
        .iter()
        .filter(|l| expected(l) != Expected::Reject)
        .count() as u64;
    let mut child = spawn_piped();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input[..cut]).unwrap();
    stdin.flush().unwrap();
    wait_for(&mut child, "the first half committed", || {
        committed(&db) == valid
    });
    // Another process takes the database; the rest of the input arrives.
    let blocker = Connection::open(&db).unwrap();
    blocker.busy_timeout(Duration::from_secs(120)).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    // The loader stops reading when its writer waits, and exits when the database
    // fails: the pipe may be closed before all of it is written.
    let _ = stdin.write_all(&input[cut..]);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("database is locked"), "{stderr}");
    assert!(
        stderr.contains("run the same command to resume"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("drained"),
        "{}",
        text(&out)
    );
    assert_eq!(committed(&db), valid);

    // The same command, the same input again: the rest is loaded, once.
    let mut child = spawn_piped();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_load(&db, &dir.join("r.jsonl"), &[("-", &input)]);
    std::fs::remove_dir_all(&dir).unwrap();
}
