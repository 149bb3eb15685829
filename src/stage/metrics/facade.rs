//! The `metrics` facade side of a stage's counters (cargo feature `metrics`).
//!
//! Handles are registered once, when the stage starts, with whatever recorder the
//! program installed by then (none: the facade's no-op handles); every add then costs
//! what the recorder's handle costs, once per batch. The library never installs a
//! recorder or an exporter: the program picks them.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{describe_counter, describe_gauge, Counter, Gauge, Unit};

use super::Labels;
use crate::stage::Kind;

/// The label value of a kind.
pub(super) fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Producer => "producer",
        Kind::ProducerConsumer => "producer_consumer",
        Kind::Consumer => "consumer",
    }
}

fn labels(l: &Labels) -> [(&'static str, String); 2] {
    [
        ("stage", l.stage.to_string()),
        ("kind", kind_label(l.kind).to_string()),
    ]
}

fn counter_handle(l: &Labels, name: &'static str, unit: Unit, help: &'static str) -> Counter {
    describe_counter!(name, unit, help);
    metrics::counter!(name, &labels(l))
}

fn gauge_handle(l: &Labels, name: &'static str, help: &'static str) -> Gauge {
    describe_gauge!(name, Unit::Count, help);
    metrics::gauge!(name, &labels(l))
}

/// The runtime's own counters in the facade. Their names and help texts are listed
/// in the crate docs ("Observing a pipeline").
pub(super) struct Handles {
    pub(super) events_in: Counter,
    pub(super) events_out: Counter,
    pub(super) discarded: Counter,
    pub(super) demand_received: Counter,
    pub(super) demand_requested: Counter,
    pub(super) batches: Counter,
    /// Seconds in callbacks so far: a gauge, since the facade's counters are whole
    /// numbers and Prometheus wants seconds; it only grows, so `rate()` applies.
    pub(super) busy: Gauge,
    stalls: Counter,
    /// The dispatcher's stall count already passed on (written by the stage's thread
    /// only).
    stalls_seen: AtomicU64,
    pub(super) buffered: Gauge,
    pub(super) consumers: Gauge,
    pub(super) producers: Gauge,
}

impl Handles {
    pub(super) fn register(l: &Labels) -> Self {
        Handles {
            events_in: counter_handle(
                l,
                "stageflow_events_in_total",
                Unit::Count,
                "Events a stage received from its producers",
            ),
            events_out: counter_handle(
                l,
                "stageflow_events_out_total",
                Unit::Count,
                "Events a stage delivered to its consumers",
            ),
            discarded: counter_handle(
                l,
                "stageflow_events_discarded_total",
                Unit::Count,
                "Events a stage's full output buffer dropped (its buffer_keep policy)",
            ),
            demand_received: counter_handle(
                l,
                "stageflow_demand_received_total",
                Unit::Count,
                "Events a stage's consumers asked it for",
            ),
            demand_requested: counter_handle(
                l,
                "stageflow_demand_requested_total",
                Unit::Count,
                "Events a stage asked its producers for (automatic demand)",
            ),
            batches: counter_handle(
                l,
                "stageflow_batches_total",
                Unit::Count,
                "Batches a stage handled (handle_events or handle_demand calls)",
            ),
            busy: {
                describe_gauge!(
                    "stageflow_busy_seconds",
                    Unit::Seconds,
                    "Time a stage spent in its callbacks so far (only grows: use rate())"
                );
                metrics::gauge!("stageflow_busy_seconds", &labels(l))
            },
            stalls: counter_handle(
                l,
                "stageflow_stalls_total",
                Unit::Count,
                "Times a stage's dispatcher stopped asking because a consumer is missing",
            ),
            stalls_seen: AtomicU64::new(0),
            buffered: gauge_handle(l, "stageflow_buffered", "Events in a stage's output buffer"),
            consumers: gauge_handle(
                l,
                "stageflow_consumers",
                "Subscriptions of consumers to a stage",
            ),
            producers: gauge_handle(
                l,
                "stageflow_producers",
                "Subscriptions of a stage to producers",
            ),
        }
    }

    pub(super) fn sync_stalls(&self, now: u64) {
        let seen = self.stalls_seen.load(Ordering::Relaxed);
        if now > seen {
            self.stalls_seen.store(now, Ordering::Relaxed);
            self.stalls.increment(now - seen);
        }
    }
}

/// The facade handle of a counter a stage published: `stageflow_<name>_total`.
pub(super) fn counter(l: &Labels, name: &str, help: &str) -> Counter {
    let full = format!("stageflow_{name}_total");
    describe_counter!(full.clone(), help.to_string());
    metrics::counter!(full, &labels(l))
}

/// The facade handle of a gauge a stage published: `stageflow_<name>`.
pub(super) fn gauge(l: &Labels, name: &str, help: &str) -> Gauge {
    let full = format!("stageflow_{name}");
    describe_gauge!(full.clone(), help.to_string());
    metrics::gauge!(full, &labels(l))
}
