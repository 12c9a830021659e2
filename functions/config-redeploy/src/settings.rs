//! Settings, read per invocation from the environment, and routing of keys to services.

use serde::{Deserialize, Serialize};
use shared::{Env, SettingsError};

use crate::ledger::{RESERVED_PREFIX, is_reserved};

pub use shared::config_rules::DEFAULT_MAX_CONFIG_BYTES;

/// The ECS service a configuration set belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Target {
    /// Cluster name (an ARN in the settings is reduced to its name).
    pub cluster: String,
    /// Service name (an ARN in the settings is reduced to its name).
    pub service: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.cluster, self.service)
    }
}

/// Keys starting with `prefix` configure `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub prefix: String,
    pub target: Target,
}

/// What one invocation runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CONFIG_BUCKET`: events from other buckets are ignored.
    pub bucket: String,
    /// `CONFIG_PREFIX` → `ECS_CLUSTER`/`ECS_SERVICE`, then each `CONFIG_ROUTES` entry.
    pub routes: Vec<Route>,
    /// `MAX_CONFIG_BYTES`: larger objects are refused.
    pub max_config_bytes: u64,
    /// `DRY_RUN`: observe and plan, change nothing.
    pub dry_run: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSetting {
    #[serde(default)]
    prefix: String,
    cluster: String,
    service: String,
}

/// The name in an ECS ARN (`…:cluster/wiki` → `wiki`, `…:service/wiki/web` → `web`), or the input.
pub fn ecs_name(s: &str) -> &str {
    if s.starts_with("arn:") {
        s.rsplit('/').next().unwrap_or(s)
    } else {
        s
    }
}

impl Settings {
    /// Reads the settings; each error names its variable.
    pub fn from_env(env: &Env) -> Result<Settings, SettingsError> {
        let bucket = env.required("CONFIG_BUCKET")?;
        let prefix = env.optional("CONFIG_PREFIX").unwrap_or_default();
        let configured: Option<Vec<RouteSetting>> = env.json("CONFIG_ROUTES")?;
        let cluster = env.optional("ECS_CLUSTER");
        let service = env.optional("ECS_SERVICE");

        let mut routes = Vec::new();
        // Without CONFIG_ROUTES the single route is required; with it, optional (both or neither).
        let single = configured.is_none() || cluster.is_some() || service.is_some();
        if single {
            routes.push(Route {
                prefix: prefix.clone(),
                target: Target {
                    cluster: ecs_name(&env.required("ECS_CLUSTER")?).to_string(),
                    service: ecs_name(&env.required("ECS_SERVICE")?).to_string(),
                },
            });
        }
        for (i, r) in configured.into_iter().flatten().enumerate() {
            let (cluster, service) = (r.cluster.trim(), r.service.trim());
            if cluster.is_empty() || service.is_empty() {
                return Err(SettingsError::malformed(
                    "CONFIG_ROUTES",
                    format!("entry {i} needs a non-empty cluster and service"),
                ));
            }
            routes.push(Route {
                prefix: r.prefix,
                target: Target {
                    cluster: ecs_name(cluster).to_string(),
                    service: ecs_name(service).to_string(),
                },
            });
        }
        if routes.is_empty() {
            return Err(SettingsError::malformed(
                "CONFIG_ROUTES",
                "the list is empty and ECS_CLUSTER/ECS_SERVICE are unset",
            ));
        }
        for (i, r) in routes.iter().enumerate() {
            let var = if i == 0 && single {
                "CONFIG_PREFIX"
            } else {
                "CONFIG_ROUTES"
            };
            if is_reserved(&format!("{}/", r.prefix)) {
                return Err(SettingsError::malformed(
                    var,
                    format!("a prefix may not lie under the reserved {RESERVED_PREFIX}"),
                ));
            }
            if routes[..i].iter().any(|o| o.prefix == r.prefix) {
                return Err(SettingsError::malformed(
                    "CONFIG_ROUTES",
                    format!("prefix {:?} is routed twice", r.prefix),
                ));
            }
        }

        let max_config_bytes = env.parse_or("MAX_CONFIG_BYTES", DEFAULT_MAX_CONFIG_BYTES)?;
        if max_config_bytes == 0 {
            return Err(SettingsError::malformed(
                "MAX_CONFIG_BYTES",
                "must be greater than zero",
            ));
        }
        Ok(Settings {
            bucket,
            routes,
            max_config_bytes,
            dry_run: env.flag("DRY_RUN", false)?,
        })
    }

    /// The route of `key`: the longest matching prefix.
    pub fn route_for(&self, key: &str) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| key.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
    }

    /// The routed target a deployment event names; `cluster` is `None` for old-format ARNs.
    pub fn target_for_service(&self, cluster: Option<&str>, service: &str) -> Option<&Target> {
        let mut found = self
            .routes
            .iter()
            .map(|r| &r.target)
            .filter(|t| t.service == service && cluster.is_none_or(|c| t.cluster == c));
        let first = found.next()?;
        // An old-format ARN without a cluster must name one target only.
        found.all(|t| t == first).then_some(first)
    }

    /// Where `target`'s ledger lives: its shortest routed prefix (`<prefix>.wikiops/…`).
    pub fn home_of(&self, target: &Target) -> &str {
        self.routes
            .iter()
            .filter(|r| &r.target == target)
            .map(|r| r.prefix.as_str())
            .min_by_key(|p| p.len())
            .unwrap_or("")
    }

    /// The prefixes routed to `target`.
    pub fn prefixes_of(&self, target: &Target) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|r| &r.target == target)
            .map(|r| r.prefix.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CONFIG_BUCKET", "wiki-config"),
            ("ECS_CLUSTER", "wiki"),
            ("ECS_SERVICE", "web"),
        ]
    }

    fn target(c: &str, s: &str) -> Target {
        Target {
            cluster: c.into(),
            service: s.into(),
        }
    }

    #[test]
    fn single_route_with_defaults() {
        let s = Settings::from_env(&env(&base())).unwrap();
        assert_eq!(s.bucket, "wiki-config");
        assert_eq!(
            s.routes,
            vec![Route {
                prefix: String::new(),
                target: target("wiki", "web")
            }]
        );
        assert_eq!(s.max_config_bytes, DEFAULT_MAX_CONFIG_BYTES);
        assert!(!s.dry_run);
        assert_eq!(
            s.route_for("LocalSettings.php").unwrap().target.service,
            "web"
        );
    }

    #[test]
    fn each_missing_variable_is_named() {
        for missing in ["CONFIG_BUCKET", "ECS_CLUSTER", "ECS_SERVICE"] {
            let pairs: Vec<_> = base().into_iter().filter(|(k, _)| *k != missing).collect();
            let err = Settings::from_env(&env(&pairs)).unwrap_err();
            assert_eq!(err, SettingsError::Missing(missing.into()));
        }
        let mut pairs = base();
        pairs.push(("MAX_CONFIG_BYTES", "lots"));
        let err = Settings::from_env(&env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("MAX_CONFIG_BYTES"), "{err}");
        let mut pairs = base();
        pairs.push(("MAX_CONFIG_BYTES", "0"));
        assert!(Settings::from_env(&env(&pairs)).is_err());
        let mut pairs = base();
        pairs.push(("DRY_RUN", "perhaps"));
        let err = Settings::from_env(&env(&pairs)).unwrap_err().to_string();
        assert!(err.contains("DRY_RUN"), "{err}");
    }

    #[test]
    fn routes_from_json_longest_prefix_wins() {
        let s = Settings::from_env(&env(&[
            ("CONFIG_BUCKET", "b"),
            (
                "CONFIG_ROUTES",
                r#"[{"prefix":"wikis/","cluster":"c","service":"all"},
                    {"prefix":"wikis/en/","cluster":"arn:aws:ecs:us-east-1:1:cluster/c","service":"en"},
                    {"prefix":"wikis/en/skins/","cluster":"c","service":"arn:aws:ecs:us-east-1:1:service/c/skins"}]"#,
            ),
        ]))
        .unwrap();
        assert_eq!(s.routes.len(), 3);
        let svc = |k: &str| s.route_for(k).map(|r| r.target.service.as_str());
        assert_eq!(svc("wikis/en/LocalSettings.php"), Some("en"));
        assert_eq!(svc("wikis/en/skins/a.css"), Some("skins"));
        assert_eq!(svc("wikis/de/LocalSettings.php"), Some("all"));
        assert_eq!(svc("other/LocalSettings.php"), None);
        assert_eq!(s.routes[1].target.cluster, "c");
        assert_eq!(
            s.target_for_service(Some("c"), "en"),
            Some(&target("c", "en"))
        );
        assert_eq!(s.target_for_service(None, "en"), Some(&target("c", "en")));
        assert_eq!(s.target_for_service(Some("other"), "en"), None);
    }

    #[test]
    fn routes_plus_single_route_and_shared_services() {
        let mut pairs = base();
        pairs.push(("CONFIG_PREFIX", "main/"));
        pairs.push((
            "CONFIG_ROUTES",
            r#"[{"prefix":"shared/","cluster":"wiki","service":"web"},{"prefix":"b/","cluster":"x","service":"web"}]"#,
        ));
        let s = Settings::from_env(&env(&pairs)).unwrap();
        assert_eq!(
            s.prefixes_of(&target("wiki", "web")),
            vec!["main/", "shared/"]
        );
        assert_eq!(s.home_of(&target("wiki", "web")), "main/");
        assert_eq!(s.home_of(&target("x", "web")), "b/");
        // Two clusters run a service named web: an ARN without cluster is ambiguous.
        assert_eq!(s.target_for_service(None, "web"), None);
        assert_eq!(s.route_for("x"), None);
    }

    proptest::proptest! {
        /// The chosen route's prefix starts the key, and no matching prefix is longer.
        #[test]
        fn the_longest_matching_prefix_wins(
            prefixes in proptest::collection::btree_set("[ab/]{0,4}", 1..6),
            key in "[ab/]{0,6}",
        ) {
            let routes: Vec<serde_json::Value> = prefixes
                .iter()
                .enumerate()
                .map(|(i, p)| serde_json::json!({"prefix": p, "cluster": "c", "service": format!("s{i}")}))
                .collect();
            let routes = serde_json::to_string(&routes).unwrap();
            let s = Settings::from_env(&env(&[("CONFIG_BUCKET", "b"), ("CONFIG_ROUTES", &routes)])).unwrap();
            let longest = prefixes.iter().filter(|p| key.starts_with(p.as_str())).max_by_key(|p| p.len());
            proptest::prop_assert_eq!(s.route_for(&key).map(|r| &r.prefix), longest);
        }
    }

    #[test]
    fn bad_routes_name_the_variable() {
        for routes in [
            "not json",
            r#"[{"prefix":"a/","cluster":"","service":"s"}]"#,
            r#"[{"prefix":"a/","cluster":"c"}]"#,
            r#"[{"prefix":"a/","cluster":"c","service":"s"},{"prefix":"a/","cluster":"c","service":"t"}]"#,
            r#"[{"prefix":".wikiops/x","cluster":"c","service":"s"}]"#,
            r#"[]"#,
        ] {
            let err =
                Settings::from_env(&env(&[("CONFIG_BUCKET", "b"), ("CONFIG_ROUTES", routes)]))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("CONFIG_ROUTES"), "{routes}: {err}");
        }
        // Only one of ECS_CLUSTER/ECS_SERVICE next to routes: the other is missing.
        let err = Settings::from_env(&env(&[
            ("CONFIG_BUCKET", "b"),
            ("ECS_CLUSTER", "c"),
            (
                "CONFIG_ROUTES",
                r#"[{"prefix":"a/","cluster":"c","service":"s"}]"#,
            ),
        ]))
        .unwrap_err();
        assert_eq!(err, SettingsError::Missing("ECS_SERVICE".into()));
        let err = Settings::from_env(&env(&[
            ("CONFIG_BUCKET", "b"),
            ("ECS_CLUSTER", "c"),
            ("ECS_SERVICE", "s"),
            ("CONFIG_PREFIX", ".wikiops/"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("CONFIG_PREFIX"), "{err}");
    }
}
