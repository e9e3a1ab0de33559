//! Static descriptions of tasks, built by generated code in `const` context.

use std::time::Duration;

/// One argument of a task, in positional order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// The argument's name (also its keyword on the wire).
    pub name: &'static str,
    /// Whether a caller must supply it (no default and not optional).
    pub required: bool,
}

impl ArgSpec {
    /// An argument called `name`.
    pub const fn new(name: &'static str, required: bool) -> Self {
        ArgSpec { name, required }
    }
}

/// How retry delays grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `delay * 2^retries`, capped by `max_delay` (Celery's `retry_backoff`).
    Exponential,
}

/// Automatic retry policy of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Base delay.
    pub delay: Duration,
    /// Upper bound of the delay.
    pub max_delay: Duration,
    /// How the delay grows.
    pub backoff: Backoff,
    /// Randomise each delay in `0..=delay` (full jitter, as Celery's `retry_jitter`).
    pub jitter: bool,
    /// `exc_type`s retried automatically; empty means only explicit retries.
    pub on: &'static [&'static str],
}

impl RetryPolicy {
    /// Celery's defaults: 3 retries, 180 s apart, no automatic retry.
    pub const fn new() -> Self {
        RetryPolicy {
            max_retries: 3,
            delay: Duration::from_secs(180),
            max_delay: Duration::from_secs(600),
            backoff: Backoff::Fixed,
            jitter: false,
            on: &[],
        }
    }

    /// Sets the number of retries.
    pub const fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Sets the base delay.
    pub const fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the delay cap.
    pub const fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Doubles the delay on each retry.
    pub const fn exponential(mut self) -> Self {
        self.backoff = Backoff::Exponential;
        self
    }

    /// Enables or disables full jitter.
    pub const fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the error types retried automatically.
    pub const fn on(mut self, on: &'static [&'static str]) -> Self {
        self.on = on;
        self
    }

    /// The delay before retry number `retries + 1` (without jitter).
    pub fn delay_for(&self, retries: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed => self.delay.min(self.max_delay.max(self.delay)),
            Backoff::Exponential => {
                crate::backoff::Backoff::new(self.delay, self.max_delay).delay(retries + 1)
            }
        }
    }

    /// Whether an error of type `exc_type` is retried automatically.
    pub fn retries_on(&self, exc_type: &str) -> bool {
        self.on.contains(&exc_type)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// A rate limit: at most `count` starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts allowed per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
}

/// Everything the runtime knows about a task: its wire name, arguments and options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// Wire name (`headers.task`).
    pub name: &'static str,
    /// Arguments in positional order.
    pub args: &'static [ArgSpec],
    /// Queue it is sent to.
    pub queue: &'static str,
    /// Routing key; the queue name when `None`.
    pub routing_key: Option<&'static str>,
    /// Default message priority.
    pub priority: Option<u8>,
    /// Retry policy; `None` means no retries at all.
    pub retry: Option<RetryPolicy>,
    /// Default expiry, relative to sending.
    pub expires: Option<Duration>,
    /// Soft time limit.
    pub soft_time_limit: Option<Duration>,
    /// Hard time limit.
    pub time_limit: Option<Duration>,
    /// Acknowledge after the result is stored.
    pub acks_late: bool,
    /// Store no result.
    pub ignore_result: bool,
    /// Store STARTED before running.
    pub track_started: bool,
    /// Rate limit per worker.
    pub rate_limit: Option<RateLimit>,
}

impl TaskSpec {
    /// A task with Celery's defaults: queue `celery`, no limits, early ack.
    pub const fn new(name: &'static str, args: &'static [ArgSpec]) -> Self {
        TaskSpec {
            name,
            args,
            queue: "celery",
            routing_key: None,
            priority: None,
            retry: None,
            expires: None,
            soft_time_limit: None,
            time_limit: None,
            acks_late: false,
            ignore_result: false,
            track_started: false,
            rate_limit: None,
        }
    }

    /// Sets the queue.
    pub const fn queue(mut self, queue: &'static str) -> Self {
        self.queue = queue;
        self
    }

    /// Sets the routing key.
    pub const fn routing_key(mut self, key: &'static str) -> Self {
        self.routing_key = Some(key);
        self
    }

    /// Sets the default priority.
    pub const fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the retry policy.
    pub const fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets the default expiry.
    pub const fn expires(mut self, after: Duration) -> Self {
        self.expires = Some(after);
        self
    }

    /// Sets the soft time limit.
    pub const fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.soft_time_limit = Some(limit);
        self
    }

    /// Sets the hard time limit.
    pub const fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Sets late acknowledgement.
    pub const fn acks_late(mut self, acks_late: bool) -> Self {
        self.acks_late = acks_late;
        self
    }

    /// Sets whether results are stored.
    pub const fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = ignore;
        self
    }

    /// Sets whether STARTED is recorded.
    pub const fn track_started(mut self, track: bool) -> Self {
        self.track_started = track;
        self
    }

    /// Sets the rate limit: `count` starts per `period`.
    pub const fn rate_limit(mut self, count: u32, period: Duration) -> Self {
        self.rate_limit = Some(RateLimit { count, period });
        self
    }

    /// The routing key messages of this task are published with.
    pub fn routing_key_or_queue(&self) -> &'static str {
        self.routing_key.unwrap_or(self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::new()
            .delay(Duration::from_secs(1))
            .max_delay(Duration::from_secs(5))
            .exponential();
        let delays: Vec<u64> = (0..5).map(|r| policy.delay_for(r).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(RetryPolicy::new().delay_for(7), Duration::from_secs(180));
    }
}
