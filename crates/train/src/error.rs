//! The trainer's error type: every failure a user can cause says what to do.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] wanlora_models::ModelError),
    #[error(transparent)]
    Weights(#[from] wanlora_torch::weights::WeightError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Data(#[from] wanlora_data::DataError),
    #[error(transparent)]
    Cache(#[from] wanlora_data::cache::CacheError),
    #[error(transparent)]
    Sampler(#[from] wanlora_data::SamplerError),
    #[error(transparent)]
    Hub(#[from] wanlora_hub::Error),
    /// A preview failed; the sampler's own kind (a bad setting, a start image, out of memory) is kept.
    #[error("preview: {0}")]
    Sampling(#[from] crate::sampling::SamplingError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Something about the job or the models that stops the run before it starts.
    #[error("{0}")]
    Setup(String),
    /// The GPU ran out of memory; the message lists the settings that lower memory use.
    #[error("CUDA ran out of memory at step {step}: {detail}\n{advice}")]
    OutOfMemory {
        step: u64,
        detail: String,
        advice: String,
    },
    /// libtorch raised an error inside an operation that reports errors by panicking (tch's
    /// non-fallible methods); the message is libtorch's.
    #[error("{0}")]
    Libtorch(String),
    /// Several steps in a row of one expert produced a NaN or infinite loss or gradient.
    #[error("{count} {expert} steps in a row gave a non-finite loss (last at step {step}); stopped, the last good checkpoint is kept. Lower the learning rate or check the data.")]
    Diverged {
        count: u32,
        expert: &'static str,
        step: u64,
    },
    /// A save found NaN or infinite values in what it would write; nothing was written.
    #[error("step {step}: {parts} hold non-finite (NaN or infinite) values; nothing was saved, the last good checkpoint is kept. Lower the learning rate or check the data.")]
    NonFiniteValues { step: u64, parts: String },
    /// A rank of an expert-parallel job died; the other one was stopped and saved.
    #[error("the {expert} rank {how} ({reason}); the other rank was stopped and saved its state: fix the cause, then run the job again to resume")]
    RankFailed {
        expert: &'static str,
        how: String,
        reason: String,
    },
    /// Another trainer holds the job folder's lock.
    #[error("{}: this job is already being trained by {}; stop that run first (Ctrl+C, or an empty file control/stop in the job folder), or give this job another `config.name`", folder.display(), pid.map_or("another process".to_string(), |p| format!("process {p}")))]
    JobInUse { folder: PathBuf, pid: Option<u32> },
    /// Too little free disk space for a save.
    #[error("{}: not enough free disk space for the save at step {step}: it needs about {needed}, {free} are free. Free some space, then run the job again to resume from the last save", folder.display())]
    DiskFull {
        folder: PathBuf,
        step: u64,
        needed: String,
        free: String,
    },
    /// Ctrl+C or control/stop during set-up (caption encoding, the latent cache pass).
    #[error("stopped during set-up ({phase}); run the job again to continue")]
    StoppedDuringSetup { phase: &'static str },
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs `f`, turning a panic raised by tch for a libtorch error (e.g. CUDA out of memory) into an
/// error, so the run can save, report and exit cleanly.
pub fn catch_libtorch<T>(f: impl FnOnce() -> Result<T, TrainError>) -> Result<T, TrainError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(TrainError::Libtorch(msg))
        }
    }
}

/// Turns libtorch's out-of-memory error into one that names the knobs to turn.
pub fn classify_torch_error(err: TrainError, step: u64) -> TrainError {
    let text = err.to_string();
    if text.contains("out of memory") || text.contains("CUDA error: out of memory") {
        let detail = text.lines().next().unwrap_or_default().to_string();
        return TrainError::OutOfMemory {
            step,
            detail,
            advice: "Lower memory use with any of: fewer frames (datasets[].num_frames, e.g. 81 → 41), \
                     smaller buckets (datasets[].resolution, e.g. drop 1024), model.low_vram: true (the idle expert \
                     waits in host memory), model.quantize: true with qtype: float8 (half the weight memory), \
                     train.keep_blocks and keep_attention: auto (the default; falls back to smaller plans by itself) or lower numbers, train.batch_size: 1."
                .into(),
        };
    }
    err
}
