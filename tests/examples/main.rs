//! Runs the crate's examples as real processes and checks what they report, in one
//! test binary (each binary links the whole crate). Each file below is a module
//! (`cargo test --test examples examples_cli::`; `cargo test NAME` still finds a test
//! by its name).

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod example_pipeline;
mod examples_cli;
mod flow_example_wordcount;
mod rate_limited_api_example;
