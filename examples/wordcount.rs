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
use std::time::Instant;

use stageflow::flow::{Flow, FxBuildHasher, Options};

const SAMPLE: &str = "\
the flow reads the lines and the stages split the lines into words
each word goes to the stage that owns it and the stage counts it
a stage owns its counts so no lock is taken and no count is lost
when the input ends every stage emits its counts and the flow merges them
the words that come most often are printed first with their counts
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    let texts: Vec<String> = if files.is_empty() {
        vec![SAMPLE.to_string()]
    } else {
        files
            .iter()
            .map(std::fs::read_to_string)
            .collect::<Result<_, _>>()?
    };
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
