//! The main job's first build compiles only what the ETL uses: the crates that the
//! library's tests, benches and other examples need (criterion, proptest, the HTTP
//! crates, the progress-bar crate) are not in its build graph.

use std::process::Command;

#[test]
fn the_etl_builds_without_the_librarys_dev_dependencies() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "stageflow-etl",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains("rusqlite") && crates.contains("stageflow"),
        "{crates:?}"
    );
    for unwanted in ["criterion", "proptest", "ureq", "tiny_http", "indicatif"] {
        assert!(
            !crates.contains(unwanted),
            "{unwanted} is built for the ETL: {crates:?}"
        );
    }
}
