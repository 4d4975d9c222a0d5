//! Training and sampling for Wan 2.2 I2V A14B LoRAs.

pub mod checkpoint;
pub mod data_parallel;
pub mod demo;
pub mod divergence;
pub mod ema;
pub mod encoders;
mod error;
pub mod expert_parallel;
pub mod experts;
pub mod job;
pub mod jobfiles;
pub mod launch_env;
pub mod lock;
pub mod loss;
pub mod memory_plan;
pub mod optim;
pub mod output;
pub mod perf;
pub mod sampling;
pub mod schedule;
pub mod setup_stop;
pub mod sources;
pub mod ti2v;
pub mod timesteps;
pub mod tiny;
pub mod trainer;
pub mod validation;

pub use error::TrainError;
