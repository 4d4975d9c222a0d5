//! Sample outputs: H.264 MP4 and animated WebP through ffmpeg, JPEG thumbnails through the
//! `image` crate. Every file is written under a temporary name and renamed into place, so a
//! reader (the web UI) never sees half a video.

use super::process::{args, run_tool, short_stderr};
use super::{FrameRef, Frames, MediaError};
use crate::atomic::{commit, temp_path_beside};
use std::ffi::OsString;
use std::path::Path;

fn check_clip(frames: &Frames, fps: f64, path: &Path) -> Result<(), MediaError> {
    if frames.frames == 0 || frames.width == 0 || frames.height == 0 {
        return Err(MediaError::Invalid {
            path: path.to_path_buf(),
            message: "no frames to write".into(),
        });
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(MediaError::Invalid {
            path: path.to_path_buf(),
            message: format!("frame rate {fps} is not a positive number"),
        });
    }
    Ok(())
}

/// Pipes `frames` as raw RGB into ffmpeg with `output_args`, writing `path` atomically.
fn encode_with_ffmpeg(
    frames: &Frames,
    fps: f64,
    path: &Path,
    output_args: &[&str],
) -> Result<(), MediaError> {
    check_clip(frames, fps, path)?;
    let temp = temp_path_beside(path);
    let mut argv = args([
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        &format!("{}x{}", frames.width, frames.height),
        "-framerate",
        &format!("{fps}"),
        "-i",
        "pipe:0",
    ]);
    argv.extend(args(output_args.iter().copied()));
    let mut target = OsString::from("file:");
    target.push(temp.as_os_str());
    argv.push(target);
    let out = run_tool("ffmpeg", &argv, Some(&frames.data), 0)?;
    if !out.success {
        let _ = std::fs::remove_file(&temp);
        return Err(MediaError::Ffmpeg {
            path: path.to_path_buf(),
            message: short_stderr(&out.stderr),
        });
    }
    commit(&temp, path).map_err(|e| MediaError::io(path, e))
}

/// H.264 MP4 that browsers play: yuv420p, `+faststart` (index first, so playback starts before
/// the download ends), sides made even by dropping the last row or column if needed.
pub fn write_mp4(frames: &Frames, fps: f64, path: &Path) -> Result<(), MediaError> {
    encode_with_ffmpeg(
        frames,
        fps,
        path,
        &[
            "-vf",
            "crop=trunc(iw/2)*2:trunc(ih/2)*2",
            "-c:v",
            "libx264",
            "-preset",
            "medium",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ],
    )
}

/// Animated WebP that loops forever (quality 80, lossy), what AI Toolkit's UI shows.
pub fn write_webp(frames: &Frames, fps: f64, path: &Path) -> Result<(), MediaError> {
    encode_with_ffmpeg(
        frames,
        fps,
        path,
        &[
            "-c:v",
            "libwebp_anim",
            "-lossless",
            "0",
            "-quality",
            "80",
            "-loop",
            "0",
            "-f",
            "webp",
        ],
    )
}

/// One frame as a JPEG (quality 90), written atomically.
pub fn write_jpeg(frame: FrameRef<'_>, path: &Path) -> Result<(), MediaError> {
    if frame.width == 0 || frame.height == 0 {
        return Err(MediaError::Invalid {
            path: path.to_path_buf(),
            message: "empty frame".into(),
        });
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode(
            frame.data,
            frame.width as u32,
            frame.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|source| MediaError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    crate::atomic::write_atomically(path, &bytes).map_err(|e| MediaError::io(path, e))
}

/// The frame shrunk (never enlarged) so that its longer side is at most `max_side`, keeping its
/// aspect ratio: a thumbnail for [`write_jpeg`].
pub fn thumbnail(frame: FrameRef<'_>, max_side: usize) -> Frames {
    let longer = frame.width.max(frame.height).max(1);
    let scale = (max_side as f64 / longer as f64).min(1.0);
    let width = ((frame.width as f64 * scale).round() as u32).max(1);
    let height = ((frame.height as f64 * scale).round() as u32).max(1);
    let source =
        image::RgbImage::from_raw(frame.width as u32, frame.height as u32, frame.data.to_vec())
            .unwrap_or_default();
    let small = if (width as usize, height as usize) == (frame.width, frame.height) {
        source
    } else {
        image::imageops::resize(
            &source,
            width,
            height,
            image::imageops::FilterType::Triangle,
        )
    };
    Frames {
        frames: 1,
        height: small.height() as usize,
        width: small.width() as usize,
        data: small.into_raw(),
    }
}
