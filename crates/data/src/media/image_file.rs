//! Still images (jpg, png, webp) through the `image` crate: EXIF orientation applied, alpha
//! composited onto white, CMYK and 16-bit converted to 8-bit RGB, then cover-resized (bicubic)
//! and centre-cropped to the bucket.

use super::{Frames, MediaError};
use crate::bucket::{cover_resize, BucketSize};
use image::{DynamicImage, ImageDecoder, ImageReader};
use std::io::Read;
use std::path::Path;

/// What an image is, from its header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageInfo {
    /// Size as shown (EXIF orientation applied).
    pub width: u32,
    pub height: u32,
    pub notes: ImageNotes,
}

/// Properties of an image that its loading converts away, reported to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ImageNotes {
    /// Has an alpha channel (composited onto white).
    pub alpha: bool,
    /// A CMYK (or YCCK) JPEG (converted to RGB).
    pub cmyk: bool,
    /// More than 8 bits per channel (reduced to 8).
    pub high_bit_depth: bool,
}

fn open_decoder(path: &Path) -> Result<impl ImageDecoder, MediaError> {
    let image_error = |source| MediaError::Image {
        path: path.to_path_buf(),
        source,
    };
    ImageReader::open(path)
        .map_err(|e| MediaError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| MediaError::io(path, e))?
        .into_decoder()
        .map_err(image_error)
}

/// Reads an image's header: displayed size and what its loading will convert.
pub fn probe_image(path: &Path) -> Result<ImageInfo, MediaError> {
    let mut decoder = open_decoder(path)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let (mut width, mut height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(MediaError::ZeroLength {
            path: path.to_path_buf(),
        });
    }
    super::check_pixel_limit(path, width, height)?;
    if swaps_sides(orientation) {
        std::mem::swap(&mut width, &mut height);
    }
    let color = decoder.color_type();
    Ok(ImageInfo {
        width,
        height,
        notes: ImageNotes {
            alpha: color.has_alpha(),
            cmyk: is_cmyk_jpeg(path),
            high_bit_depth: color.bytes_per_pixel() / color.channel_count() > 1,
        },
    })
}

fn swaps_sides(orientation: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(
        orientation,
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH
    )
}

/// Loads an image as one RGB frame of `bucket`'s size.
pub fn load_image(path: &Path, bucket: BucketSize) -> Result<Frames, MediaError> {
    let mut decoder = open_decoder(path)?;
    let (width, height) = decoder.dimensions();
    super::check_pixel_limit(path, width, height)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|source| MediaError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    image.apply_orientation(orientation);
    let rgb = flatten_to_rgb8(image);
    let (width, height) = rgb.dimensions();
    let resize = cover_resize(width, height, bucket);
    let scaled = if (resize.scaled_width, resize.scaled_height) == (width, height) {
        rgb
    } else {
        image::imageops::resize(
            &rgb,
            resize.scaled_width,
            resize.scaled_height,
            image::imageops::FilterType::CatmullRom,
        )
    };
    let cropped = image::imageops::crop_imm(
        &scaled,
        resize.crop_x,
        resize.crop_y,
        bucket.width,
        bucket.height,
    )
    .to_image();
    Frames::new(
        1,
        bucket.height as usize,
        bucket.width as usize,
        cropped.into_raw(),
    )
}

/// 8-bit RGB; transparent pixels are composited onto white (a transparent product shot is meant
/// to be seen on a light page, and dropping alpha would expose whatever colour the transparent
/// pixels happen to store).
fn flatten_to_rgb8(image: DynamicImage) -> image::RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = image::RgbImage::new(width, height);
    for (out, px) in rgb.pixels_mut().zip(rgba.pixels()) {
        let alpha = px[3] as u32;
        for c in 0..3 {
            out[c] = ((px[c] as u32 * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        }
    }
    rgb
}

/// Whether `path` is a JPEG with four colour components (CMYK or YCCK), read from its frame
/// header. The `image` crate converts such files to RGB without saying so.
fn is_cmyk_jpeg(path: &Path) -> bool {
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(256 * 1024).read_to_end(&mut head));
    read.is_ok() && jpeg_component_count(&head) == Some(4)
}

/// Number of components in the first start-of-frame segment of a JPEG byte stream.
fn jpeg_component_count(bytes: &[u8]) -> Option<u8> {
    if bytes.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut at = 2;
    loop {
        // Skip fill bytes before a marker.
        while *bytes.get(at)? == 0xFF && *bytes.get(at + 1)? == 0xFF {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        let length = u16::from_be_bytes([*bytes.get(at + 2)?, *bytes.get(at + 3)?]) as usize;
        let is_start_of_frame =
            matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_start_of_frame {
            // length(2) precision(1) height(2) width(2) components(1)
            return bytes.get(at + 9).copied();
        }
        if marker == 0xDA || length < 2 {
            return None;
        }
        at += 2 + length;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_frame_header_component_count() {
        // SOI, APP0 (length 4, 2 payload bytes), SOF0 with 4 components.
        let bytes = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xC0, 0x00, 0x14, 0x08, 0x00,
            0x10, 0x00, 0x10, 0x04,
        ];
        assert_eq!(jpeg_component_count(&bytes), Some(4));
        assert_eq!(jpeg_component_count(b"\x89PNG"), None);
    }

    #[test]
    fn alpha_is_composited_onto_white() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([200, 0, 100, 255]));
        let rgb = flatten_to_rgb8(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [200, 0, 100]);
    }
}
