//! Where a stage's log lines go.
//!
//! GenStage logs through Elixir's Logger; stageflow gives every stage a [`LogSink`]
//! (default: warnings and errors to standard error) so that a program can route them
//! and a test can capture them without touching global state.

use std::fmt;
use std::sync::Arc;

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

/// A destination for log lines.
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
    write: Option<Writer>,
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogSink({})", self.stage)
    }
}

impl Default for LogSink {
    /// Warnings and errors to standard error; info lines are dropped.
    fn default() -> Self {
        LogSink {
            stage: Arc::from("stage"),
            write: None,
        }
    }
}

impl LogSink {
    /// Every line goes to `f`.
    pub fn new(f: impl Fn(&LogRecord) + Send + Sync + 'static) -> Self {
        LogSink {
            stage: Arc::from("stage"),
            write: Some(Arc::new(f)),
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
        let record = LogRecord {
            level,
            stage: self.stage.clone(),
            message: message.into(),
        };
        match &self.write {
            Some(f) => f(&record),
            None if level >= Level::Warning => eprintln!("{record}"),
            None => {}
        }
    }
}
