//! Datasets as folders under the data folder's datasets/: media files (videos, images) with
//! captions in a `.txt` file of the same stem, the layout AI Toolkit and the trainer read.

use crate::paths::{self, PathError};
use crate::uploads::{self, FileKind};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One dataset in the list.
#[derive(Debug, Serialize, PartialEq)]
pub struct DatasetSummary {
    pub name: String,
    pub videos: usize,
    pub images: usize,
    pub captions: usize,
    pub bytes: u64,
    /// Absolute folder: what goes into a job's `folder_path`.
    pub folder: String,
}

/// One media file with its caption.
#[derive(Debug, Serialize, PartialEq)]
pub struct DatasetItem {
    pub file: String,
    pub kind: FileKind,
    pub bytes: u64,
    /// The caption file's text; None when there is no caption file.
    pub caption: Option<String>,
}

/// The regular (non-symlink, non-hidden) files of a folder, sorted by name.
fn plain_files(dir: &Path) -> Result<Vec<(String, u64)>, PathError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PathError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

/// The caption file that belongs to a media file: same stem, `.txt`.
pub fn caption_name(media: &str) -> String {
    let stem = media.rsplit_once('.').map(|(s, _)| s).unwrap_or(media);
    format!("{stem}.txt")
}

/// A dataset's folder, which must exist and be a real folder inside `datasets`.
pub fn dataset_dir(datasets: &Path, name: &str) -> Result<PathBuf, PathError> {
    let dir = paths::confined_join(datasets, "dataset", name)?;
    if !dir.is_dir() {
        return Err(PathError::Io {
            path: dir,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such dataset"),
        });
    }
    paths::ensure_inside(datasets, &dir)?;
    Ok(dir)
}

pub fn list(datasets: &Path) -> Result<Vec<DatasetSummary>, PathError> {
    let entries = std::fs::read_dir(datasets).map_err(|source| PathError::Io {
        path: datasets.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
            || paths::checked_name("dataset", &name).is_err()
        {
            continue;
        }
        let mut s = DatasetSummary {
            name: name.clone(),
            videos: 0,
            images: 0,
            captions: 0,
            bytes: 0,
            folder: entry.path().display().to_string(),
        };
        for (file, bytes) in plain_files(&entry.path())? {
            s.bytes += bytes;
            match uploads::kind_of(&file) {
                Some(FileKind::Video) => s.videos += 1,
                Some(FileKind::Image) => s.images += 1,
                Some(FileKind::Caption) => s.captions += 1,
                _ => {}
            }
        }
        out.push(s);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn create(datasets: &Path, name: &str) -> Result<PathBuf, PathError> {
    let dir = paths::confined_join(datasets, "dataset", name)?;
    std::fs::create_dir(&dir).map_err(|source| PathError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Removes a dataset folder and everything in it (symlinks inside are removed, not followed).
pub fn delete(datasets: &Path, name: &str) -> Result<(), PathError> {
    let dir = dataset_dir(datasets, name)?;
    std::fs::remove_dir_all(&dir).map_err(|source| PathError::Io { path: dir, source })
}

/// The media files of a dataset with their captions.
pub fn items(dir: &Path) -> Result<Vec<DatasetItem>, PathError> {
    let files = plain_files(dir)?;
    let mut out = Vec::new();
    for (file, bytes) in &files {
        let kind = match uploads::kind_of(file) {
            Some(k @ (FileKind::Video | FileKind::Image)) => k,
            _ => continue,
        };
        let caption_file = caption_name(file);
        let caption = if files.iter().any(|(f, _)| *f == caption_file) {
            std::fs::read_to_string(dir.join(&caption_file)).ok()
        } else {
            None
        };
        out.push(DatasetItem {
            file: file.clone(),
            kind,
            bytes: *bytes,
            caption,
        });
    }
    Ok(out)
}

/// A media file of a dataset (must exist, be a video or image, and not be a symlink).
pub fn media_path(dir: &Path, file: &str) -> Result<PathBuf, PathError> {
    let path = paths::confined_join(dir, "file", file)?;
    match uploads::kind_of(file) {
        Some(FileKind::Video | FileKind::Image | FileKind::Caption) => {}
        _ => {
            return Err(PathError::BadName {
                what: "file",
                name: file.to_string(),
                why: "only videos, images and captions of a dataset are served",
            })
        }
    }
    paths::ensure_inside(dir, &path)?;
    Ok(path)
}

/// Writes (replaces) the caption of media file `file`; an empty caption removes the caption file.
pub fn set_caption(dir: &Path, file: &str, caption: &str) -> Result<(), PathError> {
    media_path(dir, file)?;
    let caption_file = caption_name(file);
    let target = match paths::confined_join(dir, "caption", &caption_file) {
        Ok(p) => p,
        // A symlink at the caption's name is replaced below, never written through.
        Err(PathError::Symlink(p)) => p,
        Err(e) => return Err(e),
    };
    let io = |source| PathError::Io {
        path: target.clone(),
        source,
    };
    if caption.trim().is_empty() {
        return match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    let temp = dir.join(format!(".caption-{}.part", std::process::id()));
    let mut f = std::fs::File::create(&temp).map_err(io)?;
    f.write_all(caption.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&temp, &target).map_err(io)
}

/// Deletes a media file and its caption.
pub fn delete_file(dir: &Path, file: &str) -> Result<(), PathError> {
    let path = media_path(dir, file)?;
    std::fs::remove_file(&path).map_err(|source| PathError::Io {
        path: path.clone(),
        source,
    })?;
    if uploads::kind_of(file) != Some(FileKind::Caption) {
        let caption = dir.join(caption_name(file));
        if std::fs::symlink_metadata(&caption).is_ok() {
            std::fs::remove_file(&caption).map_err(|source| PathError::Io {
                path: caption,
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pair_media_with_captions_and_skip_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.mp4"), b"v").unwrap();
        std::fs::write(d.join("a.txt"), "a cat").unwrap();
        std::fs::write(d.join("b.png"), b"i").unwrap();
        std::fs::write(d.join("notes.md"), b"x").unwrap();
        std::fs::write(d.join(".upload-1-0.part"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.join("c.png")).unwrap();
        let list = items(d).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].caption.as_deref(), Some("a cat"));
        assert_eq!(list[1].caption, None);
        assert_eq!(list[1].kind, FileKind::Image);
    }

    #[test]
    fn captions_are_written_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("clip.v1.mp4"), b"v").unwrap();
        set_caption(d, "clip.v1.mp4", "first").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("clip.v1.txt")).unwrap(),
            "first"
        );
        set_caption(d, "clip.v1.mp4", "second").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("clip.v1.txt")).unwrap(),
            "second"
        );
        set_caption(d, "clip.v1.mp4", "  ").unwrap();
        assert!(!d.join("clip.v1.txt").exists());
        assert!(set_caption(d, "missing.mp4", "x").is_err());
        assert!(set_caption(d, "../clip.v1.mp4", "x").is_err());
    }

    #[test]
    fn delete_file_takes_the_caption_along() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.mp4"), b"v").unwrap();
        std::fs::write(d.join("a.txt"), b"c").unwrap();
        delete_file(d, "a.mp4").unwrap();
        assert!(!d.join("a.txt").exists());
        assert!(delete_file(d, "a.mp4").is_err());
    }
}
