//! Content hashes of source files (SHA-256 of the bytes), memoised by (path, size, mtime) in a
//! small JSON index so that unchanged files are not read again on every start.
//!
//! A file whose size and modification time both stay the same while its bytes change would keep
//! its old hash; editors, encoders and copies all update the modification time (nanoseconds on
//! Linux file systems), so this is the usual trade made by build tools.

use super::CacheError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HashEntry {
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// The memo of file hashes.
#[derive(Debug)]
pub struct ContentHashes {
    index_path: PathBuf,
    entries: BTreeMap<String, HashEntry>,
    dirty: bool,
    /// Files actually read and hashed since opening (not answered from the memo).
    pub files_hashed: usize,
}

impl ContentHashes {
    /// Opens the memo at `index_path`. A missing or unreadable index starts empty: it only saves
    /// work, it never decides what is valid.
    pub fn open(index_path: &Path) -> Self {
        let entries = std::fs::read(index_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            index_path: index_path.to_path_buf(),
            entries,
            dirty: false,
            files_hashed: 0,
        }
    }

    /// The SHA-256 of the file's bytes, hex.
    pub fn hash_file(&mut self, path: &Path) -> Result<String, CacheError> {
        let absolute = std::fs::canonicalize(path).map_err(|e| CacheError::io(path, e))?;
        let meta = std::fs::metadata(&absolute).map_err(|e| CacheError::io(path, e))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let key = absolute.to_string_lossy().into_owned();
        if let Some(entry) = self.entries.get(&key) {
            if entry.size == meta.len() && entry.mtime_ns == mtime_ns {
                return Ok(entry.sha256.clone());
            }
        }
        let sha256 = sha256_of_file(&absolute).map_err(|e| CacheError::io(path, e))?;
        self.files_hashed += 1;
        self.entries.insert(
            key,
            HashEntry {
                size: meta.len(),
                mtime_ns,
                sha256: sha256.clone(),
            },
        );
        self.dirty = true;
        Ok(sha256)
    }

    /// Writes the memo (atomically) if anything changed.
    pub fn save(&mut self) -> Result<(), CacheError> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.entries).map_err(|e| CacheError::Io {
            path: self.index_path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::atomic::write_atomically(&self.index_path, &bytes)
            .map_err(|e| CacheError::io(&self.index_path, e))?;
        self.dirty = false;
        Ok(())
    }
}

fn sha256_of_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_memoised_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clip.mp4");
        std::fs::write(&file, b"abc").unwrap();
        let index = dir.path().join("hashes.json");
        let mut hashes = ContentHashes::open(&index);
        let h = hashes.hash_file(&file).unwrap();
        // SHA-256("abc")
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hashes.hash_file(&file).unwrap(), h);
        assert_eq!(hashes.files_hashed, 1);
        hashes.save().unwrap();

        let mut reopened = ContentHashes::open(&index);
        assert_eq!(reopened.hash_file(&file).unwrap(), h);
        assert_eq!(reopened.files_hashed, 0, "answered from the saved memo");

        std::fs::write(&file, b"abcd").unwrap();
        assert_ne!(reopened.hash_file(&file).unwrap(), h);
        assert_eq!(reopened.files_hashed, 1);
    }

    #[test]
    fn a_damaged_index_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("hashes.json");
        std::fs::write(&index, b"{not json").unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, b"x").unwrap();
        let mut hashes = ContentHashes::open(&index);
        hashes.hash_file(&file).unwrap();
        assert_eq!(hashes.files_hashed, 1);
    }
}
