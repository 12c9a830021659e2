//! template.yaml keeps its promises: least privilege per function, and the settings the rest of
//! the system relies on.
//!
//! The least-privilege contract, per function crate `functions/<name>`:
//! 1. its Rust sources (`src/**/*.rs`, comments, string literals and `#[cfg(test)]` modules left
//!    out) make exactly the AWS calls listed in `iam-actions.txt`, as `service:Operation`
//!    (`s3:ListObjectsV2`, `events:ListRules`): every `<client>.<operation>(` whose client is
//!    named after its service (`ecs`, `s3`, `secretsmanager`, `eventbridge` → `events`,
//!    `scheduler`) and whose method is an operation of that SDK crate, plus the calls made
//!    through `shared::ecs` and `shared::lease` ([`SHARED_CALLS`]);
//! 2. the IAM role the template gives the function (after the SAM transform, so with every
//!    policy SAM adds) grants exactly the IAM actions those calls need ([`iam_actions_for`]: S3's
//!    data plane maps through a table, e.g. `ListObjectsV2` → `s3:ListBucket`, `GetObject` with a
//!    version id → `s3:GetObjectVersion`), apart from what Lambda itself needs ([`LAMBDA_NEEDS`]),
//!    with `Resource: "*"` only for actions IAM cannot scope ([`NO_RESOURCE_LEVEL`]) and no
//!    wildcard in any action.
//!
//! An empty `iam-actions.txt` fails: a function without a declared AWS surface is unfinished.
//! The template is read through `tests/template/render.py` (SAM's own YAML loader and translator
//! from the project's venv), so short tags (`!Ref`, `!Sub`, `!GetAtt`) are handled as AWS does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use wikiops_tests::{env_reads, paths, taskdef};

// ---------------------------------------------------------------------------------------------
// The contract's tables
// ---------------------------------------------------------------------------------------------

/// SDK client variable name → (IAM service prefix, SDK crate).
const CLIENTS: [(&str, &str, &str); 8] = [
    ("ecs", "ecs", "aws-sdk-ecs"),
    ("s3", "s3", "aws-sdk-s3"),
    ("secretsmanager", "secretsmanager", "aws-sdk-secretsmanager"),
    ("eventbridge", "events", "aws-sdk-eventbridge"),
    ("scheduler", "scheduler", "aws-sdk-scheduler"),
    ("sfn", "states", "aws-sdk-sfn"),
    ("pipes", "pipes", "aws-sdk-pipes"),
    ("rds", "rds", "aws-sdk-rds"),
];

/// `shared::ecs` functions → the ECS calls they make.
const SHARED_CALLS: [(&str, &str, &[&str]); 6] = [
    (
        "ecs",
        "redeploy",
        &["ecs:DescribeServices", "ecs:UpdateService"],
    ),
    ("ecs", "describe", &["ecs:DescribeServices"]),
    ("ecs", "force_new_deployment", &["ecs:UpdateService"]),
    // `Lease::confirm` rewrites the lease `acquire` wrote: PutObject again.
    ("lease", "acquire", &["s3:PutObject", "s3:GetObject"]),
    ("lease", "release", &["s3:DeleteObject"]),
    // The pointer, else its history and its last version (`shared::release`).
    (
        "release",
        "read_pointer",
        &["s3:GetObject", "s3:ListObjectVersions"],
    ),
];

/// Actions a function's role may hold without its code calling them: what Lambda itself does
/// on the function's behalf. `(function or "*", action, why)`.
const LAMBDA_NEEDS: [(&str, &str, &str); 3] = [
    (
        "*",
        "sns:Publish",
        "the on-failure destination (EventInvokeConfig) publishes failed invocations to the alert topic",
    ),
    (
        "efs-backup",
        "elasticfilesystem:ClientMount",
        "Lambda mounts the uploads file system through FileSystemConfigs (IAM authorization)",
    ),
    (
        "efs-backup",
        "elasticfilesystem:ClientWrite",
        "restore writes to the mounted file system",
    ),
];

/// AWS-managed policies a function's role may carry: `(policy name, only for VPC functions)`.
/// Basic execution = CloudWatch Logs; VPC access = the ENIs Lambda creates in the subnets.
const MANAGED_POLICIES: [(&str, bool); 2] = [
    ("service-role/AWSLambdaBasicExecutionRole", false),
    ("service-role/AWSLambdaVPCAccessExecutionRole", true),
];

/// Actions without resource-level permissions: the only ones allowed on `Resource: "*"`
/// (Service Authorization Reference).
const NO_RESOURCE_LEVEL: [&str; 15] = [
    "ecs:ListClusters",
    "ecs:ListServices",
    "ecs:ListTasks",
    "ecs:ListTaskDefinitionFamilies",
    "ecs:ListTaskDefinitions",
    "ecs:DescribeTaskDefinition",
    "ecs:DeregisterTaskDefinition",
    "ecs:RegisterTaskDefinition",
    "events:ListEventBuses",
    "events:ListRules",
    "scheduler:ListSchedules",
    "states:ListStateMachines",
    "pipes:ListPipes",
    "secretsmanager:GetRandomPassword",
    "secretsmanager:ListSecrets",
];

/// IAM actions for one SDK operation. S3's data plane does not map one to one:
///
/// | operation | IAM actions |
/// |---|---|
/// | PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload | s3:PutObject (+ s3:PutObjectTagging with `.tagging(`) |
/// | UploadPartCopy, CopyObject | s3:PutObject + s3:GetObject (s3:GetObjectVersion when the file builds a `versionId=` copy source) (+ s3:PutObjectTagging with `.tagging(`) |
/// | AbortMultipartUpload | s3:AbortMultipartUpload |
/// | ListMultipartUploads / ListParts | s3:ListBucketMultipartUploads / s3:ListMultipartUploadParts |
/// | GetObject, HeadObject, GetObjectAttributes | s3:GetObject (s3:GetObjectVersion with `.version_id(`, both with `.set_version_id(`); Attributes: s3:GetObjectAttributes / s3:GetObjectVersionAttributes |
/// | GetObjectTagging / PutObjectTagging / DeleteObjectTagging | s3:…ObjectTagging (s3:…ObjectVersionTagging with a version id) |
/// | DeleteObject | s3:DeleteObject (s3:DeleteObjectVersion with a version id) |
/// | DeleteObjects | s3:DeleteObject (+ s3:DeleteObjectVersion when the file sets `ObjectIdentifier` version ids) |
/// | ListObjects, ListObjectsV2, HeadBucket | s3:ListBucket |
/// | ListObjectVersions | s3:ListBucketVersions |
/// | any other operation, any other service | `<service>:<Operation>` |
fn iam_actions_for(service: &str, op: &str, call: &Call, file: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |a: &str| {
        out.insert(a.to_string());
    };
    if service != "s3" {
        add(&format!("{service}:{op}"));
        return out;
    }
    // With a version id: `.version_id(x)` → the Version action only; `.set_version_id(opt)` → either.
    let versioned = |plain: &str, version: &str, add: &mut dyn FnMut(&str)| {
        if call.has(".version_id(") {
            add(version);
        } else if call.has(".set_version_id(") {
            add(plain);
            add(version);
        } else {
            add(plain);
        }
    };
    let tagging = call.has(".tagging(") || call.has(".set_tagging(");
    match op {
        "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload" => {
            add("s3:PutObject");
            if tagging {
                add("s3:PutObjectTagging");
            }
        }
        "CopyObject" | "UploadPartCopy" => {
            add("s3:PutObject");
            add("s3:GetObject");
            if file.contains("versionId=") {
                add("s3:GetObjectVersion");
            }
            if tagging {
                add("s3:PutObjectTagging");
            }
        }
        "AbortMultipartUpload" => add("s3:AbortMultipartUpload"),
        "ListMultipartUploads" => add("s3:ListBucketMultipartUploads"),
        "ListParts" => add("s3:ListMultipartUploadParts"),
        "GetObject" | "HeadObject" => versioned("s3:GetObject", "s3:GetObjectVersion", &mut add),
        "GetObjectAttributes" => versioned(
            "s3:GetObjectAttributes",
            "s3:GetObjectVersionAttributes",
            &mut add,
        ),
        "GetObjectTagging" => versioned(
            "s3:GetObjectTagging",
            "s3:GetObjectVersionTagging",
            &mut add,
        ),
        "PutObjectTagging" => versioned(
            "s3:PutObjectTagging",
            "s3:PutObjectVersionTagging",
            &mut add,
        ),
        "DeleteObjectTagging" => versioned(
            "s3:DeleteObjectTagging",
            "s3:DeleteObjectVersionTagging",
            &mut add,
        ),
        "DeleteObject" => versioned("s3:DeleteObject", "s3:DeleteObjectVersion", &mut add),
        "DeleteObjects" => {
            add("s3:DeleteObject");
            if file.contains("ObjectIdentifier") && file.contains(".version_id(") {
                add("s3:DeleteObjectVersion");
            }
        }
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => add("s3:ListBucket"),
        "ListObjectVersions" => add("s3:ListBucketVersions"),
        other => add(&format!("s3:{other}")),
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Scanning Rust sources
// ---------------------------------------------------------------------------------------------

/// One `<client>.<method>(…)` call: the method and the builder chain up to `.send(` or `;`.
#[derive(Debug)]
struct Call {
    client: String,
    method: String,
    chain: String,
}

impl Call {
    fn has(&self, needle: &str) -> bool {
        self.chain.contains(needle)
    }
}

/// Rust source without comments, with string and char literals emptied (`""`, `' '`).
fn strip_comments_and_literals(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_char_before(&b, i)
        {
            // raw string r"…", r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // char literal ('x', '\n', '\u{..}') or lifetime ('a)
            if next == Some('\\') {
                let mut j = i + 3;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
            } else if b.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_char_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Removes `#[cfg(test)]` items (a `mod … { … }` block or the next item up to its `;`/`}`).
fn strip_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(pos) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        // skip to the item's body and past its balanced braces (or a `;` before any `{`)
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, ch) in after.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `<client>.<method>(` in `code` (already stripped), for the clients in [`CLIENTS`].
fn find_calls(code: &str) -> Vec<Call> {
    let b: Vec<char> = code.chars().collect();
    let mut calls = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_ident(b[i]) || (i > 0 && is_ident(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let word: String = b[start..i].iter().collect();
        if !CLIENTS.iter().any(|(name, _, _)| *name == word) {
            continue;
        }
        let mut j = skip_ws(&b, i);
        if b.get(j) != Some(&'.') {
            continue;
        }
        j = skip_ws(&b, j + 1);
        let m_start = j;
        while j < b.len() && is_ident(b[j]) {
            j += 1;
        }
        if j == m_start {
            continue;
        }
        let method: String = b[m_start..j].iter().collect();
        let k = skip_ws(&b, j);
        if b.get(k) != Some(&'(') {
            continue;
        }
        // the builder chain: up to `.send(` or the end of the statement
        let tail: String = b[k..].iter().collect();
        let chain_end = [tail.find(".send("), tail.find(';')]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(tail.len());
        let chain: String = tail[..chain_end].split_whitespace().collect();
        calls.push(Call {
            client: word,
            method,
            chain,
        });
        i = k;
    }
    calls
}

fn skip_ws(b: &[char], mut i: usize) -> usize {
    while i < b.len() && b[i].is_whitespace() {
        i += 1;
    }
    i
}

/// `shared::ecs::<f>` (or `ecs::<f>` after `use shared::ecs`) calls and imports in `code`, and
/// likewise `shared::lease`'s.
fn shared_actions(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (module, f, actions) in SHARED_CALLS {
        if shared_hit(code, module, f) {
            out.extend(actions.iter().map(|a| a.to_string()));
        }
    }
    out
}

/// Whether `code` calls or imports `shared::<module>::<f>`.
fn shared_hit(code: &str, module: &str, f: &str) -> bool {
    let needle = format!("{module}::{f}");
    code.match_indices(&needle).any(|(pos, _)| {
        let after = code[pos + needle.len()..].chars().next();
        let before = code[..pos].chars().next_back();
        !after.is_some_and(is_ident) && !before.is_some_and(is_ident)
    }) || code.contains(&format!("{module}::{{")) && shared_group_imports(code, module, f)
}

/// `use shared::<module>::{redeploy, …}`: does the group name `f`?
fn shared_group_imports(code: &str, module: &str, f: &str) -> bool {
    code.match_indices(&format!("{module}::{{"))
        .any(|(pos, m)| {
            let group = &code[pos + m.len()..];
            let group = &group[..group.find('}').unwrap_or(group.len())];
            group.split(',').any(|item| item.trim() == f)
        })
}

/// Operation module name → operation name (e.g. `list_objects_v2` → `ListObjectsV2`), per
/// SDK crate, read from the crate sources cargo resolved for this workspace.
fn sdk_operations() -> &'static BTreeMap<String, BTreeMap<String, String>> {
    static OPS: OnceLock<BTreeMap<String, BTreeMap<String, String>>> = OnceLock::new();
    OPS.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(paths::root())
            .args(["metadata", "--format-version", "1", "--offline"])
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
        let mut ops = BTreeMap::new();
        for (_, _, krate) in CLIENTS {
            let manifest = meta["packages"]
                .as_array()
                .expect("packages")
                .iter()
                .find(|p| p["name"] == krate)
                .and_then(|p| p["manifest_path"].as_str())
                .unwrap_or_else(|| panic!("{krate} is not a dependency of the workspace"));
            let dir = Path::new(manifest)
                .parent()
                .expect("crate dir")
                .join("src/operation");
            let mut map = BTreeMap::new();
            for entry in std::fs::read_dir(&dir).expect("read SDK operation modules") {
                let path = entry.expect("dir entry").path();
                if path.extension().is_some_and(|e| e == "rs") {
                    let module = path
                        .file_stem()
                        .expect("stem")
                        .to_string_lossy()
                        .to_string();
                    let text = std::fs::read_to_string(&path).expect("read operation module");
                    if let Some(name) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("pub struct ")?.strip_suffix(';'))
                    {
                        map.insert(module, name.to_string());
                    }
                }
            }
            assert!(!map.is_empty(), "no operations found in {}", dir.display());
            ops.insert(krate.to_string(), map);
        }
        ops
    })
}

/// What a scan reports: the API operations called, or the IAM actions they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `service:Operation`, e.g. `s3:ListObjectsV2` (what iam-actions.txt lists).
    Operations,
    /// The IAM actions those calls need, e.g. `s3:ListBucket` ([`iam_actions_for`]).
    IamActions,
}

/// The operations (or IAM actions) one source file's code calls, each with the call that needs it.
fn scan_source(src: &str, kind: Kind) -> BTreeMap<String, String> {
    let code = strip_test_modules(&strip_comments_and_literals(src));
    let ops = sdk_operations();
    let mut out = BTreeMap::new();
    for call in find_calls(&code) {
        let (_, service, krate) = CLIENTS
            .iter()
            .find(|(name, _, _)| *name == call.client)
            .expect("a known client");
        let Some(op) = ops[*krate].get(&call.method) else {
            continue; // not an operation (clone, config, …)
        };
        let found = match kind {
            Kind::Operations => BTreeSet::from([format!("{service}:{op}")]),
            Kind::IamActions => iam_actions_for(service, op, &call, src),
        };
        for item in found {
            out.entry(item)
                .or_insert_with(|| format!("{}.{}()", call.client, call.method));
        }
    }
    // shared::ecs, shared::lease and shared::release make these calls; as IAM actions through
    // the table above (`release::read_pointer` reads a pointer's version: GetObject either way).
    let reads_versions = shared_hit(&code, "release", "read_pointer");
    for action in shared_actions(&code) {
        let items = match (kind, action.split_once(':')) {
            (Kind::IamActions, Some((service, op))) => {
                let call = Call {
                    client: service.to_string(),
                    method: op.to_string(),
                    chain: if reads_versions && op == "GetObject" {
                        ".set_version_id(".to_string()
                    } else {
                        String::new()
                    },
                };
                iam_actions_for(service, op, &call, "")
            }
            _ => BTreeSet::from([action]),
        };
        for item in items {
            out.entry(item).or_insert_with(|| "shared".to_string());
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The operations (or IAM actions) crate `name` calls: each → first place seen (`file: call`).
fn scan_crate(name: &str, kind: Kind) -> BTreeMap<String, String> {
    let root = paths::root().join(crate_dir(name));
    let mut out = BTreeMap::new();
    for file in rust_files(&root.join("src")) {
        let src = std::fs::read_to_string(&file).expect("read source");
        let rel = file
            .strip_prefix(paths::root())
            .unwrap_or(&file)
            .display()
            .to_string();
        for (item, call) in scan_source(&src, kind) {
            out.entry(item).or_insert(format!("{rel}: {call}"));
        }
    }
    out
}

/// Where crate `name` lives: `functions/<name>`, or `wiki/boot` for the wiki's boot program.
fn crate_dir(name: &str) -> String {
    if name == "wiki-boot" {
        "wiki/boot".to_string()
    } else {
        format!("functions/{name}")
    }
}

/// `<crate>/iam-actions.txt`: one `service:Action` per line (`#` comments allowed).
fn declared_actions(name: &str) -> BTreeSet<String> {
    let path = paths::root().join(crate_dir(name)).join("iam-actions.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (service, action) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{}: `{line}` is not service:Action", path.display()));
        assert!(
            !service.is_empty()
                && action
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
                && action.chars().all(|c| c.is_ascii_alphanumeric()),
            "{}: `{line}` is not service:Action (no wildcards)",
            path.display()
        );
        out.insert(line.to_string());
    }
    out
}

fn function_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(paths::root().join("functions"))
        .expect("read functions/")
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

fn lower(set: &BTreeSet<String>) -> BTreeSet<String> {
    set.iter().map(|a| a.to_ascii_lowercase()).collect()
}

/// Part 1: the operations the code calls = iam-actions.txt.
fn assert_code_matches_declared(name: &str) {
    let dir = crate_dir(name);
    let declared = declared_actions(name);
    let code = scan_crate(name, Kind::Operations);
    let found: BTreeSet<String> = code.keys().cloned().collect();
    let list = |set: &BTreeSet<String>| {
        set.iter()
            .map(|a| match code.get(a) {
                Some(at) => format!("  {a}    ({at})"),
                None => format!("  {a}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        !declared.is_empty(),
        "{dir}/iam-actions.txt is empty: list exactly the AWS calls the code makes.\n\
         The code calls:\n{}",
        list(&found)
    );
    let missing: BTreeSet<String> = found.difference(&declared).cloned().collect();
    let extra: BTreeSet<String> = declared.difference(&found).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{dir}/iam-actions.txt differs from the calls in {dir}/src\n\
         called but not listed:\n{}\nlisted but not called:\n{}",
        list(&missing),
        list(&extra)
    );
}

// ---------------------------------------------------------------------------------------------
// Reading the template
// ---------------------------------------------------------------------------------------------

struct Rendered {
    template: Value,
    transformed: Value,
}

fn rendered() -> &'static Rendered {
    static R: OnceLock<Rendered> = OnceLock::new();
    R.get_or_init(|| {
        let out = Command::new(paths::venv_bin("python"))
            .current_dir(paths::root())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .args(["tests/template/render.py", "template.yaml"])
            .output()
            .expect("run tests/template/render.py (the project's .venv: scripts/test creates it)");
        assert!(
            out.status.success(),
            "template.yaml does not load or transform:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("render.py JSON");
        Rendered {
            template: v["template"].clone(),
            transformed: v["transformed"].clone(),
        }
    })
}

fn resources(t: &Value) -> &serde_json::Map<String, Value> {
    t["Resources"].as_object().expect("Resources")
}

/// The Makefile's `build-<LogicalId>` targets (SAM's `BuildMethod: makefile`): logical id → the
/// binary whose bootstrap the target copies (`$(call artifact,<binary>)`).
fn makefile_artifacts() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(paths::root().join("Makefile")).expect("read Makefile");
    let mut out = BTreeMap::new();
    let mut target: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("build-") {
            target = rest.split(':').next().map(str::to_string);
        } else if let (Some(id), Some(call)) =
            (&target, line.trim().strip_prefix("$(call artifact,"))
        {
            out.insert(id.clone(), call.trim_end_matches(')').to_string());
            target = None;
        }
    }
    out
}

/// Binary name → logical id of its `AWS::Serverless::Function` (through its Makefile target).
fn template_functions() -> BTreeMap<String, String> {
    let artifacts = makefile_artifacts();
    resources(&rendered().template)
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .map(|(id, _)| {
            let bin = artifacts
                .get(id)
                .unwrap_or_else(|| panic!("{id}: the Makefile has no build-{id} target"));
            (bin.clone(), id.clone())
        })
        .collect()
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => vec![],
        other => vec![other.clone()],
    }
}

/// One Allow statement of a function's role.
#[derive(Debug)]
struct Grant {
    policy: String,
    actions: Vec<String>,
    resources: Vec<Value>,
}

/// The role of function `logical_id` after the SAM transform: its managed policies and grants.
fn role_of(logical_id: &str) -> (Vec<String>, Vec<Grant>) {
    let res = resources(&rendered().transformed);
    let function = &res[logical_id];
    assert_eq!(function["Type"], "AWS::Lambda::Function", "{logical_id}");
    let role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{logical_id}: Role is not a role of this template"));
    grants_of_role(role_id)
}

/// An IAM role of the transformed template: its managed policies and Allow statements.
fn grants_of_role(role_id: &str) -> (Vec<String>, Vec<Grant>) {
    let res = resources(&rendered().transformed);
    let role_id = role_id.to_string();
    let role = &res[&role_id]["Properties"];
    assert!(!role.is_null(), "template.yaml has no role {role_id}");
    let managed: Vec<String> = as_list(&role["ManagedPolicyArns"])
        .iter()
        .map(|arn| {
            let s = arn
                .as_str()
                .or_else(|| arn["Fn::Sub"].as_str())
                .unwrap_or_else(|| panic!("{role_id}: managed policy {arn} is not a plain ARN"));
            s.split_once(":policy/")
                .map(|(_, name)| name.to_string())
                .unwrap_or_else(|| panic!("{role_id}: {s} is not a managed policy ARN"))
        })
        .collect();
    let mut docs: Vec<(String, Value)> = as_list(&role["Policies"])
        .into_iter()
        .map(|p| {
            (
                p["PolicyName"].as_str().unwrap_or("?").to_string(),
                p["PolicyDocument"].clone(),
            )
        })
        .collect();
    // Policies attached from outside the role (AWS::IAM::Policy / ManagedPolicy naming it).
    for (id, r) in res {
        if matches!(
            r["Type"].as_str(),
            Some("AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy")
        ) && as_list(&r["Properties"]["Roles"])
            .iter()
            .any(|x| x["Ref"] == role_id.as_str())
        {
            docs.push((id.clone(), r["Properties"]["PolicyDocument"].clone()));
        }
    }
    let mut grants = Vec::new();
    for (policy, doc) in docs {
        for st in as_list(&doc["Statement"]) {
            assert!(
                st.get("NotAction").is_none() && st.get("NotResource").is_none(),
                "{role_id}/{policy}: NotAction/NotResource grant more than they name"
            );
            if st["Effect"] != "Allow" {
                continue;
            }
            grants.push(Grant {
                policy: policy.clone(),
                actions: as_list(&st["Action"])
                    .iter()
                    .map(|a| a.as_str().expect("action string").to_string())
                    .collect(),
                resources: as_list(&st["Resource"]),
            });
        }
    }
    (managed, grants)
}

/// Part 2: the role grants exactly iam-actions.txt, plus what Lambda itself needs.
fn assert_policy_matches_declared(name: &str) {
    let functions = template_functions();
    let logical_id = functions
        .get(name)
        .unwrap_or_else(|| panic!("template.yaml has no function built from {name}"));
    let declared = declared_actions(name);
    assert!(
        !declared.is_empty(),
        "functions/{name}/iam-actions.txt is empty, so the template's policy for {logical_id} cannot be checked"
    );
    let in_vpc =
        !rendered().template["Resources"][logical_id.as_str()]["Properties"]["VpcConfig"].is_null();
    let (managed, grants) = role_of(logical_id);
    for m in &managed {
        let allowed = MANAGED_POLICIES
            .iter()
            .any(|(p, vpc_only)| p == m && (!vpc_only || in_vpc));
        assert!(
            allowed,
            "{logical_id}: managed policy {m} is not allowed (see MANAGED_POLICIES)"
        );
    }
    let lambda_needs: BTreeSet<String> = LAMBDA_NEEDS
        .iter()
        .filter(|(f, _, _)| *f == "*" || *f == name)
        .map(|(_, a, _)| a.to_ascii_lowercase())
        .collect();
    let mut granted = BTreeSet::new();
    for g in &grants {
        if g.actions
            .iter()
            .any(|a| a.eq_ignore_ascii_case("sns:Publish"))
        {
            assert_eq!(
                g.resources,
                vec![serde_json::json!({"Ref": "AlertTopic"})],
                "{logical_id}/{}: sns:Publish only to the alert topic",
                g.policy
            );
        }
        for a in &g.actions {
            assert!(
                !a.contains('*') && !a.contains('?'),
                "{logical_id}/{}: wildcard action {a}",
                g.policy
            );
            granted.insert(a.clone());
        }
        if g.resources.iter().any(|r| r == "*") {
            for a in &g.actions {
                assert!(
                    NO_RESOURCE_LEVEL.iter().any(|x| x.eq_ignore_ascii_case(a)),
                    "{logical_id}/{}: {a} is granted on Resource \"*\" but IAM can scope it to a resource",
                    g.policy
                );
            }
        }
    }
    let granted_code: BTreeSet<String> = granted
        .iter()
        .filter(|a| !lambda_needs.contains(&a.to_ascii_lowercase()))
        .cloned()
        .collect();
    // What the calls need: iam-actions.txt's operations through the table, with the context of
    // each call in the code (a version id, tagging); part 1 proves the two lists are the same.
    let needed = scan_crate(name, Kind::IamActions);
    let want: BTreeSet<String> = needed.keys().map(|a| a.to_ascii_lowercase()).collect();
    let have = lower(&granted_code);
    let missing: Vec<String> = needed
        .iter()
        .filter(|(a, _)| !have.contains(&a.to_ascii_lowercase()))
        .map(|(a, at)| format!("{a} ({at})"))
        .collect();
    let extra: Vec<&String> = granted_code
        .iter()
        .filter(|a| !want.contains(&a.to_ascii_lowercase()))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{logical_id}'s role differs from what functions/{name}'s calls need (iam-actions.txt through the table)\n\
         needed but not granted: {missing:#?}\ngranted but not needed: {extra:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests: least privilege, per function
// ---------------------------------------------------------------------------------------------

#[test]
fn config_redeploy_code_calls_exactly_its_iam_actions() {
    assert_code_matches_declared("config-redeploy");
}

#[test]
fn config_redeploy_policy_grants_exactly_its_iam_actions() {
    assert_policy_matches_declared("config-redeploy");
}

#[test]
fn secret_rotation_code_calls_exactly_its_iam_actions() {
    assert_code_matches_declared("secret-rotation");
}

#[test]
fn secret_rotation_policy_grants_exactly_its_iam_actions() {
    assert_policy_matches_declared("secret-rotation");
}

#[test]
fn efs_backup_code_calls_exactly_its_iam_actions() {
    assert_code_matches_declared("efs-backup");
}

#[test]
fn efs_backup_policy_grants_exactly_its_iam_actions() {
    assert_policy_matches_declared("efs-backup");
}

#[test]
fn taskdef_janitor_code_calls_exactly_its_iam_actions() {
    assert_code_matches_declared("taskdef-janitor");
}

#[test]
fn taskdef_janitor_policy_grants_exactly_its_iam_actions() {
    assert_policy_matches_declared("taskdef-janitor");
}

#[test]
fn every_function_crate_is_in_the_template_and_checked_above() {
    let in_template: Vec<String> = template_functions().into_keys().collect();
    assert_eq!(in_template, function_names());
    assert_eq!(
        function_names(),
        [
            "config-redeploy",
            "efs-backup",
            "secret-rotation",
            "taskdef-janitor"
        ],
        "a new function needs its two tests above"
    );
}

/// What the wiki tasks need beyond wiki-boot's own calls: mounting the uploads (EFS IAM
/// authorization, checked by EFS, not an API call).
const WIKI_TASK_NEEDS: [&str; 2] = [
    "elasticfilesystem:ClientMount",
    "elasticfilesystem:ClientWrite",
];

#[test]
fn wiki_task_role_grants_exactly_what_wiki_boot_calls() {
    let task_role = raw("WikiTaskDefinition")["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
        .as_str()
        .expect("the wiki's task role is a role of this template");
    let (managed, grants) = grants_of_role(task_role);
    assert!(
        managed.is_empty(),
        "{task_role}: managed policies {managed:?}"
    );
    let mut granted = BTreeSet::new();
    for g in &grants {
        for a in &g.actions {
            assert!(!a.contains('*'), "{task_role}: wildcard action {a}");
            assert!(
                !g.resources.iter().any(|r| r == "*"),
                "{task_role}: {a} on Resource \"*\""
            );
            if !WIKI_TASK_NEEDS.contains(&a.as_str()) {
                granted.insert(a.clone());
            }
        }
    }
    // what wiki-boot's calls need (wiki/boot/src, through the same table)
    let needed: BTreeSet<String> = scan_crate("wiki-boot", Kind::IamActions)
        .into_keys()
        .collect();
    assert!(!needed.is_empty(), "wiki/boot/src makes no AWS call?");
    assert_eq!(
        lower(&granted),
        lower(&needed),
        "{task_role} vs the calls in wiki/boot/src"
    );
    // wiki/boot/iam-actions.txt lists IAM actions (the task role's), and says the same
    assert_eq!(
        lower(&declared_actions("wiki-boot")),
        lower(&needed),
        "wiki/boot/iam-actions.txt vs the calls in wiki/boot/src"
    );
    assert_eq!(
        raw("JobsTaskDefinition")["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0],
        task_role,
        "the jobs task runs wiki-boot with the wiki's task role"
    );
}

// ---------------------------------------------------------------------------------------------
// The scanner itself
// ---------------------------------------------------------------------------------------------

/// The IAM actions `src` needs.
fn scan(src: &str) -> BTreeSet<String> {
    scan_source(src, Kind::IamActions).into_keys().collect()
}

/// The operations `src` calls.
fn ops(src: &str) -> BTreeSet<String> {
    scan_source(src, Kind::Operations).into_keys().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn scanner_finds_calls_across_lines_fields_and_paginators() {
    let src = r#"
        async fn f(c: &Clients) {
            let out = c
                .s3
                .put_object()
                .bucket(b)
                .send()
                .await;
            self.ecs.describe_services().cluster(x).send().await;
            let mut pages = secretsmanager.list_secrets().into_paginator().send();
            eventbridge.list_rules().send().await;
            clients.scheduler . get_schedule ( ).name(n).send().await;
        }
    "#;
    assert_eq!(
        scan(src),
        set(&[
            "ecs:DescribeServices",
            "events:ListRules",
            "s3:PutObject",
            "scheduler:GetSchedule",
            "secretsmanager:ListSecrets",
        ])
    );
}

#[test]
fn scanner_ignores_comments_strings_tests_and_non_operations() {
    let src = r##"
        // s3.delete_bucket() in a comment
        /* ecs.delete_cluster() in a block /* nested */ comment */
        /// doc: secretsmanager.delete_secret()
        fn f() {
            let s = "s3.delete_object()";
            let r = r#"ecs.delete_service()"#;
            let c = '"';
            let q = '\'';
            let u = '\u{1F600}';
            let client = s3.clone();
            let conf = ecs.config();
            let lifetime: &'static str = "x";
            s3.get_object().bucket(b).send();
        }
        #[cfg(test)]
        mod tests {
            fn t() { s3.delete_bucket().send(); }
        }
    "##;
    assert_eq!(scan(src), set(&["s3:GetObject"]));
}

#[test]
fn scanner_maps_s3_data_plane_calls_through_the_table() {
    let src = r#"
        fn f() {
            s3.create_multipart_upload().send();
            s3.upload_part().send();
            s3.complete_multipart_upload().send();
            s3.abort_multipart_upload().send();
            s3.head_object().key(k).send();
            s3.list_objects_v2().prefix(p).send();
            s3.list_object_versions().prefix(p).send();
            s3.get_object().key(k).version_id(v).send();
            s3.put_object_tagging().key(k).send();
        }
    "#;
    assert_eq!(
        scan(src),
        set(&[
            "s3:AbortMultipartUpload",
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:ListBucket",
            "s3:ListBucketVersions",
            "s3:PutObject",
            "s3:PutObjectTagging",
        ])
    );
    // iam-actions.txt lists the operations themselves
    assert_eq!(
        ops(src),
        set(&[
            "s3:AbortMultipartUpload",
            "s3:CompleteMultipartUpload",
            "s3:CreateMultipartUpload",
            "s3:GetObject",
            "s3:HeadObject",
            "s3:ListObjectVersions",
            "s3:ListObjectsV2",
            "s3:PutObjectTagging",
            "s3:UploadPart",
        ])
    );
    assert_eq!(
        scan("fn f() { s3.get_object().set_version_id(v).send(); }"),
        set(&["s3:GetObject", "s3:GetObjectVersion"])
    );
    assert_eq!(
        scan("fn f() { s3.delete_object().key(k).version_id(v).send(); }"),
        set(&["s3:DeleteObjectVersion"])
    );
    assert_eq!(
        scan("fn f() { s3.get_object_tagging().key(k).version_id(v).send(); }"),
        set(&["s3:GetObjectVersionTagging"])
    );
    assert_eq!(
        scan("fn f() { s3.put_object().tagging(t).send(); }"),
        set(&["s3:PutObject", "s3:PutObjectTagging"])
    );
    assert_eq!(
        scan(
            r#"fn f() { let src = format!("{b}/{k}?versionId={v}"); s3.copy_object().copy_source(src).send(); }"#
        ),
        set(&["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"])
    );
}

#[test]
fn scanner_counts_calls_through_shared_ecs() {
    assert_eq!(
        scan("fn f() { shared::ecs::redeploy(&c.ecs, a, b, None).await; }"),
        set(&["ecs:DescribeServices", "ecs:UpdateService"])
    );
    assert_eq!(
        scan("use shared::ecs; fn f() { ecs::describe(&c.ecs, a, b).await; }"),
        set(&["ecs:DescribeServices"])
    );
    assert_eq!(
        scan("use shared::ecs::{decide, force_new_deployment}; fn f() {}"),
        set(&["ecs:UpdateService"])
    );
    assert_eq!(scan("use shared::ecs::decide; fn f() {}"), set(&[]));
    assert_eq!(
        scan("fn f() { shared::lease::acquire(&s3, b, k, h, t).await; }"),
        set(&["s3:PutObject", "s3:GetObject"])
    );
    assert_eq!(
        scan("pub use shared::lease::{Lease, release};"),
        set(&["s3:DeleteObject"])
    );
}

// ---------------------------------------------------------------------------------------------
// The rest of the template's promises
// ---------------------------------------------------------------------------------------------

fn raw(id: &str) -> &'static Value {
    let r = &rendered().template["Resources"][id];
    assert!(!r.is_null(), "template.yaml has no resource {id}");
    r
}

/// A function property, or the Globals value when the function does not set it.
fn function_property<'a>(id: &str, key: &str) -> &'a Value {
    let own = &raw(id)["Properties"][key];
    if own.is_null() {
        &rendered().template["Globals"]["Function"][key]
    } else {
        own
    }
}

#[test]
fn functions_build_with_cargo_lambda_for_arm64_and_log_json() {
    let functions = template_functions();
    assert_eq!(
        functions.len(),
        makefile_artifacts().len(),
        "every build- target of the Makefile builds a function of the template"
    );
    // One cargo invocation builds all four: the Makefile's FUNCTIONS names exactly them.
    let makefile = std::fs::read_to_string(paths::root().join("Makefile")).expect("Makefile");
    let listed: BTreeSet<&str> = makefile
        .lines()
        .find_map(|l| l.strip_prefix("FUNCTIONS := "))
        .expect("Makefile: FUNCTIONS := …")
        .split_whitespace()
        .collect();
    let bins: BTreeSet<&str> = functions.keys().map(String::as_str).collect();
    assert_eq!(
        listed, bins,
        "Makefile FUNCTIONS = the template's functions"
    );
    // Built in the source tree (no copy of the workspace and its target/ per function).
    let samconfig =
        std::fs::read_to_string(paths::root().join("samconfig.toml")).expect("samconfig.toml");
    assert!(
        samconfig.contains("build_in_source = true"),
        "samconfig.toml: build_in_source = true"
    );
    for (bin, id) in functions {
        let r = raw(&id);
        assert_eq!(r["Metadata"]["BuildMethod"], "makefile", "{id}");
        assert_eq!(
            r["Properties"]["CodeUri"], ".",
            "{id}: CodeUri is the workspace root"
        );
        let manifest = std::fs::read_to_string(
            paths::root()
                .join("functions")
                .join(&bin)
                .join("Cargo.toml"),
        )
        .expect("the function's Cargo.toml");
        assert!(
            manifest.contains(&format!("name = \"{bin}\"")),
            "{id}: functions/{bin} has no binary {bin}"
        );
        assert_eq!(function_property(&id, "Runtime"), "provided.al2023", "{id}");
        assert_eq!(
            function_property(&id, "Architectures"),
            &serde_json::json!(["arm64"]),
            "{id}"
        );
        assert_eq!(function_property(&id, "Handler"), "bootstrap", "{id}");
        assert_eq!(
            function_property(&id, "LoggingConfig")["LogFormat"],
            "JSON",
            "{id}"
        );
        let on_failure = &r["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"];
        assert_eq!(
            on_failure["Type"], "SNS",
            "{id}: failures go to the alert topic"
        );
        assert_eq!(on_failure["Destination"]["Ref"], "AlertTopic", "{id}");
    }
}

#[test]
fn functions_get_the_settings_their_code_reads() {
    let expected: [(&str, &[&str]); 4] = [
        (
            "config-redeploy",
            &[
                "CONFIG_BUCKET",
                "CONFIG_PREFIX",
                "ECS_CLUSTER",
                "ECS_SERVICE",
            ],
        ),
        (
            "secret-rotation",
            &[
                "ROTATION_STRATEGY",
                "EXCLUDE_CHARACTERS",
                "PASSWORD_LENGTH",
                "DB_ENDPOINT",
                "ECS_CLUSTER",
                "ECS_SERVICE",
                "ECS_TASK_FAMILY",
            ],
        ),
        (
            "efs-backup",
            &[
                "SOURCE_DIR",
                "BACKUP_BUCKET",
                "BACKUP_PREFIX",
                "KEEP_SNAPSHOTS",
                "RETENTION_DAYS",
                "UPLOAD_CONCURRENCY",
            ],
        ),
        (
            "taskdef-janitor",
            &[
                "FAMILY_PREFIXES",
                "KEEP_REVISIONS",
                "DELETE_AFTER_DAYS",
                "PURGE_PLAINTEXT",
                "DRY_RUN",
            ],
        ),
    ];
    let functions = template_functions();
    for (bin, vars) in expected {
        let env = &raw(&functions[bin])["Properties"]["Environment"]["Variables"];
        for v in vars {
            assert!(!env[*v].is_null(), "{bin}: {v} is not set");
        }
        // every variable the template sets is one the code reads
        let sources: String = rust_files(&paths::root().join("functions").join(bin).join("src"))
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read source"))
            .collect();
        if sources.contains("Env::from_process") {
            for name in env.as_object().expect("variables").keys() {
                assert!(
                    sources.contains(&format!("\"{name}\"")),
                    "{bin}: the template sets {name}, which functions/{bin}/src never reads"
                );
            }
        }
    }
    let backup = &raw(&functions["efs-backup"]);
    assert_eq!(
        backup["Properties"]["Environment"]["Variables"]["SOURCE_DIR"],
        "/mnt/wiki"
    );
    assert_eq!(
        backup["Properties"]["FileSystemConfigs"][0]["LocalMountPath"],
        "/mnt/wiki"
    );
}

#[test]
fn efs_backup_alarms_on_what_it_could_not_back_up() {
    // The metric names efs-backup records (functions/efs-backup/src/backup.rs::record_metrics).
    let code = std::fs::read_to_string(
        wikiops_tests::paths::root().join("functions/efs-backup/src/backup.rs"),
    )
    .expect("backup.rs");
    for (alarm, metric) in [
        ("EfsBackupUnreadableAlarm", "UnreadablePaths"),
        ("EfsBackupRefusedAlarm", "FilesRefused"),
        ("EfsBackupChangedDuringReadAlarm", "FilesChangedDuringRead"),
    ] {
        let p = &raw(alarm)["Properties"];
        assert_eq!(p["Namespace"], "wikiops", "{alarm}");
        assert_eq!(p["MetricName"], metric, "{alarm}");
        assert!(
            code.contains(&format!("counter!(\"{metric}\")")),
            "{alarm}: efs-backup records no {metric}"
        );
        assert_eq!(
            p["Dimensions"],
            serde_json::json!([{"Name": "Function", "Value": "efs-backup"}]),
            "{alarm}: the dimension shared::metrics::init sets"
        );
        assert_eq!(p["Statistic"], "Sum", "{alarm}");
        assert_eq!(p["Threshold"], 1, "{alarm}: one path is enough");
        assert_eq!(p["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
        assert_eq!(p["TreatMissingData"], "notBreaching", "{alarm}");
        assert_eq!(
            p["AlarmActions"],
            serde_json::json!([{"Ref": "AlertTopic"}])
        );
    }
}

#[test]
fn backup_lifecycle_outlives_every_kept_snapshot() {
    let t = &rendered().template;
    let allowed = t["Parameters"]["BackupRetentionDays"]["AllowedValues"]
        .as_array()
        .expect("BackupRetentionDays.AllowedValues");
    for days in allowed {
        let days = days.as_str().expect("string");
        let n: u64 = days.parse().expect("a number of days");
        assert_eq!(
            t["Mappings"]["BackupLifecycle"][days]["NoncurrentDays"],
            serde_json::json!(n + 1),
            "noncurrent versions must live RETENTION_DAYS + 1 days ({days})"
        );
    }
    let rules = raw("BackupBucket")["Properties"]["LifecycleConfiguration"]["Rules"]
        .as_array()
        .expect("lifecycle rules");
    let expire = rules
        .iter()
        .find(|r| !r["NoncurrentVersionExpiration"].is_null())
        .expect("a noncurrent-version rule");
    assert_eq!(
        expire["NoncurrentVersionExpiration"]["NoncurrentDays"]["Fn::FindInMap"],
        serde_json::json!(["BackupLifecycle", {"Ref": "BackupRetentionDays"}, "NoncurrentDays"])
    );
    assert!(
        expire["NoncurrentVersionExpiration"]["NewerNoncurrentVersions"].is_null(),
        "a version-count limit could expire versions a kept snapshot references"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1)
    );
    let functions = template_functions();
    assert_eq!(
        raw(&functions["efs-backup"])["Properties"]["Environment"]["Variables"]["RETENTION_DAYS"]["Ref"],
        "BackupRetentionDays"
    );
    assert_eq!(
        raw("BackupBucket")["Properties"]["VersioningConfiguration"]["Status"],
        "Enabled"
    );
}

/// Whether a Step Functions Choice rule matches `input` (the operators the template uses).
fn choice_matches(rule: &Value, input: &Value) -> bool {
    if let Some(all) = rule["And"].as_array() {
        return all.iter().all(|r| choice_matches(r, input));
    }
    if let Some(any) = rule["Or"].as_array() {
        return any.iter().any(|r| choice_matches(r, input));
    }
    let path = rule["Variable"].as_str().expect("a Variable");
    let value = input
        .pointer(&path.trim_start_matches('$').replace('.', "/"))
        .unwrap_or(&Value::Null);
    if let Some(s) = rule["StringEquals"].as_str() {
        return value.as_str() == Some(s);
    }
    if let Some(n) = rule["NumericLessThan"].as_f64() {
        return value.as_f64().is_some_and(|v| v < n);
    }
    panic!("unsupported choice rule {rule}");
}

#[test]
fn the_backup_loop_waits_for_a_held_lease_or_a_db_snapshot_and_stops_on_every_other_status() {
    let states = &raw("BackupStateMachine")["Properties"]["Definition"]["States"];
    let choice = &states["Complete?"];
    let next = |status: &str, iteration: u64| -> String {
        let input =
            serde_json::json!({"result": {"status": status}, "loop": {"iteration": iteration}});
        let rules = choice["Choices"].as_array().expect("choices");
        rules
            .iter()
            .find(|r| choice_matches(r, &input))
            .map_or(&choice["Default"], |r| &r["Next"])
            .as_str()
            .expect("a next state")
            .to_string()
    };
    assert_eq!(next("incomplete", 1), "Backup");
    assert_eq!(next("busy", 1), "WaitAMinute");
    assert_eq!(next("waiting", 1), "WaitAMinute");
    assert_eq!(states["WaitAMinute"]["Type"], "Wait");
    assert_eq!(states["WaitAMinute"]["Next"], "Backup");
    assert!(
        states["WaitAMinute"]["Seconds"]
            .as_u64()
            .is_some_and(|s| s >= 10)
    );
    // The schedule takes a recovery point; the task passes the input's action on.
    assert_eq!(
        states["Backup"]["Parameters"]["Payload"]["action.$"],
        "$.action"
    );
    let schedule = &raw("BackupStateMachine")["Properties"]["Events"]["Daily"]["Properties"];
    let input: Value = serde_json::from_str(schedule["Input"].as_str().unwrap()).unwrap();
    assert_eq!(input["action"], "recovery-point");
    for status in ["incomplete", "busy", "waiting"] {
        assert_eq!(
            next(status, 96),
            "TooManyRounds",
            "{status} at the last round"
        );
    }
    for status in ["complete", "partial", "dry_run"] {
        assert_eq!(next(status, 1), "Done", "{status}");
    }
    assert_eq!(states["TooManyRounds"]["Type"], "Fail");
}

#[test]
fn wiki_tasks_get_credentials_through_secrets_and_uploads_through_efs_iam() {
    for id in ["WikiTaskDefinition", "JobsTaskDefinition"] {
        let td = &raw(id)["Properties"];
        assert_ne!(
            td["ExecutionRoleArn"], td["TaskRoleArn"],
            "{id}: task and execution roles differ"
        );
        for container in taskdef::containers(raw(id)) {
            let name = &container["Name"];
            for var in taskdef::environment(container) {
                let upper = var.to_ascii_uppercase();
                assert!(
                    !["PASSWORD", "SECRET", "TOKEN", "_KEY", "_USER"]
                        .iter()
                        .any(|w| upper.contains(w)),
                    "{id}/{name}: {var} is a plaintext environment variable; use secrets/valueFrom"
                );
            }
            let secrets = taskdef::secret_names(container);
            for s in ["DB_USER", "DB_PASSWORD", "WIKI_SECRET_KEY"] {
                assert!(secrets.contains(s), "{id}/{name}: {s} not in secrets");
            }
            assert_eq!(
                container["Image"],
                serde_json::json!({"Ref": "ImageUri"}),
                "{id}/{name} runs the wiki's image"
            );
        }
    }
    let jobs = taskdef::container(raw("JobsTaskDefinition"), "wiki").expect("jobs container");
    assert_eq!(jobs["Command"], serde_json::json!(["wiki-boot", "jobs"]));
    let wiki = &raw("WikiTaskDefinition")["Properties"];
    let volume = &wiki["Volumes"][0]["EFSVolumeConfiguration"];
    assert_eq!(volume["TransitEncryption"], "ENABLED");
    assert_eq!(volume["AuthorizationConfig"]["IAM"], "ENABLED");
    assert_eq!(
        volume["AuthorizationConfig"]["AccessPointId"]["Ref"],
        "WikiAccessPoint"
    );
    let web = taskdef::container(raw("WikiTaskDefinition"), "wiki").expect("web container");
    assert_eq!(
        web["MountPoints"][0]["ContainerPath"],
        "/var/www/html/images"
    );
    for ap in ["WikiAccessPoint", "BackupAccessPoint"] {
        let user = &raw(ap)["Properties"]["PosixUser"];
        assert_eq!(
            (user["Uid"].as_str(), user["Gid"].as_str()),
            (Some("33"), Some("33")),
            "{ap}"
        );
    }
    let service = &raw("WikiService")["Properties"];
    assert_eq!(
        service["DeploymentConfiguration"]["DeploymentCircuitBreaker"],
        serde_json::json!({"Enable": true, "Rollback": true})
    );
    // Bake on alarms: 5xx and unhealthy targets fail a deployment (and roll it back) like a
    // failed health check; both alarms exist and watch the wiki's target group
    // (deployment_alarms_watch_only_the_wikis_target_group).
    assert_eq!(
        service["DeploymentConfiguration"]["Alarms"],
        serde_json::json!({
            "AlarmNames": [{"Ref": "WikiTarget5xxAlarm"}, {"Ref": "UnhealthyHostsAlarm"}],
            "Enable": true,
            "Rollback": true
        })
    );
    for alarm in ["WikiTarget5xxAlarm", "UnhealthyHostsAlarm"] {
        let a = raw(alarm);
        assert_eq!(a["Type"], "AWS::CloudWatch::Alarm", "{alarm}");
        assert!(
            a["Properties"].to_string().contains("LoadBalancerFullName"),
            "{alarm} watches the wiki's load balancer"
        );
    }
    assert_eq!(
        raw("WikiTargetGroup")["Properties"]["HealthCheckPath"],
        "/api.php?action=query&meta=siteinfo&format=json"
    );
}

#[test]
fn database_requires_tls_and_rotates_through_secret_rotation() {
    assert_eq!(
        raw("DbParameterGroup")["Properties"]["Parameters"]["require_secure_transport"],
        "1"
    );
    let db = &raw("Database")["Properties"];
    assert_eq!(db["StorageEncrypted"], true);
    assert_eq!(db["Engine"], "mysql");
    assert!(
        db["EngineVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with('8'))
    );
    let rotation = &raw("DbSecretRotation")["Properties"];
    assert_eq!(
        rotation["RotationLambdaARN"]["Fn::GetAtt"],
        serde_json::json!(["SecretRotationFunction", "Arn"])
    );
    let permission = &raw("SecretRotationInvokePermission")["Properties"];
    assert_eq!(permission["Principal"], "secretsmanager.amazonaws.com");
    assert_eq!(permission["SourceArn"]["Ref"], "DbSecret");
    let secret =
        raw("DbSecret")["Properties"]["GenerateSecretString"]["SecretStringTemplate"].to_string();
    assert!(
        secret.contains("masterarn"),
        "the alternating strategy needs masterarn"
    );
    // The master password goes only to the instance's own endpoint (secret-rotation's DB_ENDPOINT).
    let functions = template_functions();
    let pinned = &raw(&functions["secret-rotation"])["Properties"]["Environment"]["Variables"]["DB_ENDPOINT"]
        ["Fn::Sub"];
    assert_eq!(
        pinned,
        "${Database.Endpoint.Address}:${Database.Endpoint.Port}"
    );
    // The in-use check counts the scheduled jobs tasks: ECS_TASK_FAMILY is the jobs task
    // definition's family, and the ListTasks grant covers the cluster they run in.
    let rotation_env =
        &raw(&functions["secret-rotation"])["Properties"]["Environment"]["Variables"];
    assert_eq!(
        rotation_env["ECS_TASK_FAMILY"],
        raw("JobsTaskDefinition")["Properties"]["Family"],
        "secret-rotation's ECS_TASK_FAMILY is the jobs family"
    );
    assert_eq!(
        rotation_env["ECS_CLUSTER"],
        serde_json::json!({"Ref": "Cluster"})
    );
    let jobs_cluster = &raw("JobsRule")["Properties"]["Targets"][0]["Arn"];
    assert_eq!(
        jobs_cluster,
        &serde_json::json!({"Fn::GetAtt": ["Cluster", "Arn"]})
    );
    // The RDS CAs ship with the function: no CA layer or bundle parameter.
    for gone in ["DbCaLayerArn", "DbCaBundle"] {
        assert!(rendered().template["Parameters"][gone].is_null(), "{gone}");
    }
}

#[test]
fn dashboard_body_is_json_once_substituted() {
    let sub = &raw("Dashboard")["Properties"]["DashboardBody"]["Fn::Sub"];
    let body = sub[0]
        .as_str()
        .expect("DashboardBody is a !Sub of a string");
    // every ${…} becomes a plain word, as CloudFormation substitutes names, ARNs and URLs
    let mut text = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        text.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        text.push_str("substituted");
        rest = &rest[end + 1..];
    }
    text.push_str(rest);
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard body is JSON");
    let widgets = dashboard["widgets"].as_array().expect("widgets");
    assert!(widgets.len() >= 8, "{} widgets", widgets.len());
    assert!(
        text.contains("SEARCH('{wikiops,Function}"),
        "the functions' EMF metrics (namespace wikiops, dimension Function) are on the dashboard"
    );
}

// ---------------------------------------------------------------------------------------------
// First contact in a real account: one deploy, schema before web, the review's findings
// ---------------------------------------------------------------------------------------------

/// The logical ids a `Resource` list names with `Ref`.
fn refs(resources: &[Value]) -> BTreeSet<String> {
    resources
        .iter()
        .filter_map(|r| r["Ref"].as_str().map(str::to_string))
        .collect()
}

/// The secrets an execution role may read (logical ids).
fn readable_secrets(role_id: &str) -> BTreeSet<String> {
    let (_, grants) = grants_of_role(role_id);
    grants
        .iter()
        .filter(|g| {
            g.actions
                .iter()
                .any(|a| a == "secretsmanager:GetSecretValue")
        })
        .flat_map(|g| refs(&g.resources))
        .collect()
}

/// The README from `heading` up to the next `until` (a heading of the level that ends it).
fn readme_section(heading: &str, until: &str) -> String {
    let readme = std::fs::read_to_string(paths::root().join("README.md")).unwrap();
    readme
        .split(heading)
        .nth(1)
        .and_then(|s| s.split(until).next())
        .unwrap_or_else(|| panic!("README has no {heading:?} section"))
        .to_string()
}

#[test]
fn one_deploy_and_no_saved_parameter_scales_the_wiki_to_zero() {
    let t = &rendered().template;
    assert!(
        t["Parameters"]["DesiredTasks"].is_null(),
        "no DesiredTasks: a value saved by `sam deploy --guided` would come back with every deploy"
    );
    for p in ["MinTasks", "MaxTasks"] {
        assert!(
            t["Parameters"][p]["MinValue"]
                .as_u64()
                .is_some_and(|n| n >= 1),
            "{p} cannot be 0"
        );
    }
    let target = &raw("WikiScalableTarget")["Properties"];
    assert_eq!(
        target["MinCapacity"],
        serde_json::json!({"Ref": "MinTasks"})
    );
    let samconfig = std::fs::read_to_string(paths::root().join("samconfig.toml")).unwrap();
    for word in ["DesiredTasks", "MinTasks=0", "MinTasks = 0"] {
        assert!(!samconfig.contains(word), "samconfig.toml mentions {word}");
    }
    // The README's deploy steps: build, deploy, nothing by hand in between.
    let deploy = readme_section("\n## Deploy", "\n### ");
    for manual in ["aws s3 cp", "DesiredTasks=0", "publish-layer-version"] {
        assert!(
            !deploy.contains(manual),
            "README Deploy still asks for {manual}"
        );
    }
    assert!(
        deploy.contains("scripts/push-image"),
        "README Deploy: the image step"
    );
    // The seed: create-only, and only the example's key.
    let (_, grants) = grants_of_role("WikiTaskRole");
    // (Besides the image's list under .wikiops/, checked with the bucket policy.)
    let puts: Vec<&Grant> = grants
        .iter()
        .filter(|g| g.actions.iter().any(|a| a == "s3:PutObject"))
        .filter(|g| {
            !g.resources
                .iter()
                .any(|r| r.to_string().contains(".wikiops/"))
        })
        .collect();
    assert_eq!(
        puts.len(),
        1,
        "one PutObject grant on configuration objects"
    );
    let role = &resources(&rendered().template)["WikiTaskRole"]["Properties"];
    let seed = as_list(&role["Policies"][0]["PolicyDocument"]["Statement"])
        .into_iter()
        .find(|st| st["Sid"] == "SeedConfig")
        .expect("the seed statement");
    assert_eq!(
        seed["Condition"],
        serde_json::json!({"StringEquals": {"s3:if-none-match": "*"}}),
        "the task role may only create, never replace, a configuration object"
    );
    assert_eq!(
        seed["Resource"]["Fn::Sub"],
        "${ConfigBucket.Arn}/${ConfigPrefix}LocalSettings.php"
    );
    // The seed uploads every file of wiki/config; the grant names each one.
    let examples: Vec<String> = std::fs::read_dir(paths::root().join("wiki/config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        examples,
        vec!["LocalSettings.php"],
        "a new example file needs its key in the task role's SeedConfig grant"
    );
    // The image carries the example the seed uploads.
    let dockerfile = std::fs::read_to_string(paths::root().join("wiki/Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY wiki/config/ /usr/local/share/wikiops/config-example/"));
    assert!(dockerfile.contains("CONFIG_SEED_DIR=/usr/local/share/wikiops/config-example"));
}

#[test]
fn every_task_runs_its_schema_step_before_it_serves() {
    let td = raw("WikiTaskDefinition");
    let schema = taskdef::container(td, "schema").expect("a schema container");
    let web = taskdef::container(td, "wiki").expect("the web container");
    assert_eq!(
        schema["Command"],
        serde_json::json!(["wiki-boot", "schema"])
    );
    assert_eq!(
        schema["Essential"], false,
        "the schema step exits when done"
    );
    assert_eq!(web["Essential"], true);
    assert_eq!(
        web["DependsOn"],
        serde_json::json!([{"ContainerName": "schema", "Condition": "SUCCESS"}]),
        "the web container starts only after the schema step exited 0"
    );
    assert_eq!(
        raw("WikiService")["Properties"]["LoadBalancers"][0]["ContainerName"],
        "wiki"
    );
    // No schema task started from elsewhere (an EventBridge rule races the web tasks).
    for (id, r) in resources(&rendered().template) {
        assert_ne!(
            r["Properties"]["Family"]["Fn::Sub"], "${AWS::StackName}_wiki-schema",
            "{id}"
        );
        for target in as_list(&r["Properties"]["Targets"]) {
            let task = &target["EcsParameters"]["TaskDefinitionArn"]["Ref"];
            assert!(
                task.is_null() || task == "JobsTaskDefinition",
                "{id} starts {task}"
            );
        }
    }
    // The master user and the administrator's password reach the schema container only.
    let privileged = ["DbMasterSecret", "WikiAdminPassword"];
    for (id, r) in resources(&rendered().template) {
        if r["Type"] != "AWS::ECS::TaskDefinition" {
            continue;
        }
        let mut used = BTreeSet::new();
        for c in taskdef::containers(r) {
            let ids = taskdef::secret_ids(c);
            if !(id == "WikiTaskDefinition" && c["Name"] == "schema") {
                for p in privileged {
                    assert!(!ids.contains(p), "{id}/{}: reads {p}", c["Name"]);
                }
            }
            used.extend(ids);
        }
        // Each task definition has its own execution role, reading exactly its secrets.
        let role = r["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
            .as_str()
            .expect("an execution role of this template");
        assert_eq!(
            readable_secrets(role),
            used,
            "{id}: {role} reads exactly its task's secrets"
        );
    }
    let roles: BTreeSet<String> = ["WikiTaskDefinition", "JobsTaskDefinition"]
        .iter()
        .map(|id| raw(id)["Properties"]["ExecutionRoleArn"].to_string())
        .collect();
    assert_eq!(roles.len(), 2, "one execution role per task definition");
}

#[test]
fn the_rotation_test_at_schedule_creation_finds_the_wiki_user() {
    let schedule = raw("DbSecretRotation");
    assert_eq!(schedule["Properties"]["RotateImmediatelyOnUpdate"], false);
    assert!(
        as_list(&schedule["DependsOn"])
            .iter()
            .any(|d| d == "WikiService"),
        "testSecret runs when the schedule is created: after the service, whose schema step creates the user"
    );
    // The user the secret names is the one the schema step creates (DB_USER from this secret).
    let schema = taskdef::container(raw("WikiTaskDefinition"), "schema").unwrap();
    assert!(taskdef::secret_ids(schema).contains("DbSecret"));
}

#[test]
fn the_load_balancer_waits_for_the_gateway_and_talks_only_to_the_tasks() {
    let alb = raw("LoadBalancer");
    let handle = alb["DependsOn"]
        .as_str()
        .expect("LoadBalancer DependsOn one resource");
    assert_eq!(
        raw(handle)["Metadata"]["Attachment"]["Fn::If"][1]["Ref"],
        "InternetGatewayAttachment",
        "{handle} stands for the gateway attachment"
    );
    let sg = &raw("AlbSecurityGroup")["Properties"];
    let egress = as_list(&sg["SecurityGroupEgress"]);
    assert_eq!(
        egress.len(),
        1,
        "a declared egress rule removes EC2's default allow-all"
    );
    assert_eq!(
        egress[0]["CidrIp"], "127.0.0.1/32",
        "the placeholder reaches nothing"
    );
    let mut to = Vec::new();
    for r in resources(&rendered().template).values() {
        if r["Type"] == "AWS::EC2::SecurityGroupEgress"
            && r["Properties"]["GroupId"]["Ref"] == "AlbSecurityGroup"
        {
            to.push(r["Properties"]["DestinationSecurityGroupId"]["Ref"].clone());
            assert_eq!(r["Properties"]["FromPort"], 80);
        }
    }
    assert_eq!(to, vec![serde_json::json!("TaskSecurityGroup")]);
}

/// The number after `directive` in an Apache configuration (comment lines left out).
fn apache_number(conf: &str, directive: &str) -> u64 {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(directive)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{directive} in wikiops.conf"))
}

#[test]
fn apache_outlives_the_alb_idle_timeout_and_its_workers_fit_the_task() {
    let conf = std::fs::read_to_string(paths::root().join("wiki/apache/wikiops.conf")).unwrap();
    let idle: u64 = as_list(&raw("LoadBalancer")["Properties"]["LoadBalancerAttributes"])
        .iter()
        .find(|a| a["Key"] == "idle_timeout.timeout_seconds")
        .and_then(|a| a["Value"].as_str()?.parse().ok())
        .expect("the ALB's idle timeout");
    let keep_alive = apache_number(&conf, "KeepAliveTimeout");
    assert!(
        keep_alive > idle,
        "KeepAliveTimeout {keep_alive} must exceed the ALB's idle timeout {idle} (else 502s)"
    );
    let ini = std::fs::read_to_string(paths::root().join("wiki/php/wikiops.ini")).unwrap();
    let limit_mib: u64 = ini
        .lines()
        .find_map(|l| {
            l.strip_prefix("memory_limit = ")?
                .strip_suffix('M')?
                .parse()
                .ok()
        })
        .expect("memory_limit = <n>M");
    let workers = apache_number(&conf, "MaxRequestWorkers");
    let task: u64 = rendered().template["Parameters"]["TaskMemory"]["Default"]
        .as_u64()
        .expect("TaskMemory default");
    // OPcache's shared memory (128 MiB) and the parent, PHP's CLI-free container: 128 more.
    assert!(
        workers * limit_mib + 256 <= task,
        "{workers} workers x {limit_mib} MiB + 256 MiB > {task} MiB"
    );
    assert!(apache_number(&conf, "ServerLimit") >= workers);
}

#[test]
fn every_api_a_function_in_the_vpc_calls_has_an_endpoint_without_a_nat_gateway() {
    // With PrivateEgress=VpcEndpoints the private subnets have no way out but the endpoints:
    // S3's gateway endpoint, interface endpoints for the rest. EFS is mounted (NFS), not called.
    let endpoints: BTreeSet<String> = resources(&rendered().template)
        .values()
        .filter(|r| r["Type"] == "AWS::EC2::VPCEndpoint")
        .filter_map(|r| r["Properties"]["ServiceName"]["Fn::Sub"].as_str())
        .filter_map(|n| n.strip_prefix("com.amazonaws.${AWS::Region}."))
        .map(str::to_string)
        .collect();
    assert!(endpoints.contains("s3"), "{endpoints:?}");
    for (name, logical_id) in template_functions() {
        if raw(&logical_id)["Properties"]["VpcConfig"].is_null() {
            continue;
        }
        let services: BTreeSet<String> = declared_actions(&name)
            .iter()
            .filter_map(|a| a.split_once(':').map(|(svc, _)| svc.to_string()))
            .filter(|svc| svc != "elasticfilesystem")
            .collect();
        for svc in services {
            assert!(
                endpoints.contains(&svc),
                "{logical_id} (in the VPC) calls {svc}, which has no VPC endpoint: {endpoints:?}"
            );
        }
    }
}

#[test]
fn the_jobs_task_is_scheduled_only_after_the_services_schema_step() {
    let rule = raw("JobsRule");
    let depends: Vec<Value> = as_list(&rule["DependsOn"]);
    assert!(
        depends.iter().any(|d| d == "WikiService"),
        "JobsRule must wait for WikiService (its tasks run the schema step first): {depends:?}"
    );
    // ...and the service's tasks do run it first.
    let containers = raw("WikiTaskDefinition")["Properties"]["ContainerDefinitions"]
        .as_array()
        .expect("containers");
    let web = containers
        .iter()
        .find(|c| c["Name"] == "wiki")
        .expect("the wiki container");
    assert!(
        as_list(&web["DependsOn"])
            .iter()
            .any(|d| d["ContainerName"] == "schema" && d["Condition"] == "SUCCESS"),
        "{web}"
    );
}

#[test]
fn failed_schema_steps_and_jobs_runs_alert() {
    let filter = &raw("WikiBootFailedMetric")["Properties"];
    assert_eq!(filter["LogGroupName"]["Ref"], "WikiLogGroup");
    let pattern = filter["FilterPattern"].as_str().unwrap().trim_matches('"');
    let main = std::fs::read_to_string(paths::root().join("wiki/boot/src/main.rs")).unwrap();
    assert!(
        main.contains(&format!("\"{pattern}\"")),
        "wiki-boot logs {pattern:?} when it fails"
    );
    let metric = &filter["MetricTransformations"][0];
    let alarm = &raw("WikiBootFailedAlarm")["Properties"];
    assert_eq!(alarm["MetricName"], metric["MetricName"]);
    assert_eq!(alarm["Namespace"], metric["MetricNamespace"]);
    assert_eq!(alarm["AlarmActions"][0]["Ref"], "AlertTopic");
    let rule = &raw("JobsTaskFailedRule")["Properties"];
    let detail = &rule["EventPattern"]["detail"];
    assert_eq!(detail["lastStatus"], serde_json::json!(["STOPPED"]));
    assert_eq!(
        detail["group"][0]["Fn::Sub"],
        "family:${AWS::StackName}_wiki-jobs"
    );
    assert_eq!(
        detail["containers"]["exitCode"],
        serde_json::json!([{"anything-but": 0}])
    );
    assert_eq!(rule["Targets"][0]["Arn"]["Ref"], "AlertTopic");
}

#[test]
fn alerts_and_janitor_are_scoped_to_this_stack() {
    let rotation = &raw("RotationFailedRule")["Properties"]["EventPattern"]["detail"];
    assert_eq!(
        rotation["additionalEventData"]["SecretId"],
        serde_json::json!([{"Ref": "DbSecret"}])
    );
    let functions = template_functions();
    let janitor = raw(&functions["taskdef-janitor"]);
    let statements = as_list(&janitor["Properties"]["Policies"][0]["Statement"]);
    let delete = statements
        .iter()
        .find(|st| {
            as_list(&st["Action"])
                .iter()
                .any(|a| a == "ecs:DeleteTaskDefinitions")
        })
        .expect("the delete statement");
    let choice = &delete["Resource"]["Fn::If"];
    assert_eq!(choice[0], "HasJanitorPrefixes");
    assert!(
        choice[2]["Fn::Sub"]
            .as_str()
            .is_some_and(|s| s.ends_with("task-definition/${AWS::StackName}_*:*")),
        "without JanitorFamilyPrefixes, only this stack's families: {choice}"
    );
    assert_eq!(
        janitor["Properties"]["Environment"]["Variables"]["FAMILY_PREFIXES"]["Fn::If"][2]["Fn::Sub"],
        "${AWS::StackName}_"
    );
}

#[test]
fn the_database_follows_its_major_line_and_its_logs_expire() {
    let db = &raw("Database")["Properties"];
    let version = db["EngineVersion"].as_str().unwrap();
    assert!(
        version.split('.').count() == 2 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "EngineVersion {version}: the major line, not a minor RDS retires"
    );
    assert_eq!(db["AutoMinorVersionUpgrade"], true);
    let family = raw("DbParameterGroup")["Properties"]["Family"]
        .as_str()
        .unwrap();
    assert_eq!(family, format!("mysql{version}"));
    let id = db["DBInstanceIdentifier"]["Fn::Sub"][0].as_str().unwrap();
    let depends = as_list(&raw("Database")["DependsOn"]);
    for log in as_list(&db["EnableCloudwatchLogsExports"]) {
        let log = log.as_str().unwrap();
        let group = resources(&rendered().template)
            .iter()
            .find(|(_, r)| {
                r["Type"] == "AWS::Logs::LogGroup"
                    && r["Properties"]["LogGroupName"]["Fn::Sub"][0]
                        == format!("/aws/rds/instance/{id}/{log}")
            })
            .map(|(gid, r)| (gid.clone(), r))
            .unwrap_or_else(|| panic!("no log group for RDS's {log} log"));
        assert_eq!(
            group.1["Properties"]["RetentionInDays"]["Ref"],
            "LogRetentionDays"
        );
        assert!(
            depends.iter().any(|d| d == group.0.as_str()),
            "made before RDS writes to it"
        );
    }
}

#[test]
fn a_certificate_needs_a_host_name() {
    let rule = &rendered().template["Rules"]["CertificateNeedsHostname"];
    assert_eq!(
        rule["RuleCondition"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}]})
    );
    assert_eq!(
        rule["Assertions"][0]["Assert"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "WikiHostname"}, ""]}]})
    );
}

// ---------------------------------------------------------------------------------------------
// Every update, every delete, every stack name (issue 26)
// ---------------------------------------------------------------------------------------------

#[test]
fn a_deploy_leaves_the_task_count_to_autoscaling() {
    // A DesiredCount in the template is applied by every update that touches the service,
    // scaling a busy wiki back in; without one, CloudFormation omits it from updates.
    let service = &raw("WikiService")["Properties"];
    assert!(
        service["DesiredCount"].is_null(),
        "WikiService sets DesiredCount: every deploy would reset the task count"
    );
    // A new service starts with 1 task; registering the scalable target moves it to MinTasks.
    let target = &raw("WikiScalableTarget")["Properties"];
    assert_eq!(target["ScalableDimension"], "ecs:service:DesiredCount");
    assert_eq!(
        target["MinCapacity"],
        serde_json::json!({"Ref": "MinTasks"})
    );
    assert_eq!(
        target["MaxCapacity"],
        serde_json::json!({"Ref": "MaxTasks"})
    );
    assert_eq!(
        target["ResourceId"]["Fn::Sub"],
        "service/${Cluster}/${WikiService.Name}"
    );
}

/// `GenerateSecretString` of every generated secret, as deployed stacks hold them.
///
/// Change none of these. CloudFormation makes a new secret version whenever this property
/// changes (AWS::SecretsManager::Secret, GenerateSecretString: "When you make a change to this
/// property, a new secret version is created"): a new random password that RDS (the master
/// user's, set once through MasterUserPassword) and MySQL (the wiki's user, created by the first
/// schema step, then rotated by secret-rotation) do not have, the wiki's user name set back to
/// `wiki` whichever user rotation made current, and `$wgSecretKey` replaced (every session
/// ends). DbSecret's template also carries the database endpoint: only a new database (replaced,
/// so empty, and its user created anew by the schema step) changes it. To change a password's
/// shape, rotate it; to change a generator, make a new secret.
fn frozen_secret_generators() -> BTreeMap<&'static str, Value> {
    let exclude = "\"'`\\/@$:;&|<>(){}[]%#?!*~^,=+ ";
    BTreeMap::from([
        (
            "DbMasterSecret",
            serde_json::json!({
                "SecretStringTemplate": "{\"username\":\"wikiadmin\"}",
                "GenerateStringKey": "password",
                "PasswordLength": 32,
                "ExcludeCharacters": exclude,
            }),
        ),
        (
            "DbSecret",
            serde_json::json!({
                "SecretStringTemplate": {"Fn::Sub": [
                    "{\"engine\":\"mysql\",\"host\":\"${Host}\",\"port\":${Port},\"username\":\"wiki\",\"dbname\":\"wiki\",\"ssl\":true,\"masterarn\":\"${DbMasterSecret}\"}",
                    {
                        "Host": {"Fn::GetAtt": ["Database", "Endpoint.Address"]},
                        "Port": {"Fn::GetAtt": ["Database", "Endpoint.Port"]},
                    },
                ]},
                "GenerateStringKey": "password",
                "PasswordLength": 32,
                "ExcludeCharacters": exclude,
            }),
        ),
        (
            "WikiSecretKey",
            serde_json::json!({"PasswordLength": 64, "ExcludePunctuation": true}),
        ),
        (
            "WikiAdminPassword",
            serde_json::json!({"PasswordLength": 24, "ExcludeCharacters": exclude}),
        ),
    ])
}

#[test]
fn secret_generators_are_frozen() {
    let frozen = frozen_secret_generators();
    let mut seen = BTreeSet::new();
    for (id, r) in resources(&rendered().template) {
        let generator = &r["Properties"]["GenerateSecretString"];
        if generator.is_null() {
            continue;
        }
        let want = frozen.get(id.as_str()).unwrap_or_else(|| {
            panic!("{id}: a new generated secret gets its snapshot in frozen_secret_generators")
        });
        assert_eq!(
            generator, want,
            "{id}: GenerateSecretString changed, which would generate a new value that its users \
             do not have (see frozen_secret_generators)"
        );
        seen.insert(id.as_str());
    }
    assert_eq!(
        seen,
        frozen.keys().copied().collect(),
        "a frozen secret left the template"
    );
}

#[test]
fn the_slow_query_log_is_on_and_written_to_a_file() {
    let exported: Vec<Value> =
        as_list(&raw("Database")["Properties"]["EnableCloudwatchLogsExports"]);
    assert!(exported.iter().any(|l| l == "slowquery"));
    let params = &raw("DbParameterGroup")["Properties"]["Parameters"];
    assert_eq!(params["slow_query_log"], "1");
    assert_eq!(
        params["log_output"], "FILE",
        "RDS exports the log files only"
    );
    let long: f64 = params["long_query_time"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("long_query_time");
    assert!(long > 0.0 && long <= 10.0, "long_query_time {long}");
}

#[test]
fn every_allowed_storage_size_leaves_autoscaling_ten_percent() {
    let p = &rendered().template["Parameters"]["DbAllocatedStorage"];
    let (min, max) = (
        p["MinValue"].as_u64().unwrap(),
        p["MaxValue"].as_u64().unwrap(),
    );
    let ceiling = raw("Database")["Properties"]["MaxAllocatedStorage"]
        .as_u64()
        .expect("MaxAllocatedStorage, a number");
    assert!(min >= 20, "RDS MySQL gp3 takes 20 GiB or more");
    for allocated in min..=max {
        // RDS: the maximum storage threshold is at least 10% above the allocated storage.
        assert!(
            ceiling * 10 >= allocated * 11,
            "DbAllocatedStorage {allocated}: MaxAllocatedStorage {ceiling} is less than 10% above"
        );
    }
    let default = p["Default"].as_u64().unwrap();
    assert!((min..=max).contains(&default));
}

/// Name properties the template may build from the stack name: `(type, property, limit)`
/// (each resource type's CloudFormation schema).
const NAME_LIMITS: [(&str, &str, usize); 12] = [
    ("AWS::Lambda::Function", "FunctionName", 64),
    ("AWS::Scheduler::Schedule", "Name", 64),
    ("AWS::StepFunctions::StateMachine", "StateMachineName", 80),
    ("AWS::ECS::TaskDefinition", "Family", 255),
    ("AWS::Logs::LogGroup", "LogGroupName", 512),
    ("AWS::CloudWatch::Dashboard", "DashboardName", 255),
    (
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        "PolicyName",
        256,
    ),
    ("AWS::RDS::DBInstance", "DBInstanceIdentifier", 63),
    ("AWS::IAM::Role", "RoleName", 64),
    ("AWS::Events::Rule", "Name", 64),
    ("AWS::SNS::Topic", "TopicName", 256),
    ("AWS::S3::Bucket", "BucketName", 63),
];

/// Properties ending in "Name" that are labels, not names with a documented limit.
const NAME_LABELS: [(&str, &str); 1] = [("AWS::SNS::Topic", "DisplayName")];

/// The longest value a `Fn::Sub` string can take: 128 characters of stack name (CloudFormation's
/// limit), the longest account id, region and stack UUID.
fn longest_sub(text: &str) -> usize {
    let mut rest = text;
    let mut len = 0;
    while let Some(start) = rest.find("${") {
        len += start;
        let end = rest[start..].find('}').expect("a closed ${") + start;
        len += match &rest[start + 2..end] {
            "AWS::StackName" => 128,
            "AWS::AccountId" => 12,
            "AWS::Region" => 20, // longer than any region's name
            "StackUuid" => 36,
            other => panic!("no known length for ${{{other}}} in {text}"),
        };
        rest = &rest[end + 1..];
    }
    len + rest.len()
}

#[test]
fn names_built_from_the_stack_name_fit_for_every_stack_name() {
    // Stack names over 48 characters pushed "<stack>-taskdef-janitor" past 64.
    for (id, r) in resources(&rendered().transformed) {
        let ty = r["Type"].as_str().unwrap_or_default();
        let Some(props) = r["Properties"].as_object() else {
            continue;
        };
        for (key, value) in props {
            if !key.ends_with("Name") && key != "Family" && key != "DBInstanceIdentifier" {
                continue;
            }
            let text = match (&value["Fn::Sub"], value.as_str()) {
                (Value::String(s), _) => s.clone(),
                (Value::Array(a), _) => a[0].as_str().unwrap_or_default().to_string(),
                (_, Some(s)) => s.to_string(),
                _ => continue,
            };
            if !text.contains("${AWS::StackName}") {
                continue;
            }
            if NAME_LABELS.contains(&(ty, key.as_str())) {
                continue;
            }
            let limit = NAME_LIMITS
                .iter()
                .find(|(t, k, _)| *t == ty && k == key)
                .map(|(_, _, n)| *n)
                .unwrap_or_else(|| {
                    panic!("{id}.{key} ({ty}): add its length limit to NAME_LIMITS")
                });
            let longest = longest_sub(&text);
            assert!(
                longest <= limit,
                "{id}.{key} = {text:?} is {longest} characters with a 128-character stack name (limit {limit})"
            );
        }
    }
    assert_eq!(longest_sub("${AWS::StackName}-taskdef-janitor"), 144);
}

#[test]
fn this_stacks_family_prefix_starts_no_other_stacks_family() {
    let families: Vec<String> = resources(&rendered().template)
        .values()
        .filter(|r| r["Type"] == "AWS::ECS::TaskDefinition")
        .map(|r| {
            r["Properties"]["Family"]["Fn::Sub"]
                .as_str()
                .expect("Family: !Sub")
                .to_string()
        })
        .collect();
    assert!(!families.is_empty());
    let janitor = raw(&template_functions()["taskdef-janitor"]);
    let prefix = janitor["Properties"]["Environment"]["Variables"]["FAMILY_PREFIXES"]["Fn::If"][2]
        ["Fn::Sub"]
        .as_str()
        .expect("the default prefix");
    // A stack name holds letters, digits and "-" only, so no stack name's family but this one's
    // starts with "<name>_". Checked for names that share a beginning.
    let stacks = ["wikiops", "wikiops-staging", "wikiops-wiki", "wiki", "w"];
    for this in stacks {
        let prefix = prefix.replace("${AWS::StackName}", this);
        for other in stacks {
            for family in &families {
                assert!(family.starts_with("${AWS::StackName}_"), "{family}");
                let family = family.replace("${AWS::StackName}", other);
                assert_eq!(
                    family.starts_with(&prefix),
                    this == other,
                    "stack {this}'s prefix {prefix:?} and stack {other}'s family {family}"
                );
            }
        }
    }
    // The delete permission names the same families.
    let statements = as_list(&janitor["Properties"]["Policies"][0]["Statement"]);
    let delete = statements
        .iter()
        .find(|st| st["Sid"] == "Delete")
        .expect("the Delete statement");
    assert!(
        delete["Resource"]["Fn::If"][2]["Fn::Sub"]
            .as_str()
            .is_some_and(|s| s.ends_with(&format!("task-definition/{prefix}*:*")))
    );
}

/// The `(Name, Value)` dimensions of an alarm's single metric.
fn alarm_dimensions(alarm: &Value) -> BTreeMap<String, Value> {
    as_list(&alarm["Properties"]["Dimensions"])
        .iter()
        .map(|d| (d["Name"].as_str().unwrap().to_string(), d["Value"].clone()))
        .collect()
}

fn the_wikis_target_group() -> BTreeMap<String, Value> {
    BTreeMap::from([
        (
            "LoadBalancer".to_string(),
            serde_json::json!({"Fn::GetAtt": ["LoadBalancer", "LoadBalancerFullName"]}),
        ),
        (
            "TargetGroup".to_string(),
            serde_json::json!({"Fn::GetAtt": ["WikiTargetGroup", "TargetGroupFullName"]}),
        ),
    ])
}

#[test]
fn deployment_alarms_watch_only_the_wikis_target_group() {
    let alarms = as_list(
        &raw("WikiService")["Properties"]["DeploymentConfiguration"]["Alarms"]["AlarmNames"],
    );
    assert!(!alarms.is_empty());
    for name in alarms {
        let id = name["Ref"].as_str().expect("an alarm of this template");
        let alarm = raw(id);
        assert!(
            alarm["Properties"]["Metrics"].is_null(),
            "{id}: one metric, no math over load-balancer-wide ones"
        );
        assert_eq!(
            alarm["Properties"]["Namespace"], "AWS/ApplicationELB",
            "{id}"
        );
        assert_eq!(
            alarm_dimensions(alarm),
            the_wikis_target_group(),
            "{id}: the wiki's target group only"
        );
    }
}

#[test]
fn no_healthy_task_alerts_and_missing_data_breaches() {
    let alarm = raw("NoHealthyHostAlarm");
    let p = &alarm["Properties"];
    assert_eq!(p["MetricName"], "HealthyHostCount");
    assert_eq!(alarm_dimensions(alarm), the_wikis_target_group());
    assert_eq!(p["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(p["Threshold"], 1);
    assert_eq!(p["TreatMissingData"], "breaching");
    assert_eq!(p["AlarmActions"][0]["Ref"], "AlertTopic");
    assert_eq!(
        alarm["DependsOn"], "WikiService",
        "created once the service is healthy"
    );
}

#[test]
fn the_jobs_schedule_turns_off_before_a_delete() {
    let rule = &raw("JobsRule")["Properties"];
    assert_eq!(
        rule["State"],
        serde_json::json!({"Fn::If": ["JobsOn", "ENABLED", "DISABLED"]})
    );
    let t = &rendered().template;
    assert_eq!(t["Parameters"]["JobsEnabled"]["Default"], "true");
    assert_eq!(
        t["Conditions"]["JobsOn"],
        serde_json::json!({"Fn::Equals": [{"Ref": "JobsEnabled"}, "true"]})
    );
    // The README's delete steps: the schedule off, the last run ended, then what stays.
    let delete = readme_section("\n### Deleting the stack", "\n## ");
    for step in [
        "JobsEnabled=false",
        "DbDeletionProtection=false",
        "list-tasks",
        "snapshot",
        "EFS",
        "bucket",
    ] {
        assert!(delete.contains(step), "README delete steps: {step}");
    }
}

#[test]
fn wiki_boot_is_cross_compiled_without_emulation() {
    let dockerfile = std::fs::read_to_string(paths::root().join("wiki/Dockerfile")).unwrap();
    let boot = dockerfile
        .split("\nFROM ")
        .find(|stage| stage.contains(" AS boot"))
        .expect("the boot stage");
    assert!(
        boot.starts_with("--platform=$BUILDPLATFORM "),
        "the boot stage runs on the build machine's platform: {}",
        boot.lines().next().unwrap_or_default()
    );
    // Each image architecture (push-image's --arch) maps to a Rust target and a cross linker.
    for (arch, triple) in [
        ("amd64", "x86_64-unknown-linux-gnu"),
        ("arm64", "aarch64-unknown-linux-gnu"),
    ] {
        assert!(
            boot.contains(&format!("{arch}) triple={triple};")),
            "TARGETARCH {arch}"
        );
        let env = triple.to_uppercase().replace('-', "_");
        assert!(
            boot.contains(&format!("CARGO_TARGET_{env}_LINKER=")),
            "{triple}: a linker for the target"
        );
        assert!(boot.contains(&format!("CC_{}=", triple.replace('-', "_"))));
    }
    assert!(boot.contains("cargo build --release --locked -p wiki-boot --target \"$triple\""));
    assert!(boot.contains("install -m 0755 \"target/$triple/release/wiki-boot\""));
}

#[test]
fn a_rebuild_of_the_same_commit_reuses_its_immutable_tag() {
    let script = std::fs::read_to_string(paths::root().join("scripts/push-image")).unwrap();
    assert!(script.contains("--image-tag-mutability IMMUTABLE"));
    // The default tag names the architecture: one commit, two images.
    assert!(script.contains("tag=\"$mediawiki-$commit-${platform#linux/}\""));
    // The tag is looked up before anything is built; a default tag found is reused, a given
    // one refused.
    let lookup = script
        .find("aws ecr describe-images")
        .expect("push-image looks the tag up");
    let build = script.find("\"$engine\" build").expect("the build");
    assert!(lookup < build, "the lookup comes before the build");
    let found = &script[lookup..build];
    assert!(found.contains("--image-ids imageTag=\"$tag\""));
    assert!(found.contains("if [ -n \"$explicit_tag\" ]; then\n    die "));
    assert!(found.contains("echo \"$uri\"\n  exit 0"));
}

/// Variables the platform sets: Lambda's runtime environment, ECS's task metadata and credentials.
const LAMBDA_SETS: [&str; 4] = [
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_LAMBDA_LOG_FORMAT",
];
const ECS_SETS: [&str; 2] = ["ECS_CONTAINER_METADATA_URI_V4", "AWS_REGION"];

fn reads_of(dirs: &[&str]) -> env_reads::Reads {
    let mut reads = env_reads::Reads::default();
    for dir in dirs {
        for f in rust_files(&paths::root().join(dir)) {
            reads.merge(env_reads::rust(&std::fs::read_to_string(f).unwrap()));
        }
    }
    reads
}

#[test]
fn every_variable_a_program_requires_is_set_and_every_one_set_is_read() {
    // The functions: their sources and the shared crate's.
    for (bin, id) in template_functions() {
        let own = reads_of(&[&format!("functions/{bin}/src")]);
        let mut all = own.clone();
        all.merge(reads_of(&["shared/src"]));
        let set: BTreeSet<String> = raw(&id)["Properties"]["Environment"]["Variables"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for v in &set {
            assert!(
                all.all.contains(v),
                "{bin}: the template sets {v}, which nothing reads"
            );
        }
        for v in &own.required {
            assert!(
                set.contains(v) || LAMBDA_SETS.contains(&v.as_str()),
                "{bin} requires {v}, which the template does not set"
            );
        }
    }
    // The containers: wiki-boot, LocalSettings.php and the Apache configuration read them; the
    // image sets some (ENV), wiki-boot hands some to Apache and PHP.
    let root = paths::root();
    let mut reads = reads_of(&["wiki/boot/src", "shared/src"]);
    let boot_required = reads_of(&["wiki/boot/src"]).required;
    reads.merge(env_reads::php(
        &std::fs::read_to_string(root.join("wiki/config/LocalSettings.php")).unwrap(),
    ));
    reads.merge(env_reads::apache(
        &std::fs::read_to_string(root.join("wiki/apache/wikiops.conf")).unwrap(),
    ));
    let image =
        env_reads::dockerfile_env(&std::fs::read_to_string(root.join("wiki/Dockerfile")).unwrap());
    for v in &image {
        assert!(
            reads.all.contains(v),
            "wiki/Dockerfile sets {v}, which nothing reads"
        );
    }
    for (id, r) in resources(&rendered().template) {
        if r["Type"] != "AWS::ECS::TaskDefinition" {
            continue;
        }
        for c in taskdef::containers(r) {
            let name = &c["Name"];
            let mut set = taskdef::environment(c);
            set.extend(taskdef::secret_names(c));
            for v in &set {
                assert!(
                    reads.all.contains(v),
                    "{id}/{name}: sets {v}, which nothing reads"
                );
            }
            for v in &boot_required {
                assert!(
                    set.contains(v) || image.contains(v) || ECS_SETS.contains(&v.as_str()),
                    "{id}/{name}: wiki-boot requires {v}, which neither the template nor the image sets"
                );
            }
        }
    }
}

/// Runs `scripts/local-env` (with `args`) against a stub `aws` that answers for a stack whose
/// functions have exactly the environment the template sets, each value `deployed-<NAME>`; the
/// file it writes, by logical id.
fn local_env_file(args: &[&str]) -> serde_json::Map<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = vec![serde_json::json!({
        "LogicalResourceId": "ConfigBucket", "PhysicalResourceId": "wikiops-configbucket-1",
        "ResourceType": "AWS::S3::Bucket"})];
    for id in template_functions().values() {
        let physical = format!("wikiops-{id}-AbC123");
        stack.push(
            serde_json::json!({"LogicalResourceId": id, "PhysicalResourceId": physical,
            "ResourceType": "AWS::Lambda::Function"}),
        );
        let variables: serde_json::Map<String, Value> =
            raw(id)["Properties"]["Environment"]["Variables"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .map(|k| (k.clone(), Value::from(format!("deployed-{k}"))))
                        .collect()
                })
                .unwrap_or_default();
        let config = serde_json::json!({"FunctionName": physical,
            "Environment": {"Variables": variables}});
        std::fs::write(
            dir.path().join(format!("{physical}.json")),
            config.to_string(),
        )
        .unwrap();
    }
    let resources = serde_json::json!({ "StackResources": stack });
    std::fs::write(dir.path().join("resources.json"), resources.to_string()).unwrap();
    // The two calls the script makes, as the AWS CLI answers them (--output json).
    let stub = dir.path().join("aws");
    std::fs::write(
        &stub,
        "#!/bin/sh\nd=$(dirname \"$0\")\ncase \" $* \" in\n\
         *' cloudformation describe-stack-resources --stack-name wikiops '*) cat \"$d/resources.json\" ;;\n\
         *' lambda get-function-configuration '*)\n\
         \x20 while [ \"$1\" != --function-name ]; do shift; done; cat \"$d/$2.json\" ;;\n\
         *) echo \"unexpected: aws $*\" >&2; exit 1 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}:{}",
        dir.path().display(),
        paths::venv_bin("python3").parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(paths::root().join("scripts/local-env"))
        .current_dir(paths::root())
        .env("PATH", path)
        .args(args)
        .output()
        .expect("run scripts/local-env");
    assert!(
        out.status.success(),
        "scripts/local-env {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_object()
        .cloned()
        .expect("an object by logical id")
}

/// `scripts/local-env` writes, per function, every variable the template sets with its deployed
/// value and every one the function requires; every name in it is one the template declares (SAM
/// overrides only those), and by default each function that can change something is a dry run.
#[test]
fn local_env_gives_each_function_its_deployed_environment_as_a_dry_run() {
    let dry = local_env_file(&[]);
    let applied = local_env_file(&["--apply"]);
    let functions = template_functions();
    assert_eq!(
        dry.keys().collect::<BTreeSet<_>>(),
        functions.values().collect::<BTreeSet<_>>()
    );
    for (bin, id) in &functions {
        let declared: BTreeSet<String> = raw(id)["Properties"]["Environment"]["Variables"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let reads = reads_of(&[&format!("functions/{bin}/src")]);
        for (file, what) in [(&dry, "dry run"), (&applied, "--apply")] {
            let env = file[id].as_object().unwrap();
            let names: BTreeSet<String> = env.keys().cloned().collect();
            assert_eq!(
                names, declared,
                "{id} ({what}): the names the template declares"
            );
            for v in &reads.required {
                assert!(
                    names.contains(v) || LAMBDA_SETS.contains(&v.as_str()),
                    "{id} ({what}): {bin} requires {v}"
                );
            }
        }
        let changed: BTreeMap<&String, &Value> = dry[id]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| v.as_str() != Some(format!("deployed-{k}").as_str()))
            .collect();
        if reads.all.contains("DRY_RUN") {
            assert_eq!(
                changed,
                BTreeMap::from([(&"DRY_RUN".to_string(), &Value::from("true"))]),
                "{id}: DRY_RUN=true and the deployed values otherwise"
            );
        } else {
            // secret-rotation has no dry run: an unknown strategy stops every step at its settings.
            assert_eq!(bin, "secret-rotation", "{id}: no DRY_RUN to set");
            assert_eq!(
                changed,
                BTreeMap::from([(
                    &"ROTATION_STRATEGY".to_string(),
                    &Value::from("refused-locally")
                )])
            );
        }
        for (k, v) in applied[id].as_object().unwrap() {
            assert_eq!(
                v,
                &Value::from(format!("deployed-{k}")),
                "{id} --apply: {k}"
            );
        }
    }
}

/// The release pointer, the ledgers and the lease (`<prefix>.wikiops/`) can be written or
/// deleted only by config-redeploy's role (the task role: only the image's list): an `aws s3 sync --delete`, an operator or another
/// role cannot remove what tasks boot from.
#[test]
fn only_config_redeploy_writes_or_deletes_the_release_records() {
    let policy = &raw("ConfigBucketPolicy")["Properties"]["PolicyDocument"];
    let guard = as_list(&policy["Statement"])
        .into_iter()
        .find(|s| {
            s["Effect"] == "Deny"
                && as_list(&s["Resource"])
                    .iter()
                    .any(|r| r["Fn::Sub"] == "${ConfigBucket.Arn}/${ConfigPrefix}.wikiops/*")
        })
        .expect("ConfigBucketPolicy: a Deny on ${ConfigBucket.Arn}/${ConfigPrefix}.wikiops/*");
    assert_eq!(guard["Principal"], "*", "{guard}");
    let actions: BTreeSet<String> = as_list(&guard["Action"])
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    assert_eq!(
        actions,
        set(&["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion"]),
        "{guard}"
    );
    let exempt = as_list(&guard["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]);
    assert_eq!(
        exempt,
        vec![
            serde_json::json!({"Fn::GetAtt": ["ConfigRedeployFunctionRole", "Arn"]}),
            serde_json::json!({"Fn::GetAtt": ["WikiTaskRole", "Arn"]}),
        ],
        "only config-redeploy's role, and the task role, are exempt: {guard}"
    );
    // The task role may write there only the image's list.
    let (_, grants) = grants_of_role("WikiTaskRole");
    let wikiops: Vec<&Grant> = grants
        .iter()
        .filter(|g| {
            g.resources
                .iter()
                .any(|r| r.to_string().contains(".wikiops/"))
        })
        .collect();
    assert_eq!(wikiops.len(), 1, "{wikiops:?}");
    assert_eq!(wikiops[0].actions, vec!["s3:PutObject".to_string()]);
    assert_eq!(
        wikiops[0].resources,
        vec![
            serde_json::json!({"Fn::Sub": "${ConfigBucket.Arn}/${ConfigPrefix}.wikiops/image.json"})
        ]
    );
    // The exempt role is config-redeploy's, after the SAM transform.
    let function = &resources(&rendered().transformed)["ConfigRedeployFunction"];
    assert_eq!(
        function["Properties"]["Role"]["Fn::GetAtt"][0],
        "ConfigRedeployFunctionRole"
    );
}

/// The README's small profile (`Costs to expect`): every `Name=value` on its `sam deploy` line
/// is a template parameter, and each value is one the parameter accepts (AllowedValues,
/// MinValue/MaxValue), the task size a Fargate combination.
#[test]
fn the_small_profile_sets_only_values_the_template_accepts() {
    let section = readme_section("**Small profile.**", "**The goal");
    let line = section
        .lines()
        .find(|l| l.starts_with("sam deploy --parameter-overrides \""))
        .expect("the small profile's sam deploy line");
    let overrides = line.split('"').nth(1).expect("the overrides, quoted");
    // `JobsSchedule=rate(15 minutes)` holds a space: a value runs until the next ` Name=`.
    let mut pairs: Vec<(String, String)> = Vec::new();
    for word in overrides.split(' ') {
        match word.split_once('=') {
            Some((k, v)) if k.chars().all(|c| c.is_ascii_alphanumeric()) => {
                pairs.push((k.to_string(), v.to_string()));
            }
            _ => pairs.last_mut().expect("a Name=value first").1 += &format!(" {word}"),
        }
    }
    let params = rendered().template["Parameters"]
        .as_object()
        .expect("Parameters");
    let mut values = BTreeMap::new();
    for (name, value) in &pairs {
        let p = params
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not a template parameter"));
        if name != "ImageUri" {
            values.insert(name.as_str(), value.as_str());
        }
        if let Some(allowed) = p["AllowedValues"].as_array() {
            assert!(
                allowed.iter().any(|a| match a {
                    Value::String(s) => s == value,
                    other => other.as_f64() == value.parse::<f64>().ok(),
                }),
                "{name}={value}: not among {allowed:?}"
            );
        }
        if let Some(min) = p["MinValue"].as_f64() {
            assert!(
                value.parse::<f64>().unwrap() >= min,
                "{name}={value} < {min}"
            );
        }
        if let Some(max) = p["MaxValue"].as_f64() {
            assert!(
                value.parse::<f64>().unwrap() <= max,
                "{name}={value} > {max}"
            );
        }
    }
    assert_eq!(values["MinTasks"], "1");
    assert!(values["MaxTasks"].parse::<u32>().unwrap() >= 1);
    assert!(
        values["JobsSchedule"].starts_with("rate(") && values["JobsSchedule"].ends_with(')'),
        "{}",
        values["JobsSchedule"]
    );
    // Fargate's table: 256 CPU units take 512, 1024 or 2048 MiB.
    assert_eq!(values["TaskCpu"], "256");
    assert!(["512", "1024", "2048"].contains(&values["TaskMemory"]));
    // The wiki's durability stays: no parameter that takes backups or the database's safety away.
    for kept in [
        "DbBackupRetentionDays",
        "DbDeletionProtection",
        "BackupSchedule",
        "JobsEnabled",
    ] {
        assert!(
            !values.contains_key(kept),
            "the small profile leaves {kept} as it is"
        );
    }
}
