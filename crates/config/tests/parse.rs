//! Reading AI Toolkit's job format: defaults, aliases, substitutions, JSON, and the key list.

use std::path::{Path, PathBuf};
use wanlora_config::{
    known_keys, load_job, parse_job_with_env, to_yaml, BlockCount, ConfigError, ContentOrStyle,
    CtrlImgResize, Format, KeyKind, LossType, LrScheduler, ModelArch, NetworkType, Optimizer,
    Origin, ProcessType, QType, SampleFormat, Sampler, SaveDtype, SaveFormat, Severity, SourceInfo,
    Support, TimestepType, TrainDtype, Validated,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn source(format: Format) -> SourceInfo {
    SourceInfo {
        name: "test".into(),
        format,
        base_dir: data_dir(),
    }
}

fn parse(yaml: &str) -> Validated {
    parse_job_with_env(yaml, &source(Format::Yaml), &|_| None)
}

/// The smallest job that validates: only what AI Toolkit requires plus a start frame.
const MINIMAL: &str = "
job: extension
config:
  name: minimal
  process:
    - type: sd_trainer
      datasets:
        - folder_path: data/motion
      model:
        name_or_path: ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16
        arch: wan22_14b_i2v
";

#[test]
fn defaults_are_ai_toolkits_code_defaults() {
    let validated = parse(MINIMAL);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    let job = validated.job.expect("job");
    let p = job.process();
    assert_eq!(p.process_type, ProcessType::SdTrainer);
    // network (toolkit/config_modules.py NetworkConfig)
    assert_eq!(p.network.network_type, NetworkType::Lora);
    assert_eq!(p.network.linear, 4);
    // AI Toolkit forces alpha = rank for Wan; absent linear_alpha means the same here.
    assert_eq!(p.network.alpha(), 4.0);
    // save
    assert_eq!(p.save.save_every, 1000);
    assert_eq!(p.save.dtype, SaveDtype::Float16);
    assert_eq!(p.save.max_step_saves_to_keep, 5);
    assert_eq!(p.save.save_format, SaveFormat::Safetensors);
    // datasets
    let d = &p.datasets[0];
    assert_eq!(d.caption_ext, ".txt");
    assert_eq!(d.caption_dropout_rate, 0.0);
    assert_eq!(d.resolution, vec![512]);
    assert_eq!(d.num_frames, 1);
    assert!(d.shrink_video_to_frames);
    assert_eq!(d.fps, 24);
    assert!(!d.auto_frame_count && d.trim_auto_frame_count_tail);
    assert!(!d.flip_x && !d.flip_y && !d.is_reg);
    assert_eq!(
        (d.network_weight, d.loss_multiplier, d.num_repeats),
        (1.0, 1.0, 1)
    );
    assert!(!d.cache_latents && !d.cache_latents_to_disk && !d.cache_text_embeddings);
    // train
    let t = &p.train;
    assert_eq!(
        (t.steps, t.batch_size, t.gradient_accumulation),
        (1000, 1, 1)
    );
    assert_eq!(t.lr, 1e-6);
    assert_eq!(t.optimizer, Optimizer::AdamW);
    assert_eq!(t.optimizer_params.weight_decay, 0.01);
    assert_eq!(t.optimizer_params.betas, [0.9, 0.999]);
    assert_eq!(t.optimizer_params.eps, 1e-6);
    assert_eq!(t.lr_scheduler, LrScheduler::Constant);
    assert_eq!(t.max_grad_norm, 1.0);
    assert_eq!(t.dtype, TrainDtype::Fp32);
    assert_eq!(t.timestep_type, TimestepType::Sigmoid);
    assert_eq!(t.content_or_style, ContentOrStyle::Balanced);
    assert_eq!(t.switch_boundary_every, 1);
    assert_eq!(t.loss_type, LossType::Mse);
    assert!(!t.diff_output_preservation && !t.blank_prompt_preservation);
    assert_eq!(t.diff_output_preservation_multiplier, 1.0);
    assert_eq!(t.diff_output_preservation_class, "");
    assert!(!t.do_differential_guidance);
    assert_eq!(t.differential_guidance_scale, 3.0);
    assert!(!t.ema_config.use_ema);
    assert_eq!(t.ema_config.ema_decay, 0.999);
    assert!(!t.unload_text_encoder && !t.cache_text_embeddings);
    assert!(!t.skip_first_sample && !t.force_first_sample && !t.disable_sampling);
    // model
    let m = &p.model;
    assert!(!m.quantize && !m.quantizes_text_encoder() && !m.low_vram);
    assert_eq!((m.qtype, m.qtype_te), (QType::Qfloat8, QType::Qfloat8));
    assert!(
        m.model_kwargs.train_high_noise
            && m.model_kwargs.train_low_noise
            && !m.model_kwargs.vae_tiling
    );
    assert_eq!(
        m.extras(),
        Some("ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16")
    );
    // sample
    let s = &p.sample;
    assert_eq!((s.sample_every, s.sample_start_step), (100, 0));
    assert_eq!((s.width, s.height), (512, 512));
    assert_eq!((s.seed, s.walk_seed), (0, false));
    assert_eq!(s.guidance_scale, 7.0);
    assert_eq!(s.sample_steps, 20);
    assert_eq!(s.network_multiplier, 1.0);
    assert_eq!((s.num_frames, s.fps), (1, 16));
    assert_eq!(s.neg, "");
    // logging
    assert_eq!(p.logging.log_every, 100);
    assert!(!p.logging.verbose);
    assert!(job.meta.is_empty());
}

#[test]
fn our_keys_have_their_documented_defaults() {
    let job = parse(MINIMAL).job.expect("job");
    let p = job.process();
    assert_eq!(p.model.boundary_ratio, 0.9);
    assert_eq!(p.sample.guidance_scale_2, None);
    assert_eq!(p.sample.shift, 5.0);
    assert_eq!(p.sample.ctrl_img_resize, CtrlImgResize::Crop);
    assert_eq!(p.sample.sampler, Sampler::Flowmatch);
    assert_eq!(p.sample.format, None);
    assert_eq!(p.sample.format_for(41), SampleFormat::Mp4);
    assert_eq!(p.sample.format_for(1), SampleFormat::Jpg);
    assert_eq!(p.train.keep_blocks, BlockCount::Auto);
    assert_eq!(p.train.keep_attention, BlockCount::Auto);
    assert_eq!(p.train.lr_warmup_steps, 0);
    assert_eq!(p.training_folder, "output");
    assert_eq!(p.device, "cuda");
    assert_eq!(job.output_folder(), Path::new("output/minimal"));
}

#[test]
fn aliases_and_legacy_forms() {
    let yaml = "
job: extension
config:
  name: aliases
  process:
    - type: ui_trainer
      network: {type: LoRA, rank: 16, alpha: 8}
      save: {dtype: fp16}
      datasets:
        - dataset_path: data/motion
          caption_type: caption
          resolution: 768
      train:
        optimizer: AdamW8bit
        loss_type: l1
        dtype: bfloat16
        lr: '2e-4'
        loss_target: noise
        gradient_checkpointing: true
        noise_scheduler: ddpm
      model:
        name_or_path: ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16
        arch: 'wan22_14b_i2v:video'
        quantize: true
        qtype: qfloat8
      sample:
        sampler: ddpm
        prompts:
          - 'a cat jumps --ctrl_img data/start_frames/motion.png --n blurry --seed 3'
";
    let validated = parse(yaml);
    let warnings: Vec<String> = validated.warnings().map(|w| w.to_string()).collect();
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    let job = validated.job.expect("job");
    let p = job.process();
    assert_eq!(p.process_type, ProcessType::UiTrainer);
    assert_eq!(p.network.linear, 16);
    assert_eq!(p.network.linear_alpha, Some(8.0));
    assert_eq!(p.save.dtype, SaveDtype::Float16);
    assert_eq!(p.datasets[0].folder_path, "data/motion");
    assert_eq!(p.datasets[0].caption_ext, ".caption");
    assert_eq!(p.datasets[0].resolution, vec![768]);
    assert_eq!(p.train.optimizer, Optimizer::AdamW8bit);
    assert_eq!(p.train.loss_type, LossType::Mae);
    assert_eq!(p.train.dtype, TrainDtype::Bf16);
    assert_eq!(p.train.lr, 2e-4);
    assert_eq!(p.model.arch, ModelArch::Wan22_14bI2v);
    assert!(
        p.model.quantizes_text_encoder(),
        "quantize_te defaults to quantize"
    );
    assert_eq!(p.sample.sampler, Sampler::Flowmatch);
    let item = &p.sample.samples[0];
    assert_eq!(item.prompt, "a cat jumps");
    assert_eq!(
        item.ctrl_img.as_deref(),
        Some("data/start_frames/motion.png")
    );
    assert_eq!(item.neg.as_deref(), Some("blurry"));
    assert_eq!(item.seed, Some(3));
    // The only warning is the alpha/rank scale note.
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("linear_alpha"));
}

#[test]
fn env_vars_are_substituted_before_parsing() {
    let yaml = MINIMAL
        .replace("data/motion", "${WANLORA_TEST_DATA}/motion")
        .replace("minimal", "${RUN}");
    let env = |name: &str| match name {
        "WANLORA_TEST_DATA" => Some(data_dir().join("data").display().to_string()),
        "RUN" => Some("from_env".to_string()),
        _ => None,
    };
    let validated = parse_job_with_env(&yaml, &source(Format::Yaml), &env);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    let job = validated.job.expect("job");
    assert_eq!(job.config.name, "from_env");
    assert_eq!(
        job.process().datasets[0].folder_path,
        format!("{}/motion", data_dir().join("data").display())
    );
}

#[test]
fn unset_env_var_is_an_error_naming_it() {
    let yaml = MINIMAL.replace("data/motion", "${WANLORA_SURELY_UNSET_VAR}/motion");
    let validated = parse(&yaml);
    let errors: Vec<_> = validated.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].key, "${WANLORA_SURELY_UNSET_VAR}");
    assert_eq!(errors[0].line, Some(8));
}

#[test]
fn name_placeholder_is_replaced_everywhere() {
    let yaml = format!(
        "{MINIMAL}      training_folder: runs/[name]\nmeta:\n  name: '[name]'\n  note: 'v1 of [name]'\n"
    );
    let validated = parse(&yaml);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    let job = validated.job.expect("job");
    assert_eq!(job.process().training_folder, "runs/minimal");
    assert_eq!(job.meta["name"], "minimal");
    assert_eq!(job.meta["note"], "v1 of minimal");
}

#[test]
fn ai_toolkit_ui_json_is_accepted_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aitk/ui_wan22_i2v.json");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let src = SourceInfo::for_file(&path);
    assert_eq!(src.format, Format::Json);
    let validated = parse_job_with_env(&text, &src, &|_| None);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    // The UI writes conv: 16 and save_format: diffusers into every job: notes, not warnings.
    assert_eq!(validated.warnings().count(), 0, "{:#?}", validated.findings);
    let mut noted: Vec<&str> = validated.notes().map(|w| w.key.as_str()).collect();
    noted.sort();
    assert_eq!(
        noted,
        [
            "config.process[0].network.conv",
            "config.process[0].save.save_format"
        ],
        "{:#?}",
        validated.findings
    );
    // JSON findings carry positions too.
    let conv = validated
        .notes()
        .find(|w| w.key.ends_with("conv"))
        .expect("conv note");
    assert_eq!(conv.line, Some(17));
    let job = validated.job.expect("job");
    let p = job.process();
    assert_eq!(p.datasets[0].resolution, vec![512, 768, 1024]);
    assert_eq!(
        p.sample.samples[1].prompt,
        "ohwx woman walks through a market"
    );
    assert_eq!(
        p.sample.samples[1].neg.as_deref(),
        Some("blurry, low quality")
    );
    assert_eq!(job.meta["name"], "my_wan22_i2v_lora_v1");
}

#[test]
fn unknown_keys_warn_with_the_nearest_known_key() {
    let yaml = MINIMAL.replace(
        "        arch: wan22_14b_i2v\n",
        "        arch: wan22_14b_i2v\n        boundry_ratio: 0.9\n",
    );
    let validated = parse(&yaml);
    assert!(validated.is_valid());
    let warning = validated.warnings().next().expect("a warning");
    assert_eq!(warning.key, "config.process[0].model.boundry_ratio");
    assert_eq!((warning.line, warning.column), (Some(12), Some(9)));
    assert_eq!(warning.hint, "did you mean `boundary_ratio`?");
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = MINIMAL
        .replace("        - folder_path: data/motion\n", "        - folder_path: data/motion\n          num_frames: 40\n          resolution: 500\n")
        .replace("        arch: wan22_14b_i2v\n", "        arch: wan21\n        boundary_ratio: 0\n");
    let validated = parse(&yaml);
    let keys: Vec<&str> = validated.errors().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "config.process[0].datasets[0].num_frames",
            "config.process[0].datasets[0].resolution",
            "config.process[0].model.arch",
            "config.process[0].model.boundary_ratio",
        ]
    );
}

#[test]
fn unreadable_text_has_no_job() {
    for (text, message) in [
        ("", "empty"),
        ("- a\n- b\n", "a list"),
        ("a: [1\nb: 2\n", "not valid YAML"),
    ] {
        let validated = parse(text);
        assert!(validated.job.is_none());
        assert!(
            validated.findings[0].message.contains(message),
            "{:?}",
            validated.findings
        );
    }
    let bad_json = parse_job_with_env("{\"job\": \"extension\",,}", &source(Format::Json), &|_| {
        None
    });
    assert!(bad_json.job.is_none());
    assert_eq!(bad_json.findings[0].line, Some(1));
}

#[test]
fn round_trip_keeps_every_non_default_value() {
    let yaml = "
job: extension
config:
  name: everything
  process:
    - type: diffusion_trainer
      training_folder: /tmp/out
      device: cuda:1
      trigger_word: '1234'
      training_seed: 7
      performance_log_every: 5
      network: {linear: 64, linear_alpha: 64}
      save: {save_every: 100, dtype: float32, max_step_saves_to_keep: 2}
      datasets:
        - folder_path: data/style
          caption_ext: .md
          default_caption: a meadow
          trigger_word: mdw
          caption_dropout_rate: 0.1
          resolution: [256, 512]
          num_frames: 17
          shrink_video_to_frames: false
          fps: 16
          auto_frame_count: true
          trim_auto_frame_count_tail: false
          flip_x: true
          flip_y: true
          network_weight: 0.5
          loss_multiplier: 2
          num_repeats: 3
          cache_latents: true
          cache_text_embeddings: true
        - folder_path: data/motion
          is_reg: true
      train:
        steps: 10
        batch_size: 2
        gradient_accumulation: 3
        lr: 0.0003
        optimizer: adamw8bit
        optimizer_params: {weight_decay: 0, betas: [0.8, 0.99], eps: 1e-8}
        lr_scheduler: cosine
        lr_scheduler_params: {total_iters: 8, eta_min: 1e-6}
        lr_warmup_steps: 2
        max_grad_norm: 0
        dtype: bf16
        timestep_type: lognorm_blend
        content_or_style: style
        switch_boundary_every: 4
        loss_type: pseudo_huber
        skip_first_sample: true
        force_first_sample: true
        blank_prompt_preservation: true
        blank_prompt_preservation_multiplier: 0.5
        do_differential_guidance: true
        differential_guidance_scale: 2
        ema_config: {use_ema: true, ema_decay: 0.99}
        keep_blocks: 12
      model:
        name_or_path: /models/wan
        arch: wan22_14b_i2v
        extras_name_or_path: /models/extras
        te_name_or_path: /models/umt5.safetensors
        vae_path: /models/vae.safetensors
        tokenizer_path: /models/tokenizer.json
        high_noise_model_path: /models/high.safetensors
        low_noise_model_path: /models/low.safetensors
        boundary_ratio: 0.875
        quantize: true
        qtype: float8
        quantize_te: false
        low_vram: true
        model_kwargs: {train_high_noise: false, vae_tiling: true}
      sample:
        sampler: unipc
        sample_every: 5
        sample_start_step: 3
        width: 832
        height: 480
        neg: ugly
        seed: 9
        walk_seed: true
        guidance_scale: 5
        guidance_scale_2: 4
        sample_steps: 40
        network_multiplier: 0.8
        format: webp
        num_frames: 81
        fps: 24
        shift: 3
        ctrl_img_resize: stretch
        samples:
          - prompt: a fox
            ctrl_img: data/start_frames/style.png
            width: 480
            height: 832
            neg: dark
            seed: 1
            guidance_scale: 6
            guidance_scale_2: 2
            sample_steps: 30
            fps: 8
            num_frames: 33
            network_multiplier: 1.2
      logging: {log_every: 1, verbose: true}
meta: {version: '2.0', tags: [a, b]}
";
    let validated = parse(yaml);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    let job = validated.job.expect("job");
    let written = to_yaml(&job);
    let again = parse(&written);
    assert!(again.is_valid(), "{:#?}\n{written}", again.findings);
    assert_eq!(again.job.as_ref(), Some(&job), "{written}");
    // Spot-check that the values really are the non-defaults written above.
    let p = job.process();
    assert_eq!(p.trigger_word.as_deref(), Some("1234"));
    assert_eq!(p.train.schedule_steps(), 8);
    assert_eq!(p.train.warmup_steps(), 2);
    assert_eq!(
        p.sample.resolve(0).expect("item").format,
        SampleFormat::Webp
    );
    assert!(!p.model.model_kwargs.train_high_noise && p.model.model_kwargs.train_low_noise);
    assert_eq!(p.train.keep_blocks, BlockCount::Exactly(12));
}

#[test]
fn keep_blocks_and_attention_read_auto_or_a_number() {
    let with = |blocks: &str, attention: &str| {
        parse(&MINIMAL.replace(
            "      model:\n",
            &format!("      train:\n        keep_blocks: {blocks}\n        keep_attention: {attention}\n      model:\n"),
        ))
    };
    let v = with("auto", "Auto");
    assert!(v.is_valid(), "{:#?}", v.findings);
    let train = &v.job.as_ref().expect("job").process().train;
    assert_eq!(
        (train.keep_blocks, train.keep_attention),
        (BlockCount::Auto, BlockCount::Auto)
    );
    // auto is written back as auto, a number as the number.
    let again = parse(&to_yaml(v.job.as_ref().expect("job")));
    assert_eq!(
        again.job.expect("job").process().train.keep_attention,
        BlockCount::Auto
    );
    let v = with("0", "40");
    let train = &v.job.as_ref().expect("job").process().train;
    assert_eq!(
        (train.keep_blocks, train.keep_attention),
        (BlockCount::Exactly(0), BlockCount::Exactly(40))
    );
    let v = with("some", "41");
    let errors: Vec<(String, String)> = v
        .errors()
        .map(|f| (f.key.clone(), f.hint.clone()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "config.process[0].train.keep_blocks");
    assert!(errors[0].1.contains("auto"), "{errors:?}");
    assert_eq!(errors[1].0, "config.process[0].train.keep_attention");
    assert!(errors[1].1.contains("0 to 40"), "{errors:?}");
}

#[test]
fn load_job_resolves_relative_paths_and_reports_errors_with_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("clips");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::copy(
        data_dir().join("data/start_frames/motion.png"),
        dir.path().join("start.png"),
    )
    .expect("copy");
    let job_text = MINIMAL.replace("data/motion", "clips").replace(
        "      model:\n",
        "      sample:\n        samples:\n          - prompt: a\n            ctrl_img: start.png\n      model:\n",
    );
    let path = dir.path().join("job.yaml");
    std::fs::write(&path, &job_text).expect("write");
    let loaded = load_job(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Path::new(&loaded.job.process().datasets[0].folder_path),
        data
    );
    assert_eq!(
        loaded.job.process().sample.samples[0]
            .ctrl_img
            .as_deref()
            .map(Path::new),
        Some(dir.path().join("start.png").as_path())
    );

    std::fs::write(&path, job_text.replace("clips", "missing_clips")).expect("write");
    match load_job(&path) {
        Err(ConfigError::Invalid { findings, .. }) => {
            assert_eq!(
                findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .count(),
                1
            );
            let shown = ConfigError::Invalid {
                path: path.clone(),
                findings,
            }
            .to_string();
            assert!(
                shown.contains(&format!(
                    "{}:8:24: error: config.process[0].datasets[0].folder_path",
                    path.display()
                )),
                "{shown}"
            );
        }
        other => panic!("expected an invalid job, got {other:?}"),
    }
    match load_job(&dir.path().join("nope.yaml")) {
        Err(ConfigError::Read { path: p, .. }) => assert!(p.ends_with("nope.yaml")),
        other => panic!("expected a read error, got {other:?}"),
    }
}

#[test]
fn serde_refuses_a_job_without_exactly_one_process() {
    let job = parse(MINIMAL).job.expect("job");
    let mut value = serde_json::to_value(&job).expect("json");
    value["config"]["process"] = serde_json::json!([]);
    let err = serde_json::from_value::<wanlora_config::Job>(value).expect_err("no process");
    assert!(
        err.to_string().contains("exactly one trainer process"),
        "{err}"
    );
}

#[test]
fn known_keys_cover_every_serialized_key_and_mark_ours() {
    let keys = known_keys();
    let names: std::collections::HashSet<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(names.len(), keys.len(), "a key is listed twice");
    // Every key a serialized job can contain is a known key (list indices written as []).
    let job = parse(MINIMAL).job.expect("job");
    let mut value = serde_json::to_value(&job).expect("json");
    value["config"]["process"][0]["sample"]["samples"] =
        serde_json::json!([{"prompt": "x", "ctrl_img": "y", "guidance_scale_2": 3}]);
    value["config"]["process"][0]["network"]["linear_alpha"] = serde_json::json!(4);
    value["config"]["process"][0]["model"]["high_noise_model_path"] = serde_json::json!("h");
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                match v {
                    serde_json::Value::Array(items)
                        if items.iter().all(|i| i.is_object()) && !items.is_empty() =>
                    {
                        let index = if k == "process" { "[0]" } else { "[]" };
                        walk(&format!("{path}{index}"), &items[0], out)
                    }
                    serde_json::Value::Object(_) if k != "meta" => walk(&path, v, out),
                    _ => {}
                }
            }
        }
    }
    let mut serialized = Vec::new();
    walk("", &value, &mut serialized);
    for key in &serialized {
        assert!(
            names.contains(key.as_str()),
            "{key} is serialized but not in known_keys()"
        );
    }
    let ours: Vec<&str> = keys
        .iter()
        .filter(|k| k.origin == Origin::Wanlora)
        .map(|k| k.key.as_str())
        .collect();
    for key in [
        "config.process[0].model.boundary_ratio",
        "config.process[0].model.high_noise_model_path",
        "config.process[0].model.low_noise_model_path",
        "config.process[0].model.tokenizer_path",
        "config.process[0].sample.guidance_scale_2",
        "config.process[0].sample.shift",
        "config.process[0].sample.ctrl_img_resize",
        "config.process[0].sample.format",
        "config.process[0].train.keep_blocks",
        "config.process[0].train.keep_attention",
        "config.process[0].train.lr_warmup_steps",
    ] {
        assert!(ours.contains(&key), "{key} is not marked as wanlora's own");
    }
    let optimizer = keys
        .iter()
        .find(|k| k.key == "config.process[0].train.optimizer")
        .expect("optimizer");
    assert_eq!(optimizer.kind, KeyKind::Choice);
    assert_eq!(
        optimizer.choices,
        ["adamw", "adamw8bit", "prodigy", "adafactor"]
    );
    assert_eq!(optimizer.default, "adamw");
    let linear = keys
        .iter()
        .find(|k| k.key == "config.process[0].network.linear")
        .expect("linear");
    assert_eq!(linear.aliases, ["rank"]);
    let wandb = keys
        .iter()
        .find(|k| k.key == "config.process[0].logging.use_wandb")
        .expect("use_wandb");
    assert_eq!(wandb.support, Support::Refused);
}

#[test]
fn closed_sets_serialize_with_ai_toolkits_spellings() {
    fn name<T: serde::Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .expect("serialises")
            .as_str()
            .expect("a string")
            .to_string()
    }
    assert_eq!(name(Optimizer::AdamW), "adamw");
    assert_eq!(name(Optimizer::AdamW8bit), "adamw8bit");
    assert_eq!(
        name(LrScheduler::ConstantWithWarmup),
        "constant_with_warmup"
    );
    assert_eq!(name(TimestepType::LognormBlend), "lognorm_blend");
    assert_eq!(name(ContentOrStyle::Content), "content");
    assert_eq!(name(LossType::PseudoHuber), "pseudo_huber");
    assert_eq!(name(SaveDtype::Bf16), "bf16");
    assert_eq!(name(SaveDtype::Float16), "float16");
    assert_eq!(name(TrainDtype::Bf16), "bf16");
    assert_eq!(name(QType::Qfloat8), "qfloat8");
    assert_eq!(name(QType::Float8), "float8");
    assert_eq!(name(ModelArch::Wan22_14bI2v), "wan22_14b_i2v");
    assert_eq!(name(Sampler::Unipc), "unipc");
    assert_eq!(name(SampleFormat::Mp4), "mp4");
    assert_eq!(name(CtrlImgResize::Stretch), "stretch");
    assert_eq!(name(ProcessType::DiffusionTrainer), "diffusion_trainer");
    assert_eq!(name(NetworkType::Lora), "lora");
    // Aliases are read but never written.
    let euler: Sampler = serde_json::from_value(serde_json::json!("euler")).expect("alias");
    assert_eq!(name(euler), "flowmatch");
    assert!(serde_json::from_value::<Optimizer>(serde_json::json!("prodigy8bit")).is_err());
    let prodigy: Optimizer =
        serde_json::from_value(serde_json::json!("prodigyopt")).expect("alias");
    assert_eq!(name(prodigy), "prodigy");
    assert_eq!(name(Optimizer::Adafactor), "adafactor");
}

/// The `train:` section of MINIMAL replaced by `train`.
fn with_train(train: &str) -> Validated {
    parse(&format!("{MINIMAL}      train:\n{train}"))
}

#[test]
fn prodigy_reads_its_parameters_with_its_own_defaults() {
    let v = with_train(
        "        lr: 1.0\n        optimizer: prodigy\n        optimizer_params:\n          d_coef: 2\n          \
         decouple: false\n          use_bias_correction: true\n          safeguard_warmup: true\n          \
         beta3: 0.98\n          growth_rate: 1.5\n          d0: 1e-5\n",
    );
    assert!(v.findings.is_empty(), "{:#?}", v.findings);
    let job = v.job.clone().expect("job");
    let t = job.process().train.clone();
    assert_eq!(t.optimizer, Optimizer::Prodigy);
    assert_eq!(t.lr, 1.0);
    let o = &t.optimizer_params;
    // prodigyopt's default weight decay is 0; AI Toolkit passes eps 1e-6.
    assert_eq!((o.weight_decay, o.eps, o.betas), (0.0, 1e-6, [0.9, 0.999]));
    assert_eq!(
        (o.d_coef, o.d0, o.beta3, o.growth_rate),
        (2.0, 1e-5, Some(0.98), Some(1.5))
    );
    assert!(!o.decouple && o.use_bias_correction && o.safeguard_warmup);
    // Written back and read again, the same settings.
    let yaml = to_yaml(&job);
    let again = parse(&yaml).job.expect("job").process().train.clone();
    assert_eq!(again.optimizer_params, t.optimizer_params);
}

#[test]
fn prodigy_with_an_adam_sized_lr_runs_at_one_like_ai_toolkit() {
    let v = with_train("        lr: 0.0001\n        optimizer: prodigy\n");
    assert!(v.is_valid());
    assert_eq!(v.job.expect("job").process().train.lr, 1.0);
    assert!(v
        .findings
        .iter()
        .any(|f| f.key.ends_with("train.lr") && f.severity == Severity::Warning));
    let v = with_train("        lr: 0.5\n        optimizer: prodigy\n");
    assert!(v.findings.is_empty(), "{:#?}", v.findings);
    assert_eq!(v.job.expect("job").process().train.lr, 0.5);
}

#[test]
fn adafactor_reads_transformers_parameters() {
    let v = with_train(
        "        lr: 0.001\n        optimizer: adafactor\n        optimizer_params:\n          eps: [1e-29, 2e-3]\n          \
         beta1: 0.9\n          clip_threshold: 0.5\n          decay_rate: -0.7\n          scale_parameter: true\n          \
         weight_decay: 0.01\n",
    );
    assert!(v.findings.is_empty(), "{:#?}", v.findings);
    let t = v.job.expect("job").process().train.clone();
    let o = &t.optimizer_params;
    assert_eq!(t.optimizer, Optimizer::Adafactor);
    assert_eq!(o.adafactor_eps, [1e-29, 2e-3]);
    assert_eq!(
        (o.beta1, o.clip_threshold, o.decay_rate),
        (Some(0.9), 0.5, -0.7)
    );
    assert!(o.scale_parameter);
    assert_eq!(o.weight_decay, 0.01);
    // Without weight_decay Adafactor's own default, 0.
    let v = with_train("        optimizer: adafactor\n");
    assert_eq!(
        v.job
            .expect("job")
            .process()
            .train
            .optimizer_params
            .weight_decay,
        0.0
    );
    // relative_step replaces lr: AI Toolkit refuses it with an lr, so does wanlora.
    let v = with_train(
        "        optimizer: adafactor\n        optimizer_params: {relative_step: true}\n",
    );
    assert!(!v.is_valid());
    assert!(v.findings.iter().any(|f| f.key.ends_with("relative_step")));
    // eps as a pair only for Adafactor.
    let v =
        with_train("        optimizer: adamw\n        optimizer_params: {eps: [1e-30, 1e-3]}\n");
    assert!(!v.is_valid());
}

#[test]
fn readme_names_every_refused_key() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let missing: Vec<String> = known_keys()
        .into_iter()
        .filter(|k| k.support == Support::Refused)
        .map(|k| k.key.rsplit('.').next().unwrap_or_default().to_string())
        .filter(|leaf| !readme.contains(&format!("`{leaf}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not list these refused keys: {missing:?}"
    );
}

#[test]
fn do_i2v_is_read_for_ti2v_and_its_datasets_must_agree() {
    let five_b = MINIMAL
        .replace(
            "ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16",
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        )
        .replace("arch: wan22_14b_i2v", "arch: wan22_5b");
    let job = parse(&five_b).job.expect("job");
    assert!(
        job.process().datasets[0].do_i2v,
        "the UI's value by default"
    );
    let t2v = five_b.replace(
        "        - folder_path: data/motion\n",
        "        - folder_path: data/motion\n          do_i2v: false\n",
    );
    let validated = parse(&t2v);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    assert!(!validated.job.expect("job").process().datasets[0].do_i2v);
    let mixed = t2v.replace(
        "          do_i2v: false\n",
        "          do_i2v: false\n        - folder_path: data/motion\n          do_i2v: true\n",
    );
    let keys: Vec<String> = parse(&mixed).errors().map(|f| f.key.clone()).collect();
    assert_eq!(keys, ["config.process[0].datasets[1].do_i2v"]);
}

#[test]
fn a_ti2v_5b_job_has_its_own_defaults_and_32_pixel_sample_sizes() {
    let yaml = MINIMAL
        .replace(
            "ai-toolkit/Wan2.2-I2V-A14B-Diffusers-bf16",
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        )
        .replace("arch: wan22_14b_i2v", "arch: wan22_5b");
    let validated = parse(&yaml);
    assert!(validated.is_valid(), "{:#?}", validated.findings);
    let job = validated.job.expect("job");
    let p = job.process();
    assert_eq!(p.model.arch, ModelArch::Wan22_5b);
    assert_eq!(p.model.boundary_ratio, 0.0);
    assert_eq!(
        (p.sample.shift, p.sample.guidance_scale, p.sample.fps),
        (5.0, 5.0, 24)
    );

    // One transformer: a boundary is refused; 720 is on A14B's 16-pixel grid but not on 5B's 32.
    let yaml = yaml
        .replace(
            "        arch: wan22_5b\n",
            "        arch: wan22_5b\n        boundary_ratio: 0.9\n",
        )
        .replace(
            "      model:\n",
            "      sample:\n        width: 720\n        samples:\n          - prompt: a fox\n      model:\n",
        );
    let validated = parse(&yaml);
    let keys: Vec<&str> = validated.errors().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "config.process[0].sample.width",
            "config.process[0].model.boundary_ratio",
        ]
    );
}
