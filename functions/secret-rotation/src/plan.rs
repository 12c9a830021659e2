//! The pure rules of a rotation: plain observed data in, a decision or a list of SQL
//! statements out. The adapters (`secrets`, `db`, `steps`) observe and apply.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use shared::Error;

use crate::db::Endpoint;
use crate::failure::Cause;
use crate::secret::{DbSecret, Password};
use crate::settings::{DbEndpoint, Strategy};
use crate::sql::{Account, Escaping, Grant, Statement, literal};

/// The staging labels of Secrets Manager.
pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// MySQL's limit on user names (MariaDB allows 80; the lower limit keeps both working).
pub const MAX_USERNAME: usize = 32;

/// The suffix of the second user of the alternating strategy.
pub const CLONE_SUFFIX: &str = "_clone";

/// What DescribeSecret says about a secret, as far as a rotation needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SecretMeta {
    pub rotation_enabled: bool,
    /// Version id → staging labels.
    pub versions: BTreeMap<String, Vec<String>>,
}

impl SecretMeta {
    /// The version that holds `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(v, _)| v.as_str())
    }

    fn has(&self, version: &str, stage: &str) -> bool {
        self.versions
            .get(version)
            .is_some_and(|stages| stages.iter().any(|s| s == stage))
    }
}

/// Whether a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "gate", rename_all = "snake_case")]
pub enum Gate {
    /// The token is already AWSCURRENT: the rotation finished.
    AlreadyCurrent,
    /// The token is AWSPENDING; `current` holds AWSCURRENT.
    Proceed { current: String },
}

/// The checks Secrets Manager's contract asks for before any step.
pub fn gate(secret_id: &str, meta: &SecretMeta, token: &str) -> Result<Gate, Error> {
    if !meta.rotation_enabled {
        return Err(Error::Rejected(format!(
            "rotation is not enabled for secret {secret_id}"
        )));
    }
    if !meta.versions.contains_key(token) {
        return Err(Error::Rejected(format!(
            "ClientRequestToken {token} is not a version of secret {secret_id}"
        )));
    }
    if meta.has(token, AWSCURRENT) {
        return Ok(Gate::AlreadyCurrent);
    }
    if !meta.has(token, AWSPENDING) {
        if let Some(other) = meta.version_with(AWSPENDING) {
            return Err(Cause::PendingVersionConflict.error(format!(
                "version {other} of secret {secret_id} is staged AWSPENDING, not the token {token}"
            )));
        }
        return Err(Error::Rejected(format!(
            "version {token} of secret {secret_id} is not staged AWSPENDING"
        )));
    }
    let current = meta
        .version_with(AWSCURRENT)
        .ok_or_else(|| Error::Rejected(format!("secret {secret_id} has no AWSCURRENT version")))?;
    Ok(Gate::Proceed {
        current: current.to_string(),
    })
}

/// The strategy for a secret: the setting, else alternating when the secret names a master.
pub fn strategy(setting: Option<Strategy>, current: &DbSecret) -> Result<Strategy, Error> {
    match (setting, current.masterarn.is_some()) {
        (Some(Strategy::Alternating), false) => Err(Error::Rejected(
            "the alternating strategy needs `masterarn` in the secret (the master user's secret)"
                .into(),
        )),
        (Some(s), _) => Ok(s),
        (None, true) => Ok(Strategy::Alternating),
        (None, false) => Ok(Strategy::Single),
    }
}

/// The other user of the alternating pair: `<user>` ↔ `<user>_clone`.
pub fn alternate_username(user: &str) -> Result<String, Error> {
    let other = match user.strip_suffix(CLONE_SUFFIX) {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => format!("{user}{CLONE_SUFFIX}"),
    };
    if other.chars().count() > MAX_USERNAME {
        return Err(Error::Rejected(format!(
            "user name {other} would be longer than MySQL's {MAX_USERNAME} characters; \
             shorten {user} or use the single-user strategy"
        )));
    }
    Ok(other)
}

/// What createSecret does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum CreatePlan {
    /// The AWSPENDING version already has a value (a retry): nothing to do.
    PendingExists,
    /// Store a copy of AWSCURRENT with a new password and this user name.
    Generate { username: String },
}

/// Plans createSecret from the current secret and whether the pending version has a value.
pub fn plan_create(
    current: &DbSecret,
    strategy: Strategy,
    pending_exists: bool,
) -> Result<CreatePlan, Error> {
    if pending_exists {
        return Ok(CreatePlan::PendingExists);
    }
    let username = match strategy {
        Strategy::Alternating => alternate_username(&current.username)?,
        Strategy::Single => current.username.clone(),
    };
    Ok(CreatePlan::Generate { username })
}

/// Checks that the pending secret is the one createSecret would have made from the current.
pub fn check_pending(
    current: &DbSecret,
    pending: &DbSecret,
    strategy: Strategy,
) -> Result<(), Error> {
    let expected = match strategy {
        Strategy::Alternating => alternate_username(&current.username)?,
        Strategy::Single => current.username.clone(),
    };
    if pending.username != expected {
        return Err(Cause::PendingUserUnexpected.error(format!(
            "AWSPENDING user {} is not the expected {expected} (AWSCURRENT user {}, {} strategy)",
            pending.username,
            current.username,
            match strategy {
                Strategy::Alternating => "alternating",
                Strategy::Single => "single",
            }
        )));
    }
    if pending.host != current.host || pending.port != current.port {
        return Err(Cause::EndpointMismatch
            .error("AWSPENDING and AWSCURRENT point at different database hosts or ports"));
    }
    Ok(())
}

/// Where the master login goes: the master secret's own host and port, else the rotated
/// secret's — and then only when they are the pinned `DB_ENDPOINT`. A master secret with a host
/// must agree with `DB_ENDPOINT` too, when it is set. Anything else is refused before connecting:
/// whoever can write the rotated secret must not be able to point the master login elsewhere.
/// The login requires verified TLS unless the master's own secret says `"ssl": false`; the
/// rotated secret's `ssl` never decides it (it would let its writer receive the master
/// password in clear).
pub fn master_endpoint(
    pinned: Option<&DbEndpoint>,
    master: &DbSecret,
    current: &DbSecret,
) -> Result<Endpoint, Error> {
    let (source, host, port) = match &master.host {
        Some(h) => ("the master secret", h, master.port),
        None => (
            "the rotated secret",
            current
                .host
                .as_ref()
                .ok_or_else(|| Cause::SecretMissingKey.error("the rotated secret has no `host`"))?,
            current.port,
        ),
    };
    match pinned {
        Some(p) if !p.is(host, port) => {
            return Err(Cause::EndpointMismatch.error(format!(
                "{source} points at {host}:{port}, not at DB_ENDPOINT {p}; the master login was refused"
            )));
        }
        None if master.host.is_none() => {
            return Err(Cause::EndpointMismatch.error(format!(
                "{source} points at {host}:{port}, but the master secret has no host and \
                 DB_ENDPOINT is not set, so nothing pins where the master password may go; the \
                 master login was refused"
            )));
        }
        _ => {}
    }
    Ok(Endpoint {
        host: host.clone(),
        port,
        tls: master.ssl != Some(false),
    })
}

/// Refuses to change the master user or `<master>_clone` (the alternating strategy would
/// otherwise take the master's name when the rotated secret holds it).
pub fn check_not_protected(user: &str, master_user: &str) -> Result<(), Error> {
    if user == master_user || user == format!("{master_user}{CLONE_SUFFIX}") {
        return Err(Cause::ProtectedUser.error(format!(
            "setSecret would change {user}, the master user {master_user} or its clone; nothing was changed"
        )));
    }
    Ok(())
}

/// The server family, from `SELECT VERSION()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    MySql,
    MariaDb,
}

impl Flavor {
    /// MariaDB reports `…-MariaDB…` in its version.
    pub fn from_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

/// The properties of an account that `GRANT` does not carry, from `mysql.user`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AccountProps {
    /// `''`, `ANY`, `X509` or `SPECIFIED`.
    pub ssl_type: String,
    pub ssl_cipher: String,
    pub x509_issuer: String,
    pub x509_subject: String,
    pub max_questions: u64,
    pub max_updates: u64,
    pub max_connections: u64,
    pub max_user_connections: i64,
}

impl AccountProps {
    /// The `REQUIRE …` clause that gives another account the same TLS requirements.
    pub fn require_clause(&self, escaping: Escaping) -> Result<String, Error> {
        let lit = |v: &str| {
            literal(v, escaping)
                .map_err(|_| Error::Rejected("a REQUIRE value has a control character".into()))
        };
        Ok(match self.ssl_type.to_ascii_uppercase().as_str() {
            "" => "REQUIRE NONE".into(),
            "ANY" => "REQUIRE SSL".into(),
            "X509" => "REQUIRE X509".into(),
            "SPECIFIED" => {
                let mut parts = Vec::new();
                for (kw, v) in [
                    ("ISSUER", &self.x509_issuer),
                    ("SUBJECT", &self.x509_subject),
                    ("CIPHER", &self.ssl_cipher),
                ] {
                    if !v.is_empty() {
                        parts.push(format!("{kw} {}", lit(v)?));
                    }
                }
                if parts.is_empty() {
                    "REQUIRE SSL".into()
                } else {
                    format!("REQUIRE {}", parts.join(" AND "))
                }
            }
            other => {
                return Err(Error::Rejected(format!(
                    "unknown ssl_type {other} in mysql.user"
                )));
            }
        })
    }

    /// The `WITH MAX_…` resource limits clause.
    pub fn limits_clause(&self) -> String {
        format!(
            "WITH MAX_QUERIES_PER_HOUR {} MAX_UPDATES_PER_HOUR {} MAX_CONNECTIONS_PER_HOUR {} MAX_USER_CONNECTIONS {}",
            self.max_questions,
            self.max_updates,
            self.max_connections,
            self.max_user_connections.max(0)
        )
    }
}

/// An account as observed: its `SHOW GRANTS` rows and its `mysql.user` properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedAccount {
    pub account: Account,
    #[serde(skip)]
    pub grant_rows: Vec<String>,
    pub props: AccountProps,
}

/// The SQL that makes `target` a copy of `source` (grants, TLS requirements, limits) with
/// `password`. The password is set last, together with `ACCOUNT UNLOCK`, so a login with
/// it succeeds only once everything else is in place (setSecret's first check relies on it).
///
/// When the target's grants already equal the source's they are left alone; otherwise they
/// are replaced (so a privilege revoked from the source does not come back through the
/// clone). The target is not the user in use (AWSCURRENT), so the brief gap is harmless.
pub fn plan_clone(
    source: &ObservedAccount,
    target: &Account,
    target_rows: Option<&[String]>,
    password: &Password,
    escaping: Escaping,
) -> Result<Vec<Statement>, Error> {
    let parse_all = |rows: &[String], who: &Account| -> Result<Vec<Grant>, Error> {
        let mut out: Vec<Grant> = Vec::new();
        for r in rows {
            let g = Grant::parse(r, who).map_err(|e| Error::Rejected(e.to_string()))?;
            if !out.contains(&g) {
                out.push(g);
            }
        }
        Ok(out)
    };
    // In the server's order (roles after privileges, global first).
    let wanted = parse_all(&source.grant_rows, &source.account)?;
    let mut out = Vec::new();
    match target_rows {
        None => {
            out.push(Statement::text(format!(
                "CREATE USER IF NOT EXISTS {} ACCOUNT LOCK",
                target.sql()
            )));
            out.extend(wanted.iter().map(|g| g.to(target)));
        }
        Some(rows) => {
            let have = parse_all(rows, target)?;
            let same = have.iter().collect::<BTreeSet<_>>() == wanted.iter().collect();
            if !same {
                out.push(Statement::text(format!(
                    "REVOKE ALL PRIVILEGES, GRANT OPTION FROM {}",
                    target.sql()
                )));
                out.extend(
                    have.iter()
                        .filter(|g| g.is_role && !wanted.contains(g))
                        .filter_map(|g| g.revoke_role_from(target)),
                );
                out.extend(
                    wanted
                        .iter()
                        .filter(|g| !(g.is_role && have.contains(g)))
                        .map(|g| g.to(target)),
                );
            }
        }
    }
    let after = format!(
        " {} {} ACCOUNT UNLOCK",
        source.props.require_clause(escaping)?,
        source.props.limits_clause()
    );
    out.push(
        Statement::with_secret(
            format!("ALTER USER {} IDENTIFIED BY ", target.sql()),
            password.clone(),
            after,
            escaping,
        )
        .map_err(|_| Error::Rejected("the AWSPENDING password has a control character".into()))?,
    );
    Ok(out)
}

/// The other user's accounts on hosts where the current user has none (`wiki_clone@10.%` beside
/// `wiki_clone@%` when only `wiki@%` exists). setSecret copies the current user host by host,
/// so these would keep their old password and grants; they are dropped instead, and the other
/// user's accounts become exactly the current user's (a host removed from the user in use stays
/// removed, as a revoked privilege does).
pub fn stale_accounts(
    other: &str,
    current_hosts: &[String],
    other_hosts: &[String],
) -> Vec<Account> {
    other_hosts
        .iter()
        .filter(|h| !current_hosts.contains(h))
        .map(|h| Account::new(other, h.as_str()))
        .collect()
}

/// `DROP USER IF EXISTS` for a stale account (a re-run finds nothing to drop).
pub fn plan_drop(account: &Account) -> Statement {
    Statement::text(format!("DROP USER IF EXISTS {}", account.sql()))
}

/// The statement a user runs to change its own password.
///
/// MariaDB's `ALTER USER CURRENT_USER()` needs the CREATE USER privilege, so MariaDB uses
/// `SET PASSWORD`; MySQL 5.7+ uses `ALTER USER CURRENT_USER()` (`SET PASSWORD = PASSWORD()`
/// is gone in MySQL 8). `replace` adds MySQL's `REPLACE '<current>'` for servers with
/// `password_require_current`.
pub fn own_password_change(
    flavor: Flavor,
    password: &Password,
    replace: Option<&Password>,
    escaping: Escaping,
) -> Result<Statement, Error> {
    let bad = |_| Error::Rejected("the AWSPENDING password has a control character".into());
    match (flavor, replace) {
        (Flavor::MariaDb, _) => {
            Statement::with_secret("SET PASSWORD = PASSWORD(", password.clone(), ")", escaping)
                .map_err(bad)
        }
        (Flavor::MySql, None) => Statement::with_secret(
            "ALTER USER CURRENT_USER() IDENTIFIED BY ",
            password.clone(),
            "",
            escaping,
        )
        .map_err(bad),
        (Flavor::MySql, Some(old)) => Statement::with_secret(
            "ALTER USER CURRENT_USER() IDENTIFIED BY ",
            password.clone(),
            " REPLACE ",
            escaping,
        )
        .map_err(bad)?
        .then_secret(old.clone(), "")
        .map_err(|_| Error::Rejected("the current password has a control character".into())),
    }
}

/// Which stored password a single-user login attempt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Pending,
    Current,
    Previous,
    /// A version with no label (a rotation abandoned after setSecret left the live
    /// password there).
    Unlabelled,
}

/// How many unlabelled versions the single-user setSecret tries as a last resort.
pub const MAX_UNLABELLED_TRIES: usize = 10;

/// The login attempts of the single-user setSecret, in order: the pending password (already
/// set?), then the current, then the previous (a rotation interrupted after the change but
/// before finishSecret, then restarted with a new token, leaves the live password there).
pub fn single_user_attempts(
    pending: &DbSecret,
    current: &DbSecret,
    previous: Option<&DbSecret>,
) -> Vec<Which> {
    let mut seen: Vec<&Password> = vec![&pending.password];
    let mut out = vec![Which::Pending];
    if !seen.contains(&&current.password) {
        seen.push(&current.password);
        out.push(Which::Current);
    }
    if let Some(p) = previous
        && p.username == pending.username
        && !seen.contains(&&p.password)
    {
        out.push(Which::Previous);
    }
    out
}

/// What finishSecret does to the stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FinishPlan {
    /// Move AWSCURRENT from `from` to the token (Secrets Manager moves AWSPREVIOUS).
    MoveCurrent { from: String },
    /// The token is already AWSCURRENT (a retry): only make sure the services redeployed.
    AlreadyCurrent,
}

/// Plans finishSecret from the gate's answer.
pub fn plan_finish(gate: &Gate) -> FinishPlan {
    match gate {
        Gate::AlreadyCurrent => FinishPlan::AlreadyCurrent,
        Gate::Proceed { current } => FinishPlan::MoveCurrent {
            from: current.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, prop_assert_ne, proptest};

    fn meta(enabled: bool, versions: &[(&str, &[&str])]) -> SecretMeta {
        SecretMeta {
            rotation_enabled: enabled,
            versions: versions
                .iter()
                .map(|(v, s)| (v.to_string(), s.iter().map(|x| x.to_string()).collect()))
                .collect(),
        }
    }

    #[test]
    fn gate_follows_the_contract() {
        let m = meta(true, &[("old", &[AWSCURRENT]), ("tok", &[AWSPENDING])]);
        assert_eq!(
            gate("s", &m, "tok").unwrap(),
            Gate::Proceed {
                current: "old".into()
            }
        );
        let e = gate("s", &meta(false, &[("tok", &[AWSPENDING])]), "tok").unwrap_err();
        assert!(e.to_string().contains("not enabled"), "{e}");
        let e = gate("s", &m, "other").unwrap_err();
        assert!(e.to_string().contains("not a version"), "{e}");
        let m2 = meta(true, &[("old", &[AWSCURRENT]), ("tok", &[AWSPREVIOUS])]);
        let e = gate("s", &m2, "tok").unwrap_err();
        assert!(e.to_string().contains("not staged AWSPENDING"), "{e}");
        let m3 = meta(
            true,
            &[("old", &[AWSPREVIOUS]), ("tok", &[AWSCURRENT, AWSPENDING])],
        );
        assert_eq!(gate("s", &m3, "tok").unwrap(), Gate::AlreadyCurrent);
        let m4 = meta(true, &[("tok", &[AWSPENDING])]);
        assert!(gate("s", &m4, "tok").is_err());
        assert_eq!(e.error_type(), "Rejected");
    }

    fn secret(user: &str, master: bool) -> DbSecret {
        let m = if master {
            r#","masterarn":"arn:m""#
        } else {
            ""
        };
        DbSecret::parse(&format!(
            r#"{{"engine":"mariadb","host":"h","username":"{user}","password":"p"{m}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn strategy_defaults_on_masterarn() {
        assert_eq!(
            strategy(None, &secret("u", true)).unwrap(),
            Strategy::Alternating
        );
        assert_eq!(
            strategy(None, &secret("u", false)).unwrap(),
            Strategy::Single
        );
        assert_eq!(
            strategy(Some(Strategy::Single), &secret("u", true)).unwrap(),
            Strategy::Single
        );
        let e = strategy(Some(Strategy::Alternating), &secret("u", false)).unwrap_err();
        assert!(e.to_string().contains("masterarn"), "{e}");
    }

    #[test]
    fn alternate_names_flip_and_fit() {
        assert_eq!(alternate_username("wiki").unwrap(), "wiki_clone");
        assert_eq!(alternate_username("wiki_clone").unwrap(), "wiki");
        assert_eq!(alternate_username("_clone").unwrap(), "_clone_clone");
        let at_limit = "a".repeat(MAX_USERNAME - CLONE_SUFFIX.len());
        assert!(alternate_username(&at_limit).is_ok());
        let e = alternate_username(&format!("{at_limit}x")).unwrap_err();
        assert!(e.to_string().contains("32"), "{e}");
    }

    #[test]
    fn create_plans() {
        let c = secret("wiki", true);
        assert_eq!(
            plan_create(&c, Strategy::Alternating, false).unwrap(),
            CreatePlan::Generate {
                username: "wiki_clone".into()
            }
        );
        assert_eq!(
            plan_create(&c, Strategy::Single, false).unwrap(),
            CreatePlan::Generate {
                username: "wiki".into()
            }
        );
        assert_eq!(
            plan_create(&c, Strategy::Alternating, true).unwrap(),
            CreatePlan::PendingExists
        );
    }

    #[test]
    fn pending_must_match_current() {
        let c = secret("wiki", true);
        let p = c.with_credentials("wiki_clone", Password::new("n"));
        assert!(check_pending(&c, &p, Strategy::Alternating).is_ok());
        assert!(check_pending(&c, &p, Strategy::Single).is_err());
        let same = c.with_credentials("wiki", Password::new("n"));
        assert!(check_pending(&c, &same, Strategy::Single).is_ok());
        let mut other_host = p.clone();
        other_host.host = Some("elsewhere".into());
        assert!(check_pending(&c, &other_host, Strategy::Alternating).is_err());
    }

    fn observed(rows: &[&str], props: AccountProps) -> ObservedAccount {
        ObservedAccount {
            account: Account::new("wiki", "%"),
            grant_rows: rows.iter().map(|s| s.to_string()).collect(),
            props,
        }
    }

    const ROWS: [&str; 3] = [
        "GRANT USAGE ON *.* TO `wiki`@`%` IDENTIFIED BY PASSWORD '*HASH' REQUIRE SSL",
        "GRANT SELECT, INSERT ON `wiki`.* TO `wiki`@`%` WITH GRANT OPTION",
        "GRANT `r1` TO `wiki`@`%`",
    ];

    fn rendered(stmts: &[Statement]) -> Vec<String> {
        stmts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clone_of_a_new_user() {
        let props = AccountProps {
            ssl_type: "ANY".into(),
            max_user_connections: 7,
            ..Default::default()
        };
        let target = Account::new("wiki_clone", "%");
        let stmts = plan_clone(
            &observed(&ROWS, props),
            &target,
            None,
            &Password::new("P'w"),
            Escaping::Backslash,
        )
        .unwrap();
        assert_eq!(
            rendered(&stmts),
            [
                "CREATE USER IF NOT EXISTS `wiki_clone`@`%` ACCOUNT LOCK",
                "GRANT USAGE ON *.* TO `wiki_clone`@`%`",
                "GRANT SELECT, INSERT ON `wiki`.* TO `wiki_clone`@`%` WITH GRANT OPTION",
                "GRANT `r1` TO `wiki_clone`@`%`",
                "ALTER USER `wiki_clone`@`%` IDENTIFIED BY '****' REQUIRE SSL WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 7 ACCOUNT UNLOCK",
            ]
        );
        assert!(stmts.last().unwrap().render().contains("'P''w'"));
        // The password hash of MariaDB's USAGE row is never copied.
        assert!(stmts.iter().all(|s| !s.render().contains("HASH")));
    }

    #[test]
    fn clone_of_an_existing_user_syncs_grants_only_when_they_differ() {
        let target = Account::new("wiki_clone", "%");
        let same: Vec<String> = ROWS
            .iter()
            .map(|r| {
                r.replace("`wiki`@`%`", "`wiki_clone`@`%`")
                    .replace("*HASH", "*OTHER")
            })
            .collect();
        let stmts = plan_clone(
            &observed(&ROWS, AccountProps::default()),
            &target,
            Some(&same),
            &Password::new("x"),
            Escaping::Backslash,
        )
        .unwrap();
        assert_eq!(stmts.len(), 1, "{:?}", rendered(&stmts));
        assert!(
            stmts[0]
                .to_string()
                .starts_with("ALTER USER `wiki_clone`@`%` IDENTIFIED BY '****' REQUIRE NONE")
        );

        let differing = vec![
            "GRANT USAGE ON *.* TO `wiki_clone`@`%`".to_string(),
            "GRANT DELETE ON `wiki`.* TO `wiki_clone`@`%`".to_string(),
            "GRANT `r1` TO `wiki_clone`@`%`".to_string(),
            "GRANT `r2` TO `wiki_clone`@`%`".to_string(),
        ];
        let stmts = plan_clone(
            &observed(&ROWS, AccountProps::default()),
            &target,
            Some(&differing),
            &Password::new("x"),
            Escaping::Backslash,
        )
        .unwrap();
        assert_eq!(
            rendered(&stmts)[..4],
            [
                "REVOKE ALL PRIVILEGES, GRANT OPTION FROM `wiki_clone`@`%`",
                "REVOKE `r2` FROM `wiki_clone`@`%`",
                "GRANT USAGE ON *.* TO `wiki_clone`@`%`",
                "GRANT SELECT, INSERT ON `wiki`.* TO `wiki_clone`@`%` WITH GRANT OPTION",
            ]
        );
        assert_eq!(stmts.len(), 5);
    }

    #[test]
    fn the_other_users_accounts_on_hosts_the_current_user_lacks_are_dropped() {
        let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stale = stale_accounts(
            "wiki_clone",
            &hosts(&["%", "10.0.%"]),
            &hosts(&["%", "10.%", "localhost"]),
        );
        assert_eq!(
            stale,
            [
                Account::new("wiki_clone", "10.%"),
                Account::new("wiki_clone", "localhost")
            ]
        );
        assert_eq!(
            plan_drop(&stale[0]).to_string(),
            "DROP USER IF EXISTS `wiki_clone`@`10.%`"
        );
        assert!(stale_accounts("wiki_clone", &hosts(&["%"]), &hosts(&["%"])).is_empty());
        assert!(stale_accounts("wiki_clone", &hosts(&["%"]), &[]).is_empty());
    }

    #[test]
    fn require_clauses() {
        let mut p = AccountProps::default();
        assert_eq!(
            p.require_clause(Escaping::Backslash).unwrap(),
            "REQUIRE NONE"
        );
        p.ssl_type = "X509".into();
        assert_eq!(
            p.require_clause(Escaping::Backslash).unwrap(),
            "REQUIRE X509"
        );
        p.ssl_type = "SPECIFIED".into();
        p.x509_subject = "/CN=it's".into();
        p.ssl_cipher = "ECDHE".into();
        assert_eq!(
            p.require_clause(Escaping::Backslash).unwrap(),
            "REQUIRE SUBJECT '/CN=it''s' AND CIPHER 'ECDHE'"
        );
        p.ssl_type = "BOGUS".into();
        assert!(p.require_clause(Escaping::Backslash).is_err());
    }

    #[test]
    fn own_password_changes_per_flavor() {
        let pw = Password::new("n\\ew");
        let s = own_password_change(Flavor::MariaDb, &pw, None, Escaping::Backslash).unwrap();
        assert_eq!(s.render(), r"SET PASSWORD = PASSWORD('n\\ew')");
        let s = own_password_change(Flavor::MySql, &pw, None, Escaping::NoBackslash).unwrap();
        assert_eq!(
            s.render(),
            r"ALTER USER CURRENT_USER() IDENTIFIED BY 'n\ew'"
        );
        let old = Password::new("o'ld");
        let s = own_password_change(Flavor::MySql, &pw, Some(&old), Escaping::Backslash).unwrap();
        assert_eq!(
            s.render(),
            r"ALTER USER CURRENT_USER() IDENTIFIED BY 'n\\ew' REPLACE 'o''ld'"
        );
        assert_eq!(
            s.to_string(),
            "ALTER USER CURRENT_USER() IDENTIFIED BY '****' REPLACE '****'"
        );
        assert_eq!(s.secrets().count(), 2);
        assert_eq!(
            Flavor::from_version("10.11.19-MariaDB-0+deb12u1"),
            Flavor::MariaDb
        );
        assert_eq!(Flavor::from_version("8.0.39"), Flavor::MySql);
    }

    #[test]
    fn single_user_attempt_order() {
        let cur = secret("wiki", false);
        let pend = cur.with_credentials("wiki", Password::new("new"));
        let prev = cur.with_credentials("wiki", Password::new("older"));
        assert_eq!(
            single_user_attempts(&pend, &cur, Some(&prev)),
            [Which::Pending, Which::Current, Which::Previous]
        );
        assert_eq!(
            single_user_attempts(&pend, &cur, None),
            [Which::Pending, Which::Current]
        );
        let other_user = cur.with_credentials("wiki_clone", Password::new("x"));
        assert_eq!(
            single_user_attempts(&pend, &cur, Some(&other_user)),
            [Which::Pending, Which::Current]
        );
        assert_eq!(
            single_user_attempts(&pend, &pend, Some(&pend)),
            [Which::Pending]
        );
    }

    #[test]
    fn finish_plans() {
        assert_eq!(
            plan_finish(&Gate::AlreadyCurrent),
            FinishPlan::AlreadyCurrent
        );
        assert_eq!(
            plan_finish(&Gate::Proceed {
                current: "v1".into()
            }),
            FinishPlan::MoveCurrent { from: "v1".into() }
        );
    }

    /// A secret with `host`, `port` and `ssl` (a JSON value: `false`, `"false"`, `true`).
    fn with_endpoint_ssl(host: Option<&str>, port: u16, ssl: Option<&str>) -> DbSecret {
        let host = host
            .map(|h| format!(r#","host":"{h}""#))
            .unwrap_or_default();
        let ssl = ssl.map(|v| format!(r#","ssl":{v}"#)).unwrap_or_default();
        DbSecret::parse(&format!(
            r#"{{"username":"admin","password":"p","port":{port}{host}{ssl}}}"#
        ))
        .unwrap()
    }

    fn with_endpoint(host: Option<&str>, port: u16) -> DbSecret {
        with_endpoint_ssl(host, port, None)
    }

    #[test]
    fn master_login_goes_only_to_the_pinned_endpoint_or_the_masters_own_host() {
        let pinned = DbEndpoint::parse("db.rds.example:3306").unwrap();
        let app = with_endpoint(Some("db.rds.example"), 3306);
        let elsewhere = with_endpoint(Some("attacker.example"), 3306);
        let bare_master = with_endpoint(None, 3306);
        let own_master = with_endpoint(Some("db.rds.example"), 3306);
        let e = master_endpoint(Some(&pinned), &bare_master, &app).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("db.rds.example", 3306, true)
        );
        for (pin, master, current) in [
            (Some(&pinned), &bare_master, &elsewhere),
            (None, &bare_master, &app),
            (
                Some(&pinned),
                &with_endpoint(Some("attacker.example"), 3306),
                &app,
            ),
            (
                Some(&pinned),
                &bare_master,
                &with_endpoint(Some("db.rds.example"), 3307),
            ),
        ] {
            let e = master_endpoint(pin, master, current).unwrap_err();
            assert_eq!(e.error_type(), "EndpointMismatch", "{e}");
        }
        // The master secret's own host needs no pin, and the app secret's host is not used.
        let e = master_endpoint(None, &own_master, &elsewhere).unwrap();
        assert_eq!(e.host, "db.rds.example");
        let e = master_endpoint(Some(&pinned), &bare_master, &with_endpoint(None, 3306));
        assert_eq!(e.unwrap_err().error_type(), "SecretMissingKey");
    }

    fn with_tls(host: Option<&str>, ssl: Option<&str>) -> DbSecret {
        with_endpoint_ssl(host, 3306, ssl)
    }

    #[test]
    fn the_wikis_secret_never_turns_off_tls_for_the_master_login() {
        let pinned = DbEndpoint::parse("db.rds.example:3306").unwrap();
        let rds_managed = with_tls(None, None);
        for ssl in [None, Some("false"), Some(r#""false""#), Some("true")] {
            let app = with_tls(Some("db.rds.example"), ssl);
            let e = master_endpoint(Some(&pinned), &rds_managed, &app).unwrap();
            assert!(
                e.tls,
                "the wiki's ssl {ssl:?} decided the master login's TLS"
            );
        }
        // The master's own secret may relax it (a proxy), with or without a host of its own.
        for master in [
            with_tls(None, Some("false")),
            with_tls(Some("db.rds.example"), Some(r#""false""#)),
        ] {
            let app = with_tls(Some("db.rds.example"), Some("true"));
            let e = master_endpoint(Some(&pinned), &master, &app).unwrap();
            assert!(!e.tls, "{master:?}");
        }
    }

    #[test]
    fn the_master_and_its_clone_are_never_changed() {
        assert!(check_not_protected("wiki_clone", "admin").is_ok());
        for user in ["admin", "admin_clone"] {
            let e = check_not_protected(user, "admin").unwrap_err();
            assert_eq!(e.error_type(), "ProtectedUser", "{e}");
        }
    }

    #[test]
    fn another_pending_version_is_a_conflict() {
        let m = meta(
            true,
            &[
                ("old", &[AWSCURRENT]),
                ("left", &[AWSPENDING]),
                ("tok", &[]),
            ],
        );
        let e = gate("s", &m, "tok").unwrap_err();
        assert_eq!(e.error_type(), "PendingVersionConflict", "{e}");
        assert!(e.to_string().contains("left"), "{e}");
    }

    proptest! {
        /// Whatever the secrets and the pin, the master login goes to the pin or to the master
        /// secret's own host, never to a host only the rotated secret names.
        #[test]
        fn master_login_never_follows_the_rotated_secret_alone(
            pin in proptest::option::of(0usize..3),
            master_host in proptest::option::of(0usize..3),
            app_host in 0usize..3,
            ports in (0usize..2, 0usize..2, 0usize..2),
        ) {
            let hosts = ["db.rds.example", "DB.rds.example.", "attacker.example"];
            let port = |i: usize| 3306 + i as u16;
            let pinned = pin.map(|i| DbEndpoint { host: hosts[i].into(), port: port(ports.0) });
            let master = with_endpoint(master_host.map(|i| hosts[i]), port(ports.1));
            let app = with_endpoint(Some(hosts[app_host]), port(ports.2));
            if let Ok(e) = master_endpoint(pinned.as_ref(), &master, &app) {
                let own = master.host.as_deref() == Some(e.host.as_str()) && master.port == e.port;
                let is_pinned = pinned.as_ref().is_some_and(|p| p.is(&e.host, e.port));
                prop_assert!(is_pinned || (own && pinned.is_none()));
            }
        }

        /// Whatever the two secrets say about `ssl`, the master login goes without TLS only
        /// when the master's own secret says `"ssl": false`.
        #[test]
        fn only_the_master_secret_relaxes_the_master_logins_tls(
            master_host in any::<bool>(),
            master_ssl in proptest::option::of(0usize..4),
            app_ssl in proptest::option::of(0usize..4),
        ) {
            let values = ["false", r#""false""#, "true", r#""true""#];
            let pinned = DbEndpoint::parse("db.rds.example:3306").unwrap();
            let master = with_tls(master_host.then_some("db.rds.example"), master_ssl.map(|i| values[i]));
            let app = with_tls(Some("db.rds.example"), app_ssl.map(|i| values[i]));
            let e = master_endpoint(Some(&pinned), &master, &app).unwrap();
            prop_assert_eq!(e.tls, master.ssl != Some(false));
        }

        /// Whatever the names, setSecret never targets the master user or its clone.
        #[test]
        fn alternating_never_targets_the_master(user in "[a-z_]{1,20}", master in "[a-z_]{1,20}") {
            if let Ok(other) = alternate_username(&user) {
                let protected = other == master || other == format!("{master}_clone");
                prop_assert_eq!(check_not_protected(&other, &master).is_err(), protected);
            }
        }

        /// Whatever the labels, a step proceeds only for a pending, non-current token of a
        /// secret with rotation enabled, and then names the one AWSCURRENT version.
        #[test]
        fn gate_proceeds_only_for_pending_tokens(
            enabled in any::<bool>(),
            labels in proptest::collection::vec((0usize..4, proptest::sample::subsequence(vec![AWSCURRENT, AWSPENDING, AWSPREVIOUS], 0..=3)), 0..4),
            token in 0usize..5,
        ) {
            let mut m = SecretMeta { rotation_enabled: enabled, versions: BTreeMap::new() };
            let mut current_taken = false;
            for (v, stages) in labels {
                let stages: Vec<String> = stages.into_iter()
                    .filter(|s| *s != AWSCURRENT || !current_taken)
                    .map(str::to_string).collect();
                current_taken |= stages.iter().any(|s| s == AWSCURRENT);
                m.versions.insert(format!("v{v}"), stages);
            }
            let token = format!("v{token}");
            match gate("s", &m, &token) {
                Ok(Gate::AlreadyCurrent) => prop_assert!(enabled && m.has(&token, AWSCURRENT)),
                Ok(Gate::Proceed { current }) => {
                    prop_assert!(enabled && m.has(&token, AWSPENDING) && !m.has(&token, AWSCURRENT));
                    prop_assert!(m.has(&current, AWSCURRENT));
                }
                Err(_) => prop_assert!(!enabled || !m.has(&token, AWSPENDING) || m.version_with(AWSCURRENT).is_none()),
            }
        }

        /// The alternate of the alternate is the original, whenever it fits.
        #[test]
        fn alternating_is_an_involution(user in "[a-z_]{1,26}") {
            let other = alternate_username(&user).unwrap();
            prop_assert_ne!(&other, &user);
            if user != CLONE_SUFFIX {
                prop_assert_eq!(alternate_username(&other).unwrap(), user);
            }
        }
    }
}
