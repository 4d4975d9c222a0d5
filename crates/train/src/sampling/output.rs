//! Sample files (docs/JOB-FOLDER.md): `samples/<step:09>_<index>.mp4` (H.264, yuv420p, plays in browsers) and/or
//! `.webp` (animated, looping), and `<step:09>_<index>.jpg`, a JPEG thumbnail of the first frame. One-frame samples
//! are a `.jpg` (which is its own thumbnail) or a `.png`. Every file is written under a temporary name and renamed
//! into place, so the web UI never sees half a file.

use std::path::{Path, PathBuf};

use image::ImageEncoder as _;
use tch::{Kind, Tensor};
use wanlora_config::SampleFormat;
use wanlora_data::media::{thumbnail, write_jpeg, write_mp4, write_webp};
use wanlora_data::Frames;

use super::SamplingError;

/// The longer side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: usize = 512;

pub use wanlora_spec::job_folder::sample_stem;

/// The file extension of a format.
pub fn extension(format: SampleFormat) -> &'static str {
    match format {
        SampleFormat::Mp4 => "mp4",
        SampleFormat::Webp => "webp",
        SampleFormat::Jpg => "jpg",
        SampleFormat::Png => "png",
    }
}

/// The format a path's extension names (`.mp4`, `.webp`, `.jpg`/`.jpeg`, `.png`).
pub fn format_of_path(path: &Path) -> Result<SampleFormat, SamplingError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" => Ok(SampleFormat::Mp4),
        "webp" => Ok(SampleFormat::Webp),
        "jpg" | "jpeg" => Ok(SampleFormat::Jpg),
        "png" => Ok(SampleFormat::Png),
        _ => Err(SamplingError::setting(
            "output",
            format!(
                "{}: unknown file type; end the name with .mp4 or .webp (video), .jpg or .png (one frame)",
                path.display()
            ),
        )),
    }
}

/// A decoded video `[1, 3, F, H, W]` or `[3, F, H, W]` in [−1, 1] as 8-bit RGB frames: `round((x + 1)·127.5)`.
pub fn video_frames(video: &Tensor) -> Result<Frames, SamplingError> {
    let video = match video.dim() {
        5 if video.size()[0] == 1 => video.f_squeeze_dim(0)?,
        4 => video.shallow_clone(),
        _ => {
            return Err(SamplingError::Input(format!(
                "a decoded video is [1, 3, F, H, W]; got {:?}",
                video.size()
            )))
        }
    };
    let size = video.size();
    if size[0] != 3 {
        return Err(SamplingError::Input(format!(
            "a decoded video has 3 colour channels; got {:?}",
            size
        )));
    }
    let bytes = video
        .f_to_kind(Kind::Float)?
        .f_add_scalar(1.0)?
        .f_mul_scalar(127.5)?
        .f_round()?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 3, 0])? // [F, H, W, 3]
        .f_contiguous()?
        .f_to_device(tch::Device::Cpu)?;
    let data = Vec::<u8>::try_from(bytes.f_flatten(0, -1)?)?;
    Ok(Frames::new(
        size[1] as usize,
        size[2] as usize,
        size[3] as usize,
        data,
    )?)
}

/// What [`write_sample`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleFiles {
    /// The sample in each asked format.
    pub media: Vec<PathBuf>,
    /// The JPEG thumbnail of the first frame.
    pub thumbnail: PathBuf,
}

/// Writes `<folder>/<stem>.<ext>` for each of `formats` and the thumbnail `<folder>/<stem>.jpg`, creating `folder`.
pub fn write_sample(
    frames: &Frames,
    fps: u32,
    formats: &[SampleFormat],
    folder: &Path,
    stem: &str,
) -> Result<SampleFiles, SamplingError> {
    if formats.is_empty() {
        return Err(SamplingError::setting("format", "no output format given"));
    }
    std::fs::create_dir_all(folder).map_err(|source| SamplingError::Io {
        path: folder.to_path_buf(),
        source,
    })?;
    let mut media = Vec::new();
    for &format in formats {
        let path = folder.join(format!("{stem}.{}", extension(format)));
        write_media(frames, fps, &path, format)?;
        media.push(path);
    }
    let thumbnail_path = folder.join(format!("{stem}.jpg"));
    if !formats.contains(&SampleFormat::Jpg) {
        let small = thumbnail(frames.frame(0), THUMBNAIL_SIDE);
        write_jpeg(small.frame(0), &thumbnail_path)?;
    }
    Ok(SampleFiles {
        media,
        thumbnail: thumbnail_path,
    })
}

/// Writes `frames` to `path` as `format` (videos at `fps`); still-image formats take a one-frame clip.
pub fn write_media(
    frames: &Frames,
    fps: u32,
    path: &Path,
    format: SampleFormat,
) -> Result<(), SamplingError> {
    let still = || -> Result<(), SamplingError> {
        if frames.frames != 1 {
            return Err(SamplingError::setting(
                "format",
                format!(
                    "{}: a {}-frame video cannot be written as a still image; use .mp4 or .webp",
                    path.display(),
                    frames.frames
                ),
            ));
        }
        Ok(())
    };
    match format {
        SampleFormat::Mp4 => write_mp4(frames, fps as f64, path)?,
        SampleFormat::Webp => write_webp(frames, fps as f64, path)?,
        SampleFormat::Jpg => {
            still()?;
            write_jpeg(frames.frame(0), path)?
        }
        SampleFormat::Png => {
            still()?;
            write_png(frames, path)?
        }
    }
    Ok(())
}

fn write_png(frames: &Frames, path: &Path) -> Result<(), SamplingError> {
    let frame = frames.frame(0);
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            frame.data,
            frame.width as u32,
            frame.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| SamplingError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    wanlora_data::atomic::write_atomically(path, &bytes).map_err(|source| SamplingError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_extensions() {
        assert_eq!(sample_stem(120, 3), "000000120_3");
        assert_eq!(
            format_of_path(Path::new("a/b.MP4")).unwrap(),
            SampleFormat::Mp4
        );
        assert_eq!(
            format_of_path(Path::new("b.jpeg")).unwrap(),
            SampleFormat::Jpg
        );
        let err = format_of_path(Path::new("b.gif")).unwrap_err().to_string();
        assert!(err.contains(".mp4"), "{err}");
    }

    #[test]
    fn video_values_map_to_bytes() {
        // [3, 2, 1, 1]: frame 0 is (−1, 0, 1) → (0, 128, 255); frame 1 out of range → clamped.
        let v = Tensor::from_slice(&[-1.0f32, 2.0, 0.0, -3.0, 1.0, 0.5]).reshape([3, 2, 1, 1]);
        let f = video_frames(&v).unwrap();
        assert_eq!((f.frames, f.height, f.width), (2, 1, 1));
        assert_eq!(f.pixel(0, 0, 0), [0, 128, 255]);
        assert_eq!(f.pixel(1, 0, 0), [255, 0, 191]);
    }
}
