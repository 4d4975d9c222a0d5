//! Checks that need the whole typed job: value ranges, video shapes, files that must exist, and
//! combinations of settings that cannot work together.

use crate::job::Job;
use crate::reader::Ctx;
use std::path::Path;

/// Wan 2.2 A14B has 40 transformer blocks per expert.
const TRANSFORMER_BLOCKS: u32 = 40;
/// Frame counts must be 4n+1: the VAE packs 4 frames into one latent frame after the first.
use wanlora_spec::frames;

/// Runs every cross-field check, adding findings to `ctx`. Relative paths resolve against `base_dir`.
/// Numbers are finite here: the reader rejects `.nan` and `.inf`.
/// The `network.conv` value AI Toolkit's UI writes into every job it saves.
const AITK_UI_CONV: u32 = 16;

pub(crate) fn validate(job: &Job, ctx: &mut Ctx, base_dir: &Path) {
    let p = "config.process[0]";
    let process = job.process();
    let train = &process.train;
    let model = &process.model;
    let sample = &process.sample;
    let arch = model.arch.facts();

    check_device(&process.device, &format!("{p}.device"), ctx);
    crate::limits::check_limits(job, ctx);

    // network
    if process.network.linear == 0 {
        ctx.error_at(
            &format!("{p}.network.linear"),
            "the LoRA rank must be at least 1",
            "use a rank such as 16 or 32",
        );
    }
    if let Some(alpha) = process.network.linear_alpha {
        if alpha <= 0.0 {
            ctx.error_at(
                &format!("{p}.network.linear_alpha"),
                format!("alpha {alpha} must be above 0"),
                "remove linear_alpha to use alpha = rank",
            );
        } else if alpha != f64::from(process.network.linear) {
            ctx.warning_at(
                &format!("{p}.network.linear_alpha"),
                format!(
                    "AI Toolkit ignores linear_alpha for Wan and trains with alpha = rank; wanlora applies it, so this LoRA's updates are scaled by alpha/rank = {}",
                    alpha / f64::from(process.network.linear.max(1))
                ),
                "remove linear_alpha (or set it equal to linear) to train like AI Toolkit",
            );
        }
    }
    if let Some(conv) = process.network.conv.filter(|&c| c > 0) {
        let message = "Wan's transformer blocks have no convolutions, so conv trains nothing";
        // AI Toolkit's UI writes `conv: 16` (and `conv_alpha: 16`) into every job it saves: that
        // is not the user asking for anything, so it is only a note.
        let ui_default = conv == AITK_UI_CONV
            && process
                .network
                .conv_alpha
                .is_none_or(|a| a == f64::from(AITK_UI_CONV));
        if ui_default {
            ctx.note_at(
                &format!("{p}.network.conv"),
                format!("{message} (AI Toolkit's UI writes conv: {AITK_UI_CONV} into every job)"),
                "",
            );
        } else {
            ctx.warning_at(
                &format!("{p}.network.conv"),
                message,
                "remove conv and conv_alpha",
            );
        }
    }

    // save
    if process.save.save_every == 0 {
        ctx.error_at(
            &format!("{p}.save.save_every"),
            "save_every must be at least 1",
            "use e.g. 250",
        );
    }
    if process.save.save_format == crate::save::SaveFormat::Diffusers {
        // AI Toolkit's UI writes `save_format: diffusers` into every job; it means the same there.
        ctx.note_at(
            &format!("{p}.save.save_format"),
            "LoRA files are always written as .safetensors; the diffusers format only applies to full fine-tunes (AI Toolkit does the same)",
            "",
        );
    }

    // datasets
    let datasets_path = format!("{p}.datasets");
    if process.datasets.is_empty() {
        ctx.error_at(
            &datasets_path,
            "the job has no datasets",
            "add a datasets list with a folder_path (see examples/)",
        );
    } else if process.datasets.iter().all(|d| d.is_reg) {
        ctx.error_at(
            &datasets_path,
            "every dataset is a regularisation set (is_reg), so nothing is learned",
            "set is_reg: false on the dataset you want to learn",
        );
    }
    for (i, dataset) in process.datasets.iter().enumerate() {
        let at = format!("{datasets_path}[{i}]");
        if let Some(n) = dataset.batch_size.filter(|&n| n != train.batch_size) {
            ctx.error_at(
                &format!("{at}.batch_size"),
                format!(
                    "dataset {i} asks for batch size {n}, but batches are drawn across all datasets at train.batch_size ({})",
                    train.batch_size
                ),
                format!("set train.batch_size: {n} and remove the datasets' batch_size, or make them equal"),
            );
        }
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

    // train
    let t = format!("{p}.train");
    if train.steps == 0 {
        ctx.error_at(
            &format!("{t}.steps"),
            "steps must be at least 1",
            "use e.g. 2000",
        );
    }
    if train.lr <= 0.0 {
        ctx.error_at(
            &format!("{t}.lr"),
            format!("the learning rate {} must be above 0", train.lr),
            "use e.g. 1e-4",
        );
    }
    if train.batch_size == 0 {
        ctx.error_at(
            &format!("{t}.batch_size"),
            "batch_size must be at least 1",
            "use 1",
        );
    }
    if train.gradient_accumulation == 0 {
        ctx.error_at(
            &format!("{t}.gradient_accumulation"),
            "gradient_accumulation must be at least 1",
            "use 1",
        );
    }
    if train.switch_boundary_every == 0 {
        ctx.error_at(
            &format!("{t}.switch_boundary_every"),
            "switch_boundary_every must be at least 1",
            "use 1, or 10 with low_vram",
        );
    }
    check_positive_or_zero(train.max_grad_norm, &format!("{t}.max_grad_norm"), ctx);
    check_positive_or_zero(
        train.optimizer_params.weight_decay,
        &format!("{t}.optimizer_params.weight_decay"),
        ctx,
    );
    for (j, beta) in train.optimizer_params.betas.iter().enumerate() {
        if !(0.0..1.0).contains(beta) {
            ctx.error_at(
                &format!("{t}.optimizer_params.betas"),
                format!("beta{} = {beta} must be in [0, 1)", j + 1),
                "use betas: [0.9, 0.999]",
            );
        }
    }
    if train.optimizer_params.eps <= 0.0 {
        ctx.error_at(
            &format!("{t}.optimizer_params.eps"),
            "eps must be above 0",
            "use 1e-6",
        );
    }
    if train.lr_warmup_steps > 0
        && train.lr_scheduler == crate::train::LrScheduler::ConstantWithWarmup
    {
        ctx.error_at(
            &format!("{t}.lr_warmup_steps"),
            "lr_warmup_steps and lr_scheduler: constant_with_warmup both ask for a warmup",
            "keep one: lr_warmup_steps (with any scheduler) or constant_with_warmup with lr_scheduler_params.num_warmup_steps",
        );
    } else if train.steps > 0 && train.warmup_steps() >= train.steps {
        ctx.warning_at(
            &format!("{t}.lr_warmup_steps"),
            format!(
                "the warmup ({} steps) lasts the whole run ({} steps)",
                train.warmup_steps(),
                train.steps
            ),
            "use a warmup of a few percent of the steps",
        );
    }
    if train.keep_blocks > TRANSFORMER_BLOCKS {
        ctx.error_at(
            &format!("{t}.keep_blocks"),
            format!(
                "keep_blocks {} is more than the {TRANSFORMER_BLOCKS} transformer blocks",
                train.keep_blocks
            ),
            format!("use 0 to {TRANSFORMER_BLOCKS}"),
        );
    }
    if train.keep_attention > TRANSFORMER_BLOCKS {
        ctx.error_at(
            &format!("{t}.keep_attention"),
            format!(
                "keep_attention {} is more than the {TRANSFORMER_BLOCKS} transformer blocks",
                train.keep_attention
            ),
            format!("use 0 to {TRANSFORMER_BLOCKS}"),
        );
    }
    crate::validation::check_validation(
        &train.validation_config,
        &format!("{p}.train.validation_config"),
        ctx,
        base_dir,
    );
    if train.ema_config.use_ema
        && !(train.ema_config.ema_decay > 0.0 && train.ema_config.ema_decay < 1.0)
    {
        ctx.error_at(
            &format!("{t}.ema_config.ema_decay"),
            format!("ema_decay {} must be in (0, 1)", train.ema_config.ema_decay),
            "use e.g. 0.999",
        );
    }
    if train.do_differential_guidance && train.differential_guidance_scale <= 0.0 {
        ctx.error_at(
            &format!("{t}.differential_guidance_scale"),
            "the differential guidance scale must be above 0",
            "use e.g. 3",
        );
    }
    check_preservation(job, ctx);
    crate::gpus::check_gpus(job, ctx);
    if train.cache_text_embeddings && train.unload_text_encoder {
        ctx.error_at(
            &format!("{t}.unload_text_encoder"),
            "cache_text_embeddings and unload_text_encoder are both on (AI Toolkit's UI allows only one)",
            "keep cache_text_embeddings (captions are used) and remove unload_text_encoder",
        );
    } else if train.unload_text_encoder {
        ctx.warning_at(
            &format!("{t}.unload_text_encoder"),
            "with unload_text_encoder every item trains on the trigger word (or an empty prompt) only; captions are ignored (as in AI Toolkit)",
            "use cache_text_embeddings instead to free the text encoder and keep the captions",
        );
    }

    // model
    let m = format!("{p}.model");
    if !(model.boundary_ratio > 0.0 && model.boundary_ratio < 1.0) {
        ctx.error_at(
            &format!("{m}.boundary_ratio"),
            format!(
                "boundary_ratio {} must be between 0 and 1",
                model.boundary_ratio
            ),
            format!(
                "use {}, the official boundary of {}",
                arch.boundary_ratio, arch.label
            ),
        );
    }
    if !(0.0..=1.0).contains(&model.layer_offloading_transformer_percent) {
        ctx.error_at(
            &format!("{m}.layer_offloading_transformer_percent"),
            format!(
                "layer_offloading_transformer_percent {} must be between 0 and 1",
                model.layer_offloading_transformer_percent
            ),
            "use 1.0 to stream every block, or e.g. 0.5 to keep half of them on the GPU",
        );
    }
    if model.fp8_matmul && !(model.quantize && model.qtype != crate::QType::Uint4) {
        ctx.error_at(
            &format!("{m}.fp8_matmul"),
            "fp8_matmul needs fp8 weights",
            "set quantize: true with qtype: float8, or remove fp8_matmul",
        );
    }
    if !model.model_kwargs.train_high_noise && !model.model_kwargs.train_low_noise {
        ctx.error_at(
            &format!("{m}.model_kwargs"),
            "train_high_noise and train_low_noise are both false, so nothing would be trained",
            "set at least one of them to true",
        );
    }
    let components_given = model.high_noise_model_path.is_some()
        && model.low_noise_model_path.is_some()
        && (model.te_name_or_path.is_some() || model.extras_name_or_path.is_some())
        && (model.vae_path.is_some() || model.extras_name_or_path.is_some())
        && (model.tokenizer_path.is_some() || model.extras_name_or_path.is_some());
    if model
        .name_or_path
        .as_deref()
        .is_none_or(|n| n.trim().is_empty())
        && !components_given
    {
        ctx.error_at(
            &format!("{m}.name_or_path"),
            "model.name_or_path is missing",
            format!(
                "add name_or_path: {} (or give every component its own path)",
                arch.diffusers_repo
            ),
        );
    }

    // sample
    let sp = format!("{p}.sample");
    check_size(sample.width, &format!("{sp}.width"), ctx);
    check_size(sample.height, &format!("{sp}.height"), ctx);
    check_frames(sample.num_frames, &format!("{sp}.num_frames"), ctx);
    if sample.sample_every == 0 {
        ctx.error_at(
            &format!("{sp}.sample_every"),
            "sample_every must be at least 1",
            "use e.g. 250, or train.disable_sampling: true",
        );
    }
    if sample.sample_steps == 0 {
        ctx.error_at(
            &format!("{sp}.sample_steps"),
            "sample_steps must be at least 1",
            "use 25 (flowmatch) or 40 (unipc)",
        );
    }
    if sample.fps == 0 {
        ctx.error_at(
            &format!("{sp}.fps"),
            "fps must be at least 1",
            "use 16, Wan's frame rate",
        );
    }
    if sample.shift <= 0.0 {
        ctx.error_at(
            &format!("{sp}.shift"),
            "shift must be above 0",
            format!(
                "use {}, the official value of {}",
                arch.sample_shift, arch.label
            ),
        );
    }
    for (key, scale, official) in [
        (
            "guidance_scale",
            Some(sample.guidance_scale),
            arch.guidance_high,
        ),
        (
            "guidance_scale_2",
            sample.guidance_scale_2,
            arch.guidance_low,
        ),
    ] {
        let Some(scale) = scale else { continue };
        if scale <= 0.0 {
            ctx.error_at(
                &format!("{sp}.{key}"),
                format!("{key} {scale} must be above 0 (1 means no guidance)"),
                format!("use {official}, the official value of {}", arch.label),
            );
        }
    }
    if let Some(format) = sample.format {
        use crate::sample::SampleFormat;
        let video = sample.num_frames > 1;
        if video && matches!(format, SampleFormat::Jpg | SampleFormat::Png) {
            ctx.warning_at(
                &format!("{sp}.format"),
                "a video cannot be a still image; samples are written as mp4",
                "use format: mp4 or webp",
            );
        }
    }
    for (i, item) in sample.samples.iter().enumerate() {
        let at = format!("{sp}.samples[{i}]");
        if item.prompt.trim().is_empty() {
            ctx.error_at(
                &format!("{at}.prompt"),
                format!("sample {i} has no prompt"),
                "write the prompt of this sample",
            );
        }
        match &item.ctrl_img {
            // Text-to-video samples start from the prompt alone.
            Some(_) if !arch.first_frame_condition => ctx.warning_at(
                &format!("{at}.ctrl_img"),
                format!(
                    "sample {i} has a ctrl_img, but {} takes no start frame; it is ignored",
                    arch.label
                ),
                "remove ctrl_img, or use arch: wan22_14b_i2v to animate a start frame",
            ),
            None if !arch.first_frame_condition => {}
            None if !train.disable_sampling => ctx.error_at(
                &format!("{at}.ctrl_img"),
                format!("sample {i} has no ctrl_img; an image-to-video sample needs its start frame (AI Toolkit crashes later with \"size of tensor a (36) must match the size of tensor b (16)\")"),
                "add ctrl_img: path/to/start_frame.png to this sample (or arch: wan22_14b to train text-to-video)",
            ),
            None => {}
            Some(image) if image.contains("${") => {}
            Some(image) => {
                let path = base_dir.join(image);
                if !path.is_file() {
                    ctx.error_at(
                        &format!("{at}.ctrl_img"),
                        format!("the start frame {} does not exist", path.display()),
                        "fix the path (relative paths start at the job file's folder)",
                    );
                }
            }
        }
        if let Some(w) = item.width {
            check_size(w, &format!("{at}.width"), ctx);
        }
        if let Some(h) = item.height {
            check_size(h, &format!("{at}.height"), ctx);
        }
        if let Some(n) = item.num_frames {
            check_frames(n, &format!("{at}.num_frames"), ctx);
        }
        if item.sample_steps == Some(0) {
            ctx.error_at(
                &format!("{at}.sample_steps"),
                "sample_steps must be at least 1",
                "remove it to use the section's value",
            );
        }
    }

    if process.logging.log_every == 0 {
        ctx.error_at(
            &format!("{p}.logging.log_every"),
            "log_every must be at least 1",
            "use 1 to log every step",
        );
    }
}

/// DOP and blank-prompt preservation (AI Toolkit's rules in SDTrainer and its UI).
fn check_preservation(job: &Job, ctx: &mut Ctx) {
    let process = job.process();
    let train = &process.train;
    let t = "config.process[0].train";
    if train.diff_output_preservation {
        let has_trigger = process
            .trigger_word
            .as_deref()
            .is_some_and(|w| !w.trim().is_empty())
            || process.datasets.iter().any(|d| {
                d.trigger_word
                    .as_deref()
                    .is_some_and(|w| !w.trim().is_empty())
            });
        if !has_trigger {
            ctx.error_at(
                &format!("{t}.diff_output_preservation"),
                "differential output preservation needs a trigger word: DOP captions are the captions with the trigger word replaced by the class",
                "set config.process[0].trigger_word (e.g. ohwx)",
            );
        }
        if train.diff_output_preservation_class.trim().is_empty() {
            ctx.error_near(
                &format!("{t}.diff_output_preservation_class"),
                &format!("{t}.diff_output_preservation"),
                "differential output preservation needs the class word that replaces the trigger word",
                "set diff_output_preservation_class (e.g. person, woman, dog)",
            );
        }
        if train.blank_prompt_preservation {
            ctx.error_at(
                &format!("{t}.blank_prompt_preservation"),
                "diff_output_preservation and blank_prompt_preservation cannot both be on (AI Toolkit allows only one)",
                "keep one of them",
            );
        }
        if train.cache_text_embeddings {
            ctx.warning_at(
                &format!("{t}.cache_text_embeddings"),
                "with cached text embeddings, every caption's DOP variant (trigger word replaced by the class) is cached too; captions without the trigger word get the trigger prepended first, so each has a DOP variant",
                "nothing to do; the cache pass encodes about twice as many captions",
            );
        }
        if train.diff_output_preservation_multiplier < 0.0 {
            ctx.error_at(
                &format!("{t}.diff_output_preservation_multiplier"),
                "the DOP multiplier must not be negative",
                "use 1",
            );
        }
    }
    if train.blank_prompt_preservation && train.blank_prompt_preservation_multiplier < 0.0 {
        ctx.error_at(
            &format!("{t}.blank_prompt_preservation_multiplier"),
            "the multiplier must not be negative",
            "use 1",
        );
    }
}

fn check_device(device: &str, key: &str, ctx: &mut Ctx) {
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
fn check_frames(n: u32, key: &str, ctx: &mut Ctx) {
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

fn check_size(size: u32, key: &str, ctx: &mut Ctx) {
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

fn check_unit_interval(value: f64, key: &str, ctx: &mut Ctx) {
    if !(0.0..=1.0).contains(&value) {
        ctx.error_at(
            key,
            format!("{value} is not a probability between 0 and 1"),
            "use e.g. 0.05",
        );
    }
}

fn check_positive_or_zero(value: f64, key: &str, ctx: &mut Ctx) {
    if value < 0.0 {
        ctx.error_at(
            key,
            format!("{value} must not be negative"),
            "use 0 or more",
        );
    }
}
