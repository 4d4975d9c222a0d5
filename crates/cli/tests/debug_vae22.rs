//! `wanlora debug vae-encode` / `vae-decode` open the Wan 2.2 VAE (TI2V-5B's) from a diffusers folder and
//! reproduce diffusers' encode and decode (the fixture of crates/models/tests/vae22_parity.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};
use wanlora_torch::weights::WeightSet;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/vae22")
}

fn case(name: &str) -> Tensor {
    let cases = WeightSet::open(&fixtures().join("cases.safetensors")).unwrap();
    cases.load(name, Kind::Float, Device::Cpu).unwrap()
}

fn output(path: &Path, name: &str) -> Tensor {
    WeightSet::open(path)
        .unwrap()
        .load(name, Kind::Float, Device::Cpu)
        .unwrap()
}

fn run(args: &[&str], inputs: &Path, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_wanlora"))
        .env("OMP_NUM_THREADS", "1")
        .args(["debug"])
        .args(args)
        .arg("--weights")
        .arg(fixtures().join("diffusers"))
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn rel_err(out: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(out.size(), reference.size());
    f64::try_from((out - reference).norm()).unwrap() / f64::try_from(reference.norm()).unwrap()
}

#[test]
fn debug_vae_commands_run_the_wan22_vae() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    Tensor::write_safetensors(&[("video", &case("video9"))], &inputs).unwrap();
    run(&["vae-encode"], &inputs, &out);
    let latent = output(&out, "latent");
    assert_eq!(latent.size(), [1, 6, 3, 1, 2]);
    assert!(rel_err(&latent, &case("latent9")) < 1e-5);

    Tensor::write_safetensors(&[("latent", &case("z9"))], &inputs).unwrap();
    run(&["vae-decode"], &inputs, &out);
    let video = output(&out, "video");
    assert!(rel_err(&video, &case("video_dec9")) < 1e-5);
}
