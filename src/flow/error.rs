//! The error type of the Flow layer.

use std::any::Any;

/// Why a flow could not be built or did not finish.
///
/// Build errors (the boundary rule of a layer, bad options) are found before any event
/// runs; the others end a running flow. Every consumer has a `try_` form returning this
/// error; the plain forms (`collect`, `sum`, ...) panic with its message, as rayon does.
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
    Panic {
        /// Where it ran (`source`, `stage 1/4 of layer 2`, ...).
        place: String,
        /// The panic message.
        message: String,
    },
    /// A GenStage bridge failed (a producer or consumer stage stopped abnormally).
    #[error("stage bridge failed: {0}")]
    Stage(String),
}

/// Turns a caught panic payload into its message.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    crate::panic::message(payload.as_ref()).to_string()
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
