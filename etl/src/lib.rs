//! The ETL loader of `stageflow`: JSON Lines files → parse in parallel → batches →
//! SQLite, exactly once across crashes. The `etl` binary is its command line; the
//! library is what it, its tests and the `compare` bench (W8) run.
//!
//! Stages: `lines` (reads the inputs as bytes, by demand, skipping lines an earlier
//! run committed) → `parse-1..n` (serde_json, in parallel) → `batch` → `write` (one
//! SQLite transaction per batch holding its rows, its rejects and the line ranges it
//! completes). Demand bounds every queue, so memory depends neither on the input size
//! nor on the database's speed.
//!
//! Exactly once: every input is identified by its content (size and a 128-bit hash
//! of its bytes; a piped input by its first MiB, then by hashes of what follows as it
//! is read again). The ranges of lines committed per input live in the database with
//! the rows, so a run killed at any moment and started again reads every input again,
//! skips the committed lines, and loads the rest: each valid line becomes one row and
//! each bad line one reject, once. The rejects file is rewritten from the database at
//! the end of every run (a temporary file renamed into place).
//!
//! ```
//! use stageflow_etl::{load, Config, InputSpec};
//! let dir = tempfile::tempdir()?;
//! let input = dir.path().join("in.jsonl");
//! std::fs::write(&input, concat!(
//!     r#"{"id": 1, "name": "a", "email": "a@x", "amount": 1.5, "tags": ["t"], "ts": "2024"}"#, "\n",
//!     "not json\n",
//! ))?;
//! let mut config = Config::new(vec![InputSpec::Path(input)], dir.path().join("out.db"));
//! config.rejects = dir.path().join("rejects.jsonl");
//! let outcome = load(config)?;
//! assert_eq!((outcome.read, outcome.written, outcome.rejected), (2, 1, 1));
//! assert!(outcome.is_complete());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use stageflow::pipeline::{Batcher, BatcherOptions, PipelineHandle, PipelineReport};
use stageflow::prelude::*;

mod db;
pub mod generate;
mod input;
#[cfg(feature = "prometheus")]
pub mod metrics;
mod record;
mod source;

pub use input::InputSpec;

use record::{Parsed, RawLine};
use source::{Eof, EtlSource, SourceInput};

/// The exit codes of the `etl` binary.
pub mod exit {
    /// The load is complete (or there was nothing left to load) and its counts check.
    pub const OK: u8 = 0;
    /// A stage failed or the counts did not check: a bug; what was committed stands.
    pub const FAILED: u8 = 1;
    /// Bad arguments, an input or output path that cannot be used, or a refusal to
    /// touch an existing table; nothing was written. Also an input that failed or
    /// changed while being read (what was committed before stands).
    pub const USAGE: u8 = 2;
    /// The database failed (locked, disk full, corrupt, ...); what was committed
    /// before stands and the same command resumes once the database is fixed.
    pub const DATABASE: u8 = 3;
    /// Interrupted (SIGINT, SIGTERM, SIGHUP) and drained: the same command resumes.
    pub const INTERRUPTED: u8 = 130;
}

/// What to do when the table already holds the loads of other inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Existing {
    /// Refuse with a message saying what to do (the default).
    #[default]
    Refuse,
    /// Add these inputs to it.
    Append,
    /// Drop the table and its bookkeeping, then load anew.
    Replace,
}

/// What to do with an input the table already holds completely.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IfLoaded {
    /// Skip it with a message (the default): running the same load twice is a no-op.
    #[default]
    Skip,
    /// Refuse the run.
    Fail,
}

/// Counters the loader updates as it runs (for a progress display).
#[derive(Debug, Default)]
pub struct Counters {
    /// Lines read and sent on to be parsed.
    pub read: AtomicU64,
    /// Lines skipped because an earlier run committed them.
    pub skipped: AtomicU64,
    /// Rows committed by this run.
    pub written: AtomicU64,
    /// Rejects committed by this run.
    pub rejected: AtomicU64,
    /// Bytes read so far (lines skipped included).
    pub bytes: AtomicU64,
    /// Bytes of all inputs when known upfront (regular files), else `u64::MAX`.
    pub total_bytes: AtomicU64,
}

/// A request to drain, from a signal handler: reading stops, every line already read
/// is written, and the run ends as interrupted (resumable by running it again).
///
/// ```
/// use stageflow_etl::{load, Config, InputSpec};
/// let dir = tempfile::tempdir()?;
/// let input = dir.path().join("in.jsonl");
/// std::fs::write(&input, "{}\n")?;
/// let mut config = Config::new(vec![InputSpec::Path(input)], dir.path().join("out.db"));
/// config.rejects = dir.path().join("rejects.jsonl");
/// // A signal that came before the load started: nothing is read.
/// config.interrupt.request();
/// let outcome = load(config)?;
/// assert!(outcome.interrupted && !outcome.is_complete());
/// assert_eq!(outcome.read, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct Interrupt {
    requested: AtomicBool,
    handle: Mutex<Option<PipelineHandle>>,
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interrupt")
            .field("requested", &self.is_requested())
            .finish()
    }
}

impl Interrupt {
    /// Requests the drain (safe to call from any thread, any number of times).
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.lock().as_ref() {
            handle.drain();
        }
    }

    /// Whether a drain was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    fn attach(&self, handle: PipelineHandle) {
        *self.handle.lock() = Some(handle.clone());
        // A request that came before the pipeline existed.
        if self.is_requested() {
            handle.drain();
        }
    }
}

/// A load to run.
#[derive(Debug)]
pub struct Config {
    /// The inputs, in order.
    pub inputs: Vec<InputSpec>,
    /// The SQLite database (created if missing).
    pub db: PathBuf,
    /// The rejects file, rewritten at the end of the run with every reject of the
    /// inputs (default `etl-rejects.jsonl`).
    pub rejects: PathBuf,
    /// Parser stages (default: the number of cores).
    pub parsers: usize,
    /// Rows per transaction (default 1 000).
    pub batch_size: usize,
    /// A partial batch is written after this long (default 1 s).
    pub batch_timeout: Duration,
    /// Extra time per batch inside its transaction, to simulate a slow database.
    pub slow_db: Duration,
    /// How long a drain may take before the stages still running are stopped.
    pub drain_deadline: Duration,
    /// What to do when the table holds other loads.
    pub existing: Existing,
    /// What to do with an input already loaded completely.
    pub if_loaded: IfLoaded,
    /// Drain requests (signals).
    pub interrupt: Arc<Interrupt>,
    /// Live counters.
    pub counters: Arc<Counters>,
    /// Where to write the pipeline's picture (Graphviz DOT) once it is wired.
    pub dot: Option<PathBuf>,
}

impl Config {
    /// A load of `inputs` into `db` with the defaults.
    pub fn new(inputs: Vec<InputSpec>, db: impl Into<PathBuf>) -> Self {
        Config {
            inputs,
            db: db.into(),
            rejects: PathBuf::from("etl-rejects.jsonl"),
            parsers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            batch_size: 1000,
            batch_timeout: Duration::from_secs(1),
            slow_db: Duration::ZERO,
            drain_deadline: Duration::from_secs(30),
            existing: Existing::Refuse,
            if_loaded: IfLoaded::Skip,
            interrupt: Arc::default(),
            counters: Arc::default(),
            dot: None,
        }
    }
}

/// Why a load failed; [`EtlError::exit_code`] maps it to the binary's exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtlError {
    /// An input or output cannot be used, or the run was refused; nothing written.
    Usage(String),
    /// An input failed or changed while being read.
    Input(String),
    /// The database failed.
    Database(String),
    /// A stage failed.
    Failed(String),
}

impl EtlError {
    /// The exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            EtlError::Usage(_) | EtlError::Input(_) => exit::USAGE,
            EtlError::Database(_) => exit::DATABASE,
            EtlError::Failed(_) => exit::FAILED,
        }
    }
}

impl fmt::Display for EtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtlError::Usage(m) | EtlError::Input(m) | EtlError::Failed(m) => f.write_str(m),
            EtlError::Database(m) => write!(f, "database error: {m}"),
        }
    }
}

impl std::error::Error for EtlError {}

fn database(db: &Path) -> impl Fn(rusqlite::Error) -> EtlError + '_ {
    move |e| EtlError::Database(format!("{}: {e}", db.display()))
}

/// What happened to one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputOutcome {
    /// Its name (path, `-`).
    pub name: String,
    /// Loaded completely before this run: skipped.
    pub already_loaded: bool,
    /// Completely loaded now.
    pub complete: bool,
    /// Rows the table holds for it.
    pub rows: u64,
    /// Rejects the database holds for it.
    pub rejects: u64,
    /// Its lines, once known.
    pub lines: Option<u64>,
}

/// The result of a load that ran (completely or interrupted).
#[derive(Debug)]
pub struct Outcome {
    /// Lines this run read and sent on to be parsed.
    pub read: u64,
    /// Lines skipped because earlier runs committed them.
    pub skipped: u64,
    /// Rows this run committed.
    pub written: u64,
    /// Rejects this run committed.
    pub rejected: u64,
    /// A drain was requested (a signal).
    pub interrupted: bool,
    /// The drain deadline stopped stages with lines in flight (loaded on resume).
    pub deadline_hit: bool,
    /// Every input, in order.
    pub inputs: Vec<InputOutcome>,
    /// Lines written to the rejects file.
    pub rejects_file_lines: u64,
    /// The stages' report, when a pipeline ran.
    pub report: Option<PipelineReport>,
    /// Time spent reading, parsing and writing.
    pub elapsed: Duration,
}

impl Outcome {
    /// Every line read became a row or a reject.
    pub fn balanced(&self) -> bool {
        self.read == self.written + self.rejected
    }

    /// Every input is loaded completely, each line exactly once as a row or reject.
    pub fn is_complete(&self) -> bool {
        !self.interrupted
            && self
                .inputs
                .iter()
                .all(|i| i.complete && i.lines == Some(i.rows + i.rejects))
    }
}

/// Parses lines into rows and rejects; one of several running in parallel.
struct Parse;

impl Stage for Parse {
    type In = RawLine;
    type Out = Parsed;
}

impl ProducerConsumer for Parse {
    fn handle_events(
        &mut self,
        lines: Vec<RawLine>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_all(lines.into_iter().map(record::parse));
    }
}

/// Checks that an output path can be written: its directory exists and takes files,
/// and it is not one of the inputs.
fn check_output(what: &str, path: &Path, inputs: &[Option<(u64, u64)>]) -> Result<(), EtlError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.display();
    if !dir.is_dir() {
        return Err(EtlError::Usage(format!(
            "{what} {name}: directory {} does not exist",
            dir.display()
        )));
    }
    if path.is_dir() {
        return Err(EtlError::Usage(format!("{what} {name} is a directory")));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if inputs.contains(&Some((meta.dev(), meta.ino()))) {
                return Err(EtlError::Usage(format!(
                    "{what} {name} is one of the inputs"
                )));
            }
        }
        let _ = (&meta, inputs);
    }
    tempfile::Builder::new()
        .prefix(".etl-probe-")
        .tempfile_in(&dir)
        .map_err(|e| {
            EtlError::Usage(format!(
                "{what} {name}: cannot write in {}: {e}",
                dir.display()
            ))
        })?;
    Ok(())
}

/// Whether two paths name the same file (the same path, or the same existing file).
fn same_file(a: &Path, b: &Path) -> bool {
    if a == b {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Rewrites the rejects file from the database: every reject of `files` (with the
/// inputs' names of this run), into a temporary file renamed into place.
fn write_rejects(
    db: &rusqlite::Connection,
    path: &Path,
    files: &[(i64, String)],
) -> Result<u64, String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let err = |e: &dyn fmt::Display| format!("rejects file {}: {e}", path.display());
    let temp = tempfile::Builder::new()
        .prefix(".etl-rejects-")
        .tempfile_in(&dir)
        .map_err(|e| err(&e))?;
    let mut out = std::io::BufWriter::new(temp);
    let mut q = db
        .prepare("SELECT line, error, raw FROM etl_rejects WHERE file = ?1 ORDER BY line")
        .map_err(|e| err(&e))?;
    let mut n = 0;
    for (file, name) in files {
        let rows = q
            .query_map([file], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(|e| err(&e))?;
        for row in rows {
            let (line, error, raw) = row.map_err(|e| err(&e))?;
            let mut reject = serde_json::json!({"file": name, "line": line, "error": error});
            match String::from_utf8(raw) {
                Ok(text) => reject["text"] = text.into(),
                // Not UTF-8: the bytes, escaped (\xNN, \\, \", \n, ...) so they can be
                // restored exactly.
                Err(e) => {
                    reject["bytes_escaped"] = e.into_bytes().escape_ascii().to_string().into()
                }
            }
            serde_json::to_writer(&mut out, &reject).map_err(|e| err(&e))?;
            out.write_all(b"\n").map_err(|e| err(&e))?;
            n += 1;
        }
    }
    let temp = out.into_inner().map_err(|e| err(&e.error()))?;
    // Temporary files are private (0600); the rejects file keeps the permissions of
    // the one it replaces, or gets the usual 0644.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = std::fs::metadata(path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::fs::Permissions::from_mode(0o644));
        temp.as_file()
            .set_permissions(permissions)
            .map_err(|e| err(&e))?;
    }
    temp.as_file().sync_all().map_err(|e| err(&e))?;
    temp.persist(path).map_err(|e| err(&e.error))?;
    Ok(n)
}

/// Runs a load. Inputs and outputs are checked before anything is written; see the
/// crate docs for what a second run of the same load does.
pub fn load(config: Config) -> Result<Outcome, EtlError> {
    let counters = config.counters.clone();
    // 1. The inputs: open, identify, refuse directories and missing files.
    let mut opened = Vec::new();
    for spec in config.inputs {
        opened.push(input::open(spec).map_err(EtlError::Usage)?);
    }
    for (i, a) in opened.iter().enumerate() {
        if let Some(b) = opened[..i].iter().find(|b| b.identity == a.identity) {
            return Err(EtlError::Usage(format!(
                "inputs {} and {} have the same content: give it once",
                b.name, a.name
            )));
        }
    }
    let total = opened.iter().map(|o| o.size).sum::<Option<u64>>();
    counters
        .total_bytes
        .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
    // 2. The outputs.
    let ids: Vec<_> = opened.iter().map(|o| o.file_id).collect();
    check_output("database", &config.db, &ids)?;
    check_output("rejects file", &config.rejects, &ids)?;
    if same_file(&config.db, &config.rejects) {
        return Err(EtlError::Usage(format!(
            "the rejects file {} is the database: give it another path",
            config.rejects.display()
        )));
    }
    // 3. What the database holds, and whether this run may touch it.
    let dberr = database(&config.db);
    let mut conn = db::open(&config.db).map_err(&dberr)?;
    let state = db::inspect(&conn).map_err(&dberr)?;
    let db_name = config.db.display();
    let replace = config.existing == Existing::Replace;
    if !replace {
        if state.records && !state.bookkeeping {
            return Err(EtlError::Usage(format!(
                "{db_name} already has a table `records` that this loader did not fill; \
                 use --replace to drop it and load anew, or --db to load into another database"
            )));
        }
        let known = |o: &input::Opened| state.files.iter().find(|f| f.identity == o.identity);
        let new: Vec<&str> = opened
            .iter()
            .filter(|o| known(o).is_none())
            .map(|o| o.name.as_str())
            .collect();
        if !new.is_empty() && !state.files.is_empty() && config.existing != Existing::Append {
            let held: Vec<&str> = state.files.iter().map(|f| f.path.as_str()).collect();
            return Err(EtlError::Usage(format!(
                "{db_name} already holds the load of {} input(s) ({}), and {} is new to it; \
                 run the command of that load to resume it, add --append to add these inputs \
                 to the table, --replace to drop the table and load anew, or --db for another database",
                held.len(),
                held.join(", "),
                new.join(", ")
            )));
        }
        if config.if_loaded == IfLoaded::Fail {
            if let Some(o) = opened.iter().find(|o| known(o).is_some_and(|f| f.complete)) {
                return Err(EtlError::Usage(format!(
                    "input {} is already loaded into {db_name} (--if-loaded fail); \
                     use --replace to load it anew",
                    o.name
                )));
            }
        }
    }
    // 4. From here on the database is written.
    let keys: Vec<(String, String)> = opened
        .iter()
        .map(|o| (o.identity.clone(), o.name.clone()))
        .collect();
    let rows = db::prepare(&mut conn, replace, &keys).map_err(&dberr)?;
    let mut inputs = Vec::new();
    let mut writer_done = Vec::new();
    for (index, (o, row)) in opened.into_iter().zip(&rows).enumerate() {
        let done = db::done_ranges(&conn, row.file).map_err(&dberr)?;
        writer_done.push(
            done.iter()
                .map(|d| (d.first, (d.last, d.hash)))
                .collect::<BTreeMap<_, _>>(),
        );
        if row.complete && o.whole {
            // Known whole and loaded whole: nothing to read.
            continue;
        }
        inputs.push(SourceInput {
            index,
            name: o.name,
            reader: o.reader,
            done,
            hash_lines: !o.whole,
            limit: if row.complete { row.lines } else { None },
        });
    }
    let names: Vec<String> = keys.iter().map(|(_, n)| n.clone()).collect();
    let eof = Arc::new(Mutex::new(vec![None::<Eof>; rows.len()]));
    let started = Instant::now();
    let fatal = Arc::new(Mutex::new(None::<String>));
    let mut report = None;
    let mut failure = None;
    if !inputs.is_empty() {
        let writer = db::Writer {
            db: conn,
            files: rows.iter().map(|r| r.file).collect(),
            done: writer_done,
            slow: config.slow_db,
            counters: counters.clone(),
            fatal: fatal.clone(),
            garbage: db::garbage_collector()
                .map_err(|e| EtlError::Failed(format!("starting a thread: {e}")))?,
        };
        let r = run_pipeline(
            inputs,
            writer,
            &counters,
            &eof,
            &fatal,
            &config.interrupt,
            config.parsers,
            config.batch_size,
            config.batch_timeout,
            config.drain_deadline,
            config.dot.as_deref(),
        )?;
        // A stage that failed, in pipeline order (the first is the cause).
        failure = r.stages.iter().find_map(|s| match &s.exit {
            Some(reason) if !reason.is_normal() && !matches!(reason, Reason::Shutdown) => {
                Some(format!("stage {}: {reason}", s.name))
            }
            _ => None,
        });
        report = Some(r);
        conn = db::open(&config.db).map_err(&dberr)?;
    }
    let elapsed = started.elapsed();
    // 5. Inputs read to their end with every line committed are complete.
    let eof = eof.lock().clone();
    let mut outcomes = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let mut complete = row.complete;
        let mut lines = row.lines;
        if !complete {
            if let Some(e) = eof[index] {
                complete = db::complete_if_done(&conn, row.file, e.lines).map_err(&dberr)?;
                lines = Some(e.lines);
            }
        }
        let (rows_n, rejects_n) = db::counts(&conn, row.file).map_err(&dberr)?;
        outcomes.push(InputOutcome {
            name: names[index].clone(),
            already_loaded: row.complete,
            complete,
            rows: rows_n,
            rejects: rejects_n,
            lines,
        });
    }
    let files: Vec<(i64, String)> = rows.iter().map(|r| r.file).zip(names).collect();
    let rejects_file_lines =
        write_rejects(&conn, &config.rejects, &files).map_err(EtlError::Usage)?;
    if let Some(f) = failure {
        return Err(if f.starts_with("stage lines") {
            EtlError::Input(f.trim_start_matches("stage lines: ").to_string())
        } else {
            EtlError::Failed(f)
        });
    }
    Ok(Outcome {
        read: counters.read.load(Ordering::Relaxed),
        skipped: counters.skipped.load(Ordering::Relaxed),
        written: counters.written.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        // A signal that came after everything was loaded interrupted nothing.
        interrupted: config.interrupt.is_requested() && !outcomes.iter().all(|i| i.complete),
        deadline_hit: report.as_ref().is_some_and(|r| r.deadline_hit),
        inputs: outcomes,
        rejects_file_lines,
        report,
        elapsed,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_pipeline(
    inputs: Vec<SourceInput>,
    writer: db::Writer,
    counters: &Arc<Counters>,
    eof: &Arc<Mutex<Vec<Option<Eof>>>>,
    fatal: &Arc<Mutex<Option<String>>>,
    interrupt: &Interrupt,
    parsers: usize,
    batch_size: usize,
    batch_timeout: Duration,
    drain_deadline: Duration,
    dot: Option<&Path>,
) -> Result<PipelineReport, EtlError> {
    let failed = |e: &dyn fmt::Display| EtlError::Failed(format!("starting the pipeline: {e}"));
    // The topology holds the source's demand until every stage is subscribed: a
    // short input would otherwise end before the last parser subscribed.
    let mut topology = Topology::new();
    let lines = topology
        .source(
            EtlSource::new(inputs, counters.clone(), eof.clone()),
            ProducerOptions::new().name("lines"),
        )
        .map_err(|e| failed(&e))?;
    let mut parse = Vec::new();
    for i in 1..=parsers {
        parse.push(
            topology
                .producer_consumer(
                    Parse,
                    ProducerConsumerOptions::new()
                        .name(format!("parse-{i}"))
                        .subscribe_to(&lines, SubscribeOptions::new().max_demand(1000)),
                )
                .map_err(|e| failed(&e))?,
        );
    }
    let mut batch_opts = ProducerConsumerOptions::new().name("batch");
    for p in &parse {
        // Transient: the batcher outlives all parsers but the last (fan-in).
        batch_opts = batch_opts.subscribe_to(
            p,
            SubscribeOptions::new()
                .max_demand(2000)
                .cancel(CancelMode::Transient),
        );
    }
    let batcher = Batcher::new(
        BatcherOptions::new()
            .batch_size(batch_size)
            .batch_timeout(batch_timeout),
    )
    .map_err(|e| failed(&e))?;
    let batcher = topology
        .producer_consumer(batcher, batch_opts)
        .map_err(|e| failed(&e))?;
    topology
        .consumer(
            writer,
            ConsumerOptions::new()
                .name("write")
                .subscribe_to(&batcher, SubscribeOptions::new().max_demand(4)),
        )
        .map_err(|e| failed(&e))?;
    // Attached before demand flows: a signal that came while wiring drains the
    // pipeline before anything is read.
    interrupt.attach(topology.handle());
    if let Some(path) = dot {
        let picture = topology.handle().snapshot().to_dot();
        std::fs::write(path, picture)
            .map_err(|e| EtlError::Usage(format!("--dot {}: {e}", path.display())))?;
    }
    let pipeline = topology.start().map_err(|e| failed(&e))?;
    // Wait on another thread, so that a database failure ends the run at once
    // instead of after the drain deadline (stages upstream of a dead writer wait).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("etl-wait".into())
        .spawn(move || {
            let _ = tx.send(pipeline.wait(drain_deadline));
        })
        .map_err(|e| failed(&e))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(report) => {
                if let Some(e) = fatal.lock().take() {
                    return Err(EtlError::Database(e));
                }
                return Ok(report);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(e) = fatal.lock().take() {
                    return Err(EtlError::Database(e));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(EtlError::Failed(
                    "the pipeline's waiter ended without a report".into(),
                ))
            }
        }
    }
}
