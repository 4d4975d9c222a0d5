//! What can go wrong while sampling, each case saying what to change.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    /// A setting of the request is out of range; `setting` names it as the job file or the command line spells it.
    #[error("sample setting `{setting}`: {message}")]
    Setting { setting: String, message: String },
    /// The start frame could not be read (`reason` names the file).
    #[error("start image: {reason}")]
    StartImage { path: PathBuf, reason: String },
    /// Tensors handed to the sampler do not fit together (a caller's mistake, not a user's).
    #[error("sampler input: {0}")]
    Input(String),
    /// The caller could not provide an expert for its phase (`generate`'s loader).
    #[error("{0}")]
    ExpertLoad(String),
    /// The GPU ran out of memory where no fallback was allowed; the message says what to change.
    #[error("{0}")]
    OutOfMemory(String),
    /// The phases were run out of order.
    #[error("{0}")]
    Phase(String),
    #[error(transparent)]
    Model(#[from] wanlora_models::ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("CUDA: {0}")]
    Cuda(#[from] wanlora_torch::cuda::HelperError),
    #[error(transparent)]
    Media(#[from] wanlora_data::MediaError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SamplingError {
    pub(crate) fn setting(setting: impl Into<String>, message: impl Into<String>) -> SamplingError {
        SamplingError::Setting {
            setting: setting.into(),
            message: message.into(),
        }
    }
}
