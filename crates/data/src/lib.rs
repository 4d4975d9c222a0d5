//! wanlora-data: from users' folders of clips, images and captions to training items, and from
//! frames to sample videos. No libtorch: encoders plug in through traits.
//!
//! Data flow: [`spec::DatasetSpec`]s → [`catalog::Catalog::load`] (scan, captions, ffprobe,
//! frame sampling, buckets, flips, problems) → [`batch::BatchSampler`] (batches within one
//! bucket, seeded order, resumable) → [`cache::run_cache_pass`] / [`cache::item_latents`]
//! (decode through ffmpeg, encode, store on disk by content) → the trainer.

/// The atomic writer lives in the spec crate; `wanlora_data::atomic` is the same module.
pub use wanlora_spec::atomic;
pub mod batch;
pub mod bucket;
pub mod cache;
pub mod caption;
pub mod catalog;
mod font;
pub mod inspect;
pub mod media;
pub mod plot;
pub mod problems;
pub mod rng;
pub mod sampling;
pub mod scan;
pub mod spec;

pub use batch::{Batch, BatchEntry, BatchSampler, SamplerError, SamplerState};
pub use bucket::{bucket_size, bucket_size_in_steps, cover_resize, BucketKey, BucketSize};
pub use cache::{
    item_latents, run_cache_pass, text_embedding, Cache, CacheError, CachePassOptions, CacheReport,
    LatentEncoder, NamedTensor, NamedTensors, TensorDtype, TextEncoder,
};
pub use catalog::{Catalog, DataError, DataItem, Flip, LoadedFrames, ResolvedDataset};
pub use inspect::{check_decoding, inspect, InspectReport};
pub use media::{
    probe, thumbnail, write_jpeg, write_mp4, write_webp, FrameRef, Frames, MediaError, MediaInfo,
};
pub use plot::write_loss_plot_png;
pub use problems::{summarise, Problem, ProblemKind};
pub use spec::{DatasetSpec, JobContext, SpecError};
