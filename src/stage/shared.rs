//! The state of a stage shared by its thread and all its handles: identity, exit,
//! counters and the subscriptions it serves.

use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::error::{NotAlive, Operation};

use super::metrics::Counters;
use super::reason::{Kind, Reason};
use super::snapshot::SubscriptionLog;

/// State of a stage shared by its thread and all its handles.
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    exit: Mutex<Option<Reason>>,
    exited: Condvar,
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
    pub(crate) thread_id: Mutex<Option<ThreadId>>,
    pub(crate) metrics: Counters,
    /// The type of the stage's dispatcher (producers and producer-consumers).
    pub(crate) dispatcher: Option<&'static str>,
    /// The subscriptions of consumers to this stage, for snapshots of the topology.
    pub(crate) subscriptions: SubscriptionLog,
    /// Told once when the stage exits (a pipeline waiting for any of its stages).
    exit_watchers: Mutex<Vec<Sender<()>>>,
}

impl Shared {
    pub(crate) fn new(
        id: u64,
        name: Arc<str>,
        kind: Kind,
        dispatcher: Option<&'static str>,
    ) -> Self {
        Shared {
            id,
            metrics: Counters::new(name.clone(), kind),
            dispatcher,
            subscriptions: SubscriptionLog::default(),
            name,
            kind,
            exit: Mutex::new(None),
            exited: Condvar::new(),
            thread: Mutex::new(None),
            thread_id: Mutex::new(None),
            exit_watchers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn set_exit(&self, reason: Reason) {
        let mut exit = self.exit.lock();
        if exit.is_none() {
            *exit = Some(reason);
        }
        self.exited.notify_all();
        let watchers = std::mem::take(&mut *self.exit_watchers.lock());
        drop(exit);
        for watcher in watchers {
            let _ = watcher.send(());
        }
    }

    /// Sends `()` on `watcher` when the stage exits (at once if it has).
    pub(crate) fn watch_exit(&self, watcher: Sender<()>) {
        // Under the exit lock, so that an exit cannot slip between check and push.
        let exit = self.exit.lock();
        if exit.is_some() {
            let _ = watcher.send(());
        } else {
            self.exit_watchers.lock().push(watcher);
        }
    }

    pub(crate) fn exit_reason(&self) -> Option<Reason> {
        self.exit.lock().clone()
    }

    /// The error for `operation` on this stage, found not alive.
    pub(crate) fn not_alive(&self, operation: Operation) -> NotAlive {
        NotAlive {
            stage: self.name.clone(),
            kind: self.kind,
            id: self.id,
            operation,
            exit: self.exit_reason(),
        }
    }

    pub(crate) fn wait_exit(&self, deadline: Option<Instant>) -> Option<Reason> {
        let mut exit = self.exit.lock();
        while exit.is_none() {
            match deadline {
                None => self.exited.wait(&mut exit),
                Some(d) => {
                    if self.exited.wait_until(&mut exit, d).timed_out() {
                        break;
                    }
                }
            }
        }
        exit.clone()
    }
}
