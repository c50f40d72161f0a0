//! `GET /api/v1/ws`: the multiplexed WebSocket.
//!
//! The client sends `{"op":"subscribe","topics":["snapshots"]}` (or
//! `unsubscribe`); the server sends `{"topic","seq","data"}` frames. Frames
//! are serialised once per tick by the [`LiveHub`]; a session only clones
//! them. A client that falls behind skips ahead (its queue is bounded), a
//! send that stalls drops the client, and a peer silent for three ping
//! periods is closed, so no client can slow the sampler or another client.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, MissedTickBehavior};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Scope, WsSlot, scoped};
use crate::live::{LiveHub, Published};
use crate::state::{AppState, Shared};

/// Topics a client may subscribe to in this build.
pub const TOPICS: &[&str] = &["snapshots"];

/// Close code sent when the server shuts down.
const GOING_AWAY: u16 = 1001;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(scoped(Scope::Read, routes!(ws_v1)))
}

/// Limits every WebSocket session runs under.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Ping period; a peer silent for three is closed.
    pub ping_every: Duration,
    /// Longest a single send may take before the client is dropped.
    pub send_timeout: Duration,
}

impl SessionLimits {
    pub(crate) fn from_state(state: &AppState) -> Self {
        let ping_every = Duration::from_secs(state.settings.websocket.ping_interval_secs);
        Self { ping_every, send_timeout: ping_every.min(Duration::from_secs(10)) }
    }
}

/// Applies the buffer sizes every upgrade uses: small read buffers (clients
/// send only short control messages) and no write coalescing, so 10,000
/// idle sessions stay cheap.
pub(crate) fn configure(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(4 * 1024).write_buffer_size(0).max_message_size(64 * 1024).max_frame_size(64 * 1024)
}

/// Multiplexed stream of live topics.
///
/// Upgrade to a WebSocket, then send `{"op":"subscribe","topics":["snapshots"]}`.
/// Every frame is `{"topic": string, "seq": number, "data": object}`; for
/// `snapshots`, `data` is the same object as `GET /api/v1/system`. Control
/// replies use the topics `subscribed`, `unsubscribed` and `error`
/// (`data: {"code","message"}`). On subscribing, the latest snapshot is sent
/// at once.
#[utoipa::path(get, path = "/ws", tag = "streams", operation_id = "ws_v1",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = super::error::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The token holds `websocket.max_connections_per_token` connections already", body = super::error::Problem, content_type = "application/problem+json"),
    ))]
async fn ws_v1(State(state): State<Shared>, slot: WsSlot, ws: WebSocketUpgrade) -> Response {
    let limits = SessionLimits::from_state(&state);
    configure(ws).on_upgrade(move |socket: WebSocket| async move {
        let _slot = slot;
        let _guard = state.hub.client_guard();
        let (sink, stream) = socket.split();
        run_v1_session(sink, stream, state.hub.clone(), limits, state.shutdown.clone()).await;
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    Subscribe { topics: Vec<String> },
    Unsubscribe { topics: Vec<String> },
}

fn control(topic: &str, data: serde_json::Value) -> Message {
    Message::text(serde_json::json!({"topic": topic, "seq": 0, "data": data}).to_string())
}

fn error_frame(code: &str, message: impl Into<String>) -> Message {
    control("error", serde_json::json!({"code": code, "message": message.into()}))
}

async fn next_snapshot(
    rx: &mut Option<broadcast::Receiver<Arc<Published>>>,
) -> Result<Arc<Published>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends with a deadline; `false` means the client is gone or stalled.
pub(crate) async fn send<S>(sink: &mut S, message: Message, limits: &SessionLimits) -> bool
where
    S: Sink<Message> + Unpin,
{
    matches!(tokio::time::timeout(limits.send_timeout, sink.send(message)).await, Ok(Ok(())))
}

/// Runs one `/api/v1/ws` session over any message sink and stream.
pub async fn run_v1_session<S, R, E>(
    mut sink: S,
    mut stream: R,
    hub: Arc<LiveHub>,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut snapshots: Option<broadcast::Receiver<Arc<Published>>> = None;
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_every, limits.ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        let outgoing = tokio::select! {
            biased;
            _ = shutdown.changed() => {
                let frame = CloseFrame { code: GOING_AWAY, reason: Utf8Bytes::from_static("server shutting down") };
                let _ = send(&mut sink, Message::Close(Some(frame)), &limits).await;
                break;
            }
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => handle_op(text.as_str(), &hub, &mut snapshots),
                    Some(Ok(Message::Binary(_))) => vec![error_frame("BAD_REQUEST", "send JSON text frames")],
                    Some(Ok(_)) => vec![], // ping/pong: only liveness
                }
            }
            next = next_snapshot(&mut snapshots) => match next {
                Ok(published) => vec![Message::Text(published.frame.clone())],
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "slow WebSocket client skipped ahead");
                    vec![]
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.ping_every * 3 {
                    tracing::debug!("closing a silent WebSocket peer");
                    break;
                }
                vec![Message::Ping(bytes::Bytes::new())]
            }
        };
        for message in outgoing {
            if !send(&mut sink, message, &limits).await {
                return;
            }
        }
    }
}

fn handle_op(text: &str, hub: &LiveHub, snapshots: &mut Option<broadcast::Receiver<Arc<Published>>>) -> Vec<Message> {
    let op = match serde_json::from_str::<ClientOp>(text) {
        Ok(op) => op,
        Err(e) => {
            return vec![error_frame(
                "BAD_REQUEST",
                format!("expected {{\"op\":\"subscribe\"|\"unsubscribe\",\"topics\":[...]}}: {e}"),
            )];
        }
    };
    let (subscribe, topics) = match op {
        ClientOp::Subscribe { topics } => (true, topics),
        ClientOp::Unsubscribe { topics } => (false, topics),
    };
    if let Some(unknown) = topics.iter().find(|t| !TOPICS.contains(&t.as_str())) {
        return vec![error_frame(
            "VALIDATION_FAILED",
            format!("unknown topic `{unknown}`; known: {}", TOPICS.join(", ")),
        )];
    }
    let mut out = Vec::new();
    let wants_snapshots = topics.iter().any(|t| t == "snapshots");
    if subscribe {
        out.push(control("subscribed", serde_json::json!({ "topics": topics })));
        if wants_snapshots && snapshots.is_none() {
            *snapshots = Some(hub.subscribe());
            if let Some(latest) = hub.latest() {
                out.push(Message::Text(latest.frame.clone()));
            }
        }
    } else {
        if wants_snapshots {
            *snapshots = None;
        }
        out.push(control("unsubscribed", serde_json::json!({ "topics": topics })));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use homeserver_domain::{Snapshot, SnapshotPublisher, UnixMillis};

    fn limits() -> SessionLimits {
        SessionLimits { ping_every: Duration::from_secs(30), send_timeout: Duration::from_millis(200) }
    }

    type Client = (mpsc::UnboundedSender<Result<Message, std::io::Error>>, mpsc::Receiver<Message>);

    fn start(hub: Arc<LiveHub>, buffer: usize) -> (Client, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (to_server, from_client) = mpsc::unbounded();
        let (to_client, from_server) = mpsc::channel(buffer);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_v1_session(to_client, from_client, hub, limits(), stop_rx));
        ((to_server, from_server), stop_tx, task)
    }

    async fn recv_json(rx: &mut mpsc::Receiver<Message>) -> serde_json::Value {
        let msg = tokio::time::timeout(Duration::from_secs(2), rx.next()).await.unwrap().unwrap();
        match msg {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn snapshot(ms: i64) -> Arc<Snapshot> {
        Arc::new(Snapshot { timestamp: UnixMillis(ms), ..Default::default() })
    }

    #[tokio::test]
    async fn subscribe_gets_the_latest_then_every_new_snapshot() {
        let hub = Arc::new(LiveHub::new(8));
        hub.publish(snapshot(1_000));
        let ((tx, mut rx), _stop, _task) = start(hub.clone(), 16);
        tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#))).unwrap();
        assert_eq!(recv_json(&mut rx).await["topic"], "subscribed");
        let first = recv_json(&mut rx).await;
        assert_eq!((first["topic"].as_str(), first["seq"].as_u64()), (Some("snapshots"), Some(1)));
        hub.publish(snapshot(2_000));
        let second = recv_json(&mut rx).await;
        assert_eq!(second["seq"], 2);
        assert_eq!(second["data"]["timestamp"], "1970-01-01T00:00:02Z");
    }

    #[tokio::test]
    async fn bad_ops_and_unknown_topics_get_error_frames_not_a_disconnect() {
        let hub = Arc::new(LiveHub::new(8));
        let ((tx, mut rx), _stop, task) = start(hub, 16);
        tx.unbounded_send(Ok(Message::text("not json"))).unwrap();
        assert_eq!(recv_json(&mut rx).await["data"]["code"], "BAD_REQUEST");
        tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["nope"]}"#))).unwrap();
        let e = recv_json(&mut rx).await;
        assert_eq!(e["data"]["code"], "VALIDATION_FAILED");
        assert!(e["data"]["message"].as_str().unwrap().contains("nope"));
        assert!(!task.is_finished());
    }

    #[tokio::test]
    async fn unsubscribe_stops_the_flow() {
        let hub = Arc::new(LiveHub::new(8));
        let ((tx, mut rx), _stop, _task) = start(hub.clone(), 16);
        tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#))).unwrap();
        recv_json(&mut rx).await;
        tx.unbounded_send(Ok(Message::text(r#"{"op":"unsubscribe","topics":["snapshots"]}"#))).unwrap();
        assert_eq!(recv_json(&mut rx).await["topic"], "unsubscribed");
        hub.publish(snapshot(5_000));
        assert!(tokio::time::timeout(Duration::from_millis(200), rx.next()).await.is_err());
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_and_others_keep_receiving() {
        let hub = Arc::new(LiveHub::new(4));
        // The stalled client's sink holds one message and is never read.
        let ((stalled_tx, _stalled_rx), _s1, stalled_task) = start(hub.clone(), 0);
        let ((tx, mut rx), _s2, _task) = start(hub.clone(), 64);
        for t in [&stalled_tx, &tx] {
            t.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["snapshots"]}"#))).unwrap();
        }
        recv_json(&mut rx).await;
        for i in 1..=20 {
            hub.publish(snapshot(i * 1_000));
        }
        let mut last = 0;
        while last < 20 {
            last = recv_json(&mut rx).await["seq"].as_u64().unwrap();
        }
        tokio::time::timeout(Duration::from_secs(2), stalled_task).await.expect("stalled client dropped").unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_going_away() {
        let hub = Arc::new(LiveHub::new(4));
        let ((_tx, mut rx), stop, task) = start(hub, 4);
        stop.send(true).unwrap();
        match tokio::time::timeout(Duration::from_secs(1), rx.next()).await.unwrap() {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, GOING_AWAY),
            other => panic!("expected close, got {other:?}"),
        }
        task.await.unwrap();
    }
}
