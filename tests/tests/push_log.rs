//! What the push connection logs is the core's rendering of its events
//! (`Event::PushTrace`, `Event::PushMalformed`): words, never a `Debug`
//! dump of a packet or an event, never the token; the server's text is
//! quoted without its control characters. Against a fake Socket.IO server
//! that connects, acknowledges the join, then sends a `task_available`
//! event, a malformed one and one with a newline in its name.

use std::time::Duration;

use async_std::net::TcpListener;
use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use outage_runtime_std::push::{Push, PushEvent};
use outage_tests::capture;

#[test]
fn push_logs_the_cores_words() {
    let log = capture::start();
    let event = async_std::task::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = async_std::task::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = async_tungstenite::accept_async(tcp).await.unwrap();
            let open =
                r#"0{"sid":"e","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
            ws.send(Message::text(open)).await.unwrap();
            let _connect = ws.next().await; // 40{"token":…}
            ws.send(Message::text(r#"40{"sid":"s"}"#)).await.unwrap();
            let _join = ws.next().await; // 420["join_job_room",…]
            ws.send(Message::text("430[]")).await.unwrap();
            for frame in [
                r#"42["odd\nname",{}]"#,
                r#"42["task_available",{"job_name":"r:modifiers:E"}]"#,
                r#"42["task_available",{"job_name":"r:modifiers:E","room_id":"r","task_id":"t1"}]"#,
            ] {
                ws.send(Message::text(frame)).await.unwrap();
            }
            async_std::task::sleep(Duration::from_secs(5)).await;
        });
        let mut push = Push::connect(&format!("http://{addr}"), "secret-token", Duration::from_secs(10))
            .await
            .unwrap();
        push.join("r:modifiers:E", "w1").await.unwrap();
        let event = push.next().await.unwrap();
        drop(push);
        server.cancel().await;
        event
    });
    assert_eq!(
        event,
        PushEvent::TaskAvailable {
            job_name: "r:modifiers:E".into(),
            room_id: "r".into(),
            task_id: "t1".into(),
        }
    );
    let lines: Vec<_> = log.lines().into_iter().filter(|l| l.target == "outage").collect();
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    for text in &texts {
        assert!(
            !text.contains(" { ")
                && !text.contains('"')
                && !text.contains("secret-token")
                && !text.contains('\n'),
            "{texts:#?}"
        );
    }
    for want in [
        "Push: Engine.IO open, ping every 25000 ms",
        "Push: Socket.IO connected",
        "Push: sent join_job_room for job r:modifiers:E as worker w1 (ack 0)",
        "Push: received ack 0",
        "Push: event odd\\nname skipped",
        "Push: a task_available event without job_name, room_id and task_id; skipped",
        "Push: task t1 available for job r:modifiers:E in room r",
    ] {
        assert!(texts.contains(&want), "{want:?} not in {texts:#?}");
    }
    let malformed = lines
        .iter()
        .find(|l| l.text.contains("without job_name"))
        .unwrap();
    assert_eq!(malformed.level, log::Level::Warn);
}
