//! The stage layer's integration tests, in one test binary: the ported GenStage
//! suites (`gen_stage_*`), the dispatchers and the consumer supervisor, the
//! conformance suite, the demand properties, the stress topologies, the topology
//! start race and the edge-case regressions.
//!
//! One binary instead of one per file: every integration-test binary links the whole
//! crate, and linking them one by one was most of the build time of `cargo test`.
//! Each file below is a module; a test's full name is `file::test`, so
//! `cargo test --test stage gen_stage_demand::` runs one suite and `cargo test NAME`
//! still finds a test by its name. Helpers shared with the other binaries live in
//! `tests/support/`.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod broadcast_dispatcher;
mod conformance;
mod consumer_supervisor;
mod demand_dispatcher;
mod demand_properties;
mod edge_regressions;
mod engine_guard;
mod fair_dispatcher;
mod gen_stage_buffer_info;
mod gen_stage_callbacks;
mod gen_stage_demand;
mod gen_stage_issues;
mod gen_stage_message_errors;
mod gen_stage_stream;
mod gen_stage_subscribe;
mod normal_end_delivers_buffered;
mod observe;
mod partition_dispatcher;
mod stress_topologies;
mod topology_start;
