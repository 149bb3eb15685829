//! `etl check`: what was enqueued against what the workers committed, across all of
//! them: every enqueued line must be a row, a reject or a dead letter, and nothing
//! may be left pending or unread.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::dist::store::Tables;
use crate::dist::{connect, dead_letter_key, groups, progress_key, redis_error, totals, Sink};
use crate::EtlError;

/// A stream entry as `XRANGE` returns it: its id and its fields.
type RawEntry = (String, Vec<(String, Vec<u8>)>);

/// A check to run.
#[derive(Clone, Debug)]
pub struct CheckConfig {
    /// The Redis URL.
    pub redis: String,
    /// The stream key.
    pub stream: String,
    /// The workers' consumer group.
    pub group: String,
    /// Where the workers wrote.
    pub sink: Sink,
    /// The table (rejects in `<table>_rejects`, counts in `<table>_workers`).
    pub table: String,
    /// The dead-letter stream (default `<stream>:dead`).
    pub dead_letters: String,
}

impl CheckConfig {
    /// A check with the default table and dead-letter stream.
    pub fn new(
        redis: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
        sink: Sink,
    ) -> Self {
        let stream = stream.into();
        CheckConfig {
            redis: redis.into(),
            dead_letters: dead_letter_key(&stream),
            stream,
            group: group.into(),
            sink,
            table: super::DEFAULT_TABLE.into(),
        }
    }
}

/// One input as the check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedInput {
    /// Its content identity.
    pub input: String,
    /// Its name when it was enqueued.
    pub name: String,
    /// Lines enqueued.
    pub enqueued: u64,
    /// Its length in lines, once it is enqueued whole.
    pub lines: Option<u64>,
    /// Rows in the table.
    pub rows: u64,
    /// Rejects in the rejects table.
    pub rejects: u64,
    /// Distinct lines of it in the dead-letter stream.
    pub dead: u64,
}

/// What `etl check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// The inputs enqueued into the stream.
    pub inputs: Vec<CheckedInput>,
    /// Per worker (consumer name): rows and rejects it inserted.
    pub workers: Vec<(String, u64, u64)>,
    /// Entries in the dead-letter stream that are no ETL line (no `input` and
    /// `line` fields): poison someone else put into the stream.
    pub dead_foreign: u64,
    /// Entries the group holds delivered but not acknowledged.
    pub pending: u64,
    /// Entries the group has not read yet (`None`: Redis cannot tell, or the group
    /// does not exist).
    pub lag: Option<u64>,
    /// The table name.
    pub table: String,
}

impl CheckReport {
    /// Lines enqueued, in all.
    pub fn enqueued(&self) -> u64 {
        self.inputs.iter().map(|i| i.enqueued).sum()
    }
    /// Rows, in all.
    pub fn rows(&self) -> u64 {
        self.inputs.iter().map(|i| i.rows).sum()
    }
    /// Rejects, in all.
    pub fn rejects(&self) -> u64 {
        self.inputs.iter().map(|i| i.rejects).sum()
    }
    /// Dead-lettered lines, in all.
    pub fn dead(&self) -> u64 {
        self.inputs.iter().map(|i| i.dead).sum()
    }

    /// Every enqueued line is exactly one row, reject or dead letter, input by input,
    /// and the workers' counts add up to the table's.
    pub fn balanced(&self) -> bool {
        self.inputs
            .iter()
            .all(|i| i.enqueued == i.rows + i.rejects + i.dead)
            && self.workers.iter().map(|w| w.1).sum::<u64>() == self.rows()
            && self.workers.iter().map(|w| w.2).sum::<u64>() == self.rejects()
    }

    /// Balanced, every input enqueued whole, nothing pending, nothing unread.
    pub fn is_done(&self) -> bool {
        self.balanced()
            && self.pending == 0
            && self.lag == Some(0)
            && self.inputs.iter().all(|i| i.lines == Some(i.enqueued))
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in &self.inputs {
            let whole = match i.lines {
                Some(n) => format!("{n} lines, enqueued whole"),
                None => format!("{} lines enqueued so far", i.enqueued),
            };
            writeln!(
                f,
                "input    {} ({whole}): {} rows + {} rejects + {} dead letters {}",
                i.name,
                i.rows,
                i.rejects,
                i.dead,
                if i.enqueued == i.rows + i.rejects + i.dead {
                    "ok"
                } else {
                    "MISMATCH"
                }
            )?;
        }
        for (consumer, rows, rejects) in &self.workers {
            writeln!(f, "worker   {consumer}: {rows} rows, {rejects} rejects")?;
        }
        let (wr, wj) = self
            .workers
            .iter()
            .fold((0, 0), |(r, j), w| (r + w.1, j + w.2));
        writeln!(
            f,
            "workers  {} in all: {wr} rows + {wj} rejects (the tables hold {} + {})",
            self.workers.len(),
            self.rows(),
            self.rejects()
        )?;
        writeln!(
            f,
            "dead     {} lines of the inputs, {} other entries (not ETL lines)",
            self.dead(),
            self.dead_foreign
        )?;
        let lag = self.lag.map_or("unknown".into(), |n| n.to_string());
        writeln!(f, "pending  {} entries; unread {lag}", self.pending)?;
        write!(
            f,
            "check    enqueued = written + rejected + dead-lettered: {} = {} + {} + {} {}",
            self.enqueued(),
            self.rows(),
            self.rejects(),
            self.dead(),
            if self.balanced() { "ok" } else { "MISMATCH" }
        )
    }
}

/// Reads the stream's bookkeeping, its dead letters and the tables.
///
/// ```no_run
/// use stageflow_etl::dist::check::{check, CheckConfig};
/// use stageflow_etl::dist::Sink;
/// let report = check(&CheckConfig::new(
///     "redis://127.0.0.1:6379/", "load", "etl", Sink::Sqlite("etl.db".into()),
/// ))?;
/// println!("{report}");
/// assert!(report.is_done());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check(config: &CheckConfig) -> Result<CheckReport, EtlError> {
    super::validate_table(&config.table).map_err(EtlError::Usage)?;
    let url = &config.redis;
    let mut con = connect(url)?;
    let progress: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(progress_key(&config.stream))
        .query(&mut con)
        .map_err(|e| redis_error(url, "HGETALL", e))?;
    let mut inputs: Vec<CheckedInput> = Vec::new();
    for (field, value) in &progress {
        if field.ends_with(":name") || field.ends_with(":lines") {
            continue;
        }
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                EtlError::Failed(format!(
                    "{}: field {field} holds {v:?}, not a count",
                    progress_key(&config.stream)
                ))
            })
        };
        inputs.push(CheckedInput {
            input: field.clone(),
            name: progress
                .get(&format!("{field}:name"))
                .cloned()
                .unwrap_or_else(|| field.clone()),
            enqueued: number(value)?,
            lines: progress
                .get(&format!("{field}:lines"))
                .map(|v| number(v))
                .transpose()?,
            rows: 0,
            rejects: 0,
            dead: 0,
        });
    }
    // The dead letters, read in pages.
    let mut dead: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut dead_foreign = 0;
    let mut from = "-".to_string();
    loop {
        let page: Vec<RawEntry> = redis::cmd("XRANGE")
            .arg(&config.dead_letters)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .map_err(|e| redis_error(url, &format!("XRANGE {}", config.dead_letters), e))?;
        let Some(last) = page.last() else { break };
        from = format!("({}", last.0);
        for (_, fields) in &page {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            match (field("input"), field("line").and_then(|l| l.parse().ok())) {
                (Some(input), Some(line)) if progress.contains_key(&input) => {
                    dead.entry(input).or_default().insert(line);
                }
                _ => dead_foreign += 1,
            }
        }
    }
    let mut group = groups(&mut con, url, &config.stream)?
        .into_iter()
        .find(|g| g.name == config.group);
    if let Some(g) = group.as_mut().filter(|g| g.lag.is_none()) {
        // Redis cannot tell the lag after deletions in the middle of the stream: the
        // group has none when no entry follows the last one it was given.
        let next: Vec<RawEntry> = redis::cmd("XRANGE")
            .arg(&config.stream)
            .arg(format!("({}", g.last_delivered))
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query(&mut con)
            .map_err(|e| redis_error(url, &format!("XRANGE {}", config.stream), e))?;
        if next.is_empty() {
            g.lag = Some(0);
        }
    }
    let ids: Vec<String> = inputs.iter().map(|i| i.input.clone()).collect();
    let t = totals(
        &config.sink,
        &Tables::new(&config.table),
        &config.stream,
        &ids,
    )?;
    for (i, (_, rows, rejects)) in inputs.iter_mut().zip(&t.per_input) {
        i.rows = *rows;
        i.rejects = *rejects;
        i.dead = dead.get(&i.input).map_or(0, |d| d.len() as u64);
    }
    Ok(CheckReport {
        inputs,
        workers: t.workers,
        dead_foreign,
        pending: group.as_ref().map_or(0, |g| g.pending),
        lag: group.and_then(|g| g.lag),
        table: config.table.clone(),
    })
}
