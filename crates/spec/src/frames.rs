//! Frame counts and frame sizes Wan can take.
//!
//! The causal VAE encodes frame 0 alone and then groups of [`FRAME_STRIDE`] frames, so a clip has
//! 4n + 1 frames; it downsamples space by [`VAE_SPATIAL`] and the transformer patchifies 2×2, so
//! sides are multiples of [`SIZE_MULTIPLE`].

/// Frames per latent frame after the first.
pub const FRAME_STRIDE: u32 = 4;
/// Spatial downsampling of the Wan 2.1 VAE.
pub const VAE_SPATIAL: u32 = 8;
/// Frame sides must be multiples of this: 8× VAE downsampling, then 2×2 patches.
pub const SIZE_MULTIPLE: u32 = 16;

/// Whether `n` frames is of the form 4n + 1.
pub fn is_frame_count(n: u32) -> bool {
    n % FRAME_STRIDE == 1
}

/// The valid frame counts around `n`: the largest ≤ n (None for 0) and the next one above it.
pub fn nearest_frame_counts(n: u32) -> (Option<u32>, u32) {
    if n == 0 {
        return (None, 1);
    }
    let below = (n - 1) / FRAME_STRIDE * FRAME_STRIDE + 1;
    (Some(below), below + FRAME_STRIDE)
}

/// What to write instead of an invalid frame count, e.g. "use 41 or 45".
pub fn frame_count_hint(n: u32) -> String {
    match nearest_frame_counts(n) {
        (Some(1), above) => format!("use 1 (images) or {above}"),
        (Some(below), above) if below == n => format!("{n} is valid; {above} is the next"),
        (Some(below), above) => format!("use {below} or {above}"),
        (None, above) => format!("use {above} (images) or {}", above + FRAME_STRIDE),
    }
}

/// Latent frames of a clip of `n` = 4k + 1 frames.
pub fn latent_frames(n: u32) -> u32 {
    (n.max(1) - 1) / FRAME_STRIDE + 1
}

/// Whether a frame side in pixels is a positive multiple of 16.
pub fn is_frame_side(px: u32) -> bool {
    px > 0 && px.is_multiple_of(SIZE_MULTIPLE)
}

/// What to write instead of an invalid side, e.g. "use 496 or 512".
pub fn frame_side_hint(px: u32) -> String {
    let below = px / SIZE_MULTIPLE * SIZE_MULTIPLE;
    let above = below + SIZE_MULTIPLE;
    if below == 0 {
        format!("use {above} or more")
    } else {
        format!("use {below} or {above}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_counts_are_4n_plus_1() {
        let valid: Vec<u32> = (0..20).filter(|&n| is_frame_count(n)).collect();
        assert_eq!(valid, [1, 5, 9, 13, 17]);
        assert_eq!(nearest_frame_counts(0), (None, 1));
        assert_eq!(nearest_frame_counts(40), (Some(37), 41));
        assert_eq!(nearest_frame_counts(41), (Some(41), 45));
        assert_eq!(frame_count_hint(40), "use 37 or 41");
        assert_eq!(frame_count_hint(3), "use 1 (images) or 5");
        assert_eq!(frame_count_hint(0), "use 1 (images) or 5");
        assert_eq!(
            (latent_frames(1), latent_frames(41), latent_frames(81)),
            (1, 11, 21)
        );
    }

    #[test]
    fn sides_are_multiples_of_16() {
        assert!(is_frame_side(512) && is_frame_side(16));
        assert!(!is_frame_side(0) && !is_frame_side(500));
        assert_eq!(frame_side_hint(500), "use 496 or 512");
        assert_eq!(frame_side_hint(8), "use 16 or more");
    }
}
