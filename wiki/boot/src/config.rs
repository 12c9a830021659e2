//! Configuration objects from S3 into the web root: the current release's exact versions.
//!
//! [`plan`] is the pure rule (listing + settings → files to write, or the reason to refuse);
//! [`pull`] reads the release pointer (`<prefix>.wikiops/release.json`, written by
//! config-redeploy after it validated the objects; `shared::release::read_pointer`, which reads
//! a deleted pointer's last version) and downloads exactly the versions it names; only before
//! the first release (a fresh stack: the pointer never existed) it lists the prefix instead. Every object
//! is read up to `MAX_CONFIG_BYTES` and checked with `shared::config_rules`, staged next to
//! its target in a temporary file, and only when every object is complete and valid are they
//! all renamed into place. A failed, truncated or refused object leaves the web root as it was.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::Error;
use shared::config_rules::{self, KeyClass};
use shared::release::{self, Current};

use crate::settings::ConfigSource;

/// The bookkeeping folder of the config-redeploy function, never copied.
pub const BOOKKEEPING: &str = release::RESERVED_PREFIX;

/// One object of the listing (from the release, or from listing the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    /// The exact version to download (`None`: the latest, before the first release).
    pub version_id: Option<String>,
}

/// Where an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Apache's document root (MediaWiki's directory): PHP, which Apache runs and never sends
    /// as text, and public web assets (a logo, a stylesheet).
    WebRoot,
    /// `CONFIG_DIR`, outside the document root: everything else, never served.
    ConfigDir,
}

/// Extensions of public web assets: served as they are, so they may live in the web root.
const WEB_ASSETS: [&str; 11] = [
    "png", "jpg", "jpeg", "gif", "svg", "ico", "webp", "css", "js", "woff", "woff2",
];

/// Where object `relative` goes: only what must be served lands in the web root (`.php` files,
/// which Apache executes and never sends as source, and public web assets); any other file,
/// a JSON or YAML file, an `.ini`, a key, goes to `CONFIG_DIR`, where no URL reaches it.
pub fn place(relative: &str) -> Place {
    let ext = relative
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match ext.as_deref() {
        Some("php") => Place::WebRoot,
        Some(e) if WEB_ASSETS.contains(&e) => Place::WebRoot,
        _ => Place::ConfigDir,
    }
}

/// One file to write: object `key` (at `version_id`) to `relative` under its [`Place`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Planned {
    pub key: String,
    pub version_id: Option<String>,
    pub relative: String,
    pub place: Place,
}

/// Why a listing cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A required object is not in the listing (its key).
    Missing(String),
    /// A key that would land outside the web root (its key).
    Escapes(String),
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::Missing(key) => {
                Error::NotFound(format!("required configuration object {key} is missing"))
            }
            Refusal::Escapes(key) => Error::Rejected(format!(
                "configuration object {key} would be written outside the web root"
            )),
        }
    }
}

/// The path of `key` relative to the prefix: `None` for what is skipped (other prefixes,
/// folder markers, `.wikiops/` folders at any depth), `Err` for a key no task can install
/// (`shared::config_rules`, the rules config-redeploy releases by).
pub fn relative_path<'k>(prefix: &str, key: &'k str) -> Result<Option<&'k str>, Refusal> {
    let Some(rel) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    if rel.is_empty() {
        return Ok(None);
    }
    match config_rules::classify(key) {
        KeyClass::Config => Ok(Some(rel)),
        KeyClass::FolderMarker | KeyClass::Reserved => Ok(None),
        KeyClass::Unsafe => Err(Refusal::Escapes(key.to_string())),
    }
}

/// Decides which objects to write where. Keys are refused before anything is downloaded.
pub fn plan(source: &ConfigSource, listing: &[Listed]) -> Result<Vec<Planned>, Refusal> {
    let mut files = Vec::new();
    for o in listing {
        if let Some(rel) = relative_path(&source.prefix, &o.key)? {
            files.push(Planned {
                key: o.key.clone(),
                version_id: o.version_id.clone(),
                relative: rel.to_string(),
                place: place(rel),
            });
        }
    }
    for req in &source.required {
        if !files.iter().any(|f| &f.relative == req) {
            return Err(Refusal::Missing(format!("{}{}", source.prefix, req)));
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}

/// One file written by [`pull`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub key: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// What to install: the current release's objects; the last version of a deleted pointer
/// (never the latest objects, which may hold a withdrawn file); only when the pointer never
/// existed (a fresh stack), the latest objects. An unreadable pointer is refused.
async fn listing(s3: &aws_sdk_s3::Client, source: &ConfigSource) -> Result<Vec<Listed>, Error> {
    let release = match release::read_pointer(s3, &source.bucket, &source.prefix).await? {
        Current::Released(p) => {
            tracing::info!(released_at = %p.release.created_at, objects = p.release.objects.len(), "booting the current configuration release");
            p.release
        }
        Current::Deleted {
            version_id,
            pointer,
        } => {
            tracing::warn!(
                key = %release::pointer_key(&source.prefix),
                version_id,
                released_at = %pointer.release.created_at,
                "the release pointer was deleted (aws s3 sync --delete without --exclude '.wikiops/*'?): booting its last version, the last release config-redeploy made; the next configuration change writes it again"
            );
            pointer.release
        }
        Current::Unreleased => {
            tracing::warn!(
                "no configuration release yet (fresh stack): installing the latest objects, each checked"
            );
            return list(s3, source).await;
        }
    };
    Ok(release
        .objects
        .into_iter()
        .map(|(key, v)| Listed {
            key,
            version_id: Some(v),
        })
        .collect())
}

async fn list(s3: &aws_sdk_s3::Client, source: &ConfigSource) -> Result<Vec<Listed>, Error> {
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&source.bucket)
        .prefix(&source.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| Error::aws("S3", "ListObjectsV2", e))?;
        for o in page.contents() {
            if let Some(key) = o.key() {
                out.push(Listed {
                    key: key.to_string(),
                    version_id: None,
                });
            }
        }
    }
    Ok(out)
}

/// Reads the release (or lists the prefix) and plans the files, writing nothing (what
/// `wiki-boot check` prints).
pub async fn plan_remote(
    s3: &aws_sdk_s3::Client,
    source: &ConfigSource,
) -> Result<Vec<Planned>, Error> {
    let listing = listing(s3, source).await?;
    Ok(plan(source, &listing)?)
}

/// An object's body, read to its end but never more than `max` bytes; a body shorter than
/// announced is `Partial`.
async fn read_capped(
    mut out: aws_sdk_s3::operation::get_object::GetObjectOutput,
    bucket: &str,
    key: &str,
    max: u64,
) -> Result<Vec<u8>, Error> {
    let announced = out.content_length();
    let too_large = |size: u64| {
        Error::Rejected(format!(
            "configuration object s3://{bucket}/{key} refused: {}",
            config_rules::Problem::TooLarge { size, max }
        ))
    };
    if let Some(n) = announced.filter(|n| u64::try_from(*n).unwrap_or(u64::MAX) > max) {
        return Err(too_large(n as u64));
    }
    let mut body = Vec::with_capacity(announced.unwrap_or(0).clamp(0, 1 << 20) as usize);
    while let Some(chunk) = out.body.next().await {
        let chunk = chunk.map_err(|e| {
            Error::Unreachable(format!(
                "download of s3://{bucket}/{key} was cut short: {e}"
            ))
        })?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max {
            return Err(too_large(body.len() as u64));
        }
    }
    let got = i64::try_from(body.len()).unwrap_or(i64::MAX);
    if let Some(n) = announced.filter(|n| *n != got) {
        return Err(Error::Partial(format!(
            "s3://{bucket}/{key}: received {got} of {n} bytes"
        )));
    }
    Ok(body)
}

/// Downloads one object (its planned version) completely and checks it, or fails naming it.
async fn fetch(
    s3: &aws_sdk_s3::Client,
    source: &ConfigSource,
    file: &Planned,
) -> Result<Vec<u8>, Error> {
    let bucket = source.bucket.as_str();
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(&file.key)
        .set_version_id(file.version_id.clone())
        .send()
        .await
        .map_err(|e| Error::aws("S3", "GetObject", e))?;
    let body = read_capped(out, bucket, &file.key, source.max_bytes).await?;
    if let Some(problem) = config_rules::check_body(&file.key, &body, source.max_bytes) {
        return Err(Error::Rejected(format!(
            "configuration object s3://{bucket}/{} refused: {problem}",
            file.key
        )));
    }
    Ok(body)
}

const ATTEMPTS: u32 = 3;

async fn fetch_with_retries(
    s3: &aws_sdk_s3::Client,
    source: &ConfigSource,
    file: &Planned,
) -> Result<Vec<u8>, Error> {
    let mut attempt = 1;
    loop {
        match fetch(s3, source, file).await {
            Ok(b) => return Ok(b),
            // The SDK already retried the request itself; a body cut short is retried here.
            Err(e @ (Error::Unreachable(_) | Error::Partial(_))) if attempt < ATTEMPTS => {
                tracing::warn!(key = %file.key, attempt, error = %e, "download failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn stage(dir: &Path, body: &[u8]) -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(".wiki-boot-")
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    // Readable by Apache's user; the boot program runs as root.
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    Ok(tmp)
}

/// Reads the release, plans, downloads, checks and installs the configuration files. All or nothing.
pub async fn pull(s3: &aws_sdk_s3::Client, source: &ConfigSource) -> Result<Vec<Written>, Error> {
    let files = plan_remote(s3, source).await?;
    let mut staged = Vec::with_capacity(files.len());
    for file in &files {
        let body = fetch_with_retries(s3, source, file).await?;
        let root = match file.place {
            Place::WebRoot => &source.web_root,
            Place::ConfigDir => &source.config_dir,
        };
        let target = root.join(&file.relative);
        let dir = target.parent().unwrap_or(root).to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let tmp =
            stage(&dir, &body).map_err(|e| Error::io(format!("stage {}", target.display()), e))?;
        staged.push((file, target, tmp, body.len() as u64));
    }
    let mut written = Vec::with_capacity(staged.len());
    for (file, target, tmp, bytes) in staged {
        tmp.persist(&target)
            .map_err(|e| Error::io(format!("install {}", target.display()), e.error))?;
        tracing::info!(key = %file.key, path = %target.display(), bytes, "configuration file installed");
        written.push(Written {
            key: file.key.clone(),
            path: target,
            bytes,
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source(prefix: &str, required: &[&str]) -> ConfigSource {
        ConfigSource {
            bucket: "b".into(),
            prefix: prefix.into(),
            required: required.iter().map(|s| s.to_string()).collect(),
            web_root: "/var/www/html".into(),
            config_dir: "/var/lib/wikiops/config".into(),
            max_bytes: config_rules::DEFAULT_MAX_CONFIG_BYTES,
        }
    }

    fn listed(keys: &[&str]) -> Vec<Listed> {
        keys.iter()
            .map(|k| Listed {
                key: k.to_string(),
                version_id: Some(format!("v-{k}")),
            })
            .collect()
    }

    #[test]
    fn copies_everything_under_the_prefix_but_bookkeeping_and_markers() {
        let l = listed(&[
            "wiki/",
            "wiki/LocalSettings.php",
            "wiki/extra/",
            "wiki/extra/Skin.php",
            "wiki/.wikiops/last-good/LocalSettings.php",
            "wiki/.wikiops/",
            "other/LocalSettings.php",
        ]);
        let got = plan(&source("wiki/", &["LocalSettings.php"]), &l).unwrap();
        let rel: Vec<_> = got.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(rel, vec!["LocalSettings.php", "extra/Skin.php"]);
        assert_eq!(got[1].key, "wiki/extra/Skin.php");
        assert_eq!(got[1].version_id.as_deref(), Some("v-wiki/extra/Skin.php"));
    }

    #[test]
    fn bucket_root_bookkeeping_is_skipped_without_a_prefix() {
        let l = listed(&[
            ".wikiops/state.json",
            "LocalSettings.php",
            "logo.png",
            "dir/",
        ]);
        let got = plan(&source("", &["LocalSettings.php"]), &l).unwrap();
        let rel: Vec<_> = got.iter().map(|f| f.relative.as_str()).collect();
        assert_eq!(rel, vec!["LocalSettings.php", "logo.png"]);
    }

    #[test]
    fn a_missing_required_object_is_named() {
        let l = listed(&["wiki/logo.png", "wiki/.wikiops/LocalSettings.php"]);
        let err = plan(&source("wiki/", &["LocalSettings.php"]), &l).unwrap_err();
        assert_eq!(err, Refusal::Missing("wiki/LocalSettings.php".into()));
        let e: Error = err.into();
        assert_eq!(e.error_type(), "NotFound");
        assert!(e.to_string().contains("wiki/LocalSettings.php"), "{e}");
    }

    /// Only PHP and public web assets land in Apache's document root; a file that may hold a
    /// credential (JSON, YAML, .ini, .env, a key, no extension) goes where no URL reaches it.
    #[test]
    fn only_what_must_be_served_lands_in_the_web_root() {
        for rel in [
            "LocalSettings.php",
            "extra/Skin.PHP",
            "logo.png",
            "assets/site.css",
            "favicon.ico",
        ] {
            assert_eq!(place(rel), Place::WebRoot, "{rel}");
        }
        for rel in [
            "secrets.json",
            "db.ini",
            ".env",
            "id_rsa",
            "extra/settings.yaml",
            "x.php.bak",
            "key.pem",
            "notes.txt",
            "LocalSettings.php~",
        ] {
            assert_eq!(place(rel), Place::ConfigDir, "{rel}");
        }
        let l = listed(&["wiki/LocalSettings.php", "wiki/secrets.json"]);
        let got = plan(&source("wiki/", &["LocalSettings.php"]), &l).unwrap();
        assert_eq!(got[1].relative, "secrets.json");
        assert_eq!(got[1].place, Place::ConfigDir);
    }

    /// The shared table of key cases: installed, skipped, or refused before any download.
    #[test]
    fn keys_follow_the_shared_table() {
        use shared::config_rules::{KEY_CASES, KeyClass};
        for c in KEY_CASES {
            let got = relative_path("config/", c.key);
            match c.class {
                KeyClass::Config => {
                    assert_eq!(got, Ok(c.key.strip_prefix("config/")), "{:?}", c.key)
                }
                KeyClass::FolderMarker | KeyClass::Reserved => {
                    assert_eq!(got, Ok(None), "{:?}", c.key)
                }
                KeyClass::Unsafe => {
                    assert_eq!(got, Err(Refusal::Escapes(c.key.into())), "{:?}", c.key)
                }
            }
        }
    }

    #[test]
    fn keys_that_escape_are_refused() {
        for key in [
            "wiki/../etc/passwd",
            "wiki//etc/passwd",
            "wiki/a/../../b",
            "wiki/./x",
            "wiki/a\\..\\b",
        ] {
            let l = listed(&["wiki/LocalSettings.php", key]);
            assert_eq!(
                plan(&source("wiki/", &["LocalSettings.php"]), &l),
                Err(Refusal::Escapes(key.into())),
                "{key}"
            );
        }
        let l = listed(&["/abs", "LocalSettings.php"]);
        assert_eq!(
            plan(&source("", &["LocalSettings.php"]), &l),
            Err(Refusal::Escapes("/abs".into()))
        );
    }

    proptest! {
        /// Whatever the keys, a planned file stays under the web root and is never bookkeeping.
        #[test]
        fn planned_paths_stay_inside(keys in prop::collection::vec("[a-z./\\\\]{0,12}", 0..12)) {
            let mut l = listed(&["p/LocalSettings.php"]);
            l.extend(keys.iter().map(|k| Listed { key: format!("p/{k}"), version_id: None }));
            if let Ok(files) = plan(&source("p/", &["LocalSettings.php"]), &l) {
                for f in files {
                    let joined = Path::new("/var/www/html").join(&f.relative);
                    prop_assert!(joined.starts_with("/var/www/html"));
                    prop_assert!(!f.relative.split('/').any(|c| c == ".." || c == "." || c.is_empty()));
                    prop_assert!(!f.relative.starts_with(BOOKKEEPING));
                    prop_assert!(!f.relative.ends_with('/'));
                }
            }
        }
    }
}
