//! Prodigy and Adafactor against their reference implementations (fixtures/optim, from
//! scripts/fixtures/gen_optim.py: the PyPI `prodigyopt` 1.1.2 and transformers' `Adafactor`): the same start, the
//! same gradient rule and the same learning rates give the same parameters to 1e-6 after each of 20 steps, for AI
//! Toolkit's defaults and for every `optimizer_params` key the trainer passes on.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use tch::{Device, Kind, Tensor};
use wanlora_config::{Optimizer, OptimizerParams, TrainConfig};
use wanlora_train::optim::choice::TrainOptimizer;
use wanlora_train::optim::FlatParams;

/// The fixture: its tensors by name and case.json.
struct Fixture {
    tensors: HashMap<String, Tensor>,
    cases: Value,
}

impl Fixture {
    fn load() -> Fixture {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/optim");
        let weights = dir.join("reference.safetensors");
        let tensors = Tensor::read_safetensors(&weights)
            .unwrap_or_else(|e| panic!("{}: {e}", weights.display()))
            .into_iter()
            .collect();
        let json = dir.join("case.json");
        let cases = std::fs::read_to_string(&json)
            .map(|text| serde_json::from_str(&text).expect("case.json is JSON"))
            .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
        Fixture { tensors, cases }
    }

    fn tensor(&self, name: &str) -> Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the fixture"))
            .shallow_clone()
    }
}

/// The job settings that make the trainer build the case's optimizer.
fn train_config(case: &Value) -> TrainConfig {
    let args = &case["args"];
    let optimizer = match case["optimizer"].as_str().unwrap() {
        "prodigy" => Optimizer::Prodigy,
        "adafactor" => Optimizer::Adafactor,
        other => panic!("unknown optimizer {other}"),
    };
    let mut p = OptimizerParams::defaults_for(optimizer);
    let num = |k: &str| args.get(k).and_then(Value::as_f64);
    let flag = |k: &str| args.get(k).and_then(Value::as_bool);
    let pair = |k: &str| {
        args.get(k)
            .and_then(Value::as_array)
            .map(|v| [v[0].as_f64().unwrap(), v[1].as_f64().unwrap()])
    };
    if let Some(v) = num("weight_decay") {
        p.weight_decay = v;
    }
    if let Some(v) = pair("betas") {
        p.betas = v;
    }
    if optimizer == Optimizer::Adafactor {
        if let Some(v) = pair("eps") {
            p.adafactor_eps = v;
        }
    } else if let Some(v) = num("eps") {
        p.eps = v;
    }
    p.d_coef = num("d_coef").unwrap_or(p.d_coef);
    p.d0 = num("d0").unwrap_or(p.d0);
    p.beta3 = num("beta3");
    p.growth_rate = num("growth_rate");
    p.use_bias_correction = flag("use_bias_correction").unwrap_or(false);
    p.safeguard_warmup = flag("safeguard_warmup").unwrap_or(false);
    p.decouple = flag("decouple").unwrap_or(true);
    p.clip_threshold = num("clip_threshold").unwrap_or(p.clip_threshold);
    p.decay_rate = num("decay_rate").unwrap_or(p.decay_rate);
    p.beta1 = num("beta1");
    p.scale_parameter = flag("scale_parameter").unwrap_or(false);
    TrainConfig {
        optimizer,
        optimizer_params: p,
        ..TrainConfig::default()
    }
}

/// Runs one case and returns the largest difference to the reference over all steps.
fn run_case(name: &str) -> f64 {
    let fixture = Fixture::load();
    let case = &fixture.cases["cases"][name];
    let n_tensors = fixture.cases["shapes"].as_array().unwrap().len();
    let init: Vec<Tensor> = (0..n_tensors)
        .map(|i| fixture.tensor(&format!("init.{i}")))
        .collect();
    let targets: Vec<Tensor> = (0..n_tensors)
        .map(|i| fixture.tensor(&format!("target.{i}")))
        .collect();
    let noise = fixture.tensor("noise");
    let expected = fixture.tensor(name);
    let params = FlatParams::new(&init, Device::Cpu);
    let mut optimizer = TrainOptimizer::new(&params, &train_config(case));
    let lrs: Vec<f64> = case["lr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut worst = 0.0f64;
    for (step, &lr) in lrs.iter().enumerate() {
        // g = (p − target) + noise_t, in the reference's order of operations.
        let grads: Vec<Tensor> = params
            .params
            .iter()
            .zip(&targets)
            .enumerate()
            .map(|(i, (p, t))| {
                let (off, n) = params.span(i);
                (p.detach() - t).reshape([-1]) + noise.get(step as i64).narrow(0, off, n)
            })
            .collect();
        let grad = Tensor::cat(&grads, 0);
        optimizer.update(&params, &grad, lr);
        let diff = (&params.flat - expected.get(step as i64))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            diff < 1e-6,
            "{name}: step {} differs from the reference by {diff}",
            step + 1
        );
        worst = worst.max(diff);
    }
    // The run moved the parameters: the comparison is not between two untouched buffers.
    let moved = (&params.flat
        - Tensor::cat(&init.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0))
    .abs()
    .max()
    .double_value(&[]);
    assert!(
        moved > 1e-3,
        "{name}: the parameters barely moved ({moved})"
    );
    assert_eq!(params.flat.kind(), Kind::Float);
    // Prodigy's distance estimate itself agrees.
    if let (TrainOptimizer::Prodigy(p), Some(d)) = (&optimizer, case["final_d"].as_f64()) {
        assert!((p.d - d).abs() <= 1e-5 * d, "{name}: d {} vs {d}", p.d);
    }
    worst
}

#[test]
fn prodigy_matches_prodigyopt_with_ai_toolkits_defaults() {
    run_case("prodigy_default");
}

#[test]
fn prodigy_matches_prodigyopt_with_every_option_and_a_warmup_from_zero() {
    run_case("prodigy_options");
}

#[test]
fn prodigy_matches_prodigyopt_with_coupled_decay_and_no_first_moment() {
    run_case("prodigy_coupled");
}

#[test]
fn adafactor_matches_transformers_with_ai_toolkits_defaults() {
    run_case("adafactor_default");
}

#[test]
fn adafactor_matches_transformers_with_first_moment_decay_and_parameter_scale() {
    run_case("adafactor_options");
}
