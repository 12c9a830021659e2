//! Waiting for the database, and the lock that serialises schema changes.
//!
//! [`delays`] is the pure backoff schedule: doubling from one second, capped, and never
//! beyond the total wait. [`wait`] logs in (over TLS, verified against `DB_CA_BUNDLE` when
//! set) until the server answers `SELECT 1` or the wait is over; the last failure is in the
//! error. Passwords never reach a message: MySQL's own errors name the user, not the password.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use shared::Error;
use shared::sql::{self, Escaping};

use crate::settings::{Credentials, DbSettings};

/// The sleeps between attempts for a total wait of `total`: 1 s, 2 s, 4 s, … capped at
/// 15 s, and adding up to no more than `total`.
pub fn delays(total: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut next = Duration::from_secs(1);
    let mut sum = Duration::ZERO;
    while sum + next <= total {
        out.push(next);
        sum += next;
        next = (next * 2).min(Duration::from_secs(15));
    }
    out
}

/// Connection options for the settings, logging in as `who`.
pub fn opts(db: &DbSettings, who: &Credentials) -> OptsBuilder {
    let mut o = OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(who.user.clone()))
        .pass(Some(who.password.clone()))
        .db_name(Some(db.name.clone()))
        .prefer_socket(false)
        .wait_timeout(Some(28_800));
    if db.tls {
        let mut ssl = SslOpts::default();
        if let Some(ca) = &db.ca_bundle {
            ssl = ssl
                .with_root_certs(vec![ca.clone().into()])
                .with_disable_built_in_roots(true);
        }
        o = o.ssl_opts(ssl);
    }
    o
}

/// A short description of a connection failure (never the password).
fn describe(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("server error {}: {}", s.code, s.message),
        other => other.to_string(),
    }
}

/// What the database must offer before the wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// It answers `SELECT 1` (the schema task, which installs the tables).
    Answers,
    /// It answers and MediaWiki's tables exist (web and jobs tasks: the schema task of the
    /// same deployment may still be installing).
    Installed,
}

/// Why one attempt did not make it.
enum NotReady {
    Db(mysql_async::Error),
    NoTables,
}

impl NotReady {
    fn describe(&self) -> String {
        match self {
            NotReady::Db(e) => describe(e),
            NotReady::NoTables => {
                "MediaWiki's tables are not installed yet (the schema task installs them)".into()
            }
        }
    }
}

async fn attempt(db: &DbSettings, who: &Credentials, ready: Ready) -> Result<Conn, NotReady> {
    let mut conn = connect(db, who).await.map_err(NotReady::Db)?;
    if ready == Ready::Installed && !has_tables(&mut conn, db).await.map_err(NotReady::Db)? {
        let _ = conn.disconnect().await;
        return Err(NotReady::NoTables);
    }
    Ok(conn)
}

async fn connect(db: &DbSettings, who: &Credentials) -> Result<Conn, mysql_async::Error> {
    let connect = Conn::new(opts(db, who));
    let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| {
            mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out after 10 s",
            )))
        })??;
    conn.query_drop("SELECT 1").await?;
    Ok(conn)
}

/// Logs in as `who` until the database is `ready`, within `db.wait`; returns the connection.
pub async fn wait(db: &DbSettings, who: &Credentials, ready: Ready) -> Result<Conn, Error> {
    let started = Instant::now();
    let mut schedule = delays(db.wait).into_iter();
    let mut tries = 1u32;
    loop {
        match attempt(db, who, ready).await {
            Ok(conn) => {
                tracing::info!(host = %db.host, port = db.port, user = %who.user, tries, waited_ms = started.elapsed().as_millis() as u64, "database is ready");
                return Ok(conn);
            }
            Err(e) => {
                let cause = e.describe();
                let Some(delay) = schedule.next() else {
                    return Err(Error::Unreachable(format!(
                        "database {}:{} not ready after {} tries in {} s: {cause}",
                        db.host,
                        db.port,
                        tries,
                        started.elapsed().as_secs()
                    )));
                };
                tracing::warn!(host = %db.host, port = db.port, tries, error = %cause, retry_in_s = delay.as_secs(), "database not ready");
                tokio::time::sleep(delay).await;
                tries += 1;
            }
        }
    }
}

/// The name of the schema lock for a database (MySQL allows 64 characters).
pub fn lock_name(db_name: &str) -> String {
    let mut name = format!("wikiops-schema:{db_name}");
    name.truncate(64);
    name
}

/// Takes the named lock, waiting up to `timeout`. The lock lives as long as `conn`.
pub async fn lock(conn: &mut Conn, name: &str, timeout: Duration) -> Result<(), Error> {
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, ?)", (name, timeout.as_secs()))
        .await
        .map_err(db_error)?;
    match got.flatten() {
        Some(1) => Ok(()),
        Some(_) => Err(Error::Unreachable(format!(
            "lock {name} is held by another schema run after {} s",
            timeout.as_secs()
        ))),
        None => Err(Error::Database {
            code: 0,
            message: format!("GET_LOCK({name}) failed"),
        }),
    }
}

/// Releases the named lock.
pub async fn unlock(conn: &mut Conn, name: &str) -> Result<(), Error> {
    conn.exec_drop("SELECT RELEASE_LOCK(?)", (name,))
        .await
        .map_err(db_error)
}

async fn has_tables(conn: &mut Conn, db: &DbSettings) -> Result<bool, mysql_async::Error> {
    let n: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            (&db.name, format!("{}page", db.prefix)),
        )
        .await?;
    Ok(n.unwrap_or(0) > 0)
}

/// Whether MediaWiki's tables exist (its `page` table, with the prefix).
pub async fn has_wiki_tables(conn: &mut Conn, db: &DbSettings) -> Result<bool, Error> {
    has_tables(conn, db).await.map_err(db_error)
}

/// What the wiki's own user may do: data, never schema (`update.php` runs as the admin).
pub const APP_PRIVILEGES: &str =
    "SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES";

/// The statements that create the wiki's user (when missing; an existing user keeps its
/// password, which secret-rotation owns) and grant it [`APP_PRIVILEGES`] on the database, for
/// a session that reads literals with `escaping` (`shared::sql`, as secret-rotation does).
/// A password with a control character has no portable spelling and is refused.
pub fn app_user_statements(db: &DbSettings, escaping: Escaping) -> Result<[String; 2], Error> {
    let password = sql::literal(&db.password, escaping).map_err(|e| {
        Error::Rejected(format!(
            "DB_PASSWORD cannot be written as an SQL literal: {e}"
        ))
    })?;
    let account = format!("{}@'%'", sql::ident(&db.user));
    Ok([
        format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {password}"),
        format!(
            "GRANT {APP_PRIVILEGES} ON {}.* TO {account}",
            sql::ident(&db.name)
        ),
    ])
}

/// Creates the wiki's user if missing and grants its privileges (idempotent).
pub async fn ensure_app_user(conn: &mut Conn, db: &DbSettings) -> Result<(), Error> {
    let mode: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .map_err(db_error)?;
    let escaping = Escaping::for_sql_mode(mode.as_deref().unwrap_or_default());
    for statement in app_user_statements(db, escaping)? {
        // The server's message may quote the statement, and with it the password.
        conn.query_drop(statement).await.map_err(|e| match db_error(e) {
            Error::Database { code, .. } => Error::Database {
                code,
                message: "creating the wiki's database user failed (message withheld: it may quote the password)".into(),
            },
            other => other,
        })?;
    }
    tracing::info!(user = %db.user, privileges = APP_PRIVILEGES, ?escaping, "wiki database user ensured");
    Ok(())
}

/// A database error with the server's code.
pub fn db_error(e: mysql_async::Error) -> Error {
    match e {
        mysql_async::Error::Server(s) => Error::Database {
            code: s.code,
            message: s.message,
        },
        other => Error::Unreachable(format!("database: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let d: Vec<u64> = delays(Duration::from_secs(60))
            .iter()
            .map(|d| d.as_secs())
            .collect();
        assert_eq!(d, vec![1, 2, 4, 8, 15, 15, 15]);
        assert!(delays(Duration::from_millis(500)).is_empty());
    }

    proptest! {
        #[test]
        fn backoff_stays_within_the_wait(total in 0u64..10_000) {
            let d = delays(Duration::from_secs(total));
            let sum: Duration = d.iter().sum();
            prop_assert!(sum <= Duration::from_secs(total));
            prop_assert!(d.iter().all(|x| *x >= Duration::from_secs(1) && *x <= Duration::from_secs(15)));
            // Nothing is left unused that another capped sleep would fit in.
            prop_assert!(Duration::from_secs(total) - sum < Duration::from_secs(16));
        }
    }

    #[test]
    fn app_user_statements_quote_what_they_are_given() {
        let env = shared::Env::from_pairs([
            ("CONFIG_BUCKET", "b"),
            ("WIKI_SERVER", "https://w.example"),
            ("DB_HOST", "db"),
            ("DB_NAME", "wiki"),
            ("DB_USER", "wi'k`i"),
            ("DB_PASSWORD", "p'w\\x"),
            ("WIKI_SECRET_KEY", "k"),
            ("VPC_CIDR", "10.0.0.0/16"),
        ]);
        let s = crate::Settings::from_env(&env).unwrap();
        let [create, grant] = app_user_statements(&s.db, Escaping::Backslash).unwrap();
        assert_eq!(
            create,
            "CREATE USER IF NOT EXISTS `wi'k``i`@'%' IDENTIFIED BY 'p''w\\\\x'"
        );
        assert_eq!(
            grant,
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES ON `wiki`.* TO `wi'k``i`@'%'"
        );
        let [create, _] = app_user_statements(&s.db, Escaping::NoBackslash).unwrap();
        assert_eq!(
            create,
            "CREATE USER IF NOT EXISTS `wi'k``i`@'%' IDENTIFIED BY 'p''w\\x'"
        );
        let mut db = s.db.clone();
        db.password = "pw-hidden\n".into();
        let e = app_user_statements(&db, Escaping::Backslash).unwrap_err();
        assert!(!e.to_string().contains("pw-hidden"), "{e}");
    }

    #[test]
    fn lock_names_fit_mysql() {
        assert_eq!(lock_name("wiki"), "wikiops-schema:wiki");
        assert_eq!(lock_name(&"x".repeat(100)).len(), 64);
    }
}
