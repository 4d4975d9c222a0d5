//! One trainer per job folder: an exclusive `flock` on `<job folder>/lock`, held for the trainer's
//! whole life (the kernel drops it when the process ends, SIGKILL included, so a crash never leaves
//! a stale lock). A second `wanlora train` of the same job stops before it touches anything and
//! names the process that holds the folder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// The lock file's name inside the job folder.
pub const LOCK_FILE: &str = "lock";

/// The held lock; dropping it (or the process ending) releases the folder.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
    pub path: PathBuf,
}

impl JobLock {
    /// Creates the job folder if needed and takes its lock, writing this process's id into the lock
    /// file; fails with [`TrainError::JobInUse`] when another trainer holds it.
    pub fn acquire(root: &Path) -> Result<JobLock, TrainError> {
        std::fs::create_dir_all(root).map_err(|e| TrainError::io(root, e))?;
        let path = root.join(LOCK_FILE);
        let io = |e| TrainError::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(TrainError::JobInUse {
                folder: root.to_path_buf(),
                pid: holder.trim().parse().ok(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(io)?;
        Ok(JobLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobLock::acquire(dir.path()).unwrap();
        let err = JobLock::acquire(dir.path()).unwrap_err();
        match &err {
            TrainError::JobInUse { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("expected JobInUse, got {other}"),
        }
        assert!(
            err.to_string()
                .contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        JobLock::acquire(dir.path()).unwrap();
    }
}
