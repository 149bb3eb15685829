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
///
/// Equality compares a [`Spawn`](StartError::Spawn) error by its kind and message,
/// since `std::io::Error` has no equality of its own.
#[derive(Debug, Error)]
#[non_exhaustive]
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
    Spawn(#[source] std::io::Error),
}

impl PartialEq for StartError {
    fn eq(&self, other: &Self) -> bool {
        use StartError::*;
        match (self, other) {
            (Ignored, Ignored) => true,
            (Stopped(a), Stopped(b)) => a == b,
            (NoProc(a), NoProc(b)) => a == b,
            (BadOptions(a), BadOptions(b)) => a == b,
            (Spawn(a), Spawn(b)) => a.kind() == b.kind() && a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for StartError {}

/// Why a call to a stage (a request that waits for an answer) failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
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

/// A message (`cast`, `send_info`, `async_info`) could not be sent because the stage
/// is not alive. These operations cannot time out, so this is their only error; it
/// hands the message back, as `crossbeam_channel::SendError` does.
///
/// ```
/// use stageflow::prelude::*;
/// use stageflow::SendError;
/// # struct Sink;
/// # impl Stage for Sink { type In = u8; type Out = Never; }
/// # impl Consumer for Sink {
/// #     fn handle_events(&mut self, _: Vec<u8>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {}
/// # }
/// # impl HandleInfo<Vec<u8>> for Sink {
/// #     fn handle_info(&mut self, _: Vec<u8>, _: &mut Context<'_, Self>) {}
/// # }
/// let c = start_consumer(Sink, ConsumerOptions::new().name("sink"))?;
/// c.stop(Reason::Shutdown)?;
/// let err: SendError<Vec<u8>> = c.send_info(vec![1, 2, 3]).unwrap_err();
/// assert_eq!(err.not_alive().exit, Some(Reason::Shutdown));
/// assert!(err.to_string().starts_with("info failed: consumer \"sink\""));
/// assert_eq!(err.into_inner(), vec![1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SendError<M> {
    message: M,
    not_alive: NotAlive,
}

impl<M> SendError<M> {
    pub(crate) fn new(message: M, not_alive: NotAlive) -> Self {
        SendError { message, not_alive }
    }

    /// The message that was not delivered.
    pub fn into_inner(self) -> M {
        self.message
    }

    /// The message that was not delivered, borrowed.
    pub fn message(&self) -> &M {
        &self.message
    }

    /// Which stage was not alive, for which operation, and how it had exited.
    pub fn not_alive(&self) -> &NotAlive {
        &self.not_alive
    }
}

// Like crossbeam's: no `M: Debug` bound, so any message type can be sent with `?`.
impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("not_alive", &self.not_alive)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.not_alive, f)
    }
}

impl<M> std::error::Error for SendError<M> {}

impl<M> From<SendError<M>> for CallError {
    /// Keeps the stage's identity and exit reason; the message is dropped.
    fn from(e: SendError<M>) -> Self {
        CallError::NoProc(e.not_alive)
    }
}

/// Why a subscription request failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_error_keeps_the_io_error_as_source() {
        let e = StartError::Spawn(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            "no threads left",
        ));
        assert_eq!(
            e.to_string(),
            "could not spawn the stage's thread: no threads left"
        );
        let source = std::error::Error::source(&e).expect("the io::Error is the source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::OutOfMemory);
    }
}
