//! PNG bytes -> 8-bit grey image.
//!
//! 8-bit greyscale (what ImageCLEF ships) is decoded straight into the output buffer. Every other
//! PNG colour type decodes too, converted to grey by these rules:
//! - 1, 2 and 4-bit grey are scaled to 0..255 (`v * 255 / (2^bits - 1)`), as Pillow does;
//! - 16-bit samples become `round(v / 257)` (`(v * 255 + 32767) / 65535`);
//! - RGB and palette colours become ITU-R 601-2 luma with Pillow's fixed-point weights,
//!   `(19595 R + 38470 G + 7471 B + 32768) >> 16`, so results equal `Image.convert("L")`;
//! - alpha (an alpha channel or a tRNS chunk) is dropped, not composited, as `convert("L")` does.
//!
//! Interlaced (Adam7) files decode like any other.
//!
//! Sizes are checked against `Limits` from the header, before any pixel buffer is allocated.

use std::io::Cursor;

use png::{BitDepth, ColorType, Transformations};

use crate::error::{CtfpError, Result};

pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Caps that refuse decompression bombs before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_width: 16_384,
            max_height: 16_384,
            max_pixels: 1 << 26,
        }
    }
}

/// An owned 8-bit grey image, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Image {
    pub fn view(&self) -> crate::augment::GreyView<'_> {
        crate::augment::GreyView {
            data: &self.data,
            height: self.height,
            width: self.width,
        }
    }
}

/// Show the first bytes of a non-PNG input the way a user recognises them (`'GIF89a'`).
fn describe_start(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    let text: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    format!("'{text}'")
}

fn map_png_error(e: png::DecodingError) -> CtfpError {
    use png::DecodingError as D;
    let message = match e {
        D::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated PNG: the data ends before the image is complete".to_string()
        }
        D::IoError(io) => format!("cannot read PNG data: {io}"),
        D::Format(f) => format!("corrupt PNG: {f}"),
        D::LimitsExceeded => "PNG needs more memory than the decoder's cap allows".to_string(),
        D::Parameter(p) => format!("PNG decoder misuse: {p}"),
    };
    CtfpError::decode(message)
}

/// Luma with Pillow's fixed-point ITU-R 601-2 weights.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 0x8000) >> 16) as u8
}

#[inline]
fn from16(hi: u8, lo: u8) -> u8 {
    let v = u16::from_be_bytes([hi, lo]) as u32;
    ((v * 255 + 32767) / 65535) as u8
}

/// Read the header only: `(height, width)` after checking the caps.
pub fn read_size(bytes: &[u8], limits: &Limits) -> Result<(usize, usize)> {
    read_info(bytes, limits).map(|(h, w, _)| (h, w))
}

/// Read the header only: `(height, width, colour channels)` after checking the caps. Channels
/// count colour only (alpha is dropped when decoding): 1 for grey, 3 for RGB, `None` for a
/// palette, whose colours are known only from its PLTE chunk.
pub fn read_info(bytes: &[u8], limits: &Limits) -> Result<(usize, usize, Option<u8>)> {
    check_signature(bytes)?;
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    let info = decoder.read_header_info().map_err(map_png_error)?;
    check_limits(info.width, info.height, limits)?;
    let channels = match info.color_type {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => Some(1),
        png::ColorType::Rgb | png::ColorType::Rgba => Some(3),
        png::ColorType::Indexed => None,
    };
    Ok((info.height as usize, info.width as usize, channels))
}

fn check_signature(bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        return Err(CtfpError::decode(
            "empty input (0 bytes); expected a PNG file",
        ));
    }
    if bytes.len() < 8 || bytes[..8] != PNG_SIGNATURE {
        return Err(CtfpError::decode(format!(
            "not a PNG file; expected the PNG signature, found {}",
            describe_start(bytes)
        )));
    }
    Ok(())
}

fn check_limits(width: u32, height: u32, limits: &Limits) -> Result<()> {
    let pixels = width as u64 * height as u64;
    if width > limits.max_width || height > limits.max_height || pixels > limits.max_pixels {
        return Err(CtfpError::decode(format!(
            "image of {width}x{height} pixels is over the cap (max_width={}, max_height={}, \
             max_pixels={}); raise the limits if the file is trusted",
            limits.max_width, limits.max_height, limits.max_pixels
        )));
    }
    Ok(())
}

/// Decode a PNG held in memory to 8-bit grey.
pub fn decode_png(bytes: &[u8], limits: &Limits) -> Result<Image> {
    check_signature(bytes)?;
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    let (width, height, color, depth) = {
        let info = decoder.read_header_info().map_err(map_png_error)?;
        (info.width, info.height, info.color_type, info.bit_depth)
    };
    check_limits(width, height, limits)?;
    // The decoder's own byte cap, as a second line of defence: the largest frame we accept.
    decoder.set_limits(png::Limits {
        bytes: (limits.max_pixels as usize).saturating_mul(8) + (1 << 20),
    });
    let fast = color == ColorType::Grayscale && depth == BitDepth::Eight;
    decoder.set_transformations(if fast {
        Transformations::IDENTITY
    } else {
        Transformations::EXPAND
    });
    let mut reader = decoder.read_info().map_err(map_png_error)?;
    let (h, w) = (height as usize, width as usize);
    let n = h * w;
    if fast {
        let mut data = vec![0u8; n];
        reader.next_frame(&mut data).map_err(map_png_error)?;
        return Ok(Image {
            height: h,
            width: w,
            data,
        });
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| CtfpError::decode("PNG frame too large for this platform"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(map_png_error)?;
    let (out_color, out_depth) = (frame.color_type, frame.bit_depth);
    let buf = &buf[..frame.buffer_size()];
    let line = frame.line_size;
    let channels = match out_color {
        ColorType::Grayscale => 1,
        ColorType::GrayscaleAlpha => 2,
        ColorType::Rgb => 3,
        ColorType::Rgba => 4,
        ColorType::Indexed => {
            return Err(CtfpError::decode("palette PNG without a PLTE chunk"));
        }
    };
    let sixteen = out_depth == BitDepth::Sixteen;
    let bps = if sixteen { 2 } else { 1 };
    let mut data = vec![0u8; n];
    for (y, out_row) in data.chunks_exact_mut(w).enumerate() {
        let row = &buf[y * line..y * line + w * channels * bps];
        for (x, o) in out_row.iter_mut().enumerate() {
            let px = &row[x * channels * bps..(x + 1) * channels * bps];
            let sample = |c: usize| {
                if sixteen {
                    from16(px[2 * c], px[2 * c + 1])
                } else {
                    px[c]
                }
            };
            *o = if channels >= 3 {
                luma(sample(0), sample(1), sample(2))
            } else {
                sample(0)
            };
        }
    }
    Ok(Image {
        height: h,
        width: w,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(w: u32, h: u32, color: ColorType, depth: BitDepth, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(depth);
            let mut writer = enc.write_header().unwrap();
            writer.write_image_data(data).unwrap();
        }
        out
    }

    #[test]
    fn rejects_empty_and_non_png() {
        let e = decode_png(b"", &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = decode_png(b"GIF89a....", &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'GIF89a..'"), "{e}");
    }

    #[test]
    fn rejects_truncated() {
        let img: Vec<u8> = (0..64 * 64).map(|k| (k * 7 % 256) as u8).collect();
        let png = encode(64, 64, ColorType::Grayscale, BitDepth::Eight, &img);
        let e = decode_png(&png[..png.len() / 2], &Limits::default()).unwrap_err();
        assert!(matches!(e, CtfpError::Decode { .. }), "{e}");
    }

    #[test]
    fn refuses_over_cap_before_decoding() {
        let png = encode(40, 30, ColorType::Grayscale, BitDepth::Eight, &[0; 1200]);
        let lim = Limits {
            max_width: 39,
            ..Limits::default()
        };
        assert!(decode_png(&png, &lim)
            .unwrap_err()
            .to_string()
            .contains("40x30"));
        let lim = Limits {
            max_pixels: 1199,
            ..Limits::default()
        };
        assert!(decode_png(&png, &lim).is_err());
        assert_eq!(read_size(&png, &Limits::default()).unwrap(), (30, 40));
    }

    #[test]
    fn sixteen_bit_and_rgb_rules() {
        let g16: Vec<u8> = [0u16, 128, 129, 257, 65535, 32896]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let img = decode_png(
            &encode(6, 1, ColorType::Grayscale, BitDepth::Sixteen, &g16),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(img.data, vec![0, 0, 1, 1, 255, 128]);
        let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30];
        let img = decode_png(
            &encode(4, 1, ColorType::Rgb, BitDepth::Eight, &rgb),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(img.data, vec![76, 150, 29, 18]);
    }

    proptest! {
        #[test]
        fn round_trips_8bit_grey(w in 1u32..40, h in 1u32..40, seed in any::<u64>()) {
            let data: Vec<u8> = (0..(w * h) as u64).map(|k| (seed.rotate_left((k % 64) as u32) ^ k) as u8).collect();
            let img = decode_png(&encode(w, h, ColorType::Grayscale, BitDepth::Eight, &data), &Limits::default()).unwrap();
            prop_assert_eq!((img.height, img.width), (h as usize, w as usize));
            prop_assert_eq!(img.data, data);
        }
    }
}
