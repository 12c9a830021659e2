//! A real MediaWiki on this machine, as the container runs it: Debian's `mediawiki` package
//! (code in /usr/share/mediawiki) served by a test-owned Apache with `mod_php`, started by the
//! real `wiki-boot` (which pulls the config from S3, waits for the database and execs Apache).
//! The Apache and PHP settings are the files the Dockerfile installs (`wiki/apache/wikiops.conf`,
//! `wiki/php/wikiops.ini`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where Debian's package keeps MediaWiki's code (1.39 on Debian 12): the upgrade rehearsal's
/// old revision.
pub const MEDIAWIKI: &str = "/usr/share/mediawiki";

/// MediaWiki 1.43, the line the image ships, as `scripts/setup` unpacks it (Debian 13's packages,
/// `scripts/fetch-mediawiki-1.43`), relative to the workspace root.
pub const MEDIAWIKI_1_43: &str = "target/mediawiki-1.43/usr/share/mediawiki";

/// The MediaWiki the bench runs: `WIKIOPS_MEDIAWIKI` when set (e.g. [`MEDIAWIKI`] for Debian's
/// 1.39), else 1.43 ([`MEDIAWIKI_1_43`]), the image's line.
pub fn mediawiki() -> PathBuf {
    match std::env::var_os("WIKIOPS_MEDIAWIKI") {
        Some(dir) if !dir.is_empty() => crate::paths::root().join(dir),
        _ => crate::paths::root().join(MEDIAWIKI_1_43),
    }
}
/// Apache's user and group on Debian (uid/gid 33, as on the EFS access point).
pub const WWW_DATA: u32 = 33;

/// The version of [`mediawiki()`]'s code (`MW_VERSION` in includes/Defines.php), e.g. `1.43.9`.
pub fn mediawiki_version() -> Option<String> {
    let defines = std::fs::read_to_string(mediawiki().join("includes/Defines.php")).ok()?;
    defines.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("define( 'MW_VERSION', '")?;
        Some(rest.split('\'').next()?.to_string())
    })
}

/// The health check of the template's target group: siteinfo answers with the site's name.
pub async fn healthy(port: u16) -> bool {
    let mut http = crate::http::Http::new(format!("http://127.0.0.1:{port}"));
    matches!(
        http.api_get(&[("action", "query"), ("meta", "siteinfo")]).await,
        Ok(v) if v["query"]["general"]["sitename"].is_string()
    )
}

/// Whether Debian's MediaWiki, Apache and mod_php are installed.
pub fn available() -> bool {
    mediawiki().join("index.php").exists() && php_module().is_some()
}

/// The mod_php module of Debian's Apache.
pub fn php_module() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/apache2/modules")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libphp") && n.ends_with(".so"))
        })
}

/// A task's web root under `dir`: links to MediaWiki's code, `images/` linked to the shared
/// `uploads` directory (the EFS mount) and a local `cache/`, both owned by www-data.
pub fn web_root(dir: &Path, uploads: &Path) -> std::io::Result<PathBuf> {
    web_root_of(&mediawiki(), dir, uploads)
}

/// [`web_root`] for the MediaWiki code in `code` (an upgrade runs two versions side by side).
pub fn web_root_of(code: &Path, dir: &Path, uploads: &Path) -> std::io::Result<PathBuf> {
    let root = dir.join("html");
    std::fs::create_dir_all(&root)?;
    for e in std::fs::read_dir(code)? {
        let e = e?;
        let name = e.file_name();
        if ["LocalSettings.php", "images", "cache"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        std::os::unix::fs::symlink(e.path(), root.join(&name))?;
    }
    std::fs::create_dir_all(uploads)?;
    std::os::unix::fs::chown(uploads, Some(WWW_DATA), Some(WWW_DATA))?;
    std::os::unix::fs::symlink(uploads, root.join("images"))?;
    let cache = root.join("cache");
    std::fs::create_dir_all(&cache)?;
    std::os::unix::fs::chown(&cache, Some(WWW_DATA), Some(WWW_DATA))?;
    Ok(root)
}

/// Writes an Apache configuration for `root` on `127.0.0.1:port` into `dir` and returns its path.
pub fn apache_conf(
    dir: &Path,
    root: &Path,
    port: u16,
    server_name: &str,
) -> std::io::Result<PathBuf> {
    let m = "/usr/lib/apache2/modules";
    let run = dir.join("run");
    std::fs::create_dir_all(&run)?;
    let php =
        php_module().ok_or_else(|| std::io::Error::other("libapache2-mod-php is not installed"))?;
    let wikiops = crate::paths::root().join("wiki/apache/wikiops.conf");
    let conf = format!(
        r#"ServerRoot "{dir}"
ServerName {server_name}
Listen 127.0.0.1:{port}
PidFile "{dir}/apache.pid"
DefaultRuntimeDir "{run}"
Mutex file:{run} default
LoadModule mpm_prefork_module {m}/mod_mpm_prefork.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule mime_module {m}/mod_mime.so
LoadModule dir_module {m}/mod_dir.so
LoadModule setenvif_module {m}/mod_setenvif.so
LoadModule headers_module {m}/mod_headers.so
LoadModule remoteip_module {m}/mod_remoteip.so
LoadModule php_module {php}
StartServers 2
MinSpareServers 1
MaxSpareServers 4
MaxRequestWorkers 8
User www-data
Group www-data
ErrorLog /dev/stderr
LogLevel warn
TypesConfig /etc/mime.types
DocumentRoot "{root}"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}">
    Options FollowSymLinks
    AllowOverride None
    Require all granted
</Directory>
<Directory "{mediawiki}">
    Options FollowSymLinks
    AllowOverride None
    Require all granted
</Directory>
DirectoryIndex index.php
<FilesMatch "\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
Include "{wikiops}"
CustomLog /dev/stdout wikiops
"#,
        dir = dir.display(),
        run = run.display(),
        root = root.display(),
        php = php.display(),
        mediawiki = mediawiki().display(),
        wikiops = wikiops.display(),
    );
    let p = dir.join("httpd.conf");
    std::fs::write(&p, conf)?;
    Ok(p)
}

/// The environment that makes Debian's MediaWiki behave like the image: our config file,
/// our PHP settings, the local cache directory, and Apache as the program wiki-boot execs.
pub fn local_env(root: &Path, conf: &Path) -> Vec<(String, String)> {
    vec![
        ("WEB_ROOT".into(), root.display().to_string()),
        // Configuration objects that are not served: beside the web root, as in the image.
        (
            "CONFIG_DIR".into(),
            root.parent()
                .unwrap_or(root)
                .join("wikiops-config")
                .display()
                .to_string(),
        ),
        (
            "MW_CONFIG_FILE".into(),
            root.join("LocalSettings.php").display().to_string(),
        ),
        (
            "PHP_INI_SCAN_DIR".into(),
            format!(":{}", crate::paths::root().join("wiki/php").display()),
        ),
        (
            "WIKI_CACHE_DIR".into(),
            root.join("cache").display().to_string(),
        ),
        (
            "APACHE_COMMAND".into(),
            format!("apache2 -f {} -DFOREGROUND", conf.display()),
        ),
    ]
}

/// A running `wiki-boot <args>` process (its own process group, as PID 1 of a container).
pub struct BootProcess {
    child: Child,
    pid: u32,
    logs: Arc<Mutex<Vec<String>>>,
    /// Text that identifies this process's Apache children (its config path).
    marker: String,
}

impl BootProcess {
    /// Starts `wiki-boot <args>` with exactly `env` (plus `PATH`). `marker` identifies the
    /// processes it leaves behind (the Apache config path) for [`BootProcess::stop`].
    pub fn start(
        args: &[&str],
        env: &[(String, String)],
        marker: &str,
    ) -> std::io::Result<BootProcess> {
        let mut cmd = Command::new(crate::paths::binary("wiki-boot"));
        crate::die_with_parent(&mut cmd);
        let mut child = cmd
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let streams: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for s in streams {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(s).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Ok(BootProcess {
            child,
            pid,
            logs,
            marker: marker.to_string(),
        })
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Waits for it to exit (for one-off commands such as `schema`).
    pub async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().and_then(|s| s.code())
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGTERM to its process group (as ECS stops a task), then SIGKILL to anything left.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status()
            .await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait()).await;
        kill_matching(&self.marker);
    }
}

impl Drop for BootProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
        kill_matching(&self.marker);
    }
}

/// Kills every process whose command line contains `needle` (an Apache config path).
pub fn kill_matching(needle: &str) {
    if needle.is_empty() {
        return;
    }
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}
