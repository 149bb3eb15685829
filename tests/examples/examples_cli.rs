//! Every example answers `--help` with its usage and exit status 0, and reports bad
//! arguments and unreadable files with a message, not a debug dump.

use crate::support::examples;

use std::process::Command;

#[test]
fn help_exits_0_for_every_example() {
    for name in ["pipeline", "flow_memory", "wordcount", "rate_limited_api"] {
        for flag in ["--help", "-h"] {
            let out = Command::new(examples::example(name))
                .arg(flag)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}: {stdout}");
            assert!(
                stdout.starts_with(&format!("usage: {name}")),
                "{name} {flag}: {stdout}"
            );
        }
    }
}

#[test]
fn bad_arguments_and_missing_files_are_clear_errors() {
    for (name, args, message) in [
        (
            "wordcount",
            &["/nonexistent.txt"][..],
            "wordcount: /nonexistent.txt: No such file",
        ),
        (
            "pipeline",
            &["ten"][..],
            "expected N (a whole number of events), got: \"ten\"",
        ),
        (
            "flow_memory",
            &["10", "sideways"][..],
            "mode must be windowed or mapper",
        ),
        ("flow_memory", &["--frobnicate"][..], "--frobnicate"),
        ("rate_limited_api", &["--items"][..], "--items"),
    ] {
        let out = Command::new(examples::example(name))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{name} {args:?}: {stderr}");
        assert!(stderr.contains(message), "{name} {args:?}: {stderr}");
        assert!(
            !stderr.contains("Os {") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}
