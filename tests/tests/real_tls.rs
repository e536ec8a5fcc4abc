//! `https://` and `wss://` against the real job server (`serve.py
//! --tls-cert/--tls-key`, behind a path prefix as a ZnDraw behind a
//! reverse proxy would be), with the default build: a throw-away CA made
//! here, trusted through `--ca-file`. The worker registers, gets push over
//! `wss://`, serves tasks through its own pooled client; without the CA the
//! server's certificate is refused, in words, and nothing is registered.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use outage_tests::real::{Options, RealServer};
use serde_json::Value;

const JOB: &str = "@global:modifiers:Echo";
const PREFIX: &str = "/zndraw";

/// The CA and the server's certificate and key (for 127.0.0.1 and
/// localhost), written once per test process; the test's own client
/// trusts the CA.
fn pki() -> &'static (PathBuf, PathBuf, PathBuf) {
    static PKI: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    PKI.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir = std::env::temp_dir().join(format!("outage-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "outage test CA (throw-away)");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let leaf_cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let (ca_pem, cert_pem, key_pem) =
            (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
        std::fs::write(&cert_pem, leaf_cert.pem()).unwrap();
        std::fs::write(&key_pem, key.serialize_pem()).unwrap();
        outage_runtime_std::tls::trust_ca_file(&ca_pem).unwrap();
        (ca_pem, cert_pem, key_pem)
    })
}

fn tls_server() -> RealServer {
    let (_, cert, key) = pki();
    RealServer::start_with(Options {
        args: vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--path-prefix".into(),
            PREFIX.into(),
            "--socketio".into(),
        ],
        ..Options::default()
    })
    .expect("the real job server with TLS")
}

/// One call to the server's API over https, through the host runtime's
/// own client: status and JSON body.
fn call(server: &RealServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    async_std::task::block_on(async {
        let client = surf::Client::with_http_client(outage_runtime_std::h1::H1Client::new(16 << 20));
        let url = format!("{}/v1/joblib{path}", server.url());
        let mut req = surf::RequestBuilder::new(method.parse().unwrap(), url.parse().unwrap())
            .header("Authorization", format!("Bearer {}", server.token()));
        if let Some(b) = body {
            req = req.body_json(&b).unwrap();
        }
        let mut res = client.send(req.build()).await.expect("an https answer");
        let status = u16::from(res.status());
        let text = res.body_string().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
}

struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(server: &RealServer, ca_file: bool) -> Worker {
        let log = std::env::temp_dir().join(format!("outage-tls-{}.log", uuid::Uuid::new_v4().simple()));
        let mut cmd = outage_tests::cli::worker();
        cmd.args(["--server", server.url(), "--token", server.token()])
            .args(["--job", &format!("{JOB}=cat"), "--push", "on", "--poll", "500ms"])
            .env("RUST_LOG", "debug,outage::http=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if ca_file {
            cmd.arg("--ca-file").arg(&pki().0);
        }
        Worker {
            child: cmd.spawn().expect("start outage-worker"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn https_and_wss_behind_a_path_prefix_with_a_private_ca() {
    let server = tls_server();
    assert!(
        server.url().starts_with("https://") && server.url().ends_with(PREFIX),
        "{}",
        server.url()
    );
    let mut worker = Worker::start(&server, true);
    worker.wait_for("Registered as worker");
    // Push over wss://, under the prefix.
    worker.wait_for("Push connected");
    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, task) = call(
            &server,
            "POST",
            &format!("/rooms/room1/tasks/{JOB}"),
            Some(serde_json::json!({ "payload": { "n": n } })),
        );
        assert_eq!(status, 202, "{task}");
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let (_, task) = call(&server, "GET", &format!("/tasks/{id}"), None);
            if task["status"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "{task}\n{}", worker.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = worker.child.wait().unwrap();
    assert!(status.success(), "{}", worker.log());
    let log = worker.log();
    assert!(log.contains("deleted from the server"), "{log}");
    assert!(!log.contains("TLS error") && !log.contains("TLS:"), "{log}");
    assert!(!log.contains(server.token()), "the token in the log");
}

#[test]
fn a_certificate_from_an_unknown_ca_is_refused_in_words() {
    let server = tls_server();
    let worker = Worker::start(&server, false);
    worker.wait_for("Startup: create worker failed (TLS error)");
    let log = worker.log();
    assert!(
        log.contains("the server's certificate is signed by an unknown issuer (trust its CA with --ca-file)"),
        "{log}"
    );
    assert!(!log.contains("Registered as worker"), "{log}");
    let (_, workers) = call(&server, "GET", "/workers", None);
    assert_eq!(workers["items"].as_array().map(Vec::len), Some(0), "{workers}");
}
