//! The representative event of each function, and the state it needs in the peers.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use serde_json::{Value, json};
use wikiops_tests::measure::Samples;
use wikiops_tests::{MariaDb, Moto};

type Env = Vec<(String, String)>;
type Prepared<'a> = Pin<Box<dyn Future<Output = (Env, Value)> + 'a>>;

/// One function to measure.
pub struct Case {
    pub binary: &'static str,
    /// Arranges the peers for run `n` and returns the function's env and event.
    pub prepare: for<'a> fn(&'a Moto, &'a MariaDb, &'a Path, usize) -> Prepared<'a>,
    /// Whether the output shows the event was really handled.
    pub check: fn(&Value) -> bool,
}

fn hello<'a>(_: &'a Moto, _: &'a MariaDb, _: &'a Path, _: usize) -> Prepared<'a> {
    Box::pin(async { (Vec::new(), json!({"ping": 1})) })
}

/// hello-world first (the reference), then the functions.
pub fn all() -> Vec<Case> {
    vec![Case {
        binary: "hello-world",
        prepare: hello,
        check: |v| v["hello"]["ping"] == 1,
    }]
}

/// Wall time of a full four-step rotation, `runs` times.
pub async fn rotation_wall_time(
    _bin_dir: &Path,
    _moto: &Moto,
    _db: &MariaDb,
    _runs: usize,
) -> Samples {
    Samples::default()
}
