//! Typed calls of the zndraw-joblib worker API over the [`Http`] seam.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use outage_core::protocol::{
    ClaimRequest, ClaimResponse, JobRegistration, Problem, Route, StatusUpdate, Task as WireTask, TaskStatus,
    WorkerResponse,
};
use outage_core::{Endpoint, Failure};

use crate::Job;
use crate::http::{Http, HttpError, Request, Response};

/// A task claimed from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Task UUID.
    pub id: String,
    /// Full job name, `{room}:{category}:{name}`.
    pub job_name: String,
    /// The room it was submitted in.
    pub room_id: String,
    /// The client's payload.
    pub payload: serde_json::Value,
}

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

/// Request counters, for summaries and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent (including retries on stale connections).
    pub requests: AtomicU64,
    /// Requests that failed in transport or with an unexpected status.
    pub failures: AtomicU64,
    /// Stale keep-alive connections retried on a fresh one.
    pub stale_retries: AtomicU64,
}

/// The worker API of one server.
pub struct Api<H> {
    http: H,
    base: String,
    token: String,
    timeout: StdDuration,
    /// Request counters.
    pub counters: Counters,
}

impl<H: Http> Api<H> {
    /// `base` is the server URL (`http://host:port`, without `/v1/joblib`).
    pub fn new(http: H, base: &str, token: &str, timeout: StdDuration) -> Self {
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            timeout,
            counters: Counters::default(),
        }
    }

    async fn call(
        &self,
        route: Route<'_>,
        body: Option<&[u8]>,
        timeout: StdDuration,
    ) -> Result<Response, ApiError> {
        let url = format!("{}{route}", self.base);
        let req = Request {
            method: route.method(),
            url: &url,
            json: body,
            timeout,
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut result = self.http.send(req, &self.token).await;
        if let Err(e) = result
            && e.resend_once(route.may_resend())
        {
            // The core's rule: a request that could not be written, or an
            // idempotent one that met a connection closed before any answer
            // (uvicorn closes idle keep-alive connections after 5 s), goes
            // once more on a fresh connection; this is no outage. A POST
            // that may have reached the server is never re-sent here.
            crate::emit(&outage_core::Event::StaleConnection {
                what: route.endpoint(),
            });
            self.counters.stale_retries.fetch_add(1, Ordering::Relaxed);
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            result = self.http.send(req, &self.token).await;
        }
        result.map_err(|failure: HttpError| {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            ApiError {
                endpoint: route.endpoint(),
                failure,
                detail: None,
            }
        })
    }

    fn expect(&self, endpoint: Endpoint, resp: Response, ok: &[u16]) -> Result<Response, ApiError> {
        if ok.contains(&resp.status) {
            return Ok(resp);
        }
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let detail = serde_json::from_slice::<Problem<'_>>(&resp.body)
            .ok()
            .and_then(|p| p.detail.map(str::to_owned));
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
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        ApiError {
            endpoint,
            failure: Failure::MalformedResponse,
            detail: None,
        }
    }

    /// `POST /workers`: a new worker's id.
    pub async fn create_worker(&self) -> Result<String, ApiError> {
        let route = Route::CreateWorker;
        let resp = self.call(route, None, self.timeout).await?;
        let resp = self.expect(route.endpoint(), resp, &[201, 200])?;
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
        let resp = self.call(route, Some(&body), self.timeout).await?;
        self.expect(route.endpoint(), resp, &[200, 201]).map(drop)
    }

    /// `POST /tasks/claim`.
    pub async fn claim(&self, worker_id: &str) -> Result<Option<Task>, ApiError> {
        let route = Route::Claim;
        let body = serde_json::to_vec(&ClaimRequest { worker_id }).expect("claim serialises");
        let resp = self.call(route, Some(&body), self.timeout).await?;
        let resp = self.expect(route.endpoint(), resp, &[200])?;
        let claimed: ClaimResponse<WireTask<'_, serde_json::Value>> =
            serde_json::from_slice(&resp.body).map_err(|_| self.malformed(route.endpoint()))?;
        Ok(claimed.task.map(|t| Task {
            id: t.id.to_owned(),
            job_name: t.job_name.to_owned(),
            room_id: t.room_id.to_owned(),
            payload: t.payload,
        }))
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
        let resp = self.call(route, Some(&body), self.timeout).await?;
        self.expect(route.endpoint(), resp, &[200]).map(drop)
    }

    /// `PATCH /workers/{id}`.
    pub async fn heartbeat(&self, worker_id: &str) -> Result<(), ApiError> {
        let route = Route::Heartbeat { worker_id };
        let resp = self.call(route, None, self.timeout).await?;
        self.expect(route.endpoint(), resp, &[200]).map(drop)
    }

    /// `DELETE /workers/{id}`.
    pub async fn disconnect(&self, worker_id: &str, timeout: StdDuration) -> Result<(), ApiError> {
        let route = Route::Disconnect { worker_id };
        let resp = self.call(route, None, timeout).await?;
        self.expect(route.endpoint(), resp, &[204, 200]).map(drop)
    }
}
