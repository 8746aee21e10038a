//! The uid pool: one uid per concurrent build, handed out in turn and
//! returned when the `Lease` is dropped, unless a process of it could not be
//! killed. Owns no processes; `Sandbox` decides when a uid is clear.

use super::error::Error;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Free uids and a permit per free uid.
pub(super) struct Pool {
    free: Mutex<VecDeque<u32>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    /// The uids of `uids`, but those `withdrawn`.
    pub(super) fn new(uids: Range<u32>, withdrawn: &[u32]) -> Pool {
        let free: VecDeque<u32> = uids.filter(|uid| !withdrawn.contains(uid)).collect();
        Pool {
            permits: Arc::new(Semaphore::new(free.len())),
            free: Mutex::new(free),
        }
    }

    /// Waits for a free uid. `run_as` replaces it as the lease's `uid()`
    /// (insecure mode: the server's own).
    pub(super) async fn take(self: &Arc<Pool>, run_as: Option<u32>) -> Lease {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let pooled = self
            .free
            .lock()
            .expect("the pool lock is never held across a panic")
            .pop_front()
            .expect("a permit means a free uid");
        Lease {
            pooled,
            uid: run_as.unwrap_or(pooled),
            tainted: AtomicBool::new(false),
            permit: Some(permit),
            pool: Arc::clone(self),
        }
    }
}

/// A uid of the pool, held for one build. Dropping it returns the uid,
/// unless processes of it outlived SIGKILL: then it stays out of the pool
/// (and the pool has one build slot less).
pub struct Lease {
    /// The uid taken from the pool.
    pooled: u32,
    /// What steps run as: `pooled`, or the server's uid in insecure mode.
    uid: u32,
    tainted: AtomicBool,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl Lease {
    /// The uid (and gid) steps of this lease run as; in insecure mode, the
    /// server's own uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The uid from the pool (what requests to the executor name).
    pub(super) fn pooled(&self) -> u32 {
        self.pooled
    }

    /// Passes `result` through, withdrawing the uid when it could not be cleared.
    pub(super) fn checked<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(Error::Leftover { .. }) = &result {
            self.tainted.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let permit = self
            .permit
            .take()
            .expect("a lease holds its permit until dropped");
        if self.tainted.load(Ordering::Relaxed) {
            tracing::error!(
                uid = self.pooled,
                "build uid withdrawn from the pool: its processes outlived SIGKILL"
            );
            permit.forget();
            return;
        }
        self.pool
            .free
            .lock()
            .expect("the pool lock is never held across a panic")
            .push_back(self.pooled);
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn uids_go_round_and_a_tainted_one_never_comes_back() {
        let pool = Arc::new(Pool::new(10..13, &[12]));
        let first = pool.take(None).await;
        assert_eq!(first.uid(), 10);
        drop(first);
        let second = pool.take(Some(1000)).await;
        assert_eq!((second.pooled(), second.uid()), (11, 1000));
        let third = pool.take(None).await;
        assert_eq!(third.uid(), 10);
        let _ = third.checked::<()>(Err(Error::Leftover {
            uid: 10,
            pids: vec![1],
        }));
        drop(third);
        drop(second);
        assert_eq!(pool.take(None).await.uid(), 11);
        assert_eq!(pool.permits.available_permits(), 1);
    }
}
