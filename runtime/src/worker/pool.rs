//! How many tasks a worker runs at once and how many messages it holds, changeable while it
//! runs (Celery's `pool_grow` and `pool_shrink`).
//!
//! A Celerity task is a future on the worker's runtime, not a child process: the "pool" is
//! two semaphores. `slots` has one permit per task allowed to run; `prefetch` one per
//! message the worker may hold from the broker (running or waiting), `concurrency ×
//! prefetch_multiplier`. Growing adds permits; shrinking takes them away for good, at once
//! where they are free and as running tasks finish otherwise, as Celery's prefork pool
//! retires a process only once it is idle (`billiard/pool.py::Pool.shrink`). The prefetch
//! window follows, as Celery's `Consumer._update_prefetch_count` raises or lowers the QoS
//! by `n × prefetch_multiplier`.

use std::sync::Arc;

use tokio::sync::{Semaphore, watch};

/// The most tasks a worker may be grown to run at once: far beyond what one process
/// runs, and low enough that the prefetch window stays within what the semaphores and the
/// broker's prefetch count hold.
const MAX_CONCURRENCY: usize = 1 << 20;

/// The worker's concurrency and prefetch window.
pub(crate) struct Pool {
    /// One permit per running task: the concurrency limit.
    pub slots: Arc<Semaphore>,
    /// One permit per message held from the broker and not waiting for its ETA.
    pub prefetch: Arc<Semaphore>,
    /// Messages held per concurrency slot (`worker_prefetch_multiplier`).
    multiplier: usize,
    /// How many tasks may run at once; the window is this times `multiplier`. Watched by
    /// the consumer, which sets the broker's prefetch count from it.
    concurrency: watch::Sender<usize>,
}

/// Why the pool cannot shrink as asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeepsOneSlot {
    pub concurrency: usize,
}

impl Pool {
    /// A pool running `concurrency` tasks at once, holding `multiplier` messages per slot.
    pub(crate) fn new(concurrency: usize, multiplier: usize) -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(concurrency)),
            prefetch: Arc::new(Semaphore::new(concurrency.saturating_mul(multiplier))),
            multiplier,
            concurrency: watch::channel(concurrency).0,
        }
    }

    /// How many tasks may run at once.
    pub(crate) fn concurrency(&self) -> usize {
        *self.concurrency.borrow()
    }

    /// Messages held per slot.
    pub(crate) fn multiplier(&self) -> usize {
        self.multiplier
    }

    /// The prefetch window: how many messages the worker may hold, `concurrency ×
    /// prefetch_multiplier`.
    pub(crate) fn window(&self) -> usize {
        self.concurrency().saturating_mul(self.multiplier)
    }

    /// Watches the concurrency, for the consumer to follow the window.
    pub(crate) fn changes(&self) -> watch::Receiver<usize> {
        self.concurrency.subscribe()
    }

    /// Lets `n` more tasks run at once (up to a million), and `n × multiplier` more
    /// messages be held; returns the new concurrency.
    pub(crate) fn grow(&self, n: usize) -> usize {
        let mut grown = 0;
        self.concurrency.send_if_modified(|c| {
            let by = n.min(MAX_CONCURRENCY.saturating_sub(*c));
            self.slots.add_permits(by);
            self.prefetch
                .add_permits(by.saturating_mul(self.multiplier));
            *c += by;
            grown = *c;
            by > 0
        });
        grown
    }

    /// Lets `n` fewer tasks run at once, keeping at least one slot. Free permits go at
    /// once; the others as the tasks holding them finish, before any waiting task gets
    /// one (the semaphores are fair, so the larger request at their head goes first).
    pub(crate) fn shrink(&self, n: usize) -> Result<usize, KeepsOneSlot> {
        let mut outcome = Ok(0);
        self.concurrency.send_if_modified(|c| {
            if n >= *c {
                outcome = Err(KeepsOneSlot { concurrency: *c });
                return false;
            }
            *c -= n;
            outcome = Ok(*c);
            n > 0
        });
        let left = outcome?;
        retire(&self.slots, n);
        retire(&self.prefetch, n.saturating_mul(self.multiplier));
        Ok(left)
    }
}

/// Takes `count` permits out of `semaphore` for good: those free now at once, the rest as
/// they are released (or never, if the semaphore is closed first, as a stopping worker
/// closes it).
fn retire(semaphore: &Arc<Semaphore>, count: usize) {
    let free = semaphore.forget_permits(count);
    let Ok(rest) = u32::try_from(count - free) else {
        return;
    };
    if rest == 0 {
        return;
    }
    let semaphore = semaphore.clone();
    tokio::spawn(async move {
        if let Ok(permits) = semaphore.acquire_many_owned(rest).await {
            permits.forget();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growing_and_shrinking_change_the_slots_and_the_window() {
        let pool = Pool::new(2, 4);
        assert_eq!((pool.concurrency(), pool.window()), (2, 8));
        let mut changes = pool.changes();
        assert_eq!(pool.grow(3), 5);
        assert!(changes.has_changed().unwrap());
        assert_eq!(*changes.borrow_and_update(), 5);
        assert_eq!(pool.slots.available_permits(), 5);
        assert_eq!(pool.prefetch.available_permits(), 20);

        assert_eq!(pool.shrink(4), Ok(1));
        assert_eq!((pool.concurrency(), pool.window()), (1, 4));
        assert_eq!(pool.slots.available_permits(), 1);
        assert_eq!(pool.prefetch.available_permits(), 4);
        assert_eq!(
            pool.shrink(1),
            Err(KeepsOneSlot { concurrency: 1 }),
            "a worker keeps one slot"
        );
        assert_eq!(pool.concurrency(), 1);
        assert_eq!(pool.grow(usize::MAX), MAX_CONCURRENCY, "bounded");
        assert_eq!(pool.slots.available_permits(), MAX_CONCURRENCY);
    }

    #[tokio::test]
    async fn a_slot_in_use_is_retired_when_its_task_finishes() {
        let pool = Pool::new(2, 1);
        let running = pool.slots.clone().acquire_owned().await.unwrap();
        let other = pool.slots.clone().acquire_owned().await.unwrap();
        assert_eq!(pool.shrink(1), Ok(1));
        drop(running);
        tokio::task::yield_now().await;
        assert_eq!(
            pool.slots.available_permits(),
            0,
            "the freed slot went to the shrink, not to the next task"
        );
        drop(other);
        assert_eq!(pool.slots.available_permits(), 1);
    }
}
