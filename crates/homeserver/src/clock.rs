//! The wall clock, on tokio's timer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use homeserver_domain::{Clock, UnixMillis};

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        UnixMillis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    async fn sleep_until(&self, deadline: UnixMillis) {
        // Re-check after waking: the wall clock may have been stepped while
        // we slept, and a tick must never fire early.
        loop {
            let left = deadline.as_millis() - self.now().as_millis();
            if left <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(left as u64)).await;
        }
    }
}
