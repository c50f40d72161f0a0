//! Keeps the containers' resource use fresh for the snapshot: every
//! sampling interval, the running containers of every runtime are read
//! (from their cgroups, by the adapters) off the sampler's path, and the
//! sampler's source picks the latest figures up when it takes a snapshot.
//! The same pass reconciles the runtimes, so outside changes show within
//! one interval.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use homeserver_domain::{
    ContainerService, ContainerState, ContainerStats, HostInfo, Snapshot, SnapshotSource, SourceError, UnixMillis,
};
use tokio::sync::watch;

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
