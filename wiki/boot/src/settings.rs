//! The boot program's settings, read from the task's environment.
//!
//! Every setting LocalSettings.php needs is checked here too, so a task with a missing
//! setting stops before Apache starts, with one message naming the variable, instead of
//! answering every request with a PHP error.

use std::path::PathBuf;
use std::time::Duration;

use shared::{Env, SettingsError};

/// Where the configuration objects come from and where they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// `CONFIG_BUCKET`.
    pub bucket: String,
    /// `CONFIG_PREFIX`, normalised to `""` or `"<prefix>/"`.
    pub prefix: String,
    /// `REQUIRED_CONFIG`: paths relative to the prefix that must exist (default `LocalSettings.php`).
    pub required: Vec<String>,
    /// `WEB_ROOT` (default `/var/www/html`): MediaWiki's directory, Apache's document root,
    /// where `.php` files and public web assets are written.
    pub web_root: PathBuf,
    /// `CONFIG_DIR` (default `/var/lib/wikiops/config`), outside the web root: every other
    /// configuration object (JSON, YAML, keys, …), never served; PHP finds it as `CONFIG_DIR`.
    pub config_dir: PathBuf,
    /// `MAX_CONFIG_BYTES` (default 1 MiB, as config-redeploy's): the most read of one object.
    pub max_bytes: u64,
}

/// A database user and its password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach the database. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbSettings {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: String,
    /// `DB_PREFIX`: MediaWiki's table prefix (default none).
    pub prefix: String,
    /// `DB_TLS` (default true): connect over TLS.
    pub tls: bool,
    /// `DB_CA_BUNDLE`: PEM file of the CAs that sign the server's certificate (the RDS bundle).
    pub ca_bundle: Option<PathBuf>,
    /// `DB_WAIT_SECONDS` (default 180): how long to wait for the database.
    pub wait: Duration,
    /// `DB_ADMIN_USER` and `DB_ADMIN_PASSWORD` (the schema task only): the user that creates
    /// the wiki's user and runs the installer and `update.php`; the web tasks never get it.
    pub admin: Option<Credentials>,
}

impl DbSettings {
    /// The wiki's own user.
    pub fn app(&self) -> Credentials {
        Credentials {
            user: self.user.clone(),
            password: self.password.clone(),
        }
    }

    /// The user for schema changes: the admin when given, else the wiki's own user.
    pub fn schema_user(&self) -> Credentials {
        self.admin.clone().unwrap_or_else(|| self.app())
    }
}

impl std::fmt::Debug for DbSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("tls", &self.tls)
            .field("ca_bundle", &self.ca_bundle)
            .field("wait", &self.wait)
            .field("admin", &self.admin)
            .finish()
    }
}

/// Everything the boot program needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub config: ConfigSource,
    pub db: DbSettings,
    /// `WIKI_SERVER`: the wiki's public origin (`https://wiki.example.com`), `$wgServer`.
    pub server: String,
    /// `VPC_CIDR`: the load balancer's network, trusted for `X-Forwarded-For`.
    pub vpc_cidr: String,
    /// `ECS_CONTAINER_METADATA_URI_V4`, set by ECS (absent outside ECS).
    pub metadata_uri: Option<String>,
    /// `APACHE_COMMAND` (default `apache2-foreground`): program and arguments, split on whitespace.
    pub apache_command: Vec<String>,
    /// `PHP_COMMAND` (default `php`): the PHP CLI for maintenance scripts.
    pub php: String,
    /// `WIKI_ADMIN_USER` (default `Admin`): the administrator the installer creates.
    pub admin_user: String,
    /// `WIKI_NAME` (default `Wiki`): the site name given to the installer.
    pub site_name: String,
    /// `SCHEMA_LOCK_SECONDS` (default 900): how long `schema` waits for another run's lock.
    pub schema_lock_wait: Duration,
    /// `JOBS_MAX_SECONDS` (default 240): how long one `jobs` run works through the queue.
    pub jobs_max_time: Duration,
    /// `SCHEMA_TIMEOUT_SECONDS` (default 1800): the most the installer or `update.php` may take.
    pub schema_timeout: Duration,
}

/// Settings that LocalSettings.php reads and that must not be empty.
pub const PHP_REQUIRED: &[&str] = &["WIKI_SECRET_KEY"];

fn prefix(env: &Env) -> Result<String, SettingsError> {
    let Some(p) = env.optional("CONFIG_PREFIX") else {
        return Ok(String::new());
    };
    let p = p.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(SettingsError::malformed(
            "CONFIG_PREFIX",
            "empty, `.` or `..` path segment",
        ));
    }
    Ok(format!("{p}/"))
}

fn server(env: &Env) -> Result<String, SettingsError> {
    let s = env.required("WIKI_SERVER")?;
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| SettingsError::malformed("WIKI_SERVER", "must start with https://"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(SettingsError::malformed(
            "WIKI_SERVER",
            "must be an origin (scheme and host, no path), e.g. https://wiki.example.com",
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Checks `a.b.c.d/n` (IPv4) or an IPv6 network with a prefix length.
fn cidr(env: &Env) -> Result<String, SettingsError> {
    let v = env.required("VPC_CIDR")?;
    let bad = || {
        SettingsError::malformed(
            "VPC_CIDR",
            "expected an address and a prefix length (a.b.c.d/n)",
        )
    };
    let (addr, len) = v.split_once('/').ok_or_else(bad)?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = match addr.parse::<std::net::IpAddr>().map_err(|_| bad())? {
        std::net::IpAddr::V4(_) => 32,
        std::net::IpAddr::V6(_) => 128,
    };
    if len > max {
        return Err(bad());
    }
    Ok(v)
}

fn relative_path(name: &str, p: &str) -> Result<String, SettingsError> {
    if p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(SettingsError::malformed(
            name,
            "paths must be relative to CONFIG_PREFIX, without `.` or `..`",
        ));
    }
    Ok(p.to_string())
}

fn seconds(env: &Env, name: &str, default: u64) -> Result<Duration, SettingsError> {
    let s: u64 = env.parse_or(name, default)?;
    if s == 0 {
        return Err(SettingsError::malformed(name, "must be at least 1"));
    }
    Ok(Duration::from_secs(s))
}

impl Settings {
    /// Reads and checks every setting; the first problem names its variable.
    pub fn from_env(env: &Env) -> Result<Settings, SettingsError> {
        let web_root = PathBuf::from(
            env.optional("WEB_ROOT")
                .unwrap_or_else(|| "/var/www/html".into()),
        );
        if !web_root.is_absolute() {
            return Err(SettingsError::malformed(
                "WEB_ROOT",
                "must be an absolute path",
            ));
        }
        let config_dir = PathBuf::from(
            env.optional("CONFIG_DIR")
                .unwrap_or_else(|| "/var/lib/wikiops/config".into()),
        );
        if !config_dir.is_absolute() || config_dir.starts_with(&web_root) {
            return Err(SettingsError::malformed(
                "CONFIG_DIR",
                "must be an absolute path outside WEB_ROOT (what is there is never served)",
            ));
        }
        let mut required = env.list("REQUIRED_CONFIG");
        if required.is_empty() {
            required.push("LocalSettings.php".into());
        }
        let required = required
            .iter()
            .map(|p| relative_path("REQUIRED_CONFIG", p))
            .collect::<Result<Vec<_>, _>>()?;
        let config = ConfigSource {
            bucket: env.required("CONFIG_BUCKET")?,
            prefix: prefix(env)?,
            required,
            web_root,
            config_dir,
            max_bytes: env.parse_or(
                "MAX_CONFIG_BYTES",
                shared::config_rules::DEFAULT_MAX_CONFIG_BYTES,
            )?,
        };
        let server = server(env)?;
        let db = DbSettings {
            host: env.required("DB_HOST")?,
            port: env.parse_or("DB_PORT", 3306u16)?,
            name: env.required("DB_NAME")?,
            user: env.required("DB_USER")?,
            password: env.required_secret("DB_PASSWORD")?,
            prefix: env.optional("DB_PREFIX").unwrap_or_default(),
            tls: env.flag("DB_TLS", true)?,
            ca_bundle: env.optional("DB_CA_BUNDLE").map(PathBuf::from),
            wait: seconds(env, "DB_WAIT_SECONDS", 180)?,
            admin: match (
                env.optional("DB_ADMIN_USER"),
                env.secret("DB_ADMIN_PASSWORD"),
            ) {
                (None, None) => None,
                (Some(user), Some(password)) => Some(Credentials { user, password }),
                (Some(_), None) => return Err(SettingsError::Missing("DB_ADMIN_PASSWORD".into())),
                (None, Some(_)) => return Err(SettingsError::Missing("DB_ADMIN_USER".into())),
            },
        };
        let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
        if !db.name.chars().all(identifier) {
            return Err(SettingsError::malformed(
                "DB_NAME",
                "only letters, digits, `_` and `$`",
            ));
        }
        if !db
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(SettingsError::malformed(
                "DB_PREFIX",
                "only letters, digits and `_`",
            ));
        }
        let vpc_cidr = cidr(env)?;
        for name in PHP_REQUIRED {
            env.required_secret(name)?;
        }
        let apache_command: Vec<String> = env
            .optional("APACHE_COMMAND")
            .unwrap_or_else(|| "apache2-foreground".into())
            .split_whitespace()
            .map(String::from)
            .collect();
        Ok(Settings {
            config,
            db,
            server,
            vpc_cidr,
            metadata_uri: env
                .optional("ECS_CONTAINER_METADATA_URI_V4")
                .map(|u| u.trim_end_matches('/').to_string()),
            apache_command,
            php: env.optional("PHP_COMMAND").unwrap_or_else(|| "php".into()),
            admin_user: env
                .optional("WIKI_ADMIN_USER")
                .unwrap_or_else(|| "Admin".into()),
            site_name: env.optional("WIKI_NAME").unwrap_or_else(|| "Wiki".into()),
            schema_lock_wait: seconds(env, "SCHEMA_LOCK_SECONDS", 900)?,
            jobs_max_time: seconds(env, "JOBS_MAX_SECONDS", 240)?,
            schema_timeout: seconds(env, "SCHEMA_TIMEOUT_SECONDS", 1800)?,
        })
    }

    /// The variables the boot program hands to its children (Apache, PHP) on top of its own
    /// environment: resolved defaults, so LocalSettings.php and the Apache config see them.
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "WEB_ROOT".into(),
                self.config.web_root.display().to_string(),
            ),
            (
                "CONFIG_DIR".into(),
                self.config.config_dir.display().to_string(),
            ),
            ("DB_PORT".into(), self.db.port.to_string()),
            ("DB_TLS".into(), if self.db.tls { "1" } else { "0" }.into()),
            ("WIKI_SERVER".into(), self.server.clone()),
            ("WIKI_NAME".into(), self.site_name.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CONFIG_BUCKET", "wiki-config"),
            ("WIKI_SERVER", "https://wiki.example.com"),
            ("DB_HOST", "db.internal"),
            ("DB_NAME", "wiki"),
            ("DB_USER", "wiki"),
            ("DB_PASSWORD", "s3cr3t-password"),
            ("WIKI_SECRET_KEY", "s3cr3t-key"),
            ("VPC_CIDR", "10.0.0.0/16"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Settings, SettingsError> {
        let mut pairs = base();
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k, v));
        }
        Settings::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn the_config_dir_is_never_in_the_web_root() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base();
            pairs.extend_from_slice(extra);
            Settings::from_env(&Env::from_pairs(pairs))
        };
        assert_eq!(
            with(&[]).unwrap().config.config_dir,
            PathBuf::from("/var/lib/wikiops/config")
        );
        for bad in ["/var/www/html/config", "/var/www/html", "config"] {
            let err = with(&[("CONFIG_DIR", bad)]).unwrap_err();
            assert!(err.to_string().contains("CONFIG_DIR"), "{err}");
        }
    }

    #[test]
    fn defaults() {
        let s = with(&[]).unwrap();
        assert_eq!(s.config.prefix, "");
        assert_eq!(s.config.required, vec!["LocalSettings.php"]);
        assert_eq!(s.config.web_root, PathBuf::from("/var/www/html"));
        assert_eq!(s.db.port, 3306);
        assert!(s.db.tls);
        assert_eq!(s.db.wait, Duration::from_secs(180));
        assert_eq!(s.apache_command, vec!["apache2-foreground"]);
        assert_eq!(s.metadata_uri, None);
        assert_eq!(s.php, "php");
    }

    #[test]
    fn every_required_setting_is_named_when_missing() {
        for (name, _) in base() {
            let pairs: Vec<_> = base().into_iter().filter(|(k, _)| *k != name).collect();
            let err = Settings::from_env(&Env::from_pairs(pairs)).unwrap_err();
            assert_eq!(err, SettingsError::Missing(name.to_string()), "{name}");
            let err = with(&[(name, "  ")]).unwrap_err();
            assert_eq!(
                err,
                SettingsError::Missing(name.to_string()),
                "{name} blank"
            );
        }
    }

    #[test]
    fn prefix_is_normalised() {
        for (raw, want) in [
            ("wiki", "wiki/"),
            ("/wiki/", "wiki/"),
            ("a/b", "a/b/"),
            ("/", ""),
        ] {
            assert_eq!(with(&[("CONFIG_PREFIX", raw)]).unwrap().config.prefix, want);
        }
        for bad in ["a//b", "../x", "a/./b"] {
            let err = with(&[("CONFIG_PREFIX", bad)]).unwrap_err();
            assert!(err.to_string().contains("CONFIG_PREFIX"), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_refused_without_quoting_them() {
        for (name, value) in [
            ("WIKI_SERVER", "wiki.example.com"),
            ("WIKI_SERVER", "https://wiki.example.com/w"),
            ("VPC_CIDR", "10.0.0.0"),
            ("VPC_CIDR", "10.0.0.0/33"),
            ("VPC_CIDR", "vpc/16"),
            ("DB_PORT", "mysql"),
            ("DB_TLS", "maybe"),
            ("DB_WAIT_SECONDS", "0"),
            ("DB_PREFIX", "mw-"),
            ("WEB_ROOT", "html"),
            ("REQUIRED_CONFIG", "LocalSettings.php,../etc/passwd"),
            ("REQUIRED_CONFIG", "/etc/passwd"),
        ] {
            let err = with(&[(name, value)]).unwrap_err().to_string();
            assert!(err.contains(name), "{name}: {err}");
            assert!(!err.contains(value), "{name}: {err}");
        }
    }

    #[test]
    fn server_loses_its_trailing_slash_and_ipv6_cidr_is_accepted() {
        let s = with(&[
            ("WIKI_SERVER", "https://wiki.example.com/"),
            ("VPC_CIDR", "fd00::/56"),
            ("REQUIRED_CONFIG", "LocalSettings.php, extra/Settings.php"),
            ("APACHE_COMMAND", "apache2 -DFOREGROUND"),
            (
                "ECS_CONTAINER_METADATA_URI_V4",
                "http://169.254.170.2/v4/abc/",
            ),
        ])
        .unwrap();
        assert_eq!(s.server, "https://wiki.example.com");
        assert_eq!(s.vpc_cidr, "fd00::/56");
        assert_eq!(
            s.config.required,
            vec!["LocalSettings.php", "extra/Settings.php"]
        );
        assert_eq!(s.apache_command, vec!["apache2", "-DFOREGROUND"]);
        assert_eq!(
            s.metadata_uri.as_deref(),
            Some("http://169.254.170.2/v4/abc")
        );
    }

    #[test]
    fn admin_credentials_come_in_pairs() {
        assert_eq!(with(&[]).unwrap().db.admin, None);
        assert_eq!(with(&[]).unwrap().db.schema_user().user, "wiki");
        let s = with(&[
            ("DB_ADMIN_USER", "wikiadmin"),
            ("DB_ADMIN_PASSWORD", "adm-s3cr3t"),
        ])
        .unwrap();
        assert_eq!(s.db.schema_user().user, "wikiadmin");
        assert_eq!(s.db.app().user, "wiki");
        assert!(!format!("{s:?}").contains("adm-s3cr3t"));
        assert_eq!(
            with(&[("DB_ADMIN_USER", "wikiadmin")]).unwrap_err(),
            SettingsError::Missing("DB_ADMIN_PASSWORD".into())
        );
        assert_eq!(
            with(&[("DB_ADMIN_PASSWORD", "x")]).unwrap_err(),
            SettingsError::Missing("DB_ADMIN_USER".into())
        );
        let err = with(&[("DB_NAME", "wiki`; DROP")]).unwrap_err().to_string();
        assert!(err.contains("DB_NAME"), "{err}");
    }

    #[test]
    fn secrets_are_never_trimmed() {
        let s = with(&[
            ("DB_PASSWORD", "  pw with spaces\t"),
            ("DB_ADMIN_USER", " wikiadmin "),
            ("DB_ADMIN_PASSWORD", " adm "),
        ])
        .unwrap();
        assert_eq!(s.db.password, "  pw with spaces\t");
        let admin = s.db.admin.unwrap();
        assert_eq!(admin.password, " adm ");
        assert_eq!(admin.user, "wikiadmin", "names are trimmed");
        assert_eq!(
            with(&[("DB_PASSWORD", "")]).unwrap_err(),
            SettingsError::Missing("DB_PASSWORD".into())
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s = with(&[]).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let child = format!("{:?}", s.child_env());
        assert!(!child.contains("s3cr3t"), "{child}");
    }
}
