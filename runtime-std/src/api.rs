//! Typed calls of the zndraw-joblib worker API over the [`Http`] seam.

use std::time::Duration as StdDuration;

use outage_core::protocol::{
    ClaimRequest, ClaimResponse, JobRegistration, Route, StatusUpdate, Task as WireTask, TaskInfo,
    TaskStatus, WorkerResponse,
};
use outage_core::{Config, Endpoint, Failure, Request as CoreRequest};
use serde_json::value::RawValue;

use crate::http::{Http, HttpError, Outgoing, Response};
use crate::job::{Job, Task};

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

    /// One exchange of `req` on `route`; an answer `req` does not accept is
    /// an [`ApiError`] with the server's `detail`.
    async fn call(
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

    /// `POST /workers`: a new worker's id.
    pub async fn create_worker(&self) -> Result<String, ApiError> {
        let route = Route::CreateWorker;
        let resp = self.call(CoreRequest::CreateWorker, route, None).await?;
        let w: WorkerResponse<'_> =
            serde_json::from_slice(&resp.body).map_err(|_| self.malformed(route.endpoint()))?;
        Ok(w.id.to_owned())
    }

    /// `PUT /rooms/{room}/jobs` linking `job` to `worker_id`.
    pub async fn register_job(&self, job: &Job, worker_id: &str) -> Result<(), ApiError> {
        let route = Route::RegisterJob { room: &job.room };
        let body = serde_json::to_vec(&JobRegistration {
            category: &job.category,
            name: &job.name,
            schema: &job.schema,
            worker_id: Some(worker_id),
        })
        .expect("registration serialises");
        self.call(CoreRequest::RegisterJob(0), route, Some(&body))
            .await
            .map(drop)
    }

    /// `POST /tasks/claim`.
    pub async fn claim(&self, worker_id: &str) -> Result<Option<Task>, ApiError> {
        let route = Route::Claim;
        let body = serde_json::to_vec(&ClaimRequest { worker_id }).expect("claim serialises");
        let resp = self.call(CoreRequest::Claim, route, Some(&body)).await?;
        Ok(parse_claim(&resp.body)
            .map_err(|_| self.malformed(route.endpoint()))?
            .map(|t| Task {
                id: t.id,
                job_name: t.job_name,
                room_id: t.room_id,
                payload: t.payload,
            }))
    }

    /// `POST /v1/auth/jwt/login` (ZnDraw's login: a form with `username`
    /// and `password`): on success the new token is in use.
    pub async fn login(&self, user: &str, password: &str) -> Result<(), ApiError> {
        let endpoint = Endpoint::Login;
        let url = format!("{}/v1/auth/jwt/login", self.base);
        let body = format!(
            "username={}&password={}",
            form_encode(user),
            form_encode(password)
        );
        let req = Outgoing {
            method: outage_core::protocol::Method::Post,
            url: &url,
            json: Some(body.as_bytes()),
            form: true,
            timeout: StdDuration::from_millis(CoreRequest::Login.timeout(&self.config).as_millis()),
        };
        let resp = self.http.send(req, "").await.map_err(|failure| ApiError {
            endpoint,
            failure,
            detail: None,
        })?;
        let resp = self.expect(CoreRequest::Login, resp)?;
        #[derive(serde::Deserialize)]
        struct Login {
            access_token: String,
        }
        let token = serde_json::from_slice::<Login>(&resp.body)
            .ok()
            .filter(|l| outage_core::protocol::is_valid_token(&l.access_token))
            .ok_or_else(|| self.malformed(endpoint))?;
        self.token.set(&token.access_token);
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

    /// `GET /tasks/{id}`: the task's state, and whether `worker_id` holds it.
    pub async fn get_task(&self, task_id: &str, worker_id: &str) -> Result<outage_core::TaskState, ApiError> {
        let route = Route::GetTask { task_id };
        let resp = self.call(CoreRequest::GetTask, route, None).await?;
        let info: TaskInfo<String> =
            serde_json::from_slice(&resp.body).map_err(|_| self.malformed(route.endpoint()))?;
        Ok(outage_core::TaskState {
            status: info.status,
            ours: info.worker_id.as_deref() == Some(worker_id),
        })
    }

    /// `PATCH /tasks/{id}`.
    pub async fn set_status(
        &self,
        task_id: &str,
        status: TaskStatus,
        error: Option<&str>,
    ) -> Result<(), ApiError> {
        let route = Route::TaskStatus { task_id };
        let body = serde_json::to_vec(&StatusUpdate { status, error }).expect("status serialises");
        let resp = self.call(CoreRequest::Update(status), route, Some(&body)).await?;
        // The server answers with the updated task. An answer that does not
        // say so cannot prove the update applied: report it unreadable, and
        // the core sends it again (a 409 then is checked with a GET).
        match serde_json::from_slice::<TaskInfo<String>>(&resp.body) {
            Ok(task) if task.status == status => Ok(()),
            _ => Err(self.malformed(route.endpoint())),
        }
    }

    /// `PATCH /workers/{id}`.
    pub async fn heartbeat(&self, worker_id: &str) -> Result<(), ApiError> {
        let route = Route::Heartbeat { worker_id };
        self.call(CoreRequest::Heartbeat, route, None).await.map(drop)
    }

    /// `DELETE /workers/{id}` (`req`: the current id's disconnect, or an
    /// old id's retirement).
    pub async fn disconnect(&self, req: CoreRequest, worker_id: &str) -> Result<(), ApiError> {
        let route = Route::Disconnect { worker_id };
        self.call(req, route, None).await.map(drop)
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `detail` of a problem+json answer, if the body is one. Owned: the
/// server may escape characters in it, which a borrowed `&str` cannot hold.
pub fn problem_detail(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        detail: Option<serde_json::Value>,
    }
    let d: Detail = serde_json::from_slice(body).ok()?;
    match d.detail? {
        serde_json::Value::String(s) => Some(s),
        // FastAPI's 422: a list of validation errors.
        other => Some(other.to_string()),
    }
}

/// A claim answer: `{"task": null}` or the task, its payload kept raw.
pub fn parse_claim(body: &[u8]) -> Result<Option<WireTask<String, Box<RawValue>>>, serde_json::Error> {
    let claimed: ClaimResponse<WireTask<String, Box<RawValue>>> = serde_json::from_slice(body)?;
    Ok(claimed.task)
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
        assert_eq!(form_encode("admin@example.com"), "admin%40example.com");
        assert_eq!(form_encode("p w&=+é"), "p%20w%26%3D%2B%C3%A9");
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
            Some(r#"[{"loc":["body","username"],"type":"missing"}]"#)
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
