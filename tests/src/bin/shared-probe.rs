//! A function built only from the shared crate, for the bench's smoke test:
//! `{"cluster","service"}` settings from `PROBE_CLUSTER`/`PROBE_SERVICE`, then a redeploy.

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shared::{Env, Error};

async fn handle(ecs: &aws_sdk_ecs::Client, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let env = Env::from_process();
    let cluster = env.required("PROBE_CLUSTER")?;
    let service = env.required("PROBE_SERVICE")?;
    let changed_at = match event.payload.get("changed_at") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| Error::InvalidEvent(format!("changed_at: {e}")))?,
        ),
    };
    let out = shared::ecs::redeploy(ecs, &cluster, &service, changed_at).await?;
    metrics::counter!("ProbeRedeploys").increment(1);
    serde_json::to_value(out).map_err(|e| Error::Partial(e.to_string()))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("shared-probe");
    let ecs = shared::aws::DeferredClients::new(|_, config| Ok(aws_sdk_ecs::Client::new(config)));
    shared::runtime::run_with(&ecs, handle).await
}
