//! One file named by itself rather than as a model component: a local path, or AI Toolkit's
//! `owner/repo/file.safetensors` on the Hugging Face hub (e.g. the accuracy recovery adapter
//! `ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors`). Found in the
//! shared cache, else downloaded into it with progress (HF_TOKEN sent as for models); offline, a
//! file not in the cache is an error that names it.

use std::path::{Path, PathBuf};

use crate::cache::RepoCache;
use crate::client::HubClient;
use crate::config::HubConfig;
use crate::download::{download_all, DownloadRequest};
use crate::error::Error;

/// The revision AI Toolkit's `hf_hub_download` takes when none is given.
const REVISION: &str = "main";

/// Where `reference` is on disk, downloading it first when it is a hub file not yet cached.
pub fn fetch_file(reference: &str, hub: &HubConfig) -> Result<PathBuf, Error> {
    let local = match (reference.strip_prefix("~/"), &hub.home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(reference),
    };
    if local.is_file() {
        return Ok(local);
    }
    let (repo_id, path_in_repo) = split_hub_file(reference).ok_or_else(|| {
        Error::Spec(format!(
            "`{reference}` is neither a local file nor a Hugging Face file \
             `owner/repo/file.safetensors`"
        ))
    })?;
    if let Some(cached) = cached_file(&hub.cache_dir, repo_id, path_in_repo)? {
        return Ok(cached);
    }
    if hub.offline {
        return Err(Error::Offline {
            cache_dir: hub.cache_dir.clone(),
            missing: vec![format!("{repo_id}/{path_in_repo}")],
        });
    }
    let client = HubClient::new(hub);
    let info = client.repo_info(repo_id, REVISION)?;
    let file = info
        .files
        .iter()
        .find(|f| f.path == path_in_repo)
        .cloned()
        .ok_or_else(|| Error::NotFound {
            what: format!("{path_in_repo} in {repo_id}"),
            endpoint: hub.endpoint.clone(),
            server_message: None,
        })?;
    let request = DownloadRequest {
        repo_id: repo_id.to_string(),
        revision: REVISION.to_string(),
        commit: info.commit,
        file,
    };
    let mut paths = download_all(&client, hub, &[request])?;
    paths.pop().ok_or_else(|| Error::NotFound {
        what: format!("{path_in_repo} in {repo_id}"),
        endpoint: hub.endpoint.clone(),
        server_message: None,
    })
}

/// `owner/repo/path/in/repo` → (`owner/repo`, `path/in/repo`).
pub fn split_hub_file(reference: &str) -> Option<(&str, &str)> {
    let mut slashes = reference.match_indices('/').map(|(i, _)| i);
    let (_, second) = (slashes.next()?, slashes.next()?);
    let (repo, path) = (&reference[..second], &reference[second + 1..]);
    let valid = |s: &str| !s.is_empty() && !s.starts_with('/') && !s.contains("..");
    (valid(repo) && valid(path) && !reference.starts_with('/')).then_some((repo, path))
}

/// The file in the cache's snapshot of `main`, if it is there.
fn cached_file(
    cache_dir: &Path,
    repo_id: &str,
    path_in_repo: &str,
) -> Result<Option<PathBuf>, Error> {
    let cache = RepoCache::new(cache_dir, repo_id);
    Ok(cache
        .commit_for(REVISION)?
        .map(|commit| cache.snapshot_file(&commit, path_in_repo))
        .filter(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_references_split_into_repo_and_file() {
        assert_eq!(
            split_hub_file(
                "ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors"
            ),
            Some((
                "ostris/accuracy_recovery_adapters",
                "wan22_14b_i2v_torchao_uint4.safetensors"
            ))
        );
        assert_eq!(
            split_hub_file("a/b/sub/c.safetensors"),
            Some(("a/b", "sub/c.safetensors"))
        );
        assert_eq!(split_hub_file("just_a_file.safetensors"), None);
        assert_eq!(split_hub_file("owner/repo"), None);
        assert_eq!(split_hub_file("/abs/path/x.safetensors"), None);
    }

    #[test]
    fn offline_names_the_missing_file_and_a_cached_one_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut hub = HubConfig::new("http://127.0.0.1:9", dir.path());
        hub.offline = true;
        let reference = "ostris/accuracy_recovery_adapters/wan22_14b_i2v_torchao_uint4.safetensors";
        let err = fetch_file(reference, &hub).unwrap_err().to_string();
        assert!(
            err.contains(reference) && err.contains("HF_HUB_OFFLINE"),
            "{err}"
        );

        let cache = RepoCache::new(dir.path(), "ostris/accuracy_recovery_adapters");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        cache.write_ref("main", commit).unwrap();
        let file = cache.snapshot_file(commit, "wan22_14b_i2v_torchao_uint4.safetensors");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(fetch_file(reference, &hub).unwrap(), file);

        let local = dir.path().join("local.safetensors");
        std::fs::write(&local, b"x").unwrap();
        assert_eq!(fetch_file(local.to_str().unwrap(), &hub).unwrap(), local);
    }
}
