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
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMeter {
    last: Option<(u64, Instant)>,
}

impl CpuMeter {
    /// A meter with no reading yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `cpu_usage_ns` taken at `at` and returns the CPU percent
    /// since the previous reading (0 for the first one, for a counter that
    /// went backwards and when no time passed).
    pub fn update(&mut self, cpu_usage_ns: u64, at: Instant) -> f64 {
        let Some((previous_ns, previous_at)) = self.last.replace((cpu_usage_ns, at)) else {
            return 0.0;
        };
        let Some(used_ns) = cpu_usage_ns.checked_sub(previous_ns) else {
            return 0.0;
        };
        let elapsed_ns = at.saturating_duration_since(previous_at).as_nanos();
        if elapsed_ns == 0 {
            return 0.0;
        }
        used_ns as f64 / elapsed_ns as f64 * 100.0
    }

    /// Forgets the baseline: the next [`update`](Self::update) returns 0.
    pub fn reset(&mut self) {
        self.last = None;
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
    fn reset_forgets_the_baseline() {
        let mut meter = CpuMeter::new();
        let t0 = Instant::now();
        meter.update(1_000, t0);
        meter.reset();
        assert_eq!(meter.update(1_000_000_000, t0 + Duration::from_secs(1)), 0.0);
    }
}
