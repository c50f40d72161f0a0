//! What every handler can reach.

use std::sync::Arc;

use async_trait::async_trait;
use homeserver_domain::{
    AuditRepository, Clock, ContainerService, DeviceService, HistoryService, HostInfo, ProfileService, SamplerHealth,
    WriterStats,
};
use tokio::sync::watch;

use crate::config::Settings;
use crate::live::LiveHub;
use crate::tokens::TokenAdmin;

/// A dependency whose health `/health/ready` reports.
#[async_trait]
pub trait Probe: Send + Sync {
    /// `Ok` when healthy, else what is wrong.
    async fn check(&self) -> Result<(), String>;
}

/// The application state shared by every route.
#[derive(Clone)]
pub struct AppState {
    /// Live snapshots and streams.
    pub hub: Arc<LiveHub>,
    /// History queries; `None` when history is off.
    pub history: Option<Arc<HistoryService>>,
    /// Static facts about the host, read at start.
    pub host_info: Arc<HostInfo>,
    /// The database's health.
    pub database: Arc<dyn Probe>,
    /// The sampler's counters.
    pub sampler: Arc<SamplerHealth>,
    /// The history writer's counters, when history is on.
    pub writer: Option<Arc<WriterStats>>,
    /// The configuration in force.
    pub settings: Arc<Settings>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// API token administration.
    pub tokens: Arc<TokenAdmin>,
    /// The audit log.
    pub audit: Arc<dyn AuditRepository>,
    /// Containers, when a runtime is configured.
    pub containers: Option<Arc<ContainerService>>,
    /// The device registry.
    pub devices: Arc<DeviceService>,
    /// Container profiles.
    pub profiles: Arc<ProfileService>,
    /// Long-running work.
    pub operations: Arc<crate::operations::OperationRunner>,
    /// Flips to `true` when the service is shutting down.
    pub shutdown: watch::Receiver<bool>,
}

/// The state as routes hold it: one `Arc`, so the per-request clones of
/// handlers and middleware cost one atomic increment, not one per field.
pub type Shared = Arc<AppState>;
