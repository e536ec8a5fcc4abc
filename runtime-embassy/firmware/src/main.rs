//! Example firmware: the `outage` worker on an nRF52840 gateway.
//!
//! Network: a WIZnet W5500 Ethernet module on SPIM3 (embassy-net-wiznet).
//! Why this driver: the nRF52840 has no Wi-Fi or Ethernet MAC of its own; a
//! W5500 gives a wired link through a driver that ships with embassy, needs
//! only SPI and two GPIOs, and keeps the TCP/IP stack (embassy-net/smoltcp)
//! on the MCU, so the worker's sockets, timeouts and buffers are the same as
//! on any other embassy network. Wiring (nRF52840-DK): SCK P1.15, MOSI
//! P1.13, MISO P1.14, CS P1.12, INT P1.11, RST P1.10.
//!
//! The server URL and token come from the build environment:
//! `OUTAGE_SERVER=http://192.168.1.10:8765 OUTAGE_TOKEN=… cargo build --release`.
//! The job `@global:modifiers:Blink` blinks LED1 `{"times": n}` times.
//!
//! The gateway never stays dead: it never gives up on an outage
//! (`max_unreachable: Config::NO_LIMIT`: it keeps retrying on the capped
//! backoff, keeping its worker id and any outcome it holds), and
//! `Worker::supervise` starts the worker again whenever it stops for any
//! other reason (a lost or refused registration, a startup that gave up),
//! after a capped backoff (`Restart::DEFAULT`: 5 s doubling to 60 s),
//! logging why. The README's device section says why this policy.
//!
//! Features (`size.sh` builds the combinations it measures):
//! - `dhcp` (default): the address from DHCP; without it, [`STATIC_IP`].
//! - `dns` (default): the server may be a host name; without it the URL
//!   must hold an IPv4 literal (no DNS socket, no resolver).
//! - `logs` (default): the worker's log lines; without it the worker (and
//!   its core) build no event at all (the lean build: 2 KB less flash).
//! - `platform-only`: the same network stack and one raw HTTP request, no
//!   worker: the baseline the worker's share of flash and RAM is measured
//!   against.
//!
//! Logs are defmt at the level of `DEFMT_LOG` (`.cargo/config.toml`:
//! `info`; `DEFMT_LOG=off` for none).

#![no_std]
#![no_main]

use defmt::{error, info, unwrap};
use embassy_executor::Spawner;
use embassy_net::tcp::client::{TcpClient, TcpClientState};
use embassy_net::{Stack, StackResources};
use embassy_net_wiznet::chip::W5500;
use embassy_nrf::gpio::{Input, Level, Output, OutputDrive, Pull};
use embassy_nrf::rng::Rng;
use embassy_nrf::spim::{self, Spim};
use embassy_nrf::{bind_interrupts, peripherals};
use embassy_time::Delay;
use embedded_hal_bus::spi::ExclusiveDevice;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

bind_interrupts!(struct Irqs {
    SPIM3 => spim::InterruptHandler<peripherals::SPI3>;
});

const SERVER: &str = match option_env!("OUTAGE_SERVER") {
    Some(s) => s,
    None => "http://192.168.1.10:8765",
};

/// The gateway's address without `dhcp`: 192.168.1.50/24 via 192.168.1.1.
#[cfg(not(feature = "dhcp"))]
const STATIC_IP: ([u8; 4], u8, [u8; 4]) = ([192, 168, 1, 50], 24, [192, 168, 1, 1]);

type Eth = embassy_net_wiznet::Device<'static>;

// Two sockets, one per loop. 512 bytes each way: requests (up to ~1.2 KB
// with a long token and a schema) and answers (up to CLAIM_RX) stream
// through them; the window only paces a LAN exchange of a few KB.
const SOCKET_BUF: usize = 512;
type Tcp = TcpClient<'static, 2, SOCKET_BUF, SOCKET_BUF>;

/// Sockets of the stack: the two TCP ones, DHCP's and DNS's.
const SOCKETS: usize = 2 + cfg!(feature = "dhcp") as usize + cfg!(feature = "dns") as usize;

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_nrf::init(Default::default());
    let mut rng = Rng::new_blocking(p.RNG);
    let mut seed = [0u8; 8];
    rng.blocking_fill_bytes(&mut seed);
    let seed = u64::from_le_bytes(seed);

    let mut config = spim::Config::default();
    config.frequency = spim::Frequency::M8;
    let spi = Spim::new(p.SPI3, Irqs, p.P1_15, p.P1_14, p.P1_13, config);
    let cs = Output::new(p.P1_12, Level::High, OutputDrive::Standard);
    let spi = unwrap!(ExclusiveDevice::new(spi, cs, Delay));
    let int = Input::new(p.P1_11, Pull::Up);
    let reset = Output::new(p.P1_10, Level::High, OutputDrive::Standard);
    let led = Output::new(p.P0_13, Level::High, OutputDrive::Standard);

    // `main` then brings the W5500 and the IP stack up, starts the
    // application and drives the W5500 for good: its task storage holds the
    // bring-up's future and the driver's, which never run together (in a
    // task of their own each would cost 1 KB more RAM).

    // A locally administered MAC; derive it from FICR in a product.
    let mac = [0x02, 0x00, 0x00, 0x5e, 0x00, 0x01];
    // One receive and one transmit frame (1.5 KB each) in the driver's
    // queues: the stack serves two sockets that exchange small messages.
    static ETH_STATE: StaticCell<embassy_net_wiznet::State<1, 1>> = StaticCell::new();
    let state = ETH_STATE.init(embassy_net_wiznet::State::new());
    let Ok((device, runner)) =
        embassy_net_wiznet::new::<1, 1, W5500, _, _, _>(mac, state, spi, int, reset).await
    else {
        error!("the W5500 does not answer on SPI; check the wiring");
        return;
    };
    #[cfg(feature = "dhcp")]
    let config = embassy_net::Config::dhcpv4(Default::default());
    #[cfg(not(feature = "dhcp"))]
    let config = embassy_net::Config::ipv4_static(embassy_net::StaticConfigV4 {
        address: embassy_net::Ipv4Cidr::new(STATIC_IP.0.into(), STATIC_IP.1),
        gateway: Some(STATIC_IP.2.into()),
        dns_servers: Default::default(),
    });
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, net_runner) = embassy_net::new(device, config, RESOURCES.init(StackResources::new()), seed);
    spawner.spawn(unwrap!(net_task(net_runner)));
    spawner.spawn(unwrap!(app_task(stack, seed, led)));
    runner.run().await;
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Eth>) -> ! {
    runner.run().await
}

/// Once the network is up: the worker, started and restarted for as long
/// as the device runs (its whole life in this one task); or, with
/// `platform-only`, one raw request.
#[embassy_executor::task]
async fn app_task(stack: Stack<'static>, seed: u64, led: Output<'static>) {
    stack.wait_config_up().await;
    info!("network up");
    static TCP_STATE: StaticCell<TcpClientState<2, SOCKET_BUF, SOCKET_BUF>> = StaticCell::new();
    static TCP: StaticCell<Tcp> = StaticCell::new();
    let tcp: &'static Tcp = TCP.init(TcpClient::new(stack, TCP_STATE.init(TcpClientState::new())));
    #[cfg(feature = "dns")]
    let dns = embassy_net::dns::DnsSocket::new(stack);
    #[cfg(not(feature = "dns"))]
    let dns = outage_runtime_embassy::NoDns;
    #[cfg(not(feature = "platform-only"))]
    worker::run(tcp, dns, seed, led).await;
    #[cfg(feature = "platform-only")]
    platform::one_request(tcp, dns, seed, led).await;
}

#[cfg(not(feature = "platform-only"))]
mod worker {
    use defmt::error;
    use embassy_nrf::gpio::Output;
    use embassy_time::Timer;
    use outage_runtime_embassy::{
        ClaimBuffers, Config, ErrorText, Handler, Job, Restart, SetupError, Task, Worker, json,
    };
    use static_cell::StaticCell;

    use super::Tcp;

    #[cfg(feature = "dns")]
    type Dns = embassy_net::dns::DnsSocket<'static>;
    #[cfg(not(feature = "dns"))]
    type Dns = outage_runtime_embassy::NoDns;
    type OutageWorker = Worker<'static, Tcp, Dns>;

    /// Never give up on an outage (see the crate docs); every other
    /// setting the reference's.
    const CONFIG: Config = Config {
        max_unreachable: Config::NO_LIMIT,
        ..Config::DEFAULT
    };
    const _: () = assert!(CONFIG.validate().is_ok(), "CONFIG is invalid");

    // The README promises the worker's own state stays under 1 KiB.
    const _: () = assert!(core::mem::size_of::<OutageWorker>() < 1024);

    const TOKEN: &str = match option_env!("OUTAGE_TOKEN") {
        Some(s) => s,
        None => "dev-token",
    };

    static JOBS: [Job<'static>; 1] = [Job {
        room: "@global",
        category: "modifiers",
        name: "Blink",
        schema: r#"{"type":"object","properties":{"times":{"type":"integer"}}}"#,
    }];

    // Buffer sizes: what the worker costs in RAM, set here by the
    // application.
    const CLAIM_RX: usize = 2048; // largest claim answer, headers included
    const CLAIM_TX: usize = 512; // largest request body (registration with schema)
    const PAYLOAD: usize = 512; // largest task payload kept through an outage
    const HEARTBEAT_RX: usize = 512;

    /// Sets the worker up and runs it under `supervise`: it never returns
    /// (nothing here asks the worker to stop).
    pub async fn run(tcp: &'static Tcp, dns: Dns, seed: u64, led: Output<'static>) {
        static DNS: StaticCell<Dns> = StaticCell::new();
        static WORKER: StaticCell<OutageWorker> = StaticCell::new();
        let dns: &'static Dns = DNS.init(dns);
        // (Matched at once: a `let` of the result would keep a second
        // Worker in this task's storage.)
        let worker: &'static OutageWorker = match Worker::new(
            tcp,
            dns,
            super::SERVER,
            TOKEN,
            &JOBS,
            CONFIG,
            seed,
        ) {
            Ok(w) => WORKER.init(w),
            Err(e) => {
                // Only the build's settings can be wrong here. One line
                // each: defmt keeps format strings out of flash, where the
                // error's own rendering would take 300 bytes.
                match e {
                    SetupError::ServerUrl => {
                        error!(
                            "cannot set up the worker: OUTAGE_SERVER must be http://host[:port], at most 96 bytes"
                        )
                    }
                    SetupError::TokenTooLong => {
                        error!("cannot set up the worker: OUTAGE_TOKEN is longer than 512 bytes")
                    }
                    SetupError::Token => error!(
                        "cannot set up the worker: OUTAGE_TOKEN holds characters a bearer token cannot (letters, digits, -._~+/ then =)"
                    ),
                    _ => error!("cannot set up the worker: check JOBS and CONFIG"),
                }
                return;
            }
        };
        static CLAIM_RX_BUF: StaticCell<[u8; CLAIM_RX]> = StaticCell::new();
        static CLAIM_TX_BUF: StaticCell<[u8; CLAIM_TX]> = StaticCell::new();
        static PAYLOAD_BUF: StaticCell<[u8; PAYLOAD]> = StaticCell::new();
        static HB_RX_BUF: StaticCell<[u8; HEARTBEAT_RX]> = StaticCell::new();
        let bufs = ClaimBuffers {
            rx: CLAIM_RX_BUF.init([0; CLAIM_RX]),
            tx: CLAIM_TX_BUF.init([0; CLAIM_TX]),
            payload: PAYLOAD_BUF.init([0; PAYLOAD]),
        };
        let heartbeat_rx = HB_RX_BUF.init([0; HEARTBEAT_RX]);
        let mut handler = Blink { led };
        worker
            .supervise(heartbeat_rx, bufs, &mut handler, Restart::DEFAULT)
            .await;
    }

    /// Blinks LED1 `times` times.
    struct Blink {
        led: Output<'static>,
    }

    impl Handler for Blink {
        async fn run(&mut self, task: Task<'_>) -> Result<(), ErrorText> {
            let times = json::member(task.payload, "times").and_then(json::uint);
            let Some(times) = times.filter(|n| *n <= 255) else {
                return Err(
                    ErrorText::try_from("payload must be {\"times\": n} with n <= 255").unwrap_or_default(),
                );
            };
            for _ in 0..times {
                self.led.set_low();
                Timer::after_millis(150).await;
                self.led.set_high();
                Timer::after_millis(150).await;
            }
            Ok(())
        }
    }
}

/// The baseline: what any application on this network stack has before it
/// speaks to a job server. One request, written and read raw.
#[cfg(feature = "platform-only")]
mod platform {
    #[cfg(not(feature = "dns"))]
    use core::net::IpAddr;
    use core::net::SocketAddr;

    use defmt::{info, warn};
    use embassy_nrf::gpio::Output;
    use embedded_io_async::{Read, Write};
    use embedded_nal_async::TcpConnect;

    use super::Tcp;

    #[cfg(feature = "dns")]
    type Dns = embassy_net::dns::DnsSocket<'static>;
    #[cfg(not(feature = "dns"))]
    type Dns = outage_runtime_embassy::NoDns;

    pub async fn one_request(tcp: &'static Tcp, dns: Dns, _seed: u64, mut led: Output<'static>) {
        let authority = super::SERVER.trim_start_matches("http://");
        let authority = authority.split('/').next().unwrap_or_default();
        let (host, port) = authority.split_once(':').unwrap_or((authority, "80"));
        let port = port.parse().unwrap_or(80);
        #[cfg(feature = "dns")]
        let ip = embedded_nal_async::Dns::get_host_by_name(&dns, host, embedded_nal_async::AddrType::Either)
            .await
            .ok();
        #[cfg(not(feature = "dns"))]
        let ip = {
            let _ = dns;
            host.parse().ok().map(IpAddr::V4)
        };
        let Some(ip) = ip else {
            warn!("no address for the server");
            return;
        };
        let Ok(mut conn) = tcp.connect(SocketAddr::new(ip, port)).await else {
            warn!("cannot connect");
            return;
        };
        let request = b"GET /v1/joblib/workers HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n";
        // A small buffer: the worker's share of RAM is measured against this
        // build, so the baseline holds no buffer of the worker's kind.
        let mut buf = [0u8; 64];
        let read = match conn.write_all(request).await {
            Ok(()) => conn.read(&mut buf).await.unwrap_or(0),
            Err(_) => 0,
        };
        info!("raw request: {=usize} bytes back", read);
        led.set_low();
    }
}
