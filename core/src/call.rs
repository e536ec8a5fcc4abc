//! What each [`Request`] is on the wire, decided once for both runtimes:
//! which worker id it names, its [`Route`], its body and what its answer
//! says. A runtime fills a [`Subject`] from its storage (the ids, the held
//! task, its jobs), sends `route` with `body`, and hands the answer to
//! [`Request::read`]; it keeps what the [`Answer`] points at and replies
//! with [`Answer::reply`]. No rule about a job-API request is left to a
//! runtime; a login ([`Request::Login`]) is sent by each runtime from
//! [`crate::protocol::LOGIN_PATH`] and [`crate::protocol::write_login_form`],
//! and its token read with [`crate::protocol::body::access_token`].
//!
//! ```
//! use outage_core::call::{Answer, Subject, WhichId};
//! use outage_core::protocol::{Route, TaskStatus};
//! use outage_core::{Request, TaskState};
//!
//! let req = Request::GetTask;
//! assert_eq!(req.names_id(), Some(WhichId::Current));
//! let s = Subject { worker_id: "w-1", task_id: "t-1", ..Subject::default() };
//! assert_eq!(req.route(&s), Ok(Route::GetTask { task_id: "t-1" }));
//! assert!(!req.has_body());
//! let answer = br#"{"id":"t-1","status":"running","worker_id":"w\u002d1"}"#;
//! let state = TaskState { status: TaskStatus::Running, ours: true };
//! assert_eq!(req.read(answer, s.worker_id), Ok(Answer::Task(state)));
//! ```

use crate::json::{Full, string_is};
use crate::protocol::body::{self, Claimed, Out};
use crate::protocol::{Route, StatusUpdate};
use crate::{Failure, Local, Reply, Request, TaskState};

/// Which of a worker's ids a request names: a runtime keeps three (the
/// current one; a pending one, created and not yet registered; an old
/// one, given up after an ambiguous claim and still to be deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhichId {
    /// The id in use.
    Current,
    /// The id just created, whose jobs are being registered.
    Pending,
    /// The id given up, to be retired.
    Old,
}

/// A job a worker serves: its names and its payload's JSON schema (JSON
/// text, sent as it is; `"{}"` for none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Job<'a> {
    /// Room (`@global` for all rooms; needs a superuser token).
    pub room: &'a str,
    /// `modifiers`, `selections` or `analysis`.
    pub category: &'a str,
    /// Job name.
    pub name: &'a str,
    /// JSON schema of the payload, as raw JSON text.
    pub schema: &'a str,
}

impl Job<'_> {
    /// Is a claimed task's `job_name` this job?
    /// ([`body::job_matches`], the server's `room:category:name`.)
    pub fn matches(&self, full_name: &str) -> bool {
        body::job_matches(self.room, self.category, self.name, full_name)
    }
}

/// What a request is about, from the runtime's storage; a field a request
/// does not use may be left empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The id [`Request::names_id`] picks.
    pub worker_id: &'a str,
    /// The lane's held task ([`Request::Update`], [`Request::GetTask`]).
    pub task_id: &'a str,
    /// Job `n` of [`Request::RegisterJob`]`(n)`.
    pub job: Option<&'a Job<'a>>,
    /// The handler's error ([`Request::Update`] to `failed`).
    pub error: Option<&'a str>,
}

/// What an accepted answer says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Nothing to keep.
    Done,
    /// [`Request::CreateWorker`]: the new worker's id as a JSON string
    /// (quoted, escaped as sent), to keep as the pending id.
    Created(&'a [u8]),
    /// [`Request::Claim`]: the task claimed, if any, to keep in the lane.
    Claimed(Option<Claimed<'a>>),
    /// [`Request::GetTask`]: the task's state.
    Task(TaskState),
}

impl Answer<'_> {
    /// The reply to the core, once the runtime has kept what it must.
    #[inline]
    pub const fn reply(&self) -> Reply {
        match self {
            Answer::Done | Answer::Created(_) => Reply::Done,
            Answer::Claimed(task) => Reply::Claimed(task.is_some()),
            Answer::Task(state) => Reply::Task(*state),
        }
    }
}

const BAD: Failure = Failure::MalformedResponse;

impl Request {
    /// The worker id its route, body or answer uses, if any: a
    /// registration the pending id, a retirement the old id; a login, a
    /// creation (the server names the new id) and a status update (its
    /// route names the task) none; every other request the current id.
    pub const fn names_id(self) -> Option<WhichId> {
        match self {
            Request::Login | Request::CreateWorker | Request::Update(_) => None,
            Request::RegisterJob(_) => Some(WhichId::Pending),
            Request::Retire => Some(WhichId::Old),
            _ => Some(WhichId::Current),
        }
    }

    /// Its route. A login has none in the job API (it is
    /// [`crate::protocol::LOGIN_PATH`] with
    /// [`crate::protocol::write_login_form`]), and a registration needs its
    /// job: both are [`Local::Encoding`].
    pub fn route<'a>(self, s: &Subject<'a>) -> Result<Route<'a>, Local> {
        Ok(match self {
            Request::Login => return Err(Local::Encoding),
            Request::CreateWorker => Route::CreateWorker,
            Request::RegisterJob(_) => Route::RegisterJob {
                room: s.job.ok_or(Local::Encoding)?.room,
            },
            Request::Heartbeat => Route::Heartbeat {
                worker_id: s.worker_id,
            },
            Request::Claim => Route::Claim,
            Request::Update(_) => Route::TaskStatus { task_id: s.task_id },
            Request::GetTask => Route::GetTask { task_id: s.task_id },
            Request::Retire | Request::Disconnect => Route::Disconnect {
                worker_id: s.worker_id,
            },
        })
    }

    /// Does it carry a JSON body ([`Request::write_body`])?
    pub const fn has_body(self) -> bool {
        matches!(
            self,
            Request::RegisterJob(_) | Request::Claim | Request::Update(_)
        )
    }

    /// Writes its body through `out` (nothing if it has none): a
    /// registration, a claim, or a status update with the handler's error.
    pub fn write_body(self, s: &Subject<'_>, out: Out<'_>) -> Result<(), Full> {
        match self {
            Request::RegisterJob(_) => match s.job {
                Some(j) => body::registration(j.category, j.name, j.schema.as_bytes(), s.worker_id, out),
                None => Err(Full),
            },
            Request::Claim => body::claim(s.worker_id, out),
            Request::Update(status) => body::status(
                &StatusUpdate {
                    status,
                    error: s.error,
                },
                out,
            ),
            _ => Ok(()),
        }
    }

    /// What its accepted answer says; an answer that does not say what the
    /// request needs is [`Failure::MalformedResponse`] (for the core, an
    /// ambiguous answer, never a silent loss). A status update's answer
    /// must carry the task in the new status, or it cannot prove the
    /// update applied; a task is ours when its `worker_id` is `our_id`
    /// (the current id: [`Subject::worker_id`]).
    pub fn read<'a>(self, answer: &'a [u8], our_id: &str) -> Result<Answer<'a>, Failure> {
        Ok(match self {
            Request::CreateWorker => Answer::Created(body::worker_id(answer)?),
            Request::Claim => Answer::Claimed(body::claimed(answer)?),
            Request::Update(_) | Request::GetTask => {
                let (status, holder) = body::task(answer)?;
                match self {
                    Request::Update(new) if new != status => return Err(BAD),
                    Request::Update(_) => Answer::Done,
                    // A holder that is not a valid string says nothing
                    // about whose the task is: unreadable, not "not ours".
                    _ => Answer::Task(TaskState {
                        status,
                        ours: match holder {
                            Some(h) => string_is(h, our_id).ok_or(BAD)?,
                            None => false,
                        },
                    }),
                }
            }
            _ => Answer::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskStatus;
    extern crate std;
    use std::vec::Vec;

    const ALL: [Request; 11] = [
        Request::Login,
        Request::CreateWorker,
        Request::RegisterJob(0),
        Request::Heartbeat,
        Request::Claim,
        Request::Update(TaskStatus::Running),
        Request::Update(TaskStatus::Completed),
        Request::Update(TaskStatus::Failed),
        Request::GetTask,
        Request::Retire,
        Request::Disconnect,
    ];

    const JOB: Job<'static> = Job {
        room: "r/x",
        category: "modifiers",
        name: "E\"x",
        schema: r#"{"type":"object"}"#,
    };

    fn subject() -> Subject<'static> {
        Subject {
            worker_id: "w-1",
            task_id: "t 1",
            job: Some(&JOB),
            error: Some("bad \"input\""),
        }
    }

    fn body(req: Request, s: &Subject<'_>) -> Result<Vec<u8>, Full> {
        let mut v = Vec::new();
        req.write_body(s, &mut |piece| {
            v.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(v)
    }

    #[test]
    fn every_request_names_its_id_and_route() {
        use std::string::ToString;
        let s = subject();
        let expect: [(Option<WhichId>, Result<&str, Local>, &str); 11] = [
            (None, Err(Local::Encoding), ""),
            (None, Ok("POST /v1/joblib/workers"), ""),
            (
                Some(WhichId::Pending),
                Ok("PUT /v1/joblib/rooms/r%2Fx/jobs"),
                r#"{"category":"modifiers","name":"E\"x","schema":{"type":"object"},"worker_id":"w-1"}"#,
            ),
            (Some(WhichId::Current), Ok("PATCH /v1/joblib/workers/w-1"), ""),
            (
                Some(WhichId::Current),
                Ok("POST /v1/joblib/tasks/claim"),
                r#"{"worker_id":"w-1"}"#,
            ),
            (
                None,
                Ok("PATCH /v1/joblib/tasks/t%201"),
                r#"{"status":"running","error":"bad \"input\""}"#,
            ),
            (
                None,
                Ok("PATCH /v1/joblib/tasks/t%201"),
                r#"{"status":"completed","error":"bad \"input\""}"#,
            ),
            (
                None,
                Ok("PATCH /v1/joblib/tasks/t%201"),
                r#"{"status":"failed","error":"bad \"input\""}"#,
            ),
            (Some(WhichId::Current), Ok("GET /v1/joblib/tasks/t%201"), ""),
            (Some(WhichId::Old), Ok("DELETE /v1/joblib/workers/w-1"), ""),
            (Some(WhichId::Current), Ok("DELETE /v1/joblib/workers/w-1"), ""),
        ];
        for (req, (id, route, sent)) in ALL.into_iter().zip(expect) {
            assert_eq!(req.names_id(), id, "{req:?}");
            let got = req.route(&s).map(|r| std::format!("{} {r}", r.method().as_str()));
            assert_eq!(got.as_deref().map_err(|e| *e), route, "{req:?}");
            assert_eq!(req.has_body(), !sent.is_empty(), "{req:?}");
            let written = body(req, &s).unwrap();
            assert_eq!(std::str::from_utf8(&written).unwrap(), sent, "{req:?}");
            if let Ok(r) = req.route(&s) {
                assert_eq!(r.endpoint(), req.endpoint(), "{req:?}");
                let _ = r.to_string();
            }
        }
        let no_job = Subject { job: None, ..s };
        assert_eq!(Request::RegisterJob(0).route(&no_job), Err(Local::Encoding));
        assert_eq!(body(Request::RegisterJob(0), &no_job), Err(Full));
        // The handler's error is what the runtime gives: none for a success.
        let ok = Subject { error: None, ..s };
        let written = body(Request::Update(TaskStatus::Completed), &ok).unwrap();
        assert_eq!(written, br#"{"status":"completed"}"#);
    }

    #[test]
    fn answers_say_what_the_request_needs() {
        let s = subject();
        let created = br#"{"id":"w\u002d2","last_heartbeat":"2026-01-01T00:00:00"}"#;
        assert_eq!(
            Request::CreateWorker.read(created, s.worker_id),
            Ok(Answer::Created(br#""w\u002d2""#))
        );
        assert_eq!(Request::CreateWorker.read(b"{}", s.worker_id), Err(BAD));
        assert_eq!(
            Request::Claim.read(br#"{"task":null}"#, s.worker_id),
            Ok(Answer::Claimed(None))
        );
        let claim = br#"{"task":{"id":"t1","job_name":"r:modifiers:E","room_id":"r","status":"claimed","payload":{"a":1}}}"#;
        let Ok(Answer::Claimed(Some(t))) = Request::Claim.read(claim, s.worker_id) else {
            panic!("a claimed task")
        };
        assert_eq!((t.id, t.payload), (&br#""t1""#[..], &br#"{"a":1}"#[..]));
        assert_eq!(Answer::Claimed(Some(t)).reply(), Reply::Claimed(true));
        assert_eq!(Answer::Claimed(None).reply(), Reply::Claimed(false));

        // A status update's answer carries the new status, or it proves
        // nothing.
        let running = br#"{"id":"t1","status":"running","worker_id":"w-1"}"#;
        let update = Request::Update(TaskStatus::Running);
        assert_eq!(update.read(running, s.worker_id), Ok(Answer::Done));
        let completed = Request::Update(TaskStatus::Completed);
        assert_eq!(completed.read(running, s.worker_id), Err(BAD));
        assert_eq!(completed.read(b"", s.worker_id), Err(BAD));

        // A task is ours when its holder is our id, however it is escaped.
        let state = |status, ours| Ok(Answer::Task(TaskState { status, ours }));
        let get = Request::GetTask;
        assert_eq!(get.read(running, s.worker_id), state(TaskStatus::Running, true));
        let escaped = br#"{"status":"running","worker_id":"w\u002d1"}"#;
        assert_eq!(get.read(escaped, s.worker_id), state(TaskStatus::Running, true));
        let other = br#"{"status":"running","worker_id":"w-10"}"#;
        assert_eq!(get.read(other, s.worker_id), state(TaskStatus::Running, false));
        let none = br#"{"status":"pending","worker_id":null}"#;
        assert_eq!(get.read(none, s.worker_id), state(TaskStatus::Pending, false));
        assert_eq!(get.read(br#"{"worker_id":"w-1"}"#, s.worker_id), Err(BAD));
        let broken = br#"{"status":"running","worker_id":"w\x"}"#;
        assert_eq!(get.read(broken, s.worker_id), Err(BAD), "an unreadable holder");
        assert_eq!(
            get.read(running, s.worker_id).map(|a| a.reply()),
            Ok(Reply::Task(TaskState {
                status: TaskStatus::Running,
                ours: true
            }))
        );

        for req in [
            Request::Heartbeat,
            Request::Retire,
            Request::Disconnect,
            Request::RegisterJob(0),
        ] {
            assert_eq!(req.read(b"", s.worker_id), Ok(Answer::Done), "{req:?}");
            assert_eq!(Answer::Done.reply(), Reply::Done);
        }
    }
}
