//! Problems with individual files: what went wrong, whether the file is skipped, and a summary
//! that is printed before training starts.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kinds of trouble a dataset file can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ProblemKind {
    // The file is skipped.
    /// ffprobe / the image decoder cannot read it (corrupt, truncated index, not media).
    Unreadable,
    /// An empty file, or a clip without frames.
    ZeroLength,
    /// A video container without a video stream.
    NoVideoStream,
    /// Decoding failed or stopped early (truncated data).
    DecodeFailed,
    /// Smaller than one 16×16 bucket.
    TooSmall,
    /// More pixels than [`crate::media::MAX_SOURCE_PIXELS`] (checked from the header, before decoding).
    TooLarge,
    /// A file format wanlora does not read (GIF, BMP, TIFF, HEIC, …).
    UnsupportedFormat,
    /// A folder or file the scan could not enter or read.
    WalkError,
    // The file is used, with a warning.
    /// The clip has fewer frames than asked: frames repeat.
    ShortClip,
    /// Too short to sample in real time: frames spread over the whole clip instead.
    Stretched,
    /// Source frame rate below the dataset's: frames repeat.
    SlowSource,
    /// The header's frame count was wrong; the decodable frames were counted and used.
    FrameCountMismatch,
    /// Fewer frames in the file than its header lists, with read errors (a cut-off download);
    /// the frames it holds are used.
    Truncated,
    /// An image with an alpha channel (composited onto white).
    Alpha,
    /// A CMYK JPEG (converted to RGB).
    Cmyk,
    /// More than 8 bits per channel (reduced to 8).
    HighBitDepth,
    /// No caption file, no `default.txt` and no `default_caption`: the caption is empty.
    MissingCaption,
    /// The caption file exists but is empty or only whitespace.
    EmptyCaption,
    /// A caption file that is not UTF-8 (read lossily).
    NonUtf8Caption,
    /// A caption file that exists but cannot be read (the default was used).
    UnreadableCaption,
}

impl ProblemKind {
    /// Whether a file with this problem is left out of training.
    pub fn skips_item(self) -> bool {
        matches!(
            self,
            Self::Unreadable
                | Self::ZeroLength
                | Self::NoVideoStream
                | Self::DecodeFailed
                | Self::TooSmall
                | Self::TooLarge
                | Self::UnsupportedFormat
                | Self::WalkError
        )
    }

    /// A short label for summaries.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::ZeroLength => "zero-length",
            Self::NoVideoStream => "no video stream",
            Self::DecodeFailed => "decode failed",
            Self::TooSmall => "too small",
            Self::TooLarge => "too many pixels",
            Self::UnsupportedFormat => "unsupported format",
            Self::WalkError => "not readable",
            Self::ShortClip => "shorter than num_frames (frames repeated)",
            Self::Stretched => "too short for real-time sampling (spread instead)",
            Self::SlowSource => "frame rate below the dataset's (frames repeated)",
            Self::FrameCountMismatch => "wrong frame count in header",
            Self::Truncated => "truncated (the frames it holds are used)",
            Self::Alpha => "alpha channel (composited onto white)",
            Self::Cmyk => "CMYK JPEG (converted to RGB)",
            Self::HighBitDepth => "16-bit (reduced to 8-bit)",
            Self::MissingCaption => "no caption (empty caption used)",
            Self::EmptyCaption => "empty caption file",
            Self::NonUtf8Caption => "caption not UTF-8 (read lossily)",
            Self::UnreadableCaption => "caption file unreadable",
        }
    }
}

/// One problem with one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub path: PathBuf,
    pub kind: ProblemKind,
    /// What happened, in words, without the path.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.kind.skips_item() {
            "skipped"
        } else {
            "warning"
        };
        write!(f, "{}: {verdict}: {}", shown_path(&self.path), self.message)
    }
}

/// A path for a one-line report: as it is, unless it holds a control character (a newline in a
/// file name would split the report's line), then quoted with the characters escaped.
pub fn shown_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.chars().any(char::is_control) {
        format!("{text:?}")
    } else {
        text.into_owned()
    }
}

/// Problems grouped for printing: skipped files first, then warnings, each kind with its count
/// and every file.
pub fn summarise(problems: &[Problem]) -> String {
    if problems.is_empty() {
        return "no problems found\n".into();
    }
    let mut by_kind: BTreeMap<(bool, ProblemKind), Vec<&Problem>> = BTreeMap::new();
    for p in problems {
        by_kind
            .entry((!p.kind.skips_item(), p.kind))
            .or_default()
            .push(p);
    }
    let skipped = problems.iter().filter(|p| p.kind.skips_item()).count();
    let mut out = format!(
        "{skipped} file(s) skipped, {} warning(s)\n",
        problems.len() - skipped
    );
    for ((warning, kind), list) in by_kind {
        let verdict = if warning { "warning" } else { "skipped" };
        out.push_str(&format!("  {verdict}: {} ({})\n", kind.label(), list.len()));
        for p in list {
            out.push_str(&format!("    {}: {}\n", shown_path(&p.path), p.message));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_groups_skips_before_warnings_and_names_files() {
        let problems = vec![
            Problem {
                path: "a.txt".into(),
                kind: ProblemKind::NonUtf8Caption,
                message: "invalid UTF-8".into(),
            },
            Problem {
                path: "b.mp4".into(),
                kind: ProblemKind::Unreadable,
                message: "moov atom not found".into(),
            },
        ];
        let text = summarise(&problems);
        assert!(text.starts_with("1 file(s) skipped, 1 warning(s)\n"));
        let skip_at = text.find("b.mp4: moov atom not found").unwrap();
        let warn_at = text.find("a.txt: invalid UTF-8").unwrap();
        assert!(skip_at < warn_at);
        assert_eq!(
            problems[1].to_string(),
            "b.mp4: skipped: moov atom not found"
        );
    }

    #[test]
    fn a_newline_in_a_file_name_stays_on_its_line() {
        let problems = vec![Problem {
            path: "clips/two\nlines.mp4".into(),
            kind: ProblemKind::Unreadable,
            message: "moov atom not found".into(),
        }];
        let text = summarise(&problems);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.contains("    \"clips/two\\nlines.mp4\": moov atom not found\n"),
            "{text}"
        );
        assert_eq!(
            problems[0].to_string(),
            "\"clips/two\\nlines.mp4\": skipped: moov atom not found"
        );
    }
}
