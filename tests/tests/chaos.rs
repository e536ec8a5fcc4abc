//! Chaos soak with exactly-once accounting, one test per runtime.
//!
//! A seeded plan (printed; `OUTAGE_CHAOS_SEED=N` replays it) submits 300
//! tasks over ~22 s — random durations (0–50 ms), random outcomes
//! (completed, or failed with a text), payloads full of numbers and strings
//! that a float or `serde_json::Value` round trip would change, some in
//! rooms whose ids need JSON escapes — while the test server injects every
//! fault it has on a random schedule of short windows (0.3–1.5 s): refuse,
//! blackhole, reset, 500/502/503/429 (with Retry-After), malformed JSON,
//! truncated and oversized bodies, drop, `Slow` and `Late` longer than the
//! request timeout, and `Pause`.
//!
//! Then, faults cleared, it waits (bounded) until the server shows every
//! task terminal and checks, from the server's state, the handlers' record
//! ([`outage_tests::record`]) and the server's journal:
//! - every task ended exactly once, in the state its handler returned
//!   (completed, or failed with its text), and none is left pending,
//!   claimed or running;
//! - no handler ran a task twice;
//! - the payload each handler got is byte-identical to the one submitted;
//! - a task the server failed with "Worker disconnected" — an ambiguous
//!   claim resolved by registering afresh and deleting the old worker id —
//!   is allowed only if no handler ran it and the claim answer that handed
//!   it out really was lost (it is counted as "failed by recovery");
//! - the worker is still running.
//!
//! `OUTAGE_CHAOS_ESCAPED_ROOMS=0` leaves out the rooms whose ids need JSON
//! escapes; `OUTAGE_SHOW_LOGS=1` shows the worker's log as it runs. Run with
//! `--nocapture` to see the summary of a passing run.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use outage_core::protocol::TaskStatus;
use outage_core::{Config, Duration as CoreDuration, SplitMix64};
use outage_tests::scenarios::{JOBS, RunningWorker, Runtime, Setup, fast_config};
use outage_tests::server::{Entry, Fault, TestServer, api::TaskRecord};
use outage_tests::{capture, record};

const TASKS: usize = 300;
/// Submissions are spread over this span.
const SUBMIT_SPAN: Duration = Duration::from_secs(22);
/// Fault windows start within this span (the last may end a little later).
const FAULT_SPAN: Duration = Duration::from_secs(24);
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_000);
/// After the faults end: give up waiting for terminal tasks after this long…
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// …or once no task has become terminal for this long.
const STALL: Duration = Duration::from_secs(6);
const RECOVERY_ERROR: &str = "Worker disconnected";
/// Examples shown per kind of problem.
const EXAMPLES: usize = 8;

fn soak_config() -> Config {
    Config {
        heartbeat_interval: CoreDuration::from_millis(500),
        poll_interval: CoreDuration::from_millis(100),
        max_unreachable: CoreDuration::from_secs(30),
        log_interval: CoreDuration::from_secs(2),
        backoff_cap: CoreDuration::from_millis(800),
        request_timeout: CoreDuration::from_millis(REQUEST_TIMEOUT.as_millis() as u64),
        disconnect_timeout: CoreDuration::from_secs(1),
        ..fast_config()
    }
}

// ------------------------------------------------------------------ seeded plan

struct Rng(SplitMix64);

impl Rng {
    fn u64(&mut self) -> u64 {
        (u64::from(self.0.next_u32()) << 32) | u64::from(self.0.next_u32())
    }

    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }

    /// Milliseconds in `lo..=hi`.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

fn seed() -> u64 {
    match std::env::var("OUTAGE_CHAOS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("OUTAGE_CHAOS_SEED={s:?} is not a number"))
        }
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        }
    }
}

/// Every kind of fault the soak injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Refuse,
    Blackhole,
    Reset,
    Status500,
    Status502,
    Status503,
    Status429,
    Malformed,
    Truncated,
    Oversized,
    Drop,
    Slow,
    Late,
    Pause,
}

const KINDS: [Kind; 14] = [
    Kind::Refuse,
    Kind::Blackhole,
    Kind::Reset,
    Kind::Status500,
    Kind::Status502,
    Kind::Status503,
    Kind::Status429,
    Kind::Malformed,
    Kind::Truncated,
    Kind::Oversized,
    Kind::Drop,
    Kind::Slow,
    Kind::Late,
    Kind::Pause,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Refuse => "refuse",
            Kind::Blackhole => "blackhole",
            Kind::Reset => "reset",
            Kind::Status500 => "status 500",
            Kind::Status502 => "status 502",
            Kind::Status503 => "status 503 (Retry-After 1)",
            Kind::Status429 => "status 429 (Retry-After 1)",
            Kind::Malformed => "malformed json",
            Kind::Truncated => "truncated body",
            Kind::Oversized => "oversized body",
            Kind::Drop => "drop",
            Kind::Slow => "slow (> timeout)",
            Kind::Late => "late (> timeout)",
            Kind::Pause => "pause",
        }
    }

    fn fault(self, rng: &mut Rng) -> Fault {
        let status = |status, retry_after| Fault::Status { status, retry_after };
        // Longer than the request timeout: the client gives up first.
        let over_timeout = |rng: &mut Rng| REQUEST_TIMEOUT + rng.ms(100, 500);
        match self {
            Kind::Refuse => Fault::Refuse,
            Kind::Blackhole => Fault::Blackhole,
            Kind::Reset => Fault::Reset,
            Kind::Status500 => status(500, None),
            Kind::Status502 => status(502, None),
            Kind::Status503 => status(503, Some(1)),
            Kind::Status429 => status(429, Some(1)),
            Kind::Malformed => Fault::MalformedJson,
            Kind::Truncated => Fault::TruncatedBody,
            // Past the embassy worker's 16 KiB buffer; now and then past
            // the host worker's 16 MiB limit too.
            Kind::Oversized => Fault::OversizedBody(if rng.percent(25) { 17 << 20 } else { 64 << 10 }),
            Kind::Drop => Fault::Drop,
            Kind::Slow => Fault::Slow(over_timeout(rng)),
            Kind::Late => Fault::Late(over_timeout(rng)),
            Kind::Pause => Fault::Pause,
        }
    }

    /// The kind of a journal entry's fault (by its name, and the status
    /// sent for `status`).
    fn of(e: &Entry) -> Option<Kind> {
        Some(match e.fault? {
            "refuse" => Kind::Refuse,
            "blackhole" => Kind::Blackhole,
            "reset" => Kind::Reset,
            "status" => match e.reply {
                Some(500) => Kind::Status500,
                Some(502) => Kind::Status502,
                Some(503) => Kind::Status503,
                Some(429) => Kind::Status429,
                _ => return None,
            },
            "malformed-json" => Kind::Malformed,
            "truncated-body" => Kind::Truncated,
            "oversized-body" => Kind::Oversized,
            "drop" => Kind::Drop,
            "slow" => Kind::Slow,
            "late" => Kind::Late,
            "pause" => Kind::Pause,
            _ => return None,
        })
    }
}

/// One fault window, from and to counted from the start of the run.
struct Window {
    kind: Kind,
    fault: Fault,
    from: Duration,
    to: Duration,
    path: Option<&'static str>,
}

/// Back-to-back windows with healthy gaps of 0.2–1 s between, every kind at
/// least once (drawn from a shuffled bag). The first round of the bag hits
/// every request for 0.7–1.5 s, so that each kind meets some request;
/// later windows last 0.3–1.5 s and may hit one kind of request only.
fn fault_schedule(rng: &mut Rng) -> Vec<Window> {
    const TARGETS: [Option<&str>; 5] = [
        None,
        None,
        Some("/tasks/claim"),
        Some("/tasks/"),
        Some("/workers"),
    ];
    let mut windows = Vec::new();
    let mut bag: Vec<Kind> = Vec::new();
    let mut bags = 0;
    let mut t = rng.ms(300, 800);
    while t < FAULT_SPAN || bags < 2 {
        if bag.is_empty() {
            bags += 1;
            if bags == 2 && t >= FAULT_SPAN {
                break;
            }
            bag = KINDS.to_vec();
            for i in (1..bag.len()).rev() {
                bag.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let kind = bag.pop().expect("refilled");
        let first_round = bags == 1;
        let to = t + if first_round {
            rng.ms(700, 1_500)
        } else {
            rng.ms(300, 1_500)
        };
        let path = if first_round { None } else { *rng.pick(&TARGETS) };
        windows.push(Window {
            kind,
            fault: kind.fault(rng),
            from: t,
            to,
            path,
        });
        t = to + rng.ms(200, 1_000);
    }
    windows
}

/// Numbers a float or `Value` round trip would change (or keep: a worker
/// must not care), as JSON text.
const NUMBERS: [&str; 18] = [
    "0.9889559355234849",
    "123456789012345678901234567890",
    "-0.0",
    "5e-324",
    "1e308",
    "1e+308",
    "1.5e-7",
    "1E2",
    "-0",
    "2.2250738585072014e-308",
    "9007199254740993",
    "18446744073709551616",
    "-9223372036854775809",
    "0.1",
    "1.7976931348623157e+308",
    "100.0",
    "3.0e10",
    "0.30000000000000004",
];

/// Strings with escapes, as JSON text.
const STRINGS: [&str; 9] = [
    r#""q\"b\\""#,
    r#""caf\u00e9""#,
    r#""\ud83d\ude00""#,
    r#""\/slash""#,
    "\"é😀 raw\"",
    r#""line\nbreak\ttab\u0001""#,
    r#""""#,
    r#""{\"not\":\"json\"}""#,
    r#""plain""#,
];

/// Failure texts the handlers return.
const FAILURES: [&str; 6] = [
    "plain failure",
    "quote \" and backslash \\",
    "unicode é ✓ 😀",
    "newline\nand tab\t",
    "json-looking {\"a\":[1,2]}",
    "a long one: 0123456789 0123456789 0123456789 0123456789 0123456789 0123456789 0123456789",
];

fn number(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=6 => rng.pick(&NUMBERS).to_string(),
        7 | 8 => loop {
            let f = f64::from_bits(rng.u64());
            if f.is_finite() {
                break format!("{f:?}");
            }
        },
        _ => format!("{}", rng.u64() as i64),
    }
}

/// What a task asks of its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intent {
    sleep_ms: u64,
    fail: Option<String>,
}

/// One task of the plan.
struct Planned {
    at: Duration,
    room: &'static str,
    job: &'static str,
    payload: String,
    intent: Intent,
}

fn payload(rng: &mut Rng, n: usize, intent: &Intent) -> String {
    // Now and then spaced out: the server keeps the text, so must the worker.
    let (colon, comma) = if rng.percent(10) {
        (" : ", " , ")
    } else {
        (":", ",")
    };
    let mut fields = vec![format!("\"sleep_ms\"{colon}{}", intent.sleep_ms)];
    if let Some(text) = &intent.fail {
        let text = serde_json::to_string(text).expect("strings serialise");
        fields.push(format!("\"fail\"{colon}{text}"));
    }
    fields.push(format!("\"n\"{colon}{}", number(rng)));
    let nums: Vec<String> = (0..3).map(|_| number(rng)).collect();
    fields.push(format!("\"nums\"{colon}[{}]", nums.join(comma)));
    fields.push(format!("\"s\"{colon}{}", rng.pick(&STRINGS)));
    fields.push(format!(
        "\"nested\"{colon}{{\"k\"{colon}[{}{comma}{{\"x\"{colon}{}}}]{comma}\"t\"{colon}true{comma}\"z\"{colon}null}}",
        rng.pick(&STRINGS),
        number(rng)
    ));
    fields.push(format!("\"task\"{colon}{n}"));
    // Key order is part of the text: not always sorted.
    if rng.percent(30) {
        fields.reverse();
    }
    format!("{{{}}}", fields.join(comma))
}

fn plan(rng: &mut Rng, escaped_rooms: bool) -> Vec<Planned> {
    const PLAIN: [&str; 3] = ["room1", "café", "a b"];
    const ESCAPED: [&str; 2] = ["r\\x", "r\"q"];
    (0..TASKS)
        .map(|n| {
            let slot = SUBMIT_SPAN.as_millis() as u64 * n as u64 / TASKS as u64;
            let at = Duration::from_millis(slot) + rng.ms(0, 60);
            let room = if escaped_rooms && rng.percent(10) {
                *rng.pick(&ESCAPED)
            } else {
                *rng.pick(&PLAIN)
            };
            let intent = Intent {
                sleep_ms: rng.below(51),
                fail: rng.percent(30).then(|| rng.pick(&FAILURES).to_string()),
            };
            Planned {
                at,
                room,
                job: JOBS[n % JOBS.len()],
                payload: payload(rng, n, &intent),
                intent,
            }
        })
        .collect()
}

// ------------------------------------------------------------------ accounting

struct Submitted {
    n: usize,
    id: String,
    planned: Planned,
}

/// The journal, indexed by task.
struct Wire<'j> {
    /// Processed claims that handed out each task.
    claims: HashMap<String, Vec<&'j Entry>>,
    /// `PATCH /tasks/{id}` requests, by task.
    patches: HashMap<String, Vec<&'j Entry>>,
}

impl<'j> Wire<'j> {
    fn new(journal: &'j [Entry]) -> Self {
        let mut claims: HashMap<String, Vec<&Entry>> = HashMap::new();
        let mut patches: HashMap<String, Vec<&Entry>> = HashMap::new();
        for e in journal {
            if let Some(id) = e.claimed_task() {
                claims.entry(id).or_default().push(e);
            } else if e.method == "PATCH"
                && let Some(id) = e.path.strip_prefix("/v1/joblib/tasks/")
            {
                patches.entry(id.to_owned()).or_default().push(e);
            }
        }
        Wire { claims, patches }
    }

    /// A claim handed this task out in a complete answer, sent well within
    /// the client's timeout: the worker had it, so nothing was ambiguous.
    fn timely_complete_claim(&self, id: &str) -> Option<&'j Entry> {
        self.claims.get(id)?.iter().copied().find(|e| {
            e.status == Some(200)
                && e.answered_at
                    .is_some_and(|a| a.saturating_sub(e.at) + Duration::from_millis(300) < REQUEST_TIMEOUT)
        })
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn describe_entry(e: &Entry) -> String {
    let mut s = format!("#{} conn {} at +{}", e.seq, e.connection, secs(e.at));
    if let Some(f) = e.fault {
        let _ = write!(s, " fault {f}");
    }
    if e.method == "PATCH" && e.path.contains("/tasks/") {
        let asked = serde_json::from_str::<serde_json::Value>(&e.body)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        let _ = write!(s, " {asked}");
    }
    match (e.processed, e.reply, e.status) {
        (false, _, Some(st)) => {
            let _ = write!(s, " not processed, answered {st}");
        }
        (false, _, None) => s.push_str(" not processed, no answer"),
        (true, reply, Some(st)) => {
            let after = e
                .answered_at
                .map(|a| secs(a.saturating_sub(e.at)))
                .unwrap_or_default();
            let _ = write!(s, " processed ({reply:?}), answer {st} sent after {after}");
        }
        (true, reply, None) => {
            let _ = write!(s, " processed ({reply:?}), answer LOST");
        }
    }
    s
}

fn outcome_text(o: &Option<Result<(), String>>) -> String {
    match o {
        None => "no outcome (still running or never returned)".into(),
        Some(Ok(())) => "completed".into(),
        Some(Err(t)) => format!("failed {t:?}"),
    }
}

fn intent_text(i: &Intent) -> String {
    match &i.fail {
        None => "completed".into(),
        Some(t) => format!("failed {t:?}"),
    }
}

fn describe_task(s: &Submitted, t: &TaskRecord, runs: &[record::Run], wire: &Wire<'_>) -> String {
    let mut out = format!(
        "task {} (#{} {}, room {:?}, wants {}): server {}",
        s.id,
        s.n,
        s.planned.job,
        s.planned.room,
        intent_text(&s.planned.intent),
        t.status.as_str()
    );
    if let Some(e) = &t.error {
        let _ = write!(out, " {e:?}");
    }
    if let Some(w) = t.worker_id {
        let _ = write!(out, " (worker {w})");
    }
    let claims = wire.claims.get(&s.id).map(Vec::as_slice).unwrap_or_default();
    if claims.is_empty() {
        out.push_str("; no processed claim handed it out");
    }
    for e in claims {
        let _ = write!(out, "; claim {}", describe_entry(e));
    }
    for e in wire.patches.get(&s.id).map(Vec::as_slice).unwrap_or_default() {
        let _ = write!(out, "; PATCH {}", describe_entry(e));
    }
    let _ = write!(out, "; handler runs: {}", runs.len());
    for r in runs {
        let _ = write!(out, " [{}]", outcome_text(&r.outcome));
    }
    out
}

#[derive(Default)]
struct Report {
    completed: usize,
    failed: usize,
    failed_by_recovery: usize,
    not_terminal: usize,
    runs: usize,
    /// Problem kind → task descriptions.
    problems: BTreeMap<&'static str, Vec<String>>,
    /// The first task with a problem, and the requests that touched it
    /// (its first claim to its last status update).
    first_bad: Option<(String, Vec<Entry>)>,
}

impl Report {
    fn problem(&mut self, kind: &'static str, detail: String) {
        self.problems.entry(kind).or_default().push(detail);
    }

    fn problem_count(&self) -> usize {
        self.problems.values().map(Vec::len).sum()
    }
}

fn account(tasks: &[Submitted], server: &TestServer, wire: &Wire<'_>) -> Report {
    let mut r = Report::default();
    let state = server.state().clone();
    for s in tasks {
        let t = &state.tasks[&s.id.parse().expect("uuid")];
        let runs = record::runs(&s.id);
        r.runs += runs.len();
        let about = || describe_task(s, t, &runs, wire);
        let problems_before = r.problem_count();
        let recovered = t.status == TaskStatus::Failed && t.error.as_deref() == Some(RECOVERY_ERROR);
        match t.status {
            TaskStatus::Pending | TaskStatus::Claimed | TaskStatus::Running => {
                r.not_terminal += 1;
                let kind = match t.status {
                    TaskStatus::Pending => "left pending",
                    TaskStatus::Claimed => "left claimed",
                    _ => "left running",
                };
                r.problem(kind, about());
            }
            TaskStatus::Cancelled => r.problem("cancelled (nobody cancels)", about()),
            _ if recovered && runs.is_empty() => match wire.timely_complete_claim(&s.id) {
                None => r.failed_by_recovery += 1,
                Some(_) => r.problem(
                    "failed by recovery although its claim answer arrived in full and in time",
                    about(),
                ),
            },
            _ if recovered => r.problem("failed by recovery although its handler ran", about()),
            _ if runs.is_empty() => r.problem("terminal, but no handler ran it", about()),
            TaskStatus::Completed | TaskStatus::Failed => {
                if t.status == TaskStatus::Completed {
                    r.completed += 1;
                } else {
                    r.failed += 1;
                }
            }
        }
        if runs.len() > 1 {
            r.problem("ran more than once", about());
        }
        if let Some(run) = runs.first() {
            let server_says = match t.status {
                TaskStatus::Completed => Some(Ok(())),
                TaskStatus::Failed => Some(Err(t.error.clone().unwrap_or_default())),
                _ => None,
            };
            if t.status.is_terminal() && !recovered && server_says != run.outcome {
                r.problem(
                    "server state differs from what the handler returned",
                    format!("handler returned {}, {}", outcome_text(&run.outcome), about()),
                );
            }
            let wanted = Some(match &s.planned.intent.fail {
                None => Ok(()),
                Some(text) => Err(text.clone()),
            });
            if run.outcome.is_some() && run.outcome != wanted {
                r.problem(
                    "handler returned other than its payload asked (payload misread)",
                    format!("handler returned {}, {}", outcome_text(&run.outcome), about()),
                );
            }
        }
        for run in &runs {
            if run.payload != s.planned.payload.as_bytes() {
                r.problem(
                    "payload altered on the way to the handler",
                    format!(
                        "task {} (#{}): submitted {} — handler got {}",
                        s.id,
                        s.n,
                        s.planned.payload,
                        String::from_utf8_lossy(&run.payload)
                    ),
                );
            }
            if run.room_id != s.planned.room {
                r.problem(
                    "room id altered on the way to the handler",
                    format!(
                        "task {} (#{}): room {:?} — handler got {:?}",
                        s.id, s.n, s.planned.room, run.room_id
                    ),
                );
            }
        }
        if r.problem_count() > problems_before && r.first_bad.is_none() {
            let touched = || {
                let claims = wire.claims.get(&s.id).into_iter().flatten();
                claims.chain(wire.patches.get(&s.id).into_iter().flatten())
            };
            let mut touched: Vec<Entry> = touched().map(|e| (*e).clone()).collect();
            touched.sort_by_key(|e| e.seq);
            if !touched.is_empty() {
                r.first_bad = Some((s.id.clone(), touched));
            }
        }
    }
    r
}

// ------------------------------------------------------------------ the soak

fn soak<R: Runtime>() {
    let seed = seed();
    let escaped_rooms = std::env::var("OUTAGE_CHAOS_ESCAPED_ROOMS").map_or(true, |v| v != "0");
    let head = format!("{} chaos soak, seed {seed}", R::NAME);
    println!("{head} (replay: OUTAGE_CHAOS_SEED={seed})");
    let mut rng = Rng(SplitMix64::new(seed));
    let windows = fault_schedule(&mut rng);
    let planned = plan(&mut rng, escaped_rooms);

    let log = capture::start();
    let server = TestServer::start().expect("start the test server");
    let setup = Setup {
        url: server.url(),
        token: server.token().to_owned(),
        config: soak_config(),
    };
    let w = R::start(&setup).unwrap_or_else(|e| panic!("{head}: start failed: {e}\n{}", log.dump()));
    let first_worker = w.id();

    let t0 = Instant::now();
    // Every time in the summary is server time (the journal's clock).
    let base = server.elapsed();
    for win in &windows {
        server.add_plan(
            win.fault.clone(),
            win.from,
            Some(win.to),
            win.path.map(str::to_owned),
            None,
        );
    }
    let mut tasks = Vec::with_capacity(TASKS);
    for (n, p) in planned.into_iter().enumerate() {
        if let Some(wait) = (t0 + p.at).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = server
            .submit_raw(p.room, p.job, &p.payload)
            .unwrap_or_else(|| panic!("{head}: task #{n} was not accepted: {}", p.payload));
        tasks.push(Submitted {
            n,
            id: id.to_string(),
            planned: p,
        });
    }
    let faults_end = windows.iter().map(|w| w.to).max().unwrap_or_default();
    if let Some(wait) = (t0 + faults_end).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    server.clear_faults();
    let cleared = base + t0.elapsed();

    // Until every task is terminal, or nothing moves any more.
    let terminal = || {
        let state = server.state();
        tasks
            .iter()
            .filter(|s| state.tasks[&s.id.parse().expect("uuid")].status.is_terminal())
            .count()
    };
    let drain_start = Instant::now();
    let (mut last, mut moved) = (terminal(), Instant::now());
    while last < TASKS && drain_start.elapsed() < DRAIN_LIMIT && moved.elapsed() < STALL {
        std::thread::sleep(Duration::from_millis(50));
        let now = terminal();
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
    let drained = drain_start.elapsed();
    // Handlers that are still running (they should not be) get a moment.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(2)
        && tasks
            .iter()
            .any(|s| record::runs(&s.id).iter().any(|r| r.outcome.is_none()))
    {
        std::thread::sleep(Duration::from_millis(20));
    }

    let journal = server.journal();
    let wire = Wire::new(&journal);
    let mut report = account(&tasks, &server, &wire);
    let stop = w.stop_reason();
    let finished = w.is_finished();
    if stop.is_some() || finished {
        let errors: Vec<String> = log
            .worker_lines()
            .into_iter()
            .filter(|l| l.level == log::Level::Error)
            .map(|l| l.text)
            .collect();
        report.problem(
            "worker stopped",
            format!("stop reason {stop:?}, loops finished: {finished}; error lines: {errors:?}"),
        );
    }

    // ---------------------------------------------------------------- totals
    let mut windows_by_kind: BTreeMap<Kind, usize> = BTreeMap::new();
    for win in &windows {
        *windows_by_kind.entry(win.kind).or_default() += 1;
    }
    let mut hits: BTreeMap<Kind, usize> = BTreeMap::new();
    for k in journal.iter().filter_map(Kind::of) {
        *hits.entry(k).or_default() += 1;
    }
    let workers: Vec<&Entry> = journal
        .iter()
        .filter(|e| e.method == "POST" && e.path == "/v1/joblib/workers" && e.processed)
        .collect();
    let deletes = journal
        .iter()
        .filter(|e| e.method == "DELETE" && e.processed && e.reply == Some(204))
        .count();
    let lost_claims = journal
        .iter()
        .filter(|e| e.answer_lost() && e.claimed_task().is_some())
        .count();
    let lost_answers = journal.iter().filter(|e| e.answer_lost()).count();
    let worker_lines = log.worker_lines();
    let warnings = worker_lines
        .iter()
        .filter(|l| l.level == log::Level::Warn)
        .count();
    let last = |what: &str, pick: &dyn Fn(&Entry) -> bool| {
        journal
            .iter()
            .rev()
            .find(|e| pick(e))
            .map_or(format!("no {what}"), |e| {
                format!("last {what} at +{}", secs(e.at))
            })
    };
    let last_claim = last("claim", &|e| e.path.ends_with("/tasks/claim"));
    let last_beat = last("heartbeat", &|e| {
        e.method == "PATCH" && e.path.contains("/workers/")
    });
    let escaped = tasks
        .iter()
        .filter(|s| s.planned.room.contains(['\\', '"']))
        .count();

    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "{head}: {TASKS} tasks submitted over {} from +{}, {} fault windows until +{} (cleared at +{}), drained for {} (times: since the server started)",
        secs(SUBMIT_SPAN),
        secs(base),
        windows.len(),
        secs(base + faults_end),
        secs(cleared),
        secs(drained)
    );
    let _ = writeln!(
        summary,
        "  tasks: {} completed, {} failed (by their handler), {} failed by recovery, {} not terminal; {} handler runs; {escaped} tasks in rooms that need JSON escapes",
        report.completed, report.failed, report.failed_by_recovery, report.not_terminal, report.runs
    );
    let _ = writeln!(summary, "  faults injected (windows / requests hit):");
    for k in KINDS {
        let hit = match k {
            Kind::Refuse => "-".to_owned(), // refused connections reach no journal
            _ => hits.get(&k).copied().unwrap_or(0).to_string(),
        };
        let _ = writeln!(
            summary,
            "    {:<28} {} / {hit}",
            k.name(),
            windows_by_kind.get(&k).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        summary,
        "  worker requests: {} read by the server, {} sent by the worker ({last_claim}, {last_beat}); {} answers lost after processing ({} of them claims that handed out a task)",
        journal.len(),
        w.requests().map_or("?".into(), |n| n.to_string()),
        lost_answers,
        lost_claims
    );
    let _ = writeln!(
        summary,
        "  worker ids: {} created (first {first_worker}, now {}), {} deleted; worker {}; log: {warnings} warnings",
        workers.len(),
        w.id(),
        deletes,
        match (&stop, finished) {
            (None, false) => "still running".to_owned(),
            _ => format!("STOPPED ({stop:?})"),
        }
    );
    if report.problems.is_empty() {
        let _ = writeln!(summary, "  exactly once: every task accounted for");
    } else {
        let _ = writeln!(summary, "  PROBLEMS ({} in all):", report.problem_count());
        for (kind, items) in &report.problems {
            let _ = writeln!(summary, "  - {kind}: {}", items.len());
            for item in items.iter().take(EXAMPLES) {
                let _ = writeln!(summary, "      {item}");
            }
            if items.len() > EXAMPLES {
                let _ = writeln!(summary, "      … and {} more", items.len() - EXAMPLES);
            }
        }
        // Log times in server time; one line each.
        let server_time = |at: Instant| {
            (base + at.saturating_duration_since(t0)).saturating_sub(t0.saturating_duration_since(at))
        };
        let show = |summary: &mut String, l: &capture::Line| {
            let text = l.text.replace('\n', "\\n").replace('\t', "\\t");
            let _ = writeln!(summary, "    +{} {:<5} {text}", secs(server_time(l.at)), l.level);
        };
        // One line per task run ("Task … completed in …" / "… failed
        // after …"; older texts "Task failed: …") would fill the tail.
        let per_task = |t: &str| {
            t.starts_with("Task failed: ")
                || (t.starts_with("Task ")
                    && (t.contains(") completed in ") || t.contains(") failed after ")))
        };
        if let Some((id, touched)) = &report.first_bad {
            let (first, last) = (&touched[0], &touched[touched.len() - 1]);
            let (from, to) = (first.at, last.at);
            let _ = writeln!(
                summary,
                "  the worker's log around task {id} (+{} to +{}; other tasks' lines left out):",
                secs(from),
                secs(to)
            );
            let window = from.saturating_sub(Duration::from_millis(300))..to + Duration::from_secs(2);
            for l in worker_lines
                .iter()
                .filter(|l| window.contains(&server_time(l.at)))
                .filter(|l| !per_task(&l.text) || l.text.contains(id.as_str()))
                .take(30)
            {
                show(&mut summary, l);
            }
            let _ = writeln!(summary, "  …and the requests the server read then:");
            let seqs = first.seq.saturating_sub(2)..last.seq + 12;
            for e in journal.iter().filter(|e| seqs.contains(&e.seq)) {
                let path = e.path.strip_prefix("/v1/joblib").unwrap_or(&e.path);
                let _ = writeln!(summary, "    {} {path} {}", e.method, describe_entry(e));
            }
        }
        let _ = writeln!(
            summary,
            "  the worker's last log lines (one-per-task lines left out):"
        );
        let tail: Vec<_> = worker_lines.iter().filter(|l| !per_task(&l.text)).collect();
        for l in tail.iter().rev().take(12).rev() {
            show(&mut summary, l);
        }
    }
    if report.problems.is_empty() {
        println!("{summary}");
    }
    drop(w);

    // The soak must have been one: every kind of fault reached requests
    // (refused connections never reach the journal).
    let missing: Vec<&str> = KINDS
        .iter()
        .filter(|k| **k != Kind::Refuse && hits.get(k).is_none_or(|n| *n == 0))
        .map(|k| k.name())
        .collect();
    assert_eq!(tasks.len(), TASKS);
    assert!(
        report.problems.is_empty(),
        "{head}: {} problems (replay: OUTAGE_CHAOS_SEED={seed})\n{summary}",
        report.problem_count()
    );
    assert!(
        missing.is_empty(),
        "{head}: faults that reached no request: {missing:?} (replay: OUTAGE_CHAOS_SEED={seed})\n{summary}"
    );
}

#[test]
fn std() {
    soak::<outage_tests::std_rt::StdRuntime>();
}

#[test]
fn embassy() {
    soak::<outage_tests::embassy_rt::EmbassyRuntime>();
}
