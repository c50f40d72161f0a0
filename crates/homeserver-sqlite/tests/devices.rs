//! The device registry against a real SQLite file: round trips, scans,
//! revision guards, and concurrent writers that must never lose an update.

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
    Device, DeviceKind, DevicePatch, DeviceRepository, DiscoveredDevice, RepositoryError, ScanReport, UnixMillis,
};
use homeserver_sqlite::SqliteStore;
use support::{open_in, open_shared};

fn found(id: &str, kind: DeviceKind, name: &str) -> DiscoveredDevice {
    DiscoveredDevice {
        id: id.to_owned(),
        kind,
        name: name.to_owned(),
        path: Some(format!("/dev/{name}")),
        ..Default::default()
    }
}

fn disk(id: &str, name: &str) -> DiscoveredDevice {
    found(id, DeviceKind::Disk, name)
}

async fn get(store: &SqliteStore, id: &str) -> Device {
    DeviceRepository::get(store, id).await.unwrap().unwrap_or_else(|| panic!("device {id} missing"))
}

async fn list(store: &SqliteStore) -> Vec<Device> {
    DeviceRepository::list(store).await.unwrap()
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn every_field_round_trips_and_lists_sort_by_kind_then_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "devices.db").await;
    let rich = DiscoveredDevice {
        id: "usb-00000000000000aa".into(),
        kind: DeviceKind::Usb,
        name: "1-1.2".into(),
        vendor: Some("Ünïcode Vendor \"quoted\"".into()),
        model: Some("Model 'X'".into()),
        serial: Some("SN-0001".into()),
        path: Some("/dev/bus/usb/001/004".into()),
        attributes: BTreeMap::from([("bus_path".into(), "1-1.2".into()), ("speed".into(), "480".into())]),
    };
    let t0 = UnixMillis(1_700_000_000_123);
    let report = store
        .apply_scan(
            &[
                rich.clone(),
                disk("disk-b", "sdb"),
                found("net-1", DeviceKind::Network, "eth0"),
                disk("disk-a", "sda"),
                found("part-1", DeviceKind::Partition, "sda1"),
                found("other-1", DeviceKind::Other, "zz"),
                found("gpu-1", DeviceKind::Gpu, "card0"),
            ],
            t0,
        )
        .await
        .unwrap();
    assert_eq!(report.added.len(), 7);

    let stored = get(&store, &rich.id).await;
    assert_eq!(stored, Device::discovered(&rich, t0));

    // Every user field, through a guarded replace.
    let mut edited = stored.clone();
    edited.alias = Some("camera — desk".into());
    edited.enabled = false;
    edited.labels = BTreeMap::from([("room".into(), "office".into()), ("empty".into(), String::new())]);
    edited.revision = stored.revision + 1;
    store.replace(&edited, stored.revision).await.unwrap();
    assert_eq!(get(&store, &rich.id).await, edited);

    let order: Vec<(DeviceKind, String)> = list(&store).await.into_iter().map(|d| (d.kind, d.name)).collect();
    assert_eq!(
        order,
        [
            (DeviceKind::Disk, "sda".into()),
            (DeviceKind::Disk, "sdb".into()),
            (DeviceKind::Partition, "sda1".into()),
            (DeviceKind::Network, "eth0".into()),
            (DeviceKind::Usb, "1-1.2".into()),
            (DeviceKind::Gpu, "card0".into()),
            (DeviceKind::Other, "zz".into()),
        ]
    );
    assert!(DeviceRepository::get(&store, "nope").await.unwrap().is_none());
    store.close().await.unwrap();
}

#[tokio::test]
async fn scans_add_remove_update_and_bring_back_keeping_user_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "devices.db").await;
    let (t0, t1, t2, t3) = (UnixMillis(1_000), UnixMillis(2_000), UnixMillis(3_000), UnixMillis(4_000));

    let first = store.apply_scan(&[disk("a", "sda"), disk("b", "sdb"), disk("a", "duplicate")], t0).await.unwrap();
    assert_eq!(first, ScanReport { added: ids(&["a", "b"]), ..Default::default() });
    assert_eq!(get(&store, "a").await.name, "sda", "the first of duplicated ids wins");

    // The operator names both devices.
    for id in ["a", "b"] {
        let d = get(&store, id).await;
        let next = DevicePatch {
            alias: Some(Some(format!("alias-{id}"))),
            labels: Some(BTreeMap::from([("k".into(), id.into())])),
            enabled: Some(false),
        }
        .apply(&d);
        store.replace(&next, d.revision).await.unwrap();
    }

    // a changes its facts, b goes away, c appears.
    let mut a_changed = disk("a", "sdz");
    a_changed.attributes.insert("size_bytes".into(), "1000".into());
    let second = store.apply_scan(&[a_changed.clone(), disk("c", "sdc")], t1).await.unwrap();
    assert_eq!(second, ScanReport { added: ids(&["c"]), removed: ids(&["b"]), updated: ids(&["a"]) });
    let a = get(&store, "a").await;
    assert_eq!((a.name.as_str(), a.attributes["size_bytes"].as_str()), ("sdz", "1000"));
    assert_eq!((a.alias.as_deref(), a.enabled, a.labels["k"].as_str()), (Some("alias-a"), false, "a"));
    assert_eq!((a.first_seen, a.last_seen, a.revision, a.present), (t0, t1, 3, true));
    let b = get(&store, "b").await;
    assert_eq!((b.present, b.last_seen, b.revision, b.alias.as_deref()), (false, t0, 3, Some("alias-b")));

    // b returns; a and c are unchanged: only their last_seen moves.
    let third = store.apply_scan(&[a_changed.clone(), disk("c", "sdc"), disk("b", "sdb")], t2).await.unwrap();
    assert_eq!(third, ScanReport { added: ids(&["b"]), ..Default::default() });
    let b = get(&store, "b").await;
    assert_eq!((b.present, b.first_seen, b.last_seen, b.revision), (true, t0, t2, 4));
    assert_eq!((b.alias.as_deref(), b.enabled, b.labels["k"].as_str()), (Some("alias-b"), false, "b"));
    let a_after = get(&store, "a").await;
    assert_eq!(a_after, Device { last_seen: t2, ..a }, "only last_seen moves, without a new revision");
    assert_eq!(get(&store, "c").await.revision, 1);

    // A scan that changes nothing reports nothing and moves last_seen only.
    let before: Vec<Device> = list(&store).await;
    let fourth = store.apply_scan(&[a_changed, disk("c", "sdc"), disk("b", "sdb")], t3).await.unwrap();
    assert!(fourth.is_empty(), "{fourth:?}");
    let after = list(&store).await;
    assert_eq!(after, before.into_iter().map(|d| Device { last_seen: t3, ..d }).collect::<Vec<_>>());

    // An empty scan marks every device absent and leaves last_seen alone.
    let gone = store.apply_scan(&[], UnixMillis(5_000)).await.unwrap();
    assert_eq!(gone.removed, ids(&["a", "b", "c"]));
    assert!(list(&store).await.iter().all(|d| !d.present && d.last_seen == t3));
    store.close().await.unwrap();
}

#[tokio::test]
async fn replace_is_guarded_by_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "devices.db").await;
    store.apply_scan(&[disk("a", "sda")], UnixMillis(1_000)).await.unwrap();
    let d = get(&store, "a").await;

    let mine = DevicePatch { alias: Some(Some("mine".into())), ..Default::default() }.apply(&d);
    store.replace(&mine, 1).await.unwrap();
    let theirs = DevicePatch { alias: Some(Some("theirs".into())), ..Default::default() }.apply(&d);
    assert!(matches!(store.replace(&theirs, 1).await, Err(RepositoryError::Stale)));
    assert_eq!(get(&store, "a").await, mine, "a stale replace changes nothing");

    let ghost = Device { id: "ghost".into(), ..mine.clone() };
    assert!(matches!(store.replace(&ghost, 2).await, Err(RepositoryError::NotFound)));
    assert!(DeviceRepository::get(&store, "ghost").await.unwrap().is_none());

    // A scan moved last_seen (no new revision) after the operator read the
    // device: the operator's write keeps the newer last_seen.
    let read = get(&store, "a").await;
    let mut a = disk("a", "sda");
    a.path = Some("/dev/sda".into());
    store.apply_scan(&[a], UnixMillis(9_000)).await.unwrap();
    let next = DevicePatch { enabled: Some(false), ..Default::default() }.apply(&read);
    store.replace(&next, read.revision).await.unwrap();
    let stored = get(&store, "a").await;
    assert_eq!((stored.enabled, stored.last_seen, stored.first_seen), (false, UnixMillis(9_000), UnixMillis(1_000)));
    store.close().await.unwrap();
}

#[tokio::test]
async fn delete_is_guarded_and_a_forgotten_device_returns_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "devices.db").await;
    store.apply_scan(&[disk("a", "sda"), disk("b", "sdb")], UnixMillis(1_000)).await.unwrap();
    let a = get(&store, "a").await;
    let renamed = DevicePatch { alias: Some(Some("root".into())), ..Default::default() }.apply(&a);
    store.replace(&renamed, a.revision).await.unwrap();

    assert!(matches!(DeviceRepository::delete(&store, "a", Some(1)).await, Err(RepositoryError::Stale)));
    assert_eq!(get(&store, "a").await, renamed, "a stale delete removes nothing");
    assert!(matches!(DeviceRepository::delete(&store, "nope", None).await, Err(RepositoryError::NotFound)));
    assert!(matches!(DeviceRepository::delete(&store, "nope", Some(1)).await, Err(RepositoryError::NotFound)));
    DeviceRepository::delete(&store, "a", Some(2)).await.unwrap();
    DeviceRepository::delete(&store, "b", None).await.unwrap();
    assert!(list(&store).await.is_empty());
    assert!(matches!(DeviceRepository::delete(&store, "a", None).await, Err(RepositoryError::NotFound)));

    // Still plugged in: the next scan finds it again, as a new record.
    let report = store.apply_scan(&[disk("a", "sda")], UnixMillis(2_000)).await.unwrap();
    assert_eq!(report.added, ids(&["a"]));
    let back = get(&store, "a").await;
    assert_eq!((back.alias, back.first_seen, back.revision), (None, UnixMillis(2_000), 1));
    store.close().await.unwrap();
}

/// Two stores on one file (as two processes would have), several
/// connections each: writers really contend for SQLite's lock.
async fn contended(dir: &std::path::Path) -> [Arc<SqliteStore>; 2] {
    let path = dir.join("contended.db");
    let a = open_shared(&path, 8).await;
    let b = open_shared(&path, 4).await;
    [Arc::new(a), Arc::new(b)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_replaces_with_one_revision_give_one_winner_every_time() {
    const WRITERS: usize = 50;
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let stores = contended(dir.path()).await;
    stores[0].apply_scan(&[disk("a", "sda")], UnixMillis(1_000)).await.unwrap();

    for round in 0..ROUNDS {
        let read = get(&stores[0], "a").await;
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|i| {
                let store = stores[i % 2].clone();
                let barrier = barrier.clone();
                let next = DevicePatch {
                    alias: Some(Some(format!("r{round}-w{i}"))),
                    labels: Some(BTreeMap::from([("writer".into(), i.to_string())])),
                    ..Default::default()
                }
                .apply(&read);
                let expected = read.revision;
                tokio::spawn(async move {
                    barrier.wait().await;
                    (i, store.replace(&next, expected).await)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut stale = 0;
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok(())) => winners.push(i),
                (_, Err(RepositoryError::Stale)) => stale += 1,
                (i, Err(e)) => panic!("round {round}, writer {i}: {e}"),
            }
        }
        assert_eq!((winners.len(), stale), (1, WRITERS - 1), "round {round}");
        let stored = get(&stores[1], "a").await;
        let w = winners[0];
        assert_eq!(stored.alias, Some(format!("r{round}-w{w}")), "the stored device is the winner's");
        assert_eq!(stored.labels["writer"], w.to_string());
        assert_eq!(stored.revision, read.revision + 1);
    }
    println!("{ROUNDS} rounds of {WRITERS} concurrent replaces: one Ok and {} Stale each", WRITERS - 1);
}

/// Read, change, write with the revision read; again on `Stale`.
async fn increment_counter(store: &SqliteStore, id: &str) -> usize {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let d = get(store, id).await;
        let n: u64 = d.labels.get("counter").map_or(0, |v| v.parse().unwrap());
        let mut labels = d.labels.clone();
        labels.insert("counter".into(), (n + 1).to_string());
        let next = DevicePatch { labels: Some(labels), ..Default::default() }.apply(&d);
        match store.replace(&next, d.revision).await {
            Ok(()) => return attempts,
            Err(RepositoryError::Stale) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_scans_and_replaces_never_lose_an_update() {
    const USERS: usize = 10;
    const INCREMENTS: usize = 10;
    const SCANS: i64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let stores = contended(dir.path()).await;
    stores[0].apply_scan(&[disk("a", "sda"), disk("b", "sdb")], UnixMillis(1_000)).await.unwrap();

    // Scans that change a's facts every other time (a new revision) and b's
    // never (last_seen only), while users count up a label on both.
    let scanner = {
        let store = stores[1].clone();
        tokio::spawn(async move {
            for i in 1..=SCANS {
                let mut a = disk("a", "sda");
                a.attributes.insert("flip".into(), (i % 2).to_string());
                store.apply_scan(&[a, disk("b", "sdb")], UnixMillis(1_000 + i)).await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let users: Vec<_> = (0..USERS)
        .map(|u| {
            let store = stores[u % 2].clone();
            tokio::spawn(async move {
                let mut retries = 0;
                for _ in 0..INCREMENTS {
                    retries += increment_counter(&store, "a").await - 1;
                    retries += increment_counter(&store, "b").await - 1;
                }
                retries
            })
        })
        .collect();
    scanner.await.unwrap();
    let mut retries = 0;
    for u in users {
        retries += u.await.unwrap();
    }

    let total = (USERS * INCREMENTS).to_string();
    let a = get(&stores[0], "a").await;
    let b = get(&stores[0], "b").await;
    assert_eq!(a.labels["counter"], total, "an operator's change to a was lost");
    assert_eq!(b.labels["counter"], total, "an operator's change to b was lost");
    assert_eq!(a.attributes["flip"], (SCANS % 2).to_string(), "a scan's change to a was lost");
    assert_eq!((a.last_seen, b.last_seen), (UnixMillis(1_000 + SCANS), UnixMillis(1_000 + SCANS)));
    assert!(a.present && b.present);
    println!("{} increments on each of 2 devices during {SCANS} scans; {retries} retries after Stale", total);
}
