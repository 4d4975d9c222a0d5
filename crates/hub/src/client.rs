//! The few hub HTTP calls a download needs, on a blocking `ureq` agent:
//!
//! * `GET {endpoint}/api/models/{repo}/revision/{rev}?blobs=true` — commit hash and file list with
//!   sizes and LFS sha256;
//! * `HEAD {endpoint}/{repo}/resolve/{rev}/{file}` — `X-Repo-Commit`, `X-Linked-Etag`/`ETag`,
//!   `X-Linked-Size`, and for LFS files a redirect `Location` to the storage URL;
//! * `GET <location>` with `Range: bytes=N-` to resume.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use ureq::http::{HeaderMap, Response, StatusCode};
use ureq::{Agent, Body};

use crate::config::HubConfig;
use crate::error::Error;
use crate::safetensors_header::{
    header_len_from_prefix, parse_header, SafetensorsHeader, PREFIX_BYTES,
};

/// Characters kept as they are in one URL path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// API answers larger than this are refused (a repo listing is a few hundred kB).
const MAX_API_BYTES: u64 = 64 * 1024 * 1024;
/// Relative redirects (a renamed repository) followed before giving up.
const MAX_RELATIVE_REDIRECTS: usize = 5;

/// A repository at one commit, as the hub lists it.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

/// One file of a repository listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repository, `/`-separated.
    pub path: String,
    pub size: Option<u64>,
    /// Git blob hash (the ETag of a file stored in git).
    pub blob_id: Option<String>,
    /// sha256 of an LFS file (its ETag).
    pub lfs_sha256: Option<String>,
}

impl RemoteFile {
    /// The name its blob gets in the cache, when the listing tells it.
    pub fn etag(&self) -> Option<&str> {
        self.lfs_sha256.as_deref().or(self.blob_id.as_deref())
    }
}

/// What a `HEAD …/resolve/…` says about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    pub commit: String,
    /// Normalised ETag (no quotes, no `W/`): sha256 for LFS files, git blob hash otherwise.
    pub etag: String,
    pub size: Option<u64>,
    /// Where the bytes are: the LFS storage URL after a redirect, else the resolve URL.
    pub location: String,
}

/// An open download body.
pub struct OpenedBody {
    /// The server honoured the `Range` (206): the body continues the partial file.
    pub continues: bool,
    pub reader: Box<dyn Read + Send>,
}

#[derive(Deserialize)]
struct ApiRevision {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: Option<String>,
    size: Option<u64>,
}

/// A blocking client for one endpoint.
pub struct HubClient {
    endpoint: String,
    token: Option<String>,
    /// For loopback hosts (local mirrors, tests): never through a proxy.
    direct: Agent,
    /// Everything else: honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY.
    proxied: Agent,
}

/// `huggingface_hub`'s ETag normalisation: drop a weak `W/` prefix and the quotes.
pub fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost" || host.starts_with("127.") || rest.starts_with("[::1]")
}

/// Errors worth another attempt: the connection, not the request, was at fault.
pub(crate) fn is_transient(e: &Error) -> bool {
    match e {
        Error::Network { .. } => true,
        Error::Http { status, .. } => *status == 429 || *status >= 500,
        _ => false,
    }
}

/// A relative `/`-separated path without `.`/`..`/empty parts or backslashes.
fn is_safe_repo_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
}

/// `org/name` with each part escaped for a URL path.
fn repo_path(repo_id: &str) -> String {
    repo_id
        .split('/')
        .map(|p| utf8_percent_encode(p, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn file_path(path_in_repo: &str) -> String {
    repo_path(path_in_repo)
}

impl HubClient {
    pub fn new(config: &HubConfig) -> HubClient {
        let build = |proxy: Option<ureq::Proxy>| -> Agent {
            Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .accept_encoding("identity")
                .user_agent(concat!("wanlora/", env!("CARGO_PKG_VERSION")))
                .timeout_connect(Some(Duration::from_secs(30)))
                .timeout_per_read(Some(Duration::from_secs(60)))
                .proxy(proxy)
                .build()
                .new_agent()
        };
        HubClient {
            endpoint: config.endpoint.clone(),
            token: config.token.clone(),
            direct: build(None),
            proxied: build(ureq::Proxy::try_from_env()),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn agent(&self, url: &str) -> &Agent {
        if is_loopback(url) {
            &self.direct
        } else {
            &self.proxied
        }
    }

    /// The token goes only to the endpoint itself, never to storage hosts it redirects to.
    fn authorization(&self, url: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        url.starts_with(&format!("{}/", self.endpoint))
            .then(|| format!("Bearer {token}"))
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        range: Option<String>,
    ) -> Result<Response<Body>, Error> {
        let agent = self.agent(url);
        let auth = self.authorization(url);
        let result = match method {
            "HEAD" => {
                let mut req = agent.head(url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            _ => {
                let mut req = agent.get(url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                if let Some(r) = &range {
                    req = req.header("Range", r);
                }
                req.call()
            }
        };
        result.map_err(|e| Error::Network {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// Turns a non-success answer into the error a user can act on.
    fn status_error(&self, resp: &Response<Body>, url: &str, repo_id: &str, what: &str) -> Error {
        let headers = resp.headers();
        let server_message = header(headers, "x-error-message");
        let code = header(headers, "x-error-code");
        match resp.status().as_u16() {
            401 => Error::Unauthorized {
                repo_id: repo_id.to_string(),
                endpoint: self.endpoint.clone(),
                token_sent: self.token.is_some(),
                server_message,
            },
            403 => Error::Forbidden {
                repo_id: repo_id.to_string(),
                endpoint: self.endpoint.clone(),
                server_message,
            },
            404 => Error::NotFound {
                what: match code.as_deref() {
                    Some("RepoNotFound") => format!("repository {repo_id}"),
                    _ => what.to_string(),
                },
                endpoint: self.endpoint.clone(),
                server_message,
            },
            status => Error::Http {
                url: url.to_string(),
                status,
                server_message,
            },
        }
    }

    /// Commit hash and file list of `repo_id` at `revision`.
    pub fn repo_info(&self, repo_id: &str, revision: &str) -> Result<RepoInfo, Error> {
        let url = format!(
            "{}/api/models/{}/revision/{}?blobs=true",
            self.endpoint,
            repo_path(repo_id),
            utf8_percent_encode(revision, SEGMENT)
        );
        let mut resp = self.send("GET", &url, None)?;
        if !resp.status().is_success() {
            return Err(self.status_error(
                &resp,
                &url,
                repo_id,
                &format!("revision {revision} of {repo_id}"),
            ));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_API_BYTES)
            .read_to_string()
            .map_err(|e| Error::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let parsed: ApiRevision = serde_json::from_str(&text).map_err(|e| Error::BadResponse {
            url: url.clone(),
            reason: format!("the repository listing is not the expected JSON ({e})"),
        })?;
        let commit = parsed.sha.ok_or_else(|| Error::BadResponse {
            url: url.clone(),
            reason: "the repository listing has no commit hash (`sha`)".into(),
        })?;
        let files = parsed
            .siblings
            .into_iter()
            .filter(|s| {
                // A listing must not steer files out of the snapshot folder.
                let safe = is_safe_repo_path(&s.rfilename);
                if !safe {
                    tracing::warn!("{url}: ignoring the file name {:?}", s.rfilename);
                }
                safe
            })
            .map(|s| {
                let lfs_size = s.lfs.as_ref().and_then(|l| l.size);
                RemoteFile {
                    path: s.rfilename,
                    size: lfs_size.or(s.size),
                    blob_id: s.blob_id,
                    lfs_sha256: s.lfs.and_then(|l| l.sha256),
                }
            })
            .collect();
        Ok(RepoInfo { commit, files })
    }

    /// Where one file's bytes are and what its blob is called, from a `HEAD` on its resolve URL.
    pub fn file_metadata(
        &self,
        repo_id: &str,
        revision: &str,
        path_in_repo: &str,
    ) -> Result<FileMetadata, Error> {
        let mut url = format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo_path(repo_id),
            utf8_percent_encode(revision, SEGMENT),
            file_path(path_in_repo)
        );
        let what = format!("{path_in_repo} in {repo_id}@{revision}");
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let resp = self.send("HEAD", &url, None)?;
            let status = resp.status();
            let headers = resp.headers();
            let location = header(headers, "location");
            if status.is_redirection() {
                // A relative Location is the hub itself (e.g. a renamed repository): follow it.
                // An absolute one is the storage URL of an LFS file: that is the answer.
                if let Some(rel) = location.as_deref().filter(|l| l.starts_with('/')) {
                    url = format!("{}{rel}", self.endpoint);
                    continue;
                }
            } else if !status.is_success() {
                return Err(self.status_error(&resp, &url, repo_id, &what));
            }
            let missing = |name: &str| Error::BadResponse {
                url: url.clone(),
                reason: format!("no {name} header; is HF_ENDPOINT a Hugging Face hub?"),
            };
            let commit =
                header(headers, "x-repo-commit").ok_or_else(|| missing("X-Repo-Commit"))?;
            let etag = header(headers, "x-linked-etag")
                .or_else(|| header(headers, "etag"))
                .map(|e| normalize_etag(&e))
                .ok_or_else(|| missing("ETag"))?;
            let size = header(headers, "x-linked-size")
                .or_else(|| {
                    (status == StatusCode::OK)
                        .then(|| header(headers, "content-length"))
                        .flatten()
                })
                .and_then(|s| s.parse().ok());
            let location = match location {
                Some(l) if status.is_redirection() => l,
                _ => url.clone(),
            };
            return Ok(FileMetadata {
                commit,
                etag,
                size,
                location,
            });
        }
        Err(Error::BadResponse {
            url,
            reason: format!("more than {MAX_RELATIVE_REDIRECTS} redirects"),
        })
    }

    /// Opens the bytes at `url` from `offset` on (a `Range` request when `offset > 0`).
    pub fn open(
        &self,
        url: &str,
        offset: u64,
        repo_id: &str,
        what: &str,
    ) -> Result<OpenedBody, Error> {
        let range = (offset > 0).then(|| format!("bytes={offset}-"));
        let resp = self.send("GET", url, range)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(&resp, url, repo_id, what));
        }
        Ok(OpenedBody {
            continues: offset > 0 && status == StatusCode::PARTIAL_CONTENT,
            reader: Box::new(resp.into_body().into_reader()),
        })
    }
}

impl HubClient {
    /// `len` bytes from byte `from` of the file at `url` (fewer when the file ends first), with a
    /// bounded `Range`; a server that ignores the range is read up to the wanted bytes only.
    fn read_range(
        &self,
        url: &str,
        from: u64,
        len: u64,
        repo_id: &str,
        what: &str,
    ) -> Result<Vec<u8>, Error> {
        let range = Some(format!("bytes={from}-{}", from + len.max(1) - 1));
        let resp = self.send("GET", url, range)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.status_error(&resp, url, repo_id, what));
        }
        let skip = if status == StatusCode::PARTIAL_CONTENT {
            0
        } else {
            from
        };
        let mut reader = resp.into_body().into_reader();
        let network = |e: std::io::Error| Error::Network {
            url: url.to_string(),
            message: e.to_string(),
        };
        std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink()).map_err(network)?;
        let mut out = Vec::with_capacity(len as usize);
        reader.take(len).read_to_end(&mut out).map_err(network)?;
        Ok(out)
    }

    /// The safetensors header of a file on the hub, read with two small range requests, so a
    /// wrong model is named before gigabytes are downloaded.
    pub fn remote_header(
        &self,
        repo_id: &str,
        commit: &str,
        path_in_repo: &str,
        listed_size: Option<u64>,
    ) -> Result<SafetensorsHeader, Error> {
        let label = PathBuf::from(format!(
            "{repo_id}@{}/{path_in_repo}",
            &commit[..commit.len().min(8)]
        ));
        let what = format!("{path_in_repo} in {repo_id}@{commit}");
        let meta = self.file_metadata(repo_id, commit, path_in_repo)?;
        let file_len = meta
            .size
            .or(listed_size)
            .ok_or_else(|| Error::BadResponse {
                url: meta.location.clone(),
                reason: "the file size is not announced".into(),
            })?;
        let read = |from: u64, len: u64| {
            let mut attempt = 0;
            loop {
                match self.read_range(&meta.location, from, len, repo_id, &what) {
                    Err(e) if is_transient(&e) && attempt < 2 => attempt += 1,
                    other => return other,
                }
            }
        };
        let prefix = read(0, PREFIX_BYTES.min(file_len))?;
        let header_len = header_len_from_prefix(&label, file_len, &prefix)?;
        let json = read(8, header_len)?;
        parse_header(&label, file_len, header_len, &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_normalised_like_huggingface_hub() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn listed_paths_cannot_leave_the_snapshot() {
        assert!(is_safe_repo_path("transformer/config.json"));
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "a\\b",
            "./a",
            "",
        ] {
            assert!(!is_safe_repo_path(bad), "{bad}");
        }
    }

    #[test]
    fn url_parts_are_escaped() {
        assert_eq!(repo_path("org/name.v2"), "org/name.v2");
        assert_eq!(file_path("dir/a b+c.json"), "dir/a%20b%2Bc.json");
        assert!(is_loopback("http://127.0.0.1:8080/x"));
        assert!(is_loopback("http://localhost/x"));
        assert!(!is_loopback("https://huggingface.co/x"));
    }

    #[test]
    fn the_token_never_leaves_the_endpoint() {
        let mut cfg = HubConfig::new("https://hub.example", std::path::Path::new("/tmp/c"));
        cfg.token = Some("hf_x".into());
        let c = HubClient::new(&cfg);
        assert_eq!(
            c.authorization("https://hub.example/org/m/resolve/main/a")
                .as_deref(),
            Some("Bearer hf_x")
        );
        assert_eq!(c.authorization("https://cdn.example/blob"), None);
        assert_eq!(c.authorization("https://hub.example.evil.com/x"), None);
    }
}
