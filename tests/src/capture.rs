//! A `log` logger that keeps every record, so scenarios can assert on the
//! exact lines a worker logged. Tests that capture run one at a time (a
//! global lock), so records never mix under plain `cargo test`.

use std::sync::{Mutex, MutexGuard, Once};
use std::time::Instant;

/// One logged line.
#[derive(Debug, Clone)]
pub struct Line {
    /// When it was logged.
    pub at: Instant,
    /// Its level.
    pub level: log::Level,
    /// Its target (`outage` for the worker's events).
    pub target: String,
    /// The rendered message.
    pub text: String,
}

static LINES: Mutex<Vec<Line>> = Mutex::new(Vec::new());
static SERIAL: Mutex<()> = Mutex::new(());
static INSTALL: Once = Once::new();

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = Line {
            at: Instant::now(),
            level: record.level(),
            target: record.target().to_owned(),
            text: record.args().to_string(),
        };
        if std::env::var_os("OUTAGE_SHOW_LOGS").is_some() {
            eprintln!("{:<5} {} {}", line.level, line.target, line.text);
        }
        LINES.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn flush(&self) {}
}

/// Holds the capture for one test; dropping it lets the next test capture.
pub struct Session {
    _serial: MutexGuard<'static, ()>,
}

/// Start capturing (clearing earlier lines). Blocks while another test
/// captures.
pub fn start() -> Session {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    INSTALL.call_once(|| {
        // Another logger may be installed already by the test binary; then
        // capture cannot work and the scenario would assert on nothing.
        log::set_logger(&Capture).expect("the capture logger must be the only logger");
        log::set_max_level(log::LevelFilter::Debug);
    });
    LINES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    Session { _serial: serial }
}

impl Session {
    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        LINES.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The worker's own lines (target `outage`).
    pub fn worker_lines(&self) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|l| l.target == "outage")
            .collect()
    }

    /// The worker's lines at error level.
    pub fn error_lines(&self) -> Vec<Line> {
        self.worker_lines()
            .into_iter()
            .filter(|l| l.level == log::Level::Error)
            .collect()
    }

    /// Worker lines containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<Line> {
        self.worker_lines()
            .into_iter()
            .filter(|l| l.text.contains(needle))
            .collect()
    }

    /// Wait (bounded) until a worker line contains `needle`.
    pub fn wait_for(&self, needle: &str, limit: std::time::Duration) -> Option<Line> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.matching(needle).into_iter().next() {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// All lines, one per row, for failure messages.
    pub fn dump(&self) -> String {
        self.lines()
            .iter()
            .map(|l| format!("{:<5} {}: {}", l.level, l.target, l.text))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
