//! The JSON an invocation returns, and the metrics it publishes.

use serde::Serialize;

use std::collections::BTreeMap;

use shared::release::Release;

use crate::plan::Skipped;

/// A deployment started (or, in a dry run, planned) for configuration changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redeployed {
    pub cluster: String,
    pub service: String,
    /// `null` in a dry run.
    pub deployment_id: Option<String>,
    /// The changed keys it rolls out.
    pub keys: Vec<String>,
}

/// A configuration object that was refused, and the service left untouched because of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub cluster: String,
    pub service: String,
    pub key: String,
    pub reason: String,
    /// For a PHP syntax error: the line of the first one (the message is in `reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// A failed deployment that was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledBack {
    pub cluster: String,
    pub service: String,
    pub failed_deployment_id: String,
    /// The rollback deployment (`null` in a dry run, or when one already runs).
    pub deployment_id: Option<String>,
    /// The release the configuration points to again (the one before the failed deployment).
    pub release: Release,
    /// The failed release's object states the next release may not bring back (key → version,
    /// `null` for a removal) until they are fixed.
    pub withdrawn: BTreeMap<String, Option<String>>,
}

/// A service whose work failed (other services are still processed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub cluster: String,
    pub service: String,
    pub error_type: String,
    pub message: String,
}

/// What one invocation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub redeployed: Vec<Redeployed>,
    pub skipped: Vec<Skipped>,
    pub rolled_back: Vec<RolledBack>,
    pub rejected: Vec<Rejected>,
    pub errors: Vec<Failure>,
    pub dry_run: bool,
}

impl Summary {
    /// Records this invocation's counters (flushed as one EMF document; zero counters are omitted).
    pub fn record_metrics(&self) {
        metrics::counter!("Redeployed").increment(self.redeployed.len() as u64);
        metrics::counter!("Skipped").increment(self.skipped.len() as u64);
        metrics::counter!("RolledBack").increment(self.rolled_back.len() as u64);
        metrics::counter!("Rejected").increment(self.rejected.len() as u64);
        let syntax = self.rejected.iter().filter(|r| r.line.is_some()).count();
        metrics::counter!("PhpSyntaxErrors").increment(syntax as u64);
        metrics::counter!("Errors").increment(self.errors.len() as u64);
    }
}
