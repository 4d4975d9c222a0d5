//! Training and sampling for Wan 2.2 I2V A14B LoRAs.

pub mod optim;
