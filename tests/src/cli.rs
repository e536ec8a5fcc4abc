//! The `outage-worker` binary for tests of this crate, which cargo does not
//! build for them (it is another package's): built once per test process
//! with the same cargo and profile, then run as an operator would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The path of a freshly built `outage-worker` (feature `cli`).
pub fn worker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        // target/<profile>/deps/<test> -> target/<profile>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test runs from target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args([
                "build",
                "--quiet",
                "-p",
                "outage-runtime-std",
                "--features",
                "cli",
                "--bin",
                "outage-worker",
            ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo to build outage-worker");
        assert!(status.success(), "building outage-worker failed: {status}");
        let bin = dir.join("outage-worker");
        assert!(bin.is_file(), "no {}", bin.display());
        bin
    })
    .clone()
}

/// A `Command` for the worker with the environment's credentials and
/// service-manager variables removed (each test says what it wants).
pub fn worker() -> Command {
    let mut cmd = Command::new(worker_bin());
    for var in [
        "OUTAGE_SERVER",
        "OUTAGE_TOKEN",
        "ZNDRAW_URL",
        "ZNDRAW_TOKEN",
        "ZNDRAW_USER",
        "ZNDRAW_PASSWORD",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
}
