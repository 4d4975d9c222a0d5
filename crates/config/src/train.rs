//! `train`: the optimisation of the LoRA (AI Toolkit's `TrainConfig`, the part that matters for Wan,
//! plus wanlora's `keep_blocks` and `lr_warmup_steps`).

use crate::checks::check_positive_or_zero;
use crate::choice::{choice_serde, Choice};
use crate::reader::{ai, ours, Ctx, Neutral, Section, Unused, UnusedKey};
use serde::{Deserialize, Serialize};

pub use crate::optimizer_params::OptimizerParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Optimizer {
    /// AdamW with fp32 state.
    #[default]
    AdamW,
    /// AdamW with block-wise 8-bit state (bitsandbytes' AdamW8bit; AI Toolkit's UI default).
    AdamW8bit,
    /// Prodigy (the `prodigyopt` package): Adam whose step size `d·lr` is estimated; lr about 1.
    Prodigy,
    /// Adafactor (transformers'): factored second moments, the given lr.
    Adafactor,
}

impl Choice for Optimizer {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("adamw", Optimizer::AdamW),
        ("adamw8bit", Optimizer::AdamW8bit),
        ("prodigy", Optimizer::Prodigy),
        ("prodigyopt", Optimizer::Prodigy),
        ("adafactor", Optimizer::Adafactor),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("adam", "Adam without decoupled weight decay is not implemented; adamw with weight_decay 0 is the same"),
        ("adam8bit", "Adam8bit is not implemented; adamw8bit with weight_decay 0 is the same"),
        ("adamw8", "AI Toolkit's own Adam8bit is not implemented"),
        ("adam8", "AI Toolkit's own Adam8bit is not implemented"),
        ("prodigy8bit", "Prodigy with 8-bit state is not implemented; use prodigy (fp32 state)"),
        ("lion", "Lion is not implemented"),
        ("lion8bit", "Lion is not implemented"),
        ("ademamix8bit", "AdEMAMix is not implemented"),
        ("adagrad", "Adagrad is not implemented"),
        ("sgd", "SGD is not implemented"),
        ("automagic", "Automagic is not implemented"),
        ("automagic2", "Automagic is not implemented"),
        ("automagic3", "Automagic is not implemented"),
        ("dadaptation", "D-Adaptation is not implemented"),
    ];
    const IGNORE_CASE: bool = true;
}
choice_serde!(Optimizer);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LrScheduler {
    /// The learning rate stays at `lr`.
    #[default]
    Constant,
    /// Cosine annealing from `lr` to `eta_min` over `total_iters` (PyTorch's CosineAnnealingLR, as AI Toolkit).
    Cosine,
    /// Linear change from `start_factor`·lr to `end_factor`·lr over `total_iters` (PyTorch's LinearLR,
    /// as AI Toolkit; its defaults 1/3 → 1 make this a slow ramp up, not a decay).
    Linear,
    /// AI Toolkit's name for a constant rate after `num_warmup_steps` of linear warmup from 0.
    ConstantWithWarmup,
}

impl Choice for LrScheduler {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("constant", LrScheduler::Constant),
        ("cosine", LrScheduler::Cosine),
        ("linear", LrScheduler::Linear),
        ("constant_with_warmup", LrScheduler::ConstantWithWarmup),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        (
            "cosine_with_restarts",
            "cosine with restarts is not implemented",
        ),
        ("step", "the step scheduler is not implemented"),
        ("polynomial", "the polynomial scheduler is not implemented"),
        (
            "cosine_with_min_lr",
            "use cosine with lr_scheduler_params.eta_min",
        ),
        (
            "piecewise_constant",
            "the piecewise constant scheduler is not implemented",
        ),
    ];
}
choice_serde!(LrScheduler);

/// How training timesteps are drawn inside the active expert's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepType {
    /// Logit-normal: (1 − sigmoid(N(0,1)))·1000. AI Toolkit's code default.
    #[default]
    Sigmoid,
    /// Uniform over 1000…1 (AI Toolkit's Wan preset).
    Linear,
    /// Uniform, then Wan's static shift 5: σ' = 5σ / (1 + 4σ).
    Shift,
    /// Uniform, with the loss weighted by AI Toolkit's timestep weighting table.
    Weighted,
    /// 75 % lognormal(0, 0.333) and 25 % uniform.
    LognormBlend,
}

impl Choice for TimestepType {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("sigmoid", TimestepType::Sigmoid),
        ("linear", TimestepType::Linear),
        ("shift", TimestepType::Shift),
        ("weighted", TimestepType::Weighted),
        ("lognorm_blend", TimestepType::LognormBlend),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        (
            "flux_shift",
            "use shift (with Wan's fixed shift it is the same)",
        ),
        (
            "lumina2_shift",
            "use shift (with Wan's fixed shift it is the same)",
        ),
        (
            "next_sample",
            "distillation timestep sets are not implemented",
        ),
        ("one_step", "distillation timestep sets are not implemented"),
        ("two_step", "distillation timestep sets are not implemented"),
        (
            "four_step",
            "distillation timestep sets are not implemented",
        ),
        (
            "eight_step",
            "distillation timestep sets are not implemented",
        ),
    ];
}
choice_serde!(TimestepType);

/// AI Toolkit's "timestep bias": which end of each expert's window is drawn more often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentOrStyle {
    /// Uniform over the window.
    #[default]
    Balanced,
    /// Favour high noise (composition, motion): u³ mapped to the high end. UI "High Noise".
    Content,
    /// Favour low noise (texture, style): 1 − u³. UI "Low Noise".
    Style,
}

impl Choice for ContentOrStyle {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("balanced", ContentOrStyle::Balanced),
        ("content", ContentOrStyle::Content),
        ("style", ContentOrStyle::Style),
    ];
}
choice_serde!(ContentOrStyle);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossType {
    #[default]
    Mse,
    /// Mean absolute error (L1).
    Mae,
    /// sqrt(d² + c²) − c with c = [`LossType::PSEUDO_HUBER_C`], as AI Toolkit.
    PseudoHuber,
}

impl LossType {
    /// AI Toolkit's fixed `c` of the pseudo-Huber loss (SDTrainer: `c = 0.01`).
    pub const PSEUDO_HUBER_C: f64 = 0.01;
}

impl Choice for LossType {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("mse", LossType::Mse),
        ("mae", LossType::Mae),
        ("l1", LossType::Mae),
        ("pseudo_huber", LossType::PseudoHuber),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("wavelet", "the wavelet loss is not implemented"),
        ("stepped", "the stepped loss is not implemented"),
        ("mean_flow", "the mean-flow loss is not implemented"),
        ("pixelspace", "pixel-space losses are not implemented"),
    ];
}
choice_serde!(LossType);

/// Precision of the base model's computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainDtype {
    /// AI Toolkit's code default; only sensible for the tiny demo model.
    #[default]
    Fp32,
    /// What Wan is trained in (AI Toolkit's Wan preset).
    Bf16,
}

impl Choice for TrainDtype {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        ("fp32", TrainDtype::Fp32),
        ("float32", TrainDtype::Fp32),
        ("float", TrainDtype::Fp32),
        ("bf16", TrainDtype::Bf16),
        ("bfloat16", TrainDtype::Bf16),
    ];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        ("fp16", "Wan's activations overflow float16; use bf16"),
        ("float16", "Wan's activations overflow float16; use bf16"),
        ("half", "Wan's activations overflow float16; use bf16"),
    ];
    const IGNORE_CASE: bool = true;
}
choice_serde!(TrainDtype);

/// `lr_scheduler_params`, the keyword arguments AI Toolkit passes to the scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LrSchedulerParams {
    /// Length of the cosine / linear schedule in steps; absent: `train.steps` (AI Toolkit's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_iters: Option<u32>,
    /// cosine: the final learning rate. Default 0.
    pub eta_min: f64,
    /// linear: factor of `lr` at the start. Default 1/3 (PyTorch's LinearLR).
    pub start_factor: f64,
    /// linear: factor of `lr` at the end. Default 1.
    pub end_factor: f64,
    /// constant_with_warmup: warmup length; absent: 1000, AI Toolkit's default for that scheduler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_warmup_steps: Option<u32>,
}

impl Default for LrSchedulerParams {
    fn default() -> Self {
        LrSchedulerParams {
            total_iters: None,
            eta_min: 0.0,
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            num_warmup_steps: None,
        }
    }
}

/// `ema_config`: an exponential moving average of the LoRA weights, saved alongside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmaConfig {
    pub use_ema: bool,
    /// Default 0.999.
    pub ema_decay: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig {
            use_ema: false,
            ema_decay: 0.999,
        }
    }
}

/// `keep_blocks` / `keep_attention`: a number of transformer blocks, or `auto` (the default): the
/// trainer's memory plan chooses per bucket from the device memory free after the models are loaded
/// (crates/train/src/memory_plan.rs). Written as `auto` or a whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockCount {
    #[default]
    Auto,
    Exactly(u32),
}

impl BlockCount {
    /// The number written, or `None` for `auto`.
    pub fn fixed(self) -> Option<u32> {
        match self {
            BlockCount::Auto => None,
            BlockCount::Exactly(n) => Some(n),
        }
    }

    fn read(s: &mut Section, key: &'static str, doc: &'static str) -> BlockCount {
        // The bound of 40 is the validator's (it names the blocks); here any whole number reads.
        match s.uint_or_auto(key, u32::MAX, ours(doc)) {
            Some(n) => BlockCount::Exactly(n),
            None => BlockCount::Auto,
        }
    }
}

impl Serialize for BlockCount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockCount::Auto => s.serialize_str("auto"),
            BlockCount::Exactly(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for BlockCount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Count(u32),
            Word(String),
        }
        match Written::deserialize(d)? {
            Written::Count(n) => Ok(BlockCount::Exactly(n)),
            Written::Word(w) if w.trim().eq_ignore_ascii_case("auto") => Ok(BlockCount::Auto),
            Written::Word(w) => Err(serde::de::Error::custom(format!(
                "{w:?}: expected auto or a whole number of blocks"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// `steps`: optimizer steps. Default 1000.
    pub steps: u32,
    /// `batch_size`: clips per micro-batch. Default 1.
    pub batch_size: u32,
    /// `gradient_accumulation`: micro-batches per optimizer step (AI Toolkit's legacy
    /// `gradient_accumulation_steps` is read into this, with a warning). Default 1.
    pub gradient_accumulation: u32,
    /// `lr`: learning rate of the LoRA weights. AI Toolkit's code default 1e-6 (its UI: 1e-4).
    pub lr: f64,
    pub optimizer: Optimizer,
    pub optimizer_params: OptimizerParams,
    pub lr_scheduler: LrScheduler,
    pub lr_scheduler_params: LrSchedulerParams,
    /// `lr_warmup_steps` (wanlora): linear warmup from 0 to the scheduled rate over this many steps,
    /// with any scheduler. AI Toolkit's equivalent is `lr_scheduler: constant_with_warmup` with
    /// `lr_scheduler_params.num_warmup_steps`, which is accepted too. Default 0.
    pub lr_warmup_steps: u32,
    /// `max_grad_norm`: gradient clipping norm (0 disables). Default 1.
    pub max_grad_norm: f64,
    /// `dtype`: precision of the base model's computation. AI Toolkit's default fp32; use bf16 for Wan.
    pub dtype: TrainDtype,
    pub timestep_type: TimestepType,
    pub content_or_style: ContentOrStyle,
    /// `switch_boundary_every`: steps on one expert before switching to the other. Default 1.
    pub switch_boundary_every: u32,
    pub loss_type: LossType,
    pub skip_first_sample: bool,
    pub force_first_sample: bool,
    pub disable_sampling: bool,
    /// `unload_text_encoder`: encode only the trigger word (or an empty prompt) once and free the text
    /// encoder; captions are then ignored (AI Toolkit's behaviour).
    pub unload_text_encoder: bool,
    /// `cache_text_embeddings`: encode every caption (and its dropout and DOP variants) once, then
    /// free the text encoder.
    pub cache_text_embeddings: bool,
    /// `diff_output_preservation` (DOP): keep the class's look by matching the LoRA's prediction on
    /// the class caption to the base model's.
    pub diff_output_preservation: bool,
    /// Default 1.
    pub diff_output_preservation_multiplier: f64,
    /// The class word that replaces the trigger word in DOP captions (e.g. `person`). Default ''.
    pub diff_output_preservation_class: String,
    /// `blank_prompt_preservation`: DOP with the empty prompt instead of the class caption.
    pub blank_prompt_preservation: bool,
    /// Default 1.
    pub blank_prompt_preservation_multiplier: f64,
    /// `do_differential_guidance`: target' = pred + scale·(target − pred). Works on its own in
    /// wanlora (in AI Toolkit only together with `do_guidance_loss`).
    pub do_differential_guidance: bool,
    /// Default 3.
    pub differential_guidance_scale: f64,
    pub ema_config: EmaConfig,
    /// `validation_config`: a held-out loss every N steps (crate::validation).
    pub validation_config: crate::validation::ValidationConfig,
    /// `keep_blocks` (wanlora): how many of the 40 transformer blocks keep their activations for the
    /// backward pass instead of recomputing them (gradient checkpointing for the rest). More is
    /// faster and needs more memory. Default `auto`: the trainer's memory plan chooses per bucket
    /// from the free device memory.
    pub keep_blocks: BlockCount,
    /// `keep_attention` (wanlora): how many of the recomputed blocks keep their self-attention output
    /// from the forward, so their recompute skips attention (all 40: ≈ 6 % of the step at 41 frames
    /// 512², ≈ 12 % at 81 frames 480×832) for one activation-sized tensor per block (0.11 GiB at
    /// 41 frames 512², 0.31 GiB at 81 frames 480×832). Default `auto`, as `keep_blocks`.
    pub keep_attention: BlockCount,
    /// `gpus` (wanlora): the GPUs of the job. Two, with both experts trained: each expert trains
    /// in a process of its own on its own GPU at the same time (expert-parallel). Default: none
    /// (the job's `device`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 1,
            gradient_accumulation: 1,
            lr: 1e-6,
            optimizer: Optimizer::AdamW,
            optimizer_params: OptimizerParams::default(),
            lr_scheduler: LrScheduler::Constant,
            lr_scheduler_params: LrSchedulerParams::default(),
            lr_warmup_steps: 0,
            max_grad_norm: 1.0,
            dtype: TrainDtype::Fp32,
            timestep_type: TimestepType::Sigmoid,
            content_or_style: ContentOrStyle::Balanced,
            switch_boundary_every: 1,
            loss_type: LossType::Mse,
            skip_first_sample: false,
            force_first_sample: false,
            disable_sampling: false,
            unload_text_encoder: false,
            cache_text_embeddings: false,
            diff_output_preservation: false,
            diff_output_preservation_multiplier: 1.0,
            diff_output_preservation_class: String::new(),
            blank_prompt_preservation: false,
            blank_prompt_preservation_multiplier: 1.0,
            do_differential_guidance: false,
            differential_guidance_scale: 3.0,
            ema_config: EmaConfig::default(),
            validation_config: crate::validation::ValidationConfig::default(),
            keep_blocks: BlockCount::Auto,
            keep_attention: BlockCount::Auto,
            gpus: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Steps of linear warmup from 0, whichever way the job asks for it.
    pub fn warmup_steps(&self) -> u32 {
        match self.lr_scheduler {
            LrScheduler::ConstantWithWarmup => {
                self.lr_scheduler_params.num_warmup_steps.unwrap_or(1000)
            }
            _ => self.lr_warmup_steps,
        }
    }

    /// Steps over which cosine / linear schedules run.
    pub fn schedule_steps(&self) -> u32 {
        self.lr_scheduler_params.total_iters.unwrap_or(self.steps)
    }
}

fn read_scheduler_params(s: &mut Section) -> LrSchedulerParams {
    let d = LrSchedulerParams::default();
    let params = LrSchedulerParams {
        total_iters: s.opt_uint(
            &["total_iters", "T_max"],
            ai("Schedule length in steps (default: train.steps)"),
        ),
        eta_min: s.float("eta_min", d.eta_min, ai("cosine: final learning rate")),
        start_factor: s.float(
            "start_factor",
            d.start_factor,
            ai("linear: factor of lr at the start"),
        ),
        end_factor: s.float(
            "end_factor",
            d.end_factor,
            ai("linear: factor of lr at the end"),
        ),
        num_warmup_steps: s.opt_uint(
            "num_warmup_steps",
            ai("constant_with_warmup: warmup steps (default 1000)"),
        ),
    };
    s.unused(SCHEDULER_PARAMS_UNUSED);
    params
}

pub(crate) fn read_train(s: &mut Section) -> TrainConfig {
    let d = TrainConfig::default();
    let steps = s.uint("steps", d.steps, ai("Optimizer steps"));
    let batch_size = s.uint("batch_size", d.batch_size, ai("Clips per micro-batch"));
    let mut gradient_accumulation = s.uint(
        "gradient_accumulation",
        d.gradient_accumulation,
        ai("Micro-batches per optimizer step"),
    );
    let legacy = s.uint(
        "gradient_accumulation_steps",
        1,
        ai("AI Toolkit's legacy accumulation; read as gradient_accumulation"),
    );
    if legacy > 1 {
        let path = s.key_path("gradient_accumulation_steps");
        if gradient_accumulation > 1 {
            s.ctx().error_at(
                &path,
                "gradient_accumulation and gradient_accumulation_steps are both set (AI Toolkit refuses this too)",
                "keep only gradient_accumulation",
            );
        } else {
            gradient_accumulation = legacy;
            s.ctx().warning_at(
                &path,
                format!("read as gradient_accumulation: {legacy}; AI Toolkit's legacy key counted every micro-batch as a step, wanlora runs `steps` optimizer steps of {legacy} micro-batches each"),
                format!("write gradient_accumulation: {legacy}, and divide steps by {legacy} to do the same amount of work as before"),
            );
        }
    }
    let optimizer = s.choice(
        "optimizer",
        d.optimizer,
        ai("adamw, adamw8bit, prodigy or adafactor"),
    );
    let mut train = TrainConfig {
        steps,
        batch_size,
        gradient_accumulation,
        lr: s.float("lr", d.lr, ai("Learning rate of the LoRA weights")),
        optimizer,
        optimizer_params: s.section(
            "optimizer_params",
            ai("The optimizer's keyword arguments (weight_decay, betas, eps, Prodigy's d_coef, …)"),
            |s| crate::optimizer_params::read_optimizer_params(s, optimizer),
        ),
        lr_scheduler: s.choice("lr_scheduler", d.lr_scheduler, ai("Learning-rate schedule")),
        lr_scheduler_params: s.section(
            "lr_scheduler_params",
            ai("Schedule parameters"),
            read_scheduler_params,
        ),
        lr_warmup_steps: s.uint(
            "lr_warmup_steps",
            d.lr_warmup_steps,
            ours("Linear warmup from 0 over this many steps, with any scheduler"),
        ),
        max_grad_norm: s.float(
            "max_grad_norm",
            d.max_grad_norm,
            ai("Gradient clipping norm (0: off)"),
        ),
        dtype: s.choice(
            "dtype",
            d.dtype,
            ai("Precision of the base model's computation; bf16 for Wan"),
        ),
        timestep_type: s.choice(
            "timestep_type",
            d.timestep_type,
            ai("How timesteps are drawn in the active expert's window"),
        ),
        content_or_style: s.choice(
            "content_or_style",
            d.content_or_style,
            ai("Timestep bias: balanced, content (high noise) or style (low noise)"),
        ),
        switch_boundary_every: s.uint(
            "switch_boundary_every",
            d.switch_boundary_every,
            ai("Steps on one expert before switching to the other"),
        ),
        loss_type: s.choice(
            "loss_type",
            d.loss_type,
            ai("Loss between prediction and target"),
        ),
        skip_first_sample: s.bool(
            "skip_first_sample",
            d.skip_first_sample,
            ai("No sample before the first step"),
        ),
        force_first_sample: s.bool(
            "force_first_sample",
            d.force_first_sample,
            ai("Sample before the first step even when resuming"),
        ),
        disable_sampling: s.bool(
            "disable_sampling",
            d.disable_sampling,
            ai("Never sample during training"),
        ),
        unload_text_encoder: s.bool(
            "unload_text_encoder",
            d.unload_text_encoder,
            ai("Encode only the trigger word once; captions are ignored"),
        ),
        cache_text_embeddings: s.bool(
            "cache_text_embeddings",
            d.cache_text_embeddings,
            ai("Encode every caption once, then free the text encoder"),
        ),
        diff_output_preservation: s.bool(
            "diff_output_preservation",
            d.diff_output_preservation,
            ai("Differential output preservation (needs a trigger word and a class)"),
        ),
        diff_output_preservation_multiplier: s.float(
            "diff_output_preservation_multiplier",
            d.diff_output_preservation_multiplier,
            ai("Weight of the DOP loss"),
        ),
        diff_output_preservation_class: s.text(
            "diff_output_preservation_class",
            &d.diff_output_preservation_class,
            ai("Class word that replaces the trigger in DOP captions"),
        ),
        blank_prompt_preservation: s.bool(
            "blank_prompt_preservation",
            d.blank_prompt_preservation,
            ai("Preserve the base model's output for the empty prompt"),
        ),
        blank_prompt_preservation_multiplier: s.float(
            "blank_prompt_preservation_multiplier",
            d.blank_prompt_preservation_multiplier,
            ai("Weight of the blank-prompt preservation loss"),
        ),
        do_differential_guidance: s.bool(
            "do_differential_guidance",
            d.do_differential_guidance,
            ai("Overshoot the target: pred + scale·(target − pred)"),
        ),
        differential_guidance_scale: s.float(
            "differential_guidance_scale",
            d.differential_guidance_scale,
            ai("Scale of differential guidance"),
        ),
        ema_config: s.section("ema_config", ai("EMA of the LoRA weights"), |e| {
            let d = EmaConfig::default();
            let ema = EmaConfig {
                use_ema: e.bool("use_ema", d.use_ema, ai("Keep an EMA of the LoRA weights")),
                ema_decay: e.float("ema_decay", d.ema_decay, ai("EMA decay per step")),
            };
            e.refuse(
                "use_feedback",
                Neutral::Off,
                "EMA feedback is not implemented",
            );
            e.refuse(
                "param_multiplier",
                Neutral::Number(1.0),
                "EMA parameter multipliers are not implemented",
            );
            ema
        }),
        validation_config: s.section(
            "validation_config",
            ai("Held-out validation loss"),
            crate::validation::read_validation,
        ),
        keep_blocks: BlockCount::read(
            s,
            "keep_blocks",
            "Transformer blocks (of 40) that keep activations instead of recomputing them; auto: chosen per bucket from the free memory",
        ),
        keep_attention: BlockCount::read(
            s,
            "keep_attention",
            "Recomputed blocks (of 40) that keep their self-attention output (faster, more memory); auto: chosen per bucket",
        ),
        gpus: s.index_list(
            "gpus",
            ours("GPU indices; two with both experts trained: each expert on its own GPU at the same time"),
        ),
    };

    s.unused(TRAIN_UNUSED);
    crate::optimizer_params::adjust_prodigy_lr(s, &mut train);
    train
}

/// Keys of this section that wanlora reads but does not act on, and why.
const SCHEDULER_PARAMS_UNUSED: &[UnusedKey] = &[
    (
        "factor",
        Unused::Accepted,
        "constant: AI Toolkit passes 1.0 (a constant rate)",
    ),
    ("max_iterations", Unused::Accepted, "AI Toolkit internal"),
    (
        "last_epoch",
        Unused::Refused(Neutral::Off),
        "resume restores the schedule position itself",
    ),
];

/// Keys of this section that wanlora reads but does not act on, and why.
const TRAIN_UNUSED: &[UnusedKey] = &[
    ("noise_scheduler", Unused::Accepted, "Wan always trains with flow matching (AI Toolkit ignores this key for Wan too)"),
    ("gradient_checkpointing", Unused::Refused(Neutral::True), "wanlora always recomputes activations; to keep some, set train.keep_blocks (0..40)"),
    ("train_unet", Unused::Refused(Neutral::True), "the transformer's LoRA is what wanlora trains; false would train nothing"),
    ("train_text_encoder", Unused::Refused(Neutral::Off), "training the umT5 text encoder is not implemented (AI Toolkit does not support it for Wan either)"),
    ("unet_lr", Unused::NoEffect(Neutral::Off), "AI Toolkit trains the LoRA with train.lr and ignores unet_lr; so does wanlora"),
    ("text_encoder_lr", Unused::NoEffect(Neutral::Off), "the text encoder is not trained"),
    ("refiner_lr", Unused::Accepted, "no refiner in Wan"),
    ("embedding_lr", Unused::Accepted, "no embeddings are trained"),
    ("adapter_lr", Unused::Accepted, "no adapters are trained"),
    ("train_refiner", Unused::Accepted, "no refiner in Wan"),
    ("bypass_guidance_embedding", Unused::Accepted, "Flux only; AI Toolkit's UI writes it for every model"),
    ("attention_backend", Unused::Accepted, "wanlora picks the fastest attention kernel itself"),
    ("xformers", Unused::Accepted, "wanlora picks the fastest attention kernel itself"),
    ("sdp", Unused::Accepted, "wanlora picks the fastest attention kernel itself"),
    ("min_denoising_steps", Unused::NoEffect(Neutral::Number(0.0)), "each expert's timestep window is set by model.boundary_ratio"),
    ("max_denoising_steps", Unused::NoEffect(Neutral::Number(999.0)), "each expert's timestep window is set by model.boundary_ratio"),
    ("next_sample_timesteps", Unused::Accepted, "only for timestep_type next_sample"),
    ("audio_loss_multiplier", Unused::Accepted, "Wan 2.2 I2V has no audio"),
    ("max_loss_debug", Unused::Accepted, "AI Toolkit debug output"),
    ("do_guidance_loss_cfg_zero", Unused::Accepted, "only with do_guidance_loss"),
    ("guidance_loss_target", Unused::Accepted, "only with do_guidance_loss"),
    ("guidance_loss_schedule", Unused::Accepted, "only with do_guidance_loss"),
    ("unconditional_prompt", Unused::Accepted, "only with do_guidance_loss"),
    ("do_guidance_loss", Unused::Refused(Neutral::Off), "the contrastive guidance loss is not implemented"),
    ("noise_offset", Unused::Refused(Neutral::Number(0.0)), "noise offset is not implemented (and does not suit flow matching)"),
    ("noise_multiplier", Unused::Refused(Neutral::Number(1.0)), "noise multipliers are not implemented"),
    ("target_noise_multiplier", Unused::Refused(Neutral::Number(1.0)), "noise multipliers are not implemented"),
    ("random_noise_multiplier", Unused::Refused(Neutral::Number(0.0)), "random noise multipliers are not implemented"),
    ("random_noise_shift", Unused::Refused(Neutral::Number(0.0)), "random noise shift is not implemented"),
    ("blended_blur_noise", Unused::Refused(Neutral::Off), "blended blur noise is not implemented"),
    ("force_consistent_noise", Unused::Refused(Neutral::Off), "consistent noise per item is not implemented"),
    ("optimal_noise_pairing_samples", Unused::Refused(Neutral::Number(1.0)), "optimal noise pairing is not implemented"),
    ("do_signal_correction_noise", Unused::Refused(Neutral::Off), "signal correction noise is not implemented"),
    ("do_batch_noise_correction", Unused::Refused(Neutral::Off), "batch noise correction is not implemented"),
    ("do_signal_amplification", Unused::Refused(Neutral::Off), "signal amplification is not implemented"),
    ("min_snr_gamma", Unused::Refused(Neutral::Off), "SNR weighting is not implemented (flow matching does not use it)"),
    ("snr_gamma", Unused::Refused(Neutral::Off), "SNR weighting is not implemented (flow matching does not use it)"),
    ("learnable_snr_gos", Unused::Refused(Neutral::Off), "learnable SNR weighting is not implemented"),
    ("linear_timesteps", Unused::Refused(Neutral::Off), "legacy timestep weights are not implemented; use timestep_type: weighted"),
    ("linear_timesteps2", Unused::Refused(Neutral::Off), "legacy timestep weights are not implemented; use timestep_type: weighted"),
    ("weight_jitter", Unused::Refused(Neutral::Number(0.0)), "weight jitter is not implemented"),
    ("merge_network_on_save", Unused::Refused(Neutral::Off), "merging the LoRA into the model is not implemented; load the LoRA files in ComfyUI"),
    ("merge_network_on_save_strength", Unused::Accepted, "only with merge_network_on_save"),
    ("start_step", Unused::Refused(Neutral::Off), "resume restores the step itself"),
    ("free_u", Unused::Refused(Neutral::Off), "FreeU is not implemented"),
    ("adapter_assist_name_or_path", Unused::Refused(Neutral::Off), "assistant adapters are not implemented"),
    ("adapter_assist_type", Unused::Accepted, "only with adapter_assist_name_or_path"),
    ("match_adapter_assist", Unused::Refused(Neutral::Off), "assistant adapters are not implemented"),
    ("match_adapter_chance", Unused::Refused(Neutral::Number(0.0)), "assistant adapters are not implemented"),
    ("negative_prompt", Unused::Refused(Neutral::Off), "training with negative prompts is not implemented"),
    ("max_negative_prompts", Unused::Accepted, "only with negative_prompt"),
    ("reg_weight", Unused::Refused(Neutral::Number(1.0)), "a regularisation loss weight is not implemented; use the dataset's loss_multiplier"),
    ("num_train_timesteps", Unused::Refused(Neutral::Number(1000.0)), "Wan's scheduler has 1000 training timesteps"),
    ("adaptive_scaling_factor", Unused::Refused(Neutral::Off), "adaptive VAE scaling is not implemented"),
    ("prompt_dropout_prob", Unused::Refused(Neutral::Number(0.0)), "use the datasets' caption_dropout_rate"),
    ("match_noise_norm", Unused::Refused(Neutral::Off), "noise-norm matching is not implemented"),
    ("short_and_long_captions", Unused::Refused(Neutral::Off), "JSON caption files are not implemented"),
    ("short_and_long_captions_encoder_split", Unused::Refused(Neutral::Off), "JSON caption files are not implemented"),
    ("single_item_batching", Unused::Refused(Neutral::Off), "use gradient_accumulation"),
    ("loss_target", Unused::Refused(Neutral::Text("noise")), "the target is always noise − clean latent (flow matching)"),
    ("inverted_mask_prior", Unused::Refused(Neutral::Off), "loss masks are not implemented"),
    ("inverted_mask_prior_multiplier", Unused::Accepted, "only with inverted_mask_prior"),
    ("standardize_images", Unused::Refused(Neutral::Off), "image standardisation is not implemented"),
    ("standardize_latents", Unused::Refused(Neutral::Off), "latent standardisation is not implemented"),
    ("dynamic_noise_offset", Unused::Refused(Neutral::Off), "noise offset is not implemented"),
    ("do_cfg", Unused::Refused(Neutral::Off), "CFG during training is not implemented"),
    ("do_random_cfg", Unused::Refused(Neutral::Off), "CFG during training is not implemented"),
    ("cfg_scale", Unused::Accepted, "only with do_cfg"),
    ("max_cfg_scale", Unused::Accepted, "only with do_cfg"),
    ("cfg_rescale", Unused::Accepted, "only with do_cfg"),
    ("correct_pred_norm", Unused::Refused(Neutral::Off), "prediction-norm correction is not implemented"),
    ("correct_pred_norm_multiplier", Unused::Accepted, "only with correct_pred_norm"),
    ("t0_loss_target", Unused::Refused(Neutral::Off), "x0 loss targets are not implemented"),
    ("t0_velocity_equiv_weight", Unused::Refused(Neutral::Off), "x0 loss targets are not implemented"),
    ("do_fft_loss", Unused::Refused(Neutral::Off), "the FFT loss is not implemented"),
    ("do_fft_velocity_equiv_weight", Unused::Accepted, "only with do_fft_loss"),
    ("pred_scaler", Unused::Refused(Neutral::Number(1.0)), "prediction scaling is not implemented"),
    ("prompt_saturation_chance", Unused::Refused(Neutral::Number(0.0)), "prompt saturation is not implemented"),
    ("do_prior_divergence", Unused::Refused(Neutral::Off), "prior divergence is not implemented"),
    ("target_norm_std", Unused::Refused(Neutral::Off), "target-norm losses are not implemented"),
    ("target_norm_std_value", Unused::Accepted, "only with target_norm_std"),
    ("do_paramiter_swapping", Unused::Refused(Neutral::Off), "parameter swapping is not implemented"),
    ("paramiter_swapping_factor", Unused::Accepted, "only with do_paramiter_swapping"),
    ("latent_feature_extractor_path", Unused::Refused(Neutral::Off), "feature-extractor losses are not implemented"),
    ("diffusion_feature_extractor_path", Unused::Refused(Neutral::Off), "feature-extractor losses are not implemented"),
    ("latent_feature_loss_weight", Unused::Accepted, "only with a feature extractor"),
    ("diffusion_feature_extractor_weight", Unused::Accepted, "only with a feature extractor"),
    ("do_blank_stabilization", Unused::Refused(Neutral::Off), "blank stabilisation is not implemented"),
    ("max_loss", Unused::Refused(Neutral::Off), "loss clipping is not implemented; non-finite losses skip the step"),
    ("train_turbo", Unused::Refused(Neutral::Off), "turbo training is not implemented"),
    ("show_turbo_outputs", Unused::Accepted, "only with train_turbo"),
    ("img_multiplier", Unused::Refused(Neutral::Number(1.0)), "input multipliers are not implemented"),
    ("noisy_latent_multiplier", Unused::Refused(Neutral::Number(1.0)), "input multipliers are not implemented"),
    ("latent_multiplier", Unused::Refused(Neutral::Number(1.0)), "input multipliers are not implemented"),
];

/// The train section's own checks; `t` is its key path, relative paths resolve against `base_dir`.
pub(crate) fn check_train(train: &TrainConfig, t: &str, base_dir: &std::path::Path, ctx: &mut Ctx) {
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
    crate::validation::check_validation(
        &train.validation_config,
        &format!("{t}.validation_config"),
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
}
