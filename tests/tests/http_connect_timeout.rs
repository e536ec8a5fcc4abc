//! A request whose timeout runs out before its connection comes up (a host
//! that drops connection attempts: here a listener whose accept queue is
//! full, so the kernel drops further SYNs) was never sent: the host client
//! reports `ConnectTimeout`, which the core does not count as "may have
//! acted" — a claim that never left is not ambiguous, and the worker does
//! not register afresh for it. A request that was sent and got no answer
//! in time is still a `Timeout` the server may have acted on.

use std::net::SocketAddr;
use std::time::Duration;

use outage_core::protocol::Method;
use outage_core::{Failure, Transport};
use outage_runtime_std::http::{Http, Outgoing, SurfHttp};
use socket2::{Domain, Socket, Type};

fn claim(addr: SocketAddr) -> Failure {
    let http = SurfHttp::new(1 << 20).unwrap();
    let url = format!("http://{addr}/v1/joblib/tasks/claim");
    async_std::task::block_on(http.send(
        Outgoing {
            method: Method::Post,
            url: &url,
            json: Some(br#"{"worker_id":"w"}"#),
            form: false,
            timeout: Duration::from_millis(500),
        },
        "token",
    ))
    .expect_err("nothing answers")
}

fn listener(backlog: i32) -> (Socket, SocketAddr) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(backlog).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    (listener, addr)
}

#[test]
fn a_claim_that_never_connected_was_never_sent() {
    let (_listener, addr) = listener(0);
    // Fill the accept queue (never accepted): further SYNs are dropped.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let failure = claim(addr);
    assert_eq!(failure, Failure::Transport(Transport::ConnectTimeout));
    assert!(failure.never_sent() && !failure.maybe_acted());
}

#[test]
fn a_claim_sent_and_not_answered_may_have_been_acted_on() {
    // Connections complete in the kernel (never accepted, never answered).
    let (_listener, addr) = listener(8);
    let failure = claim(addr);
    assert_eq!(failure, Failure::Transport(Transport::Timeout));
    assert!(failure.maybe_acted());
}
