//! What a clip is: frame count, frame rate, duration and size, from `ffprobe`'s JSON.

use super::process::{args, path_arg, run_tool, short_stderr};
use super::MediaError;
use serde_json::Value;
use std::path::Path;

/// A frame rate or aspect ratio as ffprobe writes it (`30000/1001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rational {
    pub num: i64,
    pub den: i64,
}

impl Rational {
    /// Parses `a/b` or `a:b`; `None` for a zero or negative part (ffprobe's `0/0` = unknown).
    pub fn parse(text: &str) -> Option<Self> {
        let (num, den) = text.split_once(['/', ':'])?;
        let (num, den) = (num.trim().parse().ok()?, den.trim().parse().ok()?);
        (num > 0 && den > 0).then_some(Self { num, den })
    }

    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// Where [`MediaInfo::frame_count`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrameCountSource {
    /// The container's frame count (`nb_frames`).
    Header,
    /// Packets counted by demuxing the file (WebM/MKV have no frame count in the header).
    CountedPackets,
    /// Frames counted by decoding the whole clip (after the header proved wrong).
    Decoded,
}

/// One video clip, as probed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MediaInfo {
    pub codec: String,
    /// Stored size of a frame.
    pub width: u32,
    pub height: u32,
    /// Size as shown: rotation and non-square pixels applied; this is what decoding yields
    /// (ffmpeg rotates automatically) and what buckets are computed from.
    pub display_width: u32,
    pub display_height: u32,
    /// Clockwise display rotation in degrees: 0, 90, 180 or 270.
    pub rotation: u32,
    pub frame_count: usize,
    pub frame_count_source: FrameCountSource,
    pub fps: Rational,
    pub duration_s: f64,
    pub pix_fmt: String,
    pub has_alpha: bool,
    /// Set when the file holds fewer frames than its header lists and reading it failed: a
    /// cut-off file (found by demuxing, without decoding).
    #[serde(default)]
    pub truncation: Option<Truncation>,
}

/// How a cut-off clip was recognised.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Truncation {
    /// The frame count the header lists (the file holds `frame_count`).
    pub header_frames: usize,
    /// What ffprobe said while reading (e.g. "partial file").
    pub read_error: String,
}

/// Pixel formats that carry an alpha channel.
pub fn pix_fmt_has_alpha(pix_fmt: &str) -> bool {
    const ALPHA_PREFIXES: &[&str] = &[
        "yuva", "rgba", "bgra", "argb", "abgr", "gbrap", "ya8", "ya16", "rgba64", "bgra64",
    ];
    ALPHA_PREFIXES.iter().any(|p| pix_fmt.starts_with(p))
}

/// Probes a video file. The frame count comes from the header, or from counting packets when the
/// container has none (a second, demux-only ffprobe pass).
pub fn probe(path: &Path) -> Result<MediaInfo, MediaError> {
    if std::fs::metadata(path)
        .map_err(|e| MediaError::io(path, e))?
        .len()
        == 0
    {
        return Err(MediaError::ZeroLength {
            path: path.to_path_buf(),
        });
    }
    let mut argv = args([
        "-v",
        "error",
        "-select_streams",
        "V:0",
        "-show_streams",
        "-show_format",
        "-of",
        "json",
    ]);
    argv.push(path_arg(path));
    let out = run_tool("ffprobe", &argv, None, 8192)?;
    if !out.success {
        return Err(MediaError::Unreadable {
            path: path.to_path_buf(),
            message: first_line(&out.stderr),
        });
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let mut info = parse_probe_json(&json).map_err(|message| match message {
        ProbeProblem::NoVideo => MediaError::NoVideoStream {
            path: path.to_path_buf(),
        },
        ProbeProblem::Bad(message) => MediaError::Unreadable {
            path: path.to_path_buf(),
            message,
        },
    })?;
    super::check_pixel_limit(path, info.width, info.height)?;
    // Demuxing reads every packet without decoding: it finds the frame count of containers
    // without one in the header, and a cut-off file whose index lists frames it does not hold.
    let counted = count_packets(path)?;
    if info.frame_count == 0 {
        info.frame_count = counted.packets;
        info.frame_count_source = FrameCountSource::CountedPackets;
    } else if counted.packets < info.frame_count {
        // Frames are chosen from those the file holds (decoding re-counts if even fewer decode).
        info.truncation = counted.read_error.map(|read_error| Truncation {
            header_frames: info.frame_count,
            read_error,
        });
        info.frame_count = counted.packets;
        info.frame_count_source = FrameCountSource::CountedPackets;
    }
    if info.frame_count == 0 {
        return Err(MediaError::ZeroLength {
            path: path.to_path_buf(),
        });
    }
    if info.duration_s <= 0.0 {
        info.duration_s = info.frame_count as f64 / info.fps.as_f64();
    }
    Ok(info)
}

fn first_line(stderr: &str) -> String {
    let text = short_stderr(stderr);
    if text.is_empty() {
        "ffprobe failed without a message".into()
    } else {
        text
    }
}

/// What demuxing a whole file found.
struct PacketCount {
    packets: usize,
    /// The first error ffprobe reported while reading (e.g. "partial file"), if any.
    read_error: Option<String>,
}

/// Video packets in the file, by demuxing it (no decoding).
fn count_packets(path: &Path) -> Result<PacketCount, MediaError> {
    let mut argv = args([
        "-v",
        "error",
        "-select_streams",
        "V:0",
        "-count_packets",
        "-show_entries",
        "stream=nb_read_packets",
        "-of",
        "csv=p=0",
    ]);
    argv.push(path_arg(path));
    let out = run_tool("ffprobe", &argv, None, 64)?;
    if !out.success {
        return Err(MediaError::Unreadable {
            path: path.to_path_buf(),
            message: first_line(&out.stderr),
        });
    }
    let packets = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or(0);
    let stderr = short_stderr(&out.stderr);
    Ok(PacketCount {
        packets,
        read_error: (!stderr.is_empty()).then_some(stderr),
    })
}

#[derive(Debug, PartialEq)]
enum ProbeProblem {
    NoVideo,
    Bad(String),
}

fn str_field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn number_field(value: &Value, key: &str) -> Option<f64> {
    match value.get(key)? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// Reads ffprobe's `-show_streams -show_format -of json` output (one selected video stream).
/// A frame count of 0 means "not in the header".
fn parse_probe_json(json: &str) -> Result<MediaInfo, ProbeProblem> {
    let root: Value = serde_json::from_str(json)
        .map_err(|e| ProbeProblem::Bad(format!("ffprobe printed unreadable JSON: {e}")))?;
    let stream = root
        .get("streams")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
        .ok_or(ProbeProblem::NoVideo)?;
    let width = number_field(stream, "width").unwrap_or(0.0) as u32;
    let height = number_field(stream, "height").unwrap_or(0.0) as u32;
    if width == 0 || height == 0 {
        return Err(ProbeProblem::Bad(
            "the video stream has no frame size".into(),
        ));
    }
    let frame_count = number_field(stream, "nb_frames").unwrap_or(0.0).max(0.0) as usize;
    let duration_s = number_field(stream, "duration")
        .or_else(|| root.get("format").and_then(|f| number_field(f, "duration")))
        .filter(|d| d.is_finite() && *d > 0.0)
        .unwrap_or(0.0);
    let fps = ["avg_frame_rate", "r_frame_rate"]
        .iter()
        .filter_map(|key| str_field(stream, key).and_then(Rational::parse))
        // ffprobe reports 90000/1 and similar time bases for some broken files; no real clip
        // runs above 1000 fps.
        .find(|r| r.as_f64() <= 1000.0)
        .or_else(|| {
            (frame_count > 0 && duration_s > 0.0).then(|| Rational {
                num: (frame_count as f64 / duration_s * 1000.0).round() as i64,
                den: 1000,
            })
        })
        .ok_or_else(|| ProbeProblem::Bad("no frame rate in the stream".into()))?;

    let rotation = rotation_of(stream);
    let sar = str_field(stream, "sample_aspect_ratio")
        .and_then(Rational::parse)
        .filter(|r| r.num != r.den);
    let (mut display_width, mut display_height) = (width, height);
    if let Some(sar) = sar {
        display_width = ((width as f64 * sar.as_f64()).round() as u32).max(1);
    }
    if rotation % 180 == 90 {
        std::mem::swap(&mut display_width, &mut display_height);
    }
    let pix_fmt = str_field(stream, "pix_fmt")
        .unwrap_or("unknown")
        .to_string();
    let alpha_tag = stream
        .get("tags")
        .and_then(|t| str_field(t, "alpha_mode"))
        .is_some_and(|v| v == "1");
    Ok(MediaInfo {
        codec: str_field(stream, "codec_name")
            .unwrap_or("unknown")
            .to_string(),
        width,
        height,
        display_width,
        display_height,
        rotation,
        frame_count,
        frame_count_source: FrameCountSource::Header,
        fps,
        duration_s,
        has_alpha: alpha_tag || pix_fmt_has_alpha(&pix_fmt),
        pix_fmt,
        truncation: None,
    })
}

/// Display rotation from the display-matrix side data (ffmpeg ≥ 5) or the legacy `rotate` tag,
/// as clockwise degrees in {0, 90, 180, 270}. The side data counts counter-clockwise.
fn rotation_of(stream: &Value) -> u32 {
    let from_side_data = stream
        .get("side_data_list")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find_map(|sd| number_field(sd, "rotation")))
        .map(|ccw| -ccw);
    let from_tag = stream.get("tags").and_then(|t| number_field(t, "rotate"));
    let degrees = from_side_data.or(from_tag).unwrap_or(0.0);
    (((degrees / 90.0).round() as i64).rem_euclid(4) * 90) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rationals_parse() {
        assert_eq!(
            Rational::parse("30000/1001"),
            Some(Rational {
                num: 30000,
                den: 1001
            })
        );
        assert_eq!(Rational::parse("0/0"), None);
        assert_eq!(Rational::parse("16:9").map(|r| r.num), Some(16));
        assert!((Rational::parse("30000/1001").unwrap().as_f64() - 29.97).abs() < 0.001);
    }

    #[test]
    fn alpha_formats() {
        assert!(pix_fmt_has_alpha("yuva420p"));
        assert!(pix_fmt_has_alpha("rgba"));
        assert!(pix_fmt_has_alpha("gbrap10le"));
        assert!(!pix_fmt_has_alpha("yuv420p"));
        assert!(!pix_fmt_has_alpha("rgb24"));
    }

    #[test]
    fn parses_a_phone_clip_with_rotation_and_no_frame_count() {
        let json = r#"{"streams":[{"codec_name":"hevc","width":1920,"height":1080,
            "pix_fmt":"yuv420p10le","r_frame_rate":"30/1","avg_frame_rate":"30000/1001",
            "sample_aspect_ratio":"1:1","duration":"4.004",
            "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}],
            "format":{"duration":"4.010"}}"#;
        let info = parse_probe_json(json).unwrap();
        assert_eq!((info.width, info.height), (1920, 1080));
        assert_eq!((info.display_width, info.display_height), (1080, 1920));
        assert_eq!(info.rotation, 90);
        assert_eq!(info.frame_count, 0);
        assert_eq!(
            info.fps,
            Rational {
                num: 30000,
                den: 1001
            }
        );
        assert!((info.duration_s - 4.004).abs() < 1e-9);
        assert!(!info.has_alpha);
    }

    #[test]
    fn legacy_rotate_tag_anamorphic_pixels_and_alpha_tag() {
        let json = r#"{"streams":[{"codec_name":"vp9","width":720,"height":576,
            "pix_fmt":"yuv420p","r_frame_rate":"25/1","avg_frame_rate":"0/0",
            "sample_aspect_ratio":"16:15","nb_frames":"50",
            "tags":{"rotate":"180","alpha_mode":"1"}}],"format":{"duration":"2.0"}}"#;
        let info = parse_probe_json(json).unwrap();
        assert_eq!(info.rotation, 180);
        assert_eq!((info.display_width, info.display_height), (768, 576));
        assert_eq!(info.fps.as_f64(), 25.0);
        assert_eq!(info.frame_count, 50);
        assert!((info.duration_s - 2.0).abs() < 1e-9);
        assert!(info.has_alpha);
    }

    #[test]
    fn no_stream_and_no_size_are_errors() {
        assert_eq!(
            parse_probe_json(r#"{"streams":[],"format":{}}"#).unwrap_err(),
            ProbeProblem::NoVideo
        );
        assert!(matches!(
            parse_probe_json(r#"{"streams":[{"codec_name":"h264"}]}"#),
            Err(ProbeProblem::Bad(_))
        ));
    }
}
