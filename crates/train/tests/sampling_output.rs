//! The start frame's fitting (centre crop vs stretch) and the sample files: MP4 and animated WebP with the right
//! frame count, the JPEG thumbnail, names `<step:09>_<index>.*`, still images for one-frame samples.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use tch::{Device, Kind, Tensor};
use wanlora_config::{CtrlImgResize, SampleFormat};
use wanlora_data::Frames;
use wanlora_train::sampling::start_image::load_start_image;
use wanlora_train::sampling::{
    sample_stem, video_frames, write_media, write_sample, SamplingError,
};

/// A 96×32 image of three 32-pixel bands: red | green | blue.
fn bands(dir: &Path) -> std::path::PathBuf {
    let mut img = image::RgbImage::new(96, 32);
    for (x, _, px) in img.enumerate_pixels_mut() {
        *px = match x / 32 {
            0 => image::Rgb([255, 0, 0]),
            1 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        };
    }
    let path = dir.join("bands.png");
    img.save(&path).unwrap();
    path
}

fn near(px: [u8; 3], want: [u8; 3]) -> bool {
    px.iter()
        .zip(want)
        .all(|(&a, b)| (a as i32 - b as i32).abs() <= 8)
}

#[test]
fn crop_keeps_the_centre_and_stretch_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = bands(dir.path());
    let (red, green, blue) = ([255, 0, 0], [0, 255, 0], [0, 0, 255]);

    let crop = load_start_image(&path, 32, 32, CtrlImgResize::Crop).unwrap();
    assert_eq!((crop.width, crop.height), (32, 32));
    for x in [0, 8, 16, 24, 31] {
        assert!(
            near(crop.pixel(0, 16, x), green),
            "crop x={x}: {:?}",
            crop.pixel(0, 16, x)
        );
    }

    let stretch = load_start_image(&path, 32, 32, CtrlImgResize::Stretch).unwrap();
    assert_eq!((stretch.width, stretch.height), (32, 32));
    assert!(
        near(stretch.pixel(0, 16, 2), red),
        "{:?}",
        stretch.pixel(0, 16, 2)
    );
    assert!(
        near(stretch.pixel(0, 16, 16), green),
        "{:?}",
        stretch.pixel(0, 16, 16)
    );
    assert!(
        near(stretch.pixel(0, 16, 29), blue),
        "{:?}",
        stretch.pixel(0, 16, 29)
    );

    // Upscaling by crop: 96×32 covers 64×64 at 2×, the middle 64 columns of 192 (green band centre) survive.
    let up = load_start_image(&path, 64, 64, CtrlImgResize::Crop).unwrap();
    assert_eq!((up.width, up.height), (64, 64));
    assert!(near(up.pixel(0, 32, 32), green));

    let err =
        load_start_image(&dir.path().join("missing.png"), 32, 32, CtrlImgResize::Crop).unwrap_err();
    assert!(matches!(err, SamplingError::StartImage { .. }), "{err}");
    assert!(err.to_string().contains("missing.png"), "{err}");
}

/// A decoded-video tensor `[1, 3, F, H, W]` in [−1, 1]: a gradient that moves with the frame.
fn video(frames: i64, height: i64, width: i64) -> Tensor {
    let f = Tensor::arange(frames, (Kind::Float, Device::Cpu)).view([1, 1, frames, 1, 1])
        / frames as f64;
    let y = Tensor::arange(height, (Kind::Float, Device::Cpu)).view([1, 1, 1, height, 1])
        / height as f64;
    let x =
        Tensor::arange(width, (Kind::Float, Device::Cpu)).view([1, 1, 1, 1, width]) / width as f64;
    let r = (&x + &f).remainder(1.0);
    let g = y.expand([1, 1, frames, height, width], false);
    let b = (&x * &y + &f * 0.5).remainder(1.0);
    let r = r.expand([1, 1, frames, height, width], false);
    let b = b.expand([1, 1, frames, height, width], false);
    Tensor::cat(&[r, g, b], 1) * 2.0 - 1.0
}

/// ffprobe's count of decoded frames, codec and pixel format of the first video stream.
fn ffprobe(path: &Path) -> (usize, String, String) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,codec_name,pix_fmt",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs (install ffmpeg)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &json["streams"][0];
    (
        s["nb_read_frames"].as_str().unwrap().parse().unwrap(),
        s["codec_name"].as_str().unwrap().to_string(),
        s["pix_fmt"].as_str().unwrap().to_string(),
    )
}

/// Frames of an animated WebP, counted from its RIFF chunks (ffmpeg 5.1 cannot decode animated WebP, so ffprobe
/// cannot count them).
fn webp_frames(path: &Path) -> usize {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WEBP");
    let mut at = 12;
    let mut frames = 0;
    while at + 8 <= bytes.len() {
        let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if &bytes[at..at + 4] == b"ANMF" {
            frames += 1;
        }
        at += 8 + size + size % 2;
    }
    frames
}

#[test]
fn sample_files_have_the_right_names_and_frame_counts() {
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples");
    let frames = video_frames(&video(9, 32, 48)).unwrap();
    assert_eq!((frames.frames, frames.height, frames.width), (9, 32, 48));
    let stem = sample_stem(250, 1);
    let files = write_sample(
        &frames,
        16,
        &[SampleFormat::Mp4, SampleFormat::Webp],
        &samples,
        &stem,
    )
    .unwrap();
    let mp4 = samples.join("000000250_1.mp4");
    let webp = samples.join("000000250_1.webp");
    let jpg = samples.join("000000250_1.jpg");
    assert_eq!(files.media, vec![mp4.clone(), webp.clone()]);
    assert_eq!(files.thumbnail, jpg);

    assert_eq!(
        ffprobe(&mp4),
        (9, "h264".to_string(), "yuv420p".to_string())
    );
    assert_eq!(webp_frames(&webp), 9);
    let thumb = image::open(&jpg).unwrap();
    assert_eq!(
        (thumb.width(), thumb.height()),
        (48, 32),
        "small frames are not enlarged"
    );
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&samples)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // The thumbnail shows the first frame.
    let first = frames.frame(0);
    let px = thumb.to_rgb8().get_pixel(24, 16).0;
    let at = (16 * 48 + 24) * 3;
    let want = [first.data[at], first.data[at + 1], first.data[at + 2]];
    assert!(near(px, want), "thumbnail {px:?} vs first frame {want:?}");
}

#[test]
fn one_frame_samples_are_images() {
    let dir = tempfile::tempdir().unwrap();
    let frame = video_frames(&video(1, 32, 48)).unwrap();
    let files = write_sample(&frame, 16, &[SampleFormat::Png], dir.path(), "000000000_0").unwrap();
    assert_eq!(files.media, vec![dir.path().join("000000000_0.png")]);
    assert_eq!(image::open(&files.media[0]).unwrap().width(), 48);
    assert!(files.thumbnail.is_file());
    let jpg = write_sample(&frame, 16, &[SampleFormat::Jpg], dir.path(), "000000000_1").unwrap();
    assert_eq!(
        jpg.media,
        vec![jpg.thumbnail.clone()],
        "a JPEG sample is its own thumbnail"
    );

    // A video cannot be written as a still image.
    let clip: Frames = video_frames(&video(5, 32, 48)).unwrap();
    let err = write_media(&clip, 16, &dir.path().join("x.png"), SampleFormat::Png).unwrap_err();
    assert!(err.to_string().contains("mp4"), "{err}");
}
