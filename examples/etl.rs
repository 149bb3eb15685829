//! File-to-database ETL: JSON Lines files → parse in parallel → batches → SQLite.
//!
//! ```text
//! cargo run --release --example etl                       # 1 M generated records
//! cargo run --release --example etl -- data/*.jsonl --db out.db --rejects bad.jsonl
//! cargo run --release --example etl -- --slow-db-ms 20    # a slow database: memory stays flat
//! ```
//!
//! Every line read ends either as a row in the `records` table or as a line in the
//! rejects file (with its file, line number and error). The program checks
//! `read = written + rejected` at the end and exits with status 1 if it does not
//! hold, 2 on bad arguments or a failed pipeline. Ctrl-C drains: reading stops,
//! every line already read is parsed and written, then it prints the same summary.
//!
//! Stages: `lines` (a `LineSource`) → `parse-1..n` (serde_json, one producer-consumer
//! each, sharing the lines by demand) → `batch` (a `Batcher`) → `write` (SQLite, one
//! transaction per batch). Demand bounds every queue, so memory does not depend on the
//! input size nor on the database's speed.

use std::error::Error;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rusqlite::{params, Connection};
use serde::Deserialize;
use stageflow::pipeline::{
    Batch, Batcher, BatcherOptions, LineEvent, LineSource, Pipeline, Progress,
};
use stageflow::prelude::*;

const USAGE: &str = "usage: etl [FILE.jsonl ...] [--db PATH] [--rejects PATH] [--sample N]
           [--parsers N] [--batch-size N] [--batch-timeout-ms N] [--slow-db-ms N]
           [--drain-deadline-s N] [--append] [--no-progress]

With no FILE, generates a sample of --sample records (default 1000000, about 1 in 1000
of them bad) into a temporary file and loads it. The records table is created anew
unless --append is given.
Defaults: --db etl.db  --rejects etl-rejects.jsonl  --parsers <cores>  --batch-size 1000
          --batch-timeout-ms 1000  --slow-db-ms 0  --drain-deadline-s 30";

/// One record of the input: every field required, with its type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    id: u64,
    name: String,
    email: String,
    amount: f64,
    tags: Vec<String>,
    ts: String,
}

/// A parsed line: a record to write, or a line to reject, with where it came from.
enum Parsed {
    Row {
        input: usize,
        line: u64,
        record: Record,
    },
    Reject {
        input: usize,
        line: u64,
        error: String,
        text: String,
    },
}

#[derive(Debug)]
struct Args {
    files: Vec<PathBuf>,
    db: PathBuf,
    rejects: PathBuf,
    sample: u64,
    parsers: usize,
    batch_size: usize,
    batch_timeout: Duration,
    slow_db: Duration,
    drain_deadline: Duration,
    append: bool,
    progress: bool,
}

/// A positive whole number for `flag`, or an error naming the flag and the value.
fn positive(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    match value.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n as u64),
        Ok(n) => Err(format!("{flag} must be greater than 0, got: {n}")),
        Err(_) => Err(format!("{flag} must be a whole number, got: {value:?}")),
    }
}

fn non_negative(flag: &str, value: Option<String>) -> Result<u64, String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as u64),
        Ok(n) => Err(format!("{flag} must be 0 or more, got: {n}")),
        Err(_) => Err(format!("{flag} must be a whole number, got: {value:?}")),
    }
}

fn parse_args() -> Result<Args, String> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut a = Args {
        files: Vec::new(),
        db: PathBuf::from("etl.db"),
        rejects: PathBuf::from("etl-rejects.jsonl"),
        sample: 1_000_000,
        parsers: cores,
        batch_size: 1000,
        batch_timeout: Duration::from_secs(1),
        slow_db: Duration::ZERO,
        drain_deadline: Duration::from_secs(30),
        append: false,
        progress: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--db" => a.db = it.next().ok_or("--db needs a path")?.into(),
            "--rejects" => a.rejects = it.next().ok_or("--rejects needs a path")?.into(),
            "--sample" => a.sample = positive("--sample", it.next())?,
            "--parsers" => a.parsers = positive("--parsers", it.next())? as usize,
            "--batch-size" => a.batch_size = positive("--batch-size", it.next())? as usize,
            "--batch-timeout-ms" => {
                a.batch_timeout = Duration::from_millis(positive("--batch-timeout-ms", it.next())?)
            }
            "--slow-db-ms" => {
                a.slow_db = Duration::from_millis(non_negative("--slow-db-ms", it.next())?)
            }
            "--drain-deadline-s" => {
                a.drain_deadline = Duration::from_secs(positive("--drain-deadline-s", it.next())?)
            }
            "--append" => a.append = true,
            "--no-progress" => a.progress = false,
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
            file => a.files.push(file.into()),
        }
    }
    Ok(a)
}

// ----- the stages -------------------------------------------------------------------

/// Parses lines into records; bad lines become rejects. One of several running in
/// parallel, each on its own thread.
struct Parse;

impl Stage for Parse {
    type In = LineEvent;
    type Out = Parsed;
}

impl ProducerConsumer for Parse {
    fn handle_events(
        &mut self,
        lines: Vec<LineEvent>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        ctx.emit_all(lines.into_iter().map(|event| match event {
            Ok(line) => match serde_json::from_str::<Record>(&line.text) {
                Ok(record) => Parsed::Row {
                    input: line.input,
                    line: line.number,
                    record,
                },
                Err(e) => Parsed::Reject {
                    input: line.input,
                    line: line.number,
                    error: e.to_string(),
                    text: line.text,
                },
            },
            Err(e) => Parsed::Reject {
                input: e.input,
                line: e.number,
                error: format!("read error: {}", e.message),
                text: String::new(),
            },
        }));
    }
}

/// Counts shared with `main`, written by the writer's thread once per batch.
#[derive(Default)]
struct Totals {
    written: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
}

/// Writes each batch in one transaction; rejects go to the rejects file.
struct Writer {
    db: Connection,
    rejects: BufWriter<File>,
    names: Vec<Arc<str>>,
    slow: Duration,
    totals: Arc<Totals>,
}

impl Writer {
    fn write(&mut self, batch: Vec<Parsed>) -> Result<(), Box<dyn Error>> {
        if !self.slow.is_zero() {
            std::thread::sleep(self.slow);
        }
        let tx = self.db.transaction()?;
        let mut written = 0;
        let mut rejected = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO records (source, line, id, name, email, amount, tags, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for parsed in batch {
                match parsed {
                    Parsed::Row {
                        input,
                        line,
                        record,
                    } => {
                        let id = i64::try_from(record.id)
                            .map_err(|_| format!("id {} too large", record.id))?;
                        insert.execute(params![
                            &*self.names[input],
                            line as i64,
                            id,
                            record.name,
                            record.email,
                            record.amount,
                            record.tags.join(","),
                            record.ts,
                        ])?;
                        written += 1;
                    }
                    Parsed::Reject {
                        input,
                        line,
                        error,
                        text,
                    } => {
                        let reject = serde_json::json!({
                            "file": &*self.names[input],
                            "line": line,
                            "error": error,
                            "text": text,
                        });
                        serde_json::to_writer(&mut self.rejects, &reject)?;
                        self.rejects.write_all(b"\n")?;
                        rejected += 1;
                    }
                }
            }
        }
        // Rejects reach the file before the rows are committed: a line is never
        // counted twice nor lost if either write fails.
        self.rejects.flush()?;
        tx.commit()?;
        self.totals.written.fetch_add(written, Ordering::Relaxed);
        self.totals.rejected.fetch_add(rejected, Ordering::Relaxed);
        Ok(())
    }
}

impl Stage for Writer {
    type In = Batch<Parsed>;
    type Out = Never;
}

impl Consumer for Writer {
    fn handle_events(
        &mut self,
        batches: Vec<Batch<Parsed>>,
        _: &SubscriptionRef,
        ctx: &mut Context<'_, Self>,
    ) {
        for batch in batches {
            if let Err(e) = self.write(batch.events) {
                ctx.stop(Reason::custom(format!("database write failed: {e}")));
                return;
            }
        }
    }
}

// ----- the program ------------------------------------------------------------------

/// Writes `n` records as JSON Lines, about 1 in 1000 of them bad in one of three
/// ways (invalid JSON, a missing field, a wrong type). Returns how many are bad.
fn generate_sample(path: &Path, n: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut bad = 0;
    for id in 0..n {
        // A cheap hash spreads bad lines and values without a random crate.
        let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        match (h % 1000, h % 3) {
            (0, 0) => writeln!(out, "{{\"id\": {id}, \"name\": \"broken")?,
            (0, 1) => writeln!(out, "{{\"id\": {id}, \"name\": \"user{id}\", \"amount\": 1.5, \"tags\": [], \"ts\": \"2024-01-01T00:00:00Z\"}}")?,
            (0, _) => writeln!(out, "{{\"id\": \"{id}\", \"name\": \"user{id}\", \"email\": \"u{id}@example.com\", \"amount\": 1.5, \"tags\": [], \"ts\": \"2024-01-01T00:00:00Z\"}}")?,
            _ => writeln!(
                out,
                "{{\"id\": {id}, \"name\": \"user{id}\", \"email\": \"u{id}@example.com\", \"amount\": {}.{:02}, \"tags\": [\"t{}\", \"t{}\"], \"ts\": \"2024-{:02}-{:02}T{:02}:{:02}:00Z\"}}",
                h % 10_000,
                h % 100,
                h % 7,
                h % 13,
                1 + h % 12,
                1 + h % 28,
                h % 24,
                h % 60
            )?,
        }
        if h % 1000 == 0 {
            bad += 1;
        }
    }
    out.flush()?;
    Ok(bad)
}

/// Lines in a file, counted fast (for the progress bar's total).
fn count_lines(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let k = f.read(&mut buf).ok()?;
        if k == 0 {
            break;
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[k - 1];
    }
    Some(n + u64::from(last != b'\n'))
}

/// Peak resident memory of this process (Linux: `VmHWM`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kb / 1024.0))
}

fn open_db(path: &Path, append: bool) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    // One writer, batch transactions: WAL and NORMAL sync are the usual bulk-load
    // settings (durable at each commit against a process crash).
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    if !append {
        // The table then holds exactly this run's rows, which the summary counts.
        db.execute_batch("DROP TABLE IF EXISTS records")?;
    }
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS records (
             source TEXT NOT NULL, line INTEGER NOT NULL,
             id INTEGER NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL,
             amount REAL NOT NULL, tags TEXT NOT NULL, ts TEXT NOT NULL)",
    )?;
    Ok(db)
}

fn run(args: Args) -> Result<bool, Box<dyn Error>> {
    let started = Instant::now();
    let mut temp = None;
    let files = if args.files.is_empty() {
        let path =
            std::env::temp_dir().join(format!("stageflow-etl-sample-{}.jsonl", std::process::id()));
        let t = Instant::now();
        let bad = generate_sample(&path, args.sample)?;
        eprintln!(
            "generated {} sample records ({bad} bad) into {} in {:.1} s",
            args.sample,
            path.display(),
            t.elapsed().as_secs_f64()
        );
        temp = Some(path.clone());
        vec![path]
    } else {
        args.files.clone()
    };
    let total: Option<u64> = files.iter().map(|f| count_lines(f)).sum();
    let load_started = Instant::now();

    let db = open_db(&args.db, args.append)?;
    let rejects = BufWriter::new(File::create(&args.rejects)?);
    let totals = Arc::new(Totals::default());

    let source = LineSource::new().files(&files);
    let names = source.names();
    let lines = source.start(ProducerOptions::new().name("lines"))?;
    let mut parsers = Vec::new();
    for i in 1..=args.parsers {
        parsers.push(start_producer_consumer(
            Parse,
            ProducerConsumerOptions::new()
                .name(format!("parse-{i}"))
                .subscribe_to(&lines, SubscribeOptions::new().max_demand(1000)),
        )?);
    }
    let mut batch_opts = ProducerConsumerOptions::new().name("batch");
    for p in &parsers {
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
            .batch_size(args.batch_size)
            .batch_timeout(args.batch_timeout),
    )?
    .start(batch_opts)?;

    let mut pipeline = Pipeline::new().source(&lines);
    for p in &parsers {
        pipeline = pipeline.stage(p);
    }
    pipeline = pipeline.stage(&batcher);
    let handle = pipeline.handle();
    let write = start_consumer(
        Writer {
            db,
            rejects,
            names,
            slow: args.slow_db,
            totals: totals.clone(),
        },
        ConsumerOptions::new()
            .name("write")
            .subscribe_to(&batcher, SubscribeOptions::new().max_demand(4)),
    )?;
    let pipeline = pipeline.stage(&write);

    // Ctrl-C: the first one drains, a second one quits at once.
    let drain_handle = handle.clone();
    let pressed = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if pressed.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond Ctrl-C: quitting without draining");
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: draining (reading stops, everything read is written)...");
        drain_handle.drain();
    })?;

    eprintln!(
        "pipeline started: {} parser(s), batches of {}, Ctrl-C drains",
        args.parsers, args.batch_size
    );
    let done = Arc::new(AtomicBool::new(false));
    let drawer = args.progress.then(|| {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} lines {msg}")
                .expect("valid template"),
        );
        let (handle, done, totals) = (handle.clone(), done.clone(), totals.clone());
        std::thread::spawn(move || {
            let mut progress = Progress::new(total);
            while !done.load(Ordering::Relaxed) {
                let report = progress.update(&handle.status());
                bar.set_position(report.done);
                let eta = report
                    .eta
                    .map_or_else(|| "-".to_string(), |e| format!("{}s", e.as_secs()));
                bar.set_message(format!(
                    "{:.0}/s ETA {eta} | written {} rejected {}",
                    report.rate,
                    totals.written.load(Ordering::Relaxed),
                    totals.rejected.load(Ordering::Relaxed)
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        })
    });

    let report = pipeline.wait(args.drain_deadline);
    done.store(true, Ordering::Relaxed);
    if let Some(d) = drawer {
        let _ = d.join();
    }
    let elapsed = load_started.elapsed();
    let total_time = started.elapsed();
    if let Some(path) = temp {
        let _ = std::fs::remove_file(path);
    }

    let read = report.stage("lines").map_or(0, |s| s.events_out);
    let written = totals.written.load(Ordering::Relaxed);
    let rejected = totals.rejected.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64();
    println!("{report}");
    if report.drained {
        println!(
            "drained after Ctrl-C{}",
            if report.deadline_hit {
                " (deadline hit: stopped)"
            } else {
                ""
            }
        );
    }
    println!(
        "read     {read:>9} lines from {} file(s) in {secs:.2} s ({:.0} lines/s)",
        files.len(),
        read as f64 / secs
    );
    println!("written  {written:>9} rows to {}", args.db.display());
    println!("rejected {rejected:>9} lines to {}", args.rejects.display());
    let balanced = read == written + rejected;
    println!(
        "check    read = written + rejected: {read} = {written} + {rejected} {}",
        if balanced { "ok" } else { "MISMATCH" }
    );
    match peak_rss() {
        Some(rss) => println!(
            "peak RSS {rss}, total run time {:.2} s",
            total_time.as_secs_f64()
        ),
        None => println!("total run time {:.2} s", total_time.as_secs_f64()),
    }
    if let Some(Some(reason)) = report.stage("write").map(|s| s.exit.clone()) {
        if !reason.is_normal() {
            return Err(format!("the writer failed: {reason}").into());
        }
    }
    if !report.is_complete() && !report.drained {
        eprintln!("the pipeline did not complete normally");
        return Ok(false);
    }
    Ok(balanced)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("etl: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("etl: {e}");
            ExitCode::from(2)
        }
    }
}
