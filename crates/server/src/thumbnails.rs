//! Thumbnails of dataset videos: the first frame, 320 pixels wide, made once by ffmpeg and kept
//! under the data folder's thumbnails/ until the video changes.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("ffmpeg could not be run ({0}); install ffmpeg to see video thumbnails")]
    NoFfmpeg(std::io::Error),
    #[error("ffmpeg could not read {path}: {stderr}")]
    Failed { path: PathBuf, stderr: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The thumbnail of `video` (made when missing or older than the video), stored as
/// `cache_dir/<file name>.jpg`.
pub fn video_thumbnail(video: &Path, cache_dir: &Path) -> Result<PathBuf, ThumbnailError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ThumbnailError::Io { path, source }
    };
    let name = video
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let mut thumb_name = name;
    thumb_name.push(".jpg");
    let thumb = cache_dir.join(thumb_name);
    let video_time = std::fs::metadata(video)
        .and_then(|m| m.modified())
        .map_err(io(video))?;
    if let Ok(t) = std::fs::metadata(&thumb).and_then(|m| m.modified()) {
        if t >= video_time {
            return Ok(thumb);
        }
    }
    std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    // `file:` keeps ffmpeg from reading a protocol or an option out of the file name.
    let mut input = std::ffi::OsString::from("file:");
    input.push(video.as_os_str());
    let mut output = std::ffi::OsString::from("file:");
    output.push(thumb.as_os_str());
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-i"])
        .arg(&input)
        .args(["-frames:v", "1", "-vf", "scale=320:-2", "-q:v", "4"])
        .arg(&output)
        .output()
        .map_err(ThumbnailError::NoFfmpeg)?;
    if !out.status.success() || !thumb.exists() {
        return Err(ThumbnailError::Failed {
            path: video.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(thumb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_of_a_generated_clip_is_a_jpeg_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("clip one.mp4");
        let made = Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=64x48:rate=8",
                "-t",
                "0.5",
            ])
            .args(["-pix_fmt", "yuv420p"])
            .arg(&video)
            .status()
            .expect("ffmpeg is part of the project's set-up (scripts/setup.sh)");
        assert!(made.success());
        let cache = dir.path().join("thumbs");
        let thumb = video_thumbnail(&video, &cache).unwrap();
        let bytes = std::fs::read(&thumb).unwrap();
        assert_eq!(&bytes[..3], &[0xFF, 0xD8, 0xFF]);
        let first = std::fs::metadata(&thumb).unwrap().modified().unwrap();
        video_thumbnail(&video, &cache).unwrap();
        assert_eq!(
            std::fs::metadata(&thumb).unwrap().modified().unwrap(),
            first
        );
    }

    #[test]
    fn a_non_video_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.mp4");
        std::fs::write(&fake, b"not a video").unwrap();
        let err = video_thumbnail(&fake, dir.path()).unwrap_err();
        assert!(err.to_string().contains("fake.mp4"), "{err}");
    }
}
