//! ctfp's Rust core: PNG decoding, augmentation and batch assembly for training-data fingerprint
//! detection. Plain Rust modules do the work; `bindings` is the only one that touches PyO3.

pub mod augment;
pub mod batch;
pub mod buffers;
pub mod cache;
pub mod color;
pub mod cpu;
pub mod decode;
pub mod error;
pub mod pool;
pub mod rng;
pub mod ssim;

mod bindings;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bindings::register(m)
}
