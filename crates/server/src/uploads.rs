//! What may be uploaded, and how it is written: a file is accepted only when its extension names
//! a known type AND its first bytes match that type; it is streamed to a hidden temporary file
//! in the target folder with a byte limit, checked, then renamed into place (a rename replaces a
//! symlink planted under the final name instead of writing through it). Zip archives are unpacked
//! flat under the same rules, with symlink entries and escaping names refused.

use crate::paths::{self, PathError};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What an uploaded file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Video,
    Image,
    Caption,
    Archive,
}

/// Captions larger than this are surely not captions.
pub const MAX_CAPTION_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{name}: .{ext} files are not accepted here; allowed: {allowed}")]
    Type {
        name: String,
        ext: String,
        allowed: &'static str,
    },
    #[error("{name}: its content is not a {kind:?} file (the first bytes do not match .{ext})")]
    Content {
        name: String,
        kind: FileKind,
        ext: String,
    },
    #[error("{name}: larger than the upload limit of {limit} bytes (see --max-upload-mb)")]
    TooLarge { name: String, limit: u64 },
    #[error("{archive}: entry {entry:?} {why}")]
    Archive {
        archive: String,
        entry: String,
        why: String,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UploadError + '_ {
    move |source| UploadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The kind a file name claims by its extension.
pub fn kind_of(name: &str) -> Option<FileKind> {
    Some(match extension(name).as_str() {
        "mp4" | "mov" | "m4v" | "webm" | "mkv" | "avi" => FileKind::Video,
        "jpg" | "jpeg" | "png" | "webp" => FileKind::Image,
        "txt" => FileKind::Caption,
        "zip" => FileKind::Archive,
        _ => return None,
    })
}

/// Whether `head` (the file's first bytes) is what extension `ext` promises.
pub fn magic_matches(ext: &str, head: &[u8]) -> bool {
    let at = |offset: usize, bytes: &[u8]| head.get(offset..offset + bytes.len()) == Some(bytes);
    match ext {
        "jpg" | "jpeg" => at(0, &[0xFF, 0xD8, 0xFF]),
        "png" => at(0, b"\x89PNG\r\n\x1a\n"),
        "webp" => at(0, b"RIFF") && at(8, b"WEBP"),
        "avi" => at(0, b"RIFF") && at(8, b"AVI "),
        "webm" | "mkv" => at(0, &[0x1A, 0x45, 0xDF, 0xA3]),
        // ISO base media (mp4/mov): the first box is ftyp, or an old QuickTime top-level atom.
        "mp4" | "mov" | "m4v" => ["ftyp", "moov", "mdat", "wide", "free", "skip"]
            .iter()
            .any(|b| at(4, b.as_bytes())),
        "zip" => at(0, b"PK\x03\x04"),
        // Captions are checked whole (UTF-8 without NUL) by `check_caption`.
        "txt" => !head.contains(&0),
        _ => false,
    }
}

fn check_caption(path: &Path, name: &str) -> Result<(), UploadError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.contains(&0) || std::str::from_utf8(&bytes).is_err() {
        return Err(UploadError::Content {
            name: name.to_string(),
            kind: FileKind::Caption,
            ext: "txt".into(),
        });
    }
    Ok(())
}

/// Hidden temporary names never collide and are never listed (names starting with a dot are
/// refused everywhere else).
fn temp_path(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".upload-{}-{n}.part", std::process::id()))
}

/// A file being received: bytes go to a hidden temporary file until [`Incoming::finish`].
pub struct Incoming {
    dir: PathBuf,
    name: String,
    kind: FileKind,
    temp: PathBuf,
    file: Option<File>,
    written: u64,
    limit: u64,
}

impl Incoming {
    /// Starts receiving `name` into `dir`, after checking the name and its type against `allowed`.
    pub fn begin(
        dir: &Path,
        name: &str,
        allowed: &[FileKind],
        allowed_text: &'static str,
        limit: u64,
    ) -> Result<Self, UploadError> {
        let name = paths::checked_name("file name", name)?;
        let kind = kind_of(name)
            .filter(|k| allowed.contains(k))
            .ok_or_else(|| UploadError::Type {
                name: name.to_string(),
                ext: extension(name),
                allowed: allowed_text,
            })?;
        let limit = if kind == FileKind::Caption {
            limit.min(MAX_CAPTION_BYTES)
        } else {
            limit
        };
        let temp = temp_path(dir);
        let file = File::create_new(&temp).map_err(io_err(&temp))?;
        Ok(Incoming {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            kind,
            temp,
            file: Some(file),
            written: 0,
            limit,
        })
    }

    pub fn kind(&self) -> FileKind {
        self.kind
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        self.written += chunk.len() as u64;
        if self.written > self.limit {
            return Err(UploadError::TooLarge {
                name: self.name.clone(),
                limit: self.limit,
            });
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(chunk).map_err(io_err(&self.temp))?;
        }
        Ok(())
    }

    /// Checks the content and moves the file to `dir/name`, or to `dir/final_name` when given.
    pub fn finish(mut self, final_name: Option<&str>) -> Result<PathBuf, UploadError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(io_err(&self.temp))?;
        }
        let mut head = Vec::with_capacity(16);
        File::open(&self.temp)
            .and_then(|f| f.take(16).read_to_end(&mut head))
            .map_err(io_err(&self.temp))?;
        let ext = extension(&self.name);
        if !magic_matches(&ext, &head) {
            return Err(UploadError::Content {
                name: self.name.clone(),
                kind: self.kind,
                ext,
            });
        }
        if self.kind == FileKind::Caption {
            check_caption(&self.temp, &self.name)?;
        }
        let target = paths::confined_join(&self.dir, "file name", final_name.unwrap_or(&self.name))
            .or_else(|e| match e {
                // A symlink already at the final name is replaced by the rename, not followed.
                PathError::Symlink(p) => Ok(p),
                other => Err(other),
            })?;
        std::fs::rename(&self.temp, &target).map_err(io_err(&target))?;
        Ok(target)
    }

    /// The temporary file, for callers that read it before deciding (archives).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // After a successful `finish` the temporary file no longer exists.
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Unpacks a zip archive flat into `dir`: every file entry must be a video, image or caption
/// whose plain name passes the name rules and whose content matches its extension; entries in
/// sub-folders land by their file name. Symlinks, absolute or `..` paths, and a total size above
/// `limit` refuse the whole archive before anything is written. Returns the names written.
pub fn unpack_zip(
    archive: &Path,
    archive_name: &str,
    dir: &Path,
    limit: u64,
) -> Result<Vec<String>, UploadError> {
    let bad = |entry: &str, why: &str| UploadError::Archive {
        archive: archive_name.to_string(),
        entry: entry.to_string(),
        why: why.to_string(),
    };
    let file = File::open(archive).map_err(io_err(archive))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| bad("", &format!("is not a readable zip: {e}")))?;
    // First pass: decide on every entry without writing anything.
    let mut plan: Vec<(usize, String)> = Vec::new();
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| bad(&format!("#{i}"), &format!("cannot be read: {e}")))?;
        let raw_name = entry.name().to_string();
        if entry.is_symlink() {
            return Err(bad(
                &raw_name,
                "is a symbolic link; archives may hold plain files only",
            ));
        }
        let Some(enclosed) = entry.enclosed_name() else {
            return Err(bad(
                &raw_name,
                "points outside the archive (absolute or `..` path)",
            ));
        };
        if entry.is_dir() {
            continue;
        }
        let Some(base) = enclosed.file_name().and_then(|n| n.to_str()) else {
            return Err(bad(&raw_name, "has no usable file name"));
        };
        // Finder and Explorer leave metadata files; they are not dataset content.
        if base.starts_with('.') || enclosed.starts_with("__MACOSX") {
            continue;
        }
        paths::checked_name("archive entry", base)?;
        match kind_of(base) {
            Some(FileKind::Video | FileKind::Image | FileKind::Caption) => {}
            _ => {
                return Err(bad(
                    &raw_name,
                    "is not a video (mp4, mov, webm, mkv, avi), image (jpg, png, webp) or caption (txt)",
                ))
            }
        }
        if plan.iter().any(|(_, n)| n == base) {
            return Err(bad(&raw_name, "has the same file name as another entry"));
        }
        declared = declared.saturating_add(entry.size());
        if declared > limit {
            return Err(UploadError::TooLarge {
                name: archive_name.to_string(),
                limit,
            });
        }
        plan.push((i, base.to_string()));
    }
    // Second pass: stream each entry through the same checks as a direct upload; the sizes
    // counted here are the real ones, whatever the archive's headers claimed.
    let mut written = Vec::new();
    let mut budget = limit;
    for (i, name) in plan {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| bad(&name, &format!("cannot be read: {e}")))?;
        let mut incoming = Incoming::begin(
            dir,
            &name,
            &[FileKind::Video, FileKind::Image, FileKind::Caption],
            "videos, images and .txt captions",
            budget,
        )?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = entry
                .read(&mut buf)
                .map_err(|e| bad(&name, &format!("does not decompress: {e}")))?;
            if n == 0 {
                break;
            }
            incoming.write(&buf[..n]).map_err(|e| match e {
                UploadError::TooLarge { limit, .. } => UploadError::TooLarge {
                    name: archive_name.to_string(),
                    limit,
                },
                other => other,
            })?;
        }
        budget -= incoming.written;
        incoming.finish(None)?;
        written.push(name);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_and_magic_must_agree() {
        assert!(magic_matches("png", b"\x89PNG\r\n\x1a\n...."));
        assert!(magic_matches("mp4", b"\0\0\0\x20ftypisom"));
        assert!(magic_matches("webp", b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!magic_matches("webp", b"RIFF\0\0\0\0AVI LIST"));
        assert!(!magic_matches("mp4", b"#!/bin/sh\necho hi"));
        assert!(!magic_matches("jpg", b"\x89PNG\r\n\x1a\n"));
        assert!(!magic_matches("exe", b"MZ"));
        assert_eq!(kind_of("CLIP.MP4"), Some(FileKind::Video));
        assert_eq!(kind_of("run.sh"), None);
    }

    #[test]
    fn incoming_file_lands_only_after_its_checks() {
        let dir = tempfile::tempdir().unwrap();
        let all = [FileKind::Image, FileKind::Caption];
        let mut ok = Incoming::begin(dir.path(), "a.png", &all, "", 100).unwrap();
        ok.write(b"\x89PNG\r\n\x1a\nrest").unwrap();
        let path = ok.finish(None).unwrap();
        assert_eq!(path, dir.path().join("a.png"));

        let mut fake = Incoming::begin(dir.path(), "b.png", &all, "", 100).unwrap();
        fake.write(b"<html>").unwrap();
        assert!(matches!(
            fake.finish(None),
            Err(UploadError::Content { .. })
        ));
        assert!(!dir.path().join("b.png").exists());

        let mut big = Incoming::begin(dir.path(), "c.png", &all, "", 4).unwrap();
        assert!(matches!(
            big.write(b"12345"),
            Err(UploadError::TooLarge { .. })
        ));
        drop(big);

        let mut bin = Incoming::begin(dir.path(), "d.txt", &all, "", 100).unwrap();
        bin.write(b"ok\xff\xfe").unwrap();
        assert!(bin.finish(None).is_err());

        assert!(Incoming::begin(dir.path(), "e.mp4", &all, "", 100).is_err());
        assert!(Incoming::begin(dir.path(), "../e.png", &all, "", 100).is_err());
        // Only a.png is left: no temporary files, nothing else.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.png")]);
    }

    #[test]
    fn upload_replaces_a_planted_symlink_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep").unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("a.txt")).unwrap();
        let mut inc = Incoming::begin(&data, "a.txt", &[FileKind::Caption], "", 100).unwrap();
        inc.write(b"new caption").unwrap();
        inc.finish(None).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(data.join("a.txt"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
