//! Recycled batch buffers.
//!
//! A float32 batch of 64 x 3 x 224 x 224 is 38 MB: above glibc's largest mmap threshold, so each
//! new batch would come from fresh pages that the kernel must fault in and zero (in a VM that
//! costs about as much as filling the batch, and it does not scale with threads). When numpy
//! frees a batch, its buffer comes back here instead, and the next batch of the same or a smaller
//! size reuses it: already mapped, nothing to zero. At most `KEEP` buffers per element type are
//! kept, none larger than `MAX_BYTES`. A reused buffer still holds old pixels, so it is only
//! handed out for batches that overwrite every element (all of ctfp's do).

use std::sync::Mutex;

use crate::batch::{alloc_output, Pixel};

const KEEP: usize = 2;
const MAX_BYTES: usize = 512 << 20;

/// Element types with a buffer pool.
pub trait Pooled: Pixel + 'static {
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

static U8_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static F32_POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

impl Pooled for u8 {
    fn pool() -> &'static Mutex<Vec<Vec<u8>>> {
        &U8_POOL
    }
}

impl Pooled for f32 {
    fn pool() -> &'static Mutex<Vec<Vec<f32>>> {
        &F32_POOL
    }
}

/// A buffer of exactly `n` elements whose contents are unspecified (zeros or an old batch):
/// the caller overwrites all of them.
pub fn take<T: Pooled>(n: usize) -> Vec<T> {
    let reused = {
        let mut free = T::pool().lock().unwrap_or_else(|p| p.into_inner());
        // the smallest buffer that is large enough, so big ones stay for big batches
        let best = (0..free.len())
            .filter(|&i| free[i].len() >= n)
            .min_by_key(|&i| free[i].len());
        best.map(|i| free.swap_remove(i))
    };
    match reused {
        Some(mut v) if n > 0 => {
            v.truncate(n); // every element stays initialised: no unsafe length change
            v
        }
        _ => alloc_output(n),
    }
}

/// Return a buffer for reuse (or drop it when the pool is full or it is too large).
pub fn give<T: Pooled>(v: Vec<T>) {
    if v.is_empty() || v.len() * std::mem::size_of::<T>() > MAX_BYTES {
        return;
    }
    let mut free = T::pool().lock().unwrap_or_else(|p| p.into_inner());
    if free.len() < KEEP {
        free.push(v);
    } else if let Some(smallest) = (0..free.len()).min_by_key(|&i| free[i].len()) {
        if free[smallest].len() < v.len() {
            free[smallest] = v; // keep the larger one
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_large_enough_buffers_and_respects_limits() {
        // one test touches the shared pool, so the steps run in order
        let a: Vec<f32> = take(1000);
        let ptr = a.as_ptr();
        give(a);
        let b: Vec<f32> = take(600);
        assert_eq!(b.len(), 600);
        assert_eq!(b.as_ptr(), ptr, "the freed buffer is reused");
        let c: Vec<f32> = take(2000);
        assert_eq!(c.len(), 2000);
        assert!(c.iter().all(|&v| v == 0.0), "new buffers are zeroed");
        give(b);
        give(c);
        give(vec![0f32; 10]);
        assert!(f32::pool().lock().unwrap().len() <= KEEP);
        let empty: Vec<f32> = take(0);
        assert!(empty.is_empty());
    }
}
