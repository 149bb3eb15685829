//! `etl enqueue`: the lines of the inputs → entries of a Redis stream, exactly once,
//! bounded by what the workers have not read yet.

use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dist::{connect, ensure_group, groups, progress_key, redis_error};
use crate::input::{self, Opened};
use crate::{Counters, EtlError, InputSpec, Interrupt};

/// An enqueue to run.
#[derive(Debug)]
pub struct EnqueueConfig {
    /// The Redis URL.
    pub redis: String,
    /// The stream key.
    pub stream: String,
    /// The consumer group the workers will use: created at the stream's start if
    /// missing, and whose lag bounds the enqueue.
    pub group: String,
    /// The inputs (regular files, or streams short enough to be identified whole).
    pub inputs: Vec<InputSpec>,
    /// Entries per `MULTI`/`EXEC` (default 1 000).
    pub batch: usize,
    /// Wait while the group has more than this many entries not yet delivered
    /// (default 100 000).
    pub max_lag: u64,
    /// Drain requests (signals): the batch under way is finished, then the enqueue
    /// stops (run it again to resume).
    pub interrupt: Arc<Interrupt>,
    /// Live counters (`read`: lines enqueued by this run; `skipped`: lines an
    /// earlier run enqueued).
    pub counters: Arc<Counters>,
}

impl EnqueueConfig {
    /// An enqueue of `inputs` into `stream` at `redis` for group `group`, with the
    /// defaults.
    pub fn new(
        redis: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
        inputs: Vec<InputSpec>,
    ) -> Self {
        EnqueueConfig {
            redis: redis.into(),
            stream: stream.into(),
            group: group.into(),
            inputs,
            batch: 1000,
            max_lag: 100_000,
            interrupt: Arc::default(),
            counters: Arc::default(),
        }
    }
}

/// What happened to one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnqueuedInput {
    /// Its name as given.
    pub name: String,
    /// Its content identity (the `input` field of its entries).
    pub input: String,
    /// Lines an earlier run had enqueued.
    pub before: u64,
    /// Lines this run enqueued.
    pub added: u64,
    /// Its length in lines, once it is enqueued whole.
    pub lines: Option<u64>,
}

/// The result of an enqueue that ran (completely or interrupted).
#[derive(Debug)]
pub struct EnqueueOutcome {
    /// Every input, in order.
    pub inputs: Vec<EnqueuedInput>,
    /// A signal stopped it: run the same command again to resume.
    pub interrupted: bool,
    /// Time spent waiting for the workers (the group's lag above the cap).
    pub waited: Duration,
    /// Entries acknowledged by every group and trimmed from the stream.
    pub trimmed: u64,
    /// Time the enqueue took.
    pub elapsed: Duration,
}

impl EnqueueOutcome {
    /// Lines this run enqueued.
    pub fn added(&self) -> u64 {
        self.inputs.iter().map(|i| i.added).sum()
    }

    /// Every input is enqueued whole.
    pub fn is_complete(&self) -> bool {
        !self.interrupted && self.inputs.iter().all(|i| i.lines.is_some())
    }
}

/// One line read for the stream.
struct Line {
    number: u64,
    bytes: Vec<u8>,
}

/// Reads the next line (without its `\n` or `\r\n`); `None` at the end.
fn next_line(
    reader: &mut impl BufRead,
    name: &str,
    number: u64,
) -> Result<Option<Vec<u8>>, EtlError> {
    let mut bytes = Vec::with_capacity(160);
    loop {
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(EtlError::Input(format!(
                    "input {name}: read error after line {number}: {e}"
                )))
            }
        }
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Ok(Some(bytes))
}

/// The stream's state as the enqueue sees it between batches.
struct Stream<'a> {
    con: redis::Connection,
    config: &'a EnqueueConfig,
    waited: Duration,
    trimmed: u64,
    batches: u64,
}

impl Stream<'_> {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> EtlError {
        redis_error(&self.config.redis, what, e)
    }

    /// Entries of the group not delivered yet: its lag, or the stream's length when
    /// Redis cannot tell the lag (an upper bound: acknowledged entries are trimmed).
    fn lag(&mut self) -> Result<u64, EtlError> {
        let all = groups(&mut self.con, &self.config.redis, &self.config.stream)?;
        let group = all.iter().find(|g| g.name == self.config.group);
        match group.and_then(|g| g.lag) {
            Some(lag) => Ok(lag),
            None => redis::cmd("XLEN")
                .arg(&self.config.stream)
                .query(&mut self.con)
                .map_err(|e| self.err("XLEN", e)),
        }
    }

    /// Waits until the group's lag is at most `max_lag` (or a signal came).
    fn wait_for_workers(&mut self) -> Result<(), EtlError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        let mut said = false;
        while self.lag()? > self.config.max_lag && !self.config.interrupt.is_requested() {
            if !said {
                log::info!(
                    "group {} is more than {} entries behind: waiting for the workers",
                    self.config.group,
                    self.config.max_lag
                );
                said = true;
            }
            // Trimming what the workers acknowledged meanwhile keeps Redis's memory
            // bounded while it waits.
            self.trim()?;
            // Polling Redis: nothing to wait on in between. Up to half a second, so
            // a long wait costs little and a short one adds little.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        self.waited += started.elapsed();
        Ok(())
    }

    /// Trims the entries every group of the stream has acknowledged: those before
    /// each group's oldest pending entry, or before its next undelivered one. An
    /// entry some consumer still holds is never trimmed.
    fn trim(&mut self) -> Result<(), EtlError> {
        let all = groups(&mut self.con, &self.config.redis, &self.config.stream)?;
        let mut min: Option<(u64, u64)> = None;
        for g in &all {
            let first = if g.pending > 0 {
                // XPENDING's summary: [count, smallest id, greatest id, consumers].
                let summary: (u64, Option<String>, Option<String>, redis::Value) =
                    redis::cmd("XPENDING")
                        .arg(&self.config.stream)
                        .arg(&g.name)
                        .query(&mut self.con)
                        .map_err(|e| self.err("XPENDING", e))?;
                summary.1.as_deref().and_then(parse_id)
            } else {
                // Everything delivered is acknowledged: keep from the next entry.
                parse_id(&g.last_delivered).map(|(ms, seq)| match seq.checked_add(1) {
                    Some(seq) => (ms, seq),
                    None => (ms + 1, 0),
                })
            };
            let Some(first) = first else {
                // A group this enqueue cannot read: trim nothing.
                return Ok(());
            };
            min = Some(min.map_or(first, |m| m.min(first)));
        }
        let Some((ms, seq)) = min else {
            return Ok(());
        };
        // `~`: Redis removes whole nodes of the stream only, never more than asked.
        let n: u64 = redis::cmd("XTRIM")
            .arg(&self.config.stream)
            .arg("MINID")
            .arg("~")
            .arg(format!("{ms}-{seq}"))
            .query(&mut self.con)
            .map_err(|e| self.err("XTRIM", e))?;
        self.trimmed += n;
        Ok(())
    }

    /// Adds `lines` of `input` and its new progress in one `MULTI`/`EXEC`.
    fn add(
        &mut self,
        input: &EnqueuedInput,
        lines: &[Line],
        done: u64,
        total: Option<u64>,
    ) -> Result<(), EtlError> {
        let key = progress_key(&self.config.stream);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for line in lines {
            pipe.cmd("XADD")
                .arg(&self.config.stream)
                .arg("*")
                .arg("input")
                .arg(&input.input)
                .arg("name")
                .arg(&input.name)
                .arg("line")
                .arg(line.number)
                .arg("data")
                .arg(&line.bytes[..])
                .ignore();
        }
        pipe.cmd("HSET")
            .arg(&key)
            .arg(&input.input)
            .arg(done)
            .ignore();
        if let Some(total) = total {
            pipe.cmd("HSET")
                .arg(&key)
                .arg(format!("{}:lines", input.input))
                .arg(total)
                .ignore();
        }
        pipe.query::<()>(&mut self.con)
            .map_err(|e| self.err(&format!("adding lines of {}", input.name), e))?;
        self.batches += 1;
        // Every few batches, not every one: trimming costs a few round trips.
        if self.batches % 16 == 0 {
            self.trim()?;
        }
        Ok(())
    }
}

fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Runs an enqueue. The inputs are opened and identified before anything is added;
/// an input enqueued completely before is skipped, one enqueued in part resumes
/// after its last committed batch.
///
/// ```no_run
/// use stageflow_etl::dist::enqueue::{enqueue, EnqueueConfig};
/// use stageflow_etl::InputSpec;
/// let config = EnqueueConfig::new(
///     "redis://127.0.0.1:6379/", "load", "etl",
///     vec![InputSpec::Path("in.jsonl".into())],
/// );
/// let outcome = enqueue(config)?;
/// assert!(outcome.is_complete());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn enqueue(mut config: EnqueueConfig) -> Result<EnqueueOutcome, EtlError> {
    let started = Instant::now();
    if config.batch == 0 {
        return Err(EtlError::Usage(
            "--batch-size must be greater than 0, got: 0".into(),
        ));
    }
    let mut inputs = Vec::new();
    let mut opened: Vec<Opened> = Vec::new();
    for spec in std::mem::take(&mut config.inputs) {
        let o = input::open(spec).map_err(EtlError::Usage)?;
        if !o.whole {
            return Err(EtlError::Usage(format!(
                "input {} is a stream longer than 1 MiB: save it to a file first \
                 (an enqueue must be able to read its input again to resume)",
                o.name
            )));
        }
        if let Some(b) = opened.iter().find(|b| b.identity == o.identity) {
            return Err(EtlError::Usage(format!(
                "inputs {} and {} have the same content: give it once",
                b.name, o.name
            )));
        }
        opened.push(o);
    }
    let mut con = connect(&config.redis)?;
    ensure_group(&mut con, &config.redis, &config.stream, &config.group)?;
    let mut redis = Stream {
        con,
        config: &config,
        waited: Duration::ZERO,
        trimmed: 0,
        batches: 0,
    };
    let key = progress_key(&config.stream);
    // Every input is registered before any is added: a worker run with
    // `--until-done` sees the load unfinished until the last of them is whole.
    let mut register = redis::pipe();
    register.atomic();
    for o in &opened {
        register
            .cmd("HSETNX")
            .arg(&key)
            .arg(&o.identity)
            .arg(0)
            .ignore()
            .cmd("HSETNX")
            .arg(&key)
            .arg(format!("{}:name", o.identity))
            .arg(&o.name)
            .ignore();
    }
    register
        .query::<()>(&mut redis.con)
        .map_err(|e| redis.err(&format!("registering the inputs in {key}"), e))?;
    for o in &mut opened {
        let (done, total): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(&key)
            .arg(&o.identity)
            .arg(format!("{}:lines", o.identity))
            .query(&mut redis.con)
            .map_err(|e| redis.err(&format!("HMGET {key}"), e))?;
        let mut state = EnqueuedInput {
            name: o.name.clone(),
            input: o.identity.clone(),
            before: done.unwrap_or(0),
            added: 0,
            lines: total,
        };
        if state.lines.is_some() || config.interrupt.is_requested() {
            config
                .counters
                .skipped
                .fetch_add(state.before, Ordering::Relaxed);
            inputs.push(state);
            continue;
        }
        // Skip what an earlier run committed.
        let mut number = 0;
        while number < state.before {
            match next_line(&mut o.reader, &o.name, number)? {
                Some(_) => number += 1,
                None => {
                    return Err(EtlError::Input(format!(
                        "input {} has {number} lines, but {} of it were enqueued before: \
                         it is not the input enqueued then",
                        o.name, state.before
                    )))
                }
            }
        }
        config.counters.skipped.fetch_add(number, Ordering::Relaxed);
        let mut lines = Vec::with_capacity(config.batch);
        loop {
            redis.wait_for_workers()?;
            if config.interrupt.is_requested() {
                break;
            }
            let mut end = false;
            while lines.len() < config.batch {
                match next_line(&mut o.reader, &o.name, number)? {
                    Some(bytes) => {
                        number += 1;
                        config
                            .counters
                            .bytes
                            .fetch_add(bytes.len() as u64 + 1, Ordering::Relaxed);
                        lines.push(Line { number, bytes });
                    }
                    None => {
                        end = true;
                        break;
                    }
                }
            }
            let total = end.then_some(number);
            redis.add(&state, &lines, number, total)?;
            state.added += lines.len() as u64;
            config
                .counters
                .read
                .fetch_add(lines.len() as u64, Ordering::Relaxed);
            lines.clear();
            if end {
                state.lines = total;
                break;
            }
        }
        inputs.push(state);
    }
    redis.trim()?;
    Ok(EnqueueOutcome {
        interrupted: config.interrupt.is_requested() && inputs.iter().any(|i| i.lines.is_none()),
        waited: redis.waited,
        trimmed: redis.trimmed,
        inputs,
        elapsed: started.elapsed(),
    })
}
