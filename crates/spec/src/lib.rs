//! The Wan 2.2 facts that several crates need, written once: the frame-count and frame-size rules
//! of the Wan VAE and patchify, the two experts and their timestep windows, the text length, and
//! how wanlora prints byte counts, the atomic file writer, and the job-folder contract
//! (docs/JOB-FOLDER.md) that the trainer writes and the UI reads, and the weight-name conventions
//! (original ↔ diffusers, wrapper prefixes, adapter marks, variants from shapes). A leaf crate (serde only), so that the config, data, hub,
//! server, models and train crates can all use it without linking anything they would not
//! otherwise link.

pub mod atomic;
pub mod bytes;
pub mod expert;
pub mod frames;
pub mod job_folder;
pub mod naming;

pub use bytes::human_bytes;
pub use expert::{Expert, Window};

/// umT5 text embeddings are padded to this many positions (Wan's `text_len`).
pub const TEXT_LEN: usize = 512;
