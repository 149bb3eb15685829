//! Bridges to the stage layer: `from_stages`, `through_stages`, `into_stages`.

use crate::error::StartError;
use crate::flow::error::FailureSlot;
use crate::flow::exec::node::Pull;
use crate::flow::exec::{Cx, SinkFactory};
use crate::flow::{Flow, FlowError, FlowTryIter, Options, Shape};
use crate::stage::{
    from_iter, stream, CancelMode, DemandMode, FromIterOptions, IterProducer, ProducerConsumer,
    Source, SourceRef, Stage, StageRef, StageStream, SubscribeOptions,
};

/// The events of a producer stage, as a flow source iterator (what
/// [`Flow::from_stages`] reads; a failed subscription ends the flow with
/// `FlowError::Stage`).
///
/// ```
/// use stageflow::flow::{Flow, Options};
/// use stageflow::{from_iter, FromIterOptions};
/// let p = from_iter(vec![1u8, 2], FromIterOptions::new())?;
/// assert_eq!(Flow::from_stages(vec![p], Options::new()).count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct StageEvents<T: Send + 'static> {
    stream: StageStream<T>,
    failure: FailureSlot,
}

impl<T: Send + 'static> std::fmt::Debug for StageEvents<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageEvents")
            .field("stream", &self.stream)
            .finish()
    }
}

impl<T: Send + 'static> Iterator for StageEvents<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self.stream.next()? {
            Ok(x) => Some(x),
            // The stream ends here; the source node finds the failure in the slot
            // right after this pull and stops the flow with it, as a value.
            Err(e) => {
                *self.failure.lock() = Some(FlowError::stage(e));
                None
            }
        }
    }
}

/// A flow's output as an iterator for a producer stage: a failure of the flow
/// panics inside the stage, which then stops with `Reason::Panic` carrying the
/// flow's error message, so its consumers see it.
///
/// ```
/// use stageflow::flow::Flow;
/// use stageflow::{stream, DemandMode, Reason};
/// let p = Flow::from_iter(vec![1u8]).map(|_: u8| -> u8 { panic!("no") }).into_producer()?;
/// p.set_demand_mode(DemandMode::Forward)?;
/// let _ = stream(&p).count();
/// assert!(matches!(p.join(), Reason::Panic(m) if m.ends_with(": no")));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FlowEvents<T: Send + 'static> {
    iter: FlowTryIter<'static, T>,
}

impl<T: Send + 'static> std::fmt::Debug for FlowEvents<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEvents").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Iterator for FlowEvents<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        match self.iter.next()? {
            Ok(x) => Some(x),
            // The stage runtime turns the panic into `Reason::Panic` with this message
            // (an iterator producer has no other way to stop abnormally).
            Err(e) => panic!("{e}"),
        }
    }
}

/// The producer stage that runs a flow ([`Flow::into_producer`]).
///
/// ```
/// use stageflow::flow::{Flow, FlowProducer};
/// use stageflow::StageRef;
/// let p: StageRef<FlowProducer<u8>> = Flow::from_iter(vec![1u8]).into_producer()?;
/// p.stop(stageflow::Reason::Normal)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type FlowProducer<T> = IterProducer<FlowEvents<T>>;

fn stage_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> FlowError {
    FlowError::stage(e)
}

impl<T: Send + 'static> Flow<'static, T> {
    /// A flow reading running producer stages (Elixir's `from_stages/2`): one source
    /// per producer, consumed with a stage stream (GenStage's demand protocol). The
    /// flow ends when every producer has ended normally; an abnormal end stops the
    /// flow with [`FlowError::Stage`]. An empty list is an error.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// use stageflow::{from_iter, FromIterOptions};
    ///
    /// let producer = from_iter(1..=100u64, FromIterOptions::new())?;
    /// let sum: u64 = Flow::from_stages(vec![producer.clone()], Options::new()).map(|x| x * 2).sum();
    /// assert_eq!(sum, 10100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_stages<S: Source<T>>(producers: Vec<S>, opts: Options<T>) -> Flow<'static, T> {
        if producers.is_empty() {
            return crate::flow::err_flow(FlowError::Build(
                "from_stages/2 expects a non-empty list of stages as argument, got: []".into(),
            ));
        }
        let sources: Vec<SourceRef<T>> = producers.iter().map(|p| p.source()).collect();
        // Stage streams wait for other threads: the driving thread reads them (see
        // `Pull::Driver`).
        let failure = FailureSlot::default();
        let mut f = Flow::source(
            sources
                .into_iter()
                .map(|s| StageEvents {
                    stream: stream(&s),
                    failure: failure.clone(),
                })
                .collect::<Vec<_>>(),
            opts,
            Pull::Driver,
            Some(failure),
        );
        f.shape = Shape::Fresh;
        f
    }

    /// Starts a producer stage that runs this flow on its own thread and emits its
    /// output as consumers ask (demand is accumulated until you forward it with
    /// `set_demand_mode(DemandMode::Forward)`, so several consumers can subscribe
    /// first). A failing flow stops the stage with `Reason::Panic` and the message.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// use stageflow::{stream, DemandMode};
    ///
    /// let p = Flow::from_iter(1..=3u64).map(|x| x * 10).into_producer()?;
    /// p.set_demand_mode(DemandMode::Forward)?;
    /// let got: Vec<u64> = stream(&p).collect::<Result<_, _>>()?;
    /// assert_eq!(got.len(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_producer(self) -> Result<StageRef<FlowProducer<T>>, StartError> {
        from_iter(
            FlowEvents {
                iter: self.try_iter(),
            },
            FromIterOptions::new().demand(DemandMode::Accumulate),
        )
    }

    /// Runs the flow into running consumer (or producer-consumer) stages (Elixir's
    /// `into_stages/3`): starts a [`Flow::into_producer`] stage, subscribes every
    /// consumer to it with `cancel: Transient` (they keep running when the flow ends
    /// normally, and stop if it fails), then lets demand flow. Returns the producer.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    /// use stageflow::prelude::*;
    ///
    /// struct Sum(u64, std::sync::mpsc::Sender<u64>);
    /// impl Stage for Sum { type In = u64; type Out = Never; }
    /// impl Consumer for Sum {
    ///     fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
    ///         self.0 += events.iter().sum::<u64>();
    ///         if self.0 == 5050 { self.1.send(self.0).unwrap(); }
    ///     }
    /// }
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let sum = start_consumer(Sum(0, tx), ConsumerOptions::new())?;
    /// let producer = Flow::from_iter(1..=100u64).into_stages(&[&sum])?;
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(30))?, 5050);
    /// assert_eq!(producer.join(), Reason::Normal);
    /// sum.stop(Reason::Normal)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_stages<C>(
        self,
        consumers: &[&StageRef<C>],
    ) -> Result<StageRef<FlowProducer<T>>, FlowError>
    where
        C: Stage<In = T>,
    {
        let producer = self.into_producer().map_err(stage_err)?;
        for c in consumers {
            if let Err(e) = c.subscribe(
                &producer,
                SubscribeOptions::new().cancel(CancelMode::Transient),
            ) {
                let _ = producer.stop(crate::stage::Reason::Shutdown);
                return Err(stage_err(e));
            }
        }
        producer
            .set_demand_mode(DemandMode::Forward)
            .map_err(stage_err)?;
        Ok(producer)
    }

    /// Inserts running producer-consumer stages (Elixir's `through_stages/3`): when the
    /// flow runs, its output feeds a producer stage to which every given stage
    /// subscribes (permanently: each stops when the flow's output ends), and the
    /// returned flow reads their output as a new source layer.
    ///
    /// ```
    /// use stageflow::flow::{Flow, Options};
    /// use stageflow::prelude::*;
    ///
    /// struct Double;
    /// impl Stage for Double { type In = u64; type Out = u64; }
    /// impl ProducerConsumer for Double {
    ///     fn handle_events(&mut self, events: Vec<u64>, _: &SubscriptionRef, ctx: &mut Context<'_, Self>) {
    ///         ctx.emit_all(events.into_iter().map(|x| x * 2));
    ///     }
    /// }
    /// let double = start_producer_consumer(Double, ProducerConsumerOptions::new())?;
    /// let sum: u64 = Flow::from_iter(1..=100u64)
    ///     .through_stages(vec![double.clone()], Options::new())
    ///     .filter(|x| x % 4 == 0)
    ///     .sum();
    /// assert_eq!(sum, 5100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn through_stages<P>(
        self,
        stages: Vec<StageRef<P>>,
        opts: Options<P::Out>,
    ) -> Flow<'static, P::Out>
    where
        P: ProducerConsumer<In = T>,
        P::Out: Send + 'static,
    {
        if stages.is_empty() {
            return crate::flow::err_flow(FlowError::Build(
                "through_stages/2 expects a non-empty list of stages as argument, got: []".into(),
            ));
        }
        if let Err(e) = self.closable() {
            return crate::flow::err_flow(e);
        }
        let upstream = self;
        Flow {
            build: Box::new(move |tail: SinkFactory<'static, P::Out>, cx: &Cx| {
                let producer = upstream.into_producer().map_err(stage_err)?;
                for s in &stages {
                    s.subscribe(&producer, SubscribeOptions::new())
                        .map_err(stage_err)?;
                }
                producer
                    .set_demand_mode(DemandMode::Forward)
                    .map_err(stage_err)?;
                let next = Flow::from_stages(stages, opts);
                (next.build)(tail, cx)
            }),
            shape: Shape::Fresh,
            error: None,
            idle_window: false,
        }
    }
}
