//! Integration tests: one binary so `cargo test --workspace` always builds and runs them.
