//! Model sources for wanlora: where the Wan 2.2 I2V A14B weights of a job come from.
//!
//! A job names its model with AI Toolkit's keys (`name_or_path`, `extras_name_or_path`,
//! `te_name_or_path`, `vae_path`) plus wanlora's per-expert and tokenizer keys, each a local file,
//! a local folder or a Hugging Face repo id `org/name[@revision][/path]`. This crate
//!
//! 1. **resolves** them per component ([`resolve`]): local paths first, then the Hugging Face cache
//!    shared with Python tools, then (online) the hub's file list;
//! 2. **downloads** only what a stage of the job needs ([`fetch`]): resumable, checksummed, into
//!    the same cache layout `huggingface_hub` uses;
//! 3. **checks** the files before a long run by reading safetensors headers only
//!    ([`check_model`]): truncated files and wrong models are named with the reason.
//!
//! No libtorch here: the models crate loads the files this crate hands over.

pub mod cache;
pub mod checks;
pub mod client;
pub mod config;
pub mod download;
pub mod error;
pub mod identify;
pub mod report;
pub mod resolve;
pub mod safetensors_header;
pub mod single;
pub mod source;
pub mod spec;
mod tree;

pub use checks::{
    check_component, check_components, check_components_on_hub, check_model, CheckFailure,
    CheckOptions, ComponentCheck, ComponentReport,
};
pub use config::HubConfig;
pub use error::{human_bytes, Error};
pub use identify::{identify, ModelKind, Naming, TensorSet};
pub use resolve::{fetch, resolve, ComponentFile, Origin, ResolvedComponent, ResolvedModel, State};
pub use safetensors_header::{read_header, DtypeSummary, SafetensorsHeader};
pub use single::fetch_file;
pub use source::{RepoRef, Source};
pub use spec::{Component, ModelSpec, Need, Stage};
pub use tree::Layout;
