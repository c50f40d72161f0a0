//! Profiles against a real SQLite file: round trips and the stored JSON,
//! revision guards, rename moving container references, exactly one
//! default, delete guards, usage, and concurrent writers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "integration tests: helpers outside #[test] fns fail loudly too"
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use homeserver_domain::{
    ConfigOverlay, ContainerConfig, ContainerRecord, ContainerRepository, Profile, ProfileName, ProfileRepository,
    RepositoryError, RestartPolicy, RuntimeKind, UnixMillis,
};
use homeserver_sqlite::SqliteStore;
use support::{open_in, open_shared};

fn name(s: &str) -> ProfileName {
    ProfileName::parse(s).unwrap()
}

fn profile(n: &str, is_default: bool) -> Profile {
    Profile {
        name: name(n),
        description: format!("the {n} profile"),
        config: ConfigOverlay::default(),
        is_default,
        created_at: UnixMillis(1_000),
        updated_at: UnixMillis(1_000),
        revision: 1,
    }
}

fn full_overlay() -> ConfigOverlay {
    ConfigOverlay {
        cpu_limit: Some(1.5),
        memory_limit_bytes: Some(256 << 20),
        pids_limit: Some(100),
        env: BTreeMap::from([("A".into(), "1".into()), ("QUOTE".into(), "\"é\"\n".into())]),
        labels: BTreeMap::from([("team".into(), "ops".into())]),
        command: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
        restart_policy: Some(RestartPolicy::OnFailure),
        devices: vec!["/dev/ttyUSB0".into(), "disk-0123456789abcdef".into()],
    }
}

async fn get(store: &SqliteStore, n: &str) -> Profile {
    ProfileRepository::get(store, n).await.unwrap().unwrap_or_else(|| panic!("profile {n} missing"))
}

async fn list(store: &SqliteStore) -> Vec<Profile> {
    ProfileRepository::list(store).await.unwrap()
}

async fn defaults(store: &SqliteStore) -> Vec<String> {
    list(store).await.into_iter().filter(|p| p.is_default).map(|p| p.name.as_str().to_owned()).collect()
}

fn container(id: &str, profiles: &[&str]) -> ContainerRecord {
    ContainerRecord {
        id: id.to_owned(),
        runtime: RuntimeKind::Docker,
        runtime_id: format!("rt-{id}"),
        name: id.to_owned(),
        image: Some("busybox".into()),
        template: None,
        managed: true,
        profiles: profiles.iter().map(|s| (*s).to_owned()).collect(),
        config: ContainerConfig::default(),
        created_at: UnixMillis(500),
        updated_at: UnixMillis(500),
    }
}

async fn add_profile(store: &SqliteStore, p: &Profile) -> Result<(), RepositoryError> {
    ProfileRepository::insert(store, p).await
}

async fn add_container(store: &SqliteStore, c: &ContainerRecord) -> Result<(), RepositoryError> {
    ContainerRepository::insert(store, c).await
}

async fn container_profiles(store: &SqliteStore, id: &str) -> Vec<String> {
    ContainerRepository::get(store, id).await.unwrap().unwrap().profiles
}

/// The raw JSON of a profile's `config` column.
async fn stored_config(store: &SqliteStore, n: &str) -> String {
    let url = format!("sqlite://{}", store.path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let json: String =
        sqlx::query_scalar("SELECT config FROM profiles WHERE name = ?").bind(n).fetch_one(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    json
}

#[tokio::test]
async fn every_field_round_trips_and_the_stored_json_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    let full = Profile {
        name: name("gpu-box_1"),
        description: "Ünïcode — \"quoted\"\nsecond line".into(),
        config: full_overlay(),
        is_default: true,
        created_at: UnixMillis(1_700_000_000_001),
        updated_at: UnixMillis(1_700_000_000_002),
        revision: 7,
    };
    add_profile(&store, &full).await.unwrap();
    add_profile(&store, &profile("empty", false)).await.unwrap();
    add_profile(&store, &profile("a", false)).await.unwrap();
    assert_eq!(get(&store, "gpu-box_1").await, full);
    assert_eq!(get(&store, "empty").await, profile("empty", false));
    assert!(ProfileRepository::get(&store, "nope").await.unwrap().is_none());
    let names: Vec<String> = list(&store).await.into_iter().map(|p| p.name.as_str().to_owned()).collect();
    assert_eq!(names, ["a", "empty", "gpu-box_1"]);

    // The storage shape: snake_case keys, unset scalars left out.
    assert_eq!(stored_config(&store, "empty").await, r#"{"env":{},"labels":{},"devices":[]}"#);
    assert_eq!(
        stored_config(&store, "gpu-box_1").await,
        r#"{"cpu_limit":1.5,"memory_limit_bytes":268435456,"pids_limit":100,"env":{"A":"1","QUOTE":"\"é\"\n"},"labels":{"team":"ops"},"command":["sh","-c","echo hi"],"restart_policy":"on-failure","devices":["/dev/ttyUSB0","disk-0123456789abcdef"]}"#
    );

    // Rows with explicit nulls or missing keys read back as unset.
    let url = format!("sqlite://{}", store.path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query("UPDATE profiles SET config = ? WHERE name = 'a'")
        .bind(r#"{"cpu_limit":null,"command":null,"restart_policy":"always","env":{"X":"y"}}"#)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    let a = get(&store, "a").await;
    assert_eq!(
        a.config,
        ConfigOverlay {
            restart_policy: Some(RestartPolicy::Always),
            env: BTreeMap::from([("X".into(), "y".into())]),
            ..Default::default()
        }
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_schema_refuses_bad_names_and_a_second_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    add_profile(&store, &profile("one", true)).await.unwrap();
    let url = format!("sqlite://{}", store.path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let raw = |n: &'static str, is_default: i64| {
        sqlx::query(
            "INSERT INTO profiles (name, description, config, is_default, created_at, updated_at, revision) \
             VALUES (?, '', '{}', ?, 0, 0, 1)",
        )
        .bind(n)
        .bind(is_default)
    };
    for bad in ["Web", "-a", "a.b", ""] {
        assert!(raw(bad, 0).execute(&mut conn).await.is_err(), "{bad:?} was accepted");
    }
    let err = raw("two", 1).execute(&mut conn).await.unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    raw("two", 0).execute(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    assert_eq!(defaults(&store).await, ["one"]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn insert_refuses_a_taken_name_and_a_new_default_demotes_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    add_profile(&store, &profile("default", true)).await.unwrap();
    let before = get(&store, "default").await;

    // A taken name, even as a new default: nothing changes, the old default stays.
    let dup = Profile { description: "other".into(), ..profile("default", false) };
    assert!(matches!(add_profile(&store, &dup).await, Err(RepositoryError::AlreadyExists)));
    let dup_default = Profile { description: "other".into(), ..profile("default", true) };
    assert!(matches!(add_profile(&store, &dup_default).await, Err(RepositoryError::AlreadyExists)));
    assert_eq!(list(&store).await, std::slice::from_ref(&before));

    add_profile(&store, &profile("plain", false)).await.unwrap();
    assert_eq!(defaults(&store).await, ["default"]);

    let newer = Profile { updated_at: UnixMillis(5_000), ..profile("newer", true) };
    add_profile(&store, &newer).await.unwrap();
    assert_eq!(defaults(&store).await, ["newer"]);
    let demoted = get(&store, "default").await;
    assert_eq!(
        demoted,
        Profile { is_default: false, revision: before.revision + 1, updated_at: UnixMillis(5_000), ..before }
    );
    assert_eq!(get(&store, "plain").await.revision, 1, "non-defaults are left alone");
    store.close().await.unwrap();
}

#[tokio::test]
async fn replace_is_guarded_and_keeps_the_default_flag_and_creation_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    add_profile(&store, &profile("web", true)).await.unwrap();

    let next = Profile {
        description: "changed".into(),
        config: full_overlay(),
        is_default: false,
        created_at: UnixMillis(9),
        updated_at: UnixMillis(2_000),
        revision: 2,
        ..profile("web", true)
    };
    store.replace(&next, 1).await.unwrap();
    let stored = get(&store, "web").await;
    assert_eq!(stored, Profile { is_default: true, created_at: UnixMillis(1_000), ..next.clone() });

    let stale = Profile { description: "lost".into(), revision: 2, ..next.clone() };
    assert!(matches!(store.replace(&stale, 1).await, Err(RepositoryError::Stale)));
    assert_eq!(get(&store, "web").await, stored, "a stale replace changes nothing");
    let ghost = profile("ghost", false);
    assert!(matches!(store.replace(&ghost, 1).await, Err(RepositoryError::NotFound)));
    assert!(ProfileRepository::get(&store, "ghost").await.unwrap().is_none());
    store.close().await.unwrap();
}

#[tokio::test]
async fn activate_leaves_exactly_one_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    // No default at all yet: activating makes one.
    add_profile(&store, &profile("a", false)).await.unwrap();
    add_profile(&store, &profile("b", false)).await.unwrap();
    let a = store.activate("a", UnixMillis(2_000)).await.unwrap();
    assert_eq!((a.is_default, a.revision, a.updated_at), (true, 2, UnixMillis(2_000)));
    assert_eq!(defaults(&store).await, ["a"]);

    let b = store.activate("b", UnixMillis(3_000)).await.unwrap();
    assert_eq!((b.is_default, b.revision, b.updated_at), (true, 2, UnixMillis(3_000)));
    assert_eq!(defaults(&store).await, ["b"]);
    let a = get(&store, "a").await;
    assert_eq!((a.is_default, a.revision, a.updated_at), (false, 3, UnixMillis(3_000)));

    // Activating the default again changes nothing.
    assert_eq!(store.activate("b", UnixMillis(4_000)).await.unwrap(), b);
    assert_eq!(get(&store, "b").await, b);
    assert!(matches!(store.activate("nope", UnixMillis(5_000)).await, Err(RepositoryError::NotFound)));
    assert_eq!(defaults(&store).await, ["b"]);

    // A new default through insert, then back through activate.
    add_profile(&store, &profile("c", true)).await.unwrap();
    assert_eq!(defaults(&store).await, ["c"]);
    store.activate("a", UnixMillis(6_000)).await.unwrap();
    assert_eq!(defaults(&store).await, ["a"]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn rename_moves_every_reference_in_one_go_and_refuses_a_taken_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    add_profile(&store, &profile("base", false)).await.unwrap();
    add_profile(&store, &profile("web", true)).await.unwrap();
    add_profile(&store, &profile("other", false)).await.unwrap();
    add_container(&store, &container("c1", &["base", "web", "other"])).await.unwrap();
    add_container(&store, &container("c2", &["web"])).await.unwrap();
    add_container(&store, &container("c3", &["other"])).await.unwrap();
    add_container(&store, &container("c4", &[])).await.unwrap();

    // Refusals change nothing anywhere.
    let profiles_before = list(&store).await;
    let containers_before = ContainerRepository::list(&store).await.unwrap();
    let refused = [
        (store.rename("web", &name("base"), None, UnixMillis(2_000)).await, "taken name"),
        (store.rename("web", &name("web"), None, UnixMillis(2_000)).await, "its own name"),
        (store.rename("web", &name("www"), Some(9), UnixMillis(2_000)).await, "stale"),
        (store.rename("nope", &name("www"), None, UnixMillis(2_000)).await, "missing"),
    ];
    let kinds: Vec<String> = refused.iter().map(|(r, why)| format!("{why}: {:?}", r.as_ref().err())).collect();
    assert!(matches!(refused[0].0, Err(RepositoryError::AlreadyExists)), "{kinds:?}");
    assert!(matches!(refused[1].0, Err(RepositoryError::AlreadyExists)), "{kinds:?}");
    assert!(matches!(refused[2].0, Err(RepositoryError::Stale)), "{kinds:?}");
    assert!(matches!(refused[3].0, Err(RepositoryError::NotFound)), "{kinds:?}");
    assert_eq!(list(&store).await, profiles_before);
    assert_eq!(ContainerRepository::list(&store).await.unwrap(), containers_before);

    let web = get(&store, "web").await;
    let renamed = store.rename("web", &name("www"), Some(web.revision), UnixMillis(3_000)).await.unwrap();
    assert_eq!(
        renamed,
        Profile { name: name("www"), revision: web.revision + 1, updated_at: UnixMillis(3_000), ..web.clone() }
    );
    assert!(renamed.is_default, "the default stays the default under its new name");
    assert_eq!(get(&store, "www").await, renamed);
    assert!(ProfileRepository::get(&store, "web").await.unwrap().is_none());
    assert_eq!(defaults(&store).await, ["www"]);

    assert_eq!(container_profiles(&store, "c1").await, ["base", "www", "other"], "order is kept");
    assert_eq!(container_profiles(&store, "c2").await, ["www"]);
    assert_eq!(container_profiles(&store, "c3").await, ["other"]);
    assert!(container_profiles(&store, "c4").await.is_empty());
    let c1 = ContainerRepository::get(&store, "c1").await.unwrap().unwrap();
    let c3 = ContainerRepository::get(&store, "c3").await.unwrap().unwrap();
    assert_eq!((c1.updated_at, c3.updated_at), (UnixMillis(3_000), UnixMillis(500)));
    assert_eq!(store.used_by("www").await.unwrap(), ["c1", "c2"]);
    assert!(store.used_by("web").await.unwrap().is_empty());

    // Without a revision guard too.
    store.rename("base", &name("base2"), None, UnixMillis(4_000)).await.unwrap();
    assert_eq!(container_profiles(&store, "c1").await, ["base2", "www", "other"]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn delete_refuses_in_use_and_default_profiles_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    add_profile(&store, &profile("default", true)).await.unwrap();
    add_profile(&store, &profile("used", false)).await.unwrap();
    add_profile(&store, &profile("free", false)).await.unwrap();
    add_container(&store, &container("c2", &["used"])).await.unwrap();
    add_container(&store, &container("c1", &["default", "used"])).await.unwrap();
    let before = list(&store).await;

    match ProfileRepository::delete(&store, "used", None).await {
        Err(RepositoryError::InUse(ids)) => assert_eq!(ids, ["c1", "c2"]),
        other => panic!("{other:?}"),
    }
    // In use and the default: in use wins (409 PROFILE_IN_USE).
    assert!(matches!(ProfileRepository::delete(&store, "default", None).await, Err(RepositoryError::InUse(_))));
    ContainerRepository::delete(&store, "c1").await.unwrap();
    match ProfileRepository::delete(&store, "default", Some(1)).await {
        Err(RepositoryError::Conflict(why)) => assert!(why.contains("default"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(ProfileRepository::delete(&store, "free", Some(2)).await, Err(RepositoryError::Stale)));
    assert!(matches!(ProfileRepository::delete(&store, "nope", None).await, Err(RepositoryError::NotFound)));
    assert_eq!(list(&store).await, before, "refused deletes change nothing");

    ProfileRepository::delete(&store, "free", Some(1)).await.unwrap();
    ContainerRepository::delete(&store, "c2").await.unwrap();
    ProfileRepository::delete(&store, "used", None).await.unwrap();
    let names: Vec<String> = list(&store).await.into_iter().map(|p| p.name.as_str().to_owned()).collect();
    assert_eq!(names, ["default"]);
    assert!(matches!(ProfileRepository::delete(&store, "free", None).await, Err(RepositoryError::NotFound)));
    store.close().await.unwrap();
}

#[tokio::test]
async fn usage_and_used_by_read_the_container_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "profiles.db").await;
    add_profile(&store, &profile("a", false)).await.unwrap();
    add_profile(&store, &profile("b", false)).await.unwrap();
    add_profile(&store, &profile("idle", false)).await.unwrap();
    assert!(store.usage().await.unwrap().is_empty());
    add_container(&store, &container("x", &["a", "b"])).await.unwrap();
    add_container(&store, &container("y", &["b", "b"])).await.unwrap();
    add_container(&store, &container("z", &[])).await.unwrap();

    let usage = store.usage().await.unwrap();
    assert_eq!(
        usage,
        BTreeMap::from([("a".to_owned(), vec!["x".to_owned()]), ("b".to_owned(), vec!["x".into(), "y".into()])])
    );
    assert_eq!(store.used_by("b").await.unwrap(), ["x", "y"]);
    assert!(store.used_by("idle").await.unwrap().is_empty());
    assert!(store.used_by("nope").await.unwrap().is_empty());

    // A container record changing its profiles is seen at once.
    let mut y = ContainerRepository::get(&store, "y").await.unwrap().unwrap();
    y.profiles = vec!["idle".into()];
    ContainerRepository::update(&store, &y).await.unwrap();
    assert_eq!(store.used_by("idle").await.unwrap(), ["y"]);
    assert_eq!(store.used_by("b").await.unwrap(), ["x"]);
    store.close().await.unwrap();
}

async fn contended(dir: &std::path::Path) -> [Arc<SqliteStore>; 2] {
    let path = dir.join("contended.db");
    [Arc::new(open_shared(&path, 8).await), Arc::new(open_shared(&path, 4).await)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_inserts_with_distinct_names_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let stores = contended(dir.path()).await;
    for round in 0..5 {
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = stores[i % 2].clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    add_profile(&store, &profile(&format!("r{round}-p{i:02}"), false)).await
                })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}, insert {i}: {e}");
            }
        }
        assert_eq!(list(&stores[1]).await.len(), 50 * (round + 1));
    }
    println!("5 rounds of 50 concurrent profile inserts: 250 Ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_defaults_and_activations_leave_exactly_one_default() {
    let dir = tempfile::tempdir().unwrap();
    let stores = contended(dir.path()).await;
    // 30 inserts that each claim the default.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { add_profile(&store, &profile(&format!("p{i:02}"), true)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(defaults(&stores[0]).await.len(), 1);

    // 30 activations of different profiles at once, twice over.
    for round in 0..2 {
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let store = stores[(i + round) % 2].clone();
                tokio::spawn(async move { store.activate(&format!("p{i:02}"), UnixMillis(10_000)).await })
            })
            .collect();
        let mut active = Vec::new();
        for t in tasks {
            active.push(t.await.unwrap().unwrap());
        }
        assert!(active.iter().all(|p| p.is_default));
        let now = defaults(&stores[1]).await;
        assert_eq!(now.len(), 1, "{now:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_replaces_with_one_revision_give_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let stores = contended(dir.path()).await;
    add_profile(&stores[0], &profile("web", false)).await.unwrap();
    for round in 0..5u64 {
        let read = get(&stores[0], "web").await;
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = stores[i % 2].clone();
                let barrier = barrier.clone();
                let next =
                    Profile { description: format!("r{round}-w{i}"), revision: read.revision + 1, ..read.clone() };
                let expected = read.revision;
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.replace(&next, expected).await.map(|()| i)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(i) => winners.push(i),
                Err(RepositoryError::Stale) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(get(&stores[1], "web").await.description, format!("r{round}-w{}", winners[0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rename_racing_container_writes_and_deletes_keeps_everything_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let stores = contended(dir.path()).await;
    add_profile(&stores[0], &profile("p0", true)).await.unwrap();
    for i in 0..20 {
        add_container(&stores[0], &container(&format!("c{i:02}"), &["p0"])).await.unwrap();
    }
    // A chain of renames p0 → p1 → … → p20, while deletes of the profile
    // (refused: in use) run beside them.
    let renamer = {
        let store = stores[0].clone();
        tokio::spawn(async move {
            for i in 0..20 {
                store
                    .rename(&format!("p{i}"), &name(&format!("p{}", i + 1)), None, UnixMillis(2_000 + i))
                    .await
                    .unwrap();
            }
        })
    };
    let deleters: Vec<_> = (0..4)
        .map(|d| {
            let store = stores[d % 2].clone();
            tokio::spawn(async move {
                for i in 0..=20 {
                    match ProfileRepository::delete(&*store, &format!("p{i}"), None).await {
                        Err(RepositoryError::InUse(ids)) => assert_eq!(ids.len(), 20),
                        Err(RepositoryError::NotFound) => {}
                        other => panic!("p{i}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    renamer.await.unwrap();
    for d in deleters {
        d.await.unwrap();
    }
    let names: Vec<String> = list(&stores[1]).await.into_iter().map(|p| p.name.as_str().to_owned()).collect();
    assert_eq!(names, ["p20"]);
    assert_eq!(defaults(&stores[1]).await, ["p20"]);
    for c in ContainerRepository::list(&*stores[1]).await.unwrap() {
        assert_eq!(c.profiles, ["p20"], "{}", c.id);
    }
}
