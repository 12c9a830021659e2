//! The function's settings, read from the environment on every invocation.

use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use shared::{Env, SettingsError};

/// MediaWiki's regenerable or transient folders under `images/`, and the conventional restore
/// folder inside the mount (`.efs-restore`), skipped by default.
pub const DEFAULT_EXCLUDE: &str = "**/thumb,**/temp,**/lockdir,**/transcoded,.efs-restore";

/// Everything a backup, restore, list or verify needs to know from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `SOURCE_DIR`: the mounted file system (e.g. `/mnt/wiki`).
    pub source_dir: String,
    /// `BACKUP_BUCKET`: the versioned bucket that holds the backup.
    pub bucket: String,
    /// `BACKUP_PREFIX`: key prefix inside the bucket, `""` or ending in `/`.
    pub prefix: String,
    /// `EXCLUDE`: comma-separated globs, relative to `SOURCE_DIR`.
    pub exclude: Vec<String>,
    /// `KEEP_SNAPSHOTS`: at most this many snapshots are kept.
    pub keep_snapshots: usize,
    /// `RETENTION_DAYS`: snapshots older than this are dropped (the newest is always kept).
    pub retention_days: u32,
    /// `UPLOAD_CONCURRENCY`: files (and S3 requests) in flight at once.
    pub upload_concurrency: usize,
    /// `WALK_THREADS`: threads that list directories and stat files.
    pub walk_threads: usize,
    /// `DEADLINE_MARGIN_MS`: time kept before the invocation deadline to checkpoint and answer.
    pub deadline_margin: Duration,
    /// `CHECKPOINT_INTERVAL_SECONDS`: how often progress is saved while uploading.
    pub checkpoint_interval: Duration,
    /// `MAX_READ_MIB_PER_SECOND`: optional cap on reads from the file system (EFS burst credits).
    pub max_read_mib_per_second: Option<u32>,
    /// `ALLOW_UNVERSIONED_BUCKET`: accept a store without versioning (S3-compatible servers in
    /// benchmarks); only the newest snapshot is then restorable.
    pub allow_unversioned: bool,
    /// `LEASE_GRACE_SECONDS`: how long after a run's invocation deadline its lease still holds
    /// (a margin for clocks; a run killed before its deadline blocks others until then).
    pub lease_grace: Duration,
    /// `DRY_RUN`: every backup, restore and prune is a dry run, whatever the event says (the
    /// environment `scripts/local-env` writes for `sam local invoke`).
    pub dry_run: bool,
    /// `DB_INSTANCE_ID`: the wiki's RDS instance, for recovery points (unset: none are taken).
    pub db_instance: Option<String>,
    /// `CONFIG_BUCKET`: the configuration bucket whose release a recovery point records.
    pub config_bucket: Option<String>,
    /// `CONFIG_PREFIX`: the configuration's key prefix there, `""` or ending in `/`.
    pub config_prefix: String,
}

impl Settings {
    /// Reads and validates every setting; the error names the variable.
    pub fn from_env(env: &Env) -> Result<Settings, SettingsError> {
        let source_dir = env.required("SOURCE_DIR")?;
        if !source_dir.starts_with('/') {
            return Err(SettingsError::malformed(
                "SOURCE_DIR",
                "must be an absolute path",
            ));
        }
        let bucket = env.required("BACKUP_BUCKET")?;
        let prefix = normalize_prefix(&env.optional("BACKUP_PREFIX").unwrap_or_default());
        let exclude = match env.optional("EXCLUDE") {
            None => env_list(DEFAULT_EXCLUDE),
            Some(v) if v == "-" || v.eq_ignore_ascii_case("none") => Vec::new(),
            Some(_) => env.list("EXCLUDE"),
        };
        build_globset(&exclude).map_err(|e| SettingsError::malformed("EXCLUDE", e))?;
        let keep_snapshots: usize = env.parse_or("KEEP_SNAPSHOTS", 30)?;
        if keep_snapshots == 0 {
            return Err(SettingsError::malformed(
                "KEEP_SNAPSHOTS",
                "must be at least 1",
            ));
        }
        let retention_days: u32 = env.parse_or("RETENTION_DAYS", 35)?;
        if retention_days == 0 {
            return Err(SettingsError::malformed(
                "RETENTION_DAYS",
                "must be at least 1",
            ));
        }
        let upload_concurrency: usize = env.parse_or("UPLOAD_CONCURRENCY", 32)?;
        if !(1..=512).contains(&upload_concurrency) {
            return Err(SettingsError::malformed(
                "UPLOAD_CONCURRENCY",
                "must be between 1 and 512",
            ));
        }
        let walk_threads: usize = env.parse_or("WALK_THREADS", 8)?;
        if !(1..=128).contains(&walk_threads) {
            return Err(SettingsError::malformed(
                "WALK_THREADS",
                "must be between 1 and 128",
            ));
        }
        let margin_ms: u64 = env.parse_or("DEADLINE_MARGIN_MS", 30_000)?;
        let checkpoint_s: u64 = env.parse_or("CHECKPOINT_INTERVAL_SECONDS", 60)?;
        if checkpoint_s == 0 {
            return Err(SettingsError::malformed(
                "CHECKPOINT_INTERVAL_SECONDS",
                "must be at least 1",
            ));
        }
        let max_read: Option<u32> = match env.optional("MAX_READ_MIB_PER_SECOND") {
            None => None,
            Some(_) => {
                let v: u32 = env.parse("MAX_READ_MIB_PER_SECOND")?;
                (v > 0).then_some(v)
            }
        };
        let lease_grace_s: u64 = env.parse_or("LEASE_GRACE_SECONDS", 60)?;
        Ok(Settings {
            source_dir: source_dir.trim_end_matches('/').to_string(),
            bucket,
            prefix,
            exclude,
            keep_snapshots,
            retention_days,
            upload_concurrency,
            walk_threads,
            deadline_margin: Duration::from_millis(margin_ms),
            checkpoint_interval: Duration::from_secs(checkpoint_s),
            max_read_mib_per_second: max_read,
            allow_unversioned: env.flag("ALLOW_UNVERSIONED_BUCKET", false)?,
            lease_grace: Duration::from_secs(lease_grace_s),
            dry_run: env.flag("DRY_RUN", false)?,
            db_instance: env.optional("DB_INSTANCE_ID"),
            config_bucket: env.optional("CONFIG_BUCKET"),
            config_prefix: normalize_prefix(&env.optional("CONFIG_PREFIX").unwrap_or_default()),
        })
    }

    /// The compiled `EXCLUDE` globs.
    pub fn exclude_set(&self) -> GlobSet {
        // Validated in `from_env`.
        build_globset(&self.exclude).unwrap_or_else(|_| GlobSet::empty())
    }
}

fn env_list(s: &str) -> Vec<String> {
    s.split(',').map(|p| p.trim().to_string()).collect()
}

/// Compiles globs matched against paths relative to the source directory.
pub fn build_globset(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        b.add(
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()?,
        );
    }
    b.build()
}

/// `""` stays empty; anything else gets exactly one trailing `/` and no leading `/`.
pub fn normalize_prefix(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut v = vec![("SOURCE_DIR", "/mnt/wiki"), ("BACKUP_BUCKET", "b")];
        v.extend_from_slice(pairs);
        Env::from_pairs(v)
    }

    #[test]
    fn defaults() {
        let s = Settings::from_env(&env(&[])).unwrap();
        assert_eq!(s.prefix, "");
        assert_eq!(s.keep_snapshots, 30);
        assert_eq!(s.retention_days, 35);
        assert_eq!(s.upload_concurrency, 32);
        assert_eq!(s.max_read_mib_per_second, None);
        assert!(!s.dry_run);
        assert!(
            Settings::from_env(&env(&[("DRY_RUN", "true")]))
                .unwrap()
                .dry_run
        );
        let g = s.exclude_set();
        assert!(g.is_match("thumb"));
        assert!(g.is_match("images/thumb"));
        assert!(g.is_match("temp"));
        assert!(g.is_match(".efs-restore"));
        assert!(!g.is_match("a/ab/thumbnail.png"));
        assert!(!g.is_match("a/ab/Foo.png"));
    }

    #[test]
    fn prefix_and_excludes() {
        let s = Settings::from_env(&env(&[
            ("BACKUP_PREFIX", "/efs/wiki"),
            ("EXCLUDE", "*.tmp, cache"),
        ]))
        .unwrap();
        assert_eq!(s.prefix, "efs/wiki/");
        let g = s.exclude_set();
        assert!(g.is_match("x.tmp"));
        assert!(!g.is_match("a/x.tmp"), "* does not cross directories");
        assert!(g.is_match("cache"));
        let none = Settings::from_env(&env(&[("EXCLUDE", "none")])).unwrap();
        assert!(none.exclude.is_empty());
    }

    #[test]
    fn errors_name_the_variable() {
        let missing = Settings::from_env(&Env::from_pairs([("SOURCE_DIR", "/x")])).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "missing environment variable BACKUP_BUCKET"
        );
        for (k, v) in [
            ("SOURCE_DIR", "relative"),
            ("KEEP_SNAPSHOTS", "0"),
            ("KEEP_SNAPSHOTS", "many"),
            ("RETENTION_DAYS", "0"),
            ("UPLOAD_CONCURRENCY", "0"),
            ("EXCLUDE", "a[,b"),
            ("MAX_READ_MIB_PER_SECOND", "fast"),
        ] {
            let e = Settings::from_env(&env(&[(k, v)])).unwrap_err().to_string();
            assert!(e.contains(k), "{k}: {e}");
        }
    }
}
