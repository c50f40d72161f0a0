//! [`SnapshotRepository`] over the `history_raw`, `history_1m` and
//! `history_1h` tables.
//!
//! - **Saving** writes one row per sample in one `BEGIN IMMEDIATE`
//!   transaction with one prepared statement; `INSERT OR REPLACE`, so a clock
//!   that steps back overwrites instead of failing the batch.
//! - **Rolling up** aggregates every complete minute after the minute
//!   watermark (`max(bucket)` of `history_1m`) into `history_1m`, in
//!   statements of at most six hours of samples so the sampler's flush never
//!   waits long for the write lock; then every complete hour after the hour
//!   watermark into `history_1h`, weighting minute means by their sample
//!   counts. Samples saved later for a minute already rolled (a clock that
//!   stepped back past it) stay in the raw tier only.
//! - **Pruning** deletes by key range in batches of [`DELETE_BATCH`] rows, one
//!   short transaction each, and never below a tier's roll-up watermark.
//! - **Querying** is one statement over the plan's tier, reading only the
//!   requested columns: the `bucket_numbers` table (0..16383) drives a loop
//!   over the buckets and each bucket's rows are one key range of the tier,
//!   aggregated without sorting (avg/min/max on raw rows; for roll-ups the
//!   mean weighted by `n`, the min of mins and the max of maxes). With one or
//!   two metrics the answer comes back packed in one text value, sparing a
//!   hand-over between sqlx's SQLite thread and the runtime per bucket.
//!   Plans with more buckets than `bucket_numbers` holds use a plain
//!   `GROUP BY (key - from) / step`. All three give the same doubles (tested).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use homeserver_domain::{
    BucketPlan, ContainerMetric, HistorySample, Metric, Point, PruneReport, RepositoryError, RetentionPolicy,
    RollupReport, Series, SnapshotRepository, Tier, UnixMillis,
};
use sqlx::{AssertSqlSafe, Row as _};

use crate::columns::{
    BUCKET_NUMBERS, INSERT_RAW, PACKED_MAX_METRICS, ROLL_HOURS, ROLL_MINUTES, Table, bucket_query, column,
    grouped_query, packed_bucket_query,
};
use crate::container_history;
use crate::error::ctx;
use crate::store::SqliteStore;

/// Rows removed per prune statement: each is its own short write transaction.
pub(crate) const DELETE_BATCH: i64 = 10_000;

/// Raw span rolled per roll-up statement (6 h = 21,600 samples at 1 s).
const ROLL_CHUNK_MS: i64 = 6 * UnixMillis::HOUR;

const MINUTE: i64 = UnixMillis::MINUTE;
const HOUR: i64 = UnixMillis::HOUR;

const fn table_of(tier: Tier) -> Table {
    match tier {
        Tier::Raw => Table::Raw,
        Tier::Minute => Table::Minute,
        Tier::Hour => Table::Hour,
    }
}

/// `SELECT max(<key>) FROM <table>`.
const fn max_key_sql(table: Table) -> &'static str {
    match table {
        Table::Raw => "SELECT max(ts) FROM history_raw",
        Table::Minute => "SELECT max(bucket) FROM history_1m",
        Table::Hour => "SELECT max(bucket) FROM history_1h",
    }
}

/// Deletes at most `?2` of the oldest rows with key `< ?1`.
const fn delete_sql(table: Table) -> &'static str {
    match table {
        Table::Raw => {
            "DELETE FROM history_raw WHERE ts IN (SELECT ts FROM history_raw WHERE ts < ?1 ORDER BY ts LIMIT ?2)"
        }
        Table::Minute => {
            "DELETE FROM history_1m WHERE bucket IN \
             (SELECT bucket FROM history_1m WHERE bucket < ?1 ORDER BY bucket LIMIT ?2)"
        }
        Table::Hour => {
            "DELETE FROM history_1h WHERE bucket IN \
             (SELECT bucket FROM history_1h WHERE bucket < ?1 ORDER BY bucket LIMIT ?2)"
        }
    }
}

impl SqliteStore {
    async fn max_key(&self, table: Table) -> Result<Option<i64>, RepositoryError> {
        sqlx::query_scalar(max_key_sql(table)).fetch_one(&self.pool).await.map_err(ctx("reading a roll-up watermark"))
    }

    /// Rolls raw rows of complete minutes before `until` (minute-aligned).
    async fn roll_minutes(&self, until: i64) -> Result<u64, RepositoryError> {
        let mut start = match self.max_key(Table::Minute).await? {
            Some(rolled) => rolled + MINUTE,
            None => i64::MIN,
        };
        let mut written = 0;
        while start < until {
            // Jump over gaps (the service was down) to the next raw row.
            let next: Option<i64> = sqlx::query_scalar("SELECT min(ts) FROM history_raw WHERE ts >= ?1 AND ts < ?2")
                .bind(start)
                .bind(until)
                .fetch_one(&self.pool)
                .await
                .map_err(ctx("finding raw rows to roll up"))?;
            let Some(next) = next else { break };
            let chunk_start = UnixMillis(next).floor_to(MINUTE).as_millis().max(start);
            let chunk_end = chunk_start.saturating_add(ROLL_CHUNK_MS).min(until);
            written += sqlx::query(AssertSqlSafe(Arc::clone(&ROLL_MINUTES)))
                .bind(chunk_start)
                .bind(chunk_end)
                .execute(&self.pool)
                .await
                .map_err(ctx("rolling raw samples into minutes"))?
                .rows_affected();
            start = chunk_end;
            tokio::task::yield_now().await;
        }
        Ok(written)
    }

    /// Rolls minute rows of complete hours before `until` (hour-aligned).
    async fn roll_hours(&self, until: i64) -> Result<u64, RepositoryError> {
        let start = match self.max_key(Table::Hour).await? {
            Some(rolled) => rolled + HOUR,
            None => i64::MIN,
        };
        if start >= until {
            return Ok(0);
        }
        let written = sqlx::query(AssertSqlSafe(Arc::clone(&ROLL_HOURS)))
            .bind(start)
            .bind(until)
            .execute(&self.pool)
            .await
            .map_err(ctx("rolling minutes into hours"))?
            .rows_affected();
        Ok(written)
    }

    /// Answers `plan` with the statement `how` says.
    async fn read_buckets(
        &self,
        plan: &BucketPlan,
        metrics: &[Metric],
        how: Read,
    ) -> Result<Vec<Series>, RepositoryError> {
        let mut series: Vec<Series> = metrics.iter().map(|m| Series { metric: *m, points: Vec::new() }).collect();
        if metrics.is_empty() || plan.from >= plan.to {
            return Ok(series);
        }
        let started = Instant::now();
        let table = table_of(plan.tier);
        let (from, step, to) = (plan.from.as_millis(), plan.step_ms, plan.to.as_millis());
        let rows = match how {
            Read::Packed { buckets } => {
                let packed: Option<String> = sqlx::query_scalar(AssertSqlSafe(packed_bucket_query(table, metrics)))
                    .bind(from)
                    .bind(step)
                    .bind(to)
                    .bind(buckets)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(ctx("reading history"))?;
                if let Some(packed) = packed {
                    unpack(&packed, table, plan, &mut series).map_err(RepositoryError::internal)?;
                }
                Vec::new()
            }
            Read::Walk { buckets } => sqlx::query(AssertSqlSafe(bucket_query(table, metrics)))
                .bind(from)
                .bind(step)
                .bind(to)
                .bind(buckets)
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("reading history"))?,
            Read::Grouped => sqlx::query(AssertSqlSafe(grouped_query(table, metrics)))
                .bind(from)
                .bind(step)
                .bind(to)
                .fetch_all(&self.pool)
                .await
                .map_err(ctx("reading history"))?,
        };
        for s in &mut series {
            s.points.reserve_exact(rows.len());
        }
        for row in &rows {
            let bucket: i64 = row.try_get(0).map_err(ctx("decoding a history bucket"))?;
            let t = plan.bucket_start(bucket);
            for (i, s) in series.iter_mut().enumerate() {
                // avg is REAL, min/max INTEGER in raw rows: read all as f64.
                let value = |k: usize| {
                    row.try_get_unchecked::<Option<f64>, _>(1 + 3 * i + k).map_err(ctx("decoding a history value"))
                };
                push_point(s, t, value(0)?, value(1)?, value(2)?);
            }
        }
        tracing::debug!(
            ?how,
            points = series.first().map_or(0, |s| s.points.len()),
            elapsed_us = started.elapsed().as_micros() as u64,
            "history read"
        );
        Ok(series)
    }

    /// Deletes every row of `table` with key `< bound`, in short batches.
    async fn delete_before(&self, table: Table, bound: i64) -> Result<u64, RepositoryError> {
        let mut deleted = 0;
        loop {
            let n = sqlx::query(delete_sql(table))
                .bind(bound)
                .bind(DELETE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(ctx("pruning history"))?
                .rows_affected();
            deleted += n;
            if n < DELETE_BATCH as u64 {
                return Ok(deleted);
            }
            // Let the sampler's flush take the write lock between batches.
            tokio::task::yield_now().await;
        }
    }
}

/// Which statement answers a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// [`packed_bucket_query`]: few metrics, at most [`BUCKET_NUMBERS`] buckets.
    Packed { buckets: i64 },
    /// [`bucket_query`]: many metrics, at most [`BUCKET_NUMBERS`] buckets.
    Walk { buckets: i64 },
    /// [`grouped_query`]: more buckets.
    Grouped,
}

/// Adds a point in storage units to `series`, unless the metric had no value
/// in the bucket.
fn push_point(series: &mut Series, t: UnixMillis, avg: Option<f64>, min: Option<f64>, max: Option<f64>) {
    let col = column(series.metric);
    if let (Some(avg), Some(min), Some(max)) = (avg, min, max) {
        series.points.push(Point { t, avg: col.decode(avg), min: col.decode(min), max: col.decode(max) });
    }
}

/// A packed answer of [`bucket_query`] that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("malformed packed history bucket `{line}`")]
struct MalformedBucket {
    line: String,
}

/// Decodes the packed answer of [`bucket_query`] into `series`.
fn unpack(packed: &str, table: Table, plan: &BucketPlan, series: &mut [Series]) -> Result<(), MalformedBucket> {
    let buckets = packed.bytes().filter(|b| *b == b';').count() + 1;
    for s in series.iter_mut() {
        s.points.reserve_exact(buckets);
    }
    for line in packed.split(';') {
        let malformed = || MalformedBucket { line: line.chars().take(200).collect() };
        let mut fields = line.split(',');
        let bucket: i64 = fields.next().and_then(|b| b.parse().ok()).ok_or_else(malformed)?;
        let t = plan.bucket_start(bucket);
        let mut next = || -> Result<Option<f64>, MalformedBucket> {
            match fields.next() {
                Some("NULL") => Ok(None),
                Some(v) => v.parse().map(Some).map_err(|_| malformed()),
                None => Err(malformed()),
            }
        };
        for s in series.iter_mut() {
            let (avg, min, max) = match table {
                // count, sum, min, max: the mean as SQLite's avg() computes it.
                Table::Raw => {
                    let (count, sum) = (next()?, next()?);
                    (sum.zip(count).map(|(sum, count)| sum / count), next()?, next()?)
                }
                Table::Minute | Table::Hour => (next()?, next()?, next()?),
            };
            push_point(s, t, avg, min, max);
        }
        if next().is_ok() {
            return Err(malformed());
        }
    }
    Ok(())
}

#[async_trait]
impl SnapshotRepository for SqliteStore {
    #[tracing::instrument(name = "sqlite.save_samples", skip_all, fields(samples = samples.len()), level = "debug")]
    async fn save_samples(&self, samples: &[HistorySample]) -> Result<(), RepositoryError> {
        if samples.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting to save samples"))?;
        for sample in samples {
            let mut insert = sqlx::query(AssertSqlSafe(Arc::clone(&INSERT_RAW))).bind(sample.timestamp.as_millis());
            for metric in Metric::ALL {
                insert = insert.bind(column(*metric).encode(sample.get(*metric)));
            }
            insert.execute(&mut *tx).await.map_err(ctx("saving samples"))?;
        }
        let container_rows = container_history::save_rows(&mut tx, samples).await?;
        tx.commit().await.map_err(ctx("committing samples"))?;
        tracing::debug!(container_rows, elapsed_us = started.elapsed().as_micros() as u64, "samples saved");
        Ok(())
    }

    #[tracing::instrument(name = "sqlite.roll_up", skip(self), level = "debug")]
    async fn roll_up(&self, until: UnixMillis) -> Result<RollupReport, RepositoryError> {
        let started = Instant::now();
        let minutes = self.roll_minutes(until.floor_to(MINUTE).as_millis()).await?;
        let hours = self.roll_hours(until.floor_to(HOUR).as_millis()).await?;
        let containers = self.roll_up_containers(until).await?;
        let report = RollupReport { minutes, hours, ..containers };
        tracing::debug!(?report, elapsed_us = started.elapsed().as_micros() as u64, "rolled up");
        Ok(report)
    }

    #[tracing::instrument(name = "sqlite.prune", skip(self, retention), level = "debug")]
    async fn prune(&self, retention: &RetentionPolicy, now: UnixMillis) -> Result<PruneReport, RepositoryError> {
        let started = Instant::now();
        // A tier's rows are kept until the next tier holds them.
        let minutes_rolled = self.max_key(Table::Minute).await?.map_or(i64::MIN, |b| b + MINUTE);
        let raw_bound = retention.cutoff(Tier::Raw, now).as_millis().min(minutes_rolled);
        let raw = self.delete_before(Table::Raw, raw_bound).await?;

        let hours_rolled = self.max_key(Table::Hour).await?.map_or(i64::MIN, |b| b + HOUR);
        let minute_bound = retention.cutoff(Tier::Minute, now).as_millis().min(hours_rolled);
        let minutes = self.delete_before(Table::Minute, minute_bound).await?;

        let hours = self.delete_before(Table::Hour, retention.cutoff(Tier::Hour, now).as_millis()).await?;

        let containers = self.prune_containers(retention, now).await?;
        let report = PruneReport { raw, minutes, hours, ..containers };
        if report.total() > 0 {
            // Fold the deletions into the main file while nobody writes; PASSIVE
            // never waits for readers or writers.
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await
                .map_err(ctx("checkpointing after a prune"))?;
        }
        tracing::debug!(?report, elapsed_us = started.elapsed().as_micros() as u64, "pruned");
        Ok(report)
    }

    #[tracing::instrument(
        name = "sqlite.query",
        skip_all,
        fields(tier = plan.tier.as_str(), from = plan.from.0, to = plan.to.0, step_ms = plan.step_ms, metrics = metrics.len()),
        level = "debug"
    )]
    async fn query(&self, plan: &BucketPlan, metrics: &[Metric]) -> Result<Vec<Series>, RepositoryError> {
        if plan.step_ms <= 0 {
            return Err(RepositoryError::internal(format!("invalid bucket plan: step {} ms", plan.step_ms)));
        }
        let span = i128::from(plan.to.as_millis()) - i128::from(plan.from.as_millis());
        let buckets = (span + i128::from(plan.step_ms) - 1) / i128::from(plan.step_ms);
        let how = match i64::try_from(buckets) {
            Ok(buckets) if buckets <= BUCKET_NUMBERS && metrics.len() <= PACKED_MAX_METRICS => Read::Packed { buckets },
            Ok(buckets) if buckets <= BUCKET_NUMBERS => Read::Walk { buckets },
            _ => Read::Grouped,
        };
        self.read_buckets(plan, metrics, how).await
    }

    #[tracing::instrument(
        name = "sqlite.query_container",
        skip_all,
        fields(tier = plan.tier.as_str(), from = plan.from.0, to = plan.to.0, step_ms = plan.step_ms, metrics = metrics.len()),
        level = "debug"
    )]
    async fn query_container(
        &self,
        container_id: &str,
        plan: &BucketPlan,
        metrics: &[ContainerMetric],
    ) -> Result<Vec<Series<ContainerMetric>>, RepositoryError> {
        self.query_container_rows(container_id, plan, metrics).await
    }

    async fn latest_sample_time(&self) -> Result<Option<UnixMillis>, RepositoryError> {
        let t: Option<i64> = sqlx::query_scalar(
            "SELECT coalesce((SELECT max(ts) FROM history_raw), \
             (SELECT max(bucket) FROM history_1m), (SELECT max(bucket) FROM history_1h))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(ctx("reading the newest sample time"))?;
        Ok(t.map(UnixMillis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;
    use homeserver_domain::METRIC_COUNT;

    /// An irregular sample: gaps, jitter and values of every size.
    fn sample(i: i64) -> HistorySample {
        let mut values = [0.0; METRIC_COUNT];
        for (k, v) in values.iter_mut().enumerate() {
            *v = ((i * 7_919 + k as i64 * 104_729) % 10_007) as f64 * 1.37 + k as f64;
        }
        // Some missing values: now and then, and for whole minutes at a time.
        if i % 13 == 0 || (i / 60) % 17 == 3 {
            values[3] = f64::NAN;
        }
        HistorySample {
            timestamp: UnixMillis(1_000_000_000_000 + i * 1_000 + (i * 37) % 900),
            values,
            containers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn walked_and_packed_answers_equal_grouped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(StoreOptions::new(dir.path().join("h.db"))).await.unwrap();
        let samples: Vec<_> = (0..20_000).filter(|i| i % 97 > 10).map(sample).collect();
        store.save_samples(&samples).await.unwrap();
        store.roll_up(UnixMillis(1_000_000_000_000 + 20_000 * 1_000)).await.unwrap();

        let base = 1_000_000_000_000;
        for (tier, from, to, step) in [
            (Tier::Raw, base, base + 20_000_000, 7_000),
            (Tier::Raw, base + 1_234, base + 3_600_000, 1_000),
            (Tier::Raw, base - 5_000_000, base + 500_000, 60_000),
            (Tier::Minute, base + 17, base + 20_000_000, 2_040_000),
            (Tier::Minute, base, base + 20_000_000, 60_000),
            (Tier::Hour, base, base + 20_000_000, 3_600_000),
        ] {
            let plan = BucketPlan { tier, from: UnixMillis(from), to: UnixMillis(to), step_ms: step };
            let buckets = (to - from + step - 1) / step;
            let grouped = store.read_buckets(&plan, Metric::ALL, Read::Grouped).await.unwrap();
            assert!(!grouped[0].points.is_empty(), "{plan:?}");
            let walked = store.read_buckets(&plan, Metric::ALL, Read::Walk { buckets }).await.unwrap();
            assert_eq!(walked, grouped, "{plan:?}");
            let packed = store.read_buckets(&plan, Metric::ALL, Read::Packed { buckets }).await.unwrap();
            assert_eq!(packed, grouped, "{plan:?}");
        }
        // Past the bucket numbers, `query` groups.
        let plan =
            BucketPlan { tier: Tier::Raw, from: UnixMillis(base), to: UnixMillis(base + 20_000_000), step_ms: 1 };
        let all = store.query(&plan, &[Metric::CpuLoad1]).await.unwrap();
        assert_eq!(all[0].points.len(), samples.len());
        store.close().await.unwrap();
    }

    #[test]
    fn a_malformed_packed_answer_is_an_error_not_a_panic() {
        let plan = BucketPlan { tier: Tier::Raw, from: UnixMillis(0), to: UnixMillis(10), step_ms: 1 };
        let mut series = vec![Series { metric: Metric::CpuLoad1, points: vec![] }];
        assert!(unpack("0,2,300,100,200", Table::Raw, &plan, &mut series).is_ok());
        assert_eq!(series[0].points, vec![Point { t: UnixMillis(0), avg: 1.5, min: 1.0, max: 2.0 }]);
        for bad in ["", "x,1,1,1,1", "0,1,1,1", "0,1,1,1,1,1", "0,1,oops,1,1"] {
            assert!(unpack(bad, Table::Raw, &plan, &mut series).is_err(), "{bad}");
        }
    }
}
