//! The Hugging Face hub cache on disk, laid out exactly as Python's `huggingface_hub` lays it out so
//! either side reuses the other's downloads:
//!
//! ```text
//! <cache>/models--<org>--<name>/blobs/<etag>                  file contents, named by ETag
//!                               blobs/<etag>.incomplete       a download in progress (resumable)
//!                               refs/<revision>               commit hash a branch/tag pointed to
//!                               snapshots/<commit>/<path>     relative symlink to ../../blobs/<etag>
//! <cache>/.locks/models--<org>--<name>/<etag>.lock            flock(2) guarding one blob
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Component as PathPart, Path, PathBuf};

use crate::error::Error;
use crate::source::is_commit_hash;

/// One model repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    cache_dir: PathBuf,
    repo_id: String,
}

/// `models--org--name`, the folder name `huggingface_hub` uses for a model repository.
pub fn repo_folder_name(repo_id: &str) -> String {
    format!("models--{}", repo_id.replace('/', "--"))
}

/// An exclusive `flock` on a blob's lock file, released when dropped. Python's `huggingface_hub`
/// takes the same lock (through `filelock`), so the two never write one blob at the same time.
pub struct BlobLock {
    _file: File,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo_id: &str) -> RepoCache {
        RepoCache {
            cache_dir: cache_dir.to_path_buf(),
            repo_id: repo_id.to_string(),
        }
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.cache_dir.join(repo_folder_name(&self.repo_id))
    }

    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.repo_dir().join("blobs").join(etag)
    }

    pub fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.repo_dir()
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.repo_dir().join("snapshots").join(commit)
    }

    pub fn snapshot_file(&self, commit: &str, path_in_repo: &str) -> PathBuf {
        let mut p = self.snapshot_dir(commit);
        p.extend(path_in_repo.split('/'));
        p
    }

    /// The commit a revision resolves to in this cache: a full hash is itself, a branch or tag is
    /// read from `refs/<revision>`. `None` when the cache has never seen it.
    pub fn commit_for(&self, revision: &str) -> Result<Option<String>, Error> {
        if is_commit_hash(revision) {
            return Ok(Some(revision.to_string()));
        }
        let ref_path = self.repo_dir().join("refs").join(revision);
        match fs::read_to_string(&ref_path) {
            Ok(text) => {
                let commit = text.trim();
                if is_commit_hash(commit) {
                    Ok(Some(commit.to_string()))
                } else {
                    Err(Error::BadResponse {
                        url: ref_path.display().to_string(),
                        reason: format!(
                            "holds {commit:?}, not a commit hash; delete this file and fetch again"
                        ),
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(ref_path, e)),
        }
    }

    /// Records that `revision` points at `commit` (nothing for a commit hash), written atomically
    /// and without a trailing newline, as `huggingface_hub` does.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), Error> {
        if revision == commit {
            return Ok(());
        }
        let ref_path = self.repo_dir().join("refs").join(revision);
        if fs::read_to_string(&ref_path).is_ok_and(|c| c == commit) {
            return Ok(());
        }
        let dir = ref_path.parent().unwrap_or(&self.cache_dir).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Unique per process and thread: concurrent writers must not share a temporary file.
        let tmp = dir.join(format!(
            ".{revision}.{}.{:?}.tmp",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::write(&tmp, commit).map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &ref_path).map_err(|e| Error::io(&ref_path, e))
    }

    /// Takes the lock for writing `blobs/<etag>`, waiting for another process that holds it.
    pub fn lock_blob(&self, etag: &str) -> Result<BlobLock, Error> {
        let dir = self
            .cache_dir
            .join(".locks")
            .join(repo_folder_name(&self.repo_id));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("{etag}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor we own for the lifetime of `file`.
        let try_now = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if try_now != 0 {
            tracing::info!(
                "waiting for another process that is downloading the same file ({})",
                path.display()
            );
            // SAFETY: as above; this call blocks until the other holder releases the lock.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc != 0 {
                return Err(Error::io(&path, std::io::Error::last_os_error()));
            }
        }
        Ok(BlobLock { _file: file })
    }

    /// Makes `snapshots/<commit>/<path_in_repo>` a relative symlink to `blobs/<etag>`.
    pub fn link_snapshot(
        &self,
        commit: &str,
        path_in_repo: &str,
        etag: &str,
    ) -> Result<PathBuf, Error> {
        let pointer = self.snapshot_file(commit, path_in_repo);
        let parent = pointer.parent().unwrap_or(&self.cache_dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let target = relative_path(&parent, &self.blob_path(etag));
        match fs::remove_file(&pointer) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&pointer, e)),
        }
        std::os::unix::fs::symlink(&target, &pointer).map_err(|e| Error::io(&pointer, e))?;
        Ok(pointer)
    }

    /// Tags the cache folder for backup tools, as `huggingface_hub` does (best effort).
    pub fn tag_cache_dir(&self) {
        let tag = self.cache_dir.join("CACHEDIR.TAG");
        if tag.exists() {
            return;
        }
        if let Ok(mut f) = File::create(&tag) {
            let _ = f.write_all(
                b"Signature: 8a477f597d28d172789f06886806bc55\n\
                  # This file is a cache directory tag created by wanlora (Hugging Face hub cache).\n",
            );
        }
    }
}

/// `to` expressed relative to the folder `from` (both absolute or both relative to one base).
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<PathPart> = from.components().collect();
    let to_parts: Vec<PathPart> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for part in &to_parts[common..] {
        out.push(part.as_os_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_and_relative_links() {
        assert_eq!(
            repo_folder_name("Wan-AI/Wan2.2-I2V-A14B-Diffusers"),
            "models--Wan-AI--Wan2.2-I2V-A14B-Diffusers"
        );
        assert_eq!(
            relative_path(
                Path::new("/c/m/snapshots/abc/transformer"),
                Path::new("/c/m/blobs/e")
            ),
            PathBuf::from("../../../blobs/e")
        );
    }

    #[test]
    fn refs_snapshots_and_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(dir.path(), "org/name");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(cache.commit_for("main").unwrap(), None);
        assert_eq!(cache.commit_for(commit).unwrap().as_deref(), Some(commit));
        cache.write_ref("main", commit).unwrap();
        let raw = fs::read_to_string(cache.repo_dir().join("refs/main")).unwrap();
        assert_eq!(
            raw, commit,
            "no trailing newline, as huggingface_hub writes it"
        );
        assert_eq!(cache.commit_for("main").unwrap().as_deref(), Some(commit));

        let blob = cache.blob_path("etag1");
        fs::create_dir_all(blob.parent().unwrap()).unwrap();
        fs::write(&blob, b"hello").unwrap();
        let pointer = cache
            .link_snapshot(commit, "vae/config.json", "etag1")
            .unwrap();
        assert_eq!(fs::read(&pointer).unwrap(), b"hello");
        assert_eq!(
            fs::read_link(&pointer).unwrap(),
            PathBuf::from("../../../blobs/etag1")
        );
        let _lock = cache.lock_blob("etag1").unwrap();
        assert!(dir
            .path()
            .join(".locks/models--org--name/etag1.lock")
            .exists());
    }

    #[test]
    fn a_garbled_ref_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RepoCache::new(dir.path(), "org/name");
        fs::create_dir_all(cache.repo_dir().join("refs")).unwrap();
        fs::write(cache.repo_dir().join("refs/main"), "not-a-hash").unwrap();
        let err = cache.commit_for("main").unwrap_err().to_string();
        assert!(err.contains("refs/main") && err.contains("delete"), "{err}");
    }
}
