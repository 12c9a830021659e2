//! The database secret: the JSON that Secrets Manager holds, read and written without ever
//! printing a value.
//!
//! Fields (the shape RDS and AWS's rotation templates use): `engine`, `host`, `port`
//! (default 3306), `username`, `password`, `dbname`, `ssl`, `masterarn`. Every other key is
//! kept as is when a new version is written. Errors name the field, never its value
//! (serde's messages can quote the input, so fields are read by hand).

use std::fmt;

use serde_json::{Map, Value};

use crate::failure::Cause;

/// A password (or any secret value). `Debug` and `Serialize` never show it; there is no
/// `Display`. Use [`Password::expose`] only where the value must go to a peer.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Password(value.into())
    }

    /// The value, for the one place that sends it (a login, an SQL literal, a PutSecretValue).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(****)")
    }
}

impl serde::Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("****")
    }
}

/// The database engines this function rotates.
pub const ENGINES: [&str; 3] = ["mysql", "mariadb", "aurora-mysql"];

/// MySQL's default port.
pub const DEFAULT_PORT: u16 = 3306;

/// A secret that is not a usable database secret; the message names the field only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    /// [`Cause::SecretWrongEngine`] or [`Cause::SecretMissingKey`] (missing or malformed).
    pub cause: Cause,
    pub message: String,
}

impl SecretError {
    fn key(message: impl Into<String>) -> Self {
        SecretError {
            cause: Cause::SecretMissingKey,
            message: message.into(),
        }
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A database secret: the typed fields plus the whole JSON object (so unknown keys survive).
#[derive(Clone, PartialEq)]
pub struct DbSecret {
    fields: Map<String, Value>,
    pub engine: Option<String>,
    pub host: Option<String>,
    pub port: u16,
    pub username: String,
    pub password: Password,
    pub dbname: Option<String>,
    /// `Some(true)`: TLS required; `Some(false)`: plaintext explicitly allowed; `None`: TLS.
    pub ssl: Option<bool>,
    pub masterarn: Option<String>,
}

impl fmt::Debug for DbSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSecret")
            .field("engine", &self.engine)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("dbname", &self.dbname)
            .field("ssl", &self.ssl)
            .field("masterarn", &self.masterarn)
            .finish()
    }
}

fn opt_string(map: &Map<String, Value>, key: &str) -> Result<Option<String>, SecretError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SecretError::key(format!("field `{key}` is not a string"))),
    }
}

fn port(map: &Map<String, Value>) -> Result<u16, SecretError> {
    let bad = || SecretError::key("field `port` is not a port number (1-65535)");
    let n = match map.get("port") {
        None | Some(Value::Null) => return Ok(DEFAULT_PORT),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    u16::try_from(n).ok().filter(|p| *p > 0).ok_or_else(bad)
}

fn ssl(map: &Map<String, Value>) -> Result<Option<bool>, SecretError> {
    match map.get("ssl") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "required" => Ok(Some(true)),
            "false" | "0" | "no" | "disabled" => Ok(Some(false)),
            _ => Err(SecretError::key("field `ssl` is not true or false")),
        },
        Some(_) => Err(SecretError::key("field `ssl` is not true or false")),
    }
}

impl DbSecret {
    /// Parses a `SecretString`. `username` and `password` are required; the engine, when
    /// present, must be one of [`ENGINES`].
    pub fn parse(text: &str) -> Result<DbSecret, SecretError> {
        // serde_json's syntax errors give a position only, never the input.
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SecretError::key(format!("not a JSON object ({})", e.classify_name())))?;
        let Value::Object(fields) = value else {
            return Err(SecretError::key("not a JSON object"));
        };
        let username = opt_string(&fields, "username")?
            .ok_or_else(|| SecretError::key("field `username` is missing"))?;
        let password = match fields.get("password") {
            Some(Value::String(s)) if !s.is_empty() => Password::new(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(SecretError::key("field `password` is missing"));
            }
            Some(_) => return Err(SecretError::key("field `password` is not a string")),
        };
        let engine = opt_string(&fields, "engine")?;
        if let Some(e) = &engine
            && !ENGINES.contains(&e.as_str())
        {
            return Err(SecretError {
                cause: Cause::SecretWrongEngine,
                message: format!(
                    "engine `{e}` is not supported (expected one of {})",
                    ENGINES.join(", ")
                ),
            });
        }
        Ok(DbSecret {
            engine,
            host: opt_string(&fields, "host")?,
            port: port(&fields)?,
            username,
            password,
            dbname: opt_string(&fields, "dbname")?,
            ssl: ssl(&fields)?,
            masterarn: opt_string(&fields, "masterarn")?,
            fields,
        })
    }

    /// The host, required to connect.
    pub fn require_host(&self) -> Result<&str, SecretError> {
        self.host
            .as_deref()
            .ok_or_else(|| SecretError::key("field `host` is missing"))
    }

    /// A copy with another user name and password (every other key kept).
    pub fn with_credentials(&self, username: &str, password: Password) -> DbSecret {
        let mut next = self.clone();
        next.fields
            .insert("username".into(), Value::String(username.to_string()));
        next.fields.insert(
            "password".into(),
            Value::String(password.expose().to_string()),
        );
        next.username = username.to_string();
        next.password = password;
        next
    }

    /// The JSON text to store (contains the password: send it to Secrets Manager only).
    pub fn to_secret_string(&self) -> Password {
        Password::new(Value::Object(self.fields.clone()).to_string())
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"engine":"mysql","host":"db.example","port":"3307","username":"wiki",
        "password":"s3cr3t-pw","dbname":"wiki","ssl":true,"masterarn":"arn:m","dbInstanceIdentifier":"wikidb"}"#;

    #[test]
    fn parses_every_field_and_defaults() {
        let s = DbSecret::parse(FULL).unwrap();
        assert_eq!(s.engine.as_deref(), Some("mysql"));
        assert_eq!(s.host.as_deref(), Some("db.example"));
        assert_eq!(s.port, 3307);
        assert_eq!(s.username, "wiki");
        assert_eq!(s.password.expose(), "s3cr3t-pw");
        assert_eq!(s.dbname.as_deref(), Some("wiki"));
        assert_eq!(s.ssl, Some(true));
        assert_eq!(s.masterarn.as_deref(), Some("arn:m"));

        let s = DbSecret::parse(r#"{"username":"u","password":"p","ssl":"false","port":3306}"#)
            .unwrap();
        assert_eq!((s.port, s.ssl, s.host.clone()), (3306, Some(false), None));
        let s = DbSecret::parse(r#"{"username":"u","password":"p"}"#).unwrap();
        assert_eq!((s.port, s.ssl), (DEFAULT_PORT, None));
        assert!(s.require_host().is_err());
    }

    #[test]
    fn rewriting_credentials_keeps_other_keys() {
        let s = DbSecret::parse(FULL).unwrap();
        let n = s.with_credentials("wiki_clone", Password::new("n3w"));
        let v: Value = serde_json::from_str(n.to_secret_string().expose()).unwrap();
        assert_eq!(v["username"], "wiki_clone");
        assert_eq!(v["password"], "n3w");
        assert_eq!(v["dbInstanceIdentifier"], "wikidb");
        assert_eq!(v["port"], "3307");
        assert_eq!(DbSecret::parse(&v.to_string()).unwrap(), n);
    }

    #[test]
    fn errors_and_debug_never_show_values() {
        let cases = [
            r#"{"username":"u","password":"s3cr3t","port":"s3cr3t"}"#,
            r#"{"username":"u","password":"s3cr3t","ssl":"s3cr3t"}"#,
            r#"{"username":"u","password":"s3cr3t","engine":"postgres","host":7}"#,
            r#"{"username":"u","password":7}"#,
            r#"{"username":"u","password":"s3cr3t","port":99999}"#,
            r#"{"password":"s3cr3t"}"#,
            r#"{"username":"u","password":"s3cr3t""#,
            r#"["s3cr3t"]"#,
            r#"s3cr3t"#,
        ];
        for c in cases {
            let e = DbSecret::parse(c).unwrap_err().to_string();
            assert!(!e.contains("s3cr3t"), "{c} -> {e}");
        }
        let s = DbSecret::parse(FULL).unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert_eq!(serde_json::to_string(&s.password).unwrap(), "\"****\"");
    }

    #[test]
    fn engines() {
        for e in ENGINES {
            let t = format!(r#"{{"engine":"{e}","username":"u","password":"p"}}"#);
            assert!(DbSecret::parse(&t).is_ok(), "{e}");
        }
        let e =
            DbSecret::parse(r#"{"engine":"postgres","username":"u","password":"p"}"#).unwrap_err();
        assert!(e.message.contains("postgres"), "{e}");
        assert_eq!(e.cause, Cause::SecretWrongEngine);
        let e = DbSecret::parse(r#"{"username":"u"}"#).unwrap_err();
        assert_eq!(e.cause, Cause::SecretMissingKey);
    }
}
