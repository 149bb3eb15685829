//! W5: word count of `words.txt` (docs/BENCHMARKS.md). Both sides read the file inside the
//! timed region and count into FxHash maps with borrowed `&str` keys (the same hasher,
//! `stageflow::flow::FxBuildHasher`, on both sides).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use stageflow::flow::{Flow, FxBuildHasher, Options};

use crate::harness::Workload;
use crate::words;

type Counts<'a> = HashMap<&'a str, u64, FxBuildHasher>;

fn check(distinct: usize, total: u64, lines: usize) -> Result<(), String> {
    let want_total = (lines * words::WORDS_PER_LINE) as u64;
    let want_distinct = if lines == words::LINES {
        words::VOCAB
    } else {
        distinct
    };
    if total != want_total || distinct != want_distinct || distinct == 0 {
        return Err(format!(
            "W5: {distinct} distinct words summing to {total}, expected {want_distinct} and {want_total}"
        ));
    }
    Ok(())
}

fn read(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).expect("read words.txt");
    if lines == words::LINES {
        return text;
    }
    // COMPARE_EVENTS: the first lines holding about that many words.
    let end = text
        .match_indices('\n')
        .nth(lines - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or(text.len());
    text[..end].to_string()
}

pub fn workload(events: Option<u64>) -> Workload {
    let lines = events
        .map(|e| ((e as usize).div_ceil(words::WORDS_PER_LINE)).clamp(1, words::LINES))
        .unwrap_or(words::LINES);
    // Generated and verified (SHA-256) once, here, outside the timed runs.
    let path: PathBuf = words::path();
    let p2 = path.clone();
    Workload {
        id: "W5".into(),
        events: (lines * words::WORDS_PER_LINE) as u64,
        baseline: "rayon par_chunks fold/reduce, FxHash",
        stageflow: Box::new(move || {
            let text = read(&path, lines);
            let counts: Vec<(&str, u64)> = Flow::from_iter(text.lines())
                .flat_map(|line: &str| line.split(' '))
                .partition(Options::new())
                .reduce_mut(Counts::default, |m, w| *m.entry(w).or_insert(0) += 1)
                .emit_events()
                .try_collect()
                .map_err(|e| e.to_string())?;
            check(counts.len(), counts.iter().map(|c| c.1).sum(), lines)
        }),
        hand_written: Box::new(move || {
            let text = read(&p2, lines);
            let all: Vec<&str> = text.lines().collect();
            let counts = all
                .par_chunks(1000)
                .fold(Counts::default, |mut m, chunk| {
                    for line in chunk {
                        for w in line.split(' ') {
                            *m.entry(w).or_insert(0) += 1;
                        }
                    }
                    m
                })
                .reduce(Counts::default, |mut a, b| {
                    if a.len() < b.len() {
                        return b.into_iter().fold(a, |mut acc, (k, v)| {
                            *acc.entry(k).or_insert(0) += v;
                            acc
                        });
                    }
                    for (k, v) in b {
                        *a.entry(k).or_insert(0) += v;
                    }
                    a
                });
            check(counts.len(), counts.values().sum(), lines)
        }),
    }
}
