//! The wiki container's entrypoint.
//!
//! - `serve` (the default): configuration from S3 into the web root (PHP and public assets)
//!   and `CONFIG_DIR` (everything else, never served) ([`config`]), the task's
//!   identity from the ECS metadata endpoint ([`metadata`]), a bounded wait for the database
//!   ([`db`]), then `exec` of Apache (`apache2-foreground`): Apache replaces this process, so
//!   ECS's SIGTERM reaches it.
//! - `schema`: the example configuration into a prefix that never held any ([`seed`]), then
//!   configuration, database, a MySQL named lock, MediaWiki's installer (no tables yet) and
//!   `update.php --quick` ([`php`]). The first container of every web task; the web container
//!   starts only once it exited 0.
//! - `jobs`: configuration, database, then `runJobs.php` for a bounded time. Run on a schedule
//!   (the web tasks run no jobs: `$wgJobRunRate = 0`).
//! - `pull`: only the configuration step of `serve` (then exit 0): local runs, benchmarks.
//! - `check`: the dry run: checks the settings, lists the configuration objects and prints the
//!   plan (which object goes where) as JSON, writing nothing and starting nothing.
//!
//! Any missing setting or object stops the program before Apache starts, with one log line
//! naming the cause, and a non-zero exit status.

pub mod config;
pub mod db;
pub mod metadata;
pub mod php;
pub mod seed;
pub mod settings;

use std::os::unix::process::CommandExt;

use shared::{Env, Error};

pub use settings::Settings;

/// A subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Serve,
    Schema,
    Jobs,
    Pull,
    Check,
}

impl Command {
    /// Reads the subcommand from the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Command, Error> {
        match args.first().map(String::as_str) {
            None | Some("serve") => Ok(Command::Serve),
            Some("schema") => Ok(Command::Schema),
            Some("jobs") => Ok(Command::Jobs),
            Some("pull") => Ok(Command::Pull),
            Some("check") => Ok(Command::Check),
            Some(other) => Err(Error::Rejected(format!(
                "unknown command {other:?}: expected serve (default), schema, jobs, pull or check"
            ))),
        }
    }
}

/// Runs `command`. `serve` returns only when it could not start Apache.
pub async fn run(command: Command, env: &Env) -> Result<(), Error> {
    let settings = Settings::from_env(env)?;
    let sdk = shared::aws::sdk_config(env).await?;
    let s3 = shared::aws::s3_client(&sdk, env)?;
    if command == Command::Check {
        return check(&s3, &settings).await;
    }
    if command == Command::Schema {
        let dir = env
            .optional("CONFIG_SEED_DIR")
            .map(std::path::PathBuf::from);
        seed::run(&s3, &settings.config, dir.as_ref()).await?;
        publish_bundled(&s3, &settings.config).await?;
    }
    let written = config::pull(&s3, &settings.config).await?;
    tracing::info!(
        files = written.len(),
        bucket = %settings.config.bucket,
        prefix = %settings.config.prefix,
        "configuration pulled"
    );
    match command {
        Command::Serve => serve(&settings).await,
        Command::Schema => schema(&settings, env).await,
        Command::Jobs => jobs(&settings).await,
        Command::Pull => Ok(()),
        // Answered before the pull: a dry run writes nothing.
        Command::Check => Ok(()),
    }
}

/// What the image bundles: the folders of `WEB_ROOT/extensions` and `WEB_ROOT/skins`.
pub fn bundled(web_root: &std::path::Path) -> shared::release::Bundled {
    let folders = |sub: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(web_root.join(sub))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    shared::release::Bundled {
        extensions: folders("extensions"),
        skins: folders("skins"),
    }
}

/// Publishes what the image bundles to `<prefix>.wikiops/image.json`, where config-redeploy
/// checks `wfLoadExtension`/`wfLoadSkin` against it before a release.
async fn publish_bundled(
    s3: &aws_sdk_s3::Client,
    source: &settings::ConfigSource,
) -> Result<(), Error> {
    let list = bundled(&source.web_root);
    let body = serde_json::to_vec_pretty(&list)
        .map_err(|e| Error::Partial(format!("the image's list: {e}")))?;
    s3.put_object()
        .bucket(&source.bucket)
        .key(shared::release::image_key(&source.prefix))
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map_err(|e| Error::aws("S3", "PutObject", e))?;
    tracing::info!(
        extensions = list.extensions.len(),
        skins = list.skins.len(),
        "published what the image bundles"
    );
    Ok(())
}

async fn check(s3: &aws_sdk_s3::Client, settings: &Settings) -> Result<(), Error> {
    let files = config::plan_remote(s3, &settings.config).await?;
    let plan = serde_json::json!({
        "bucket": settings.config.bucket,
        "prefix": settings.config.prefix,
        "web_root": settings.config.web_root,
        "config_dir": settings.config.config_dir,
        "required": settings.config.required,
        "files": files,
        "apache_command": settings.apache_command,
    });
    println!("{plan}");
    Ok(())
}

async fn serve(settings: &Settings) -> Result<(), Error> {
    let identity = match &settings.metadata_uri {
        Some(uri) => {
            let id = metadata::fetch(uri).await?;
            tracing::info!(task = %id.task_id, az = %id.availability_zone, ip = %id.private_ip, "task identity");
            id.env()
        }
        None => {
            tracing::warn!(
                "ECS_CONTAINER_METADATA_URI_V4 is not set (not on ECS): no task identity for PHP"
            );
            Vec::new()
        }
    };
    let conn = db::wait(&settings.db, &settings.db.app(), db::Ready::Installed).await?;
    let _ = conn.disconnect().await;

    let Some((program, args)) = settings.apache_command.split_first() else {
        return Err(Error::Settings(shared::SettingsError::Missing(
            "APACHE_COMMAND".into(),
        )));
    };
    tracing::info!(command = %settings.apache_command.join(" "), "starting Apache");
    let err = std::process::Command::new(program)
        .args(args)
        .envs(settings.child_env())
        .envs(identity)
        .exec();
    Err(Error::io(format!("exec {program}"), err))
}

async fn schema(settings: &Settings, env: &Env) -> Result<(), Error> {
    let who = settings.db.schema_user();
    let mut conn = db::wait(&settings.db, &who, db::Ready::Answers).await?;
    let lock = db::lock_name(&settings.db.name);
    db::lock(&mut conn, &lock, settings.schema_lock_wait).await?;
    tracing::info!(lock = %lock, "schema lock taken");
    let result = async {
        if settings.db.admin.is_some() {
            db::ensure_app_user(&mut conn, &settings.db).await?;
        }
        let has_tables = db::has_wiki_tables(&mut conn, &settings.db).await?;
        let steps = php::steps(has_tables);
        tracing::info!(has_tables, ?steps, "schema plan");
        for step in steps {
            match step {
                php::Step::Install => {
                    let password = env.secret("WIKI_ADMIN_PASSWORD").unwrap_or_else(|| {
                        tracing::warn!(user = %settings.admin_user, "WIKI_ADMIN_PASSWORD is not set: the administrator gets a random password (reset it with maintenance/changePassword.php)");
                        format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
                    });
                    php::install(settings, &who, &password).await?;
                }
                php::Step::Update => {
                    let quick = ["--quick".to_string()];
                    php::run(settings, "update", &quick, &[], settings.schema_timeout).await?;
                }
            }
        }
        Ok::<(), Error>(())
    }
    .await;
    let released = db::unlock(&mut conn, &lock).await;
    let _ = conn.disconnect().await;
    result?;
    released?;
    tracing::info!("schema is up to date");
    Ok(())
}

async fn jobs(settings: &Settings) -> Result<(), Error> {
    let conn = db::wait(&settings.db, &settings.db.app(), db::Ready::Installed).await?;
    let _ = conn.disconnect().await;
    let args = vec![format!("--maxtime={}", settings.jobs_max_time.as_secs())];
    // runJobs.php stops taking jobs after --maxtime; a job already running gets a minute more.
    let limit = settings.jobs_max_time + std::time::Duration::from_secs(60);
    php::run(settings, "runJobs", &args, &[], limit).await?;
    tracing::info!("job run finished");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands() {
        let a = |s: &[&str]| Command::parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&[]).unwrap(), Command::Serve);
        assert_eq!(a(&["serve"]).unwrap(), Command::Serve);
        assert_eq!(a(&["schema"]).unwrap(), Command::Schema);
        assert_eq!(a(&["jobs"]).unwrap(), Command::Jobs);
        assert_eq!(a(&["check"]).unwrap(), Command::Check);
        assert_eq!(a(&["pull"]).unwrap(), Command::Pull);
        let e = a(&["migrate"]).unwrap_err();
        assert_eq!(e.error_type(), "Rejected");
        assert!(e.to_string().contains("migrate"), "{e}");
    }
}
