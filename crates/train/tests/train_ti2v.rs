//! The TI2V-5B demo job (`arch: wan22_5b`) through the real trainer: one 48-channel transformer (the demo
//! model has no `transformer_2/`) trained over the whole timestep range, clips encoded by the Wan 2.2 VAE
//! (48 channels, 16× in space), the loss falls, a preview animates the start frame, and the LoRA file has
//! ComfyUI's keys and says TI2V-5B.

mod support;

use tch::Device;
use wanlora_config::ModelArch;
use wanlora_models::lora::{LoraKeyFormat, LoraSet};
use wanlora_train::experts::Expert;
use wanlora_train::trainer::{RunOptions, Trainer};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn ti2v_demo_trains_one_48_channel_transformer_and_previews_from_the_start_frame() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let steps = 40;
    let job_path =
        wanlora_train::demo::prepare_for(dir.path(), steps, ModelArch::Wan22_5b).unwrap();
    assert!(
        !dir.path().join("model_ti2v/transformer_2").exists(),
        "TI2V-5B is one transformer"
    );
    let text = std::fs::read_to_string(&job_path).unwrap();
    assert!(text.contains("arch: wan22_5b\n"), "{text}");
    assert!(
        text.contains("ctrl_img"),
        "the preview animates a start frame"
    );
    // A held-out clip, evaluated as the training steps see clips (clean first frame, out of the loss).
    let held_out = dir.path().join("held_out.mp4");
    std::fs::copy(dir.path().join("dataset/clip_07.mp4"), &held_out).unwrap();
    let validation = format!(
        "        validation_config:\n          validation_items:\n            - image_path: {}\n              \
         prompt: a yellow circle moves down\n          resolution: 256\n          validate_every_n_steps: {}\n",
        held_out.display(),
        steps / 2
    );
    let text = text.replace(
        "        skip_first_sample: true\n",
        &format!("        skip_first_sample: true\n{validation}"),
    );
    std::fs::write(&job_path, &text).unwrap();
    let job = wanlora_config::load_job(&job_path).unwrap();
    let process = job.job.process();
    assert_eq!(process.model.arch, ModelArch::Wan22_5b);
    // The arch's defaults: one model for every timestep, sampling shift 5, guidance 5.
    assert_eq!(process.model.boundary_ratio, 0.0);
    assert_eq!(process.sample.shift, 5.0);
    assert_eq!(process.sample.guidance_scale, 5.0);

    let opts = RunOptions {
        progress: false,
        stop_after: None,
        hub: support::offline_hub(dir.path()),
    };
    let summary = Trainer::new(job, opts).unwrap().run().unwrap();
    let out = summary.output;
    let records: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (mut losses, mut timesteps, mut validation) = (Vec::new(), Vec::new(), Vec::new());
    for r in &records {
        assert_eq!(
            r["expert"],
            Expert::High.name(),
            "the one transformer's slot"
        );
        match r["validation_loss"].as_f64() {
            Some(v) => validation.push(v),
            None => {
                losses.push(r["loss"].as_f64().expect("finite loss"));
                timesteps.push(r["timestep"].as_f64().unwrap());
            }
        }
    }
    assert_eq!(losses.len(), steps as usize);
    // One window for the whole schedule: both ends of it are drawn.
    assert!(
        timesteps.iter().any(|&t| t < 500.0) && timesteps.iter().any(|&t| t >= 900.0),
        "{timesteps:?}"
    );
    let (first, last) = (mean(&losses[..6]), mean(&losses[losses.len() - 6..]));
    assert!(
        last < 0.85 * first,
        "loss {first:.4} → {last:.4} did not fall"
    );
    // The held-out clip before training, halfway and at the end.
    assert_eq!(validation.len(), 3, "{validation:?}");
    assert!(
        validation[2] < validation[0],
        "the held-out loss did not fall: {validation:?}"
    );
    // The cache holds the Wan 2.2 VAE's latents: 48 channels, 9 frames → 3 latent frames, 64 px → 4.
    let entries = support::files_ending(&out.join("cache").join("latents"), ".safetensors");
    assert!(!entries.is_empty(), "no latent cache entries");
    for entry in &entries {
        let tensors = tch::Tensor::read_safetensors(entry).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["latent"], "{}", entry.display());
        assert_eq!(tensors[0].1.size(), [48, 3, 4, 4], "{}", entry.display());
    }

    let samples = support::files_ending(&out.join("samples"), ".mp4");
    assert!(!samples.is_empty(), "no TI2V preview written");

    // The LoRA file: ComfyUI keys, loadable onto the 48-channel transformer, marked as TI2V-5B.
    let cfg = wanlora_train::tiny::transformer_config_for(ModelArch::Wan22_5b);
    assert_eq!((cfg.in_channels, cfg.out_channels), (48, 48));
    let file = out.join(format!("demo_ti2v_{}.safetensors", Expert::High.name()));
    let (set, format) = LoraSet::load(&file, &cfg, Device::Cpu, false).unwrap();
    assert_eq!(format, LoraKeyFormat::ComfyUi);
    assert_eq!(set.num_blocks(), cfg.num_layers as usize);
    let header = support::safetensors_header(&file);
    let meta = &header["__metadata__"];
    assert_eq!(meta["wanlora_arch"], "wan22_5b");
    assert_eq!(meta["ss_base_model_version"], "wan_2.2_5b");
    assert!(!out
        .join(format!("demo_ti2v_{}.safetensors", Expert::Low.name()))
        .exists());
}
