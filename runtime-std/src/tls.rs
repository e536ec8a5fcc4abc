//! TLS for `https://` and `wss://` (rustls, ring; no OpenSSL): a stream
//! that is plain TCP or TLS over it, and the one client configuration the
//! worker uses — the platform's root certificates (`rustls-native-certs`,
//! which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus, for a private
//! CA, the certificates of a PEM file ([`trust_ca_file`], the CLI's
//! `--ca-file`).
//!
//! TLS lives *inside* the worker's own HTTP client ([`crate::h1`]) and push
//! connection ([`crate::push`]): https gets every guarantee plain http has
//! (a connection reused only after a complete exchange, a stale one
//! detected before it is written to).
//!
//! Layering: below [`crate::h1`] and [`crate::push`]; imports nothing of
//! the crate.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::rustls;
use futures_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

/// A connection: plain, or TLS over it.
pub(crate) enum MaybeTls<S> {
    Plain(S),
    Tls(Box<futures_rustls::client::TlsStream<S>>),
}

impl<S> MaybeTls<S> {
    /// Does TLS hold bytes of plaintext nobody asked for (records already
    /// received and not read), or the server's close? A connection that
    /// does is out of step or closing, like one with bytes left in its
    /// buffer. Processes the records received,
    /// no I/O.
    pub(crate) fn holds_plaintext(&mut self) -> bool {
        match self {
            MaybeTls::Plain(_) => false,
            MaybeTls::Tls(t) => t.get_mut().1.process_new_packets().map_or(true, |state| {
                state.plaintext_bytes_to_read() > 0 || state.peer_has_closed()
            }),
        }
    }

    /// The TCP stream below.
    pub(crate) fn tcp(&self) -> &S {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(t) => t.get_ref().0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(t) => Pin::new(&mut **t).poll_close(cx),
        }
    }
}

/// A PEM file of extra trusted CA certificates, set before the first
/// connection.
static CA_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);
static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();

/// Trust the CA certificates in the PEM file at `path` too (a private CA,
/// a self-signed server). Read and checked now; it takes effect for every
/// connection of the process, and must come before the first one.
pub fn trust_ca_file(path: &Path) -> Result<(), String> {
    read_pem(path)?;
    if CONFIG.get().is_some() {
        return Err("trust_ca_file must be called before the first connection".to_owned());
    }
    *CA_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
    Ok(())
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CA file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The client configuration: built once, on first use.
pub(crate) fn config() -> Result<Arc<rustls::ClientConfig>, String> {
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            // Unreadable platform certificates are skipped; with none at
            // all, only the CA file is trusted.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            let ca_file = CA_FILE.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(path) = ca_file {
                for cert in read_pem(&path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("CA file {}: {e}", path.display()))?;
                }
            }
            // ring: pure Rust and assembly, no C toolchain beyond cc and no
            // cmake (aws-lc-rs needs both). rustls deprecates it for lacking
            // post-quantum key exchange; classical X25519 and P-256 remain.
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// Why a TLS handshake failed, in words for the log (never a secret).
pub(crate) fn handshake_error(e: &io::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => match why {
            C::UnknownIssuer => {
                "TLS: the server's certificate is signed by an unknown issuer (trust its CA with --ca-file)"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "TLS: the server's certificate is not valid for this host name"
            }
            C::Expired | C::ExpiredContext { .. } => "TLS: the server's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "TLS: the server's certificate is not valid yet",
            _ => "TLS: the server's certificate is refused",
        },
        Some(rustls::Error::AlertReceived(_)) => "TLS: the server refused the handshake",
        Some(_) => "TLS: the handshake failed",
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            "TLS: the server closed the connection during the handshake (is it https?)"
        }
        None => "TLS: the handshake failed",
    }
}

/// TLS over `tcp` to `host` (a name or an IP address, checked against the
/// certificate).
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    host: &str,
    tcp: S,
) -> Result<MaybeTls<S>, &'static str> {
    let config = match config() {
        Ok(c) => c,
        Err(why) => {
            log::error!(target: "outage", "{why}");
            return Err("TLS: no usable client configuration (see the error above)");
        }
    };
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .map_err(|_| "TLS: the host is not a name a certificate can be checked against")?;
    let tls = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(&e))?;
    Ok(MaybeTls::Tls(Box::new(tls)))
}
