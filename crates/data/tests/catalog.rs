//! Folders to items: captions, triggers, resolutions, flips, exact frame sampling, bad files.

mod common;

use common::*;
use std::path::Path;
use wanlora_data::caption::CaptionSource;
use wanlora_data::{Catalog, DataError, DatasetSpec, JobContext, ProblemKind};

fn job(trigger: Option<&str>) -> JobContext {
    JobContext {
        name: "my_lora".into(),
        trigger_word: trigger.map(String::from),
        seed: 42,
        batch_size: 1,
        preservation_class: None,
        cache_text_embeddings: false,
        bucket_step: None,
    }
}

fn spec(folder: &Path) -> DatasetSpec {
    DatasetSpec {
        folder_path: folder.to_path_buf(),
        resolutions: vec![64],
        ..DatasetSpec::default()
    }
}

fn caption_of<'a>(catalog: &'a Catalog, name: &str) -> &'a wanlora_data::DataItem {
    catalog
        .items
        .iter()
        .find(|i| i.path.file_name().unwrap() == name)
        .unwrap_or_else(|| panic!("no item {name}"))
}

#[test]
fn captions_come_from_file_folder_default_or_setting_with_the_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    for name in ["a.png", "b.png", "c.png", "sub/d.png", "sub/e.png"] {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        solid_image(&path, 32, 32, [10, 20, 30]);
    }
    write(
        &root.join("a.txt"),
        "a photo of [trigger] at the [name] beach",
    );
    write(&root.join("b.txt"), "a cat\non a   mat\n");
    write(&root.join("default.txt"), "default text");
    write(&root.join("sub/d.txt"), "   \n");
    write(&root.join("sub/e.txt"), [0x66u8, 0xff, 0x6f]);
    // An own caption with the other extension is ignored.
    write(&root.join("c.caption"), "not used");

    let catalog = Catalog::load(&[spec(&root)], &job(Some("p3r5on"))).unwrap();
    assert_eq!(catalog.items.len(), 5);
    let a = caption_of(&catalog, "a.png");
    assert_eq!(a.caption, "a photo of p3r5on at the p3r5on beach");
    assert!(matches!(a.caption_source, CaptionSource::OwnFile(_)));
    assert_eq!(
        caption_of(&catalog, "b.png").caption,
        "p3r5on a cat on a mat"
    );
    let c = caption_of(&catalog, "c.png");
    assert_eq!(c.caption, "p3r5on default text");
    assert_eq!(
        c.caption_source,
        CaptionSource::FolderDefault(root.join("default.txt"))
    );
    // An empty caption file falls back to the default.txt above it.
    let d = caption_of(&catalog, "d.png");
    assert_eq!(d.caption, "p3r5on default text");
    // Invalid UTF-8 is read lossily and reported by the caption file's name.
    assert_eq!(caption_of(&catalog, "e.png").caption, "p3r5on f\u{fffd}o");
    let bad = catalog
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::NonUtf8Caption)
        .unwrap();
    assert_eq!(bad.path, root.join("sub/e.txt"));
    assert!(!bad.kind.skips_item());

    // caption_ext without a dot, and the dataset's trigger word over the job's.
    let mut s = spec(&root);
    s.caption_ext = "caption".into();
    s.trigger_word = Some("zxq".into());
    let catalog = Catalog::load(&[s.clone()], &job(Some("p3r5on"))).unwrap();
    assert_eq!(caption_of(&catalog, "c.png").caption, "zxq not used");
    assert_eq!(caption_of(&catalog, "a.png").caption, "zxq default text");
    // Regularisation sets get no trigger prepended.
    s.is_reg = true;
    let catalog = Catalog::load(&[s], &job(Some("p3r5on"))).unwrap();
    assert_eq!(caption_of(&catalog, "c.png").caption, "not used");

    // Without caption file or default.txt: default_caption.
    let other = dir.path().join("other");
    solid_image(&other.join("f.png"), 32, 32, [0, 0, 0]);
    let mut s = spec(&other);
    s.default_caption = Some("fallback [trigger]".into());
    let catalog = Catalog::load(&[s], &job(Some("p3r5on"))).unwrap();
    let f = caption_of(&catalog, "f.png");
    // The trigger is already in it after substitution, so it is not prepended again.
    assert_eq!(f.caption, "fallback p3r5on");
    assert_eq!(f.caption_source, CaptionSource::DefaultCaption);
}

#[test]
fn missing_captions_are_counted_and_dop_variants_made() {
    let dir = tempfile::tempdir().unwrap();
    solid_image(&dir.path().join("x.png"), 32, 32, [0, 0, 0]);
    solid_image(&dir.path().join("y.png"), 32, 32, [0, 0, 0]);
    write(&dir.path().join("y.txt"), "p3r5on waves");
    let mut j = job(Some("p3r5on"));
    j.preservation_class = Some("person".into());
    let mut s = spec(dir.path());
    s.caption_dropout_rate = 0.1;
    let catalog = Catalog::load(&[s], &j).unwrap();
    let x = caption_of(&catalog, "x.png");
    assert_eq!(x.caption, "p3r5on");
    assert_eq!(x.caption_source, CaptionSource::Missing);
    assert_eq!(x.preservation_caption.as_deref(), Some("person"));
    assert_eq!(
        caption_of(&catalog, "y.png")
            .preservation_caption
            .as_deref(),
        Some("person waves")
    );
    let missing: Vec<_> = catalog
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::MissingCaption)
        .collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].path, dir.path().join("x.png"));
    // Every text the encoder must see: captions, the dropout caption and DOP variants.
    assert_eq!(
        catalog.caption_texts(),
        ["", "p3r5on", "p3r5on waves", "person", "person waves"]
    );
}

#[test]
fn caption_dropout_is_deterministic_and_near_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..4 {
        solid_image(&dir.path().join(format!("{i}.png")), 16, 16, [0, 0, 0]);
    }
    let mut s = spec(dir.path());
    s.caption_dropout_rate = 0.25;
    s.default_caption = Some("hello".into());
    let catalog = Catalog::load(&[s], &job(None)).unwrap();
    let mut dropped = 0;
    let mut total = 0;
    for epoch in 0..2000 {
        for item in &catalog.items {
            let text = catalog.caption_for(item, epoch, 0);
            assert_eq!(text, catalog.caption_for(item, epoch, 0));
            total += 1;
            if text.is_empty() {
                dropped += 1;
            } else {
                assert_eq!(text, "hello");
            }
        }
    }
    let rate = dropped as f64 / total as f64;
    assert!((rate - 0.25).abs() < 0.015, "dropout rate {rate}");
}

#[test]
fn resolutions_flips_and_weights_multiply_items() {
    let dir = tempfile::tempdir().unwrap();
    // An asymmetric image: left column dark, the rest light.
    let mut img = image::RgbImage::from_pixel(640, 480, image::Rgb([250, 250, 250]));
    for y in 0..480 {
        for x in 0..80 {
            img.put_pixel(x, y, image::Rgb([0, 0, 0]));
        }
    }
    img.save(dir.path().join("wide.png")).unwrap();
    solid_image(&dir.path().join("small.png"), 200, 100, [90, 90, 90]);
    let mut s = spec(dir.path());
    s.resolutions = vec![256, 512];
    s.flip_x = true;
    s.flip_y = true;
    s.network_weight = 0.5;
    s.loss_multiplier = 2.0;
    s.num_repeats = 3;
    s.batch_size = Some(2);
    let catalog = Catalog::load(&[s], &job(None)).unwrap();
    assert_eq!(catalog.datasets.len(), 2);
    assert_eq!(catalog.datasets[0].resolution, 256);
    assert_eq!(catalog.datasets[1].batch_size, 2);
    assert_eq!(catalog.items.len(), 2 * 2 * 3);
    let sizes: std::collections::BTreeSet<(String, u32, u32, u32)> = catalog
        .items
        .iter()
        .map(|i| {
            let name = i.path.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                catalog.datasets[i.dataset].resolution,
                i.bucket.width,
                i.bucket.height,
            )
        })
        .collect();
    let expected: std::collections::BTreeSet<_> = [
        ("small.png", 256, 192, 96),
        ("small.png", 512, 192, 96),
        ("wide.png", 256, 288, 224),
        ("wide.png", 512, 576, 448),
    ]
    .into_iter()
    .map(|(n, r, w, h)| (n.to_string(), r, w, h))
    .collect();
    assert_eq!(sizes, expected);
    assert!(catalog.items.iter().all(|i| i.network_weight == 0.5
        && i.loss_multiplier == 2.0
        && i.num_repeats == 3
        && i.bucket.frames == 1));

    let wide: Vec<_> = catalog
        .items
        .iter()
        .filter(|i| i.path.ends_with("wide.png") && i.bucket.width == 288)
        .collect();
    assert_eq!(wide.len(), 3);
    let plain = catalog
        .load_frames(wide.iter().find(|i| !i.flip.x && !i.flip.y).unwrap())
        .unwrap()
        .frames;
    let mirrored = catalog
        .load_frames(wide.iter().find(|i| i.flip.x).unwrap())
        .unwrap()
        .frames;
    let upside = catalog
        .load_frames(wide.iter().find(|i| i.flip.y).unwrap())
        .unwrap()
        .frames;
    assert_eq!((plain.width, plain.height), (288, 224));
    // 640×480 → 299×224 cover, crop x 5: the dark band covers about x < 32.
    assert!(plain.pixel(0, 100, 10)[0] < 30);
    assert!(plain.pixel(0, 100, 280)[0] > 220);
    assert!(mirrored.pixel(0, 100, 280)[0] < 30);
    assert!(mirrored.pixel(0, 100, 10)[0] > 220);
    assert_eq!(upside.pixel(0, 0, 10), plain.pixel(0, 223, 10));
}

#[test]
fn frames_are_sampled_exactly_as_the_settings_say() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    numbered_clip(&root.join("long.mp4"), 64, 48, "10", 30, H264, &[]);
    numbered_clip(&root.join("short.mp4"), 64, 48, "10", 3, H264, &[]);
    numbered_clip(&root.join("webm.webm"), 64, 48, "20", 50, VP9, &[]);
    solid_image(&root.join("still.png"), 64, 48, [1, 2, 3]);

    let indices_of = |catalog: &Catalog, name: &str| -> (Vec<usize>, Vec<usize>) {
        let item = caption_of(catalog, name);
        let loaded = catalog.load_frames(item).unwrap();
        (item.frame_indices.clone(), frame_numbers(&loaded.frames))
    };

    // Spread over the whole clip: round(i·(N−1)/(F−1)).
    let mut s = spec(root);
    s.num_frames = 5;
    let catalog = Catalog::load(&[s.clone()], &job(None)).unwrap();
    let (plan, decoded) = indices_of(&catalog, "long.mp4");
    assert_eq!(plan, [0, 7, 14, 22, 29]);
    assert_eq!(decoded, plan);
    let (plan, decoded) = indices_of(&catalog, "short.mp4");
    assert_eq!(plan, [0, 0, 1, 2, 2]);
    assert_eq!(decoded, plan);
    let (plan, decoded) = indices_of(&catalog, "webm.webm");
    assert_eq!(plan, [0, 12, 24, 37, 49]);
    assert_eq!(decoded, plan);
    let still = caption_of(&catalog, "still.png");
    assert_eq!(still.bucket.frames, 1);
    assert_eq!(
        caption_of(&catalog, "long.mp4").bucket.to_string(),
        "64x48x5f"
    );
    let short = catalog
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::ShortClip)
        .unwrap();
    assert_eq!(short.path, root.join("short.mp4"));

    // Real time at 5 fps from a 10 fps clip: every second frame from a seeded start.
    s.shrink_video_to_frames = false;
    s.fps = 5.0;
    let catalog = Catalog::load(&[s.clone()], &job(None)).unwrap();
    let (plan, decoded) = indices_of(&catalog, "long.mp4");
    let start = plan[0];
    assert_eq!(plan, [start, start + 2, start + 4, start + 6, start + 8]);
    assert!(start + 8 <= 29);
    assert_eq!(decoded, plan);
    // The start depends on the job seed (a folder with only this clip keeps the probes few).
    let alone = root.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(root.join("long.mp4"), alone.join("long.mp4")).unwrap();
    let mut s_alone = s.clone();
    s_alone.folder_path = alone;
    let starts: std::collections::BTreeSet<usize> = (0..5)
        .map(|seed| {
            let mut j = job(None);
            j.seed = seed;
            caption_of(&Catalog::load(&[s_alone.clone()], &j).unwrap(), "long.mp4").frame_indices[0]
        })
        .collect();
    assert!(
        starts.len() > 2,
        "the start depends on the seed: {starts:?}"
    );
    // The 50-frame 20 fps clip at 5 fps needs 17 frames of span for 5 frames: fits.
    let (plan, decoded) = indices_of(&catalog, "webm.webm");
    assert_eq!(
        plan.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
        [4, 4, 4, 4]
    );
    assert_eq!(decoded, plan);

    // Auto frame count: 30 frames at 10 fps = 3 s; at 4 fps → 12 → 9 frames (4n+1), in real time.
    s.auto_frame_count = true;
    s.fps = 4.0;
    let catalog = Catalog::load(&[s.clone()], &job(None)).unwrap();
    let (plan, decoded) = indices_of(&catalog, "long.mp4");
    // offsets round(i · 2.5) with ties to even
    assert_eq!(plan, [0, 2, 5, 8, 10, 12, 15, 18, 20]);
    assert_eq!(decoded, plan);
    assert_eq!(caption_of(&catalog, "long.mp4").bucket.frames, 9);
    assert_eq!(caption_of(&catalog, "short.mp4").bucket.frames, 1);

    // num_frames 1: a video gives its first frame (AI Toolkit would ignore videos).
    let one = spec(root);
    let catalog = Catalog::load(&[one], &job(None)).unwrap();
    let (plan, decoded) = indices_of(&catalog, "long.mp4");
    assert_eq!((plan, decoded), (vec![0], vec![0]));
}

#[test]
fn clip_sizes_and_frame_rates_give_their_buckets() {
    let dir = tempfile::tempdir().unwrap();
    testsrc_clip(&dir.path().join("wide.mp4"), 320, 180, "24", 10);
    testsrc_clip(&dir.path().join("tall.mp4"), 180, 320, "30", 10);
    testsrc_clip(&dir.path().join("tiny.mp4"), 40, 24, "12", 10);
    let mut s = spec(dir.path());
    s.resolutions = vec![128];
    s.num_frames = 9;
    let catalog = Catalog::load(&[s], &job(None)).unwrap();
    let bucket = |name: &str| caption_of(&catalog, name).bucket.to_string();
    // 320×180 at 128: ideal 170.7×96 → 160×96 (176×96 would exceed 128²).
    assert_eq!(bucket("wide.mp4"), "160x96x9f");
    assert_eq!(bucket("tall.mp4"), "96x160x9f");
    // Never upscaled: 40×24 → 32×16.
    assert_eq!(bucket("tiny.mp4"), "32x16x9f");
    let frames = catalog
        .load_frames(caption_of(&catalog, "tall.mp4"))
        .unwrap()
        .frames;
    assert_eq!((frames.frames, frames.width, frames.height), (9, 96, 160));
}

#[test]
fn bad_files_are_reported_by_name_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    numbered_clip(&root.join("good.mp4"), 64, 48, "10", 20, H264, &[]);
    // Cut in half: the index at the end is gone.
    let full = std::fs::read(root.join("good.mp4")).unwrap();
    write(&root.join("cut.mp4"), &full[..full.len() / 2]);
    write(&root.join("empty.mov"), b"");
    write(&root.join("text.mkv"), b"plain text, not matroska");
    solid_image(&root.join("tiny.png"), 8, 8, [0, 0, 0]);
    image::RgbaImage::from_pixel(32, 32, image::Rgba([255, 0, 0, 128]))
        .save(root.join("alpha.png"))
        .unwrap();
    write(&root.join("broken.jpg"), b"\xff\xd8\xff garbage");
    let mut s = spec(root);
    s.num_frames = 5;
    let catalog = Catalog::load(&[s], &job(None)).unwrap();
    let usable: Vec<String> = catalog
        .usable_items()
        .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(usable, ["alpha.png", "good.mp4"]);
    let kind_of = |name: &str| {
        catalog
            .problems
            .iter()
            .filter(|p| p.path == root.join(name))
            .map(|p| p.kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(kind_of("cut.mp4"), [ProblemKind::Unreadable]);
    assert_eq!(kind_of("empty.mov"), [ProblemKind::ZeroLength]);
    assert_eq!(kind_of("text.mkv"), [ProblemKind::Unreadable]);
    assert_eq!(kind_of("tiny.png"), [ProblemKind::TooSmall]);
    assert_eq!(kind_of("broken.jpg"), [ProblemKind::Unreadable]);
    assert!(kind_of("alpha.png").contains(&ProblemKind::Alpha));
    let summary = wanlora_data::summarise(&catalog.problems);
    for name in [
        "cut.mp4",
        "empty.mov",
        "text.mkv",
        "tiny.png",
        "broken.jpg",
        "alpha.png",
    ] {
        assert!(summary.contains(name), "{name} missing from:\n{summary}");
    }
    assert!(summary.starts_with("5 file(s) skipped"), "{summary}");
}

#[test]
fn a_clip_with_fewer_frames_than_its_header_says_is_recovered_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Index first (+faststart), then cut: ffprobe still reports 40 frames, only ~16 decode.
    numbered_clip(
        &root.join("whole.mp4"),
        64,
        48,
        "10",
        40,
        H264,
        &["-movflags", "+faststart"],
    );
    let whole = std::fs::read(root.join("whole.mp4")).unwrap();
    write(&root.join("cut.mp4"), &whole[..whole.len() * 6 / 10]);
    // Media data zeroed: nothing decodes.
    let mdat = whole.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    let mut zeroed = whole.clone();
    zeroed[mdat..].fill(0);
    write(&root.join("zeroed.mp4"), &zeroed);
    let mut s = spec(root);
    s.num_frames = 5;
    let mut catalog = Catalog::load(&[s], &job(None)).unwrap();
    // Found when the catalog loads (demuxing, no decoding): frames come from those it holds.
    let truncated = catalog
        .problems
        .iter()
        .find(|p| p.path == root.join("cut.mp4") && p.kind == ProblemKind::Truncated)
        .expect("cut.mp4 reported as truncated without --decode");
    assert!(!truncated.kind.skips_item());
    assert!(
        truncated.message.contains("the header lists 40 frames"),
        "{}",
        truncated.message
    );
    let cut = caption_of(&catalog, "cut.mp4").clone();
    let loaded = catalog.load_frames(&cut).unwrap();
    let real = wanlora_data::media::count_decoded_frames(&cut.path).unwrap();
    assert!(real > 5 && real < 40, "{real}");
    assert!(
        loaded.frame_indices.iter().all(|&i| i < real),
        "{:?} of {real}",
        loaded.frame_indices
    );
    assert_eq!(frame_numbers(&loaded.frames), loaded.frame_indices);
    assert!(!catalog
        .problems
        .iter()
        .any(|p| p.kind == ProblemKind::Truncated
            && (p.path == root.join("whole.mp4") || p.path == root.join("zeroed.mp4"))));

    // `dataset inspect --decode` finds the clip whose data does not decode before training.
    let found = wanlora_data::check_decoding(&mut catalog, false);
    let kinds: Vec<_> = found
        .iter()
        .map(|p| {
            (
                p.path.file_name().unwrap().to_string_lossy().into_owned(),
                p.kind,
            )
        })
        .collect();
    assert!(
        kinds.contains(&("zeroed.mp4".into(), ProblemKind::DecodeFailed)),
        "{kinds:?}"
    );
    let usable: Vec<_> = catalog.usable_items().map(|i| i.path.clone()).collect();
    assert_eq!(usable, [root.join("cut.mp4"), root.join("whole.mp4")]);
}

#[test]
fn datasets_without_usable_items_are_errors_that_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    write(&bad.join("a.mp4"), b"");
    write(&bad.join("b.webm"), b"junk");
    let err = Catalog::load(&[spec(&bad)], &job(None)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::EmptyDataset { .. }));
    assert!(
        text.starts_with("datasets[0].folder_path: no usable item in"),
        "{text}"
    );
    assert!(text.contains(&bad.display().to_string()));
    assert!(text.contains("a.mp4: the clip has no frames"), "{text}");
    assert!(text.contains("b.webm"), "{text}");

    let nothing = dir.path().join("nothing");
    write(&nothing.join("notes.txt"), "no media here");
    let good = dir.path().join("good");
    solid_image(&good.join("x.png"), 32, 32, [0, 0, 0]);
    let err = Catalog::load(&[spec(&good), spec(&nothing)], &job(None)).unwrap_err();
    assert!(matches!(err, DataError::NoMedia { .. }));
    assert!(
        err.to_string()
            .starts_with("datasets[1].folder_path: no video"),
        "{err}"
    );

    let err = Catalog::load(&[spec(&dir.path().join("absent"))], &job(None)).unwrap_err();
    assert!(matches!(err, DataError::FolderMissing { .. }), "{err}");
    let mut s = spec(&good);
    s.num_frames = 0;
    let err = Catalog::load(&[s], &job(None)).unwrap_err();
    assert_eq!(
        err.to_string().split(':').next(),
        Some("datasets[0].num_frames")
    );
    assert!(matches!(
        Catalog::load(&[], &job(None)),
        Err(DataError::NoDatasets)
    ));
}

#[test]
fn several_datasets_keep_their_own_settings() {
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people");
    let reg = dir.path().join("reg");
    solid_image(&people.join("p.png"), 64, 64, [0, 0, 0]);
    solid_image(&reg.join("r.png"), 64, 64, [0, 0, 0]);
    write(&reg.join("r.txt"), "a person");
    let mut s_reg = spec(&reg);
    s_reg.is_reg = true;
    s_reg.network_weight = 0.0;
    let catalog = Catalog::load(&[spec(&people), s_reg], &job(Some("p3r5on"))).unwrap();
    assert_eq!(catalog.datasets.len(), 2);
    let r = caption_of(&catalog, "r.png");
    assert!(r.is_reg && r.network_weight == 0.0 && r.dataset == 1);
    assert_eq!(r.caption, "a person");
    assert_eq!(caption_of(&catalog, "p.png").caption, "p3r5on");
}

#[test]
fn unsupported_formats_empty_captions_and_odd_names_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    solid_image(&root.join("ok.png"), 32, 32, [1, 2, 3]);
    write(&root.join("ok.txt"), "a red square");
    solid_image(&root.join("blank.png"), 32, 32, [1, 2, 3]);
    write(&root.join("blank.txt"), " \n\t \n");
    solid_image(&root.join("none.png"), 32, 32, [1, 2, 3]);
    write(&root.join("anim.gif"), b"GIF89a");
    solid_image(&root.join("two\nlines.png"), 32, 32, [1, 2, 3]);
    let catalog = Catalog::load(&[spec(root)], &job(None)).unwrap();
    let problem = |name: &str| {
        catalog
            .problems
            .iter()
            .filter(|p| p.path == root.join(name))
            .map(|p| (p.kind, p.message.clone()))
            .collect::<Vec<_>>()
    };
    // A whitespace-only caption file is an empty caption, named by the caption file.
    let blank = problem("blank.txt");
    assert_eq!(blank.len(), 1, "{blank:?}");
    assert_eq!(blank[0].0, ProblemKind::EmptyCaption);
    assert!(blank[0].1.contains("empty or holds only whitespace"));
    assert!(problem("blank.png").is_empty());
    assert_eq!(problem("none.png")[0].0, ProblemKind::MissingCaption);
    // A GIF is skipped with the reason, not passed over.
    let gif = problem("anim.gif");
    assert_eq!(gif.len(), 1);
    assert_eq!(gif[0].0, ProblemKind::UnsupportedFormat);
    assert!(gif[0].1.contains("convert it to .mp4"), "{}", gif[0].1);
    // A newline in a name does not break the report's lines.
    let summary = wanlora_data::summarise(&catalog.problems);
    let escaped = format!("{:?}", root.join("two\nlines.png").display().to_string());
    assert!(summary.contains(&escaped), "{summary}");
    for line in summary.lines().skip(1) {
        assert!(line.starts_with("  "), "a line broke: {line:?}\n{summary}");
    }
}

/// A PNG header (signature, IHDR, the start of an IDAT) claiming `width`×`height` 8-bit grey.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn images_above_the_pixel_limit_are_refused_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    solid_image(&root.join("ok.png"), 32, 32, [1, 2, 3]);
    write(&root.join("huge.png"), png_header(30_000, 30_000));
    let started = std::time::Instant::now();
    let catalog = Catalog::load(&[spec(root)], &job(None)).unwrap();
    // Nothing was decoded: a 30000×30000 decode takes seconds and gigabytes.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let huge: Vec<_> = catalog
        .problems
        .iter()
        .filter(|p| p.path == root.join("huge.png"))
        .collect();
    assert_eq!(huge.len(), 1);
    assert_eq!(huge[0].kind, ProblemKind::TooLarge);
    assert!(huge[0].kind.skips_item());
    assert!(
        huge[0]
            .message
            .contains("30000×30000 is 900 megapixels, above the limit of 67"),
        "{}",
        huge[0].message
    );
    let usable: Vec<_> = catalog.usable_items().map(|i| i.path.clone()).collect();
    assert_eq!(usable, [root.join("ok.png")]);
}
