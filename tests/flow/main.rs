//! The Flow layer's integration tests, in one test binary: the ported Flow suites
//! (`flow_test`, `flow_window_test`), the engine, the bridges to stages, the windows
//! on pools of several sizes and the properties.
//!
//! One binary instead of one per file, since each binary links the whole crate. Each
//! file below is a module (`cargo test --test flow flow_window_test::` runs one
//! suite; `cargo test NAME` still finds a test by its name). Two suites keep a binary
//! of their own because they need the whole process: `flow_one_worker_test` sets
//! rayon's global pool to one thread, and `flow_threads_test` counts the process's
//! threads.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod flow_engine_test;
mod flow_proptest;
mod flow_stages_test;
mod flow_test;
mod flow_window_test;
mod flow_window_threads_test;
