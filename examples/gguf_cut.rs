//! Writes the first N layers of a GGUF model as a new GGUF file (`model::convert::gguf_first_layers`):
//! a smaller model of the same family, e.g. to carry the test model to a GPU machine whose
//! transfer is limited, for `benchmarks/gpu_parity`.
//!
//!   cargo run --release --example gguf_cut -- SRC.gguf DST.gguf N

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst, n] = args.as_slice() else {
        anyhow::bail!("usage: gguf_cut SRC.gguf DST.gguf LAYERS");
    };
    let layers: usize = n.parse().map_err(|e| anyhow::anyhow!("LAYERS {n:?}: {e}"))?;
    let cfg = subgoal::model::convert::gguf_first_layers(&PathBuf::from(src), &PathBuf::from(dst), layers)?;
    let bytes = std::fs::metadata(dst)?.len();
    println!("{}", serde_json::json!({"dst": dst, "arch": cfg.arch, "layers": cfg.layers, "bytes": bytes}));
    Ok(())
}
