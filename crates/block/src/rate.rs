//! A token bucket in bytes per second, shared by the destagers of a node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket: `rate` bytes per second, holding at most `burst` bytes of credit. Debt is
/// allowed (a round larger than the credit runs, and later rounds wait it off), so the long-run
/// rate is exact whatever the round sizes.
pub struct RateLimiter {
    rate: AtomicU64,
    burst: AtomicU64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A bucket of `rate` bytes/s with `burst` bytes of credit, starting full.
    pub fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate: AtomicU64::new(rate.max(1)),
            burst: AtomicU64::new(burst),
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// The configured rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate from now on (the cluster configuration is applied while running).
    pub fn set_rate(&self, rate: u64) {
        let mut s = self.state.lock();
        self.refill(&mut s, Instant::now());
        self.rate.store(rate.max(1), Ordering::Relaxed);
    }

    /// Changes the rate and the credit a full bucket holds from now on (credit above the new
    /// bound is dropped; debt stays).
    pub fn set(&self, rate: u64, burst: u64) {
        let mut s = self.state.lock();
        self.refill(&mut s, Instant::now());
        self.rate.store(rate.max(1), Ordering::Relaxed);
        self.burst.store(burst, Ordering::Relaxed);
        s.0 = s.0.min(burst as f64);
    }

    /// The most credit the bucket holds.
    fn burst(&self) -> u64 {
        self.burst.load(Ordering::Relaxed)
    }

    fn refill(&self, s: &mut (f64, Instant), now: Instant) {
        let dt = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + dt * self.rate() as f64).min(self.burst() as f64);
        s.1 = now;
    }

    /// How long to wait before spending more (zero when there is credit).
    pub fn delay(&self) -> Duration {
        let mut s = self.state.lock();
        self.refill(&mut s, Instant::now());
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate() as f64)
        }
    }

    /// Spends `bytes` (possibly going into debt).
    pub fn spend(&self, bytes: u64) {
        let mut s = self.state.lock();
        self.refill(&mut s, Instant::now());
        s.0 -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_makes_callers_wait_in_proportion() {
        let l = RateLimiter::new(1_000_000, 0);
        assert_eq!(l.delay(), Duration::ZERO);
        l.spend(500_000);
        let d = l.delay();
        assert!(
            d > Duration::from_millis(400) && d <= Duration::from_millis(500),
            "{d:?}"
        );
    }

    #[test]
    fn a_new_rate_applies_to_the_debt() {
        let l = RateLimiter::new(1_000_000, 0);
        l.spend(1_000_000);
        l.set_rate(10_000_000);
        assert_eq!(l.rate(), 10_000_000);
        let d = l.delay();
        assert!(d <= Duration::from_millis(100), "{d:?}");
    }
}
