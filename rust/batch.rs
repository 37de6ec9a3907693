//! Batch assembly: decode, draw parameters, warp and write every image of a batch straight into
//! one preallocated channels-first buffer, in parallel.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::augment::{
    warp_row, AugmentConfig, AugmentParams, GreyView, Mapping, RowScratch, Sampling,
};
use crate::cache::ImageCache;
use crate::color::{replicate_plane, Normalize};
use crate::cpu::Kernel;
use crate::decode::{decode_png, Image, Limits};
use crate::error::{CtfpError, Result};
use crate::pool;
use crate::rng::ImageRng;

/// Where one image comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
    /// A row-major grey array.
    Grey(GreyView<'a>),
    /// A row-major `(H, W, 3)` RGB array, converted with the same luma rule as RGB PNGs.
    Rgb {
        data: &'a [u8],
        height: usize,
        width: usize,
    },
}

impl Source<'_> {
    /// `image 17 (scans/f017.png)`: how errors name an item.
    pub fn describe(&self, index: usize) -> String {
        match self {
            Source::Path(p) => format!("image {index} ({})", p.display()),
            Source::Bytes(b) => format!("image {index} ({} bytes)", b.len()),
            Source::Grey(g) => format!("image {index} ({}x{} array)", g.height, g.width),
            Source::Rgb { height, width, .. } => {
                format!("image {index} ({height}x{width}x3 array)")
            }
        }
    }
}

/// Read a file, mapping a missing file to `NotFound`.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CtfpError::NotFound {
            item: path.display().to_string(),
            path: path.to_path_buf(),
        },
        _ => CtfpError::Io {
            item: path.display().to_string(),
            message: e.to_string(),
        },
    })
}

enum Loaded<'a> {
    Borrowed(GreyView<'a>),
    Owned(Image),
    Shared(Arc<Image>),
}

impl Loaded<'_> {
    fn view(&self) -> GreyView<'_> {
        match self {
            Loaded::Borrowed(v) => *v,
            Loaded::Owned(img) => img.view(),
            Loaded::Shared(img) => img.view(),
        }
    }
}

fn load<'a>(src: &Source<'a>, limits: &Limits, cache: Option<&ImageCache>) -> Result<Loaded<'a>> {
    match *src {
        Source::Path(p) => match cache {
            Some(c) => c
                .get_or_load(p, limits, || decode_png(&read_file(p)?, limits))
                .map(Loaded::Shared),
            None => decode_png(&read_file(p)?, limits).map(Loaded::Owned),
        },
        Source::Bytes(b) => decode_png(b, limits).map(Loaded::Owned),
        Source::Grey(v) => Ok(Loaded::Borrowed(v)),
        Source::Rgb {
            data,
            height,
            width,
        } => {
            let grey = data
                .chunks_exact(3)
                .map(|p| crate::decode::luma(p[0], p[1], p[2]))
                .collect();
            Ok(Loaded::Owned(Image {
                height,
                width,
                data: grey,
            }))
        }
    }
}

/// Decode one source to a grey image (what `ctfp.decode_png` returns for a path or bytes).
pub fn load_grey(src: &Source<'_>, limits: &Limits) -> Result<Image> {
    match load(src, limits, None)? {
        Loaded::Owned(img) => Ok(img),
        other => {
            let v = other.view();
            Ok(Image {
                height: v.height,
                width: v.width,
                data: v.data.to_vec(),
            })
        }
    }
}

/// What a batch is made of, besides its sources.
#[derive(Clone, Debug)]
pub struct BatchSpec {
    pub out_hw: (usize, usize),
    /// 1 (grey) or 3 (RGB) channels in the output.
    pub channels: usize,
    /// Augmentation configs; `None` entries only resize. With `augment_of` unset, entry 0 (if
    /// any) applies to every sample; an empty table only resizes.
    pub augments: Vec<Option<AugmentConfig>>,
    /// Per sample, the index of its config in `augments` (one per source).
    pub augment_of: Option<Vec<usize>>,
    /// Sampling used by samples without augmentation (with augmentation, the config's own).
    pub sampling: Sampling,
    pub seed: u64,
    pub epoch: u64,
    pub limits: Limits,
    /// The kernel build the warp runs (`Kernel::selected()` outside tests).
    pub kernel: Kernel,
}

impl BatchSpec {
    pub fn validate(&self) -> Result<()> {
        let (h, w) = self.out_hw;
        if h == 0 || w == 0 || h > 65_536 || w > 65_536 {
            return Err(CtfpError::Value(format!(
                "size: expected (height, width) in [1, 65536], found ({h}, {w})"
            )));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(CtfpError::Value(format!(
                "channels: expected 1 or 3, found {}",
                self.channels
            )));
        }
        for a in self.augments.iter().flatten() {
            a.validate()?;
        }
        if let Some(of) = &self.augment_of {
            if let Some((k, &i)) = of
                .iter()
                .enumerate()
                .find(|(_, &i)| i >= self.augments.len())
            {
                return Err(CtfpError::Value(format!(
                    "augment index of sample {k}: {i} is past the {} configs",
                    self.augments.len()
                )));
            }
        }
        self.sampling.validate()
    }

    /// The augmentation config of batch position `k`, if any.
    pub fn config(&self, k: usize) -> Option<&AugmentConfig> {
        let i = match &self.augment_of {
            Some(of) => *of.get(k)?,
            None => 0,
        };
        self.augments.get(i)?.as_ref()
    }

    /// The parameters drawn for batch position `k` with dataset id `sample_id`: identity without
    /// augmentation.
    pub fn params(&self, k: usize, sample_id: u64) -> AugmentParams {
        match self.config(k) {
            Some(cfg) => {
                AugmentParams::sample(&mut ImageRng::new(self.seed, self.epoch, sample_id), cfg)
            }
            None => AugmentParams::IDENTITY,
        }
    }

    fn sampling(&self, k: usize) -> &Sampling {
        self.config(k)
            .map(|a| &a.sampling)
            .unwrap_or(&self.sampling)
    }
}

/// Output element type: how a finished grey row is written into a `(C, H, W)` slot.
pub trait Pixel: Copy + Send + Sync + Default {
    /// Write row `i` (grey levels as `f32`) into every channel of `slot`.
    fn write_row(
        slot: &mut [Self],
        row: &[f32],
        i: usize,
        plane: usize,
        channels: usize,
        norm: &Normalize,
    );
    /// Channels left to fill after the first plane is done.
    fn finish(slot: &mut [Self], plane: usize, channels: usize);
}

impl Pixel for u8 {
    #[inline]
    fn write_row(
        slot: &mut [u8],
        row: &[f32],
        i: usize,
        _plane: usize,
        _channels: usize,
        _n: &Normalize,
    ) {
        let w = row.len();
        for (d, &v) in slot[i * w..(i + 1) * w].iter_mut().zip(row) {
            *d = crate::augment::to_u8(v);
        }
    }
    #[inline]
    fn finish(slot: &mut [u8], plane: usize, _channels: usize) {
        replicate_plane(slot, plane);
    }
}

impl Pixel for f32 {
    #[inline]
    fn write_row(
        slot: &mut [f32],
        row: &[f32],
        i: usize,
        plane: usize,
        channels: usize,
        n: &Normalize,
    ) {
        // The normalisation happens in the same pass: each channel gets its own scale and bias.
        let w = row.len();
        for c in 0..channels {
            let (s, b) = (n.scale[c], n.bias[c]);
            let start = c * plane + i * w;
            for (d, &v) in slot[start..start + w].iter_mut().zip(row) {
                *d = v * s + b; // not mul_add: without FMA in the target that is a slow libm call
            }
        }
    }
    #[inline]
    fn finish(_slot: &mut [f32], _plane: usize, _channels: usize) {}
}

/// One row of samples and the scratch that computes it, per worker thread.
type Row = (Vec<f32>, RowScratch);

#[allow(clippy::too_many_arguments)]
fn fill_slot<T: Pixel>(
    src: GreyView<'_>,
    params: &AugmentParams,
    sampling: &Sampling,
    spec: &BatchSpec,
    norm: &Normalize,
    slot: &mut [T],
    row: &mut Row,
) -> Result<()> {
    let (oh, ow) = spec.out_hw;
    crate::augment::check_sizes(src, spec.out_hw)?;
    let map = Mapping::new(params, (src.height, src.width), spec.out_hw);
    row.0.resize(ow, 0.0);
    let plane = oh * ow;
    for i in 0..oh {
        warp_row(spec.kernel, src, &map, sampling, i, &mut row.0, &mut row.1);
        T::write_row(slot, &row.0, i, plane, spec.channels, norm);
    }
    T::finish(slot, plane, spec.channels);
    Ok(())
}

/// Allocate a zeroed batch buffer of `n` elements.
///
/// A large buffer comes from fresh, untouched pages; on Linux it is marked for transparent huge
/// pages before the first write, so filling a float32 batch (38 MB for 64 x 3 x 224 x 224) takes
/// a few dozen page faults instead of ten thousand. Faults on 4 KiB pages cost as much as the
/// augmentation itself in a VM. The advice is a hint: where the kernel declines it, nothing changes.
pub fn alloc_output<T: Pixel>(n: usize) -> Vec<T> {
    let buf = vec![T::default(); n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<T>();
        if bytes >= 4 * HUGE {
            let start = buf.as_ptr() as usize;
            let lo = start.next_multiple_of(HUGE);
            let hi = (start + bytes) / HUGE * HUGE;
            if hi > lo {
                // SAFETY: [lo, hi) lies inside the allocation owned by `buf`; MADV_HUGEPAGE does
                // not change its contents or validity, only how the kernel backs it.
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    buf
}

/// Fill `out` (`N * channels * H * W` elements) from `sources`, each with its dataset id.
///
/// Work is split by image; each image writes only its own slot, so no synchronisation is needed
/// and the result does not depend on `n_threads`. When several images fail, the error of the
/// lowest index is returned, whatever order the threads finished in.
pub fn load_batch<T: Pixel>(
    sources: &[Source<'_>],
    sample_ids: &[u64],
    spec: &BatchSpec,
    norm: &Normalize,
    cache: Option<&ImageCache>,
    n_threads: Option<usize>,
    out: &mut [T],
) -> Result<()> {
    spec.validate()?;
    let threads = pool::resolve(n_threads)?;
    if let Some(of) = &spec.augment_of {
        if of.len() != sources.len() {
            return Err(CtfpError::Value(format!(
                "augment: expected {} per-sample configs (one per source), found {}",
                sources.len(),
                of.len()
            )));
        }
    }
    if sample_ids.len() != sources.len() {
        return Err(CtfpError::Value(format!(
            "sample_ids: expected {} ids (one per source), found {}",
            sources.len(),
            sample_ids.len()
        )));
    }
    let slot_len = spec.channels * spec.out_hw.0 * spec.out_hw.1;
    if out.len() != slot_len * sources.len() {
        return Err(CtfpError::Value(format!(
            "output buffer: expected {} elements, found {}",
            slot_len * sources.len(),
            out.len()
        )));
    }
    if sources.is_empty() {
        return Ok(());
    }
    let one = |k: usize, slot: &mut [T], row: &mut Row| -> Result<()> {
        let src = &sources[k];
        let loaded = load(src, &spec.limits, cache).map_err(|e| e.with_item(&src.describe(k)))?;
        let params = spec.params(k, sample_ids[k]);
        fill_slot(
            loaded.view(),
            &params,
            spec.sampling(k),
            spec,
            norm,
            slot,
            row,
        )
        .map_err(|e| match e {
            CtfpError::Value(m) => CtfpError::Value(format!("{}: {m}", src.describe(k))),
            other => other,
        })
    };
    let results: Vec<Result<()>> = if threads == 1 {
        let mut row = Row::default();
        out.chunks_mut(slot_len)
            .enumerate()
            .map(|(k, slot)| one(k, slot, &mut row))
            .collect()
    } else {
        pool::get(threads)?.install(|| {
            out.par_chunks_mut(slot_len)
                .enumerate()
                .map_init(Row::default, |row, (k, slot)| one(k, slot, row))
                .collect()
        })
    };
    results.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::Fill;

    fn grey(h: usize, w: usize, salt: u8) -> Vec<u8> {
        (0..h * w)
            .map(|k| (k as u8).wrapping_mul(31).wrapping_add(salt))
            .collect()
    }

    /// `data` as a borrowed `height x width` grey source.
    fn grey_source(data: &[u8], height: usize, width: usize) -> Source<'_> {
        Source::Grey(GreyView {
            data,
            height,
            width,
        })
    }

    fn spec() -> BatchSpec {
        BatchSpec {
            out_hw: (12, 10),
            channels: 3,
            augments: vec![Some(AugmentConfig::default())],
            augment_of: None,
            sampling: Sampling::default(),
            seed: 5,
            epoch: 2,
            limits: Limits::default(),
            kernel: Kernel::detect(),
        }
    }

    #[test]
    fn identical_for_any_thread_count_and_split() {
        let imgs: Vec<Vec<u8>> = (0..7).map(|k| grey(16, 14, k as u8)).collect();
        let srcs: Vec<Source> = imgs.iter().map(|d| grey_source(d, 16, 14)).collect();
        let ids: Vec<u64> = (100..107).collect();
        let slot = 3 * 12 * 10;
        let norm = Normalize::new([0.0; 3], [1.0; 3]);
        let mut reference = vec![0u8; 7 * slot];
        load_batch(&srcs, &ids, &spec(), &norm, None, Some(1), &mut reference).unwrap();
        for n in [2, 3, 8] {
            let mut out = vec![0u8; 7 * slot];
            load_batch(&srcs, &ids, &spec(), &norm, None, Some(n), &mut out).unwrap();
            assert_eq!(out, reference);
        }
        let mut split = vec![0u8; 7 * slot];
        let (a, b) = split.split_at_mut(3 * slot);
        load_batch(&srcs[..3], &ids[..3], &spec(), &norm, None, Some(2), a).unwrap();
        load_batch(&srcs[3..], &ids[3..], &spec(), &norm, None, Some(2), b).unwrap();
        assert_eq!(split, reference);
    }

    /// Whole batches (uint8 and normalised float32, every fill) are bit-identical with the
    /// portable and the AVX2+FMA warp. Without AVX2 on this CPU only the portable build runs.
    #[test]
    fn portable_and_avx2_batches_are_identical() {
        let Some(simd) = Kernel::avx2_fma_or_skip("warp") else {
            return;
        };
        let imgs: Vec<Vec<u8>> = (0..9).map(|k| grey(37, 29, k as u8)).collect();
        let srcs: Vec<Source> = imgs.iter().map(|d| grey_source(d, 37, 29)).collect();
        let ids: Vec<u64> = (0..9).collect();
        let norm = Normalize::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        for fill in [Fill::Nearest, Fill::Constant, Fill::Reflect] {
            let sampling = Sampling {
                fill,
                fill_value: 33.0,
                ..Sampling::default()
            };
            let cfg = AugmentConfig {
                max_angle_deg: 30.0,
                sampling,
                ..AugmentConfig::default()
            };
            let run = |kernel: Kernel| {
                let spec = BatchSpec {
                    out_hw: (40, 52),
                    augments: vec![Some(cfg.clone())],
                    kernel,
                    ..spec()
                };
                let n = srcs.len() * 3 * 40 * 52;
                let (mut a, mut b) = (vec![0u8; n], vec![0f32; n]);
                load_batch(&srcs, &ids, &spec, &norm, None, Some(2), &mut a).unwrap();
                load_batch(&srcs, &ids, &spec, &norm, None, Some(2), &mut b).unwrap();
                (a, b.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
            };
            assert_eq!(run(Kernel::Portable), run(simd), "{fill:?}");
        }
    }

    #[test]
    fn lowest_failing_index_is_reported() {
        let good = grey(8, 8, 0);
        let srcs = vec![
            grey_source(&good, 8, 8),
            Source::Bytes(b"nope"),
            Source::Bytes(b""),
            Source::Path(Path::new("/no/such/file.png")),
        ];
        let ids = [0, 1, 2, 3];
        let mut out = vec![0u8; 4 * 3 * 12 * 10];
        let norm = Normalize::new([0.0; 3], [1.0; 3]);
        for _ in 0..20 {
            let e = load_batch(&srcs, &ids, &spec(), &norm, None, Some(4), &mut out).unwrap_err();
            assert!(e.to_string().starts_with("image 1 (4 bytes)"), "{e}");
        }
    }

    #[test]
    fn channels_are_copies_of_the_grey_plane() {
        let img = grey(20, 20, 3);
        let srcs = [grey_source(&img, 20, 20)];
        let mut out = vec![0u8; 3 * 120];
        load_batch(
            &srcs,
            &[9],
            &spec(),
            &Normalize::new([0.0; 3], [1.0; 3]),
            None,
            None,
            &mut out,
        )
        .unwrap();
        assert_eq!(out[..120], out[120..240]);
        assert_eq!(out[..120], out[240..]);
    }
}
