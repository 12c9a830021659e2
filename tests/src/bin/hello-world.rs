//! The reference for benchmarks: the smallest `lambda_runtime` function, echoing its event.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, Error>(serde_json::json!({ "hello": event.payload }))
    }))
    .await
}
