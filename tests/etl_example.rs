//! Runs `examples/etl.rs` as a real process on a small generated input with bad
//! lines mixed in, and checks the database rows, the rejects file and the summary.

#[path = "examples_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use rusqlite::Connection;

/// Writes `n` good records, with bad lines at known places. Returns the expected
/// rejects as (line number, error fragment).
fn write_input(path: &std::path::Path, n: u64, first_id: u64) -> Vec<(u64, &'static str)> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut bad = Vec::new();
    let mut line = 0;
    for i in 0..n {
        let id = first_id + i;
        line += 1;
        writeln!(
            f,
            r#"{{"id": {id}, "name": "user{id}", "email": "u{id}@example.com", "amount": {}.25, "tags": ["a", "b"], "ts": "2024-05-01T00:00:00Z"}}"#,
            id % 100
        )
        .unwrap();
        // A bad line of each kind every 250 good ones.
        if i % 250 == 0 {
            let kinds: [(&[u8], &str); 5] = [
                (br#"{"id": 1, "name": "cut"#, "EOF while parsing"),
                (br#"{"id": 2, "name": "x", "amount": 1.0, "tags": [], "ts": "t"}"#, "missing field `email`"),
                (br#"{"id": "3", "name": "x", "email": "e", "amount": 1.0, "tags": [], "ts": "t"}"#, "invalid type"),
                (b"", "EOF while parsing"),
                (b"\xff\xfe not utf-8", "read error"),
            ];
            let (text, error) = kinds[(i / 250) as usize % kinds.len()];
            f.write_all(text).unwrap();
            f.write_all(b"\n").unwrap();
            line += 1;
            bad.push((line, error));
        }
    }
    bad
}

#[test]
fn etl_loads_good_lines_and_rejects_bad_ones_exactly() {
    let dir = common::scratch("etl");
    let a = dir.join("a.jsonl");
    let b = dir.join("b.jsonl");
    let bad_a = write_input(&a, 2000, 0);
    let bad_b = write_input(&b, 1500, 100_000);
    let missing = dir.join("missing.jsonl");
    let db = dir.join("out.db");
    let rejects = dir.join("rejects.jsonl");

    let out = Command::new(common::example("etl"))
        .arg(&a)
        .arg(&missing)
        .arg(&b)
        .args(["--no-progress", "--parsers", "3", "--batch-size", "64"])
        .arg("--db")
        .arg(&db)
        .arg("--rejects")
        .arg(&rejects)
        .output()
        .expect("etl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "etl failed: {}\n{stdout}\n{stderr}",
        out.status
    );

    // Every good record is a row, once, with its values and origin.
    let conn = Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 3500);
    let distinct: i64 = conn
        .query_row("SELECT COUNT(DISTINCT id) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(distinct, 3500);
    let (name, email, amount, tags, source): (String, String, f64, String, String) = conn
        .query_row(
            "SELECT name, email, amount, tags, source FROM records WHERE id = 100042",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (name.as_str(), email.as_str(), amount, tags.as_str()),
        ("user100042", "u100042@example.com", 42.25, "a,b")
    );
    assert!(source.ends_with("b.jsonl"), "{source}");

    // Every bad line is in the rejects file with its file, line and error.
    let mut got: BTreeMap<(String, u64), String> = BTreeMap::new();
    for line in std::fs::read_to_string(&rejects).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = v["file"].as_str().unwrap().to_string();
        let number = v["line"].as_u64().unwrap();
        let error = v["error"].as_str().unwrap().to_string();
        assert!(
            got.insert((file, number), error).is_none(),
            "duplicate reject {line}"
        );
    }
    let mut expected = Vec::new();
    for (path, bad) in [(&a, &bad_a), (&b, &bad_b)] {
        for &(line, error) in bad {
            expected.push((path.display().to_string(), line, error));
        }
    }
    expected.push((missing.display().to_string(), 0, "No such file"));
    assert_eq!(got.len(), expected.len(), "rejects: {got:#?}");
    for (file, line, error) in expected {
        let actual = got
            .get(&(file.clone(), line))
            .unwrap_or_else(|| panic!("no reject for {file}:{line}"));
        assert!(
            actual.contains(error),
            "{file}:{line}: {actual:?} should mention {error:?}"
        );
    }

    // The summary balances, exactly.
    let total = 3500 + got.len();
    let check = format!(
        "read = written + rejected: {total} = 3500 + {} ok",
        got.len()
    );
    assert!(stdout.contains(&check), "{stdout}");
    assert!(stdout.contains("peak RSS"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn etl_rejects_bad_flags_clearly() {
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
    ] {
        let out = Command::new(common::example("etl"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_drains_everything_already_read() {
    let dir = common::scratch("etl-drain");
    let input = dir.join("in.jsonl");
    write_input(&input, 40_000, 0);
    let db = dir.join("out.db");
    // A slow database (50 ms per batch of 100): the whole file would take 20 s. The
    // interrupt comes once the pipeline runs; demand bounds what is read ahead (a
    // few thousand lines), so the drain ends long before the input does.
    let mut child = Command::new(common::example("etl"))
        .arg(&input)
        .args([
            "--no-progress",
            "--parsers",
            "1",
            "--batch-size",
            "100",
            "--slow-db-ms",
            "50",
        ])
        .arg("--db")
        .arg(&db)
        .arg("--rejects")
        .arg(dir.join("rejects.jsonl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "etl ended before it started"
        );
        if line.starts_with("pipeline started") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", out.status);
    assert!(stdout.contains("drained after Ctrl-C"), "{stdout}");
    // Parse "read = written + rejected: R = W + J ok".
    let summary = stdout
        .lines()
        .find(|l| l.contains("read = written + rejected"))
        .expect("summary line");
    assert!(summary.ends_with(" ok"), "{summary}");
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    let (read, written) = (numbers[0], numbers[1]);
    assert!(
        read > 0 && read < 40_000,
        "the drain stopped reading: {summary}"
    );
    let conn = Connection::open(&db).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows as u64, written, "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}
