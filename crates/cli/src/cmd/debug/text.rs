//! `wanlora debug text-encode`.

use super::{kind_of, read_input, write_outputs, DeviceArg, DtypeArg};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::Kind;
use wanlora_models::tokenizer::Tokenizer;
use wanlora_models::umt5::Umt5Encoder;

#[derive(clap::Args)]
pub struct TextEncodeArgs {
    /// The umT5 encoder: a transformers `text_encoder/` folder (or the model folder above it) or a single file
    /// (umt5_xxl_fp16.safetensors, umt5_xxl_fp8_e4m3fn_scaled.safetensors, Wan's names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Folder (or file) with tokenizer.json, for --prompt; default: the `tokenizer/` folder next to the weights.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Safetensors file holding `input_ids` [B,L] (int64) and `attention_mask` [B,L].
    #[arg(long, conflicts_with = "prompt", required_unless_present = "prompt")]
    pub inputs: Option<PathBuf>,
    /// A prompt to tokenize and encode (repeat for a batch).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Safetensors file to write `context` [B,512,d_model] (float32; zeros after each prompt's tokens) to, and
    /// with --prompt also the `input_ids` and `attention_mask` used.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

/// `tokenizer/` beside the weights (diffusers layout: model/text_encoder and model/tokenizer) or inside them.
fn default_tokenizer(weights: &Path) -> Option<PathBuf> {
    let candidates = [
        weights.join("tokenizer"),
        weights
            .parent()
            .map(|p| p.join("tokenizer"))
            .unwrap_or_default(),
    ];
    candidates
        .into_iter()
        .find(|p| p.join("tokenizer.json").is_file())
}

pub fn encode(args: TextEncodeArgs) -> Result<()> {
    let device = args.device.device()?;
    let (ids, mask, from_prompts) = match &args.inputs {
        Some(inputs) => (
            read_input(inputs, "input_ids", Kind::Int64)?,
            read_input(inputs, "attention_mask", Kind::Int64)?,
            false,
        ),
        None => {
            let Some(path) = args
                .tokenizer
                .clone()
                .or_else(|| default_tokenizer(&args.weights))
            else {
                bail!("--prompt needs a tokenizer: pass --tokenizer DIR (the folder with tokenizer.json)");
            };
            let tokenizer = Tokenizer::from_file(&path)?;
            let prompts: Vec<&str> = args.prompt.iter().map(String::as_str).collect();
            let (ids, mask) = tokenizer.encode_batch(&prompts)?;
            (ids, mask, true)
        }
    };
    let encoder = Umt5Encoder::from_path(&args.weights, kind_of(args.dtype), device)
        .context("loading the text encoder")?;
    let context = encoder.encode(&ids, &mask)?;
    tracing::info!("context {:?}", context.size());
    let mut outputs = vec![("context", context)];
    if from_prompts {
        outputs.push(("input_ids", ids));
        outputs.push(("attention_mask", mask));
    }
    write_outputs(&args.out, outputs)
}
