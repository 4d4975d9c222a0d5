//! The error type shared by every model in this crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] wanlora_torch::weights::WeightError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A caller passed tensors of the wrong shape or kind; the message says which and what is expected.
    #[error("{0}")]
    Input(String),
}

/// What kind of model a set of tensor names belongs to, when it is recognisably not the one being loaded:
/// used in load errors ("this is a transformer file") next to the list of missing tensors.
pub(crate) fn foreign_model_hint(names: &[String]) -> Option<&'static str> {
    let any = |pattern: &str| names.iter().any(|n| n.contains(pattern));
    if any("lora_A") || any("lora_B") || any("lora_down") || any("lora_up") {
        Some("this is a LoRA file, not a model")
    } else if any("blocks.0.self_attn.") || any("patch_embedding.") || any("condition_embedder.") {
        Some("this is a Wan transformer (diffusion model) file")
    } else if any("SelfAttention.relative_attention_bias")
        || any("token_embedding.")
        || any("shared.weight")
    {
        Some("this is a T5 / umT5 text encoder file")
    } else if any("decoder.middle.0.residual") || any("decoder.up_blocks.0.resnets") {
        Some("this is a Wan VAE file")
    } else if any("vision_model.") || any("visual.") {
        Some("this is an image encoder (CLIP) file")
    } else {
        None
    }
}
