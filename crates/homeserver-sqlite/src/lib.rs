//! # homeserver-sqlite
//!
//! The SQLite adapter of homeserver: [`SqliteStore`] implements the domain's
//! storage ports over one connection pool:
//! [`SnapshotRepository`](homeserver_domain::SnapshotRepository) (history),
//! [`TokenRepository`](homeserver_domain::TokenRepository) and
//! [`AuditRepository`](homeserver_domain::AuditRepository),
//! [`ContainerRepository`](homeserver_domain::ContainerRepository) and
//! [`OperationRepository`](homeserver_domain::OperationRepository),
//! [`DeviceRepository`](homeserver_domain::DeviceRepository) and
//! [`ProfileRepository`](homeserver_domain::ProfileRepository).
//!
//! ## What this crate owns
//! - **All SQL** of the service, written as runtime `sqlx::query` strings
//!   (no compile-time macros, so no `DATABASE_URL` or `.sqlx/` is needed to
//!   build). Metric column names come from one closed table in Rust; no name
//!   from outside ever reaches a SQL string.
//! - **The rows**: how each domain type is laid out in tables, including the
//!   integer storage scales of the history (percent and load ×100, bytes,
//!   rates and counts as whole numbers).
//! - **The migrations**, embedded from the workspace's top-level
//!   `migrations/` folder and applied by [`SqliteStore::open`] and
//!   [`SqliteStore::migrate`].
//! - Opening the file safely (WAL, `synchronous = NORMAL`, busy timeout, a
//!   small page cache) and turning driver errors into the domain's
//!   [`RepositoryError`](homeserver_domain::RepositoryError) or a
//!   [`StoreError`] that names the file.
//!
//! ## What it must not know
//! No HTTP (axum), Docker (bollard), sysinfo, configuration files or CLI
//! parsing. It takes domain types and [`StoreOptions`], and returns domain
//! types; the choice of tier for a query is the domain's
//! ([`BucketPlan`](homeserver_domain::BucketPlan)), this crate only reads the
//! tier it is told.
//!
//! ## Storage at a glance
//! | table | key | one row per | columns |
//! |---|---|---|---|
//! | `history_raw` | `ts` (Unix ms) | sample | one INTEGER per metric, scaled |
//! | `history_1m` | `bucket` (minute start) | minute | `n`, `<metric>_avg` REAL, `_min`/`_max` INTEGER |
//! | `history_1h` | `bucket` (hour start) | hour | same as `history_1m` |
//! | `bucket_numbers` | `b` | 0..16383 | none: drives the bucket loop of queries |
//! | `container_keys` | `key` | container with history | `container_id` (UUID), stored once |
//! | `container_history_raw` | (`container`, `ts`) | container and sample | one INTEGER per container metric, scaled |
//! | `container_history_1m`, `_1h` | (`container`, `bucket`) | container and minute / hour | as `history_1m` |
//! | `container_history_rolled` | `tier` | roll-up tier | `until`: the containers' roll-up watermark |
//! | `api_tokens`, `audit_log` | `id` | token / mutating request | token hash (never the secret), scopes |
//! | `containers`, `operations` | `id` | container record / operation | `profiles`, `config`, lists as JSON text |
//! | `devices` | `id` | device ever seen | facts, user fields, `labels`/`attributes` JSON, `revision` |
//! | `profiles` | `name` | profile | `config` JSON, `is_default` (unique when 1), `revision` |
//!
//! Roll-up values keep the raw tier's storage units; a query divides by the
//! scale. NULL stands for a value that was not finite: raw and minute
//! aggregates skip it (roll-up means are weighted by `n`, see `columns.rs`).
//! One day of 1 s samples takes about 5.3 MiB, roll-ups included (see the
//! `history` benchmark); each running container adds about 3.2 MiB a day
//! (the `container_history` benchmark). Container rows are saved in the same
//! transaction as the host's samples of a flush.
//!
//! ## Concurrent writers
//! Devices and profiles carry a `revision`, their ETag. A guarded write is
//! one conditional statement (`UPDATE … WHERE id = ? AND revision = ?`;
//! zero rows means `Stale`, or `NotFound` when a follow-up read finds
//! nothing). Every other read-modify-write (a device scan, a profile
//! insert, rename, activation or delete) runs in one `BEGIN IMMEDIATE`
//! transaction: it takes the write lock before reading, so nothing changes
//! between its read and its write, and it never has to upgrade a read lock,
//! which in WAL mode fails with `SQLITE_BUSY_SNAPSHOT` whatever the busy
//! timeout. Renaming a profile rewrites the `profiles` arrays of the
//! container records in the same transaction (`json_each`); a partial
//! unique index keeps at most one default profile whatever the code does.
//!
//! WAL is on with SQLite's automatic checkpoint (every 1000 WAL pages, run by
//! the committing connection in PASSIVE mode, so it never waits for readers
//! and never blocks the sampler's flush); a prune that removed rows runs one
//! more PASSIVE checkpoint, and [`SqliteStore::close`] a TRUNCATE one.
//!
//! ```no_run
//! use homeserver_domain::{BucketPlan, Metric, SnapshotRepository, Tier, UnixMillis};
//! use homeserver_sqlite::{SqliteStore, StoreOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open(StoreOptions::new("./data/homeserver.db")).await?;
//! let plan = BucketPlan { tier: Tier::Raw, from: UnixMillis(0), to: UnixMillis(60_000), step_ms: 10_000 };
//! let series = store.query(&plan, &[Metric::CpuUsagePercent]).await?;
//! # drop(series);
//! store.close().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod access;
mod columns;
mod container_history;
mod containers;
mod devices;
mod error;
mod history;
mod profiles;
mod rows;
mod store;

pub use store::{MigrationReport, SqliteStore, StoreError, StoreOptions};
