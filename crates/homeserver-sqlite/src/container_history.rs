//! Per-container history over `container_keys`, `container_history_raw`,
//! `container_history_1m`, `container_history_1h` and
//! `container_history_rolled` (migration 0005).
//!
//! The host history's design, keyed by container:
//! - **Saving** ([`save_rows`]) runs inside the host's `save_samples`
//!   transaction: the containers' keys are looked up in one statement
//!   (`json_each` of the ids), missing ones inserted, then the rows go in
//!   [`INSERT_CHUNK`] at a time (one statement per chunk, not per row).
//! - **Rolling up** covers every container in one statement per span
//!   (`container_keys CROSS JOIN` the tier: one primary-key range per
//!   container), chunked by time so a catch-up never holds the write lock
//!   long; each chunk moves the tier's watermark in `container_history_rolled`
//!   in the same transaction, so a watermark never claims rows not rolled.
//! - **Pruning** deletes by age in batches of [`DELETE_BATCH`] rows, never at
//!   or after a tier's roll-up watermark, whether the container still exists
//!   or not; a key no tier refers to any more goes too.
//! - **Querying** reads one container's key range of the plan's tier: the
//!   bucket loop of the host history (`bucket_numbers`) when it fits, a
//!   `GROUP BY` otherwise; means of roll-ups weighted by `n`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use homeserver_domain::{
    BucketPlan, ContainerMetric, HistorySample, Point, PruneReport, RepositoryError, RetentionPolicy, RollupReport,
    Series, Tier, UnixMillis,
};
use sqlx::{AssertSqlSafe, Row as _, Sqlite, Transaction};

use crate::columns::{BUCKET_NUMBERS, Column};
use crate::error::ctx;
use crate::history::DELETE_BATCH;
use crate::store::SqliteStore;

const MINUTE: i64 = UnixMillis::MINUTE;
const HOUR: i64 = UnixMillis::HOUR;

/// Raw span rolled per statement: 30 min of 50 containers at 1 s is 90,000
/// rows, a fraction of a second.
const ROLL_MINUTES_CHUNK_MS: i64 = 30 * MINUTE;
/// Minute span rolled into hours per statement.
const ROLL_HOURS_CHUNK_MS: i64 = 24 * HOUR;

/// Rows per `INSERT` statement of a flush.
pub(crate) const INSERT_CHUNK: usize = 100;

// Far below SQLite's bound-parameter limit (32,766).
const _: () = assert!(INSERT_CHUNK * (2 + homeserver_domain::CONTAINER_METRIC_COUNT) < 32_766);

/// Percentages keep two decimals, like the host's.
const HUNDREDTHS: i64 = 100;
/// Bytes, rates and counts are whole numbers.
const UNITS: i64 = 1;

/// The column and scale of `metric`.
///
/// Adding a metric to the domain breaks this `match` until it gets a line
/// here and a column in a new migration.
pub(crate) const fn column(metric: ContainerMetric) -> Column {
    let (name, scale) = match metric {
        ContainerMetric::CpuPercent => ("cpu_percent", HUNDREDTHS),
        ContainerMetric::MemoryBytes => ("memory_bytes", UNITS),
        ContainerMetric::Pids => ("pids", UNITS),
        ContainerMetric::NetworkRxBytesPerSec => ("network_rx_bytes_per_sec", UNITS),
        ContainerMetric::NetworkTxBytesPerSec => ("network_tx_bytes_per_sec", UNITS),
        ContainerMetric::BlockReadBytesPerSec => ("block_read_bytes_per_sec", UNITS),
        ContainerMetric::BlockWriteBytesPerSec => ("block_write_bytes_per_sec", UNITS),
    };
    Column { name, scale }
}

/// A tier's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    Raw,
    Minute,
    Hour,
}

impl Table {
    pub(crate) const fn of(tier: Tier) -> Self {
        match tier {
            Tier::Raw => Self::Raw,
            Tier::Minute => Self::Minute,
            Tier::Hour => Self::Hour,
        }
    }

    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Raw => "container_history_raw",
            Self::Minute => "container_history_1m",
            Self::Hour => "container_history_1h",
        }
    }

    /// The time part of the key.
    const fn key(self) -> &'static str {
        match self {
            Self::Raw => "ts",
            Self::Minute | Self::Hour => "bucket",
        }
    }

    /// The watermark naming how far this tier was rolled into the next.
    const fn rolled_into(self) -> Option<&'static str> {
        match self {
            Self::Raw => Some("1m"),
            Self::Minute => Some("1h"),
            Self::Hour => None,
        }
    }
}

/// `INSERT OR REPLACE INTO container_history_raw (container, ts, <every
/// column>) VALUES (...), ...` for `rows` rows.
fn insert_sql(rows: usize) -> String {
    let mut cols = String::from("container, ts");
    let mut one = String::from("(?, ?");
    for m in ContainerMetric::ALL {
        let _ = write!(cols, ", {}", column(*m).name);
        one.push_str(", ?");
    }
    one.push(')');
    let values = vec![one; rows].join(", ");
    format!("INSERT OR REPLACE INTO container_history_raw ({cols}) VALUES {values}")
}

/// [`insert_sql`] for a full chunk, built once.
static INSERT_FULL_CHUNK: LazyLock<Arc<str>> = LazyLock::new(|| insert_sql(INSERT_CHUNK).into());

/// The mean of a roll-up column over a group, weighted by the samples behind
/// each row; rows without a value (a rate on a container's first sample)
/// weigh nothing, so they never pull the mean towards zero.
fn weighted_avg(c: &str) -> String {
    format!("sum({c}_avg * n) / sum(CASE WHEN {c}_avg IS NOT NULL THEN n END)")
}

/// Rolls raw rows with `?1 <= ts < ?2` of every container into minutes.
static ROLL_MINUTES: LazyLock<Arc<str>> = LazyLock::new(|| {
    let mut cols = String::from("container, bucket, n");
    let mut sel = String::from("h.container, h.ts - ((h.ts % 60000) + 60000) % 60000 AS minute, count(*)");
    for m in ContainerMetric::ALL {
        let c = column(*m).name;
        let _ = write!(cols, ", {c}_avg, {c}_min, {c}_max");
        let _ = write!(sel, ", avg(h.{c}), min(h.{c}), max(h.{c})");
    }
    format!(
        "INSERT OR REPLACE INTO container_history_1m ({cols}) \
         SELECT {sel} FROM container_keys AS k CROSS JOIN container_history_raw AS h \
         WHERE h.container = k.key AND h.ts >= ?1 AND h.ts < ?2 GROUP BY h.container, minute"
    )
    .into()
});

/// Rolls minute rows with `?1 <= bucket < ?2` of every container into hours.
static ROLL_HOURS: LazyLock<Arc<str>> = LazyLock::new(|| {
    let mut cols = String::from("container, bucket, n");
    let mut sel = String::from("h.container, h.bucket - ((h.bucket % 3600000) + 3600000) % 3600000 AS hour, sum(h.n)");
    for m in ContainerMetric::ALL {
        let c = column(*m).name;
        let _ = write!(cols, ", {c}_avg, {c}_min, {c}_max");
        let _ = write!(sel, ", {}, min(h.{c}_min), max(h.{c}_max)", weighted_avg(&format!("h.{c}")));
    }
    format!(
        "INSERT OR REPLACE INTO container_history_1h ({cols}) \
         SELECT {sel} FROM container_keys AS k CROSS JOIN container_history_1m AS h \
         WHERE h.container = k.key AND h.bucket >= ?1 AND h.bucket < ?2 GROUP BY h.container, hour"
    )
    .into()
});

/// The oldest key `>= ?1` and `< ?2` of `table` over every container.
const fn first_key_sql(table: Table) -> &'static str {
    match table {
        Table::Raw => {
            "SELECT min((SELECT min(ts) FROM container_history_raw \
             WHERE container = k.key AND ts >= ?1 AND ts < ?2)) FROM container_keys AS k"
        }
        Table::Minute => {
            "SELECT min((SELECT min(bucket) FROM container_history_1m \
             WHERE container = k.key AND bucket >= ?1 AND bucket < ?2)) FROM container_keys AS k"
        }
        Table::Hour => {
            "SELECT min((SELECT min(bucket) FROM container_history_1h \
             WHERE container = k.key AND bucket >= ?1 AND bucket < ?2)) FROM container_keys AS k"
        }
    }
}

/// Deletes at most `?2` rows of any container with a time key `< ?1`.
const fn delete_sql(table: Table) -> &'static str {
    match table {
        Table::Raw => {
            "DELETE FROM container_history_raw WHERE (container, ts) IN \
             (SELECT h.container, h.ts FROM container_keys AS k CROSS JOIN container_history_raw AS h \
              WHERE h.container = k.key AND h.ts < ?1 LIMIT ?2)"
        }
        Table::Minute => {
            "DELETE FROM container_history_1m WHERE (container, bucket) IN \
             (SELECT h.container, h.bucket FROM container_keys AS k CROSS JOIN container_history_1m AS h \
              WHERE h.container = k.key AND h.bucket < ?1 LIMIT ?2)"
        }
        Table::Hour => {
            "DELETE FROM container_history_1h WHERE (container, bucket) IN \
             (SELECT h.container, h.bucket FROM container_keys AS k CROSS JOIN container_history_1h AS h \
              WHERE h.container = k.key AND h.bucket < ?1 LIMIT ?2)"
        }
    }
}

/// avg, min and max per metric over a group of `table`'s rows, in storage units.
fn aggregates(table: Table, metrics: &[ContainerMetric]) -> String {
    let mut sql = String::new();
    for m in metrics {
        let c = column(*m).name;
        match table {
            Table::Raw => {
                let _ = write!(sql, ", avg(h.{c}), min(h.{c}), max(h.{c})");
            }
            Table::Minute | Table::Hour => {
                let _ = write!(sql, ", {}, min(h.{c}_min), max(h.{c}_max)", weighted_avg(&format!("h.{c}")));
            }
        }
    }
    sql
}

/// One container's buckets, walking `bucket_numbers` (no sort): `?1` from,
/// `?2` step, `?3` to, `?4` buckets (at most [`BUCKET_NUMBERS`]), `?5` the
/// container's key. One row per non-empty bucket: its index, then avg, min
/// and max per metric.
pub(crate) fn bucket_query(table: Table, metrics: &[ContainerMetric]) -> String {
    let key = table.key();
    format!(
        "SELECT k.b{} FROM bucket_numbers AS k CROSS JOIN {} AS h \
         WHERE k.b < ?4 AND h.container = ?5 AND h.{key} >= ?1 + k.b * ?2 AND h.{key} < min(?1 + (k.b + 1) * ?2, ?3) \
         GROUP BY k.b ORDER BY k.b",
        aggregates(table, metrics),
        table.name()
    )
}

/// [`bucket_query`] for any number of buckets, at the price of a sort; binds
/// `?1` to `?3` and the key as `?5` (`?4` unused).
pub(crate) fn grouped_query(table: Table, metrics: &[ContainerMetric]) -> String {
    let key = table.key();
    format!(
        "SELECT (h.{key} - ?1) / ?2 AS b{} FROM {} AS h \
         WHERE h.container = ?5 AND h.{key} >= ?1 AND h.{key} < ?3 GROUP BY b ORDER BY b",
        aggregates(table, metrics),
        table.name()
    )
}

/// Writes the containers' rows of `samples` in the caller's transaction.
/// Returns the rows written.
pub(crate) async fn save_rows(
    tx: &mut Transaction<'_, Sqlite>,
    samples: &[HistorySample],
) -> Result<u64, RepositoryError> {
    let rows: Vec<(i64, &homeserver_domain::ContainerSample)> =
        samples.iter().flat_map(|s| s.containers.iter().map(move |c| (s.timestamp.as_millis(), c))).collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let keys = keys_for(tx, rows.iter().map(|(_, c)| c.container_id.as_str())).await?;
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql: Arc<str> =
            if chunk.len() == INSERT_CHUNK { Arc::clone(&INSERT_FULL_CHUNK) } else { insert_sql(chunk.len()).into() };
        let mut insert = sqlx::query(AssertSqlSafe(sql));
        for (ts, row) in chunk {
            let key = keys.get(row.container_id.as_str()).copied().ok_or_else(|| {
                RepositoryError::internal(format!("no key for container `{}` after inserting it", row.container_id))
            })?;
            insert = insert.bind(key).bind(*ts);
            for m in ContainerMetric::ALL {
                insert = insert.bind(column(*m).encode(row.get(*m)));
            }
        }
        insert.execute(&mut **tx).await.map_err(ctx("saving container samples"))?;
    }
    Ok(rows.len() as u64)
}

/// The keys of `ids`, inserting the ones not known yet.
async fn keys_for<'a>(
    tx: &mut Transaction<'_, Sqlite>,
    ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<&'a str, i64>, RepositoryError> {
    let mut wanted: Vec<&str> = ids.collect();
    wanted.sort_unstable();
    wanted.dedup();
    let list = serde_json::to_string(&wanted).map_err(RepositoryError::internal)?;
    let known: Vec<(String, i64)> = sqlx::query_as(
        "SELECT container_id, key FROM container_keys WHERE container_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(&list)
    .fetch_all(&mut **tx)
    .await
    .map_err(ctx("reading container history keys"))?;
    let known: HashMap<String, i64> = known.into_iter().collect();
    let mut keys = HashMap::with_capacity(wanted.len());
    for id in wanted {
        let key = match known.get(id) {
            Some(key) => *key,
            None => sqlx::query_scalar("INSERT INTO container_keys (container_id) VALUES (?1) RETURNING key")
                .bind(id)
                .fetch_one(&mut **tx)
                .await
                .map_err(ctx("adding a container history key"))?,
        };
        keys.insert(id, key);
    }
    Ok(keys)
}

impl SqliteStore {
    /// How far `tier` (`1m` or `1h`) has been rolled.
    async fn container_rolled(&self, tier: &'static str) -> Result<Option<i64>, RepositoryError> {
        sqlx::query_scalar("SELECT until FROM container_history_rolled WHERE tier = ?1")
            .bind(tier)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("reading a container roll-up watermark"))
    }

    /// Rolls `from` (raw or minutes) into the next tier for `[start, until)`
    /// in chunks, each with its watermark in one transaction; then moves the
    /// watermark to `until`, since nothing before it is left to roll.
    async fn roll_containers(&self, from: Table, until: i64) -> Result<u64, RepositoryError> {
        let Some(tier) = from.rolled_into() else { return Ok(0) };
        let (statement, chunk) = match from {
            Table::Raw => (&ROLL_MINUTES, ROLL_MINUTES_CHUNK_MS),
            _ => (&ROLL_HOURS, ROLL_HOURS_CHUNK_MS),
        };
        let unit = if from == Table::Raw { MINUTE } else { HOUR };
        let mut start = self.container_rolled(tier).await?.unwrap_or(i64::MIN);
        let mut written = 0;
        while start < until {
            // Jump over spans without rows (nothing ran, homeserver was down).
            let next: Option<i64> = sqlx::query_scalar(first_key_sql(from))
                .bind(start)
                .bind(until)
                .fetch_one(&self.pool)
                .await
                .map_err(ctx("finding container rows to roll up"))?;
            let Some(next) = next else { break };
            let chunk_start = UnixMillis(next).floor_to(unit).as_millis().max(start);
            let chunk_end = chunk_start.saturating_add(chunk).min(until);
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a container roll-up"))?;
            written += sqlx::query(AssertSqlSafe(Arc::clone(statement)))
                .bind(chunk_start)
                .bind(chunk_end)
                .execute(&mut *tx)
                .await
                .map_err(ctx("rolling container history up"))?
                .rows_affected();
            set_rolled(&mut tx, tier, chunk_end).await?;
            tx.commit().await.map_err(ctx("committing a container roll-up"))?;
            start = chunk_end;
            tokio::task::yield_now().await;
        }
        if start < until {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a container roll-up"))?;
            set_rolled(&mut tx, tier, until).await?;
            tx.commit().await.map_err(ctx("committing a container roll-up"))?;
        }
        Ok(written)
    }

    /// Rolls every container's complete minutes before `until`, then its
    /// complete hours (never past the minutes rolled).
    pub(crate) async fn roll_up_containers(&self, until: UnixMillis) -> Result<RollupReport, RepositoryError> {
        let container_minutes = self.roll_containers(Table::Raw, until.floor_to(MINUTE).as_millis()).await?;
        let minutes_rolled = self.container_rolled("1m").await?.unwrap_or(i64::MIN);
        let hours_until = until.as_millis().min(minutes_rolled);
        let container_hours =
            self.roll_containers(Table::Minute, UnixMillis(hours_until).floor_to(HOUR).as_millis()).await?;
        Ok(RollupReport { container_minutes, container_hours, ..RollupReport::default() })
    }

    /// Deletes every container row of `table` with time key `< bound`, in
    /// short batches.
    async fn delete_containers_before(&self, table: Table, bound: i64) -> Result<u64, RepositoryError> {
        let mut deleted = 0;
        loop {
            let n = sqlx::query(delete_sql(table))
                .bind(bound)
                .bind(DELETE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(ctx("pruning container history"))?
                .rows_affected();
            deleted += n;
            if n < DELETE_BATCH as u64 {
                return Ok(deleted);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Prunes every container's tiers to `retention` at `now`: a tier's rows
    /// stay until the next tier holds them; keys no row refers to go.
    pub(crate) async fn prune_containers(
        &self,
        retention: &RetentionPolicy,
        now: UnixMillis,
    ) -> Result<PruneReport, RepositoryError> {
        let minutes_rolled = self.container_rolled("1m").await?.unwrap_or(i64::MIN);
        let raw_bound = retention.cutoff(Tier::Raw, now).as_millis().min(minutes_rolled);
        let container_raw = self.delete_containers_before(Table::Raw, raw_bound).await?;

        let hours_rolled = self.container_rolled("1h").await?.unwrap_or(i64::MIN);
        let minute_bound = retention.cutoff(Tier::Minute, now).as_millis().min(hours_rolled);
        let container_minutes = self.delete_containers_before(Table::Minute, minute_bound).await?;

        let container_hours =
            self.delete_containers_before(Table::Hour, retention.cutoff(Tier::Hour, now).as_millis()).await?;

        if container_raw + container_minutes + container_hours > 0 {
            sqlx::query(
                "DELETE FROM container_keys WHERE \
                 NOT EXISTS (SELECT 1 FROM container_history_raw WHERE container = container_keys.key) \
                 AND NOT EXISTS (SELECT 1 FROM container_history_1m WHERE container = container_keys.key) \
                 AND NOT EXISTS (SELECT 1 FROM container_history_1h WHERE container = container_keys.key)",
            )
            .execute(&self.pool)
            .await
            .map_err(ctx("forgetting containers without history"))?;
        }
        Ok(PruneReport { container_raw, container_minutes, container_hours, ..PruneReport::default() })
    }

    /// One container's series for `plan`.
    pub(crate) async fn query_container_rows(
        &self,
        container_id: &str,
        plan: &BucketPlan,
        metrics: &[ContainerMetric],
    ) -> Result<Vec<Series<ContainerMetric>>, RepositoryError> {
        let mut series: Vec<Series<ContainerMetric>> =
            metrics.iter().map(|m| Series { metric: *m, points: Vec::new() }).collect();
        if plan.step_ms <= 0 {
            return Err(RepositoryError::internal(format!("invalid bucket plan: step {} ms", plan.step_ms)));
        }
        if metrics.is_empty() || plan.from >= plan.to {
            return Ok(series);
        }
        let key: Option<i64> = sqlx::query_scalar("SELECT key FROM container_keys WHERE container_id = ?1")
            .bind(container_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("reading a container history key"))?;
        let Some(key) = key else { return Ok(series) };
        let started = Instant::now();
        let table = Table::of(plan.tier);
        let (from, step, to) = (plan.from.as_millis(), plan.step_ms, plan.to.as_millis());
        let span = i128::from(to) - i128::from(from);
        let buckets = (span + i128::from(step) - 1) / i128::from(step);
        let (sql, buckets) = match i64::try_from(buckets) {
            Ok(b) if b <= BUCKET_NUMBERS => (bucket_query(table, metrics), b),
            _ => (grouped_query(table, metrics), 0),
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(from)
            .bind(step)
            .bind(to)
            .bind(buckets)
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("reading container history"))?;
        for s in &mut series {
            s.points.reserve_exact(rows.len());
        }
        for row in &rows {
            let bucket: i64 = row.try_get(0).map_err(ctx("decoding a container history bucket"))?;
            let t = plan.bucket_start(bucket);
            for (i, s) in series.iter_mut().enumerate() {
                let value = |k: usize| {
                    row.try_get_unchecked::<Option<f64>, _>(1 + 3 * i + k)
                        .map_err(ctx("decoding a container history value"))
                };
                if let (Some(avg), Some(min), Some(max)) = (value(0)?, value(1)?, value(2)?) {
                    let col = column(s.metric);
                    s.points.push(Point { t, avg: col.decode(avg), min: col.decode(min), max: col.decode(max) });
                }
            }
        }
        tracing::debug!(
            points = series.first().map_or(0, |s| s.points.len()),
            elapsed_us = started.elapsed().as_micros() as u64,
            "container history read"
        );
        Ok(series)
    }
}

/// Moves `tier`'s watermark forward to `until` (never back).
async fn set_rolled(tx: &mut Transaction<'_, Sqlite>, tier: &'static str, until: i64) -> Result<(), RepositoryError> {
    sqlx::query(
        "INSERT INTO container_history_rolled (tier, until) VALUES (?1, ?2) \
         ON CONFLICT (tier) DO UPDATE SET until = max(until, excluded.until)",
    )
    .bind(tier)
    .bind(until)
    .execute(&mut **tx)
    .await
    .map_err(ctx("moving a container roll-up watermark"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;
    use homeserver_domain::CONTAINER_METRIC_COUNT;

    /// The highest `?N` of a statement: how many values it binds.
    fn binds(sql: &str) -> usize {
        (1..=9).rev().find(|n| sql.contains(&format!("?{n}"))).unwrap_or(0)
    }

    #[test]
    fn column_names_are_metric_names() {
        for m in ContainerMetric::ALL {
            assert_eq!(column(*m).name, m.name(), "{m}");
        }
        assert_eq!(column(ContainerMetric::CpuPercent).encode(12.345), Some(1235));
        assert_eq!(column(ContainerMetric::NetworkRxBytesPerSec).encode(f64::NAN), None);
    }

    #[test]
    fn insert_binds_every_column_of_every_row() {
        assert_eq!(insert_sql(1).matches('?').count(), 2 + CONTAINER_METRIC_COUNT);
        assert_eq!(INSERT_FULL_CHUNK.matches('?').count(), INSERT_CHUNK * (2 + CONTAINER_METRIC_COUNT));
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(StoreOptions::new(dir.path().join("h.db"))).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn the_migration_creates_the_columns_this_table_names_in_order() {
        let (_dir, store) = store().await;
        let names = |table: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                )))
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        let mut raw = vec!["container".to_owned(), "ts".to_owned()];
        let mut rollup = vec!["container".to_owned(), "bucket".to_owned(), "n".to_owned()];
        for m in ContainerMetric::ALL {
            let c = column(*m).name;
            raw.push(c.to_owned());
            rollup.extend([format!("{c}_avg"), format!("{c}_min"), format!("{c}_max")]);
        }
        assert_eq!(names(Table::Raw.name()).await, raw);
        assert_eq!(names(Table::Minute.name()).await, rollup);
        assert_eq!(names(Table::Hour.name()).await, rollup);
        store.close().await.unwrap();
    }

    fn sample_with(ts: i64, ids: &[&str]) -> HistorySample {
        let rows = ids
            .iter()
            .map(|id| homeserver_domain::ContainerSample {
                container_id: (*id).to_owned(),
                values: [1.0; CONTAINER_METRIC_COUNT],
            })
            .collect();
        HistorySample { timestamp: UnixMillis(ts), values: [1.0; homeserver_domain::METRIC_COUNT], containers: rows }
    }

    async fn count(store: &SqliteStore, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&store.pool).await.unwrap()
    }

    #[tokio::test]
    async fn host_and_container_rows_of_a_flush_commit_together_or_not_at_all() {
        use homeserver_domain::SnapshotRepository as _;
        let (_dir, store) = store().await;
        // Make the store refuse one container's rows, as a full disk would.
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON container_history_raw \
             WHEN NEW.container = (SELECT key FROM container_keys WHERE container_id = 'bad') \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let err = store.save_samples(&[sample_with(1_000, &["ok"]), sample_with(2_000, &["ok", "bad"])]).await;
        assert!(err.is_err());
        assert_eq!(count(&store, "SELECT count(*) FROM history_raw").await, 0, "no host row without its containers");
        assert_eq!(count(&store, "SELECT count(*) FROM container_history_raw").await, 0);
        assert_eq!(count(&store, "SELECT count(*) FROM container_keys").await, 0, "the keys were rolled back too");
        store.save_samples(&[sample_with(1_000, &["ok"])]).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM history_raw").await, 1);
        assert_eq!(count(&store, "SELECT count(*) FROM container_history_raw").await, 1);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn keys_are_reused_per_container_and_dropped_once_no_tier_holds_a_row() {
        use homeserver_domain::SnapshotRepository as _;
        let (_dir, store) = store().await;
        store.save_samples(&[sample_with(60_000, &["a", "b"]), sample_with(61_000, &["b", "a"])]).await.unwrap();
        store.save_samples(&[sample_with(62_000, &["a"])]).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM container_keys").await, 2);
        assert_eq!(count(&store, "SELECT count(*) FROM container_history_raw").await, 5);
        store.roll_up(UnixMillis(3 * HOUR)).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM container_history_1h").await, 2);
        // Everything has aged out of every tier: the keys go with the rows.
        let report =
            store.prune(&RetentionPolicy { raw_ms: 0, minute_ms: 0, hour_ms: 0 }, UnixMillis(10 * HOUR)).await.unwrap();
        assert_eq!((report.container_raw, report.container_minutes, report.container_hours), (5, 2, 2));
        assert_eq!(count(&store, "SELECT count(*) FROM container_keys").await, 0);
        // A container seen again gets a key again.
        store.save_samples(&[sample_with(11 * HOUR, &["a"])]).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM container_keys").await, 1);
        store.close().await.unwrap();
    }

    /// The plan of every statement that reads by time: one primary-key range
    /// per container, never a scan of a history table.
    #[tokio::test]
    async fn every_statement_reads_key_ranges() {
        let (_dir, store) = store().await;
        let plan = |sql: String| {
            let pool = store.pool.clone();
            async move {
                let sql = format!("EXPLAIN QUERY PLAN {sql}");
                let n = binds(&sql);
                let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(AssertSqlSafe(sql));
                for _ in 0..n {
                    q = q.bind(1_i64);
                }
                q.fetch_all(&pool).await.unwrap().into_iter().map(|r| r.3).collect::<Vec<_>>()
            }
        };
        let mut statements: Vec<String> = vec![ROLL_MINUTES.to_string(), ROLL_HOURS.to_string()];
        for t in [Table::Raw, Table::Minute, Table::Hour] {
            statements.push(first_key_sql(t).to_owned());
            statements.push(delete_sql(t).to_owned());
            statements.push(bucket_query(t, ContainerMetric::ALL));
            statements.push(grouped_query(t, ContainerMetric::ALL));
        }
        for sql in statements {
            let details = plan(sql.clone()).await;
            for d in &details {
                assert!(
                    !(d.starts_with("SCAN h") || d.starts_with("SCAN container_history")),
                    "a history table is scanned: {d}\n{sql}\n{details:?}"
                );
            }
            assert!(details.iter().any(|d| d.contains("USING PRIMARY KEY (container=?")), "{sql}\n{details:?}");
        }
        store.close().await.unwrap();
    }
}
