//! Per-process rayon pools, built lazily, lent to one call at a time, and rebuilt after `fork`.
//!
//! Each call that runs on several threads borrows a whole pool of the size it asked for
//! ([`get`]) and gives it back when it is done, so two callers never share one pool's workers.
//! (A shared pool serialises them: rayon workers finish the local work of the job they are on
//! before they look at a job injected by another caller, so the second caller waits for the
//! first one's whole batch.) Idle pools are kept for reuse, at most [`KEEP_IDLE`] per size; a
//! caller that finds none idle builds one. `n_threads = 1` never gets here: it runs inline on
//! the calling thread.
//!
//! A forked child inherits the parent's pool structures but none of its threads; using them
//! would hang. The pools are tagged with the pid that built them; when the pid changes, the old
//! pools are leaked (never dropped: dropping would talk to threads that do not exist in the
//! child) and fresh ones are built. Nothing is built at import time, and the global rayon pool
//! is never used.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Mutex;

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{CtfpError, Result};

/// The largest `n_threads` accepted; more threads than this is a mistake, not a request.
pub const MAX_THREADS: usize = 1024;

/// Idle pools kept per size; pools given back beyond this are shut down.
pub const KEEP_IDLE: usize = 4;

struct Pools {
    pid: u32,
    idle: HashMap<usize, Vec<ThreadPool>>,
}

static POOLS: Mutex<Option<Pools>> = Mutex::new(None);

/// The pool table of this process; the parent's pools are forgotten after a fork.
fn pools_of(guard: &mut Option<Pools>, pid: u32) -> &mut Pools {
    let pools = guard.get_or_insert_with(|| Pools {
        pid,
        idle: HashMap::new(),
    });
    if pools.pid != pid {
        // Forked: leak the parent's pools (see the module docs).
        std::mem::forget(std::mem::take(&mut pools.idle));
        pools.pid = pid;
    }
    pools
}

fn lock() -> std::sync::MutexGuard<'static, Option<Pools>> {
    // A poisoned lock only means another thread panicked while holding it; the map is still usable.
    POOLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many threads `None` means: the cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Check a user's `n_threads` and resolve `None`.
pub fn resolve(n_threads: Option<usize>) -> Result<usize> {
    match n_threads {
        None => Ok(default_threads()),
        Some(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        Some(n) => Err(CtfpError::Value(format!(
            "n_threads: expected None or an integer in [1, {MAX_THREADS}], found {n}"
        ))),
    }
}

/// A pool of `n` threads lent to one caller; it goes back to the idle pools when dropped.
pub struct Lease {
    pool: Option<ThreadPool>,
    n: usize,
    pid: u32,
}

impl Deref for Lease {
    type Target = ThreadPool;

    fn deref(&self) -> &ThreadPool {
        self.pool
            .as_ref()
            .expect("a lease holds its pool until dropped")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let pid = std::process::id();
        if pid != self.pid {
            // Borrowed before a fork, given back in the child: never drop a parent's pool.
            std::mem::forget(pool);
            return;
        }
        let mut guard = lock();
        let idle = pools_of(&mut guard, pid).idle.entry(self.n).or_default();
        if idle.len() < KEEP_IDLE {
            idle.push(pool);
        } else {
            drop(guard);
            drop(pool); // this process built it and nothing runs on it: a clean shutdown
        }
    }
}

/// A pool of `n` threads for this caller alone until the returned lease is dropped.
pub fn get(n: usize) -> Result<Lease> {
    let pid = std::process::id();
    let reused = pools_of(&mut lock(), pid)
        .idle
        .get_mut(&n)
        .and_then(Vec::pop);
    let pool = match reused {
        Some(pool) => pool,
        // built outside the lock: starting threads must not hold up other callers
        None => ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("ctfp-{i}"))
            .build()
            .map_err(|e| CtfpError::Value(format!("cannot start {n} worker threads: {e}")))?,
    };
    Ok(Lease {
        pool: Some(pool),
        n,
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests use sizes no other test in the crate uses, so the idle lists they look at are
    // theirs alone.

    /// The worker threads of a pool, which identify it.
    fn workers(pool: &ThreadPool) -> Vec<std::thread::ThreadId> {
        let mut ids = pool.broadcast(|_| std::thread::current().id());
        ids.sort_by_key(|id| format!("{id:?}"));
        ids
    }

    #[test]
    fn idle_pool_is_reused() {
        let a = get(5).unwrap();
        assert_eq!(a.current_num_threads(), 5);
        let first = workers(&a);
        drop(a);
        assert_eq!(workers(&get(5).unwrap()), first);
    }

    #[test]
    fn concurrent_callers_get_distinct_pools() {
        let a = get(6).unwrap();
        let b = get(6).unwrap();
        assert_eq!(b.current_num_threads(), 6);
        let (wa, wb) = (workers(&a), workers(&b));
        assert!(wa.iter().all(|t| !wb.contains(t)));
        drop((a, b));
        let leases: Vec<Lease> = (0..KEEP_IDLE + 2).map(|_| get(7).unwrap()).collect();
        drop(leases);
        assert_eq!(lock().as_ref().unwrap().idle[&7].len(), KEEP_IDLE);
    }

    #[test]
    fn two_callers_run_at_once() {
        // Each caller's job waits for the other one to start. On one shared single-thread pool
        // the second job could only start after the first gave up waiting.
        use std::sync::mpsc::channel;
        use std::time::Duration;
        let (tx_a, rx_a) = channel::<()>();
        let (tx_b, rx_b) = channel::<()>();
        let handles: Vec<_> = [(tx_a, rx_b), (tx_b, rx_a)]
            .into_iter()
            .map(|(tx, rx)| {
                std::thread::spawn(move || {
                    get(1).unwrap().install(move || {
                        tx.send(()).unwrap();
                        rx.recv_timeout(Duration::from_secs(20)).is_ok()
                    })
                })
            })
            .collect();
        for h in handles {
            assert!(
                h.join().unwrap(),
                "the two callers' jobs did not run at the same time"
            );
        }
    }

    #[test]
    fn resolve_checks_range() {
        assert!(resolve(Some(0)).is_err());
        assert!(resolve(Some(MAX_THREADS + 1)).is_err());
        assert_eq!(resolve(Some(4)).unwrap(), 4);
        assert!(resolve(None).unwrap() >= 1);
    }
}
