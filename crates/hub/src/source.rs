//! Reading a `*_name_or_path` value: a local path, or a Hugging Face repository reference
//! `org/name[@revision][/path/in/repo]`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a value points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    Repo(RepoRef),
}

/// A model repository on the hub, at a revision, optionally narrowed to a file or folder inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// `org/name`.
    pub repo_id: String,
    /// Branch, tag or full commit hash; `main` when not given.
    pub revision: String,
    /// A file or folder inside the repository, `/`-separated; empty for the whole repository.
    pub path_in_repo: String,
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repo_id, self.revision)?;
        if !self.path_in_repo.is_empty() {
            write!(f, "/{}", self.path_in_repo)?;
        }
        Ok(())
    }
}

/// A full 40-character git commit hash, as the hub reports it.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One `org` or `name` part of a repo id, by the hub's naming rules.
fn is_repo_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("--")
        && !s.contains("..")
}

fn is_revision(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !s.contains("..")
}

/// File name endings that make a two-part value a relative path rather than a repo id.
const FILE_ENDINGS: [&str; 7] = [
    ".safetensors",
    ".json",
    ".pth",
    ".pt",
    ".bin",
    ".ckpt",
    ".gguf",
];

impl RepoRef {
    /// Parses `org/name[@revision][/path/in/repo]`; `None` when the value is not of that form.
    pub fn parse(value: &str) -> Option<RepoRef> {
        let mut parts = value.split('/');
        let org = parts.next()?;
        let name_rev = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        if rest.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
            return None;
        }
        let (name, revision) = match name_rev.split_once('@') {
            Some((name, rev)) => (name, rev),
            None => (name_rev, "main"),
        };
        if !is_repo_name_part(org) || !is_repo_name_part(name) || !is_revision(revision) {
            return None;
        }
        if rest.is_empty() && FILE_ENDINGS.iter().any(|e| name.ends_with(e)) {
            return None;
        }
        Some(RepoRef {
            repo_id: format!("{org}/{name}"),
            revision: revision.to_string(),
            path_in_repo: rest.join("/"),
        })
    }

    /// The same repository and revision with a narrower path inside it.
    pub fn join(&self, sub: &str) -> RepoRef {
        let path_in_repo = match (self.path_in_repo.is_empty(), sub.is_empty()) {
            (true, _) => sub.to_string(),
            (false, true) => self.path_in_repo.clone(),
            (false, false) => format!("{}/{sub}", self.path_in_repo),
        };
        RepoRef {
            path_in_repo,
            ..self.clone()
        }
    }
}

impl Source {
    /// Reads a value the way users expect: anything that exists on disk, or is written as a path
    /// (`/…`, `./…`, `~/…`, a bare file name), is local; `org/name[@rev][/path]` is a repo.
    pub fn parse(value: &str, home: Option<&Path>) -> Source {
        let value = value.trim();
        let expanded = match (value.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(value),
        };
        let written_as_path = value.starts_with(['/', '.', '~', '\\']) || !value.contains('/');
        if written_as_path || expanded.exists() {
            return Source::Local(expanded);
        }
        match RepoRef::parse(value) {
            Some(r) => Source::Repo(r),
            None => Source::Local(expanded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_with_revision_and_path_in_repo() {
        let r = RepoRef::parse("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16").unwrap();
        assert_eq!(r.repo_id, "ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16");
        assert_eq!(r.revision, "main");
        assert_eq!(r.path_in_repo, "");
        let r = RepoRef::parse(
            "Comfy-Org/Wan_2.2_ComfyUI_Repackaged@v1.0/split_files/vae/wan_2.1_vae.safetensors",
        )
        .unwrap();
        assert_eq!(r.repo_id, "Comfy-Org/Wan_2.2_ComfyUI_Repackaged");
        assert_eq!(r.revision, "v1.0");
        assert_eq!(r.path_in_repo, "split_files/vae/wan_2.1_vae.safetensors");
        assert_eq!(
            r.to_string(),
            "Comfy-Org/Wan_2.2_ComfyUI_Repackaged@v1.0/split_files/vae/wan_2.1_vae.safetensors"
        );
        assert_eq!(r.join("x").path_in_repo, format!("{}/x", r.path_in_repo));
    }

    #[test]
    fn malformed_repo_ids_are_rejected() {
        for bad in [
            "org",
            "org/",
            "/abs/path",
            "org/na--me",
            "org/name@",
            "org/name@a b",
            "org/name//x",
            "org/name/../x",
            "models/wan.safetensors",
            "-org/name",
        ] {
            assert_eq!(RepoRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths_and_repo_ids_are_told_apart() {
        let home = Path::new("/home/u");
        assert_eq!(
            Source::parse("~/models/vae.safetensors", Some(home)),
            Source::Local(PathBuf::from("/home/u/models/vae.safetensors"))
        );
        assert_eq!(
            Source::parse("./org/name", Some(home)),
            Source::Local(PathBuf::from("./org/name"))
        );
        assert_eq!(
            Source::parse("wan_2.1_vae.safetensors", None),
            Source::Local(PathBuf::from("wan_2.1_vae.safetensors"))
        );
        assert!(matches!(
            Source::parse("Wan-AI/Wan2.2-I2V-A14B-Diffusers", None),
            Source::Repo(_)
        ));
    }

    #[test]
    fn commit_hashes() {
        assert!(is_commit_hash("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_hash("main"));
        assert!(!is_commit_hash("0123456789ABCDEF0123456789abcdef01234567"));
    }
}
