//! What the CPU tests on a tiny Wan transformer share: its configuration (two heads of 16, an MLP
//! of 64, the I2V A14B expert's channels and layout otherwise) and its random fp32 weights.

use tch::{Device, Kind};
use wanlora_models::transformer::{LoadOptions, TransformerConfig, WanTransformer};
use wanlora_torch::weights::RandomWeights;

/// The tiny I2V transformer with `layers` blocks.
pub fn tiny_config(layers: i64) -> TransformerConfig {
    TransformerConfig {
        num_attention_heads: 2,
        attention_head_dim: 16,
        text_dim: 32,
        freq_dim: 32,
        ffn_dim: 64,
        num_layers: layers,
        ..TransformerConfig::wan22_i2v_a14b()
    }
}

/// `config` on the CPU in fp32 with random weights from `seed`. They are drawn from libtorch's
/// one generator (seeded per tensor): a test binary where other tests draw from it concurrently
/// holds a lock.
pub fn tiny_model(config: TransformerConfig, seed: i64, options: &LoadOptions) -> WanTransformer {
    WanTransformer::load_with(
        &RandomWeights { std: 0.05, seed },
        Some(config),
        Kind::Float,
        Device::Cpu,
        options,
    )
    .unwrap()
}
