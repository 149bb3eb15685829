//! Start options of the three kinds of stage, with GenStage's defaults.

use crate::error::OptionsError;

use super::buffer::{BufferKeep, BufferSize};
use super::dispatcher::Dispatcher;
use super::handle::{Source, SourceRef};
use super::log::LogSink;
use super::snapshot::short_type_name;
use super::subscription::SubscribeOptions;
use super::DemandMode;

/// Everything `runtime::start` needs, whatever the kind.
pub(crate) struct Spec<I, O> {
    pub(crate) name: Option<String>,
    pub(crate) log: Option<LogSink>,
    pub(crate) buffer_size: BufferSize,
    pub(crate) buffer_keep: BufferKeep,
    pub(crate) demand: DemandMode,
    pub(crate) dispatcher: Option<Box<dyn Dispatcher<O>>>,
    /// The dispatcher's type, for snapshots of the topology.
    pub(crate) dispatcher_name: Option<&'static str>,
    pub(crate) subscribe_to: Vec<(SourceRef<I>, SubscribeOptions<I>)>,
}

impl<I, O> std::fmt::Debug for Spec<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .field("log", &self.log)
            .field("buffer_size", &self.buffer_size)
            .field("buffer_keep", &self.buffer_keep)
            .field("demand", &self.demand)
            .field("custom_dispatcher", &self.dispatcher.is_some())
            .field("subscribe_to", &self.subscribe_to.len())
            .finish()
    }
}

impl<I, O> Default for Spec<I, O> {
    fn default() -> Self {
        Spec {
            name: None,
            log: None,
            buffer_size: BufferSize::default(),
            buffer_keep: BufferKeep::default(),
            demand: DemandMode::Forward,
            dispatcher: None,
            dispatcher_name: None,
            subscribe_to: Vec::new(),
        }
    }
}

impl<I, O> Spec<I, O> {
    /// The spec, once every `subscribe_to` entry's options are valid.
    fn checked(self) -> Result<Self, OptionsError> {
        for (_, opts) in &self.subscribe_to {
            opts.validate()?;
        }
        Ok(self)
    }
}

/// The setters that two or three of the options types share, written once. Each
/// options type keeps its settings in a field `spec: Spec<I, O>`; `stage` adds the
/// name and log sink (every kind), `output O` the producer side's buffer and
/// dispatcher, `input I` the consumer side's subscriptions.
macro_rules! setters {
    (stage) => {
        /// The stage's name: its thread's name and the name in its log lines.
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.spec.name = Some(name.into());
            self
        }
        /// Where the stage's log lines go (default: the `log` facade, see [`LogSink`]).
        pub fn log(mut self, sink: LogSink) -> Self {
            self.spec.log = Some(sink);
            self
        }
    };
    (output $out:ty) => {
        /// What to keep when the buffer overflows (default [`BufferKeep::Last`]).
        pub fn buffer_keep(mut self, keep: BufferKeep) -> Self {
            self.spec.buffer_keep = keep;
            self
        }
        /// The dispatcher (default [`DemandDispatcher`](super::dispatcher::DemandDispatcher)).
        pub fn dispatcher<D: Dispatcher<$out>>(mut self, d: D) -> Self {
            self.spec.dispatcher = Some(Box::new(d));
            self.spec.dispatcher_name = Some(short_type_name(std::any::type_name::<D>()));
            self
        }
    };
    (input $in:ty) => {
        /// Subscribe to `producer` with `opts` when the stage starts (in order).
        pub fn subscribe_to(
            mut self,
            producer: &impl Source<$in>,
            opts: SubscribeOptions<$in>,
        ) -> Self {
            self.spec.subscribe_to.push((producer.source(), opts));
            self
        }
    };
}

/// Options of a producer. Defaults: buffer of 10 000 events keeping the last,
/// [`DemandMode::Forward`], a [`DemandDispatcher`](super::dispatcher::DemandDispatcher).
///
/// ```
/// use stageflow::{BufferKeep, BufferSize, DemandMode, ProducerOptions};
/// let o = ProducerOptions::<u64>::new()
///     .buffer_size(BufferSize::Finite(5))
///     .buffer_keep(BufferKeep::First)
///     .demand(DemandMode::Accumulate)
///     .name("numbers");
/// # let _ = o;
/// ```
pub struct ProducerOptions<T> {
    spec: Spec<super::Never, T>,
}

impl<T> std::fmt::Debug for ProducerOptions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ProducerOptions").field(&self.spec).finish()
    }
}

impl<T: Send + 'static> Default for ProducerOptions<T> {
    fn default() -> Self {
        ProducerOptions {
            spec: Spec::default(),
        }
    }
}

impl<T: Send + 'static> ProducerOptions<T> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Capacity of the output buffer (default 10 000 events).
    pub fn buffer_size(mut self, size: BufferSize) -> Self {
        self.spec.buffer_size = size;
        self
    }
    /// Initial demand mode (default [`DemandMode::Forward`]).
    pub fn demand(mut self, mode: DemandMode) -> Self {
        self.spec.demand = mode;
        self
    }
    setters!(output T);
    setters!(stage);
    pub(crate) fn into_spec(self) -> Spec<super::Never, T> {
        self.spec
    }
    /// The demand mode asked for.
    pub(crate) fn demand_mode(&self) -> DemandMode {
        self.spec.demand
    }
}

/// Options of a consumer: its name, log sink and the producers to subscribe to when it
/// starts (GenStage's `:subscribe_to`).
///
/// Unlike GenStage, which logs bad `subscribe_to` options and starts without that
/// subscription, an invalid entry makes `start_consumer` return
/// [`StartError::BadOptions`](crate::StartError::BadOptions): nothing is silently lost.
///
/// ```
/// use stageflow::prelude::*;
/// let source = from_iter(0..10u32, FromIterOptions::new())?;
/// let opts = ConsumerOptions::new()
///     .subscribe_to(&source, SubscribeOptions::new().max_demand(0));
/// struct Sink;
/// impl Stage for Sink { type In = u32; type Out = Never; }
/// impl Consumer for Sink {
///     fn handle_events(&mut self, _: Vec<u32>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
/// }
/// let err = start_consumer(Sink, opts).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "bad options: expected max_demand to be equal to or greater than 1, got: 0"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ConsumerOptions<T> {
    spec: Spec<T, super::Never>,
}

impl<T> std::fmt::Debug for ConsumerOptions<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConsumerOptions").field(&self.spec).finish()
    }
}

impl<T: Send + 'static> Default for ConsumerOptions<T> {
    fn default() -> Self {
        ConsumerOptions {
            spec: Spec::default(),
        }
    }
}

impl<T: Send + 'static> ConsumerOptions<T> {
    /// The defaults: no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }
    setters!(input T);
    setters!(stage);
    pub(crate) fn into_spec(self) -> Result<Spec<T, super::Never>, OptionsError> {
        self.spec.checked()
    }
}

/// Options of a producer-consumer: the producer options (its buffer is unbounded by
/// default, as in GenStage, because it only processes input while it has demand) and
/// the consumer options.
///
/// ```
/// use stageflow::{BufferSize, ProducerConsumerOptions};
/// let o = ProducerConsumerOptions::<u32, String>::new().buffer_size(BufferSize::Finite(100));
/// # let _ = o;
/// ```
pub struct ProducerConsumerOptions<I, O> {
    spec: Spec<I, O>,
}

impl<I, O> std::fmt::Debug for ProducerConsumerOptions<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ProducerConsumerOptions")
            .field(&self.spec)
            .finish()
    }
}

impl<I: Send + 'static, O: Send + 'static> Default for ProducerConsumerOptions<I, O> {
    fn default() -> Self {
        ProducerConsumerOptions {
            spec: Spec {
                buffer_size: BufferSize::Infinite,
                ..Spec::default()
            },
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> ProducerConsumerOptions<I, O> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    setters!(input I);
    /// Capacity of the output buffer (default unbounded).
    pub fn buffer_size(mut self, size: BufferSize) -> Self {
        self.spec.buffer_size = size;
        self
    }
    setters!(output O);
    setters!(stage);
    pub(crate) fn into_spec(self) -> Result<Spec<I, O>, OptionsError> {
        self.spec.checked()
    }
}
