//! The one clock of costream: wall-clock milliseconds since the Unix epoch, injected everywhere
//! time is read (request timestamps here; leases, dedupe windows and the 10 s StreamURL rule in the
//! shell and the simulator), so tests and the deterministic simulation control time.
//!
//! It lives in this crate because this is the lowest layer that reads time (every signed request
//! carries a `Timestamp`); the pure core never reads a clock, time reaches it as event data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use time::OffsetDateTime;

/// Wall-clock time.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// The same instant in UTC (whole milliseconds).
    fn now_utc(&self) -> OffsetDateTime {
        let ms = i128::from(self.now_ms());
        OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        #[allow(clippy::disallowed_methods)] // the one place that reads the system time
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock set by hand (tests, the demo).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at_ms(ms: u64) -> Self {
        ManualClock(AtomicU64::new(ms))
    }
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance_ms(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

// Shared ownership: the local server and tests hand one clock to several parts.
impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_millis() {
        let c = ManualClock::at_ms(1_704_164_645_123);
        assert_eq!(c.now_utc().unix_timestamp(), 1_704_164_645);
        assert_eq!(c.now_utc().millisecond(), 123);
        c.advance_ms(877);
        assert_eq!(c.now_utc().unix_timestamp(), 1_704_164_646);
    }
}
