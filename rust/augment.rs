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
//! pixels (scipy `mode="nearest"`, Keras' default), `Constant` pads with `cval` (scipy
//! `mode="grid-constant"`), `Reflect` mirrors about the edge (scipy `mode="reflect"`).

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
    pub cval: f32,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { interpolation: Interpolation::Bilinear, fill: Fill::Nearest, cval: 0.0 }
    }
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=255.0).contains(&self.cval) {
            return Err(CtfpError::Value(format!(
                "cval: expected a grey level in [0, 255], found {}",
                self.cval
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
            Err(CtfpError::Value(format!("{name}: expected {expected}, found {found}")))
        };
        if !(0.0..=1.0).contains(&self.hflip_prob) {
            return bad("hflip", "a probability in [0, 1]", self.hflip_prob.to_string());
        }
        if !(self.max_angle_deg.is_finite() && (0.0..=180.0).contains(&self.max_angle_deg)) {
            return bad("max_angle_deg", "a number in [0, 180]", self.max_angle_deg.to_string());
        }
        let (lo, hi) = self.zoom_range;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return bad("zoom", "(lo, hi) with 0 < lo <= hi", format!("({lo}, {hi})"));
        }
        let (sh, sw) = self.shift_frac;
        if !(sh.is_finite() && sw.is_finite() && (0.0..=1.0).contains(&sh) && (0.0..=1.0).contains(&sw))
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
    pub const IDENTITY: AugmentParams =
        AugmentParams { flip: false, angle_deg: 0.0, zoom: (1.0, 1.0), shift: (0.0, 0.0) };

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
        AugmentParams { flip, angle_deg, zoom: (zh, zw), shift: (sh, sw) }
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

/// Compute one output row of grey values (0..=255 as `f32`, not rounded) into `row`.
///
/// The nearest-fill bilinear case is the hot path: coordinates are clamped (which equals
/// repeating the edge pixels), so the loop has no branches and no per-pixel bounds cases.
#[inline]
pub fn warp_row(src: GreyView<'_>, map: &Mapping, sampling: &Sampling, i: usize, row: &mut [f32]) {
    let (h, w) = (src.height, src.width);
    let fi = i as f64;
    let by = (map.m[0][0] * fi + map.off[0]) as f32;
    let bx = (map.m[1][0] * fi + map.off[1]) as f32;
    let dy = map.m[0][1] as f32;
    let dx = map.m[1][1] as f32;
    let data = src.data;
    match (sampling.interpolation, sampling.fill) {
        (Interpolation::Bilinear, Fill::Nearest) => {
            let ymax = (h - 1) as f32;
            let xmax = (w - 1) as f32;
            for (j, out) in row.iter_mut().enumerate() {
                let jf = j as f32;
                let y = (by + jf * dy).clamp(0.0, ymax);
                let x = (bx + jf * dx).clamp(0.0, xmax);
                let y0 = y as usize; // y >= 0, so truncation is floor
                let x0 = x as usize;
                let fy = y - y0 as f32;
                let fx = x - x0 as f32;
                let y1 = (y0 + 1).min(h - 1);
                let x1 = (x0 + 1).min(w - 1);
                let r0 = y0 * w;
                let r1 = y1 * w;
                let p00 = data[r0 + x0] as f32;
                let p01 = data[r0 + x1] as f32;
                let p10 = data[r1 + x0] as f32;
                let p11 = data[r1 + x1] as f32;
                let top = p00 + (p01 - p00) * fx;
                let bot = p10 + (p11 - p10) * fx;
                *out = top + (bot - top) * fy;
            }
        }
        (interp, fill) => {
            let (hi, wi) = (h as i64, w as i64);
            let cval = sampling.cval;
            // Value at integer position (y, x) under the fill rule.
            let at = |y: i64, x: i64| -> f32 {
                match fill {
                    Fill::Nearest => {
                        data[(y.clamp(0, hi - 1) * wi + x.clamp(0, wi - 1)) as usize] as f32
                    }
                    Fill::Constant => {
                        if (0..hi).contains(&y) && (0..wi).contains(&x) {
                            data[(y * wi + x) as usize] as f32
                        } else {
                            cval
                        }
                    }
                    Fill::Reflect => data[reflect(y, hi) * w + reflect(x, wi)] as f32,
                }
            };
            for (j, out) in row.iter_mut().enumerate() {
                let jf = j as f64;
                let y = map.m[0][0] * fi + map.m[0][1] * jf + map.off[0];
                let x = map.m[1][0] * fi + map.m[1][1] * jf + map.off[1];
                *out = match interp {
                    Interpolation::Nearest => at((y + 0.5).floor() as i64, (x + 0.5).floor() as i64),
                    Interpolation::Bilinear => {
                        let (yf, xf) = (y.floor(), x.floor());
                        let (fy, fx) = ((y - yf) as f32, (x - xf) as f32);
                        let (y0, x0) = (yf as i64, xf as i64);
                        let top = at(y0, x0) + (at(y0, x0 + 1) - at(y0, x0)) * fx;
                        let bot = at(y0 + 1, x0) + (at(y0 + 1, x0 + 1) - at(y0 + 1, x0)) * fx;
                        top + (bot - top) * fy
                    }
                };
            }
        }
    }
}

/// Round a sample to a grey level (round half up; samples are already within [0, 255]).
#[inline]
pub fn to_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// Apply explicit parameters to one image: the single-image form of what a batch does.
pub fn transform(
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
    for (i, dst) in out.chunks_exact_mut(ow).enumerate() {
        warp_row(src, &map, sampling, i, &mut row);
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
        (0..h * w).map(|k| ((k * 37 + k / w * 11) % 251) as u8).collect()
    }

    fn run(img: &[u8], h: usize, w: usize, p: &AugmentParams, out: (usize, usize)) -> Vec<u8> {
        transform(GreyView { data: img, height: h, width: w }, p, &Sampling::default(), out)
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
        let p = AugmentParams { flip: true, ..AugmentParams::IDENTITY };
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
        let p = AugmentParams { angle_deg: 90.0, ..AugmentParams::IDENTITY };
        let out = run(&img, n, n, &p, (n, n));
        let pos = out.iter().position(|&v| v == 200).expect("marker kept");
        assert_eq!((pos / n, pos % n), (n - 2, 0));
    }

    #[test]
    fn positive_shift_moves_content_down_right() {
        let (n, mut img) = (10usize, vec![0u8; 100]);
        img[3 * n + 3] = 255;
        let p = AugmentParams { shift: (0.2, 0.1), ..AugmentParams::IDENTITY };
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
        let p = AugmentParams { zoom: (0.0, 1.0), ..AugmentParams::IDENTITY };
        let e = transform(GreyView { data: &img, height: 4, width: 4 }, &p, &Sampling::default(), (4, 4));
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

    proptest! {
        #[test]
        fn zero_parameters_are_identity(h in 2usize..24, w in 2usize..24, seed in any::<u64>(),
                                        fill in 0usize..3, interp in 0usize..2) {
            let img: Vec<u8> = (0..h * w).map(|k| (seed.wrapping_mul(k as u64 + 1) >> 56) as u8).collect();
            let sampling = Sampling {
                fill: [Fill::Nearest, Fill::Constant, Fill::Reflect][fill],
                interpolation: [Interpolation::Bilinear, Interpolation::Nearest][interp],
                cval: 7.0,
            };
            let out = transform(GreyView { data: &img, height: h, width: w },
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
