//! Counts words with Flow and prints the 20 most frequent and the time taken.
//!
//! ```text
//! cargo run --release --example wordcount [FILES...]
//! ```
//!
//! With no file, a built-in sample text is counted. Each file is one source of the
//! flow; lines are split on whitespace, partitioned by word over the stages, counted
//! per stage in an FxHash map with words borrowed from the text (no copy per word),
//! and the stages' top 20 are merged by `take_sort_by`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Instant;

use stageflow::flow::{Flow, FxBuildHasher, Options};

const SAMPLE: &str = "\
the flow reads the lines and the stages split the lines into words
each word goes to the stage that owns it and the stage counts it
a stage owns its counts so no lock is taken and no count is lost
when the input ends every stage emits its counts and the flow merges them
the words that come most often are printed first with their counts
";

const USAGE: &str = "usage: wordcount [FILE ...]

Counts the words of the files (or of a built-in sample text) and prints the 20 most
frequent.";

/// The files, or `None` when help was asked for.
fn parse_args() -> Result<Option<Vec<String>>, String> {
    use lexopt::prelude::*;
    let mut files = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) => files.push(v.to_string_lossy().into_owned()),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Some(files))
}

fn main() -> ExitCode {
    // Stages log through the `log` facade: show their warnings and errors on stderr
    // unless RUST_LOG says otherwise (env_logger alone would show only errors).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let files = match parse_args() {
        Ok(Some(files)) => files,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wordcount: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut texts = Vec::new();
    for file in &files {
        match std::fs::read_to_string(file) {
            Ok(text) => texts.push(text),
            Err(e) => {
                eprintln!("wordcount: {file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match count(&files, texts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wordcount: {e}");
            ExitCode::from(1)
        }
    }
}

fn count(files: &[String], mut texts: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    if texts.is_empty() {
        texts.push(SAMPLE.to_string());
    }
    let top: Vec<Vec<(&str, u64)>> = Flow::from_iters(texts.iter().map(|t| t.lines()))
        .flat_map(|line: &str| line.split_whitespace())
        .partition(Options::new())
        .reduce_mut(
            HashMap::<&str, u64, FxBuildHasher>::default,
            |counts, word| *counts.entry(word).or_insert(0) += 1,
        )
        .take_sort_by(20, |a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)))
        .try_collect()?;
    let elapsed = start.elapsed();
    let source = if files.is_empty() {
        "built-in sample".to_string()
    } else {
        files.join(", ")
    };
    println!("top 20 words of {source}:");
    for (word, count) in top.into_iter().flatten() {
        println!("{count:>10}  {word}");
    }
    if elapsed.as_secs_f64() < 1.0 {
        println!("time: {:.1} ms", elapsed.as_secs_f64() * 1e3);
    } else {
        println!("time: {:.3} s", elapsed.as_secs_f64());
    }
    Ok(())
}
