//! Observing a running pipeline: counters, a snapshot of the whole topology, and
//! pictures of it.
//!
//! - Every stage counts, per batch, what it did ([`StageMetrics`]: events in and
//!   out, demand received and requested, batches, time busy in callbacks, buffered,
//!   discarded, subscriptions). The counters are always on; reading them never stops
//!   a stage.
//! - A stage or pipeline part publishes its own named [`Counter`]s and [`Gauge`]s
//!   beside them ([`Context::counter`](crate::Context::counter),
//!   [`StageRef::counter`](crate::StageRef::counter)): the
//!   [`Batcher`](crate::pipeline::Batcher) counts batches flushed by size and by
//!   timeout, the [`RetrySource`](crate::pipeline::RetrySource) retries and dead
//!   letters, the [`RateLimiter`](crate::pipeline::RateLimiter) its waits.
//! - [`PipelineHandle::snapshot`](crate::pipeline::PipelineHandle::snapshot) takes a
//!   [`TopologySnapshot`] of every stage and subscription in one call, which
//!   [`to_dot`](TopologySnapshot::to_dot) and [`to_mermaid`](TopologySnapshot::to_mermaid)
//!   draw, annotated with counters and rates if asked ([`DiagramOptions`]).
//!
//! Cargo features connect this to the ecosystem; the library never installs a
//! recorder, an exporter or a subscriber, the program does:
//!
//! - `metrics`: every counter and gauge is also recorded into the
//!   [`metrics`](https://docs.rs/metrics) facade, labelled `stage` (name) and `kind`:
//!   `stageflow_events_in_total`, `stageflow_events_out_total`,
//!   `stageflow_events_discarded_total`, `stageflow_demand_received_total`,
//!   `stageflow_demand_requested_total`, `stageflow_batches_total`,
//!   `stageflow_stalls_total` (counters) and `stageflow_buffered`,
//!   `stageflow_consumers`, `stageflow_producers` and `stageflow_busy_seconds` (gauges;
//!   the last only grows, as Prometheus wants time in seconds and the facade's
//!   counters are whole numbers), each described; a published counter `name` becomes `stageflow_<name>_total`, a gauge
//!   `stageflow_<name>`. Install the recorder before starting the stages: a stage
//!   registers its handles when it starts.
//! - `tracing`: a span `stage` (name, kind, id) around each stage's thread, a debug
//!   span `batch` (callback, events) around each batch, and events for subscribe,
//!   cancel, exit, discard and dead letters.
//! - `serde`: snapshots serialize.
//!
//! ```
//! use std::time::Duration;
//! use stageflow::observe::DiagramOptions;
//! use stageflow::prelude::*;
//!
//! struct Sum(u64);
//! impl Stage for Sum { type In = u64; type Out = Never; }
//! impl Consumer for Sum {
//!     fn handle_events(&mut self, e: Vec<u64>, _: &SubscriptionRef, _: &mut Context<'_, Self>) {
//!         self.0 += e.iter().sum::<u64>();
//!     }
//! }
//! let mut topology = Topology::new();
//! let numbers = topology.from_iter(1..=1_000u64, FromIterOptions::new().name("numbers"))?;
//! topology.consumer(
//!     Sum(0),
//!     ConsumerOptions::new().name("sum").subscribe_to(&numbers, SubscribeOptions::new().max_demand(100)),
//! )?;
//! let handle = topology.handle();
//! let pipeline = topology.start()?;
//! assert!(pipeline.wait(Duration::from_secs(30)).is_complete());
//! let snapshot = handle.snapshot();
//! let sum = snapshot.stage("sum").unwrap();
//! assert_eq!(sum.metrics.events_in, 1_000);
//! assert_eq!(snapshot.subscriptions_between("numbers", "sum").len(), 1);
//! let dot = snapshot.to_dot_with(&DiagramOptions::new().metrics(true));
//! assert!(dot.contains("in 1000"), "{dot}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use crate::stage::{
    Counter, DiagramOptions, Gauge, MetricValue, NamedMetric, StageMetrics, StageSnapshot,
    SubscriptionSnapshot, TopologySnapshot,
};
