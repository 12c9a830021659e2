//! Measurement helpers for the benchmarks: samples, medians, spreads, peak RSS, package sizes.

use std::io::Write;
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

/// Size in bytes of a zip holding `binary` as an executable `bootstrap` (deflate), the way the
/// deployment package of a `provided.al2023` function is built.
pub fn zipped_size(binary: &Path) -> std::io::Result<u64> {
    let data = std::fs::read(binary)?;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buf);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    zip.start_file("bootstrap", options)
        .map_err(std::io::Error::other)?;
    zip.write_all(&data)?;
    zip.finish().map_err(std::io::Error::other)?;
    Ok(buf.into_inner().len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Samples(vec![3.0, 1.0, 2.0, 10.0]);
        assert_eq!(s.median(), 2.5);
        assert_eq!(s.spread(), (1.0, 10.0));
        assert_eq!(Samples(vec![5.0, 1.0, 3.0]).median(), 3.0);
        assert!(Samples::default().median().is_nan());
        assert_eq!(Samples(vec![1.0, 2.0, 3.0]).show(1), "2.0 (1.0–3.0)");
    }

    #[test]
    fn own_process_has_a_peak_rss() {
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn zip_is_smaller_than_a_compressible_binary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, vec![7u8; 100_000]).unwrap();
        let z = zipped_size(&p).unwrap();
        assert!(z > 0 && z < 10_000, "{z}");
    }
}
