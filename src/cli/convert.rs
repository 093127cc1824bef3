//! `subgoal convert`: a model rewritten as a Hugging Face directory in another precision.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use subgoal::model::convert::{to_hf, Target};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A GGUF file or a Hugging Face model directory (config.json and *.safetensors).
    pub src: PathBuf,
    /// The directory to write (created).
    pub out: PathBuf,
    /// f32, bf16, f16, or fp8: layer projections in E4M3 with one weight_scale_inv per 128×128
    /// block (DeepSeek-V3's layout; embeddings, norms and the output projection as stored).
    #[arg(long, default_value = "fp8")]
    pub dtype: Target,
    /// With --dtype fp8: layers whose projections stay as stored, by index (negative from the
    /// end: `0,-1`); listed in `quantization_config.modules_to_not_convert`, so `--dtype fp8`
    /// loads them dense.
    #[arg(long, value_name = "LIST", value_delimiter = ',', allow_negative_numbers = true)]
    pub fp8_dense_layers: Vec<i64>,
}

pub async fn run(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    let (src, out, target, dense) = (a.src.clone(), a.out.clone(), a.dtype, a.fp8_dense_layers.clone());
    tokio::task::spawn_blocking(move || to_hf(&src, &out, target, &dense))
        .await
        .context("the conversion thread")?
        .with_context(|| format!("converting {} into {}", a.src.display(), a.out.display()))?;
    println!("{}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
