//! The ports: what the use cases need from the outside world, in domain terms.
//!
//! Every port is an `#[async_trait]` trait object (`Arc<dyn Port>`), `Send +
//! Sync`, so adapters of different technologies sit side by side. With the
//! `mocks` feature each has a mockall mock (`MockSnapshotSource`, ...).

use std::sync::Arc;

use async_trait::async_trait;

use crate::container_history::ContainerMetric;
use crate::error::{RepositoryError, SourceError};
use crate::history::{BucketPlan, PruneReport, RetentionPolicy, RollupReport, Series};
use crate::metric::{HistorySample, Metric};
use crate::snapshot::{HostInfo, Snapshot};
use crate::time::UnixMillis;

/// Reads the host: one snapshot per call.
///
/// Implementations keep whatever state rates need between calls and do their
/// blocking reads off the async runtime.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SnapshotSource: Send + Sync {
    /// Takes one sample of the host, stamped `at`.
    async fn sample(&self, at: UnixMillis) -> Result<Snapshot, SourceError>;

    /// Static facts about the host.
    async fn host_info(&self) -> Result<HostInfo, SourceError>;
}

/// Stores history in tiers: raw samples, minute and hour roll-ups, of the
/// host and of every container.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SnapshotRepository: Send + Sync {
    /// Stores raw samples with their containers' rows, all or none (one
    /// transaction).
    async fn save_samples(&self, samples: &[HistorySample]) -> Result<(), RepositoryError>;

    /// Rolls complete minutes and hours before `until` into their tiers, the
    /// host's and the containers'.
    ///
    /// Idempotent: rolling the same span twice leaves the same rows.
    async fn roll_up(&self, until: UnixMillis) -> Result<RollupReport, RepositoryError>;

    /// Removes rows older than each tier's retention at `now`, the host's and
    /// the containers' (whether the container still exists or not).
    ///
    /// Raw rows that have not been rolled up yet are kept, whatever their age.
    async fn prune(&self, retention: &RetentionPolicy, now: UnixMillis) -> Result<PruneReport, RepositoryError>;

    /// Aggregates `metrics` over the buckets of `plan`, one series per metric
    /// in the given order.
    async fn query(&self, plan: &BucketPlan, metrics: &[Metric]) -> Result<Vec<Series>, RepositoryError>;

    /// Aggregates one container's `metrics` over the buckets of `plan`, one
    /// series per metric in the given order; a container without history
    /// gets empty series.
    async fn query_container(
        &self,
        container_id: &str,
        plan: &BucketPlan,
        metrics: &[ContainerMetric],
    ) -> Result<Vec<Series<ContainerMetric>>, RepositoryError>;

    /// The newest raw sample's time, if any.
    async fn latest_sample_time(&self) -> Result<Option<UnixMillis>, RepositoryError>;
}

/// Tells the time and waits for it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Clock: Send + Sync {
    /// Wall-clock now.
    fn now(&self) -> UnixMillis;

    /// Returns once the wall clock has reached `deadline` (at once if it has).
    async fn sleep_until(&self, deadline: UnixMillis);
}

/// Hands fresh snapshots to live subscribers.
///
/// Called on the sampler's path: implementations must return at once and
/// never wait for a subscriber.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait SnapshotPublisher: Send + Sync {
    /// Publishes one snapshot to everyone listening.
    fn publish(&self, snapshot: Arc<Snapshot>);
}
