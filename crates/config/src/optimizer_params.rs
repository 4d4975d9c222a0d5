//! `train.optimizer_params`: the keyword arguments AI Toolkit passes to the optimizer it builds for
//! `train.optimizer` (AdamW, Prodigy or Adafactor), with each optimizer's own defaults.

use crate::choice::Choice;
use crate::reader::{ai, Neutral, Section, Unused, UnusedKey};
use crate::train::{Optimizer, TrainConfig};
use serde::{Deserialize, Serialize};

/// `optimizer_params`. Keys of another optimizer than the job's have no effect (a warning says so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizerParams {
    /// Weight decay. Default 0.01 for adamw/adamw8bit (PyTorch's and bitsandbytes' default), 0 for
    /// prodigy and adafactor (their packages' default; AI Toolkit passes nothing else).
    pub weight_decay: f64,
    /// Adam's and Prodigy's (β1, β2). Default [0.9, 0.999].
    pub betas: [f64; 2],
    /// Adam's and Prodigy's ε. Default 1e-6, the value AI Toolkit passes for adamw, adamw8bit and prodigy.
    pub eps: f64,
    /// Prodigy: factor of the distance estimate (above 1: larger steps). Default 1.
    #[serde(skip_serializing_if = "is_one")]
    pub d_coef: f64,
    /// Prodigy: the initial distance estimate. Default 1e-6.
    #[serde(skip_serializing_if = "is_default_d0")]
    pub d0: f64,
    /// Prodigy: decay of its running sums; absent: √β2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta3: Option<f64>,
    /// Prodigy: the most the estimate may grow per step (a factor); absent: unbounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth_rate: Option<f64>,
    /// Prodigy: Adam's bias correction in the step size. Default false.
    #[serde(skip_serializing_if = "is_false")]
    pub use_bias_correction: bool,
    /// Prodigy: keep the learning rate out of the estimate's denominator (for warmups). Default false.
    #[serde(skip_serializing_if = "is_false")]
    pub safeguard_warmup: bool,
    /// Prodigy: AdamW-style weight decay (true) or an L2 term in the gradient (false). Default true.
    #[serde(skip_serializing_if = "is_true")]
    pub decouple: bool,
    /// Adafactor: (ε of the squared gradient, floor of the parameter scale), read from `eps` when the
    /// optimizer is adafactor (or from `adafactor_eps`, how wanlora writes it back). Default [1e-30, 1e-3].
    #[serde(skip_serializing_if = "is_default_adafactor_eps")]
    pub adafactor_eps: [f64; 2],
    /// Adafactor: the most RMS an update may have. Default 1.
    #[serde(skip_serializing_if = "is_one")]
    pub clip_threshold: f64,
    /// Adafactor: the second-moment decay is 1 − t^decay_rate. Default −0.8.
    #[serde(skip_serializing_if = "is_default_decay_rate")]
    pub decay_rate: f64,
    /// Adafactor: first-moment decay; absent: no first moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f64>,
    /// Adafactor: scale each step by the parameter's RMS. Default false (AI Toolkit's choice).
    #[serde(skip_serializing_if = "is_false")]
    pub scale_parameter: bool,
}

// Written back only when set: an AdamW job's file keeps AdamW's three keys.
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_default_d0(v: &f64) -> bool {
    *v == OptimizerParams::default().d0
}
fn is_default_decay_rate(v: &f64) -> bool {
    *v == OptimizerParams::default().decay_rate
}
fn is_default_adafactor_eps(v: &[f64; 2]) -> bool {
    *v == OptimizerParams::default().adafactor_eps
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn is_true(v: &bool) -> bool {
    *v
}

impl Default for OptimizerParams {
    fn default() -> Self {
        OptimizerParams {
            weight_decay: 0.01,
            betas: [0.9, 0.999],
            eps: 1e-6,
            d_coef: 1.0,
            d0: 1e-6,
            beta3: None,
            growth_rate: None,
            use_bias_correction: false,
            safeguard_warmup: false,
            decouple: true,
            adafactor_eps: [1e-30, 1e-3],
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta1: None,
            scale_parameter: false,
        }
    }
}

impl OptimizerParams {
    /// The defaults of `optimizer` (only the weight decay differs between them).
    pub fn defaults_for(optimizer: Optimizer) -> OptimizerParams {
        let weight_decay = match optimizer {
            Optimizer::AdamW | Optimizer::AdamW8bit => 0.01,
            Optimizer::Prodigy | Optimizer::Adafactor => 0.0,
        };
        OptimizerParams {
            weight_decay,
            ..OptimizerParams::default()
        }
    }
}

/// A list of exactly two numbers, or `None` with an error finding.
fn read_pair(
    s: &mut Section,
    key: &'static str,
    node: &crate::node::Node,
    hint: &str,
) -> Option<[f64; 2]> {
    if let serde_json::Value::Array(items) = node.to_json() {
        if let [a, b] = items.as_slice() {
            if let (Some(a), Some(b)) = (a.as_f64(), b.as_f64()) {
                return Some([a, b]);
            }
        }
    }
    s.invalid(
        key.into(),
        node,
        format!("expected two numbers, found {}", node.show()),
        hint.into(),
    );
    None
}

pub(crate) fn read_optimizer_params(s: &mut Section, optimizer: Optimizer) -> OptimizerParams {
    let d = OptimizerParams::defaults_for(optimizer);
    let is_prodigy = optimizer == Optimizer::Prodigy;
    let is_adafactor = optimizer == Optimizer::Adafactor;
    let weight_decay = s.float("weight_decay", d.weight_decay, ai("Weight decay"));
    let betas = match s.raw(
        "betas",
        crate::schema::KeyKind::Any,
        serde_json::json!(d.betas),
        ai("Adam's and Prodigy's (beta1, beta2)"),
    ) {
        None => d.betas,
        Some(node) => read_pair(s, "betas", node, "write betas: [0.9, 0.999]").unwrap_or(d.betas),
    };
    // eps is one number for Adam and Prodigy, a pair for Adafactor (transformers' signature).
    let (mut eps, mut adafactor_eps) = (d.eps, d.adafactor_eps);
    if let Some(node) = s.raw(
        "eps",
        crate::schema::KeyKind::Any,
        serde_json::json!(d.eps),
        ai("epsilon: one number (adamw, prodigy) or two (adafactor: [1e-30, 1e-3])"),
    ) {
        match (crate::reader::as_f64(node), is_adafactor) {
            (Some(v), false) => eps = v,
            (Some(v), true) => adafactor_eps[0] = v,
            (None, true) => {
                if let Some(pair) = read_pair(s, "eps", node, "write eps: [1e-30, 1e-3]") {
                    adafactor_eps = pair;
                }
            }
            (None, false) => s.invalid(
                "eps".into(),
                node,
                format!("expected a number, found {}", node.show()),
                "write eps: 1e-6 (a pair is Adafactor's form)".into(),
            ),
        }
    }
    if let Some(node) = s.raw(
        "adafactor_eps",
        crate::schema::KeyKind::Any,
        serde_json::json!(d.adafactor_eps),
        crate::reader::ours(
            "Adafactor's eps pair as wanlora writes it back (AI Toolkit's files say eps)",
        ),
    ) {
        if let Some(pair) = read_pair(
            s,
            "adafactor_eps",
            node,
            "write adafactor_eps: [1e-30, 1e-3]",
        ) {
            adafactor_eps = pair;
        }
    }
    let params = OptimizerParams {
        weight_decay,
        betas,
        eps,
        d_coef: s.float(
            "d_coef",
            d.d_coef,
            ai("Prodigy: factor of the distance estimate"),
        ),
        d0: s.float("d0", d.d0, ai("Prodigy: initial distance estimate")),
        beta3: s.opt_float(
            "beta3",
            ai("Prodigy: decay of its running sums (default sqrt(beta2))"),
        ),
        growth_rate: s.opt_float(
            "growth_rate",
            ai("Prodigy: most the estimate may grow per step (default unbounded)"),
        ),
        use_bias_correction: s.bool(
            "use_bias_correction",
            d.use_bias_correction,
            ai("Prodigy: Adam's bias correction"),
        ),
        safeguard_warmup: s.bool(
            "safeguard_warmup",
            d.safeguard_warmup,
            ai("Prodigy: leave the learning rate out of the estimate (for warmups)"),
        ),
        decouple: s.bool(
            "decouple",
            d.decouple,
            ai("Prodigy: decoupled (AdamW-style) weight decay"),
        ),
        adafactor_eps,
        clip_threshold: s.float(
            "clip_threshold",
            d.clip_threshold,
            ai("Adafactor: most RMS of an update"),
        ),
        decay_rate: s.float(
            "decay_rate",
            d.decay_rate,
            ai("Adafactor: second-moment decay exponent"),
        ),
        beta1: s.opt_float("beta1", ai("Adafactor: first-moment decay (default: none)")),
        scale_parameter: s.bool(
            "scale_parameter",
            d.scale_parameter,
            ai("Adafactor: scale steps by the parameter's RMS"),
        ),
    };
    s.unused(OPTIMIZER_PARAMS_UNUSED);
    for key in [
        "amsgrad",
        "percentile_clipping",
        "block_wise",
        "min_8bit_size",
        "optim_bits",
        "foreach",
        "fused",
        "maximize",
        "capturable",
    ] {
        s.refuse(
            key,
            Neutral::Off,
            "not implemented: only the parameters of AdamW (weight_decay, betas, eps), Prodigy and Adafactor are",
        );
    }
    warn_foreign_keys(s, optimizer, &params, is_prodigy, is_adafactor);
    params
}

/// Warns about keys set away from their default that belong to another optimizer than the job's.
fn warn_foreign_keys(
    s: &mut Section,
    optimizer: Optimizer,
    p: &OptimizerParams,
    is_prodigy: bool,
    is_adafactor: bool,
) {
    let d = OptimizerParams::default();
    let prodigy_set: Vec<&str> = [
        ("d_coef", p.d_coef != d.d_coef),
        ("d0", p.d0 != d.d0),
        ("beta3", p.beta3.is_some()),
        ("growth_rate", p.growth_rate.is_some()),
        ("use_bias_correction", p.use_bias_correction),
        ("safeguard_warmup", p.safeguard_warmup),
        ("decouple", !p.decouple),
    ]
    .into_iter()
    .filter(|&(_, set)| set && !is_prodigy)
    .map(|(k, _)| k)
    .collect();
    let adafactor_set: Vec<&str> = [
        ("clip_threshold", p.clip_threshold != d.clip_threshold),
        ("decay_rate", p.decay_rate != d.decay_rate),
        ("beta1", p.beta1.is_some()),
        ("scale_parameter", p.scale_parameter),
    ]
    .into_iter()
    .filter(|&(_, set)| set && !is_adafactor)
    .map(|(k, _)| k)
    .collect();
    let adam_set = is_adafactor && p.betas != d.betas;
    let name = optimizer.name();
    for (keys, owner) in [(prodigy_set, "prodigy"), (adafactor_set, "adafactor")] {
        for key in keys {
            let path = s.key_path(key);
            s.ctx().warning_at(
                &path,
                format!("{key} is a parameter of {owner}; it has no effect with optimizer: {name}"),
                format!("remove {key}, or set train.optimizer: {owner}"),
            );
        }
    }
    if adam_set {
        let path = s.key_path("betas");
        s.ctx().warning_at(
            &path,
            "betas has no effect with optimizer: adafactor (its first moment is beta1, its second decay_rate)",
            "remove betas; set beta1 / decay_rate instead",
        );
    }
}

/// Prodigy finds the step size itself and multiplies it by `lr`, which should stay about 1. Like
/// AI Toolkit, a rate below 0.1 (an Adam-sized rate left in the file) is replaced by 1.0 — with a
/// warning here; a rate far above 1 gets a warning.
pub(crate) fn adjust_prodigy_lr(s: &mut Section, train: &mut TrainConfig) {
    if train.optimizer != Optimizer::Prodigy {
        return;
    }
    let path = s.key_path("lr");
    if train.lr < 0.1 {
        s.ctx().warning_at(
            &path,
            format!(
                "lr {} with optimizer: prodigy runs at lr 1.0 (Prodigy estimates the step size; AI Toolkit replaces \
                 rates below 0.1 by 1.0 too)",
                train.lr
            ),
            "write lr: 1.0",
        );
        train.lr = 1.0;
    } else if train.lr > 10.0 {
        s.ctx().warning_at(
            &path,
            format!(
                "lr {} with optimizer: prodigy multiplies Prodigy's own step size by {}",
                train.lr, train.lr
            ),
            "use lr: 1.0 (raise optimizer_params.d_coef for larger steps)",
        );
    }
}

/// Keys of this section that wanlora reads but does not act on, and why.
const OPTIMIZER_PARAMS_UNUSED: &[UnusedKey] = &[
    (
        "relative_step",
        Unused::Refused(Neutral::Off),
        "Adafactor's relative step replaces train.lr; AI Toolkit passes lr and so refuses it too",
    ),
    (
        "warmup_init",
        Unused::Refused(Neutral::Off),
        "Adafactor's warmup_init needs relative_step; use train.lr_warmup_steps",
    ),
    (
        "slice_p",
        Unused::Refused(Neutral::Number(1.0)),
        "Prodigy's slice_p (estimating d from every p-th value) is not implemented",
    ),
    ("fsdp_in_use", Unused::Accepted, "wanlora does not use FSDP"),
];
