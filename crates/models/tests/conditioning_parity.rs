//! The I2V first-frame condition against diffusers' `WanImageToVideoPipeline.prepare_latents`, and the encoder's
//! skipping of constant frames against a plain encode of the full condition video.

use std::path::PathBuf;
use tch::{Device, Kind, Tensor};
use wanlora_models::conditioning::first_frame_condition;
use wanlora_models::vae::{Tiling, Vae, VaeConfig, VaeLayout};
use wanlora_torch::weights::WeightSet;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One intra-op thread: the tensors are tiny, cargo already runs tests in parallel, and libtorch's spinning
/// worker threads make a loaded 2-core machine ten times slower.
fn single_threaded() {
    tch::set_num_threads(1);
}

fn rel_err(out: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(out.size(), reference.size(), "shape");
    let diff = (out.to_kind(Kind::Double) - reference.to_kind(Kind::Double)).norm();
    f64::try_from(diff).unwrap() / f64::try_from(reference.to_kind(Kind::Double).norm()).unwrap()
}

fn vae(layout: VaeLayout) -> Vae {
    let folder = fixtures().join("vae/diffusers");
    let weights = WeightSet::open(&folder).unwrap();
    let config = VaeConfig::from_json_file(&folder.join("config.json")).unwrap();
    Vae::load_with_layout(&weights, Some(config), Kind::Float, Device::Cpu, layout).unwrap()
}

/// The condition computed the plain way: encode `[image, 0, …, 0]` in full, normalise, prepend the mask.
fn condition_by_full_encode(vae: &Vae, image: &Tensor, frames: i64) -> Tensor {
    let size = image.size();
    let zeros = Tensor::zeros(
        [size[0], size[1], frames - 1, size[2], size[3]],
        (Kind::Float, Device::Cpu),
    );
    let video = Tensor::cat(&[image.unsqueeze(2), zeros], 2);
    let latent = vae.encode(&video).unwrap();
    let s = latent.size();
    let mask = Tensor::zeros([s[0], 4, s[2], s[3], s[4]], (Kind::Float, Device::Cpu));
    let _ = mask.narrow(2, 0, 1).fill_(1.0);
    Tensor::cat(&[mask, latent], 1)
}

#[test]
fn condition_matches_diffusers_prepare_latents() {
    single_threaded();
    let cases = WeightSet::open(&fixtures().join("cond/i2v_condition.safetensors")).unwrap();
    let image = cases.load("image", Kind::Float, Device::Cpu).unwrap();
    let reference = cases.load("condition", Kind::Float, Device::Cpu).unwrap();
    let frames = i64::try_from(
        cases
            .load("num_frames", Kind::Int64, Device::Cpu)
            .unwrap()
            .get(0),
    )
    .unwrap();
    assert_eq!(frames, 49);
    for layout in [VaeLayout::Contiguous, VaeLayout::ChannelsLast] {
        let condition = first_frame_condition(&vae(layout), &image, frames).unwrap();
        assert_eq!(condition.size(), [1, 12, 13, 2, 3]);
        // The mask is exact: ones on latent frame 0 in all four channels, zeros elsewhere.
        assert!(
            condition.narrow(1, 0, 4).equal(&reference.narrow(1, 0, 4)),
            "{layout:?}: mask"
        );
        let err = rel_err(&condition.narrow(1, 4, 8), &reference.narrow(1, 4, 8));
        assert!(
            err < 1e-5,
            "{layout:?}: image latent relative error {err:e}"
        );
    }
}

#[test]
fn skipping_constant_frames_gives_the_full_encode() {
    single_threaded();
    // 81 frames reach the point where every stage but the last stops being recomputed (stage 0 after 13
    // frames, stage 1 after 21, stage 2 after 41). Two different images in one batch.
    let vae = vae(VaeLayout::Contiguous);
    let cases = WeightSet::open(&fixtures().join("vae/cases.safetensors")).unwrap();
    let clip = cases.load("video_b2", Kind::Float, Device::Cpu).unwrap();
    let images = clip.select(2, 0).contiguous(); // [2, 3, 16, 16]
    for frames in [1, 5, 45, 81] {
        let fast = first_frame_condition(&vae, &images, frames).unwrap();
        let full = condition_by_full_encode(&vae, &images, frames);
        let err = rel_err(&fast, &full);
        assert!(err < 1e-6, "{frames} frames: relative error {err:e}");
    }
}

#[test]
fn skipping_also_holds_per_tile() {
    single_threaded();
    let mut vae = vae(VaeLayout::Contiguous);
    vae.set_tiling(Tiling::always(32, 16)).unwrap();
    let cases = WeightSet::open(&fixtures().join("vae/cases.safetensors")).unwrap();
    let image = cases
        .load("video_tile", Kind::Float, Device::Cpu)
        .unwrap()
        .select(2, 0)
        .contiguous();
    let fast = first_frame_condition(&vae, &image, 49).unwrap();
    let full = condition_by_full_encode(&vae, &image, 49);
    let err = rel_err(&fast, &full);
    assert!(err < 1e-6, "tiled: relative error {err:e}");
}

#[test]
fn condition_refuses_bad_frame_counts_and_shapes() {
    single_threaded();
    let vae = vae(VaeLayout::Contiguous);
    let image = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
    assert!(first_frame_condition(&vae, &image, 48)
        .unwrap_err()
        .to_string()
        .contains("4n + 1"));
    assert!(first_frame_condition(&vae, &image, 0).is_err());
    let video = Tensor::zeros([1, 3, 5, 16, 16], (Kind::Float, Device::Cpu));
    assert!(first_frame_condition(&vae, &video, 5)
        .unwrap_err()
        .to_string()
        .contains("[B, 3, H, W]"));
}
