//! The Wan 2.2 VAE (TI2V-5B's: residual stages, 2×2 patchify, 16× in space) against diffusers 0.42.1's
//! `AutoencoderKLWan` with the 2.2 configuration on a tiny random model with the real layer layout (fixtures
//! from scripts/fixtures/gen_vae22.py): encode and decode within 1e-5 relative error in float32, the
//! configuration inferred from the shapes, the original (ComfyUI `wan2.2_vae`) names, both memory layouts,
//! bf16, and diffusers' tiling.

use std::collections::{BTreeMap, HashMap};
use tch::{Device, Kind, Tensor};
use wanlora_models::vae::{
    original_name_wan22, Tiling, Vae, VaeConfig, VaeLayout, VaeNaming, WAN22_LATENTS_MEAN,
};
use wanlora_torch::weights::{TensorMap, WeightSet, WeightSource};

mod vae_support;
use vae_support::{assert_close, single_threaded, VaeFixture};

const FIXTURE: VaeFixture = VaeFixture("vae22");

/// The fixture's weights under their original names, as the generator's independent mapping gives them.
fn original_named_weights() -> TensorMap {
    let diffusers = WeightSet::open(&FIXTURE.dir().join("diffusers")).unwrap();
    let text = std::fs::read_to_string(FIXTURE.dir().join("original_names.json")).unwrap();
    let names: HashMap<String, String> = serde_json::from_str(&text).unwrap();
    TensorMap(
        names
            .iter()
            .map(|(d, o)| {
                (
                    o.clone(),
                    diffusers.load(d, Kind::Float, Device::Cpu).unwrap(),
                )
            })
            .collect(),
    )
}

#[test]
fn wan22_encode_of_9_frames_matches_diffusers() {
    single_threaded();
    let vae = FIXTURE.diffusers_vae();
    assert_eq!(vae.config().spatial_compression(), 16);
    let video = FIXTURE.case("video9");
    let raw = vae.encode_raw(&video).unwrap();
    assert_eq!(raw.size(), [1, 6, 3, 1, 2]);
    assert_close("μ", &raw, &FIXTURE.case("latent9_raw"), 1e-5);
    assert_close(
        "normalised μ",
        &vae.encode(&video).unwrap(),
        &FIXTURE.case("latent9"),
        1e-5,
    );
    assert_close(
        "a batch of two start images",
        &vae.encode(&FIXTURE.case("image_b2")).unwrap(),
        &FIXTURE.case("latent_b2"),
        1e-5,
    );
}

#[test]
fn wan22_decode_of_3_latent_frames_matches_diffusers() {
    single_threaded();
    let vae = FIXTURE.diffusers_vae();
    let video = vae.decode(&FIXTURE.case("z9")).unwrap();
    assert_eq!(video.size(), [1, 3, 9, 16, 32]);
    assert_close("decoded video", &video, &FIXTURE.case("video_dec9"), 1e-5);
}

#[test]
fn wan22_config_is_inferred_from_the_shapes_and_original_names_load() {
    single_threaded();
    let expected = FIXTURE.diffusers_config();
    let original = original_named_weights();
    for (what, source) in [
        (
            "diffusers names",
            &WeightSet::open(&FIXTURE.dir().join("diffusers")).unwrap() as &dyn WeightSource,
        ),
        ("original names", &original as &dyn WeightSource),
    ] {
        let vae = Vae::load(source, None, Kind::Float, Device::Cpu).unwrap();
        let got = vae.config();
        assert_eq!(
            (
                got.base_dim,
                got.decoder_base_dim,
                got.z_dim,
                &got.dim_mult,
                got.num_res_blocks,
                &got.temperal_downsample,
                got.is_residual,
                got.in_channels,
                got.out_channels,
                got.patch_size,
            ),
            (
                expected.base_dim,
                expected.decoder_base_dim,
                expected.z_dim,
                &expected.dim_mult,
                expected.num_res_blocks,
                &expected.temperal_downsample,
                expected.is_residual,
                expected.in_channels,
                expected.out_channels,
                expected.patch_size,
            ),
            "{what}"
        );
        // A file holds no latent statistics: μ before normalisation is what can be compared.
        assert_close(
            &format!("μ, {what}, inferred config"),
            &vae.encode_raw(&FIXTURE.case("video9")).unwrap(),
            &FIXTURE.case("latent9_raw"),
            1e-5,
        );
    }
    let vae = Vae::load(&original, Some(expected), Kind::Float, Device::Cpu).unwrap();
    assert_eq!(vae.naming(), VaeNaming::Original);
    assert_close(
        "decode, original names",
        &vae.decode(&FIXTURE.case("z9")).unwrap(),
        &FIXTURE.case("video_dec9"),
        1e-5,
    );
}

#[test]
fn wan22_original_names_are_the_generators() {
    let text = std::fs::read_to_string(FIXTURE.dir().join("original_names.json")).unwrap();
    let names: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    for (diffusers, original) in &names {
        assert_eq!(
            original_name_wan22(diffusers, 2).as_deref(),
            Some(original.as_str()),
            "{diffusers}"
        );
    }
    assert_eq!(original_name_wan22("patch_embedding.weight", 2), None);
}

#[test]
fn wan22_real_sizes_infer_the_real_statistics() {
    single_threaded();
    // The TI2V-5B VAE: 12 = 3·2² input channels, 16× in space, its own 48 statistics.
    let real = VaeConfig::wan22();
    real.validate().unwrap();
    assert_eq!(real.spatial_compression(), 16);
    assert_eq!(real.video_channels(), 3);
    assert_eq!(real.latents_mean[..], WAN22_LATENTS_MEAN[..]);
}

#[test]
fn wan22_channels_last_and_bfloat16() {
    single_threaded();
    let weights = WeightSet::open(&FIXTURE.dir().join("diffusers")).unwrap();
    let load = |kind, layout| {
        Vae::load_with_layout(
            &weights,
            Some(FIXTURE.diffusers_config()),
            kind,
            Device::Cpu,
            layout,
        )
        .unwrap()
    };
    let vae = load(Kind::Float, VaeLayout::ChannelsLast);
    assert_close(
        "encode, channels-last",
        &vae.encode(&FIXTURE.case("video9")).unwrap(),
        &FIXTURE.case("latent9"),
        1e-5,
    );
    assert_close(
        "decode, channels-last",
        &vae.decode(&FIXTURE.case("z9")).unwrap(),
        &FIXTURE.case("video_dec9"),
        1e-5,
    );
    for layout in [VaeLayout::Contiguous, VaeLayout::ChannelsLast] {
        let vae = load(Kind::BFloat16, layout);
        assert_close(
            &format!("bf16 encode, {layout:?}"),
            &vae.encode(&FIXTURE.case("video9")).unwrap(),
            &FIXTURE.case("latent9"),
            5e-2,
        );
        assert_close(
            &format!("bf16 decode, {layout:?}"),
            &vae.decode(&FIXTURE.case("z9")).unwrap(),
            &FIXTURE.case("video_dec9"),
            5e-2,
        );
    }
}

#[test]
fn wan22_tiled_decode_and_encode_match_diffusers_tiling() {
    single_threaded();
    // One frame of 32×48 pixels (2×3 latents) in tiles of 32 with a stride of 16. diffusers counts its encode
    // tiles in 2×2 patches (its 16 are these 32 pixels) and its decode tiles in pixels.
    FIXTURE.check_tiling(Tiling::always(32, 16));
    let mut vae = FIXTURE.diffusers_vae();
    let err = vae
        .set_tiling(Tiling::always(40, 8))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiples of 16"), "{err}");
}

#[test]
fn wan22_inputs_must_be_multiples_of_16_pixels() {
    single_threaded();
    let vae = FIXTURE.diffusers_vae();
    let eight = Tensor::zeros([1, 3, 1, 24, 32], (Kind::Float, Device::Cpu));
    let err = vae.encode(&eight).unwrap_err().to_string();
    assert!(err.contains("multiples of 16"), "{err}");
    let wrong_latent = Tensor::zeros([1, 16, 2, 2, 2], (Kind::Float, Device::Cpu));
    let err = vae.decode(&wrong_latent).unwrap_err().to_string();
    assert!(err.contains("[B, 6, T, h, w]"), "{err}");
}
