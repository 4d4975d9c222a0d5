//! Errors, each worded for the person running the job: what is wrong, which file or key, what to do.

use std::path::PathBuf;

use crate::checks::CheckFailure;
use crate::safetensors_header::HeaderProblem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "HF_HUB_OFFLINE is set and these files are not in the Hugging Face cache {}:\n{}\n\
         Unset HF_HUB_OFFLINE and run `wanlora models fetch JOB.yaml`, or point the job at local files.",
        cache_dir.display(),
        bullet_list(missing)
    )]
    Offline {
        cache_dir: PathBuf,
        missing: Vec<String>,
    },

    #[error("{}", unauthorized_message(repo_id, endpoint, *token_sent, server_message.as_deref()))]
    Unauthorized {
        repo_id: String,
        endpoint: String,
        token_sent: bool,
        server_message: Option<String>,
    },

    #[error(
        "access to {repo_id} was refused for the token in HF_TOKEN (403{}). Accept the model's terms at \
         {endpoint}/{repo_id} with the account that owns the token, or use a token with read access.",
        server_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Forbidden {
        repo_id: String,
        endpoint: String,
        server_message: Option<String>,
    },

    #[error("{what} not found on {endpoint} (404{}). Check the spelling in the job file.",
        server_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    NotFound {
        what: String,
        endpoint: String,
        server_message: Option<String>,
    },

    #[error("{url} answered HTTP {status}{}", server_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        url: String,
        status: u16,
        server_message: Option<String>,
    },

    #[error(
        "could not reach {url}: {message}. Check the network connection and HF_ENDPOINT, or set \
         HF_HUB_OFFLINE=1 to use only files already in the cache."
    )]
    Network { url: String, message: String },

    #[error("unexpected answer from {url}: {reason}")]
    BadResponse { url: String, reason: String },

    #[error(
        "{file} from {repo_id} does not match its checksum ({algorithm} expected {expected}, got \
         {actual}). The download was deleted; run again. If it happens again, the server at \
         HF_ENDPOINT serves a different file than the hub lists."
    )]
    Checksum {
        repo_id: String,
        file: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },

    #[error(
        "{file} from {repo_id} has {actual} bytes, the hub announced {expected}. The download was \
         deleted; run again."
    )]
    SizeMismatch {
        repo_id: String,
        file: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "not enough free disk space for the download in {}: {} needed, {} free. Free some space or \
         set HF_HUB_CACHE to a folder on a larger disk.",
        dir.display(), human_bytes(*needed), human_bytes(*free)
    )]
    DiskSpace {
        dir: PathBuf,
        needed: u64,
        free: u64,
    },

    #[error("{} of {total} downloads failed:\n{}", failures.len(), bullet_list(&failures.iter().map(|(f, e)| format!("{f}: {e}")).collect::<Vec<_>>()))]
    Downloads {
        total: usize,
        failures: Vec<(String, Error)>,
    },

    #[error("{0}")]
    Spec(String),

    #[error("the job's model files are not all available:\n{}", bullet_list(.0))]
    Missing(Vec<String>),

    #[error("{}: {problem}", path.display())]
    Header {
        path: PathBuf,
        problem: HeaderProblem,
    },

    #[error("the model files do not fit the model variant (the job's model.arch, or --arch):\n{}", bullet_list(&.0.iter().map(|f| f.to_string()).collect::<Vec<_>>()))]
    Checks(Vec<CheckFailure>),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

fn unauthorized_message(
    repo_id: &str,
    endpoint: &str,
    token_sent: bool,
    server_message: Option<&str>,
) -> String {
    let server = server_message
        .map(|m| format!(" The hub said: {m}"))
        .unwrap_or_default();
    if token_sent {
        format!(
            "the token in HF_TOKEN was not accepted for {repo_id} (401). It may be expired or mistyped; \
             create a new one at {endpoint}/settings/tokens.{server}"
        )
    } else {
        format!(
            "{repo_id} needs a Hugging Face token (401): it is gated or private, or does not exist. \
             Accept its terms at {endpoint}/{repo_id}, then set HF_TOKEN to a read token from \
             {endpoint}/settings/tokens.{server}"
        )
    }
}

pub(crate) fn bullet_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("  - {}", i.replace('\n', "\n    ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Byte counts as every wanlora command prints them (binary units).
pub use wanlora_spec::human_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_token_is_named() {
        let e = Error::Unauthorized {
            repo_id: "org/gated".into(),
            endpoint: "https://huggingface.co".into(),
            token_sent: false,
            server_message: None,
        };
        let text = e.to_string();
        assert!(
            text.contains("HF_TOKEN") && text.contains("org/gated"),
            "{text}"
        );
    }
}
