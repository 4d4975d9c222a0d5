//! The initial noise of a sample: standard normal values from a seed, drawn by PyTorch's CPU algorithm
//! ([`wanlora_torch::rng`]), so that
//!
//! * sampling never draws from libtorch's global generator: a preview in the middle of training leaves the
//!   training run's random stream exactly where it was;
//! * the noise is the same on every device (drawn on the CPU, then moved);
//! * a seed gives the noise that ComfyUI (`torch.manual_seed(seed)` then `torch.randn` on the CPU) and diffusers (a
//!   CPU generator) start from, so a preview with seed 42 is the video those tools make with seed 42.

pub use wanlora_torch::rng::{torch_randn, torch_randn_values};
