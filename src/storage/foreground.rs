//! The produce work in flight on one shard, so that the log cleaner can
//! take its steps between produce requests rather than in front of them.
//!
//! glommio never interrupts a task: while a cleaner step runs (up to about
//! 100 µs of filtering batches) or one of its file operations is being
//! submitted, a produce write or fdatasync that completes, and a request
//! that arrives, wait for it. Taken whenever the cleaner's rest ended, such
//! steps made the latency partitions' flushes that began inside a pass
//! take a third longer at the median and twice as long at p99, even while
//! the cleaner only mapped keys from memory (perf/RESULTS.md, 2026-12-07
//! (morning)). So the cleaner waits, before each step and each file
//! operation, until no produce request and no flush round is in flight on
//! its shard, for at most a bound, then goes ahead anyway: under a load
//! that never pauses it still advances.
//!
//! One per shard (the group commit holds it); nothing leaves the shard.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::notify::Notify;

#[derive(Debug, Default)]
pub struct Foreground {
    in_flight: Cell<u32>,
    idle: Notify,
}

/// One piece of produce work in flight; it ends when this is dropped.
#[must_use = "the work ends when this is dropped"]
#[derive(Debug)]
pub struct InFlight(Rc<Foreground>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let left = self.0.in_flight.get().saturating_sub(1);
        self.0.in_flight.set(left);
        if left == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl Foreground {
    /// Counts a produce request, or a flush round, until the returned
    /// value is dropped.
    pub fn begin(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.get() == 0
    }

    /// Completes once nothing is in flight (`true`), or after `max_wait`
    /// with something still in flight (`false`).
    pub async fn until_idle(&self, max_wait: Duration) -> bool {
        let deadline = Instant::now() + max_wait;
        while !self.is_idle() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            futures_lite::future::or(self.idle.notified(), glommio::timer::sleep(left)).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use super::Foreground;

    fn on_executor<F, T>(test: T)
    where
        T: FnOnce() -> F + Send + 'static,
        F: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(test)
            .expect("executor")
            .join()
            .expect("join");
    }

    #[test]
    fn waits_until_the_last_work_ends() {
        on_executor(|| async {
            let foreground = Rc::new(Foreground::default());
            assert!(foreground.until_idle(Duration::ZERO).await);
            let first = foreground.begin();
            let second = foreground.begin();
            let ended = Rc::new(std::cell::Cell::new(0));
            let ending = ended.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(5)).await;
                drop(first);
                ending.set(1);
                glommio::timer::sleep(Duration::from_millis(5)).await;
                ending.set(2);
                drop(second);
            })
            .detach();
            assert!(foreground.until_idle(Duration::from_secs(10)).await);
            assert_eq!(ended.get(), 2, "idle only once both ended");
            assert!(foreground.is_idle());
        });
    }

    #[test]
    fn gives_up_after_the_bound() {
        on_executor(|| async {
            let foreground = Rc::new(Foreground::default());
            let _held = foreground.begin();
            let started = Instant::now();
            assert!(!foreground.until_idle(Duration::from_millis(20)).await);
            assert!(started.elapsed() >= Duration::from_millis(20));
            assert!(!foreground.is_idle());
        });
    }
}
