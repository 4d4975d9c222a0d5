//! Value checks that several sections use: device names, frame counts and sizes (the Wan rules of
//! `wanlora_spec::frames`), probabilities and non-negative numbers. Each adds an error naming the
//! key and what to write instead.

use crate::reader::Ctx;
use wanlora_spec::frames;

pub(crate) fn check_device(device: &str, key: &str, ctx: &mut Ctx) {
    let ok = device == "cuda"
        || device == "cpu"
        || device
            .strip_prefix("cuda:")
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if !ok {
        ctx.error_at(
            key,
            format!("device `{device}` is not supported"),
            "use cuda, cuda:N (a GPU index) or cpu",
        );
    }
}

/// The valid frame counts below and above `n` (4k+1 values).
pub(crate) fn check_frames(n: u32, key: &str, ctx: &mut Ctx) {
    if frames::is_frame_count(n) {
        return;
    }
    let hint = frames::frame_count_hint(n);
    ctx.error_at(
        key,
        format!("num_frames {n} is not of the form 4n+1 (the VAE packs 4 frames per latent frame after the first)"),
        hint,
    );
}

pub(crate) fn check_size(size: u32, key: &str, ctx: &mut Ctx) {
    if frames::is_frame_side(size) {
        return;
    }
    let hint = frames::frame_side_hint(size);
    ctx.error_at(
        key,
        format!(
            "{size} is not a multiple of {} (Wan's latent patches are 16×16 pixels)",
            frames::SIZE_MULTIPLE
        ),
        hint,
    );
}

pub(crate) fn check_unit_interval(value: f64, key: &str, ctx: &mut Ctx) {
    if !(0.0..=1.0).contains(&value) {
        ctx.error_at(
            key,
            format!("{value} is not a probability between 0 and 1"),
            "use e.g. 0.05",
        );
    }
}

pub(crate) fn check_positive_or_zero(value: f64, key: &str, ctx: &mut Ctx) {
    if value < 0.0 {
        ctx.error_at(
            key,
            format!("{value} must not be negative"),
            "use 0 or more",
        );
    }
}
