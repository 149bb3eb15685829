//! The pipeline parts' integration tests, in one test binary: acknowledgements through
//! the parts (`acks`) and, with the `postgres` feature, the PostgreSQL sink against a
//! real server (`postgres_sink`).
//!
//! Tests that need a server are compiled only with its feature, and then require it:
//! they fail with a message saying how to start it, never skip, since CI runs them with
//! `--all-features`. `cargo test --test pipeline postgres_sink::` runs one module.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod acks;
#[cfg(feature = "postgres")]
mod postgres_sink;
