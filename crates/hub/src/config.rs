//! How to reach the hub and where its cache lives, read from the same environment variables
//! Python's `huggingface_hub` reads, so both share one cache.

use std::path::{Path, PathBuf};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings for cache look-ups and downloads. Tests build it directly instead of setting
/// environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Base URL of the hub, without a trailing slash (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache folder holding `models--org--name/` (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Sent as `Authorization: Bearer …` to the endpoint (`HF_TOKEN`, else the token file).
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw progress bars on stderr (they stay hidden when stderr is not a terminal).
    pub show_progress: bool,
    /// Files downloaded at the same time.
    pub parallel_downloads: usize,
    /// User's home folder, for `~/` in paths.
    pub home: Option<PathBuf>,
}

/// `huggingface_hub`'s reading of a boolean environment variable.
fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}

impl HubConfig {
    /// Settings from the process environment.
    pub fn from_env() -> HubConfig {
        HubConfig::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Settings from a variable lookup, following `huggingface_hub`'s rules, first match wins:
    /// * cache: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`,
    ///   `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`;
    /// * token: `HF_TOKEN`, then the file at `HF_TOKEN_PATH` or `$HF_HOME/token`;
    /// * offline: `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to 1/ON/YES/TRUE.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> HubConfig {
        let home = var("HOME").map(PathBuf::from);
        let expand = |p: String| -> PathBuf {
            match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => PathBuf::from(p),
            }
        };
        let hf_home = var("HF_HOME").map(&expand).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(&expand).unwrap_or_else(|| {
                home.clone()
                    .unwrap_or_else(|| PathBuf::from("/"))
                    .join(".cache")
            });
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(&expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_file = var("HF_TOKEN_PATH")
            .map(&expand)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| read_token_file(&token_file))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let endpoint = var("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let offline = is_true(var("HF_HUB_OFFLINE").or_else(|| var("TRANSFORMERS_OFFLINE")));
        HubConfig {
            endpoint,
            cache_dir,
            token,
            offline,
            show_progress: true,
            parallel_downloads: 4,
            home,
        }
    }

    /// A config for one cache folder and endpoint, with no token, online, without progress bars.
    pub fn new(endpoint: &str, cache_dir: &Path) -> HubConfig {
        HubConfig {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir: cache_dir.to_path_buf(),
            token: None,
            offline: false,
            show_progress: false,
            parallel_downloads: 4,
            home: None,
        }
    }
}

fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> HubConfig {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let c = from(&[("HOME", "/home/u")]);
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, "https://huggingface.co");
        assert_eq!(c.token, None);
        assert!(!c.offline);
        let c = from(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/x")]);
        assert_eq!(c.cache_dir, PathBuf::from("/x/huggingface/hub"));
    }

    #[test]
    fn explicit_variables_win_in_order() {
        let c = from(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "~/hf"),
            ("HF_ENDPOINT", "http://mirror.local:8080/"),
            ("HF_HUB_OFFLINE", "yes"),
            ("HF_TOKEN", " hf_abc \n"),
        ]);
        assert_eq!(c.cache_dir, PathBuf::from("/home/u/hf/hub"));
        assert_eq!(c.endpoint, "http://mirror.local:8080");
        assert!(c.offline);
        assert_eq!(c.token.as_deref(), Some("hf_abc"));
        let c = from(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/cache")]);
        assert_eq!(c.cache_dir, PathBuf::from("/cache"));
        let c = from(&[("HF_HUB_OFFLINE", "0")]);
        assert!(!c.offline);
    }

    #[test]
    fn token_file_under_hf_home_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_from_file\n").unwrap();
        let home = dir.path().to_str().unwrap();
        let c = from(&[("HF_HOME", home)]);
        assert_eq!(c.token.as_deref(), Some("hf_from_file"));
        let c = from(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]);
        assert_eq!(c.token.as_deref(), Some("hf_env"));
    }
}
