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

#[tokio::test]
async fn devices_and_profiles_arrive_in_a_database_made_by_earlier_migrations_with_data_in_it() {
    use homeserver_domain::{
        ContainerRepository, DeviceRepository, DiscoveredDevice, Profile, ProfileName, ProfileRepository,
    };
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    // The migrations before 0004, as an older homeserver shipped them.
    let dir = tempfile::tempdir().unwrap();
    let older = dir.path().join("migrations");
    std::fs::create_dir(&older).unwrap();
    let all = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"));
    let mut copied = 0;
    for entry in std::fs::read_dir(all).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().into_string().unwrap();
        let version: i64 = file.split('_').next().unwrap().parse().unwrap();
        if version < 4 {
            std::fs::copy(entry.path(), older.join(&file)).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, 3);

    let path = dir.path().join("homeserver.db");
    {
        let options =
            SqliteConnectOptions::new().filename(&path).create_if_missing(true).journal_mode(SqliteJournalMode::Wal);
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await.unwrap();
        sqlx::migrate::Migrator::new(older.as_path()).await.unwrap().run(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO containers (id, runtime, runtime_id, name, image, template, managed, profiles, config, \
             created_at, updated_at) VALUES ('c1', 'docker', 'abc', 'web', 'busybox', NULL, 1, '[\"web\",\"base\"]', \
             '{\"cpu_limit\":null,\"memory_limit_bytes\":null,\"pids_limit\":null,\"env\":{},\"labels\":{},\
             \"command\":null,\"restart_policy\":\"no\",\"devices\":[]}', 1, 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO history_raw (ts, cpu_usage_percent) VALUES (60000, 1234)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }

    let report = SqliteStore::migrate(StoreOptions::new(&path)).await.unwrap();
    assert!(report.applied >= 1 && report.version >= 4, "{report:?}");
    let store = open(&path).await.unwrap();
    // The old data is intact.
    assert_eq!(store.latest_sample_time().await.unwrap(), Some(UnixMillis(60_000)));
    let c1 = ContainerRepository::get(&store, "c1").await.unwrap().unwrap();
    assert_eq!(c1.profiles, ["web", "base"]);
    // The new tables work with it.
    let web = Profile {
        name: ProfileName::parse("web").unwrap(),
        description: String::new(),
        config: Default::default(),
        is_default: true,
        created_at: UnixMillis(1),
        updated_at: UnixMillis(1),
        revision: 1,
    };
    ProfileRepository::insert(&store, &web).await.unwrap();
    assert_eq!(store.used_by("web").await.unwrap(), ["c1"]);
    store.rename("web", &ProfileName::parse("www").unwrap(), Some(1), UnixMillis(2)).await.unwrap();
    assert_eq!(ContainerRepository::get(&store, "c1").await.unwrap().unwrap().profiles, ["www", "base"]);
    let found = DiscoveredDevice { id: "disk-1".into(), name: "sda".into(), ..Default::default() };
    assert_eq!(store.apply_scan(&[found], UnixMillis(3)).await.unwrap().added, ["disk-1"]);
    assert_eq!(DeviceRepository::list(&store).await.unwrap().len(), 1);
    store.close().await.unwrap();
}
