//! Finding the media files of a dataset folder.

use std::path::{Path, PathBuf};

/// Video file extensions, lower case, as AI Toolkit accepts them.
pub const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mov", "webm", "mkv", "avi", "m4v", "wmv", "flv"];
/// Image file extensions, lower case.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp"];

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

/// The media files under `folder`, recursively, in a stable (sorted) order, and the paths that
/// could not be read. Symlinks are followed.
pub fn find_media(folder: &Path) -> (Vec<(PathBuf, MediaKind)>, Vec<WalkFailure>) {
    let mut files = Vec::new();
    let mut failures = Vec::new();
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
    (files, failures)
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
        ] {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"x").unwrap();
        }
        let (files, failures) = find_media(root);
        assert!(failures.is_empty());
        let rel: Vec<String> = files
            .iter()
            .map(|(p, _)| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(rel, ["a.mp4", "b.png", "sub/c.webp", "sub/deeper/f.MOV"]);
        assert_eq!(files[3].1, MediaKind::Video);
    }
}
