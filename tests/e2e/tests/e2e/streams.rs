//! The native multiplexed WebSocket through a real client.

use std::time::Duration;

use e2e::spawn_app;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn subscribers_get_every_snapshot_in_order() {
    let app = spawn_app().await;
    app.wait_for_snapshot().await;
    let (mut a, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    for ws in [&mut a, &mut b] {
        ws.send(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#)).await.unwrap();
        assert_eq!(next_json(ws).await["topic"], "subscribed");
    }
    let mut seqs = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let fa = next_json(&mut a).await;
        let fb = next_json(&mut b).await;
        assert_eq!(fa["topic"], "snapshots");
        assert!(fa["data"]["memory"]["total_bytes"].as_u64().unwrap() > 0);
        seqs.0.push(fa["seq"].as_u64().unwrap());
        seqs.1.push(fb["seq"].as_u64().unwrap());
    }
    for s in [&seqs.0, &seqs.1] {
        assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "consecutive: {s:?}");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "homeserver_websocket_clients 2"), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_back_others() {
    let app = spawn_app().await;
    app.wait_for_snapshot().await;
    // A client that subscribes and then never reads again.
    let (mut lazy, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    lazy.send(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#)).await.unwrap();
    let (mut good, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    good.send(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#)).await.unwrap();
    next_json(&mut good).await;
    let start = std::time::Instant::now();
    let mut frames = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if next_json(&mut good).await["topic"] == "snapshots" {
            frames += 1;
        }
    }
    // 200 ms sampling: about ten in two seconds; allow for a loaded machine.
    assert!(frames >= 6, "only {frames} frames in 2 s");
    drop(lazy);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_streams_with_going_away() {
    let app = spawn_app().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(app.ws_url("/api/v1/ws")).await.unwrap();
    ws.send(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#)).await.unwrap();
    next_json(&mut ws).await;
    let stopping = tokio::spawn(app.stop());
    let mut saw_close = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        if let Message::Close(Some(frame)) = msg {
            assert_eq!(u16::from(frame.code), 1001);
            saw_close = true;
            break;
        }
    }
    assert!(saw_close);
    stopping.await.unwrap();
}
