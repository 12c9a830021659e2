//! The error every handler returns, with a stable Lambda `errorType`.
//!
//! Messages carry what an operator needs (the variable, the service and call, the
//! remote error code and message) and never a secret value.

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
        }
    }

    /// An AWS SDK error, keeping the service's error code and message.
    pub fn aws<E>(service: &'static str, operation: &'static str, err: E) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error,
    {
        let code = err.code().map(str::to_string);
        let message = match (err.code(), err.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
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
