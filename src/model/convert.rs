//! Model file conversions: a GGUF model rewritten as a Hugging Face directory with dense weights
//! (`config.json`, `tokenizer.json`, `tokenizer_config.json`, `model.safetensors`); a Hugging
//! Face directory rewritten in another precision, FP8 included (DeepSeek-V3's layout: E4M3
//! projections with `weight_scale_inv` per 128×128 block); a GGUF model cut to its first layers.
//!
//! Why: the CPU's quantized kernels round activations to 8 bits and a GPU's do not, so one GGUF
//! file does not compute the same numbers on both devices; its dequantized weights can
//! (`benchmarks/gpu_parity` compares greedy output across devices on them). A cut model is small
//! enough to move to a GPU machine with a transfer limit (`examples/gguf_cut.rs`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::MmapedSafetensors;
use safetensors::tensor::{Dtype as StDtype, TensorView, View};

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use super::llama::{config_from_gguf, read_gguf, Config, RopeScaling};
use super::GenError;

fn fail(path: &Path, detail: impl std::fmt::Display) -> GenError {
    GenError::Load { model: path.display().to_string(), detail: detail.to_string() }
}

/// The Hugging Face name of a GGUF tensor; `None` for tensors the decoder does not read.
fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, field) = rest.split_once('.')?;
    let (part, kind) = field.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// Undoes llama.cpp's reordering of q/k rows for interleaved rotation: GGUF row `(h, i, j)` of
/// `(heads, head_dim / 2, 2)` is Hugging Face row `(h, j, i)`.
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let half = rows / heads / 2;
    w.reshape((heads, half, 2, rest))?.transpose(1, 2)?.contiguous()?.reshape(dims)
}

fn config_json(cfg: &Config, tied: bool) -> Value {
    let mut c = json!({
        "model_type": cfg.arch,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_positions,
        "vocab_size": cfg.vocab,
        "tie_word_embeddings": tied,
    });
    let scaling = match &cfg.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max }) => json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max,
        }),
        Some(RopeScaling::Yarn { factor, original_max, beta_fast, beta_slow, attention_factor }) => json!({
            "rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original_max,
            "beta_fast": beta_fast, "beta_slow": beta_slow, "attention_factor": attention_factor,
        }),
    };
    c["rope_scaling"] = scaling;
    c
}

/// Writes `gguf` into the directory `out` (created) with weights in `dtype`; returns the
/// model's configuration. Every tensor is held in memory until the file is written: meant for
/// the small models device comparisons use.
pub fn gguf_to_hf(gguf: &Path, out: &Path, dtype: DType) -> Result<Config, GenError> {
    let (ct, mut f) = read_gguf(gguf).map_err(|e| fail(gguf, e))?;
    let cfg = config_from_gguf(&ct).map_err(|e| fail(gguf, e))?;
    std::fs::create_dir_all(out).map_err(|e| fail(out, e))?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut names: Vec<&String> = ct.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else {
            tracing::warn!(tensor = %name, "not read by the decoder; left out of the conversion");
            continue;
        };
        let w = ct
            .tensor(&mut f, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .map_err(|e| fail(gguf, format!("{name}: {e}")))?;
        let w = if cfg.rope_interleaved && (name.contains(".attn_q.") || name.contains(".attn_k.")) {
            let heads = if name.contains(".attn_q.") { cfg.heads } else { cfg.kv_heads };
            unpermute(&w, heads)
        } else {
            Ok(w)
        };
        let w = w.and_then(|w| w.to_dtype(dtype)).map_err(|e| fail(gguf, format!("{name}: {e}")))?;
        tensors.insert(hf, w);
    }
    let tied = !tensors.contains_key("lm_head.weight");
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).map_err(|e| fail(out, e))?;
    let write = |name: &str, v: &Value| -> Result<(), GenError> {
        let text = serde_json::to_string_pretty(v).map_err(|e| fail(out, e))?;
        std::fs::write(out.join(name), text).map_err(|e| fail(&out.join(name), e))
    };
    write("config.json", &config_json(&cfg, tied))?;
    write("tokenizer.json", &super::tokenizer::gguf_tokenizer_document(&ct.metadata)?)?;
    // End of sequence, start of sequence and chat template as the GGUF states them.
    let md = &ct.metadata;
    let token = |k: &str| -> Value {
        let id = md.get(k).and_then(|v| v.to_u32().ok());
        let tokens = md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok());
        match (id, tokens) {
            (Some(i), Some(t)) => t.get(i as usize).and_then(|v| v.to_string().ok()).map_or(Value::Null, |s| json!(s)),
            _ => Value::Null,
        }
    };
    let template = md.get("tokenizer.chat_template").and_then(|v| v.to_string().ok()).map_or(Value::Null, |s| json!(s));
    write(
        "tokenizer_config.json",
        &json!({"bos_token": token("tokenizer.ggml.bos_token_id"), "eos_token": token("tokenizer.ggml.eos_token_id"),
                "chat_template": template}),
    )?;
    Ok(cfg)
}

/// The precision `to_hf` writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Every floating tensor in this type (FP8 weights dequantized).
    Dense(DType),
    /// Layer projections in E4M3 with 128×128 block factors, the rest as stored.
    Fp8,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "f32" => Ok(Target::Dense(DType::F32)),
            "bf16" => Ok(Target::Dense(DType::BF16)),
            "f16" => Ok(Target::Dense(DType::F16)),
            "fp8" => Ok(Target::Fp8),
            other => Err(format!("{other:?}: expected f32, bf16, f16 or fp8")),
        }
    }
}

/// Whether `name` is a layer projection's weight (what FP8 holds in E4M3).
pub fn is_projection(name: &str) -> bool {
    const PROJ: [&str; 7] = [
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ];
    name.starts_with("model.layers.") && PROJ.iter().any(|p| name.ends_with(p))
}

/// The `quantization_config` an FP8 directory carries (what DeepSeek's FP8 releases state).
pub fn fp8_quantization_config() -> Value {
    json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]})
}

/// A tensor to write: one read from the source as it is, one computed, or raw bytes.
enum Out<'a> {
    Same(TensorView<'a>),
    Computed(Tensor),
    Raw { dtype: StDtype, shape: Vec<usize>, data: Vec<u8> },
}

impl View for &Out<'_> {
    fn dtype(&self) -> StDtype {
        match self {
            Out::Same(v) => v.dtype(),
            Out::Computed(t) => View::dtype(t),
            Out::Raw { dtype, .. } => *dtype,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Out::Same(v) => v.shape(),
            Out::Computed(t) => View::shape(t),
            Out::Raw { shape, .. } => shape,
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Out::Same(v) => Cow::Borrowed(v.data()),
            Out::Computed(t) => View::data(t),
            Out::Raw { data, .. } => Cow::Borrowed(data),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Out::Same(v) => v.data_len(),
            Out::Computed(t) => View::data_len(t),
            Out::Raw { data, .. } => data.len(),
        }
    }
}

/// Writes `src` (a GGUF file, or a Hugging Face directory) as a Hugging Face directory at `out`
/// in `target`. A directory is converted one shard at a time (a shard's tensors in memory at
/// once), keeping its shard layout and every other file.
///
/// With `Fp8`, the layers `dense_layers` names (indices, negative from the end) keep their
/// projections as stored, and `quantization_config.modules_to_not_convert` lists them, so that
/// `--dtype fp8` loads them dense.
pub fn to_hf(src: &Path, out: &Path, target: Target, dense_layers: &[i64]) -> Result<(), GenError> {
    if target != Target::Fp8 && !dense_layers.is_empty() {
        return Err(fail(out, "dense layers apply to --dtype fp8 only"));
    }
    if src.is_file() {
        let dense = match target {
            Target::Dense(d) => d,
            Target::Fp8 => DType::F32,
        };
        if target == Target::Fp8 {
            let tmp = tempfile::tempdir().map_err(|e| fail(out, e))?;
            gguf_to_hf(src, tmp.path(), dense)?;
            return to_hf(tmp.path(), out, target, dense_layers);
        }
        return gguf_to_hf(src, out, dense).map(|_| ());
    }
    if !src.join("config.json").exists() {
        return Err(fail(src, "neither a GGUF file nor a directory with config.json"));
    }
    if out.exists() && std::fs::canonicalize(src).ok() == std::fs::canonicalize(out).ok() {
        return Err(fail(out, "the output is the source; write elsewhere"));
    }
    std::fs::create_dir_all(out).map_err(|e| fail(out, e))?;
    let mut shards: Vec<std::path::PathBuf> = std::fs::read_dir(src)
        .map_err(|e| fail(src, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(fail(src, "no .safetensors files"));
    }
    let text = std::fs::read_to_string(src.join("config.json")).map_err(|e| fail(src, e))?;
    let mut config: Value = serde_json::from_str(&text).map_err(|e| fail(&src.join("config.json"), e))?;
    let keep: Vec<String> = if dense_layers.is_empty() {
        Vec::new()
    } else {
        let layers = super::load::config_from_hf(&config).map_err(|e| fail(&src.join("config.json"), e))?.layers;
        super::fp8::resolve_layers(dense_layers, layers)
            .map_err(|e| fail(src, e))?
            .into_iter()
            .map(super::load::layer_module)
            .collect()
    };
    // SAFETY: memory-mapped read-only; the source must not change while it is converted.
    let all = unsafe { MmapedSafetensors::multi(&shards) }.map_err(|e| fail(src, e))?;
    let mut weight_map = serde_json::Map::new();
    for shard in &shards {
        let file = shard.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
        // SAFETY: as above.
        let one = unsafe { MmapedSafetensors::new(shard) }.map_err(|e| fail(shard, e))?;
        let mut outs: Vec<(String, Out)> = Vec::new();
        for (name, view) in one.tensors() {
            let kept = keep.iter().any(|k| name.starts_with(k.as_str()));
            outs.extend(convert_tensor(&all, shard, name, view, target, kept)?);
        }
        for (name, _) in &outs {
            weight_map.insert(name.clone(), json!(file));
        }
        let refs: Vec<(String, &Out)> = outs.iter().map(|(n, o)| (n.clone(), o)).collect();
        safetensors::serialize_to_file(refs, None, &out.join(&file)).map_err(|e| fail(&out.join(&file), e))?;
    }
    // Every other file as it is; config.json and the shard index rewritten.
    for entry in std::fs::read_dir(src).map_err(|e| fail(src, e))?.flatten() {
        let p = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !p.is_file()
            || name.ends_with(".safetensors")
            || name == "config.json"
            || name == "model.safetensors.index.json"
        {
            continue;
        }
        std::fs::copy(&p, out.join(&name)).map_err(|e| fail(&p, e))?;
    }
    if let Some(c) = config.as_object_mut() {
        match target {
            Target::Fp8 => {
                let mut q = fp8_quantization_config();
                if !keep.is_empty() {
                    q["modules_to_not_convert"] = json!(keep);
                }
                c.insert("quantization_config".into(), q);
            }
            Target::Dense(d) => {
                c.remove("quantization_config");
                let name = match d {
                    DType::BF16 => "bfloat16",
                    DType::F16 => "float16",
                    _ => "float32",
                };
                c.insert("torch_dtype".into(), json!(name));
            }
        }
    }
    let write = |name: &str, v: &Value| -> Result<(), GenError> {
        let text = serde_json::to_string_pretty(v).map_err(|e| fail(out, e))?;
        std::fs::write(out.join(name), text).map_err(|e| fail(&out.join(name), e))
    };
    write("config.json", &config)?;
    if src.join("model.safetensors.index.json").exists() {
        write("model.safetensors.index.json", &json!({"metadata": {}, "weight_map": weight_map}))?;
    }
    Ok(())
}

/// One source tensor as `target` writes it: itself, its conversion, or (FP8) its bytes and
/// block factors; nothing for a factor tensor whose weight is dequantized. Under `Fp8`, a tensor
/// of a layer `kept` dense stays as stored (an FP8 one dequantized to f32).
fn convert_tensor<'a>(
    all: &MmapedSafetensors,
    shard: &Path,
    name: String,
    view: TensorView<'a>,
    target: Target,
    kept: bool,
) -> Result<Vec<(String, Out<'a>)>, GenError> {
    let mut outs = Vec::new();
    let at = |e: candle_core::Error| fail(shard, format!("{name}: {e}"));
    let scales = format!("{name}_scale_inv");
    let stored_fp8 = view.dtype() == StDtype::F8_E4M3 && all.get(&scales).is_ok();
    let target = match target {
        Target::Fp8 if kept && (stored_fp8 || name.ends_with("_scale_inv")) => Target::Dense(DType::F32),
        Target::Fp8 if kept => return Ok(vec![(name, Out::Same(view))]),
        t => t,
    };
    if name.ends_with("_scale_inv") {
        // Written beside their weight, or dropped with it dequantized.
        if target == Target::Fp8 {
            outs.push((name.clone(), Out::Same(view)));
        }
        return Ok(outs);
    }
    match target {
        Target::Fp8 if stored_fp8 => outs.push((name.clone(), Out::Same(view))),
        Target::Fp8 if is_projection(&name) && view.shape().len() == 2 => {
            let (rows, cols) = (view.shape()[0], view.shape()[1]);
            let w = all.load(&name, &Device::Cpu).and_then(|t| t.to_dtype(DType::F32)).map_err(at)?;
            let v = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(at)?;
            let q = super::fp8::BlockFp8::quantize(&v, rows, cols).map_err(|e| fail(shard, format!("{name}: {e}")))?;
            let (rb, cb) = (q.row_blocks(), q.col_blocks());
            let scale_bytes: Vec<u8> = q.scale_inv.iter().flat_map(|f| f.to_le_bytes()).collect();
            outs.push((scales, Out::Raw { dtype: StDtype::F32, shape: vec![rb, cb], data: scale_bytes }));
            outs.push((name.clone(), Out::Raw { dtype: StDtype::F8_E4M3, shape: vec![rows, cols], data: q.data }));
        }
        Target::Fp8 => outs.push((name.clone(), Out::Same(view))),
        Target::Dense(dtype) if stored_fp8 => {
            let (rows, cols) = (view.shape()[0], view.shape()[1]);
            let q = all.load(&name, &Device::Cpu).map_err(at)?;
            let bytes: Vec<u8> = q
                .flatten_all()
                .and_then(|t| t.to_vec1::<float8::F8E4M3>())
                .map_err(at)?
                .iter()
                .map(|b| b.to_bits())
                .collect();
            let s = all
                .load(&scales, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>())
                .map_err(at)?;
            let w = super::fp8::BlockFp8::from_parts(rows, cols, bytes, s)
                .map_err(|e| fail(shard, format!("{name}: {e}")))?;
            let t = Tensor::from_vec(w.dequantize(), (rows, cols), &Device::Cpu)
                .and_then(|t| t.to_dtype(dtype))
                .map_err(at)?;
            outs.push((name.clone(), Out::Computed(t)));
        }
        Target::Dense(dtype) if matches!(view.dtype(), StDtype::F32 | StDtype::F16 | StDtype::BF16 | StDtype::F64) => {
            let t = all.load(&name, &Device::Cpu).and_then(|t| t.to_dtype(dtype)).map_err(at)?;
            outs.push((name.clone(), Out::Computed(t)));
        }
        Target::Dense(_) => outs.push((name.clone(), Out::Same(view))),
    }
    Ok(outs)
}

/// Writes the first `layers` blocks of the GGUF model `src`, with everything outside the blocks
/// (embeddings, final norm, output, tokenizer and the rest of the metadata), as the GGUF file
/// `dst`: a smaller model of the same family.
pub fn gguf_first_layers(src: &Path, dst: &Path, layers: usize) -> Result<Config, GenError> {
    let (ct, mut f) = read_gguf(src).map_err(|e| fail(src, e))?;
    let cfg = config_from_gguf(&ct).map_err(|e| fail(src, e))?;
    if layers == 0 || layers > cfg.layers {
        return Err(fail(src, format!("cannot keep {layers} of its {} layers", cfg.layers)));
    }
    let count_key = format!("{}.block_count", cfg.arch);
    let count = candle_core::quantized::gguf_file::Value::U32(layers as u32);
    let mut keys: Vec<&String> = ct.metadata.keys().collect();
    keys.sort();
    let metadata: Vec<(&str, &candle_core::quantized::gguf_file::Value)> =
        keys.into_iter().map(|k| (k.as_str(), if *k == count_key { &count } else { &ct.metadata[k] })).collect();
    let kept = |name: &str| match name.strip_prefix("blk.").and_then(|r| r.split('.').next()) {
        Some(i) => i.parse::<usize>().is_ok_and(|i| i < layers),
        None => true,
    };
    let mut names: Vec<&String> = ct.tensor_infos.keys().filter(|n| kept(n)).collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = ct.tensor(&mut f, name, &Device::Cpu).map_err(|e| fail(src, format!("{name}: {e}")))?;
        tensors.push((name.as_str(), t));
    }
    let refs: Vec<(&str, &candle_core::quantized::QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst).map_err(|e| fail(dst, e))?);
    candle_core::quantized::gguf_file::write(&mut out, &metadata, &refs).map_err(|e| fail(dst, e))?;
    std::io::Write::flush(&mut out).map_err(|e| fail(dst, e))?;
    Ok(Config { layers, ..cfg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hugging_face_names() {
        assert_eq!(hf_name("blk.3.attn_q.weight").as_deref(), Some("model.layers.3.self_attn.q_proj.weight"));
        assert_eq!(hf_name("blk.0.ffn_down.weight").as_deref(), Some("model.layers.0.mlp.down_proj.weight"));
        assert_eq!(hf_name("blk.1.attn_k.bias").as_deref(), Some("model.layers.1.self_attn.k_proj.bias"));
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_row_order() {
        // 1 head of dim 4, one input column: HF rows [a0, a1, b0, b1] (halves a, b) are stored by
        // llama.cpp interleaved as [a0, b0, a1, b1].
        let gguf = Tensor::new(&[[0f32], [2.], [1.], [3.]], &Device::Cpu).unwrap();
        let hf = unpermute(&gguf, 1).unwrap();
        assert_eq!(hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 2., 3.]);
    }
}
