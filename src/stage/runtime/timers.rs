//! A stage's timers ([`Context::send_after`](crate::Context::send_after)): messages
//! for its own `handle_info`, due at an instant. They need no thread of their own:
//! the loop waits on the mailbox until the earliest one is due, then runs it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::super::context::TimerRef;
use super::super::reason::next_id;
use super::super::Stage;
use super::InfoFn;

pub(crate) struct Timers<S: Stage> {
    /// Due instants; entries of cancelled timers stay until they reach the top.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    armed: HashMap<u64, InfoFn<S>>,
}

impl<S: Stage> Timers<S> {
    pub(crate) fn new() -> Self {
        Timers {
            due: BinaryHeap::new(),
            armed: HashMap::new(),
        }
    }

    pub(crate) fn add(&mut self, at: Instant, f: InfoFn<S>) -> TimerRef {
        let id = next_id();
        self.armed.insert(id, f);
        self.due.push(Reverse((at, id)));
        TimerRef(id)
    }

    /// True if the timer was armed (its message will now never be delivered).
    pub(crate) fn cancel(&mut self, timer: TimerRef) -> bool {
        self.armed.remove(&timer.0).is_some()
    }

    /// When the earliest armed timer is due.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.due.peek() {
            if self.armed.contains_key(id) {
                return Some(*at);
            }
            self.due.pop();
        }
        None
    }

    /// Takes the earliest timer if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<InfoFn<S>> {
        while let Some(Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                return None;
            }
            self.due.pop();
            if let Some(f) = self.armed.remove(&id) {
                return Some(f);
            }
        }
        None
    }

    pub(crate) fn clear(&mut self) {
        self.due.clear();
        self.armed.clear();
    }
}
