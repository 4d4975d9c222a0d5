//! What the Wan 2.1 and Wan 2.2 VAE parity tests share: a fixture folder (a diffusers `diffusers/` VAE and
//! `cases.safetensors` with inputs and diffusers' outputs), the relative-error check and diffusers' tiling check.

use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use wanlora_models::vae::{Tiling, Vae, VaeConfig};
use wanlora_torch::weights::WeightSet;

/// One intra-op thread: the tensors are tiny, cargo already runs tests in parallel, and libtorch's spinning
/// worker threads make a loaded 2-core machine ten times slower.
pub fn single_threaded() {
    tch::set_num_threads(1);
}

/// ‖out − ref‖ / ‖ref‖.
pub fn rel_err(out: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(out.size(), reference.size(), "shape");
    let diff = (out.to_kind(Kind::Double) - reference.to_kind(Kind::Double)).norm();
    f64::try_from(diff).unwrap() / f64::try_from(reference.to_kind(Kind::Double).norm()).unwrap()
}

pub fn assert_close(what: &str, out: &Tensor, reference: &Tensor, tolerance: f64) {
    let err = rel_err(out, reference);
    assert!(
        err < tolerance,
        "{what}: relative error {err:e} ≥ {tolerance:e}"
    );
}

/// A fixture folder under crates/models/tests/fixtures.
pub struct VaeFixture(pub &'static str);

impl VaeFixture {
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(self.0)
    }

    pub fn case(&self, name: &str) -> Tensor {
        let cases =
            WeightSet::open(&self.dir().join("cases.safetensors")).expect("VAE cases fixture");
        cases.load(name, Kind::Float, Device::Cpu).expect(name)
    }

    pub fn diffusers_vae(&self) -> Vae {
        Vae::from_path(&self.dir().join("diffusers"), Kind::Float, Device::Cpu)
            .expect("diffusers VAE")
    }

    pub fn diffusers_config(&self) -> VaeConfig {
        VaeConfig::from_json_file(&self.dir().join("diffusers/config.json")).unwrap()
    }

    /// `video_tile` and `z_tile` untiled, then with `tiling`, against diffusers' outputs without and with its
    /// tiling (`{latent,video}_tile_{untiled,tiled}`), within 1e-5.
    pub fn check_tiling(&self, tiling: Tiling) {
        let mut vae = self.diffusers_vae();
        let (video, z) = (self.case("video_tile"), self.case("z_tile"));
        for (mode, tiling) in [("untiled", Tiling::never()), ("tiled", tiling)] {
            vae.set_tiling(tiling).unwrap();
            assert_close(
                &format!("{mode} encode"),
                &vae.encode(&video).unwrap(),
                &self.case(&format!("latent_tile_{mode}")),
                1e-5,
            );
            assert_close(
                &format!("{mode} decode"),
                &vae.decode(&z).unwrap(),
                &self.case(&format!("video_tile_{mode}")),
                1e-5,
            );
        }
    }
}
