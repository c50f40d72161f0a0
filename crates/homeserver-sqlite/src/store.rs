//! Opening, migrating, checking and closing the database.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, SqliteConnection};

use crate::error::{code, sqlite_code};

/// The schema, embedded at compile time from the workspace's `migrations/`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// `PRAGMA application_id` of a homeserver database: "HMSV" in ASCII.
/// Set by the first migration.
pub(crate) const APPLICATION_ID: u32 = u32::from_be_bytes(*b"HMSV");

/// Where the database lives and how it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The database file; its folder is created if missing.
    pub path: PathBuf,
    /// Most connections held at once (default 2: the history writer and one
    /// reader). SQLite admits one writer at a time whatever this says.
    pub max_connections: u32,
    /// How long a statement waits for another connection's write lock before
    /// failing with "database is locked" (default 5 s).
    pub busy_timeout: Duration,
    /// Page cache per connection in KiB (default 2000, SQLite's own default):
    /// at most ~4 MB of RSS with two connections. Pages beyond it are read
    /// again from the OS page cache (a `pread` each), which costs about 10%
    /// of a 7-day query.
    pub cache_size_kib: u32,
}

impl StoreOptions {
    /// The default location, relative to the working directory.
    pub const DEFAULT_PATH: &'static str = "./data/homeserver.db";

    /// Default options for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), max_connections: 2, busy_timeout: Duration::from_secs(5), cache_size_kib: 2000 }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self::new(Self::DEFAULT_PATH)
    }
}

/// Why the database could not be opened, migrated, checked or closed.
///
/// Every message names the database file. Causes are part of the message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The folder of the database could not be created.
    #[error("cannot create database {}: cannot create its folder {}: {cause}", .path.display(), .folder.display())]
    CreateFolder {
        /// The database file.
        path: PathBuf,
        /// The folder that could not be created.
        folder: PathBuf,
        /// What the OS said.
        cause: std::io::Error,
    },
    /// The file could not be created, opened or written.
    #[error("cannot create or open database {}: {reason}", .path.display())]
    CannotOpen {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The file exists but is not a homeserver database, or is damaged. It
    /// was left untouched.
    #[error("{} is not a homeserver database or is corrupt: {reason}", .path.display())]
    NotADatabase {
        /// The database file.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The database was migrated by a newer homeserver than this one.
    #[error(
        "database {} was migrated by a newer homeserver: migration {version} is unknown to this version",
        .path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The first applied migration this build does not know.
        version: i64,
    },
    /// A migration failed; SQLite rolled it back.
    #[error("cannot migrate database {}: {cause}", .path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// What the migrator said.
        cause: sqlx::migrate::MigrateError,
    },
    /// A statement of the store's own housekeeping failed.
    #[error("database {}: {context}: {cause}", .path.display())]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        context: &'static str,
        /// What sqlx said.
        cause: sqlx::Error,
    },
}

/// What [`SqliteStore::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this call (0 when the schema was current).
    pub applied: usize,
    /// The newest applied migration's version afterwards.
    pub version: i64,
}

/// The SQLite store: every repository of the service (history, tokens and
/// audit, containers and operations, devices, profiles) over one connection
/// pool.
///
/// Cloning is cheap and shares the pool; [`SqliteStore::close`] on any clone
/// closes it for all.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if missing) the database and brings its schema up to
    /// date.
    ///
    /// The connections use WAL with `synchronous = NORMAL` (a power cut may
    /// lose the last commits but never corrupts the file), foreign keys on,
    /// the busy timeout and page cache of `options`, no memory map. SQLite's
    /// automatic checkpoint (every 1000 WAL pages) stays on: it runs passively
    /// in the committing connection and never blocks a writer.
    ///
    /// An existing file is never deleted, truncated or replaced: a file that
    /// is not a SQLite database, or is another application's, is refused with
    /// [`StoreError::NotADatabase`] before anything writes to it.
    #[tracing::instrument(name = "sqlite.open", skip_all, fields(path = %options.path.display()))]
    pub async fn open(options: StoreOptions) -> Result<Self, StoreError> {
        let (store, report) = Self::open_and_migrate(options).await?;
        tracing::debug!(applied = report.applied, version = report.version, "database open");
        Ok(store)
    }

    /// Opens the database, applies pending migrations and closes it again:
    /// what `homeserver migrate` does.
    pub async fn migrate(options: StoreOptions) -> Result<MigrationReport, StoreError> {
        let (store, report) = Self::open_and_migrate(options).await?;
        store.close().await?;
        Ok(report)
    }

    async fn open_and_migrate(options: StoreOptions) -> Result<(Self, MigrationReport), StoreError> {
        let path = options.path.clone();
        let existing = inspect(&path).await?;
        if existing == Existing::Unmarked {
            // A SQLite file without our mark: either ours from before its first
            // checkpoint, or another application's. Look without writing.
            probe(&path, options.busy_timeout).await?;
        }

        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .pragma("cache_size", format!("-{}", options.cache_size_kib))
            .pragma("mmap_size", "0")
            .statement_cache_capacity(32);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.busy_timeout.saturating_mul(2).max(Duration::from_secs(1)))
            .connect_with(connect)
            .await
            .map_err(|e| open_error(&path, e))?;

        let store = Self { pool, path };
        match store.run_migrations().await {
            Ok(report) => Ok((store, report)),
            Err(e) => {
                store.pool.close().await;
                Err(e)
            }
        }
    }

    async fn run_migrations(&self) -> Result<MigrationReport, StoreError> {
        let before = self.applied_migrations().await?;
        MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => {
                StoreError::NewerSchema { path: self.path.clone(), version }
            }
            sqlx::migrate::MigrateError::Execute(e) | sqlx::migrate::MigrateError::ExecuteMigration(e, _)
                if matches!(sqlite_code(&e), Some(code::NOTADB | code::CORRUPT)) =>
            {
                open_error(&self.path, e)
            }
            cause => StoreError::Migrate { path: self.path.clone(), cause },
        })?;
        let after = self.applied_migrations().await?;
        let version = sqlx::query_scalar::<_, Option<i64>>("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.sql_error("reading the schema version", e))?
            .unwrap_or(0);
        Ok(MigrationReport { applied: after.saturating_sub(before), version })
    }

    async fn applied_migrations(&self) -> Result<usize, StoreError> {
        let exists: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations'")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| open_error(&self.path, e))?;
        if exists == 0 {
            return Ok(0);
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.sql_error("counting applied migrations", e))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Checks that the database answers (`SELECT 1`).
    pub async fn health_check(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .map(drop)
            .map_err(|e| self.sql_error("health check", e))
    }

    /// Checkpoints the WAL into the database file, truncating the WAL, and
    /// closes every connection. Waits for connections in use to come back.
    #[tracing::instrument(name = "sqlite.close", skip_all, fields(path = %self.path.display()))]
    pub async fn close(self) -> Result<(), StoreError> {
        let _ = sqlx::query("PRAGMA optimize").execute(&self.pool).await;
        let checkpoint =
            sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&self.pool).await;
        self.pool.close().await;
        match checkpoint {
            Ok((busy, wal_pages, done)) => {
                tracing::debug!(busy, wal_pages, done, "database closed");
                Ok(())
            }
            Err(e) => Err(self.sql_error("checkpointing the WAL before closing", e)),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql_error(&self, context: &'static str, cause: sqlx::Error) -> StoreError {
        StoreError::Sql { path: self.path.clone(), context, cause }
    }
}

/// What is at the database path before anything opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// Nothing, or an empty file: a new database.
    New,
    /// A SQLite file carrying our application id.
    Ours,
    /// A SQLite file with application id 0.
    Unmarked,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Looks at the path and the file's header, creating the folder if missing.
/// Reads only: a foreign file is refused before SQLite ever opens it.
async fn inspect(path: &Path) -> Result<Existing, StoreError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || inspect_blocking(&owned)).await.map_err(|e| StoreError::CannotOpen {
        path: path.to_path_buf(),
        reason: format!("inspection task failed: {e}"),
    })?
}

fn inspect_blocking(path: &Path) -> Result<Existing, StoreError> {
    let cannot_open = |reason: String| StoreError::CannotOpen { path: path.to_path_buf(), reason };
    let not_a_db = |reason: &str| StoreError::NotADatabase { path: path.to_path_buf(), reason: reason.to_owned() };

    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder).map_err(|cause| {
            // "File exists" alone does not say which part of the path is in the way.
            let blocker = folder.ancestors().find(|a| a.exists() && !a.is_dir());
            let cause = match blocker {
                Some(file) => std::io::Error::new(cause.kind(), format!("{} is a file, not a folder", file.display())),
                None => cause,
            };
            StoreError::CreateFolder { path: path.to_path_buf(), folder: folder.to_path_buf(), cause }
        })?;
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::New),
        Err(e) => return Err(cannot_open(e.to_string())),
    };
    if meta.is_dir() {
        return Err(cannot_open("it is a directory".to_owned()));
    }
    if meta.len() == 0 {
        return Ok(Existing::New);
    }
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| f.take(100).read_to_end(&mut header))
        .map_err(|e| cannot_open(e.to_string()))?;
    if header.len() < 100 || !header.starts_with(SQLITE_MAGIC) {
        return Err(not_a_db("the file has no SQLite header"));
    }
    let app_id = u32::from_be_bytes([header[68], header[69], header[70], header[71]]);
    match app_id {
        APPLICATION_ID => Ok(Existing::Ours),
        0 => Ok(Existing::Unmarked),
        other => Err(not_a_db(&format!("it belongs to another application (application_id {other:#010x})"))),
    }
}

/// Opens an unmarked SQLite file read-only and refuses it if it holds
/// tables but is not ours.
async fn probe(path: &Path, busy_timeout: Duration) -> Result<(), StoreError> {
    let options = SqliteConnectOptions::new().filename(path).read_only(true).busy_timeout(busy_timeout);
    let mut conn = SqliteConnection::connect_with(&options).await.map_err(|e| open_error(path, e))?;
    let result = async {
        let app_id: i64 = sqlx::query_scalar("PRAGMA application_id").fetch_one(&mut conn).await?;
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
                .fetch_one(&mut conn)
                .await?;
        Ok::<_, sqlx::Error>((app_id, tables))
    }
    .await;
    let _ = conn.close().await;
    match result.map_err(|e| open_error(path, e))? {
        (id, _) if id == i64::from(APPLICATION_ID) => Ok(()),
        (_, 0) => Ok(()),
        (_, _) => Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
            reason: "it is another application's SQLite database".to_owned(),
        }),
    }
}

/// Classifies an error raised while connecting or first reading.
fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    let reason = match &e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    };
    let path = path.to_path_buf();
    match sqlite_code(&e) {
        Some(code::NOTADB | code::CORRUPT) => StoreError::NotADatabase { path, reason },
        Some(code::CANTOPEN) => StoreError::CannotOpen { path, reason: format!("{reason} (is its folder writable?)") },
        Some(code::READONLY | code::PERM | code::AUTH | code::IOERR) => StoreError::CannotOpen { path, reason },
        _ => match e {
            sqlx::Error::Io(_) => StoreError::CannotOpen { path, reason },
            cause => StoreError::Sql { path, context: "opening the database", cause },
        },
    }
}
