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
//! The gateway never stays dead: `Worker::supervise` starts the worker
//! again whenever it stops by itself (an outage longer than
//! `max_unreachable`, a lost registration, a startup that gave up), after a
//! capped backoff (`Restart::DEFAULT`: 5 s doubling to 60 s), logging why.

#![no_std]
#![no_main]

use defmt::{error, info, unwrap};
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_net::dns::DnsSocket;
use embassy_net::tcp::client::{TcpClient, TcpClientState};
use embassy_net_wiznet::chip::W5500;
use embassy_nrf::gpio::{Input, Level, Output, OutputDrive, Pull};
use embassy_nrf::rng::Rng;
use embassy_nrf::spim::{self, Spim};
use embassy_nrf::{bind_interrupts, peripherals};
use embassy_time::{Delay, Timer};
use embedded_hal_bus::spi::ExclusiveDevice;
use outage_runtime_embassy::{ClaimBuffers, Config, ErrorText, Handler, Job, Restart, Task, Worker};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

bind_interrupts!(struct Irqs {
    SPIM3 => spim::InterruptHandler<peripherals::SPI3>;
});

const SERVER: &str = match option_env!("OUTAGE_SERVER") {
    Some(s) => s,
    None => "http://192.168.1.10:8765",
};
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

// Buffer sizes: what the worker costs in RAM, set here by the application.
const CLAIM_RX: usize = 2048; // largest claim answer, headers included
const CLAIM_TX: usize = 512; // largest request body (registration with schema)
const PAYLOAD: usize = 512; // largest task payload kept through an outage
const HEARTBEAT_RX: usize = 512;

type Spi = ExclusiveDevice<Spim<'static>, Output<'static>, Delay>;
type Eth = embassy_net_wiznet::Device<'static>;
// Two sockets, one per loop. 512 bytes each way: requests (up to ~1.2 KB
// with a long token and a schema) and answers (up to CLAIM_RX) stream
// through them; the window only paces a LAN exchange of a few KB.
const SOCKET_BUF: usize = 512;
type Tcp = TcpClient<'static, 2, SOCKET_BUF, SOCKET_BUF>;
type OutageWorker = Worker<'static, Tcp, DnsSocket<'static>>;

// The README promises the worker's own state stays under 1 KiB.
const _: () = assert!(core::mem::size_of::<OutageWorker>() < 1024);

#[embassy_executor::task]
async fn ethernet_task(
    runner: embassy_net_wiznet::Runner<'static, W5500, Spi, Input<'static>, Output<'static>>,
) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Eth>) -> ! {
    runner.run().await
}

/// The worker, started and restarted for as long as the device runs; both
/// loops run in this one task.
#[embassy_executor::task]
async fn worker_task(
    worker: &'static OutageWorker,
    heartbeat_rx: &'static mut [u8; HEARTBEAT_RX],
    bufs: ClaimBuffers<'static>,
    led: Output<'static>,
) {
    let mut handler = Blink { led };
    worker
        .supervise(heartbeat_rx, bufs, &mut handler, Restart::DEFAULT)
        .await;
}

/// Blinks LED1 `times` times.
struct Blink {
    led: Output<'static>,
}

#[derive(serde::Deserialize)]
struct BlinkPayload {
    times: u8,
}

impl Handler for Blink {
    async fn run(&mut self, task: Task<'_>) -> Result<(), ErrorText> {
        let Ok((p, _)) = serde_json_core::from_slice::<BlinkPayload>(task.payload) else {
            return Err(
                ErrorText::try_from("payload must be {\"times\": n} with n <= 255").unwrap_or_default(),
            );
        };
        for _ in 0..p.times {
            self.led.set_low();
            Timer::after_millis(150).await;
            self.led.set_high();
            Timer::after_millis(150).await;
        }
        Ok(())
    }
}

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
    spawner.spawn(unwrap!(ethernet_task(runner)));

    static RESOURCES: StaticCell<StackResources<4>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(unwrap!(net_task(runner)));
    stack.wait_config_up().await;
    info!("network up");

    static TCP_STATE: StaticCell<TcpClientState<2, SOCKET_BUF, SOCKET_BUF>> = StaticCell::new();
    static TCP: StaticCell<Tcp> = StaticCell::new();
    static DNS: StaticCell<DnsSocket<'static>> = StaticCell::new();
    let tcp = TCP.init(TcpClient::new(stack, TCP_STATE.init(TcpClientState::new())));
    let dns = DNS.init(DnsSocket::new(stack));

    static WORKER: StaticCell<OutageWorker> = StaticCell::new();
    let worker: &'static OutageWorker =
        match Worker::new(tcp, dns, SERVER, TOKEN, &JOBS, Config::DEFAULT, seed) {
            Ok(w) => WORKER.init(w),
            Err(e) => {
                error!("cannot set up the worker: {}", e);
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
    let led = Output::new(p.P0_13, Level::High, OutputDrive::Standard);
    let heartbeat_rx = HB_RX_BUF.init([0; HEARTBEAT_RX]);
    spawner.spawn(unwrap!(worker_task(worker, heartbeat_rx, bufs, led)));
}
