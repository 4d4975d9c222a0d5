use std::path::PathBuf;

/// A media file that could not be probed, decoded or written.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{tool} could not be started ({source}); install ffmpeg (`apt-get install ffmpeg`) and make sure `{tool}` is on PATH")]
    ToolMissing {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{}: unreadable ({message})", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("{}: has no video stream", path.display())]
    NoVideoStream { path: PathBuf },
    #[error("{}: the clip has no frames", path.display())]
    ZeroLength { path: PathBuf },
    #[error("{}: decoding gave {decoded} of the {expected} selected frames (truncated file, or a frame count in the header that the stream does not have){}", path.display(), stderr_suffix(.stderr))]
    ShortDecode {
        path: PathBuf,
        expected: usize,
        decoded: usize,
        stderr: String,
    },
    #[error("{}: ffmpeg failed: {message}", path.display())]
    Ffmpeg { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{}: {width}×{height} is {:.0} megapixels, above the limit of {:.0} (8192×8192); downscale it (e.g. to 4096 on the long side) — training buckets are about 1 megapixel",
        path.display(),
        f64::from(*width) * f64::from(*height) / 1e6,
        super::MAX_SOURCE_PIXELS as f64 / 1e6
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; ffmpeg said: {}", super::process::short_stderr(stderr))
    }
}

impl MediaError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
