//! The vocabulary shared by the stage layer and its errors: why a stage stopped or a
//! subscription ended, subscription tags, and the kinds of stage. It imports nothing
//! from the rest of the crate, so `crate::error` can name these types without
//! depending on the stage machinery that returns the errors.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The kind of a running stage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Kind {
    /// Emits events from `handle_demand`.
    Producer,
    /// Consumes events and emits events.
    ProducerConsumer,
    /// Consumes events.
    Consumer,
}

/// Why a stage exited or why a subscription was cancelled.
///
/// This is GenStage's exit reason: `Normal`, `Shutdown` and `ShutdownWith` are the
/// "normal" reasons that a [`CancelMode::Transient`](crate::CancelMode::Transient)
/// subscription survives; every other reason is abnormal.
///
/// ```
/// use stageflow::Reason;
/// assert!(Reason::Shutdown.is_normal());
/// assert!(!Reason::custom("oops").is_normal());
/// assert_eq!(Reason::custom("oops").to_string(), "oops");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Normal termination (a finite source ran out, or `stop` without a reason).
    Normal,
    /// Shut down by its owner.
    Shutdown,
    /// Shut down by its owner, with extra information.
    ShutdownWith(Arc<str>),
    /// Aborted from outside without running its callbacks to completion (BEAM's `:kill`).
    Killed,
    /// The stage did not exist (or had already exited) when it was addressed.
    NoProc,
    /// A subscription reused a tag that the producer already knows.
    DuplicatedSubscription,
    /// A message named a subscription that its receiver does not know.
    UnknownSubscription,
    /// The same consumer subscribed twice to a dispatcher that allows only one
    /// subscription per consumer. A consumer never stops because of this reason.
    AlreadySubscribed,
    /// A user callback panicked; the payload is the panic message.
    Panic(Arc<str>),
    /// A callback returned something the protocol does not allow (GenStage's
    /// `{:bad_return_value, value}`); the payload describes it.
    BadReturn(Arc<str>),
    /// Any other reason, chosen by user code.
    Custom(Arc<str>),
}

impl Reason {
    /// A user-defined reason.
    ///
    /// ```
    /// let r = stageflow::Reason::custom("done");
    /// assert_eq!(r, stageflow::Reason::Custom("done".into()));
    /// ```
    pub fn custom(text: impl AsRef<str>) -> Reason {
        Reason::Custom(Arc::from(text.as_ref()))
    }

    /// `Shutdown` with extra information (GenStage's `{:shutdown, term}`).
    ///
    /// ```
    /// assert!(stageflow::Reason::shutdown_with("drained").is_normal());
    /// ```
    pub fn shutdown_with(text: impl AsRef<str>) -> Reason {
        Reason::ShutdownWith(Arc::from(text.as_ref()))
    }

    /// True for `Normal`, `Shutdown` and `ShutdownWith`: the reasons a transient
    /// subscription does not propagate.
    ///
    /// ```
    /// assert!(stageflow::Reason::Normal.is_normal());
    /// assert!(!stageflow::Reason::Killed.is_normal());
    /// ```
    pub fn is_normal(&self) -> bool {
        matches!(
            self,
            Reason::Normal | Reason::Shutdown | Reason::ShutdownWith(_)
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("normal"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::ShutdownWith(t) => write!(f, "shutdown: {t}"),
            Reason::Killed => f.write_str("killed"),
            Reason::NoProc => f.write_str("noproc (the stage is not alive)"),
            Reason::DuplicatedSubscription => f.write_str("duplicated subscription"),
            Reason::UnknownSubscription => f.write_str("unknown subscription"),
            Reason::AlreadySubscribed => f.write_str("already subscribed"),
            Reason::Panic(m) => write!(f, "panic: {m}"),
            Reason::BadReturn(m) => write!(f, "bad return value: {m}"),
            Reason::Custom(t) => f.write_str(t),
        }
    }
}

/// Why `handle_cancel` was called: the subscription was cancelled by a message
/// (`Cancel`) or the other side exited (`Down`), with the reason either way.
///
/// ```
/// use stageflow::{CancelReason, Reason};
/// let c = CancelReason::Down(Reason::Killed);
/// assert_eq!(c.reason(), &Reason::Killed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// Cancelled by either side with this reason.
    Cancel(Reason),
    /// The other side exited with this reason.
    Down(Reason),
}

impl CancelReason {
    /// The reason, whichever way the subscription ended.
    pub fn reason(&self) -> &Reason {
        match self {
            CancelReason::Cancel(r) | CancelReason::Down(r) => r,
        }
    }
}

/// Identifies one subscription between a consumer and a producer (GenStage's
/// subscription reference). Unique within the process.
///
/// ```
/// let a = stageflow::Tag::new();
/// let b = stageflow::Tag::new();
/// assert_ne!(a, b);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl Tag {
    /// A fresh tag, different from every other tag of this process.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Tag {
        Tag(next_id())
    }

    /// The tag's number (for logs).
    pub fn id(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
