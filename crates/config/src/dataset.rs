//! `datasets[]`: where the clips and captions are and how they are cut (AI Toolkit's `DatasetConfig`).

use crate::checks::{check_frames, check_positive_or_zero, check_size, check_unit_interval};
use crate::choice::{choice_serde, Choice};
use crate::reader::{ai, Ctx, Neutral, Section, Unused, UnusedKey};
use serde::{Deserialize, Serialize};

/// AI Toolkit's dataset `type`; only plain captioned media folders exist for Wan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum DatasetType {
    #[default]
    Image,
}

impl Choice for DatasetType {
    const SPELLINGS: &'static [(&'static str, Self)] = &[("image", DatasetType::Image)];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("slider", "slider datasets are not implemented"),
        (
            "reference",
            "reference (paired) datasets are not implemented",
        ),
    ];
}
choice_serde!(DatasetType);

/// One folder of clips and images with `.txt` captions. A list of resolutions trains every item at
/// each of them (AI Toolkit splits such a dataset into one dataset per resolution; the data crate does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetConfig {
    /// `folder_path` (alias `dataset_path`): the folder of clips/images and captions, searched
    /// recursively. Relative paths are relative to the job file's folder.
    pub folder_path: String,
    /// `caption_ext`: caption file extension, stored with its dot (`txt` is read as `.txt`). Default `.txt`.
    pub caption_ext: String,
    /// `default_caption`: caption for items without a caption file (or with an empty one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_caption: Option<String>,
    /// `trigger_word`: this dataset's trigger; defaults to the process `trigger_word`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_word: Option<String>,
    /// `caption_dropout_rate`: probability in [0, 1] of training an item with an empty caption. Default 0.
    pub caption_dropout_rate: f64,
    /// `resolution`: one side length or a list; each bucket has at most resolution² pixels,
    /// sides multiples of 16. Default [512].
    pub resolution: Vec<u32>,
    /// `num_frames`: frames per training clip, of the form 4n+1 (1 = images only). Default 1.
    pub num_frames: u32,
    /// `shrink_video_to_frames`: spread the frames evenly over the whole clip (default true), or take
    /// consecutive frames at `fps` from a random start (false).
    pub shrink_video_to_frames: bool,
    /// `fps`: frame rate used when not shrinking, and for `auto_frame_count`. Default 24 (AI Toolkit's
    /// Wan UI sets 16, Wan's native rate).
    pub fps: u32,
    /// `auto_frame_count`: use as many frames as the clip has at `fps`, snapped to 4n+1.
    pub auto_frame_count: bool,
    /// `trim_auto_frame_count_tail`: with `auto_frame_count`, drop the tail frames instead of
    /// stretching the clip. Default true.
    pub trim_auto_frame_count_tail: bool,
    /// `flip_x`: also train on horizontally mirrored copies.
    pub flip_x: bool,
    /// `flip_y`: also train on vertically flipped copies.
    pub flip_y: bool,
    /// `is_reg`: a regularisation set (no trigger prepended; alternates with the other datasets).
    pub is_reg: bool,
    /// `network_weight`: LoRA multiplier while training items of this dataset. Default 1.
    pub network_weight: f64,
    /// `loss_multiplier`: factor on this dataset's loss. Default 1.
    pub loss_multiplier: f64,
    /// `num_repeats`: how many times each item appears per epoch. Default 1.
    pub num_repeats: u32,
    /// `cache_latents`: encode every item once before training and reuse it (kept on disk in wanlora,
    /// including the I2V first-frame condition).
    pub cache_latents: bool,
    /// `cache_latents_to_disk`: same as `cache_latents` in wanlora (the cache always lives on disk).
    pub cache_latents_to_disk: bool,
    /// `cache_text_embeddings`: cache this dataset's caption embeddings (also switched on for every
    /// dataset by `train.cache_text_embeddings`).
    pub cache_text_embeddings: bool,
    /// `batch_size` (AI Toolkit's UI writes it per dataset): batches are drawn across datasets at
    /// `train.batch_size`, so this must equal it; a single dataset's value is taken as
    /// `train.batch_size` when the train section does not set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// `do_i2v` (wan22_5b): clips train image-to-video from their own first frame (clean latent
    /// frame 0 at timestep 0, outside the loss); false trains them text-to-video. AI Toolkit's UI
    /// writes true for wan22_5b (its code default is false); wanlora's default is the UI's. The A14B
    /// models ignore it: their arch decides.
    pub do_i2v: bool,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            folder_path: String::new(),
            caption_ext: ".txt".to_string(),
            default_caption: None,
            trigger_word: None,
            caption_dropout_rate: 0.0,
            resolution: vec![512],
            num_frames: 1,
            shrink_video_to_frames: true,
            fps: 24,
            auto_frame_count: false,
            trim_auto_frame_count_tail: true,
            flip_x: false,
            flip_y: false,
            is_reg: false,
            network_weight: 1.0,
            loss_multiplier: 1.0,
            num_repeats: 1,
            cache_latents: false,
            cache_latents_to_disk: false,
            cache_text_embeddings: false,
            batch_size: None,
            do_i2v: true,
        }
    }
}

impl DatasetConfig {
    /// Whether latents (and the I2V condition) are cached before training.
    pub fn caches_latents(&self) -> bool {
        self.cache_latents || self.cache_latents_to_disk
    }
}

/// AI Toolkit prepends the dot when it is missing (`txt` → `.txt`).
fn with_dot(ext: String) -> String {
    if ext.is_empty() || ext.starts_with('.') {
        ext
    } else {
        format!(".{ext}")
    }
}

pub(crate) fn read_dataset(s: &mut Section) -> DatasetConfig {
    let d = DatasetConfig::default();
    let _ = s.choice(
        "type",
        DatasetType::Image,
        ai("Dataset kind; only image (captioned media folders)"),
    );
    let dataset = DatasetConfig {
        folder_path: s.text(
            &["folder_path", "dataset_path"],
            "",
            ai("Folder of clips/images and captions (relative to the job file)"),
        ),
        caption_ext: with_dot(s.text(
            &["caption_ext", "caption_type"],
            &d.caption_ext,
            ai("Caption file extension, with or without the dot"),
        )),
        default_caption: s.opt_text(
            "default_caption",
            ai("Caption for items without a caption file"),
        ),
        trigger_word: s.opt_text(
            "trigger_word",
            ai("This dataset's trigger word (default: the process trigger_word)"),
        ),
        caption_dropout_rate: s.float(
            "caption_dropout_rate",
            d.caption_dropout_rate,
            ai("Probability of training an item with an empty caption"),
        ),
        resolution: s.uint_or_list(
            "resolution",
            &d.resolution,
            ai("Bucket side length(s); each listed resolution trains every item"),
        ),
        num_frames: s.uint(
            "num_frames",
            d.num_frames,
            ai("Frames per clip, 4n+1 (1: images)"),
        ),
        shrink_video_to_frames: s.bool(
            "shrink_video_to_frames",
            d.shrink_video_to_frames,
            ai("Spread frames over the whole clip (else consecutive at fps)"),
        ),
        fps: s.uint(
            "fps",
            d.fps,
            ai("Frame rate when not shrinking and for auto_frame_count"),
        ),
        auto_frame_count: s.bool(
            "auto_frame_count",
            d.auto_frame_count,
            ai("Use every frame of the clip at fps, snapped to 4n+1"),
        ),
        trim_auto_frame_count_tail: s.bool(
            "trim_auto_frame_count_tail",
            d.trim_auto_frame_count_tail,
            ai("With auto_frame_count, drop tail frames instead of stretching"),
        ),
        flip_x: s.bool("flip_x", d.flip_x, ai("Also train on mirrored copies")),
        flip_y: s.bool("flip_y", d.flip_y, ai("Also train on upside-down copies")),
        is_reg: s.bool("is_reg", d.is_reg, ai("Regularisation dataset")),
        network_weight: s.float(
            "network_weight",
            d.network_weight,
            ai("LoRA multiplier for this dataset's items"),
        ),
        loss_multiplier: s.float(
            "loss_multiplier",
            d.loss_multiplier,
            ai("Factor on this dataset's loss"),
        ),
        num_repeats: s.uint(
            "num_repeats",
            d.num_repeats,
            ai("Repeats of each item per epoch"),
        ),
        cache_latents: s.bool(
            "cache_latents",
            d.cache_latents,
            ai("Encode items once before training (on disk in wanlora)"),
        ),
        cache_latents_to_disk: s.bool(
            "cache_latents_to_disk",
            d.cache_latents_to_disk,
            ai("Same as cache_latents in wanlora"),
        ),
        cache_text_embeddings: s.bool(
            "cache_text_embeddings",
            d.cache_text_embeddings,
            ai("Cache this dataset's caption embeddings"),
        ),
        batch_size: s.opt_uint(
            "batch_size",
            ai("Per-dataset batch size; must equal train.batch_size"),
        ),
        do_i2v: s.bool(
            "do_i2v",
            d.do_i2v,
            ai("wan22_5b: train clips image-to-video from their first frame (the A14B arch decides for itself)"),
        ),
    };

    s.unused(DATASET_UNUSED);
    dataset
}

/// Keys of this section that wanlora reads but does not act on, and why.
const DATASET_UNUSED: &[UnusedKey] = &[
    (
        "token_dropout_rate",
        Unused::Refused(Neutral::Off),
        "token dropout is not implemented",
    ),
    (
        "shuffle_tokens",
        Unused::Refused(Neutral::Off),
        "caption token shuffling is not implemented",
    ),
    (
        "keep_tokens",
        Unused::Refused(Neutral::Off),
        "caption token shuffling/dropout is not implemented",
    ),
    (
        "random_triggers",
        Unused::Refused(Neutral::Off),
        "random triggers are not implemented",
    ),
    (
        "random_triggers_max",
        Unused::Accepted,
        "only used with random_triggers",
    ),
    (
        "replacements",
        Unused::Refused(Neutral::Off),
        "caption replacements are not implemented; edit the captions",
    ),
    (
        "buckets",
        Unused::Refused(Neutral::True),
        "video training always uses aspect buckets",
    ),
    (
        "bucket_tolerance",
        Unused::Accepted,
        "buckets are multiples of 16 for Wan (AI Toolkit overrides this too)",
    ),
    (
        "scale",
        Unused::Refused(Neutral::Number(1.0)),
        "image scaling is not implemented",
    ),
    (
        "random_crop",
        Unused::Refused(Neutral::Off),
        "random crops are not implemented; buckets crop at the centre",
    ),
    (
        "random_scale",
        Unused::Refused(Neutral::Off),
        "random scaling is not implemented",
    ),
    (
        "square_crop",
        Unused::Refused(Neutral::Off),
        "square crops are not implemented; buckets keep the aspect ratio",
    ),
    (
        "prior_reg",
        Unused::Refused(Neutral::Off),
        "prior regularisation is not implemented; use is_reg",
    ),
    (
        "cache_tensors_to_disk",
        Unused::NoEffect(Neutral::Off),
        "wanlora's latent cache already stores the I2V first-frame condition",
    ),
    (
        "load_image_when_caching_latents",
        Unused::NoEffect(Neutral::Off),
        "wanlora's latent cache already stores the I2V first-frame condition",
    ),
    (
        "cache_latents_num_workers",
        Unused::Accepted,
        "AI Toolkit's decoding threads; wanlora decodes with ffmpeg",
    ),
    (
        "num_workers",
        Unused::Accepted,
        "AI Toolkit's data loader threads; wanlora decodes with ffmpeg",
    ),
    (
        "prefetch_factor",
        Unused::Accepted,
        "AI Toolkit's data loader setting",
    ),
    (
        "do_audio",
        Unused::Refused(Neutral::Off),
        "Wan 2.2 I2V has no audio",
    ),
    (
        "audio_normalize",
        Unused::Accepted,
        "only used with do_audio",
    ),
    (
        "audio_preserve_pitch",
        Unused::Accepted,
        "only used with do_audio",
    ),
    (
        "diff_output_preservation",
        Unused::Accepted,
        "set from train.diff_output_preservation",
    ),
    (
        "diff_output_preservation_class",
        Unused::Accepted,
        "set from train.diff_output_preservation_class",
    ),
    (
        "debug",
        Unused::Accepted,
        "AI Toolkit's frame-selection debug output",
    ),
    (
        "fast_image_size",
        Unused::Accepted,
        "AI Toolkit's image-size shortcut",
    ),
    (
        "control_path",
        Unused::Refused(Neutral::Off),
        "control images are not used by Wan 2.2 I2V; the start frame comes from each clip",
    ),
    (
        "control_path_1",
        Unused::Refused(Neutral::Off),
        "control images are not used by Wan 2.2 I2V; the start frame comes from each clip",
    ),
    (
        "control_path_2",
        Unused::Refused(Neutral::Off),
        "control images are not used by Wan 2.2 I2V; the start frame comes from each clip",
    ),
    (
        "control_path_3",
        Unused::Refused(Neutral::Off),
        "control images are not used by Wan 2.2 I2V; the start frame comes from each clip",
    ),
    (
        "control_from_same_folder",
        Unused::Refused(Neutral::Off),
        "control images are not used by Wan 2.2 I2V",
    ),
    (
        "num_controls_from_same_folder",
        Unused::Accepted,
        "only used with control images",
    ),
    (
        "control_transparent_color",
        Unused::Accepted,
        "only used with control images",
    ),
    (
        "controls",
        Unused::Refused(Neutral::Off),
        "automatic control images are not used by Wan 2.2 I2V",
    ),
    (
        "mask_path",
        Unused::Refused(Neutral::Off),
        "loss masks are not implemented",
    ),
    (
        "mask_min_value",
        Unused::Accepted,
        "only used with mask_path",
    ),
    (
        "alpha_mask",
        Unused::Refused(Neutral::Off),
        "loss masks are not implemented",
    ),
    (
        "invert_mask",
        Unused::Refused(Neutral::Off),
        "loss masks are not implemented",
    ),
    (
        "inpaint_path",
        Unused::Refused(Neutral::Off),
        "inpainting is not implemented",
    ),
    (
        "unconditional_path",
        Unused::Refused(Neutral::Off),
        "unconditional image pairs are not implemented",
    ),
    (
        "clip_image_path",
        Unused::Refused(Neutral::Off),
        "Wan 2.2 I2V has no CLIP image encoder",
    ),
    (
        "augments",
        Unused::Refused(Neutral::Off),
        "augmentations are not implemented (AI Toolkit refuses them for video too)",
    ),
    (
        "augmentations",
        Unused::Refused(Neutral::Off),
        "augmentations are not implemented (AI Toolkit refuses them for video too)",
    ),
    (
        "use_short_captions",
        Unused::Refused(Neutral::Off),
        "JSON caption files are not implemented",
    ),
    (
        "standardize_images",
        Unused::Refused(Neutral::Off),
        "image standardisation is not implemented",
    ),
    (
        "poi",
        Unused::Refused(Neutral::Off),
        "AI Toolkit itself no longer supports poi",
    ),
];

/// Dataset `i`'s own checks; `at` is its key path, relative paths resolve against `base_dir`.
pub(crate) fn check_dataset(
    dataset: &DatasetConfig,
    i: usize,
    at: &str,
    base_dir: &std::path::Path,
    ctx: &mut Ctx,
) {
    if dataset.folder_path.trim().is_empty() {
        ctx.error_at(
            &format!("{at}.folder_path"),
            format!("dataset {i} has no folder_path"),
            "add folder_path: the folder with your clips and .txt captions",
        );
    } else if dataset.folder_path.contains("${") {
        // An unset environment variable, already reported where it is written.
    } else if dataset.folder_path.ends_with(".json") {
        ctx.error_at(
            &format!("{at}.folder_path"),
            "JSON caption files are not supported by wanlora",
            "point folder_path at a folder of clips with .txt captions",
        );
    } else {
        let folder = base_dir.join(&dataset.folder_path);
        if !folder.is_dir() {
            let what = if folder.exists() {
                "is not a folder"
            } else {
                "does not exist"
            };
            ctx.error_at(
                &format!("{at}.folder_path"),
                format!("{} {what}", folder.display()),
                "fix the path (relative paths start at the job file's folder)",
            );
        }
    }
    if dataset.caption_ext.is_empty() || dataset.caption_ext == "." {
        ctx.error_at(
            &format!("{at}.caption_ext"),
            "caption_ext is empty",
            "use caption_ext: txt",
        );
    }
    check_frames(dataset.num_frames, &format!("{at}.num_frames"), ctx);
    for (j, &resolution) in dataset.resolution.iter().enumerate() {
        let key = if dataset.resolution.len() == 1 {
            format!("{at}.resolution")
        } else {
            format!("{at}.resolution[{j}]")
        };
        check_size(resolution, &key, ctx);
    }
    check_unit_interval(
        dataset.caption_dropout_rate,
        &format!("{at}.caption_dropout_rate"),
        ctx,
    );
    check_positive_or_zero(dataset.network_weight, &format!("{at}.network_weight"), ctx);
    check_positive_or_zero(
        dataset.loss_multiplier,
        &format!("{at}.loss_multiplier"),
        ctx,
    );
    if dataset.num_repeats == 0 {
        ctx.error_at(
            &format!("{at}.num_repeats"),
            "num_repeats must be at least 1",
            "use 1",
        );
    }
    if dataset.fps == 0 {
        ctx.error_at(
            &format!("{at}.fps"),
            "fps must be at least 1",
            "use 16, Wan's frame rate",
        );
    }
}
