//! `SnapshotRepository` behaviour of `SqliteStore` on real WAL database files.
//!
//! These are `#[tokio::test]`s on temporary files rather than `#[sqlx::test]`:
//! the store must be opened through `SqliteStore::open` (WAL, pragmas,
//! migrations), which a pool handed over by `#[sqlx::test]` would bypass.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "integration tests: helpers outside #[test] fns fail loudly too"
)]

mod support;

use homeserver_domain::{
    BucketPlan, Metric, Point, PruneReport, RetentionPolicy, RollupReport, Series, SnapshotRepository, Tier, UnixMillis,
};
use support::{HostSim, flat, open_in, sample, size_after_close};

/// Hour-aligned start of every test's data.
const T0: i64 = 1_800_000_000_000;
const MIN: i64 = UnixMillis::MINUTE;
const HOUR: i64 = UnixMillis::HOUR;

fn plan(tier: Tier, from: i64, to: i64, step_ms: i64) -> BucketPlan {
    BucketPlan { tier, from: UnixMillis(from), to: UnixMillis(to), step_ms }
}

fn pt(t: i64, avg: f64, min: f64, max: f64) -> Point {
    Point { t: UnixMillis(t), avg, min, max }
}

async fn one(store: &impl SnapshotRepository, plan: BucketPlan, metric: Metric) -> Vec<Point> {
    let mut series = store.query(&plan, &[metric]).await.unwrap();
    assert_eq!(series.len(), 1);
    series.pop().unwrap().points
}

fn assert_close(actual: f64, expected: f64) {
    assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
}

#[tokio::test]
async fn save_and_query_gives_exact_avg_min_max_per_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    // cpu: 10, 20.5, 30.25 | 40, 50 (one second apart); buckets of 3 s.
    let cpu = [10.0, 20.5, 30.25, 40.0, 50.0];
    let samples: Vec<_> = cpu
        .iter()
        .enumerate()
        .map(|(i, v)| {
            sample(T0 + i as i64 * 1_000, |m| if m == Metric::CpuUsagePercent { *v } else { 1_000.0 * i as f64 })
        })
        .collect();
    store.save_samples(&samples).await.unwrap();

    let p = plan(Tier::Raw, T0, T0 + 6_000, 3_000);
    let series = store.query(&p, &[Metric::CpuUsagePercent, Metric::MemoryUsedBytes]).await.unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].metric, Metric::CpuUsagePercent);
    assert_eq!(series[0].points.len(), 2);
    let b0 = series[0].points[0];
    assert_eq!((b0.t, b0.min, b0.max), (UnixMillis(T0), 10.0, 30.25));
    assert_close(b0.avg, (10.0 + 20.5 + 30.25) / 3.0);
    assert_eq!(series[0].points[1], pt(T0 + 3_000, 45.0, 40.0, 50.0));
    assert_eq!(series[1].metric, Metric::MemoryUsedBytes);
    assert_eq!(series[1].points, vec![pt(T0, 1_000.0, 0.0, 2_000.0), pt(T0 + 3_000, 3_500.0, 3_000.0, 4_000.0)]);

    // `to` is exclusive, `from` inclusive.
    let points = one(&store, plan(Tier::Raw, T0 + 1_000, T0 + 4_000, 1_000), Metric::CpuUsagePercent).await;
    let ts: Vec<_> = points.iter().map(|p| p.t.0 - T0).collect();
    assert_eq!(ts, [1_000, 2_000, 3_000]);
}

#[tokio::test]
async fn series_come_back_in_the_requested_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    store.save_samples(&[sample(T0, |m| m.index() as f64)]).await.unwrap();
    let metrics = [Metric::ProcessCount, Metric::CpuLoad1, Metric::SwapUsedBytes];
    let series = store.query(&plan(Tier::Raw, T0, T0 + 1_000, 1_000), &metrics).await.unwrap();
    let got: Vec<_> = series.iter().map(|s| (s.metric, s.points[0].avg)).collect();
    assert_eq!(got, [(Metric::ProcessCount, 12.0), (Metric::CpuLoad1, 1.0), (Metric::SwapUsedBytes, 7.0)]);
}

#[tokio::test]
async fn scaled_values_keep_their_precision() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let s = sample(T0, |m| match m {
        Metric::CpuUsagePercent => 12.34,
        Metric::CpuLoad1 => 0.666,
        Metric::MemoryUsedBytes => 4_294_967_296.4,
        Metric::MemoryUsagePercent => 99.999,
        Metric::NetworkRxBytesPerSec => 1_234.5,
        _ => 0.0,
    });
    store.save_samples(&[s]).await.unwrap();
    let p = plan(Tier::Raw, T0, T0 + 1_000, 1_000);
    let get = |series: &[Series], i: usize| series[i].points[0].avg;
    let metrics = [
        Metric::CpuUsagePercent,
        Metric::CpuLoad1,
        Metric::MemoryUsedBytes,
        Metric::MemoryUsagePercent,
        Metric::NetworkRxBytesPerSec,
    ];
    let series = store.query(&p, &metrics).await.unwrap();
    assert_eq!(get(&series, 0), 12.34);
    assert_eq!(get(&series, 1), 0.67);
    assert_eq!(get(&series, 2), 4_294_967_296.0);
    assert_eq!(get(&series, 3), 100.0);
    assert_eq!(get(&series, 4), 1_235.0, "rates round half away from zero");
    assert_eq!(series[0].points[0].min, 12.34);
    assert_eq!(series[0].points[0].max, 12.34);
}

#[tokio::test]
async fn a_duplicate_timestamp_replaces_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    store.save_samples(&[flat(T0, 1.0), flat(T0 + 1_000, 2.0)]).await.unwrap();
    // The clock stepped back: same timestamp again, in a later batch and twice in one batch.
    store.save_samples(&[flat(T0, 5.0), flat(T0 + 1_000, 6.0), flat(T0 + 1_000, 7.0)]).await.unwrap();
    let points = one(&store, plan(Tier::Raw, T0, T0 + 2_000, 1_000), Metric::CpuLoad15).await;
    assert_eq!(points, vec![pt(T0, 5.0, 5.0, 5.0), pt(T0 + 1_000, 7.0, 7.0, 7.0)]);
}

#[tokio::test]
async fn non_finite_values_are_stored_as_missing_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let nan_cpu = |ts: i64| sample(ts, |m| if m == Metric::CpuUsagePercent { f64::NAN } else { 3.0 });
    store.save_samples(&[nan_cpu(T0), flat(T0 + 10_000, 5.0), nan_cpu(T0 + 11_000)]).await.unwrap();
    let p = plan(Tier::Raw, T0, T0 + 20_000, 10_000);
    let series = store.query(&p, &[Metric::CpuUsagePercent, Metric::CpuLoad1]).await.unwrap();
    // CPU had no value in the first bucket: that point is left out, the load's is not.
    assert_eq!(series[0].points, vec![pt(T0 + 10_000, 5.0, 5.0, 5.0)]);
    assert_eq!(series[1].points, vec![pt(T0, 3.0, 3.0, 3.0), pt(T0 + 10_000, 4.0, 3.0, 5.0)]);
    // Roll-ups skip the missing values too.
    store.roll_up(UnixMillis(T0 + MIN)).await.unwrap();
    let minute = one(&store, plan(Tier::Minute, T0, T0 + MIN, MIN), Metric::CpuUsagePercent).await;
    assert_eq!(minute, vec![pt(T0, 5.0, 5.0, 5.0)]);
}

#[tokio::test]
async fn empty_store_and_empty_ranges_give_empty_series() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    for tier in Tier::ALL {
        let series = store.query(&plan(tier, T0, T0 + HOUR, MIN), &[Metric::CpuLoad1, Metric::CpuLoad5]).await.unwrap();
        assert_eq!(
            series,
            vec![
                Series { metric: Metric::CpuLoad1, points: vec![] },
                Series { metric: Metric::CpuLoad5, points: vec![] }
            ]
        );
    }
    assert!(store.query(&plan(Tier::Raw, T0, T0 + HOUR, MIN), &[]).await.unwrap().is_empty());
    store.save_samples(&[flat(T0, 1.0)]).await.unwrap();
    // from == to, and a range after the data.
    assert!(one(&store, plan(Tier::Raw, T0, T0, 1_000), Metric::CpuLoad1).await.is_empty());
    assert!(one(&store, plan(Tier::Raw, T0 + 1, T0 + MIN, 1_000), Metric::CpuLoad1).await.is_empty());
    assert!(store.query(&plan(Tier::Raw, T0, T0 + 1, 0), &[Metric::CpuLoad1]).await.is_err());
    assert_eq!(store.latest_sample_time().await.unwrap(), Some(UnixMillis(T0)));
    store.save_samples(&[]).await.unwrap();
}

#[tokio::test]
async fn minute_rollups_equal_the_raw_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let mut sim = HostSim::new(T0 + 17_000, 1_000);
    store.save_samples(&sim.take(5 * 60)).await.unwrap();
    let until = T0 + 5 * MIN;
    let report = store.roll_up(UnixMillis(until)).await.unwrap();
    assert_eq!(report, RollupReport { minutes: 5, hours: 0, ..Default::default() });

    for m in Metric::ALL {
        let raw = one(&store, plan(Tier::Raw, T0, until, MIN), *m).await;
        let minutes = one(&store, plan(Tier::Minute, T0, until, MIN), *m).await;
        assert_eq!(raw.len(), 5, "{m}");
        assert_eq!(minutes.len(), 5, "{m}");
        for (r, k) in raw.iter().zip(&minutes) {
            assert_eq!((r.t, r.min, r.max), (k.t, k.min, k.max), "{m}");
            assert!((r.avg - k.avg).abs() <= 1e-9 * r.avg.abs().max(1.0), "{m}: {} vs {}", r.avg, k.avg);
        }
    }
    // The first minute only has the 43 samples from :17 on.
    let first = one(&store, plan(Tier::Minute, T0, T0 + MIN, MIN), Metric::CpuLoad1).await;
    assert_eq!(first[0].t, UnixMillis(T0));
}

#[tokio::test]
async fn hour_average_is_weighted_by_samples() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    // Minute 0: 60 samples at 10. Minute 1: 30 samples (every 2 s) at 40.
    let mut samples: Vec<_> = (0..60).map(|i| flat(T0 + i * 1_000, 10.0)).collect();
    samples.extend((0..30).map(|i| flat(T0 + MIN + i * 2_000, 40.0)));
    store.save_samples(&samples).await.unwrap();
    let report = store.roll_up(UnixMillis(T0 + HOUR)).await.unwrap();
    assert_eq!(report, RollupReport { minutes: 2, hours: 1, ..Default::default() });

    let hour = one(&store, plan(Tier::Hour, T0, T0 + HOUR, HOUR), Metric::CpuUsagePercent).await;
    // 90 samples averaging 20, not the mean of the minute means (25).
    assert_eq!(hour, vec![pt(T0, 20.0, 10.0, 40.0)]);
    // A query bucket over both minute rows weights them the same way.
    let merged = one(&store, plan(Tier::Minute, T0, T0 + 2 * MIN, 2 * MIN), Metric::CpuUsagePercent).await;
    assert_eq!(merged, vec![pt(T0, 20.0, 10.0, 40.0)]);
}

#[tokio::test]
async fn roll_up_is_idempotent_and_leaves_partial_periods() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    // 90 minutes of samples every 10 s.
    let samples: Vec<_> = (0..540).map(|i| flat(T0 + i * 10_000, (i % 7) as f64)).collect();
    store.save_samples(&samples).await.unwrap();

    // Until 01:02:30 is floored to 01:02: minutes 0..62 and hour 0 are complete.
    let report = store.roll_up(UnixMillis(T0 + HOUR + 2 * MIN + 30_000)).await.unwrap();
    assert_eq!(report, RollupReport { minutes: 62, hours: 1, ..Default::default() });
    let minutes_before = one(&store, plan(Tier::Minute, T0, T0 + 2 * HOUR, MIN), Metric::CpuLoad1).await;
    let hours_before = one(&store, plan(Tier::Hour, T0, T0 + 2 * HOUR, HOUR), Metric::CpuLoad1).await;
    assert_eq!(minutes_before.len(), 62);
    assert_eq!(minutes_before.last().unwrap().t, UnixMillis(T0 + HOUR + MIN));

    // Again with the same `until`: nothing written, nothing changed.
    assert_eq!(store.roll_up(UnixMillis(T0 + HOUR + 2 * MIN)).await.unwrap(), RollupReport::default());
    assert_eq!(one(&store, plan(Tier::Minute, T0, T0 + 2 * HOUR, MIN), Metric::CpuLoad1).await, minutes_before);
    assert_eq!(one(&store, plan(Tier::Hour, T0, T0 + 2 * HOUR, HOUR), Metric::CpuLoad1).await, hours_before);
    // An older `until` does not roll anything back or twice either.
    assert_eq!(store.roll_up(UnixMillis(T0 + 10 * MIN)).await.unwrap(), RollupReport::default());

    // Later: the rest of the minutes; hour 1 is still incomplete.
    let report = store.roll_up(UnixMillis(T0 + 2 * HOUR - MIN)).await.unwrap();
    assert_eq!(report, RollupReport { minutes: 28, hours: 0, ..Default::default() });
    let report = store.roll_up(UnixMillis(T0 + 2 * HOUR)).await.unwrap();
    assert_eq!(report, RollupReport { minutes: 0, hours: 1, ..Default::default() });
    let hours = one(&store, plan(Tier::Hour, T0, T0 + 2 * HOUR, HOUR), Metric::CpuLoad1).await;
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[0], hours_before[0]);
}

#[tokio::test]
async fn roll_up_jumps_over_gaps_and_spans_many_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    // One sample a minute for 14 hours, then a two-day outage, then one hour.
    let mut samples: Vec<_> = (0..14 * 60).map(|i| flat(T0 + i * MIN, 1.0)).collect();
    let back = T0 + 14 * HOUR + 2 * UnixMillis::DAY;
    samples.extend((0..60).map(|i| flat(back + i * MIN + 5_000, 2.0)));
    store.save_samples(&samples).await.unwrap();
    let report = store.roll_up(UnixMillis(back + HOUR)).await.unwrap();
    assert_eq!(report, RollupReport { minutes: 15 * 60, hours: 15, ..Default::default() });
    let hours = one(&store, plan(Tier::Hour, T0, back + HOUR, HOUR), Metric::CpuLoad1).await;
    assert_eq!(hours.len(), 15);
    assert_eq!(hours[14], pt(back, 2.0, 2.0, 2.0));
}

#[tokio::test]
async fn a_minute_plan_reads_the_minute_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    store.save_samples(&(0..60).map(|i| flat(T0 + i * 1_000, 1.0)).collect::<Vec<_>>()).await.unwrap();
    store.roll_up(UnixMillis(T0 + MIN)).await.unwrap();
    // Rewrite the raw rows: only a read of history_1m still sees the old values.
    store.save_samples(&(0..60).map(|i| flat(T0 + i * 1_000, 9.0)).collect::<Vec<_>>()).await.unwrap();
    let p = |tier| plan(tier, T0, T0 + MIN, MIN);
    assert_eq!(one(&store, p(Tier::Minute), Metric::DiskReadBytesPerSec).await, vec![pt(T0, 1.0, 1.0, 1.0)]);
    assert_eq!(one(&store, p(Tier::Raw), Metric::DiskReadBytesPerSec).await, vec![pt(T0, 9.0, 9.0, 9.0)]);
    assert!(one(&store, p(Tier::Hour), Metric::DiskReadBytesPerSec).await.is_empty(), "the hour is not complete");
}

#[tokio::test]
async fn prune_keeps_the_cutoff_instant_and_removes_one_ms_older() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let now = UnixMillis(T0 + 30 * UnixMillis::DAY);
    let retention = RetentionPolicy { raw_ms: HOUR, minute_ms: UnixMillis::DAY, hour_ms: 7 * UnixMillis::DAY };
    let raw_cut = retention.cutoff(Tier::Raw, now).0;
    // Raw rows on both sides of the raw cutoff; everything up to `now` rolled up.
    store.save_samples(&[flat(raw_cut - 1, 1.0), flat(raw_cut, 2.0), flat(now.0 - 1_000, 3.0)]).await.unwrap();
    // Minute and hour rows on both sides of their cutoffs, built from raw samples
    // far in the past and rolled before the recent ones.
    let minute_cut = retention.cutoff(Tier::Minute, now).0;
    let hour_cut = retention.cutoff(Tier::Hour, now).0;
    store
        .save_samples(&[
            flat(hour_cut - HOUR, 4.0),
            flat(hour_cut, 5.0),
            flat(minute_cut - MIN, 6.0),
            flat(minute_cut, 7.0),
        ])
        .await
        .unwrap();
    let rolled = store.roll_up(now).await.unwrap();
    // Seven minutes; six hours (raw_cut and now - 1 s share the last one).
    assert_eq!(rolled, RollupReport { minutes: 7, hours: 6, ..Default::default() });

    let report = store.prune(&retention, now).await.unwrap();
    // Raw: everything before raw_cut (5 rows, incl. raw_cut - 1); minutes: the three
    // before minute_cut; hours: the one before hour_cut.
    assert_eq!(report, PruneReport { raw: 5, minutes: 3, hours: 1, ..Default::default() });
    let raw = one(&store, plan(Tier::Raw, 0, now.0, 1_000), Metric::CpuLoad1).await;
    assert_eq!(raw.iter().map(|p| p.min).collect::<Vec<_>>(), [2.0, 3.0]);
    let minutes = one(&store, plan(Tier::Minute, 0, now.0, MIN), Metric::CpuLoad1).await;
    assert_eq!(minutes.first().unwrap().t, UnixMillis(minute_cut));
    let hours = one(&store, plan(Tier::Hour, 0, now.0, HOUR), Metric::CpuLoad1).await;
    assert_eq!(hours.first().unwrap().t, UnixMillis(hour_cut));
    // A second pass finds nothing more.
    assert_eq!(store.prune(&retention, now).await.unwrap(), PruneReport::default());
}

#[tokio::test]
async fn prune_never_drops_rows_that_are_not_rolled_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let now = UnixMillis(T0 + 10 * UnixMillis::DAY);
    let everything_old = RetentionPolicy { raw_ms: 1, minute_ms: 1, hour_ms: 30 * UnixMillis::DAY };
    // Three hours of old samples, never rolled: all survive.
    let samples: Vec<_> = (0..180).map(|i| flat(T0 + i * MIN, 1.0)).collect();
    store.save_samples(&samples).await.unwrap();
    assert_eq!(store.prune(&everything_old, now).await.unwrap(), PruneReport::default());

    // Roll the first 90 minutes: hour 0 is complete, minutes 60..90 are not in an hour yet.
    store.roll_up(UnixMillis(T0 + 90 * MIN)).await.unwrap();
    let report = store.prune(&everything_old, now).await.unwrap();
    assert_eq!(report, PruneReport { raw: 90, minutes: 60, hours: 0, ..Default::default() });
    let raw = one(&store, plan(Tier::Raw, T0, now.0, MIN), Metric::CpuLoad1).await;
    assert_eq!(raw.first().unwrap().t, UnixMillis(T0 + 90 * MIN), "un-rolled raw rows survive");
    let minutes = one(&store, plan(Tier::Minute, T0, now.0, MIN), Metric::CpuLoad1).await;
    assert_eq!(minutes.len(), 30, "minutes not yet in an hour survive");
    assert_eq!(minutes.first().unwrap().t, UnixMillis(T0 + HOUR));
}

#[tokio::test]
async fn prune_removes_more_than_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let mut sim = HostSim::new(T0, 1_000);
    for _ in 0..5 {
        store.save_samples(&sim.take(5_000)).await.unwrap();
    }
    store.roll_up(UnixMillis(T0 + 25_000 * 1_000)).await.unwrap();
    let now = UnixMillis(T0 + 25_000 * 1_000);
    let report =
        store.prune(&RetentionPolicy { raw_ms: 1_000 * 1_000, ..RetentionPolicy::DEFAULT }, now).await.unwrap();
    assert_eq!(report.raw, 24_000);
    assert_eq!(store.latest_sample_time().await.unwrap(), Some(UnixMillis(T0 + 24_999 * 1_000)));
}

#[tokio::test]
async fn latest_sample_time_falls_back_to_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    assert_eq!(store.latest_sample_time().await.unwrap(), None);
    store.save_samples(&[flat(T0 + 5_000, 1.0), flat(T0 + 65_000, 1.0)]).await.unwrap();
    assert_eq!(store.latest_sample_time().await.unwrap(), Some(UnixMillis(T0 + 65_000)));
    store.roll_up(UnixMillis(T0 + 2 * MIN)).await.unwrap();
    let gone = RetentionPolicy { raw_ms: 0, ..RetentionPolicy::DEFAULT };
    store.prune(&gone, UnixMillis(T0 + 3 * MIN)).await.unwrap();
    assert_eq!(store.latest_sample_time().await.unwrap(), Some(UnixMillis(T0 + MIN)), "newest minute row");
}

#[tokio::test]
async fn reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    store.save_samples(&[flat(T0, 1.5), flat(T0 + 1_000, 2.5)]).await.unwrap();
    store.close().await.unwrap();
    assert!(
        !dir.path().join("h.db-wal").exists() || std::fs::metadata(dir.path().join("h.db-wal")).unwrap().len() == 0
    );

    let store = open_in(dir.path(), "h.db").await;
    assert_eq!(store.latest_sample_time().await.unwrap(), Some(UnixMillis(T0 + 1_000)));
    let points = one(&store, plan(Tier::Raw, T0, T0 + 2_000, 2_000), Metric::MemoryUsagePercent).await;
    assert_eq!(points, vec![pt(T0, 2.0, 1.5, 2.5)]);
}

#[tokio::test]
async fn realistic_rows_take_under_121_bytes_each() {
    // 10 MiB / 86,400 samples a day = 121.4 bytes per row, roll-ups included.
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(dir.path(), "h.db").await;
    let empty = {
        let s = open_in(dir.path(), "empty.db").await;
        size_after_close(s).await
    };
    let mut sim = HostSim::new(T0, 1_000);
    const ROWS: usize = 20_000;
    for _ in 0..ROWS / 60 {
        store.save_samples(&sim.take(60)).await.unwrap();
    }
    store.save_samples(&sim.take(ROWS % 60)).await.unwrap();
    store.roll_up(UnixMillis(T0 + ROWS as i64 * 1_000)).await.unwrap();
    let size = size_after_close(store).await;
    let per_row = (size - empty) as f64 / ROWS as f64;
    println!("{size} bytes for {ROWS} rows and their roll-ups: {per_row:.1} bytes/row");
    assert!(per_row < 121.0, "{per_row:.1} bytes per row");
}
