//! The one table that maps each [`Metric`] to its SQL column and storage
//! scale, and the SQL built from it.
//!
//! Every column name that reaches a SQL string comes from [`column`], a
//! closed `match` over the metrics: no name from outside is ever pasted into
//! SQL. Values travel through bind parameters.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use homeserver_domain::Metric;

/// Where and how one metric is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    /// Column name in `history_raw`; the roll-ups add `_avg`, `_min`, `_max`.
    pub(crate) name: &'static str,
    /// Stored integer = round(value × scale).
    pub(crate) scale: i64,
}

/// Largest stored magnitude: 2^48 (256 TiB, or 256 TiB/s), far beyond any
/// real reading. A glitch (a counter that wrapped) is clamped to it, so that
/// the integer `sum()` of a query bucket cannot overflow below 2^15 rows.
pub(crate) const STORED_LIMIT: i64 = 1 << 48;

/// Percentages and load averages keep two decimals.
const HUNDREDTHS: i64 = 100;
/// Bytes, rates and counts are whole numbers.
const UNITS: i64 = 1;

/// The column and scale of `metric`.
///
/// Adding a metric to the domain breaks this `match` until it gets a line
/// here and a column in a new migration.
pub(crate) const fn column(metric: Metric) -> Column {
    let (name, scale) = match metric {
        Metric::CpuUsagePercent => ("cpu_usage_percent", HUNDREDTHS),
        Metric::CpuLoad1 => ("cpu_load1", HUNDREDTHS),
        Metric::CpuLoad5 => ("cpu_load5", HUNDREDTHS),
        Metric::CpuLoad15 => ("cpu_load15", HUNDREDTHS),
        Metric::MemoryUsedBytes => ("memory_used_bytes", UNITS),
        Metric::MemoryAvailableBytes => ("memory_available_bytes", UNITS),
        Metric::MemoryUsagePercent => ("memory_usage_percent", HUNDREDTHS),
        Metric::SwapUsedBytes => ("swap_used_bytes", UNITS),
        Metric::NetworkRxBytesPerSec => ("network_rx_bytes_per_sec", UNITS),
        Metric::NetworkTxBytesPerSec => ("network_tx_bytes_per_sec", UNITS),
        Metric::DiskReadBytesPerSec => ("disk_read_bytes_per_sec", UNITS),
        Metric::DiskWriteBytesPerSec => ("disk_write_bytes_per_sec", UNITS),
        Metric::ProcessCount => ("system_process_count", UNITS),
    };
    Column { name, scale }
}

impl Column {
    /// The stored integer for `value`, within ±[`STORED_LIMIT`]; `None` (SQL
    /// NULL) when it is not finite.
    pub(crate) fn encode(self, value: f64) -> Option<i64> {
        let limit = STORED_LIMIT as f64;
        value.is_finite().then(|| (value * self.scale as f64).round().clamp(-limit, limit) as i64)
    }

    /// The value of a stored number (an integer or a mean of integers).
    pub(crate) fn decode(self, stored: f64) -> f64 {
        stored / self.scale as f64
    }
}

/// Which table a statement reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Table {
    /// `history_raw`, keyed by `ts`.
    Raw,
    /// `history_1m`, keyed by `bucket`.
    Minute,
    /// `history_1h`, keyed by `bucket`.
    Hour,
}

impl Table {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Raw => "history_raw",
            Self::Minute => "history_1m",
            Self::Hour => "history_1h",
        }
    }

    /// The time key: the rowid of the table.
    pub(crate) const fn key(self) -> &'static str {
        match self {
            Self::Raw => "ts",
            Self::Minute | Self::Hour => "bucket",
        }
    }
}

/// `INSERT OR REPLACE INTO history_raw (ts, <every column>) VALUES (?, ...)`.
pub(crate) static INSERT_RAW: LazyLock<Arc<str>> = LazyLock::new(|| {
    let mut cols = String::from("ts");
    let mut params = String::from("?");
    for m in Metric::ALL {
        let _ = write!(cols, ", {}", column(*m).name);
        params.push_str(", ?");
    }
    format!("INSERT OR REPLACE INTO history_raw ({cols}) VALUES ({params})").into()
});

/// Rolls raw rows with `?1 <= ts < ?2` into `history_1m`.
///
/// The minute start is floored the Euclidean way, so timestamps before 1970
/// land in the right minute too (SQLite's `%` truncates towards zero).
pub(crate) static ROLL_MINUTES: LazyLock<Arc<str>> = LazyLock::new(|| {
    let mut cols = String::from("bucket, n");
    let mut sel = String::from("ts - ((ts % 60000) + 60000) % 60000 AS minute, count(*)");
    for m in Metric::ALL {
        let c = column(*m).name;
        let _ = write!(cols, ", {c}_avg, {c}_min, {c}_max");
        let _ = write!(sel, ", avg({c}), min({c}), max({c})");
    }
    format!(
        "INSERT OR REPLACE INTO history_1m ({cols}) \
         SELECT {sel} FROM history_raw WHERE ts >= ?1 AND ts < ?2 GROUP BY minute"
    )
    .into()
});

/// Rolls minute rows with `?1 <= bucket < ?2` into `history_1h`, the mean
/// weighted by the samples behind each minute.
pub(crate) static ROLL_HOURS: LazyLock<Arc<str>> = LazyLock::new(|| {
    let mut cols = String::from("bucket, n");
    let mut sel = String::from("bucket - ((bucket % 3600000) + 3600000) % 3600000 AS hour, sum(n)");
    for m in Metric::ALL {
        let c = column(*m).name;
        let _ = write!(cols, ", {c}_avg, {c}_min, {c}_max");
        let _ = write!(sel, ", {}, min({c}_min), max({c}_max)", weighted_avg(c));
    }
    format!(
        "INSERT OR REPLACE INTO history_1h ({cols}) \
         SELECT {sel} FROM history_1m WHERE bucket >= ?1 AND bucket < ?2 GROUP BY hour"
    )
    .into()
});

/// The mean of a roll-up column over a group, weighted by the samples behind
/// each row: `sum(avg * n) / sum(n)` (SQLite computes the shared `sum(n)`
/// once per group).
///
/// A row whose metric had no finite value in any of its samples (NULL avg)
/// still counts its `n` in the denominator, which pulls such a group's mean
/// towards zero. The sources never report non-finite values, so this stays
/// theoretical; excluding those rows (`sum(CASE WHEN avg IS NOT NULL THEN n
/// END)`) cost 14% of a 7-day query.
fn weighted_avg(c: &str) -> String {
    format!("sum({c}_avg * n) / sum(n)")
}

/// Rows of the `bucket_numbers` table (0..16383): plans with more buckets
/// fall back to [`grouped_query`].
pub(crate) const BUCKET_NUMBERS: i64 = 16_384;

/// The aggregates of `metrics` over a group of rows of `table`, one column
/// each: avg, min and max per metric, in storage units.
fn aggregates(table: Table, metrics: &[Metric]) -> String {
    let mut sql = String::new();
    for m in metrics {
        let c = column(*m).name;
        match table {
            Table::Raw => {
                let _ = write!(sql, ", avg({c}), min({c}), max({c})");
            }
            Table::Minute | Table::Hour => {
                let _ = write!(sql, ", {}, min({c}_min), max({c}_max)", weighted_avg(c));
            }
        }
    }
    sql
}

/// Most metrics a query asks for that are still answered packed
/// ([`packed_bucket_query`]): beyond, building and parsing the text costs
/// more than the per-row hand-over it saves.
pub(crate) const PACKED_MAX_METRICS: usize = 2;

/// The loop over the buckets shared by [`bucket_query`] and
/// [`packed_bucket_query`]: `?1` = from, `?2` = step, `?3` = to, `?4` =
/// number of buckets (at most [`BUCKET_NUMBERS`]).
///
/// The bucket numbers drive the loop (`CROSS JOIN` keeps them outside) and
/// each bucket's rows are a key range of the tier, so rows arrive grouped and
/// ordered: no sorting, unlike [`grouped_query`]. Buckets without rows are
/// left out by the join.
fn bucket_walk(table: Table) -> String {
    let key = table.key();
    format!(
        "FROM bucket_numbers AS k CROSS JOIN {} AS h \
         WHERE k.b < ?4 AND h.{key} >= ?1 + k.b * ?2 AND h.{key} < min(?1 + (k.b + 1) * ?2, ?3) \
         GROUP BY k.b ORDER BY k.b",
        table.name()
    )
}

/// One statement answering a history query over `table` for `metrics` (see
/// [`bucket_walk`] for the binds). One row per non-empty bucket: its index,
/// then avg, min and max per metric in storage units (REAL avg, INTEGER min
/// and max, NULL where the metric had no value).
pub(crate) fn bucket_query(table: Table, metrics: &[Metric]) -> String {
    format!("SELECT k.b{} {}", aggregates(table, metrics), bucket_walk(table))
}

/// [`bucket_query`] packed into **one row** holding one text (NULL when no
/// bucket has rows): a line per non-empty bucket, `;`-separated, of
/// `,`-separated fields: the bucket index, then per metric
/// - raw: `count`, `sum`, `min`, `max` (integers; the mean is `sum / count`,
///   computed exactly as SQLite's `avg()` does);
/// - roll-ups: the weighted mean (a REAL through `quote()`, which writes
///   enough digits to read back the same double), `min`, `max`.
///
/// A value the metric never had is `NULL`. One row instead of one per
/// bucket spares sqlx a hand-over between its SQLite thread and the runtime
/// per bucket: a third to a half of a 2,000-bucket query of two metrics on a
/// busy machine. With many metrics the text costs more than it saves (see
/// [`PACKED_MAX_METRICS`]).
pub(crate) fn packed_bucket_query(table: Table, metrics: &[Metric]) -> String {
    let mut line = String::from("k.b");
    for m in metrics {
        let c = column(*m).name;
        match table {
            Table::Raw => {
                let _ = write!(
                    line,
                    " || ',' || count({c}) || ',' || quote(sum({c})) || ',' || quote(min({c})) || ',' || quote(max({c}))"
                );
            }
            Table::Minute | Table::Hour => {
                let _ = write!(
                    line,
                    " || ',' || quote({}) || ',' || quote(min({c}_min)) || ',' || quote(max({c}_max))",
                    weighted_avg(c)
                );
            }
        }
    }
    format!("SELECT group_concat(line, ';') FROM (SELECT {line} AS line {})", bucket_walk(table))
}

/// [`bucket_query`] for any number of buckets, at the price of a sort:
/// `SELECT ({key} - ?1) / ?2 AS b, ... GROUP BY b`, binding only `?1` to `?3`.
/// One row per non-empty bucket: its index, then avg, min and max per metric
/// (REAL avg, INTEGER min and max, NULL where the metric had no value).
pub(crate) fn grouped_query(table: Table, metrics: &[Metric]) -> String {
    let key = table.key();
    format!(
        "SELECT ({key} - ?1) / ?2 AS b{} FROM {} WHERE {key} >= ?1 AND {key} < ?3 \
         GROUP BY b ORDER BY b",
        aggregates(table, metrics),
        table.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use homeserver_domain::METRIC_COUNT;

    #[test]
    fn column_names_are_metric_names_with_underscores() {
        for m in Metric::ALL {
            assert_eq!(column(*m).name, m.name().replace('.', "_"), "{m}");
        }
    }

    #[test]
    fn percent_and_load_keep_two_decimals() {
        let c = column(Metric::CpuUsagePercent);
        assert_eq!(c.encode(12.34), Some(1234));
        assert_eq!(c.decode(1234.0), 12.34);
        assert_eq!(column(Metric::CpuLoad1).encode(0.005), Some(1));
        assert_eq!(column(Metric::MemoryUsedBytes).encode(4_294_967_296.4), Some(4_294_967_296));
        assert_eq!(c.encode(f64::NAN), None);
        assert_eq!(c.encode(f64::INFINITY), None);
        assert_eq!(column(Metric::NetworkRxBytesPerSec).encode(1e300), Some(STORED_LIMIT));
        assert_eq!(column(Metric::NetworkRxBytesPerSec).encode(-1e300), Some(-STORED_LIMIT));
    }

    #[test]
    fn bucket_query_reads_only_the_requested_columns() {
        let walk = "FROM bucket_numbers AS k CROSS JOIN history_raw AS h \
                    WHERE k.b < ?4 AND h.ts >= ?1 + k.b * ?2 AND h.ts < min(?1 + (k.b + 1) * ?2, ?3) \
                    GROUP BY k.b ORDER BY k.b";
        assert_eq!(
            bucket_query(Table::Raw, &[Metric::CpuLoad5]),
            format!("SELECT k.b, avg(cpu_load5), min(cpu_load5), max(cpu_load5) {walk}")
        );
        assert_eq!(
            packed_bucket_query(Table::Raw, &[Metric::CpuLoad5]),
            format!(
                "SELECT group_concat(line, ';') FROM (SELECT k.b || ',' || count(cpu_load5) || ',' || \
                 quote(sum(cpu_load5)) || ',' || quote(min(cpu_load5)) || ',' || quote(max(cpu_load5)) AS line {walk})"
            )
        );
        let sql = bucket_query(Table::Minute, &[Metric::CpuLoad5]);
        assert!(sql.contains("CROSS JOIN history_1m AS h WHERE k.b < ?4 AND h.bucket >= ?1"), "{sql}");
        assert!(sql.contains("sum(cpu_load5_avg * n) / sum(n)"), "{sql}");
        assert!(!sql.contains("cpu_usage"), "{sql}");
        let sql = packed_bucket_query(Table::Hour, &[Metric::CpuLoad5]);
        assert!(sql.contains("quote(sum(cpu_load5_avg * n) / sum(n))"), "{sql}");
        let sql = grouped_query(Table::Hour, &[Metric::CpuLoad5]);
        assert!(sql.starts_with("SELECT (bucket - ?1) / ?2 AS b, sum(cpu_load5_avg * n)"), "{sql}");
        assert!(sql.contains("FROM history_1h WHERE bucket >= ?1 AND bucket < ?3"), "{sql}");
    }

    #[test]
    fn insert_binds_every_column() {
        assert_eq!(INSERT_RAW.matches('?').count(), 1 + METRIC_COUNT);
    }

    #[tokio::test]
    async fn the_migrations_create_the_columns_this_table_names_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(crate::StoreOptions::new(dir.path().join("h.db"))).await.unwrap();
        let names = |table: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                )))
                .fetch_all(&pool)
                .await
                .unwrap()
            }
        };
        let mut raw = vec!["ts".to_owned()];
        let mut rollup = vec!["bucket".to_owned(), "n".to_owned()];
        for m in Metric::ALL {
            let c = column(*m).name;
            raw.push(c.to_owned());
            rollup.extend([format!("{c}_avg"), format!("{c}_min"), format!("{c}_max")]);
        }
        assert_eq!(names(Table::Raw.name()).await, raw);
        assert_eq!(names(Table::Minute.name()).await, rollup);
        assert_eq!(names(Table::Hour.name()).await, rollup);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn bucket_queries_walk_the_keys_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::SqliteStore::open(crate::StoreOptions::new(dir.path().join("h.db"))).await.unwrap();
        for (table, packed) in
            [Table::Raw, Table::Minute, Table::Hour].into_iter().flat_map(|t| [(t, false), (t, true)])
        {
            let query = if packed { packed_bucket_query(table, Metric::ALL) } else { bucket_query(table, Metric::ALL) };
            let sql = format!("EXPLAIN QUERY PLAN {query}");
            let details: Vec<String> = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(sql))
                .bind(0_i64)
                .bind(60_000_i64)
                .bind(3_600_000_i64)
                .bind(60_i64)
                .fetch_all(&store.pool)
                .await
                .unwrap()
                .into_iter()
                .map(|row| row.3)
                .collect();
            assert!(details.iter().all(|d| !d.contains("TEMP B-TREE")), "{table:?}: {details:?}");
            assert!(
                details.iter().any(|d| d.starts_with("SEARCH h USING INTEGER PRIMARY KEY")),
                "{table:?}: {details:?}"
            );
        }
        store.close().await.unwrap();
    }
}
