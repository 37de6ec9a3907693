//! SSIM between 8-bit grey images, equal to scikit-image's `structural_similarity` with its
//! defaults for uint8 inputs: a 7x7 uniform window, `K1 = 0.01`, `K2 = 0.03`, `data_range = 255`,
//! the sample covariance (`NP / (NP - 1)`, `NP = 49`), and the mean of the SSIM map over the
//! windows that lie fully inside the image (skimage crops `(7 - 1) / 2` pixels from each border).
//!
//! How it is fast:
//! - Every window sum is an exact integer: `Sx` (at most 49 * 255), `Sxx` and `Sxy` (at most
//!   49 * 255^2 < 2^22), and the numerators `49 Sxx - Sx^2` and `49 Sxy - Sx Sy` fit in `i32`.
//!   The only rounding is in the final ratio, computed in `f32` (relative error ~1e-7 per window;
//!   the mean is accumulated in `f64`).
//! - Per-image statistics (`Sx` and `49 Sxx - Sx^2` for every window) are computed once per image
//!   and reused for every pair it is in; a pair only adds the cross sums `Sxy`.
//! - `Sxy` is a running 7-row column sum (one add and one subtract of pixel products per pixel and
//!   row) followed by a 7-wide horizontal sum in 4 adds; all loops are branch-free over whole rows
//!   so that they vectorise, with an AVX2 build of the kernel that callers choose through
//!   [`Kernel`] (same operations, same results).
//! - Pairs run in parallel on the per-process pool, in tiles whose statistics stay within a fixed
//!   memory budget, however many images there are.
//!
//! The formula, with every term multiplied by a constant that cancels in the ratio
//! (`49^2` for the means, `49 * 48` for the (co)variances):
//! `S = (2 Sx Sy + C1') (2 (49 Sxy - Sx Sy) + C2') / ((Sx^2 + Sy^2 + C1') (Vx + Vy + C2'))`
//! with `Vx = 49 Sxx - Sx^2`, `C1' = (0.01 * 255)^2 * 49^2`, `C2' = (0.03 * 255)^2 * 49 * 48`.

use rayon::prelude::*;

use crate::cpu::{kernel_dispatch, Kernel};
use crate::error::{CtfpError, Result};
use crate::pool;

/// Side of the square window.
pub const WIN: usize = 7;
const NP: i32 = (WIN * WIN) as i32;
const C1_SCALED: f32 = ((0.01 * 255.0) * (0.01 * 255.0) * (49.0 * 49.0)) as f32;
const C2_SCALED: f32 = ((0.03 * 255.0) * (0.03 * 255.0) * (49.0 * 48.0)) as f32;
/// Memory for the per-image statistics of one tile of images (queries or references).
const TILE_BYTES: usize = 16 << 20;

/// A stack of `n` row-major grey images of one size, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub data: &'a [u8],
    pub n: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> Images<'a> {
    pub fn new(data: &'a [u8], n: usize, height: usize, width: usize) -> Result<Self> {
        if n.checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .is_none_or(|len| len != data.len())
        {
            return Err(CtfpError::Value(format!(
                "images: expected {n} x {height} x {width} bytes, found {}",
                data.len()
            )));
        }
        Ok(Images {
            data,
            n,
            height,
            width,
        })
    }

    fn image(&self, k: usize) -> &'a [u8] {
        let len = self.height * self.width;
        &self.data[k * len..(k + 1) * len]
    }
}

/// Window statistics of one image, for every window fully inside it (row-major,
/// `(height - 6) x (width - 6)`): the pixel sum `Sx` and `49 Sxx - Sx^2`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub sum: Vec<i32>,
    pub var: Vec<i32>,
}

/// Borrowed window statistics: `(sum, var)`, each one value per window.
type StatsRef<'a> = (&'a [i32], &'a [i32]);

impl Stats {
    fn view(&self) -> StatsRef<'_> {
        (&self.sum, &self.var)
    }
}

/// Reusable buffers for one worker.
#[derive(Default)]
pub struct Scratch {
    col: Vec<u32>,
    col1: Vec<u32>,
    pair: Vec<u32>,
    sx: Vec<i32>,
    sxy: Vec<i32>,
    row: Vec<f32>,
}

fn check_size(height: usize, width: usize) -> Result<()> {
    if height < WIN || width < WIN {
        return Err(CtfpError::Value(format!(
            "images: SSIM needs images of at least {WIN}x{WIN} pixels (its window), \
             found {height}x{width}"
        )));
    }
    if height > 1 << 15 || width > 1 << 15 {
        return Err(CtfpError::Value(format!(
            "images: expected at most 32768 pixels a side, found {height}x{width}"
        )));
    }
    Ok(())
}

/// Sums over 7 consecutive values: `out[j] = v[j] + ... + v[j + 6]`, `out.len() == v.len() - 6`.
#[inline(always)]
fn hsum7(v: &[u32], pair: &mut [u32], out: &mut [i32]) {
    let n = out.len();
    let pair = &mut pair[..n + 5];
    let a = &v[..n + 5];
    let b = &v[1..n + 6];
    for ((p, &x), &y) in pair.iter_mut().zip(a).zip(b) {
        *p = x.wrapping_add(y);
    }
    let (p0, p2, p4, v6) = (&pair[..n], &pair[2..n + 2], &pair[4..n + 4], &v[6..n + 6]);
    for (j, o) in out.iter_mut().enumerate() {
        *o = p0[j]
            .wrapping_add(p2[j])
            .wrapping_add(p4[j])
            .wrapping_add(v6[j]) as i32;
    }
}

/// Column sums of `x * y` over rows `0..7`.
#[inline(always)]
fn init_columns(x: &[u8], y: &[u8], width: usize, col: &mut [u32]) {
    col.fill(0);
    for i in 0..WIN {
        let (xr, yr) = (
            &x[i * width..(i + 1) * width],
            &y[i * width..(i + 1) * width],
        );
        for ((c, &a), &b) in col.iter_mut().zip(xr).zip(yr) {
            *c = c.wrapping_add(a as u32 * b as u32);
        }
    }
}

/// Slide the column sums down by one row: add row `add`, drop row `sub`.
#[inline(always)]
fn slide_columns(x: &[u8], y: &[u8], width: usize, add: usize, sub: usize, col: &mut [u32]) {
    let (xa, ya) = (
        &x[add * width..(add + 1) * width],
        &y[add * width..(add + 1) * width],
    );
    let (xs, ys) = (
        &x[sub * width..(sub + 1) * width],
        &y[sub * width..(sub + 1) * width],
    );
    for j in 0..col.len() {
        // u8 * u8 fits in u16: 16-bit multiplies, twice the lanes of 32-bit ones
        let plus = (xa[j] as u16 * ya[j] as u16) as u32;
        let minus = (xs[j] as u16 * ys[j] as u16) as u32;
        col[j] = col[j].wrapping_add(plus).wrapping_sub(minus);
    }
}

#[inline(always)]
fn stats_impl(
    img: &[u8],
    height: usize,
    width: usize,
    s: &mut Scratch,
    sum: &mut [i32],
    var: &mut [i32],
) {
    let (oh, ow) = (height - WIN + 1, width - WIN + 1);
    let (sum, var) = (&mut sum[..oh * ow], &mut var[..oh * ow]);
    s.col.resize(width, 0);
    s.col1.resize(width, 0);
    s.pair.resize(width, 0);
    s.sxy.resize(ow, 0);
    s.sx.resize(ow, 0);
    init_columns(img, img, width, &mut s.col);
    s.col1.fill(0);
    for row in img[..WIN * width].chunks_exact(width) {
        for (c, &a) in s.col1.iter_mut().zip(row) {
            *c += a as u32;
        }
    }
    for oi in 0..oh {
        if oi > 0 {
            slide_columns(img, img, width, oi + WIN - 1, oi - 1, &mut s.col);
            let (add, sub) = (
                &img[(oi + WIN - 1) * width..(oi + WIN) * width],
                &img[(oi - 1) * width..oi * width],
            );
            for ((c, &a), &b) in s.col1.iter_mut().zip(add).zip(sub) {
                *c = c.wrapping_add(a as u32).wrapping_sub(b as u32);
            }
        }
        hsum7(&s.col1, &mut s.pair, &mut s.sx);
        hsum7(&s.col, &mut s.pair, &mut s.sxy);
        let (so, vo) = (
            &mut sum[oi * ow..(oi + 1) * ow],
            &mut var[oi * ow..(oi + 1) * ow],
        );
        for j in 0..ow {
            so[j] = s.sx[j];
            vo[j] = NP * s.sxy[j] - s.sx[j] * s.sx[j];
        }
    }
}

/// The window statistics of one image (`height, width >= 7`).
pub fn window_stats(kernel: Kernel, img: &[u8], height: usize, width: usize) -> Result<Stats> {
    check_size(height, width)?;
    if img.len() != height * width {
        return Err(CtfpError::Value(format!(
            "image: expected {height} x {width} bytes, found {}",
            img.len()
        )));
    }
    let windows = (height - WIN + 1) * (width - WIN + 1);
    let mut out = Stats {
        sum: vec![0; windows],
        var: vec![0; windows],
    };
    stats(
        kernel,
        img,
        height,
        width,
        &mut Scratch::default(),
        &mut out.sum,
        &mut out.var,
    );
    Ok(out)
}

/// SSIM of one window row from its integer sums, written to `out`.
#[inline(always)]
fn ssim_row(mx: &[i32], vx: &[i32], my: &[i32], vy: &[i32], sxy: &[i32], out: &mut [f32]) {
    let n = out.len();
    let (mx, vx, my, vy, sxy) = (&mx[..n], &vx[..n], &my[..n], &vy[..n], &sxy[..n]);
    for j in 0..n {
        let mxy = mx[j] * my[j];
        let a1 = (2 * mxy) as f32 + C1_SCALED;
        let b1 = (mx[j] * mx[j] + my[j] * my[j]) as f32 + C1_SCALED;
        let a2 = (2 * (NP * sxy[j] - mxy)) as f32 + C2_SCALED;
        let b2 = (vx[j] + vy[j]) as f32 + C2_SCALED;
        out[j] = (a1 * a2) / (b1 * b2);
    }
}

/// Sum of a row of SSIM values: 8 independent lanes (so it vectorises), then `f64`.
#[inline(always)]
fn row_total(row: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().map(|&v| v as f64).sum::<f64>() + rest.iter().map(|&v| v as f64).sum::<f64>()
}

#[inline(always)]
fn pair_impl(
    x: &[u8],
    y: &[u8],
    height: usize,
    width: usize,
    sx: StatsRef<'_>,
    sy: StatsRef<'_>,
    s: &mut Scratch,
) -> f64 {
    let (oh, ow) = (height - WIN + 1, width - WIN + 1);
    s.col.resize(width, 0);
    s.pair.resize(width, 0);
    s.sxy.resize(ow, 0);
    s.row.resize(ow, 0.0);
    init_columns(x, y, width, &mut s.col);
    let mut total = 0f64;
    for oi in 0..oh {
        if oi > 0 {
            slide_columns(x, y, width, oi + WIN - 1, oi - 1, &mut s.col);
        }
        hsum7(&s.col, &mut s.pair, &mut s.sxy);
        let r = oi * ow..(oi + 1) * ow;
        ssim_row(
            &sx.0[r.clone()],
            &sx.1[r.clone()],
            &sy.0[r.clone()],
            &sy.1[r],
            &s.sxy,
            &mut s.row,
        );
        total += row_total(&s.row);
    }
    total / (oh * ow) as f64
}

kernel_dispatch! {
    /// The window statistics of one image with the build `kernel`.
    fn stats => stats_impl(
        img: &[u8],
        height: usize,
        width: usize,
        s: &mut Scratch,
        sum: &mut [i32],
        var: &mut [i32],
    )
}

kernel_dispatch! {
    /// The SSIM of one pair with the build `kernel`.
    #[allow(clippy::too_many_arguments)]
    fn pair => pair_impl(
        x: &[u8],
        y: &[u8],
        height: usize,
        width: usize,
        sx: StatsRef<'_>,
        sy: StatsRef<'_>,
        s: &mut Scratch,
    ) -> f64
}

/// SSIM of two images with their statistics already computed (see [`window_stats`]).
pub fn ssim_with_stats(
    kernel: Kernel,
    x: &[u8],
    y: &[u8],
    height: usize,
    width: usize,
    sx: &Stats,
    sy: &Stats,
) -> Result<f64> {
    check_size(height, width)?;
    let windows = (height - WIN + 1) * (width - WIN + 1);
    if x.len() != height * width
        || y.len() != height * width
        || [&sx.sum, &sx.var, &sy.sum, &sy.var]
            .iter()
            .any(|v| v.len() != windows)
    {
        return Err(CtfpError::Value(format!(
            "ssim: images and statistics do not match a {height}x{width} image"
        )));
    }
    Ok(pair(
        kernel,
        x,
        y,
        height,
        width,
        sx.view(),
        sy.view(),
        &mut Scratch::default(),
    ))
}

/// SSIM of two `height x width` grey images (skimage's `structural_similarity(x, y)`).
pub fn ssim(kernel: Kernel, x: &[u8], y: &[u8], height: usize, width: usize) -> Result<f64> {
    let sx = window_stats(kernel, x, height, width)?;
    let sy = window_stats(kernel, y, height, width)?;
    ssim_with_stats(kernel, x, y, height, width, &sx, &sy)
}

/// `f(k)` for `k in 0..n`, in parallel on the current pool unless `parallel` is false.
fn map_range<T: Send>(
    parallel: bool,
    n: usize,
    f: impl Fn(&mut Scratch, usize) -> T + Sync + Send,
) -> Vec<T> {
    if parallel {
        (0..n)
            .into_par_iter()
            .map_init(Scratch::default, |s, k| f(s, k))
            .collect()
    } else {
        let mut s = Scratch::default();
        (0..n).map(|k| f(&mut s, k)).collect()
    }
}

/// A zeroed buffer for the statistics of a tile of images. On Linux a large one is marked for
/// transparent huge pages before it is first written: the buffers are fresh for every call, and
/// faults on 4 KiB pages (one per 1024 values) cost as much as the SSIM of small calls in a VM.
/// The advice is a hint; where the kernel declines it, nothing changes.
fn alloc_tile(n: usize) -> Vec<i32> {
    let buf = vec![0i32; n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<i32>();
        let start = buf.as_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if bytes >= 2 * HUGE && hi > lo {
            // SAFETY: [lo, hi) lies inside the allocation owned by `buf`; MADV_HUGEPAGE changes
            // neither its contents nor its validity, only how the kernel backs it.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
    buf
}

/// Fill the statistics of images `first..first + n` into `tile` (`2 * windows` values each:
/// the window sums, then `49 Sxx - Sx^2`).
fn fill_stats(
    parallel: bool,
    kernel: Kernel,
    images: Images<'_>,
    first: usize,
    n: usize,
    tile: &mut [i32],
) {
    let (h, w) = (images.height, images.width);
    let per_image = 2 * (h - WIN + 1) * (w - WIN + 1);
    let one = |s: &mut Scratch, (k, chunk): (usize, &mut [i32])| {
        let (sum, var) = chunk.split_at_mut(per_image / 2);
        stats(kernel, images.image(first + k), h, w, s, sum, var)
    };
    let slots = &mut tile[..n * per_image];
    if parallel {
        slots
            .par_chunks_mut(per_image)
            .enumerate()
            .for_each_init(Scratch::default, one);
    } else {
        let mut s = Scratch::default();
        slots
            .chunks_mut(per_image)
            .enumerate()
            .for_each(|p| one(&mut s, p));
    }
}

/// Image `k`'s statistics in a tile buffer.
fn tile_stats(tile: &[i32], k: usize, per_image: usize) -> StatsRef<'_> {
    tile[k * per_image..(k + 1) * per_image].split_at(per_image / 2)
}

/// How many images' statistics one tile holds.
fn tile_len(height: usize, width: usize) -> usize {
    let per_image = 8 * (height - WIN + 1) * (width - WIN + 1);
    (TILE_BYTES / per_image).clamp(4, 256)
}

/// SSIM of every query against every reference: a row-major `(queries.n, references.n)` matrix.
///
/// Statistics are computed once per image and tile; tiles of queries and references are visited
/// so that memory stays within a fixed budget. The result depends neither on `n_threads` nor on
/// `kernel`.
pub fn ssim_matrix(
    kernel: Kernel,
    queries: Images<'_>,
    references: Images<'_>,
    n_threads: Option<usize>,
) -> Result<Vec<f32>> {
    let tile = tile_len(queries.height.max(WIN), queries.width.max(WIN));
    matrix_tiled(kernel, queries, references, n_threads, tile)
}

fn matrix_tiled(
    kernel: Kernel,
    queries: Images<'_>,
    references: Images<'_>,
    n_threads: Option<usize>,
    tile: usize,
) -> Result<Vec<f32>> {
    let (h, w) = (queries.height, queries.width);
    if (references.height, references.width) != (h, w) {
        return Err(CtfpError::Value(format!(
            "references: expected images of the queries' size {h}x{w}, found {}x{}",
            references.height, references.width
        )));
    }
    check_size(h, w)?;
    let threads = pool::resolve(n_threads)?;
    let (nq, nr) = (queries.n, references.n);
    let mut out = vec![0f32; nq * nr];
    if nq == 0 || nr == 0 {
        return Ok(out);
    }
    let parallel = threads > 1;
    let per_image = 2 * (h - WIN + 1) * (w - WIN + 1);
    let mut qstats = alloc_tile(tile.min(nq) * per_image);
    let mut rstats = alloc_tile(tile.min(nr) * per_image);
    let mut run = || {
        for q0 in (0..nq).step_by(tile) {
            let tq = tile.min(nq - q0);
            fill_stats(parallel, kernel, queries, q0, tq, &mut qstats);
            for r0 in (0..nr).step_by(tile) {
                let tr = tile.min(nr - r0);
                if !(r0 == 0 && nr <= tile && q0 > 0) {
                    // (a single reference tile is filled once and kept for every query tile)
                    fill_stats(parallel, kernel, references, r0, tr, &mut rstats);
                }
                let vals = map_range(parallel, tq * tr, |s, p| {
                    let (a, b) = (p / tr, p % tr);
                    let x = queries.image(q0 + a);
                    let y = references.image(r0 + b);
                    let (sx, sy) = (
                        tile_stats(&qstats, a, per_image),
                        tile_stats(&rstats, b, per_image),
                    );
                    pair(kernel, x, y, h, w, sx, sy, s) as f32
                });
                for a in 0..tq {
                    let row = (q0 + a) * nr + r0;
                    out[row..row + tr].copy_from_slice(&vals[a * tr..(a + 1) * tr]);
                }
            }
        }
    };
    if parallel {
        pool::get(threads)?.install(run);
    } else {
        run();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A direct transcription of skimage's computation in f64 (uniform filter, crop, mean).
    fn reference(x: &[u8], y: &[u8], h: usize, w: usize) -> f64 {
        let np = 49.0;
        let cov_norm = np / (np - 1.0);
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let mut total = 0.0;
        for i in 0..=h - WIN {
            for j in 0..=w - WIN {
                let (mut ux, mut uy, mut uxx, mut uyy, mut uxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for di in 0..WIN {
                    for dj in 0..WIN {
                        let a = x[(i + di) * w + j + dj] as f64;
                        let b = y[(i + di) * w + j + dj] as f64;
                        ux += a;
                        uy += b;
                        uxx += a * a;
                        uyy += b * b;
                        uxy += a * b;
                    }
                }
                let (ux, uy, uxx, uyy, uxy) = (ux / np, uy / np, uxx / np, uyy / np, uxy / np);
                let vx = cov_norm * (uxx - ux * ux);
                let vy = cov_norm * (uyy - uy * uy);
                let vxy = cov_norm * (uxy - ux * uy);
                total += ((2.0 * ux * uy + c1) * (2.0 * vxy + c2))
                    / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
            }
        }
        total / ((h - WIN + 1) * (w - WIN + 1)) as f64
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn identical_images_give_one() {
        let x = noise(40 * 33, 1);
        assert!((ssim(Kernel::detect(), &x, &x, 40, 33).unwrap() - 1.0).abs() < 1e-6);
        let flat = vec![17u8; 12 * 9];
        assert!((ssim(Kernel::detect(), &flat, &flat, 12, 9).unwrap() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn extreme_values_match_reference() {
        let (h, w) = (16, 23);
        let black = vec![0u8; h * w];
        let white = vec![255u8; h * w];
        let check = noise(h * w, 3)
            .iter()
            .map(|&v| if v & 1 == 0 { 0 } else { 255 })
            .collect::<Vec<u8>>();
        for (x, y) in [(&black, &white), (&white, &check), (&check, &black)] {
            let got = ssim(Kernel::detect(), x, y, h, w).unwrap();
            assert!((got - reference(x, y, h, w)).abs() < 1e-6, "{got}");
        }
    }

    #[test]
    fn rejects_small_and_mismatched_images() {
        assert!(ssim(Kernel::detect(), &[0; 36], &[0; 36], 6, 6).is_err());
        assert!(ssim(Kernel::detect(), &[0; 49], &[0; 48], 7, 7).is_err());
        let a = noise(64, 1);
        let q = Images::new(&a, 1, 8, 8).unwrap();
        let b = noise(81, 1);
        let r = Images::new(&b, 1, 9, 9).unwrap();
        assert!(ssim_matrix(Kernel::detect(), q, r, Some(1)).is_err());
        assert!(Images::new(&a, 2, 8, 8).is_err());
    }

    #[test]
    fn matrix_matches_pairs_for_any_threads() {
        let (h, w, nq, nr) = (20, 17, 5, 7);
        let q = noise(nq * h * w, 11);
        let r = noise(nr * h * w, 12);
        let qi = Images::new(&q, nq, h, w).unwrap();
        let ri = Images::new(&r, nr, h, w).unwrap();
        let one = ssim_matrix(Kernel::detect(), qi, ri, Some(1)).unwrap();
        for t in [2, 3] {
            assert_eq!(ssim_matrix(Kernel::detect(), qi, ri, Some(t)).unwrap(), one);
        }
        for a in 0..nq {
            for b in 0..nr {
                let want = reference(qi.image(a), ri.image(b), h, w);
                assert!((one[a * nr + b] as f64 - want).abs() < 1e-6);
            }
        }
        for tile in [1, 2, 3, 5, 8] {
            assert_eq!(
                matrix_tiled(Kernel::detect(), qi, ri, Some(1), tile).unwrap(),
                one
            );
            assert_eq!(
                matrix_tiled(Kernel::detect(), qi, ri, Some(2), tile).unwrap(),
                one
            );
        }
        let empty = Images::new(&[], 0, h, w).unwrap();
        assert!(ssim_matrix(Kernel::detect(), empty, ri, None)
            .unwrap()
            .is_empty());
    }

    /// The portable and AVX2+FMA builds give bit-identical statistics and SSIM values (the sums
    /// are integers; the final ratio is the same `f32` operations in both builds). Without AVX2
    /// on this CPU only the portable build runs, and the test says so.
    #[test]
    fn portable_and_avx2_kernels_are_identical() {
        let Some(simd) = Kernel::avx2_fma_or_skip("SSIM") else {
            return;
        };
        let (h, w) = (31, 45);
        let (x, y) = (noise(h * w, 5), noise(h * w, 6));
        let mut s = Scratch::default();
        let sx = window_stats(Kernel::Portable, &x, h, w).unwrap();
        let sy = window_stats(Kernel::Portable, &y, h, w).unwrap();
        assert_eq!(window_stats(simd, &x, h, w).unwrap(), sx);
        let mut plain = sx.clone();
        stats_impl(&x, h, w, &mut s, &mut plain.sum, &mut plain.var);
        assert_eq!(plain, sx);
        let portable = pair(Kernel::Portable, &x, &y, h, w, sx.view(), sy.view(), &mut s);
        let fast = pair(simd, &x, &y, h, w, sx.view(), sy.view(), &mut s);
        assert_eq!(fast.to_bits(), portable.to_bits());
        // whole matrices, several sizes (row lengths around the vector widths)
        for (h, w, nq, nr) in [(20, 17, 5, 7), (7, 7, 3, 2), (40, 71, 4, 6), (64, 64, 3, 3)] {
            let q = noise(nq * h * w, 11 + w as u64);
            let r = noise(nr * h * w, 12 + h as u64);
            let qi = Images::new(&q, nq, h, w).unwrap();
            let ri = Images::new(&r, nr, h, w).unwrap();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            let a = bits(ssim_matrix(Kernel::Portable, qi, ri, Some(2)).unwrap());
            let b = bits(ssim_matrix(simd, qi, ri, Some(2)).unwrap());
            assert_eq!(a, b, "{h}x{w}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn equals_reference(h in 7usize..30, w in 7usize..30, seed in 0u64..1000, smooth in 0u8..3) {
            let mut x = noise(h * w, seed);
            let mut y = noise(h * w, seed + 7919);
            if smooth > 0 {
                // correlated pairs: y is x plus a little noise
                for (b, a) in y.iter_mut().zip(&x) {
                    *b = a.saturating_add(*b >> (4 + smooth));
                }
                if smooth == 2 {
                    x.iter_mut().for_each(|v| *v /= 4);
                }
            }
            let got = ssim(Kernel::detect(), &x, &y, h, w).unwrap();
            prop_assert!((got - reference(&x, &y, h, w)).abs() < 1e-6);
            prop_assert!((got - ssim(Kernel::detect(), &y, &x, h, w).unwrap()).abs() < 1e-9);
        }

        #[test]
        fn statistics_are_exact(h in 7usize..20, w in 7usize..20, seed in 0u64..1000) {
            let x = noise(h * w, seed);
            let st = window_stats(Kernel::detect(), &x, h, w).unwrap();
            let ow = w - WIN + 1;
            for i in 0..=h - WIN {
                for j in 0..ow {
                    let (mut s, mut ss) = (0i64, 0i64);
                    for di in 0..WIN {
                        for dj in 0..WIN {
                            let v = x[(i + di) * w + j + dj] as i64;
                            s += v;
                            ss += v * v;
                        }
                    }
                    prop_assert_eq!(st.sum[i * ow + j] as i64, s);
                    prop_assert_eq!(st.var[i * ow + j] as i64, 49 * ss - s * s);
                }
            }
        }
    }
}
