//! Per-process rayon pools, built lazily and rebuilt after `fork`.
//!
//! A forked child inherits the parent's pool structures but none of its threads; using them
//! would hang. Each pool is tagged with the pid that built it; when the pid changes, the old pools
//! are leaked (never dropped: dropping would talk to threads that do not exist in the child) and
//! fresh ones are built. Nothing is built at import time, and the global rayon pool is never used.

use std::collections::HashMap;
use std::sync::Mutex;

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{CtfpError, Result};

/// The largest `n_threads` accepted; more threads than this is a mistake, not a request.
pub const MAX_THREADS: usize = 1024;

struct Pools {
    pid: u32,
    by_size: HashMap<usize, &'static ThreadPool>,
}

static POOLS: Mutex<Option<Pools>> = Mutex::new(None);

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

/// The pool of `n` threads for this process.
pub fn get(n: usize) -> Result<&'static ThreadPool> {
    let pid = std::process::id();
    // A poisoned lock only means another thread panicked while holding it; the map is still usable.
    let mut guard = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let pools = guard.get_or_insert_with(|| Pools {
        pid,
        by_size: HashMap::new(),
    });
    if pools.pid != pid {
        // Forked: forget (leak) the parent's pools.
        *pools = Pools {
            pid,
            by_size: HashMap::new(),
        };
    }
    if let Some(pool) = pools.by_size.get(&n) {
        return Ok(pool);
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("ctfp-{i}"))
        .build()
        .map_err(|e| CtfpError::Value(format!("cannot start {n} worker threads: {e}")))?;
    let pool: &'static ThreadPool = Box::leak(Box::new(pool));
    pools.by_size.insert(n, pool);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pool_reused() {
        let a = get(2).unwrap() as *const ThreadPool;
        let b = get(2).unwrap() as *const ThreadPool;
        assert_eq!(a, b);
        assert_eq!(get(3).unwrap().current_num_threads(), 3);
    }

    #[test]
    fn resolve_checks_range() {
        assert!(resolve(Some(0)).is_err());
        assert!(resolve(Some(MAX_THREADS + 1)).is_err());
        assert_eq!(resolve(Some(4)).unwrap(), 4);
        assert!(resolve(None).unwrap() >= 1);
    }
}
