//! # homeserver-domain
//!
//! The heart of homeserver: the domain types (snapshots, history, and later
//! containers, devices, profiles, operations and events), the **ports** the
//! use cases need from the outside world, and the **use cases** themselves.
//!
//! ## What this crate owns
//! - [`snapshot`]: what one look at the host sees ([`Snapshot`], [`HostInfo`]).
//! - [`metric`] and [`history`]: the metrics kept in history, tiers,
//!   retention, queries and the choice of tier for a query;
//!   [`container_history`]: the per-container metrics, their rows and the
//!   rates computed from cumulative counters (same tiers, same queries).
//! - [`ports`]: [`SnapshotSource`], [`SnapshotRepository`], [`Clock`],
//!   [`SnapshotPublisher`], each an `#[async_trait]` trait object.
//! - [`monitoring`]: sample → publish → buffer → flush → roll up → prune.
//! - [`access`]: scopes, API tokens (by hash, never the secret) and the
//!   audit log, with the [`TokenRepository`] and [`AuditRepository`] ports.
//! - [`page`]: pagination of lists.
//! - [`container`], [`container_service`], [`operation`]: one container
//!   model over every runtime, its use cases and tracked operations.
//! - [`device`]: the device registry's rules (stable ids, scan diffs,
//!   patches, the monitoring mask) and the [`DeviceInventory`] /
//!   [`DeviceRepository`] ports; [`profile`]: reusable container settings
//!   and the [`ProfileRepository`] port; [`device_service`] and
//!   [`profile_service`]: their use cases.
//!
//! ## What it must not know
//! No HTTP (axum), SQL (sqlx), Docker (bollard), sysinfo, utoipa, serde
//! formats or async runtime (tokio) appear here. It depends on `std`,
//! `thiserror`, `async-trait` and the `tracing` facade only; `serde` and
//! `mockall` come in behind the `serde` and `mocks` features. Wire formats
//! and storage rows belong to the adapters.
//!
//! ## Reusing it
//! Enable `mocks` in your dev-dependencies to get a mockall mock of every
//! port (`MockSnapshotSource`, `MockSnapshotRepository`, `MockClock`,
//! `MockSnapshotPublisher`). Or implement a port yourself and drive a use
//! case with it:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use async_trait::async_trait;
//! use homeserver_domain::{
//!     Clock, HostInfo, Sampler, SampleBuffer, Snapshot, SnapshotPublisher, SnapshotSource,
//!     SourceError, UnixMillis,
//! };
//!
//! /// A host that always reports half of its 8 GiB in use.
//! struct FixedHost;
//!
//! #[async_trait]
//! impl SnapshotSource for FixedHost {
//!     async fn sample(&self, at: UnixMillis) -> Result<Snapshot, SourceError> {
//!         let mut s = Snapshot { timestamp: at, ..Snapshot::default() };
//!         s.memory.total_bytes = 8 << 30;
//!         s.memory.used_bytes = 4 << 30;
//!         s.memory.usage_percent = 50.0;
//!         Ok(s)
//!     }
//!     async fn host_info(&self) -> Result<HostInfo, SourceError> {
//!         Ok(HostInfo::default())
//!     }
//! }
//!
//! /// A clock frozen at one instant whose sleeps return at once.
//! struct Frozen;
//!
//! #[async_trait]
//! impl Clock for Frozen {
//!     fn now(&self) -> UnixMillis { UnixMillis(1_700_000_000_000) }
//!     async fn sleep_until(&self, _deadline: UnixMillis) {}
//! }
//!
//! /// Keeps what was published.
//! #[derive(Default)]
//! struct Collect(Mutex<Vec<Arc<Snapshot>>>);
//!
//! impl SnapshotPublisher for Collect {
//!     fn publish(&self, s: Arc<Snapshot>) { self.0.lock().unwrap().push(s) }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let published = Arc::new(Collect::default());
//! let buffer = Arc::new(SampleBuffer::new(60));
//! let sampler = Sampler::new(Arc::new(FixedHost), published.clone(), Arc::new(Frozen), Some(buffer.clone()), 1_000);
//!
//! let snapshot = sampler.tick().await?;
//! assert_eq!(snapshot.memory.usage_percent, 50.0);
//! assert_eq!(published.0.lock().unwrap().len(), 1);
//! // The history part waits in the buffer for the HistoryWriter to flush it.
//! assert_eq!(buffer.len(), 1);
//! # Ok::<(), SourceError>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod container;
pub mod container_history;
pub mod container_service;
pub mod device;
pub mod device_service;
pub mod error;
pub mod history;
pub mod metric;
pub mod monitoring;
pub mod operation;
pub mod page;
pub mod ports;
pub mod profile;
pub mod profile_service;
pub mod snapshot;
pub mod time;

pub use access::{
    ApiToken, AuditFilter, AuditOutcome, AuditRecord, AuditRepository, MAX_TOKEN_NAME, NewAuditRecord, NewToken, Scope,
    TokenError, TokenHash, TokenId, TokenRepository, TokenService, UnknownScope,
};
#[cfg(any(test, feature = "mocks"))]
pub use access::{MockAuditRepository, MockTokenRepository};
pub use container::{
    ConfigPatch, ContainerConfig, ContainerName, ContainerRecord, ContainerRepository, ContainerRuntime,
    ContainerState, CreateSpec, ExecRequest, ExecResult, LogFollower, LogLine, LogQuery, LogStream, MIN_MEMORY_BYTES,
    RestartPolicy, RuntimeContainer, RuntimeError, RuntimeKind,
};
#[cfg(any(test, feature = "mocks"))]
pub use container::{MockContainerRepository, MockContainerRuntime};
pub use container_history::{
    CONTAINER_METRIC_COUNT, ContainerMetric, ContainerRates, ContainerSample, Counters, counter_rate,
};
pub use container_service::{Action, ContainerError, ContainerService, ContainerView, NewContainer};
pub use device::{
    Device, DeviceFilter, DeviceInventory, DeviceKind, DeviceMask, DevicePatch, DeviceRepository, DiscoveredDevice,
    ScanPlan, ScanReport, UnknownDeviceKind, device_id, plan_scan, validate_labels,
};
#[cfg(any(test, feature = "mocks"))]
pub use device::{MockDeviceInventory, MockDeviceRepository};
pub use device_service::{DeviceError, DeviceService};
pub use error::{FieldError, HistoryError, RepositoryError, SourceError};
pub use history::{
    Aggregate, BucketPlan, HistoryQuery, HistoryResult, MAX_POINTS, Point, PruneReport, RetentionPolicy, RollupReport,
    Series, Tier,
};
pub use metric::{HistoryMetric, HistorySample, METRIC_COUNT, Metric, Unit, UnknownMetric};
pub use monitoring::{
    HistoryService, HistoryWriter, SampleBuffer, Sampler, SamplerHealth, WriterSettings, WriterStats,
};
#[cfg(any(test, feature = "mocks"))]
pub use operation::MockOperationRepository;
pub use operation::{
    BulkItem, Failure, Operation, OperationFilter, OperationKind, OperationOutput, OperationRepository, OperationStatus,
};
pub use page::{MAX_PER_PAGE, Page, Paged};
pub use ports::{Clock, SnapshotPublisher, SnapshotRepository, SnapshotSource};
#[cfg(any(test, feature = "mocks"))]
pub use ports::{MockClock, MockSnapshotPublisher, MockSnapshotRepository, MockSnapshotSource};
#[cfg(any(test, feature = "mocks"))]
pub use profile::MockProfileRepository;
pub use profile::{ConfigOverlay, DEFAULT_PROFILE, Profile, ProfileName, ProfileRepository};
pub use profile_service::{ProfileError, ProfileInput, ProfilePatch, ProfileService, ProfileView};
pub use snapshot::{
    BlockDeviceStats, ContainerStats, CpuStats, DiskStats, HostInfo, LoadAverage, MemoryStats, NetworkStats, Snapshot,
    SystemStats,
};
pub use time::UnixMillis;
