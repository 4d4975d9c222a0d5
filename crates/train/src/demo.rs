//! `wanlora demo`: a whole job end to end on the CPU in a few minutes — a tiny random
//! Wan-architecture model, a synthetic dataset of captioned moving-shape clips, both experts trained,
//! the loss plotted — through exactly the code path of a real job (a job file, `wanlora train`).

use std::path::{Path, PathBuf};

use crate::TrainError;
use wanlora_config::ModelArch;
use wanlora_data::media::{write_mp4, Frames};

/// One synthetic clip: a shape of a colour moving in a direction over black.
struct Clip {
    shape: &'static str,
    colour: (&'static str, [u8; 3]),
    motion: (&'static str, f64, f64),
}

const FRAMES: usize = 17;
const SIZE: usize = 64;

fn render(clip: &Clip) -> Frames {
    let mut data = vec![0u8; FRAMES * SIZE * SIZE * 3];
    let r = 9.0;
    for f in 0..FRAMES {
        let p = f as f64 / (FRAMES - 1) as f64;
        let cx = 32.0 + clip.motion.1 * (p - 0.5) * 36.0;
        let cy = 32.0 + clip.motion.2 * (p - 0.5) * 36.0;
        for y in 0..SIZE {
            for x in 0..SIZE {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let inside = match clip.shape {
                    "circle" => dx * dx + dy * dy <= r * r,
                    _ => dx.abs() <= r && dy.abs() <= r,
                };
                if inside {
                    let i = ((f * SIZE + y) * SIZE + x) * 3;
                    data[i..i + 3].copy_from_slice(&clip.colour.1);
                }
            }
        }
    }
    Frames {
        frames: FRAMES,
        height: SIZE,
        width: SIZE,
        data,
    }
}

fn clips() -> Vec<Clip> {
    let colours = [
        ("red", [230, 40, 40]),
        ("blue", [50, 80, 240]),
        ("green", [40, 200, 70]),
        ("yellow", [235, 220, 40]),
    ];
    let motions = [
        ("slides to the right", 1.0, 0.0),
        ("slides to the left", -1.0, 0.0),
        ("moves up", 0.0, -1.0),
        ("moves down", 0.0, 1.0),
    ];
    let mut out = Vec::new();
    for (i, colour) in colours.iter().enumerate() {
        for (j, motion) in motions.iter().enumerate() {
            if (i + j) % 2 == 0 {
                out.push(Clip {
                    shape: if j % 2 == 0 { "square" } else { "circle" },
                    colour: *colour,
                    motion: *motion,
                });
            }
        }
    }
    out
}

/// The demo's I2V job file: tiny model, synthetic clips, both experts, CPU, fp32.
pub fn job_yaml(dir: &Path, steps: u32) -> String {
    job_yaml_for(dir, steps, ModelArch::Wan22_14bI2v)
}

/// The tiny model's folder, the job's name and the job file of `arch` (both variants can share a
/// demo folder and its dataset).
fn names(arch: ModelArch) -> (&'static str, &'static str, &'static str) {
    match arch {
        ModelArch::Wan22_14bI2v => ("model", "demo", "job.yaml"),
        ModelArch::Wan22_14b => ("model_t2v", "demo_t2v", "job_t2v.yaml"),
        ModelArch::Wan22_5b => ("model_ti2v", "demo_ti2v", "job_ti2v.yaml"),
    }
}

/// The demo's job file for `arch`: the I2V preview starts from a start frame, the T2V one from the
/// prompt alone.
pub fn job_yaml_for(dir: &Path, steps: u32, arch: ModelArch) -> String {
    let facts = arch.facts();
    let (model_folder, name, _) = names(arch);
    // TI2V-5B previews animate the start frame too (its text-to-video path is the clips' still images').
    let start = if facts.first_frame_condition || facts.first_frame_replacement {
        format!(
            "\n            ctrl_img: {}",
            serde_json::to_string(&dir.join("start_frame.png").display().to_string())
                .unwrap_or_default()
        )
    } else {
        String::new()
    };
    format!(
        r#"# wanlora demo: a tiny random {label}-architecture model trained on synthetic moving-shape
# clips. The same job format, code and outputs as a real run; only the model is small.
job: extension
config:
  name: {name}
  process:
    - type: sd_trainer
      training_folder: {folder}
      device: cpu
      trigger_word: zkw
      training_seed: 7
      network:
        type: lora
        linear: 8
        linear_alpha: 8
      save:
        dtype: bf16
        save_every: {save}
        max_step_saves_to_keep: 2
      datasets:
        - folder_path: {dataset}
          caption_ext: txt
          num_frames: 9
          # The clips are 64×64 and buckets never upscale: they train at 64×64.
          resolution: [256]
          cache_latents_to_disk: true
      train:
        batch_size: 1
        steps: {steps}
        optimizer: adamw
        lr: 0.003
        dtype: fp32
        timestep_type: linear
        switch_boundary_every: 5
        cache_text_embeddings: true
        max_grad_norm: 1.0
        skip_first_sample: true
      model:
        name_or_path: {model}
        arch: {arch}
{experts}      sample:
        sample_every: {steps}
        width: 64
        height: 64
        num_frames: 9
        fps: 8
        sample_steps: 8
        samples:
          - prompt: zkw a red square slides to the right on a black background{start}
      logging:
        log_every: 10
meta:
  name: "[name]"
  version: "1.0"
"#,
        save = (steps / 2).max(1),
        experts = if facts.one_transformer {
            ""
        } else {
            "        model_kwargs:\n          train_high_noise: true\n          train_low_noise: true\n"
        },
        folder = serde_json::to_string(&dir.display().to_string()).unwrap_or_default(),
        label = facts.label,
        arch = facts.name,
        model = serde_json::to_string(&dir.join(model_folder).display().to_string())
            .unwrap_or_default(),
        dataset =
            serde_json::to_string(&dir.join("dataset").display().to_string()).unwrap_or_default(),
    )
}

/// Writes the tiny I2V model, the clips with their captions, a start frame and the job file into
/// `dir`. Returns the job file's path. Existing files are kept (a second run reuses them).
pub fn prepare(dir: &Path, steps: u32) -> Result<PathBuf, TrainError> {
    prepare_for(dir, steps, ModelArch::Wan22_14bI2v)
}

/// [`prepare`] for `arch`: the T2V demo's model goes to `model_t2v/`, its job to `job_t2v.yaml`.
pub fn prepare_for(dir: &Path, steps: u32, arch: ModelArch) -> Result<PathBuf, TrainError> {
    let (model_folder, _, job_file) = names(arch);
    let model = dir.join(model_folder);
    if !model.join(crate::tiny::MARKER).exists() {
        crate::tiny::write_tiny_model_for(&model, 11, arch)?;
    }
    let data = dir.join("dataset");
    std::fs::create_dir_all(&data).map_err(|e| TrainError::io(&data, e))?;
    for (i, clip) in clips().iter().enumerate() {
        let video = data.join(format!("clip_{i:02}.mp4"));
        if !video.exists() {
            write_mp4(&render(clip), 8.0, &video).map_err(|e| TrainError::Setup(e.to_string()))?;
        }
        let caption = format!(
            "a {} {} {} on a black background",
            clip.colour.0, clip.shape, clip.motion.0
        );
        std::fs::write(data.join(format!("clip_{i:02}.txt")), caption)
            .map_err(|e| TrainError::io(&data, e))?;
    }
    let start = dir.join("start_frame.png");
    if !start.exists() {
        let first = render(&clips()[0]);
        let pixels = first.data[..SIZE * SIZE * 3].to_vec();
        image::save_buffer(
            &start,
            &pixels,
            SIZE as u32,
            SIZE as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| TrainError::Setup(format!("{}: {e}", start.display())))?;
    }
    let job = dir.join(job_file);
    wanlora_torch::weights::write_atomic(&job, job_yaml_for(dir, steps, arch).as_bytes())?;
    Ok(job)
}
