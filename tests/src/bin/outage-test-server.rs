//! Starts the Rust test job server on loopback for manual use and demos.
//!
//! ```text
//! cargo run -p outage-tests --bin outage-test-server -- [--port N] [--token T]
//! ```
//! Prints its URL and token, then serves until Ctrl-C.

use std::process::ExitCode;

use outage_tests::server::TestServer;

fn main() -> ExitCode {
    let mut builder = TestServer::builder();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => match args.next().and_then(|p| p.parse().ok()) {
                Some(p) => builder = builder.port(p),
                None => return usage("--port needs a number"),
            },
            "--token" => match args.next() {
                Some(t) => builder = builder.token(t),
                None => return usage("--token needs a value"),
            },
            "-h" | "--help" => {
                println!("{}", HELP);
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let server = match builder.start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the test job server: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", server.url());
    println!("token {}", server.token());
    println!("API under {}/v1/joblib — Ctrl-C to stop", server.url());
    loop {
        std::thread::park();
    }
}

const HELP: &str = "outage-test-server: the zndraw-joblib worker API on 127.0.0.1, in memory\n\n\
Usage: outage-test-server [--port N] [--token T]\n\n\
  --port N    port on 127.0.0.1 (default: any free port)\n\
  --token T   bearer token clients must send (default: a random one)";

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}\n\n{HELP}");
    ExitCode::from(2)
}
