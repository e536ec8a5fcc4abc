//! Every signal whose default would end the host worker outright, against
//! the real server, with a command running its task: the stop signals
//! (SIGHUP, SIGQUIT, SIGINT, SIGTERM, SIGXCPU, SIGPWR) stop it like
//! SIGTERM — the command finishes within the grace, its outcome is
//! delivered, the worker is deleted, no process is left; the others
//! (SIGUSR1, SIGUSR2, SIGALRM, SIGSTKFLT) are logged and ignored, and the
//! worker serves on. One test per signal; they take turns (a signal goes
//! to the whole test process).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, raise};
use outage_runtime_std::command::{self, Command};
use outage_runtime_std::{Job, StopReason, WorkerBuilder};
use outage_tests::capture;
use outage_tests::real::RealServer;
use outage_tests::scenarios::{fast_config, wait_until};

const JOB: &str = "@global:modifiers:Sleepy";

struct Run {
    server: RealServer,
    pidfile: PathBuf,
    runner: std::thread::JoinHandle<(outage_runtime_std::Worker, StopReason)>,
    task: String,
    worker_id: String,
}

/// A worker serving [`JOB`] with a command that appends its pid and task
/// id to the pidfile (one line per start), sleeps 1.5 s and succeeds,
/// until a stop signal; one task submitted and seen running its command.
fn serving() -> Run {
    let server = RealServer::start().expect("real job server");
    let pidfile = std::env::temp_dir().join(format!("outage-sig-{}", uuid::Uuid::new_v4().simple()));
    let script = format!("echo \"$$ $ZNDRAW_TASK_ID\" >> {}; sleep 1.5", pidfile.display());
    let config = outage_core::Config {
        request_timeout: outage_core::Duration::from_secs(5),
        ..fast_config()
    };
    let worker = async_std::task::block_on(
        WorkerBuilder::new(server.url(), server.token())
            .config(config)
            .job(Job::parse(JOB).unwrap(), Command::new("sh", ["-c", &script]))
            .start(),
    )
    .expect("start");
    let worker_id = worker.id();
    let runner = std::thread::spawn(move || {
        let reason = async_std::task::block_on(worker.run_until_signal(Duration::from_secs(10)));
        command::wait_for_abandoned();
        (worker, reason)
    });
    let task = server.api().submit("room1", JOB, "{}");
    wait_until("the command runs", Duration::from_secs(20), || {
        pidfile.exists() && server.api().status(&task) == "running"
    });
    Run {
        server,
        pidfile,
        runner,
        task,
        worker_id,
    }
}

/// Every start of the command so far: (pid, task id), in start order.
fn starts(pidfile: &PathBuf) -> Vec<(String, String)> {
    std::fs::read_to_string(pidfile)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(pid, task)| (pid.to_owned(), task.to_owned()))
        .collect()
}

/// The task ids the command started for, in start order.
fn started_tasks(pidfile: &PathBuf) -> Vec<String> {
    starts(pidfile).into_iter().map(|(_, task)| task).collect()
}

/// Every process the command ran in is gone (not even a zombie: the
/// worker reaped it).
fn gone(pidfile: &PathBuf) -> bool {
    starts(pidfile)
        .iter()
        .all(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

fn worker_listed(server: &RealServer, id: &str) -> bool {
    let workers = server.api().call("GET", "/workers", None).json();
    workers["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|w| w["id"] == id))
}

fn stops(signal: Signal) {
    let log = capture::start();
    let run = serving();
    let t0 = Instant::now();
    raise(signal).expect("raise");
    let (worker, reason) = run.runner.join().expect("the worker thread");
    assert_eq!(reason, StopReason::Requested, "{signal}\n{}", log.dump());
    assert!(worker.is_finished());
    assert!(
        t0.elapsed() < Duration::from_secs(12),
        "within the grace: {:?}",
        t0.elapsed()
    );
    let task = run.server.api().task(&run.task);
    assert_eq!(task["status"], "completed", "{signal}: {task}\n{}", log.dump());
    assert!(!worker_listed(&run.server, &run.worker_id), "{signal}: deleted");
    wait_until("the command is gone", Duration::from_secs(5), || {
        gone(&run.pidfile)
    });
    assert_eq!(
        log.matching(&format!("{} received: stopping", signal.as_str()))
            .len(),
        1,
        "{}",
        log.dump()
    );
    assert_eq!(worker.stats().outcomes_delivered, 1);
    assert_eq!(
        started_tasks(&run.pidfile),
        [run.task.as_str()],
        "{signal}: the task started once"
    );
    let _ = std::fs::remove_file(&run.pidfile);
}

fn ignored(signal: Signal) {
    let log = capture::start();
    let run = serving();
    raise(signal).expect("raise");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!run.runner.is_finished(), "{signal} does not stop the worker");
    wait_until("the task done", Duration::from_secs(20), || {
        run.server.api().status(&run.task) == "completed"
    });
    // It serves on: another task.
    let next = run.server.api().submit("room1", JOB, "{}");
    wait_until("the next task done", Duration::from_secs(20), || {
        run.server.api().status(&next) == "completed"
    });
    assert!(!run.runner.is_finished());
    raise(Signal::SIGTERM).expect("raise");
    let (worker, reason) = run.runner.join().expect("the worker thread");
    assert_eq!(reason, StopReason::Requested);
    assert!(worker.is_finished());
    assert!(!worker_listed(&run.server, &run.worker_id));
    assert_eq!(
        log.matching(&format!("{} received: ignored", signal.as_str()))
            .len(),
        1,
        "{}",
        log.dump()
    );
    assert_eq!(
        started_tasks(&run.pidfile),
        [run.task.as_str(), next.as_str()],
        "{signal}: each task started once"
    );
    wait_until("the commands are gone", Duration::from_secs(5), || {
        gone(&run.pidfile)
    });
    let _ = std::fs::remove_file(&run.pidfile);
}

#[test]
fn sighup_stops_like_sigterm() {
    stops(Signal::SIGHUP);
}

#[test]
fn sigquit_stops_like_sigterm() {
    stops(Signal::SIGQUIT);
}

#[test]
fn sigint_stops() {
    stops(Signal::SIGINT);
}

#[test]
fn sigterm_stops() {
    stops(Signal::SIGTERM);
}

#[test]
fn sigxcpu_stops() {
    stops(Signal::SIGXCPU);
}

/// A UPS daemon saying the power is going: a stop, like SIGTERM.
#[test]
fn sigpwr_stops_like_sigterm() {
    stops(Signal::SIGPWR);
}

#[test]
fn sigusr1_is_ignored() {
    ignored(Signal::SIGUSR1);
}

#[test]
fn sigusr2_is_ignored() {
    ignored(Signal::SIGUSR2);
}

#[test]
fn sigalrm_is_ignored() {
    ignored(Signal::SIGALRM);
}

/// Never sent by the kernel (an unused coprocessor fault): a stray `kill`,
/// ignored (README, "Stopping").
#[test]
fn sigstkflt_is_ignored() {
    ignored(Signal::SIGSTKFLT);
}
