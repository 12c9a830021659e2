//! Why a rotation failed: one cause per thing an operator fixes differently, each with a
//! stable `errorType`, a sentence that says what to do next, and a metric (`RotationFailed`
//! with the dimension `Cause`, recorded by the handler).
//!
//! Pure: [`Cause`] and its texts. The adapters (`db`, `secrets`, `steps`) pick the cause; a
//! failure no cause fits keeps `shared::Error`'s generic types (`Database`, `AwsApi`, …).

use shared::Error;

/// A failure cause an operator can search for (the README's table lists them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The database server does not offer TLS.
    TlsNotOffered,
    /// The server's certificate does not chain to a trusted CA.
    TlsUntrusted,
    /// The certificate is valid but not for the host name connected to.
    TlsHostnameMismatch,
    /// Another TLS failure (expired certificate, bad signature, protocol).
    TlsFailed,
    /// No TCP connection and login within the timeout.
    DbTimeout,
    /// The TCP connection was refused.
    DbConnectionRefused,
    /// The host name does not resolve.
    DbHostNotFound,
    /// The server refused the user name and password.
    DbLoginRefused,
    /// The user's authentication plugin is not one this client speaks.
    DbAuthPluginUnsupported,
    /// The master user may not grant a privilege the current user has.
    MissingGrantOption,
    /// The master user may not create or alter users.
    MissingCreateUser,
    /// A field the secret needs is missing or malformed.
    SecretMissingKey,
    /// The secret's `engine` is not one this function rotates.
    SecretWrongEngine,
    /// The AWSPENDING user is not the one createSecret makes from AWSCURRENT.
    PendingUserUnexpected,
    /// Another version than the event's token is staged AWSPENDING.
    PendingVersionConflict,
    /// The master login would go to an endpoint the deployment does not pin.
    EndpointMismatch,
    /// A running task of the wiki service still uses the user setSecret would change.
    UserStillInUse,
    /// setSecret would change the master user or `<master>_clone`.
    ProtectedUser,
    /// Secrets Manager or ECS throttled the calls beyond the SDK's retries.
    Throttled,
}

impl Cause {
    /// Every cause, in the README's order.
    pub const ALL: [Cause; 19] = [
        Cause::TlsNotOffered,
        Cause::TlsUntrusted,
        Cause::TlsHostnameMismatch,
        Cause::TlsFailed,
        Cause::DbTimeout,
        Cause::DbConnectionRefused,
        Cause::DbHostNotFound,
        Cause::DbLoginRefused,
        Cause::DbAuthPluginUnsupported,
        Cause::MissingGrantOption,
        Cause::MissingCreateUser,
        Cause::SecretMissingKey,
        Cause::SecretWrongEngine,
        Cause::PendingUserUnexpected,
        Cause::PendingVersionConflict,
        Cause::EndpointMismatch,
        Cause::UserStillInUse,
        Cause::ProtectedUser,
        Cause::Throttled,
    ];

    /// The Lambda `errorType` (and the metric's `Cause` dimension).
    pub fn error_type(self) -> &'static str {
        match self {
            Cause::TlsNotOffered => "TlsNotOffered",
            Cause::TlsUntrusted => "TlsUntrusted",
            Cause::TlsHostnameMismatch => "TlsHostnameMismatch",
            Cause::TlsFailed => "TlsFailed",
            Cause::DbTimeout => "DbTimeout",
            Cause::DbConnectionRefused => "DbConnectionRefused",
            Cause::DbHostNotFound => "DbHostNotFound",
            Cause::DbLoginRefused => "DbLoginRefused",
            Cause::DbAuthPluginUnsupported => "DbAuthPluginUnsupported",
            Cause::MissingGrantOption => "MissingGrantOption",
            Cause::MissingCreateUser => "MissingCreateUser",
            Cause::SecretMissingKey => "SecretMissingKey",
            Cause::SecretWrongEngine => "SecretWrongEngine",
            Cause::PendingUserUnexpected => "PendingUserUnexpected",
            Cause::PendingVersionConflict => "PendingVersionConflict",
            Cause::EndpointMismatch => "EndpointMismatch",
            Cause::UserStillInUse => "UserStillInUse",
            Cause::ProtectedUser => "ProtectedUser",
            Cause::Throttled => "Throttled",
        }
    }

    /// What the operator does next.
    pub fn next_step(self) -> &'static str {
        match self {
            Cause::TlsNotOffered => {
                "enable TLS on the server (RDS always offers it; check the host is the RDS endpoint)"
            }
            Cause::TlsUntrusted => {
                "the certificate's CA is neither an Amazon RDS CA nor in DB_CA_BUNDLE: check the \
                 host is the RDS endpoint, or add that CA to DB_CA_BUNDLE"
            }
            Cause::TlsHostnameMismatch => {
                "connect with the name in the server's certificate: the secret's host must be the \
                 RDS endpoint name, not an IP address or a CNAME"
            }
            Cause::TlsFailed => "check the server's certificate (expiry, CA rotation in RDS)",
            Cause::DbTimeout => {
                "check that the database's security group allows 3306 from secret-rotation's \
                 security group, that the function runs in the database's VPC, and that the \
                 instance is available"
            }
            Cause::DbConnectionRefused => {
                "nothing listens there: check the host and port in the secret and that the \
                 instance is available"
            }
            Cause::DbHostNotFound => {
                "check the host in the secret (the RDS endpoint) and the VPC's DNS resolution"
            }
            Cause::DbLoginRefused => {
                "the stored password does not match the server's: reset it (for the master, \
                 modify the RDS instance's master password and the master secret together)"
            }
            Cause::DbAuthPluginUnsupported => {
                "set the user's plugin to caching_sha2_password or mysql_native_password"
            }
            Cause::MissingGrantOption => {
                "the master user must hold every privilege of the wiki user WITH GRANT OPTION \
                 (RDS's master user does; a custom admin user needs it)"
            }
            Cause::MissingCreateUser => "grant the master user CREATE USER",
            Cause::SecretMissingKey => {
                "fix the secret's JSON (username, password, host, port; see the function's README)"
            }
            Cause::SecretWrongEngine => "`engine` must be mysql, mariadb or aurora-mysql",
            Cause::PendingUserUnexpected => {
                "cancel the rotation (aws secretsmanager cancel-rotate-secret) and start a new one"
            }
            Cause::PendingVersionConflict => {
                "an earlier rotation left its version staged AWSPENDING: remove that label \
                 (update-secret-version-stage --remove-from-version-id) or let it finish"
            }
            Cause::EndpointMismatch => {
                "the master password goes only to DB_ENDPOINT (or the master secret's own host): \
                 correct the host and port in the secret, or DB_ENDPOINT if the database moved"
            }
            Cause::UserStillInUse => {
                "nothing was changed; Secrets Manager retries the rotation later. Wait for the \
                 named deployment to finish (or its old tasks to stop), then rotate again"
            }
            Cause::ProtectedUser => {
                "the rotated secret must hold the application's user, never the master's"
            }
            Cause::Throttled => {
                "nothing was lost; the next attempt continues. Check what else calls the API"
            }
        }
    }

    /// The error: what happened (`detail`, never a secret) and what to do next.
    pub fn error(self, detail: impl std::fmt::Display) -> Error {
        Error::Named {
            error_type: self.error_type(),
            message: format!("{detail}: {}", self.next_step()),
        }
    }

    /// The cause of an error this module made, if any.
    pub fn of(error: &Error) -> Option<Cause> {
        let t = error.error_type();
        Cause::ALL.into_iter().find(|c| c.error_type() == t)
    }
}

/// AWS error codes that mean "throttled".
pub const THROTTLING_CODES: [&str; 4] = [
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_its_own_type_and_sentence() {
        let mut types: Vec<&str> = Cause::ALL.iter().map(|c| c.error_type()).collect();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), Cause::ALL.len());
        for c in Cause::ALL {
            assert_eq!(format!("{c:?}"), c.error_type());
            assert!(c.next_step().len() > 20, "{c:?}");
            let e = c.error("what happened");
            assert_eq!(e.error_type(), c.error_type());
            assert_eq!(Cause::of(&e), Some(c));
            assert!(e.to_string().starts_with("what happened: "), "{e}");
        }
        assert_eq!(Cause::of(&Error::Rejected("x".into())), None);
    }
}
