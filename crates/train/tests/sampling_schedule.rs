//! The sampler's tables: Wan's official σ/timestep table against its formula, expert routing at the boundary,
//! diffusers' grids and PyTorch's seeded noise against the values diffusers/torch produced
//! (fixtures/sampler/reference.safetensors, from scripts/fixtures/gen_sampler.py).

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use wanlora_train::experts::Expert;
use wanlora_train::sampling::noise::{torch_randn, torch_randn_values};
use wanlora_train::sampling::schedule::shift_sigma;
use wanlora_train::sampling::{SamplerKind, Schedule, ScheduleKind};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sampler")
}

fn reference(name: &str) -> Tensor {
    let path = fixtures().join("reference.safetensors");
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing from the fixtures"))
        .1
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).expect("a numeric tensor")
}

/// σ_i = shift·s_i / (1 + (shift − 1)·s_i), s_i = 0.999·(1 − i/steps), t_i = ⌊1000·σ_i⌋, the last σ 0.
#[test]
fn official_table_is_the_formula() {
    for (steps, shift) in [
        (40, 5.0),
        (40, 3.0),
        (20, 5.0),
        (50, 12.0),
        (7, 1.0),
        (1, 5.0),
    ] {
        let schedule = Schedule::official(steps, shift).unwrap();
        assert_eq!(schedule.steps(), steps);
        assert_eq!(schedule.sigmas.len(), steps + 1);
        assert_eq!(*schedule.sigmas.last().unwrap(), 0.0);
        for i in 0..steps {
            let s = 0.999 * (1.0 - i as f64 / steps as f64);
            let sigma = shift * s / (1.0 + (shift - 1.0) * s);
            assert!(
                (schedule.sigmas[i] - sigma).abs() < 1e-7,
                "steps {steps} shift {shift} σ_{i}: {} vs {sigma}",
                schedule.sigmas[i]
            );
            let t = schedule.timesteps[i];
            assert_eq!(t, t.trunc(), "integer timesteps");
            let scaled = 1000.0 * sigma;
            if (scaled - scaled.round()).abs() > 1e-6 {
                assert_eq!(t, scaled.floor(), "t_{i} for σ {sigma}");
            }
        }
    }
}

/// The table wan-reference.md §3 lists for shift 5, 40 steps (read from Wan's scheduler).
#[test]
fn official_timesteps_for_shift_5_and_40_steps() {
    let schedule = Schedule::official(40, 5.0).unwrap();
    let t: Vec<i64> = schedule.timesteps.iter().map(|&t| t as i64).collect();
    assert_eq!(
        &t[..15],
        &[999, 994, 989, 983, 978, 972, 965, 959, 952, 944, 937, 929, 920, 911, 902]
    );
    assert_eq!(&t[15..17], &[892, 882]);
    assert_eq!(&t[38..], &[208, 113]);
}

#[test]
fn routing_switches_at_the_boundary() {
    let schedule = Schedule::official(40, 5.0).unwrap();
    assert_eq!(schedule.high_noise_steps(0.9), 15);
    assert_eq!(schedule.expert_at(14, 0.9), Expert::High);
    assert_eq!(schedule.expert_at(15, 0.9), Expert::Low);
    assert_eq!(
        (0..40)
            .filter(|&i| schedule.expert_at(i, 0.9) == Expert::Low)
            .count(),
        25
    );
    // A timestep exactly at the boundary belongs to the high-noise expert (t ≥ boundary).
    let at = Schedule::from_tables(vec![0.95, 0.9, 0.5, 0.0], vec![950.0, 900.0, 500.0]).unwrap();
    assert_eq!(at.high_noise_steps(0.9), 2);
    // AI Toolkit's T2V boundary 0.875 moves the switch: t = 892, 882 become high-noise steps.
    assert_eq!(schedule.high_noise_steps(0.875), 17);
    // diffusers' UniPC grid with shift 3 (its Wan repositories' setting): 11 high / 29 low (wan-reference.md §3).
    let diffusers = Schedule::diffusers_unipc(40, 3.0).unwrap();
    assert_eq!(diffusers.high_noise_steps(0.9), 11);
}

#[test]
fn diffusers_grids_equal_diffusers_schedulers() {
    let euler = Schedule::new(ScheduleKind::Diffusers, SamplerKind::Euler, 12, 5.0).unwrap();
    assert_eq!(euler.sigmas, values(&reference("sigmas_euler")));
    assert_eq!(euler.timesteps, values(&reference("timesteps_euler")));
    let unipc = Schedule::new(ScheduleKind::Diffusers, SamplerKind::UniPc, 12, 5.0).unwrap();
    assert_eq!(unipc.sigmas, values(&reference("sigmas_unipc")));
    assert_eq!(unipc.timesteps, values(&reference("timesteps_unipc")));
    // The official table differs from both (σ_max 0.999 instead of 1).
    let official = Schedule::new(ScheduleKind::Official, SamplerKind::UniPc, 12, 5.0).unwrap();
    assert_ne!(official.sigmas, unipc.sigmas);
    assert!((official.sigmas[0] - shift_sigma(0.999, 5.0)).abs() < 1e-7);
}

#[test]
fn bad_tables_are_refused() {
    assert!(Schedule::official(0, 5.0).is_err());
    assert!(Schedule::official(40, 0.0).is_err());
    assert!(Schedule::official(40, f64::NAN).is_err());
    assert!(
        Schedule::from_tables(vec![0.9, 0.5], vec![900.0]).is_err(),
        "last σ not 0"
    );
    assert!(
        Schedule::from_tables(vec![0.5, 0.9, 0.0], vec![500.0, 900.0]).is_err(),
        "not decreasing"
    );
    assert!(
        Schedule::from_tables(vec![0.9, 0.0], vec![900.0, 1.0]).is_err(),
        "lengths"
    );
}

fn assert_close(ours: &Tensor, theirs: &Tensor, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shape");
    let diff = (ours - theirs).abs().max().double_value(&[]);
    assert!(diff < 2e-6, "{what}: max difference {diff}");
}

#[test]
fn noise_is_torch_randn_of_the_seed() {
    let noise = torch_randn(42, &[1, 4, 3, 4, 6], Device::Cpu).unwrap();
    assert_close(&noise, &reference("noise"), "seed 42 [1,4,3,4,6]");
    let tail = torch_randn(7, &[1, 4, 5, 9, 7], Device::Cpu).unwrap();
    assert_close(
        &tail,
        &reference("randn_seed7_1x4x5x9x7"),
        "1260 values (partial last block)",
    );
    let short = torch_randn(3, &[3, 5], Device::Cpu).unwrap();
    assert_close(
        &short,
        &reference("randn_seed3_3x5"),
        "15 values (double path)",
    );
    let wide = torch_randn(7 + (1u64 << 32), &[20], Device::Cpu).unwrap();
    assert_close(
        &wide,
        &reference("randn_seed4294967303_20"),
        "seed above 32 bits",
    );
    assert_eq!(torch_randn_values(9, 100), torch_randn_values(9, 100));
    assert_ne!(torch_randn_values(9, 100), torch_randn_values(10, 100));
}
