//! One backoff for every retry and reconnect: task retries, Redis operations and
//! subscriptions, AMQP reconnects and the worker's fetch loop all wait by this rule.

use std::time::Duration;

/// A delay that starts at `initial` and doubles with each attempt up to `max`. Task
/// retries that ask for jitter draw their delay with [`full_jitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    /// Doubling from `initial` up to `max`.
    pub(crate) const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The delay before attempt `attempt` (1-based: the first retry waits `initial`).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max.max(self.initial))
    }
}

/// A uniform delay in `0..=delay`, to the millisecond ("full jitter", Celery's
/// `retry_jitter`), so that many waiters do not come back at the same instant.
pub(crate) fn full_jitter(delay: Duration) -> Duration {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(random % millis.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_doubles_from_the_first_up_to_the_cap() {
        let backoff = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<u128> = (1..=6).map(|a| backoff.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(0), 100 * MS, "attempt 0 waits as attempt 1");
        assert_eq!(backoff.delay(u32::MAX), 1000 * MS, "no overflow");
    }

    #[test]
    fn a_cap_below_the_first_delay_leaves_the_first_delay() {
        assert_eq!(Backoff::new(5000 * MS, 1000 * MS).delay(3), 5000 * MS);
    }

    #[test]
    fn jitter_stays_within_the_delay() {
        let delays: Vec<Duration> = (0..200).map(|_| full_jitter(100 * MS)).collect();
        assert!(delays.iter().all(|d| *d <= 100 * MS));
        assert!(delays.iter().any(|d| *d < 50 * MS) && delays.iter().any(|d| *d > 50 * MS));
    }
}
