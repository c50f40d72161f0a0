-- History of the host metrics, in three tiers.
--
-- Storage units: every metric is stored as an INTEGER in a "storage unit":
-- percentages and load averages ×100 (12.34 % is stored as 1234), bytes,
-- bytes per second and counts rounded to whole numbers. Small integers take
-- 1 to 6 bytes in SQLite's record format where a REAL always takes 8, which
-- keeps one day of 1 s samples well under 10 MiB. NULL means the sampler
-- had no finite value. The Rust table in `crates/homeserver-sqlite/src/columns.rs`
-- maps each metric to its column and scale and must list the columns in
-- this order; a test checks that it matches this schema.
--
-- The roll-up tables keep the same storage units: `<col>_avg` is the REAL
-- mean in storage units, `<col>_min` / `<col>_max` the INTEGER extremes, and
-- `n` the number of raw samples behind the row (the weight of the mean when
-- minutes are merged into hours or query buckets).
--
-- Timestamps are Unix milliseconds (UTC). Each table's key is its rowid, so
-- range scans by time read the table b-tree directly, with no extra index.

-- Marks the file as a homeserver database ("HMSV"); `SqliteStore::open`
-- refuses SQLite files that carry another application's id.
PRAGMA application_id = 1213027158;

-- One row per sample.
CREATE TABLE history_raw (
    ts INTEGER PRIMARY KEY NOT NULL,
    cpu_usage_percent INTEGER,
    cpu_load1 INTEGER,
    cpu_load5 INTEGER,
    cpu_load15 INTEGER,
    memory_used_bytes INTEGER,
    memory_available_bytes INTEGER,
    memory_usage_percent INTEGER,
    swap_used_bytes INTEGER,
    network_rx_bytes_per_sec INTEGER,
    network_tx_bytes_per_sec INTEGER,
    disk_read_bytes_per_sec INTEGER,
    disk_write_bytes_per_sec INTEGER,
    system_process_count INTEGER
) STRICT;

-- One row per minute: bucket = minute start.
CREATE TABLE history_1m (
    bucket INTEGER PRIMARY KEY NOT NULL,
    n INTEGER NOT NULL,
    cpu_usage_percent_avg REAL,
    cpu_usage_percent_min INTEGER,
    cpu_usage_percent_max INTEGER,
    cpu_load1_avg REAL,
    cpu_load1_min INTEGER,
    cpu_load1_max INTEGER,
    cpu_load5_avg REAL,
    cpu_load5_min INTEGER,
    cpu_load5_max INTEGER,
    cpu_load15_avg REAL,
    cpu_load15_min INTEGER,
    cpu_load15_max INTEGER,
    memory_used_bytes_avg REAL,
    memory_used_bytes_min INTEGER,
    memory_used_bytes_max INTEGER,
    memory_available_bytes_avg REAL,
    memory_available_bytes_min INTEGER,
    memory_available_bytes_max INTEGER,
    memory_usage_percent_avg REAL,
    memory_usage_percent_min INTEGER,
    memory_usage_percent_max INTEGER,
    swap_used_bytes_avg REAL,
    swap_used_bytes_min INTEGER,
    swap_used_bytes_max INTEGER,
    network_rx_bytes_per_sec_avg REAL,
    network_rx_bytes_per_sec_min INTEGER,
    network_rx_bytes_per_sec_max INTEGER,
    network_tx_bytes_per_sec_avg REAL,
    network_tx_bytes_per_sec_min INTEGER,
    network_tx_bytes_per_sec_max INTEGER,
    disk_read_bytes_per_sec_avg REAL,
    disk_read_bytes_per_sec_min INTEGER,
    disk_read_bytes_per_sec_max INTEGER,
    disk_write_bytes_per_sec_avg REAL,
    disk_write_bytes_per_sec_min INTEGER,
    disk_write_bytes_per_sec_max INTEGER,
    system_process_count_avg REAL,
    system_process_count_min INTEGER,
    system_process_count_max INTEGER
) STRICT;

-- One row per hour: bucket = hour start.
CREATE TABLE history_1h (
    bucket INTEGER PRIMARY KEY NOT NULL,
    n INTEGER NOT NULL,
    cpu_usage_percent_avg REAL,
    cpu_usage_percent_min INTEGER,
    cpu_usage_percent_max INTEGER,
    cpu_load1_avg REAL,
    cpu_load1_min INTEGER,
    cpu_load1_max INTEGER,
    cpu_load5_avg REAL,
    cpu_load5_min INTEGER,
    cpu_load5_max INTEGER,
    cpu_load15_avg REAL,
    cpu_load15_min INTEGER,
    cpu_load15_max INTEGER,
    memory_used_bytes_avg REAL,
    memory_used_bytes_min INTEGER,
    memory_used_bytes_max INTEGER,
    memory_available_bytes_avg REAL,
    memory_available_bytes_min INTEGER,
    memory_available_bytes_max INTEGER,
    memory_usage_percent_avg REAL,
    memory_usage_percent_min INTEGER,
    memory_usage_percent_max INTEGER,
    swap_used_bytes_avg REAL,
    swap_used_bytes_min INTEGER,
    swap_used_bytes_max INTEGER,
    network_rx_bytes_per_sec_avg REAL,
    network_rx_bytes_per_sec_min INTEGER,
    network_rx_bytes_per_sec_max INTEGER,
    network_tx_bytes_per_sec_avg REAL,
    network_tx_bytes_per_sec_min INTEGER,
    network_tx_bytes_per_sec_max INTEGER,
    disk_read_bytes_per_sec_avg REAL,
    disk_read_bytes_per_sec_min INTEGER,
    disk_read_bytes_per_sec_max INTEGER,
    disk_write_bytes_per_sec_avg REAL,
    disk_write_bytes_per_sec_min INTEGER,
    disk_write_bytes_per_sec_max INTEGER,
    system_process_count_avg REAL,
    system_process_count_min INTEGER,
    system_process_count_max INTEGER
) STRICT;

-- The numbers 0..16383, one per possible query bucket. A history query joins
-- them with the tier (`bucket_numbers CROSS JOIN history_1m ON key in bucket
-- b`), so SQLite aggregates each bucket while walking both tables in key
-- order: `GROUP BY b` then needs no temporary B-tree, which is about half
-- the cost of a `GROUP BY (ts - from) / step` over the same rows.
CREATE TABLE bucket_numbers (
    b INTEGER PRIMARY KEY NOT NULL
) STRICT;

INSERT INTO bucket_numbers (b)
WITH RECURSIVE k(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM k WHERE b < 16383)
SELECT b FROM k;
