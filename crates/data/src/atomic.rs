//! Files that are either complete or absent: written under a temporary name in the target's own
//! folder, flushed to disk, then renamed over the target (a rename within one file system is
//! atomic), and the folder flushed so the rename itself survives a crash.

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

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
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
