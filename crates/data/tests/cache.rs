//! The latent and text cache: hits, invalidation by content and settings, interrupted passes,
//! flips, and on-the-fly encoding.

mod common;

use common::*;
use std::path::Path;
use wanlora_data::cache::testing::{HashingTextEncoder, PoolingLatentEncoder};
use wanlora_data::cache::{EntryKind, TextEncoder};
use wanlora_data::{
    item_latents, run_cache_pass, text_embedding, Cache, CacheError, CachePassOptions, Catalog,
    DatasetSpec, JobContext, ProblemKind,
};

const QUIET: CachePassOptions = CachePassOptions { progress: false };

fn job() -> JobContext {
    JobContext {
        name: "cache".into(),
        trigger_word: Some("p3r5on".into()),
        seed: 5,
        batch_size: 1,
        preservation_class: None,
        cache_text_embeddings: true,
        bucket_step: None,
    }
}

fn spec(folder: &Path) -> DatasetSpec {
    DatasetSpec {
        folder_path: folder.to_path_buf(),
        resolutions: vec![64],
        num_frames: 5,
        cache_latents: true,
        ..DatasetSpec::default()
    }
}

/// Three numbered clips with captions.
fn clips(root: &Path) {
    numbered_clip(&root.join("a.mp4"), 64, 48, "10", 20, H264, &[]);
    numbered_clip(&root.join("b.mp4"), 64, 48, "10", 12, H264, &[]);
    numbered_clip(&root.join("c.mp4"), 96, 48, "10", 9, H264, &[]);
    write(&root.join("a.txt"), "a walks");
    write(&root.join("b.txt"), "b runs");
    write(&root.join("c.txt"), "c jumps");
}

fn pass(
    catalog: &mut Catalog,
    cache_dir: &Path,
    latents: &mut PoolingLatentEncoder,
    texts: &mut HashingTextEncoder,
) -> wanlora_data::CacheReport {
    let mut cache = Cache::open(cache_dir).unwrap();
    run_cache_pass(catalog, &mut cache, Some(latents), Some(texts), QUIET).unwrap()
}

#[test]
fn a_second_pass_reuses_everything_and_entries_hold_the_sampled_frames() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    clips(&data);
    let cache_dir = dir.path().join("cache");
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let (mut latents, mut texts) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    let first = pass(&mut catalog, &cache_dir, &mut latents, &mut texts);
    assert_eq!((first.latents_encoded, first.latents_reused), (3, 0));
    assert_eq!((first.texts_encoded, first.texts_reused), (3, 0));
    assert_eq!(latents.calls, 3);
    let mut seen = texts.seen.clone();
    seen.sort();
    assert_eq!(seen, ["p3r5on a walks", "p3r5on b runs", "p3r5on c jumps"]);

    // A restart: new catalog, new cache handle, fresh encoders.
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let (mut latents2, mut texts2) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    let mut cache = Cache::open(&cache_dir).unwrap();
    let second = run_cache_pass(
        &mut catalog,
        &mut cache,
        Some(&mut latents2),
        Some(&mut texts2),
        QUIET,
    )
    .unwrap();
    assert_eq!((second.latents_encoded, second.latents_reused), (0, 3));
    assert_eq!((second.texts_encoded, second.texts_reused), (0, 3));
    assert_eq!(latents2.calls, 0);
    assert!(texts2.seen.is_empty());
    assert_eq!(
        cache.hashes.files_hashed, 0,
        "unchanged files are not read again"
    );

    // The cached latent of a.mp4 is the pooled colours of frames [0, 5, 10, 14, 19].
    let a = catalog
        .items
        .iter()
        .find(|i| i.path.ends_with("a.mp4"))
        .unwrap();
    assert_eq!(a.frame_indices, [0, 5, 10, 14, 19]);
    let tensors = item_latents(&catalog, a, Some(&mut cache), &mut latents2).unwrap();
    assert_eq!(latents2.calls, 0, "answered from the cache");
    let latent = tensors.get("latent").unwrap();
    assert_eq!(latent.shape, vec![3, 5, 6, 8]);
    let values = latent.to_f32();
    let plane = 5 * 6 * 8;
    let numbers: Vec<usize> = (0..5)
        .map(|t| {
            let at = |c: usize| ((values[c * plane + t * 48] + 1.0) * 127.5).round() as u8;
            frame_number([at(0), at(1), at(2)])
        })
        .collect();
    assert_eq!(numbers, a.frame_indices);
    assert_eq!(tensors.get("first_frame").unwrap().shape, vec![3, 1, 6, 8]);

    // Text embeddings come back from the cache too.
    let embedded = text_embedding("p3r5on a walks", Some(&cache), &mut texts2).unwrap();
    assert!(texts2.seen.is_empty());
    assert_eq!(
        embedded.get("embedding").unwrap().to_f32(),
        texts2.embed("p3r5on a walks")
    );
}

#[test]
fn changed_clips_captions_and_settings_are_encoded_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    clips(&data);
    let cache_dir = dir.path().join("cache");
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let (mut latents, mut texts) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    pass(&mut catalog, &cache_dir, &mut latents, &mut texts);

    // A changed clip (same name, other content): only it is encoded again.
    numbered_clip(&data.join("b.mp4"), 64, 48, "10", 13, H264, &[]);
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let (mut latents, mut texts) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    let report = pass(&mut catalog, &cache_dir, &mut latents, &mut texts);
    assert_eq!((report.latents_encoded, report.latents_reused), (1, 2));
    assert_eq!(report.texts_encoded, 0);

    // A changed caption: only its text embedding is new.
    write(&data.join("c.txt"), "c jumps high");
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let (mut latents, mut texts) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    let report = pass(&mut catalog, &cache_dir, &mut latents, &mut texts);
    assert_eq!((report.latents_encoded, report.texts_encoded), (0, 1));
    assert_eq!(texts.seen, ["p3r5on c jumps high"]);

    // A setting that changes the frames: every latent again.
    let mut more_frames = spec(&data);
    more_frames.num_frames = 9;
    let mut catalog = Catalog::load(&[more_frames], &job()).unwrap();
    let (mut latents, mut texts) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    let report = pass(&mut catalog, &cache_dir, &mut latents, &mut texts);
    assert_eq!((report.latents_encoded, report.latents_reused), (3, 0));

    // Another resolution (bucket) or another encoder: again new entries.
    let mut bigger = spec(&data);
    bigger.resolutions = vec![48];
    let mut catalog = Catalog::load(&[bigger], &job()).unwrap();
    let report = pass(
        &mut catalog,
        &cache_dir,
        &mut PoolingLatentEncoder::new(8),
        &mut HashingTextEncoder::new(16),
    );
    assert_eq!(report.latents_encoded, 3);
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let report = pass(
        &mut catalog,
        &cache_dir,
        &mut PoolingLatentEncoder::new(4),
        &mut HashingTextEncoder::new(8),
    );
    assert_eq!((report.latents_encoded, report.texts_encoded), (3, 3));

    // A setting that does not touch the frames (caption dropout) keeps the latents and adds the
    // empty caption's embedding.
    let mut dropout = spec(&data);
    dropout.caption_dropout_rate = 0.1;
    let mut catalog = Catalog::load(&[dropout], &job()).unwrap();
    let (mut latents, mut texts) = (PoolingLatentEncoder::new(8), HashingTextEncoder::new(16));
    let report = pass(&mut catalog, &cache_dir, &mut latents, &mut texts);
    assert_eq!((report.latents_encoded, report.latents_reused), (0, 3));
    assert_eq!(texts.seen, [""]);
}

#[test]
fn an_interrupted_pass_resumes_with_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    clips(&data);
    let cache_dir = dir.path().join("cache");
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let mut cache = Cache::open(&cache_dir).unwrap();
    let mut crashing = PoolingLatentEncoder::new(8);
    crashing.fail_on_call = Some(3);
    let err =
        run_cache_pass(&mut catalog, &mut cache, Some(&mut crashing), None, QUIET).unwrap_err();
    assert!(matches!(err, CacheError::Encoder { .. }), "{err}");
    assert!(err.to_string().contains("simulated encoder failure"));
    // A writer killed mid-file leaves a temporary behind.
    let leftover = cache_dir
        .join("latents")
        .join(".deadbeef.safetensors.tmp-0-7");
    write(&leftover, b"half a file");

    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let mut cache = Cache::open(&cache_dir).unwrap();
    assert!(
        !leftover.exists(),
        "temporaries of dead writers are removed"
    );
    let mut latents = PoolingLatentEncoder::new(8);
    let report = run_cache_pass(&mut catalog, &mut cache, Some(&mut latents), None, QUIET).unwrap();
    assert_eq!((report.latents_encoded, report.latents_reused), (1, 2));
    assert_eq!(latents.calls, 1);
    let entries = std::fs::read_dir(cache_dir.join("latents"))
        .unwrap()
        .count();
    assert_eq!(entries, 3);
}

#[test]
fn flips_store_both_variants_and_undecodable_files_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    clips(&data);
    // Probes fine (index first), but its media data is zeros: decoding fails in the pass.
    numbered_clip(
        &data.join("z.mp4"),
        64,
        48,
        "10",
        20,
        H264,
        &["-movflags", "+faststart"],
    );
    let mut bytes = std::fs::read(data.join("z.mp4")).unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    bytes[mdat..].fill(0);
    write(&data.join("z.mp4"), &bytes);
    let mut flipped = spec(&data);
    flipped.flip_x = true;
    let mut catalog = Catalog::load(&[flipped], &job()).unwrap();
    assert_eq!(catalog.items.len(), 8);
    let mut cache = Cache::open(&dir.path().join("cache")).unwrap();
    let mut latents = PoolingLatentEncoder::new(8);
    let report = run_cache_pass(&mut catalog, &mut cache, Some(&mut latents), None, QUIET).unwrap();
    assert_eq!(report.latents_encoded, 6);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].path, data.join("z.mp4"));
    assert_eq!(report.failed[0].kind, ProblemKind::DecodeFailed);
    // The report (as the trainer logs it) names the file and says why.
    let shown = report.to_string();
    let line = format!("\n  {}: skipped: ", data.join("z.mp4").display());
    assert!(shown.contains(&line), "{shown}");
    assert!(shown.contains("1 file(s) failed"), "{shown}");
    assert_eq!(catalog.usable_items().count(), 6);
    assert!(catalog
        .problems
        .iter()
        .any(|p| p.path == data.join("z.mp4")));

    // Both variants of every file are cached under different keys.
    let c: Vec<_> = catalog
        .items
        .iter()
        .filter(|i| i.path.ends_with("c.mp4"))
        .cloned()
        .collect();
    assert!(!c[0].flip.x && c[1].flip.x);
    let k0 = cache.latent_key(&c[0], "test-pooling-8").unwrap();
    let k1 = cache.latent_key(&c[1], "test-pooling-8").unwrap();
    assert_ne!(k0, k1);
    assert!(cache.store.has_entry(EntryKind::Latent, &k0));
    assert!(cache.store.has_entry(EntryKind::Latent, &k1));
}

#[test]
fn the_flipped_variant_is_the_mirror_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Left half red, right half blue.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=32x48:r=10",
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:s=32x48:r=10",
        "-filter_complex",
        "[0][1]hstack",
        "-frames:v",
        "6",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-qp",
        "0",
        data.join("lr.mp4").to_str().unwrap(),
    ]);
    let mut flipped = spec(&data);
    flipped.flip_x = true;
    let mut catalog = Catalog::load(&[flipped], &job()).unwrap();
    let mut cache = Cache::open(&dir.path().join("cache")).unwrap();
    let mut latents = PoolingLatentEncoder::new(8);
    run_cache_pass(&mut catalog, &mut cache, Some(&mut latents), None, QUIET).unwrap();
    assert_eq!(latents.calls, 2);
    let items = catalog.items.clone();
    let plain = item_latents(&catalog, &items[0], Some(&mut cache), &mut latents).unwrap();
    let mirror = item_latents(&catalog, &items[1], Some(&mut cache), &mut latents).unwrap();
    assert_eq!(latents.calls, 2, "both variants came from the cache");
    let (p, m) = (plain.get("latent").unwrap(), mirror.get("latent").unwrap());
    assert_eq!(p.shape, m.shape);
    let [_, frames, h, w] = p.shape[..] else {
        panic!("rank 4")
    };
    let (pv, mv) = (p.to_f32(), m.to_f32());
    let at = |c: usize, t: usize, y: usize, x: usize| ((c * frames + t) * h + y) * w + x;
    assert!(
        pv[at(0, 0, 0, 0)] > 0.9 && pv[at(2, 0, 0, 0)] < -0.9,
        "plain starts red"
    );
    for c in 0..3 {
        for t in 0..frames {
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(pv[at(c, t, y, x)], mv[at(c, t, y, w - 1 - x)]);
                }
            }
        }
    }
}

#[test]
fn without_caching_items_are_encoded_on_the_fly_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    numbered_clip(&data.join("a.mp4"), 64, 48, "10", 20, H264, &[]);
    let mut live = spec(&data);
    live.cache_latents = false;
    let mut catalog = Catalog::load(&[live], &job()).unwrap();
    let cache_dir = dir.path().join("cache");
    let mut cache = Cache::open(&cache_dir).unwrap();
    let mut latents = PoolingLatentEncoder::new(8);
    let report = run_cache_pass(&mut catalog, &mut cache, Some(&mut latents), None, QUIET).unwrap();
    assert_eq!((report.latents_encoded, report.latents_reused), (0, 0));
    let item = catalog.items[0].clone();
    let once = item_latents(&catalog, &item, Some(&mut cache), &mut latents).unwrap();
    let twice = item_latents(&catalog, &item, None, &mut latents).unwrap();
    assert_eq!(latents.calls, 2);
    assert_eq!(once, twice);
    assert_eq!(
        std::fs::read_dir(cache_dir.join("latents"))
            .unwrap()
            .count(),
        0
    );

    // Text on the fly, no cache: the encoder sees the caption each time.
    let mut texts = HashingTextEncoder::new(4);
    text_embedding("x", None, &mut texts).unwrap();
    text_embedding("x", None, &mut texts).unwrap();
    assert_eq!(texts.seen, ["x", "x"]);
    assert_eq!(texts.batch_size(), 8);
}

#[test]
fn a_damaged_entry_is_replaced_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    numbered_clip(&data.join("a.mp4"), 64, 48, "10", 10, H264, &[]);
    let cache_dir = dir.path().join("cache");
    let mut catalog = Catalog::load(&[spec(&data)], &job()).unwrap();
    let mut cache = Cache::open(&cache_dir).unwrap();
    let mut latents = PoolingLatentEncoder::new(8);
    run_cache_pass(&mut catalog, &mut cache, Some(&mut latents), None, QUIET).unwrap();
    let item = catalog.items[0].clone();
    let good = item_latents(&catalog, &item, Some(&mut cache), &mut latents).unwrap();
    assert_eq!(latents.calls, 1);
    let key = cache.latent_key(&item, "test-pooling-8").unwrap();
    let path = cache.store.entry_path(EntryKind::Latent, &key);

    // Cut short: the pass sees no entry and writes a good one.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let report = run_cache_pass(&mut catalog, &mut cache, Some(&mut latents), None, QUIET).unwrap();
    assert_eq!(report.latents_encoded, 1);
    assert_eq!(
        cache.store.read(EntryKind::Latent, &key).unwrap(),
        Some(good.clone())
    );

    // Garbage at training time: the item is encoded again and the entry repaired.
    std::fs::write(&path, b"garbage").unwrap();
    let again = item_latents(&catalog, &item, Some(&mut cache), &mut latents).unwrap();
    assert_eq!(again, good);
    assert_eq!(latents.calls, 3);
    assert!(cache.store.read(EntryKind::Latent, &key).unwrap().is_some());
}
