//! Wiring a whole topology before any event flows.
//!
//! A producer starts serving demand as soon as its first consumer asks. A short or
//! empty source can then be done, and gone, before its other consumers subscribe: the
//! late ones fail with `NoProc`, and a broadcasting source sends its first events to
//! the first subscriber only. GenStage's idiom is to start producers with
//! `demand: :accumulate` and to switch them to `:forward` once every consumer is
//! subscribed; [`Topology`] does that for you.

use std::fmt;
use std::time::Duration;

use crate::error::{CallError, OptionsError, StartError, SubscribeError};
use crate::pipeline::{Halt, Pipeline, PipelineHandle};

use super::handle::{Source, StageRef};
use super::iter::{from_iter, FromIterOptions, IterExhausted, IterProducer, StageStream};
use super::options::{ConsumerOptions, ProducerConsumerOptions, ProducerOptions};
use super::reason::{Reason, Tag};
use super::subscription::SubscribeOptions;
use super::{
    start_consumer, start_producer, start_producer_consumer, Consumer, DemandMode, HandleInfo,
    Producer, ProducerConsumer, Stage,
};

/// How long `start` waits for a held source that refused its release to finish
/// exiting, to tell a normal stop (a drain before `start`) from a failure.
const EXITING: Duration = Duration::from_secs(30);

/// How long [`Topology::start`] and an unstarted topology's drop wait for each stage
/// they stop after a failure (a stage busy in a callback stops only when it returns).
const STOP_WAIT: Duration = Duration::from_secs(5);

type Release = Box<dyn FnOnce() -> Result<(), CallError> + Send>;
type Stopper = Box<dyn Fn() + Send>;

/// Starts the stages of a topology, makes every subscription, and only then lets
/// demand reach the sources, so that no source can run out (or broadcast its first
/// events) before all its consumers are there.
///
/// Every producer started through the topology ([`producer`](Self::producer),
/// [`source`](Self::source), [`from_iter`](Self::from_iter)) starts in
/// [`DemandMode::Accumulate`]: asks are stored, nothing is produced. Producer-consumers
/// and consumers start as usual and subscribe (through their `subscribe_to` options,
/// [`StageRef::subscribe`] or [`Topology::stream`]); since their producers hold their
/// demand, nothing flows yet. [`start`](Self::start) then switches every source to
/// forward, in the order they were added, and the stored demand is served. A source
/// whose options ask for `Accumulate` themselves is left accumulating: switch it
/// yourself.
///
/// `start` returns a [`Pipeline`] of all the stages, to wait for them or drain them
/// ([`Pipeline::wait`]). Dropping a topology that was never started stops its stages.
///
/// The guarantee holds for sources that end only from `handle_demand`, as
/// [`from_iter`](crate::from_iter), [`LineSource`](crate::pipeline::LineSource) and
/// the GenStage pattern do: a source that stops on its own from `init` or a timer can
/// still be gone before its consumers subscribe.
///
/// ```
/// use stageflow::prelude::*;
///
/// struct Double;
/// impl Stage for Double { type In = u64; type Out = u64; }
/// impl ProducerConsumer for Double {
///     fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
///         ctx.emit_all(events.into_iter().map(|x| x * 2));
///     }
/// }
///
/// fn total(n: u64) -> Result<u64, Box<dyn std::error::Error>> {
///     let mut topology = Topology::new();
///     let numbers = topology.from_iter(1..=n, FromIterOptions::new())?;
///     let double = topology.producer_consumer(
///         Double,
///         ProducerConsumerOptions::new().subscribe_to(&numbers, SubscribeOptions::new().max_demand(100)),
///     )?;
///     let results = topology.stream(&double, SubscribeOptions::new())?;
///     topology.start()?; // now, and only now, demand reaches `numbers`
///     let mut sum = 0;
///     for x in results {
///         sum += x?;
///     }
///     Ok(sum)
/// }
/// assert_eq!(total(1_000)?, 1_000 * 1_001);
/// assert_eq!(total(0)?, 0); // an empty input is an empty result, never an error
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Fan-out to several producer-consumers (the ETL shape), with a consumer that
/// stops when its last producer is gone:
///
/// ```
/// use std::time::Duration;
/// use stageflow::prelude::*;
///
/// struct Parse;
/// impl Stage for Parse { type In = String; type Out = u64; }
/// impl ProducerConsumer for Parse {
///     fn handle_events(&mut self, lines: Vec<String>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
///         ctx.emit_all(lines.iter().filter_map(|l| l.parse().ok()));
///     }
/// }
/// struct Sum(u64, usize);
/// impl Stage for Sum {
///     type In = u64;
///     type Out = Never;
///     fn handle_subscribe(&mut self, _: Peer, _: &SubscriptionInfo, _: &SubscriptionRef, _: &mut Context<'_, Self>) -> Result<Demand, Reason> {
///         self.1 += 1;
///         Ok(Demand::Automatic)
///     }
///     fn handle_cancel(&mut self, _: CancelReason, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
///         self.1 -= 1;
///         if self.1 == 0 { ctx.stop(Reason::Normal); }
///     }
/// }
/// impl Consumer for Sum {
///     fn handle_events(&mut self, xs: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
///         self.0 += xs.iter().sum::<u64>();
///     }
/// }
///
/// let mut topology = Topology::new();
/// let lines = topology.from_iter(vec!["1".to_string(), "2".into(), "x".into()], FromIterOptions::new().name("lines"))?;
/// let mut sum_opts = ConsumerOptions::new().name("sum");
/// for i in 0..2 {
///     let parse = topology.producer_consumer(
///         Parse,
///         ProducerConsumerOptions::new()
///             .name(format!("parse-{i}"))
///             .subscribe_to(&lines, SubscribeOptions::new().max_demand(10)),
///     )?;
///     sum_opts = sum_opts.subscribe_to(&parse, SubscribeOptions::new().cancel(CancelMode::Transient));
/// }
/// topology.consumer(Sum(0, 0), sum_opts)?;
/// let report = topology.start()?.wait(Duration::from_secs(30));
/// assert!(report.is_complete(), "{report}");
/// assert_eq!(report.stage("sum").unwrap().events_in, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Topology {
    /// Sources to switch to forward at start, in the order they were added.
    releases: Vec<Release>,
    /// One per stage, to stop them all if the topology is dropped unstarted.
    stoppers: Vec<Stopper>,
    pipeline: Option<Pipeline>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("sources_held", &self.releases.len())
            .field("stages", &self.stoppers.len())
            .finish()
    }
}

impl Topology {
    /// An empty topology.
    pub fn new() -> Self {
        Topology {
            releases: Vec::new(),
            stoppers: Vec::new(),
            pipeline: Some(Pipeline::new()),
        }
    }

    fn pipeline(&mut self, f: impl FnOnce(Pipeline) -> Pipeline) {
        let p = self
            .pipeline
            .take()
            .expect("the pipeline is taken only by start");
        self.pipeline = Some(f(p));
    }

    fn track<S: Stage>(&mut self, stage: &StageRef<S>) {
        let me = stage.clone();
        self.stoppers.push(Box::new(move || {
            let _ = me.stop_timeout(Reason::Shutdown, STOP_WAIT);
        }));
    }

    /// Holds `stage`, a producer started in accumulate mode, and switches it to
    /// forward at [`start`](Self::start), unless `wanted` is `Accumulate` too.
    fn hold<S: Stage>(&mut self, stage: &StageRef<S>, wanted: DemandMode) {
        if wanted == DemandMode::Forward {
            let me = stage.clone();
            self.releases.push(Box::new(move || {
                match me.set_demand_mode(DemandMode::Forward) {
                    // A source halted by a drain requested before `start` stops
                    // normally while still held: there is nothing to release.
                    Err(_) if me.join_timeout(EXITING).is_some_and(|r| r.is_normal()) => Ok(()),
                    other => other,
                }
            }));
        }
    }

    /// Starts a producer, holding its demand until [`start`](Self::start). It ends
    /// when it ends (the pipeline does not know how to halt it; see
    /// [`source`](Self::source)).
    pub fn producer<S: Producer>(
        &mut self,
        stage: S,
        options: ProducerOptions<S::Out>,
    ) -> Result<StageRef<S>, StartError> {
        let wanted = options.demand_mode();
        let me = start_producer(stage, options.demand(DemandMode::Accumulate))?;
        self.hold(&me, wanted);
        self.track(&me);
        self.pipeline(|p| p.stage(&me));
        Ok(me)
    }

    /// Starts a producer that can be halted with [`Halt`] (as
    /// [`LineSource`](crate::pipeline::LineSource) and
    /// [`RetrySource`](crate::pipeline::RetrySource) can), holding its demand until
    /// [`start`](Self::start). A drain of the pipeline halts it.
    pub fn source<S: Producer + HandleInfo<Halt>>(
        &mut self,
        stage: S,
        options: ProducerOptions<S::Out>,
    ) -> Result<StageRef<S>, StartError> {
        let wanted = options.demand_mode();
        let me = start_producer(stage, options.demand(DemandMode::Accumulate))?;
        self.hold(&me, wanted);
        self.track(&me);
        self.pipeline(|p| p.source(&me));
        Ok(me)
    }

    /// Starts a producer over `iter` ([`from_iter`](crate::from_iter)), holding its
    /// demand until [`start`](Self::start). A drain of the pipeline stops it taking
    /// items: it ends after the ones it has taken.
    pub fn from_iter<I>(
        &mut self,
        iter: I,
        options: FromIterOptions<I::Item>,
    ) -> Result<StageRef<IterProducer<I::IntoIter>>, StartError>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
    {
        let (producer, on_cancel) = options.into_parts();
        let wanted = producer.demand_mode();
        let held = FromIterOptions::from_parts(producer.demand(DemandMode::Accumulate), on_cancel);
        let me = from_iter(iter, held)?;
        self.hold(&me, wanted);
        self.track(&me);
        let halt = me.clone();
        self.pipeline(|p| {
            p.source_with(&me, move || {
                // Behind the events it has emitted: they are delivered first.
                let _ = halt.async_info(IterExhausted);
            })
        });
        Ok(me)
    }

    /// Starts a producer-consumer; its `subscribe_to` subscriptions are made now.
    pub fn producer_consumer<S: ProducerConsumer>(
        &mut self,
        stage: S,
        options: ProducerConsumerOptions<S::In, S::Out>,
    ) -> Result<StageRef<S>, StartError> {
        let me = start_producer_consumer(stage, options)?;
        self.track(&me);
        self.pipeline(|p| p.stage(&me));
        Ok(me)
    }

    /// Starts a consumer; its `subscribe_to` subscriptions are made now.
    pub fn consumer<S: Consumer>(
        &mut self,
        stage: S,
        options: ConsumerOptions<S::In>,
    ) -> Result<StageRef<S>, StartError> {
        let me = start_consumer(stage, options)?;
        self.track(&me);
        self.pipeline(|p| p.stage(&me));
        Ok(me)
    }

    /// Subscribes `consumer` to `producer` now ([`StageRef::subscribe`]), for wiring
    /// that `subscribe_to` cannot express (a consumer started before its producer).
    pub fn subscribe<S: Stage>(
        &mut self,
        consumer: &StageRef<S>,
        producer: &impl Source<S::In>,
        opts: SubscribeOptions<S::In>,
    ) -> Result<Tag, SubscribeError> {
        consumer.subscribe(producer, opts)
    }

    /// A [`StageStream`] over `producer`, subscribed now: it receives events from the
    /// start, like every other consumer of the topology. Iterate it after
    /// [`start`](Self::start) (before, its `next()` waits for events that cannot come
    /// yet).
    pub fn stream<T: Send + 'static>(
        &mut self,
        producer: &impl Source<T>,
        opts: SubscribeOptions<T>,
    ) -> Result<StageStream<T>, OptionsError> {
        let mut s = StageStream::new().subscribe(producer, opts)?;
        s.connect_held();
        Ok(s)
    }

    /// Adds a stage started elsewhere (a [`ConsumerSupervisor`](crate::ConsumerSupervisor),
    /// a stage of a library with its own start function) to the pipeline, so that
    /// [`Pipeline::wait`] waits for it. If it is a producer you started in
    /// [`DemandMode::Accumulate`] so that it waits for the topology, pass
    /// `release: true`: [`start`](Self::start) switches it to forward.
    pub fn add<S: Stage>(&mut self, stage: &StageRef<S>, release: bool) {
        if release {
            self.hold(stage, DemandMode::Forward);
        }
        self.track(stage);
        self.pipeline(|p| p.stage(stage));
    }

    /// Registers the acknowledger of a source's messages with the pipeline, so that
    /// its drain waits for them and reports what stayed unacknowledged (see
    /// [`Pipeline::acknowledger`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::pipeline::{AckingSource, Acks, DeadLetters, Message};
    /// use stageflow::prelude::*;
    ///
    /// let source = AckingSource::new(0..10u32, DeadLetters::from_fn(|_| {}));
    /// let mut topology = Topology::new();
    /// topology.acknowledger("numbers", source.acknowledger());
    /// let source = topology.source(source, ProducerOptions::new().name("numbers"))?;
    /// let out = topology.stream(&source, SubscribeOptions::new())?;
    /// let pipeline = topology.start()?;
    /// for message in out {
    ///     Acks::all_successful([&message?]);
    /// }
    /// let report = pipeline.wait(Duration::from_secs(10));
    /// assert!(report.is_complete(), "{report}");
    /// assert_eq!(report.ack("numbers").unwrap().unacked, Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acknowledger(
        &mut self,
        name: impl Into<String>,
        acker: std::sync::Arc<dyn crate::pipeline::Acknowledger>,
    ) {
        let name = name.into();
        self.pipeline(|p| p.acknowledger(name, acker));
    }

    /// A handle on the pipeline that [`start`](Self::start) will return, usable before
    /// it: a Ctrl-C handler installed while the topology is wired can drain it. A
    /// drain requested before `start` halts the sources before they produce anything,
    /// so the topology then ends with nothing processed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stageflow::pipeline::LineSource;
    /// use stageflow::prelude::*;
    ///
    /// let mut topology = Topology::new();
    /// let lines = topology.source(
    ///     LineSource::new().reader("in", std::io::Cursor::new("a\nb\n")),
    ///     ProducerOptions::new().name("lines"),
    /// )?;
    /// let out = topology.stream(&lines, SubscribeOptions::new())?;
    /// let handle = topology.handle();
    /// handle.drain(); // a signal that came while the topology was being wired
    /// let pipeline = topology.start()?;
    /// assert_eq!(out.count(), 0);
    /// assert!(pipeline.wait(Duration::from_secs(10)).is_complete());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handle(&self) -> PipelineHandle {
        self.pipeline
            .as_ref()
            .expect("the pipeline is taken only by start")
            .handle()
    }

    /// Lets demand reach every source, in the order they were added, and returns the
    /// topology's stages as a [`Pipeline`].
    ///
    /// Fails only if a held source has already exited (it panicked while its
    /// consumers subscribed, say): the error names it, and every stage of the
    /// topology is stopped with [`Reason::Shutdown`].
    pub fn start(mut self) -> Result<Pipeline, CallError> {
        let releases = std::mem::take(&mut self.releases);
        for release in releases {
            if let Err(e) = release() {
                self.stop_all();
                return Err(e);
            }
        }
        self.stoppers.clear();
        Ok(self.pipeline.take().expect("start runs once"))
    }

    fn stop_all(&mut self) {
        // Consumers first: they were added after their producers.
        for stop in self.stoppers.drain(..).rev() {
            stop();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Never started: its sources hold their demand forever, so nothing would end.
        self.stop_all();
    }
}
