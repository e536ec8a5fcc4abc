//! Both runtimes against a host that drops connection attempts (a listener
//! whose accept queue is full: the kernel drops further SYNs): every
//! request times out before its connection comes up, which each runtime
//! reports as "Connection timed out" (nothing was sent), not as "Request
//! timed out" (which, for a claim, the core must treat as possibly acted
//! on). Startup gives up on its schedule, with that error.

use std::net::SocketAddr;
use std::time::Duration;

use outage_tests::capture;
use outage_tests::embassy_rt::EmbassyRuntime;
use outage_tests::scenarios::{Runtime, Setup, fast_config};
use outage_tests::std_rt::StdRuntime;
use socket2::{Domain, Socket, Type};

/// A listener nobody accepts on, its queue full; and the sockets filling it.
fn dropping_syns() -> (Socket, Vec<Socket>, SocketAddr) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers = (0..8)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    (listener, fillers, addr)
}

fn startup_times_out_connecting<R: Runtime>() {
    let (_listener, _fillers, addr) = dropping_syns();
    let log = capture::start();
    let setup = Setup {
        url: format!("http://{addr}"),
        token: "t".into(),
        config: fast_config(),
    };
    let Err(e) = R::start(&setup) else {
        panic!("{}: started against a host that accepts nothing", R::NAME)
    };
    assert!(
        e.contains("Connection timed out"),
        "{}: {e}\n{}",
        R::NAME,
        log.dump()
    );
    assert!(
        log.matching("Request timed out").is_empty(),
        "{}: a request that never connected counted as sent\n{}",
        R::NAME,
        log.dump()
    );
}

#[test]
fn std_reports_a_connect_timeout() {
    startup_times_out_connecting::<StdRuntime>();
}

#[test]
fn embassy_reports_a_connect_timeout() {
    startup_times_out_connecting::<EmbassyRuntime>();
}
