//! Opening, migrating and closing: the error paths name the file, and an
//! existing file is never changed when it is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "integration tests: helpers outside #[test] fns fail loudly too"
)]

mod support;

use std::path::Path;

use homeserver_domain::{SnapshotRepository, UnixMillis};
use homeserver_sqlite::{MigrationReport, SqliteStore, StoreError, StoreOptions};
use support::flat;

async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(StoreOptions::new(path)).await
}

fn assert_names(err: &StoreError, path: &Path, words: &str) {
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "message does not name {}: {msg}", path.display());
    assert!(msg.contains(words), "message lacks `{words}`: {msg}");
    println!("{msg}");
}

#[tokio::test]
async fn open_creates_the_folder_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/homeserver.db");
    let store = open(&path).await.unwrap();
    store.health_check().await.unwrap();
    assert_eq!(store.path(), path);
    store.close().await.unwrap();
    assert!(path.is_file());
}

#[tokio::test]
async fn a_folder_that_cannot_be_created_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // The parent "folder" is a regular file: even root cannot create under it.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let path = blocker.join("homeserver.db");
    let err = open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::CreateFolder { .. }), "{err:?}");
    assert_names(&err, &path, "cannot create");
    assert_names(&err, &path, "not-a-folder is a file, not a folder");
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
}

#[tokio::test]
async fn a_directory_in_place_of_the_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
    assert_names(&err, dir.path(), "cannot create or open");
}

#[tokio::test]
async fn a_location_sqlite_cannot_write_is_reported() {
    // /proc exists but accepts no new files, even from root.
    let path = Path::new("/proc/homeserver-test.db");
    if !Path::new("/proc/self").exists() {
        return;
    }
    let err = open(path).await.unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
    assert_names(&err, path, "cannot create or open");
}

async fn refused_untouched(bytes: &[u8], expected_reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.db");
    std::fs::write(&path, bytes).unwrap();
    let err = open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert_names(&err, &path, "is not a homeserver database or is corrupt");
    assert_names(&err, &path, expected_reason);
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the refused file was changed");
}

#[tokio::test]
async fn a_garbage_file_is_refused_and_left_unchanged() {
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    refused_untouched(&garbage, "no SQLite header").await;
    refused_untouched(b"hello", "no SQLite header").await;
}

#[tokio::test]
async fn another_applications_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for (name, app_id) in [("plain.db", 0), ("marked.db", 0x4142_4344)] {
        let path = dir.path().join(name);
        // A rollback-journal SQLite file with one table, made without our store.
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE notes (body TEXT)").execute(&mut conn).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA application_id = {app_id}"))).execute(&mut conn).await.unwrap();
        sqlx::Connection::close(conn).await.unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let reason = if app_id == 0 { "another application's SQLite database" } else { "application_id 0x41424344" };
        refused_untouched(&bytes, reason).await;
    }
}

#[tokio::test]
async fn a_corrupt_homeserver_database_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.db");
    let store = open(&path).await.unwrap();
    store.save_samples(&[flat(1_000, 1.0)]).await.unwrap();
    store.close().await.unwrap();
    // Keep the 100-byte header, scribble over the schema that follows it.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[100..4096] {
        *b = 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert_names(&err, &path, "is not a homeserver database or is corrupt");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the refused file was changed");
}

#[tokio::test]
async fn an_empty_file_becomes_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.db");
    std::fs::write(&path, b"").unwrap();
    let store = open(&path).await.unwrap();
    store.save_samples(&[flat(1_000, 1.0)]).await.unwrap();
    store.close().await.unwrap();
}

#[tokio::test]
async fn migrate_reports_what_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions::new(dir.path().join("homeserver.db"));
    // Versions are the numeric prefixes of the files in the workspace's migrations/.
    let versions: Vec<i64> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.split('_').next()?.parse().ok())
        .collect();
    let latest = versions.iter().copied().max().unwrap();
    let first = SqliteStore::migrate(options.clone()).await.unwrap();
    assert_eq!(first, MigrationReport { applied: versions.len(), version: latest });
    let again = SqliteStore::migrate(options).await.unwrap();
    assert_eq!(again, MigrationReport { applied: 0, version: latest });
}

#[tokio::test]
async fn a_database_from_a_newer_homeserver_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.db");
    let store = open(&path).await.unwrap();
    store.close().await.unwrap();
    {
        let url = format!("sqlite://{}", path.display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', 1, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }
    let err = open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema { version: 9999, .. }), "{err:?}");
    assert_names(&err, &path, "newer homeserver");
}

#[tokio::test]
async fn two_stores_on_one_file_share_the_data() {
    // WAL lets a second process (e.g. `homeserver migrate` while serving) open the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homeserver.db");
    let a = open(&path).await.unwrap();
    let b = open(&path).await.unwrap();
    a.save_samples(&[flat(60_000, 1.0)]).await.unwrap();
    assert_eq!(b.latest_sample_time().await.unwrap(), Some(UnixMillis(60_000)));
    b.close().await.unwrap();
    a.close().await.unwrap();
}
