//! Runs `examples/pipeline.rs` as a real process (built by
//! `support::examples::example`) and checks what it reports.

use std::process::Command;

use crate::support::examples::example;

#[test]
fn pipeline_example_sums_and_shuts_down_in_order() {
    let out = Command::new(example("pipeline"))
        .arg("100000")
        .output()
        .expect("run examples/pipeline (cargo test builds it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pipeline failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "numbers  exited: normal",
        "square-0 exited: normal",
        "square-1 exited: normal",
        "total    exited: normal",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // 100 000 - 33 333 numbers are not multiples of 3.
    assert!(
        stdout.contains("squares of the 66667 numbers in 1..=100000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("checked against a plain loop: ok"),
        "{stdout}"
    );
}

#[test]
fn pipeline_example_rejects_a_bad_argument() {
    let out = Command::new(example("pipeline"))
        .arg("lots")
        .output()
        .expect("run examples/pipeline");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A message, not the debug dump of an error value.
    assert!(
        stderr.contains("pipeline: expected N (a whole number of events), got: \"lots\""),
        "{stderr}"
    );
}

/// Small and empty inputs: the topology wires both squarers before any number flows,
/// so a source that is done after its first demand cannot leave one of them behind.
#[test]
fn pipeline_example_handles_empty_and_tiny_inputs() {
    for (n, count) in [("0", 0), ("1", 1), ("2", 2), ("10", 7)] {
        let out = Command::new(example("pipeline"))
            .arg(n)
            .output()
            .expect("run examples/pipeline");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pipeline {n} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = format!("squares of the {count} numbers in 1..={n}");
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
        assert!(stdout.contains("total    exited: normal"), "{stdout}");
    }
}
