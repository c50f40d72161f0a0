//! Tiered history: tiers, retention, queries, aggregates and tier choice.

use crate::error::FieldError;
use crate::metric::{HistoryMetric, Metric};
use crate::time::UnixMillis;

/// Most points one history query may ask for.
pub const MAX_POINTS: u32 = 2_000;

/// A storage tier of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Tier {
    /// Every sample as taken.
    Raw,
    /// One aggregate (avg/min/max) per minute.
    Minute,
    /// One aggregate per hour.
    Hour,
}

impl Tier {
    /// Tiers from the finest to the coarsest.
    pub const ALL: [Tier; 3] = [Tier::Raw, Tier::Minute, Tier::Hour];

    /// Width of one row of this tier; raw rows are one sampling interval wide.
    pub const fn resolution_ms(self, sampling_interval_ms: i64) -> i64 {
        match self {
            Self::Raw => sampling_interval_ms,
            Self::Minute => UnixMillis::MINUTE,
            Self::Hour => UnixMillis::HOUR,
        }
    }

    /// Wire name of the tier.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Minute => "1m",
            Self::Hour => "1h",
        }
    }
}

/// How long each tier keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RetentionPolicy {
    /// Raw samples (`retention.raw_hours`).
    pub raw_ms: i64,
    /// One-minute rollups (`retention.minute_days`).
    pub minute_ms: i64,
    /// One-hour rollups (`retention.hour_days`).
    pub hour_ms: i64,
}

impl RetentionPolicy {
    /// 168 h raw, 90 days of minutes, two years of hours.
    pub const DEFAULT: Self =
        Self { raw_ms: 168 * UnixMillis::HOUR, minute_ms: 90 * UnixMillis::DAY, hour_ms: 730 * UnixMillis::DAY };

    /// How long `tier` keeps rows.
    pub const fn keep_ms(&self, tier: Tier) -> i64 {
        match tier {
            Tier::Raw => self.raw_ms,
            Tier::Minute => self.minute_ms,
            Tier::Hour => self.hour_ms,
        }
    }

    /// Rows of `tier` strictly older than this instant are pruned at `now`.
    pub const fn cutoff(&self, tier: Tier, now: UnixMillis) -> UnixMillis {
        now.add_millis(-self.keep_ms(tier))
    }
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A validated request for history of the host's [`Metric`]s or, as
/// `HistoryQuery<ContainerMetric>`, of one container's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery<M = Metric> {
    metrics: Vec<M>,
    from: UnixMillis,
    to: UnixMillis,
    points: u32,
}

impl<M: HistoryMetric> HistoryQuery<M> {
    /// Validates a query; every failing field is reported.
    pub fn new(metrics: Vec<M>, from: UnixMillis, to: UnixMillis, points: u32) -> Result<Self, Vec<FieldError>> {
        Self::checked(metrics, from, to, points, MAX_POINTS)
    }

    /// A query for buckets of `step_ms`, as the seed-compatible `/api/history`
    /// asks (`resolution`), allowing at most `max_points` buckets.
    pub fn with_step(
        metrics: Vec<M>,
        from: UnixMillis,
        to: UnixMillis,
        step_ms: i64,
        max_points: u32,
    ) -> Result<Self, Vec<FieldError>> {
        if step_ms <= 0 {
            return Err(vec![FieldError::new("resolution", "must be positive")]);
        }
        let span = to.as_millis().saturating_sub(from.as_millis()).max(1);
        let points = ceil_div(span, step_ms);
        if points > i64::from(max_points) {
            return Err(vec![FieldError::new(
                "resolution",
                format!("too fine for this range: {points} points, at most {max_points}"),
            )]);
        }
        Self::checked(metrics, from, to, points.max(1) as u32, max_points)
    }

    fn checked(
        mut metrics: Vec<M>,
        from: UnixMillis,
        to: UnixMillis,
        points: u32,
        max_points: u32,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        if metrics.is_empty() {
            errors.push(FieldError::new("metrics", "name at least one metric"));
        }
        metrics.sort();
        metrics.dedup();
        if from >= to {
            errors.push(FieldError::new("from", "must be before `to`"));
        }
        if points == 0 || points > max_points {
            errors.push(FieldError::new("points", format!("must be between 1 and {max_points}")));
        }
        if errors.is_empty() { Ok(Self { metrics, from, to, points }) } else { Err(errors) }
    }

    /// The metrics asked for, sorted, without duplicates.
    pub fn metrics(&self) -> &[M] {
        &self.metrics
    }

    /// Start of the range (inclusive).
    pub fn from(&self) -> UnixMillis {
        self.from
    }

    /// End of the range (exclusive).
    pub fn to(&self) -> UnixMillis {
        self.to
    }

    /// Most points per series.
    pub fn points(&self) -> u32 {
        self.points
    }
}

/// The buckets a query is answered in: `[from, to)` cut into `step_ms` slices
/// starting at `from`, so there are never more than `points` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketPlan {
    /// Tier read.
    pub tier: Tier,
    /// First bucket starts here.
    pub from: UnixMillis,
    /// Rows at or after this are left out.
    pub to: UnixMillis,
    /// Width of one bucket, a multiple of the tier's resolution.
    pub step_ms: i64,
}

impl BucketPlan {
    /// Chooses the tier and bucket width for `query` at `now`.
    ///
    /// The coarsest tier that is still at least as fine as the step the query
    /// needs is read, provided its retention still covers `from`; when no
    /// such tier covers the range the finest covering tier is read instead
    /// (old data only survives in coarse tiers), and the step grows to its
    /// resolution. Host and container queries are planned alike.
    pub fn choose<M: HistoryMetric>(
        query: &HistoryQuery<M>,
        now: UnixMillis,
        retention: &RetentionPolicy,
        sampling_interval_ms: i64,
    ) -> Self {
        let span = query.to.as_millis() - query.from.as_millis();
        let wanted = ceil_div(span, i64::from(query.points)).max(1);
        let covers = |t: Tier| query.from >= retention.cutoff(t, now);
        let fits = |t: Tier| t.resolution_ms(sampling_interval_ms) <= wanted;
        let tier = Tier::ALL
            .iter()
            .rev()
            .copied()
            .find(|t| covers(*t) && fits(*t))
            .or_else(|| Tier::ALL.iter().copied().find(|t| covers(*t)))
            .unwrap_or(Tier::Hour);
        let res = tier.resolution_ms(sampling_interval_ms).max(1);
        let step_ms = ceil_div(wanted, res).max(1) * res;
        Self { tier, from: query.from, to: query.to, step_ms }
    }

    /// Index of the bucket holding `t`, if `t` is inside the plan.
    pub fn bucket_of(&self, t: UnixMillis) -> Option<i64> {
        (t >= self.from && t < self.to).then(|| (t.as_millis() - self.from.as_millis()) / self.step_ms)
    }

    /// Start of bucket `index`.
    pub fn bucket_start(&self, index: i64) -> UnixMillis {
        self.from.add_millis(index * self.step_ms)
    }
}

/// avg/min/max of a run of values, mergeable without losing the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Aggregate {
    /// Sum of the values (avg × count for merged aggregates).
    pub sum: f64,
    /// How many raw samples stand behind it.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Aggregate {
    /// One value.
    pub fn of(value: f64) -> Self {
        Self { sum: value, count: 1, min: value, max: value }
    }

    /// An aggregate stored as avg/min/max over `count` samples.
    pub fn from_avg(avg: f64, min: f64, max: f64, count: u64) -> Self {
        Self { sum: avg * count as f64, count, min, max }
    }

    /// Folds another aggregate in; the average stays weighted by sample count.
    pub fn merge(&mut self, other: &Aggregate) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.sum += other.sum;
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Mean of the values.
    pub fn avg(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum / self.count as f64 }
    }
}

/// One point of a series: a bucket's start and its avg/min/max.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Point {
    /// Start of the bucket.
    pub t: UnixMillis,
    /// Mean over the bucket.
    pub avg: f64,
    /// Smallest value in the bucket.
    pub min: f64,
    /// Largest value in the bucket.
    pub max: f64,
}

/// The points of one metric, oldest first; empty buckets are left out.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Series<M = Metric> {
    /// Which metric.
    pub metric: M,
    /// Its points.
    pub points: Vec<Point>,
}

/// The answer to a history query, of the host or of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryResult<M = Metric> {
    /// How it was read.
    pub plan: BucketPlan,
    /// One series per metric asked for, in the query's order.
    pub series: Vec<Series<M>>,
}

/// What one roll-up pass wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollupReport {
    /// Host minute rows written.
    pub minutes: u64,
    /// Host hour rows written.
    pub hours: u64,
    /// Container minute rows written (one per container and minute).
    pub container_minutes: u64,
    /// Container hour rows written.
    pub container_hours: u64,
}

/// What one prune pass removed, per tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// Host raw rows removed.
    pub raw: u64,
    /// Host minute rows removed.
    pub minutes: u64,
    /// Host hour rows removed.
    pub hours: u64,
    /// Container raw rows removed.
    pub container_raw: u64,
    /// Container minute rows removed.
    pub container_minutes: u64,
    /// Container hour rows removed.
    pub container_hours: u64,
}

impl PruneReport {
    /// Rows removed in all tiers, host and containers.
    pub fn total(&self) -> u64 {
        self.raw + self.minutes + self.hours + self.container_raw + self.container_minutes + self.container_hours
    }
}

/// `a / b` rounded up, for `a >= 0` and `b > 0`.
const fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    fn query(span_ms: i64, ago_ms: i64, points: u32) -> HistoryQuery {
        let to = NOW.add_millis(-ago_ms);
        HistoryQuery::new(vec![Metric::CpuUsagePercent], to.add_millis(-span_ms), to, points).unwrap()
    }

    #[test]
    fn validation_names_every_failing_field() {
        let errs = HistoryQuery::<Metric>::new(vec![], UnixMillis(10), UnixMillis(5), 0).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metrics", "from", "points"]);
        assert!(HistoryQuery::new(vec![Metric::CpuLoad1], UnixMillis(0), UnixMillis(1), MAX_POINTS + 1).is_err());
        assert!(HistoryQuery::new(vec![Metric::CpuLoad1], UnixMillis(0), UnixMillis(1), MAX_POINTS).is_ok());
    }

    #[test]
    fn container_queries_are_validated_like_host_queries() {
        use crate::container_history::ContainerMetric;
        let errs =
            HistoryQuery::<ContainerMetric>::new(vec![], UnixMillis(10), UnixMillis(10), MAX_POINTS + 1).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metrics", "from", "points"]);
        let q = HistoryQuery::new(vec![ContainerMetric::Pids], UnixMillis(0), UnixMillis(1), MAX_POINTS).unwrap();
        let plan = BucketPlan::choose(&q, NOW, &RetentionPolicy::DEFAULT, 1_000);
        let host = HistoryQuery::new(vec![Metric::CpuLoad1], UnixMillis(0), UnixMillis(1), MAX_POINTS).unwrap();
        assert_eq!(plan, BucketPlan::choose(&host, NOW, &RetentionPolicy::DEFAULT, 1_000));
    }

    #[test]
    fn duplicate_metrics_are_dropped() {
        let q = HistoryQuery::new(vec![Metric::CpuLoad1, Metric::CpuLoad1], UnixMillis(0), UnixMillis(10), 1).unwrap();
        assert_eq!(q.metrics(), &[Metric::CpuLoad1]);
    }

    #[test]
    fn one_hour_at_300_points_reads_raw_with_a_whole_number_of_samples() {
        let plan = BucketPlan::choose(&query(UnixMillis::HOUR, 0, 300), NOW, &RetentionPolicy::DEFAULT, 1_000);
        assert_eq!(plan.tier, Tier::Raw);
        assert_eq!(plan.step_ms, 12_000);
    }

    #[test]
    fn seven_days_at_300_points_reads_minutes() {
        let plan = BucketPlan::choose(&query(7 * UnixMillis::DAY, 0, 300), NOW, &RetentionPolicy::DEFAULT, 1_000);
        assert_eq!(plan.tier, Tier::Minute);
        assert_eq!(plan.step_ms % UnixMillis::MINUTE, 0);
        assert!(plan.step_ms >= 7 * UnixMillis::DAY / 300);
    }

    #[test]
    fn a_year_reads_hours() {
        let plan = BucketPlan::choose(&query(365 * UnixMillis::DAY, 0, 300), NOW, &RetentionPolicy::DEFAULT, 1_000);
        assert_eq!(plan.tier, Tier::Hour);
    }

    #[test]
    fn old_ranges_fall_back_to_the_finest_tier_that_still_holds_them() {
        // Ten minutes, eight days ago, at full resolution: raw is pruned by then.
        let plan = BucketPlan::choose(
            &query(10 * UnixMillis::MINUTE, 8 * UnixMillis::DAY, 600),
            NOW,
            &RetentionPolicy::DEFAULT,
            1_000,
        );
        assert_eq!(plan.tier, Tier::Minute);
        assert_eq!(plan.step_ms, UnixMillis::MINUTE);
        // Beyond the minute tier's 90 days only hours remain.
        let plan = BucketPlan::choose(
            &query(UnixMillis::HOUR, 100 * UnixMillis::DAY, 60),
            NOW,
            &RetentionPolicy::DEFAULT,
            1_000,
        );
        assert_eq!(plan.tier, Tier::Hour);
    }

    #[test]
    fn retention_boundary_is_inclusive_of_the_cutoff_instant() {
        let r = RetentionPolicy { raw_ms: UnixMillis::HOUR, ..RetentionPolicy::DEFAULT };
        let cutoff = r.cutoff(Tier::Raw, NOW);
        assert_eq!(cutoff, NOW.add_millis(-UnixMillis::HOUR));
        // A query starting exactly at the cutoff is still covered by raw.
        let q = HistoryQuery::new(vec![Metric::CpuLoad1], cutoff, NOW, 3_600.min(MAX_POINTS)).unwrap();
        assert_eq!(BucketPlan::choose(&q, NOW, &r, 1_000).tier, Tier::Raw);
        // One millisecond earlier it is not.
        let q = HistoryQuery::new(vec![Metric::CpuLoad1], cutoff.add_millis(-1), NOW, 2_000).unwrap();
        assert_eq!(BucketPlan::choose(&q, NOW, &r, 1_000).tier, Tier::Minute);
    }

    #[test]
    fn buckets_never_exceed_points() {
        for points in [1, 7, 299, 300, 2_000] {
            for span in [999, 60_000, 3_600_000, 7 * UnixMillis::DAY + 13] {
                let q = query(span, 0, points);
                let plan = BucketPlan::choose(&q, NOW, &RetentionPolicy::DEFAULT, 1_000);
                let last = plan.bucket_of(q.to().add_millis(-1)).unwrap();
                assert!(last < i64::from(points), "span {span} points {points} step {}", plan.step_ms);
            }
        }
    }

    #[test]
    fn bucket_of_is_half_open() {
        let plan = BucketPlan { tier: Tier::Raw, from: UnixMillis(1_000), to: UnixMillis(5_000), step_ms: 2_000 };
        assert_eq!(plan.bucket_of(UnixMillis(999)), None);
        assert_eq!(plan.bucket_of(UnixMillis(1_000)), Some(0));
        assert_eq!(plan.bucket_of(UnixMillis(2_999)), Some(0));
        assert_eq!(plan.bucket_of(UnixMillis(3_000)), Some(1));
        assert_eq!(plan.bucket_of(UnixMillis(5_000)), None);
        assert_eq!(plan.bucket_start(1), UnixMillis(3_000));
    }

    #[test]
    fn merged_average_is_weighted_by_sample_count() {
        // 60 samples at 10 and 30 samples at 40: the mean of all 90 is 20, not 25.
        let mut a = Aggregate::from_avg(10.0, 5.0, 15.0, 60);
        a.merge(&Aggregate::from_avg(40.0, 35.0, 50.0, 30));
        assert_eq!(a.count, 90);
        assert!((a.avg() - 20.0).abs() < 1e-9);
        assert_eq!((a.min, a.max), (5.0, 50.0));
    }

    #[test]
    fn merging_into_or_from_empty_keeps_the_other_side() {
        let empty = Aggregate { sum: 0.0, count: 0, min: 0.0, max: 0.0 };
        let mut a = empty;
        a.merge(&Aggregate::of(-3.0));
        assert_eq!((a.min, a.max, a.avg()), (-3.0, -3.0, -3.0));
        a.merge(&empty);
        assert_eq!(a.count, 1);
    }

    #[test]
    fn with_step_counts_points_and_refuses_too_fine_steps() {
        let q =
            HistoryQuery::with_step(vec![Metric::CpuLoad1], UnixMillis(0), UnixMillis(60_000), 1_000, 10_000).unwrap();
        assert_eq!(q.points(), 60);
        let e =
            HistoryQuery::with_step(vec![Metric::CpuLoad1], UnixMillis(0), UnixMillis(UnixMillis::DAY), 1_000, 10_000)
                .unwrap_err();
        assert_eq!(e[0].field, "resolution");
    }
}
