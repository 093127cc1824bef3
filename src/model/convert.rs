//! Model file conversions for comparing devices: a GGUF model rewritten as a Hugging Face
//! directory with dense weights (`config.json`, `tokenizer.json`, `tokenizer_config.json`,
//! `model.safetensors`), and a GGUF model cut to its first layers.
//!
//! Why: the CPU's quantized kernels round activations to 8 bits and a GPU's do not, so one GGUF
//! file does not compute the same numbers on both devices; its dequantized weights can
//! (`benchmarks/gpu_parity` compares greedy output across devices on them). A cut model is small
//! enough to move to a GPU machine with a transfer limit (`examples/gguf_cut.rs`).

use std::collections::HashMap;
use std::path::Path;

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
