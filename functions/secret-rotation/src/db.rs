//! The database adapter: TLS logins, observing accounts, running planned statements.
//!
//! TLS trusts the roots built into the binary (`webpki-roots`, Mozilla's list, which is
//! what mysql_async's rustls feature uses) plus the PEM bundle in `DB_CA_BUNDLE` (RDS
//! certificates chain to Amazon's RDS CAs, which are not in that list). The certificate is
//! verified, host name included; a server without TLS is an error, never a plaintext
//! fallback. Only a secret with `"ssl": false` connects without TLS.

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts};
use shared::{Error, SettingsError};

use crate::plan::{AccountProps, Flavor, ObservedAccount};
use crate::secret::Password;
use crate::sql::{Account, Escaping, Statement, scrub};

/// Server error codes that mean "these credentials do not log in (yet)": access denied,
/// no access to the database, account locked (MySQL, MariaDB), password expired.
pub const LOGIN_REFUSED: [u16; 6] = [1044, 1045, 1698, 1862, 3118, 4151];

/// MySQL's `password_require_current`: `ALTER USER` needs `REPLACE '<current>'`.
pub const MISSING_CURRENT_PASSWORD: u16 = 3892;

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `false` only when the secret says `"ssl": false`.
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
    /// PEM certificates trusted besides the built-in roots.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl ConnectOptions {
    /// Reads `DB_CA_BUNDLE` (when set); a missing or certificate-less file is a settings error.
    pub fn load(ca_bundle: Option<&Path>, timeout: Duration) -> Result<Self, Error> {
        let ca_pem = match ca_bundle {
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
        Ok(ConnectOptions { ca_pem, timeout })
    }
}

/// Why a database operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbError {
    /// The server refused the login (one of [`LOGIN_REFUSED`]).
    LoginRefused { code: u16, message: String },
    /// The server answered with an error.
    Server { code: u16, message: String },
    /// TCP, TLS or protocol failure, or a timeout.
    Unreachable(String),
}

impl DbError {
    /// The server's error code, if it answered with one.
    pub fn code(&self) -> Option<u16> {
        match self {
            DbError::LoginRefused { code, .. } | DbError::Server { code, .. } => Some(*code),
            DbError::Unreachable(_) => None,
        }
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::LoginRefused { code, message } | DbError::Server { code, message } => {
                Error::Database { code, message }
            }
            DbError::Unreachable(m) => Error::Unreachable(m),
        }
    }
}

fn classify(endpoint: &Endpoint, e: mysql_async::Error, statement: Option<&Statement>) -> DbError {
    use mysql_async::{Error as E, IoError};
    match e {
        E::Server(s) => {
            let message = match statement {
                Some(st) => scrub(&s.message, st),
                None => s.message,
            };
            if statement.is_none() && LOGIN_REFUSED.contains(&s.code) {
                DbError::LoginRefused {
                    code: s.code,
                    message,
                }
            } else {
                DbError::Server {
                    code: s.code,
                    message,
                }
            }
        }
        E::Io(IoError::Tls(t)) => DbError::Unreachable(format!("TLS with {endpoint} failed: {t}")),
        E::Io(IoError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            DbError::Unreachable(format!(
                "TLS with {endpoint} failed: {io} (is the server's CA in DB_CA_BUNDLE?)"
            ))
        }
        E::Io(IoError::Io(io)) => DbError::Unreachable(format!("{endpoint}: {io}")),
        E::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            DbError::Unreachable(format!(
                "{endpoint} does not offer TLS (set \"ssl\": false in the secret to allow plaintext)"
            ))
        }
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
        let mut ssl = SslOpts::default();
        if let Some(pem) = &options.ca_pem {
            ssl = ssl.with_root_certs(vec![pem.clone().into()]);
        }
        opts = opts.ssl_opts(ssl);
    }
    let conn = match tokio::time::timeout(options.timeout, Conn::new(opts)).await {
        Err(_) => {
            return Err(DbError::Unreachable(format!(
                "{endpoint}: no login within {}s (DB_CONNECT_TIMEOUT_SECONDS)",
                options.timeout.as_secs()
            )));
        }
        Ok(r) => r.map_err(|e| classify(endpoint, e, None))?,
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

    /// `SELECT 1`.
    pub async fn ping(&mut self) -> Result<(), DbError> {
        let one: Option<i64> = self
            .conn
            .query_first("SELECT 1")
            .await
            .map_err(|e| self.err(e, None))?;
        if one == Some(1) {
            Ok(())
        } else {
            Err(DbError::Unreachable(format!(
                "{}: SELECT 1 did not return 1",
                self.endpoint
            )))
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

    /// The host parts of every account named `user`.
    pub async fn hosts_of(&mut self, user: &str) -> Result<Vec<String>, DbError> {
        let rows: Vec<Row> = self
            .conn
            .exec(
                "SELECT Host FROM mysql.user WHERE User = ? ORDER BY Host",
                (user,),
            )
            .await
            .map_err(|e| self.err(e, None))?;
        Ok(rows.iter().map(|r| text(r, 0)).collect())
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
