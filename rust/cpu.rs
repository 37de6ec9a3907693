//! The CPU feature decision, made once per process and passed to every kernel.
//!
//! The augmentation warp and the SSIM kernels are each compiled twice: a portable build (the
//! target's baseline) and, on x86-64, an AVX2+FMA build. [`Kernel::selected`] picks one the first
//! time it is called (never at import) and every later call gets the same answer; the kernels
//! take the choice as an argument instead of detecting features themselves, so a test can run
//! either build on the same machine.
//!
//! The environment variable `CTFP_CPU` overrides the detection when it is first read:
//! `"portable"` forces the portable build (how the Python tests exercise it on AVX2 machines),
//! `"avx2"` requires the AVX2+FMA build, `"auto"` (or unset/empty) detects.
//!
//! Both builds run the same operations in the same order: Rust never contracts `a * b + c` into
//! a fused multiply-add on its own, so enabling FMA only changes instruction selection, and the
//! two builds give bit-identical results (the tests check this).

use std::sync::OnceLock;

use crate::error::{CtfpError, Result};

/// Which build of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The target's baseline instructions (SSE2 on x86-64); runs everywhere.
    Portable,
    /// x86-64 with AVX2 and FMA. Only ever constructed where the CPU has both
    /// ([`Kernel::avx2_fma`] checks), which is what makes dispatching on it sound.
    Avx2Fma,
}

/// The environment variable read by [`Kernel::selected`].
pub const ENV_VAR: &str = "CTFP_CPU";

static SELECTED: OnceLock<std::result::Result<Kernel, String>> = OnceLock::new();

impl Kernel {
    /// The accepted values of `CTFP_CPU`, for messages.
    pub const NAMES: &'static str = "'auto', 'portable', 'avx2'";

    /// The best build this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::avx2_fma().unwrap_or(Kernel::Portable)
    }

    /// `Avx2Fma` where the CPU has AVX2 and FMA, otherwise `None`.
    pub fn avx2_fma() -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Kernel::Avx2Fma);
            }
        }
        None
    }

    /// The build named by a `CTFP_CPU` value (`None` or empty: detect).
    pub fn from_setting(value: Option<&str>) -> Result<Kernel> {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Kernel::detect()),
            Some("portable") => Ok(Kernel::Portable),
            Some("avx2") => Kernel::avx2_fma().ok_or_else(|| {
                CtfpError::Value(format!(
                    "{ENV_VAR}: 'avx2' needs a CPU with AVX2 and FMA, and this one lacks them; \
                     unset {ENV_VAR} or set it to 'portable'"
                ))
            }),
            Some(other) => Err(CtfpError::Value(format!(
                "{ENV_VAR}: expected one of {}, found '{other}'",
                Kernel::NAMES
            ))),
        }
    }

    /// The build this process uses: decided on the first call (from `CTFP_CPU`, else detected)
    /// and the same ever after. An invalid `CTFP_CPU` is an error on every call.
    pub fn selected() -> Result<Kernel> {
        SELECTED
            .get_or_init(|| {
                let var = std::env::var(ENV_VAR).ok();
                Kernel::from_setting(var.as_deref()).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(CtfpError::Value)
    }

    /// The name `CTFP_CPU` uses for this build.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Avx2Fma => "avx2",
        }
    }

    /// For tests that compare the two builds: `Avx2Fma` where the CPU has it, otherwise `None`,
    /// saying on stderr that only the portable `what` can run here (so the test is skipped).
    #[cfg(test)]
    pub(crate) fn avx2_fma_or_skip(what: &str) -> Option<Kernel> {
        let k = Kernel::avx2_fma();
        if k.is_none() {
            eprintln!("skipped: this CPU has no AVX2+FMA, only the portable {what} can run");
        }
        k
    }

    /// Every build this CPU can run, portable first (for tests that force each path).
    pub fn all_available() -> Vec<Kernel> {
        std::iter::once(Kernel::Portable)
            .chain(Kernel::avx2_fma())
            .collect()
    }
}

/// Defines `fn $name(kernel: Kernel, args..)`, which runs `$body(args..)` compiled for the
/// target's baseline, or an AVX2+FMA build of the same `$body` when `kernel` is
/// [`Kernel::Avx2Fma`]. `$body` should be `#[inline(always)]` so that each build gets its own copy
/// of the loops; this is the one place where a kernel is compiled twice and dispatched on.
macro_rules! kernel_dispatch {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident => $body:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
    ) => {
        $(#[$meta])*
        $vis fn $name(kernel: $crate::cpu::Kernel, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                $body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if kernel == $crate::cpu::Kernel::Avx2Fma {
                // SAFETY: `Kernel::Avx2Fma` is only constructed where the CPU has AVX2 and FMA.
                return unsafe { avx2($($arg),*) };
            }
            let _ = kernel;
            $body($($arg),*)
        }
    };
}
pub(crate) use kernel_dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        assert_eq!(
            Kernel::from_setting(Some("portable")).unwrap(),
            Kernel::Portable
        );
        assert_eq!(Kernel::from_setting(None).unwrap(), Kernel::detect());
        assert_eq!(
            Kernel::from_setting(Some(" auto ")).unwrap(),
            Kernel::detect()
        );
        let e = Kernel::from_setting(Some("sse9")).unwrap_err().to_string();
        assert!(
            e.contains("CTFP_CPU") && e.contains("'portable'") && e.contains("'sse9'"),
            "{e}"
        );
        match Kernel::avx2_fma() {
            Some(k) => assert_eq!(Kernel::from_setting(Some("avx2")).unwrap(), k),
            None => assert!(Kernel::from_setting(Some("avx2")).is_err()),
        }
    }

    #[test]
    fn selection_is_stable() {
        let a = Kernel::selected().unwrap();
        assert_eq!(Kernel::selected().unwrap(), a);
        assert!(Kernel::all_available().contains(&a));
        assert_eq!(Kernel::all_available()[0], Kernel::Portable);
    }
}
