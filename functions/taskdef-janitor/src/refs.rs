//! References to task definitions, as services, tasks, rules and schedules spell them.
//!
//! ECS accepts a full ARN (`arn:aws:ecs:us-east-1:123456789012:task-definition/wiki:7`),
//! `family:revision`, or a bare family (or a family ARN without revision), which means
//! "the latest ACTIVE revision" when a task is started.

use std::fmt;

use serde::Serialize;

/// One revision of one family.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RevisionId {
    pub family: String,
    pub revision: u32,
}

impl RevisionId {
    /// `family:revision`.
    pub fn new(family: impl Into<String>, revision: u32) -> Self {
        RevisionId {
            family: family.into(),
            revision,
        }
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.family, self.revision)
    }
}

/// A parsed reference: a family and, when pinned, a revision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TdRef {
    pub family: String,
    /// `None`: the latest ACTIVE revision of the family.
    pub revision: Option<u32>,
}

/// Parses an ARN, `family:revision` or `family`. `None` when it is not a task-definition
/// reference at all (empty, a revision that is not a number, an ARN of another resource).
pub fn parse(reference: &str) -> Option<TdRef> {
    let r = reference.trim();
    let name = if r.starts_with("arn:") {
        // arn:partition:ecs:region:account:task-definition/family[:revision]
        let resource = r.splitn(6, ':').nth(5)?;
        resource.strip_prefix("task-definition/")?
    } else {
        r
    };
    let (family, revision) = match name.split_once(':') {
        Some((f, rev)) => (f, Some(rev.parse::<u32>().ok()?)),
        None => (name, None),
    };
    let valid = !family.is_empty()
        && family.len() <= 255
        && family
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| TdRef {
        family: family.to_string(),
        revision,
    })
}

/// The family and revision of a full task-definition ARN (or `family:revision`).
pub fn revision_of(arn: &str) -> Option<RevisionId> {
    let r = parse(arn)?;
    Some(RevisionId::new(r.family, r.revision?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let pinned = Some(TdRef {
            family: "wiki-web".into(),
            revision: Some(12),
        });
        assert_eq!(
            parse("arn:aws:ecs:us-east-1:123456789012:task-definition/wiki-web:12"),
            pinned
        );
        assert_eq!(parse("wiki-web:12"), pinned);
        assert_eq!(parse(" wiki-web:12 "), pinned);
        let latest = Some(TdRef {
            family: "wiki_web".into(),
            revision: None,
        });
        assert_eq!(parse("wiki_web"), latest);
        assert_eq!(
            parse("arn:aws-cn:ecs:cn-north-1:123456789012:task-definition/wiki_web"),
            latest
        );
    }

    #[test]
    fn rejects_what_is_not_a_task_definition() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("wiki:latest"), None);
        assert_eq!(parse("wiki:-1"), None);
        assert_eq!(parse("arn:aws:ecs:us-east-1:1:cluster/wiki"), None);
        assert_eq!(parse("arn:aws:ecs:us-east-1:1:task-definition/"), None);
        assert_eq!(parse("has space:1"), None);
        assert_eq!(parse("arn:aws:ecs"), None);
        assert_eq!(revision_of("wiki"), None);
        assert_eq!(revision_of("wiki:3"), Some(RevisionId::new("wiki", 3)));
    }

    #[test]
    fn displays_as_family_colon_revision() {
        assert_eq!(RevisionId::new("wiki", 3).to_string(), "wiki:3");
        assert!(RevisionId::new("wiki", 3) < RevisionId::new("wiki", 10));
    }
}
