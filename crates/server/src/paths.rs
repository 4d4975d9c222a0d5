//! The data folder and the rule that every path the UI touches stays inside it.
//!
//! Names that come from users (datasets, files, jobs) are single path components checked by
//! [`checked_name`]; a joined path is then checked again after the file system has resolved it, so
//! a symlink planted inside a data folder cannot lead outside it.

use std::io;
use std::path::{Path, PathBuf};

/// Why a name or path from a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{what} {name:?} is not allowed: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("{0} is outside the UI's data folder")]
    Outside(PathBuf),
    #[error("{0} is a symbolic link; the UI does not follow links inside its data folder")]
    Symlink(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The folders of one UI instance, all below `root`.
#[derive(Debug, Clone)]
pub struct DataDirs {
    /// The data folder itself (`--data`), canonical.
    pub root: PathBuf,
    /// One sub-folder per dataset.
    pub datasets: PathBuf,
    /// The jobs' `training_folder`: each job writes `<output>/<name>/`.
    pub output: PathBuf,
    /// Control images for sample prompts.
    pub uploads: PathBuf,
    /// Generated thumbnails of dataset videos.
    pub thumbnails: PathBuf,
    /// The SQLite database file.
    pub database: PathBuf,
}

impl DataDirs {
    /// Creates the folders under `root` (and `root` itself) when missing.
    pub fn create(root: &Path) -> Result<Self, PathError> {
        std::fs::create_dir_all(root).map_err(|source| PathError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let root = root.canonicalize().map_err(|source| PathError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let dirs = DataDirs {
            datasets: root.join("datasets"),
            output: root.join("output"),
            uploads: root.join("uploads"),
            thumbnails: root.join("thumbnails"),
            database: root.join("wanlora-ui.sqlite"),
            root,
        };
        for dir in [
            &dirs.datasets,
            &dirs.output,
            &dirs.uploads,
            &dirs.thumbnails,
        ] {
            std::fs::create_dir_all(dir).map_err(|source| PathError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(dirs)
    }
}

/// Longest name accepted for a dataset, job or file.
pub const MAX_NAME_LEN: usize = wanlora_config::names::MAX_NAME_LEN;

/// Checks that `name` is one plain path component, by the rule `wanlora validate` applies to
/// `config.name` too ([`wanlora_config::names::name_problem`]): no separators, no `..`, no leading
/// dot, no control characters, and only letters, digits and ` ._-()+,@`.
pub fn checked_name<'a>(what: &'static str, name: &'a str) -> Result<&'a str, PathError> {
    match wanlora_config::names::name_problem(name) {
        None => Ok(name),
        Some(why) => Err(PathError::BadName {
            what,
            name: name.to_string(),
            why,
        }),
    }
}

/// `base/name` for a name that passed [`checked_name`], refusing a symlink at that place and any
/// resolved location outside `base`. The target need not exist.
pub fn confined_join(base: &Path, what: &'static str, name: &str) -> Result<PathBuf, PathError> {
    let name = checked_name(what, name)?;
    let path = base.join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(PathError::Symlink(path)),
        Ok(_) => ensure_inside(base, &path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => ensure_inside(base, base)?,
        Err(source) => return Err(PathError::Io { path, source }),
    }
    Ok(path)
}

/// Fails unless `path` (which must exist) resolves to a place inside `base`.
pub fn ensure_inside(base: &Path, path: &Path) -> Result<(), PathError> {
    let io = |source, p: &Path| PathError::Io {
        path: p.to_path_buf(),
        source,
    };
    let base_real = base.canonicalize().map_err(|e| io(e, base))?;
    let real = path.canonicalize().map_err(|e| io(e, path))?;
    if real.starts_with(&base_real) {
        Ok(())
    } else {
        Err(PathError::Outside(path.to_path_buf()))
    }
}

/// True when `path` names a place inside `base` once resolved (for paths written in a job's YAML).
pub fn is_inside(base: &Path, path: &Path) -> bool {
    path.is_absolute() && ensure_inside(base, path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        for name in [
            "clips",
            "my dataset (v2)",
            "a-b_c.mp4",
            "Ünïcode",
            "x+y,z@1",
        ] {
            assert_eq!(checked_name("dataset", name).unwrap(), name);
        }
    }

    #[test]
    fn traversal_and_hidden_names_fail() {
        for name in [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            "a\\b",
            ".hidden",
            "/etc/passwd",
            "a\0b",
            "a\nb",
            " lead",
            "trail ",
            "%2e%2e",
        ] {
            assert!(checked_name("dataset", name).is_err(), "{name:?} passed");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(checked_name("dataset", &long).is_err());
    }

    #[test]
    fn confined_join_refuses_symlinks_leading_out() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("link")).unwrap();
        assert!(matches!(
            confined_join(&base, "file", "link"),
            Err(PathError::Symlink(_))
        ));
        assert_eq!(
            confined_join(&base, "file", "new.txt").unwrap(),
            base.join("new.txt")
        );
    }

    #[test]
    fn is_inside_resolves_dots_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        assert!(is_inside(&base, &base.join("sub")));
        assert!(!is_inside(&base, &base.join("sub/../..")));
        assert!(!is_inside(&base, Path::new("sub")));
        std::os::unix::fs::symlink(dir.path(), base.join("up")).unwrap();
        assert!(!is_inside(&base, &base.join("up")));
    }
}
