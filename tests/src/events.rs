//! The sample events in `events/`, as `sam local invoke -e` reads them.

use serde_json::Value;

/// Reads `events/<name>.json`.
pub fn load(name: &str) -> Value {
    load_with(name, &[])
}

/// Reads `events/<name>.json` with each `(from, to)` text replacement applied first
/// (bucket names, keys, ARNs and times the test's peers use instead).
pub fn load_with(name: &str, replacements: &[(&str, &str)]) -> Value {
    let path = crate::paths::root()
        .join("events")
        .join(format!("{name}.json"));
    let mut text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every event file's name (without `.json`).
pub fn all() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(crate::paths::root().join("events"))
        .expect("read events/")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect();
    names.sort();
    names
}
