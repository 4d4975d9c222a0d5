//! Files that are either complete or absent: written under a temporary name in the target's own
//! folder, flushed to disk, then renamed over the target (a rename within one file system is
//! atomic), and the folder flushed so the rename itself survives a crash. The one atomic writer of
//! every crate (the torch crate wraps it for its error type).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Marks temporary files so that a later pass can recognise and delete leftovers of a crash.
pub const TEMP_MARKER: &str = ".tmp-";

/// A fresh temporary name beside `path`: `.<name>.tmp-<pid>-<n>`. Hidden, so a dataset scan of
/// the same folder never picks it up.
pub fn temp_path_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}{TEMP_MARKER}{}-{n}", std::process::id()))
}

/// Flushes `temp` to disk and renames it to `path`; on failure the temporary file is removed.
pub fn commit(temp: &Path, path: &Path) -> std::io::Result<()> {
    let result = File::open(temp)
        .and_then(|f| f.sync_all())
        .and_then(|_| std::fs::rename(temp, path))
        .and_then(|_| sync_parent(path));
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` atomically, creating its folder if needed. On any failure the
/// temporary file is removed: a full disk must not stay full because of our half-written file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let temp = temp_path_beside(path);
    let written = File::create(&temp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.flush()
    });
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    commit(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty folder under the system's temporary folder (this crate has no dependencies
    /// for tests either).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wanlora-spec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("a.bin");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(names.len(), 1);
        // The folder is made when missing.
        write_atomically(&dir.join("sub/b.bin"), b"three").unwrap();
        assert_eq!(std::fs::read(dir.join("sub/b.bin")).unwrap(), b"three");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_names_are_hidden_and_unique() {
        let a = temp_path_beside(Path::new("/x/out.mp4"));
        let b = temp_path_beside(Path::new("/x/out.mp4"));
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/x")));
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".out.mp4") && name.contains(TEMP_MARKER));
    }
}
