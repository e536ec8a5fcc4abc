//! The real ZnDraw job server (`zndraw-joblib` from PyPI), started from
//! `../shared/jobserver/serve.py` on loopback.
//!
//! The Python environment is created on first use from the pinned
//! `requirements.txt` (in `target/jobserver-venv`, or `$OUTAGE_JOBSERVER_VENV`),
//! under a file lock so parallel tests create it once.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `../shared` beside the workspace, or `$OUTAGE_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("OUTAGE_SHARED_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    }
}

/// The folder holding `serve.py` and `requirements.txt`.
pub fn jobserver_dir() -> PathBuf {
    shared_dir().join("jobserver")
}

fn venv_dir() -> PathBuf {
    match std::env::var_os("OUTAGE_JOBSERVER_VENV") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/jobserver-venv"),
    }
}

fn run(cmd: &mut Command, what: &str) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `py -m pip install -r reqs`, quietly.
fn pip_install(py: &Path, reqs: &Path, what: &str) -> io::Result<()> {
    run(
        Command::new(py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(reqs),
        what,
    )
}

/// The venv's Python, creating the venv from the pinned requirements when it
/// is missing or was made from other pins.
pub fn python() -> io::Result<PathBuf> {
    let reqs = jobserver_dir().join("requirements.txt");
    let pins = fs::read_to_string(&reqs)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", reqs.display())))?;
    let venv = venv_dir();
    fs::create_dir_all(venv.parent().unwrap_or(Path::new(".")))?;
    let lock = File::create(venv.with_extension("lock"))?;
    lock.lock()?;
    let py = venv.join("bin/python");
    let marker = venv.join("outage-requirements.txt");
    if py.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(pins.as_str()) {
        return Ok(py);
    }
    let _ = fs::remove_dir_all(&venv);
    let base = std::env::var("OUTAGE_PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        Command::new(&base).args(["-m", "venv"]).arg(&venv),
        "creating the job server venv",
    )?;
    pip_install(&py, &reqs, "installing the job server requirements")?;
    fs::write(&marker, &pins)?;
    Ok(py)
}

/// The venv's Python with the extensions' needs too (`ase`, `numpy`:
/// `tests/python/requirements-extensions.txt`, installed on first use
/// beside the job server's pins), for the ZnDraw extension tests.
pub fn extension_python() -> io::Result<PathBuf> {
    let py = python()?;
    let reqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/requirements-extensions.txt");
    let pins = fs::read_to_string(&reqs)?;
    let venv = venv_dir();
    let lock = File::create(venv.with_extension("lock"))?;
    lock.lock()?;
    let marker = venv.join("outage-extensions.txt");
    if fs::read_to_string(&marker).ok().as_deref() == Some(pins.as_str()) {
        return Ok(py);
    }
    pip_install(&py, &reqs, "installing the extensions' requirements (ase, numpy)")?;
    fs::write(&marker, &pins)?;
    Ok(py)
}

/// How to start the real server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Bearer token (default: a random one).
    pub token: Option<String>,
    /// Port (default 0: any free port).
    pub port: u16,
    /// SQLite file (default: a fresh one in a temp folder, kept across
    /// [`RealServer::restart`], deleted on drop).
    pub db: Option<PathBuf>,
    /// More `serve.py` flags, e.g. `--no-sweeper`.
    pub args: Vec<String>,
    /// Environment, e.g. `ZNDRAW_JOBLIB_WORKER_TIMEOUT_SECONDS`.
    pub env: Vec<(String, String)>,
}

/// A running real job server. Stopped with SIGTERM when dropped.
pub struct RealServer {
    child: Option<Child>,
    url: String,
    port: u16,
    token: String,
    db: PathBuf,
    workdir: PathBuf,
    options: Options,
}

impl RealServer {
    /// Start with the defaults.
    pub fn start() -> io::Result<RealServer> {
        RealServer::start_with(Options::default())
    }

    /// Start with `options`.
    pub fn start_with(options: Options) -> io::Result<RealServer> {
        let token = options
            .token
            .clone()
            .unwrap_or_else(|| format!("real-{}", uuid::Uuid::new_v4().simple()));
        let workdir = std::env::temp_dir().join(format!("outage-real-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&workdir)?;
        let db = options.db.clone().unwrap_or_else(|| workdir.join("jobs.db"));
        let mut server = RealServer {
            child: None,
            url: String::new(),
            port: options.port,
            token,
            db,
            workdir,
            options,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> io::Result<()> {
        let py = python()?;
        let stderr = File::create(self.workdir.join("server.err"))?;
        let mut cmd = Command::new(py);
        cmd.arg(jobserver_dir().join("serve.py"))
            .args(["--port", &self.port.to_string(), "--db"])
            .arg(&self.db);
        // `--auth jwt` logs users in; a static token is a usage error there.
        if !self
            .options
            .args
            .windows(2)
            .any(|w| w[0] == "--auth" && w[1] == "jwt")
        {
            cmd.args(["--token", &self.token]);
        }
        cmd.args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // Everything else it prints (uvicorn's access log) is kept.
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.workdir.join("server.out"))?;
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                } else {
                    let _ = writeln!(out, "{line}");
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(50)) {
                self.port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(self.port);
                self.url = url;
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the real job server exited ({status}) before listening: {}",
                    fs::read_to_string(self.workdir.join("server.err"))
                        .unwrap_or_default()
                        .trim()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the real job server did not start in 60 s",
                ));
            }
        }
    }

    /// What the server printed so far, stderr and then stdout (with
    /// `--access-log`: a line per request, its status among it).
    pub fn output(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.workdir.join(f)).unwrap_or_default();
        read("server.err") + &read("server.out")
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stop with SIGTERM (SIGKILL after 10 s); returns the exit status.
    pub fn stop_now(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                child.kill()?;
                return child.wait().map(Some);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the server with SIGKILL, as a crash would (no graceful shutdown:
    /// open connections are reset, a request in progress gets no answer).
    pub fn crash(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The `serve.py` flags of the next start (e.g. with or without
    /// `--socketio`), for [`RealServer::restart`].
    pub fn set_args(&mut self, args: Vec<String>) {
        self.options.args = args;
    }

    /// Start again on the same port and database (after [`RealServer::stop_now`],
    /// or stopping it first): a restart that keeps every worker and task.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop_now()?;
        self.launch()
    }

    /// The server process's id, while it runs (for signals: SIGSTOP and
    /// SIGCONT imitate a server that hangs and comes back).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.stop_now();
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

/// A test's own client of the job API at a server's URL with one token:
/// each request on a fresh connection (`crate::http::api`). A transport
/// error panics — the test's own request is not what is under test.
#[derive(Debug, Clone)]
pub struct Api {
    addr: std::net::SocketAddr,
    token: String,
}

impl Api {
    /// The API at `url` (`http://127.0.0.1:PORT`) with `token`.
    pub fn new(url: &str, token: &str) -> Api {
        Api {
            addr: crate::http::addr_of(url).expect("a server URL"),
            token: token.to_owned(),
        }
    }

    /// `method` `/v1/joblib` + `path`, with a JSON `body`.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> crate::http::Response {
        crate::http::api(self.addr, &self.token, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Api::call`] with a body serialized from `body`.
    pub fn call_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> crate::http::Response {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON"));
        self.call(method, path, body.as_deref())
    }

    /// Submits `payload` (JSON text, sent as is) to `job` from `room`
    /// (path form: escaped if it must be); asserts 202; the task id.
    pub fn submit(&self, room: &str, job: &str, payload: &str) -> String {
        let body = format!("{{\"payload\":{payload}}}");
        let r = self.call(
            "POST",
            &format!("/rooms/{room}/tasks/{job}"),
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        // Not through a `Value`: a deep payload is beyond its recursion limit.
        #[derive(serde::Deserialize)]
        struct Id {
            id: String,
        }
        serde_json::from_slice::<Id>(&r.body).expect("a task id").id
    }

    /// `GET /tasks/{id}`: the task as the server has it.
    pub fn task(&self, id: &str) -> serde_json::Value {
        self.call("GET", &format!("/tasks/{id}"), None).json()
    }

    /// The task's status (`pending`, `claimed`, `running`, `completed`, …).
    pub fn status(&self, id: &str) -> String {
        self.task(id)["status"].as_str().unwrap_or_default().to_owned()
    }
}

impl RealServer {
    /// The API with the server's static token.
    pub fn api(&self) -> Api {
        Api::new(self.url(), self.token())
    }
}

/// A token from ZnDraw's login at `url` (`POST /v1/auth/jwt/login`, form
/// encoded), as a client gets one; `None` if refused or unreachable.
pub fn login(url: &str, user: &str, password: &str) -> Option<String> {
    let addr = crate::http::addr_of(url).ok()?;
    let body = format!("username={}&password={password}", user.replace('@', "%40"));
    let r = crate::http::request(
        addr,
        "POST",
        "/v1/auth/jwt/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&body.into_bytes()),
    )
    .ok()?;
    (r.status == 200).then(|| r.json()["access_token"].as_str().map(str::to_owned))?
}
