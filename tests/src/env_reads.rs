//! Which environment variables a program reads, found in its sources (all pure text scans).
//!
//! The template test compares them with what template.yaml sets for each function and each
//! container: a variable set that nothing reads is a typo or a leftover, a required one not set
//! stops the program at start. Rust: string literals naming a variable (`"DB_HOST"`) in code
//! before the first `#[cfg(test)]`, comment lines left out; required = `required("…")` and the
//! literals of a `…REQUIRED: &[&str]` list. PHP (LocalSettings.php): `wikiopsSetting( '…' )`
//! (required) and `wikiopsOptional( '…' )`. Apache: `${…}`. Dockerfile: the `ENV` names.

use std::collections::BTreeSet;

/// The variables one source reads; `required` ⊆ `all`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reads {
    pub required: BTreeSet<String>,
    pub all: BTreeSet<String>,
}

impl Reads {
    pub fn merge(&mut self, other: Reads) {
        self.required.extend(other.required);
        self.all.extend(other.all);
    }
}

fn is_name(s: &str) -> bool {
    s.len() >= 3
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The string literals of Rust code (comments, char literals and raw strings skipped), each with
/// the byte offset of its opening quote.
fn rust_strings(code: &str) -> Vec<(usize, String)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = code[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let open = i + 1 + hashes;
                if b.get(open) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                i = code[open + 1..]
                    .find(&close)
                    .map_or(b.len(), |n| open + 1 + n + close.len());
            }
            b'\'' => {
                // a char literal ('x', '\'', '"') or a lifetime ('a)
                if b.get(i + 1) == Some(&b'\\') {
                    i = code[i + 2..].find('\'').map_or(b.len(), |n| i + 3 + n);
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            b'"' => {
                let start = i;
                let mut text = String::new();
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if let Some(c) = b.get(i) {
                        text.push(char::from(*c));
                    }
                    i += 1;
                }
                out.push((start, text));
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// A Rust source's reads (its test module and comments left out).
pub fn rust(src: &str) -> Reads {
    let code = src.split("#[cfg(test)]").next().unwrap_or_default();
    let mut reads = Reads::default();
    for (at, name) in rust_strings(code) {
        if !is_name(&name) {
            continue;
        }
        let before = &code[..at];
        let line = before.rsplit('\n').next().unwrap_or_default();
        if before.ends_with("required(") || (line.contains("REQUIRED") && line.contains("&[")) {
            reads.required.insert(name.clone());
        }
        reads.all.insert(name);
    }
    reads
}

/// LocalSettings.php's reads through its two helpers: `helper( 'NAME'`.
pub fn php(src: &str) -> Reads {
    let mut reads = Reads::default();
    for (helper, required) in [("wikiopsSetting(", true), ("wikiopsOptional(", false)] {
        for after in src.split(helper).skip(1) {
            let Some(name) = after
                .trim_start()
                .strip_prefix('\'')
                .and_then(|r| r.split('\'').next())
                .filter(|n| is_name(n))
            else {
                continue;
            };
            if required {
                reads.required.insert(name.to_string());
            }
            reads.all.insert(name.to_string());
        }
    }
    reads
}

/// An Apache configuration's `${NAME}` references (comment lines left out); Apache refuses to
/// start without them.
pub fn apache(conf: &str) -> Reads {
    let mut reads = Reads::default();
    for line in conf.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for part in line.split("${").skip(1) {
            if let Some(name) = part.split('}').next().filter(|n| is_name(n)) {
                reads.required.insert(name.to_string());
                reads.all.insert(name.to_string());
            }
        }
    }
    reads
}

/// The names a Dockerfile's final stage sets with `ENV` (continuation lines joined).
pub fn dockerfile_env(dockerfile: &str) -> BTreeSet<String> {
    let joined = dockerfile.replace("\\\n", " ");
    let last_stage = joined.rsplit("\nFROM ").next().unwrap_or_default();
    last_stage
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|token| token.split_once('=').map(|(name, _)| name.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rust_reads_required_optional_and_listed_names_not_tests_or_comments() {
        let src = r##"
pub const PHP_REQUIRED: &[&str] = &["WIKI_SECRET_KEY"];
// env.required("IN_A_COMMENT")
fn f(env: &Env) {
    let a = env.required("DB_HOST")?;
    let b = env.optional("DB_PREFIX");
    let c = seconds(env, "DB_WAIT_SECONDS", 180)?;
    let d = "ab";
    let e = "\"'`";
    let f = ['"', '\''];
    let g = r#"r"AW"#;
    let h = env.optional("AFTER_ESCAPES");
}
#[cfg(test)]
mod tests { fn t() { env.required("ONLY_IN_TESTS"); } }
"##;
        let r = rust(src);
        assert_eq!(r.required, set(&["DB_HOST", "WIKI_SECRET_KEY"]));
        assert_eq!(
            r.all,
            set(&[
                "AFTER_ESCAPES",
                "DB_HOST",
                "DB_PREFIX",
                "DB_WAIT_SECONDS",
                "WIKI_SECRET_KEY"
            ])
        );
    }

    #[test]
    fn php_reads_through_its_helpers_only() {
        let src = "// the task's own\nfunction wikiopsSetting( string $name ) {}\n$a = wikiopsSetting( 'DB_HOST' );\n$b = wikiopsOptional( 'DB_PORT', '3306' );\n$c = 'NOT_READ';";
        let r = php(src);
        assert_eq!(r.required, set(&["DB_HOST"]));
        assert_eq!(r.all, set(&["DB_HOST", "DB_PORT"]));
    }

    #[test]
    fn apache_references_and_dockerfile_env() {
        let conf = "# ${IN_COMMENT}\nRemoteIPInternalProxy ${VPC_CIDR}\n<Directory \"${WEB_ROOT}/images\">";
        assert_eq!(apache(conf).required, set(&["VPC_CIDR", "WEB_ROOT"]));
        let dockerfile = "FROM rust AS boot\nENV BUILD_ONLY=1\nFROM mediawiki\nENV WEB_ROOT=/var/www/html \\\n    DB_CA_BUNDLE=/x.pem\nENV A_B=c\n";
        assert_eq!(
            dockerfile_env(dockerfile),
            set(&["A_B", "DB_CA_BUNDLE", "WEB_ROOT"])
        );
    }
}
