//! SQL text: string literals, account names, statements that carry a secret, and the rows
//! of `SHOW GRANTS`.
//!
//! MySQL and MariaDB refuse placeholders in `CREATE/ALTER USER … IDENTIFIED BY` and
//! `SET PASSWORD`, so passwords go into the statement as literals. How a backslash is read
//! depends on the session's `sql_mode` (`NO_BACKSLASH_ESCAPES`), so the literal is written
//! for the mode the session reports. Account names are written as backtick identifiers,
//! which read the same in every mode.

use std::fmt;

use serde::Serialize;

use crate::secret::Password;

pub use shared::sql::{Escaping, LiteralError, ident, literal};

/// A MySQL account name, `user@host`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Account {
    pub user: String,
    pub host: String,
}

impl Account {
    pub fn new(user: impl Into<String>, host: impl Into<String>) -> Self {
        Account {
            user: user.into(),
            host: host.into(),
        }
    }

    /// `` `user`@`host` ``.
    pub fn sql(&self) -> String {
        format!("{}@{}", ident(&self.user), ident(&self.host))
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'@'{}'", self.user, self.host)
    }
}

/// One part of a statement: SQL text, or a secret literal written only when executed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Secret(Password),
}

/// An SQL statement that may carry a password. `Display` and `Serialize` show `'****'`
/// in place of the password; [`Statement::render`] gives the text to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    parts: Vec<Part>,
    escaping: Escaping,
}

impl Statement {
    /// A statement with no secret.
    pub fn text(sql: impl Into<String>) -> Self {
        Statement {
            parts: vec![Part::Text(sql.into())],
            escaping: Escaping::Backslash,
        }
    }

    /// `before` + the password as a literal + `after`.
    pub fn with_secret(
        before: impl Into<String>,
        secret: Password,
        after: impl Into<String>,
        escaping: Escaping,
    ) -> Result<Self, LiteralError> {
        literal(secret.expose(), escaping)?;
        Ok(Statement {
            parts: vec![
                Part::Text(before.into()),
                Part::Secret(secret),
                Part::Text(after.into()),
            ],
            escaping,
        })
    }

    /// Appends another secret literal and `after`.
    pub fn then_secret(
        mut self,
        secret: Password,
        after: impl Into<String>,
    ) -> Result<Self, LiteralError> {
        literal(secret.expose(), self.escaping)?;
        self.parts.push(Part::Secret(secret));
        self.parts.push(Part::Text(after.into()));
        Ok(self)
    }

    /// The text to execute (contains the password: never log it).
    pub fn render(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                // Checked in `with_secret`.
                Part::Secret(s) => literal(s.expose(), self.escaping).unwrap_or_default(),
            })
            .collect()
    }

    /// The secrets this statement carries (to scrub them from server messages).
    pub fn secrets(&self) -> impl Iterator<Item = &Password> {
        self.parts.iter().filter_map(|p| match p {
            Part::Secret(s) => Some(s),
            Part::Text(_) => None,
        })
    }

    /// Whether the statement carries a secret.
    pub fn has_secret(&self) -> bool {
        self.secrets().next().is_some()
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Text(t) => f.write_str(t)?,
                Part::Secret(_) => f.write_str("'****'")?,
            }
        }
        Ok(())
    }
}

impl Serialize for Statement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Removes every trace of `statement`'s secrets from a server error message: the secret
/// itself, and the `near '…'` excerpt of the statement that syntax errors quote.
pub fn scrub(message: &str, statement: &Statement) -> String {
    if !statement.has_secret() {
        return message.to_string();
    }
    let mut out = message.to_string();
    if let Some(i) = out.find("near '") {
        let rest = &out[i..];
        let end = rest
            .find("' at line")
            .map(|j| i + j + 1)
            .unwrap_or(out.len());
        out.replace_range(i..end, "near [statement withheld]");
    }
    for s in statement.secrets() {
        if !s.expose().is_empty() {
            out = out.replace(s.expose(), "****");
        }
    }
    out
}

/// A lexical token of a `SHOW GRANTS` row, with its byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare word (keyword, `*.*`, a number).
    Word(usize, String),
    /// A quoted string or identifier, unquoted.
    Quoted(usize, String),
    /// `@`, `,`, `(`, `)`.
    Punct(usize, char),
}

impl Token {
    fn offset(&self) -> usize {
        match self {
            Token::Word(o, _) | Token::Quoted(o, _) | Token::Punct(o, _) => *o,
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self, Token::Word(_, x) if x.eq_ignore_ascii_case(w))
    }

    fn name(&self) -> Option<&str> {
        match self {
            Token::Word(_, s) | Token::Quoted(_, s) => Some(s),
            Token::Punct(..) => None,
        }
    }
}

fn tokenize(row: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = row.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if matches!(c, '\'' | '"' | '`') {
            chars.next();
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, d)) = chars.next() {
                if d == c {
                    if chars.peek().is_some_and(|&(_, n)| n == c) {
                        chars.next();
                        value.push(c);
                    } else {
                        closed = true;
                        break;
                    }
                } else if d == '\\' && c != '`' {
                    let (_, n) = chars.next()?;
                    value.push(n);
                } else {
                    value.push(d);
                }
            }
            if !closed {
                return None;
            }
            tokens.push(Token::Quoted(i, value));
        } else if matches!(c, '@' | ',' | '(' | ')') {
            chars.next();
            tokens.push(Token::Punct(i, c));
        } else {
            let mut word = String::new();
            while let Some(&(_, d)) = chars.peek() {
                if d.is_whitespace() || matches!(d, '\'' | '"' | '`' | '@' | ',' | '(' | ')') {
                    break;
                }
                word.push(d);
                chars.next();
            }
            tokens.push(Token::Word(i, word));
        }
    }
    Some(tokens)
}

/// One row of `SHOW GRANTS FOR account`, reduced to what is copied to another account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Grant {
    /// `GRANT <privileges> ON <object>` or `GRANT <roles>`, as the server wrote it.
    pub head: String,
    /// `WITH GRANT OPTION` / `WITH ADMIN OPTION`, when granted.
    pub option: Option<String>,
    /// A role grant (`GRANT role TO …`), which `REVOKE ALL PRIVILEGES` leaves in place.
    pub is_role: bool,
}

/// A `SHOW GRANTS` row this function does not understand (the message quotes no row:
/// MariaDB's rows carry password hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantParseError(pub String);

impl fmt::Display for GrantParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Grant {
    /// Parses a `SHOW GRANTS FOR grantee` row. The account after `TO` must be `grantee`;
    /// what follows it (MariaDB's `IDENTIFIED BY PASSWORD`, `REQUIRE`, resource limits) is
    /// dropped except the grant or admin option. Authentication, TLS requirements and
    /// resource limits are copied from `mysql.user` instead.
    pub fn parse(row: &str, grantee: &Account) -> Result<Grant, GrantParseError> {
        let err = |what: &str| GrantParseError(format!("SHOW GRANTS for {grantee}: {what}"));
        let tokens = tokenize(row).ok_or_else(|| err("unterminated quote in a row"))?;
        if !tokens.first().is_some_and(|t| t.is_word("GRANT")) {
            return Err(err("a row does not start with GRANT"));
        }
        let to = tokens
            .iter()
            .position(|t| t.is_word("TO"))
            .ok_or_else(|| err("a row has no TO"))?;
        let user = tokens.get(to + 1).and_then(Token::name);
        let at = tokens.get(to + 2);
        let host = tokens.get(to + 3).and_then(Token::name);
        let matches = match (user, at, host) {
            (Some(u), Some(Token::Punct(_, '@')), Some(h)) => {
                u == grantee.user && h == grantee.host
            }
            _ => false,
        };
        if !matches {
            return Err(err("a row grants to another account"));
        }
        let head = row[..tokens[to].offset()].trim_end().to_string();
        let is_role = !tokens[1..to].iter().any(|t| t.is_word("ON"));
        let tail = &tokens[to + 4..];
        let mut option = None;
        if let Some(w) = tail.iter().position(|t| t.is_word("WITH")) {
            let words = &tail[w + 1..];
            for pair in words.windows(2) {
                if pair[1].is_word("OPTION") {
                    if pair[0].is_word("GRANT") {
                        option = Some("WITH GRANT OPTION".to_string());
                    } else if pair[0].is_word("ADMIN") {
                        option = Some("WITH ADMIN OPTION".to_string());
                    }
                }
            }
        }
        Ok(Grant {
            head,
            option,
            is_role,
        })
    }

    /// This grant given to `account`.
    pub fn to(&self, account: &Account) -> Statement {
        let option = self
            .option
            .as_deref()
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        Statement::text(format!("{} TO {}{option}", self.head, account.sql()))
    }

    /// For a role grant: `REVOKE <roles> FROM account`.
    pub fn revoke_role_from(&self, account: &Account) -> Option<Statement> {
        let roles = self.head.strip_prefix("GRANT ")?;
        self.is_role
            .then(|| Statement::text(format!("REVOKE {roles} FROM {}", account.sql())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identifiers_and_accounts() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(Account::new("wiki", "%").sql(), "`wiki`@`%`");
        assert_eq!(
            Account::new("wiki", "10.0.%").to_string(),
            "'wiki'@'10.0.%'"
        );
    }

    #[test]
    fn statements_hide_their_secret() {
        let s = Statement::with_secret(
            "ALTER USER `u`@`%` IDENTIFIED BY ",
            Password::new("p'w\\"),
            " ACCOUNT UNLOCK",
            Escaping::Backslash,
        )
        .unwrap();
        assert_eq!(
            s.render(),
            r"ALTER USER `u`@`%` IDENTIFIED BY 'p''w\\' ACCOUNT UNLOCK"
        );
        assert_eq!(
            s.to_string(),
            "ALTER USER `u`@`%` IDENTIFIED BY '****' ACCOUNT UNLOCK"
        );
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"ALTER USER `u`@`%` IDENTIFIED BY '****' ACCOUNT UNLOCK\""
        );
        assert!(!format!("{s:?}").contains("p'w"));
        assert!(Statement::with_secret("x", Password::new("\n"), "", Escaping::Backslash).is_err());
    }

    #[test]
    fn scrub_removes_secret_and_syntax_excerpt() {
        let s = Statement::with_secret(
            "SET PASSWORD = PASSWORD(",
            Password::new("Zq9xx"),
            ")",
            Escaping::Backslash,
        )
        .unwrap();
        let m = "You have an error in your SQL syntax; check the manual near 'Zq9xx')' at line 1";
        let out = scrub(m, &s);
        assert_eq!(
            out,
            "You have an error in your SQL syntax; check the manual near [statement withheld] at line 1"
        );
        assert_eq!(scrub("oops Zq9xx here", &s), "oops **** here");
        let plain = Statement::text("SELECT 1");
        assert_eq!(scrub("near 'x' at line 1", &plain), "near 'x' at line 1");
    }

    fn wiki() -> Account {
        Account::new("wiki", "%")
    }

    #[test]
    fn parses_mariadb_rows() {
        let g = Grant::parse(
            "GRANT USAGE ON *.* TO `wiki`@`%` IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1AEAD1477967B16F28227' REQUIRE SUBJECT '/CN=a WITH b' CIPHER 'ECDHE' WITH MAX_USER_CONNECTIONS 7",
            &wiki(),
        )
        .unwrap();
        assert_eq!(g.head, "GRANT USAGE ON *.*");
        assert_eq!(g.option, None);
        assert!(!g.is_role);
        let clone = Account::new("wiki_clone", "%");
        assert_eq!(
            g.to(&clone).to_string(),
            "GRANT USAGE ON *.* TO `wiki_clone`@`%`"
        );

        let g = Grant::parse(
            "GRANT SELECT, INSERT ON `wiki`.* TO `wiki`@`%` WITH GRANT OPTION",
            &wiki(),
        )
        .unwrap();
        assert_eq!(
            g.to(&clone).to_string(),
            "GRANT SELECT, INSERT ON `wiki`.* TO `wiki_clone`@`%` WITH GRANT OPTION"
        );
        let g = Grant::parse(
            "GRANT ALL PRIVILEGES ON *.* TO `wiki`@`%` WITH GRANT OPTION MAX_USER_CONNECTIONS 7",
            &wiki(),
        )
        .unwrap();
        assert_eq!(g.option.as_deref(), Some("WITH GRANT OPTION"));

        let g = Grant::parse("GRANT UPDATE (`a`) ON `wiki`.`t` TO `wiki`@`%`", &wiki()).unwrap();
        assert_eq!(g.head, "GRANT UPDATE (`a`) ON `wiki`.`t`");

        let g = Grant::parse("GRANT `r1` TO `wiki`@`%` WITH ADMIN OPTION", &wiki()).unwrap();
        assert!(g.is_role);
        assert_eq!(g.option.as_deref(), Some("WITH ADMIN OPTION"));
        assert_eq!(
            g.revoke_role_from(&clone).unwrap().to_string(),
            "REVOKE `r1` FROM `wiki_clone`@`%`"
        );
    }

    #[test]
    fn parses_mysql_rows() {
        let acct = Account::new("wi'ki", "10.0.%");
        let g = Grant::parse("GRANT SELECT ON `db TO x`.* TO 'wi\\'ki'@'10.0.%'", &acct).unwrap();
        assert_eq!(g.head, "GRANT SELECT ON `db TO x`.*");
        let g = Grant::parse("GRANT `r1`@`%`,`r2`@`%` TO `wi'ki`@`10.0.%`", &acct).unwrap();
        assert!(g.is_role);
        assert_eq!(g.head, "GRANT `r1`@`%`,`r2`@`%`");
        let g = Grant::parse("GRANT BACKUP_ADMIN ON *.* TO `wi'ki`@`10.0.%`", &acct).unwrap();
        assert!(!g.is_role);
    }

    #[test]
    fn refuses_rows_it_does_not_understand_without_quoting_them() {
        let bad = [
            "REVOKE SELECT ON *.* FROM `wiki`@`%`",
            "GRANT SELECT ON *.* TO `other`@`%`",
            "GRANT SELECT ON *.* TO `wiki`@`localhost`",
            "GRANT SELECT ON *.*",
            "GRANT USAGE ON *.* TO `wiki`@`%` IDENTIFIED BY PASSWORD '*SECRETHASH",
        ];
        for row in bad {
            let e = Grant::parse(row, &wiki()).unwrap_err().to_string();
            assert!(!e.contains("SECRETHASH") && !e.contains("`other`"), "{e}");
        }
    }

    proptest! {
        /// Whatever the server echoes of a statement, the password does not survive scrubbing.
        #[test]
        fn scrubbed_messages_never_hold_the_password(pw in "[!-~]{8,40}", before in "[ -~]{0,30}", cut in 0usize..40) {
            let s = Statement::with_secret("ALTER USER `u`@`%` IDENTIFIED BY ", Password::new(pw.clone()), " ACCOUNT UNLOCK", Escaping::Backslash).unwrap();
            let rendered = s.render();
            let start = rendered.find('\'').unwrap() + 1;
            let excerpt: String = rendered[start.min(rendered.len())..].chars().skip(cut % 5).take(80).collect();
            for m in [
                format!("{before} near '{excerpt}' at line 1"),
                format!("{before} {pw} {before}"),
                format!("{before}{rendered}"),
            ] {
                let out = scrub(&m, &s);
                prop_assert!(!out.contains(&pw), "{} -> {}", m, out);
            }
        }

        #[test]
        fn grants_round_trip_through_any_account(user in "[ -~]{1,16}", host in "[ -~]{1,16}", db in "[ -~]{1,16}") {
            let from = Account::new(user, host);
            let row = format!("GRANT SELECT ON {}.* TO {} WITH GRANT OPTION", ident(&db), from.sql());
            let g = Grant::parse(&row, &from).unwrap();
            prop_assert_eq!(g.to(&from).to_string(), row);
        }
    }
}
