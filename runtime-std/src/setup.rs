//! What a worker is set up with — its credentials — and why setting it up
//! can fail ([`StartError`]).
//!
//! Layering: the bottom (beside `sync`, `job`); `worker`, `handle` and
//! `builder` use it.

use std::fmt;

use outage_core::{ConfigError, StartupError};

/// Why a worker could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is inconsistent.
    Config(ConfigError),
    /// The server URL cannot be used; the text says why.
    Url(String),
    /// The token has characters a bearer token cannot hold (RFC 6750:
    /// letters, digits, `-._~+/`, then `=` padding).
    Token,
    /// No job was given.
    NoJobs,
    /// The token file cannot be read or holds no valid token.
    TokenFile(String),
    /// The HTTP client could not be built.
    Client(std::io::Error),
    /// The worker's thread could not be started.
    Thread(std::io::Error),
    /// Creating the worker or registering a job failed for good.
    Startup {
        /// Which request, how, after how many retries.
        error: StartupError,
        /// The server's explanation, if it sent one.
        detail: Option<String>,
    },
    /// The worker was stopped (or dropped) before it registered.
    Stopped,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Url(why) => write!(f, "invalid server URL: {why}"),
            StartError::Token => f.write_str(
                "invalid token: a bearer token holds only letters, digits and -._~+/ (then = padding); \
                 check for spaces, line breaks or quotes",
            ),
            StartError::NoJobs => f.write_str("no job to serve: add at least one"),
            StartError::TokenFile(why) => write!(f, "invalid token file: {why}"),
            StartError::Client(e) => write!(f, "cannot set up the HTTP client: {e}"),
            StartError::Thread(e) => write!(f, "cannot start the worker's thread: {e}"),
            StartError::Startup { error, detail } => {
                write!(f, "could not start the worker: {error}")?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            StartError::Stopped => f.write_str("stopped before it registered"),
        }
    }
}

impl std::error::Error for StartError {}

/// Where the worker's bearer token comes from.
#[derive(Clone)]
pub enum Credentials {
    /// A fixed token: a 401 stops the worker.
    Token(String),
    /// A file holding the token (trimmed), read at start and again when the
    /// server answers 401, for tokens renewed by something else.
    TokenFile(std::path::PathBuf),
    /// ZnDraw's login (`POST /v1/auth/jwt/login`): log in at start, and
    /// again when the server answers 401 (ZnDraw's tokens expire after an
    /// hour). A login refused stops the worker.
    Login {
        /// The user's email.
        user: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::TokenFile(p) => f.debug_tuple("TokenFile").field(p).finish(),
            Credentials::Login { user, .. } => f
                .debug_struct("Login")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

/// The token in `path`, trimmed, if it is one.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if !outage_core::protocol::is_valid_token(token) {
        return Err(format!("{} does not hold a valid token", path.display()));
    }
    Ok(token.to_owned())
}
