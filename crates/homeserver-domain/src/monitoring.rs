//! The monitoring use case: sample on a fixed interval → publish to live
//! subscribers → buffer → flush in one transaction → roll up → prune per tier.
//!
//! It runs as two loops so that storage never delays sampling:
//! [`Sampler::run`] takes and publishes snapshots and appends their history
//! part to a shared [`SampleBuffer`]; [`HistoryWriter::run`] drains that
//! buffer into the [`SnapshotRepository`] every flush interval, rolls the
//! finished minutes and hours up and prunes each tier. Stop the sampler
//! first, then the writer: its last act is a final flush, so a clean shutdown
//! loses no sample.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use crate::container_history::{ContainerMetric, ContainerRates};
use crate::error::{HistoryError, RepositoryError, SourceError};
use crate::history::{BucketPlan, HistoryQuery, HistoryResult, PruneReport, RetentionPolicy, RollupReport};
use crate::metric::HistorySample;
use crate::ports::{Clock, SnapshotPublisher, SnapshotRepository, SnapshotSource};
use crate::snapshot::Snapshot;
use crate::time::UnixMillis;

/// Samples waiting to be written, shared by the sampler and the writer.
///
/// Bounded: when the store has been failing for so long that the buffer is
/// full, the oldest samples are dropped (and counted) rather than growing
/// without end.
#[derive(Debug)]
pub struct SampleBuffer {
    samples: Mutex<VecDeque<HistorySample>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl SampleBuffer {
    /// A buffer holding at most `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { samples: Mutex::new(VecDeque::new()), capacity: capacity.max(1), dropped: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HistorySample>> {
        // The critical sections below cannot panic half-way, so a poisoned
        // lock still guards a consistent queue.
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends a sample, dropping the oldest one if full.
    pub fn push(&self, sample: HistorySample) {
        let mut q = self.lock();
        if q.len() >= self.capacity {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(sample);
    }

    /// Takes every waiting sample, oldest first.
    pub fn drain(&self) -> Vec<HistorySample> {
        self.lock().drain(..).collect()
    }

    /// Puts samples that could not be written back in front, keeping order
    /// and the capacity bound.
    pub fn requeue(&self, samples: Vec<HistorySample>) {
        let mut q = self.lock();
        for s in samples.into_iter().rev() {
            if q.len() >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            q.push_front(s);
        }
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Live counters of the sampler, read by health checks and metrics.
#[derive(Debug, Default)]
pub struct SamplerHealth {
    last_success: AtomicI64,
    samples: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    skipped_ticks: AtomicU64,
}

impl SamplerHealth {
    /// Time of the last good sample, if there was one.
    pub fn last_success(&self) -> Option<UnixMillis> {
        match self.last_success.load(Ordering::Relaxed) {
            0 => None,
            t => Some(UnixMillis(t)),
        }
    }
    /// Good samples taken.
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
    /// Samples that failed.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
    /// Failures since the last good sample.
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }
    /// Ticks skipped because a sample overran its interval.
    pub fn skipped_ticks(&self) -> u64 {
        self.skipped_ticks.load(Ordering::Relaxed)
    }
}

/// Takes a snapshot every interval, publishes it and buffers its history.
pub struct Sampler {
    source: Arc<dyn SnapshotSource>,
    publisher: Arc<dyn SnapshotPublisher>,
    clock: Arc<dyn Clock>,
    buffer: Option<Arc<SampleBuffer>>,
    interval_ms: i64,
    health: Arc<SamplerHealth>,
    /// The containers' previous counters, for their history rates.
    rates: Mutex<ContainerRates>,
}

impl Sampler {
    /// A sampler; `buffer` is `None` when history is off.
    pub fn new(
        source: Arc<dyn SnapshotSource>,
        publisher: Arc<dyn SnapshotPublisher>,
        clock: Arc<dyn Clock>,
        buffer: Option<Arc<SampleBuffer>>,
        interval_ms: i64,
    ) -> Self {
        Self {
            source,
            publisher,
            clock,
            buffer,
            interval_ms: interval_ms.max(1),
            health: Arc::default(),
            rates: Mutex::default(),
        }
    }

    /// The counters this sampler updates.
    pub fn health(&self) -> Arc<SamplerHealth> {
        Arc::clone(&self.health)
    }

    /// Takes one sample now, publishes it and buffers its history: the
    /// host's values and a row per running or paused container, with rates
    /// from the container's previous sample.
    #[tracing::instrument(name = "sampler.tick", skip(self), level = "debug")]
    pub async fn tick(&self) -> Result<Arc<Snapshot>, SourceError> {
        let at = self.clock.now();
        match self.source.sample(at).await {
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                self.publisher.publish(Arc::clone(&snapshot));
                if let Some(buffer) = &self.buffer {
                    let mut sample = HistorySample::from_snapshot(&snapshot);
                    // Only this task ticks; the lock is never contended.
                    sample.containers = self.rates.lock().unwrap_or_else(PoisonError::into_inner).observe(&snapshot);
                    buffer.push(sample);
                }
                self.health.last_success.store(snapshot.timestamp.as_millis().max(1), Ordering::Relaxed);
                self.health.samples.fetch_add(1, Ordering::Relaxed);
                self.health.consecutive_failures.store(0, Ordering::Relaxed);
                Ok(snapshot)
            }
            Err(e) => {
                self.health.failures.fetch_add(1, Ordering::Relaxed);
                self.health.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The first tick strictly after `now`: ticks sit on multiples of the
    /// interval, so samples of every run line up and never drift.
    fn next_tick(&self, now: UnixMillis) -> UnixMillis {
        now.floor_to(self.interval_ms).add_millis(self.interval_ms)
    }

    /// Samples on every tick until `shutdown` completes.
    ///
    /// A sample that overruns its interval makes the sampler skip the ticks it
    /// missed (counted in [`SamplerHealth::skipped_ticks`]) instead of
    /// bursting to catch up. A failing source is logged and retried on the
    /// next tick.
    pub async fn run<F: Future<Output = ()>>(&self, shutdown: F) {
        let mut shutdown = pin!(shutdown);
        let mut deadline = self.next_tick(self.clock.now());
        loop {
            if race(shutdown.as_mut(), self.clock.sleep_until(deadline)).await.is_left()
                || race(shutdown.as_mut(), std::future::ready(())).await.is_left()
            {
                // Stop rather than sample when shutdown and the tick coincide.
                break;
            }
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "host sample failed");
            }
            let next = self.next_tick(self.clock.now());
            let skipped = (next.as_millis() - deadline.as_millis()) / self.interval_ms - 1;
            if skipped > 0 {
                self.health.skipped_ticks.fetch_add(skipped as u64, Ordering::Relaxed);
                tracing::debug!(skipped, "sample overran its interval; skipping ticks");
            }
            deadline = next;
        }
    }
}

/// Live counters of the history writer.
#[derive(Debug, Default)]
pub struct WriterStats {
    saved: AtomicU64,
    pruned: AtomicU64,
    flush_failures: AtomicU64,
}

impl WriterStats {
    /// Samples written.
    pub fn saved(&self) -> u64 {
        self.saved.load(Ordering::Relaxed)
    }
    /// Rows pruned, all tiers.
    pub fn pruned(&self) -> u64 {
        self.pruned.load(Ordering::Relaxed)
    }
    /// Flushes that failed (their samples were kept for the next one).
    pub fn flush_failures(&self) -> u64 {
        self.flush_failures.load(Ordering::Relaxed)
    }
}

/// Settings of the history writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterSettings {
    /// How often the buffer is written.
    pub flush_interval_ms: i64,
    /// How often old rows are pruned.
    pub prune_interval_ms: i64,
    /// What each tier keeps.
    pub retention: RetentionPolicy,
}

/// Writes buffered samples, rolls them up and prunes the tiers.
pub struct HistoryWriter {
    repository: Arc<dyn SnapshotRepository>,
    clock: Arc<dyn Clock>,
    buffer: Arc<SampleBuffer>,
    settings: WriterSettings,
    stats: Arc<WriterStats>,
    last_saved: Mutex<Option<UnixMillis>>,
}

impl HistoryWriter {
    /// A writer draining `buffer` into `repository`.
    pub fn new(
        repository: Arc<dyn SnapshotRepository>,
        clock: Arc<dyn Clock>,
        buffer: Arc<SampleBuffer>,
        settings: WriterSettings,
    ) -> Self {
        Self { repository, clock, buffer, settings, stats: Arc::default(), last_saved: Mutex::new(None) }
    }

    /// The counters this writer updates.
    pub fn stats(&self) -> Arc<WriterStats> {
        Arc::clone(&self.stats)
    }

    /// Writes every buffered sample in one transaction; on failure they go
    /// back to the buffer and are tried again next time.
    #[tracing::instrument(name = "history.flush", skip(self), level = "debug")]
    pub async fn flush(&self) -> Result<usize, RepositoryError> {
        let samples = self.buffer.drain();
        if samples.is_empty() {
            return Ok(0);
        }
        let newest = samples.iter().map(|s| s.timestamp).max();
        match self.repository.save_samples(&samples).await {
            Ok(()) => {
                let n = samples.len();
                self.stats.saved.fetch_add(n as u64, Ordering::Relaxed);
                let mut last = self.last_saved.lock().unwrap_or_else(PoisonError::into_inner);
                *last = (*last).max(newest);
                Ok(n)
            }
            Err(e) => {
                self.stats.flush_failures.fetch_add(1, Ordering::Relaxed);
                self.buffer.requeue(samples);
                Err(e)
            }
        }
    }

    /// Rolls up every minute (and hour) finished before the newest saved
    /// sample's minute.
    #[tracing::instrument(name = "history.roll_up", skip(self), level = "debug")]
    pub async fn roll_up(&self) -> Result<RollupReport, RepositoryError> {
        let newest = *self.last_saved.lock().unwrap_or_else(PoisonError::into_inner);
        let newest = match newest {
            Some(t) => Some(t),
            None => self.repository.latest_sample_time().await?,
        };
        match newest {
            Some(t) => self.repository.roll_up(t.floor_to(UnixMillis::MINUTE)).await,
            None => Ok(RollupReport::default()),
        }
    }

    /// Prunes every tier to its retention.
    #[tracing::instrument(name = "history.prune", skip(self), level = "debug")]
    pub async fn prune(&self) -> Result<PruneReport, RepositoryError> {
        let report = self.repository.prune(&self.settings.retention, self.clock.now()).await?;
        self.stats.pruned.fetch_add(report.total(), Ordering::Relaxed);
        Ok(report)
    }

    async fn maintain(&self, prune_due: bool) {
        if let Err(e) = self.flush().await {
            tracing::error!(error = %e, buffered = self.buffer.len(), "history flush failed; samples kept for the next try");
            return;
        }
        if let Err(e) = self.roll_up().await {
            tracing::error!(error = %e, "history roll-up failed");
        }
        if prune_due {
            match self.prune().await {
                Ok(r) if r.total() > 0 => tracing::info!(
                    raw = r.raw,
                    minutes = r.minutes,
                    hours = r.hours,
                    container_raw = r.container_raw,
                    container_minutes = r.container_minutes,
                    container_hours = r.container_hours,
                    "history pruned"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "history prune failed"),
            }
        }
    }

    /// Flushes every flush interval until `shutdown` completes, then flushes
    /// one last time. Stop the sampler before this returns, or samples taken
    /// after the final flush stay in the buffer.
    pub async fn run<F: Future<Output = ()>>(&self, shutdown: F) {
        let mut shutdown = pin!(shutdown);
        let flush_every = self.settings.flush_interval_ms.max(1);
        let prune_every = self.settings.prune_interval_ms.max(1);
        let mut next_prune = self.clock.now();
        loop {
            let now = self.clock.now();
            let prune_due = now >= next_prune;
            if prune_due {
                next_prune = now.add_millis(prune_every);
            }
            self.maintain(prune_due).await;
            let deadline = self.clock.now().add_millis(flush_every);
            if race(shutdown.as_mut(), self.clock.sleep_until(deadline)).await.is_left() {
                break;
            }
        }
        self.maintain(false).await;
    }
}

/// Answers history queries from the tier that fits them.
pub struct HistoryService {
    repository: Arc<dyn SnapshotRepository>,
    clock: Arc<dyn Clock>,
    retention: RetentionPolicy,
    sampling_interval_ms: i64,
}

impl HistoryService {
    /// A history service over `repository`.
    pub fn new(
        repository: Arc<dyn SnapshotRepository>,
        clock: Arc<dyn Clock>,
        retention: RetentionPolicy,
        sampling_interval_ms: i64,
    ) -> Self {
        Self { repository, clock, retention, sampling_interval_ms }
    }

    /// Chooses a tier for `query` and reads it.
    #[tracing::instrument(name = "history.query", skip(self, query), fields(from = %query.from(), to = %query.to(), points = query.points()))]
    pub async fn query(&self, query: &HistoryQuery) -> Result<HistoryResult, HistoryError> {
        let plan = BucketPlan::choose(query, self.clock.now(), &self.retention, self.sampling_interval_ms);
        let series = self.repository.query(&plan, query.metrics()).await?;
        Ok(HistoryResult { plan, series })
    }

    /// Chooses a tier for one container's `query`, exactly as for the host,
    /// and reads that container's rows. Whether the container exists is the
    /// caller's concern: history outlives a deleted container until
    /// retention removes it, and an id without rows gets empty series.
    #[tracing::instrument(name = "history.query_container", skip(self, query), fields(from = %query.from(), to = %query.to(), points = query.points()))]
    pub async fn query_container(
        &self,
        container_id: &str,
        query: &HistoryQuery<ContainerMetric>,
    ) -> Result<HistoryResult<ContainerMetric>, HistoryError> {
        let plan = BucketPlan::choose(query, self.clock.now(), &self.retention, self.sampling_interval_ms);
        let series = self.repository.query_container(container_id, &plan, query.metrics()).await?;
        Ok(HistoryResult { plan, series })
    }
}

/// Which of two raced futures finished first.
enum Either<A, B> {
    Left(A),
    Right(B),
}

impl<A, B> Either<A, B> {
    fn is_left(&self) -> bool {
        matches!(self, Either::Left(_))
    }
}

/// Polls `a` then `b` until one is ready; `a` wins ties.
async fn race<A: Future, B: Future>(mut a: Pin<&mut A>, b: B) -> Either<A::Output, B::Output> {
    let mut b = pin!(b);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(v));
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Tier;
    use crate::metric::Metric;
    use crate::ports::{MockSnapshotPublisher, MockSnapshotRepository, MockSnapshotSource};
    use crate::snapshot::HostInfo;
    use async_trait::async_trait;

    /// A clock whose sleeps return at once, jumping time to the deadline.
    #[derive(Default)]
    struct FakeClock(Mutex<i64>);

    impl FakeClock {
        fn at(ms: i64) -> Arc<Self> {
            Arc::new(Self(Mutex::new(ms)))
        }
        fn advance(&self, ms: i64) {
            *self.0.lock().unwrap() += ms;
        }
    }

    #[async_trait]
    impl Clock for FakeClock {
        fn now(&self) -> UnixMillis {
            UnixMillis(*self.0.lock().unwrap())
        }
        async fn sleep_until(&self, deadline: UnixMillis) {
            let mut now = self.0.lock().unwrap();
            *now = (*now).max(deadline.as_millis());
        }
    }

    /// A source that takes `cost_ms` of fake time per sample.
    struct SlowSource {
        clock: Arc<FakeClock>,
        cost_ms: i64,
        taken: Mutex<Vec<UnixMillis>>,
    }

    #[async_trait]
    impl SnapshotSource for SlowSource {
        async fn sample(&self, at: UnixMillis) -> Result<Snapshot, SourceError> {
            self.taken.lock().unwrap().push(at);
            self.clock.advance(self.cost_ms);
            Ok(Snapshot { timestamp: at, ..Default::default() })
        }
        async fn host_info(&self) -> Result<HostInfo, SourceError> {
            Ok(HostInfo::default())
        }
    }

    fn until(clock: Arc<FakeClock>, t: i64) -> impl Future<Output = ()> {
        std::future::poll_fn(move |_| if clock.now().as_millis() >= t { Poll::Ready(()) } else { Poll::Pending })
    }

    fn quiet_publisher() -> Arc<MockSnapshotPublisher> {
        let mut p = MockSnapshotPublisher::new();
        p.expect_publish().return_const(());
        Arc::new(p)
    }

    #[tokio::test]
    async fn samples_land_on_interval_multiples_without_drift() {
        let clock = FakeClock::at(10_250);
        let source = Arc::new(SlowSource { clock: clock.clone(), cost_ms: 3, taken: Mutex::default() });
        let buffer = Arc::new(SampleBuffer::new(100));
        let sampler = Sampler::new(source.clone(), quiet_publisher(), clock.clone(), Some(buffer.clone()), 1_000);
        sampler.run(until(clock.clone(), 15_500)).await;
        let taken = source.taken.lock().unwrap().clone();
        assert_eq!(taken, [11_000, 12_000, 13_000, 14_000, 15_000].map(UnixMillis));
        assert_eq!(buffer.len(), 5);
        assert_eq!(sampler.health().samples(), 5);
        assert_eq!(sampler.health().skipped_ticks(), 0);
    }

    #[tokio::test]
    async fn an_overrunning_sample_skips_missed_ticks_instead_of_bursting() {
        let clock = FakeClock::at(0);
        let source = Arc::new(SlowSource { clock: clock.clone(), cost_ms: 2_500, taken: Mutex::default() });
        let sampler = Sampler::new(source.clone(), quiet_publisher(), clock.clone(), None, 1_000);
        sampler.run(until(clock.clone(), 9_000)).await;
        let taken = source.taken.lock().unwrap().clone();
        // 1000 → done at 3500, next tick 4000 → done 6500, next 7000 → done 9500.
        assert_eq!(taken, [1_000, 4_000, 7_000].map(UnixMillis));
        assert_eq!(sampler.health().skipped_ticks(), 6);
    }

    #[tokio::test]
    async fn a_failing_source_is_counted_and_retried_and_publishes_nothing() {
        let clock = FakeClock::at(0);
        let mut source = MockSnapshotSource::new();
        source.expect_sample().times(3).returning(|_| Err(SourceError::Unavailable("no /proc".into())));
        let mut publisher = MockSnapshotPublisher::new();
        publisher.expect_publish().never();
        let buffer = Arc::new(SampleBuffer::new(10));
        let sampler = Sampler::new(Arc::new(source), Arc::new(publisher), clock.clone(), Some(buffer.clone()), 1_000);
        sampler.run(until(clock.clone(), 3_500)).await;
        let h = sampler.health();
        assert_eq!((h.samples(), h.failures(), h.consecutive_failures()), (0, 3, 3));
        assert_eq!(h.last_success(), None);
        assert!(buffer.is_empty());
    }

    #[tokio::test]
    async fn tick_publishes_before_buffering_the_same_snapshot() {
        let clock = FakeClock::at(42_000);
        let mut source = MockSnapshotSource::new();
        source.expect_sample().returning(|at| {
            let mut s = Snapshot { timestamp: at, ..Default::default() };
            s.cpu.usage_percent = 12.5;
            Ok(s)
        });
        let published = Arc::new(Mutex::new(Vec::new()));
        let mut publisher = MockSnapshotPublisher::new();
        let seen = published.clone();
        publisher.expect_publish().times(1).returning(move |s| seen.lock().unwrap().push(s));
        let buffer = Arc::new(SampleBuffer::new(10));
        let sampler = Sampler::new(Arc::new(source), Arc::new(publisher), clock, Some(buffer.clone()), 1_000);
        let snap = sampler.tick().await.unwrap();
        assert_eq!(published.lock().unwrap()[0].timestamp, UnixMillis(42_000));
        let buffered = buffer.drain();
        assert_eq!(buffered.len(), 1);
        assert_eq!(buffered[0].get(Metric::CpuUsagePercent), snap.cpu.usage_percent);
    }

    #[tokio::test]
    async fn ticks_buffer_a_row_per_running_container_with_rates_from_the_previous_tick() {
        use crate::container_history::ContainerMetric as C;
        use crate::snapshot::ContainerStats;
        let clock = FakeClock::at(10_000);
        let mut source = MockSnapshotSource::new();
        source.expect_sample().returning(|at| {
            // 1 MB more received every second since the epoch of the test.
            let received = (at.as_millis() as u64 - 10_000) * 1_000;
            let running = ContainerStats {
                id: "c1".into(),
                state: "running".into(),
                cpu_percent: 50.0,
                memory_bytes: 1 << 20,
                network_rx_bytes: received,
                pids: 2,
                ..Default::default()
            };
            let stopped = ContainerStats { id: "c2".into(), state: "stopped".into(), ..Default::default() };
            Ok(Snapshot { timestamp: at, containers: vec![running, stopped], ..Default::default() })
        });
        let buffer = Arc::new(SampleBuffer::new(10));
        let sampler = Sampler::new(Arc::new(source), quiet_publisher(), clock.clone(), Some(buffer.clone()), 1_000);
        sampler.tick().await.unwrap();
        clock.advance(2_000);
        sampler.tick().await.unwrap();
        let buffered = buffer.drain();
        let rows: Vec<_> = buffered.iter().map(|s| s.containers.clone()).collect();
        assert_eq!(rows.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1], "the stopped container gets no row");
        let (first, second) = (&rows[0][0], &rows[1][0]);
        assert_eq!(first.container_id, "c1");
        assert_eq!(first.get(C::CpuPercent), 50.0);
        assert!(first.get(C::NetworkRxBytesPerSec).is_nan(), "no rate on the first sample");
        assert_eq!(second.get(C::NetworkRxBytesPerSec), 1_000_000.0);
        assert_eq!(second.get(C::Pids), 2.0);
    }

    #[tokio::test]
    async fn container_queries_are_planned_exactly_like_host_queries() {
        use crate::container_history::ContainerMetric as C;
        let now = 10 * UnixMillis::DAY;
        let plans = Arc::new(Mutex::new(Vec::new()));
        let mut repo = MockSnapshotRepository::new();
        let p1 = plans.clone();
        repo.expect_query().returning(move |plan, _| {
            p1.lock().unwrap().push(*plan);
            Ok(vec![])
        });
        let p2 = plans.clone();
        repo.expect_query_container()
            .withf(|id, _, metrics| id == "c1" && metrics == [C::CpuPercent, C::MemoryBytes])
            .returning(move |_, plan, metrics| {
                p2.lock().unwrap().push(*plan);
                Ok(metrics.iter().map(|m| crate::history::Series { metric: *m, points: vec![] }).collect())
            });
        let svc = HistoryService::new(Arc::new(repo), FakeClock::at(now), RetentionPolicy::DEFAULT, 1_000);
        for (span, points) in [(UnixMillis::HOUR, 300), (7 * UnixMillis::DAY, 300), (365 * UnixMillis::DAY, 50)] {
            let (from, to) = (UnixMillis(now - span), UnixMillis(now));
            let host = HistoryQuery::new(vec![Metric::CpuUsagePercent], from, to, points).unwrap();
            let container =
                HistoryQuery::new(vec![C::MemoryBytes, C::CpuPercent, C::CpuPercent], from, to, points).unwrap();
            let h = svc.query(&host).await.unwrap();
            let c = svc.query_container("c1", &container).await.unwrap();
            assert_eq!(h.plan, c.plan, "span {span}");
            assert_eq!(c.series.iter().map(|s| s.metric).collect::<Vec<_>>(), [C::CpuPercent, C::MemoryBytes]);
        }
        let plans = plans.lock().unwrap();
        assert_eq!(plans.iter().map(|p| p.tier).collect::<Vec<_>>(), {
            use Tier::*;
            [Raw, Raw, Minute, Minute, Hour, Hour]
        });
    }

    fn sample(t: i64) -> HistorySample {
        HistorySample { timestamp: UnixMillis(t), values: [t as f64; crate::metric::METRIC_COUNT], containers: vec![] }
    }

    #[test]
    fn buffer_is_bounded_and_requeue_keeps_order() {
        let b = SampleBuffer::new(3);
        for t in 1..=4 {
            b.push(sample(t));
        }
        assert_eq!(b.dropped(), 1);
        let drained = b.drain();
        assert_eq!(drained.iter().map(|s| s.timestamp.0).collect::<Vec<_>>(), [2, 3, 4]);
        b.push(sample(5));
        b.requeue(drained);
        // Only two places were free in front of 5: the newest of the requeued win.
        assert_eq!(b.drain().iter().map(|s| s.timestamp.0).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(b.dropped(), 2);
    }

    fn settings() -> WriterSettings {
        WriterSettings { flush_interval_ms: 10_000, prune_interval_ms: 3_600_000, retention: RetentionPolicy::DEFAULT }
    }

    #[tokio::test]
    async fn a_failed_flush_keeps_every_sample_for_the_next_one() {
        let buffer = Arc::new(SampleBuffer::new(100));
        buffer.push(sample(1_000));
        buffer.push(sample(2_000));
        let mut repo = MockSnapshotRepository::new();
        let mut calls = 0;
        repo.expect_save_samples().times(2).returning(move |s| {
            calls += 1;
            if calls == 1 {
                Err(RepositoryError::Unavailable("database is locked".into()))
            } else {
                assert_eq!(s.len(), 3);
                Ok(())
            }
        });
        let writer = HistoryWriter::new(Arc::new(repo), FakeClock::at(0), buffer.clone(), settings());
        assert!(writer.flush().await.is_err());
        assert_eq!(buffer.len(), 2);
        buffer.push(sample(3_000));
        assert_eq!(writer.flush().await.unwrap(), 3);
        assert_eq!(writer.stats().saved(), 3);
        assert_eq!(writer.stats().flush_failures(), 1);
        assert!(buffer.is_empty());
    }

    #[tokio::test]
    async fn roll_up_stops_at_the_minute_of_the_newest_saved_sample() {
        let buffer = Arc::new(SampleBuffer::new(100));
        buffer.push(sample(119_500));
        buffer.push(sample(181_000));
        let mut repo = MockSnapshotRepository::new();
        repo.expect_save_samples().returning(|_| Ok(()));
        repo.expect_roll_up()
            .withf(|until| *until == UnixMillis(180_000))
            .times(1)
            .returning(|_| Ok(RollupReport { minutes: 2, ..Default::default() }));
        let writer = HistoryWriter::new(Arc::new(repo), FakeClock::at(0), buffer, settings());
        writer.flush().await.unwrap();
        assert_eq!(writer.roll_up().await.unwrap().minutes, 2);
    }

    #[tokio::test]
    async fn writer_flushes_on_shutdown_and_prunes_at_start() {
        let clock = FakeClock::at(1_000_000);
        let buffer = Arc::new(SampleBuffer::new(100));
        let mut repo = MockSnapshotRepository::new();
        let saved = Arc::new(Mutex::new(Vec::new()));
        let s2 = saved.clone();
        repo.expect_save_samples().returning(move |s| {
            s2.lock().unwrap().extend_from_slice(s);
            Ok(())
        });
        repo.expect_roll_up().returning(|_| Ok(RollupReport::default()));
        repo.expect_latest_sample_time().returning(|| Ok(None));
        repo.expect_prune().times(1).returning(|_, _| Ok(PruneReport { raw: 5, ..Default::default() }));
        let writer = HistoryWriter::new(Arc::new(repo), clock.clone(), buffer.clone(), settings());
        // Samples arrive while the writer sleeps; shutdown comes before the next flush is due.
        buffer.push(sample(1_000_500));
        writer.run(std::future::ready(())).await;
        assert_eq!(saved.lock().unwrap().len(), 1);
        assert_eq!(writer.stats().pruned(), 5);
        assert!(buffer.is_empty());
    }

    #[tokio::test]
    async fn history_service_reads_the_tier_the_plan_chooses() {
        let now = 10 * UnixMillis::DAY;
        let mut repo = MockSnapshotRepository::new();
        repo.expect_query()
            .withf(|plan, metrics| plan.tier == Tier::Minute && metrics == [Metric::CpuUsagePercent])
            .times(1)
            .returning(|_, _| Ok(vec![]));
        let svc = HistoryService::new(Arc::new(repo), FakeClock::at(now), RetentionPolicy::DEFAULT, 1_000);
        let q = HistoryQuery::new(
            vec![Metric::CpuUsagePercent],
            UnixMillis(now - 7 * UnixMillis::DAY),
            UnixMillis(now),
            300,
        )
        .unwrap();
        let r = svc.query(&q).await.unwrap();
        assert_eq!(r.plan.tier, Tier::Minute);
    }
}
