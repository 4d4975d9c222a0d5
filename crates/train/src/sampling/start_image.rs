//! The start frame of an image-to-video sample: read (EXIF orientation applied, transparency over white), fitted to
//! the sample size, and turned into the `[1, 3, H, W]` tensor in [−1, 1] that the first-frame condition encodes.
//!
//! * `crop` (the default): scaled to cover width × height (bicubic), then the centre cut out — the aspect ratio is
//!   kept, as when a user prepares the image for ComfyUI's `WanImageToVideo`.
//! * `stretch`: scaled to exactly width × height, distorting it — AI Toolkit's behaviour.

use std::path::Path;

use tch::{Device, Kind, Tensor};
use wanlora_config::CtrlImgResize;
use wanlora_data::media::{load_image, probe_image};
use wanlora_data::{BucketSize, Frames};

use super::SamplingError;

/// The start frame at `width` × `height`, 8-bit RGB.
pub fn load_start_image(
    path: &Path,
    width: u32,
    height: u32,
    resize: CtrlImgResize,
) -> Result<Frames, SamplingError> {
    let unreadable = |e: wanlora_data::MediaError| SamplingError::StartImage {
        path: path.to_path_buf(),
        reason: format!("{e}; use a JPEG, PNG or WebP image"),
    };
    match resize {
        CtrlImgResize::Crop => load_image(path, BucketSize { width, height }).map_err(unreadable),
        CtrlImgResize::Stretch => {
            let info = probe_image(path).map_err(unreadable)?;
            let original = load_image(
                path,
                BucketSize {
                    width: info.width,
                    height: info.height,
                },
            )
            .map_err(unreadable)?;
            Ok(stretch(original, width, height))
        }
    }
}

/// `frame` scaled to exactly `width` × `height` (bicubic), whatever its aspect ratio.
fn stretch(frame: Frames, width: u32, height: u32) -> Frames {
    if (frame.width, frame.height) == (width as usize, height as usize) {
        return frame;
    }
    let (w, h) = (frame.width as u32, frame.height as u32);
    let source =
        image::RgbImage::from_raw(w, h, frame.data).unwrap_or_else(|| image::RgbImage::new(w, h));
    let scaled = image::imageops::resize(
        &source,
        width,
        height,
        image::imageops::FilterType::CatmullRom,
    );
    Frames {
        frames: 1,
        height: height as usize,
        width: width as usize,
        data: scaled.into_raw(),
    }
}

/// The first frame of `frames` as `[1, 3, H, W]` float32 in [−1, 1] (`x/127.5 − 1`) on `device`.
pub fn image_tensor(frames: &Frames, device: Device) -> Result<Tensor, SamplingError> {
    if frames.frames == 0 {
        return Err(SamplingError::Input("the start image has no frame".into()));
    }
    let first = frames.select(&[0]);
    let values = first.to_vae_input();
    Ok(Tensor::f_from_slice(&values)?
        .f_reshape([1, 3, first.height as i64, first.width as i64])?
        .f_to_kind(Kind::Float)?
        .f_to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretch_keeps_a_frame_of_the_right_size_untouched() {
        let frame = Frames::new(1, 2, 3, (0..18).collect()).unwrap();
        let same = stretch(frame.clone(), 3, 2);
        assert_eq!(same, frame);
        let wide = stretch(frame, 6, 2);
        assert_eq!((wide.width, wide.height, wide.data.len()), (6, 2, 36));
    }

    #[test]
    fn tensor_is_channel_first_in_minus_one_to_one() {
        let frame = Frames::new(1, 1, 2, vec![255, 0, 0, 0, 255, 0]).unwrap();
        let t = image_tensor(&frame, Device::Cpu).unwrap();
        assert_eq!(t.size(), [1, 3, 1, 2]);
        let v: Vec<f32> = Vec::try_from(t.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![1.0, -1.0, -1.0, 1.0, -1.0, -1.0]);
    }
}
