//! Settings, read from the environment on every invocation.

use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use shared::{Env, SettingsError};

use crate::pacing::Rate;
use crate::planner::Policy;

/// Everything the janitor is told by its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Family name prefixes (`ListTaskDefinitionFamilies` `familyPrefix`); empty: every family.
    pub family_prefixes: Vec<String>,
    /// Family names or globs never touched.
    pub exclude_families: GlobSet,
    /// The number of exclusion patterns (for the report).
    pub exclude_patterns: Vec<String>,
    pub policy: Policy,
    pub dry_run: bool,
    /// Client-side token buckets for ECS reads, task-definition modifications and deletions.
    pub read_rate: Rate,
    pub modify_rate: Rate,
    pub delete_rate: Rate,
    /// Stop starting calls this long before the invocation deadline.
    pub deadline_margin: Duration,
}

impl Settings {
    /// Reads and validates every setting; errors name the variable, never its value.
    pub fn from_env(env: &Env) -> Result<Settings, SettingsError> {
        let family_prefixes = env.list("FAMILY_PREFIXES");
        for p in &family_prefixes {
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(SettingsError::malformed(
                    "FAMILY_PREFIXES",
                    "a prefix may hold only letters, digits, '-' and '_'",
                ));
            }
        }
        let exclude_patterns = env.list("EXCLUDE_FAMILIES");
        let mut globs = GlobSetBuilder::new();
        for p in &exclude_patterns {
            let glob = Glob::new(p).map_err(|e| {
                SettingsError::malformed("EXCLUDE_FAMILIES", format!("bad pattern: {}", e.kind()))
            })?;
            globs.add(glob);
        }
        let exclude_families = globs
            .build()
            .map_err(|e| SettingsError::malformed("EXCLUDE_FAMILIES", e))?;
        let policy = Policy {
            keep_revisions: env.parse_or("KEEP_REVISIONS", 10u32)?,
            delete_after_days: env.parse_or("DELETE_AFTER_DAYS", 7u32)?,
            purge_plaintext: env.flag("PURGE_PLAINTEXT", false)?,
        };
        if policy.delete_after_days > 36_500 {
            return Err(SettingsError::malformed(
                "DELETE_AFTER_DAYS",
                "at most 36500",
            ));
        }
        Ok(Settings {
            family_prefixes,
            exclude_families,
            exclude_patterns,
            policy,
            dry_run: env.flag("DRY_RUN", false)?,
            read_rate: rate(env, "ECS_READ", 20.0, 50)?,
            modify_rate: rate(env, "ECS_MODIFY", 1.0, 20)?,
            delete_rate: rate(env, "ECS_DELETE", 1.0, 5)?,
            deadline_margin: Duration::from_millis(env.parse_or("DEADLINE_MARGIN_MS", 5_000u64)?),
        })
    }

    /// Whether `family` is excluded.
    pub fn excluded(&self, family: &str) -> bool {
        self.exclude_families.is_match(family)
    }
}

fn rate(env: &Env, prefix: &str, per_second: f64, burst: u32) -> Result<Rate, SettingsError> {
    let rate_name = format!("{prefix}_RATE");
    let burst_name = format!("{prefix}_BURST");
    let per_second: f64 = env.parse_or(&rate_name, per_second)?;
    if !per_second.is_finite() || !(0.001..=10_000.0).contains(&per_second) {
        return Err(SettingsError::malformed(
            &rate_name,
            "calls per second between 0.001 and 10000",
        ));
    }
    let burst: u32 = env.parse_or(&burst_name, burst)?;
    if burst == 0 {
        return Err(SettingsError::malformed(&burst_name, "at least 1"));
    }
    Ok(Rate { per_second, burst })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert!(s.family_prefixes.is_empty());
        assert!(!s.excluded("wiki"));
        assert_eq!(
            s.policy,
            Policy {
                keep_revisions: 10,
                delete_after_days: 7,
                purge_plaintext: false
            }
        );
        assert!(!s.dry_run);
        assert_eq!(
            s.read_rate,
            Rate {
                per_second: 20.0,
                burst: 50
            }
        );
        assert_eq!(
            s.modify_rate,
            Rate {
                per_second: 1.0,
                burst: 20
            }
        );
        assert_eq!(
            s.delete_rate,
            Rate {
                per_second: 1.0,
                burst: 5
            }
        );
        assert_eq!(s.deadline_margin, Duration::from_secs(5));
    }

    #[test]
    fn reads_every_setting() {
        let s = Settings::from_env(&env(&[
            ("FAMILY_PREFIXES", "wiki-, jobs"),
            ("EXCLUDE_FAMILIES", "wiki-legacy,jobs-*"),
            ("KEEP_REVISIONS", "3"),
            ("DELETE_AFTER_DAYS", "0"),
            ("PURGE_PLAINTEXT", "true"),
            ("DRY_RUN", "yes"),
            ("ECS_MODIFY_RATE", "0.5"),
            ("ECS_MODIFY_BURST", "2"),
            ("DEADLINE_MARGIN_MS", "1500"),
        ]))
        .unwrap();
        assert_eq!(s.family_prefixes, vec!["wiki-", "jobs"]);
        assert!(s.excluded("wiki-legacy") && s.excluded("jobs-nightly"));
        assert!(!s.excluded("wiki-web") && !s.excluded("jobs"));
        assert_eq!(s.policy.keep_revisions, 3);
        assert_eq!(s.policy.delete_after_days, 0);
        assert!(s.policy.purge_plaintext && s.dry_run);
        assert_eq!(
            s.modify_rate,
            Rate {
                per_second: 0.5,
                burst: 2
            }
        );
        assert_eq!(s.deadline_margin, Duration::from_millis(1500));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("KEEP_REVISIONS", "-1"),
            ("DELETE_AFTER_DAYS", "soon"),
            ("DELETE_AFTER_DAYS", "99999"),
            ("PURGE_PLAINTEXT", "maybe"),
            ("DRY_RUN", "perhaps"),
            ("ECS_READ_RATE", "0"),
            ("ECS_DELETE_RATE", "NaN"),
            ("ECS_MODIFY_BURST", "0"),
            ("FAMILY_PREFIXES", "wiki*"),
            ("EXCLUDE_FAMILIES", "wiki-[z"),
            ("DEADLINE_MARGIN_MS", "1s"),
        ] {
            let err = Settings::from_env(&env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
    }
}
