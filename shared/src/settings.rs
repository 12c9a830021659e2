//! Typed settings read from the environment.
//!
//! Every accessor fails with one [`SettingsError`] that names the variable; values never
//! appear in error messages (a setting may hold something sensitive).

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// A missing or malformed setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The variable is unset or empty.
    #[error("missing environment variable {0}")]
    Missing(String),
    /// The variable is set but cannot be used; the reason never quotes the value.
    #[error("environment variable {name} is malformed: {reason}")]
    Malformed { name: String, reason: String },
}

impl SettingsError {
    /// A malformed-setting error for `name`.
    pub fn malformed(name: &str, reason: impl Display) -> Self {
        SettingsError::Malformed {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A source of settings: the process environment, or a map in tests.
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Snapshot of the process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// Settings from explicit pairs (tests, planners fed plain data).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The trimmed value of `name`, or `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name` exactly as set, or `None` when unset or blank. For secrets: never
    /// trimmed, since surrounding spaces are part of a password, and PHP reads it untrimmed.
    pub fn secret(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }

    /// [`Env::secret`], unset or empty being [`SettingsError::Missing`].
    pub fn required_secret(&self, name: &str) -> Result<String, SettingsError> {
        self.secret(name)
            .ok_or_else(|| SettingsError::Missing(name.to_string()))
    }

    /// The trimmed value of `name`; unset or blank is [`SettingsError::Missing`].
    pub fn required(&self, name: &str) -> Result<String, SettingsError> {
        self.optional(name)
            .ok_or_else(|| SettingsError::Missing(name.to_string()))
    }

    /// `name` parsed as `T`, or `default` when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| SettingsError::malformed(name, e)),
        }
    }

    /// `name` parsed as `T`; unset is [`SettingsError::Missing`].
    pub fn parse<T>(&self, name: &str) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.required(name)?
            .parse()
            .map_err(|e| SettingsError::malformed(name, e))
    }

    /// A boolean (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`), or `default` when unset.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, SettingsError> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(SettingsError::malformed(name, "expected true or false")),
            },
        }
    }

    /// A comma-separated list; blank items are dropped, unset is empty.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `name` deserialised from JSON, or `None` when unset.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, SettingsError> {
        self.optional(name)
            .map(|v| {
                serde_json::from_str(&v).map_err(|e| {
                    // serde_json's messages name positions and types, never the input.
                    SettingsError::malformed(name, format!("invalid JSON ({e})"))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_keep_their_spaces() {
        let e = Env::from_pairs([("PW", " a b "), ("EMPTY", " ")]);
        assert_eq!(e.secret("PW").as_deref(), Some(" a b "));
        assert_eq!(e.optional("PW").as_deref(), Some("a b"));
        assert_eq!(e.secret("EMPTY"), None);
        assert_eq!(
            e.required_secret("NONE"),
            Err(SettingsError::Missing("NONE".into()))
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn required_names_the_missing_variable() {
        let e = env(&[("BLANK", "  ")]);
        assert_eq!(
            e.required("ECS_CLUSTER").unwrap_err().to_string(),
            "missing environment variable ECS_CLUSTER"
        );
        assert_eq!(
            e.required("BLANK"),
            Err(SettingsError::Missing("BLANK".into()))
        );
    }

    #[test]
    fn malformed_names_the_variable_without_its_value() {
        let e = env(&[("KEEP", "s3cr3t-value"), ("FLAG", "s3cr3t-flag")]);
        let err = e.parse_or::<u32>("KEEP", 10).unwrap_err().to_string();
        assert!(err.contains("KEEP"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = e.flag("FLAG", false).unwrap_err().to_string();
        assert!(err.contains("FLAG") && !err.contains("s3cr3t"), "{err}");
        let err = e.json::<Vec<u8>>("KEEP").unwrap_err().to_string();
        assert!(err.contains("KEEP") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn defaults_flags_and_lists() {
        let e = env(&[("N", " 7 "), ("F", "Yes"), ("L", "a, b,,c ")]);
        assert_eq!(e.parse_or("N", 1u32), Ok(7));
        assert_eq!(e.parse_or("UNSET", 1u32), Ok(1));
        assert_eq!(e.flag("F", false), Ok(true));
        assert_eq!(e.flag("UNSET", true), Ok(true));
        assert_eq!(e.list("L"), vec!["a", "b", "c"]);
        assert!(e.list("UNSET").is_empty());
        assert_eq!(e.parse::<u32>("N"), Ok(7));
        assert!(matches!(
            e.parse::<u32>("UNSET"),
            Err(SettingsError::Missing(_))
        ));
    }
}
