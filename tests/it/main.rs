//! Integration tests: one binary so `cargo test --workspace` always builds and runs them.
//! DynamoDB tests need a moto server (`scripts/test-all.sh` starts one and exports
//! `AWS_ENDPOINT_URL_DYNAMODB`); each test creates its own table.

mod bad_input;
mod burst;
mod cost;
mod e2e;
mod helpers;
mod secrets_cold_start;
mod sim_http;
mod store_dynamo;
