//! What the integration-test binaries share: one mailbox for what helper stages report
//! ([`Mailbox`], with ExUnit's selective receive), its `assert_receive!` family of
//! macros, one [`TIMEOUT`] for everything a test waits for, [`eventually`], log capture,
//! and the helper stages of the suites:
//! - [`gen_stage`] (re-exported here): GenStage's own test helpers, events [`V`];
//! - [`dispatch`]: the dispatcher suites' helpers, `u64` events and named consumers;
//! - [`checked`]: stages that check the demand invariant from the inside;
//! - [`pools`]: running a flow test on rayon pools of several sizes;
//! - [`examples`]: building and running the crate's examples.
//!
//! Each test binary (`tests/stage/`, `tests/flow/`, `tests/examples/`) includes this
//! module with `#[macro_use] #[path = "../support/mod.rs"] mod support;` and uses its
//! own part of it.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod checked;
pub mod dispatch;
pub mod examples;
pub mod gen_stage;
pub mod pools;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use parking_lot::Mutex;
use stageflow::log::{Level, LogRecord, LogSink};
use stageflow::prelude::*;

pub use gen_stage::*;

/// How long a test waits for anything that must happen: a message, a stage's exit, a
/// condition. ExUnit's `assert_receive` waits 500 ms; threads of a debug build on a
/// loaded 2-core machine need far more, and only a failing test ever waits this long.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a test watches for something that must not happen (ExUnit's
/// `refute_receive` waits 100 ms); also how long "nothing more comes" is watched for.
pub const QUIET: Duration = Duration::from_millis(150);

/// The test process's mailbox: helper stages send `M`s to [`Mailbox::tx`]; the test
/// receives them selectively, as ExUnit's `assert_receive` does (the first matching
/// message, wherever it is; the others stay for later).
pub struct Mailbox<M> {
    /// The "pid" to hand to helper stages.
    pub tx: Sender<M>,
    rx: Receiver<M>,
    stash: RefCell<VecDeque<M>>,
}

impl<M: Debug> Default for Mailbox<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Debug> Mailbox<M> {
    pub fn new() -> Mailbox<M> {
        let (tx, rx) = unbounded();
        Mailbox {
            tx,
            rx,
            stash: RefCell::new(VecDeque::new()),
        }
    }

    /// The "pid" to hand to helper stages.
    pub fn tx(&self) -> Sender<M> {
        self.tx.clone()
    }

    fn drain(&self) {
        let mut stash = self.stash.borrow_mut();
        while let Ok(m) = self.rx.try_recv() {
            stash.push_back(m);
        }
    }

    fn take_stashed(&self, f: &dyn Fn(&M) -> bool) -> Option<M> {
        let mut stash = self.stash.borrow_mut();
        let i = stash.iter().position(f)?;
        stash.remove(i)
    }

    /// `assert_receive`: the first message matching `f`, waiting up to `timeout`.
    pub fn receive(&self, what: &str, f: &dyn Fn(&M) -> bool, timeout: Duration) -> M {
        self.drain();
        if let Some(m) = self.take_stashed(f) {
            return m;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(m) if f(&m) => return m,
                Ok(m) => self.stash.borrow_mut().push_back(m),
                Err(_) => panic!(
                    "no message matching `{what}` within {timeout:?}; mailbox: {:#?}",
                    self.stash.borrow()
                ),
            }
        }
    }

    /// `assert_received`: the first matching message already in the mailbox.
    pub fn received(&self, what: &str, f: &dyn Fn(&M) -> bool) -> M {
        self.drain();
        match self.take_stashed(f) {
            Some(m) => m,
            None => panic!(
                "no message matching `{what}` in the mailbox: {:#?}",
                self.stash.borrow()
            ),
        }
    }

    /// `refute_received`: no matching message in the mailbox now.
    pub fn refute_received(&self, what: &str, f: &dyn Fn(&M) -> bool) {
        self.drain();
        if let Some(m) = self.stash.borrow().iter().find(|m| f(m)) {
            panic!("unexpected message matching `{what}`: {m:?}");
        }
    }

    /// `refute_receive`: no matching message arrives within `timeout`.
    pub fn refute_receive_within(&self, what: &str, f: &dyn Fn(&M) -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.refute_received(what, f);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Ok(m) = self.rx.recv_timeout(left) {
                self.stash.borrow_mut().push_back(m);
            }
        }
    }

    /// `assert_receive` with a closure, waiting up to [`TIMEOUT`].
    pub fn assert_receive(&self, f: impl Fn(&M) -> bool) -> M {
        self.receive("the expected message", &f, TIMEOUT)
    }

    /// `refute_receive` with a closure, watching for [`QUIET`].
    pub fn refute_receive(&self, f: impl Fn(&M) -> bool) {
        self.refute_receive_within("the refuted message", &f, QUIET)
    }

    /// The next message in mailbox order (a plain `receive`), if one comes in time.
    pub fn next(&self, timeout: Duration) -> Option<M> {
        if let Some(m) = self.stash.borrow_mut().pop_front() {
            return Some(m);
        }
        self.rx.recv_timeout(timeout).ok()
    }
}

/// `assert_receive inbox, pattern [if guard]` → the matched message.
macro_rules! assert_receive {
    ($inbox:expr, $($pat:tt)+) => {
        $inbox.receive(
            stringify!($($pat)+),
            &|m| matches!(m, $($pat)+),
            $crate::support::TIMEOUT,
        )
    };
}

/// `assert_received inbox, pattern [if guard]` (no waiting).
macro_rules! assert_received {
    ($inbox:expr, $($pat:tt)+) => {
        $inbox.received(
            stringify!($($pat)+),
            &|m| matches!(m, $($pat)+),
        )
    };
}

/// `refute_received inbox, pattern [if guard]` (no waiting).
macro_rules! refute_received {
    ($inbox:expr, $($pat:tt)+) => {
        $inbox.refute_received(
            stringify!($($pat)+),
            &|m| matches!(m, $($pat)+),
        )
    };
}

/// `refute_receive inbox, pattern [if guard]` (watches for [`QUIET`]).
macro_rules! refute_receive {
    ($inbox:expr, $($pat:tt)+) => {
        $inbox.refute_receive_within(
            stringify!($($pat)+),
            &|m| matches!(m, $($pat)+),
            $crate::support::QUIET,
        )
    };
}

/// ExUnit's `capture_log`, per stage: hand `sink()` to the stages whose lines matter.
#[derive(Clone, Default)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<LogRecord>>>,
}

impl LogCapture {
    pub fn new() -> LogCapture {
        LogCapture::default()
    }
    pub fn sink(&self) -> LogSink {
        let lines = self.lines.clone();
        LogSink::new(move |r| lines.lock().push(r.clone()))
    }
    /// Everything captured so far, emptying the capture.
    pub fn take(&self) -> Vec<LogRecord> {
        std::mem::take(&mut *self.lines.lock())
    }
    /// Writes a line (what a callback does with `:error_logger`).
    pub fn push(&self, level: Level, stage: &str, message: String) {
        self.lines.lock().push(LogRecord {
            level,
            stage: Arc::from(stage),
            message,
        });
    }
    /// All messages captured so far, one per line (for `=~` checks).
    pub fn text(&self) -> String {
        self.lines
            .lock()
            .iter()
            .map(|r| r.message.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Waits until `f` holds, or fails naming `what`.
pub fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits for a stage to exit and returns its reason, or fails.
pub fn exit_reason<S: Stage>(stage: &StageRef<S>) -> Reason {
    stage
        .join_timeout(TIMEOUT)
        .unwrap_or_else(|| panic!("{stage:?} did not exit within {TIMEOUT:?}"))
}
