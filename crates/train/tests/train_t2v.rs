//! The text-to-video demo job (`arch: wan22_14b`) through the real trainer: 16-channel experts, the
//! experts' windows split at the T2V boundary 0.875, a latent cache without the I2V condition, the loss
//! falls, a preview is made from the prompt alone, and the LoRA files have ComfyUI's keys and say T2V.

mod support;

use tch::Device;
use wanlora_config::ModelArch;
use wanlora_models::lora::{LoraKeyFormat, LoraSet};
use wanlora_train::experts::Expert;
use wanlora_train::trainer::{RunOptions, Trainer};

#[test]
fn t2v_demo_trains_16_channel_experts_at_the_t2v_boundary_and_previews_from_the_prompt() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let steps = 40;
    let job_path =
        wanlora_train::demo::prepare_for(dir.path(), steps, ModelArch::Wan22_14b).unwrap();
    let text = std::fs::read_to_string(&job_path).unwrap();
    assert!(text.contains("arch: wan22_14b\n"), "{text}");
    assert!(
        !text.contains("ctrl_img"),
        "a T2V preview has no start frame"
    );
    let job = wanlora_config::load_job(&job_path).unwrap();
    let process = job.job.process();
    assert_eq!(process.model.arch, ModelArch::Wan22_14b);
    // The arch's defaults: boundary 0.875, sampling shift 12.
    assert_eq!(process.model.boundary_ratio, 0.875);
    assert_eq!(process.sample.shift, 12.0);

    let opts = RunOptions {
        progress: false,
        stop_after: None,
        hub: support::offline_hub(dir.path()),
    };
    let mut trainer = Trainer::new(job, opts).unwrap();
    let mut losses: Vec<(Expert, f64)> = Vec::new();
    let mut timesteps = Vec::new();
    for _ in 0..steps {
        let out = trainer.advance().unwrap();
        match out.expert {
            Expert::High => assert!(out.timestep >= 875.0, "high-noise t {}", out.timestep),
            Expert::Low => assert!(out.timestep < 875.0, "low-noise t {}", out.timestep),
        }
        losses.push((out.expert, out.loss.expect("finite loss")));
        timesteps.push(out.timestep);
    }
    // The windows are the T2V ones: some high-noise steps fall between 875 and 900, which the
    // I2V boundary would have given to the other expert.
    assert!(
        losses
            .iter()
            .zip(&timesteps)
            .any(|((e, _), t)| *e == Expert::High && *t < 900.0),
        "no high-noise step below 900: {timesteps:?}"
    );
    support::assert_each_expert_learns(&losses);

    let summary = trainer.run().unwrap();
    let out = summary.output;
    // The cache holds latents without the first-frame condition.
    let entries = support::files_ending(&out.join("cache").join("latents"), ".safetensors");
    assert!(!entries.is_empty(), "no latent cache entries");
    for entry in &entries {
        let tensors = tch::Tensor::read_safetensors(entry).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["latent"], "{}", entry.display());
        assert_eq!(tensors[0].1.size()[0], 16);
    }

    // A preview from the prompt alone (sample_every = steps).
    let samples = support::files_ending(&out.join("samples"), ".mp4");
    assert!(!samples.is_empty(), "no T2V preview written");

    // LoRA files: ComfyUI keys, loadable onto the 16-channel expert, marked as T2V.
    let cfg = wanlora_train::tiny::transformer_config_for(ModelArch::Wan22_14b);
    assert_eq!(cfg.in_channels, 16);
    for expert in [Expert::High, Expert::Low] {
        let file = out.join(format!("demo_t2v_{}.safetensors", expert.name()));
        let (set, format) = LoraSet::load(&file, &cfg, Device::Cpu, false).unwrap();
        assert_eq!(format, LoraKeyFormat::ComfyUi);
        assert_eq!(set.num_blocks(), cfg.num_layers as usize);
        let header = support::safetensors_header(&file);
        let meta = &header["__metadata__"];
        assert_eq!(meta["wanlora_arch"], "wan22_14b");
        assert_eq!(meta["ss_base_model_version"], "wan_2.2_14b");
        assert!(header
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("diffusion_model.blocks.0.self_attn.q.lora_A")));
    }
}
