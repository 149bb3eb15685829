//! Where a stage's log lines go.
//!
//! GenStage logs through Elixir's Logger; stageflow logs through the [`log`] facade by
//! default, so whatever logger the program installs (`env_logger`, `tracing`'s bridge,
//! ...) shows stage lines and `RUST_LOG` filters them. Every line has the target
//! [`TARGET`] and starts with the stage's name.
//!
//! A [`LogSink`] can route one stage's lines elsewhere instead: a test captures them
//! with [`LogSink::new`] without touching global state, a program without a logger can
//! keep warnings on standard error with [`LogSink::stderr`].

use std::fmt;
use std::sync::Arc;

/// The `log` target of stage lines: `RUST_LOG=stageflow::stage=info` shows them all.
pub const TARGET: &str = "stageflow::stage";

/// Severity of a log line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Expected events worth knowing about (a consumer stopping after a cancel).
    Info,
    /// Something was lost or is probably wrong (events discarded from a buffer).
    Warning,
    /// A protocol or usage error (events received in excess of demand).
    Error,
}

impl Level {
    fn to_log(self) -> log::Level {
        match self {
            Level::Info => log::Level::Info,
            Level::Warning => log::Level::Warn,
            Level::Error => log::Level::Error,
        }
    }
}

/// One log line of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// Its severity.
    pub level: Level,
    /// The stage's name (the thread name).
    pub stage: Arc<str>,
    /// The message.
    pub message: String,
}

impl fmt::Display for LogRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[stageflow {:?}] {}: {}",
            self.level, self.stage, self.message
        )
    }
}

type Writer = Arc<dyn Fn(&LogRecord) + Send + Sync>;

/// Where a stage's lines go: the [`log`] facade (the default), standard error, or a
/// function of yours.
///
/// A function sees every line, info included; a test can capture them:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use stageflow::log::{Level, LogSink};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let s = seen.clone();
/// let sink = LogSink::new(move |r| s.lock().unwrap().push(r.message.clone()));
/// sink.log(Level::Warning, "discarded 3 events");
/// assert_eq!(*seen.lock().unwrap(), vec!["discarded 3 events".to_string()]);
/// ```
#[derive(Clone)]
pub struct LogSink {
    stage: Arc<str>,
    write: Output,
}

#[derive(Clone)]
enum Output {
    /// The `log` facade.
    Facade,
    /// Warnings and errors to standard error.
    Stderr,
    Function(Writer),
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let to = match self.write {
            Output::Facade => "log",
            Output::Stderr => "stderr",
            Output::Function(_) => "function",
        };
        write!(f, "LogSink({} to {to})", self.stage)
    }
}

impl Default for LogSink {
    /// Every line to the [`log`] facade, with the target [`TARGET`], the message
    /// prefixed by the stage's name, [`Level::Warning`] as `log`'s `Warn`. Nothing shows
    /// unless the program installs a logger.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use stageflow::log::{Level, LogSink, TARGET};
    ///
    /// /// A logger keeping what it is given.
    /// struct Keep(Mutex<Vec<(log::Level, String, String)>>);
    /// impl log::Log for Keep {
    ///     fn enabled(&self, _: &log::Metadata<'_>) -> bool { true }
    ///     fn log(&self, r: &log::Record<'_>) {
    ///         let line = (r.level(), r.target().to_string(), r.args().to_string());
    ///         self.0.lock().unwrap().push(line);
    ///     }
    ///     fn flush(&self) {}
    /// }
    /// static KEEP: Keep = Keep(Mutex::new(Vec::new()));
    /// log::set_logger(&KEEP).unwrap();
    /// log::set_max_level(log::LevelFilter::Info);
    ///
    /// LogSink::default().log(Level::Warning, "discarded 3 events");
    /// assert_eq!(
    ///     *KEEP.0.lock().unwrap(),
    ///     vec![(log::Level::Warn, TARGET.to_string(), "stage: discarded 3 events".to_string())]
    /// );
    /// ```
    fn default() -> Self {
        LogSink {
            stage: Arc::from("stage"),
            write: Output::Facade,
        }
    }
}

impl LogSink {
    /// Every line goes to `f`.
    pub fn new(f: impl Fn(&LogRecord) + Send + Sync + 'static) -> Self {
        LogSink {
            stage: Arc::from("stage"),
            write: Output::Function(Arc::new(f)),
        }
    }

    /// Warnings and errors to standard error, info lines dropped, whatever logger is
    /// installed: for a program that has none.
    ///
    /// ```
    /// use stageflow::log::{Level, LogSink};
    /// // Prints "[stageflow Warning] stage: discarded 3 events" to stderr.
    /// LogSink::stderr().log(Level::Warning, "discarded 3 events");
    /// ```
    pub fn stderr() -> Self {
        LogSink {
            stage: Arc::from("stage"),
            write: Output::Stderr,
        }
    }

    /// Drops every line.
    pub fn silent() -> Self {
        LogSink::new(|_| {})
    }

    pub(crate) fn named(mut self, stage: Arc<str>) -> Self {
        self.stage = stage;
        self
    }

    /// Writes one line.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        match &self.write {
            Output::Facade => {
                let level = level.to_log();
                // A disabled level costs no formatting.
                if log::log_enabled!(target: TARGET, level) {
                    log::log!(target: TARGET, level, "{}: {}", self.stage, message.into());
                }
            }
            Output::Stderr if level < Level::Warning => {}
            Output::Stderr => eprintln!("{}", self.record(level, message)),
            Output::Function(f) => f(&self.record(level, message)),
        }
    }

    fn record(&self, level: Level, message: impl Into<String>) -> LogRecord {
        LogRecord {
            level,
            stage: self.stage.clone(),
            message: message.into(),
        }
    }
}
