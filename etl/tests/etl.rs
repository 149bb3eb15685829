//! The `etl` binary run as a user runs it: exit codes, the database and the rejects
//! file checked line by line against the input afterwards.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;
use rusqlite::Connection;

/// An input of `n` records with values that are easy to store wrongly (floats of
/// random bits, tags containing commas, a huge id) and bad lines of every kind.
fn tricky_input(n: u64, seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut x = seed;
    for i in 0..n {
        // SplitMix64.
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let amount = f64::from_bits(z);
        let amount = if amount.is_finite() {
            amount
        } else {
            z as f64 / 7.0
        };
        let tags: &[&str] = match i % 4 {
            0 => &["x,y", "z"],
            1 => &["x", "y", "z"],
            2 => &[],
            _ => &["a \"quoted\" tag", "ü"],
        };
        writeln!(
            out,
            "{}",
            record(i, &format!("user{i}"), amount, tags, "2024-05-01T00:00:00Z")
        )
        .unwrap();
        if i % 97 == 0 {
            let bad: &[u8] = match (i / 97) % 9 {
                0 => br#"{"id": 1, "name": "cut"#,
                1 => br#"{"id": 2, "name": "x", "amount": 1.0, "tags": [], "ts": "t"}"#,
                2 => br#"{"id": "3", "name": "x", "email": "e", "amount": 1.0, "tags": [], "ts": "t"}"#,
                3 => b"",
                4 => b"{\"id\": 5, \"name\": \"\xff\xfe\", \"email\": \"e\", \"amount\": 1, \"tags\": [], \"ts\": \"t\"}",
                5 => br#"[6, "n", "e", 1.5, [], "t"]"#,
                6 => br#"{"id": 9223372036854775808, "name": "big", "email": "e", "amount": 1.0, "tags": [], "ts": "t"}"#,
                7 => br#"{"id": 8, "name": "x", "email": "e", "amount": 1e400, "tags": [], "ts": "t"}"#,
                _ => br#"{"id": 9, "name": "x", "email": "e", "amount": 1, "tags": ["a"], "ts": "t", "extra": 1}"#,
            };
            out.extend_from_slice(bad);
            out.push(b'\n');
        }
    }
    out
}

#[test]
fn every_value_round_trips_and_every_bad_line_is_rejected_with_its_bytes() {
    let dir = scratch("values");
    let a = tricky_input(3000, 1);
    let b = tricky_input(1500, 2);
    std::fs::write(dir.join("a.jsonl"), &a).unwrap();
    std::fs::write(dir.join("b.jsonl"), &b).unwrap();
    let out = run(
        &dir,
        &[
            "a.jsonl",
            "b.jsonl",
            "--parsers",
            "3",
            "--batch-size",
            "64",
            "--db",
            "out.db",
            "--rejects",
            "rejects.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (rows, rejects) = check_load(
        &dir.join("out.db"),
        &dir.join("rejects.jsonl"),
        &[("a.jsonl", &a), ("b.jsonl", &b)],
    );
    assert_eq!(rows, 4500);
    assert!(rejects > 40, "{rejects}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let total = lines(&a).len() + lines(&b).len();
    assert!(
        stdout.contains(&format!(
            "read = written + rejected: {total} = {rows} + {rejects} ok"
        )),
        "{stdout}"
    );
    // The rejects say why: the id too large for the database is one of them.
    let rejects_text = std::fs::read_to_string(dir.join("rejects.jsonl")).unwrap();
    let big = rejects_text
        .lines()
        .find(|l| l.contains("9223372036854775808"))
        .unwrap();
    assert!(big.contains("out of range"), "{big}");
    let array = rejects_text
        .lines()
        .find(|l| l.contains(r#"[6, \"n\""#))
        .unwrap();
    assert!(array.contains("not a JSON object"), "{array}");
    let utf8 = rejects_text
        .lines()
        .find(|l| l.contains("bytes_escaped"))
        .unwrap();
    assert!(utf8.contains("invalid UTF-8"), "{utf8}");
    // The rejects file is readable like any other output (not a private temporary).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("rejects.jsonl"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }
    // Nothing left in the temporary directory.
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_row_the_database_refuses_is_a_reject_and_the_rest_of_its_batch_is_written() {
    let dir = scratch("refused");
    let mut input = Vec::new();
    for i in 0..2500u64 {
        writeln!(input, "{}", record(i, "n", 1.5, &["t"], "t")).unwrap();
        if i == 1234 {
            writeln!(input, r#"{{"id": 9223372036854775808, "name": "n", "email": "e", "amount": 1.0, "tags": [], "ts": "t"}}"#).unwrap();
        }
    }
    std::fs::write(dir.join("in.jsonl"), &input).unwrap();
    let out = run(
        &dir,
        &["in.jsonl", "--db", "out.db", "--rejects", "r.jsonl"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (rows, rejects) = check_load(
        &dir.join("out.db"),
        &dir.join("r.jsonl"),
        &[("in.jsonl", &input)],
    );
    assert_eq!((rows, rejects), (2500, 1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2501 = 2500 + 1 ok"), "{stdout}");
    assert!(!stdout.contains("drained"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_typo_or_an_unusable_path_leaves_the_previous_load_alone() {
    let dir = scratch("typo");
    let data = tricky_input(500, 3);
    std::fs::write(dir.join("data.jsonl"), &data).unwrap();
    let out = run(
        &dir,
        &["data.jsonl", "--db", "prev.db", "--rejects", "r.jsonl"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = committed(&dir.join("prev.db"));
    assert_eq!(before, 500);
    let other = tricky_input(10, 4);
    std::fs::write(dir.join("other.jsonl"), &other).unwrap();
    for (args, message) in [
        (
            &["data.jsnol", "--db", "prev.db"][..],
            "input data.jsnol: No such file",
        ),
        (
            &[
                "data.jsonl",
                "--db",
                "prev.db",
                "--rejects",
                "/nonexistent/dir/r.jsonl",
            ][..],
            "/nonexistent/dir",
        ),
        (&["other.jsonl", "--db", "prev.db"][..], "--append"),
        (&["other.jsonl", "--db", "prev.db"][..], "--replace"),
        (
            &["data.jsonl", "--db", "/nonexistent/dir/x.db"][..],
            "/nonexistent/dir",
        ),
        (
            &["data.jsonl", "--db", "prev.db", "--rejects", "data.jsonl"][..],
            "is one of the inputs",
        ),
        (
            &["data.jsonl", "--db", "prev.db", "--rejects", "prev.db"][..],
            "is the database",
        ),
    ] {
        let out = run(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert_eq!(
            committed(&dir.join("prev.db")),
            before,
            "{args:?} changed the table"
        );
    }
    assert_eq!(std::fs::read(dir.join("data.jsonl")).unwrap(), data);
    // Asked for explicitly: --append adds, --replace starts anew.
    let out = run(
        &dir,
        &[
            "other.jsonl",
            "--db",
            "prev.db",
            "--append",
            "--rejects",
            "r2.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(committed(&dir.join("prev.db")), 510);
    let out = run(
        &dir,
        &[
            "other.jsonl",
            "--db",
            "prev.db",
            "--replace",
            "--rejects",
            "r3.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_load(
        &dir.join("prev.db"),
        &dir.join("r3.jsonl"),
        &[("other.jsonl", &other)],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_table_this_loader_did_not_fill_is_refused() {
    let dir = scratch("foreign");
    let conn = Connection::open(dir.join("mine.db")).unwrap();
    conn.execute_batch("CREATE TABLE records (x INTEGER); INSERT INTO records VALUES (42);")
        .unwrap();
    drop(conn);
    std::fs::write(dir.join("in.jsonl"), tricky_input(10, 5)).unwrap();
    let out = run(&dir, &["in.jsonl", "--db", "mine.db"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replace"));
    let x: i64 = Connection::open(dir.join("mine.db"))
        .unwrap()
        .query_row("SELECT x FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(x, 42);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_file_or_a_directory_is_an_error_and_nothing_is_written() {
    let dir = scratch("missing");
    std::fs::write(dir.join("a.jsonl"), tricky_input(10, 6)).unwrap();
    std::fs::create_dir(dir.join("adir")).unwrap();
    for (args, message) in [
        (
            &["a.jsonl", "missing.jsonl"][..],
            "input missing.jsonl: No such file",
        ),
        (&["adir"][..], "input adir is a directory"),
    ] {
        let out = run(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{}",
            text(&out)
        );
        assert!(
            !dir.join("etl.db").exists(),
            "{args:?} created the database"
        );
        assert!(
            !dir.join("etl-rejects.jsonl").exists(),
            "{args:?} wrote rejects"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loading_the_same_file_again_is_a_no_op_or_refused() {
    let dir = scratch("twice");
    let data = tricky_input(800, 7);
    std::fs::write(dir.join("d.jsonl"), &data).unwrap();
    let args = ["d.jsonl", "--db", "o.db", "--rejects", "r.jsonl"];
    let first = run(&dir, &args);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    // Again, under another name (the same content is the same input), and with
    // --append: nothing changes.
    std::fs::copy(dir.join("d.jsonl"), dir.join("copy.jsonl")).unwrap();
    for again in [
        &args[..],
        &["copy.jsonl", "--db", "o.db", "--rejects", "rc.jsonl"][..],
        // --append adds new inputs; an input loaded already is not loaded twice.
        &[
            "d.jsonl",
            "--db",
            "o.db",
            "--rejects",
            "r.jsonl",
            "--append",
        ][..],
    ] {
        let out = run(&dir, again);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("already loaded: skipped"),
            "{}",
            text(&out)
        );
        check_load(
            &dir.join("o.db"),
            &dir.join("r.jsonl"),
            &[("d.jsonl", &data)],
        );
    }
    let out = run(
        &dir,
        &[
            "d.jsonl",
            "--db",
            "o.db",
            "--rejects",
            "r.jsonl",
            "--if-loaded",
            "fail",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already loaded"),
        "{}",
        text(&out)
    );
    check_load(
        &dir.join("o.db"),
        &dir.join("r.jsonl"),
        &[("d.jsonl", &data)],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_pipe_streams_and_loading_it_again_is_a_no_op() {
    let dir = scratch("pipe");
    // More than the MiB that identifies a stream, so rows appear while it is open.
    let data = tricky_input(20_000, 8);
    assert!(data.len() > 2 << 20);
    let args = [
        "-",
        "--db",
        "p.db",
        "--rejects",
        "r.jsonl",
        "--batch-timeout-ms",
        "50",
    ];
    let mut child = etl()
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let half = data.len() / 2;
    let cut = half + data[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    stdin.write_all(&data[..cut]).unwrap();
    stdin.flush().unwrap();
    // Rows are committed while the pipe is still open: the input streams.
    let db = dir.join("p.db");
    wait_for(&mut child, "rows from the open pipe", || {
        committed(&db) > 1000
    });
    stdin.write_all(&data[cut..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_load(&db, &dir.join("r.jsonl"), &[("-", &data)]);
    // The same stream again: recognised, read to its end, nothing added.
    let mut child = etl()
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_load(&db, &dir.join("r.jsonl"), &[("-", &data)]);
    // A longer stream with the same beginning is not the same input.
    let mut longer = data.clone();
    longer.extend_from_slice(tricky_input(10, 9).as_slice());
    let mut child = etl()
        .args(args)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&longer).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("differs"),
        "{}",
        text(&out)
    );
    check_load(&db, &dir.join("r.jsonl"), &[("-", &data)]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_and_tiny_inputs_load() {
    let dir = scratch("tiny");
    std::fs::write(dir.join("empty.jsonl"), b"").unwrap();
    let one = record(1, "one", 0.1, &["a"], "t") + "\n";
    std::fs::write(dir.join("one.jsonl"), &one).unwrap();
    let out = run(&dir, &["empty.jsonl", "one.jsonl", "--parsers", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    check_load(
        &dir.join("etl.db"),
        &dir.join("etl-rejects.jsonl"),
        &[("empty.jsonl", b""), ("one.jsonl", one.as_bytes())],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_exits_0_and_bad_flags_name_the_flag() {
    let dir = scratch("flags");
    let out = run(&dir, &["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("130"),
        "{help}"
    );
    for (args, message) in [
        (
            &["--batch-size", "0"][..],
            "--batch-size must be greater than 0, got: 0",
        ),
        (
            &["--parsers", "-2"][..],
            "--parsers must be greater than 0, got: -2",
        ),
        (
            &["--slow-db-ms", "x"][..],
            "--slow-db-ms must be a whole number, got: \"x\"",
        ),
        (&["--db", "--no-progress"][..], "--db needs a path"),
        (
            &["--if-loaded", "maybe"][..],
            "--if-loaded must be skip or fail",
        ),
        (&["--append", "--replace"][..], "exclude each other"),
        (&["--frobnicate"][..], "--frobnicate"),
    ] {
        let out = run(&dir, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(!dir.join("--no-progress").exists());
    assert!(!dir.join("etl.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_is_not_a_panic_and_leaves_no_temporary_file() {
    let dir = scratch("epipe");
    let mut child = etl()
        .args(["--sample", "20000", "--db", "s.db"])
        .current_dir(&dir)
        .env("TMPDIR", dir.join("tmp"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `etl | head -0`: the reading end is closed before anything is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        std::fs::read_dir(dir.join("tmp")).unwrap().count(),
        0,
        "a temporary file was left"
    );
    assert_eq!(
        committed(&dir.join("s.db")) + 16,
        20_000,
        "the sample has 16 bad lines"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Built without the `redis` feature, the distributed modes say how to get them.
#[cfg(not(feature = "redis"))]
#[test]
fn the_distributed_modes_name_the_feature_they_need() {
    let dir = scratch("modes");
    for mode in ["enqueue", "work", "check"] {
        let bin = std::env::var_os("ETL_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_etl").into());
        let out = std::process::Command::new(bin)
            .args([mode, "--stream", "s"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--features redis"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
