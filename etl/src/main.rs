//! `etl`: JSON Lines files → parse in parallel → batches → SQLite, exactly once.
//! `etl --help` says how; the crate docs of `stageflow_etl` say how it works.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stageflow_etl::{
    exit, load, Config, Counters, EtlError, Existing, IfLoaded, InputSpec, Interrupt, Outcome,
};

const HELP: &str = "\
etl: load JSON Lines into SQLite, exactly once, with a rejects file.

usage: etl [OPTIONS] [FILE ...]
       etl enqueue | work | check [OPTIONS]   (several processes: see below)

FILE is a JSON Lines file, a named pipe, or - for standard input. Each line must be a
JSON object {\"id\": u64, \"name\": str, \"email\": str, \"amount\": f64, \"tags\": [str],
\"ts\": str}; it becomes a row of table `records` (file, line, then the fields; tags as
JSON text), or a reject (file, line, error, text) in the rejects file. With no FILE,
a sample of --sample records is generated (about 1 in 1000 bad) and loaded.

Exactly once: every batch's rows, rejects and line numbers are committed together.
If a run is killed or interrupted, run the same command again: it skips what was
committed and loads the rest. Running it again after it completed changes nothing.

Options:
  --db PATH              the SQLite database (default etl.db)
  --rejects PATH         the rejects file, rewritten at the end of every run with all
                         rejects of the inputs (default etl-rejects.jsonl)
  --append               add these inputs to a table that holds other loads
  --replace              drop the table (and what it knows of earlier loads) and load
                         anew; without --append or --replace, a table holding other
                         loads is left alone and the run refused
  --if-loaded skip|fail  an input already loaded completely: skip it (default) or
                         refuse the run
  --sample N             records to generate when no FILE is given (default 1000000)
  --parsers N            parser stages (default: the number of cores)
  --batch-size N         rows per transaction (default 1000)
  --batch-timeout-ms N   write a partial batch after N ms (default 1000)
  --slow-db-ms N         sleep N ms in each transaction (a slow database; default 0)
  --drain-deadline-s N   seconds a drain may take (default 30)
  --no-progress          no progress line on standard error
  --metrics-addr ADDR    serve the stages' counters in Prometheus' text format at
                         http://ADDR/metrics while the load runs (127.0.0.1:9898;
                         port 0 picks one, printed on standard error)
  --dot PATH             write the pipeline's picture (Graphviz DOT) to PATH once
                         it is wired; `dot -Tsvg PATH` draws it
  -h, --help             this help

Environment: RUST_LOG filters the log lines on standard error (default warn);
ETL_TRACE=info|debug|trace prints the stages' tracing spans and events there (an etl
built with --features tracing).

Signals: SIGINT (Ctrl-C), SIGTERM and SIGHUP drain: reading stops, every line read is
written, the summary is printed. A second one quits at once (still safe to resume).

Several processes, on one machine or many (built with --features redis, and
postgres for a shared PostgreSQL table): `etl enqueue` adds the lines of the files
to a Redis stream, exactly once; any number of `etl work` processes share them in a
consumer group and write them into SQLite or PostgreSQL, each line once, acknowledged
after the commit; `etl check` tells whether every line was loaded. `etl MODE --help`
says more. (A file named like a mode is given as ./work.)

Exit codes:
  0    loaded completely (or nothing left to load), counts checked
  1    a stage failed or the counts did not check
  2    bad arguments, an unusable input or output path, or a refused run (nothing
       written); or an input that failed or changed while being read
  3    the database failed (locked, full, corrupt); fix it and run the same command
  130  interrupted by a signal and drained; run the same command to resume
";

struct Args {
    config: Config,
    sample: u64,
    progress: bool,
    metrics_addr: Option<String>,
}

#[cfg(feature = "redis")]
mod cli_dist;

fn number(flag: &str, value: std::ffi::OsString, min: u64) -> Result<u64, String> {
    let text = value.to_string_lossy();
    match text.parse::<i64>() {
        Ok(n) if n >= min as i64 => Ok(n as u64),
        Ok(n) if min == 1 => Err(format!("{flag} must be greater than 0, got: {n}")),
        Ok(n) => Err(format!("{flag} must be {min} or more, got: {n}")),
        Err(_) => Err(format!("{flag} must be a whole number, got: {text:?}")),
    }
}

/// A path value; a value that looks like an option is refused (`--db --no-progress`
/// is a forgotten value, not a database named `--no-progress`).
fn path(flag: &str, value: std::ffi::OsString) -> Result<PathBuf, String> {
    let text = value.to_string_lossy();
    if text.starts_with('-') && text != "-" {
        return Err(format!(
            "{flag} needs a path, got the option {text:?} (write ./{text} for a file of that name)"
        ));
    }
    if text.is_empty() {
        return Err(format!("{flag} needs a path, got an empty one"));
    }
    Ok(value.into())
}

/// `Ok(None)`: help was asked for.
fn parse_args() -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut config = Config::new(Vec::new(), "etl.db");
    let (mut sample, mut progress) = (1_000_000, std::io::stderr().is_terminal());
    let (mut append, mut replace) = (false, false);
    let mut metrics_addr = None;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let v = |p: &mut lexopt::Parser| p.value().map_err(|e| e.to_string());
        match arg {
            Long("db") => config.db = path("--db", v(&mut parser)?)?,
            Long("rejects") => config.rejects = path("--rejects", v(&mut parser)?)?,
            Long("sample") => sample = number("--sample", v(&mut parser)?, 1)?,
            Long("parsers") => config.parsers = number("--parsers", v(&mut parser)?, 1)? as usize,
            Long("batch-size") => {
                config.batch_size = number("--batch-size", v(&mut parser)?, 1)? as usize
            }
            Long("batch-timeout-ms") => {
                config.batch_timeout =
                    Duration::from_millis(number("--batch-timeout-ms", v(&mut parser)?, 1)?)
            }
            Long("slow-db-ms") => {
                config.slow_db = Duration::from_millis(number("--slow-db-ms", v(&mut parser)?, 0)?)
            }
            Long("drain-deadline-s") => {
                config.drain_deadline =
                    Duration::from_secs(number("--drain-deadline-s", v(&mut parser)?, 1)?)
            }
            Long("append") => append = true,
            Long("replace") => replace = true,
            Long("if-loaded") => {
                config.if_loaded = match v(&mut parser)?.to_string_lossy().as_ref() {
                    "skip" => IfLoaded::Skip,
                    "fail" => IfLoaded::Fail,
                    other => {
                        return Err(format!("--if-loaded must be skip or fail, got: {other:?}"))
                    }
                }
            }
            Long("no-progress") => progress = false,
            Long("metrics-addr") => {
                metrics_addr = Some(v(&mut parser)?.to_string_lossy().into_owned())
            }
            Long("dot") => config.dot = Some(path("--dot", v(&mut parser)?)?),
            Short('h') | Long("help") => return Ok(None),
            Value(file) => config.inputs.push(InputSpec::Path(file.into())),
            other => return Err(other.unexpected().to_string()),
        }
    }
    config.existing = match (append, replace) {
        (true, true) => return Err("--append and --replace exclude each other".into()),
        (true, false) => Existing::Append,
        (false, true) => Existing::Replace,
        (false, false) => Existing::Refuse,
    };
    Ok(Some(Args {
        config,
        sample,
        progress,
        metrics_addr,
    }))
}

/// Peak resident memory of this process (Linux: `VmHWM`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kb / 1024.0))
}

/// A progress line on standard error, five times a second (no percentage for pipes).
fn progress(counters: Arc<Counters>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut err = std::io::stderr();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let read = counters.read.load(Ordering::Relaxed);
            let skipped = counters.skipped.load(Ordering::Relaxed);
            let total = counters.total_bytes.load(Ordering::Relaxed);
            let bytes = counters.bytes.load(Ordering::Relaxed);
            // Piped inputs have no known size: no percentage then.
            let of = if total == u64::MAX || total == 0 {
                String::new()
            } else {
                format!(" ({:.0} %)", bytes as f64 * 100.0 / total as f64)
            };
            let _ = write!(
                err,
                "\r{} lines{of}, {skipped} skipped, {:.0}/s | written {} rejected {}   ",
                read + skipped,
                read as f64 / started.elapsed().as_secs_f64(),
                counters.written.load(Ordering::Relaxed),
                counters.rejected.load(Ordering::Relaxed),
            );
        }
        let _ = write!(err, "\r{:79}\r", "");
    })
}

fn summary(
    out: &mut impl Write,
    o: &Outcome,
    config_db: &str,
    rejects: &str,
) -> std::io::Result<()> {
    if let Some(report) = &o.report {
        writeln!(out, "{report}")?;
    }
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    if o.report.is_none() {
        writeln!(out, "nothing left to load: every input is loaded already")?;
    } else {
        writeln!(
            out,
            "read     {:>9} lines in {secs:.2} s ({:.0} lines/s); {} skipped (committed by an earlier run)",
            o.read,
            o.read as f64 / secs,
            o.skipped
        )?;
    }
    writeln!(out, "written  {:>9} rows to {config_db}", o.written)?;
    writeln!(out, "rejected {:>9} lines", o.rejected)?;
    writeln!(
        out,
        "check    read = written + rejected: {} = {} + {} {}",
        o.read,
        o.written,
        o.rejected,
        if o.balanced() { "ok" } else { "MISMATCH" }
    )?;
    for i in &o.inputs {
        let state = if i.already_loaded {
            "already loaded: skipped".to_string()
        } else if i.complete {
            "complete".to_string()
        } else {
            "partial".to_string()
        };
        let lines = i.lines.map_or("?".into(), |n| n.to_string());
        writeln!(
            out,
            "input    {}: {state}, {} rows + {} rejects of {lines} lines",
            i.name, i.rows, i.rejects
        )?;
    }
    writeln!(
        out,
        "rejects file {rejects}: {} lines",
        o.rejects_file_lines
    )?;
    if let Some(rss) = peak_rss() {
        writeln!(out, "peak RSS {rss}")?;
    }
    Ok(())
}

/// Signals drain; a second one quits at once (safe: every commit is whole).
fn install_signals(interrupt: Arc<Interrupt>) -> Result<(), ctrlc::Error> {
    let pressed = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if pressed.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\netl: second signal: quitting without draining; run the same command to resume"
            );
            std::process::exit(exit::INTERRUPTED.into());
        }
        eprintln!("\netl: signal: draining (reading stops, every line read is written)...");
        interrupt.request();
    })
}

/// `etl enqueue|work|check ...`: `None` when the first argument names no mode.
fn dist_mode() -> Option<ExitCode> {
    let mode = std::env::args_os().nth(1)?;
    let mode = match mode.to_str() {
        Some(m @ ("enqueue" | "work" | "check")) => m.to_string(),
        _ => return None,
    };
    #[cfg(feature = "redis")]
    {
        let parser = lexopt::Parser::from_args(std::env::args_os().skip(2));
        let interrupt = Arc::new(Interrupt::default());
        if mode != "check" {
            if let Err(e) = install_signals(interrupt.clone()) {
                eprintln!("etl: cannot install the signal handler: {e}");
                return Some(ExitCode::from(exit::FAILED));
            }
        }
        Some(match mode.as_str() {
            "enqueue" => cli_dist::enqueue_main(parser, interrupt),
            "work" => cli_dist::work_main(parser, interrupt),
            _ => cli_dist::check_main(parser),
        })
    }
    #[cfg(not(feature = "redis"))]
    {
        eprintln!(
            "etl {mode}: this etl was built without Redis; build it with \
             cargo build --release -p stageflow-etl --features redis \
             (and postgres for --postgres)"
        );
        Some(ExitCode::from(exit::USAGE))
    }
}

#[cfg(feature = "prometheus")]
fn serve_metrics(addr: &str) -> Result<stageflow_etl::metrics::MetricsServer, String> {
    let server = stageflow_etl::metrics::MetricsServer::start(addr)?;
    eprintln!("serving metrics at http://{}/metrics", server.addr());
    Ok(server)
}

#[cfg(not(feature = "prometheus"))]
fn serve_metrics(addr: &str) -> Result<(), String> {
    Err(format!(
        "--metrics-addr {addr}: this etl was built without its `prometheus` feature"
    ))
}

/// With the `tracing` feature, `ETL_TRACE=<level>` prints the stages' tracing spans
/// and events on stderr; without the variable nothing is installed.
#[cfg(feature = "tracing")]
fn install_tracing() -> Result<(), String> {
    let Some(level) = std::env::var_os("ETL_TRACE") else {
        return Ok(());
    };
    let level: tracing_subscriber::filter::LevelFilter =
        level.to_str().and_then(|l| l.parse().ok()).ok_or_else(|| {
            format!(
                "ETL_TRACE={}: expected one of off, error, warn, info, debug, trace",
                level.to_string_lossy()
            )
        })?;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .map_err(|e| format!("ETL_TRACE: {e}"))
}

#[cfg(not(feature = "tracing"))]
fn install_tracing() -> Result<(), String> {
    match std::env::var_os("ETL_TRACE") {
        Some(_) => Err("ETL_TRACE: this etl was built without its `tracing` feature".into()),
        None => Ok(()),
    }
}

fn main() -> ExitCode {
    // Stages log through the `log` facade: show their warnings and errors on stderr
    // unless RUST_LOG says otherwise (env_logger alone would show only errors).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = install_tracing() {
        eprintln!("etl: {e}");
        return ExitCode::from(exit::USAGE);
    }
    if let Some(code) = dist_mode() {
        return code;
    }
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = std::io::stdout().write_all(HELP.as_bytes());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("etl: {e}\nRun etl --help for the options.");
            return ExitCode::from(exit::USAGE);
        }
    };
    let Args {
        mut config,
        sample,
        progress: show_progress,
        metrics_addr,
    } = args;
    // Before any stage starts: stages register their counters when they start.
    let _metrics = match metrics_addr.map(|addr| serve_metrics(&addr)).transpose() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("etl: {e}\nRun etl --help for the options.");
            return ExitCode::from(exit::USAGE);
        }
    };
    if let Err(e) = install_signals(config.interrupt.clone()) {
        eprintln!("etl: cannot install the signal handler: {e}");
        return ExitCode::from(exit::FAILED);
    }
    if config.inputs.is_empty() {
        // The sample lives in an unnamed temporary file: nothing is left behind,
        // whatever ends the process.
        let started = Instant::now();
        let generated = tempfile::tempfile().and_then(|mut f| {
            let bad = stageflow_etl::generate::sample(&mut f, sample)?;
            Ok((f, bad))
        });
        match generated {
            Ok((file, bad)) => {
                eprintln!(
                    "generated {sample} sample records ({bad} bad) in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                config.inputs.push(InputSpec::File {
                    name: format!("sample-{sample}"),
                    file,
                });
            }
            Err(e) => {
                eprintln!("etl: cannot generate the sample in a temporary file: {e}");
                return ExitCode::from(exit::FAILED);
            }
        }
    }
    let db = config.db.display().to_string();
    let rejects = config.rejects.display().to_string();
    let counters = config.counters.clone();
    let done = Arc::new(AtomicBool::new(false));
    let drawer = show_progress.then(|| progress(counters, done.clone()));
    eprintln!(
        "loading into {db}: {} parser(s), batches of {}; Ctrl-C drains",
        config.parsers, config.batch_size
    );
    let result = load(config);
    done.store(true, Ordering::Relaxed);
    if let Some(d) = drawer {
        let _ = d.join();
    }
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            eprintln!("etl: {e}");
            match &e {
                EtlError::Database(_) | EtlError::Failed(_) | EtlError::Redis(_) => eprintln!(
                    "etl: what was committed before stands; once fixed, run the same command to resume"
                ),
                EtlError::Usage(_) | EtlError::Input(_) => {}
            }
            return ExitCode::from(e.exit_code());
        }
    };
    // A closed standard output (`etl | head -1`) is not an error of the load.
    let _ = summary(&mut std::io::stdout().lock(), &outcome, &db, &rejects);
    if outcome.interrupted {
        eprintln!("etl: interrupted; what was read is committed. Run the same command to resume.");
        return ExitCode::from(exit::INTERRUPTED);
    }
    if !outcome.balanced() || !outcome.is_complete() {
        eprintln!("etl: the counts do not check (see above)");
        return ExitCode::from(exit::FAILED);
    }
    ExitCode::SUCCESS
}
