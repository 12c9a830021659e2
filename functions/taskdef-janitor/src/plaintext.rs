//! Finds credentials stored in plaintext in container `environment` variables.
//!
//! Only the variable's *name* and the kind of evidence leave this module: values are read,
//! classified and dropped. Rules, in order:
//!
//! 1. a private key block (`-----BEGIN … PRIVATE KEY-----`);
//! 2. an AWS access key id (`AKIA…`/`ASIA…`, 20 characters) anywhere in the value;
//! 3. a URL with a password (`scheme://user:password@host`);
//! 4. a credential-like name (`*PASSWORD*`, `*PASSWD*`, `*SECRET*`, `*TOKEN*`, `*CREDENTIAL*`,
//!    `PWD`, `PASS`, `*_KEY`) whose value is not a reference or a flag (an ARN, a path,
//!    `{{resolve:…}}`, a number, `true`…) and whose name does not end in a word that
//!    marks a reference (`_ARN`, `_FILE`, `_PATH`, `_NAME`, `_ID`, `_URL`, `_TTL`, …);
//! 5. a high-entropy value: 20+ characters of the base64/hex alphabets with at least
//!    4 bits of entropy per character and three character classes, or 32+ hex digits
//!    (40 hex digits, a git commit, UUIDs and words joined by separators are not counted).

use serde::Serialize;

/// Why a variable looks like a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    PrivateKey,
    AwsAccessKeyId,
    UrlWithPassword,
    CredentialName,
    HighEntropy,
}

/// One variable that holds a plaintext credential: where and why, never the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub container: String,
    pub variable: String,
    pub kind: Kind,
}

/// Scans one container's environment (`name`, `value` pairs).
pub fn scan<'a>(
    container: &str,
    environment: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<Finding> {
    environment
        .into_iter()
        .filter_map(|(name, value)| {
            classify(name, value).map(|kind| Finding {
                container: container.to_string(),
                variable: name.to_string(),
                kind,
            })
        })
        .collect()
}

/// Classifies one variable; `None` when it does not look like a credential.
pub fn classify(name: &str, value: &str) -> Option<Kind> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY") {
        return Some(Kind::PrivateKey);
    }
    if has_access_key_id(value) {
        return Some(Kind::AwsAccessKeyId);
    }
    if url_has_password(value) {
        return Some(Kind::UrlWithPassword);
    }
    if credential_name(name) && !reference_or_flag(value) {
        return Some(Kind::CredentialName);
    }
    if high_entropy(value) {
        return Some(Kind::HighEntropy);
    }
    None
}

const NAME_WORDS: [&str; 5] = ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL"];
const NAME_EXACT_WORDS: [&str; 3] = ["PWD", "PASS", "PASSPHRASE"];
const REFERENCE_SUFFIXES: [&str; 26] = [
    "ARN",
    "FILE",
    "PATH",
    "NAME",
    "ID",
    "URL",
    "URI",
    "ENDPOINT",
    "HOST",
    "PORT",
    "TTL",
    "TIMEOUT",
    "LENGTH",
    "SIZE",
    "EXPIRY",
    "EXPIRES",
    "ENABLED",
    "DISABLED",
    "TYPE",
    "REGION",
    "VERSION",
    "HEADER",
    "FIELD",
    "PREFIX",
    "SUFFIX",
    "ALGORITHM",
];

/// A name that announces a credential (see the module rules).
pub fn credential_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let Some(last) = words.last() else {
        return false;
    };
    if REFERENCE_SUFFIXES.contains(last) {
        return false;
    }
    words
        .iter()
        .any(|w| NAME_WORDS.iter().any(|k| w.contains(k)) || NAME_EXACT_WORDS.contains(w))
        || (*last == "KEY" && words.len() > 1)
        || last.ends_with("APIKEY")
}

/// Values that are not secrets even under a credential-like name.
fn reference_or_flag(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    const FLAGS: [&str; 12] = [
        "true", "false", "yes", "no", "on", "off", "none", "null", "enabled", "disabled", "auto",
        "required",
    ];
    FLAGS.contains(&lower.as_str())
        || value.chars().all(|c| c.is_ascii_digit())
        || lower.starts_with("arn:")
        || lower.starts_with("{{resolve:")
        || lower.starts_with("${")
        || lower.starts_with("$(")
        || value.starts_with('/')
}

/// `AKIA` or `ASIA` followed by 16 upper-case letters or digits, as a whole word.
fn has_access_key_id(value: &str) -> bool {
    let b = value.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric();
    (0..b.len().saturating_sub(19)).any(|i| {
        let prefix = &b[i..i + 4];
        (prefix == b"AKIA" || prefix == b"ASIA")
            && b[i + 4..i + 20]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            && (i == 0 || !word(b[i - 1]))
            && b.get(i + 20).is_none_or(|c| !word(*c))
    })
}

/// `scheme://user:password@…` with a non-empty password.
fn url_has_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _host)) = authority.rsplit_once('@') else {
        return false;
    };
    userinfo
        .split_once(':')
        .is_some_and(|(_, password)| !password.is_empty())
}

/// Shannon entropy of the characters of `s`, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Words and numbers joined by separators (`wiki-config-123456789012`): a name, not a key.
fn is_slug(s: &str) -> bool {
    s.split(['-', '_', '/', '='])
        .filter(|w| !w.is_empty())
        .all(|w| {
            let upper = w.chars().filter(|c| c.is_ascii_uppercase()).count();
            w.chars().all(|c| c.is_ascii_digit())
                || w.chars().all(|c| c.is_ascii_uppercase())
                // Words: letters only, capitals at most a third (`config`, `WikiOps`).
                || (w.chars().all(|c| c.is_ascii_alphabetic()) && upper * 3 <= w.len())
        })
}

fn high_entropy(value: &str) -> bool {
    let alphabet = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-');
    if value.len() < 20 || !value.chars().all(alphabet) || is_uuid(value) || is_slug(value) {
        return false;
    }
    if value.chars().all(|c| c.is_ascii_hexdigit()) {
        return value.len() >= 32 && value.len() != 40 && entropy(value) >= 3.0;
    }
    let classes = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
        value.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    classes >= 3 && entropy(value) >= 4.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_with_real_values_are_found() {
        for name in [
            "DB_PASSWORD",
            "MYSQL_ROOT_PASSWORD",
            "wgDBpassword",
            "PASSWD",
            "PWD",
            "SMTP_PASS",
            "MW_SECRET_KEY",
            "WG_UPGRADE_KEY",
            "GITHUB_TOKEN",
            "OAUTH_CLIENT_SECRET",
            "API_KEY",
            "STRIPEAPIKEY",
            "GOOGLE_CREDENTIALS",
        ] {
            assert_eq!(
                classify(name, "hunter2-but-longer"),
                Some(Kind::CredentialName),
                "{name}"
            );
        }
    }

    #[test]
    fn references_flags_and_ordinary_names_are_not() {
        for (name, value) in [
            (
                "DB_PASSWORD_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:1:secret:db",
            ),
            (
                "DB_PASSWORD",
                "arn:aws:secretsmanager:us-east-1:1:secret:db",
            ),
            ("DB_PASSWORD_FILE", "/run/secrets/db"),
            ("DB_PASSWORD", "/run/secrets/db"),
            ("SECRET_NAME", "wiki/db"),
            ("TOKEN_TTL", "3600"),
            ("SESSION_TOKEN_LENGTH", "32"),
            ("SECRETS_ENABLED", "true"),
            ("PASSWORD_RESET", "off"),
            ("DB_PASSWORD", ""),
            ("DB_PASSWORD", "{{resolve:secretsmanager:db}}"),
            ("CACHE_KEY", "42"),
            ("KEY", "plain"),
            ("AWS_REGION", "us-east-1"),
            ("MW_SITE_NAME", "My Wiki"),
            ("CONFIG_BUCKET", "wiki-config-123456789012"),
            ("GIT_COMMIT", "8f3c2a1b9d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"),
            ("REQUEST_ID", "123e4567-e89b-12d3-a456-426614174000"),
            (
                "IMAGE",
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/wiki:1.43",
            ),
            ("CONFIG_URL", "https://example.org/config?x=1"),
            ("PATH_PREFIX", "wiki/pages/Main_Page"),
            ("BUCKET", "wiki-uploads-us-east-1-123456789012"),
            ("LOG_GROUP", "WikiOps_Web_Production_2026"),
        ] {
            assert_eq!(classify(name, value), None, "{name}");
        }
    }

    #[test]
    fn values_give_themselves_away() {
        assert_eq!(
            classify("SOMETHING", "AKIAIOSFODNN7EXAMPLE"),
            Some(Kind::AwsAccessKeyId)
        );
        assert_eq!(
            classify("X", "id=ASIAY34FZKBOKMUTVV7A;"),
            Some(Kind::AwsAccessKeyId)
        );
        assert_eq!(classify("X", "AKIAIOSFODNN7EXAMPLEX"), None);
        assert_eq!(classify("X", "xAKIAIOSFODNN7EXAMPLE"), None);
        assert_eq!(
            classify("DATABASE_URL", "mysql://wiki:s3cr3t@db.internal:3306/wiki"),
            Some(Kind::UrlWithPassword)
        );
        assert_eq!(
            classify("DATABASE_URL", "mysql://wiki@db.internal:3306/wiki"),
            None
        );
        assert_eq!(
            classify("TLS", "-----BEGIN RSA PRIVATE KEY-----\nMIIE…"),
            Some(Kind::PrivateKey)
        );
        assert_eq!(
            classify("UPSTREAM", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            Some(Kind::HighEntropy)
        );
        assert_eq!(
            classify(
                "SIGNING",
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            ),
            Some(Kind::HighEntropy)
        );
        assert_eq!(classify("LABEL", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None);
    }

    #[test]
    fn findings_carry_names_never_values() {
        let f = scan(
            "wiki",
            [("DB_PASSWORD", "correct-horse-battery"), ("MODE", "prod")],
        );
        assert_eq!(
            f,
            vec![Finding {
                container: "wiki".into(),
                variable: "DB_PASSWORD".into(),
                kind: Kind::CredentialName
            }]
        );
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("correct-horse"), "{json}");
    }

    #[test]
    fn entropy_of_simple_strings() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    }
}
