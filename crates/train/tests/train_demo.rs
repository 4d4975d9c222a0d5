//! The demo job through the real trainer: both experts train on their own steps, the loss falls, and
//! the saved LoRA files load back with the values that were trained.

mod support;

use tch::{Device, Kind};
use wanlora_models::lora::LoraSet;
use wanlora_models::transformer::TransformerConfig;
use wanlora_train::experts::Expert;
use wanlora_train::trainer::{RunOptions, Trainer};

#[test]
fn demo_trains_each_expert_on_its_own_steps_and_the_loss_falls() {
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let steps = 40;
    let job_path = wanlora_train::demo::prepare(dir.path(), steps).unwrap();
    let job = wanlora_config::load_job(&job_path).unwrap();
    let opts = RunOptions {
        progress: false,
        stop_after: None,
        hub: support::offline_hub(dir.path()),
    };
    let mut trainer = Trainer::new(job, opts).unwrap();

    let mut high = trainer.lora_values(Expert::High).unwrap();
    let mut low = trainer.lora_values(Expert::Low).unwrap();
    let mut losses: Vec<(Expert, f64)> = Vec::new();
    for _ in 0..steps {
        let out = trainer.advance().unwrap();
        let (h, l) = (
            trainer.lora_values(Expert::High).unwrap(),
            trainer.lora_values(Expert::Low).unwrap(),
        );
        // Only the expert whose turn it was changed.
        match out.expert {
            Expert::High => {
                assert!(
                    !h.equal(&high),
                    "step {}: the high-noise LoRA did not change",
                    trainer.step()
                );
                assert!(
                    l.equal(&low),
                    "step {}: the low-noise LoRA changed on a high-noise step",
                    trainer.step()
                );
                assert!(
                    out.timestep >= 900.0,
                    "high-noise step at t {}",
                    out.timestep
                );
            }
            Expert::Low => {
                assert!(!l.equal(&low));
                assert!(
                    h.equal(&high),
                    "step {}: the high-noise LoRA changed on a low-noise step",
                    trainer.step()
                );
                assert!(out.timestep < 900.0, "low-noise step at t {}", out.timestep);
            }
        }
        high = h;
        low = l;
        losses.push((out.expert, out.loss.expect("finite loss")));
        if trainer.step() == 20 {
            let files = trainer.save_checkpoint().unwrap();
            assert_eq!(files.len(), 2, "{files:?}");
        }
    }
    // Every 5 steps the expert switches, starting with the high-noise one.
    assert_eq!(losses[0].0, Expert::High);
    assert_eq!(losses[5].0, Expert::Low);
    support::assert_each_expert_learns(&losses);

    let summary = trainer.run().unwrap();
    assert_eq!(summary.step, steps as u64);
    assert!(!summary.stopped);
    let out = summary.output;
    let cfg = wanlora_train::tiny::transformer_config();
    for expert in [Expert::High, Expert::Low] {
        let file = out.join(format!("demo_{}.safetensors", expert.name()));
        assert!(file.exists(), "{} missing", file.display());
        let (set, _) = LoraSet::load(&file, &cfg, Device::Cpu, false).unwrap();
        assert_eq!(set.num_blocks(), cfg.num_layers as usize);
        // bf16 on disk: equal to the trained values to bf16 rounding.
        let saved: Vec<_> = set.parameters().iter().map(|p| p.flatten(0, -1)).collect();
        let saved = tch::Tensor::cat(&saved, 0);
        let trained = if expert == Expert::High { &high } else { &low };
        let err = (&saved - trained.to_kind(Kind::BFloat16).to_kind(Kind::Float))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            err < 1e-6,
            "{expert:?}: saved differs from trained by {err}"
        );
    }
    // The step save is there, the state is complete, and the job folder reports completion.
    assert!(out.join("demo_000000020_high_noise.safetensors").exists());
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "completed");
    let _ = TransformerConfig::default();
}
