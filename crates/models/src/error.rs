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
