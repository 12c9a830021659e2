//! The rotation event Secrets Manager sends: `{Step, SecretId, ClientRequestToken, RotationToken?}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The four steps of a Secrets Manager rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Step {
    #[serde(rename = "createSecret")]
    Create,
    #[serde(rename = "setSecret")]
    Set,
    #[serde(rename = "testSecret")]
    Test,
    #[serde(rename = "finishSecret")]
    Finish,
}

impl Step {
    /// The step's name as Secrets Manager spells it.
    pub fn name(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

/// One rotation step to run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RotationEvent {
    #[serde(rename = "Step")]
    pub step: Step,
    /// The secret's ARN (or name).
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    /// The version being rotated to (the AWSPENDING version id).
    #[serde(rename = "ClientRequestToken")]
    pub token: String,
    /// Passed on to PutSecretValue (Secrets Manager checks it against the rotation).
    #[serde(rename = "RotationToken", default)]
    pub rotation_token: Option<String>,
    /// Not sent by Secrets Manager: observe and return the plan, change nothing.
    #[serde(rename = "DryRun", default)]
    pub dry_run: bool,
}

impl RotationEvent {
    /// Parses the raw event; the message names what is wrong.
    pub fn parse(value: Value) -> Result<RotationEvent, shared::Error> {
        let e: RotationEvent = serde_json::from_value(value).map_err(|e| {
            shared::Error::InvalidEvent(format!(
                "expected a Secrets Manager rotation event {{Step, SecretId, ClientRequestToken}}: {e}"
            ))
        })?;
        if e.secret_id.trim().is_empty() {
            return Err(shared::Error::InvalidEvent("SecretId is empty".into()));
        }
        if e.token.trim().is_empty() {
            return Err(shared::Error::InvalidEvent(
                "ClientRequestToken is empty".into(),
            ));
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_step() {
        for (name, step) in [
            ("createSecret", Step::Create),
            ("setSecret", Step::Set),
            ("testSecret", Step::Test),
            ("finishSecret", Step::Finish),
        ] {
            let e = RotationEvent::parse(json!({
                "Step": name, "SecretId": "arn:s", "ClientRequestToken": "t-1",
                "RotationToken": "rt"
            }))
            .unwrap();
            assert_eq!(e.step, step);
            assert_eq!(e.step.name(), name);
            assert_eq!(e.rotation_token.as_deref(), Some("rt"));
            assert!(!e.dry_run);
        }
    }

    #[test]
    fn refuses_malformed_events() {
        for bad in [
            json!({}),
            json!({"Step": "rotate", "SecretId": "s", "ClientRequestToken": "t"}),
            json!({"Step": "setSecret", "ClientRequestToken": "t"}),
            json!({"Step": "setSecret", "SecretId": "s"}),
            json!({"Step": "setSecret", "SecretId": " ", "ClientRequestToken": "t"}),
            json!({"Step": "setSecret", "SecretId": "s", "ClientRequestToken": ""}),
            json!({"Records": []}),
        ] {
            let e = RotationEvent::parse(bad.clone()).unwrap_err();
            assert_eq!(e.error_type(), "InvalidEvent", "{bad}");
        }
    }
}
