//! The live hub: the sampler publishes here; HTTP handlers and WebSocket
//! sessions read from here.
//!
//! Every snapshot is serialised once, when it is published: the v1 JSON body
//! of `GET /api/v1/system`, the `/api/v1/ws` frame and (lazily, once, only
//! when someone listens) the seed-compatible `/ws/system` frame. Clients get
//! cheap clones of those bytes, never a serialisation of their own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use homeserver_domain::{Snapshot, SnapshotPublisher};
use tokio::sync::{broadcast, watch};

use crate::api::dto::SnapshotDto;
use crate::api::seed;

/// One published snapshot and its serialised forms.
#[derive(Debug)]
pub struct Published {
    /// Sequence number of the `snapshots` topic.
    pub seq: u64,
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
    /// v1 JSON of the snapshot.
    pub json: Bytes,
    /// `{"topic":"snapshots","seq":N,"data":…}` for `/api/v1/ws`.
    pub frame: Utf8Bytes,
    seed_system: OnceLock<Utf8Bytes>,
}

impl Published {
    /// The seed-compatible `/ws/system` frame, serialised by whoever asks first.
    pub fn seed_system_frame(&self) -> Utf8Bytes {
        self.seed_system.get_or_init(|| json_text(&seed::SeedSnapshot::from(self.snapshot.as_ref()))).clone()
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> Utf8Bytes {
    match serde_json::to_string(value) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a live frame");
            Utf8Bytes::from_static("{}")
        }
    }
}

/// Fan-out of live data to any number of subscribers.
#[derive(Debug)]
pub struct LiveHub {
    latest: RwLock<Option<Arc<Published>>>,
    snapshots: broadcast::Sender<Arc<Published>>,
    seq: AtomicU64,
    cpu: watch::Sender<Option<Utf8Bytes>>,
    ram: watch::Sender<Option<Utf8Bytes>>,
    clients: AtomicUsize,
}

impl LiveHub {
    /// A hub whose subscribers may fall `queue` snapshots behind before they
    /// skip ahead.
    pub fn new(queue: usize) -> Self {
        let (snapshots, _) = broadcast::channel(queue.max(1));
        Self {
            latest: RwLock::new(None),
            snapshots,
            seq: AtomicU64::new(0),
            cpu: watch::Sender::new(None),
            ram: watch::Sender::new(None),
            clients: AtomicUsize::new(0),
        }
    }

    /// The newest snapshot, if the sampler has produced one.
    pub fn latest(&self) -> Option<Arc<Published>> {
        self.latest.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Receives every snapshot from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.snapshots.subscribe()
    }

    /// The seed `/ws/cpu` stream.
    pub fn subscribe_cpu(&self) -> watch::Receiver<Option<Utf8Bytes>> {
        self.cpu.subscribe()
    }

    /// The seed `/ws/ram` stream.
    pub fn subscribe_ram(&self) -> watch::Receiver<Option<Utf8Bytes>> {
        self.ram.subscribe()
    }

    /// Counts a WebSocket client for as long as the guard lives.
    pub fn client_guard(self: &Arc<Self>) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard(Arc::clone(self))
    }

    /// Connected WebSocket clients.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Republishes the seed `/ws/cpu` and `/ws/ram` frames at their own
    /// periods, serialising each once per period and only while someone
    /// listens. Ends when `shutdown` changes.
    pub async fn run_seed_tickers(
        self: Arc<Self>,
        cpu_every: Duration,
        ram_every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut cpu_tick = tokio::time::interval(cpu_every);
        let mut ram_tick = tokio::time::interval(ram_every);
        cpu_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ram_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = cpu_tick.tick() => {
                    if self.cpu.receiver_count() > 0 && let Some(p) = self.latest() {
                        self.cpu.send_replace(Some(json_text(&seed::SeedCpu::from(p.snapshot.as_ref()))));
                    }
                }
                _ = ram_tick.tick() => {
                    if self.ram.receiver_count() > 0 && let Some(p) = self.latest() {
                        self.ram.send_replace(Some(json_text(&seed::SeedRam::from(p.snapshot.as_ref()))));
                    }
                }
            }
        }
    }
}

impl SnapshotPublisher for LiveHub {
    fn publish(&self, snapshot: Arc<Snapshot>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let json = match serde_json::to_vec(&SnapshotDto::from(snapshot.as_ref())) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "could not serialise a snapshot");
                return;
            }
        };
        let mut frame = String::with_capacity(json.len() + 48);
        frame.push_str("{\"topic\":\"snapshots\",\"seq\":");
        frame.push_str(&seq.to_string());
        frame.push_str(",\"data\":");
        frame.push_str(std::str::from_utf8(&json).unwrap_or("null"));
        frame.push('}');
        let published = Arc::new(Published {
            seq,
            snapshot,
            json: Bytes::from(json),
            frame: Utf8Bytes::from(frame),
            seed_system: OnceLock::new(),
        });
        *self.latest.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&published));
        // No receivers is fine: nobody is listening right now.
        let _ = self.snapshots.send(published);
    }
}

/// Keeps a WebSocket client counted.
#[derive(Debug)]
pub struct ClientGuard(Arc<LiveHub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeserver_domain::UnixMillis;

    #[test]
    fn publishing_serialises_once_and_numbers_frames() {
        let hub = LiveHub::new(4);
        let mut rx = hub.subscribe();
        let mut s = Snapshot { timestamp: UnixMillis(1_763_719_200_000), ..Default::default() };
        s.cpu.usage_percent = 42.5;
        hub.publish(Arc::new(s.clone()));
        hub.publish(Arc::new(s));
        let first = rx.try_recv().unwrap();
        let second = rx.try_recv().unwrap();
        assert_eq!((first.seq, second.seq), (1, 2));
        let frame: serde_json::Value = serde_json::from_str(second.frame.as_str()).unwrap();
        assert_eq!(frame["topic"], "snapshots");
        assert_eq!(frame["seq"], 2);
        assert_eq!(frame["data"]["cpu"]["usage_percent"], 42.5);
        assert_eq!(frame["data"]["timestamp"], "2025-11-21T10:00:00Z");
        // The latest body is the very bytes inside the frame.
        let body: serde_json::Value = serde_json::from_slice(&hub.latest().unwrap().json).unwrap();
        assert_eq!(body, frame["data"]);
        // The seed frame is built once and shared.
        let a = second.seed_system_frame();
        let b = second.seed_system_frame();
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }

    #[test]
    fn a_lagging_subscriber_skips_ahead_without_blocking_publish() {
        let hub = LiveHub::new(2);
        let mut rx = hub.subscribe();
        for _ in 0..5 {
            hub.publish(Arc::new(Snapshot::default()));
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(3))));
        assert_eq!(rx.try_recv().unwrap().seq, 4);
        assert_eq!(rx.try_recv().unwrap().seq, 5);
    }
}
