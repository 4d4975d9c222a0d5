//! The cache pass before training, and on-the-fly encoding for items that are not cached.

use super::keys::{latent_key_text, CACHE_FORMAT_VERSION};
use super::{
    latent_key, text_key, CacheError, CacheStore, ContentHashes, EntryKind, LatentEncoder,
    NamedTensors, TextEncoder,
};
use crate::catalog::{problem_from_media_error, Catalog, DataItem};
use crate::media::Frames;
use crate::problems::Problem;
use std::path::Path;
use std::time::Instant;

/// An open cache: the entry store and the content-hash memo.
#[derive(Debug)]
pub struct Cache {
    pub store: CacheStore,
    pub hashes: ContentHashes,
}

impl Cache {
    /// Opens (creating) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        let store = CacheStore::open(root)?;
        let hashes = ContentHashes::open(&root.join("hashes.json"));
        Ok(Self { store, hashes })
    }

    /// The key of an item's latent entry under an encoder (hashes the source file, memoised).
    pub fn latent_key(
        &mut self,
        item: &DataItem,
        encoder_fingerprint: &str,
    ) -> Result<String, CacheError> {
        let content = self.hashes.hash_file(&item.path)?;
        Ok(latent_key(&content, item, encoder_fingerprint))
    }

    /// Saves the content-hash memo.
    pub fn save(&mut self) -> Result<(), CacheError> {
        self.hashes.save()
    }
}

/// How a cache pass runs.
#[derive(Debug, Clone, Copy)]
pub struct CachePassOptions {
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a cache pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheReport {
    pub latents_encoded: usize,
    pub latents_reused: usize,
    pub texts_encoded: usize,
    pub texts_reused: usize,
    /// Files that could not be decoded; their items are now excluded from the catalog.
    pub failed: Vec<Problem>,
    pub seconds: f64,
}

impl std::fmt::Display for CacheReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "latents: {} encoded, {} cached; text embeddings: {} encoded, {} cached; {} file(s) failed; {:.1} s",
            self.latents_encoded,
            self.latents_reused,
            self.texts_encoded,
            self.texts_reused,
            self.failed.len(),
            self.seconds
        )?;
        // Every failed file by name, with its reason (one line each; see `Problem`'s Display).
        for problem in &self.failed {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

fn progress_bar(len: usize, message: &'static str, visible: bool) -> indicatif::ProgressBar {
    if !visible || len == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:>14} [{bar:32}] {pos}/{len} {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// Encodes and stores everything the cache lacks: the latent entry of every usable item whose
/// dataset caches latents (when `latent_encoder` is given), and the text embedding of every
/// distinct caption text (when `text_encoder` is given). Finished entries are reused; a file
/// that cannot be decoded is reported and its items excluded, and the pass goes on. An encoder
/// failure stops the pass; entries written until then stay valid for the next one.
pub fn run_cache_pass(
    catalog: &mut Catalog,
    cache: &mut Cache,
    latent_encoder: Option<&mut dyn LatentEncoder>,
    text_encoder: Option<&mut dyn TextEncoder>,
    options: CachePassOptions,
) -> Result<CacheReport, CacheError> {
    let started = Instant::now();
    let mut report = CacheReport::default();
    if let Some(encoder) = latent_encoder {
        let result = cache_latents(catalog, cache, encoder, options, &mut report);
        cache.save()?;
        result?;
    }
    if let Some(encoder) = text_encoder {
        cache_texts(catalog, cache, encoder, options, &mut report)?;
    }
    for problem in &report.failed {
        catalog.exclude_file(&problem.path, problem.clone());
    }
    report.seconds = started.elapsed().as_secs_f64();
    catalog.check_usable()?;
    Ok(report)
}

fn cache_latents(
    catalog: &Catalog,
    cache: &mut Cache,
    encoder: &mut dyn LatentEncoder,
    options: CachePassOptions,
    report: &mut CacheReport,
) -> Result<(), CacheError> {
    let fingerprint = encoder.fingerprint();
    let mut missing: Vec<(&DataItem, String, String)> = Vec::new();
    for item in catalog.usable_items().filter(|i| i.cache_latents) {
        let content = match cache.hashes.hash_file(&item.path) {
            Ok(content) => content,
            Err(err) => {
                report.failed.push(Problem {
                    path: item.path.clone(),
                    kind: crate::problems::ProblemKind::Unreadable,
                    message: err.to_string(),
                });
                continue;
            }
        };
        let key = latent_key(&content, item, &fingerprint);
        if cache.store.has_entry(EntryKind::Latent, &key) {
            report.latents_reused += 1;
        } else if !missing.iter().any(|(_, k, _)| *k == key) {
            let description = latent_key_text(&content, item, &fingerprint);
            missing.push((item, key, description));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let bar = progress_bar(missing.len(), "caching latents", options.progress);
    // Decoding (ffmpeg, CPU) runs one clip ahead of encoding (the GPU) on its own thread.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<(usize, Result<Frames, Problem>)>(2);
    let failed_files: Vec<&Path> = report.failed.iter().map(|p| p.path.as_path()).collect();
    let skip: Vec<bool> = missing
        .iter()
        .map(|(item, _, _)| failed_files.contains(&item.path.as_path()))
        .collect();
    std::thread::scope(|scope| -> Result<(), CacheError> {
        // Owned by this closure, so an early return drops it and unblocks the decoder thread
        // (its next send fails) before the scope waits for that thread.
        let receiver = receiver;
        let jobs = &missing;
        scope.spawn(move || {
            for (index, (item, _, _)) in jobs.iter().enumerate() {
                if skip[index] {
                    continue;
                }
                let loaded = catalog
                    .load_frames(item)
                    .map(|loaded| loaded.frames)
                    .map_err(|err| problem_from_media_error(&item.path, &err));
                if sender.send((index, loaded)).is_err() {
                    break; // the encoder side stopped
                }
            }
        });
        for (index, loaded) in receiver.iter() {
            let (item, key, description) = &missing[index];
            match loaded {
                Ok(frames) => {
                    let tensors =
                        encoder
                            .encode(&frames)
                            .map_err(|source| CacheError::Encoder {
                                what: "latent",
                                source,
                            })?;
                    cache
                        .store
                        .write(EntryKind::Latent, key, &tensors, description)?;
                    report.latents_encoded += 1;
                }
                Err(problem) => {
                    if !report.failed.iter().any(|p| p.path == item.path) {
                        report.failed.push(problem);
                    }
                }
            }
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(())
}

fn cache_texts(
    catalog: &Catalog,
    cache: &mut Cache,
    encoder: &mut dyn TextEncoder,
    options: CachePassOptions,
    report: &mut CacheReport,
) -> Result<(), CacheError> {
    let fingerprint = encoder.fingerprint();
    let mut missing = Vec::new();
    for text in catalog.caption_texts() {
        if cache
            .store
            .has_entry(EntryKind::Text, &text_key(&text, &fingerprint))
        {
            report.texts_reused += 1;
        } else {
            missing.push(text);
        }
    }
    let bar = progress_bar(missing.len(), "caching text", options.progress);
    for chunk in missing.chunks(encoder.batch_size().max(1)) {
        let outputs = encoder
            .encode(chunk)
            .map_err(|source| CacheError::Encoder {
                what: "text",
                source,
            })?;
        if outputs.len() != chunk.len() {
            return Err(CacheError::EncoderOutput {
                what: "text",
                message: format!("{} results for {} captions", outputs.len(), chunk.len()),
            });
        }
        for (text, tensors) in chunk.iter().zip(&outputs) {
            let description = format!(
                "wanlora text cache v{CACHE_FORMAT_VERSION}; encoder {fingerprint}; caption {text:?}"
            );
            cache.store.write(
                EntryKind::Text,
                &text_key(text, &fingerprint),
                tensors,
                &description,
            )?;
            report.texts_encoded += 1;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// An item's latent tensors (sorted by name): read from the cache when the item's dataset caches latents and the
/// entry exists, else decoded and encoded now (and stored, when the dataset caches latents). A
/// damaged entry is logged and replaced.
pub fn item_latents(
    catalog: &Catalog,
    item: &DataItem,
    cache: Option<&mut Cache>,
    encoder: &mut dyn LatentEncoder,
) -> Result<NamedTensors, CacheError> {
    let fingerprint = encoder.fingerprint();
    let cached = match cache {
        Some(cache) if item.cache_latents => {
            let content = cache.hashes.hash_file(&item.path)?;
            let key = latent_key(&content, item, &fingerprint);
            match cache.store.read(EntryKind::Latent, &key) {
                Ok(Some(tensors)) => return Ok(tensors),
                Ok(None) => {}
                // A damaged entry (disk trouble, a hand edit) must not stop a training run:
                // encode again and write a good entry over it.
                Err(err @ CacheError::Corrupt { .. }) => {
                    tracing::warn!("{err}; encoding the item again");
                }
                Err(err) => return Err(err),
            }
            Some((cache, key, latent_key_text(&content, item, &fingerprint)))
        }
        _ => None,
    };
    let loaded = catalog.load_frames(item)?;
    let mut tensors = encoder
        .encode(&loaded.frames)
        .map_err(|source| CacheError::Encoder {
            what: "latent",
            source,
        })?;
    tensors.sort_by_name();
    if let Some((cache, key, description)) = cached {
        cache
            .store
            .write(EntryKind::Latent, &key, &tensors, &description)?;
    }
    Ok(tensors)
}

/// A caption's text embedding: from the cache if given and present, else encoded now (and
/// stored when a cache is given).
pub fn text_embedding(
    text: &str,
    cache: Option<&Cache>,
    encoder: &mut dyn TextEncoder,
) -> Result<NamedTensors, CacheError> {
    let fingerprint = encoder.fingerprint();
    let key = text_key(text, &fingerprint);
    if let Some(cache) = cache {
        match cache.store.read(EntryKind::Text, &key) {
            Ok(Some(tensors)) => return Ok(tensors),
            Ok(None) => {}
            Err(err @ CacheError::Corrupt { .. }) => {
                tracing::warn!("{err}; encoding the caption again");
            }
            Err(err) => return Err(err),
        }
    }
    let mut outputs =
        encoder
            .encode(&[text.to_string()])
            .map_err(|source| CacheError::Encoder {
                what: "text",
                source,
            })?;
    let mut tensors = outputs.pop().ok_or(CacheError::EncoderOutput {
        what: "text",
        message: "no result for one caption".into(),
    })?;
    tensors.sort_by_name();
    if let Some(cache) = cache {
        let description = format!(
            "wanlora text cache v{CACHE_FORMAT_VERSION}; encoder {fingerprint}; caption {text:?}"
        );
        cache
            .store
            .write(EntryKind::Text, &key, &tensors, &description)?;
    }
    Ok(tensors)
}
