//! The readable timeline the sandbox prints: elapsed time, a step title, what happened.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// Prints to stdout and appends to a log file.
pub struct Timeline {
    start: Instant,
    file: Mutex<Option<std::fs::File>>,
}

impl Timeline {
    /// A timeline that also writes to `log`.
    pub fn new(log: &Path) -> Timeline {
        Timeline {
            start: Instant::now(),
            file: Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .ok(),
            ),
        }
    }

    fn line(&self, mark: &str, msg: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let text = format!("[{:>3}:{:04.1}] {mark} {msg}", (t / 60.0) as u64, t % 60.0);
        println!("{text}");
        let _ = std::io::stdout().flush();
        if let Some(f) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = writeln!(f, "{text}");
        }
    }

    /// A new section.
    pub fn section(&self, title: &str) {
        println!();
        self.line("══", title);
    }

    /// Something that is being done (may take a while).
    pub fn doing(&self, msg: &str) {
        self.line("…", msg);
    }

    /// Something observed or done.
    pub fn info(&self, msg: &str) {
        self.line(" ", msg);
    }

    /// A checked outcome.
    pub fn ok(&self, msg: &str) {
        self.line("✔", msg);
    }

    /// A failed outcome.
    pub fn fail(&self, msg: &str) {
        self.line("✘", msg);
    }
}
