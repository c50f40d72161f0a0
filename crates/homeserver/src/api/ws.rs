//! `GET /api/v1/ws`: the multiplexed WebSocket.
//!
//! The client sends `{"op":"subscribe","topics":["snapshots"]}` (or
//! `unsubscribe`); the server sends `{"topic","seq","data"}` frames. Frames
//! are serialised once per tick by the [`LiveHub`]; a session only clones
//! them. A client that falls behind skips ahead (its queue is bounded), a
//! send that stalls drops the client, and a peer silent for three ping
//! periods is closed, so no client can slow the sampler or another client.
//!
//! `container_logs:{id}` topics follow a container's log: each is a task of
//! the session (at most [`MAX_LOG_FOLLOWS`]) that reads the runtime's
//! follower and queues frames for the session (a bounded queue: a slow
//! client slows only its own followers). Unsubscribing, or the session
//! ending for any reason, aborts the task, which drops the follower and so
//! closes the engine's stream or file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use homeserver_domain::{ContainerError, ContainerService, LogQuery};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Scope, WsSlot, scoped};
use crate::live::{LiveHub, Published};
use crate::state::{AppState, Shared};

/// Topics a client may subscribe to in this build (`container_logs:` takes
/// a container id after the colon).
pub const TOPICS: &[&str] = &["snapshots", "container_logs:{id}"];

/// Prefix of the per-container log topics.
pub const LOG_TOPIC_PREFIX: &str = "container_logs:";

/// Most containers one session may follow the logs of at once.
pub const MAX_LOG_FOLLOWS: usize = 8;

/// Lines sent before following when a subscribe gives no `tail`.
pub const DEFAULT_LOG_TAIL: u32 = 100;

/// Largest `tail` a subscribe may ask for.
const MAX_LOG_TAIL: u32 = 10_000;

/// Frames the log followers of a session may queue ahead of its socket.
const LOG_QUEUE: usize = 256;

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
///
/// `container_logs:{id}` follows a container's log: the last `tail` lines
/// (a field of the subscribe op, default 100, at most 10000), then each new
/// one, as `{"topic":"container_logs:{id}","seq":N,"data":{"timestamp",
/// "stream","line"}}` (`seq` counts from 1 per subscription). Its
/// `subscribed` reply comes once the log is open; an unknown container, a
/// runtime that is down or a log that fails give an `error` frame whose
/// `data.topic` names the subscription (`NOT_FOUND`, `RUNTIME_UNAVAILABLE`,
/// `RUNTIME_ERROR`). When the log ends (a Docker container stops, an LXC
/// container is destroyed) an `unsubscribed` frame with a `reason` follows.
/// At most 8 containers per connection (`VALIDATION_FAILED` beyond).
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
        let containers = state.containers.clone();
        run_v1_session(sink, stream, state.hub.clone(), containers, limits, state.shutdown.clone()).await;
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum ClientOp {
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        tail: Option<u32>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
}

/// A task aborted when dropped: a session's log followers end with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The log topics a session follows and the queue their frames come by.
struct LogFollows {
    service: Option<Arc<ContainerService>>,
    tasks: HashMap<String, AbortOnDrop>,
    tx: mpsc::Sender<Message>,
    rx: mpsc::Receiver<Message>,
}

impl LogFollows {
    fn new(service: Option<Arc<ContainerService>>) -> Self {
        let (tx, rx) = mpsc::channel(LOG_QUEUE);
        Self { service, tasks: HashMap::new(), tx, rx }
    }

    /// Forgets followers whose log ended (their task finished).
    fn prune(&mut self) {
        self.tasks.retain(|_, t| !t.0.is_finished());
    }
}

fn error_for_topic(topic: &str, code: &str, message: impl Into<String>) -> Message {
    control("error", serde_json::json!({"code": code, "message": message.into(), "topic": topic}))
}

/// A container failure as an error frame; internal causes are logged, not sent.
fn log_error(topic: &str, e: &ContainerError) -> Message {
    let message = match e {
        ContainerError::Runtime(_) | ContainerError::Repository(_) => {
            tracing::warn!(topic, error = %e, "following a container log failed");
            "the log could not be read".to_owned()
        }
        other => other.to_string(),
    };
    error_for_topic(topic, e.code(), message)
}

/// Follows one container's log into the session's queue until the log
/// ends, the queue closes or the task is aborted.
async fn follow_log(topic: String, id: String, tail: u32, service: Arc<ContainerService>, tx: mpsc::Sender<Message>) {
    let query = LogQuery { tail: Some(tail), since: None, timestamps: true };
    let mut follower = match service.follow_logs(&id, query).await {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.send(log_error(&topic, &e)).await;
            return;
        }
    };
    if tx.send(control("subscribed", serde_json::json!({ "topics": [topic] }))).await.is_err() {
        return;
    }
    let mut seq = 0u64;
    while let Some(line) = follower.next_line().await {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                let _ = tx.send(log_error(&topic, &ContainerError::from(e))).await;
                return;
            }
        };
        seq += 1;
        let data = super::containers::LogLineDto {
            timestamp: line.timestamp.map(super::dto::rfc3339),
            stream: line.stream.as_str().to_owned(),
            line: line.line,
        };
        let frame = serde_json::json!({"topic": topic, "seq": seq, "data": data});
        if tx.send(Message::text(frame.to_string())).await.is_err() {
            return;
        }
    }
    let reason = "the log ended (the container stopped or was removed)";
    let _ = tx.send(control("unsubscribed", serde_json::json!({ "topics": [topic], "reason": reason }))).await;
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

/// Runs one `/api/v1/ws` session over any message sink and stream;
/// `containers` serves the `container_logs:{id}` topics.
pub async fn run_v1_session<S, R, E>(
    mut sink: S,
    mut stream: R,
    hub: Arc<LiveHub>,
    containers: Option<Arc<ContainerService>>,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let mut snapshots: Option<broadcast::Receiver<Arc<Published>>> = None;
    // Dropped (every follower aborted) however the session ends.
    let mut logs = LogFollows::new(containers);
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
                    Some(Ok(Message::Text(text))) => handle_op(text.as_str(), &hub, &mut snapshots, &mut logs),
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
            Some(frame) = logs.rx.recv() => vec![frame],
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

fn handle_op(
    text: &str,
    hub: &LiveHub,
    snapshots: &mut Option<broadcast::Receiver<Arc<Published>>>,
    logs: &mut LogFollows,
) -> Vec<Message> {
    let op = match serde_json::from_str::<ClientOp>(text) {
        Ok(op) => op,
        Err(e) => {
            return vec![error_frame(
                "BAD_REQUEST",
                format!("expected {{\"op\":\"subscribe\"|\"unsubscribe\",\"topics\":[...]}}: {e}"),
            )];
        }
    };
    let (subscribe, topics, tail) = match op {
        ClientOp::Subscribe { topics, tail } => (true, topics, tail),
        ClientOp::Unsubscribe { topics } => (false, topics, None),
    };
    let log_id = |t: &str| t.strip_prefix(LOG_TOPIC_PREFIX).filter(|id| !id.is_empty()).map(str::to_owned);
    if let Some(unknown) = topics.iter().find(|t| t.as_str() != "snapshots" && log_id(t).is_none()) {
        return vec![error_frame(
            "VALIDATION_FAILED",
            format!("unknown topic `{unknown}`; known: {}", TOPICS.join(", ")),
        )];
    }
    let tail = tail.unwrap_or(DEFAULT_LOG_TAIL);
    if tail > MAX_LOG_TAIL {
        return vec![error_frame("VALIDATION_FAILED", format!("`tail` must be at most {MAX_LOG_TAIL}"))];
    }
    let mut out = Vec::new();
    let wants_snapshots = topics.iter().any(|t| t == "snapshots");
    logs.prune();
    if subscribe {
        let mut new_logs: Vec<&String> = Vec::new();
        for t in &topics {
            if log_id(t).is_some() && !logs.tasks.contains_key(t.as_str()) && !new_logs.contains(&t) {
                new_logs.push(t);
            }
        }
        if logs.tasks.len() + new_logs.len() > MAX_LOG_FOLLOWS {
            return vec![error_frame(
                "VALIDATION_FAILED",
                format!("at most {MAX_LOG_FOLLOWS} container_logs topics per connection"),
            )];
        }
        // Log topics answer `subscribed` themselves, once the log is open.
        let now: Vec<&String> =
            topics.iter().filter(|t| log_id(t).is_none() || logs.tasks.contains_key(t.as_str())).collect();
        if !now.is_empty() {
            out.push(control("subscribed", serde_json::json!({ "topics": now })));
        }
        if wants_snapshots && snapshots.is_none() {
            *snapshots = Some(hub.subscribe());
            if let Some(latest) = hub.latest() {
                out.push(Message::Text(latest.frame.clone()));
            }
        }
        for topic in new_logs {
            let Some(service) = logs.service.clone() else {
                out.push(error_for_topic(topic, "RUNTIME_UNAVAILABLE", "no container runtime is configured"));
                continue;
            };
            let id = log_id(topic).unwrap_or_default();
            let task = tokio::spawn(follow_log(topic.clone(), id, tail, service, logs.tx.clone()));
            logs.tasks.insert(topic.clone(), AbortOnDrop(task));
        }
    } else {
        if wants_snapshots {
            *snapshots = None;
        }
        for topic in &topics {
            logs.tasks.remove(topic.as_str());
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
        let task = tokio::spawn(run_v1_session(to_client, from_client, hub, None, limits(), stop_rx));
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

    mod logs {
        use super::*;
        use async_trait::async_trait;
        use homeserver_domain::{
            ContainerConfig, ContainerRecord, LogFollower, LogLine, LogStream, MockClock, MockContainerRepository,
            MockContainerRuntime, RuntimeError, RuntimeKind,
        };
        use std::collections::VecDeque;
        use std::sync::atomic::{AtomicUsize, Ordering};

        /// Hands out its lines, then waits forever; counts its drops.
        struct Scripted {
            lines: VecDeque<LogLine>,
            dropped: Arc<AtomicUsize>,
        }

        #[async_trait]
        impl LogFollower for Scripted {
            async fn next_line(&mut self) -> Option<Result<LogLine, RuntimeError>> {
                match self.lines.pop_front() {
                    Some(l) => Some(Ok(l)),
                    None => std::future::pending().await,
                }
            }
        }

        impl Drop for Scripted {
            fn drop(&mut self) {
                self.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }

        fn record(id: &str) -> ContainerRecord {
            ContainerRecord {
                id: id.into(),
                runtime: RuntimeKind::Docker,
                runtime_id: format!("d-{id}"),
                name: id.into(),
                image: None,
                template: None,
                managed: true,
                profiles: vec![],
                config: ContainerConfig::default(),
                created_at: UnixMillis(1),
                updated_at: UnixMillis(1),
            }
        }

        /// A service whose containers `a`..`z` exist; `down` makes the runtime unavailable.
        fn service(dropped: Arc<AtomicUsize>, down: bool) -> Arc<ContainerService> {
            let mut rt = MockContainerRuntime::new();
            rt.expect_kind().return_const(RuntimeKind::Docker);
            rt.expect_follow_logs().returning(move |_, q| {
                if down {
                    return Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "down".into() });
                }
                assert_eq!(q.tail, Some(3));
                let lines = (1..=2)
                    .map(|i| LogLine {
                        timestamp: Some(UnixMillis(i * 1_000)),
                        stream: LogStream::Stdout,
                        line: format!("line {i}"),
                    })
                    .collect();
                Ok(Box::new(Scripted { lines, dropped: dropped.clone() }))
            });
            let mut repo = MockContainerRepository::new();
            repo.expect_get().returning(|id| Ok((id.len() == 1).then(|| record(id))));
            let mut clock = MockClock::new();
            clock.expect_now().return_const(UnixMillis(0));
            let ids: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| "x".to_owned());
            Arc::new(ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), Arc::new(clock), ids, 2))
        }

        fn start_with(svc: Option<Arc<ContainerService>>) -> (Client, tokio::task::JoinHandle<()>) {
            let (to_server, from_client) = mpsc::unbounded();
            let (to_client, from_server) = mpsc::channel(64);
            let (_stop_tx, stop_rx) = watch::channel(false);
            let hub = Arc::new(LiveHub::new(4));
            let task = tokio::spawn(async move {
                let _keep = _stop_tx;
                run_v1_session(to_client, from_client, hub, svc, limits(), stop_rx).await;
            });
            ((to_server, from_server), task)
        }

        async fn until_dropped(dropped: &AtomicUsize, n: usize) {
            for _ in 0..100 {
                if dropped.load(Ordering::SeqCst) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("{} followers dropped, wanted {n}", dropped.load(Ordering::SeqCst));
        }

        #[tokio::test]
        async fn a_log_topic_streams_numbered_lines_and_unsubscribe_drops_the_follower() {
            let dropped = Arc::new(AtomicUsize::new(0));
            let ((tx, mut rx), _task) = start_with(Some(service(dropped.clone(), false)));
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:a"],"tail":3}"#)))
                .unwrap();
            let ok = recv_json(&mut rx).await;
            assert_eq!(
                (ok["topic"].as_str(), ok["data"]["topics"][0].as_str()),
                (Some("subscribed"), Some("container_logs:a"))
            );
            for i in 1..=2 {
                let f = recv_json(&mut rx).await;
                assert_eq!(f["topic"], "container_logs:a");
                assert_eq!(f["seq"], i);
                assert_eq!(f["data"]["line"], format!("line {i}"));
                assert_eq!(f["data"]["stream"], "stdout");
                assert_eq!(f["data"]["timestamp"], format!("1970-01-01T00:00:0{i}Z"));
            }
            assert_eq!(dropped.load(Ordering::SeqCst), 0);
            tx.unbounded_send(Ok(Message::text(r#"{"op":"unsubscribe","topics":["container_logs:a"]}"#))).unwrap();
            assert_eq!(recv_json(&mut rx).await["topic"], "unsubscribed");
            until_dropped(&dropped, 1).await;
        }

        #[tokio::test]
        async fn closing_the_session_drops_every_follower() {
            let dropped = Arc::new(AtomicUsize::new(0));
            let ((tx, mut rx), task) = start_with(Some(service(dropped.clone(), false)));
            tx.unbounded_send(Ok(Message::text(
                r#"{"op":"subscribe","topics":["container_logs:a","container_logs:b","snapshots"],"tail":3}"#,
            )))
            .unwrap();
            // `snapshots` at once; each log once it is open, then its two lines.
            for _ in 0..7 {
                recv_json(&mut rx).await;
            }
            drop(tx);
            tokio::time::timeout(Duration::from_secs(2), task).await.unwrap().unwrap();
            until_dropped(&dropped, 2).await;
        }

        #[tokio::test]
        async fn unknown_containers_down_runtimes_and_too_many_topics_get_error_frames() {
            let dropped = Arc::new(AtomicUsize::new(0));
            let ((tx, mut rx), task) = start_with(Some(service(dropped.clone(), false)));
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:nope"]}"#))).unwrap();
            let e = recv_json(&mut rx).await;
            assert_eq!((e["topic"].as_str(), e["data"]["code"].as_str()), (Some("error"), Some("NOT_FOUND")));
            assert_eq!(e["data"]["topic"], "container_logs:nope");
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:"]}"#))).unwrap();
            assert_eq!(recv_json(&mut rx).await["data"]["code"], "VALIDATION_FAILED");
            let nine: Vec<String> = ('a'..='i').map(|c| format!("container_logs:{c}")).collect();
            let op = serde_json::json!({"op": "subscribe", "topics": nine, "tail": 3});
            tx.unbounded_send(Ok(Message::text(op.to_string()))).unwrap();
            let e = recv_json(&mut rx).await;
            assert_eq!(e["data"]["code"], "VALIDATION_FAILED");
            assert!(e["data"]["message"].as_str().unwrap().contains("at most 8"), "{e}");
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:a"],"tail":99999}"#)))
                .unwrap();
            assert_eq!(recv_json(&mut rx).await["data"]["code"], "VALIDATION_FAILED");
            assert!(!task.is_finished(), "errors never close the session");
            assert_eq!(dropped.load(Ordering::SeqCst), 0, "nothing was followed");

            let ((tx, mut rx), _task) = start_with(Some(service(Arc::default(), true)));
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:a"]}"#))).unwrap();
            assert_eq!(recv_json(&mut rx).await["data"]["code"], "RUNTIME_UNAVAILABLE");
            let ((tx, mut rx), _task) = start_with(None);
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:a"]}"#))).unwrap();
            assert_eq!(recv_json(&mut rx).await["data"]["code"], "RUNTIME_UNAVAILABLE");
        }

        #[tokio::test]
        async fn eight_followers_fit_and_unsubscribing_makes_room() {
            let dropped = Arc::new(AtomicUsize::new(0));
            let ((tx, mut rx), _task) = start_with(Some(service(dropped.clone(), false)));
            let eight: Vec<String> = ('a'..='h').map(|c| format!("container_logs:{c}")).collect();
            let op = serde_json::json!({"op": "subscribe", "topics": eight, "tail": 3});
            tx.unbounded_send(Ok(Message::text(op.to_string()))).unwrap();
            for _ in 0..24 {
                assert_ne!(recv_json(&mut rx).await["topic"], "error");
            }
            // Subscribing again to one already followed is no new follower.
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:a"],"tail":3}"#)))
                .unwrap();
            assert_eq!(recv_json(&mut rx).await["topic"], "subscribed");
            tx.unbounded_send(Ok(Message::text(r#"{"op":"unsubscribe","topics":["container_logs:h"]}"#))).unwrap();
            recv_json(&mut rx).await;
            tx.unbounded_send(Ok(Message::text(r#"{"op":"subscribe","topics":["container_logs:i"],"tail":3}"#)))
                .unwrap();
            assert_eq!(recv_json(&mut rx).await["topic"], "subscribed");
        }
    }
}
