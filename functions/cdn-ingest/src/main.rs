//! Lambda entry point. The real handler arrives with the functions issue; until then the function
//! starts the runtime and rejects every event as not yet handled, so a deployment can't silently
//! swallow callbacks.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let _ = event.payload;
    Err("this function has no handler yet".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(handler)).await
}
