//! The producer's output buffer: events that no consumer has asked for yet, with info
//! markers that must be released in order behind the events stored before them
//! (as GenStage's buffer does).
//!
//! Events live in a `VecDeque`; each marker remembers the absolute position of the
//! event it stands behind, so inserting, evicting and taking never scan the buffer.

use std::collections::VecDeque;

/// What a producer keeps when its buffer overflows (GenStage's `:buffer_keep`).
///
/// ```
/// assert_eq!(stageflow::BufferKeep::default(), stageflow::BufferKeep::Last);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum BufferKeep {
    /// Keep the newest events: each event beyond capacity evicts the oldest (default).
    #[default]
    Last,
    /// Keep the oldest events: events beyond capacity are dropped.
    First,
}

/// How many events a producer buffers while no consumer asks for them.
///
/// `Finite(0)` is allowed and means "never buffer": events that cannot be dispatched at
/// once are discarded and counted (GenStage crashes on 0; we give it this meaning).
///
/// ```
/// use stageflow::BufferSize;
/// assert_eq!(BufferSize::default(), BufferSize::Finite(10_000));
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BufferSize {
    /// At most this many events.
    Finite(usize),
    /// No limit (the default of producer-consumers, as in GenStage).
    Infinite,
}

impl Default for BufferSize {
    fn default() -> Self {
        BufferSize::Finite(10_000)
    }
}

/// What `store` did: how many events it discarded, and which info markers were
/// released because the event they stood behind was evicted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) discarded: usize,
    pub(crate) released: Vec<u64>,
}

/// What `take` returned: events in FIFO order, then the infos that stood right behind
/// the last of them (to be released after the events are dispatched).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Taken<T> {
    pub(crate) events: Vec<T>,
    pub(crate) infos: Vec<u64>,
}

pub(crate) struct Buffer<T> {
    events: VecDeque<T>,
    /// Absolute index of `events[0]`: events ever pushed minus those in the deque.
    head: u64,
    /// `(position, info)`: release `info` once every event with index < position left.
    markers: VecDeque<(u64, u64)>,
    size: BufferSize,
    keep: BufferKeep,
}

impl<T> Buffer<T> {
    pub(crate) fn new(size: BufferSize, keep: BufferKeep) -> Self {
        Buffer {
            events: VecDeque::new(),
            head: 0,
            markers: VecDeque::new(),
            size,
            keep,
        }
    }

    /// Events held (info markers are not counted, whatever the capacity: GenStage
    /// counts markers of infinite buffers; we do not, so the estimate means one thing).
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.markers.is_empty()
    }

    fn tail(&self) -> u64 {
        self.head + self.events.len() as u64
    }

    /// Appends events, applying the keep policy on overflow.
    pub(crate) fn store(&mut self, events: Vec<T>) -> Stored {
        let mut stored = Stored::default();
        let cap = match self.size {
            BufferSize::Infinite => {
                self.events.extend(events);
                return stored;
            }
            BufferSize::Finite(cap) => cap,
        };
        match self.keep {
            BufferKeep::First => {
                let room = cap.saturating_sub(self.events.len());
                let n = events.len();
                if n > room {
                    stored.discarded = n - room;
                    self.events.extend(events.into_iter().take(room));
                } else {
                    self.events.extend(events);
                }
            }
            BufferKeep::Last => {
                let n = events.len();
                let mut iter = events.into_iter();
                if n > cap {
                    // Only the last `cap` new events can survive; the rest of the new
                    // ones and every old one are discarded.
                    let skip = n - cap;
                    stored.discarded += skip + self.events.len();
                    let evicted_old = self.events.len() as u64;
                    self.events.clear();
                    self.head += evicted_old + skip as u64;
                    for _ in 0..skip {
                        iter.next();
                    }
                } else {
                    let over = (self.events.len() + n).saturating_sub(cap);
                    stored.discarded += over;
                    self.events.drain(..over);
                    self.head += over as u64;
                }
                self.events.extend(iter);
                self.release_passed(&mut stored.released);
            }
        }
        stored
    }

    fn release_passed(&mut self, out: &mut Vec<u64>) {
        while let Some(&(pos, info)) = self.markers.front() {
            if pos <= self.head {
                out.push(info);
                self.markers.pop_front();
            } else {
                break;
            }
        }
    }

    /// Puts back at the front events just returned by `take` that could not be
    /// delivered, and the infos `take` returned with them (they stood right behind the
    /// last of these events, and stand there again).
    pub(crate) fn unshift(&mut self, events: Vec<T>, infos: Vec<u64>) {
        let n = events.len() as u64;
        self.head -= n;
        for e in events.into_iter().rev() {
            self.events.push_front(e);
        }
        let pos = self.head + n;
        for info in infos.into_iter().rev() {
            self.markers.push_front((pos, info));
        }
    }

    /// Attaches `info` behind the last buffered event. Returns false (and stores
    /// nothing) when the buffer is empty: then the info is due at once.
    pub(crate) fn attach_info(&mut self, info: u64) -> bool {
        if self.is_empty() {
            return false;
        }
        let pos = self.tail();
        self.markers.push_back((pos, info));
        true
    }

    /// Takes up to `n` events, stopping at the first info marker; returns the events
    /// and the infos standing right behind them.
    pub(crate) fn take(&mut self, n: usize) -> Taken<T> {
        let limit = match self.markers.front() {
            Some(&(pos, _)) => (pos - self.head) as usize,
            None => self.events.len(),
        };
        let k = n.min(limit);
        let events: Vec<T> = if k == self.events.len() {
            // Whole buffer: turn the deque into a Vec without copying when contiguous.
            Vec::from(std::mem::take(&mut self.events))
        } else {
            self.events.drain(..k).collect()
        };
        self.head += k as u64;
        let mut infos = Vec::new();
        self.release_passed(&mut infos);
        Taken { events, infos }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshift_restores_what_take_returned() {
        let mut b = Buffer::new(BufferSize::Finite(10), BufferKeep::Last);
        b.store(vec![1, 2]);
        assert!(b.attach_info(7));
        b.store(vec![3]);
        let t = b.take(5);
        assert_eq!((t.events.clone(), t.infos.clone()), (vec![1, 2], vec![7]));
        b.unshift(vec![2], t.infos);
        assert_eq!(b.len(), 2);
        assert_eq!(
            b.take(5),
            Taken {
                events: vec![2],
                infos: vec![7]
            }
        );
        assert_eq!(b.take(5).events, vec![3]);
    }

    #[test]
    fn keep_last_evicts_and_releases() {
        let mut b = Buffer::new(BufferSize::Finite(3), BufferKeep::Last);
        b.store(vec![1, 2]);
        assert!(b.attach_info(7));
        let s = b.store(vec![3, 4, 5]);
        assert_eq!(s.discarded, 2);
        assert_eq!(s.released, vec![7]);
        assert_eq!(b.take(10).events, vec![3, 4, 5]);
    }
}

/// Ported from elixir-lang/gen_stage 1.3.2 (commit 72198f8),
/// `test/gen_stage/buffer_test.exs`: all 10 tests, none
/// skipped. The buffer is crate-private, so the suite lives here rather than under
/// `tests/`. Each test keeps the original's name (describe + test, snake case).
///
/// Mapping: `store_temporary` is `store` (excess = `Stored::discarded`, released
/// permanents = `Stored::released`); `store_permanent_unless_empty` is `attach_info`
/// (`false` = `:empty`); `take_count_or_until_permanent` is `take` (the remaining count
/// is `n - events.len()`; `:empty` is an empty `Taken`); `estimate_size` is `len`.
/// Permanent entries are info ids; `temp`/`perm` numbers follow the originals.
#[cfg(test)]
mod buffer_test {
    use super::*;

    fn store(b: &mut Buffer<&'static str>, temps: &[&'static str]) -> Stored {
        b.store(temps.to_vec())
    }

    // describe "estimate_size/1"

    #[test]
    fn estimate_size_1_does_not_count_permanent_events_in_size_estimate() {
        let mut b = Buffer::new(BufferSize::Finite(10), BufferKeep::First);
        store(&mut b, &["temp1", "temp2"]);
        assert!(b.attach_info(3));
        assert!(b.attach_info(4));
        // Only temporary events count.
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn estimate_size_1_does_not_count_permanent_events_of_an_infinite_buffer_either() {
        // GenStage counts info markers of `:infinity` buffers (a quirk of its buffer);
        // we deliberately do not, so the estimate means "events" whatever the size.
        let mut b = Buffer::new(BufferSize::Infinite, BufferKeep::Last);
        store(&mut b, &["temp1", "temp2"]);
        assert!(b.attach_info(3));
        assert_eq!(b.len(), 2);
    }

    // describe "store_temporary/3 with :first keep strategy"

    #[test]
    fn store_temporary_3_with_first_keep_strategy_discards_excess_events_when_buffer_is_full() {
        let mut b = Buffer::new(BufferSize::Finite(3), BufferKeep::First);
        assert_eq!(store(&mut b, &["a", "b", "c"]).discarded, 0);
        assert_eq!(store(&mut b, &["d", "e", "f"]).discarded, 3);
        assert_eq!(b.len(), 3);
        let t = b.take(3);
        assert_eq!(t.events, vec!["a", "b", "c"]);
        assert!(t.infos.is_empty());
    }

    #[test]
    fn store_temporary_3_with_first_keep_strategy_handles_infinity_buffer_size() {
        let mut b = Buffer::new(BufferSize::Infinite, BufferKeep::First);
        let s = b.store((1..=1000).collect::<Vec<u32>>());
        assert_eq!(s, Stored::default());
        assert_eq!(b.len(), 1000);
    }

    // describe "store_temporary/3 with :last keep strategy"

    #[test]
    fn store_temporary_3_with_last_keep_strategy_keeps_last_events_when_buffer_overflows() {
        let mut b = Buffer::new(BufferSize::Finite(3), BufferKeep::Last);
        assert_eq!(store(&mut b, &["a", "b", "c"]).discarded, 0);
        assert_eq!(store(&mut b, &["d", "e", "f"]).discarded, 3);
        let t = b.take(3);
        assert_eq!(t.events, vec!["d", "e", "f"]);
        assert!(t.infos.is_empty());
    }

    #[test]
    fn store_temporary_3_with_last_keep_strategy_emits_permanent_events_when_they_are_displaced_by_new_temporaries(
    ) {
        let mut b = Buffer::new(BufferSize::Finite(3), BufferKeep::Last);
        store(&mut b, &["temp1", "temp2"]);
        assert!(b.attach_info(3));
        assert!(b.attach_info(4));
        // Overflowing with :last displaces the events the permanents stand behind.
        let s = store(&mut b, &["temp5", "temp6", "temp7"]);
        assert_eq!(s.discarded, 2);
        assert!(!s.released.is_empty());
        // Exactly: both, in FIFO order, and nothing is left behind.
        assert_eq!(s.released, vec![3, 4]);
        assert_eq!(
            b.take(10),
            Taken {
                events: vec!["temp5", "temp6", "temp7"],
                infos: vec![]
            }
        );
    }

    // describe "store_permanent_unless_empty/2"

    #[test]
    fn store_permanent_unless_empty_2_returns_empty_when_buffer_is_empty() {
        let mut b = Buffer::<u8>::new(BufferSize::Finite(10), BufferKeep::Last);
        assert!(!b.attach_info(1));
        assert!(b.is_empty());
    }

    // describe "take_count_or_until_permanent/2"

    #[test]
    fn take_count_or_until_permanent_2_returns_empty_when_buffer_is_empty() {
        let mut b = Buffer::<u8>::new(BufferSize::Finite(10), BufferKeep::Last);
        assert_eq!(
            b.take(5),
            Taken {
                events: vec![],
                infos: vec![]
            }
        );
    }

    #[test]
    fn take_count_or_until_permanent_2_takes_temporary_events_in_fifo_order_stopping_at_permanent_events_and_returning_them(
    ) {
        let mut b = Buffer::new(BufferSize::Finite(10), BufferKeep::First);
        store(&mut b, &["temp1", "temp2"]);
        assert!(b.attach_info(3));
        store(&mut b, &["temp4"]);
        let t = b.take(5);
        assert_eq!(t.events, vec!["temp1", "temp2"]);
        assert_eq!(t.infos, vec![3]);
        // We wanted 5, got 2 temps, stopped at the permanent.
        assert_eq!(5 - t.events.len(), 3);
    }

    #[test]
    fn take_count_or_until_permanent_2_maintains_fifo_order_for_permanent_events_stored_at_same_position(
    ) {
        let mut b = Buffer::new(BufferSize::Finite(10), BufferKeep::First);
        store(&mut b, &["temp1", "temp2"]);
        assert!(b.attach_info(3));
        assert!(b.attach_info(4));
        assert!(b.attach_info(5));
        let t = b.take(5);
        assert_eq!(t.events, vec!["temp1", "temp2"]);
        assert_eq!(t.infos, vec![3, 4, 5]);
    }

    #[test]
    fn take_count_or_until_permanent_2_interleaves_temporary_and_permanent_events_correctly_across_multiple_wheel_positions(
    ) {
        let mut b = Buffer::new(BufferSize::Finite(10), BufferKeep::First);
        store(&mut b, &["temp1", "temp2"]);
        assert!(b.attach_info(3));
        assert!(b.attach_info(4));
        store(&mut b, &["temp5", "temp6", "temp7"]);
        assert!(b.attach_info(8));
        assert!(b.attach_info(9));
        store(&mut b, &["temp10"]);
        assert!(b.attach_info(11));

        let t1 = b.take(3);
        assert_eq!(t1.events, vec!["temp1", "temp2"]);
        assert_eq!(t1.infos, vec![3, 4]);
        let t2 = b.take(4);
        assert_eq!(t2.events, vec!["temp5", "temp6", "temp7"]);
        assert_eq!(t2.infos, vec![8, 9]);
        let t3 = b.take(2);
        assert_eq!(t3.events, vec!["temp10"]);
        assert_eq!(t3.infos, vec![11]);
        assert!(b.is_empty());
    }
}
