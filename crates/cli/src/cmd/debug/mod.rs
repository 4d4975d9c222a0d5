//! `wanlora debug …`: run one model component on tensors from a safetensors file and write its
//! output to another — to check checkpoints, and the contract of the parity tests.

pub mod transformer;

use tch::{Device, Kind};

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
}

pub fn run(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Transformer(a) => transformer::run(a),
    }
}
