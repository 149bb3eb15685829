//! Every public error type of the crate.

use std::time::Duration;

use thiserror::Error;

use crate::stage::Reason;

/// An option had a value it cannot take. The message names the option and the value,
/// in GenStage's words with Rust names.
///
/// ```
/// let e = stageflow::OptionsError::new("expected max_demand to be equal to or greater than 1, got: 0");
/// assert!(e.to_string().contains("max_demand"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct OptionsError {
    message: String,
}

impl OptionsError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        OptionsError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Why a stage did not start.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StartError {
    /// `init` returned [`Init::Ignore`](crate::Init::Ignore): the stage exited normally
    /// without running (GenStage's `:ignore`).
    #[error("the stage's init returned Ignore")]
    Ignored,
    /// `init` returned [`Init::Stop`](crate::Init::Stop), panicked, or a permanent
    /// subscription in `subscribe_to` named a producer that is not alive (`NoProc`).
    #[error("the stage stopped while starting: {0}")]
    Stopped(Reason),
    /// An option was invalid.
    #[error("bad options: {0}")]
    BadOptions(#[from] OptionsError),
    /// The operating system refused to start a thread.
    #[error("could not spawn the stage's thread: {0}")]
    Spawn(String),
}

/// Why a call to a stage (a request that waits for an answer) failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CallError {
    /// The stage was not alive when called (GenStage's `:noproc`).
    #[error("the stage is not alive")]
    NoProc,
    /// No answer within the timeout.
    #[error("the call timed out after {0:?}")]
    Timeout(Duration),
    /// The stage exited before answering.
    #[error("the stage exited before replying: {0}")]
    Exited(Reason),
    /// A stage called itself synchronously, which could only time out.
    #[error("a stage cannot make a synchronous call to itself")]
    CallToSelf,
}

/// Why a subscription request failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SubscribeError {
    /// The subscription options are invalid.
    #[error("bad options: {0}")]
    BadOptions(#[from] OptionsError),
    /// The stage asked to subscribe is a producer (GenStage's `:not_a_consumer`).
    #[error("the stage asked to subscribe is not a consumer")]
    NotAConsumer,
    /// The stage to subscribe to is a consumer, which has no events to give.
    #[error("the stage to subscribe to is not a producer")]
    NotAProducer,
    /// The consumer could not be reached.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The consumer's `handle_subscribe` stopped it.
    #[error("the consumer stopped while subscribing: {0}")]
    Stopped(Reason),
}
