//! The `dataset inspect` report.

mod common;

use common::*;
use wanlora_data::{inspect, Catalog, DatasetSpec, JobContext};

#[test]
fn report_counts_items_per_bucket_lists_captions_and_problems() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("clips");
    testsrc_clip(&root.join("wide.mp4"), 128, 72, "24", 30);
    testsrc_clip(&root.join("short.mp4"), 128, 72, "24", 3);
    solid_image(&root.join("still.png"), 64, 64, [0, 0, 0]);
    write(&root.join("wide.txt"), "a [trigger] dances");
    write(&root.join("broken.mp4"), b"no video");
    let spec = DatasetSpec {
        folder_path: root.clone(),
        resolutions: vec![64],
        num_frames: 9,
        flip_x: true,
        num_repeats: 2,
        default_caption: Some("a still".into()),
        ..DatasetSpec::default()
    };
    let job = JobContext {
        name: "demo".into(),
        trigger_word: Some("zk".into()),
        seed: 1,
        batch_size: 1,
        ..JobContext::default()
    };
    let catalog = Catalog::load(&[spec], &job).unwrap();
    let report = inspect(&catalog, 2);
    assert_eq!(report.datasets.len(), 1);
    let d = &report.datasets[0];
    assert_eq!((d.files, d.items, d.items_per_epoch), (3, 6, 12));
    let buckets: Vec<(String, usize)> = report
        .buckets
        .iter()
        .map(|b| (b.bucket.to_string(), b.items))
        .collect();
    // 128×72 at 64: ideal 85.3×48 → 80×48; both clips share it, with 9 frames.
    assert_eq!(
        buckets,
        [("64x64x1f".to_string(), 2), ("80x48x9f".to_string(), 4)]
    );
    assert_eq!(report.captions.len(), 2);
    assert_eq!(report.captions_not_shown, 1);
    assert_eq!(report.caption_sources.own_file, 1);
    assert_eq!(report.caption_sources.default_caption, 2);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);

    let text = report.to_string();
    assert!(text.contains("80x48x9f"), "{text}");
    assert!(text.contains("4 item(s)"), "{text}");
    assert!(text.contains("flip variants: none, flip_x"), "{text}");
    assert!(text.contains("… and 1 more"), "{text}");
    assert!(text.contains("broken.mp4"), "{text}");
    assert!(text.contains("short.mp4"), "{text}");
    assert!(text.contains("1 file(s) skipped, 1 warning(s)"), "{text}");
    let resolved: Vec<&str> = report.captions.iter().map(|c| c.caption.as_str()).collect();
    assert_eq!(resolved, ["zk a still", "zk a still"]);
    let full = inspect(&catalog, 10);
    assert!(full.captions.iter().any(|c| c.caption == "a zk dances"));

    // The report is also JSON for the web UI.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["buckets"][1]["bucket"]["frames"], 9);
}
