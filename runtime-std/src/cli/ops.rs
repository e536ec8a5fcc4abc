//! What the command does for operators: `--metrics-addr`, systemd's
//! notifications and credentials, shell completions and the man page.

use std::net::{SocketAddr, ToSocketAddrs};

use outage_runtime_std::metrics::{Metrics, MetricsServer};
use outage_runtime_std::systemd::{self, Notifier};

/// `--metrics-addr`: `HOST:PORT` (`127.0.0.1:9100`, `[::1]:9100`,
/// `localhost:9100`, `0.0.0.0:9100` in a container).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

/// Serve metrics, health and readiness on `addr`.
pub fn start_metrics(addr: SocketAddr) -> Result<(Metrics, MetricsServer), String> {
    let metrics = Metrics::new();
    let server = outage_runtime_std::metrics::serve(addr, metrics.clone())
        .map_err(|e| format!("--metrics-addr {addr}: cannot listen: {e}"))?;
    log::info!(
        target: "outage",
        "Metrics on http://{}/metrics (health /healthz, readiness /readyz)",
        server.local_addr()
    );
    Ok((metrics, server))
}

/// The service manager's notifier, when run by one that listens
/// (`Type=notify`).
pub fn systemd_notifier() -> Option<Notifier> {
    match Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            log::warn!(target: "outage", "NOTIFY_SOCKET is set but unusable ({e}); not notifying systemd");
            None
        }
    }
}

/// systemd's credential for the password (`LoadCredential=password:…`).
pub fn password_credential() -> Option<std::path::PathBuf> {
    systemd::credential("password")
}

/// systemd's credential for the token (`LoadCredential=token:…`), read like
/// `--token-file` (again on a 401).
pub fn token_credential() -> Option<std::path::PathBuf> {
    systemd::credential("token")
}

/// Write completions for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) {
    clap_complete::generate(shell, &mut cmd, "outage-worker", &mut std::io::stdout());
}

/// Write the man page (roff) to stdout.
pub fn man(cmd: clap::Command) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).render(&mut std::io::stdout())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:9100").unwrap().port(), 9100);
        assert!(parse_addr("[::1]:9100").unwrap().is_ipv6());
        assert!(parse_addr("localhost:9100").is_ok());
        assert!(parse_addr("9100").is_err());
        assert!(parse_addr("127.0.0.1:99999").is_err());
    }
}
