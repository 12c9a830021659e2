//! The Secrets Manager adapter: the calls a rotation makes, with errors that never carry
//! a secret value.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use chrono::{DateTime, Utc};
use shared::Error;

use crate::failure::{Cause, THROTTLING_CODES};
use crate::plan::SecretMeta;
use crate::secret::{DbSecret, Password};

const SERVICE: &str = "SecretsManager";

/// An SDK error as [`Error::Aws`], built only from the service's error code and message.
///
/// `shared::Error::aws` falls back to the SDK's full error report, which for a response that
/// could not be parsed includes the raw response, body and all: for GetSecretValue that body
/// is a secret. Here the fallback names the kind of failure only.
fn aws_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = err.code().map(str::to_string);
    let message = match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => match &err {
            SdkError::ConstructionFailure(_) => "the request could not be built".to_string(),
            SdkError::TimeoutError(_) => "timed out".to_string(),
            // No response was received: the connector's report carries no payload.
            SdkError::DispatchFailure(d) => match d.as_connector_error() {
                Some(c) => format!("dispatch failure: {}", DisplayErrorContext(c)),
                None => "dispatch failure".to_string(),
            },
            SdkError::ResponseError(_) => "the response could not be read".to_string(),
            SdkError::ServiceError(_) => "service error without a code".to_string(),
            _ => "unknown SDK error".to_string(),
        },
    };
    if code
        .as_deref()
        .is_some_and(|c| THROTTLING_CODES.contains(&c))
    {
        return Cause::Throttled.error(format!("{SERVICE} {operation} failed: {message}"));
    }
    Error::Aws {
        service: SERVICE,
        operation,
        code,
        message,
    }
}

/// GetSecretValue's "no such version / no value yet".
fn not_found<R>(e: &SdkError<GetSecretValueError, R>) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_resource_not_found_exception())
}

/// DescribeSecret, reduced to what the contract checks.
pub async fn describe(secretsmanager: &Client, secret_id: &str) -> Result<SecretMeta, Error> {
    let out = secretsmanager
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception())
            {
                Error::NotFound(format!("secret {secret_id}"))
            } else {
                aws_error("DescribeSecret", e)
            }
        })?;
    Ok(SecretMeta {
        rotation_enabled: out.rotation_enabled().unwrap_or(false),
        versions: out
            .version_ids_to_stages()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    })
}

/// Which version a value came from, as GetSecretValue reports it beside the value.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub version_id: Option<String>,
    pub created: Option<DateTime<Utc>>,
}

impl Stamp {
    /// The creation date, when this is version `id` (AWSCURRENT may move between two reads).
    pub fn created_if(&self, id: &str) -> Option<DateTime<Utc>> {
        self.created
            .filter(|_| self.version_id.as_deref() == Some(id))
    }
}

/// The `SecretString` of a version (by id and stage, or by stage alone) and its [`Stamp`];
/// `None` when that version has no value yet (an AWSPENDING version before createSecret).
async fn stamped_value(
    secretsmanager: &Client,
    secret_id: &str,
    version_id: Option<&str>,
    stage: &str,
) -> Result<Option<(Password, Stamp)>, Error> {
    let out = secretsmanager
        .get_secret_value()
        .secret_id(secret_id)
        .set_version_id(version_id.map(str::to_string))
        .version_stage(stage)
        .send()
        .await;
    match out {
        Ok(o) => match o.secret_string() {
            Some(s) => Ok(Some((
                Password::new(s),
                Stamp {
                    version_id: o.version_id().map(str::to_string),
                    created: o.created_date().and_then(shared::aws::to_utc),
                },
            ))),
            None => Err(Error::Rejected(format!(
                "{stage} of secret {secret_id} is binary; expected a JSON SecretString"
            ))),
        },
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(aws_error("GetSecretValue", e)),
    }
}

/// The `SecretString` of a version (by id and stage, or by stage alone); `None` when that
/// version has no value yet (an AWSPENDING version before createSecret).
pub async fn value(
    secretsmanager: &Client,
    secret_id: &str,
    version_id: Option<&str>,
    stage: &str,
) -> Result<Option<Password>, Error> {
    Ok(stamped_value(secretsmanager, secret_id, version_id, stage)
        .await?
        .map(|(text, _)| text))
}

/// A version's value parsed as a database secret (the error names the stage, never the value).
fn parse(text: &Password, secret_id: &str, stage: &str) -> Result<DbSecret, Error> {
    DbSecret::parse(text.expose())
        .map_err(|e| e.cause.error(format!("{stage} of secret {secret_id}: {e}")))
}

/// A version's value parsed as a database secret; `None` when it has no value.
pub async fn db_secret(
    secretsmanager: &Client,
    secret_id: &str,
    version_id: Option<&str>,
    stage: &str,
) -> Result<Option<DbSecret>, Error> {
    value(secretsmanager, secret_id, version_id, stage)
        .await?
        .map(|text| parse(&text, secret_id, stage))
        .transpose()
}

/// A version's value by id alone (any label or none); `None` when it has no value.
pub async fn db_secret_version(
    secretsmanager: &Client,
    secret_id: &str,
    version_id: &str,
) -> Result<Option<DbSecret>, Error> {
    let out = secretsmanager
        .get_secret_value()
        .secret_id(secret_id)
        .version_id(version_id)
        .send()
        .await;
    match out {
        Ok(o) => Ok(o.secret_string().and_then(|s| DbSecret::parse(s).ok())),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(aws_error("GetSecretValue", e)),
    }
}

/// A version's value that must exist.
pub async fn require_db_secret(
    secretsmanager: &Client,
    secret_id: &str,
    version_id: Option<&str>,
    stage: &str,
) -> Result<DbSecret, Error> {
    Ok(
        require_stamped_db_secret(secretsmanager, secret_id, version_id, stage)
            .await?
            .0,
    )
}

/// A version's value that must exist, with its [`Stamp`].
pub async fn require_stamped_db_secret(
    secretsmanager: &Client,
    secret_id: &str,
    version_id: Option<&str>,
    stage: &str,
) -> Result<(DbSecret, Stamp), Error> {
    let (text, stamp) = stamped_value(secretsmanager, secret_id, version_id, stage)
        .await?
        .ok_or_else(|| match stage {
            "AWSPENDING" => Error::Rejected(format!(
                "AWSPENDING version of secret {secret_id} has no value (createSecret has not run)"
            )),
            _ => Error::NotFound(format!("{stage} version of secret {secret_id}")),
        })?;
    Ok((parse(&text, secret_id, stage)?, stamp))
}

/// PutSecretValue of the AWSPENDING version `token`, with the rotation token when given.
pub async fn put_pending(
    secretsmanager: &Client,
    secret_id: &str,
    token: &str,
    secret_string: &Password,
    rotation_token: Option<&str>,
) -> Result<(), Error> {
    secretsmanager
        .put_secret_value()
        .secret_id(secret_id)
        .client_request_token(token)
        .secret_string(secret_string.expose())
        .version_stages("AWSPENDING")
        .set_rotation_token(rotation_token.map(str::to_string))
        .send()
        .await
        .map_err(|e| aws_error("PutSecretValue", e))?;
    Ok(())
}

/// Moves AWSCURRENT from `from` to `token` (Secrets Manager moves AWSPREVIOUS to `from`).
pub async fn move_current(
    secretsmanager: &Client,
    secret_id: &str,
    token: &str,
    from: &str,
) -> Result<(), Error> {
    secretsmanager
        .update_secret_version_stage()
        .secret_id(secret_id)
        .version_stage("AWSCURRENT")
        .move_to_version_id(token)
        .remove_from_version_id(from)
        .send()
        .await
        .map_err(|e| aws_error("UpdateSecretVersionStage", e))?;
    Ok(())
}

/// When version `token` was created (GetSecretValue reports it with the value).
pub async fn version_created(
    secretsmanager: &Client,
    secret_id: &str,
    token: &str,
) -> Result<Option<DateTime<Utc>>, Error> {
    let out = secretsmanager
        .get_secret_value()
        .secret_id(secret_id)
        .version_id(token)
        .send()
        .await
        .map_err(|e| aws_error("GetSecretValue", e))?;
    Ok(out.created_date().and_then(shared::aws::to_utc))
}

/// Every version id of the secret, labelled or not, newest first (ListSecretVersionIds).
pub async fn version_ids(secretsmanager: &Client, secret_id: &str) -> Result<Vec<String>, Error> {
    let mut next: Option<String> = None;
    let mut versions = Vec::new();
    loop {
        let out = secretsmanager
            .list_secret_version_ids()
            .secret_id(secret_id)
            .include_deprecated(true)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| aws_error("ListSecretVersionIds", e))?;
        for v in out.versions() {
            if let Some(id) = v.version_id() {
                versions.push((
                    v.created_date().and_then(shared::aws::to_utc),
                    id.to_string(),
                ));
            }
        }
        match out.next_token().filter(|t| !t.is_empty()) {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    Ok(versions.into_iter().map(|(_, id)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_dates_only_its_own_version() {
        let created = DateTime::from_timestamp(1_800_000_000, 0);
        let stamp = Stamp {
            version_id: Some("v2".into()),
            created,
        };
        assert_eq!(stamp.created_if("v2"), created);
        assert_eq!(
            stamp.created_if("v1"),
            None,
            "AWSCURRENT moved: read the date again"
        );
        let undated = Stamp {
            version_id: Some("v2".into()),
            created: None,
        };
        assert_eq!(undated.created_if("v2"), None);
    }
}
