//! Sampling: image-to-video and text-to-video previews during training and the standalone `wanlora sample`, following Wan 2.2's
//! official recipe (wan-reference.md §3–4).
//!
//! ```text
//! SampleRequest (job sample item or official defaults)
//!   ├─ start_image (I2V only): load, crop or stretch to W×H, → [1,3,H,W] in [−1,1]
//!   ├─ first_frame_condition (wanlora-models, VAE) → y
//!   ├─ noise: seed → [1,z,T,h,w] (PyTorch's CPU generator algorithm, no libtorch RNG)
//!   ├─ schedule: σ and timesteps (official; diffusers' grids for parity tests), expert routing
//!   └─ SampleRun: high-noise phase (expert + LoRA) → low-noise phase, CFG per expert, scheduler (Euler / UniPC)
//!        → latents → VAE decode → output: frames → mp4 / webp / jpg thumbnail
//! ```
//!
//! Modules: [`request`] (what a sample is), [`start_image`], [`noise`], [`schedule`], [`scheduler`],
//! [`pipeline`] (the denoising loop and [`generate`]), [`output`] (files).

mod error;
pub mod noise;
pub mod output;
pub mod pipeline;
pub mod request;
pub mod schedule;
pub mod scheduler;
pub mod start_image;

pub use error::SamplingError;
pub use output::{sample_stem, video_frames, write_media, write_sample, SampleFiles};
pub use pipeline::{
    generate, start_condition, Conditioning, Generated, LoadedExpert, SampleRun, StepInfo,
};
pub use request::{CfgBatching, SampleRequest, WAN_NEGATIVE_PROMPT};
pub use schedule::{Schedule, ScheduleKind};
pub use scheduler::{SamplerKind, SamplingState};
