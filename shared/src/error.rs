//! The error every handler returns, with a stable Lambda `errorType`.
//!
//! Messages carry what an operator needs (the variable, the service and call, the
//! remote error code and message) and never a secret value.

use aws_sdk_ecs::error::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lambda_runtime::Diagnostic;

use crate::settings::SettingsError;

/// What went wrong, by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A missing or malformed environment variable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The event could not be understood.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// An AWS call failed.
    #[error("{service} {operation} failed: {message}")]
    Aws {
        service: &'static str,
        operation: &'static str,
        code: Option<String>,
        message: String,
    },
    /// A resource the function was told to use does not exist (or is inactive).
    #[error("not found: {0}")]
    NotFound(String),
    /// The input was understood but refused (validation, preconditions).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The database answered with an error (its own code and message).
    #[error("database error {code}: {message}")]
    Database { code: u16, message: String },
    /// A peer could not be reached or did not answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Part of the work failed; the message lists what.
    #[error("{0}")]
    Partial(String),
    /// A cause a function names itself, with its own `errorType` (secret-rotation's failure
    /// causes: `TlsUntrusted`, `DbLoginRefused`, …).
    #[error("{message}")]
    Named {
        error_type: &'static str,
        message: String,
    },
}

impl Error {
    /// The stable `errorType` reported to Lambda (and used in alarms and tests).
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::Settings(_) => "Settings",
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::Aws { .. } => "AwsApi",
            Error::NotFound(_) => "NotFound",
            Error::Rejected(_) => "Rejected",
            Error::Database { .. } => "Database",
            Error::Unreachable(_) => "Unreachable",
            Error::Io { .. } => "Io",
            Error::Partial(_) => "PartialFailure",
            Error::Named { error_type, .. } => error_type,
        }
    }

    /// An AWS SDK error, keeping the service's error code and message.
    ///
    /// Only the code and message of a service error are kept, and for other failures a
    /// description of what failed: never a raw response body, which for calls such as
    /// GetSecretValue can be the secret itself.
    pub fn aws<E, R>(service: &'static str, operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_string);
        let message = match (&err, err.code(), err.message()) {
            (_, Some(c), Some(m)) => format!("{c}: {m}"),
            (_, Some(c), None) => c.to_string(),
            (SdkError::DispatchFailure(d), _, _) => format!(
                "the request could not be sent ({})",
                d.as_connector_error()
                    .map(|c| aws_smithy_types::error::display::DisplayErrorContext(c).to_string())
                    .unwrap_or_else(|| "no connection".to_string())
            ),
            (SdkError::TimeoutError(_), _, _) => "the request timed out".to_string(),
            (SdkError::ResponseError(_), _, _) => {
                "the response could not be read (body withheld)".to_string()
            }
            (SdkError::ConstructionFailure(_), _, _) => {
                "the request could not be built".to_string()
            }
            _ => "the service returned an error without a code (body withheld)".to_string(),
        };
        Error::Aws {
            service,
            operation,
            code,
            message,
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The AWS error code, when this is an AWS error that has one.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(e: Error) -> Self {
        Diagnostic {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_errors_never_carry_a_raw_response() {
        let err: SdkError<
            aws_sdk_ecs::operation::describe_services::DescribeServicesError,
            String,
        > = SdkError::response_error(
            "unexpected body: {\"SecretString\":\"hunter2\"}",
            "raw".to_string(),
        );
        let e = Error::aws("SecretsManager", "GetSecretValue", err);
        assert_eq!(e.error_type(), "AwsApi");
        let text = e.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.starts_with("SecretsManager GetSecretValue failed: "),
            "{text}"
        );
    }

    #[test]
    fn diagnostic_has_stable_type_and_message() {
        let d: Diagnostic = Error::Settings(SettingsError::Missing("ECS_SERVICE".into())).into();
        assert_eq!(d.error_type, "Settings");
        assert_eq!(d.error_message, "missing environment variable ECS_SERVICE");
        let d: Diagnostic = Error::Database {
            code: 1045,
            message: "Access denied".into(),
        }
        .into();
        assert_eq!(d.error_type, "Database");
        assert_eq!(d.error_message, "database error 1045: Access denied");
    }
}
