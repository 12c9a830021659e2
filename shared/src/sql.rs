//! SQL string literals and identifiers for MySQL and MariaDB, in every `sql_mode`: the one
//! copy used by secret-rotation and wiki-boot. All pure.
//!
//! `CREATE/ALTER USER … IDENTIFIED BY` and `SET PASSWORD` take no placeholders, so passwords
//! go into statements as literals. How a backslash is read depends on the session's
//! `sql_mode` (`NO_BACKSLASH_ESCAPES`), so a literal is written for the mode the session
//! reports. Identifiers are backtick-quoted, which read the same in every mode.

use std::fmt;

use serde::Serialize;

/// How the session reads a backslash inside a string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Escaping {
    /// The default: a backslash starts an escape sequence.
    Backslash,
    /// `sql_mode` has `NO_BACKSLASH_ESCAPES`: a backslash is an ordinary character.
    NoBackslash,
}

impl Escaping {
    /// The escaping for a session whose `@@SESSION.sql_mode` is `sql_mode`.
    pub fn for_sql_mode(sql_mode: &str) -> Escaping {
        if sql_mode
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("NO_BACKSLASH_ESCAPES"))
        {
            Escaping::NoBackslash
        } else {
            Escaping::Backslash
        }
    }
}

/// A value that cannot be written as a literal (control characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralError;

impl fmt::Display for LiteralError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value contains a control character")
    }
}

/// `value` as a single-quoted string literal for a session with `escaping`.
///
/// A quote is doubled (read the same in both modes); a backslash is doubled only when the
/// session reads escapes. Control characters are refused: they have no portable spelling.
pub fn literal(value: &str, escaping: Escaping) -> Result<String, LiteralError> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if escaping == Escaping::Backslash => out.push_str("\\\\"),
            c if c.is_control() => return Err(LiteralError),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// `name` as a backtick-quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MySQL's reading of a single-quoted literal (the model the server implements).
    fn read_literal(lit: &str, escaping: Escaping) -> String {
        let inner = &lit[1..lit.len() - 1];
        let mut out = String::new();
        let mut it = inner.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '\'' => {
                    assert_eq!(it.next(), Some('\''), "lone quote in {lit}");
                    out.push('\'');
                }
                '\\' if escaping == Escaping::Backslash => {
                    let n = it.next().expect("dangling backslash");
                    out.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        '0' => '\0',
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
        out
    }

    fn printable_ascii() -> String {
        (0x20u8..=0x7e).map(char::from).collect()
    }

    #[test]
    fn every_printable_ascii_character_round_trips_in_both_modes() {
        let all = printable_ascii();
        assert_eq!(all.len(), 95);
        for escaping in [Escaping::Backslash, Escaping::NoBackslash] {
            let lit = literal(&all, escaping).unwrap();
            assert_eq!(read_literal(&lit, escaping), all, "{escaping:?}: {lit}");
            for c in all.chars() {
                let v = format!("a{c}b{c}{c}");
                assert_eq!(read_literal(&literal(&v, escaping).unwrap(), escaping), v);
            }
        }
        assert_eq!(
            literal(r"it's \n", Escaping::Backslash).unwrap(),
            r"'it''s \\n'"
        );
        assert_eq!(
            literal(r"it's \n", Escaping::NoBackslash).unwrap(),
            r"'it''s \n'"
        );
    }

    #[test]
    fn control_characters_are_refused() {
        for c in ['\0', '\n', '\r', '\t', '\x1b', '\x7f'] {
            assert_eq!(
                literal(&format!("a{c}"), Escaping::Backslash),
                Err(LiteralError)
            );
        }
    }

    #[test]
    fn sql_mode_decides_the_escaping() {
        assert_eq!(
            Escaping::for_sql_mode("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION"),
            Escaping::Backslash
        );
        assert_eq!(
            Escaping::for_sql_mode("ANSI_QUOTES,no_backslash_escapes"),
            Escaping::NoBackslash
        );
        assert_eq!(Escaping::for_sql_mode(""), Escaping::Backslash);
    }

    #[test]
    fn identifiers() {
        assert_eq!(ident("a`b"), "`a``b`");
    }

    proptest! {
        #[test]
        fn any_string_without_controls_round_trips(v in "[ -~]{0,64}", nb in any::<bool>()) {
            let escaping = if nb { Escaping::NoBackslash } else { Escaping::Backslash };
            let lit = literal(&v, escaping).unwrap();
            prop_assert_eq!(read_literal(&lit, escaping), v);
        }

    }
}
