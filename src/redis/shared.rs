//! What the source stage, its reader thread and its acknowledger share.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustc_hash::FxHashMap;

use super::entry::StreamId;
use super::options::RedisStreamOptions;
use super::stats::Counters;

/// The reader's orders: how many entries it may still read, and whether to stop.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) credit: usize,
    pub(crate) stop: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) options: RedisStreamOptions,
    pub(crate) dead_key: String,
    pub(crate) counters: Arc<Counters>,
    /// Entries this process holds (handed out, or read and not handed out yet)
    /// and has not acknowledged, with their delivery counts. A re-read of pending
    /// entries (after a reconnect, or a reclaim that met this consumer's own slow
    /// entries) skips those, so nothing is handed out twice; a failed
    /// acknowledgement finds the count here. Locked once per batch.
    pub(crate) held: Mutex<FxHashMap<StreamId, u64>>,
    pub(crate) control: Mutex<Control>,
    pub(crate) wake: Condvar,
    /// False once the source was halted or stopped: nothing more is handed out.
    pub(crate) taking: AtomicBool,
    /// The reader connection's `CLIENT ID` (0 while unknown), for `CLIENT UNBLOCK`.
    pub(crate) reader_id: AtomicU64,
}

impl Inner {
    pub(crate) fn new(options: RedisStreamOptions) -> Self {
        Inner {
            dead_key: options.dead_letter_key(),
            options,
            counters: Arc::new(Counters::new()),
            held: Mutex::new(FxHashMap::default()),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            taking: AtomicBool::new(true),
            reader_id: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_taking(&self) -> bool {
        self.taking.load(Ordering::Acquire)
    }

    /// Gives the reader `n` more entries to read.
    pub(crate) fn add_credit(&self, n: usize) {
        let mut control = self.control.lock();
        control.credit += n;
        self.wake.notify_all();
    }

    /// Tells the reader to stop (it notices at once unless it waits on Redis).
    pub(crate) fn stop_reader(&self) {
        self.taking.store(false, Ordering::Release);
        let mut control = self.control.lock();
        control.stop = true;
        self.wake.notify_all();
    }

    /// Sleeps for `pause`, or less if the reader is told to stop; false then.
    pub(crate) fn pause(&self, pause: Duration) -> bool {
        let deadline = Instant::now() + pause;
        let mut control = self.control.lock();
        while !control.stop {
            if self.wake.wait_until(&mut control, deadline).timed_out() {
                break;
            }
        }
        !control.stop
    }

    /// Records entries as held; returns those that were not held already (the
    /// others are in this process's hands and must not be handed out twice).
    pub(crate) fn hold<T>(&self, entries: Vec<T>, key: impl Fn(&T) -> (StreamId, u64)) -> Vec<T> {
        let mut held = self.held.lock();
        let fresh: Vec<T> = entries
            .into_iter()
            .filter(|e| {
                let (id, deliveries) = key(e);
                match held.entry(id) {
                    std::collections::hash_map::Entry::Occupied(_) => false,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(deliveries);
                        true
                    }
                }
            })
            .collect();
        drop(held);
        self.counters.handed_out(fresh.len() as u64);
        fresh
    }

    /// Forgets held entries (acknowledged, dead-lettered, lost, or left pending for
    /// someone else); returns how many were held.
    pub(crate) fn release(&self, ids: impl IntoIterator<Item = StreamId>) -> usize {
        let mut held = self.held.lock();
        let n = ids
            .into_iter()
            .filter(|id| held.remove(id).is_some())
            .count();
        drop(held);
        self.counters.settled(n as u64);
        n
    }
}
