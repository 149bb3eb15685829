//! A pipeline that knows its stages in order, waits for them to finish, and can be
//! drained: sources stop taking new input, everything already taken is processed to
//! the end, then every stage stops and the report says what each one processed.
//!
//! GenStage has no graceful drain (a stop loses what is buffered or in flight); this
//! one relies on two properties of the runtime: a source that stops normally does so
//! behind its last events, and a stage whose producers ended normally stops only after handling (and,
//! for producer-consumers, delivering) what it had received. So halting the sources
//! is enough: the normal end flows down the pipeline behind the last events.
//!
//! A deadline bounds the drain: stages still running then are stopped with
//! [`Reason::Shutdown`] and reported with the counters they had, so what was still in
//! flight is visible.
//!
//! Sources whose messages are acknowledged ([`Message`](super::Message)) register
//! their [`Acknowledger`] with [`Pipeline::acknowledger`]: once the stages are done,
//! the drain also waits (within the same deadline) for the acknowledgements still in
//! flight, and the report says, per source, how many stayed unacknowledged.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use parking_lot::Mutex;

use crate::observe::TopologySnapshot;
use crate::stage::handle::Shared;
use crate::stage::snapshot::{clock, stage_snapshot};
use crate::stage::{HandleInfo, Kind, Reason, Stage, StageMetrics, StageRef};

use super::ack::Acknowledger;

/// The message that asks a source to stop taking new input: it delivers what it
/// already took, then stops with [`Reason::Normal`]. Sources of this crate
/// ([`LineSource`](super::LineSource), [`RetrySource`](super::RetrySource))
/// implement `HandleInfo<Halt>`; implement it for your own sources to use
/// [`Pipeline::source`], or pass any other way to halt to
/// [`Pipeline::source_with`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Halt;

/// How long stages stopped at a drain deadline get to exit before the report gives
/// up on them, by default (a stage blocked inside a callback cannot be interrupted).
const STOP_GRACE: Duration = Duration::from_secs(5);

trait Member: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> Kind;
    fn metrics(&self) -> StageMetrics;
    fn exit_reason(&self) -> Option<Reason>;
    fn join_timeout(&self, timeout: Duration) -> Option<Reason>;
    fn watch_exit(&self, watcher: Sender<()>);
    fn stop_in_background(&self, reason: Reason);
    fn shared(&self) -> &Shared;
}

impl<S: Stage> Member for StageRef<S> {
    fn name(&self) -> &str {
        StageRef::name(self)
    }
    fn kind(&self) -> Kind {
        StageRef::kind(self)
    }
    fn metrics(&self) -> StageMetrics {
        StageRef::metrics(self)
    }
    fn exit_reason(&self) -> Option<Reason> {
        StageRef::exit_reason(self)
    }
    fn join_timeout(&self, timeout: Duration) -> Option<Reason> {
        StageRef::join_timeout(self, timeout)
    }
    fn watch_exit(&self, watcher: Sender<()>) {
        StageRef::watch_exit(self, watcher)
    }
    fn shared(&self) -> &Shared {
        &self.shared
    }
    fn stop_in_background(&self, reason: Reason) {
        // `stop` waits for the exit; the pipeline stops all late stages at once and
        // then waits for them together.
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name(format!("{}-stopper", self.name()))
            .spawn(move || {
                let _ = me.stop(reason);
            });
    }
}

type HaltFn = Box<dyn Fn() + Send + Sync>;

struct Entry {
    stage: Box<dyn Member>,
    halt: Option<HaltFn>,
}

struct Inner {
    // Locked only to add a stage, to take a snapshot, and by the rare drain request.
    stages: Mutex<Vec<Arc<Entry>>>,
    drain_requested: Mutex<Option<Instant>>,
    /// Waiting pipelines, woken by a drain request (stages wake them on exit).
    waiters: Mutex<Vec<Sender<()>>>,
    stop_grace: Mutex<Duration>,
    /// The sources' acknowledgers, by name, for the drain to wait on.
    acknowledgers: Mutex<Vec<(String, Arc<dyn Acknowledger>)>>,
}

impl Inner {
    fn stages(&self) -> Vec<Arc<Entry>> {
        self.stages.lock().clone()
    }
}

/// The stages of a pipeline, in order (sources first), to wait for, drain and report
/// on.
///
/// The simplest way to get one is to start the stages through a
/// [`Topology`](crate::Topology): it wires them all before any event flows, so a short
/// input cannot end before every consumer is subscribed, and its `start` returns the
/// pipeline, sources first. Stages started otherwise are added with
/// [`source`](Self::source), [`source_with`](Self::source_with) and
/// [`stage`](Self::stage).
///
/// ```
/// use std::time::Duration;
/// use stageflow::pipeline::LineSource;
/// use stageflow::prelude::*;
///
/// struct Count(usize);
/// impl Stage for Count { type In = stageflow::pipeline::LineEvent; type Out = Never; }
/// impl Consumer for Count {
///     fn handle_events(&mut self, e: Vec<Self::In>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
///         self.0 += e.len();
///     }
/// }
/// let mut topology = Topology::new();
/// let source = topology.source(
///     LineSource::new().reader("in", std::io::Cursor::new("a\nb\nc\n")),
///     ProducerOptions::new().name("lines"),
/// )?;
/// topology.consumer(
///     Count(0),
///     ConsumerOptions::new().name("count").subscribe_to(&source, SubscribeOptions::new()),
/// )?;
/// let pipeline = topology.start()?;
/// let report = pipeline.wait(Duration::from_secs(10));
/// assert!(report.is_complete());
/// assert_eq!(report.stage("count").unwrap().events_in, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stages = self.inner.stages();
        let names: Vec<&str> = stages.iter().map(|e| e.stage.name()).collect();
        f.debug_struct("Pipeline").field("stages", &names).finish()
    }
}

impl Pipeline {
    /// A pipeline with no stages.
    pub fn new() -> Self {
        Pipeline {
            inner: Arc::new(Inner {
                stages: Mutex::new(Vec::new()),
                drain_requested: Mutex::new(None),
                waiters: Mutex::new(Vec::new()),
                stop_grace: Mutex::new(STOP_GRACE),
                acknowledgers: Mutex::new(Vec::new()),
            }),
        }
    }

    fn push(self, entry: Entry) -> Self {
        self.inner.stages.lock().push(Arc::new(entry));
        self
    }

    /// How long stages stopped at the drain deadline get to exit before the report
    /// lists them as still running (default 5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = stageflow::pipeline::Pipeline::new().stop_grace(Duration::from_secs(1));
    /// # let _ = p;
    /// ```
    pub fn stop_grace(self, grace: Duration) -> Self {
        *self.inner.stop_grace.lock() = grace;
        self
    }

    /// Adds a source that is halted by sending it [`Halt`].
    pub fn source<S: Stage + HandleInfo<Halt>>(self, stage: &StageRef<S>) -> Self {
        let me = stage.clone();
        self.source_with(stage, move || {
            let _ = me.send_info(Halt);
        })
    }

    /// Adds a source with your own way to halt it: `halt` must make it stop taking
    /// new input and stop normally after delivering what it took.
    pub fn source_with<S: Stage>(
        self,
        stage: &StageRef<S>,
        halt: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        self.push(Entry {
            stage: Box::new(stage.clone()),
            halt: Some(Box::new(halt)),
        })
    }

    /// Adds a stage that ends when its producers end.
    pub fn stage<S: Stage>(self, stage: &StageRef<S>) -> Self {
        self.push(Entry {
            stage: Box::new(stage.clone()),
            halt: None,
        })
    }

    /// Registers the acknowledger of a source's messages under `name` (the source's,
    /// say). When the stages are done, [`wait`](Self::wait) waits for its in-flight
    /// count ([`Acknowledger::in_flight`]) to reach zero, within the drain deadline
    /// when a drain was requested (not at all otherwise: every stage ended, nothing
    /// is left to acknowledge), and the report's [`acks`](PipelineReport::acks) say
    /// what stayed unacknowledged.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::pipeline::{AckingSource, DeadLetters, Message};
    /// use stageflow::prelude::*;
    ///
    /// let source = AckingSource::new(0..10u32, DeadLetters::from_fn(|_| {}));
    /// let acker = source.acknowledger();
    /// let mut topology = Topology::new();
    /// let source = topology.source(source, ProducerOptions::new().name("numbers"))?;
    /// let out = topology.stream(&source, SubscribeOptions::new())?;
    /// let pipeline = topology.start()?.acknowledger("numbers", acker);
    /// // A sink that forgets to acknowledge:
    /// let taken: Vec<Message<u32>> = out.take(10).collect::<Result<_, _>>()?;
    /// let report = pipeline.drain(Duration::from_millis(50));
    /// assert_eq!(report.ack("numbers").unwrap().unacked, Some(10));
    /// assert!(!report.is_complete());
    /// # drop(taken);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acknowledger(self, name: impl Into<String>, acker: Arc<dyn Acknowledger>) -> Self {
        self.inner.acknowledgers.lock().push((name.into(), acker));
        self
    }

    /// A handle to request a drain from elsewhere (a Ctrl-C handler) and to read the
    /// stages' counters (a progress bar). It also sees stages added after it was
    /// taken.
    pub fn handle(&self) -> PipelineHandle {
        PipelineHandle {
            inner: self.inner.clone(),
        }
    }

    /// Halts the sources and waits for the drain, at most `deadline`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::pipeline::{LineSource, Pipeline};
    /// use stageflow::prelude::*;
    /// // An endless source: only a drain ends it.
    /// let endless = std::io::BufReader::new(std::io::repeat(b'\n'));
    /// let source = LineSource::new().reader("zeros", endless).start(ProducerOptions::new())?;
    /// let mut taken = stream(&source);
    /// assert!(taken.next().is_some());
    /// let report = Pipeline::new().source(&source).drain(Duration::from_secs(10));
    /// assert!(report.is_complete(), "{report}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn drain(self, deadline: Duration) -> PipelineReport {
        self.handle().drain();
        self.wait(deadline)
    }

    /// Waits until every stage has exited. If a drain is requested meanwhile
    /// ([`PipelineHandle::drain`]), it gets `drain_deadline` from the request; the
    /// stages still running then are stopped with [`Reason::Shutdown`]. A stage that
    /// exits with an abnormal reason (a panic, an error) requests that drain itself,
    /// so a failure never leaves the rest of the pipeline waiting forever.
    pub fn wait(self, drain_deadline: Duration) -> PipelineReport {
        let started = Instant::now();
        let inner = &self.inner;
        let entries = inner.stages();
        let grace = *inner.stop_grace.lock();
        let mut deadline_hit = false;
        let handle = self.handle();
        // Woken by every stage's exit and by a drain request: no polling.
        let (wake_tx, wake) = unbounded::<()>();
        inner.waiters.lock().push(wake_tx.clone());
        for entry in &entries {
            entry.stage.watch_exit(wake_tx.clone());
        }
        // The stages before `exited` have exited and their threads are joined.
        let mut exited = 0;
        loop {
            while exited < entries.len()
                && entries[exited].stage.join_timeout(Duration::ZERO).is_some()
            {
                exited += 1;
            }
            if exited == entries.len() {
                break;
            }
            if !handle.is_draining()
                && entries
                    .iter()
                    .any(|e| e.stage.exit_reason().is_some_and(|r| !r.is_normal()))
            {
                // A stage failed: the stages around it could wait forever (a
                // producer whose consumers are gone gets no demand), so the rest
                // of the pipeline is drained, within the deadline.
                handle.drain();
            }
            let requested = *inner.drain_requested.lock();
            match requested {
                None => {
                    let _ = wake.recv();
                }
                Some(at) => {
                    let end = at + drain_deadline;
                    if Instant::now() >= end {
                        deadline_hit = true;
                        break;
                    }
                    let _ = wake.recv_deadline(end);
                }
            }
        }
        let mut late = vec![false; entries.len()];
        let mut at_deadline = vec![None; entries.len()];
        if deadline_hit {
            for (i, entry) in entries.iter().enumerate() {
                if entry.stage.exit_reason().is_none() {
                    late[i] = true;
                    at_deadline[i] = Some(entry.stage.metrics());
                    entry.stage.stop_in_background(Reason::Shutdown);
                }
            }
            let until = Instant::now() + grace;
            for (i, entry) in entries.iter().enumerate() {
                if late[i] {
                    entry
                        .stage
                        .join_timeout(until.saturating_duration_since(Instant::now()));
                }
            }
        }
        let requested = *inner.drain_requested.lock();
        let drained = requested.is_some();
        let acks_until = requested.map_or_else(Instant::now, |at| at + drain_deadline);
        let acknowledgers = inner.acknowledgers.lock().clone();
        let acks = acknowledgers
            .iter()
            .map(|(name, acker)| AckReport {
                name: name.clone(),
                unacked: acker.in_flight().map(|f| f.wait_until_zero(acks_until)),
            })
            .collect();
        let stages = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let m = at_deadline[i].unwrap_or_else(|| entry.stage.metrics());
                StageReport {
                    name: entry.stage.name().to_string(),
                    kind: entry.stage.kind(),
                    events_in: m.events_in,
                    events_out: m.events_out,
                    buffered: m.buffered,
                    discarded: m.discarded,
                    exit: entry.stage.exit_reason(),
                    stopped_at_deadline: late[i],
                }
            })
            .collect();
        PipelineReport {
            stages,
            drained,
            deadline_hit,
            acks,
            elapsed: started.elapsed(),
        }
    }
}

/// A shareable handle to a [`Pipeline`]: request a drain, read the stages' status.
#[derive(Clone)]
pub struct PipelineHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PipelineHandle")
    }
}

/// One stage's name, kind, counters and whether it still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageStatus {
    /// The stage's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its counters now.
    pub metrics: StageMetrics,
    /// Whether it still runs.
    pub alive: bool,
}

impl PipelineHandle {
    /// Halts every source (once; later calls do nothing). Returns at once; the
    /// waiting [`Pipeline::wait`] bounds the drain by its deadline.
    ///
    /// ```
    /// let pipeline = stageflow::pipeline::Pipeline::new();
    /// let handle = pipeline.handle();
    /// assert!(!handle.is_draining());
    /// handle.drain();
    /// assert!(handle.is_draining());
    /// ```
    pub fn drain(&self) {
        {
            let mut requested = self.inner.drain_requested.lock();
            if requested.is_some() {
                return;
            }
            *requested = Some(Instant::now());
        }
        for waiter in self.inner.waiters.lock().iter() {
            let _ = waiter.send(());
        }
        for entry in &self.inner.stages() {
            if let Some(halt) = &entry.halt {
                halt();
            }
        }
    }

    /// Whether a drain was requested.
    pub fn is_draining(&self) -> bool {
        self.inner.drain_requested.lock().is_some()
    }

    /// Every stage of the pipeline and every subscription they serve, with all
    /// their counters, taken now in one call (see [`crate::observe`]). Works before
    /// the topology is started, while it runs and after it ended.
    ///
    /// ```
    /// use stageflow::prelude::*;
    ///
    /// let mut topology = Topology::new();
    /// let numbers = topology.from_iter(0..5u64, FromIterOptions::new().name("numbers"))?;
    /// let out = topology.stream(&numbers, SubscribeOptions::new().max_demand(10))?;
    /// let handle = topology.handle();
    /// let before = handle.snapshot();
    /// assert_eq!(before.stages[0].dispatcher.as_deref(), Some("DemandDispatcher"));
    /// assert_eq!(before.subscriptions[0].max_demand, 10);
    /// topology.start()?;
    /// assert_eq!(out.count(), 5);
    /// let after = handle.snapshot();
    /// assert_eq!(after.stage("numbers").unwrap().metrics.events_out, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> TopologySnapshot {
        let at = clock();
        let mut stages = Vec::new();
        let mut subscriptions = Vec::new();
        for entry in self.inner.stages() {
            let (stage, subs) = stage_snapshot(entry.stage.shared());
            stages.push(stage);
            subscriptions.extend(subs);
        }
        TopologySnapshot {
            at,
            stages,
            subscriptions,
        }
    }

    /// Every stage's status, in pipeline order.
    pub fn status(&self) -> Vec<StageStatus> {
        self.inner
            .stages()
            .iter()
            .map(|e| StageStatus {
                name: e.stage.name().to_string(),
                kind: e.stage.kind(),
                metrics: e.stage.metrics(),
                alive: e.stage.exit_reason().is_none(),
            })
            .collect()
    }
}

/// What one stage did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Events it received.
    pub events_in: u64,
    /// Events it delivered.
    pub events_out: u64,
    /// Events in its output buffer (at the deadline, for a stage stopped by it).
    pub buffered: u64,
    /// Events its output buffer dropped (its `buffer_keep` policy).
    pub discarded: u64,
    /// Its exit reason; `None` if it had not exited when the report was made (stuck
    /// in a callback after the deadline).
    pub exit: Option<Reason>,
    /// Whether the drain deadline stopped it: then its counters are those at the
    /// deadline, and what it had received but not passed on was in flight.
    pub stopped_at_deadline: bool,
}

/// What stayed unacknowledged of one source's messages when the pipeline ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckReport {
    /// The name it was registered under.
    pub name: String,
    /// Messages in flight at the end (handed out, neither acknowledged nor failed);
    /// `None` if the acknowledger keeps no count.
    pub unacked: Option<u64>,
}

/// What every stage of a pipeline did, in pipeline order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineReport {
    /// One report per stage.
    pub stages: Vec<StageReport>,
    /// Whether a drain was requested.
    pub drained: bool,
    /// Whether the drain deadline passed with stages still running.
    pub deadline_hit: bool,
    /// Per registered acknowledger ([`Pipeline::acknowledger`]), what stayed
    /// unacknowledged.
    pub acks: Vec<AckReport>,
    /// How long the pipeline was waited for.
    pub elapsed: Duration,
}

impl PipelineReport {
    /// True when every stage exited with a normal reason before any deadline, and
    /// no registered acknowledger has messages left unacknowledged.
    pub fn is_complete(&self) -> bool {
        !self.deadline_hit
            && self
                .stages
                .iter()
                .all(|s| s.exit.as_ref().is_some_and(Reason::is_normal))
            && self.acks.iter().all(|a| a.unacked.unwrap_or(0) == 0)
    }

    /// The acknowledgement report of the source registered as `name`.
    pub fn ack(&self, name: &str) -> Option<&AckReport> {
        self.acks.iter().find(|a| a.name == name)
    }

    /// The report of the stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| s.name == name)
    }
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:>12} {:>12} {:>9}  exit",
            "stage", "in", "out", "buffered"
        )?;
        for s in &self.stages {
            let exit = match &s.exit {
                Some(r) => r.to_string(),
                None => "still running".to_string(),
            };
            let late = if s.stopped_at_deadline {
                " (stopped at the drain deadline)"
            } else {
                ""
            };
            writeln!(
                f,
                "{:<20} {:>12} {:>12} {:>9}  {exit}{late}",
                s.name, s.events_in, s.events_out, s.buffered
            )?;
        }
        for a in &self.acks {
            match a.unacked {
                Some(0) => writeln!(f, "acks of {}: all acknowledged", a.name)?,
                Some(n) => writeln!(f, "acks of {}: {n} unacknowledged", a.name)?,
                None => writeln!(f, "acks of {}: not counted", a.name)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use crossbeam_channel::{bounded, Receiver, Sender};

    /// A producer that counts up forever and implements `Halt`.
    struct Numbers {
        next: u64,
        halted: bool,
    }
    #[derive(Debug)]
    struct End;
    impl Stage for Numbers {
        type In = Never;
        type Out = u64;
    }
    impl Producer for Numbers {
        fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Self>) {
            if self.halted {
                return;
            }
            ctx.emit_all(self.next..self.next + demand as u64);
            self.next += demand as u64;
        }
    }
    impl HandleInfo<Halt> for Numbers {
        fn handle_info(&mut self, _: Halt, ctx: &mut Context<'_, Self>) {
            self.halted = true;
            let _ = ctx.myself().async_info(End);
        }
    }
    impl HandleInfo<End> for Numbers {
        fn handle_info(&mut self, _: End, ctx: &mut Context<'_, Self>) {
            ctx.stop(Reason::Normal);
        }
    }

    /// Passes events on, one in, one out.
    struct Pass;
    impl Stage for Pass {
        type In = u64;
        type Out = u64;
    }
    impl ProducerConsumer for Pass {
        fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
            ctx.emit_batch(e);
        }
    }

    /// Reports each batch, then waits for permission to go on (a gate).
    struct Gated {
        seen: Sender<usize>,
        gate: Receiver<()>,
        sum: u64,
    }
    impl Stage for Gated {
        type In = u64;
        type Out = Never;
    }
    impl Consumer for Gated {
        fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
            self.sum += e.len() as u64;
            let _ = self.seen.send(e.len());
            let _ = self.gate.recv();
        }
    }

    /// Generous, for a loaded machine: only a failing test waits this long.
    const WAIT: Duration = Duration::from_secs(60);

    /// An endless source named "numbers".
    fn numbers() -> StageRef<Numbers> {
        start_producer(
            Numbers {
                next: 0,
                halted: false,
            },
            ProducerOptions::new().name("numbers"),
        )
        .unwrap()
    }

    fn build(gate: Receiver<()>) -> (Pipeline, StageRef<Numbers>, Receiver<usize>) {
        let numbers = numbers();
        let pass = start_producer_consumer(
            Pass,
            ProducerConsumerOptions::new()
                .name("pass")
                .subscribe_to(&numbers, SubscribeOptions::new().max_demand(10)),
        )
        .unwrap();
        let (seen_tx, seen) = bounded(1000);
        let sink = start_consumer(
            Gated {
                seen: seen_tx,
                gate,
                sum: 0,
            },
            ConsumerOptions::new()
                .name("sink")
                .subscribe_to(&pass, SubscribeOptions::new().max_demand(4)),
        )
        .unwrap();
        let pipeline = Pipeline::new().source(&numbers).stage(&pass).stage(&sink);
        (pipeline, numbers, seen)
    }

    #[test]
    fn drain_processes_everything_taken() {
        let (gate_tx, gate) = bounded(0);
        let (pipeline, _numbers, seen) = build(gate);
        // The sink is inside its first batch, so the pipeline is full.
        seen.recv_timeout(WAIT).expect("first batch");
        pipeline.handle().drain();
        // Let every batch through.
        std::thread::spawn(move || while gate_tx.send(()).is_ok() {});
        let report = pipeline.wait(WAIT);
        assert!(report.is_complete(), "{report}");
        let numbers = report.stage("numbers").unwrap();
        let sink = report.stage("sink").unwrap();
        assert!(numbers.events_out > 0);
        // Everything the source delivered was consumed: nothing lost.
        assert_eq!(sink.events_in, numbers.events_out, "{report}");
        assert_eq!(report.stage("pass").unwrap().events_out, numbers.events_out);
        assert!(report.drained);
    }

    #[test]
    fn deadline_stops_a_stuck_pipeline_and_reports_in_flight() {
        let (gate_tx, gate) = bounded::<()>(0);
        let (pipeline, _numbers, seen) = build(gate);
        seen.recv_timeout(WAIT).expect("first batch");
        let sink = pipeline.inner.stages()[2].clone();
        pipeline.handle().drain();
        // The sink is held inside a callback until the report is made: a deadline of
        // zero has passed at once, and the stop cannot get in within the grace.
        let report = pipeline
            .stop_grace(Duration::from_millis(50))
            .wait(Duration::ZERO);
        assert!(report.deadline_hit, "{report}");
        assert!(!report.is_complete());
        let sink_report = report.stage("sink").unwrap();
        assert!(sink_report.stopped_at_deadline, "{report}");
        assert_eq!(sink_report.exit, None, "{report}");
        assert!(report
            .to_string()
            .contains("still running (stopped at the drain deadline)"));
        let numbers = report.stage("numbers").unwrap();
        assert!(sink_report.events_in <= numbers.events_out, "{report}");
        // Opening the gate lets the stop in.
        std::thread::spawn(move || while gate_tx.send(()).is_ok() {});
        assert_eq!(sink.stage.join_timeout(WAIT), Some(Reason::Shutdown));
    }

    /// Panics on its first batch.
    struct Panicky;
    impl Stage for Panicky {
        type In = u64;
        type Out = Never;
    }
    impl Consumer for Panicky {
        fn handle_events(&mut self, _: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
            panic!("bad record");
        }
    }

    #[test]
    fn a_failed_stage_drains_the_rest_and_is_reported() {
        let numbers = numbers();
        let sink = start_consumer(
            Panicky,
            ConsumerOptions::new()
                .name("sink")
                .subscribe_to(&numbers, SubscribeOptions::new()),
        )
        .unwrap();
        // Nobody asks for a drain: the endless source ends because the sink failed.
        let report = Pipeline::new().source(&numbers).stage(&sink).wait(WAIT);
        assert!(!report.is_complete());
        assert!(!report.deadline_hit, "{report}");
        assert!(report.drained);
        assert_eq!(report.stage("numbers").unwrap().exit, Some(Reason::Normal));
        assert_eq!(
            report.stage("sink").unwrap().exit,
            Some(Reason::Panic("bad record".into()))
        );
    }

    #[test]
    fn drain_twice_is_harmless_and_empty_pipeline_completes() {
        let p = Pipeline::new();
        let h = p.handle();
        h.drain();
        h.drain();
        let r = p.wait(WAIT);
        assert!(r.is_complete() && r.stages.is_empty() && r.drained);
    }
}
