//! A token bucket, fed the current time by its caller.

use std::time::Instant;

/// Allows `rate` events per second on average and bursts of up to `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate), burst, tokens: burst, last: now }
    }

    /// Allows `per_minute` events a minute on average and bursts of up to `burst`.
    pub(crate) fn per_minute(per_minute: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(per_minute) / 60.0, burst, tokens: burst, last: now }
    }

    /// Whether the bucket would be full at `now` (its owner has been quiet long enough).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(now, 1)
    }

    /// Takes `n` tokens if there are that many (for byte budgets: `n` is a datagram's size).
    pub(crate) fn try_take_n(&mut self, now: Instant, n: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| bucket.try_take(t0)).count(), 5);
        // 10 per second: one more every 100 ms.
        assert!(!bucket.try_take(t0 + Duration::from_millis(50)));
        assert!(bucket.try_take(t0 + Duration::from_millis(150)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(160)));
        // Idle for an hour refills only to the burst.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..8).filter(|_| bucket.try_take(later)).count(), 5);
    }

    #[test]
    fn a_byte_budget_passes_datagrams_up_to_its_rate() {
        // 10 kB/s with a 20 kB burst, 1,200-byte datagrams.
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10_000, 20_000, t0);
        assert_eq!((0..40).filter(|_| bucket.try_take_n(t0, 1_200)).count(), 16);
        // Half a second refills 5,000 bytes (plus the 800 left over): four more datagrams.
        let later = t0 + Duration::from_millis(500);
        assert_eq!((0..40).filter(|_| bucket.try_take_n(later, 1_200)).count(), 4);
        // A datagram larger than the whole burst never passes.
        assert!(!bucket.try_take_n(t0 + Duration::from_secs(60), 20_001));
    }
}
