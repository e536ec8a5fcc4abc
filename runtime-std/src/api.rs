//! The zndraw-joblib worker API over the [`Http`] seam: one exchange of a
//! request's route and body, and the login. What each request's route,
//! body and answer are is the core's ([`outage_core::call`], the device's
//! too); this module only owns the strings.

use std::time::Duration as StdDuration;

use outage_core::json::{Full, unescape};
use outage_core::protocol::Route;
use outage_core::protocol::body::{self, Claimed, Detail, Out};
use outage_core::{Config, Endpoint, Failure, Request as CoreRequest};
use serde_json::value::RawValue;

use crate::http::{Http, HttpError, Outgoing, Response};
use crate::job::Task;

/// A failed API call: the core's [`Failure`] plus the server's words, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Which call.
    pub endpoint: Endpoint,
    /// What the core sees.
    pub failure: Failure,
    /// The `detail` of a problem+json answer (never secret: it is the
    /// server's description of the request's problem).
    pub detail: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.endpoint, self.failure)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// The bearer token in use, shared by the worker's requests and whoever
/// needs the current one (a command's `ZNDRAW_TOKEN`). Renewing the
/// credentials replaces it.
#[derive(Clone)]
pub struct SharedToken(std::sync::Arc<std::sync::RwLock<std::sync::Arc<str>>>);

impl SharedToken {
    /// A shared token holding `token`.
    pub fn new(token: &str) -> SharedToken {
        SharedToken(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::from(
            token,
        ))))
    }

    /// The current token.
    pub fn get(&self) -> std::sync::Arc<str> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, token: &str) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::from(token);
    }
}

impl From<&str> for SharedToken {
    fn from(token: &str) -> SharedToken {
        SharedToken::new(token)
    }
}

impl From<String> for SharedToken {
    fn from(token: String) -> SharedToken {
        SharedToken::new(&token)
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(<redacted>)")
    }
}

/// The worker API of one server: each call is one exchange (the core
/// decides about re-sending, and which statuses are a success).
pub struct Api<H> {
    http: H,
    base: String,
    token: SharedToken,
    config: Config,
}

impl<H: Http> Api<H> {
    /// `base` is the server URL (`http://host:port`, without `/v1/joblib`);
    /// timeouts come from `config` ([`CoreRequest::timeout`]).
    pub fn new(http: H, base: &str, token: SharedToken, config: Config) -> Self {
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            config,
        }
    }

    /// One exchange of `req` on `route` (its body the core's
    /// [`CoreRequest::write_body`]); an answer `req` does not accept is an
    /// [`ApiError`] with the server's `detail`.
    pub(crate) async fn call(
        &self,
        req: CoreRequest,
        route: Route<'_>,
        body: Option<&[u8]>,
    ) -> Result<Response, ApiError> {
        let url = format!("{}{route}", self.base);
        let http_req = Outgoing {
            method: route.method(),
            url: &url,
            json: body,
            form: false,
            timeout: StdDuration::from_millis(req.timeout(&self.config).as_millis()),
        };
        let token = self.token.get();
        let resp = self
            .http
            .send(http_req, &token)
            .await
            .map_err(|failure: HttpError| ApiError {
                endpoint: req.endpoint(),
                failure,
                detail: None,
            })?;
        self.expect(req, resp)
    }

    fn expect(&self, req: CoreRequest, resp: Response) -> Result<Response, ApiError> {
        if req.accepts(resp.status) {
            return Ok(resp);
        }
        let endpoint = req.endpoint();
        let detail = problem_detail(&resp.body);
        if let Some(d) = &detail {
            crate::emit(&outage_core::Event::ServerSaid {
                what: endpoint,
                status: resp.status,
                detail: d,
            });
        }
        Err(ApiError {
            endpoint,
            failure: Failure::Status {
                status: resp.status,
                retry_after: resp.retry_after,
            },
            detail,
        })
    }

    fn malformed(&self, endpoint: Endpoint) -> ApiError {
        ApiError {
            endpoint,
            failure: Failure::MalformedResponse,
            detail: None,
        }
    }

    /// `POST /v1/auth/jwt/login` (ZnDraw's login: a form with `username`
    /// and `password`): on success the new token is in use.
    pub async fn login(&self, user: &str, password: &str) -> Result<(), ApiError> {
        let endpoint = Endpoint::Login;
        let url = format!("{}{}", self.base, outage_core::protocol::LOGIN_PATH);
        let body = written(|out| outage_core::protocol::write_login_form(user, password, out));
        let req = Outgoing {
            method: outage_core::protocol::Method::Post,
            url: &url,
            json: Some(&body),
            form: true,
            timeout: StdDuration::from_millis(CoreRequest::Login.timeout(&self.config).as_millis()),
        };
        let resp = self.http.send(req, "").await.map_err(|failure| ApiError {
            endpoint,
            failure,
            detail: None,
        })?;
        let resp = self.expect(CoreRequest::Login, resp)?;
        let token = body::access_token(&resp.body)
            .ok()
            .and_then(text)
            .filter(|t| outage_core::protocol::is_valid_token(t))
            .ok_or_else(|| self.malformed(endpoint))?;
        self.token.set(&token);
        Ok(())
    }

    /// Use `token` from now on (read again from a token file).
    /// The token in use (renewed in place).
    pub(crate) fn token(&self) -> &SharedToken {
        &self.token
    }

    pub fn set_token(&self, token: &str) {
        self.token.set(token);
    }
}

/// A body the core writes, in a `Vec` (which never runs out of room).
pub(crate) fn written(write: impl FnOnce(Out<'_>) -> Result<(), Full>) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = write(&mut |piece| {
        v.extend_from_slice(piece);
        Ok(())
    });
    v
}

/// A JSON string the core's readers found, unescaped (into as many bytes
/// as it has: unescaping never grows it).
pub(crate) fn text(value: &[u8]) -> Option<String> {
    let mut out = vec![0; value.len()];
    let n = unescape(value, &mut out)?;
    out.truncate(n);
    String::from_utf8(out).ok()
}

/// The `detail` of a problem+json answer, if the body is one: its text,
/// or (FastAPI's 422, a list of validation errors) the JSON as sent.
pub fn problem_detail(answer: &[u8]) -> Option<String> {
    match body::problem_detail(answer)? {
        Detail::Text(t) => text(t),
        Detail::Json(j) => String::from_utf8(j.to_vec()).ok(),
    }
}

/// A claim answer: `{"task": null}` or the task, its payload the exact
/// text the server sent (it must be one JSON value: a [`Task`]'s payload
/// is read typed later).
#[cfg(test)]
fn parse_claim(answer: &[u8]) -> Result<Option<Task>, Failure> {
    body::claimed(answer)?.map(task).transpose()
}

/// A claimed task as the host keeps it: its names unescaped, its payload
/// the exact text the server sent (it must be one JSON value: a [`Task`]'s
/// payload is read typed later).
pub(crate) fn task(t: Claimed<'_>) -> Result<Task, Failure> {
    let bad = Failure::MalformedResponse;
    let payload = std::str::from_utf8(t.payload).map_err(|_| bad)?;
    Ok(Task {
        id: text(t.id).ok_or(bad)?,
        job_name: text(t.job_name).ok_or(bad)?,
        room_id: text(t.room_id).ok_or(bad)?,
        payload: RawValue::from_string(payload.to_owned()).map_err(|_| bad)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_keep_payload_bytes_and_unescape_names() {
        let body = br#"{"task":{"id":"t1","job_name":"r\\x:modifiers:E","room_id":"r\\x","status":"claimed","payload":{"x":0.9889559355234849,"big":123456789012345678901234567890,"z":-0.0,"s":"\u0000\u00e9"},"queue_position":null}}"#;
        let t = parse_claim(body).unwrap().unwrap();
        assert_eq!(t.room_id, "r\\x");
        assert_eq!(t.job_name, "r\\x:modifiers:E");
        assert_eq!(
            t.payload.get(),
            r#"{"x":0.9889559355234849,"big":123456789012345678901234567890,"z":-0.0,"s":"\u0000\u00e9"}"#
        );
        assert!(parse_claim(br#"{"task":null}"#).unwrap().is_none());
        assert!(parse_claim(br#"{"task":{"id":"x"}}"#).is_err());
        assert!(parse_claim(b"").is_err());
    }

    #[test]
    fn login_forms_are_encoded() {
        let form =
            written(|out| outage_core::protocol::write_login_form("admin@example.com", "p w&=+é", out));
        assert_eq!(
            form,
            b"username=admin%40example.com&password=p%20w%26%3D%2B%C3%A9"
        );
    }

    #[test]
    fn problem_details_are_read_whole() {
        let p = br#"{"type":"/v1/problems/invalid-category","title":"Bad Request","status":400,"detail":"Category 'compute' not in allowed list"}"#;
        assert_eq!(
            problem_detail(p).as_deref(),
            Some("Category 'compute' not in allowed list")
        );
        assert_eq!(
            problem_detail(br#"{"detail":"Worker \"x\" not found"}"#).as_deref(),
            Some("Worker \"x\" not found")
        );
        assert_eq!(
            problem_detail(br#"{"detail":[{"type":"missing","loc":["body","username"]}]}"#).as_deref(),
            Some(r#"[{"type":"missing","loc":["body","username"]}]"#),
            "a detail that is not a string is kept as sent"
        );
        assert_eq!(problem_detail(b"Internal Server Error"), None);
        assert_eq!(problem_detail(b"{}"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: outage_core::fuzz::cases(std::env::var("OUTAGE_FUZZ_CASES").ok().as_deref(), 2_000), ..Default::default() })]

        /// Fuzz: arbitrary bytes and mutated answers never panic the claim
        /// or problem parsers.
        #[test]
        fn answer_parsing_never_panics(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            edits in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..400,
        ) {
            let _ = parse_claim(&bytes);
            let _ = problem_detail(&bytes);
            let claim = br#"{"task":{"id":"t1","job_name":"@global:modifiers:E","room_id":"r","status":"claimed","payload":{"x":[1,2,{"y":"\u0000"}]},"queue_position":null}}"#;
            let mut body = claim.to_vec();
            let len = outage_core::fuzz::mutate(&mut body, &edits, cut);
            body.truncate(len);
            let _ = parse_claim(&body);
            let _ = problem_detail(&body);
        }
    }

    #[test]
    fn typed_payload_access() {
        let t = Task::new("t", "@global:modifiers:Echo", "r", r#"{"n": 3, "name": "a\"b"}"#).unwrap();
        #[derive(serde::Deserialize)]
        struct P<'a> {
            n: u32,
            #[serde(borrow)]
            name: std::borrow::Cow<'a, str>,
        }
        let p: P<'_> = t.payload().unwrap();
        assert_eq!((p.n, p.name.as_ref()), (3, "a\"b"));
        assert_eq!(t.payload_json(), r#"{"n": 3, "name": "a\"b"}"#);
        assert!(Task::new("t", "j", "r", "{not json").is_err());
    }
}
