//! Whether PHP can parse a configuration file: the syntax check both config-redeploy (before a
//! release) and wiki-boot (before it installs a file) run through `config_rules::check_body`.
//! Pure. The parser is mago-syntax (a maintained Rust PHP parser; PHP 8.x syntax), behind the
//! `php` feature so that only the two crates that check configuration compile and link it.

use std::collections::BTreeSet;

use bumpalo::Bump;
use mago_database::file::FileId;
use mago_span::HasSpan;
use mago_syntax::ast::{
    Argument, ArrayElement, Construct, Expression, FunctionCall, Literal, LiteralString,
    MagicConstant,
};
use mago_syntax::walker::Walker;

/// The first syntax error in `source`: its 1-based line and the parser's message.
pub fn first_syntax_error(source: &[u8]) -> Option<(u32, String)> {
    let arena = Bump::new();
    let program = mago_syntax::parser::parse_file_content(&arena, FileId::zero(), source);
    let error = program.errors.first()?;
    let offset = (error.span().start.offset as usize).min(source.len());
    let line = source[..offset].iter().filter(|b| **b == b'\n').count() + 1;
    Some((u32::try_from(line).unwrap_or(u32::MAX), error.to_string()))
}

/// What a configuration file loads, where it says so with string literals: the extensions and
/// skins of `wfLoadExtension(s)` / `wfLoadSkin(s)`, and the files it includes (`include`,
/// `require`, `…_once`) by a literal path or `__DIR__ . '/literal'`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loads {
    pub extensions: BTreeSet<String>,
    pub skins: BTreeSet<String>,
    /// Included paths: relative to the file's folder for `__DIR__ . '/x'` (`x`), else as written.
    pub includes: BTreeSet<String>,
}

struct Finder;

fn literal(e: &Expression<'_>) -> Option<String> {
    match e {
        Expression::Literal(Literal::String(LiteralString { value: Some(v), .. })) => {
            Some(String::from_utf8_lossy(v).into_owned())
        }
        _ => None,
    }
}

/// The literal strings of a call's first argument: one string, or an array of strings.
fn names(call: &FunctionCall<'_>) -> Vec<String> {
    let Some(Argument::Positional(first)) = call.argument_list.arguments.first() else {
        return Vec::new();
    };
    match first.value {
        Expression::Array(a) => a
            .elements
            .iter()
            .filter_map(|el| match el {
                ArrayElement::Value(v) => literal(v.value),
                _ => None,
            })
            .collect(),
        e => literal(e).into_iter().collect(),
    }
}

/// An included path written as a literal, or as `__DIR__ . '/literal'` (then relative).
fn included(e: &Expression<'_>) -> Option<String> {
    if let Some(path) = literal(e) {
        return Some(path);
    }
    let Expression::Binary(b) = e else {
        return None;
    };
    let dir = matches!(
        b.lhs,
        Expression::MagicConstant(MagicConstant::Directory(_))
    );
    let rest = literal(b.rhs)?;
    dir.then(|| rest.trim_start_matches('/').to_string())
}

impl<'ast, 'arena> Walker<'ast, 'arena, Loads> for Finder {
    fn walk_in_function_call(&self, call: &'ast FunctionCall<'arena>, loads: &mut Loads) {
        let Expression::Identifier(id) = call.function else {
            return;
        };
        let name = String::from_utf8_lossy(id.last_segment()).to_ascii_lowercase();
        let set = match name.as_str() {
            "wfloadextension" | "wfloadextensions" => &mut loads.extensions,
            "wfloadskin" | "wfloadskins" => &mut loads.skins,
            _ => return,
        };
        set.extend(names(call));
    }

    fn walk_in_construct(&self, construct: &'ast Construct<'arena>, loads: &mut Loads) {
        let value = match construct {
            Construct::Include(c) => c.value,
            Construct::IncludeOnce(c) => c.value,
            Construct::Require(c) => c.value,
            Construct::RequireOnce(c) => c.value,
            _ => return,
        };
        if let Some(path) = included(value) {
            loads.includes.insert(path);
        }
    }
}

/// What `source` loads ([`Loads`]); nothing when it does not parse.
pub fn loads(source: &[u8]) -> Loads {
    let arena = Bump::new();
    let program = mago_syntax::parser::parse_file_content(&arena, FileId::zero(), source);
    let mut out = Loads::default();
    if program.errors.is_empty() {
        Finder.walk_program(program, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constructs real LocalSettings.php files use; each parses.
    #[test]
    fn real_world_constructs_parse() {
        for (name, src) in FIXTURES {
            assert_eq!(first_syntax_error(src.as_bytes()), None, "{name}");
        }
    }

    #[test]
    fn a_syntax_error_message_never_quotes_the_configuration() {
        // The message reaches logs and the summary: it names token kinds, never their text
        // (a password on the failing line stays out of it).
        for src in [
            "<?php\n$wgDBpassword = 'hunter2-s3cr3t' 'x';\n",
            "<?php\n$wgDBpassword = hunter2s3cr3t value;\n",
            "<?php\n$wgSecretKey = \"abc\" \"hunter2-s3cr3t\";\n",
            "<?php\n$x = 1 hunter2s3cr3t;\n",
        ] {
            let (line, message) = first_syntax_error(src.as_bytes()).unwrap();
            assert_eq!(line, 2, "{src}");
            assert!(!message.contains("s3cr3t"), "{message}");
        }
    }

    #[test]
    fn an_error_has_its_line_and_message() {
        let (line, message) =
            first_syntax_error(b"<?php\n$wgSitename = 'Wiki';\n$a = [1, 2;\n").unwrap();
        assert_eq!(line, 3);
        assert!(!message.is_empty());
        let (line, _) = first_syntax_error(b"<?php\nif ( true ) {\n  $x = 1;\n").unwrap();
        assert!(line >= 3, "an unclosed block ends at the end: {line}");
        assert!(first_syntax_error(b"<?php\n$x = 'unterminated;\n").is_some());
        assert!(first_syntax_error(b"<?php\nfunction ( {}\n").is_some());
    }

    #[test]
    fn finds_what_a_file_loads() {
        let got = loads(FIXTURES[5].1.as_bytes());
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(got.extensions, set(&["Cite", "Gadgets", "ParserFunctions"]));
        assert_eq!(got.skins, set(&["Vector"]));
        assert_eq!(
            got.includes,
            set(&["extra/Branding.php", "PrivateSettings.php"])
        );
        let got = loads(b"<?php\n\\wfLoadSkin( 'MinervaNeue' );\n$x = 'wfLoadExtension';\nwfLoadExtension( $dynamic );\n");
        assert_eq!(got.skins, set(&["MinervaNeue"]));
        assert!(got.extensions.is_empty(), "{got:?}");
    }

    pub(crate) const FIXTURES: &[(&str, &str)] = &[
        (
            "heredoc and nowdoc",
            "<?php\n$wgFooterHtml = <<<HTML\n<p>{$wgSitename} on $wgServer</p>\nHTML;\n$raw = <<<'EOT'\nno $interpolation here\nEOT;\n$indented = <<<TXT\n    closing marker indented (PHP 7.3+)\n    TXT;\n",
        ),
        (
            "closures, arrow functions and hooks",
            "<?php\n$wgHooks['BeforePageDisplay'][] = function ( OutputPage $out, Skin $skin ) use ( $wgServer ): void {\n\t$out->addMeta( 'x', $wgServer );\n};\n$wgHooks['SkinAddFooterLinks'][] = static fn ( $skin, $key, &$links ) => true;\n",
        ),
        (
            "match and the null-safe operator",
            "<?php\n$wgDebugLogFile = match ( getenv( 'WIKI_ENV' ) ) {\n\t'dev', 'test' => '/tmp/debug.log',\n\tdefault => '',\n};\n$host = $_SERVER['HTTP_HOST'] ?? 'localhost';\n$x = $obj?->prop;\n",
        ),
        (
            "getenv and environment-driven settings",
            "<?php\nif ( !defined( 'MEDIAWIKI' ) ) {\n\texit;\n}\n$wgDBserver = getenv( 'DB_HOST' ) ?: 'localhost';\n$wgDBpassword = (string)getenv( 'DB_PASSWORD' );\n$wgEnableUploads = filter_var( getenv( 'UPLOADS' ), FILTER_VALIDATE_BOOLEAN );\n",
        ),
        (
            "$wgConf arrays (a wiki farm)",
            "<?php\n$wgConf = new SiteConfiguration;\n$wgConf->wikis = [ 'enwiki', 'dewiki' ];\n$wgConf->suffixes = [ 'wiki' ];\n$wgConf->settings = [\n\t'wgServer' => [\n\t\t'default' => 'https://$lang.example.org',\n\t\t'enwiki' => 'https://en.example.org',\n\t],\n\t'+wgGroupPermissions' => [\n\t\t'default' => [ 'user' => [ 'edit' => true ] ],\n\t],\n];\n$wgConf->extractAllGlobals( $wgDBname );\nextract( $wgConf->getAll( $wgDBname ), EXTR_OVERWRITE );\n",
        ),
        (
            "require_once, includes and extensions",
            "<?php\nrequire_once __DIR__ . '/extra/Branding.php';\nrequire_once \"$IP/extensions/Foo/Foo.php\";\ninclude 'PrivateSettings.php';\n@include_once getenv( 'CONFIG_DIR' ) . '/local.php';\nwfLoadExtension( 'ParserFunctions' );\nwfLoadExtensions( [ 'Cite', 'Gadgets' ] );\nwfLoadSkin( 'Vector' );\n$wgDefaultSkin = 'vector-2022';\n",
        ),
        (
            "functions, classes, constants, attributes and enums",
            "<?php\nnamespace Wiki\\Config;\nuse MediaWiki\\MediaWikiServices;\nconst FARM = true;\ndefine( 'WIKI_FARM', true );\nfunction wikiopsSetting( string $name, ?string $default = null ): string { return getenv( $name ) ?: ( $default ?? '' ); }\n#[\\AllowDynamicProperties]\nfinal class Settings { public function __construct( private readonly array $x = [] ) {} }\nenum Tier: string { case Free = 'free'; }\n$a = [ ...$b, 'k' => 1 ];\n[ $c, $d ] = [ 1, 2 ];\n$wgGroupPermissions['*']['edit'] = false;\n",
        ),
        (
            "a closing tag and trailing HTML",
            "<?php\n$wgSitename = 'Wiki';\n?>\n",
        ),
    ];
}
