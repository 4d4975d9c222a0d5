//! The wanlora job: AI Toolkit's YAML/JSON job format for Wan 2.2 A14B (I2V and T2V) LoRA training, read into
//! typed structs with AI Toolkit's defaults, checked all at once, and written back.
//!
//! Data flow: text → `${VAR}` substitution ([`env`]) → span-aware tree ([`node`]) → `[name]`
//! substitution → typed [`Job`] with reading findings ([`reader`] and one module per section) →
//! cross-field checks ([`validate`]) → [`Validated`]. [`load_job`] does all of it for a file and
//! fails on errors; [`to_yaml`] writes a job back; [`known_keys`] lists the schema; [`presets`]
//! holds the example jobs.

pub mod arch;
mod checks;
mod choice;
mod dataset;
mod env;
mod error;
mod finding;
mod gpus;
mod job;
mod limits;
mod load;
mod logging;
mod model;
pub mod names;
mod network;
mod node;
mod optimizer_params;
pub mod presets;
mod reader;
mod sample;
mod save;
mod schema;
mod suggest;
mod train;
mod validate;
mod validation;
mod yaml;

pub use arch::{ArchFacts, ModelArch};
pub use dataset::DatasetConfig;
pub use error::ConfigError;
pub use finding::{Finding, Severity};
pub use gpus::{gpu_list_problem, parse_gpu_list, trained_experts};
pub use job::{Job, JobConfig, Process, ProcessType};
pub use limits::{device_count_finding, visible_gpu_count};
pub use load::{
    load_job, parse_job, parse_job_with_env, resolve_paths, Format, LoadedJob, SourceInfo,
    Validated,
};
pub use logging::LoggingConfig;
pub use model::{ModelConfig, ModelKwargs, QType};
pub use network::{NetworkConfig, NetworkType};
pub use node::plain_message as yaml_error_message;
pub use sample::{CtrlImgResize, ResolvedSample, SampleConfig, SampleFormat, SampleItem, Sampler};
pub use save::{SaveConfig, SaveDtype, SaveFormat};
pub use schema::{known_keys, KeyInfo, KeyKind, Origin, Support};
pub use train::{
    BlockCount, ContentOrStyle, EmaConfig, LossType, LrScheduler, LrSchedulerParams, Optimizer,
    OptimizerParams, TimestepType, TrainConfig, TrainDtype,
};
pub use validation::{ValidationConfig, ValidationItem};
pub use yaml::to_yaml;
