//! Job-folder housekeeping around the trainer's writes: temporary files a killed run left, and the
//! free-space check before a save.

use std::path::{Path, PathBuf};

use crate::TrainError;

/// Whether `name` is a temporary file of an atomic write (`.<name>.tmp-<pid>`, the cache's
/// `.<name>.tmp-<pid>-<n>`).
fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Removes the temporary files of atomic writes anywhere in the job folder: a run killed during a
/// write leaves them, and nothing ever renames them. Called only with the job lock held, so no
/// other writer of this folder is running. Returns the files removed.
pub fn remove_stale_temp_files(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && is_temp_file(&entry.file_name().to_string_lossy())
                && std::fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
    }
    removed.sort();
    removed
}

/// Fails with [`TrainError::DiskFull`] when the file system of `folder` has less than `needed`
/// bytes free, so a save is refused before it fills the disk half-way. When the free space
/// cannot be read the save goes ahead (a failed write still reports itself).
pub fn check_free_space(folder: &Path, step: u64, needed: u64) -> Result<(), TrainError> {
    let Ok((free, _)) = wanlora_sysinfo::disk_space(folder) else {
        return Ok(());
    };
    if free >= needed {
        return Ok(());
    }
    Err(TrainError::DiskFull {
        folder: folder.to_path_buf(),
        step,
        needed: wanlora_sysinfo::human_bytes(needed),
        free: wanlora_sysinfo::human_bytes(free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_are_removed_everywhere_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("state/step_000000004")).unwrap();
        std::fs::create_dir_all(root.join("cache")).unwrap();
        let temps = [
            ".status.json.tmp-4242",
            "state/step_000000004/.high_noise.safetensors.tmp-4242",
            "cache/.abc.tmp-4242-3",
        ];
        let kept = [
            "status.json",
            "demo_000000004_high_noise.safetensors",
            "state/step_000000004/high_noise.safetensors",
            "notes.tmp-1",
        ];
        for f in temps.iter().chain(&kept) {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let removed = remove_stale_temp_files(root);
        let mut want: Vec<PathBuf> = temps.iter().map(|f| root.join(f)).collect();
        want.sort();
        assert_eq!(removed, want);
        for f in kept {
            assert!(root.join(f).exists(), "{f} was removed");
        }
    }

    #[test]
    fn a_save_larger_than_the_free_space_is_refused_with_both_sizes() {
        let dir = tempfile::tempdir().unwrap();
        check_free_space(dir.path(), 7, 1).unwrap();
        let (free, _) = wanlora_sysinfo::disk_space(dir.path()).unwrap();
        let needed = free + (1 << 40);
        let err = check_free_space(dir.path(), 7, needed).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&wanlora_sysinfo::human_bytes(needed)) && text.contains("step 7"),
            "{text}"
        );
        assert!(text.contains("Free some space"), "{text}");
    }
}
