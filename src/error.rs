//! Every public error type of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

// Only the leaf vocabulary module: the stage files import this one.
use crate::stage::reason::{Kind, Reason};

/// What was being done when a stage turned out not to be alive.
///
/// ```
/// assert_eq!(stageflow::error::Operation::Subscribe.to_string(), "subscribe");
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Starting a stage whose `subscribe_to` names this producer.
    Start,
    /// Subscribing to this producer, or asking this consumer to subscribe.
    Subscribe,
    /// A synchronous request: `call`, `sync_info`, `demand_mode`,
    /// `estimate_buffered_count`.
    Call,
    /// `cast`.
    Cast,
    /// `send_info` or `async_info`.
    Info,
    /// `set_demand_mode`.
    SetDemandMode,
    /// `stop`.
    Stop,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Start => "start (subscribe_to)",
            Operation::Subscribe => "subscribe",
            Operation::Call => "call",
            Operation::Cast => "cast",
            Operation::Info => "info",
            Operation::SetDemandMode => "set_demand_mode",
            Operation::Stop => "stop",
        })
    }
}

/// A stage was not alive when addressed (GenStage's `:noproc`): which stage, for what,
/// and how it had exited.
///
/// ```
/// use stageflow::prelude::*;
/// let p = from_iter(0..3u8, FromIterOptions::new().name("numbers"))?;
/// p.stop(Reason::Shutdown)?;
/// let err = p.estimate_buffered_count().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "call failed: producer \"numbers\" (#".to_string() + &p.id().to_string()
///         + ") is not alive (it exited: shutdown)"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct NotAlive {
    /// The stage's name.
    pub stage: Arc<str>,
    /// The stage's kind.
    pub kind: Kind,
    /// The stage's unique id.
    pub id: u64,
    /// What was being done.
    pub operation: Operation,
    /// Its exit reason, when known.
    pub exit: Option<Reason>,
}

impl fmt::Display for NotAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Producer => "producer",
            Kind::ProducerConsumer => "producer-consumer",
            Kind::Consumer => "consumer",
        };
        write!(
            f,
            "{} failed: {kind} {:?} (#{}) is not alive",
            self.operation, self.stage, self.id
        )?;
        if let Some(reason) = &self.exit {
            write!(f, " (it exited: {reason})")?;
        }
        Ok(())
    }
}

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
    /// `init` returned [`Init::Stop`](crate::Init::Stop) or panicked.
    #[error("the stage stopped while starting: {0}")]
    Stopped(Reason),
    /// A permanent or transient subscription in `subscribe_to` named a producer that
    /// is not alive.
    #[error("the stage could not start: {0}")]
    NoProc(NotAlive),
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
    /// The stage was not alive when called (GenStage's `:noproc`); says which stage
    /// and what the call was.
    #[error(transparent)]
    NoProc(NotAlive),
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
    /// The producer was no longer alive when the subscription was sent. Nothing was
    /// subscribed and the consumer goes on (GenStage replies `{:ok, ref}` and then
    /// ends the subscription with `:noproc`, which stops a permanent consumer).
    #[error(transparent)]
    NoProc(NotAlive),
}
