//! Grey -> 3-channel expansion of one image plane into a channels-first batch slot.

/// Copy a finished grey plane into the other channels of a `(C, H, W)` slot (uint8 output):
/// one `memcpy` per extra channel, so the plane is sampled once whatever the channel count.
#[inline]
pub fn replicate_plane<T: Copy>(slot: &mut [T], plane_len: usize) {
    let (first, rest) = slot.split_at_mut(plane_len);
    for dst in rest.chunks_exact_mut(plane_len) {
        dst.copy_from_slice(first);
    }
}

/// Per-channel affine map `v * scale[c] + bias[c]` from a grey level to a normalised float:
/// `scale = 1 / (255 std)`, `bias = -mean / std` folds `(v / 255 - mean) / std` into one FMA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub scale: [f32; 3],
    pub bias: [f32; 3],
}

impl Normalize {
    pub fn new(mean: [f64; 3], std: [f64; 3]) -> Self {
        let mut scale = [0f32; 3];
        let mut bias = [0f32; 3];
        for c in 0..3 {
            scale[c] = (1.0 / (255.0 * std[c])) as f32;
            bias[c] = (-mean[c] / std[c]) as f32;
        }
        Normalize { scale, bias }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_copies_first_plane() {
        let mut slot = vec![1u8, 2, 3, 0, 0, 0, 9, 9, 9];
        replicate_plane(&mut slot, 3);
        assert_eq!(slot, vec![1, 2, 3, 1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn normalize_matches_formula() {
        let n = Normalize::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let v = 200.0f32;
        let expect = (200.0 / 255.0 - 0.456) / 0.224;
        assert!((v * n.scale[1] + n.bias[1] - expect as f32).abs() < 1e-5);
    }
}
