//! The error type of the Flow layer.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a flow could not be built or did not finish.
///
/// Build errors (the boundary rule of a layer, bad options) are found before any event
/// runs; the others end a running flow. Every consumer has a `try_` form returning this
/// error. The plain forms (`collect`, `sum`, `run`, iterating with `for x in flow`, ...)
/// re-raise a panic of a user closure with its own payload, as rayon does (so
/// `catch_unwind` and the panic hook see the value the closure panicked with), and panic
/// with the error's message for the other errors.
///
/// ```
/// use stageflow::flow::{Flow, FlowError};
///
/// let err = Flow::from_iter(vec![1, 2, 3])
///     .map(|x: i32| if x == 2 { panic!("oops") } else { x })
///     .try_collect::<Vec<_>>()
///     .unwrap_err();
/// assert!(matches!(err, FlowError::Panic { ref message, .. } if message == "oops"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The flow breaks a rule of Flow's layer shape (the boundary rule of the
    /// [`flow`](crate::flow) module docs); the message is the one Elixir Flow raises.
    #[error("{0}")]
    Build(String),
    /// An option was given a value it does not accept.
    #[error("invalid value for option :{option}: {message}, got: {value}")]
    InvalidOption {
        /// The option's name, as in Elixir Flow (`stages`, `max_demand`, ...).
        option: &'static str,
        /// The rejected value.
        value: String,
        /// What the option accepts.
        message: &'static str,
    },
    /// A user closure panicked; the flow stopped.
    #[error("a user closure panicked in {place}: {message}")]
    #[non_exhaustive]
    Panic {
        /// Where it ran (`source`, `stage 1/4 of layer 2`, ...).
        place: String,
        /// The panic message.
        message: String,
        /// The value the closure panicked with (see [`FlowError::take_panic`]).
        payload: PanicPayload,
    },
    /// A GenStage bridge failed (a producer or consumer stage stopped abnormally, or
    /// could not be started or subscribed); the stage layer's error is the source.
    #[error("stage bridge failed: {0}")]
    Stage(#[source] StageCause),
}

impl FlowError {
    /// The payload a user closure panicked with, if this is [`FlowError::Panic`] and
    /// the payload was not taken yet (clones of the error share it). Pass it to
    /// [`std::panic::resume_unwind`] to carry on unwinding with the closure's own panic.
    ///
    /// ```
    /// use stageflow::flow::Flow;
    ///
    /// let err = Flow::from_iter(vec![1u8])
    ///     .map(|_: u8| -> u8 { std::panic::panic_any(42u32) })
    ///     .try_collect::<Vec<_>>()
    ///     .unwrap_err();
    /// let payload = err.take_panic().expect("a panic");
    /// assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
    /// assert!(err.take_panic().is_none());
    /// ```
    pub fn take_panic(&self) -> Option<Box<dyn Any + Send>> {
        match self {
            FlowError::Panic { payload, .. } => payload.0.lock().take(),
            _ => None,
        }
    }

    /// The error for a panic caught at `place`, keeping its payload.
    pub(crate) fn panic(place: String, payload: Box<dyn Any + Send>) -> FlowError {
        FlowError::Panic {
            place,
            message: panic_message(&*payload),
            payload: PanicPayload(Arc::new(Mutex::new(Some(payload)))),
        }
    }

    /// The error for a failure of the stage layer.
    pub(crate) fn stage<E: std::error::Error + Send + Sync + 'static>(e: E) -> FlowError {
        FlowError::Stage(StageCause(Arc::new(e)))
    }

    /// Ends a plain consumer (`collect`, `sum`, ...) that failed: re-raises a user
    /// closure's panic with its own payload, panics with the message otherwise.
    pub(crate) fn raise(self) -> ! {
        match self.take_panic() {
            Some(payload) => std::panic::resume_unwind(payload),
            None => panic!("{self}"),
        }
    }
}

/// The value a user closure panicked with, held by [`FlowError::Panic`] until
/// [`FlowError::take_panic`] takes it. Clones share it; it takes no part in comparing
/// errors (two panics compare by place and message).
///
/// ```
/// use stageflow::flow::{Flow, FlowError};
///
/// let err = Flow::from_iter(vec![1u8]).map(|_: u8| -> u8 { panic!("no") }).try_count().unwrap_err();
/// if let FlowError::Panic { payload, .. } = &err {
///     assert_eq!(format!("{payload:?}"), "PanicPayload { held: true }");
/// }
/// ```
#[derive(Clone)]
pub struct PanicPayload(Arc<Mutex<Option<Box<dyn Any + Send>>>>);

impl fmt::Debug for PanicPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanicPayload")
            .field("held", &self.0.lock().is_some())
            .finish()
    }
}

impl PartialEq for PanicPayload {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for PanicPayload {}

/// The stage layer's error behind [`FlowError::Stage`]: displays as that error and is
/// its [`source`](std::error::Error::source)'s holder, so the cause chain reaches it.
/// Two causes compare by their message.
///
/// ```
/// use std::error::Error;
/// use stageflow::flow::{Flow, FlowError, Options};
/// use stageflow::prelude::*;
///
/// struct Fragile;
/// impl Stage for Fragile { type In = Never; type Out = u64; }
/// impl Producer for Fragile {
///     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) { panic!("disk on fire") }
/// }
/// let p = start_producer(Fragile, ProducerOptions::new())?;
/// let err = Flow::from_stages(vec![p], Options::new()).try_count().unwrap_err();
/// assert!(matches!(err, FlowError::Stage(_)));
/// assert!(err.source().unwrap().to_string().contains("disk on fire"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct StageCause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl StageCause {
    /// The stage layer's error.
    ///
    /// ```
    /// use stageflow::flow::{Flow, FlowError, Options};
    /// use stageflow::prelude::*;
    ///
    /// struct Fragile;
    /// impl Stage for Fragile { type In = Never; type Out = u64; }
    /// impl Producer for Fragile {
    ///     fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Self>) { panic!("disk on fire") }
    /// }
    /// let p = start_producer(Fragile, ProducerOptions::new())?;
    /// match Flow::from_stages(vec![p], Options::new()).try_count() {
    ///     Err(FlowError::Stage(cause)) => assert!(cause.get().to_string().contains("disk on fire")),
    ///     other => panic!("expected a stage failure, got {other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for StageCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StageCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for StageCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for StageCause {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_string() == other.0.to_string()
    }
}

impl Eq for StageCause {}

/// Where a source reading stage streams leaves the stage layer's error when a stream
/// fails, for the source node to end the flow with it (the stream itself just ends).
pub(crate) type FailureSlot = Arc<Mutex<Option<FlowError>>>;

/// Turns a caught panic payload into its message. By reference: [`FlowError::Panic`]
/// keeps the payload itself, for the plain consumers to re-raise.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    crate::panic::message(payload).to_string()
}

pub(crate) fn invalid(
    option: &'static str,
    value: impl ToString,
    message: &'static str,
) -> FlowError {
    FlowError::InvalidOption {
        option,
        value: value.to_string(),
        message,
    }
}
