//! A wake-up thread for the time-based parts (batch timeout, rate interval, retry
//! backoff). A stage's thread blocks on its mailbox, so time can only reach it as a
//! message: the timer thread sleeps until the earliest requested instant and then
//! calls `fire`, which sends the stage an info. One timer thread per stage; it exits
//! when the stage drops its `Timer` or when `fire` reports the stage gone.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crossbeam_channel::{unbounded, RecvTimeoutError, Sender};

pub(crate) struct Timer {
    // Unbounded, yet small: stages arm at most one wake-up at a time (they re-arm
    // from the fired message), so at most a few instants are ever queued.
    tx: Sender<Instant>,
}

impl Timer {
    /// Starts the thread. `fire(now)` returns false when its stage is gone.
    pub(crate) fn start(
        name: &str,
        fire: impl Fn(Instant) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = unbounded::<Instant>();
        std::thread::Builder::new()
            .name(format!("{name}-timer"))
            .spawn(move || {
                let mut due: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
                loop {
                    let next = match due.peek() {
                        None => match rx.recv() {
                            Ok(at) => {
                                due.push(Reverse(at));
                                continue;
                            }
                            Err(_) => return,
                        },
                        Some(Reverse(at)) => *at,
                    };
                    match rx.recv_deadline(next) {
                        Ok(at) => due.push(Reverse(at)),
                        Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {
                            let now = Instant::now();
                            while due.peek().is_some_and(|Reverse(at)| *at <= now) {
                                due.pop();
                            }
                            if !fire(now) {
                                return;
                            }
                        }
                    }
                }
            })?;
        Ok(Timer { tx })
    }

    /// Wake the stage at `at` (or soon after).
    pub(crate) fn schedule(&self, at: Instant) {
        let _ = self.tx.send(at);
    }
}
