-- Per-container history, in the same three tiers as the host's (0001).
--
-- Storage units are the host history's: every metric an INTEGER, percent
-- ×100 (`cpu_percent` 12.34 is 1234), bytes, bytes per second and counts as
-- whole numbers; NULL where the sample had no value (a rate on a
-- container's first sample or after its counters were reset). The Rust
-- table in `crates/homeserver-sqlite/src/container_history.rs` maps each
-- metric to its column and scale and must list the columns in this order;
-- a test checks that it matches this schema.
--
-- Rows are keyed by (container, time). `container` is a small integer
-- standing for homeserver's stable container id (`container_keys`), so the
-- 36-character UUID is stored once, not in every row; the tables are
-- WITHOUT ROWID, their primary key is the b-tree, so one container's range
-- is read in key order with no extra index.
--
-- History outlives the container: deleting a container touches none of
-- these rows; pruning removes them by age like the host's, and drops a
-- key once no tier holds a row of it.

CREATE TABLE container_keys (
    key INTEGER PRIMARY KEY NOT NULL,
    container_id TEXT NOT NULL UNIQUE    -- homeserver's container id (UUID)
) STRICT;

-- One row per container and sample.
CREATE TABLE container_history_raw (
    container INTEGER NOT NULL REFERENCES container_keys (key),
    ts INTEGER NOT NULL,                 -- Unix ms, the snapshot's time
    cpu_percent INTEGER,
    memory_bytes INTEGER,
    pids INTEGER,
    network_rx_bytes_per_sec INTEGER,
    network_tx_bytes_per_sec INTEGER,
    block_read_bytes_per_sec INTEGER,
    block_write_bytes_per_sec INTEGER,
    PRIMARY KEY (container, ts)
) STRICT, WITHOUT ROWID;

-- One row per container and minute: bucket = minute start, n = samples.
CREATE TABLE container_history_1m (
    container INTEGER NOT NULL REFERENCES container_keys (key),
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    cpu_percent_avg REAL,
    cpu_percent_min INTEGER,
    cpu_percent_max INTEGER,
    memory_bytes_avg REAL,
    memory_bytes_min INTEGER,
    memory_bytes_max INTEGER,
    pids_avg REAL,
    pids_min INTEGER,
    pids_max INTEGER,
    network_rx_bytes_per_sec_avg REAL,
    network_rx_bytes_per_sec_min INTEGER,
    network_rx_bytes_per_sec_max INTEGER,
    network_tx_bytes_per_sec_avg REAL,
    network_tx_bytes_per_sec_min INTEGER,
    network_tx_bytes_per_sec_max INTEGER,
    block_read_bytes_per_sec_avg REAL,
    block_read_bytes_per_sec_min INTEGER,
    block_read_bytes_per_sec_max INTEGER,
    block_write_bytes_per_sec_avg REAL,
    block_write_bytes_per_sec_min INTEGER,
    block_write_bytes_per_sec_max INTEGER,
    PRIMARY KEY (container, bucket)
) STRICT, WITHOUT ROWID;

-- One row per container and hour: bucket = hour start.
CREATE TABLE container_history_1h (
    container INTEGER NOT NULL REFERENCES container_keys (key),
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    cpu_percent_avg REAL,
    cpu_percent_min INTEGER,
    cpu_percent_max INTEGER,
    memory_bytes_avg REAL,
    memory_bytes_min INTEGER,
    memory_bytes_max INTEGER,
    pids_avg REAL,
    pids_min INTEGER,
    pids_max INTEGER,
    network_rx_bytes_per_sec_avg REAL,
    network_rx_bytes_per_sec_min INTEGER,
    network_rx_bytes_per_sec_max INTEGER,
    network_tx_bytes_per_sec_avg REAL,
    network_tx_bytes_per_sec_min INTEGER,
    network_tx_bytes_per_sec_max INTEGER,
    block_read_bytes_per_sec_avg REAL,
    block_read_bytes_per_sec_min INTEGER,
    block_read_bytes_per_sec_max INTEGER,
    block_write_bytes_per_sec_avg REAL,
    block_write_bytes_per_sec_min INTEGER,
    block_write_bytes_per_sec_max INTEGER,
    PRIMARY KEY (container, bucket)
) STRICT, WITHOUT ROWID;

-- How far each roll-up tier reaches: every row of the finer tier before
-- `until` has been rolled into `tier` ('1m': raw rows into minutes, '1h':
-- minute rows into hours). One roll-up pass covers every container, so one
-- watermark per tier serves them all; pruning never deletes a finer row at
-- or after it ("pruned only once rolled up").
CREATE TABLE container_history_rolled (
    tier TEXT PRIMARY KEY NOT NULL CHECK (tier IN ('1m', '1h')),
    until INTEGER NOT NULL
) STRICT;
