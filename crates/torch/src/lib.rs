//! libtorch plumbing shared by every crate that computes: start-up (CUDA registration), the C++
//! helper (memory statistics, streams, events, attention back-ends), and memory-mapped safetensors.

pub mod bootstrap;
pub mod cuda;
pub mod dist;
pub mod rng;
pub mod weights;

pub use bootstrap::{cuda_available, default_device, init};
