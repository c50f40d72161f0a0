//! Points in time as the domain sees them.

use std::fmt;

/// Milliseconds since the Unix epoch (UTC).
///
/// The domain keeps time as plain milliseconds: it is what time-series
/// points carry on the wire, it orders and subtracts cheaply, and it leaves
/// calendar formatting (RFC 3339) to the adapters at the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// One second.
    pub const SECOND: i64 = 1_000;
    /// One minute.
    pub const MINUTE: i64 = 60_000;
    /// One hour.
    pub const HOUR: i64 = 3_600_000;
    /// One day.
    pub const DAY: i64 = 86_400_000;

    /// The raw millisecond count.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `millis` (negative moves back), saturating.
    pub const fn add_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// The start of the `step`-millisecond bucket holding this instant.
    ///
    /// `step` must be positive; a non-positive step returns `self` unchanged.
    pub const fn floor_to(self, step: i64) -> Self {
        if step <= 0 {
            return self;
        }
        Self(self.0.div_euclid(step) * step)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_to_handles_negative_and_exact_values() {
        assert_eq!(UnixMillis(61_234).floor_to(UnixMillis::MINUTE), UnixMillis(60_000));
        assert_eq!(UnixMillis(60_000).floor_to(UnixMillis::MINUTE), UnixMillis(60_000));
        assert_eq!(UnixMillis(-1).floor_to(UnixMillis::MINUTE), UnixMillis(-60_000));
        assert_eq!(UnixMillis(5).floor_to(0), UnixMillis(5));
    }

    #[test]
    fn add_millis_saturates() {
        assert_eq!(UnixMillis(i64::MAX).add_millis(1), UnixMillis(i64::MAX));
        assert_eq!(UnixMillis(10).add_millis(-20), UnixMillis(-10));
    }
}
