//! `wanlora debug transformer`: runs one expert on inputs from a safetensors file and writes the
//! output — a way for users to check a checkpoint, and the contract of our parity tests.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::Kind;
use wanlora_models::lora::{LoraApply, LoraSet, Multiplier};
use wanlora_models::transformer::LoadOptions;
use wanlora_torch::weights::{save_safetensors, WeightSet};

use super::{kind_of, DeviceArg, DtypeArg};

#[derive(clap::Args)]
pub struct TransformerArgs {
    /// A diffusers transformer folder or a single original/ComfyUI safetensors file.
    #[arg(long)]
    pub weights: PathBuf,
    /// safetensors with `hidden_states` [B,36,T,H,W], `timestep` [B], `encoder_hidden_states` [B,L,text_dim].
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write `output` [B,16,T,H,W] (f32).
    #[arg(long)]
    pub out: PathBuf,
    /// A LoRA in ComfyUI (lora_A/lora_B, with or without .alpha), kohya or diffusers key format.
    #[arg(long)]
    pub lora: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    pub lora_scale: f64,
    /// A diffusers config.json for single files whose head dimension is not 128 (small test models).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

pub fn run(args: TransformerArgs) -> Result<()> {
    let device = args.device.device()?;
    let kind = kind_of(args.dtype);
    // The loading path of `wanlora train` and `sample`: a config.json in the folder or beside the
    // single file is honoured there too.
    let model = wanlora_train::sources::load_transformer(
        &args.weights,
        args.config.clone(),
        kind,
        device,
        &LoadOptions::default(),
    )?;
    let inputs = WeightSet::open(&args.inputs)?;
    let get = |name: &str| {
        inputs
            .load(name, Kind::Float, device)
            .with_context(|| format!("{}: needs a tensor named {name}", args.inputs.display()))
    };
    let (x, t, c) = (
        get("hidden_states")?,
        get("timestep")?,
        get("encoder_hidden_states")?,
    );
    let lora = match &args.lora {
        Some(p) => Some(LoraSet::load(p, &model.config, device, false)?.0),
        None => None,
    };
    let apply = lora.as_ref().map(|set| LoraApply {
        set,
        multiplier: Multiplier::Scalar(args.lora_scale),
    });
    let out =
        tch::no_grad(|| model.forward(&x.to_kind(kind), &t, &c.to_kind(kind), apply.as_ref()))?;
    save_safetensors(
        &args.out,
        &[("output".to_string(), out.to_kind(Kind::Float))],
        &BTreeMap::new(),
    )?;
    eprintln!("wrote {} {:?}", args.out.display(), out.size());
    Ok(())
}
