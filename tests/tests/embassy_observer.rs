//! An application sees the device worker's events too, not only through
//! the log (`Worker::with_observer`).

use outage_tests::scenarios::fast_config;

static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn seen(e: &outage_core::Event<'_>) {
    SEEN.lock().unwrap().push(e.to_string());
}

/// An application sees the events too, not only through the log.
#[test]
fn an_observer_sees_every_event() {
    use outage_runtime_embassy::Worker;
    let stack: &'static std_embedded_nal_async::Stack = Box::leak(Box::default());
    let jobs: &'static [outage_runtime_embassy::Job<'static>] =
        Box::leak(Box::new([outage_runtime_embassy::Job {
            room: "@global",
            category: "modifiers",
            name: "Echo",
            schema: "{}",
        }]));
    // Nothing listens on port 9: startup fails, and says so to the observer.
    let config = outage_core::Config {
        startup_retries: 0,
        ..fast_config()
    };
    let w = Worker::new(stack, stack, "http://127.0.0.1:9", "t", jobs, config, 1)
        .unwrap()
        .with_observer(seen);
    let mut hb = [0u8; 256];
    let (mut rx, mut tx, mut payload) = ([0u8; 1024], [0u8; 256], [0u8; 64]);
    let bufs = outage_runtime_embassy::ClaimBuffers {
        rx: &mut rx,
        tx: &mut tx,
        payload: &mut payload,
    };
    struct Nothing;
    impl outage_runtime_embassy::Handler for Nothing {
        async fn run(
            &mut self,
            _: outage_runtime_embassy::Task<'_>,
        ) -> Result<(), outage_runtime_embassy::ErrorText> {
            Ok(())
        }
    }
    let result = futures_lite::future::block_on(w.run(&mut hb, bufs, &mut Nothing));
    assert!(result.is_err());
    let seen = SEEN.lock().unwrap();
    assert_eq!(
        seen.as_slice(),
        ["Startup: create worker failed, giving up: Connection refused"]
    );
}
