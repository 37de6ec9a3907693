//! Decode-once in-memory cache of grey images, keyed by path and checked against the file's size
//! and modification time, so a 50-epoch training decodes each file once and only augments after.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::decode::{Image, Limits};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

struct Inner {
    map: HashMap<PathBuf, (Stamp, Arc<Image>)>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

/// Images are kept until the cache holds `max_bytes` of pixels; later images are decoded on every
/// use but not stored (no eviction: in training every image is needed every epoch, so evicting one
/// to store another gains nothing).
pub struct ImageCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub max_bytes: usize,
}

impl ImageCache {
    pub fn new(max_bytes: usize) -> Self {
        ImageCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                bytes: 0,
                hits: 0,
                misses: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached image for `path`, or `load()`'s result (stored when there is room).
    pub fn get_or_load(
        &self,
        path: &Path,
        limits: &Limits,
        load: impl FnOnce() -> Result<Image>,
    ) -> Result<Arc<Image>> {
        let meta = std::fs::metadata(path).ok();
        let stamp = meta.map(|m| Stamp {
            len: m.len(),
            modified: m.modified().ok(),
        });
        if let Some(stamp) = stamp {
            let mut inner = self.lock();
            if let Some((s, img)) = inner.map.get(path) {
                let fits = img.width as u64 <= limits.max_width as u64
                    && img.height as u64 <= limits.max_height as u64
                    && (img.width * img.height) as u64 <= limits.max_pixels;
                if *s == stamp && fits {
                    let img = Arc::clone(img);
                    inner.hits += 1;
                    return Ok(img);
                }
            }
        }
        let img = Arc::new(load()?);
        let mut inner = self.lock();
        inner.misses += 1;
        if let Some(stamp) = stamp {
            let size = img.data.len();
            if let Some((_, old)) = inner.map.remove(path) {
                inner.bytes -= old.data.len();
            }
            if inner.bytes + size <= self.max_bytes {
                inner.bytes += size;
                inner
                    .map
                    .insert(path.to_path_buf(), (stamp, Arc::clone(&img)));
            }
        }
        Ok(img)
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            bytes: inner.bytes,
            hits: inner.hits,
            misses: inner.misses,
            max_bytes: self.max_bytes,
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(n: usize) -> Image {
        Image {
            height: 1,
            width: n,
            data: vec![7; n],
        }
    }

    #[test]
    fn hits_after_first_load_and_reloads_on_change() {
        let dir = std::env::temp_dir().join(format!("ctfp-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.bin");
        std::fs::write(&p, b"x").unwrap();
        let cache = ImageCache::new(1 << 20);
        let lim = Limits::default();
        cache.get_or_load(&p, &lim, || Ok(img(4))).unwrap();
        let again = cache
            .get_or_load(&p, &lim, || panic!("must not reload"))
            .unwrap();
        assert_eq!(again.width, 4);
        std::fs::write(&p, b"longer").unwrap();
        let changed = cache.get_or_load(&p, &lim, || Ok(img(5))).unwrap();
        assert_eq!(changed.width, 5);
        let s = cache.stats();
        assert_eq!((s.entries, s.bytes, s.hits, s.misses), (1, 5, 1, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_cache_stores_nothing_more() {
        let dir = std::env::temp_dir().join(format!("ctfp-cache-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let cache = ImageCache::new(6);
        cache
            .get_or_load(&a, &Limits::default(), || Ok(img(4)))
            .unwrap();
        cache
            .get_or_load(&b, &Limits::default(), || Ok(img(4)))
            .unwrap();
        assert_eq!(cache.stats().entries, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
