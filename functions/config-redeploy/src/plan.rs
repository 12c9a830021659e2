//! The pure decision for configuration changes: events + observed state + settings → plan.
//!
//! 1. [`route`] sorts the object events: other buckets, the reserved `.wikiops/` prefix,
//!    folder markers, non-content events and unrouted keys are skipped with a reason; the
//!    rest are grouped by ECS service (one deployment per service, however many files).
//! 2. The adapter observes each service: its deployments and current release pointer
//!    ([`plan_from_pointer`] settles duplicates with just these), then the ledger of its
//!    PRIMARY deployment and every configuration object's current version.
//! 3. [`plan_target`] decides: refuse (an object breaks a rule, or is a state a rollback
//!    withdrew), skip (the PRIMARY deployment already boots a release holding the change), or
//!    make a release (every object's exact version) and deploy it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::config_rules::{self as validate, KeyClass, Problem};
use shared::ecs::{self, Decision, ServiceState};
use shared::release::{Bundled, Pointer, Release};

use crate::event::{Change, ObjectEvent};
use crate::ledger::{Ledger, RESERVED_PREFIX, Rolled};
use crate::settings::{Settings, Target};

/// An event or deployment that needs nothing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    pub reason: String,
}

impl Skipped {
    /// A skipped object key.
    pub fn key(key: &str, reason: impl Into<String>) -> Self {
        Skipped {
            key: Some(key.to_string()),
            deployment_id: None,
            reason: reason.into(),
        }
    }
}

/// Object events sorted by service.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routed {
    pub skipped: Vec<Skipped>,
    /// Changed keys per service, each key once, in event order.
    pub work: BTreeMap<Target, Vec<ObjectEvent>>,
}

/// Sorts object events into skipped ones and per-service work.
pub fn route(events: &[ObjectEvent], settings: &Settings) -> Routed {
    let mut out = Routed::default();
    for e in events {
        let reason = if e.bucket != settings.bucket {
            Some(format!("bucket {} is not CONFIG_BUCKET", e.bucket))
        } else if validate::classify(&e.key) == KeyClass::Reserved {
            Some(format!(
                "{RESERVED_PREFIX} folders hold config-redeploy's own records"
            ))
        } else if validate::classify(&e.key) == KeyClass::FolderMarker {
            Some("folder marker".to_string())
        } else if let Change::Other(name) = &e.change {
            Some(format!("{name} does not change the content"))
        } else {
            None
        };
        if let Some(reason) = reason {
            out.skipped.push(Skipped::key(&e.key, reason));
            continue;
        }
        match settings.route_for(&e.key) {
            None => out
                .skipped
                .push(Skipped::key(&e.key, "outside every configured prefix")),
            Some(r) => {
                let list = out.work.entry(r.target.clone()).or_default();
                match list.iter_mut().find(|o| o.key == e.key) {
                    // Keep the latest news about a key (duplicates and quick successions).
                    Some(prev) => {
                        if e.time.map(|t| t.latest()) >= prev.time.map(|t| t.latest()) {
                            *prev = e.clone();
                        }
                    }
                    None => list.push(e.clone()),
                }
            }
        }
    }
    out
}

/// A configuration object as observed: its current version, size and (for `.php` files of at
/// most `MAX_CONFIG_BYTES`) the whole content of that version, which PHP must parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// `null` in a bucket that was never versioned.
    pub version_id: String,
    pub size: u64,
    pub body: Option<Vec<u8>>,
}

/// The rule of `shared::config_rules` an observed object breaks: judged on its whole content
/// (PHP syntax included) when it was read, else on its size.
pub fn problem(o: &ObjectInfo, max: u64) -> Option<Problem> {
    match &o.body {
        Some(body) => validate::check_body(&o.key, body, max),
        None => validate::check(&o.key, o.size, None, max),
    }
}

/// What the adapter observed for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub service: ServiceState,
    /// The current release pointer of the service's configuration, if any yet (the last
    /// version of a deleted one included).
    pub pointer: Option<Pointer>,
    /// The pointer was deleted (`aws s3 sync --delete`): `pointer` is its last version, and a
    /// release is required (nothing counts as deployed until the pointer is written again).
    pub pointer_deleted: bool,
    /// The ledger of the PRIMARY deployment, when this function started it.
    pub primary_ledger: Option<Ledger>,
    /// Every object under the service's prefixes (filtered here to the ones it owns).
    pub objects: Vec<ObjectInfo>,
    /// The adapter's clock when it observed (a new release's time).
    pub now: DateTime<Utc>,
    /// What the running image bundles (`<prefix>.wikiops/image.json`, published by wiki-boot);
    /// `None` until a task published it: then extensions and skins are not checked.
    pub bundled: Option<Bundled>,
}

/// Why an object blocks a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// It breaks a rule of `shared::config_rules`.
    Invalid(Problem),
    /// Its latest state is one a rollback withdrew (`None`: the deletion was withdrawn).
    Withdrawn { version_id: Option<String> },
    /// It includes a configuration file (a literal path, or `__DIR__ . '/…'`) that is not in
    /// the release: PHP would stop at that line on every request.
    MissingInclude { path: String },
    /// It loads an extension or skin (`kind`) the running image does not bundle.
    NotBundled { kind: String, name: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Invalid(p) => p.fmt(f),
            Refusal::Withdrawn {
                version_id: Some(v),
            } => write!(
                f,
                "version {v} was rolled back after its deployment failed: upload a fix"
            ),
            Refusal::Withdrawn { version_id: None } => write!(
                f,
                "its deletion was rolled back after its deployment failed: upload it again"
            ),
            Refusal::NotBundled { kind, name } => write!(
                f,
                "it loads the {kind} {name}, which the wiki image does not bundle: use one it does, or build the image with it"
            ),
            Refusal::MissingInclude { path } => write!(
                f,
                "it includes {path}, which is not in the release: upload it, or remove the include"
            ),
        }
    }
}

/// A refused object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub key: String,
    pub problem: Refusal,
}

/// How the PRIMARY deployment was found to carry a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// The current release holds the changed versions and the PRIMARY started after it was made.
    Released,
    /// The current release holds exactly the service's current objects and the PRIMARY boots it.
    SameObjects,
}

/// The plan for one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum TargetPlan {
    /// Write `release` as the current release, then start one deployment; `changes` is what
    /// differs from the release tasks booted until now.
    Release {
        release: Release,
        previous: Option<Release>,
        changes: Vec<Rolled>,
    },
    /// The PRIMARY deployment already carries the change.
    Covered {
        deployment_id: String,
        coverage: Coverage,
    },
    /// A configuration object is refused: no release, the service is left untouched.
    Rejected { rejections: Vec<Rejection> },
    /// The service is not ACTIVE.
    Unavailable { status: String },
}

/// Whether `key` is one of `target`'s configuration objects (an unsafe key is one, to be refused).
pub fn owned_by(key: &str, target: &Target, settings: &Settings) -> bool {
    matches!(validate::classify(key), KeyClass::Config | KeyClass::Unsafe)
        && settings.route_for(key).is_some_and(|r| &r.target == target)
}

/// Whether the PRIMARY deployment boots `pointer`'s release: it started after the release
/// was made (its tasks read the pointer when they start), or its ledger holds that release.
fn primary_boots(
    service: &ServiceState,
    pointer: &Pointer,
    primary_ledger: Option<&Ledger>,
) -> bool {
    service.primary().is_some_and(|p| {
        p.created_at.is_some_and(|c| c > pointer.release.created_at)
            || primary_ledger.is_some_and(|l| {
                l.deployment_id == p.id && l.release.objects == pointer.release.objects
            })
    })
}

/// Whether the release holds the state an event reports: the event's version of a created
/// object, or no object for a removed one.
fn carries(release: &Release, e: &ObjectEvent) -> bool {
    match e.change {
        Change::Created => e
            .version_id
            .as_ref()
            .is_some_and(|v| release.objects.get(&e.key) == Some(v)),
        Change::Removed => !release.objects.contains_key(&e.key),
        Change::Other(_) => true,
    }
}

/// The decision that needs only the service's deployments and the release pointer, so the
/// adapter reads nothing else for it: the service is not ACTIVE, or the current release holds
/// every changed version and the PRIMARY deployment boots it. `None`: look further ([`plan_target`]).
pub fn plan_from_pointer(
    events: &[ObjectEvent],
    service: &ServiceState,
    pointer: Option<&Pointer>,
) -> Option<TargetPlan> {
    if let Decision::NotActive { status } = ecs::decide(service, None) {
        return Some(TargetPlan::Unavailable { status });
    }
    let pointer = pointer?;
    let primary = service.primary()?;
    (events.iter().all(|e| carries(&pointer.release, e)) && primary_boots(service, pointer, None))
        .then(|| TargetPlan::Covered {
            deployment_id: primary.id.clone(),
            coverage: Coverage::Released,
        })
}

/// Every rule an object of the service breaks, in key order.
fn rejections(
    objects: &[&ObjectInfo],
    withdrawn: &BTreeMap<String, Option<String>>,
    max: u64,
) -> Vec<Rejection> {
    let mut out: Vec<Rejection> = objects
        .iter()
        .filter_map(|o| {
            problem(o, max)
                .map(Refusal::Invalid)
                .or_else(|| {
                    (withdrawn.get(&o.key) == Some(&Some(o.version_id.clone()))).then(|| {
                        Refusal::Withdrawn {
                            version_id: Some(o.version_id.clone()),
                        }
                    })
                })
                .map(|problem| Rejection {
                    key: o.key.clone(),
                    problem,
                })
        })
        .collect();
    // A withdrawn deletion: the object is still absent.
    for (key, state) in withdrawn {
        if state.is_none() && !objects.iter().any(|o| &o.key == key) {
            out.push(Rejection {
                key: key.clone(),
                problem: Refusal::Withdrawn { version_id: None },
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The includes of each `.php` object that name a configuration file the release does not
/// hold. A path is looked up relative to the including file's folder (`__DIR__ . '/x'`, and a
/// plain relative path) or to the prefix (a plain relative path, as PHP's include path `.` is
/// MediaWiki's directory); absolute paths, paths into MediaWiki's own folders and paths built
/// from variables are the image's or unknown, and not checked.
fn missing_includes(objects: &[&ObjectInfo], home: &str) -> Vec<Rejection> {
    let held: std::collections::BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.key.strip_prefix(home))
        .collect();
    let mut out = Vec::new();
    for o in objects {
        let (Some(body), Some(rel)) = (&o.body, o.key.strip_prefix(home)) else {
            continue;
        };
        let dir = rel.rsplit_once('/').map_or("", |(d, _)| d);
        for path in shared::php::loads(body).includes {
            if path.starts_with('/') || path.contains('$') || path.contains("://") {
                continue;
            }
            // MediaWiki's own folders (`extensions/Foo/Foo.php`): the image's files.
            let image = [
                "extensions/",
                "skins/",
                "includes/",
                "vendor/",
                "maintenance/",
            ];
            if image.iter().any(|d| path.starts_with(d)) {
                continue;
            }
            let beside = if dir.is_empty() {
                normalize(&path)
            } else {
                normalize(&format!("{dir}/{path}"))
            };
            let found = [beside, normalize(&path)]
                .iter()
                .flatten()
                .any(|p| held.contains(p.as_str()));
            if !found {
                out.push(Rejection {
                    key: o.key.clone(),
                    problem: Refusal::MissingInclude { path },
                });
            }
        }
    }
    out
}

/// The extensions and skins each `.php` object loads by name that the image does not bundle.
fn not_bundled(objects: &[&ObjectInfo], bundled: &Bundled) -> Vec<Rejection> {
    let mut out = Vec::new();
    for o in objects {
        let Some(body) = &o.body else { continue };
        let loads = shared::php::loads(body);
        let missing = |kind: &str,
                       names: &std::collections::BTreeSet<String>,
                       have: &std::collections::BTreeSet<String>| {
            names
                .iter()
                .filter(|n| !have.contains(*n))
                .map(|n| Rejection {
                    key: o.key.clone(),
                    problem: Refusal::NotBundled {
                        kind: kind.to_string(),
                        name: n.clone(),
                    },
                })
                .collect::<Vec<_>>()
        };
        out.extend(missing("extension", &loads.extensions, &bundled.extensions));
        out.extend(missing("skin", &loads.skins, &bundled.skins));
    }
    out
}

/// `a/./b/../c` → `a/c`; `None` when it climbs above the prefix.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// What differs from `from` to `to`: each changed key with its new version (`None`: removed).
pub fn diff(from: Option<&Release>, to: &Release) -> Vec<Rolled> {
    let empty = BTreeMap::new();
    let old = from.map_or(&empty, |r| &r.objects);
    let mut out: Vec<Rolled> = to
        .objects
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| Rolled {
            key: k.clone(),
            version_id: Some(v.clone()),
        })
        .collect();
    out.extend(
        old.keys()
            .filter(|k| !to.objects.contains_key(*k))
            .map(|k| Rolled {
                key: k.clone(),
                version_id: None,
            }),
    );
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Decides what to do for one service, given its changed objects and what was observed.
pub fn plan_target(
    target: &Target,
    events: &[ObjectEvent],
    observed: &Observed,
    settings: &Settings,
) -> TargetPlan {
    let pointer = observed.pointer.as_ref();
    let released = pointer.filter(|_| !observed.pointer_deleted);
    if let Some(plan) = plan_from_pointer(events, &observed.service, released) {
        return plan;
    }
    // Everything a task would boot must be valid, not only the changed files.
    let owned: Vec<&ObjectInfo> = observed
        .objects
        .iter()
        .filter(|o| owned_by(&o.key, target, settings))
        .collect();
    let empty = BTreeMap::new();
    let withdrawn = pointer.map_or(&empty, |p| &p.withdrawn);
    let mut rejections = rejections(&owned, withdrawn, settings.max_config_bytes);
    if rejections.is_empty() {
        rejections = missing_includes(&owned, settings.home_of(target));
        if let Some(bundled) = &observed.bundled {
            rejections.extend(not_bundled(&owned, bundled));
            rejections.sort_by(|a, b| a.key.cmp(&b.key));
        }
    }
    if !rejections.is_empty() {
        return TargetPlan::Rejected { rejections };
    }
    let objects: BTreeMap<String, String> = owned
        .iter()
        .map(|o| (o.key.clone(), o.version_id.clone()))
        .collect();

    // The current release is already this one (a retry after the pointer was written).
    if let Some(p) = pointer.filter(|p| p.release.objects == objects) {
        if let Some(primary) = observed.service.primary().filter(|_| {
            !observed.pointer_deleted
                && primary_boots(&observed.service, p, observed.primary_ledger.as_ref())
        }) {
            return TargetPlan::Covered {
                deployment_id: primary.id.clone(),
                coverage: Coverage::SameObjects,
            };
        }
        return TargetPlan::Release {
            release: p.release.clone(),
            previous: p.previous.clone(),
            changes: diff(p.previous.as_ref(), &p.release),
        };
    }
    let release = Release {
        created_at: observed.now,
        objects,
    };
    // What tasks booted until now is where a rollback goes.
    let previous = pointer.map(|p| p.release.clone());
    TargetPlan::Release {
        changes: diff(previous.as_ref(), &release),
        release,
        previous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use crate::ledger::Kind;
    use chrono::Duration;
    use proptest::prelude::*;
    use shared::Env;
    use shared::ecs::Deployment;
    use std::collections::BTreeSet;

    fn settings() -> Settings {
        Settings::from_env(&Env::from_pairs([
            ("CONFIG_BUCKET", "cfg"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
            (
                "CONFIG_ROUTES",
                r#"[{"prefix":"de/","cluster":"wiki","service":"de"},{"prefix":"de/shared/","cluster":"wiki","service":"web"}]"#,
            ),
            ("MAX_CONFIG_BYTES", "100"),
        ]))
        .unwrap()
    }

    fn web() -> Target {
        Target {
            cluster: "wiki".into(),
            service: "web".into(),
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn ev(key: &str, ms: Option<i64>) -> ObjectEvent {
        ObjectEvent {
            bucket: "cfg".into(),
            key: key.into(),
            change: Change::Created,
            version_id: None,
            sequencer: None,
            time: ms.map(|ms| EventTime {
                at: t(ms),
                resolution: Duration::milliseconds(1),
            }),
        }
    }

    fn put(key: &str, version: &str) -> ObjectEvent {
        let mut e = ev(key, Some(10));
        e.version_id = Some(version.into());
        e
    }

    fn state(primary_ms: i64, rollout: &str) -> ServiceState {
        ServiceState {
            cluster: "wiki".into(),
            service: "web".into(),
            status: "ACTIVE".into(),
            deployments: vec![Deployment {
                id: "ecs-svc/1".into(),
                status: "PRIMARY".into(),
                created_at: Some(t(primary_ms)),
                task_definition: None,
                rollout_state: Some(rollout.into()),
            }],
        }
    }

    fn obj(key: &str, version: &str, body: &[u8]) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            version_id: version.into(),
            size: body.len() as u64,
            body: Some(body.to_vec()),
        }
    }

    fn release(ms: i64, objects: &[(&str, &str)]) -> Release {
        Release {
            created_at: t(ms),
            objects: objects
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn pointer(r: Release, previous: Option<Release>) -> Pointer {
        Pointer {
            release: r,
            previous,
            withdrawn: BTreeMap::new(),
            rollback_of: None,
        }
    }

    fn observed(primary_ms: i64, pointer: Option<Pointer>, objects: Vec<ObjectInfo>) -> Observed {
        Observed {
            service: state(primary_ms, "COMPLETED"),
            pointer,
            pointer_deleted: false,
            primary_ledger: None,
            objects,
            now: t(50_000),
            bundled: None,
        }
    }

    fn ledger(release: Release, previous: Option<Release>) -> Ledger {
        Ledger {
            kind: Kind::Config,
            cluster: "wiki".into(),
            service: "web".into(),
            deployment_id: "ecs-svc/1".into(),
            started_at: t(0),
            changes: vec![],
            release,
            previous,
            rollback_of: None,
            rolled_back_by: None,
        }
    }

    const PHP: &[u8] = b"<?php\n$x = 1;\n";

    #[test]
    fn routing_skips_with_reasons_and_groups_by_service() {
        let s = settings();
        let mut other = ev("LocalSettings.php", Some(1));
        other.bucket = "elsewhere".into();
        let mut tag = ev("x.php", Some(1));
        tag.change = Change::Other("ObjectTagging:Put".into());
        let events = vec![
            ev("LocalSettings.php", Some(1)),
            ev("LocalSettings.php", Some(3)),
            ev("LocalSettings.php", Some(2)),
            ev("de/LocalSettings.php", Some(1)),
            ev("de/shared/skin.css", Some(1)),
            ev("images/", Some(1)),
            ev(".wikiops/deployments/wiki/web/ecs-svc/1.json", Some(1)),
            ev("de/.wikiops/deployments/wiki/de/ecs-svc/1.json", Some(1)),
            other,
            tag,
        ];
        let r = route(&events, &s);
        let reasons: Vec<_> = r.skipped.iter().map(|k| k.reason.as_str()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0].contains("folder marker"));
        assert!(reasons[1].contains("own records"));
        assert!(reasons[2].contains("own records"));
        assert!(reasons[3].contains("CONFIG_BUCKET"));
        assert!(reasons[4].contains("ObjectTagging:Put"));
        assert_eq!(r.work.len(), 2);
        let web_keys: Vec<_> = r.work[&web()].iter().map(|e| e.key.as_str()).collect();
        assert_eq!(web_keys, vec!["LocalSettings.php", "de/shared/skin.css"]);
        // The latest duplicate is kept.
        assert_eq!(r.work[&web()][0].time.unwrap().at, t(3));

        let only = Settings::from_env(&Env::from_pairs([
            ("CONFIG_BUCKET", "cfg"),
            ("CONFIG_PREFIX", "wiki/"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
        ]))
        .unwrap();
        let r = route(&[ev("other/LocalSettings.php", Some(1))], &only);
        assert_eq!(r.skipped[0].reason, "outside every configured prefix");
        assert!(r.work.is_empty());
    }

    /// A `.php` file PHP cannot parse blocks the release, named with its line and message.
    #[test]
    fn a_php_syntax_error_is_refused_with_its_line() {
        let o = observed(
            1_000,
            None,
            vec![
                obj(
                    "LocalSettings.php",
                    "v2",
                    b"<?php\n$wgSitename = 'Wiki';\n$a = [1, 2;\n",
                ),
                obj("logo.png", "l1", b"png"),
            ],
        );
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v2")], &o, &settings());
        let TargetPlan::Rejected { rejections } = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(rejections.len(), 1);
        assert_eq!(rejections[0].key, "LocalSettings.php");
        let Refusal::Invalid(Problem::PhpSyntax { line, message }) = &rejections[0].problem else {
            panic!("{rejections:?}")
        };
        assert_eq!(*line, 3);
        assert!(
            rejections[0].problem.to_string().contains("line 3"),
            "{message}"
        );
    }

    /// An include of a configuration file that is not in the release blocks it; one that is,
    /// beside the including file or at the prefix, and the image's own files, do not.
    #[test]
    fn an_include_missing_from_the_release_is_refused() {
        let s = Settings::from_env(&Env::from_pairs([
            ("CONFIG_BUCKET", "cfg"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
        ]))
        .unwrap();
        let ls = b"<?php\nrequire_once __DIR__ . '/extra/Branding.php';\ninclude 'Private.php';\nrequire_once \"$IP/extensions/Foo/Foo.php\";\nrequire_once '/etc/wiki/x.php';\nrequire_once 'extensions/Cite/Cite.php';\n";
        let objects = vec![
            obj("LocalSettings.php", "v1", ls),
            obj(
                "extra/Branding.php",
                "b1",
                b"<?php\ninclude __DIR__ . '/../Private.php';\n",
            ),
            obj("Private.php", "p1", PHP),
        ];
        let o = observed(1_000, None, objects.clone());
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v1")], &o, &s);
        assert!(matches!(plan, TargetPlan::Release { .. }), "{plan:?}");
        // Without Private.php, both includes of it are refused, naming the file and the path.
        let o = observed(1_000, None, objects[..2].to_vec());
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v1")], &o, &s);
        let TargetPlan::Rejected { rejections } = &plan else {
            panic!("{plan:?}")
        };
        let got: Vec<(String, String)> = rejections
            .iter()
            .map(|r| (r.key.clone(), r.problem.to_string()))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].0 == "LocalSettings.php" && got[0].1.contains("Private.php"),
            "{got:?}"
        );
        assert!(
            got[1].0 == "extra/Branding.php" && got[1].1.contains("../Private.php"),
            "{got:?}"
        );
    }

    /// `wfLoadExtension`/`wfLoadSkin` of something the image does not bundle blocks the
    /// release, once the image published its list; before, nothing is checked.
    #[test]
    fn an_extension_the_image_does_not_bundle_is_refused() {
        let s = settings();
        let ls = b"<?php\nwfLoadExtension( 'Cite' );\nwfLoadSkin( 'Foo' );\n";
        let mut o = observed(1_000, None, vec![obj("LocalSettings.php", "v1", ls)]);
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v1")], &o, &s);
        assert!(
            matches!(plan, TargetPlan::Release { .. }),
            "no list yet: {plan:?}"
        );
        o.bundled = Some(Bundled {
            extensions: ["Cite".to_string()].into(),
            skins: ["Vector".to_string()].into(),
        });
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v1")], &o, &s);
        let TargetPlan::Rejected { rejections } = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(rejections.len(), 1, "{rejections:?}");
        assert_eq!(
            rejections[0].problem,
            Refusal::NotBundled {
                kind: "skin".into(),
                name: "Foo".into()
            }
        );
    }

    /// A deleted pointer (`aws s3 sync --delete`): its last version still decides what is
    /// withdrawn and where a rollback goes, and a release is required even when the objects and
    /// the PRIMARY match it (nothing is "already rolling out" until the pointer is written again).
    #[test]
    fn a_deleted_pointer_requires_a_release_and_keeps_its_withdrawn_states() {
        let s = settings();
        let r1 = release(0, &[("LocalSettings.php", "v1")]);
        let mut o = observed(
            1_000,
            Some(pointer(r1.clone(), None)),
            vec![obj("LocalSettings.php", "v1", PHP)],
        );
        o.pointer_deleted = true;
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v1")], &o, &s);
        let TargetPlan::Release { release: r, .. } = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(r.objects, r1.objects);
        // Its withdrawn states still hold.
        let mut p = pointer(r1.clone(), None);
        p.withdrawn = [("LocalSettings.php".to_string(), Some("bad".to_string()))].into();
        let mut o = observed(1_000, Some(p), vec![obj("LocalSettings.php", "bad", PHP)]);
        o.pointer_deleted = true;
        let plan = plan_target(&web(), &[put("skin.css", "c1")], &o, &s);
        assert!(
            matches!(&plan, TargetPlan::Rejected { rejections } if matches!(rejections[0].problem, Refusal::Withdrawn { .. })),
            "{plan:?}"
        );
    }

    /// The shared table of key cases: what is routed and released, skipped, or refused.
    #[test]
    fn keys_follow_the_shared_table() {
        use shared::config_rules::{KEY_CASES, KeyClass};
        let s = Settings::from_env(&Env::from_pairs([
            ("CONFIG_BUCKET", "cfg"),
            ("CONFIG_PREFIX", "config/"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
        ]))
        .unwrap();
        for c in KEY_CASES {
            let routed = route(&[put(c.key, "v1")], &s);
            let is_work = routed.work.get(&web()).is_some_and(|w| w.len() == 1);
            let wanted = matches!(c.class, KeyClass::Config | KeyClass::Unsafe);
            assert_eq!(is_work, wanted, "routing of {:?} ({:?})", c.key, c.class);
            assert_eq!(owned_by(c.key, &web(), &s), wanted, "owned_by {:?}", c.key);
            if !wanted {
                continue;
            }
            let o = observed(
                1_000,
                None,
                vec![
                    obj("config/LocalSettings.php", "l1", PHP),
                    obj(c.key, "v1", PHP),
                ],
            );
            let plan = plan_target(&web(), &[put(c.key, "v1")], &o, &s);
            match (c.class, &plan) {
                (KeyClass::Config, TargetPlan::Release { release, .. }) => {
                    assert_eq!(release.objects.get(c.key).map(String::as_str), Some("v1"))
                }
                (KeyClass::Unsafe, TargetPlan::Rejected { rejections }) => assert_eq!(
                    rejections[0],
                    Rejection {
                        key: c.key.to_string(),
                        problem: Refusal::Invalid(Problem::UnsafeKey)
                    }
                ),
                _ => panic!("{:?} ({:?}): {plan:?}", c.key, c.class),
            }
        }
    }

    #[test]
    fn a_new_change_becomes_a_release_of_every_object() {
        let s = settings();
        let current = release(0, &[("LocalSettings.php", "v1"), ("logo.png", "l1")]);
        let o = observed(
            1_000,
            Some(pointer(current.clone(), None)),
            vec![
                obj("LocalSettings.php", "v2", PHP),
                obj("logo.png", "l1", b"png"),
                obj("de/LocalSettings.php", "x", b""), // another service's: not checked
            ],
        );
        let plan = plan_target(&web(), &[put("LocalSettings.php", "v2")], &o, &s);
        let TargetPlan::Release {
            release: r,
            previous,
            changes,
        } = plan
        else {
            panic!("{plan:?}")
        };
        assert_eq!(
            r,
            release(50_000, &[("LocalSettings.php", "v2"), ("logo.png", "l1")])
        );
        assert_eq!(previous, Some(current));
        assert_eq!(
            changes,
            vec![Rolled {
                key: "LocalSettings.php".into(),
                version_id: Some("v2".into())
            }]
        );
    }

    #[test]
    fn a_fresh_stack_gets_its_first_release() {
        let plan = plan_target(
            &web(),
            &[put("LocalSettings.php", "v1")],
            &observed(0, None, vec![obj("LocalSettings.php", "v1", PHP)]),
            &settings(),
        );
        assert!(
            matches!(&plan, TargetPlan::Release { previous: None, changes, .. } if changes.len() == 1),
            "{plan:?}"
        );
    }

    #[test]
    fn duplicates_are_settled_by_the_pointer() {
        let p = pointer(release(1_000, &[("LocalSettings.php", "v2")]), None);
        // The PRIMARY started after the release was made: covered, whatever the event time.
        let covered = plan_from_pointer(
            &[put("LocalSettings.php", "v2")],
            &state(1_001, "IN_PROGRESS"),
            Some(&p),
        );
        assert_eq!(
            covered,
            Some(TargetPlan::Covered {
                deployment_id: "ecs-svc/1".into(),
                coverage: Coverage::Released
            })
        );
        // A PRIMARY older than the release does not boot it.
        assert_eq!(
            plan_from_pointer(
                &[put("LocalSettings.php", "v2")],
                &state(1_000, "COMPLETED"),
                Some(&p)
            ),
            None
        );
        // Another version, no version, no pointer: look further.
        assert_eq!(
            plan_from_pointer(
                &[put("LocalSettings.php", "v3")],
                &state(9_000, "COMPLETED"),
                Some(&p)
            ),
            None
        );
        assert_eq!(
            plan_from_pointer(
                &[ev("LocalSettings.php", Some(1))],
                &state(9_000, "COMPLETED"),
                Some(&p)
            ),
            None
        );
        assert_eq!(
            plan_from_pointer(
                &[put("LocalSettings.php", "v2")],
                &state(9_000, "COMPLETED"),
                None
            ),
            None
        );
        // A removal is carried when the release lacks the key.
        let mut gone = ev("old.php", Some(1));
        gone.change = Change::Removed;
        assert!(plan_from_pointer(&[gone], &state(9_000, "COMPLETED"), Some(&p)).is_some());
    }

    #[test]
    fn the_same_objects_as_the_current_release_are_covered_or_redeployed_as_is() {
        let s = settings();
        let current = release(1_000, &[("LocalSettings.php", "v2")]);
        let objects = vec![obj("LocalSettings.php", "v2", PHP)];
        // An event without a version, the PRIMARY boots the release: covered.
        let o = observed(2_000, Some(pointer(current.clone(), None)), objects.clone());
        assert_eq!(
            plan_target(&web(), &[ev("LocalSettings.php", None)], &o, &s),
            TargetPlan::Covered {
                deployment_id: "ecs-svc/1".into(),
                coverage: Coverage::SameObjects
            }
        );
        // The PRIMARY's ledger holds the release (its clock ran behind): covered too.
        let prev = release(0, &[("LocalSettings.php", "v1")]);
        let mut o = observed(
            500,
            Some(pointer(current.clone(), Some(prev.clone()))),
            objects,
        );
        o.primary_ledger = Some(ledger(current.clone(), Some(prev.clone())));
        assert!(matches!(
            plan_target(&web(), &[ev("LocalSettings.php", None)], &o, &s),
            TargetPlan::Covered {
                coverage: Coverage::SameObjects,
                ..
            }
        ));
        // The pointer was written but the deployment never started (a retry): the same release again.
        o.primary_ledger = None;
        let plan = plan_target(&web(), &[ev("LocalSettings.php", None)], &o, &s);
        assert_eq!(
            plan,
            TargetPlan::Release {
                release: current,
                previous: Some(prev),
                changes: vec![Rolled {
                    key: "LocalSettings.php".into(),
                    version_id: Some("v2".into())
                }]
            }
        );
    }

    #[test]
    fn any_invalid_or_withdrawn_object_blocks_the_release() {
        let s = settings();
        let mut p = pointer(release(0, &[("LocalSettings.php", "v1")]), None);
        p.withdrawn = [
            ("Bad.php".to_string(), Some("b2".to_string())),
            ("Gone.php".to_string(), None),
        ]
        .into();
        let o = observed(
            1_000,
            Some(p),
            vec![
                obj("LocalSettings.php", "v1", PHP),
                obj("Empty.php", "e1", b""),
                obj("Bom.php", "o1", b"\xEF\xBB\xBF<?php"),
                obj("Bad.php", "b2", PHP),
                obj("Big.txt", "g1", &[b'x'; 101]),
                obj("ok.txt", "k1", b"fine"),
            ],
        );
        let TargetPlan::Rejected { rejections } =
            plan_target(&web(), &[put("ok.txt", "k1")], &o, &s)
        else {
            panic!()
        };
        let got: Vec<_> = rejections
            .iter()
            .map(|r| (r.key.as_str(), r.problem.to_string()))
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0].0, "Bad.php");
        assert!(got[0].1.contains("b2 was rolled back"));
        assert_eq!(
            got[1],
            (
                "Big.txt",
                "the object is 101 bytes, more than MAX_CONFIG_BYTES (100)".into()
            )
        );
        assert_eq!(got[2].0, "Bom.php");
        assert_eq!(got[3], ("Empty.php", "the object is empty".into()));
        assert_eq!(got[4].0, "Gone.php");
        // A fixed version is no longer withdrawn.
        let mut p = pointer(release(0, &[]), None);
        p.withdrawn = [("Bad.php".to_string(), Some("b2".to_string()))].into();
        let o = observed(1_000, Some(p), vec![obj("Bad.php", "b3", PHP)]);
        assert!(matches!(
            plan_target(&web(), &[put("Bad.php", "b3")], &o, &s),
            TargetPlan::Release { .. }
        ));
    }

    #[test]
    fn inactive_service_is_unavailable() {
        let mut o = observed(0, None, vec![]);
        o.service.status = "DRAINING".into();
        assert_eq!(
            plan_target(&web(), &[put("a", "1")], &o, &settings()),
            TargetPlan::Unavailable {
                status: "DRAINING".into()
            }
        );
    }

    proptest! {
        /// Every object event is accounted for: skipped with a reason, or in its route's work.
        #[test]
        fn every_event_is_skipped_or_routed(
            keys in proptest::collection::vec("(de/|de/shared/|\\.wikiops/|x/)?[a-c]{0,2}/?", 0..12),
            foreign in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let s = settings();
            let events: Vec<ObjectEvent> = keys.iter().zip(&foreign).map(|(k, f)| {
                let mut e = ev(k, Some(1));
                if *f { e.bucket = "other".into(); }
                e
            }).collect();
            let r = route(&events, &s);
            for e in &events {
                let skipped = r.skipped.iter().any(|k| k.key.as_deref() == Some(e.key.as_str()));
                let routed = s.route_for(&e.key).is_some_and(|rt| {
                    r.work.get(&rt.target).is_some_and(|w| w.iter().any(|x| x.key == e.key))
                });
                prop_assert!(skipped || routed, "{e:?} lost");
                if e.bucket != "cfg"
                    || matches!(validate::classify(&e.key), KeyClass::Reserved | KeyClass::FolderMarker)
                {
                    prop_assert!(skipped);
                }
            }
            // Each key at most once per service.
            for w in r.work.values() {
                let keys: BTreeSet<&str> = w.iter().map(|e| e.key.as_str()).collect();
                prop_assert_eq!(keys.len(), w.len());
            }
        }

        /// A release only ever holds valid, non-withdrawn objects at their observed versions,
        /// and a change is covered only when the current release holds it and the PRIMARY boots it.
        #[test]
        fn releases_hold_only_valid_observed_versions(
            objs in proptest::collection::vec(("[a-c]\\.(php|txt)", 0u8..3, 0usize..3), 0..6),
            withdrawn in proptest::collection::vec(("[a-c]\\.(php|txt)", 0u8..3), 0..2),
            current in proptest::collection::vec(("[a-c]\\.(php|txt)", 0u8..3), 0..4),
            changed in 0usize..6,
            primary_ms in 0i64..2_000,
        ) {
            let bodies: [&[u8]; 3] = [b"", b"plain text", PHP];
            let mut seen = BTreeSet::new();
            let objects: Vec<ObjectInfo> = objs.iter()
                .filter(|(k, _, _)| seen.insert(k.clone()))
                .map(|(k, v, b)| obj(k, &format!("v{v}"), bodies[*b]))
                .collect();
            let mut p = pointer(Release {
                created_at: t(1_000),
                objects: current.iter().map(|(k, v)| (k.clone(), format!("v{v}"))).collect(),
            }, None);
            p.withdrawn = withdrawn.iter().map(|(k, v)| (k.clone(), Some(format!("v{v}")))).collect();
            let events: Vec<ObjectEvent> = objects.get(changed).map(|o| put(&o.key, &o.version_id)).into_iter().collect();
            let o = observed(primary_ms, Some(p.clone()), objects.clone());
            match plan_target(&web(), &events, &o, &settings()) {
                TargetPlan::Release { release, .. } => {
                    prop_assert_eq!(release.objects.len(), objects.len());
                    for ob in &objects {
                        prop_assert_eq!(release.objects.get(&ob.key), Some(&ob.version_id));
                        prop_assert!(problem(ob, 100).is_none());
                        prop_assert!(p.withdrawn.get(&ob.key) != Some(&Some(ob.version_id.clone())));
                    }
                }
                TargetPlan::Covered { .. } => {
                    prop_assert!(primary_ms > 1_000);
                    for e in &events {
                        prop_assert_eq!(p.release.objects.get(&e.key), e.version_id.as_ref());
                    }
                }
                _ => {}
            }
        }
    }
}
