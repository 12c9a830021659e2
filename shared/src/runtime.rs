//! The Lambda loop shared by every function.

use std::future::Future;

use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde_json::Value;

use crate::aws::DeferredClients;
use crate::error::Error;

/// Runs `handler` for each invocation, through the Lambda Runtime API.
///
/// Events arrive as raw JSON so each function reports a malformed event as its own
/// `InvalidEvent` error. After each invocation the EMF metrics are flushed and a failure is
/// logged once with its `error_type`.
pub async fn run<F, Fut, R>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(LambdaEvent<Value>) -> Fut,
    Fut: Future<Output = Result<R, Error>>,
    R: Serialize,
{
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let request_id = event.context.request_id.clone();
        let fut = handler(event);
        async move {
            let result = fut.await;
            if let Err(e) = &result {
                tracing::error!(error_type = e.error_type(), error = %e, "invocation failed");
            }
            crate::metrics::flush(&request_id);
            result
        }
    }))
    .await
}

/// Runs `handler` with the clients of `clients`, set up by the first invocation.
pub async fn run_with<C, R>(
    clients: &DeferredClients<C>,
    handler: impl AsyncFn(&C, LambdaEvent<Value>) -> Result<R, Error>,
) -> Result<(), lambda_runtime::Error>
where
    R: Serialize,
{
    let handler = &handler;
    run(|event| async move { handler(clients.get().await?, event).await }).await
}
