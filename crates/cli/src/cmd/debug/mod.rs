//! `wanlora debug …`: run one model component on tensors from a safetensors file and write its
//! output to another — to check checkpoints, and the contract of the parity tests.

pub mod text;
pub mod transformer;
pub mod vae;

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};
use wanlora_torch::weights::{save_safetensors, WeightSet};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl DeviceArg {
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda if wanlora_torch::cuda_available() => Ok(Device::Cuda(0)),
            DeviceArg::Cuda => {
                anyhow::bail!("--device cuda: CUDA is not available here (see `wanlora doctor`)")
            }
        }
    }
}

pub fn kind_of(d: DtypeArg) -> Kind {
    match d {
        DtypeArg::F32 => Kind::Float,
        DtypeArg::Bf16 => Kind::BFloat16,
    }
}

#[derive(clap::Subcommand)]
pub enum DebugCommand {
    /// One transformer expert: hidden_states, timestep, encoder_hidden_states → output.
    Transformer(transformer::TransformerArgs),
    /// VAE-encode `video` [B,3,F,H,W] in [-1,1] → `latent` (normalised) and `latent_raw` (posterior mean).
    VaeEncode(vae::EncodeArgs),
    /// VAE-decode `latent` (normalised) [B,16,T,h,w] → `video` [B,3,1+4(T-1),8h,8w] in [-1,1].
    VaeDecode(vae::DecodeArgs),
    /// umT5: `input_ids`/`attention_mask` [B,L] (or --prompt texts) → `context` [B,512,d_model].
    TextEncode(text::TextEncodeArgs),
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Transformer(a) => transformer::run(a),
        DebugCommand::VaeEncode(a) => vae::encode(a),
        DebugCommand::VaeDecode(a) => vae::decode(a),
        DebugCommand::TextEncode(a) => text::encode(a),
    }
}

/// Reads tensor `name` of an input safetensors file as `kind` on the CPU, naming what the file holds when
/// the tensor is not there.
pub fn read_input(path: &Path, name: &str, kind: Kind) -> anyhow::Result<Tensor> {
    let file =
        WeightSet::open(path).with_context(|| format!("reading inputs {}", path.display()))?;
    if file.info(name).is_none() {
        bail!(
            "{}: needs a tensor named `{name}` (it holds: {})",
            path.display(),
            file.names().join(", ")
        );
    }
    Ok(file.load(name, kind, Device::Cpu)?)
}

/// Writes named tensors (on the CPU; floating point as float32) to an output safetensors file.
pub fn write_outputs(path: &Path, tensors: Vec<(&str, Tensor)>) -> anyhow::Result<()> {
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.to_device(Device::Cpu);
            let t = if t.is_floating_point() {
                t.to_kind(Kind::Float)
            } else {
                t
            };
            (name.to_string(), t)
        })
        .collect();
    save_safetensors(path, &tensors, &BTreeMap::new())
        .with_context(|| format!("writing outputs {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
