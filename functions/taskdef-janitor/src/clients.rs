//! The AWS clients the janitor uses, and the count of calls it made.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Built once per process in `main`.
#[derive(Clone, Debug)]
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub pipes: aws_sdk_pipes::Client,
}

impl Clients {
    /// Every client from one SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Clients {
        Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            eventbridge: aws_sdk_eventbridge::Client::new(config),
            scheduler: aws_sdk_scheduler::Client::new(config),
            sfn: aws_sdk_sfn::Client::new(config),
            pipes: aws_sdk_pipes::Client::new(config),
        }
    }
}

/// Calls made, by `service:Action` (the IAM action names).
#[derive(Debug, Default)]
pub struct Calls(Mutex<BTreeMap<&'static str, u64>>);

impl Calls {
    /// Counts one call.
    pub fn add(&self, action: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(action)
            .or_default() += 1;
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
