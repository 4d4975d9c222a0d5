//! Wan 2.2 I2V A14B in Rust on libtorch: each model a `Config`, layers built from a weight source by
//! name, forward functions that read like wan-reference.md.

pub mod conditioning;
pub mod error;
pub mod lora;
pub mod quant;
pub mod recovery;
pub mod tokenizer;
pub mod transformer;
pub mod uint4;
pub mod umt5;
pub mod vae;

pub use error::ModelError;
