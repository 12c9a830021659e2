//! MediaWiki's maintenance scripts: install, update, run jobs.
//!
//! [`steps`] is the pure rule for a schema run (no wiki tables → install then update;
//! otherwise update). [`install_args`] builds the installer's command line: passwords go
//! through files (`--dbpassfile`, `--passfile`), never the command line, and the installer
//! writes its own LocalSettings.php to a scratch directory (`--confpath`): the wiki runs on
//! the one from S3.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use shared::Error;

use crate::settings::{Credentials, Settings};

/// One maintenance step of a schema run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `maintenance/install.php`: creates the tables, the main page and the administrator.
    Install,
    /// `maintenance/update.php --quick`: schema changes of core and the loaded extensions.
    Update,
}

/// What a schema run does, given whether the wiki's tables exist.
pub fn steps(has_tables: bool) -> Vec<Step> {
    if has_tables {
        vec![Step::Update]
    } else {
        // The installer knows only core and its own defaults; update.php then adds what
        // the extensions loaded by our LocalSettings.php need.
        vec![Step::Install, Step::Update]
    }
}

/// The path of a maintenance script under the web root.
pub fn script(settings: &Settings, name: &str) -> PathBuf {
    settings
        .config
        .web_root
        .join("maintenance")
        .join(format!("{name}.php"))
}

/// The installer's arguments (after the script path), installing as `who`.
pub fn install_args(
    settings: &Settings,
    who: &Credentials,
    confpath: &Path,
    dbpassfile: &Path,
    passfile: &Path,
) -> Vec<String> {
    let db = &settings.db;
    let mut a = vec![
        format!("--confpath={}", confpath.display()),
        "--dbtype=mysql".into(),
        format!("--dbserver={}:{}", db.host, db.port),
        format!("--dbname={}", db.name),
        format!("--dbuser={}", who.user),
        format!("--dbpassfile={}", dbpassfile.display()),
        format!("--passfile={}", passfile.display()),
        format!("--server={}", settings.server),
        "--scriptpath=".into(),
    ];
    if !db.prefix.is_empty() {
        a.push(format!("--dbprefix={}", db.prefix));
    }
    if db.tls {
        a.push("--dbssl".into());
    }
    a.push(settings.site_name.clone());
    a.push(settings.admin_user.clone());
    a
}

/// Runs `php <script> <args>` with the children's environment, for at most `limit`; its
/// output goes to the task's log. A non-zero exit or a script still running after `limit`
/// (then killed) is an error naming the script.
pub async fn run(
    settings: &Settings,
    name: &str,
    args: &[String],
    extra_env: &[(String, String)],
    limit: Duration,
) -> Result<(), Error> {
    let path = script(settings, name);
    tracing::info!(script = %path.display(), "running maintenance script");
    let mut child = tokio::process::Command::new(&settings.php)
        .arg(&path)
        .args(args)
        .envs(settings.child_env())
        .envs(extra_env.iter().cloned())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("run {} {}", settings.php, path.display()), e))?;
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.map_err(|e| Error::io(format!("wait for {}", path.display()), e))?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(Error::Unreachable(format!(
                "maintenance/{name}.php did not finish within {} s (killed)",
                limit.as_secs()
            )));
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(Error::Rejected(format!(
            "maintenance/{name}.php failed ({status})"
        )))
    }
}

/// Runs the installer as `who` (the configuration it generates is discarded: the wiki runs on
/// the one from S3), with the passwords in private files of a scratch directory.
pub async fn install(
    settings: &Settings,
    who: &Credentials,
    admin_password: &str,
) -> Result<(), Error> {
    let scratch = tempfile::tempdir().map_err(|e| Error::io("create a scratch directory", e))?;
    let dbpassfile = scratch.path().join("dbpass");
    let passfile = scratch.path().join("pass");
    write_private(&dbpassfile, &who.password)?;
    write_private(&passfile, admin_password)?;
    let args = install_args(settings, who, scratch.path(), &dbpassfile, &passfile);
    // The installer refuses to run where a LocalSettings.php exists (ours, from S3): point
    // it at the scratch directory, where it also writes the configuration it generates.
    let own_config = vec![(
        "MW_CONFIG_FILE".to_string(),
        scratch
            .path()
            .join("LocalSettings.php")
            .display()
            .to_string(),
    )];
    run(
        settings,
        "install",
        &args,
        &own_config,
        settings.schema_timeout,
    )
    .await
}

fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::Env;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut pairs = vec![
            ("CONFIG_BUCKET", "b"),
            ("WIKI_SERVER", "https://wiki.example.com"),
            ("DB_HOST", "db"),
            ("DB_NAME", "wiki"),
            ("DB_USER", "wiki"),
            ("DB_PASSWORD", "s3cr3t"),
            ("WIKI_SECRET_KEY", "k"),
            ("VPC_CIDR", "10.0.0.0/16"),
        ];
        pairs.extend_from_slice(extra);
        Settings::from_env(&Env::from_pairs(pairs)).unwrap()
    }

    #[test]
    fn install_only_when_there_are_no_tables() {
        assert_eq!(steps(false), vec![Step::Install, Step::Update]);
        assert_eq!(steps(true), vec![Step::Update]);
    }

    #[test]
    fn installer_arguments_carry_no_password() {
        let s = settings(&[("DB_PREFIX", "mw_"), ("WIKI_NAME", "Team Wiki")]);
        let a = install_args(
            &s,
            &s.db.schema_user(),
            Path::new("/tmp/x"),
            Path::new("/tmp/x/dbpass"),
            Path::new("/tmp/x/pass"),
        );
        assert!(a.iter().all(|x| !x.contains("s3cr3t")), "{a:?}");
        assert!(a.contains(&"--dbserver=db:3306".to_string()));
        assert!(a.contains(&"--dbuser=wiki".to_string()));
        assert!(a.contains(&"--dbprefix=mw_".to_string()));
        assert!(a.contains(&"--dbssl".to_string()));
        assert!(a.contains(&"--server=https://wiki.example.com".to_string()));
        assert!(a.contains(&"--confpath=/tmp/x".to_string()));
        assert_eq!(&a[a.len() - 2..], &["Team Wiki", "Admin"]);
        let plain = settings(&[("DB_TLS", "false")]);
        let a = install_args(
            &plain,
            &plain.db.app(),
            Path::new("/c"),
            Path::new("/p"),
            Path::new("/q"),
        );
        assert!(!a.contains(&"--dbssl".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("--dbprefix")));
    }

    #[test]
    fn scripts_live_under_the_web_root() {
        let s = settings(&[("WEB_ROOT", "/srv/wiki")]);
        assert_eq!(
            script(&s, "update"),
            PathBuf::from("/srv/wiki/maintenance/update.php")
        );
    }
}
