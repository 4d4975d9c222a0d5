//! `network`: the LoRA adapter's shape (AI Toolkit's `NetworkConfig`).

use crate::choice::{choice_serde, Choice};
use crate::reader::{ai, Ctx, Neutral, Section, Unused, UnusedKey};
use serde::{Deserialize, Serialize};

/// The kind of adapter. Only LoRA is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkType {
    #[default]
    Lora,
}

impl Choice for NetworkType {
    const SPELLINGS: &'static [(&'static str, Self)] = &[("lora", NetworkType::Lora)];
    const REFUSED: &'static [(&'static str, &'static str)] = &[
        (
            "locon",
            "LoCon/LyCORIS adapters are not implemented; Wan's blocks have no convolutions anyway",
        ),
        ("lycoris", "LyCORIS adapters are not implemented"),
        ("lokr", "LoKr adapters are not implemented"),
        ("lorm", "LoRM is not implemented"),
        (
            "fullrank",
            "full-rank (DoRA-style) adapters are not implemented",
        ),
        ("dora", "DoRA is not implemented"),
    ];
    const IGNORE_CASE: bool = true;
}
choice_serde!(NetworkType);

/// The LoRA adapter trained on each expert's transformer blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// `type`: only `lora`.
    #[serde(rename = "type")]
    pub network_type: NetworkType,
    /// `linear` (alias `rank`): the LoRA rank. AI Toolkit's default 4.
    pub linear: u32,
    /// `linear_alpha` (alias `alpha`): the LoRA alpha; the update is scaled by alpha / rank.
    /// Absent means alpha = rank (scale 1), which is what AI Toolkit effectively trains for Wan: it
    /// ignores `linear_alpha` for Wan and forces alpha = rank. wanlora honours an explicit value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_alpha: Option<f64>,
    /// `conv`: accepted for AI Toolkit UI files (which write `conv: 16` even for Wan), but Wan's
    /// transformer blocks contain no convolution, so it trains nothing; a value above 0 warns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv: Option<u32>,
    /// `conv_alpha`: see `conv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv_alpha: Option<f64>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            network_type: NetworkType::Lora,
            linear: 4,
            linear_alpha: None,
            conv: None,
            conv_alpha: None,
        }
    }
}

impl NetworkConfig {
    /// The alpha the adapter uses: `linear_alpha`, or the rank when it is absent.
    pub fn alpha(&self) -> f64 {
        self.linear_alpha.unwrap_or(f64::from(self.linear))
    }

    /// The factor applied to the LoRA update, alpha / rank.
    pub fn scale(&self) -> f64 {
        self.alpha() / f64::from(self.linear.max(1))
    }
}

pub(crate) fn read_network(s: &mut Section) -> NetworkConfig {
    let d = NetworkConfig::default();
    let network_type = s.choice("type", d.network_type, ai("Adapter kind; only lora"));
    let linear = s.uint(
        &["linear", "rank"],
        d.linear,
        ai("LoRA rank of every adapted linear layer"),
    );
    let linear_alpha = s.opt_float(
        &["linear_alpha", "alpha"],
        ai("LoRA alpha; the update is scaled by alpha/rank. Absent: alpha = rank (what AI Toolkit trains for Wan)"),
    );
    let conv = s.opt_uint(
        "conv",
        ai("Convolution rank; Wan's transformer blocks have no convolutions, so it has no effect"),
    );
    let conv_alpha = s.opt_float("conv_alpha", ai("Convolution alpha; no effect for Wan"));
    s.refuse("dropout", Neutral::Off, "LoRA dropout is not implemented");
    s.section("network_kwargs", ai("Module filters; only empty filters are accepted"), |k| {
        k.refuse("only_if_contains", Neutral::Off, "module filters are not implemented; every attention and FFN linear of the blocks is adapted");
        k.refuse("ignore_if_contains", Neutral::Off, "module filters are not implemented; every attention and FFN linear of the blocks is adapted");
        k.refuse("full_if_contains", Neutral::Off, "full-weight modules are not implemented");
    });
    s.unused(NETWORK_UNUSED);
    NetworkConfig {
        network_type,
        linear,
        linear_alpha,
        conv,
        conv_alpha,
    }
}

/// Keys of this section that wanlora reads but does not act on, and why.
const NETWORK_UNUSED: &[UnusedKey] = &[
    ("transformer_only", Unused::Refused(Neutral::True), "only the transformer blocks are adapted (as AI Toolkit does for Wan by default)"),
    ("lokr_full_rank", Unused::Accepted, "LoKr only"),
    ("lokr_factor", Unused::Accepted, "LoKr only"),
    ("old_lokr_format", Unused::Accepted, "LoKr only"),
    ("split_multistage_loras", Unused::Refused(Neutral::True), "wanlora always writes one LoRA file per expert (_high_noise / _low_noise), which is what ComfyUI loads"),
    ("layer_offloading", Unused::Refused(Neutral::Off), "offloading LoRA weights is not implemented (AI Toolkit marks it as not working either)"),
    ("pretrained_lora_path", Unused::Refused(Neutral::Off), "starting from an existing LoRA is not implemented; resume continues a run from its own output folder"),
    ("all_layers", Unused::Refused(Neutral::Off), "full-weight deltas for non-linear layers are not implemented"),
    ("lorm", Unused::Refused(Neutral::Off), "LoRM is not implemented"),
];

/// The `network.conv` value AI Toolkit's UI writes into every job it saves.
const AITK_UI_CONV: u32 = 16;

/// The network section's own checks; `at` is its key path.
pub(crate) fn check_network(network: &NetworkConfig, at: &str, ctx: &mut Ctx) {
    if network.linear == 0 {
        ctx.error_at(
            &format!("{at}.linear"),
            "the LoRA rank must be at least 1",
            "use a rank such as 16 or 32",
        );
    }
    if let Some(alpha) = network.linear_alpha {
        if alpha <= 0.0 {
            ctx.error_at(
                &format!("{at}.linear_alpha"),
                format!("alpha {alpha} must be above 0"),
                "remove linear_alpha to use alpha = rank",
            );
        } else if alpha != f64::from(network.linear) {
            ctx.warning_at(
                &format!("{at}.linear_alpha"),
                format!(
                    "AI Toolkit ignores linear_alpha for Wan and trains with alpha = rank; wanlora applies it, so this LoRA's updates are scaled by alpha/rank = {}",
                    alpha / f64::from(network.linear.max(1))
                ),
                "remove linear_alpha (or set it equal to linear) to train like AI Toolkit",
            );
        }
    }
    if let Some(conv) = network.conv.filter(|&c| c > 0) {
        let message = "Wan's transformer blocks have no convolutions, so conv trains nothing";
        // AI Toolkit's UI writes `conv: 16` (and `conv_alpha: 16`) into every job it saves: that
        // is not the user asking for anything, so it is only a note.
        let ui_default = conv == AITK_UI_CONV
            && network
                .conv_alpha
                .is_none_or(|a| a == f64::from(AITK_UI_CONV));
        if ui_default {
            ctx.note_at(
                &format!("{at}.conv"),
                format!("{message} (AI Toolkit's UI writes conv: {AITK_UI_CONV} into every job)"),
                "",
            );
        } else {
            ctx.warning_at(&format!("{at}.conv"), message, "remove conv and conv_alpha");
        }
    }
}
