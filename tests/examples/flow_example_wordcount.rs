//! Runs `examples/wordcount.rs` as a real process (built by
//! `support::examples::example`) and checks its output: on the built-in sample, and on a file
//! whose counts are known.

use std::process::Command;

use crate::support::examples::example;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(example("wordcount"))
        .args(args)
        .output()
        .expect("run examples/wordcount");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn wordcount_counts_the_built_in_sample() {
    let (ok, stdout) = run(&[]);
    assert!(ok, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "top 20 words of built-in sample:");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["9", "the"]
    );
    assert_eq!(lines.len(), 22, "{stdout}");
    assert!(lines[21].starts_with("time: "));
}

#[test]
fn wordcount_counts_files() {
    let dir = std::env::temp_dir().join(format!("stageflow-wc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.txt"), dir.join("b.txt"));
    std::fs::write(&a, "x y z\nx y\n").unwrap();
    std::fs::write(&b, "x\n").unwrap();
    let (ok, stdout) = run(&[a.to_str().unwrap(), b.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(ok, "{stdout}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .take(3)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, [vec!["3", "x"], vec!["2", "y"], vec!["1", "z"]]);
    let (ok, _) = run(&["/nonexistent/file.txt"]);
    assert!(!ok);
}
