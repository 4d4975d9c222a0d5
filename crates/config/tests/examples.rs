//! The six preset jobs in examples/: each validates as-is, round-trips through YAML, and is the preset the
//! crate embeds.

use std::path::{Path, PathBuf};
use wanlora_config::presets::{self, Card, Recipe};
use wanlora_config::{
    load_job, parse_job, to_yaml, ContentOrStyle, Format, ModelArch, SampleFormat, Sampler,
    Severity, SourceInfo,
};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // AI Toolkit's own example, kept verbatim (tests/aitk_example.rs), is not a preset.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("aitk_"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn there_are_nine_examples_motion_style_character_for_24gb_and_h100_and_t2v_24gb() {
    let names: Vec<String> = example_files()
        .iter()
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "character_24gb",
            "character_h100",
            "motion_24gb",
            "motion_h100",
            "style_24gb",
            "style_h100",
            "t2v_character_24gb",
            "t2v_motion_24gb",
            "t2v_style_24gb"
        ]
    );
}

#[test]
fn every_example_validates_without_errors() {
    for path in example_files() {
        let loaded = load_job(&path).unwrap_or_else(|e| panic!("{e}"));
        let job = &loaded.job;
        let process = job.process();
        let t2v = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("t2v_"));
        let arch = if t2v {
            ModelArch::Wan22_14b
        } else {
            ModelArch::Wan22_14bI2v
        };
        assert_eq!(process.model.arch, arch, "{}", path.display());
        assert_eq!(
            process.model.name_or_path.as_deref(),
            Some(arch.facts().diffusers_repo)
        );
        // Each example spells out its arch's official boundary, shift and guidance pair.
        let facts = arch.facts();
        assert_eq!(process.model.boundary_ratio, facts.boundary_ratio);
        assert_eq!(process.sample.shift, facts.sample_shift);
        let first = process.sample.resolve(0).expect("a sample");
        assert_eq!(
            (first.guidance_scale, first.guidance_scale_2),
            (facts.guidance_high, facts.guidance_low)
        );
        assert!(!process.sample.samples.is_empty());
        if t2v {
            // Text-to-video samples start from the prompt alone.
            assert!(process.sample.samples.iter().all(|s| s.ctrl_img.is_none()));
            assert!(
                loaded.warnings.iter().all(|w| !w.key.contains("ctrl_img")),
                "{:?}",
                loaded.warnings
            );
        }
        for item in process.sample.samples.iter().filter(|_| !t2v) {
            let image = item
                .ctrl_img
                .as_deref()
                .expect("every example sample has a start frame");
            assert!(
                Path::new(image).is_absolute() && Path::new(image).is_file(),
                "{image}"
            );
        }
        for dataset in &process.datasets {
            assert!(
                Path::new(&dataset.folder_path).is_dir(),
                "{}",
                dataset.folder_path
            );
        }
        // The only warning an example may carry is the DOP + cached-embeddings explanation.
        for warning in &loaded.warnings {
            assert_eq!(warning.severity, Severity::Warning);
            assert!(
                warning.key.ends_with("train.cache_text_embeddings"),
                "{}",
                warning.display_in("example")
            );
        }
    }
}

#[test]
fn recipes_differ_where_the_guide_says() {
    let job = |id: &str| {
        presets::find(id)
            .unwrap_or_else(|| panic!("preset {id}"))
            .job()
    };
    for card in ["24gb", "h100"] {
        let motion = job(&format!("motion_{card}"));
        let style = job(&format!("style_{card}"));
        let character = job(&format!("character_{card}"));
        assert_eq!(
            motion.process().train.content_or_style,
            ContentOrStyle::Content
        );
        assert_eq!(
            style.process().train.content_or_style,
            ContentOrStyle::Style
        );
        let c = character.process();
        assert!(c.train.diff_output_preservation);
        assert!(!c.train.diff_output_preservation_class.is_empty());
        assert!(c.trigger_word.is_some());
    }
    for id in ["motion_24gb", "style_24gb", "character_24gb"] {
        let p = job(id);
        let m = &p.process().model;
        assert!(
            m.quantize && m.low_vram,
            "{id}: 24 GB presets use fp8 weights and low_vram"
        );
        assert_eq!(p.process().datasets[0].num_frames, 41);
    }
    for id in ["motion_h100", "style_h100", "character_h100"] {
        let p = job(id);
        assert!(
            !p.process().model.quantize,
            "{id}: H100 presets keep bf16 weights"
        );
        assert_eq!(p.process().sample.sampler, Sampler::Unipc);
    }
    assert_eq!(job("motion_h100").process().datasets[0].num_frames, 81);
    assert_eq!(
        job("style_h100").process().datasets[0].resolution,
        vec![512, 768]
    );
}

#[test]
fn every_example_round_trips_through_yaml() {
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let source = SourceInfo::for_file(&path);
        let job = parse_job(&text, &source).job.expect("parses");
        let yaml = to_yaml(&job);
        let again = parse_job(&yaml, &source);
        assert!(
            again.is_valid(),
            "{}: {:#?}\n{yaml}",
            path.display(),
            again.findings
        );
        assert_eq!(
            again.job.as_ref(),
            Some(&job),
            "{}:\n{yaml}",
            path.display()
        );
        // A second trip writes the same text.
        assert_eq!(to_yaml(again.job.as_ref().expect("job")), yaml);
    }
}

#[test]
fn presets_are_the_example_files() {
    assert_eq!(presets::all().len(), 9);
    for preset in presets::all() {
        let path = examples_dir().join(format!("{}.yaml", preset.id));
        let on_disk = std::fs::read_to_string(&path).expect("example file");
        assert_eq!(
            preset.yaml,
            on_disk,
            "{} differs from {}",
            preset.id,
            path.display()
        );
        let parsed = parse_job(&on_disk, &SourceInfo::for_file(&path))
            .job
            .expect("parses");
        assert_eq!(preset.job(), parsed);
        let expected_recipe = match preset.id.trim_start_matches("t2v_").split('_').next() {
            Some("motion") => Recipe::Motion,
            Some("style") => Recipe::Style,
            _ => Recipe::Character,
        };
        assert_eq!(preset.recipe, expected_recipe);
        assert_eq!(
            preset.card,
            if preset.id.ends_with("h100") {
                Card::H100
            } else {
                Card::Gpu24Gb
            }
        );
    }
}

#[test]
fn examples_read_as_json_give_the_same_job() {
    for path in example_files() {
        let text = std::fs::read_to_string(&path).expect("readable");
        let source = SourceInfo::for_file(&path);
        let job = parse_job(&text, &source).job.expect("parses");
        let json = serde_json::to_string_pretty(&job).expect("serialises");
        let json_source = SourceInfo {
            format: Format::Json,
            ..source
        };
        let from_json = parse_job(&json, &json_source);
        assert!(from_json.is_valid(), "{:#?}", from_json.findings);
        assert_eq!(from_json.job, Some(job.clone()));
        // And serde alone (what the UI posts back) reads the same job.
        let deserialized: wanlora_config::Job = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(deserialized, job);
    }
}

#[test]
fn sample_settings_resolve_from_the_section() {
    let job = presets::find("motion_24gb").expect("preset").job();
    let sample = &job.process().sample;
    let first = sample.resolve(0).expect("sample 0");
    assert_eq!(
        (first.width, first.height, first.num_frames),
        (512, 512, 41)
    );
    assert_eq!(first.format, SampleFormat::Mp4);
    assert_eq!((first.guidance_scale, first.guidance_scale_2), (3.5, 3.5));
    assert_eq!(sample.resolve(1).expect("sample 1").seed, first.seed + 1);
}
