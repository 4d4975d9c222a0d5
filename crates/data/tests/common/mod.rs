//! Test media made on the spot with ffmpeg's lavfi sources and the `image` crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs ffmpeg with `args`, panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The colour that encodes frame number `n`: red carries n mod 16, green n div 16, in steps of
/// 16 so that lossy compression (a few levels of error) cannot blur one number into another.
pub fn frame_colour_expr() -> &'static str {
    "r='mod(N,16)*16+8':g='trunc(N/16)*16+8':b='128'"
}

/// Reads the frame number back from a colour made by [`frame_colour_expr`].
pub fn frame_number(rgb: [u8; 3]) -> usize {
    let step = |v: u8| ((v as f64 - 8.0) / 16.0).round().max(0.0) as usize;
    step(rgb[0]) + 16 * step(rgb[1])
}

/// A clip whose frame `n` is a solid colour encoding `n` (see [`frame_colour_expr`]), of
/// `frames` frames at `fps`, `width × height`, encoded by `codec` into `path` (container from the
/// extension). `extra` is added before the output (e.g. `-movflags +faststart`).
pub fn numbered_clip(
    path: &Path,
    width: u32,
    height: u32,
    fps: &str,
    frames: usize,
    codec: &[&str],
    extra: &[&str],
) {
    make_parent(path);
    let source = format!(
        "color=c=black:s={width}x{height}:r={fps},format=rgb24,geq={}",
        frame_colour_expr()
    );
    let frames = frames.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &source, "-frames:v", &frames];
    args.extend_from_slice(codec);
    args.extend_from_slice(extra);
    let target = path.to_str().expect("test paths are UTF-8");
    args.push(target);
    ffmpeg(&args);
}

/// H.264 in MP4, yuv420p: what most users bring.
pub const H264: &[&str] = &[
    "-c:v",
    "libx264",
    "-pix_fmt",
    "yuv420p",
    "-preset",
    "ultrafast",
];
/// VP9 in WebM: a container without a frame count in its header.
pub const VP9: &[&str] = &[
    "-c:v",
    "libvpx-vp9",
    "-pix_fmt",
    "yuv420p",
    "-deadline",
    "realtime",
    "-b:v",
    "400k",
];

/// A testsrc2 clip (moving test pattern) of the given size, rate and length.
pub fn testsrc_clip(path: &Path, width: u32, height: u32, fps: &str, frames: usize) {
    make_parent(path);
    let source = format!("testsrc2=s={width}x{height}:r={fps}");
    let frames = frames.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &source, "-frames:v", &frames];
    args.extend_from_slice(H264);
    args.push(path.to_str().expect("UTF-8 path"));
    ffmpeg(&args);
}

/// A solid RGB image written by the `image` crate (format from the extension).
pub fn solid_image(path: &Path, width: u32, height: u32, rgb: [u8; 3]) {
    make_parent(path);
    image::RgbImage::from_pixel(width, height, image::Rgb(rgb))
        .save(path)
        .expect("write test image");
}

fn make_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create test folder");
    }
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    make_parent(path);
    std::fs::write(path, bytes).expect("write test file");
}

/// The committed fixture folder.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Frame numbers of every frame of `frames` (read at the centre pixel).
pub fn frame_numbers(frames: &wanlora_data::Frames) -> Vec<usize> {
    (0..frames.frames)
        .map(|f| frame_number(frames.pixel(f, frames.height / 2, frames.width / 2)))
        .collect()
}
