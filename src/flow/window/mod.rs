//! Windows and triggers: when a reducer layer emits (Elixir Flow's `Flow.Window`).
//!
//! A [`Window`] belongs to a layer (given in the layer's [`Options`](crate::flow::Options))
//! and matters only for layers that reduce. Four kinds exist, as in Elixir Flow:
//! [`Window::global`] (one window for the whole input), [`Window::count`] (every `n`
//! incoming events of a stage), [`Window::periodic`] (processing time) and
//! [`Window::fixed`] (event time, with watermarks and allowed lateness). Triggers add
//! emissions inside a window without closing it: [`Window::trigger_every`],
//! [`Window::trigger_periodically`] and custom punctuation with [`Window::trigger`].
//!
//! Time-based windows and triggers read a [`Clock`]; tests drive them with a
//! [`ManualClock`]. Timers are checked by each stage once per round of the flow, after
//! the round's batches, so a source that blocks inside `next()` delays them (Elixir's
//! timers are messages and fire while the stage waits).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::flow::error::{invalid, FlowError};

mod clock;
pub(crate) mod entry;

pub use clock::{Clock, ManualClock, SystemClock, Unit};

use clock::whole_ms;

/// The name of a trigger, passed to `on_trigger` in [`TriggerInfo`].
///
/// ```
/// use stageflow::flow::{Flow, Options, TriggerName, Window};
/// let names: Vec<TriggerName> = Flow::from_iter(1..=4u64)
///     .partition(Options::new().stages(1).window(Window::global().trigger_every(2)))
///     .reduce(|| 0, |a, x| a + x)
///     .on_trigger(|a, info| (vec![info.trigger.clone()], a))
///     .collect();
/// assert_eq!(names, [TriggerName::Every(2), TriggerName::Every(2), TriggerName::Done]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TriggerName {
    /// The window is complete (end of input, or the window closed).
    Done,
    /// A fixed window passed its watermark but is held for allowed lateness.
    Watermark,
    /// [`Window::trigger_every`]`(n)` fired.
    Every(u64),
    /// [`Window::trigger_periodically`]`(n, unit)` fired.
    Periodically(u64, Unit),
    /// A custom trigger ([`Window::trigger`]) fired with this name.
    Named(String),
}

/// The type of a window, as in the `{type, id, trigger}` tuple of Elixir's `on_trigger/3`.
///
/// ```
/// use stageflow::flow::{Window, WindowKind};
/// assert_eq!(Window::<u8>::count(2).kind(), WindowKind::Count);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// [`Window::global`]; the id is always 0.
    Global,
    /// [`Window::count`]; the id counts windows per stage from 0.
    Count,
    /// [`Window::periodic`]; the id counts windows per stage from 0.
    Periodic,
    /// [`Window::fixed`]; the id is the window's start in milliseconds.
    Fixed,
}

/// What an `on_trigger` callback is told: which stage, which window, which trigger.
///
/// ```
/// use stageflow::flow::{Flow, Options, TriggerName, Window, WindowKind};
/// let infos: Vec<(usize, usize, WindowKind, i64)> = Flow::from_iter(1..=4u64)
///     .partition(Options::new().stages(1).window(Window::count(2)))
///     .reduce(|| 0, |a, x| a + x)
///     .on_trigger(|a, info| (vec![(info.index, info.total, info.kind, info.window)], a))
///     .collect();
/// assert_eq!(infos, [(0, 1, WindowKind::Count, 0), (0, 1, WindowKind::Count, 1), (0, 1, WindowKind::Count, 2)]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerInfo {
    /// The stage's index in its layer, `0..total`.
    pub index: usize,
    /// The number of stages in the layer.
    pub total: usize,
    /// The window type.
    pub kind: WindowKind,
    /// The window id (see [`WindowKind`]).
    pub window: i64,
    /// The trigger that fired.
    pub trigger: TriggerName,
}

/// What a custom trigger's punctuation function decides for a batch.
///
/// ```
/// use stageflow::flow::Punctuation;
/// // Keep reducing the batch, count batches in the trigger state.
/// let p: Punctuation<u8, usize> = Punctuation::Cont(vec![1, 2], 1);
/// assert!(matches!(p, Punctuation::Cont(ref e, 1) if e.len() == 2));
/// ```
#[derive(Debug)]
pub enum Punctuation<T, S> {
    /// Reduce these events (the batch itself, or a replacement; empty reduces nothing)
    /// and keep `S` as the trigger state.
    Cont(Vec<T>, S),
    /// Reduce `pre`, fire a trigger called `name`, then call the punctuation again
    /// with `pos` and `state`.
    Trigger {
        /// Name passed to `on_trigger` as [`TriggerName::Named`].
        name: String,
        /// Events reduced before the trigger fires.
        pre: Vec<T>,
        /// Events handed to the punctuation function afterwards.
        pos: Vec<T>,
        /// The new trigger state.
        state: S,
    },
}

/// Internal result of a type-erased punctuation call.
pub(crate) enum Punct<T> {
    Cont(Vec<T>),
    Trigger(TriggerName, Vec<T>, Vec<T>),
}

pub(crate) type PunctFn<T> = Box<dyn FnMut(Vec<T>) -> Punct<T> + Send>;
pub(crate) type PunctFactory<T> = Arc<dyn Fn() -> PunctFn<T> + Send + Sync>;
/// Splits a batch into runs of one fixed window: `(start, window index)` per run. One
/// dynamic call per batch; the user's `by` is inlined in the loop.
pub(crate) type ByFn<T> = Arc<dyn Fn(&[T], i64, &mut Vec<(usize, i64)>) + Send + Sync>;

pub(crate) enum Kind<T> {
    Global,
    Count(u64),
    Periodic(Duration),
    Fixed {
        duration_ms: i64,
        by: ByFn<T>,
        lateness: Duration,
    },
}

/// A window: how a reducer layer splits its input in time, and its triggers.
///
/// ```
/// use stageflow::flow::{Flow, Options, Window};
///
/// // Sum 1..=100 and emit the running state every 10 events, then at the end.
/// let window = Window::global().trigger_every(10);
/// let sums: Vec<u64> = Flow::from_iter(1..=100u64)
///     .partition(Options::new().stages(1).window(window))
///     .reduce(|| 0, |acc, x| acc + x)
///     .emit_state()
///     .collect();
/// assert_eq!(sums, [55, 210, 465, 820, 1275, 1830, 2485, 3240, 4095, 5050, 5050]);
/// ```
pub struct Window<T> {
    pub(crate) kind: Kind<T>,
    pub(crate) punct: Option<PunctFactory<T>>,
    pub(crate) periodically: Vec<(Duration, TriggerName)>,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) error: Option<FlowError>,
}

impl<T> Clone for Kind<T> {
    fn clone(&self) -> Self {
        match self {
            Kind::Global => Kind::Global,
            Kind::Count(n) => Kind::Count(*n),
            Kind::Periodic(p) => Kind::Periodic(*p),
            Kind::Fixed {
                duration_ms,
                by,
                lateness,
            } => Kind::Fixed {
                duration_ms: *duration_ms,
                by: by.clone(),
                lateness: *lateness,
            },
        }
    }
}

impl<T> Clone for Window<T> {
    fn clone(&self) -> Self {
        Window {
            kind: self.kind.clone(),
            punct: self.punct.clone(),
            periodically: self.periodically.clone(),
            clock: self.clock.clone(),
            error: self.error.clone(),
        }
    }
}

impl<T> fmt::Debug for Window<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Global => "global".to_string(),
            Kind::Count(n) => format!("count({n})"),
            Kind::Periodic(d) => format!("periodic({d:?})"),
            Kind::Fixed {
                duration_ms,
                lateness,
                ..
            } => {
                format!("fixed({duration_ms} ms, lateness {lateness:?})")
            }
        };
        f.debug_struct("Window")
            .field("kind", &kind)
            .field("custom_trigger", &self.punct.is_some())
            .field("periodically", &self.periodically)
            .finish()
    }
}

impl<T> Window<T> {
    fn new(kind: Kind<T>) -> Self {
        Window {
            kind,
            punct: None,
            periodically: Vec::new(),
            clock: None,
            error: None,
        }
    }

    /// One window for all events; it completes (trigger `Done`) at the end of input.
    ///
    /// ```
    /// use stageflow::flow::{Window, WindowKind};
    /// let w = Window::<u64>::global();
    /// assert_eq!(w.kind(), WindowKind::Global);
    /// ```
    pub fn global() -> Self {
        Window::new(Kind::Global)
    }

    /// Windows of `n` incoming events per stage (`n` must be positive).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options, Window};
    /// let sums: Vec<u64> = Flow::from_iter(1..=100u64)
    ///     .partition(Options::new().stages(1).window(Window::count(10)))
    ///     .reduce(|| 0, |acc, x| acc + x)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(sums, [55, 155, 255, 355, 455, 555, 655, 755, 855, 955, 0]);
    /// ```
    pub fn count(n: u64) -> Self {
        let mut w = Window::new(Kind::Count(n.max(1)));
        if n == 0 {
            w.error = Some(invalid("count", n, "expected a positive integer"));
        }
        w
    }

    /// Processing-time windows of `n` units per stage (`n` must be positive).
    ///
    /// ```
    /// use stageflow::flow::{Unit, Window, WindowKind};
    /// let w = Window::<u64>::periodic(100, Unit::Millisecond);
    /// assert_eq!(w.kind(), WindowKind::Periodic);
    /// ```
    pub fn periodic(n: u64, unit: Unit) -> Self {
        let mut w = Window::periodic_duration(unit.duration(n).max(Duration::from_millis(1)));
        if n == 0 {
            w.error = Some(invalid(
                "periodic",
                n,
                "expected a positive integer duration",
            ));
        }
        w
    }

    /// [`Window::periodic`] with a [`Duration`]: processing-time windows of `period`
    /// per stage (whole milliseconds, at least one).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::flow::{Flow, FlowError, Options, Window, WindowKind};
    /// let w = Window::<u64>::periodic_duration(Duration::from_millis(100));
    /// assert_eq!(w.kind(), WindowKind::Periodic);
    ///
    /// let bad = Window::periodic_duration(Duration::from_micros(10));
    /// let err = Flow::from_iter(0..3u64)
    ///     .partition(Options::new().window(bad))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .emit_state()
    ///     .try_collect::<Vec<u64>>()
    ///     .unwrap_err();
    /// assert!(matches!(err, FlowError::InvalidOption { option: "periodic", .. }));
    /// ```
    pub fn periodic_duration(period: Duration) -> Self {
        let mut w = Window::new(Kind::Periodic(period));
        w.error = whole_ms("periodic", period).err();
        w
    }

    /// Event-time windows of `n` units: an event belongs to window
    /// `by(event) / duration` (integer division truncating toward zero, as Elixir's
    /// `div`), whose id is its start in milliseconds. A stage closes a window once every
    /// upstream producer has sent an event of a later window (the watermark). After a
    /// source without a reducer the producers are the source's iterators, whose events
    /// arrive in their order however many source stages pass them on: the output does
    /// not depend on the number of threads (see the flow module docs).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options, Unit, Window};
    /// let events = vec![("a", 0), ("b", 500), ("c", 1_200)];
    /// let w = Window::fixed(1, Unit::Second, |e: &(&str, i64)| e.1);
    /// let counts: Vec<usize> = Flow::from_iter(events)
    ///     .partition(Options::new().stages(1).window(w))
    ///     .reduce(|| 0, |n, _| n + 1)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(counts, [2, 1]);
    /// ```
    pub fn fixed<F>(n: u64, unit: Unit, by: F) -> Self
    where
        F: Fn(&T) -> i64 + Send + Sync + 'static,
    {
        let mut w = Window::fixed_duration(unit.duration(n).max(Duration::from_millis(1)), by);
        if n == 0 {
            w.error = Some(invalid("fixed", n, "expected a positive integer duration"));
        }
        w
    }

    /// [`Window::fixed`] with a [`Duration`]: event-time windows `width` wide (whole
    /// milliseconds, at least one; `by` returns milliseconds, and window ids are
    /// their start in milliseconds).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::flow::{Flow, Options, Window};
    /// let w = Window::fixed_duration(Duration::from_secs(1), |e: &(&str, i64)| e.1);
    /// let counts: Vec<usize> = Flow::from_iter(vec![("a", 0), ("b", 500), ("c", 1_200)])
    ///     .partition(Options::new().stages(1).window(w))
    ///     .reduce(|| 0, |n, _| n + 1)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(counts, [2, 1]);
    /// ```
    pub fn fixed_duration<F>(width: Duration, by: F) -> Self
    where
        F: Fn(&T) -> i64 + Send + Sync + 'static,
    {
        let ms = u64::try_from(width.as_millis()).unwrap_or(u64::MAX);
        let mut w = Window::new(Kind::Fixed {
            duration_ms: ms.clamp(1, i64::MAX as u64) as i64,
            by: Arc::new(move |items: &[T], d: i64, bounds: &mut Vec<(usize, i64)>| {
                // Consecutive events mostly share a window: test the current window's
                // range and divide (slow, `d` is not a constant) only on a change.
                // Ranges follow `div` truncating toward zero (window 0 is (-d, d)).
                let (mut lo, mut hi, mut cur) = (1i64, 0i64, 0i64);
                for (i, item) in items.iter().enumerate() {
                    let t = by(item);
                    if t < lo || t > hi {
                        cur = t / d;
                        let start = cur.saturating_mul(d);
                        (lo, hi) = match cur.signum() {
                            1 => (start, start.saturating_add(d - 1)),
                            -1 => (start.saturating_sub(d - 1), start),
                            _ => (1 - d, d - 1),
                        };
                        if bounds.last().map_or(true, |&(_, j)| j != cur) {
                            bounds.push((i, cur));
                        }
                    } else if bounds.is_empty() {
                        bounds.push((i, cur));
                    }
                }
            }),
            lateness: Duration::ZERO,
        });
        w.error = whole_ms("fixed", width).err();
        w
    }

    /// How long a fixed window is kept after its watermark (processing time): it first
    /// fires `Watermark`, keeps accepting late events, and fires `Done` when the
    /// lateness has passed or the input ends. Only fixed windows accept it.
    ///
    /// ```
    /// use stageflow::flow::{Unit, Window};
    /// let w = Window::fixed(1, Unit::Hour, |t: &i64| *t).allowed_lateness(5, Unit::Minute);
    /// assert!(format!("{w:?}").contains("300s"));
    /// ```
    pub fn allowed_lateness(self, n: u64, unit: Unit) -> Self {
        self.allowed_lateness_duration(unit.duration(n))
    }

    /// [`Window::allowed_lateness`] with a [`Duration`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::flow::Window;
    /// let w = Window::fixed_duration(Duration::from_secs(3600), |t: &i64| *t)
    ///     .allowed_lateness_duration(Duration::from_secs(300));
    /// assert!(format!("{w:?}").contains("300s"));
    /// ```
    pub fn allowed_lateness_duration(mut self, by: Duration) -> Self {
        match &mut self.kind {
            Kind::Fixed { lateness, .. } => *lateness = by,
            _ => {
                self.error = Some(FlowError::Build(format!(
                    "allowed_lateness/3 not supported for window type {:?}",
                    self.kind()
                )))
            }
        }
        self
    }

    /// A custom trigger: `init` makes the trigger state at the start of every window;
    /// `punct(events, state)` sees every incoming batch (before the layer's mappers)
    /// and says what to reduce and when to fire (see [`Punctuation`]). After a
    /// trigger it is called again with `pos`, unless `pos` is empty.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options, Punctuation, Window};
    /// // Fire "even" after every batch that has only even numbers.
    /// let w = Window::global().trigger(|| (), |events: Vec<u64>, ()| {
    ///     if events.iter().all(|x| x % 2 == 0) {
    ///         Punctuation::Trigger { name: "even".into(), pre: events, pos: vec![], state: () }
    ///     } else {
    ///         Punctuation::Cont(events, ())
    ///     }
    /// });
    /// let out: Vec<u64> = Flow::from_iter(vec![2u64, 4])
    ///     .partition(Options::new().stages(1).window(w))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .emit_state()
    ///     .collect();
    /// assert_eq!(out, [6, 6]); // "even", then the end of input
    /// ```
    pub fn trigger<S, I, P>(mut self, init: I, punct: P) -> Self
    where
        S: Send + 'static,
        I: Fn() -> S + Send + Sync + 'static,
        P: Fn(Vec<T>, S) -> Punctuation<T, S> + Send + Sync + 'static,
        T: 'static,
    {
        if self.punct.is_some() {
            self.error = Some(FlowError::Build(
                "Flow.Window.trigger/3 or Flow.Window.trigger_every/2 can only be called once per window"
                    .into(),
            ));
            return self;
        }
        let punct = Arc::new(punct);
        let init = Arc::new(init);
        self.punct = Some(Arc::new(move || {
            let punct = punct.clone();
            let mut state = Some(init());
            Box::new(move |events| {
                let s = state
                    .take()
                    .expect("trigger state is put back after every call");
                match punct(events, s) {
                    Punctuation::Cont(evs, s) => {
                        state = Some(s);
                        Punct::Cont(evs)
                    }
                    Punctuation::Trigger {
                        name,
                        pre,
                        pos,
                        state: s,
                    } => {
                        state = Some(s);
                        Punct::Trigger(TriggerName::Named(name), pre, pos)
                    }
                }
            })
        }));
        self
    }

    /// Fires `Every(n)` after every `n` incoming events of a window on a stage,
    /// independent of batch boundaries (`n` must be positive).
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options, Window};
    /// let out: Vec<u64> = Flow::from_iter(1..=100u64)
    ///     .partition(Options::new().stages(1).window(Window::global().trigger_every(10)))
    ///     .reduce(|| 0, |a, x| a + x)
    ///     .on_trigger(|acc, _| (vec![acc], 0)) // emit and reset
    ///     .collect();
    /// assert_eq!(out, [55, 155, 255, 355, 455, 555, 655, 755, 855, 955, 0]);
    /// ```
    pub fn trigger_every(mut self, n: u64) -> Self
    where
        T: 'static,
    {
        if n == 0 {
            self.error = Some(invalid("trigger_every", n, "expected a positive integer"));
            return self;
        }
        if self.punct.is_some() {
            self.error = Some(FlowError::Build(
                "Flow.Window.trigger/3 or Flow.Window.trigger_every/2 can only be called once per window"
                    .into(),
            ));
            return self;
        }
        self.punct = Some(Arc::new(move || {
            let mut remaining = n;
            Box::new(move |mut events: Vec<T>| {
                let len = events.len() as u64;
                if len >= remaining {
                    let pos = events.split_off(remaining as usize);
                    remaining = n;
                    Punct::Trigger(TriggerName::Every(n), events, pos)
                } else {
                    remaining -= len;
                    Punct::Cont(events)
                }
            })
        }));
        self
    }

    /// Fires `Periodically(n, unit)` every `n` units of processing time on each stage
    /// (may be called several times).
    ///
    /// ```
    /// use stageflow::flow::{Unit, Window};
    /// let w = Window::<u64>::global().trigger_periodically(10, Unit::Second);
    /// assert!(format!("{w:?}").contains("Periodically(10, Second)"));
    /// ```
    pub fn trigger_periodically(mut self, n: u64, unit: Unit) -> Self {
        if n == 0 {
            self.error = Some(invalid(
                "trigger_periodically",
                n,
                "expected a positive integer",
            ));
            return self;
        }
        self.periodically
            .insert(0, (unit.duration(n), TriggerName::Periodically(n, unit)));
        self
    }

    /// [`Window::trigger_periodically`] with a [`Duration`] (whole milliseconds, at
    /// least one); the trigger is named `Periodically(milliseconds, Millisecond)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::flow::Window;
    /// let w = Window::<u64>::global().trigger_periodically_duration(Duration::from_secs(10));
    /// assert!(format!("{w:?}").contains("Periodically(10000, Millisecond)"));
    /// ```
    pub fn trigger_periodically_duration(mut self, every: Duration) -> Self {
        match whole_ms("trigger_periodically", every) {
            Ok(ms) => self.trigger_periodically(ms, Unit::Millisecond),
            Err(e) => {
                self.error = Some(e);
                self
            }
        }
    }

    /// Uses `clock` instead of the system clock for this window's timers.
    ///
    /// ```
    /// use stageflow::flow::{ManualClock, Unit, Window};
    /// let clock = ManualClock::new();
    /// let _w = Window::<u64>::periodic(1, Unit::Second).clock(clock.clone());
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The window's type.
    ///
    /// ```
    /// use stageflow::flow::{Window, WindowKind};
    /// assert_eq!(Window::<u8>::count(3).kind(), WindowKind::Count);
    /// ```
    pub fn kind(&self) -> WindowKind {
        match self.kind {
            Kind::Global => WindowKind::Global,
            Kind::Count(_) => WindowKind::Count,
            Kind::Periodic(_) => WindowKind::Periodic,
            Kind::Fixed { .. } => WindowKind::Fixed,
        }
    }

    pub(crate) fn has_timers(&self) -> bool {
        !self.periodically.is_empty()
            || matches!(self.kind, Kind::Periodic(_))
            || matches!(self.kind, Kind::Fixed { lateness, .. } if !lateness.is_zero())
    }
}
