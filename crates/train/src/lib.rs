//! Training and sampling for Wan 2.2 I2V A14B LoRAs.

pub mod ema;
pub mod experts;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod timesteps;
