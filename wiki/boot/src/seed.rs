//! The example configuration, seeded once into a fresh stack's configuration prefix.
//!
//! A new stack's bucket is empty, and a wiki without `LocalSettings.php` cannot start. The schema
//! step (the first container of every web task) therefore uploads the image's example files when
//! the prefix has never held an object: not one version, not one delete marker. They become
//! ordinary versioned objects that the operator edits and config-redeploy rolls back like any
//! other. Each upload is conditional (`If-None-Match: *`), so two tasks seeding at once create
//! each file once, and an object that exists is never replaced; a prefix that ever held anything
//! (even one the operator emptied on purpose) is never seeded again.
//!
//! Why here and not a CloudFormation custom resource: the files ship in the image the stack
//! deploys, so the seed is the example of the very version that runs; it needs no extra function,
//! no template copy of LocalSettings.php and no response protocol; and it runs before the first
//! web container reads the prefix (dependsOn SUCCESS), on every deploy, doing nothing once seeded.
//!
//! [`decide`] is the pure rule (history of the prefix + example files → uploads); [`run`] lists
//! the prefix's versions, reads the example directory and applies it.

use std::path::{Path, PathBuf};

use shared::Error;

use crate::settings::ConfigSource;

/// One example file: its path relative to the example directory (and to the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub relative: String,
}

/// What the seed step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The prefix has held `key` (a version or a delete marker): the operator's, left alone.
    AlreadyConfigured { key: String },
    /// No example files in the image (`CONFIG_SEED_DIR` empty or unset): nothing to seed.
    NoExample,
    /// Upload these keys, each only if absent.
    Seed(Vec<Upload>),
}

/// One conditional upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub key: String,
    pub relative: String,
}

/// Decides from every key the prefix has ever held (versions and delete markers) and the example
/// files. config-redeploy's bookkeeping (`<prefix>.wikiops/`) is not configuration.
pub fn decide(prefix: &str, history: &[String], examples: &[Example]) -> Decision {
    let held = history.iter().find(|key| {
        key.strip_prefix(prefix)
            .is_some_and(|rel| !rel.is_empty() && !shared::config_rules::is_reserved(key))
    });
    if let Some(key) = held {
        return Decision::AlreadyConfigured { key: key.clone() };
    }
    if examples.is_empty() {
        return Decision::NoExample;
    }
    let mut uploads: Vec<Upload> = examples
        .iter()
        .map(|e| Upload {
            key: format!("{prefix}{}", e.relative),
            relative: e.relative.clone(),
        })
        .collect();
    uploads.sort_by(|a, b| a.key.cmp(&b.key));
    Decision::Seed(uploads)
}

/// The regular files under `dir`, relative to it (sorted). A missing directory has none.
fn examples(dir: &Path) -> Result<Vec<Example>, Error> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Example>) -> Result<(), Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file()
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(Example {
                    relative: rel.to_string_lossy().into_owned(),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

/// Every key under the prefix that has a version or a delete marker.
async fn history(s3: &aws_sdk_s3::Client, source: &ConfigSource) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
    loop {
        let page = s3
            .list_object_versions()
            .bucket(&source.bucket)
            .prefix(&source.prefix)
            .set_key_marker(key_marker.take())
            .set_version_id_marker(version_marker.take())
            .send()
            .await
            .map_err(|e| Error::aws("S3", "ListObjectVersions", e))?;
        let versions = page.versions().iter().filter_map(|v| v.key());
        let markers = page.delete_markers().iter().filter_map(|m| m.key());
        keys.extend(versions.chain(markers).map(str::to_string));
        if page.is_truncated() != Some(true) || page.next_key_marker().is_none() {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        version_marker = page.next_version_id_marker().map(str::to_string);
    }
    Ok(keys)
}

/// Seeds the prefix from `dir` when it has never held configuration; returns what it decided.
pub async fn run(
    s3: &aws_sdk_s3::Client,
    source: &ConfigSource,
    dir: Option<&PathBuf>,
) -> Result<Decision, Error> {
    let examples = match dir {
        Some(d) => examples(d)?,
        None => Vec::new(),
    };
    let decision = decide(&source.prefix, &history(s3, source).await?, &examples);
    match &decision {
        Decision::AlreadyConfigured { key } => {
            tracing::info!(key = %key, "configuration prefix already used: no seed");
        }
        Decision::NoExample => {
            tracing::info!("no example configuration in the image (CONFIG_SEED_DIR): no seed");
        }
        Decision::Seed(uploads) => {
            let Some(dir) = dir else {
                return Ok(decision);
            };
            for upload in uploads {
                put_if_absent(s3, &source.bucket, upload, dir).await?;
            }
        }
    }
    Ok(decision)
}

/// Uploads one example file unless its key exists (another task seeded it first: fine).
async fn put_if_absent(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    upload: &Upload,
    dir: &Path,
) -> Result<(), Error> {
    let path = dir.join(&upload.relative);
    let body =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let sent = s3
        .put_object()
        .bucket(bucket)
        .key(&upload.key)
        .body(body.into())
        .if_none_match("*")
        .send()
        .await;
    match sent {
        Ok(out) => {
            tracing::info!(key = %upload.key, version = out.version_id().unwrap_or("-"), "example configuration seeded");
            Ok(())
        }
        Err(e) => {
            let e = Error::aws("S3", "PutObject", e);
            // 412: the key exists; 409: a concurrent conditional write to it is in flight.
            if matches!(
                e.aws_code(),
                Some("PreconditionFailed" | "ConditionalRequestConflict")
            ) {
                tracing::info!(key = %upload.key, "already there: not replaced");
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ex(names: &[&str]) -> Vec<Example> {
        names
            .iter()
            .map(|n| Example {
                relative: n.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_fresh_prefix_gets_every_example_file() {
        let d = decide(
            "config/",
            &[],
            &ex(&["LocalSettings.php", "extra/Logo.png"]),
        );
        assert_eq!(
            d,
            Decision::Seed(vec![
                Upload {
                    key: "config/LocalSettings.php".into(),
                    relative: "LocalSettings.php".into()
                },
                Upload {
                    key: "config/extra/Logo.png".into(),
                    relative: "extra/Logo.png".into()
                },
            ])
        );
    }

    #[test]
    fn bookkeeping_and_other_prefixes_are_not_configuration() {
        let history = vec![
            "config/.wikiops/ledger.json".to_string(),
            "other/LocalSettings.php".to_string(),
            "config/".to_string(),
        ];
        assert!(matches!(
            decide("config/", &history, &ex(&["LocalSettings.php"])),
            Decision::Seed(_)
        ));
    }

    #[test]
    fn nothing_to_seed_without_examples() {
        assert_eq!(decide("", &[], &[]), Decision::NoExample);
    }

    proptest! {
        /// Once the prefix has held any configuration key, nothing is ever uploaded.
        #[test]
        fn a_used_prefix_is_never_seeded(
            prefix in "(|[a-z]{1,5}/)",
            rel in "[A-Za-z][A-Za-z0-9./]{0,20}",
            others in proptest::collection::vec("[a-z/.]{0,12}", 0..5),
        ) {
            let mut history = others.iter().map(|o| format!("{prefix}{o}")).collect::<Vec<_>>();
            history.push(format!("{prefix}{rel}"));
            let d = decide(&prefix, &history, &ex(&["LocalSettings.php"]));
            prop_assert!(
                matches!(d, Decision::AlreadyConfigured { .. }),
                "{d:?}"
            );
        }
    }

    #[test]
    fn example_files_are_read_recursively() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("extra")).unwrap();
        std::fs::write(dir.path().join("LocalSettings.php"), "<?php").unwrap();
        std::fs::write(dir.path().join("extra/a.php"), "<?php").unwrap();
        let found = examples(dir.path()).unwrap();
        assert_eq!(found, ex(&["LocalSettings.php", "extra/a.php"]));
        assert!(examples(&dir.path().join("missing")).unwrap().is_empty());
    }
}
