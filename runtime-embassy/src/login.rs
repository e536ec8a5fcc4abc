//! Logging in with an email and a password, ZnDraw's way
//! (`POST /v1/auth/jwt/login`, a form `username=<email>&password=<password>`,
//! answered with `{"access_token": "…", "token_type": "bearer"}`), without a
//! heap or `core::fmt`: the body is percent-encoded by hand into the
//! caller's buffer ([`login_body`]) and the token is kept in a fixed store
//! ([`TokenStore`], [`MAX_TOKEN`] bytes) that the worker owns.
//!
//! The worker logs in with these when built with
//! [`Worker::with_login`](crate::Worker::with_login) (feature `login`): at
//! start, before it creates itself on the server, and again whenever the
//! server refuses the token with 401 — the core's rule
//! ([`Config::renew_credentials`](outage_core::Config::renew_credentials)):
//! one login per 401, a refused login or a fresh token refused too stops
//! the worker. Neither the password nor a token appears in any log line.
//!
//! ```
//! use outage_runtime_embassy::login::{TokenStore, login_body};
//! let mut buf = [0u8; 64];
//! let n = login_body(&mut buf, "admin@example.com", "p w&=").unwrap();
//! assert_eq!(&buf[..n], b"username=admin%40example.com&password=p%20w%26%3D");
//! let mut store = TokenStore::new();
//! assert!(store.take_answer(br#"{"access_token":"eyJhbGciOi.x.y","token_type":"bearer"}"#));
//! assert_eq!(store.as_str(), "eyJhbGciOi.x.y");
//! ```

use crate::MAX_TOKEN;
use outage_core::json::unescape;
use outage_core::protocol::body;

/// Longest email and longest password accepted (bytes, before encoding).
pub const MAX_CREDENTIAL: usize = 128;

/// Writes the login form `username=<email>&password=<password>` into `out`
/// (no `core::fmt`); its length, or `None` if it does not fit (a password of
/// [`MAX_CREDENTIAL`] bytes takes up to 3 × 128 bytes encoded).
/// The encoding is the core's ([`outage_core::protocol::write_login_form`]),
/// as on a host.
pub fn login_body(out: &mut [u8], email: &str, password: &str) -> Option<usize> {
    let mut cursor = outage_core::wire::Cursor::new(out);
    outage_core::protocol::write_login_form(email, password, &mut |p| cursor.put(p)).ok()?;
    Some(cursor.len())
}

/// Is `s` usable as a login's email or password: not empty, at most
/// [`MAX_CREDENTIAL`] bytes?
pub const fn is_valid_credential(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CREDENTIAL
}

/// The token of the last login: up to [`MAX_TOKEN`] bytes in place (no
/// heap). Its `Debug` shows the length only, never the token.
pub struct TokenStore {
    bytes: [u8; MAX_TOKEN],
    len: usize,
}

impl TokenStore {
    /// An empty store.
    pub const fn new() -> Self {
        TokenStore {
            bytes: [0; MAX_TOKEN],
            len: 0,
        }
    }

    /// The token (empty before the first login, or after a login answer
    /// that held none).
    pub fn as_str(&self) -> &str {
        // Only a valid bearer token (ASCII) is ever kept.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }

    /// True when it holds no token.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget the token.
    pub fn clear(&mut self) {
        self.bytes = [0; MAX_TOKEN];
        self.len = 0;
    }

    /// Keep the `access_token` of a login answer: true if it is a bearer
    /// token (RFC 6750 characters) of at most [`MAX_TOKEN`] bytes and the
    /// answer's `token_type`, if any, is `bearer`. Otherwise false, and the
    /// store is empty (the token it held was refused already: that is why
    /// the worker logged in).
    pub fn take_answer(&mut self, answer: &[u8]) -> bool {
        let len = body::access_token(answer)
            .ok()
            .and_then(|value| unescape(value, &mut self.bytes));
        self.len = len.unwrap_or(0);
        let valid =
            core::str::from_utf8(&self.bytes[..self.len]).is_ok_and(outage_core::protocol::is_valid_token);
        if !valid {
            self.clear();
        }
        valid
    }
}

impl Default for TokenStore {
    fn default() -> Self {
        TokenStore::new()
    }
}

impl core::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokenStore").field("len", &self.len).finish()
    }
}

/// The worker's token store, shared by its lanes.
#[cfg(feature = "login")]
pub(crate) type SharedToken = embassy_sync::blocking_mutex::Mutex<
    embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex,
    core::cell::RefCell<TokenStore>,
>;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn body(email: &str, password: &str) -> std::string::String {
        let mut out = [0u8; 3 * 2 * MAX_CREDENTIAL + 20];
        let n = login_body(&mut out, email, password).unwrap();
        std::string::String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn bodies_are_form_encoded_by_hand() {
        assert_eq!(
            body("admin@example.com", "jwt-test-pw"),
            "username=admin%40example.com&password=jwt-test-pw"
        );
        // As the host worker encodes it (runtime-std's form_encode).
        assert_eq!(
            body("a+b@x.org", "p w&=+é~"),
            "username=a%2Bb%40x.org&password=p%20w%26%3D%2B%C3%A9~"
        );
        let long = "%".repeat(MAX_CREDENTIAL);
        assert_eq!(
            body("e", &long).len(),
            "username=e&password=".len() + 3 * MAX_CREDENTIAL
        );
    }

    #[test]
    fn bodies_that_do_not_fit_are_refused_at_every_length() {
        let whole = body("admin@example.com", "p w");
        for len in 0..whole.len() {
            let mut out = std::vec![0u8; len];
            assert_eq!(login_body(&mut out, "admin@example.com", "p w"), None, "{len}");
        }
    }

    #[test]
    fn credentials_are_bounded() {
        assert!(is_valid_credential("admin@example.com"));
        assert!(!is_valid_credential(""));
        assert!(!is_valid_credential(&"x".repeat(MAX_CREDENTIAL + 1)));
    }

    #[test]
    fn answers_give_a_token_or_none() {
        let mut store = TokenStore::new();
        assert!(store.is_empty());
        assert!(
            store.take_answer(br#"{"access_token":"eyJhbGciOiJIUzI1NiJ9.e30.sig-_=","token_type":"bearer"}"#)
        );
        assert_eq!(store.as_str(), "eyJhbGciOiJIUzI1NiJ9.e30.sig-_=");
        // An escaped slash is unescaped; no token_type is fine.
        assert!(store.take_answer(br#"{ "access_token" : "a\/b" }"#));
        assert_eq!(store.as_str(), "a/b");
        let jwt = "x".repeat(MAX_TOKEN);
        assert!(store.take_answer(std::format!(r#"{{"access_token":"{jwt}"}}"#).as_bytes()));
        assert_eq!(store.as_str().len(), MAX_TOKEN);
        for bad in [
            &br#"{"access_token":"a b","token_type":"bearer"}"#[..],
            br#"{"access_token":"ok","token_type":"mac"}"#,
            br#"{"access_token":7}"#,
            br#"{"access_token":""}"#,
            br#"{"detail":"LOGIN_BAD_CREDENTIALS"}"#,
            b"",
            b"{",
            br#"{"access_token":"\u00e9"}"#,
        ] {
            store.take_answer(br#"{"access_token":"old"}"#);
            assert!(!store.take_answer(bad), "{:?}", core::str::from_utf8(bad));
            assert!(store.is_empty() && store.as_str().is_empty());
        }
        let too_long = "x".repeat(MAX_TOKEN + 1);
        assert!(!store.take_answer(std::format!(r#"{{"access_token":"{too_long}"}}"#).as_bytes()));
        assert!(store.is_empty());
    }

    #[test]
    fn the_store_never_shows_its_token() {
        let mut store = TokenStore::new();
        assert!(store.take_answer(br#"{"access_token":"secret-token"}"#));
        let shown = std::format!("{store:?}");
        assert_eq!(shown, "TokenStore { len: 12 }");
    }

    proptest::proptest! {
        /// Fuzz: any answer leaves the store holding a valid token or none.
        #[test]
        fn login_answer_parsing_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..700)) {
            let mut store = TokenStore::new();
            if store.take_answer(&bytes) {
                proptest::prop_assert!(outage_core::protocol::is_valid_token(store.as_str()));
            } else {
                proptest::prop_assert!(store.is_empty());
            }
        }
    }
}
