//! Each expert's data order, timesteps and noise depend only on (seed, expert, that expert's
//! step): how the experts alternate, or whether the other one trains at all, does not change an
//! expert's LoRA (what lets an expert-parallel run equal the alternating one).

use std::path::{Path, PathBuf};
use tch::{Device, Kind};
use wanlora_torch::weights::WeightSet;
use wanlora_train::trainer::train;

#[allow(dead_code)] // the resume helpers are for the other tests
mod common;
use common::{one_run_at_a_time, opts};

/// The demo job named `name`, `steps` steps, switching experts every `switch_every` steps, training
/// the experts in `experts` (no previews, constant learning rate).
fn job(dir: &Path, name: &str, steps: u32, switch_every: u32, experts: (bool, bool)) -> PathBuf {
    let path = wanlora_train::demo::prepare(dir, steps).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("  name: demo\n", &format!("  name: {name}\n"))
        .replace(
            "        switch_boundary_every: 5\n",
            &format!("        switch_boundary_every: {switch_every}\n"),
        )
        .replace(
            "        skip_first_sample: true\n",
            "        disable_sampling: true\n",
        )
        .replace(
            "          train_high_noise: true\n          train_low_noise: true\n",
            &format!(
                "          train_high_noise: {}\n          train_low_noise: {}\n",
                experts.0, experts.1
            ),
        );
    assert!(text.contains(&format!("switch_boundary_every: {switch_every}\n")));
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn lora(out: &Path, name: &str, expert: &str) -> Vec<(String, tch::Tensor)> {
    let set = WeightSet::open(&out.join(format!("{name}_{expert}.safetensors"))).unwrap();
    let mut names = set.names();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = set.load(&n, Kind::Float, Device::Cpu).unwrap();
            (n, t)
        })
        .collect()
}

fn assert_same(a: &[(String, tch::Tensor)], b: &[(String, tch::Tensor)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: tensor count");
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{what}: {na} differs");
    }
}

#[test]
fn an_expert_lora_depends_only_on_its_own_steps() {
    let _serial = one_run_at_a_time();
    tch::set_num_threads(2);
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, steps: u32, every: u32, experts: (bool, bool)| {
        let path = job(dir.path(), name, steps, every, experts);
        train(
            wanlora_config::load_job(&path).unwrap(),
            opts(dir.path(), None),
        )
        .unwrap()
        .output
    };
    // Four steps, two per expert: high high low low, then high low high low.
    let blocks = run("blocks", 4, 2, (true, true));
    let interleaved = run("interleaved", 4, 1, (true, true));
    // The high-noise expert alone, for its two steps.
    let high_alone = run("high_alone", 2, 1, (true, false));
    for e in ["high_noise", "low_noise"] {
        assert_same(
            &lora(&blocks, "blocks", e),
            &lora(&interleaved, "interleaved", e),
            &format!("{e}, alternating every 2 vs every step"),
        );
    }
    assert_same(
        &lora(&blocks, "blocks", "high_noise"),
        &lora(&high_alone, "high_alone", "high_noise"),
        "high_noise, with the low-noise expert vs alone",
    );
    // The LoRA did train (B starts at zero).
    let trained = lora(&blocks, "blocks", "low_noise");
    assert!(trained
        .iter()
        .any(|(n, t)| n.contains("lora_B") && t.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}
