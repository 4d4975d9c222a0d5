//! `keep_blocks` / `keep_attention: auto` through the real trainer (the demo job, CPU): each bucket
//! gets the fastest plan its budget allows, and a step that runs out of memory is repeated with a
//! smaller plan and gives the LoRA, loss and gradient norm of a step that never failed.

use tch::Tensor;
use wanlora_hub::HubConfig;
use wanlora_train::experts::Expert;
use wanlora_train::trainer::{MemoryOverride, RunOptions, Trainer};

const STEPS: u32 = 2;

fn trainer(dir: &std::path::Path, memory: Option<MemoryOverride>) -> Trainer {
    let job_path = wanlora_train::demo::prepare(dir, STEPS).unwrap();
    let job = wanlora_config::load_job(&job_path).unwrap();
    let hub = HubConfig::from_vars(|k| match k {
        "HF_HUB_OFFLINE" => Some("1".into()),
        "HF_HOME" => Some(dir.join("hf").display().to_string()),
        _ => None,
    });
    let opts = RunOptions {
        progress: false,
        stop_after: None,
        hub,
    };
    let mut trainer = Trainer::new(job, opts).unwrap();
    if let Some(memory) = memory {
        trainer.set_memory_override(memory);
    }
    trainer
}

fn log_of(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("demo/log.txt")).unwrap()
}

fn max_relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let scale = a.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn a_step_out_of_memory_is_repeated_with_a_smaller_plan_and_loses_nothing() {
    tch::set_num_threads(2);
    // A: the CPU has no device limit, so auto keeps every block.
    let dir_a = tempfile::tempdir().unwrap();
    let mut a = trainer(dir_a.path(), None);
    let mut reference = Vec::new();
    for _ in 0..STEPS {
        let out = a.advance().unwrap();
        reference.push((
            out,
            a.lora_values(Expert::High).unwrap(),
            a.lora_values(Expert::Low).unwrap(),
        ));
    }
    let plans = a.memory_plans();
    assert_eq!(plans.len(), 1, "the demo has one bucket: {plans:?}");
    let (bucket, unlimited) = plans[0];
    assert_eq!(
        (unlimited.plan.keep_blocks, unlimited.plan.keep_attention),
        (2, 0),
        "no limit keeps both blocks of the tiny model"
    );
    // Logged once for the bucket, not once per step.
    assert_eq!(
        log_of(dir_a.path())
            .matches("memory plan for bucket")
            .count(),
        1
    );
    assert!(!log_of(dir_a.path()).contains("ran out of memory"));

    // B: the same job where a plan needing more than the unlimited one's bytes runs out of memory
    // after its backward, with the gradients of the failed attempt already accumulated.
    let dir_b = tempfile::tempdir().unwrap();
    let limit = unlimited.needs - 1;
    let mut b = trainer(
        dir_b.path(),
        Some(MemoryOverride {
            budget: None,
            fail_above: Some(limit),
        }),
    );
    for (step, (out_a, high_a, low_a)) in reference.iter().enumerate() {
        let out_b = b.advance().unwrap();
        assert_eq!(b.step(), step as u64 + 1, "one step per advance");
        assert_eq!(out_b.expert, out_a.expert);
        let (loss_a, loss_b) = (out_a.loss.unwrap(), out_b.loss.unwrap());
        // Doubled gradients or a skipped item would show here (Adam alone would hide a scale).
        assert!(
            (loss_a - loss_b).abs() <= 1e-5 * loss_a.abs(),
            "step {step}: loss {loss_b} against {loss_a}"
        );
        assert!(
            (out_a.grad_norm - out_b.grad_norm).abs() <= 1e-4 * out_a.grad_norm,
            "step {step}: gradient norm {} against {}",
            out_b.grad_norm,
            out_a.grad_norm
        );
        for (expert, reference) in [(Expert::High, high_a), (Expert::Low, low_a)] {
            let diff = max_relative_difference(reference, &b.lora_values(expert).unwrap());
            assert!(
                diff < 1e-4,
                "step {step}, {expert:?}: LoRA differs by {diff}"
            );
        }
    }
    let fallback = b.memory_plans();
    assert_eq!(fallback.len(), 1);
    assert_eq!(fallback[0].0, bucket);
    let smaller = fallback[0].1;
    assert!(smaller.needs <= limit, "{smaller:?}");
    assert!(smaller.plan.keep_blocks < 2, "{smaller:?}");
    let log = log_of(dir_b.path());
    assert_eq!(
        log.matches("ran out of memory").count(),
        1,
        "the bucket remembers its smaller plan:\n{log}"
    );

    // C: a budget that the smaller plan fits and the larger does not: chosen at once, no failure.
    let dir_c = tempfile::tempdir().unwrap();
    let mut c = trainer(
        dir_c.path(),
        Some(MemoryOverride {
            budget: Some(smaller.needs),
            fail_above: Some(limit),
        }),
    );
    c.advance().unwrap();
    assert_eq!(c.memory_plans()[0].1.needs, smaller.needs);
    assert!(!log_of(dir_c.path()).contains("ran out of memory"));
}
