//! The window logic in front of each lane: which window an event belongs to, and when a
//! window or trigger fires (the rules of each kind are on [`Window`]'s constructors).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{ByFn, Clock, Kind, Punct, PunctFactory, PunctFn, TriggerName, Window};
use crate::flow::exec::{BoxSink, LaneIn, Tag};

enum Mode<T> {
    Global,
    Count {
        n: u64,
        w: i64,
        seen: u64,
    },
    Periodic {
        period: Duration,
        w: i64,
        next_at: Duration,
    },
    Fixed {
        d: i64,
        by: ByFn<T>,
        lateness: Duration,
        /// Held window indices; `true` once the watermark fired (lateness > 0).
        held: BTreeMap<i64, bool>,
        /// Highest window index each live producer has sent (None: nothing yet).
        recent: HashMap<usize, Option<i64>>,
        /// Lowest window index whose watermark has not passed.
        next_close: Option<i64>,
        /// When held windows complete (processing time), for allowed lateness.
        deadlines: Vec<(Duration, i64)>,
    },
}

/// Whether a lane with this window and chain cannot tell batch boundaries apart (a
/// global window without punctuation or timers, no `map_batch`): then batches larger
/// than the layer's batch size are processed whole.
pub(crate) fn is_loose<T>(window: &Window<T>, exact_batches: bool) -> bool {
    matches!(window.kind, Kind::Global)
        && window.punct.is_none()
        && window.periodically.is_empty()
        && !exact_batches
}

/// One lane's input: splits batches to the layer's batch size, assigns events to
/// windows, runs the window's punctuation and timers, and drives the lane's chain.
pub(crate) struct Entry<'a, T> {
    next: BoxSink<'a, T>,
    batch_size: usize,
    mode: Mode<T>,
    punct: Option<PunctFactory<T>>,
    puncts: Vec<(i64, PunctFn<T>)>,
    clock: Option<Arc<dyn Clock>>,
    periodically: Vec<(Duration, TriggerName, Duration)>,
    /// Events of late runs dropped by fixed windows (reported in `RunReport`).
    pub(crate) dropped: Arc<std::sync::atomic::AtomicU64>,
    loose: bool,
    /// Shared with the lane's routers: the origin of the batch being processed.
    tag: Arc<Tag>,
}

impl<'a, T: Send + 'a> Entry<'a, T> {
    pub fn new(
        window: &Window<T>,
        batch_size: usize,
        producers: usize,
        next: BoxSink<'a, T>,
        dropped: Arc<std::sync::atomic::AtomicU64>,
        tag: Arc<Tag>,
    ) -> Self {
        let clock: Option<Arc<dyn Clock>> = if window.has_timers() {
            Some(
                window
                    .clock
                    .clone()
                    .unwrap_or_else(|| Arc::new(super::SystemClock::default())),
            )
        } else {
            None
        };
        let now = clock.as_ref().map(|c| c.now()).unwrap_or_default();
        let mode = match &window.kind {
            Kind::Global => Mode::Global,
            Kind::Count(n) => Mode::Count {
                n: *n,
                w: 0,
                seen: 0,
            },
            Kind::Periodic(p) => Mode::Periodic {
                period: *p,
                w: 0,
                next_at: now + *p,
            },
            Kind::Fixed {
                duration_ms,
                by,
                lateness,
            } => Mode::Fixed {
                d: *duration_ms,
                by: by.clone(),
                lateness: *lateness,
                held: BTreeMap::new(),
                recent: (0..producers).map(|p| (p, None)).collect(),
                next_close: None,
                deadlines: Vec::new(),
            },
        };
        let loose = is_loose(window, next.exact_batches());
        Entry {
            loose,
            next,
            batch_size: batch_size.max(1),
            mode,
            punct: window.punct.clone(),
            puncts: Vec::new(),
            clock,
            periodically: window
                .periodically
                .iter()
                .map(|(p, name)| (*p, name.clone(), now + *p))
                .collect(),
            dropped,
            tag,
        }
    }

    /// Runs the window's punctuation (if any) over events of window `w`.
    fn feed(&mut self, w: i64, events: Vec<T>) {
        let Some(factory) = &self.punct else {
            if !events.is_empty() {
                self.next.events(w, events);
            }
            return;
        };
        let pos = match self.puncts.iter().position(|(id, _)| *id == w) {
            Some(p) => p,
            None => {
                self.puncts.push((w, factory()));
                self.puncts.len() - 1
            }
        };
        let mut evs = events;
        loop {
            match (self.puncts[pos].1)(evs) {
                Punct::Cont(e) => {
                    if !e.is_empty() {
                        self.next.events(w, e);
                    }
                    break;
                }
                Punct::Trigger(name, pre, rest) => {
                    if !pre.is_empty() {
                        self.next.events(w, pre);
                    }
                    self.next.trigger(w, &name, false);
                    // Unlike Elixir, an empty rest is not punctuated again: a function
                    // that fires on every call would otherwise never return.
                    if rest.is_empty() {
                        break;
                    }
                    evs = rest;
                }
            }
        }
    }

    /// Completes window `w`: fires `Done` and forgets its trigger state.
    fn complete(&mut self, w: i64) {
        self.puncts.retain(|(id, _)| *id != w);
        self.next.trigger(w, &TriggerName::Done, true);
    }

    fn chunk(&mut self, from: usize, mut items: Vec<T>) {
        match &mut self.mode {
            Mode::Global => self.feed(0, items),
            Mode::Periodic { w, .. } => {
                let w = *w;
                self.feed(w, items)
            }
            Mode::Count { .. } => {
                while !items.is_empty() {
                    let Mode::Count { n, w, seen } = &mut self.mode else {
                        unreachable!()
                    };
                    let room = (*n - *seen) as usize;
                    let cur = *w;
                    if items.len() >= room {
                        let rest = items.split_off(room);
                        *w += 1;
                        *seen = 0;
                        self.feed(cur, items);
                        self.complete(cur);
                        items = rest;
                    } else {
                        *seen += items.len() as u64;
                        self.feed(cur, items);
                        break;
                    }
                }
            }
            Mode::Fixed { .. } => {
                let len = items.len();
                self.fixed_piece(from, &mut items.drain(..), len);
            }
        }
    }

    /// Fixed windows: the next `len` events of `items` form one batch. Each maximal run
    /// of consecutive events of one window goes to the chain straight from `items`
    /// (no copy into a vector of its own unless the chain needs one), then the
    /// watermark is checked, as after every batch in Elixir.
    fn fixed_piece(&mut self, from: usize, items: &mut std::vec::Drain<'_, T>, len: usize) {
        let Mode::Fixed { d, by, .. } = &mut self.mode else {
            unreachable!("fixed_piece is only called for fixed windows")
        };
        let (d, by) = (*d, by.clone());
        let mut bounds: Vec<(usize, i64)> = Vec::new();
        by(&items.as_slice()[..len], d, &mut bounds);
        for (r, &(start, idx)) in bounds.iter().enumerate() {
            let end = bounds.get(r + 1).map_or(len, |b| b.0);
            let mut run = items.by_ref().take(end - start);
            let Mode::Fixed { held, recent, .. } = &mut self.mode else {
                unreachable!()
            };
            let rec = recent.get(&from).copied().flatten();
            match held.entry(idx) {
                std::collections::btree_map::Entry::Occupied(_) => {
                    recent.insert(from, Some(rec.map_or(idx, |r| r.max(idx))));
                }
                std::collections::btree_map::Entry::Vacant(slot)
                    if rec.map_or(true, |r| idx >= r) =>
                {
                    slot.insert(false);
                    recent.insert(from, Some(idx));
                }
                std::collections::btree_map::Entry::Vacant(_) => {
                    // Late for a window that is no longer held: Flow drops it; we
                    // count it (RunReport::late_events).
                    self.dropped
                        .fetch_add((end - start) as u64, std::sync::atomic::Ordering::Relaxed);
                    run.for_each(drop);
                    continue;
                }
            }
            if self.punct.is_some() {
                self.feed(idx * d, run.collect());
            } else {
                self.next.events_from(idx * d, &mut run);
                // What the chain left (nothing, normally) is not the next run's.
                run.for_each(drop);
            }
        }
        self.watermark();
    }

    /// Closes fixed windows below the minimum of every producer's newest window.
    fn watermark(&mut self) {
        let now = self.now();
        let Mode::Fixed {
            d,
            lateness,
            held,
            recent,
            next_close,
            deadlines,
            ..
        } = &mut self.mode
        else {
            return;
        };
        if recent.is_empty() || recent.values().any(|r| r.is_none()) {
            return;
        }
        let min = recent.values().map(|r| r.unwrap()).min().unwrap();
        let lo = match (*next_close, held.keys().next()) {
            (Some(c), _) => c,
            (None, Some(&h)) => h,
            (None, None) => return,
        };
        if lo >= min {
            return;
        }
        *next_close = Some(min);
        let (d, lateness) = (*d, *lateness);
        let mut fire: Vec<(i64, bool)> = Vec::new();
        for idx in lo..min {
            if lateness.is_zero() {
                held.remove(&idx);
                fire.push((idx, true));
            } else {
                held.insert(idx, true);
                deadlines.push((now + lateness, idx));
                fire.push((idx, false));
            }
        }
        for (idx, complete) in fire {
            if complete {
                self.complete(idx * d);
            } else {
                self.next.trigger(idx * d, &TriggerName::Watermark, false);
            }
        }
    }

    fn now(&self) -> Duration {
        self.clock.as_ref().map(|c| c.now()).unwrap_or_default()
    }
}

impl<'a, T: Send + 'a> LaneIn<T> for Entry<'a, T> {
    fn batch(&mut self, from: usize, order: u64, mut items: Vec<T>) -> Vec<T> {
        self.tag.set(order, from);
        // GenStage hands a stage at most max_demand - min_demand events at a time.
        let bs = self.batch_size;
        if matches!(self.mode, Mode::Fixed { .. }) {
            // Fixed windows take each piece straight from the batch, and give the
            // batch's allocation back.
            let mut run = items.drain(..);
            while run.len() > 0 {
                let len = run.len().min(bs);
                self.fixed_piece(from, &mut run, len);
            }
            drop(run);
            return items;
        }
        if items.len() <= bs || self.loose {
            // Loose: nothing in this lane can tell batch boundaries apart (a global
            // window without punctuation or timers, no map_batch), so a larger batch
            // is processed whole, saving a copy.
            self.chunk(from, items);
            return Vec::new();
        }
        // Cut from the back so that each piece is one memcpy and the first keeps the
        // original allocation.
        let mut pieces = Vec::with_capacity(items.len() / bs + 1);
        while items.len() > bs {
            let at = (items.len() - 1) / bs * bs;
            pieces.push(items.split_off(at));
        }
        pieces.push(items);
        for piece in pieces.into_iter().rev() {
            self.chunk(from, piece);
        }
        Vec::new()
    }

    fn producer_done(&mut self, from: usize) {
        if let Mode::Fixed { recent, .. } = &mut self.mode {
            recent.remove(&from);
        }
    }

    fn source_ended(&mut self, from: usize, order: u64) {
        self.tag.set(order, from);
        self.next.producer_done(from);
    }

    fn tick(&mut self) {
        if self.clock.is_none() {
            return;
        }
        let now = self.now();
        // Periodic window completion.
        if let Mode::Periodic { period, w, next_at } = &mut self.mode {
            if now >= *next_at {
                let cur = *w;
                *w += 1;
                *next_at = now + *period;
                self.complete(cur);
            }
        }
        // Allowed lateness expiry.
        if let Mode::Fixed {
            deadlines, held, d, ..
        } = &mut self.mode
        {
            let d = *d;
            let mut due: Vec<i64> = Vec::new();
            deadlines.retain(|(at, idx)| {
                if now >= *at {
                    due.push(*idx);
                    false
                } else {
                    true
                }
            });
            due.retain(|idx| held.remove(idx).is_some());
            for idx in due {
                self.complete(idx * d);
            }
        }
        // trigger_periodically: applies to the current window, or every held fixed one.
        for k in 0..self.periodically.len() {
            if now < self.periodically[k].2 {
                continue;
            }
            self.periodically[k].2 = now + self.periodically[k].0;
            let name = self.periodically[k].1.clone();
            let targets: Vec<i64> = match &self.mode {
                Mode::Global => vec![0],
                Mode::Count { w, .. } | Mode::Periodic { w, .. } => vec![*w],
                Mode::Fixed { held, d, .. } => match (held.keys().next(), held.keys().last()) {
                    (Some(&lo), Some(&hi)) => (lo..=hi).map(|i| i * d).collect(),
                    _ => vec![],
                },
            };
            for w in targets {
                self.next.trigger(w, &name, false);
            }
        }
    }

    fn finish(&mut self) {
        match &mut self.mode {
            Mode::Global => self.complete(0),
            Mode::Count { w, .. } | Mode::Periodic { w, .. } => {
                let w = *w;
                self.complete(w)
            }
            Mode::Fixed { held, d, .. } => {
                let d = *d;
                let range = match (held.keys().next(), held.keys().last()) {
                    (Some(&lo), Some(&hi)) => Some((lo, hi)),
                    _ => None,
                };
                held.clear();
                if let Some((lo, hi)) = range {
                    for idx in lo..=hi {
                        self.complete(idx * d);
                    }
                }
            }
        }
        self.next.finish();
    }
}
