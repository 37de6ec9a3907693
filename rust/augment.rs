//! Augmentation: parameter draws and the fused inverse-mapping kernel.
//!
//! # Conventions (the Python `ctfp.transform` docstring repeats them)
//!
//! Coordinates are `(row, col)`; pixel centres sit at integer positions, as in
//! `scipy.ndimage`. An output of size `(H, W)` is made from a source of size `(Hs, Ws)` in this
//! order: resize the source to `(H, W)` (pixel-centre aligned, like OpenCV/Pillow), apply the
//! affine transform about the image centre, then flip horizontally. Each output pixel is computed
//! by mapping it back through all three at once and sampling the source once:
//!
//! ```text
//! u   = F (i, j) - F c_o                      flip: F = diag(1, -1) when flipped, c_o = ((H-1)/2, (W-1)/2)
//! v   = R(theta) (Z^-1 u - t)                 rotation, zoom, shift
//! src = S v + c_s                             S = diag(Hs/H, Ws/W), c_s = ((Hs-1)/2, (Ws-1)/2)
//! R(theta) = [[cos, sin], [-sin, cos]]        positive angles turn the content counter-clockwise
//! Z = diag(zoom_h, zoom_w)                    zoom > 1 enlarges the content (Keras' factor is 1/zoom)
//! t = (shift_h * H, shift_w * W)              positive shifts move the content down / right
//! ```
//!
//! so `src = M (i, j) + offset`, the `matrix`/`offset` pair that `scipy.ndimage.affine_transform`
//! takes. Samples that fall outside the source follow the fill mode: `Nearest` repeats the edge
//! pixels (scipy `mode="nearest"`, Keras' default), `Constant` pads with `fill_value` (scipy
//! `mode="grid-constant"`), `Reflect` mirrors about the edge (scipy `mode="reflect"`).

use crate::cpu::{kernel_dispatch, Kernel};
use crate::error::{CtfpError, Result};
use crate::rng::ImageRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    Nearest,
    Constant,
    Reflect,
}

impl Fill {
    pub const NAMES: &'static str = "'nearest', 'constant', 'reflect'";
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "nearest" => Ok(Fill::Nearest),
            "constant" => Ok(Fill::Constant),
            "reflect" => Ok(Fill::Reflect),
            other => Err(CtfpError::Value(format!(
                "fill: unknown mode '{other}'; expected one of {}",
                Fill::NAMES
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Nearest,
}

impl Interpolation {
    pub const NAMES: &'static str = "'bilinear', 'nearest'";
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "bilinear" => Ok(Interpolation::Bilinear),
            "nearest" => Ok(Interpolation::Nearest),
            other => Err(CtfpError::Value(format!(
                "interpolation: unknown mode '{other}'; expected one of {}",
                Interpolation::NAMES
            ))),
        }
    }
}

/// How source pixels are read: interpolation, border rule and the constant for `Fill::Constant`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub interpolation: Interpolation,
    pub fill: Fill,
    pub fill_value: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            interpolation: Interpolation::Bilinear,
            fill: Fill::Nearest,
            fill_value: 0.0,
        }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=255.0).contains(&self.fill_value) {
            return Err(CtfpError::Value(format!(
                "fill_value: expected a grey level in [0, 255], found {}",
                self.fill_value
            )));
        }
        Ok(())
    }
}

/// Ranges the random parameters are drawn from. The paper's values are the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub hflip_prob: f64,
    /// Angles are uniform in `[-max_angle_deg, max_angle_deg]`.
    pub max_angle_deg: f64,
    /// Zoom factors are uniform in `[lo, hi]`.
    pub zoom_range: (f64, f64),
    /// Draw height and width zoom independently (as Keras does) instead of one factor for both.
    pub zoom_per_axis: bool,
    /// Shifts are uniform in `[-h, h]` and `[-w, w]`, fractions of the output height and width.
    pub shift_frac: (f64, f64),
    pub sampling: Sampling,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            hflip_prob: 0.5,
            max_angle_deg: 10.0,
            zoom_range: (0.97, 1.03),
            zoom_per_axis: true,
            shift_frac: (0.05, 0.05),
            sampling: Sampling::default(),
        }
    }
}

impl AugmentConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, expected: &str, found: String| {
            Err(CtfpError::Value(format!(
                "{name}: expected {expected}, found {found}"
            )))
        };
        if !(0.0..=1.0).contains(&self.hflip_prob) {
            return bad(
                "hflip",
                "a probability in [0, 1]",
                self.hflip_prob.to_string(),
            );
        }
        if !(self.max_angle_deg.is_finite() && (0.0..=180.0).contains(&self.max_angle_deg)) {
            return bad(
                "max_angle_deg",
                "a number in [0, 180]",
                self.max_angle_deg.to_string(),
            );
        }
        let (lo, hi) = self.zoom_range;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return bad(
                "zoom",
                "(lo, hi) with 0 < lo <= hi",
                format!("({lo}, {hi})"),
            );
        }
        let (sh, sw) = self.shift_frac;
        if !(sh.is_finite()
            && sw.is_finite()
            && (0.0..=1.0).contains(&sh)
            && (0.0..=1.0).contains(&sw))
        {
            return bad("shift_frac", "fractions in [0, 1]", format!("({sh}, {sw})"));
        }
        self.sampling.validate()
    }
}

/// The parameters of one image's augmentation; `AugmentParams::IDENTITY` only resizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentParams {
    pub flip: bool,
    pub angle_deg: f64,
    /// (height, width) magnification.
    pub zoom: (f64, f64),
    /// (height, width) shift as fractions of the output size.
    pub shift: (f64, f64),
}

impl AugmentParams {
    pub const IDENTITY: AugmentParams = AugmentParams {
        flip: false,
        angle_deg: 0.0,
        zoom: (1.0, 1.0),
        shift: (0.0, 0.0),
    };

    /// Draw in a fixed order: flip, angle, zoom height, zoom width (when per axis), shift height,
    /// shift width. Every draw happens whatever the ranges, so one range change does not shift
    /// the others' values.
    pub fn sample(rng: &mut ImageRng, cfg: &AugmentConfig) -> Self {
        let flip = rng.unit() < cfg.hflip_prob;
        let angle_deg = rng.uniform(-cfg.max_angle_deg, cfg.max_angle_deg);
        let (lo, hi) = cfg.zoom_range;
        let zh = rng.uniform(lo, hi);
        let zw_draw = rng.uniform(lo, hi);
        let zw = if cfg.zoom_per_axis { zw_draw } else { zh };
        let sh = rng.uniform(-cfg.shift_frac.0, cfg.shift_frac.0);
        let sw = rng.uniform(-cfg.shift_frac.1, cfg.shift_frac.1);
        AugmentParams {
            flip,
            angle_deg,
            zoom: (zh, zw),
            shift: (sh, sw),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let (zh, zw) = self.zoom;
        if !(zh.is_finite() && zw.is_finite() && zh > 0.0 && zw > 0.0) {
            return Err(CtfpError::Value(format!(
                "zoom: expected positive finite factors, found ({zh}, {zw})"
            )));
        }
        if !(self.angle_deg.is_finite() && self.shift.0.is_finite() && self.shift.1.is_finite()) {
            return Err(CtfpError::Value(
                "angle_deg and shift: expected finite numbers".to_string(),
            ));
        }
        Ok(())
    }
}

/// `src = m (i, j) + off` for output pixel `(i, j)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mapping {
    pub m: [[f64; 2]; 2],
    pub off: [f64; 2],
}

impl Mapping {
    /// The fused inverse mapping of the module-level conventions.
    pub fn new(p: &AugmentParams, src_hw: (usize, usize), out_hw: (usize, usize)) -> Self {
        let (hs, ws) = (src_hw.0 as f64, src_hw.1 as f64);
        let (h, w) = (out_hw.0 as f64, out_hw.1 as f64);
        let (s, c) = p.angle_deg.to_radians().sin_cos();
        let r = [[c, s], [-s, c]];
        let scale = [hs / h, ws / w];
        let zinv = [1.0 / p.zoom.0, 1.0 / p.zoom.1];
        let flip = if p.flip { -1.0 } else { 1.0 };
        // M = S R Z^-1 F
        let mut m = [[0.0; 2]; 2];
        for (a, row) in m.iter_mut().enumerate() {
            row[0] = scale[a] * r[a][0] * zinv[0];
            row[1] = scale[a] * r[a][1] * zinv[1] * flip;
        }
        let c_o = [(h - 1.0) / 2.0, (w - 1.0) / 2.0];
        let c_s = [(hs - 1.0) / 2.0, (ws - 1.0) / 2.0];
        let t = [p.shift.0 * h, p.shift.1 * w];
        let mut off = [0.0; 2];
        for a in 0..2 {
            let srt = scale[a] * (r[a][0] * t[0] + r[a][1] * t[1]);
            off[a] = c_s[a] - (m[a][0] * c_o[0] + m[a][1] * c_o[1]) - srt;
        }
        Mapping { m, off }
    }
}

/// A borrowed grey image, row-major.
#[derive(Clone, Copy, Debug)]
pub struct GreyView<'a> {
    pub data: &'a [u8],
    pub height: usize,
    pub width: usize,
}

/// Half-sample symmetric reflection of an index into `[0, n)` (scipy's `mode="reflect"`).
#[inline]
fn reflect(k: i64, n: i64) -> usize {
    let period = 2 * n;
    let mut k = k.rem_euclid(period);
    if k >= n {
        k = period - 1 - k;
    }
    k as usize
}

/// Per-thread scratch for `warp_row`: one row of precomputed indices, weights and neighbours,
/// reused from row to row and image to image.
#[derive(Default)]
pub struct RowScratch {
    idx: Vec<u32>,
    dcol: Vec<u32>,
    drow: Vec<u32>,
    fx: Vec<f32>,
    fy: Vec<f32>,
    p: [Vec<u8>; 4],
}

impl RowScratch {
    fn resize(&mut self, n: usize) {
        self.idx.resize(n, 0);
        self.dcol.resize(n, 0);
        self.drow.resize(n, 0);
        self.fx.resize(n, 0.0);
        self.fy.resize(n, 0.0);
        for p in &mut self.p {
            p.resize(n, 0);
        }
    }
}

/// The `j` in `[0, n)` with `lo <= b + j * d < hi`, evaluated exactly as the row loops evaluate
/// it. `b + j * d` in `f32` is monotone in `j` (rounding is monotone), so the set is an interval
/// and its two ends decide it.
#[inline]
fn span(b: f32, d: f32, lo: f32, hi: f32, n: usize) -> (usize, usize) {
    let ok = |j: usize| {
        let v = b + j as f32 * d;
        v >= lo && v < hi
    };
    let (mut a, mut e) = if d == 0.0 {
        if ok(0) {
            (0, n)
        } else {
            (0, 0)
        }
    } else {
        let (t1, t2) = ((lo - b) / d, (hi - b) / d);
        let (tmin, tmax) = if d > 0.0 { (t1, t2) } else { (t2, t1) };
        let clampn = |t: f32| t.max(0.0).min(n as f32) as usize;
        (clampn(tmin - 1.0), clampn(tmax + 2.0))
    };
    while a < e && !ok(a) {
        a += 1;
    }
    while e > a && !ok(e - 1) {
        e -= 1;
    }
    (a, e)
}

/// Bilinear samples of one row with edge clamping (the "nearest" fill rule), in three passes
/// that the compiler vectorises around the one that cannot be: (1) coordinates, neighbour
/// offsets and weights for the whole row; (2) the four neighbour reads, scalar; (3) the
/// interpolation. Splitting the loop this way is what makes ctfp's warp several times faster than
/// a per-pixel loop; it is compiled twice (AVX2+FMA, and the baseline) and `warp_row` runs the
/// build its `Kernel` names.
#[inline(always)]
fn bilinear_clamped(
    src: GreyView<'_>,
    by: f32,
    dy: f32,
    bx: f32,
    dx: f32,
    row: &mut [f32],
    s: &mut RowScratch,
) {
    let (h, w) = (src.height, src.width);
    let n = row.len();
    s.resize(n);
    let (ymax, xmax) = ((h - 1) as f32, (w - 1) as f32);
    let (hl, wl) = ((h - 1) as i32, (w - 1) as i32);
    let wu = w as i32;
    let (idx, dcol, drow, fx, fy) = (
        &mut s.idx[..n],
        &mut s.dcol[..n],
        &mut s.drow[..n],
        &mut s.fx[..n],
        &mut s.fy[..n],
    );
    for j in 0..n {
        // i32 conversions only: they map onto vector instructions (u64 and u32 ones do not).
        let jf = j as i32 as f32;
        // Clamp with plain comparisons (f32::clamp and saturating `as` add NaN handling that
        // blocks vectorisation; `warp_row` guarantees finite inputs).
        let (y, x) = (by + jf * dy, bx + jf * dx);
        let y = if y > 0.0 { y } else { 0.0 };
        let y = if y < ymax { y } else { ymax };
        let x = if x > 0.0 { x } else { 0.0 };
        let x = if x < xmax { x } else { xmax };
        // SAFETY: y in [0, h - 1] and x in [0, w - 1], finite (the caller checks that the row's
        // coordinates are finite and below 2^17), so both fit an i32; truncation is floor here.
        let (y0, x0): (i32, i32) = unsafe { (y.to_int_unchecked(), x.to_int_unchecked()) };
        fy[j] = y - y0 as f32;
        fx[j] = x - x0 as f32;
        idx[j] = (y0 * wu + x0) as u32;
        dcol[j] = (x0 < wl) as u32;
        drow[j] = (y0 < hl) as u32 * wu as u32;
    }
    let data = src.data;
    let [p00, p01, p10, p11] = &mut s.p;
    let (p00, p01, p10, p11) = (&mut p00[..n], &mut p01[..n], &mut p10[..n], &mut p11[..n]);
    let (idx, dcol, drow) = (&idx[..n], &dcol[..n], &drow[..n]);
    for j in 0..n {
        let i = idx[j] as usize;
        let (c, r) = (dcol[j] as usize, drow[j] as usize);
        // SAFETY: from the first pass, i = y0 * w + x0 with y0 <= h - 1, x0 <= w - 1; c is 1 only
        // when x0 < w - 1 and r is w only when y0 < h - 1, so i + r + c <= h * w - 1 and
        // data.len() == h * w (asserted in `warp_row`).
        unsafe {
            p00[j] = *data.get_unchecked(i);
            p01[j] = *data.get_unchecked(i + c);
            p10[j] = *data.get_unchecked(i + r);
            p11[j] = *data.get_unchecked(i + r + c);
        }
    }
    let (fx, fy, row) = (&fx[..n], &fy[..n], &mut row[..n]);
    for j in 0..n {
        let (a, b, c, d) = (p00[j] as f32, p01[j] as f32, p10[j] as f32, p11[j] as f32);
        let top = a + (b - a) * fx[j];
        let bot = c + (d - c) * fx[j];
        row[j] = top + (bot - top) * fy[j];
    }
}

kernel_dispatch! {
    /// [`bilinear_clamped`] with the build `kernel`.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn bilinear_clamped_dispatch => bilinear_clamped(
        src: GreyView<'_>,
        by: f32,
        dy: f32,
        bx: f32,
        dx: f32,
        row: &mut [f32],
        s: &mut RowScratch,
    )
}

/// Compute one output row of grey levels (0..=255 as `f32`, not rounded) into `row`, with the
/// kernel build `kernel` (both builds give identical rows).
///
/// Bilinear sampling takes the vectorised clamped path for the whole row; for the "constant"
/// and "reflect" fills the pixels whose neighbours leave the image (outside the interior span)
/// are then recomputed by the general path, which applies the fill rule in `f64`. Nearest
/// interpolation always takes the general path.
pub fn warp_row(
    kernel: Kernel,
    src: GreyView<'_>,
    map: &Mapping,
    sampling: &Sampling,
    i: usize,
    row: &mut [f32],
    scratch: &mut RowScratch,
) {
    let (h, w) = (src.height, src.width);
    assert!(
        src.data.len() == h * w && h > 0 && w > 0,
        "warp_row: view does not match its size"
    );
    let data = src.data;
    let n = row.len();
    let fi = i as f64;
    let (by, bx) = (map.m[0][0] * fi + map.off[0], map.m[1][0] * fi + map.off[1]);
    let (dy, dx) = (map.m[0][1], map.m[1][1]);
    let (mut a, mut e) = (0, 0);
    // f32 coordinates keep 1/64 pixel or better up to 2^17 pixels away.
    let reach = by.abs().max(bx.abs()) + dy.abs().max(dx.abs()) * n as f64;
    let small = h * w < (1 << 31) && h < (1 << 24) && w < (1 << 24) && n < (1 << 24);
    let finite = by.is_finite() && bx.is_finite() && dy.is_finite() && dx.is_finite();
    if sampling.interpolation == Interpolation::Bilinear
        && reach < (1 << 17) as f64
        && small
        && finite
    {
        let (by, bx, dy, dx) = (by as f32, bx as f32, dy as f32, dx as f32);
        bilinear_clamped_dispatch(kernel, src, by, dy, bx, dx, row, scratch);
        if sampling.fill == Fill::Nearest {
            return;
        }
        if h >= 2 && w >= 2 {
            let (ya, ye) = span(by, dy, 0.0, (h - 1) as f32, n);
            let (xa, xe) = span(bx, dx, 0.0, (w - 1) as f32, n);
            (a, e) = (ya.max(xa), ye.min(xe));
            if a >= e {
                (a, e) = (0, 0);
            }
        }
    }
    let (hi, wi) = (h as i64, w as i64);
    let (fill, fill_value, interp) = (
        sampling.fill,
        sampling.fill_value as f64,
        sampling.interpolation,
    );
    // Value at integer position (y, x) under the fill rule.
    let at = |y: i64, x: i64| -> f64 {
        match fill {
            Fill::Nearest => data[(y.clamp(0, hi - 1) * wi + x.clamp(0, wi - 1)) as usize] as f64,
            Fill::Constant => {
                if (0..hi).contains(&y) && (0..wi).contains(&x) {
                    data[(y * wi + x) as usize] as f64
                } else {
                    fill_value
                }
            }
            Fill::Reflect => data[reflect(y, hi) * w + reflect(x, wi)] as f64,
        }
    };
    for j in (0..a).chain(e..n) {
        let jf = j as f64;
        let (y, x) = (by + dy * jf, bx + dx * jf);
        let v = match interp {
            Interpolation::Nearest => at(floor(y + 0.5) as i64, floor(x + 0.5) as i64),
            Interpolation::Bilinear => {
                let (yf, xf) = (floor(y), floor(x));
                let (fy, fx) = (y - yf, x - xf);
                let (y0, x0) = (yf as i64, xf as i64);
                let top = at(y0, x0) + (at(y0, x0 + 1) - at(y0, x0)) * fx;
                let bot = at(y0 + 1, x0) + (at(y0 + 1, x0 + 1) - at(y0 + 1, x0)) * fx;
                top + (bot - top) * fy
            }
        };
        row[j] = v as f32;
    }
}

/// `f64::floor` for |v| < 2^62 without the libm call that baseline x86-64 (no SSE4.1) makes.
#[inline]
fn floor(v: f64) -> f64 {
    let t = v as i64 as f64;
    if t > v {
        t - 1.0
    } else {
        t
    }
}

/// Round a sample to a grey level (round half up; samples lie within [0, 255]).
#[inline]
pub fn to_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// Apply explicit parameters to one image: the single-image form of what a batch does.
pub fn transform(
    kernel: Kernel,
    src: GreyView<'_>,
    params: &AugmentParams,
    sampling: &Sampling,
    out_hw: (usize, usize),
) -> Result<Vec<u8>> {
    params.validate()?;
    sampling.validate()?;
    check_sizes(src, out_hw)?;
    let map = Mapping::new(params, (src.height, src.width), out_hw);
    let (oh, ow) = out_hw;
    let mut out = vec![0u8; oh * ow];
    let mut row = vec![0f32; ow];
    let mut scratch = RowScratch::default();
    for (i, dst) in out.chunks_exact_mut(ow).enumerate() {
        warp_row(kernel, src, &map, sampling, i, &mut row, &mut scratch);
        for (d, &v) in dst.iter_mut().zip(&row) {
            *d = to_u8(v);
        }
    }
    Ok(out)
}

pub fn check_sizes(src: GreyView<'_>, out_hw: (usize, usize)) -> Result<()> {
    if out_hw.0 == 0 || out_hw.1 == 0 {
        return Err(CtfpError::Value(format!(
            "size: expected positive (height, width), found {out_hw:?}"
        )));
    }
    if src.height == 0 || src.width == 0 || src.data.len() != src.height * src.width {
        return Err(CtfpError::Value(format!(
            "image: expected a non-empty {}x{} grey image, found {} bytes",
            src.height,
            src.width,
            src.data.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ramp(h: usize, w: usize) -> Vec<u8> {
        (0..h * w)
            .map(|k| ((k * 37 + k / w * 11) % 251) as u8)
            .collect()
    }

    fn run(img: &[u8], h: usize, w: usize, p: &AugmentParams, out: (usize, usize)) -> Vec<u8> {
        transform(
            Kernel::detect(),
            GreyView {
                data: img,
                height: h,
                width: w,
            },
            p,
            &Sampling::default(),
            out,
        )
        .unwrap()
    }

    #[test]
    fn identity_same_size_is_exact() {
        let img = ramp(13, 17);
        assert_eq!(run(&img, 13, 17, &AugmentParams::IDENTITY, (13, 17)), img);
    }

    #[test]
    fn flip_is_mirror_and_involution() {
        let (h, w) = (9, 12);
        let img = ramp(h, w);
        let p = AugmentParams {
            flip: true,
            ..AugmentParams::IDENTITY
        };
        let once = run(&img, h, w, &p, (h, w));
        for i in 0..h {
            for j in 0..w {
                assert_eq!(once[i * w + j], img[i * w + (w - 1 - j)]);
            }
        }
        assert_eq!(run(&once, h, w, &p, (h, w)), img);
    }

    #[test]
    fn quarter_turn_is_counter_clockwise() {
        let (n, mut img) = (8usize, vec![0u8; 64]);
        img[1] = 200; // top row, near the left: after a CCW quarter turn it sits in the left column, near the bottom
        let p = AugmentParams {
            angle_deg: 90.0,
            ..AugmentParams::IDENTITY
        };
        let out = run(&img, n, n, &p, (n, n));
        let pos = out.iter().position(|&v| v == 200).expect("marker kept");
        assert_eq!((pos / n, pos % n), (n - 2, 0));
    }

    #[test]
    fn positive_shift_moves_content_down_right() {
        let (n, mut img) = (10usize, vec![0u8; 100]);
        img[3 * n + 3] = 255;
        let p = AugmentParams {
            shift: (0.2, 0.1),
            ..AugmentParams::IDENTITY
        };
        let out = run(&img, n, n, &p, (n, n));
        assert_eq!(out[5 * n + 4], 255);
    }

    #[test]
    fn reflect_index() {
        let r: Vec<usize> = (-4..8).map(|k| reflect(k, 4)).collect();
        assert_eq!(r, vec![3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0]);
    }

    #[test]
    fn bad_zoom_is_an_error() {
        let img = ramp(4, 4);
        let p = AugmentParams {
            zoom: (0.0, 1.0),
            ..AugmentParams::IDENTITY
        };
        let e = transform(
            Kernel::detect(),
            GreyView {
                data: &img,
                height: 4,
                width: 4,
            },
            &p,
            &Sampling::default(),
            (4, 4),
        );
        assert!(matches!(e, Err(CtfpError::Value(_))));
    }

    #[test]
    fn default_config_is_valid_and_draws_in_range() {
        let cfg = AugmentConfig::default();
        cfg.validate().unwrap();
        for id in 0..200 {
            let p = AugmentParams::sample(&mut ImageRng::new(3, 1, id), &cfg);
            assert!(p.angle_deg.abs() <= 10.0);
            assert!((0.97..=1.03).contains(&p.zoom.0) && (0.97..=1.03).contains(&p.zoom.1));
            assert!(p.shift.0.abs() <= 0.05 && p.shift.1.abs() <= 0.05);
        }
    }

    /// Every row of a warp, unrounded, with the kernel build `kernel`.
    fn rows(
        kernel: Kernel,
        img: &[u8],
        (h, w): (usize, usize),
        p: &AugmentParams,
        sampling: &Sampling,
        (oh, ow): (usize, usize),
    ) -> Vec<f32> {
        let src = GreyView {
            data: img,
            height: h,
            width: w,
        };
        let map = Mapping::new(p, (h, w), (oh, ow));
        let (mut row, mut scratch) = (vec![0f32; ow], RowScratch::default());
        let mut out = Vec::with_capacity(oh * ow);
        for i in 0..oh {
            warp_row(kernel, src, &map, sampling, i, &mut row, &mut scratch);
            out.extend_from_slice(&row);
        }
        out
    }

    /// The portable and AVX2+FMA builds of the warp give bit-identical rows (Rust does not fuse
    /// `a + (b - a) * f` into an FMA by itself, so the two builds round the same way). Without
    /// AVX2 on this CPU only the portable build runs, and the test says so.
    #[test]
    fn portable_and_avx2_warps_are_identical() {
        let Some(simd) = Kernel::avx2_fma_or_skip("warp") else {
            return;
        };
        let (h, w) = (61, 47);
        let img = ramp(h, w);
        let fills = [Fill::Nearest, Fill::Constant, Fill::Reflect];
        let interps = [Interpolation::Bilinear, Interpolation::Nearest];
        let mut rng = ImageRng::new(1, 2, 3);
        let cfg = AugmentConfig {
            max_angle_deg: 45.0,
            zoom_range: (0.6, 1.7),
            shift_frac: (0.3, 0.3),
            ..AugmentConfig::default()
        };
        let mut max_diff = 0f32;
        for k in 0..60 {
            let p = AugmentParams::sample(&mut rng, &cfg);
            let sampling = Sampling {
                interpolation: interps[k % 2],
                fill: fills[k % 3],
                fill_value: 91.0,
            };
            let out_hw = [(61, 47), (32, 32), (100, 73), (7, 129)][k % 4];
            let a = rows(Kernel::Portable, &img, (h, w), &p, &sampling, out_hw);
            let b = rows(simd, &img, (h, w), &p, &sampling, out_hw);
            for (x, y) in a.iter().zip(&b) {
                max_diff = max_diff.max((x - y).abs());
            }
            let (ab, bb): (Vec<u32>, Vec<u32>) = (
                a.iter().map(|v| v.to_bits()).collect(),
                b.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(ab, bb, "draw {k}: {p:?} {sampling:?} {out_hw:?}");
        }
        assert_eq!(max_diff, 0.0);
    }

    proptest! {
        #[test]
        fn warp_builds_agree(h in 1usize..40, w in 1usize..40, oh in 1usize..50, ow in 1usize..50,
                             angle in -180.0f64..180.0, zh in 0.3f64..3.0, zw in 0.3f64..3.0,
                             sh in -0.5f64..0.5, sw in -0.5f64..0.5, flip in any::<bool>(),
                             fill in 0usize..3, interp in 0usize..2, salt in any::<u8>()) {
            let img: Vec<u8> = ramp(h, w).iter().map(|v| v.wrapping_add(salt)).collect();
            let p = AugmentParams { flip, angle_deg: angle, zoom: (zh, zw), shift: (sh, sw) };
            let sampling = Sampling {
                fill: [Fill::Nearest, Fill::Constant, Fill::Reflect][fill],
                interpolation: [Interpolation::Bilinear, Interpolation::Nearest][interp],
                fill_value: 200.0,
            };
            let portable = rows(Kernel::Portable, &img, (h, w), &p, &sampling, (oh, ow));
            for k in Kernel::all_available() {
                let other = rows(k, &img, (h, w), &p, &sampling, (oh, ow));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&other), bits(&portable), "{:?}", k);
            }
        }

        #[test]
        fn zero_parameters_are_identity(h in 2usize..24, w in 2usize..24, seed in any::<u64>(),
                                        fill in 0usize..3, interp in 0usize..2) {
            let img: Vec<u8> = (0..h * w).map(|k| (seed.wrapping_mul(k as u64 + 1) >> 56) as u8).collect();
            let sampling = Sampling {
                fill: [Fill::Nearest, Fill::Constant, Fill::Reflect][fill],
                interpolation: [Interpolation::Bilinear, Interpolation::Nearest][interp],
                fill_value: 7.0,
            };
            let out = transform(Kernel::detect(), GreyView { data: &img, height: h, width: w },
                                &AugmentParams::IDENTITY, &sampling, (h, w)).unwrap();
            prop_assert_eq!(out, img);
        }

        #[test]
        fn constant_image_stays_constant(v in any::<u8>(), angle in -180.0f64..180.0,
                                         zh in 0.5f64..2.0, zw in 0.5f64..2.0,
                                         sh in -0.3f64..0.3, sw in -0.3f64..0.3, flip in any::<bool>()) {
            let img = vec![v; 15 * 11];
            let p = AugmentParams { flip, angle_deg: angle, zoom: (zh, zw), shift: (sh, sw) };
            let out = run(&img, 15, 11, &p, (9, 13));
            prop_assert!(out.iter().all(|&o| o == v));
        }

        #[test]
        fn samples_stay_within_source_range(angle in -30.0f64..30.0, seed in any::<u64>()) {
            let img: Vec<u8> = (0..400).map(|k| 50 + ((seed >> (k % 60)) & 0x3f) as u8).collect();
            let p = AugmentParams { angle_deg: angle, ..AugmentParams::IDENTITY };
            let out = run(&img, 20, 20, &p, (16, 16));
            let (lo, hi) = (*img.iter().min().unwrap(), *img.iter().max().unwrap());
            prop_assert!(out.iter().all(|&o| o >= lo && o <= hi));
        }
    }
}
