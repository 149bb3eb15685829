//! The command lines of `etl enqueue`, `etl work` and `etl check`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use stageflow_etl::dist::check::{check, CheckConfig};
use stageflow_etl::dist::enqueue::{enqueue, EnqueueConfig};
use stageflow_etl::dist::work::{work, WorkConfig};
use stageflow_etl::dist::{validate_table, Sink, DEFAULT_GROUP, DEFAULT_REDIS_URL, DEFAULT_TABLE};
use stageflow_etl::{exit, EtlError, InputSpec, Interrupt};

use crate::{number, path};

pub const ENQUEUE_HELP: &str = "\
etl enqueue: add the lines of JSON Lines files to a Redis stream, exactly once.

usage: etl enqueue --stream KEY [OPTIONS] FILE ...

Each line becomes one entry {input, name, line, data}: input is the file's content
identity (its size and a 128-bit hash), line its number, data its bytes. The lines
enqueued per input are counted in the hash KEY:enqueued, in the same MULTI/EXEC as
the entries: run the same command again after a crash or a signal and it adds the
rest, each line once. An input enqueued whole before is skipped.

It waits while the group has more than --max-lag entries unread, and trims the
entries every group of the stream has acknowledged, so Redis holds a window of the
load, not all of it: run it beside the workers. The group is created at the
stream's start if missing. All inputs are registered before any line is added, so
workers run with --until-done wait until the last of them is enqueued whole.

Options:
  --redis URL        Redis (default $STAGEFLOW_REDIS_URL, else redis://127.0.0.1:6379/)
  --stream KEY       the stream (required)
  --group NAME       the workers' consumer group (default etl)
  --max-lag N        wait while the group has more than N entries unread (default 100000)
  --batch-size N     entries per MULTI/EXEC (default 1000)
  -h, --help         this help

Exit codes: 0 every input enqueued whole; 2 bad arguments or an unusable input;
3 Redis failed (run the same command to resume); 130 interrupted (the same).
";

pub const WORK_HELP: &str = "\
etl work: one worker of a consumer group: stream entries -> parse -> batches -> table.

usage: etl work --stream KEY --consumer NAME (--db PATH | --postgres CONN) [OPTIONS]

Reads the entries etl enqueue added (its own pending entries first, then new ones,
then those other workers left idle for --claim-idle-ms), parses them in parallel and
writes each batch in one transaction: valid lines into TABLE (input, line, id, name,
email, amount, tags, ts), bad lines into TABLE_rejects (input, line, error, raw), its
counts into TABLE_workers, all keyed so that writing an entry twice changes nothing.
Entries are acknowledged (XACK) after the commit only. An entry that is no ETL line
(no data field, say) is acknowledged as failed; after --max-deliveries deliveries it
moves to the dead-letter stream KEY:dead with its error.

Run as many workers as you like, on one machine or many, with the same --stream and
--group and each its own --consumer name.

Options:
  --redis URL             Redis (default $STAGEFLOW_REDIS_URL, else redis://127.0.0.1:6379/)
  --stream KEY            the stream (required)
  --group NAME            the consumer group (default etl)
  --consumer NAME         this worker's name in the group (required; unique among the
                          workers running; a worker started again under its old name
                          first finishes what it had taken)
  --db PATH               write into this SQLite database (workers on one machine)
  --postgres CONN         write into PostgreSQL, e.g. \"host=db user=etl dbname=load\"
                          (workers on many machines; needs the postgres feature)
  --table NAME            the table (default records)
  --until-done            exit once every input enqueued so far is enqueued whole and
                          the group has nothing unread and nothing pending (default:
                          wait for more until a signal)
  --parsers N             parser stages (default: the number of cores)
  --batch-size N          rows per transaction (default 1000)
  --batch-timeout-ms N    write a partial batch after N ms (default 1000)
  --claim-idle-ms N       take over entries other workers left unacknowledged this
                          long (default 30000)
  --max-deliveries N      dead-letter an entry delivered more often (default 5)
  --slow-db-ms N          sleep N ms in each transaction (a slow database; default 0)
  --drain-deadline-s N    seconds a drain may take (default 30)
  -h, --help              this help

Signals: SIGINT, SIGTERM and SIGHUP drain: reading stops, every entry read is written
and acknowledged; entries taken from Redis but not read stay pending for the others.

Exit codes: 0 done (--until-done); 1 a stage failed; 2 bad arguments; 3 the database
or Redis failed (what was committed stands; start the worker again); 130 drained after
a signal.
";

pub const CHECK_HELP: &str = "\
etl check: did the workers load every enqueued line exactly once?

usage: etl check --stream KEY (--db PATH | --postgres CONN) [OPTIONS]

Reads what etl enqueue counted (KEY:enqueued), the table, its rejects, the workers'
counts, the dead-letter stream and the group's pending entries, and prints, per input
and in all: enqueued = written + rejected + dead-lettered.

Options:
  --redis URL        Redis (default $STAGEFLOW_REDIS_URL, else redis://127.0.0.1:6379/)
  --stream KEY       the stream (required)
  --group NAME       the consumer group (default etl)
  --db PATH | --postgres CONN | --table NAME    where the workers wrote (as for work)
  -h, --help         this help

Exit codes: 0 every input enqueued whole and loaded, the counts check, nothing pending
or unread; 1 not (yet): the counts do not check or work is left; 2 bad arguments;
3 Redis or the database cannot be read.
";

fn default_redis() -> String {
    std::env::var("STAGEFLOW_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// A plain text value that must not look like an option.
fn word(flag: &str, value: std::ffi::OsString) -> Result<String, String> {
    let text = value
        .into_string()
        .map_err(|v| format!("{flag} must be UTF-8, got: {v:?}"))?;
    if text.starts_with('-') {
        return Err(format!("{flag} needs a value, got the option {text:?}"));
    }
    if text.is_empty() {
        return Err(format!("{flag} needs a value, got an empty one"));
    }
    Ok(text)
}

/// An argument that no longer borrows the parser (lexopt's borrows it).
enum Arg {
    Long(String),
    Short(char),
    Value(std::ffi::OsString),
}

fn next(parser: &mut lexopt::Parser) -> Result<Option<Arg>, String> {
    Ok(parser
        .next()
        .map_err(|e| e.to_string())?
        .map(|arg| match arg {
            lexopt::Arg::Long(l) => Arg::Long(l.to_string()),
            lexopt::Arg::Short(c) => Arg::Short(c),
            lexopt::Arg::Value(v) => Arg::Value(v),
        }))
}

fn unexpected(arg: Arg) -> String {
    match arg {
        Arg::Long(l) => format!("invalid option '--{l}'"),
        Arg::Short(c) => format!("invalid option '-{c}'"),
        Arg::Value(v) => format!("unexpected argument {:?}", v.to_string_lossy()),
    }
}

/// The options every mode shares, and the sink of `work` and `check`.
struct Common {
    redis: String,
    stream: Option<String>,
    group: String,
    sink: Option<Sink>,
    table: String,
}

impl Common {
    fn new() -> Self {
        Common {
            redis: default_redis(),
            stream: None,
            group: DEFAULT_GROUP.into(),
            sink: None,
            table: DEFAULT_TABLE.into(),
        }
    }

    /// Takes `arg` if it is one of the shared options.
    fn take(&mut self, arg: &Arg, parser: &mut lexopt::Parser) -> Result<bool, String> {
        let v = |p: &mut lexopt::Parser| p.value().map_err(|e| e.to_string());
        let Arg::Long(long) = arg else {
            return Ok(false);
        };
        match long.as_str() {
            "redis" => self.redis = word("--redis", v(parser)?)?,
            "stream" => self.stream = Some(word("--stream", v(parser)?)?),
            "group" => self.group = word("--group", v(parser)?)?,
            "db" => self.set_sink(Sink::Sqlite(path("--db", v(parser)?)?))?,
            "postgres" => self.set_sink(Sink::Postgres(word("--postgres", v(parser)?)?))?,
            "table" => {
                let t = word("--table", v(parser)?)?;
                validate_table(&t)?;
                self.table = t;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn set_sink(&mut self, sink: Sink) -> Result<(), String> {
        if self.sink.is_some() {
            return Err("give one of --db and --postgres, once".into());
        }
        self.sink = Some(sink);
        Ok(())
    }

    fn stream(&self) -> Result<String, String> {
        self.stream
            .clone()
            .ok_or_else(|| "--stream KEY is required".into())
    }

    fn sink(&self) -> Result<Sink, String> {
        self.sink
            .clone()
            .ok_or_else(|| "give --db PATH (SQLite) or --postgres CONN (PostgreSQL)".into())
    }
}

/// What a mode's argument parsing decided (`Ok(true)`: go on, `Ok(false)`: `--help`):
/// `None` to go on, or the exit code after printing the help or the usage error.
fn help_or_usage(mode: &str, help: &str, parsed: Result<bool, String>) -> Option<ExitCode> {
    match parsed {
        Ok(true) => None,
        Ok(false) => {
            let _ = std::io::stdout().write_all(help.as_bytes());
            Some(ExitCode::SUCCESS)
        }
        Err(e) => Some(usage(mode, e)),
    }
}

fn usage(mode: &str, e: String) -> ExitCode {
    eprintln!("etl {mode}: {e}\nRun etl {mode} --help for the options.");
    ExitCode::from(exit::USAGE)
}

fn failure(mode: &str, e: &EtlError) -> ExitCode {
    eprintln!("etl {mode}: {e}");
    if matches!(
        e,
        EtlError::Database(_) | EtlError::Redis(_) | EtlError::Failed(_)
    ) {
        eprintln!("etl {mode}: what was committed stands; once fixed, run the same command again");
    }
    ExitCode::from(e.exit_code())
}

/// `etl enqueue ...`.
pub fn enqueue_main(mut parser: lexopt::Parser, interrupt: Arc<Interrupt>) -> ExitCode {
    let mut common = Common::new();
    let mut inputs = Vec::new();
    let (mut max_lag, mut batch) = (100_000, 1000);
    let parsed: Result<bool, String> = (|| {
        while let Some(arg) = next(&mut parser)? {
            if common.take(&arg, &mut parser)? {
                continue;
            }
            let v = |p: &mut lexopt::Parser| p.value().map_err(|e| e.to_string());
            match arg {
                Arg::Long(l) if l == "max-lag" => {
                    max_lag = number("--max-lag", v(&mut parser)?, 1)?
                }
                Arg::Long(l) if l == "batch-size" => {
                    batch = number("--batch-size", v(&mut parser)?, 1)? as usize
                }
                Arg::Long(l) if l == "no-progress" => {}
                Arg::Short('h') => return Ok(false),
                Arg::Long(l) if l == "help" => return Ok(false),
                Arg::Value(file) => inputs.push(InputSpec::Path(file.into())),
                other => return Err(unexpected(other)),
            }
        }
        if common.sink.is_some() || common.table != DEFAULT_TABLE {
            return Err("--db, --postgres and --table are options of work and check".into());
        }
        if inputs.is_empty() {
            return Err("give the files to enqueue".into());
        }
        Ok(true)
    })();
    if let Some(code) = help_or_usage("enqueue", ENQUEUE_HELP, parsed) {
        return code;
    }
    let stream = match common.stream() {
        Ok(s) => s,
        Err(e) => return usage("enqueue", e),
    };
    let mut config = EnqueueConfig::new(common.redis, stream.clone(), common.group, inputs);
    config.max_lag = max_lag;
    config.batch = batch;
    config.interrupt = interrupt;
    let outcome = match enqueue(config) {
        Ok(o) => o,
        Err(e) => return failure("enqueue", &e),
    };
    let mut out = std::io::stdout().lock();
    for i in &outcome.inputs {
        let state = match (i.lines, i.added) {
            (Some(n), 0) => format!("already enqueued whole ({n} lines): skipped"),
            (Some(n), _) => format!("enqueued whole: {n} lines"),
            (None, _) => format!("partial: {} lines so far", i.before + i.added),
        };
        let _ = writeln!(
            out,
            "input    {} ({}): {state}; {} added by this run",
            i.name, i.input, i.added
        );
    }
    let _ = writeln!(
        out,
        "enqueued {} lines into {stream} in {:.2} s; waited {:.2} s for the workers; \
         trimmed {} acknowledged entries",
        outcome.added(),
        outcome.elapsed.as_secs_f64(),
        outcome.waited.as_secs_f64(),
        outcome.trimmed
    );
    if outcome.interrupted {
        eprintln!(
            "etl enqueue: interrupted; what was added is counted. Run the same command to resume."
        );
        return ExitCode::from(exit::INTERRUPTED);
    }
    ExitCode::SUCCESS
}

/// `etl work ...`.
pub fn work_main(mut parser: lexopt::Parser, interrupt: Arc<Interrupt>) -> ExitCode {
    let mut common = Common::new();
    let mut consumer = None;
    let mut config = WorkConfig::new("", "", "", "", Sink::Postgres(String::new()));
    let parsed: Result<bool, String> = (|| {
        while let Some(arg) = next(&mut parser)? {
            if common.take(&arg, &mut parser)? {
                continue;
            }
            let v = |p: &mut lexopt::Parser| p.value().map_err(|e| e.to_string());
            let ms = |flag: &str, p: &mut lexopt::Parser, min| {
                Ok::<_, String>(Duration::from_millis(number(flag, v(p)?, min)?))
            };
            match arg {
                Arg::Long(l) if l == "consumer" => {
                    consumer = Some(word("--consumer", v(&mut parser)?)?)
                }
                Arg::Long(l) if l == "until-done" => config.until_done = true,
                Arg::Long(l) if l == "parsers" => {
                    config.parsers = number("--parsers", v(&mut parser)?, 1)? as usize
                }
                Arg::Long(l) if l == "batch-size" => {
                    config.batch_size = number("--batch-size", v(&mut parser)?, 1)? as usize
                }
                Arg::Long(l) if l == "batch-timeout-ms" => {
                    config.batch_timeout = ms("--batch-timeout-ms", &mut parser, 1)?
                }
                Arg::Long(l) if l == "claim-idle-ms" => {
                    config.claim_idle = ms("--claim-idle-ms", &mut parser, 1)?
                }
                Arg::Long(l) if l == "max-deliveries" => {
                    let n = number("--max-deliveries", v(&mut parser)?, 1)?;
                    config.max_deliveries = u32::try_from(n).map_err(|_| {
                        format!("--max-deliveries must be at most {}, got: {n}", u32::MAX)
                    })?;
                }
                Arg::Long(l) if l == "slow-db-ms" => {
                    config.slow_db = ms("--slow-db-ms", &mut parser, 0)?
                }
                Arg::Long(l) if l == "drain-deadline-s" => {
                    config.drain_deadline =
                        Duration::from_secs(number("--drain-deadline-s", v(&mut parser)?, 1)?)
                }
                Arg::Long(l) if l == "no-progress" => {}
                Arg::Short('h') => return Ok(false),
                Arg::Long(l) if l == "help" => return Ok(false),
                other => return Err(unexpected(other)),
            }
        }
        Ok(true)
    })();
    if let Some(code) = help_or_usage("work", WORK_HELP, parsed) {
        return code;
    }
    let checked = (|| {
        let stream = common.stream()?;
        let sink = common.sink()?;
        let consumer = consumer.ok_or("--consumer NAME is required (unique per worker)")?;
        Ok::<_, String>((stream, sink, consumer))
    })();
    let (stream, sink, consumer) = match checked {
        Ok(c) => c,
        Err(e) => return usage("work", e),
    };
    config.dead_letters = stageflow_etl::dist::dead_letter_key(&stream);
    config.redis = common.redis;
    config.stream = stream;
    config.group = common.group;
    config.consumer = consumer;
    config.sink = sink;
    config.table = common.table;
    config.interrupt = interrupt;
    eprintln!(
        "etl work: {} in group {} of {}: {} parser(s), batches of {}; Ctrl-C drains",
        config.consumer, config.group, config.stream, config.parsers, config.batch_size
    );
    let outcome = match work(config) {
        Ok(o) => o,
        Err(e) => return failure("work", &e),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", outcome.report);
    let _ = writeln!(out, "{outcome}");
    if outcome.interrupted {
        eprintln!(
            "etl work: interrupted and drained: every entry read is committed and acknowledged; \
             the rest stays pending for the other workers"
        );
        return ExitCode::from(exit::INTERRUPTED);
    }
    if outcome.source.lost > 0 {
        eprintln!(
            "etl work: {} entries were trimmed from the stream while pending: they are lost",
            outcome.source.lost
        );
        return ExitCode::from(exit::FAILED);
    }
    ExitCode::SUCCESS
}

/// `etl check ...`.
pub fn check_main(mut parser: lexopt::Parser) -> ExitCode {
    let mut common = Common::new();
    let parsed: Result<bool, String> = (|| {
        while let Some(arg) = next(&mut parser)? {
            if common.take(&arg, &mut parser)? {
                continue;
            }
            match arg {
                Arg::Long(l) if l == "no-progress" => {}
                Arg::Short('h') => return Ok(false),
                Arg::Long(l) if l == "help" => return Ok(false),
                other => return Err(unexpected(other)),
            }
        }
        Ok(true)
    })();
    if let Some(code) = help_or_usage("check", CHECK_HELP, parsed) {
        return code;
    }
    let (stream, sink) = match common.stream().and_then(|s| Ok((s, common.sink()?))) {
        Ok(c) => c,
        Err(e) => return usage("check", e),
    };
    let mut config = CheckConfig::new(common.redis, stream, common.group, sink);
    config.table = common.table;
    let report = match check(&config) {
        Ok(r) => r,
        Err(e) => return failure("check", &e),
    };
    let _ = writeln!(std::io::stdout().lock(), "{report}");
    if report.is_done() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "etl check: not done: {}",
            if !report.balanced() {
                "the counts do not check (see above)"
            } else {
                "entries are still pending or unread, or an input is not enqueued whole"
            }
        );
        ExitCode::from(exit::FAILED)
    }
}
