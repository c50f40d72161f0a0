//! CPU percent from successive cumulative CPU-time readings.

use std::time::Instant;

/// Turns successive cumulative CPU-time readings of one container into a
/// CPU percent, where 100 is one full core (as `docker stats` shows it).
///
/// Keep one per container (for example in a map keyed by container id) and
/// feed it every [`CgroupSample::cpu_usage_ns`](crate::CgroupSample) with
/// the instant the sample was taken. The first reading gives 0, and so does
/// a counter that went backwards (the container restarted into a new
/// cgroup); either way the reading becomes the new baseline. Call
/// [`reset`](Self::reset) when the container's init pid changes, so that a
/// new cgroup's counter is never compared with the old one's.
///
/// A reading less than 50 ms after the baseline (two readers of one
/// container at nearly the same time: the sampler and an API call) gives
/// the last figure and leaves the baseline: the kernel accounts a running
/// task's CPU time in steps of a scheduler tick, so over a few
/// milliseconds the ratio could read several hundred percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMeter {
    last: Option<(u64, Instant)>,
    percent: f64,
}

/// Shortest interval a CPU percent is computed over.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

impl CpuMeter {
    /// A meter with no reading yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `cpu_usage_ns` taken at `at` and returns the CPU percent
    /// since the previous reading (0 for the first one, for a counter that
    /// went backwards and when no time passed).
    pub fn update(&mut self, cpu_usage_ns: u64, at: Instant) -> f64 {
        let Some((previous_ns, previous_at)) = self.last else {
            self.last = Some((cpu_usage_ns, at));
            return 0.0;
        };
        let elapsed = at.saturating_duration_since(previous_at);
        let percent = match cpu_usage_ns.checked_sub(previous_ns) {
            // Rebase on a counter that went backwards (a new cgroup).
            None => 0.0,
            Some(_) if elapsed < MIN_INTERVAL => return self.percent,
            Some(used_ns) => used_ns as f64 / elapsed.as_nanos() as f64 * 100.0,
        };
        self.last = Some((cpu_usage_ns, at));
        self.percent = percent;
        percent
    }

    /// Forgets the baseline: the next [`update`](Self::update) returns 0.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_reading_is_zero() {
        let mut meter = CpuMeter::new();
        assert_eq!(meter.update(5_000_000_000, Instant::now()), 0.0);
    }

    #[test]
    fn one_full_core_is_100_and_two_are_200() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        meter.update(1_000_000_000, t0);
        let pct = meter.update(1_500_000_000, t0 + Duration::from_millis(500));
        assert!((pct - 100.0).abs() < 1e-9, "{pct}");
        let pct = meter.update(3_500_000_000, t0 + Duration::from_millis(1500));
        assert!((pct - 200.0).abs() < 1e-9, "{pct}");
        let pct = meter.update(3_600_000_000, t0 + Duration::from_millis(2500));
        assert!((pct - 10.0).abs() < 1e-9, "{pct}");
    }

    #[test]
    fn counter_going_backwards_is_zero_and_rebases() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        meter.update(9_000_000_000, t0);
        assert_eq!(meter.update(1_000_000, t0 + Duration::from_secs(1)), 0.0);
        let pct = meter.update(251_000_000, t0 + Duration::from_secs(2));
        assert!((pct - 25.0).abs() < 1e-9, "{pct}");
    }

    #[test]
    fn no_elapsed_time_is_zero() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        meter.update(1, t0);
        assert_eq!(meter.update(2, t0), 0.0);
    }

    #[test]
    fn a_reading_right_after_the_baseline_repeats_the_last_figure_and_keeps_the_baseline() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        meter.update(0, t0);
        assert!((meter.update(250_000_000, t0 + Duration::from_millis(250)) - 100.0).abs() < 1e-9);
        // 5 ms of CPU accounted in 1 ms (a tick's step) is not 500 %.
        let soon = t0 + Duration::from_millis(251);
        assert!((meter.update(255_000_000, soon) - 100.0).abs() < 1e-9);
        // The next figure spans from the kept baseline (250 ms).
        let pct = meter.update(375_000_000, t0 + Duration::from_millis(500));
        assert!((pct - 50.0).abs() < 1e-9, "{pct}");
    }

    #[test]
    fn reset_forgets_the_baseline() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        meter.update(1_000, t0);
        meter.reset();
        assert_eq!(meter.update(1_000_000_000, t0 + Duration::from_secs(1)), 0.0);
    }
}
