//! Downloading files into the cache: one blob per ETag, resumed from `blobs/<etag>.incomplete`
//! with HTTP `Range` after a cut connection, verified (sha256 for LFS files, the git blob hash
//! for small ones) before it becomes a blob, then linked into `snapshots/<commit>/`.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::cache::RepoCache;
use crate::client::{is_transient, HubClient, RemoteFile};
use crate::config::HubConfig;
use crate::error::{human_bytes, Error};

/// Failed attempts in a row (no byte received in between) before a download gives up.
const MAX_ATTEMPTS_WITHOUT_PROGRESS: u32 = 5;
const CHUNK: usize = 1 << 20;

/// One file to bring into the cache.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub repo_id: String,
    /// The revision the user asked for (recorded in `refs/`).
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    pub file: RemoteFile,
}

/// Progress display: one bar per running file and a total, all hidden when not wanted.
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Bars {
    fn new(show: bool, total_bytes: u64, files: usize) -> Bars {
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix(format!("{files} files"));
        Bars { multi, total }
    }

    fn file(&self, name: &str, size: Option<u64>) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(size.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} {wide_msg} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix("download");
        bar.set_message(name.to_string());
        bar
    }
}

/// Downloads every request (several at a time) and returns the snapshot paths in request order.
pub fn download_all(
    client: &HubClient,
    config: &HubConfig,
    requests: &[DownloadRequest],
) -> Result<Vec<PathBuf>, Error> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(&config.cache_dir).map_err(|e| Error::io(&config.cache_dir, e))?;
    check_disk_space(config, requests)?;
    // Record each revision's commit once, before the files arrive (as huggingface_hub does).
    let mut refs: Vec<(&str, &str, &str)> = Vec::new();
    for r in requests {
        let key = (r.repo_id.as_str(), r.revision.as_str(), r.commit.as_str());
        if !refs.contains(&key) {
            refs.push(key);
            let cache = RepoCache::new(&config.cache_dir, &r.repo_id);
            cache.tag_cache_dir();
            cache.write_ref(&r.revision, &r.commit)?;
        }
    }
    let total_bytes = requests.iter().filter_map(|r| r.file.size).sum();
    let bars = Bars::new(config.show_progress, total_bytes, requests.len());
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..requests.len()).collect());
    let results: Mutex<Vec<Option<Result<PathBuf, Error>>>> =
        Mutex::new((0..requests.len()).map(|_| None).collect());
    let workers = config.parallel_downloads.clamp(1, requests.len());
    // Set when an answer means no other file will succeed either (no access, no disk space).
    let give_up = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if give_up.load(Ordering::SeqCst) {
                    break;
                }
                let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some(i) = next else { break };
                let outcome = download_one(client, config, &requests[i], &bars);
                if matches!(
                    outcome,
                    Err(Error::Unauthorized { .. }
                        | Error::Forbidden { .. }
                        | Error::DiskSpace { .. })
                ) {
                    give_up.store(true, Ordering::SeqCst);
                }
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(outcome);
                }
            });
        }
    });
    bars.total.finish_and_clear();
    let results = results.into_inner().unwrap_or_default();
    let mut paths = Vec::with_capacity(requests.len());
    let mut failures: Vec<(String, Error)> = Vec::new();
    let mut skipped = 0;
    for (req, outcome) in requests.iter().zip(results) {
        match outcome {
            Some(Ok(p)) => paths.push(p),
            Some(Err(e)) => failures.push((format!("{}: {}", req.repo_id, req.file.path), e)),
            None => skipped += 1,
        }
    }
    if failures.is_empty() {
        return Ok(paths);
    }
    // One cause for every failure (a missing token, say) is reported once.
    let first_text = failures[0].1.to_string();
    if failures.iter().all(|(_, e)| e.to_string() == first_text) {
        if skipped > 0 {
            tracing::info!("{skipped} more downloads were not started");
        }
        return Err(failures.remove(0).1);
    }
    Err(Error::Downloads {
        total: requests.len(),
        failures,
    })
}

/// Refuses to start when the cache's disk cannot hold what is left to download.
fn check_disk_space(config: &HubConfig, requests: &[DownloadRequest]) -> Result<(), Error> {
    let needed: u64 = requests
        .iter()
        .filter(|r| {
            let cache = RepoCache::new(&config.cache_dir, &r.repo_id);
            !r.file.etag().is_some_and(|e| cache.blob_path(e).exists())
        })
        .filter_map(|r| r.file.size)
        .sum();
    match wanlora_sysinfo::disk_space(&config.cache_dir) {
        Ok((free, _)) if free < needed => Err(Error::DiskSpace {
            dir: config.cache_dir.clone(),
            needed,
            free,
        }),
        Ok(_) => Ok(()),
        Err(why) => {
            tracing::warn!("could not check free disk space: {why}");
            Ok(())
        }
    }
}

fn download_one(
    client: &HubClient,
    config: &HubConfig,
    req: &DownloadRequest,
    bars: &Bars,
) -> Result<PathBuf, Error> {
    let cache = RepoCache::new(&config.cache_dir, &req.repo_id);
    let pointer = cache.snapshot_file(&req.commit, &req.file.path);
    if pointer.exists() {
        bars.total.inc(req.file.size.unwrap_or(0));
        return Ok(pointer);
    }
    // The listing names the blob (LFS sha256 or git blob hash): an existing one is only linked.
    if let Some(etag) = req.file.etag().filter(|e| cache.blob_path(e).is_file()) {
        bars.total.inc(req.file.size.unwrap_or(0));
        return cache.link_snapshot(&req.commit, &req.file.path, etag);
    }
    let meta = client.file_metadata(&req.repo_id, &req.commit, &req.file.path)?;
    if meta.commit != req.commit {
        return Err(Error::BadResponse {
            url: meta.location,
            reason: format!(
                "asked for commit {} of {}, the server answered for commit {}",
                req.commit, req.file.path, meta.commit
            ),
        });
    }
    let blob = cache.blob_path(&meta.etag);
    let _lock = cache.lock_blob(&meta.etag)?;
    if !blob.exists() {
        let expected_size = meta.size.or(req.file.size);
        let bar = bars.file(&req.file.path, expected_size);
        let started = Instant::now();
        let partial = cache.incomplete_path(&meta.etag);
        if let Some(dir) = partial.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let target = Target {
            client,
            url: &meta.location,
            partial: &partial,
            expected_size,
            repo_id: &req.repo_id,
            file: &req.file.path,
            etag: &meta.etag,
        };
        let resumed = partial.exists();
        let mut outcome = target
            .transfer(&bar, &bars.total)
            .and_then(|sha| target.verify(&sha));
        if resumed && matches!(outcome, Err(Error::Checksum { .. })) {
            // The partial file may be from an older upload of the same name: start afresh once.
            tracing::warn!(
                "{}: checksum mismatch after resuming, downloading again from the start",
                req.file.path
            );
            let _ = fs::remove_file(&partial);
            bar.set_position(0);
            outcome = target
                .transfer(&bar, &bars.total)
                .and_then(|sha| target.verify(&sha));
        }
        bar.finish_and_clear();
        if outcome.is_err() {
            let _ = fs::remove_file(&partial);
        }
        outcome?;
        fs::rename(&partial, &blob).map_err(|e| Error::io(&blob, e))?;
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let bytes = fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            "downloaded {} from {} ({} in {:.1} s, {}/s)",
            req.file.path,
            req.repo_id,
            human_bytes(bytes),
            secs,
            human_bytes((bytes as f64 / secs) as u64)
        );
    } else {
        bars.total.inc(req.file.size.unwrap_or(0));
    }
    cache.link_snapshot(&req.commit, &req.file.path, &meta.etag)
}

/// One blob being downloaded into its `.incomplete` file.
struct Target<'a> {
    client: &'a HubClient,
    url: &'a str,
    partial: &'a Path,
    expected_size: Option<u64>,
    repo_id: &'a str,
    file: &'a str,
    etag: &'a str,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_git_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Target<'_> {
    fn io(&self, e: std::io::Error) -> Error {
        Error::io(self.partial, e)
    }

    /// Fills the partial file up to the announced size, resuming with `Range` after every cut.
    /// Returns the sha256 of the whole file, computed on the way.
    fn transfer(&self, bar: &ProgressBar, total: &ProgressBar) -> Result<String, Error> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(self.partial)
            .map_err(|e| self.io(e))?;
        let mut have = file.metadata().map_err(|e| self.io(e))?.len();
        if self.expected_size.is_some_and(|size| have > size) {
            file.set_len(0).map_err(|e| self.io(e))?;
            have = 0;
        }
        // Resuming: the hash must cover the bytes already on disk.
        let mut hasher = Sha256::new();
        if have > 0 {
            file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
            let mut reader = BufReader::with_capacity(CHUNK, (&mut file).take(have));
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = reader.read(&mut buf).map_err(|e| self.io(e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            tracing::info!("{}: resuming at byte {have}", self.file);
        }
        file.seek(SeekFrom::Start(have)).map_err(|e| self.io(e))?;
        bar.set_position(have);
        total.inc(have);

        let what = format!("{} in {}", self.file, self.repo_id);
        let mut failures = 0u32;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if self.expected_size == Some(have) {
                break;
            }
            let opened = match self.client.open(self.url, have, self.repo_id, &what) {
                Ok(o) => o,
                Err(e) if is_transient(&e) && failures + 1 < MAX_ATTEMPTS_WITHOUT_PROGRESS => {
                    failures += 1;
                    tracing::warn!("{}: {e}; retrying", self.file);
                    std::thread::sleep(backoff(failures));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if have > 0 && !opened.continues {
                // The server sent the whole file again: start over.
                file.set_len(0).map_err(|e| self.io(e))?;
                file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
                hasher = Sha256::new();
                total.set_position(total.position().saturating_sub(have));
                have = 0;
                bar.set_position(0);
            }
            let mut reader = opened.reader;
            let mut cut = None;
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        file.write_all(&buf[..n]).map_err(|e| self.io(e))?;
                        hasher.update(&buf[..n]);
                        have += n as u64;
                        bar.inc(n as u64);
                        total.inc(n as u64);
                        failures = 0;
                    }
                    Err(e) => {
                        cut = Some(e);
                        break;
                    }
                }
            }
            file.flush().map_err(|e| self.io(e))?;
            match (cut, self.expected_size) {
                (None, None) => break,
                (None, Some(size)) if have >= size => break,
                (cut, _) => {
                    failures += 1;
                    let why =
                        cut.map_or("the connection closed early".to_string(), |e| e.to_string());
                    if failures >= MAX_ATTEMPTS_WITHOUT_PROGRESS {
                        return Err(Error::Network {
                            url: self.url.to_string(),
                            message: format!(
                                "{why} ({failures} attempts without progress, {have} bytes kept in {} for the next run)",
                                self.partial.display()
                            ),
                        });
                    }
                    tracing::warn!("{}: {why} at byte {have}; resuming", self.file);
                    std::thread::sleep(backoff(failures));
                }
            }
        }
        file.sync_all().map_err(|e| self.io(e))?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// Checks size and checksum of a finished transfer against what the hub announced.
    fn verify(&self, sha256: &str) -> Result<(), Error> {
        let actual_size = fs::metadata(self.partial).map_err(|e| self.io(e))?.len();
        if let Some(expected) = self.expected_size.filter(|&s| s != actual_size) {
            return Err(Error::SizeMismatch {
                repo_id: self.repo_id.to_string(),
                file: self.file.to_string(),
                expected,
                actual: actual_size,
            });
        }
        let mismatch = |algorithm, actual: String| Error::Checksum {
            repo_id: self.repo_id.to_string(),
            file: self.file.to_string(),
            algorithm,
            expected: self.etag.to_ascii_lowercase(),
            actual,
        };
        if is_sha256(self.etag) {
            if !sha256.eq_ignore_ascii_case(self.etag) {
                return Err(mismatch("sha256", sha256.to_string()));
            }
        } else if is_git_hash(self.etag) {
            let actual = git_blob_hash(self.partial)?;
            if !actual.eq_ignore_ascii_case(self.etag) {
                return Err(mismatch("git blob sha1", actual));
            }
        } else {
            tracing::debug!(
                "{}: ETag {} is no known hash; size checked only",
                self.file,
                self.etag
            );
        }
        Ok(())
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 * u64::from(attempt.min(10)))
}

/// The hash git gives a file's contents: sha1 of `blob <len>\0` followed by the bytes.
pub fn git_blob_hash(path: &Path) -> Result<String, Error> {
    use sha1::{Digest as _, Sha1};
    let len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    let mut file = BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_hash_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"hello\n").unwrap();
        assert_eq!(
            git_blob_hash(&p).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
