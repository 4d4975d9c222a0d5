//! Probing, decoding and writing real files made with ffmpeg.

mod common;

use common::*;
use wanlora_data::media::{
    count_decoded_frames, decode_video_frames, load_image, probe_image, FrameCountSource,
};
use wanlora_data::{probe, BucketSize, MediaError};

#[test]
fn probe_reads_count_rate_duration_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("ntsc.mp4");
    testsrc_clip(&mp4, 96, 64, "30000/1001", 45);
    let info = probe(&mp4).unwrap();
    assert_eq!(info.frame_count, 45);
    assert_eq!(info.frame_count_source, FrameCountSource::Header);
    assert_eq!((info.fps.num, info.fps.den), (30000, 1001));
    assert!(
        (info.duration_s - 45.0 * 1001.0 / 30000.0).abs() < 0.01,
        "{}",
        info.duration_s
    );
    assert_eq!((info.width, info.height), (96, 64));
    assert_eq!((info.display_width, info.display_height), (96, 64));
    assert_eq!(info.pix_fmt, "yuv420p");
    assert!(!info.has_alpha);

    // WebM has no frame count in its header: packets are counted.
    let webm = dir.path().join("clip.webm");
    numbered_clip(&webm, 64, 48, "24", 37, VP9, &[]);
    let info = probe(&webm).unwrap();
    assert_eq!(info.frame_count, 37);
    assert_eq!(info.frame_count_source, FrameCountSource::CountedPackets);
    assert_eq!(info.fps.as_f64(), 24.0);
}

#[test]
fn probe_reports_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.mp4");
    write(&empty, b"");
    assert!(matches!(probe(&empty), Err(MediaError::ZeroLength { .. })));

    let garbage = dir.path().join("garbage.mp4");
    write(&garbage, b"this is not a video at all, just text");
    let err = probe(&garbage).unwrap_err();
    assert!(matches!(err, MediaError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("garbage.mp4"));

    // An MP4 whose index (at the end) was cut off: the usual interrupted download.
    let full = dir.path().join("full.mp4");
    testsrc_clip(&full, 64, 48, "25", 50);
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.mp4");
    write(&cut, &bytes[..bytes.len() / 2]);
    assert!(matches!(probe(&cut), Err(MediaError::Unreadable { .. })));

    // A container without any video stream.
    let no_frames = dir.path().join("noframes.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=64x48",
        "-frames:v",
        "0",
        "-c:v",
        "libx264",
        no_frames.to_str().unwrap(),
    ]);
    assert!(matches!(
        probe(&no_frames),
        Err(MediaError::NoVideoStream { .. })
    ));
}

#[test]
fn decode_returns_exactly_the_asked_frames_in_order_with_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("numbered.mp4");
    numbered_clip(&clip, 64, 48, "10", 60, H264, &[]);
    let info = probe(&clip).unwrap();
    assert_eq!(info.frame_count, 60);
    let bucket = BucketSize {
        width: 64,
        height: 48,
    };
    let wanted = [0, 7, 8, 9, 31, 59, 59, 3];
    let frames = decode_video_frames(&clip, &info, &wanted, bucket).unwrap();
    assert_eq!((frames.frames, frames.height, frames.width), (8, 48, 64));
    assert_eq!(frame_numbers(&frames), wanted);

    // Past the end: the decode says how many frames it got.
    let err = decode_video_frames(&clip, &info, &[5, 60, 61], bucket).unwrap_err();
    match err {
        MediaError::ShortDecode {
            expected, decoded, ..
        } => {
            assert_eq!((expected, decoded), (3, 1));
        }
        other => panic!("{other}"),
    }
    assert_eq!(count_decoded_frames(&clip).unwrap(), 60);
}

#[test]
fn decode_scales_to_cover_then_centre_crops() {
    let dir = tempfile::tempdir().unwrap();
    // Left half red, right half blue, 160×90: cover-resized to 64×64 the middle column keeps both.
    let clip = dir.path().join("halves.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=80x90:r=5",
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:s=80x90:r=5",
        "-filter_complex",
        "[0][1]hstack",
        "-frames:v",
        "3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-qp",
        "0",
        clip.to_str().unwrap(),
    ]);
    let info = probe(&clip).unwrap();
    assert_eq!((info.display_width, info.display_height), (160, 90));
    let frames = decode_video_frames(
        &clip,
        &info,
        &[1],
        BucketSize {
            width: 64,
            height: 64,
        },
    )
    .unwrap();
    assert_eq!((frames.width, frames.height), (64, 64));
    // Scaled to 114×64, crop x = 25: pixels 0..32 come from the red half, 32..64 from blue.
    let left = frames.pixel(0, 32, 4);
    let right = frames.pixel(0, 32, 60);
    assert!(left[0] > 200 && left[2] < 60, "{left:?}");
    assert!(right[2] > 200 && right[0] < 60, "{right:?}");
}

#[test]
fn images_with_alpha_cmyk_and_16_bits_become_8_bit_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let alpha = dir.path().join("alpha.png");
    // Fully transparent black: composited onto white.
    image::RgbaImage::from_pixel(48, 32, image::Rgba([0, 0, 0, 0]))
        .save(&alpha)
        .unwrap();
    let info = probe_image(&alpha).unwrap();
    assert!(info.notes.alpha && !info.notes.cmyk && !info.notes.high_bit_depth);
    let frames = load_image(
        &alpha,
        BucketSize {
            width: 48,
            height: 32,
        },
    )
    .unwrap();
    assert_eq!(frames.pixel(0, 10, 10), [255, 255, 255]);

    let deep = dir.path().join("deep.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(
        40,
        40,
        image::Rgb([0x3333, 0x6666, 0x9999]),
    )
    .save(&deep)
    .unwrap();
    let info = probe_image(&deep).unwrap();
    assert!(info.notes.high_bit_depth && !info.notes.alpha);
    let frames = load_image(
        &deep,
        BucketSize {
            width: 32,
            height: 32,
        },
    )
    .unwrap();
    let px = frames.pixel(0, 16, 16);
    assert!(
        px[0].abs_diff(0x33) <= 1 && px[1].abs_diff(0x66) <= 1 && px[2].abs_diff(0x99) <= 1,
        "{px:?}"
    );

    let cmyk = fixture("cmyk.jpg");
    let info = probe_image(&cmyk).unwrap();
    assert!(info.notes.cmyk);
    assert_eq!((info.width, info.height), (40, 30));
    let frames = load_image(
        &cmyk,
        BucketSize {
            width: 32,
            height: 16,
        },
    )
    .unwrap();
    let (red, blue) = (frames.pixel(0, 8, 2), frames.pixel(0, 8, 29));
    assert!(red[0] > 220 && red[1] < 40 && red[2] < 40, "{red:?}");
    assert!(blue[2] > 220 && blue[0] < 40 && blue[1] < 40, "{blue:?}");
}

fn ffprobe_frames(path: &std::path::Path) -> (String, usize, String) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,nb_read_frames,pix_fmt",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fields: Vec<&str> = text.split(',').collect();
    (
        fields[0].to_string(),
        fields[2].parse().unwrap_or(0),
        fields[1].to_string(),
    )
}

#[test]
fn mp4_webp_and_jpeg_outputs_are_complete() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("numbered.mp4");
    numbered_clip(&clip, 64, 48, "16", 9, H264, &[]);
    let info = probe(&clip).unwrap();
    let mut frames = decode_video_frames(
        &clip,
        &info,
        &(0..9).collect::<Vec<_>>(),
        BucketSize {
            width: 64,
            height: 48,
        },
    )
    .unwrap();

    let mp4 = dir.path().join("sample_000000100_0.mp4");
    wanlora_data::write_mp4(&frames, 16.0, &mp4).unwrap();
    let (codec, count, pix_fmt) = ffprobe_frames(&mp4);
    assert_eq!(
        (codec.as_str(), count, pix_fmt.as_str()),
        ("h264", 9, "yuv420p")
    );
    let written = probe(&mp4).unwrap();
    assert_eq!(written.fps.as_f64(), 16.0);
    // +faststart: the index (moov) comes before the media data (mdat).
    let bytes = std::fs::read(&mp4).unwrap();
    let find = |tag: &[u8]| bytes.windows(4).position(|w| w == tag).unwrap();
    assert!(find(b"moov") < find(b"mdat"));
    // The frames survive the round trip.
    let back = decode_video_frames(
        &mp4,
        &written,
        &[0, 4, 8],
        BucketSize {
            width: 64,
            height: 48,
        },
    )
    .unwrap();
    assert_eq!(frame_numbers(&back), [0, 4, 8]);

    // Odd sizes are cropped to even ones (yuv420p needs them).
    frames = frames.select(&[0, 1, 2]);
    let odd = wanlora_data::Frames::new(3, 47, 63, {
        let mut data = Vec::new();
        for f in 0..3 {
            for y in 0..47 {
                data.extend_from_slice(&frames.frame(f).data[y * 64 * 3..(y * 64 + 63) * 3]);
            }
        }
        data
    })
    .unwrap();
    let odd_mp4 = dir.path().join("odd.mp4");
    wanlora_data::write_mp4(&odd, 8.0, &odd_mp4).unwrap();
    let info = probe(&odd_mp4).unwrap();
    assert_eq!((info.width, info.height, info.frame_count), (62, 46, 3));

    let webp = dir.path().join("sample.webp");
    wanlora_data::write_webp(&frames, 16.0, &webp).unwrap();
    let bytes = std::fs::read(&webp).unwrap();
    assert_eq!(&bytes[0..4], b"RIFF");
    assert_eq!(&bytes[8..12], b"WEBP");
    // ffmpeg 5.1 cannot decode animated WebP, so the animation is read with the image crate.
    use image::AnimationDecoder;
    let decoder = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    let decoded: Vec<_> = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(decoded.len(), 3);
    assert_eq!(
        decoded[0].delay().numer_denom_ms().0 / decoded[0].delay().numer_denom_ms().1.max(1),
        62
    );
    let middle = decoded[2].buffer().get_pixel(32, 24).0;
    assert_eq!(frame_number([middle[0], middle[1], middle[2]]), 2);

    let jpg = dir.path().join("thumb.jpg");
    let thumb = wanlora_data::thumbnail(frames.frame(1), 32);
    assert_eq!((thumb.width, thumb.height), (32, 24));
    wanlora_data::write_jpeg(thumb.frame(0), &jpg).unwrap();
    let back = image::open(&jpg).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), (32, 24));
    assert_eq!(frame_number(back.get_pixel(16, 12).0), 1);

    // Nothing but the finished files is left in the folder.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "numbered.mp4",
            "odd.mp4",
            "sample.webp",
            "sample_000000100_0.mp4",
            "thumb.jpg"
        ]
    );
}

#[test]
fn writing_into_a_missing_folder_fails_without_leaving_files() {
    let dir = tempfile::tempdir().unwrap();
    let frames = wanlora_data::Frames::new(1, 16, 16, vec![128; 16 * 16 * 3]).unwrap();
    let target = dir.path().join("missing").join("x.mp4");
    let err = wanlora_data::write_mp4(&frames, 16.0, &target).unwrap_err();
    assert!(err.to_string().contains("x.mp4"), "{err}");
    assert!(wanlora_data::write_mp4(&frames, 0.0, &dir.path().join("y.mp4")).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
