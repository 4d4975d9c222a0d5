//! Finding the media files of a dataset folder.

use std::path::{Path, PathBuf};

/// Video file extensions, lower case, as AI Toolkit accepts them.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "webm", "mkv", "avi", "m4v", "wmv", "flv"];
/// Image file extensions, lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

/// Media formats that are not read, and what to do about each: such files are reported as skipped
/// rather than passed over silently (a folder of GIFs would otherwise look empty).
pub const UNSUPPORTED_FORMATS: &[(&str, &str)] = &[
    ("gif", "GIF is not read; convert it to .mp4 (ffmpeg -i in.gif -pix_fmt yuv420p out.mp4) or, for a still, to .png"),
    ("bmp", "BMP is not read; convert it to .png"),
    ("tif", "TIFF is not read; convert it to .png"),
    ("tiff", "TIFF is not read; convert it to .png"),
    ("heic", "HEIC is not read; convert it to .jpg or .png"),
    ("heif", "HEIF is not read; convert it to .jpg or .png"),
    ("avif", "AVIF is not read; convert it to .png or .webp"),
    ("jxl", "JPEG XL is not read; convert it to .png"),
    ("mpg", "MPEG-1/2 files are not read; convert them to .mp4"),
    ("mpeg", "MPEG-1/2 files are not read; convert them to .mp4"),
];

/// Why a file with an unsupported media extension is skipped, or `None` for other files.
pub fn unsupported_format(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    UNSUPPORTED_FORMATS
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|(_, why)| *why)
}

/// What a media file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MediaKind {
    Video,
    Image,
}

/// The kind of a file by its extension (case-insensitive), or `None` for other files.
pub fn media_kind(path: &Path) -> Option<MediaKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if VIDEO_EXTENSIONS.contains(&ext.as_str()) {
        Some(MediaKind::Video)
    } else if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(MediaKind::Image)
    } else {
        None
    }
}

/// Hidden files and folders (name starting with a dot) are skipped, as are AI Toolkit's
/// `_controls` folders, which hold control images rather than training items.
fn is_skipped_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name == "_controls"
}

/// A path the walk could not read (permission denied, a symlink loop).
#[derive(Debug, Clone, PartialEq)]
pub struct WalkFailure {
    pub path: PathBuf,
    pub reason: String,
}

/// What a walk of a dataset folder found.
#[derive(Debug, Default, PartialEq)]
pub struct FoundMedia {
    /// The media files, in a stable (sorted) order.
    pub files: Vec<(PathBuf, MediaKind)>,
    /// Paths that could not be read.
    pub failures: Vec<WalkFailure>,
    /// Files of a media format that is not read (see [`UNSUPPORTED_FORMATS`]), with the reason.
    pub unsupported: Vec<WalkFailure>,
}

/// The media files under `folder`, recursively, the paths that could not be read, and the files
/// of unsupported formats. Symlinks are followed.
pub fn find_media(folder: &Path) -> FoundMedia {
    let mut files = Vec::new();
    let mut failures = Vec::new();
    let mut unsupported = Vec::new();
    let walk = walkdir::WalkDir::new(folder)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| entry.depth() == 0 || !is_skipped_name(entry.file_name()));
    for entry in walk {
        match entry {
            Ok(entry) if entry.file_type().is_file() => {
                if let Some(kind) = media_kind(entry.path()) {
                    files.push((entry.into_path(), kind));
                } else if let Some(reason) = unsupported_format(entry.path()) {
                    unsupported.push(WalkFailure {
                        path: entry.into_path(),
                        reason: reason.to_string(),
                    });
                }
            }
            Ok(_) => {}
            Err(err) => failures.push(WalkFailure {
                path: err
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| folder.to_path_buf()),
                reason: err.to_string(),
            }),
        }
    }
    FoundMedia {
        files,
        failures,
        unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension_ignore_case() {
        assert_eq!(media_kind(Path::new("a/b.MP4")), Some(MediaKind::Video));
        assert_eq!(media_kind(Path::new("b.webm")), Some(MediaKind::Video));
        assert_eq!(media_kind(Path::new("b.Jpeg")), Some(MediaKind::Image));
        assert_eq!(media_kind(Path::new("b.txt")), None);
        assert_eq!(media_kind(Path::new("noext")), None);
    }

    #[test]
    fn walk_is_recursive_sorted_and_skips_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in [
            "b.png",
            "a.mp4",
            "a.txt",
            ".hidden.png",
            "sub/c.webp",
            ".cache/d.png",
            "_controls/e.png",
            "sub/deeper/f.MOV",
            "sub/g.GIF",
        ] {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        let FoundMedia {
            files,
            failures,
            unsupported,
        } = find_media(root);
        assert!(failures.is_empty());
        assert_eq!(unsupported.len(), 1);
        assert_eq!(unsupported[0].path, root.join("sub/g.GIF"));
        assert!(unsupported[0].reason.contains("convert it to .mp4"));
        let rel: Vec<String> = files
            .iter()
            .map(|(p, _)| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel, ["a.mp4", "b.png", "sub/c.webp", "sub/deeper/f.MOV"]);
        assert_eq!(files[3].1, MediaKind::Video);
    }
}
