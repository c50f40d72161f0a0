//! Keeps the containers' state and resource use fresh.
//!
//! - [`collect`]: every sampling interval, the running containers of every
//!   runtime are read (from their cgroups, by the adapters) off the
//!   sampler's path, and the sampler's source picks the latest figures up
//!   when it takes a snapshot. The same pass reconciles the runtimes (the
//!   polling fallback: outside changes show within one interval).
//! - [`follow_docker_events`]: Docker's event stream. Each container event
//!   makes the next list read the engine at once and, debounced, reconciles
//!   Docker (adopting or forgetting containers made or removed outside
//!   homeserver), so outside changes show within milliseconds. While the
//!   stream is connected, lists reuse the last read (see
//!   `ContainerService::set_watched`); when it drops, lists read Docker
//!   every time and the task reconnects with a growing back-off.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use homeserver_docker::DockerRuntime;
use homeserver_domain::{
    ContainerRuntime, ContainerService, ContainerState, ContainerStats, HostInfo, RuntimeKind, Snapshot,
    SnapshotSource, SourceError, UnixMillis,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// The latest per-container figures.
#[derive(Debug, Default)]
pub struct ContainerFigures(RwLock<Vec<ContainerStats>>);

impl ContainerFigures {
    /// A copy of the latest figures.
    pub fn latest(&self) -> Vec<ContainerStats> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, stats: Vec<ContainerStats>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = stats;
    }
}

/// Refreshes `figures` every `every` until `shutdown` changes.
pub async fn collect(
    service: Arc<ContainerService>,
    figures: Arc<ContainerFigures>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        // A poll: runtimes without events are read afresh, not reused.
        service.refresh_polled();
        let views = match service.list().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "container list failed");
                continue;
            }
        };
        let stats: Vec<ContainerStats> = futures_util::stream::iter(views.into_iter().map(|view| {
            let service = Arc::clone(&service);
            async move {
                let mut s = if matches!(view.state, ContainerState::Running | ContainerState::Paused) {
                    match service.runtime(view.record.runtime) {
                        Ok(rt) => rt.stats(&view.record.runtime_id).await.unwrap_or_default(),
                        Err(_) => ContainerStats::default(),
                    }
                } else {
                    ContainerStats::default()
                };
                s.id = view.record.id;
                s.name = view.record.name;
                s.runtime = view.record.runtime.as_str().to_owned();
                s.state = view.state.as_str().to_owned();
                s
            }
        }))
        .buffer_unordered(8)
        .collect()
        .await;
        figures.set(stats);
    }
}

/// Events closer together than this make one reconcile.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(100);
/// First wait before reconnecting to Docker's event stream.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Follows Docker's container events until `shutdown` changes, keeping
/// `service`'s view of Docker current (see the module docs).
pub async fn follow_docker_events(
    service: Arc<ContainerService>,
    docker: DockerRuntime,
    mut shutdown: watch::Receiver<bool>,
) {
    let kind = RuntimeKind::Docker;
    service.set_watched(kind, false);
    let mut retry = FIRST_RETRY;
    let mut lost_logged = false;
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Asked for from now (Docker's `since`), so nothing between the
        // ping and the first poll of the stream is missed.
        let events = docker.events();
        let reachable = tokio::select! {
            _ = shutdown.changed() => break,
            r = docker.ping() => r,
        };
        if let Err(e) = reachable {
            if !lost_logged {
                tracing::warn!(error = %e, "docker events unavailable; lists read docker directly until it is back");
                lost_logged = true;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
            continue;
        }
        retry = FIRST_RETRY;
        lost_logged = false;
        service.set_watched(kind, true);
        tracing::info!("following docker events");
        let mut events = std::pin::pin!(events);
        // Catch up with what happened while nobody was listening.
        let mut due = Some(Instant::now());
        let stream_ended = loop {
            tokio::select! {
                _ = shutdown.changed() => break false,
                item = events.next() => match item {
                    Some(Ok(event)) => {
                        tracing::debug!(action = %event.action, id = %event.runtime_id, "docker event");
                        service.invalidate(kind);
                        due.get_or_insert_with(|| Instant::now() + EVENT_DEBOUNCE);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "docker event stream failed; reconnecting");
                        lost_logged = true;
                        break true;
                    }
                    None => {
                        tracing::warn!("docker event stream ended; reconnecting");
                        lost_logged = true;
                        break true;
                    }
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    if let Err(e) = service.reconcile(kind).await {
                        tracing::debug!(error = %e, "reconcile after docker events failed");
                    }
                }
            }
        };
        service.set_watched(kind, false);
        if !stream_ended {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(FIRST_RETRY) => {}
        }
    }
    service.set_watched(kind, false);
}

/// The host source with the containers' latest figures added.
pub struct WithContainers {
    host: Arc<dyn SnapshotSource>,
    figures: Arc<ContainerFigures>,
}

impl WithContainers {
    /// Wraps `host`.
    pub fn new(host: Arc<dyn SnapshotSource>, figures: Arc<ContainerFigures>) -> Self {
        Self { host, figures }
    }
}

#[async_trait]
impl SnapshotSource for WithContainers {
    async fn sample(&self, at: UnixMillis) -> Result<Snapshot, SourceError> {
        let mut snapshot = self.host.sample(at).await?;
        snapshot.containers = self.figures.latest();
        Ok(snapshot)
    }

    async fn host_info(&self) -> Result<HostInfo, SourceError> {
        self.host.host_info().await
    }
}
