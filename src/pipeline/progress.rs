//! Progress of long work: events in and out per stage, rates, and an ETA when the
//! total is known. It reads the stages' counters (which the runtime updates once
//! per batch), so sampling costs the pipeline nothing; draw it however you like
//! (the examples use indicatif).

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::drain::StageStatus;

/// Rates are averaged over this much recent time: long enough to smooth batches,
/// short enough to follow a pipeline that slows down.
const WINDOW: Duration = Duration::from_secs(5);

/// Which counter measures the work done.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Counter {
    In,
    Out,
}

/// Turns successive [`StageStatus`] samples into a [`ProgressReport`].
///
/// By default the work done is the first stage's `events_out` (what the source has
/// handed on); [`Progress::measure_in`] and [`Progress::measure_out`] choose another
/// stage and counter.
///
/// ```
/// use std::time::{Duration, Instant};
/// use stageflow::pipeline::{Progress, StageStatus};
/// use stageflow::{Kind, StageMetrics};
///
/// let status = |out: u64| vec![StageStatus {
///     name: "source".into(),
///     kind: Kind::Producer,
///     metrics: StageMetrics { events_out: out, ..Default::default() },
///     alive: true,
/// }];
/// let t0 = Instant::now();
/// let mut progress = Progress::new(Some(1000));
/// progress.update_at(t0, &status(0));
/// let report = progress.update_at(t0 + Duration::from_secs(2), &status(200));
/// assert_eq!(report.done, 200);
/// assert_eq!(report.rate, 100.0);
/// assert_eq!(report.eta, Some(Duration::from_secs(8)));
/// assert_eq!(report.fraction(), Some(0.2));
/// assert_eq!(report.stages[0].rate_out, 100.0);
/// ```
#[derive(Debug)]
pub struct Progress {
    total: Option<u64>,
    stage: usize,
    counter: Counter,
    started: Option<Instant>,
    samples: VecDeque<(Instant, Vec<(u64, u64)>)>,
}

/// Where a pipeline stands.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressReport {
    /// Work done (the measured counter).
    pub done: u64,
    /// The total, when known.
    pub total: Option<u64>,
    /// Time since the first sample.
    pub elapsed: Duration,
    /// Work done per second, over the last few seconds.
    pub rate: f64,
    /// Time left at the current rate, when the total is known and the rate is not 0.
    pub eta: Option<Duration>,
    /// Every stage, in pipeline order.
    pub stages: Vec<StageProgress>,
}

/// One stage's counters and rates.
#[derive(Clone, Debug, PartialEq)]
pub struct StageProgress {
    /// The stage's name.
    pub name: String,
    /// Events received so far.
    pub events_in: u64,
    /// Events delivered so far.
    pub events_out: u64,
    /// Events received per second, recently.
    pub rate_in: f64,
    /// Events delivered per second, recently.
    pub rate_out: f64,
    /// Whether it still runs.
    pub alive: bool,
}

impl Progress {
    /// Progress towards `total` units of work (`None`: unknown, no ETA).
    pub fn new(total: Option<u64>) -> Self {
        Progress {
            total,
            stage: 0,
            counter: Counter::Out,
            started: None,
            samples: VecDeque::new(),
        }
    }

    /// Measure the work done by the `events_in` of stage number `stage` (0-based, in
    /// pipeline order).
    pub fn measure_in(mut self, stage: usize) -> Self {
        self.stage = stage;
        self.counter = Counter::In;
        self
    }

    /// Measure the work done by the `events_out` of stage number `stage`.
    pub fn measure_out(mut self, stage: usize) -> Self {
        self.stage = stage;
        self.counter = Counter::Out;
        self
    }

    /// Samples `stages` now.
    pub fn update(&mut self, stages: &[StageStatus]) -> ProgressReport {
        self.update_at(Instant::now(), stages)
    }

    /// Samples `stages` as of `now` (for tests and replays).
    pub fn update_at(&mut self, now: Instant, stages: &[StageStatus]) -> ProgressReport {
        let started = *self.started.get_or_insert(now);
        let counts: Vec<(u64, u64)> = stages
            .iter()
            .map(|s| (s.metrics.events_in, s.metrics.events_out))
            .collect();
        // Keep one sample older than the window, so rates cover the whole window.
        while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
        let rates = match self.samples.front() {
            Some((then, old)) if now > *then => {
                let secs = now.duration_since(*then).as_secs_f64();
                let rates: Vec<(f64, f64)> = counts
                    .iter()
                    .enumerate()
                    .map(|(i, &(cin, cout))| {
                        let (oin, oout) = old.get(i).copied().unwrap_or((0, 0));
                        (
                            cin.saturating_sub(oin) as f64 / secs,
                            cout.saturating_sub(oout) as f64 / secs,
                        )
                    })
                    .collect();
                rates
            }
            _ => vec![(0.0, 0.0); counts.len()],
        };
        self.samples.push_back((now, counts.clone()));
        let pick = |(i, o): (u64, u64)| match self.counter {
            Counter::In => i,
            Counter::Out => o,
        };
        let done = counts.get(self.stage).copied().map(pick).unwrap_or(0);
        let rate = rates
            .get(self.stage)
            .map(|&(i, o)| match self.counter {
                Counter::In => i,
                Counter::Out => o,
            })
            .unwrap_or(0.0);
        let eta = match self.total {
            Some(total) if rate > 0.0 => {
                Duration::try_from_secs_f64(total.saturating_sub(done) as f64 / rate).ok()
            }
            _ => None,
        };
        let stages = stages
            .iter()
            .zip(rates)
            .map(|(s, (rate_in, rate_out))| StageProgress {
                name: s.name.clone(),
                events_in: s.metrics.events_in,
                events_out: s.metrics.events_out,
                rate_in,
                rate_out,
                alive: s.alive,
            })
            .collect();
        ProgressReport {
            done,
            total: self.total,
            elapsed: now.duration_since(started),
            rate,
            eta,
            stages,
        }
    }
}

impl ProgressReport {
    /// `done / total`, when the total is known and not 0.
    pub fn fraction(&self) -> Option<f64> {
        match self.total {
            Some(t) if t > 0 => Some((self.done as f64 / t as f64).min(1.0)),
            _ => None,
        }
    }

    /// One short line per stage: `name in→out (rate/s)`, joined by `" | "`.
    ///
    /// ```
    /// use stageflow::pipeline::{ProgressReport, StageProgress};
    /// let r = ProgressReport {
    ///     done: 10, total: None, elapsed: Default::default(), rate: 0.0, eta: None,
    ///     stages: vec![StageProgress {
    ///         name: "parse".into(), events_in: 10, events_out: 9,
    ///         rate_in: 5.0, rate_out: 4.5, alive: true,
    ///     }],
    /// };
    /// assert_eq!(r.stage_summary(), "parse 10→9 (4/s)");
    /// ```
    pub fn stage_summary(&self) -> String {
        self.stages
            .iter()
            .map(|s| {
                format!(
                    "{} {}→{} ({:.0}/s)",
                    s.name,
                    s.events_in,
                    s.events_out,
                    s.rate_out.floor()
                )
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl fmt::Display for ProgressReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.total {
            Some(t) => write!(f, "{}/{t}", self.done)?,
            None => write!(f, "{}", self.done)?,
        }
        if let Some(p) = self.fraction() {
            write!(f, " ({:.1}%)", p * 100.0)?;
        }
        write!(f, ", {:.0}/s", self.rate)?;
        if let Some(eta) = self.eta {
            write!(f, ", ETA {}s", eta.as_secs())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, StageMetrics};

    fn st(pairs: &[(u64, u64)]) -> Vec<StageStatus> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, &(events_in, events_out))| StageStatus {
                name: format!("s{i}"),
                kind: Kind::ProducerConsumer,
                metrics: StageMetrics {
                    events_in,
                    events_out,
                    ..Default::default()
                },
                alive: true,
            })
            .collect()
    }

    #[test]
    fn rate_follows_the_recent_window() {
        let t0 = Instant::now();
        let mut p = Progress::new(None).measure_in(1);
        let first = p.update_at(t0, &st(&[(0, 0), (0, 0)]));
        assert_eq!((first.done, first.rate, first.eta), (0, 0.0, None));
        // Fast at first: 1000/s for 10 s.
        for s in 1..=10u64 {
            p.update_at(t0 + Duration::from_secs(s), &st(&[(0, 0), (s * 1000, 0)]));
        }
        // Then slow: 10/s. After more than a window, the rate is the slow one.
        let mut r = None;
        for s in 1..=7u64 {
            let n = 10_000 + s * 10;
            r = Some(p.update_at(t0 + Duration::from_secs(10 + s), &st(&[(0, 0), (n, 0)])));
        }
        let r = r.unwrap();
        assert_eq!(r.done, 10_070);
        assert!((r.rate - 10.0).abs() < 1e-9, "{}", r.rate);
        assert_eq!(r.elapsed, Duration::from_secs(17));
        assert_eq!(r.to_string(), "10070, 10/s");
    }

    #[test]
    fn eta_and_display_with_a_total() {
        let t0 = Instant::now();
        let mut p = Progress::new(Some(100));
        p.update_at(t0, &st(&[(0, 0)]));
        let r = p.update_at(t0 + Duration::from_secs(1), &st(&[(0, 25)]));
        assert_eq!(r.eta, Some(Duration::from_secs(3)));
        assert_eq!(r.to_string(), "25/100 (25.0%), 25/s, ETA 3s");
        // A stage index beyond the pipeline measures nothing rather than panicking.
        let mut q = Progress::new(Some(10)).measure_out(9);
        assert_eq!(q.update_at(t0, &st(&[(1, 1)])).done, 0);
        assert_eq!(Progress::new(Some(0)).update_at(t0, &[]).fraction(), None);
    }
}
