//! Spans and events for the `tracing` facade (cargo feature `tracing`); without the
//! feature every function here is empty and compiles to nothing.
//!
//! A stage's thread runs inside an `info` span `stage` (name, kind, id); each batch
//! of `handle_events` or `handle_demand` inside a `debug` span `batch` with its event
//! count; subscribe, cancel, exit, discard and dead-letter are events. The library
//! never installs a subscriber: the program does.

use std::fmt::Display;

use super::reason::Kind;

/// A span entered until dropped (nothing without the feature).
#[cfg(feature = "tracing")]
pub(crate) type Entered = tracing::span::EnteredSpan;
/// A span entered until dropped (nothing without the feature).
#[cfg(not(feature = "tracing"))]
#[must_use]
pub(crate) struct Entered;

#[cfg(feature = "tracing")]
fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Producer => "producer",
        Kind::ProducerConsumer => "producer_consumer",
        Kind::Consumer => "consumer",
    }
}

/// The span of a stage's thread, entered for the thread's whole life.
#[inline]
pub(crate) fn stage(name: &str, kind: Kind, id: u64) -> Entered {
    #[cfg(feature = "tracing")]
    return tracing::info_span!("stage", name, kind = kind_label(kind), id).entered();
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (name, kind, id);
        Entered
    }
}

/// The span of one batch: `callback` is `handle_events` or `handle_demand`, `events`
/// the batch's length (the demand, for `handle_demand`).
#[inline]
pub(crate) fn batch(callback: &'static str, events: usize) -> Entered {
    #[cfg(feature = "tracing")]
    return tracing::debug_span!("batch", callback, events).entered();
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (callback, events);
        Entered
    }
}

/// A consumer subscribed to this stage (`side` "consumer") or this stage to a
/// producer (`side` "producer").
#[inline]
pub(crate) fn subscribed(side: &'static str, tag: u64, max_demand: usize, min_demand: usize) {
    #[cfg(feature = "tracing")]
    tracing::debug!(side, tag, max_demand, min_demand, "subscribed");
    #[cfg(not(feature = "tracing"))]
    let _ = (side, tag, max_demand, min_demand);
}

/// A subscription ended.
#[inline]
pub(crate) fn cancelled(side: &'static str, tag: u64, reason: &dyn Display) {
    #[cfg(feature = "tracing")]
    tracing::debug!(side, tag, reason = %reason, "subscription cancelled");
    #[cfg(not(feature = "tracing"))]
    let _ = (side, tag, reason);
}

/// The stage exits.
#[inline]
pub(crate) fn exited(reason: &dyn Display, normal: bool) {
    #[cfg(feature = "tracing")]
    if normal {
        tracing::info!(reason = %reason, "stage exited");
    } else {
        tracing::warn!(reason = %reason, "stage exited");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (reason, normal);
}

/// The output buffer dropped `events`.
#[inline]
pub(crate) fn discarded(events: usize) {
    #[cfg(feature = "tracing")]
    tracing::warn!(events, "events discarded from the output buffer");
    #[cfg(not(feature = "tracing"))]
    let _ = events;
}

/// A pipeline part gave up on an event.
#[inline]
pub(crate) fn dead_lettered(attempts: u32, reason: &dyn Display) {
    #[cfg(feature = "tracing")]
    tracing::warn!(attempts, reason = %reason, "event dead-lettered");
    #[cfg(not(feature = "tracing"))]
    let _ = (attempts, reason);
}
