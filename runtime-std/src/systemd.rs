//! systemd's service protocol, for a worker run as a `Type=notify` unit:
//! notifications over `$NOTIFY_SOCKET` (`READY=1`, `STATUS=`,
//! `WATCHDOG=1`, `STOPPING=1`; `sd_notify(3)`), the watchdog interval from
//! `$WATCHDOG_USEC`, and credentials from `$CREDENTIALS_DIRECTORY`
//! (`LoadCredential=`).
//!
//! Give a [`Notifier`] to [`crate::WorkerBuilder::systemd`] and the worker
//! says itself what it does: `READY=1` once registered; a `STATUS=` line
//! whenever its [`outage_core::Status`] changes (`Serving 2 jobs`, `Server
//! unreachable — retrying (30s/120s elapsed)`, `Stopping: stop requested`);
//! `STOPPING=1` when it starts to stop; and, with `WatchdogSec=`, `WATCHDOG=1`
//! from the worker's driver loop while that loop runs (every third of the
//! interval), so a worker whose loop hangs is restarted by systemd.
//!
//! A datagram to a unix socket, written here (no libsystemd): a path, or on
//! Linux an abstract name (`@name`).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Sends notifications to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The service manager's socket from `$NOTIFY_SOCKET`, and the watchdog
    /// interval from `$WATCHDOG_USEC` (when `$WATCHDOG_PID` is unset or
    /// this process). `Ok(None)` when not run by a service manager that
    /// listens.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
            return Ok(None);
        };
        let path = path
            .into_string()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8"))?;
        let watchdog = watchdog_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
        );
        Ok(Some(Notifier::new(&path)?.with_watchdog(watchdog)))
    }

    /// A notifier for the socket at `path` (`@name`: an abstract socket,
    /// Linux), without a watchdog.
    pub fn new(path: &str) -> io::Result<Notifier> {
        let addr = match path.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract NOTIFY_SOCKET names need Linux",
                ));
            }
            None => SocketAddr::from_pathname(path)?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
            watchdog: None,
        })
    }

    /// Ping the watchdog (`WATCHDOG=1`) within `interval` (`None`: no
    /// watchdog).
    pub fn with_watchdog(mut self, interval: Option<Duration>) -> Notifier {
        self.watchdog = interval.filter(|d| !d.is_zero());
        self
    }

    /// The watchdog interval systemd asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send `state`: newline-separated `KEY=VALUE` assignments
    /// (`READY=1\nSTATUS=Serving 2 jobs`).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr).map(drop)
    }
}

/// The watchdog interval of `WATCHDOG_USEC` if it is meant for this
/// process (`WATCHDOG_PID` unset, or ours).
fn watchdog_from(usec: Option<&str>, pid: Option<&str>) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// The credential `name` that systemd passed with `LoadCredential=` (or
/// `SetCredential=`): `$CREDENTIALS_DIRECTORY/name`, if it exists.
pub fn credential(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())?;
    let path = Path::new(&dir).join(name);
    path.is_file().then_some(path)
}

/// A status text as one `STATUS=` line: a line break in it would end the
/// assignment.
pub(crate) fn status_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len() + 7);
    line.push_str("STATUS=");
    line.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_ours_only_for_our_pid() {
        let me = std::process::id().to_string();
        assert_eq!(
            watchdog_from(Some("30000000"), None),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_from(Some("500000"), Some(&me)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog_from(Some("30000000"), Some("1")), None);
        assert_eq!(watchdog_from(Some("soon"), None), None);
        assert_eq!(watchdog_from(None, None), None);
    }

    #[test]
    fn notifications_arrive_as_one_datagram() {
        let dir = std::env::temp_dir().join(format!("outage-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=Serving 1 job").unwrap();
        let mut buf = [0u8; 256];
        let got = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1\nSTATUS=Serving 1 job");
        assert_eq!(status_line("a\nb"), "STATUS=a b");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
