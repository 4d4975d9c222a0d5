//! Wan 2.2 I2V A14B in Rust on libtorch: each model a `Config`, layers built from a weight source by
//! name, forward functions that read like wan-reference.md.

pub mod error;
pub mod lora;
pub mod transformer;

pub use error::ModelError;
