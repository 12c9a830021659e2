//! Settings, read from the environment on every invocation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use shared::{Env, SettingsError};

use crate::password::Policy;

/// Which users a rotation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Two users, `<user>` and `<user>_clone`: each rotation sets the one not in use.
    Alternating,
    /// One user that changes its own password.
    Single,
}

/// Characters new passwords leave out by default: everything that needs quoting in a
/// PHP string literal, a URL-style DSN, an `.env` file, a shell or a MySQL option file.
/// Letters, digits, `_` and `.` remain (32 characters from 64: 192 bits).
pub const DEFAULT_EXCLUDE_CHARACTERS: &str = "\"'`\\$@/:;%&#?!^*(){}[]<>|~=+,-";

/// The default password length.
pub const DEFAULT_PASSWORD_LENGTH: u32 = 32;

/// The accepted password lengths (MySQL's `caching_sha2_password` takes up to 255 bytes).
pub const PASSWORD_LENGTHS: std::ops::RangeInclusive<u32> = 16..=255;

/// The function's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `ROTATION_STRATEGY`; `None`: alternating when the secret has `masterarn`, else single.
    pub strategy: Option<Strategy>,
    /// `EXCLUDE_CHARACTERS`.
    pub exclude_characters: String,
    /// `PASSWORD_LENGTH`.
    pub password_length: u32,
    /// What new passwords are drawn from (the two settings above).
    #[serde(skip)]
    pub password: Policy,
    /// `DB_CA_BUNDLE`: a PEM file of CA certificates trusted besides the built-in roots.
    pub ca_bundle: Option<PathBuf>,
    /// `DB_CONNECT_TIMEOUT_SECONDS`: TCP connect, TLS handshake and login.
    pub connect_timeout: Duration,
    /// `DB_ENDPOINT` (`host:port`): the only endpoint the master password goes to when the
    /// master secret has no host of its own.
    pub db_endpoint: Option<DbEndpoint>,
    /// `ECS_CLUSTER`.
    pub cluster: Option<String>,
    /// `ECS_SERVICE`: comma-separated service names or ARNs.
    pub services: Vec<String>,
    /// `ECS_TASK_FAMILY`: comma-separated task-definition families whose standalone tasks
    /// (RunTask: the scheduled jobs) hold the secret.
    pub task_families: Vec<String>,
}

impl Settings {
    /// Reads the settings; an error names the variable.
    pub fn from_env(env: &Env) -> Result<Settings, SettingsError> {
        let strategy = match env
            .optional("ROTATION_STRATEGY")
            .map(|s| s.to_ascii_lowercase())
        {
            None => None,
            Some(s) => Some(match s.as_str() {
                "alternating" | "alternating_users" | "multiuser" => Strategy::Alternating,
                "single" | "single_user" => Strategy::Single,
                _ => {
                    return Err(SettingsError::malformed(
                        "ROTATION_STRATEGY",
                        "expected alternating or single",
                    ));
                }
            }),
        };
        let password_length = env.parse_or("PASSWORD_LENGTH", DEFAULT_PASSWORD_LENGTH)?;
        if !PASSWORD_LENGTHS.contains(&password_length) {
            return Err(SettingsError::malformed(
                "PASSWORD_LENGTH",
                format!(
                    "expected {} to {}",
                    PASSWORD_LENGTHS.start(),
                    PASSWORD_LENGTHS.end()
                ),
            ));
        }
        // Unset or blank: the default (a password never includes a space).
        let exclude_characters = env
            .optional("EXCLUDE_CHARACTERS")
            .unwrap_or_else(|| DEFAULT_EXCLUDE_CHARACTERS.to_string());
        let password = Policy::new(&exclude_characters, password_length).ok_or_else(|| {
            SettingsError::malformed("EXCLUDE_CHARACTERS", "leaves no character to draw from")
        })?;
        let timeout: u64 = env.parse_or("DB_CONNECT_TIMEOUT_SECONDS", 10)?;
        if !(1..=300).contains(&timeout) {
            return Err(SettingsError::malformed(
                "DB_CONNECT_TIMEOUT_SECONDS",
                "expected 1 to 300",
            ));
        }
        let db_endpoint = env
            .optional("DB_ENDPOINT")
            .map(|v| DbEndpoint::parse(&v))
            .transpose()?;
        let cluster = env.optional("ECS_CLUSTER");
        let services = env.list("ECS_SERVICE");
        let task_families = env.list("ECS_TASK_FAMILY");
        match (&cluster, services.is_empty()) {
            (None, false) => return Err(SettingsError::Missing("ECS_CLUSTER".into())),
            (Some(_), true) => return Err(SettingsError::Missing("ECS_SERVICE".into())),
            (None, true) if !task_families.is_empty() => {
                return Err(SettingsError::Missing("ECS_CLUSTER".into()));
            }
            _ => {}
        }
        Ok(Settings {
            strategy,
            exclude_characters,
            password_length,
            password,
            ca_bundle: env.optional("DB_CA_BUNDLE").map(PathBuf::from),
            connect_timeout: Duration::from_secs(timeout),
            db_endpoint,
            cluster,
            services,
            task_families,
        })
    }
}

/// The database endpoint the deployment pins (`DB_ENDPOINT`, `host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbEndpoint {
    pub host: String,
    pub port: u16,
}

impl DbEndpoint {
    /// Parses `host:port` (the port defaults to 3306); an error names the variable.
    pub fn parse(value: &str) -> Result<DbEndpoint, SettingsError> {
        let bad = |why: &str| SettingsError::malformed("DB_ENDPOINT", why.to_string());
        let (host, port) = match value.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port is not 1 to 65535"))?,
            ),
            None => (value, crate::secret::DEFAULT_PORT),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad("expected host:port"));
        }
        Ok(DbEndpoint {
            host: host.to_string(),
            port,
        })
    }

    /// Whether `host` and `port` name this endpoint (host names compare without case and
    /// without a trailing dot).
    pub fn is(&self, host: &str, port: u16) -> bool {
        let norm = |h: &str| h.trim_end_matches('.').to_ascii_lowercase();
        port == self.port && norm(host) == norm(&self.host)
    }
}

impl std::fmt::Display for DbEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s.strategy, None);
        assert_eq!(s.exclude_characters, DEFAULT_EXCLUDE_CHARACTERS);
        assert_eq!(s.password_length, 32);
        assert_eq!(s.ca_bundle, None);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.db_endpoint, None);
        assert_eq!(s.cluster, None);
        assert!(s.services.is_empty());
        assert!(s.task_families.is_empty());
    }

    #[test]
    fn reads_every_variable() {
        let s = Settings::from_env(&env(&[
            ("ROTATION_STRATEGY", "Single"),
            ("EXCLUDE_CHARACTERS", "abc"),
            ("PASSWORD_LENGTH", "64"),
            ("DB_CA_BUNDLE", "/var/task/global-bundle.pem"),
            ("DB_CONNECT_TIMEOUT_SECONDS", "3"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web, jobs"),
            ("ECS_TASK_FAMILY", "wiki-jobs"),
            ("DB_ENDPOINT", "wiki.abc.eu-west-1.rds.amazonaws.com:3307"),
        ]))
        .unwrap();
        let pinned = s.db_endpoint.clone().unwrap();
        assert_eq!(
            pinned.to_string(),
            "wiki.abc.eu-west-1.rds.amazonaws.com:3307"
        );
        assert!(pinned.is("WIKI.abc.eu-west-1.rds.amazonaws.com.", 3307));
        assert!(!pinned.is("wiki.abc.eu-west-1.rds.amazonaws.com", 3306));
        assert!(!pinned.is("evil.example", 3307));
        assert_eq!(DbEndpoint::parse("db").unwrap().port, 3306);
        assert_eq!(s.strategy, Some(Strategy::Single));
        assert_eq!(s.exclude_characters, "abc");
        assert_eq!(s.password_length, 64);
        assert_eq!(
            s.ca_bundle.as_deref(),
            Some(std::path::Path::new("/var/task/global-bundle.pem"))
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.cluster.as_deref(), Some("wiki"));
        assert_eq!(s.services, ["web", "jobs"]);
        assert_eq!(s.task_families, ["wiki-jobs"]);
        let s = Settings::from_env(&env(&[("ROTATION_STRATEGY", "alternating")])).unwrap();
        assert_eq!(s.strategy, Some(Strategy::Alternating));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let everything: String = (0x21u8..=0x7e).map(char::from).collect();
        for (pairs, var) in [
            (vec![("ROTATION_STRATEGY", "both")], "ROTATION_STRATEGY"),
            (vec![("PASSWORD_LENGTH", "8")], "PASSWORD_LENGTH"),
            (vec![("PASSWORD_LENGTH", "4097")], "PASSWORD_LENGTH"),
            (vec![("PASSWORD_LENGTH", "long")], "PASSWORD_LENGTH"),
            (
                vec![("DB_CONNECT_TIMEOUT_SECONDS", "0")],
                "DB_CONNECT_TIMEOUT_SECONDS",
            ),
            (vec![("ECS_SERVICE", "web")], "ECS_CLUSTER"),
            (vec![("ECS_TASK_FAMILY", "wiki-jobs")], "ECS_CLUSTER"),
            (vec![("DB_ENDPOINT", "db:0")], "DB_ENDPOINT"),
            (vec![("DB_ENDPOINT", "db:x")], "DB_ENDPOINT"),
            (vec![("DB_ENDPOINT", ":3306")], "DB_ENDPOINT"),
            (vec![("ECS_CLUSTER", "wiki")], "ECS_SERVICE"),
            (
                vec![("EXCLUDE_CHARACTERS", &everything)],
                "EXCLUDE_CHARACTERS",
            ),
        ] {
            let e = Settings::from_env(&env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(var), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn default_exclusions_cover_what_breaks_literals_dsns_and_shells() {
        for c in [
            '"', '\'', '`', '\\', '$', '@', '/', ':', ';', '%', '&', '#', '?', '!', '*', '|', '<',
            '>', '=', '+', '{', '}', '(', ')', '[', ']', '~', '^', ',', '-',
        ] {
            assert!(DEFAULT_EXCLUDE_CHARACTERS.contains(c), "{c}");
        }
        // What is left: letters, digits, `_` and `.`, so a password still includes a
        // punctuation character.
        let left: String = (0x21u8..=0x7e)
            .map(char::from)
            .filter(|c| c.is_ascii_punctuation() && !DEFAULT_EXCLUDE_CHARACTERS.contains(*c))
            .collect();
        assert_eq!(left, "._");
    }
}
