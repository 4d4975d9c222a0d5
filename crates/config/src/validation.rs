//! `train.validation_config`: AI Toolkit's held-out loss. Its keys and defaults (toolkit/config_modules.py
//! `ValidationConfig`): `validation_items` [{image_path, prompt}], `resolution` 512, `validate_every_n_steps`
//! 10, `validation_sigmas` [1, 0.75, 0.5, 0.25].
//!
//! wanlora trains video, so an item's `image_path` may name an image, a video clip, or a folder of
//! clips with `.txt` captions (a held-out dataset); `prompt` is the caption of a single file, and the
//! caption of a folder's clips that have no caption file.

use crate::node::Value;
use crate::reader::{ai, Ctx, Section};
use crate::schema::KeyKind;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

/// One held-out item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValidationItem {
    /// An image, a video clip, or a folder of clips (relative paths start at the job file's folder).
    pub image_path: String,
    /// The item's caption.
    pub prompt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ValidationConfig {
    /// No items: no validation (AI Toolkit skips it too).
    pub validation_items: Vec<ValidationItem>,
    /// Pixel budget (side of the square) the held-out clips are bucketed to. Default 512.
    pub resolution: u32,
    /// Default 10.
    pub validate_every_n_steps: u32,
    /// Noise levels in [0, 1], mapped into each expert's timestep window. Default [1, 0.75, 0.5, 0.25].
    pub validation_sigmas: Vec<f64>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            validation_items: Vec::new(),
            resolution: 512,
            validate_every_n_steps: 10,
            validation_sigmas: vec![1.0, 0.75, 0.5, 0.25],
        }
    }
}

impl ValidationConfig {
    /// The items that name something; AI Toolkit skips those without `image_path` (its UI's
    /// Validation card starts with one empty item).
    pub fn named_items(&self) -> impl Iterator<Item = (usize, &ValidationItem)> {
        self.validation_items
            .iter()
            .enumerate()
            .filter(|(_, item)| !item.image_path.trim().is_empty())
    }

    /// Whether the job evaluates a validation loss at all.
    pub fn enabled(&self) -> bool {
        self.named_items().next().is_some()
    }
}

pub(crate) fn read_validation(s: &mut Section) -> ValidationConfig {
    let d = ValidationConfig::default();
    let validation_items = s.items(
        "validation_items",
        ai("Held-out items: image_path (an image, a clip or a folder of clips) and prompt"),
        |item, _| ValidationItem {
            image_path: item.text("image_path", "", ai("Image, clip or folder of clips")),
            prompt: item.text("prompt", "", ai("Caption of the held-out item")),
        },
    );
    let resolution = s.uint(
        "resolution",
        d.resolution,
        ai("Resolution the held-out clips are bucketed to"),
    );
    let validate_every_n_steps = s.uint(
        "validate_every_n_steps",
        d.validate_every_n_steps,
        ai("Evaluate the validation loss every N steps"),
    );
    let sigmas_path = s.key_path("validation_sigmas");
    let validation_sigmas = match s.raw(
        "validation_sigmas",
        KeyKind::Any,
        json!(d.validation_sigmas),
        ai("Noise levels in [0, 1], spread over each expert's window"),
    ) {
        None => d.validation_sigmas,
        Some(node) => {
            let items: Vec<&crate::node::Node> = match &node.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![node],
            };
            let values: Option<Vec<f64>> = items.into_iter().map(crate::reader::as_f64).collect();
            match values {
                Some(v) if !v.is_empty() => v,
                _ => {
                    s.ctx().error_at(
                        &sigmas_path,
                        format!("expected a list of numbers, found {}", node.show()),
                        "write e.g. validation_sigmas: [1.0, 0.75, 0.5, 0.25]",
                    );
                    d.validation_sigmas
                }
            }
        }
    };
    ValidationConfig {
        validation_items,
        resolution,
        validate_every_n_steps,
        validation_sigmas,
    }
}

/// Cross-field checks: every named item is an existing file or folder (an empty one is skipped with a
/// warning), sigmas lie in [0, 1], and the
/// interval is at least 1.
pub(crate) fn check_validation(v: &ValidationConfig, key: &str, ctx: &mut Ctx, base_dir: &Path) {
    for (i, item) in v.validation_items.iter().enumerate() {
        let at = format!("{key}.validation_items[{i}].image_path");
        if item.image_path.trim().is_empty() {
            ctx.warning_at(
                &at,
                format!("validation item {i} has no image_path and is skipped (as in AI Toolkit)"),
                "name a held-out image, clip or folder of clips (not one of the training files)",
            );
        } else if !item.image_path.contains("${") && !base_dir.join(&item.image_path).exists() {
            ctx.error_at(
                &at,
                format!(
                    "{} does not exist",
                    base_dir.join(&item.image_path).display()
                ),
                "fix the path (relative paths start at the job file's folder)",
            );
        }
    }
    if !v.enabled() {
        return;
    }
    for (i, sigma) in v.validation_sigmas.iter().enumerate() {
        if !(0.0..=1.0).contains(sigma) {
            ctx.error_at(
                &format!("{key}.validation_sigmas[{i}]"),
                format!("validation sigma {sigma} is outside [0, 1]"),
                "use noise levels between 0 and 1, e.g. [1.0, 0.75, 0.5, 0.25]",
            );
        }
    }
    if v.validate_every_n_steps == 0 {
        ctx.error_at(
            &format!("{key}.validate_every_n_steps"),
            "validate_every_n_steps must be at least 1",
            "use e.g. 50, or remove validation_config",
        );
    }
    if !wanlora_spec::frames::is_frame_side(v.resolution) {
        ctx.error_at(
            &format!("{key}.resolution"),
            format!(
                "resolution {} is not a multiple of {} (Wan's latent patches are 16×16 pixels)",
                v.resolution,
                wanlora_spec::frames::SIZE_MULTIPLE
            ),
            wanlora_spec::frames::frame_side_hint(v.resolution),
        );
    }
}
