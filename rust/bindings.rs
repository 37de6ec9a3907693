//! The thin PyO3 layer: extract arguments, release the GIL for the work, hand buffers to numpy
//! without copying, and map `CtfpError` onto ctfp's Python exceptions.

use std::path::PathBuf;

use numpy::ndarray::{Array2, Array4};
use numpy::{
    IntoPyArray, PyArray2, PyArray4, PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::Borrowed;

use crate::augment::{self, AugmentConfig, AugmentParams, Fill, GreyView, Interpolation, Sampling};
use crate::batch::{self, BatchSpec, Source};
use crate::buffers;
use crate::cache::ImageCache;
use crate::color::Normalize;
use crate::cpu::Kernel;
use crate::decode::{self, Limits};
use crate::error::{no_panic, CtfpError};
use crate::pool;

pyo3::import_exception!(ctfp.exceptions, ImageDecodeError);

impl From<CtfpError> for PyErr {
    fn from(e: CtfpError) -> PyErr {
        let msg = e.to_string();
        match e {
            CtfpError::NotFound { path, .. } => {
                PyFileNotFoundError::new_err((2, msg, path.display().to_string()))
            }
            CtfpError::Io { .. } => PyOSError::new_err(msg),
            CtfpError::Decode { .. } => ImageDecodeError::new_err(msg),
            CtfpError::Value(_) => PyValueError::new_err(msg),
            CtfpError::Internal(_) => PyRuntimeError::new_err(msg),
        }
    }
}

/// The elements of `arr` in C (row-major) order, or an error naming `what` (the argument
/// `arg`) with the hint.
///
/// rust-numpy's `as_slice` also accepts a Fortran-ordered array (contiguous, but column-major),
/// whose memory read as rows would be the image transposed or scrambled: every array argument
/// goes through this one check, so Fortran order, strides and negative strides are refused alike.
fn c_order<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    arr: &'a numpy::PyReadonlyArray<'_, T, D>,
    what: &str,
    arg: &str,
) -> PyResult<&'a [T]> {
    let refuse = || {
        PyValueError::new_err(format!(
            "{what}: array is not C-contiguous (Fortran order, strides or a view such as .T); \
             pass np.ascontiguousarray({arg})"
        ))
    };
    if !arr.is_c_contiguous() {
        return Err(refuse());
    }
    arr.as_slice().map_err(|_| refuse())
}

/// A source as extracted from Python, kept alive (and borrowed) while the GIL is released.
enum Held<'py> {
    Path(PathBuf),
    Bytes(Bound<'py, PyBytes>),
    Array(PyReadonlyArrayDyn<'py, u8>),
}

fn extract_source<'py>(obj: &Bound<'py, PyAny>, index: usize) -> PyResult<Held<'py>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Held::Bytes(b.clone()));
    }
    if let Ok(arr) = obj.extract::<PyReadonlyArrayDyn<'py, u8>>() {
        return Ok(Held::Array(arr));
    }
    if let Ok(p) = obj.extract::<PathBuf>() {
        return Ok(Held::Path(p));
    }
    let kind = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    let hint = if obj.hasattr("dtype").unwrap_or(false) {
        " (arrays must have dtype uint8)"
    } else {
        ""
    };
    Err(PyTypeError::new_err(format!(
        "image {index}: expected a path (str or os.PathLike), PNG bytes or a uint8 array, \
         found {kind}{hint}"
    )))
}

fn as_source<'a>(held: &'a Held<'_>, index: usize) -> PyResult<Source<'a>> {
    Ok(match held {
        Held::Path(p) => Source::Path(p),
        Held::Bytes(b) => Source::Bytes(b.as_bytes()),
        Held::Array(a) => {
            let shape = a.shape().to_vec();
            let data = c_order(a, &format!("image {index}"), "image")?;
            match shape.as_slice() {
                [h, w] | [h, w, 1] => Source::Grey(GreyView {
                    data,
                    height: *h,
                    width: *w,
                }),
                [h, w, 3] => Source::Rgb {
                    data,
                    height: *h,
                    width: *w,
                },
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "image {index}: expected an array of shape (H, W), (H, W, 1) or (H, W, 3), \
                         found {shape:?}"
                    )))
                }
            }
        }
    })
}

/// Attribute `name` of `obj` (the argument `arg`, a `class`) as a `T` described by `expected`;
/// the errors name the field.
fn attr<'py, T: FromPyObjectOwned<'py>>(
    obj: &Bound<'py, PyAny>,
    arg: &str,
    class: &str,
    name: &str,
    expected: &str,
) -> PyResult<T> {
    let kind = |o: &Bound<'py, PyAny>| {
        o.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let value = obj.getattr(name).map_err(|_| {
        PyTypeError::new_err(format!(
            "{arg}: expected a {class}, found {} (it has no '{name}' attribute)",
            kind(obj)
        ))
    })?;
    value.extract::<T>().map_err(|_| {
        let repr = value
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "?".into());
        PyTypeError::new_err(format!(
            "{arg}.{name}: expected {expected}, found {} {repr}",
            kind(&value)
        ))
    })
}

/// A `ctfp.DecodeLimits`, read by attribute name.
struct LimitsArg(Limits);

impl<'a, 'py> FromPyObject<'a, 'py> for LimitsArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (arg, class) = ("limits", "ctfp.DecodeLimits");
        let limits = Limits {
            max_width: attr(&obj, arg, class, "max_width", "an integer in [1, 2**32)")?,
            max_height: attr(&obj, arg, class, "max_height", "an integer in [1, 2**32)")?,
            max_pixels: attr(&obj, arg, class, "max_pixels", "an integer in [1, 2**64)")?,
        };
        for (name, v) in [
            ("max_width", limits.max_width as u64),
            ("max_height", limits.max_height as u64),
            ("max_pixels", limits.max_pixels),
        ] {
            if v == 0 {
                return Err(PyValueError::new_err(format!(
                    "limits.{name}: expected a positive integer, found 0"
                )));
            }
        }
        Ok(LimitsArg(limits))
    }
}

fn sampling_from(interpolation: &str, fill: &str, fill_value: f64) -> PyResult<Sampling> {
    let sampling = Sampling {
        interpolation: Interpolation::parse(interpolation)?,
        fill: Fill::parse(fill)?,
        fill_value: fill_value as f32,
    };
    sampling.validate()?;
    Ok(sampling)
}

/// A `ctfp.Augment`, read by attribute name and checked.
struct AugmentArg(AugmentConfig);

impl<'a, 'py> FromPyObject<'a, 'py> for AugmentArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let (arg, class) = ("augment", "ctfp.Augment");
        let number = "a number";
        let pair = "a (height, width) pair of numbers";
        let name = "a string";
        let interpolation: String = attr(&obj, arg, class, "interpolation", name)?;
        let fill: String = attr(&obj, arg, class, "fill", name)?;
        let cfg = AugmentConfig {
            hflip_prob: attr(&obj, arg, class, "hflip", number)?,
            max_angle_deg: attr(&obj, arg, class, "max_angle_deg", number)?,
            zoom_range: attr(&obj, arg, class, "zoom", "a (lo, hi) pair of numbers")?,
            zoom_per_axis: attr(&obj, arg, class, "zoom_per_axis", "a bool")?,
            shift_frac: attr(&obj, arg, class, "shift_frac", pair)?,
            sampling: sampling_from(
                &interpolation,
                &fill,
                attr(&obj, arg, class, "fill_value", number)?,
            )?,
        };
        cfg.validate()?;
        Ok(AugmentArg(cfg))
    }
}

/// The kernel build this process uses (decided once; see `cpu`).
fn kernel() -> PyResult<Kernel> {
    Ok(Kernel::selected()?)
}

#[pyfunction(name = "decode_png")]
#[pyo3(signature = (source, *, limits))]
fn decode_png_py<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    limits: LimitsArg,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let held = extract_source(source, 0)?;
    if let Held::Array(_) = held {
        return Err(PyTypeError::new_err(
            "source: expected a path or PNG bytes, found an array",
        ));
    }
    let src = as_source(&held, 0)?;
    let limits = limits.0;
    let img = py.detach(|| {
        no_panic(|| {
            batch::load_grey(&src, &limits).map_err(|e| match &src {
                Source::Path(p) => e.with_item(&p.display().to_string()),
                _ => e.with_item("PNG bytes"),
            })
        })
    })?;
    let arr = Array2::from_shape_vec((img.height, img.width), img.data)
        .map_err(|e| CtfpError::Internal(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

#[pyfunction(name = "transform")]
#[pyo3(signature = (image, *, flip, angle_deg, zoom, shift, size, interpolation, fill, fill_value))]
#[allow(clippy::too_many_arguments)]
fn transform_py<'py>(
    py: Python<'py>,
    image: PyReadonlyArray2<'py, u8>,
    flip: bool,
    angle_deg: f64,
    zoom: (f64, f64),
    shift: (f64, f64),
    size: (usize, usize),
    interpolation: &str,
    fill: &str,
    fill_value: f64,
) -> PyResult<Bound<'py, PyArray2<u8>>> {
    let sampling = sampling_from(interpolation, fill, fill_value)?;
    let kernel = kernel()?;
    let (h, w) = (image.shape()[0], image.shape()[1]);
    let data = c_order(&image, "image", "image")?;
    let params = AugmentParams {
        flip,
        angle_deg,
        zoom,
        shift,
    };
    let out = py.detach(|| {
        no_panic(|| {
            augment::transform(
                kernel,
                GreyView {
                    data,
                    height: h,
                    width: w,
                },
                &params,
                &sampling,
                size,
            )
        })
    })?;
    let arr = Array2::from_shape_vec(size, out).map_err(|e| CtfpError::Internal(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}

/// `(flip, angle_deg, (zoom_h, zoom_w), (shift_h, shift_w))`
type ParamsTuple = (bool, f64, (f64, f64), (f64, f64));

#[pyfunction(name = "sample_params")]
#[pyo3(signature = (augment, *, seed, epoch, sample_id))]
fn sample_params_py(
    augment: AugmentArg,
    seed: u64,
    epoch: u64,
    sample_id: u64,
) -> PyResult<ParamsTuple> {
    let p = AugmentParams::sample(
        &mut crate::rng::ImageRng::new(seed, epoch, sample_id),
        &augment.0,
    );
    Ok((p.flip, p.angle_deg, p.zoom, p.shift))
}

#[pyfunction(name = "load_batch")]
#[pyo3(signature = (sources, sample_ids, *, size, channels, dtype, mean, std, augments, augment_of,
                    interpolation, fill, fill_value, seed, epoch, limits, cache, n_threads))]
#[allow(clippy::too_many_arguments)]
fn load_batch_py<'py>(
    py: Python<'py>,
    sources: Vec<Bound<'py, PyAny>>,
    sample_ids: Vec<u64>,
    size: (usize, usize),
    channels: usize,
    dtype: &str,
    mean: (f64, f64, f64),
    std: (f64, f64, f64),
    augments: Vec<Option<AugmentArg>>,
    augment_of: Option<Vec<usize>>,
    interpolation: &str,
    fill: &str,
    fill_value: f64,
    seed: u64,
    epoch: u64,
    limits: LimitsArg,
    cache: Option<Bound<'py, PyImageCache>>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let held: Vec<Held> = sources
        .iter()
        .enumerate()
        .map(|(k, s)| extract_source(s, k))
        .collect::<PyResult<_>>()?;
    let srcs: Vec<Source> = held
        .iter()
        .enumerate()
        .map(|(k, h)| as_source(h, k))
        .collect::<PyResult<_>>()?;
    let spec = BatchSpec {
        out_hw: size,
        channels,
        augments: augments.into_iter().map(|a| a.map(|a| a.0)).collect(),
        augment_of,
        sampling: sampling_from(interpolation, fill, fill_value)?,
        seed,
        epoch,
        limits: limits.0,
        kernel: kernel()?,
    };
    spec.validate()?;
    for (name, v) in [
        ("std", [std.0, std.1, std.2]),
        ("mean", [mean.0, mean.1, mean.2]),
    ] {
        if v.iter().any(|x| !x.is_finite()) || (name == "std" && v.iter().any(|&x| x <= 0.0)) {
            return Err(PyValueError::new_err(format!(
                "normalize: expected finite {name} values{}, found {v:?}",
                if name == "std" { " > 0" } else { "" }
            )));
        }
    }
    let norm = Normalize::new([mean.0, mean.1, mean.2], [std.0, std.1, std.2]);
    let cache_ref: Option<&ImageCache> = cache.as_ref().map(|c| &c.get().inner);
    let shape = (srcs.len(), channels, size.0, size.1);
    let job = BatchJob {
        srcs: &srcs,
        sample_ids: &sample_ids,
        spec: &spec,
        norm: &norm,
        cache: cache_ref,
        n_threads,
    };
    match dtype {
        "uint8" => job.run::<u8>(py, shape),
        "float32" => job.run::<f32>(py, shape),
        other => Err(PyValueError::new_err(format!(
            "dtype: expected 'uint8' or 'float32', found '{other}'"
        ))),
    }
}

/// Owns a batch's buffer while numpy uses it (it is the array's `base`); when numpy lets go, the
/// buffer goes back to `buffers` for the next batch instead of to the allocator.
#[pyclass(name = "_BatchBuffer", module = "ctfp._core", frozen)]
struct BatchOwner(Owned);

enum Owned {
    U8(Option<Array4<u8>>),
    F32(Option<Array4<f32>>),
}

impl Drop for BatchOwner {
    fn drop(&mut self) {
        match &mut self.0 {
            Owned::U8(a) => {
                if let Some(a) = a.take() {
                    buffers::give(a.into_raw_vec_and_offset().0);
                }
            }
            Owned::F32(a) => {
                if let Some(a) = a.take() {
                    buffers::give(a.into_raw_vec_and_offset().0);
                }
            }
        }
    }
}

/// Element types a batch can be made of, and how their buffer is owned on the Python side.
trait BatchElement: buffers::Pooled {
    fn owned(a: Array4<Self>) -> Owned;
}

impl BatchElement for u8 {
    fn owned(a: Array4<u8>) -> Owned {
        Owned::U8(Some(a))
    }
}

impl BatchElement for f32 {
    fn owned(a: Array4<f32>) -> Owned {
        Owned::F32(Some(a))
    }
}

/// Everything `load_batch` needs besides the element type.
struct BatchJob<'a> {
    srcs: &'a [Source<'a>],
    sample_ids: &'a [u64],
    spec: &'a BatchSpec,
    norm: &'a Normalize,
    cache: Option<&'a ImageCache>,
    n_threads: Option<usize>,
}

impl BatchJob<'_> {
    /// Fill a (recycled) buffer with the GIL released, then hand it to numpy without a copy.
    fn run<'py, T: BatchElement>(
        &self,
        py: Python<'py>,
        shape: (usize, usize, usize, usize),
    ) -> PyResult<Bound<'py, PyAny>> {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let buf = py.detach(|| {
            no_panic(|| {
                let mut buf = buffers::take::<T>(n);
                batch::load_batch(
                    self.srcs,
                    self.sample_ids,
                    self.spec,
                    self.norm,
                    self.cache,
                    self.n_threads,
                    &mut buf,
                )?;
                Ok(buf)
            })
        })?;
        let arr =
            Array4::from_shape_vec(shape, buf).map_err(|e| CtfpError::Internal(e.to_string()))?;
        batch_array(py, BatchOwner(T::owned(arr)))
    }
}

/// A numpy array over the buffer held by `owner` (no copy).
fn batch_array(py: Python<'_>, owner: BatchOwner) -> PyResult<Bound<'_, PyAny>> {
    let owner = Bound::new(py, owner)?;
    let base = owner.clone().into_any();
    // SAFETY: the Array4 inside `owner` is never moved or reallocated while `owner` is alive
    // (the pyclass is frozen and only `Drop` takes the array out), and `base` keeps `owner`
    // alive for as long as the numpy array exists.
    let arr = match &owner.get().0 {
        Owned::U8(Some(a)) => unsafe { PyArray4::borrow_from_array(a, base) }.into_any(),
        Owned::F32(Some(a)) => unsafe { PyArray4::borrow_from_array(a, base) }.into_any(),
        _ => return Err(CtfpError::Internal("batch buffer already released".into()).into()),
    };
    Ok(arr)
}

/// The kernel build in use: `"avx2"` or `"portable"` (`CTFP_CPU` forces one; read once).
#[pyfunction(name = "_cpu_features")]
fn cpu_features_py() -> PyResult<&'static str> {
    Ok(kernel()?.name())
}

#[pyfunction(name = "default_threads")]
fn default_threads_py() -> usize {
    pool::default_threads()
}

/// ITU-R 601-2 luma of uint8 RGB `(..., 3)`: the same rule (`decode::luma`) that decodes RGB and
/// palette PNGs, so every grey image in ctfp comes from one formula.
#[pyfunction(name = "rgb_to_grey")]
fn rgb_to_grey_py<'py>(
    py: Python<'py>,
    rgb: PyReadonlyArrayDyn<'py, u8>,
) -> PyResult<Bound<'py, PyAny>> {
    let shape = rgb.shape().to_vec();
    if shape.last() != Some(&3) {
        return Err(PyValueError::new_err(format!(
            "rgb: expected a uint8 array whose last axis has 3 channels (..., 3), found shape {shape:?}"
        )));
    }
    let src = c_order(&rgb, "rgb", "rgb")?;
    let grey: Vec<u8> = py.detach(|| {
        src.chunks_exact(3)
            .map(|p| decode::luma(p[0], p[1], p[2]))
            .collect()
    });
    let out_shape = numpy::ndarray::IxDyn(&shape[..shape.len() - 1]);
    let arr = numpy::ndarray::ArrayD::from_shape_vec(out_shape, grey)
        .map_err(|e| PyRuntimeError::new_err(format!("rgb_to_grey: {e}")))?;
    Ok(arr.into_pyarray(py).into_any())
}

#[pyfunction(name = "read_png_info")]
#[pyo3(signature = (data, *, limits))]
fn read_png_info_py(
    data: &Bound<'_, PyBytes>,
    limits: LimitsArg,
) -> PyResult<(usize, usize, Option<u8>)> {
    Ok(decode::read_info(data.as_bytes(), &limits.0).map_err(|e| e.with_item("PNG bytes"))?)
}

#[pyfunction(name = "read_png_size")]
#[pyo3(signature = (data, *, limits))]
fn read_png_size_py(data: &Bound<'_, PyBytes>, limits: LimitsArg) -> PyResult<(usize, usize)> {
    Ok(decode::read_size(data.as_bytes(), &limits.0).map_err(|e| e.with_item("PNG bytes"))?)
}

/// Decode-once in-memory cache of grey images, shared across `load_batch` calls and threads.
#[pyclass(name = "ImageCache", module = "ctfp._core", frozen)]
pub struct PyImageCache {
    inner: ImageCache,
}

#[pymethods]
impl PyImageCache {
    #[new]
    #[pyo3(signature = (max_bytes = None))]
    fn new(max_bytes: Option<usize>) -> Self {
        PyImageCache {
            inner: ImageCache::new(max_bytes.unwrap_or(usize::MAX)),
        }
    }

    /// Counts: entries, bytes, hits, misses, max_bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("entries", s.entries)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("max_bytes", s.max_bytes)?;
        Ok(d)
    }

    fn clear(&self) {
        self.inner.clear()
    }

    fn __len__(&self) -> usize {
        self.inner.stats().entries
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_png_py, m)?)?;
    m.add_function(wrap_pyfunction!(transform_py, m)?)?;
    m.add_function(wrap_pyfunction!(sample_params_py, m)?)?;
    m.add_function(wrap_pyfunction!(load_batch_py, m)?)?;
    m.add_function(wrap_pyfunction!(default_threads_py, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_features_py, m)?)?;
    m.add_function(wrap_pyfunction!(read_png_size_py, m)?)?;
    m.add_function(wrap_pyfunction!(read_png_info_py, m)?)?;
    m.add_function(wrap_pyfunction!(rgb_to_grey_py, m)?)?;
    m.add_class::<PyImageCache>()?;
    m.add_function(wrap_pyfunction!(ssim_matrix_py, m)?)?;
    Ok(())
}

/// A `(n, height, width)` uint8 array as a stack of images for the SSIM kernel.
fn ssim_images<'a>(
    a: &'a numpy::PyReadonlyArray3<'_, u8>,
    name: &str,
) -> PyResult<crate::ssim::Images<'a>> {
    let shape = a.shape();
    let data = c_order(a, name, name)?;
    Ok(crate::ssim::Images::new(
        data, shape[0], shape[1], shape[2],
    )?)
}

/// SSIM (skimage's defaults for uint8) of every query against every reference.
#[pyfunction(name = "ssim_matrix")]
#[pyo3(signature = (queries, references, *, n_threads = None))]
fn ssim_matrix_py<'py>(
    py: Python<'py>,
    queries: numpy::PyReadonlyArray3<'py, u8>,
    references: numpy::PyReadonlyArray3<'py, u8>,
    n_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (q, r) = (
        ssim_images(&queries, "queries")?,
        ssim_images(&references, "references")?,
    );
    let kernel = kernel()?;
    let out = py.detach(|| no_panic(|| crate::ssim::ssim_matrix(kernel, q, r, n_threads)))?;
    let arr =
        Array2::from_shape_vec((q.n, r.n), out).map_err(|e| CtfpError::Internal(e.to_string()))?;
    Ok(arr.into_pyarray(py))
}
