//! The checks of the typed job: each section's own checks live in its file (`check_train` in
//! train.rs, …); this file calls them and holds the checks that span sections (datasets against the
//! train batch size, keep_blocks against the model, preservation against the trigger words, sample
//! start frames against the arch).

use crate::checks::check_device;
use crate::job::Job;
use crate::reader::Ctx;
use std::path::Path;

/// Wan 2.2 A14B has 40 transformer blocks per expert.
const TRANSFORMER_BLOCKS: u32 = 40;

/// Runs every check of the typed job, adding findings to `ctx`: each section's own checks (in its
/// file) and the ones that span sections (here). Relative paths resolve against `base_dir`.
/// Numbers are finite here: the reader rejects `.nan` and `.inf`.
pub(crate) fn validate(job: &Job, ctx: &mut Ctx, base_dir: &Path) {
    let p = "config.process[0]";
    let process = job.process();
    let train = &process.train;
    let model = &process.model;
    let sample = &process.sample;
    let arch = model.arch.facts();

    check_device(&process.device, &format!("{p}.device"), ctx);
    crate::limits::check_limits(job, ctx);

    crate::network::check_network(&process.network, &format!("{p}.network"), ctx);
    crate::save::check_save(&process.save, &format!("{p}.save"), ctx);

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
        crate::dataset::check_dataset(dataset, i, &at, base_dir, ctx);
        // do_i2v decides how TI2V-5B trains clips; batches mix datasets, so they must agree.
        if arch.first_frame_replacement && dataset.do_i2v != process.datasets[0].do_i2v {
            ctx.error_at(
                &format!("{at}.do_i2v"),
                format!(
                    "dataset {i} has do_i2v: {}, dataset 0 has {}; {} trains every clip of a job the same way",
                    dataset.do_i2v, process.datasets[0].do_i2v, arch.label
                ),
                "give every dataset the same do_i2v",
            );
        }
    }

    // train
    let t = format!("{p}.train");
    crate::train::check_train(train, &t, base_dir, ctx);
    // Counted in the model's transformer blocks.
    if let Some(n) = train
        .keep_blocks
        .fixed()
        .filter(|&n| n > TRANSFORMER_BLOCKS)
    {
        ctx.error_at(
            &format!("{t}.keep_blocks"),
            format!("keep_blocks {n} is more than the {TRANSFORMER_BLOCKS} transformer blocks"),
            format!("use auto, or 0 to {TRANSFORMER_BLOCKS}"),
        );
    }
    if let Some(n) = train
        .keep_attention
        .fixed()
        .filter(|&n| n > TRANSFORMER_BLOCKS)
    {
        ctx.error_at(
            &format!("{t}.keep_attention"),
            format!("keep_attention {n} is more than the {TRANSFORMER_BLOCKS} transformer blocks"),
            format!("use auto, or 0 to {TRANSFORMER_BLOCKS}"),
        );
    }
    check_preservation(job, ctx);
    crate::gpus::check_gpus(job, ctx);

    // model
    crate::model::check_model(model, &format!("{p}.model"), ctx);

    // sample
    let sp = format!("{p}.sample");
    crate::sample::check_sample(sample, &sp, arch, ctx);
    for (i, item) in sample.samples.iter().enumerate() {
        let at = format!("{sp}.samples[{i}]");
        crate::sample::check_item(item, i, &at, ctx);
        // TI2V-5B's token side is 32 pixels (its VAE's 16× times the 2×2 patch); sizes off the 16-pixel
        // grid are check_size's.
        for (key, own, section) in [
            ("width", item.width, sample.width),
            ("height", item.height, sample.height),
        ] {
            let (value, step) = (own.unwrap_or(section), arch.bucket_step);
            if value % 16 == 0 && value % step != 0 {
                let where_ = if own.is_some() { &at } else { &sp };
                ctx.error_at(
                    &format!("{where_}.{key}"),
                    format!(
                        "sample {i}'s {key} {value} is not a multiple of {step}, which {} needs",
                        arch.label
                    ),
                    format!("use {}", (value / step).max(1) * step),
                );
            }
        }
        // Whether a start frame is needed is the model's; whether it matters, the train section's.
        match &item.ctrl_img {
            // TI2V-5B: text-to-video without a start frame, image-to-video with one.
            _ if arch.first_frame_replacement => {}
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
    }
    crate::logging::check_logging(&process.logging, &format!("{p}.logging"), ctx);
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
