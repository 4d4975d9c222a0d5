//! Buckets: the training size of an item, and how a frame is resized and cropped to it.
//!
//! A bucket keeps the source's aspect ratio as closely as 16-pixel steps allow, holds at most
//! `resolution²` pixels, and never needs upscaling. Frames are resized to cover the bucket and
//! centre-cropped (AI Toolkit's `get_bucket_for_image_size` with divisibility 16, Wan's patch and
//! VAE stride).

use serde::{Deserialize, Serialize};

/// Bucket sides are multiples of this: the VAE's 8× spatial stride times the 2×2 patch.
pub const BUCKET_STEP: u32 = 16;

/// Width and height of a bucket, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketSize {
    pub width: u32,
    pub height: u32,
}

/// What items are batched by: size and frame count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketKey {
    pub width: u32,
    pub height: u32,
    pub frames: usize,
}

impl BucketKey {
    pub fn size(&self) -> BucketSize {
        BucketSize {
            width: self.width,
            height: self.height,
        }
    }
}

impl std::fmt::Display for BucketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}f", self.width, self.height, self.frames)
    }
}

/// The bucket for a `width × height` source at `resolution`, or `None` when the source is
/// smaller than one 16×16 step in either direction.
///
/// The ideal size has the source's aspect and `min(w·h, resolution²)` pixels; its sides are
/// rounded down and up to multiples of 16, and among those candidates that fit (area ≤
/// resolution², each side ≤ the source's) the one closest in pixel count wins, ties going to
/// the closer aspect ratio.
pub fn bucket_size(width: u32, height: u32, resolution: u32) -> Option<BucketSize> {
    bucket_size_in_steps(width, height, resolution, BUCKET_STEP)
}

/// [`bucket_size`] with sides in multiples of `step` (32 for TI2V-5B: its VAE's 16× times the 2×2 patch).
pub fn bucket_size_in_steps(
    width: u32,
    height: u32,
    resolution: u32,
    step: u32,
) -> Option<BucketSize> {
    let (w, h) = (width as f64, height as f64);
    let max_area = resolution as u64 * resolution as u64;
    let target = (width as u64 * height as u64).min(max_area) as f64;
    let ideal_w = (target * w / h).sqrt();
    let ideal_h = (target * h / w).sqrt();
    let around = |ideal: f64| {
        let down = (ideal / step as f64).floor() as u32 * step;
        [down, down + step]
    };
    let aspect = (w / h).ln();
    let mut best: Option<(BucketSize, f64, f64)> = None;
    for cw in around(ideal_w) {
        for ch in around(ideal_h) {
            let area = cw as u64 * ch as u64;
            if cw < step || ch < step || cw > width || ch > height || area > max_area {
                continue;
            }
            let area_error = (area as f64 - target).abs();
            let aspect_error = ((cw as f64 / ch as f64).ln() - aspect).abs();
            let better = match best {
                None => true,
                Some((_, best_area, best_aspect)) => {
                    area_error < best_area
                        || (area_error == best_area && aspect_error < best_aspect)
                }
            };
            if better {
                best = Some((
                    BucketSize {
                        width: cw,
                        height: ch,
                    },
                    area_error,
                    aspect_error,
                ));
            }
        }
    }
    best.map(|(size, _, _)| size)
}

/// How a source frame reaches its bucket: scaled (keeping aspect) until it covers the bucket,
/// then the bucket-sized window at (`crop_x`, `crop_y`) kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverResize {
    pub scaled_width: u32,
    pub scaled_height: u32,
    pub crop_x: u32,
    pub crop_y: u32,
}

/// Cover-resize of a `width × height` source to `bucket`, centre crop.
pub fn cover_resize(width: u32, height: u32, bucket: BucketSize) -> CoverResize {
    let scale = (bucket.width as f64 / width as f64).max(bucket.height as f64 / height as f64);
    let scaled_width = ((width as f64 * scale).round() as u32).max(bucket.width);
    let scaled_height = ((height as f64 * scale).round() as u32).max(bucket.height);
    CoverResize {
        scaled_width,
        scaled_height,
        crop_x: (scaled_width - bucket.width) / 2,
        crop_y: (scaled_height - bucket.height) / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u32, height: u32) -> Option<BucketSize> {
        Some(BucketSize { width, height })
    }

    #[test]
    fn common_shapes_at_512() {
        // 16:9 full HD: 682.7 × 384 ideal → 672 × 384 (688 × 384 would exceed 512²).
        assert_eq!(bucket_size(1920, 1080, 512), size(672, 384));
        assert_eq!(bucket_size(1080, 1920, 512), size(384, 672));
        assert_eq!(bucket_size(1024, 1024, 512), size(512, 512));
        // 4:3 → 591.2 × 443.4 ideal → 576 × 448 (area 258048, the closest that fits).
        assert_eq!(bucket_size(640, 480, 512), size(576, 448));
    }

    #[test]
    fn never_upscales_and_keeps_multiples_of_16() {
        // Smaller than the target: the bucket stays inside the source.
        assert_eq!(bucket_size(320, 240, 512), size(320, 240));
        assert_eq!(bucket_size(100, 60, 512), size(96, 48));
        assert_eq!(bucket_size(64, 48, 512), size(64, 48));
        for (w, h, r) in [
            (1920, 1080, 768),
            (333, 777, 512),
            (4000, 300, 1024),
            (17, 17, 512),
        ] {
            let b = bucket_size(w, h, r).unwrap();
            assert_eq!(b.width % 16, 0);
            assert_eq!(b.height % 16, 0);
            assert!(b.width <= w && b.height <= h, "{w}x{h} → {b:?}");
            assert!(b.width as u64 * b.height as u64 <= r as u64 * r as u64);
        }
        assert_eq!(bucket_size(15, 400, 512), None);
    }

    #[test]
    fn ti2v_buckets_are_multiples_of_32() {
        // 16:9 full HD at 704: 938.7 × 528 ideal → 16's 928 × 528, but 32's candidates are 928 or 960 ×
        // 512 or 544, and 960 × 512 is the closest in pixels that fits 704².
        assert_eq!(bucket_size(1920, 1080, 704), size(928, 528));
        assert_eq!(bucket_size_in_steps(1920, 1080, 704, 32), size(960, 512));
        assert_eq!(bucket_size_in_steps(100, 60, 512, 32), size(96, 32));
        for (w, h, r) in [(1920, 1080, 768), (333, 777, 512), (1280, 704, 1280)] {
            let b = bucket_size_in_steps(w, h, r, 32).unwrap();
            assert_eq!((b.width % 32, b.height % 32), (0, 0), "{w}x{h} → {b:?}");
            assert!(b.width <= w && b.height <= h, "{w}x{h} → {b:?}");
        }
        assert_eq!(bucket_size_in_steps(31, 400, 512, 32), None);
    }

    #[test]
    fn cover_resize_then_centre_crop() {
        let b = BucketSize {
            width: 672,
            height: 384,
        };
        let r = cover_resize(1920, 1080, b);
        assert_eq!((r.scaled_width, r.scaled_height), (683, 384));
        assert_eq!((r.crop_x, r.crop_y), (5, 0));
        let r = cover_resize(
            100,
            60,
            BucketSize {
                width: 96,
                height: 48,
            },
        );
        assert_eq!((r.scaled_width, r.scaled_height), (96, 58));
        assert_eq!((r.crop_x, r.crop_y), (0, 5));
        let same = cover_resize(
            64,
            48,
            BucketSize {
                width: 64,
                height: 48,
            },
        );
        assert_eq!(
            same,
            CoverResize {
                scaled_width: 64,
                scaled_height: 48,
                crop_x: 0,
                crop_y: 0
            }
        );
    }

    #[test]
    fn bucket_key_prints_size_and_frames() {
        let k = BucketKey {
            width: 512,
            height: 288,
            frames: 41,
        };
        assert_eq!(k.to_string(), "512x288x41f");
    }
}
