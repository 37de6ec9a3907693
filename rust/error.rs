//! ctfp's error type. Plain Rust: the `PyErr` mapping lives in `bindings.rs` so that this module
//! stays free of PyO3 and can be unit-tested with `cargo test`.

use std::path::PathBuf;

/// Everything that can go wrong in the core, with enough context for a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CtfpError {
    /// A file that does not exist (maps to Python's `FileNotFoundError`).
    #[error("{item}: file not found")]
    NotFound { item: String, path: PathBuf },
    /// Any other I/O failure while reading a source (maps to `OSError`).
    #[error("{item}: cannot read: {message}")]
    Io { item: String, message: String },
    /// Bytes that are not a decodable PNG, or a PNG refused by a cap (maps to `ImageDecodeError`).
    #[error("{item}: {message}")]
    Decode { item: String, message: String },
    /// A bad argument value (maps to `ValueError`).
    #[error("{0}")]
    Value(String),
    /// A broken internal invariant, caught at the boundary instead of panicking into Python
    /// (maps to `RuntimeError`).
    #[error("internal error in ctfp (please report it): {0}")]
    Internal(String),
}

impl CtfpError {
    /// Prefix the item description (e.g. `image 17 (scans/f017.png)`) when the error was raised
    /// below the level that knows the index.
    pub fn with_item(self, item: &str) -> Self {
        match self {
            CtfpError::NotFound { path, .. } => CtfpError::NotFound {
                item: item.to_string(),
                path,
            },
            CtfpError::Io { message, .. } => CtfpError::Io {
                item: item.to_string(),
                message,
            },
            CtfpError::Decode { message, .. } => CtfpError::Decode {
                item: item.to_string(),
                message,
            },
            other => other,
        }
    }

    pub fn decode(message: impl Into<String>) -> Self {
        CtfpError::Decode {
            item: "image".to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, CtfpError>;

/// Run `f`, turning a panic (ours, or one propagated from a rayon worker) into
/// `CtfpError::Internal`, so that no panic ever reaches Python as `PanicException`.
pub fn no_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(CtfpError::Internal(msg))
    })
}
