//! stageflow: Elixir's GenStage and Flow for synchronous Rust.
#![deny(missing_docs)]

pub mod flow;
