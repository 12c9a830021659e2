//! Measurement helpers for the benchmarks: samples, medians, spreads, peak RSS, package sizes.

use std::path::Path;
use std::time::Duration;

/// Samples of one measurement (durations in microseconds, sizes in bytes, …).
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    /// Adds a duration, in milliseconds.
    pub fn push_ms(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }

    /// The median (mean of the middle two for an even count); `NaN` when empty.
    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// `(min, max)`; `NaN`s when empty.
    pub fn spread(&self) -> (f64, f64) {
        let min = self.0.iter().copied().fold(f64::NAN, f64::min);
        let max = self.0.iter().copied().fold(f64::NAN, f64::max);
        (min, max)
    }

    /// `median (min–max)` with `decimals` digits.
    pub fn show(&self, decimals: usize) -> String {
        let (lo, hi) = self.spread();
        format!(
            "{:.*} ({:.*}–{:.*})",
            decimals,
            self.median(),
            decimals,
            lo,
            decimals,
            hi
        )
    }
}

/// Peak resident set size (`VmHWM`) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Size in bytes of the deployment package `sam package`/`sam deploy` would upload for
/// `binary`: SAM zips the built `bootstrap` with Python's `zipfile` (deflate at zlib's default
/// level), so this runs that same code (`python3` on `PATH`).
pub fn zipped_size(binary: &Path) -> std::io::Result<u64> {
    const SAM_ZIP: &str = "import io, sys, zipfile\n\
        buf = io.BytesIO()\n\
        with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED) as z:\n    \
        z.write(sys.argv[1], 'bootstrap')\n\
        print(len(buf.getvalue()))\n";
    let out = std::process::Command::new("python3")
        .args(["-c", SAM_ZIP])
        .arg(binary)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "zipping {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipped_size_deflates_like_sam_and_reports_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = dir.path().join("bootstrap");
        std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
        let size = zipped_size(&zeros).unwrap();
        assert!(size > 100 && size < 10_000, "{size}");
        assert!(zipped_size(&dir.path().join("missing")).is_err());
    }
}
