//! Making a `Model` from files: GGUF (quantized weights, `QMatMul`), a Hugging Face directory
//! (`config.json` and safetensors shards; dense, or FP8 with `weight_scale_inv` blocks), or random
//! weights at a given shape for benchmarks; and reading either kind of configuration.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Result, Tensor};
use serde_json::Value;

use super::fp8::BlockFp8;
#[cfg(feature = "cuda")]
use super::linear::DeviceFp8;
use super::llama::{Config, Layer, Linear, Mlp, Model, RopeScaling};

impl Model {
    /// Loads a GGUF model (`general.architecture` llama, mistral, qwen2 or qwen3).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        device: &Device,
        dtype: DType,
    ) -> Result<Model> {
        let cfg = config_from_gguf(ct)?;
        let embed_q = ct.tensor(r, "token_embd.weight", device)?;
        let embed = embed_q.dequantize(device)?.to_dtype(dtype)?;
        let vocab = embed.dim(0)?;
        let lm_head = if ct.tensor_infos.contains_key("output.weight") {
            Linear::Quantized(QMatMul::from_qtensor(ct.tensor(r, "output.weight", device)?)?, None)
        } else {
            Linear::Quantized(QMatMul::from_qtensor(embed_q)?, None)
        };
        let norm = ct.tensor(r, "output_norm.weight", device)?.dequantize(device)?.to_dtype(dtype)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let name = |n: &str| format!("blk.{i}.{n}");
            let has = |n: &str| ct.tensor_infos.contains_key(&name(n));
            let mut dense =
                |n: &str| -> Result<Tensor> { ct.tensor(r, &name(n), device)?.dequantize(device)?.to_dtype(dtype) };
            let attn_norm = dense("attn_norm.weight")?;
            let ffn_norm = dense("ffn_norm.weight")?;
            let mut bias = |n: &str| -> Result<Option<Tensor>> {
                if has(&format!("{n}.bias")) {
                    dense(&format!("{n}.bias")).map(Some)
                } else {
                    Ok(None)
                }
            };
            let (qb, kb, vb) = (bias("attn_q")?, bias("attn_k")?, bias("attn_v")?);
            let (q_norm, k_norm) = if has("attn_q_norm.weight") {
                (Some(dense("attn_q_norm.weight")?), Some(dense("attn_k_norm.weight")?))
            } else {
                (None, None)
            };
            let mut lin = |n: &str, b: Option<Tensor>| -> Result<Linear> {
                Ok(Linear::Quantized(QMatMul::from_qtensor(ct.tensor(r, &name(&format!("{n}.weight")), device)?)?, b))
            };
            layers.push(Layer {
                attn_norm,
                qkv: None,
                q: lin("attn_q", qb)?,
                k: lin("attn_k", kb)?,
                v: lin("attn_v", vb)?,
                o: lin("attn_output", None)?,
                q_norm,
                k_norm,
                ffn_norm,
                mlp: Mlp::Split { gate: lin("ffn_gate", None)?, up: lin("ffn_up", None)? },
                down: lin("ffn_down", None)?,
                q_scaled: false,
            });
        }
        Model::assemble(Config { vocab, ..cfg }, embed, layers, norm, lm_head, dtype, device)
    }

    /// Loads a Hugging Face model directory: `config.json` and `*.safetensors`.
    /// With `WeightFormat::Fp8` (or `true`), the projections are held in E4M3 with 128×128 block
    /// factors (quantized here unless the checkpoint already holds them so), but for the layers
    /// and modules kept dense; with `Dense`, an FP8 checkpoint is dequantized.
    pub fn from_safetensors(
        dir: &Path,
        device: &Device,
        dtype: DType,
        format: impl Into<WeightFormat>,
    ) -> Result<Model> {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", dir.join("config.json").display())))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| candle_core::Error::Msg(format!("config.json: {e}")))?;
        let cfg = config_from_hf(&json)?;
        check_quantization(&json)?;
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Model::from_var_builder(cfg, &json, vb, device, dtype, format.into())
    }

    /// A Llama-shaped model of `cfg` with random weights (normal, std 0.02; norms 1), made on the
    /// device without files: for benchmarks at a shape whose weights cannot be had.
    pub fn random(cfg: Config, device: &Device, dtype: DType) -> Result<Model> {
        let weights = Model::random_weights(&cfg, device, dtype)?;
        Model::from_weights(cfg, weights, device, dtype, WeightFormat::Dense)
    }

    /// The model `weights` (Hugging Face names) hold, its projections as `format` says. Two
    /// models made from one set of weights (dense and FP8) share the tensors they both keep.
    pub fn from_weights(
        cfg: Config,
        weights: std::collections::HashMap<String, Tensor>,
        device: &Device,
        dtype: DType,
        format: impl Into<WeightFormat>,
    ) -> Result<Model> {
        let vb = candle_nn::VarBuilder::from_tensors(weights, dtype, device);
        Model::from_var_builder(cfg, &Value::Null, vb, device, dtype, format.into())
    }

    /// Random weights of `cfg`'s shape, as `Model::random` uses them.
    pub fn random_weights(
        cfg: &Config,
        device: &Device,
        dtype: DType,
    ) -> Result<std::collections::HashMap<String, Tensor>> {
        let mut t: std::collections::HashMap<String, Tensor> = std::collections::HashMap::new();
        let rand = |shape: (usize, usize)| Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype);
        let ones = |n: usize| Tensor::ones(n, dtype, device);
        let (h, hd, kvh) = (cfg.hidden, cfg.head_dim, cfg.kv_heads);
        t.insert("model.embed_tokens.weight".into(), rand((cfg.vocab, h))?);
        t.insert("lm_head.weight".into(), rand((cfg.vocab, h))?);
        t.insert("model.norm.weight".into(), ones(h)?);
        for l in 0..cfg.layers {
            let p = format!("model.layers.{l}");
            for (name, shape) in [
                ("self_attn.q_proj", (cfg.heads * hd, h)),
                ("self_attn.k_proj", (kvh * hd, h)),
                ("self_attn.v_proj", (kvh * hd, h)),
                ("self_attn.o_proj", (h, cfg.heads * hd)),
                ("mlp.gate_proj", (cfg.intermediate, h)),
                ("mlp.up_proj", (cfg.intermediate, h)),
                ("mlp.down_proj", (h, cfg.intermediate)),
            ] {
                t.insert(format!("{p}.{name}.weight"), rand(shape)?);
            }
            t.insert(format!("{p}.input_layernorm.weight"), ones(h)?);
            t.insert(format!("{p}.post_attention_layernorm.weight"), ones(h)?);
        }
        Ok(t)
    }

    /// The model `vb` holds, laid out as Hugging Face names it (`json`: its config.json), its
    /// projections as `format` says.
    fn from_var_builder(
        cfg: Config,
        json: &Value,
        vb: candle_nn::VarBuilder,
        device: &Device,
        dtype: DType,
        format: WeightFormat,
    ) -> Result<Model> {
        let tie = json.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
        let fp8 = format != WeightFormat::Dense;
        // What stays dense under FP8: the modules the checkpoint left unconverted, and the layers
        // the caller names.
        let mut keep_dense = modules_not_converted(json);
        if let WeightFormat::Fp8 { dense_layers } = &format {
            keep_dense.extend(
                super::fp8::resolve_layers(dense_layers, cfg.layers)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?
                    .into_iter()
                    .map(layer_module),
            );
        }
        let l = HfLoader {
            // FP8 on CUDA: the kernels that read the bytes, shared by every projection.
            #[cfg(feature = "cuda")]
            fp8_kernels: match (fp8, device.is_cuda()) {
                (true, true) => Some(Arc::new(super::fused::Kernels::load(device, dtype)?.ok_or_else(|| {
                    candle_core::Error::Msg(format!("FP8 weights on CUDA take bf16 or f16 activations, not {dtype:?}"))
                })?)),
                _ => None,
            },
            qkv_bias: cfg.arch == "qwen2" || json.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            o_bias: cfg.arch != "qwen2" && json.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            cfg,
            vb,
            device,
            dtype,
            fp8,
            keep_dense,
        };
        let embed = l.dense("model.embed_tokens.weight", l.cfg.vocab, l.cfg.hidden)?;
        let vocab = embed.dim(0)?;
        let layers = (0..l.cfg.layers).map(|i| l.layer(i)).collect::<Result<Vec<_>>>()?;
        let norm = l.vb.get(l.cfg.hidden, "model.norm.weight")?;
        // The output projection stays dense (as DeepSeek's FP8 releases keep it).
        let lm_head = if tie || !l.vb.contains_tensor("lm_head.weight") {
            Linear::Dense(candle_nn::Linear::new(embed.clone(), None))
        } else {
            Linear::Dense(candle_nn::Linear::new(l.dense("lm_head.weight", vocab, l.cfg.hidden)?, None))
        };
        let HfLoader { cfg, .. } = l;
        Model::assemble(Config { vocab, ..cfg }, embed, layers, norm, lm_head, dtype, device)
    }
}

/// Reads one Hugging Face checkpoint's tensors into layers: dense in `dtype`, or with `fp8` the
/// projections in E4M3 (on the CPU, or on CUDA through `fp8_kernels`).
struct HfLoader<'a> {
    cfg: Config,
    vb: candle_nn::VarBuilder<'a>,
    device: &'a Device,
    dtype: DType,
    fp8: bool,
    /// Module-name parts whose projections stay dense under `fp8` (Hugging Face's
    /// `modules_to_not_convert`: a projection is kept when its name contains one).
    keep_dense: Vec<String>,
    qkv_bias: bool,
    o_bias: bool,
    #[cfg(feature = "cuda")]
    fp8_kernels: Option<Arc<super::fused::Kernels>>,
}

impl HfLoader<'_> {
    /// Whether the projection (or layer prefix) `name` is held in E4M3.
    fn in_fp8(&self, name: &str) -> bool {
        self.fp8 && !self.keep_dense.iter().any(|k| name.contains(k.as_str()))
    }

    fn dense(&self, name: &str, out: usize, inp: usize) -> Result<Tensor> {
        read_weight(&self.vb, name, (out, inp))?.dense(self.dtype, self.device)
    }

    fn bias(&self, name: &str, out: usize, on: bool) -> Result<Option<Tensor>> {
        if on {
            Ok(Some(self.vb.get(out, &format!("{name}.bias"))?))
        } else {
            Ok(None)
        }
    }

    /// Projection `name`'s bias (where `with_bias`), times `scale`.
    fn scaled_bias(&self, name: &str, out: usize, with_bias: bool, scale: Option<f64>) -> Result<Option<Tensor>> {
        let b = self.bias(name, out, with_bias)?;
        match scale {
            Some(f) => b.map(|b| b * f).transpose(),
            None => Ok(b),
        }
    }

    /// Projection `name`'s weight in E4M3 (quantized here unless stored so), times `scale`.
    fn fp8_weight(&self, name: &str, out: usize, inp: usize, scale: Option<f64>) -> Result<BlockFp8> {
        let mut w = read_weight(&self.vb, &format!("{name}.weight"), (out, inp))?.fp8(name)?;
        if let Some(f) = scale {
            w.scale(f as f32);
        }
        Ok(w)
    }

    /// A projection in the chosen format; `scale` folds a constant into its weight and bias.
    fn lin(&self, name: &str, out: usize, inp: usize, with_bias: bool, scale: Option<f64>) -> Result<Linear> {
        let b = self.scaled_bias(name, out, with_bias, scale)?;
        if self.in_fp8(name) {
            let w = self.fp8_weight(name, out, inp, scale)?;
            #[cfg(feature = "cuda")]
            if let Some(k) = &self.fp8_kernels {
                return Ok(Linear::Fp8Cuda(Arc::new(DeviceFp8::upload(w, self.device, k.clone())?), b));
            }
            return Ok(Linear::Fp8(Arc::new(w), b));
        }
        let w = self.dense(&format!("{name}.weight"), out, inp)?;
        let w = match scale {
            Some(f) => (w * f)?,
            None => w,
        };
        Ok(Linear::Dense(candle_nn::Linear::new(w, b)))
    }

    /// Layer `i`.
    fn layer(&self, i: usize) -> Result<Layer> {
        let cfg = &self.cfg;
        let p = format!("model.layers.{i}");
        let qk_norm = cfg.arch == "qwen3";
        // Without q/k norms the attention scale can live in q's weights (a norm would undo it).
        let q_scale = (!qk_norm).then(|| 1.0 / (cfg.head_dim as f64).sqrt());
        let attn = |name: &str| format!("{p}.self_attn.{name}");
        // A layer kept dense whole gets the dense layout (fused q/k/v and gate/up); one with
        // some projections kept dense gets FP8's separate ones, each in its own format.
        let (qkv, q, k, v, mlp) = if self.in_fp8(&layer_module(i)) {
            self.fp8_projections(&p, q_scale)?
        } else {
            self.fused_projections(&p, q_scale)?
        };
        Ok(Layer {
            attn_norm: self.vb.get(cfg.hidden, &format!("{p}.input_layernorm.weight"))?,
            qkv,
            q,
            q_scaled: !qk_norm,
            k,
            v,
            o: self.lin(&attn("o_proj"), cfg.hidden, cfg.heads * cfg.head_dim, self.o_bias, None)?,
            q_norm: if qk_norm { Some(self.vb.get(cfg.head_dim, &attn("q_norm.weight"))?) } else { None },
            k_norm: if qk_norm { Some(self.vb.get(cfg.head_dim, &attn("k_norm.weight"))?) } else { None },
            ffn_norm: self.vb.get(cfg.hidden, &format!("{p}.post_attention_layernorm.weight"))?,
            mlp,
            down: self.lin(&format!("{p}.mlp.down_proj"), cfg.hidden, cfg.intermediate, false, None)?,
        })
    }

    /// FP8: separate projections, except on CUDA where every part's rows are whole 128-row blocks
    /// (so no block of factors straddles two parts): there q/k/v and gate/up are each one matrix,
    /// q, k and v views of it, as with dense weights, so that a decode step projects each with one
    /// launch and the norm-fused kernels take them.
    fn fp8_projections(&self, p: &str, q_scale: Option<f64>) -> Result<Projections> {
        let (cfg, hd) = (&self.cfg, self.cfg.head_dim);
        let attn = |name: &str| format!("{p}.self_attn.{name}");
        let qkv_parts = [
            (attn("q_proj"), cfg.heads * hd, q_scale),
            (attn("k_proj"), cfg.kv_heads * hd, None),
            (attn("v_proj"), cfg.kv_heads * hd, None),
        ];
        let mlp_parts = [
            (format!("{p}.mlp.gate_proj"), cfg.intermediate, None),
            (format!("{p}.mlp.up_proj"), cfg.intermediate, None),
        ];
        let (qkv, q, k, v) = match self.fp8_fused(&qkv_parts, self.qkv_bias)? {
            Some((qkv, parts)) => {
                let [q, k, v]: [Linear; 3] =
                    parts.try_into().map_err(|_| candle_core::Error::Msg("three views of q/k/v".into()))?;
                (Some(qkv), q, k, v)
            }
            None => {
                let [q, k, v] = qkv_parts.map(|(name, out, f)| self.lin(&name, out, cfg.hidden, self.qkv_bias, f));
                (None, q?, k?, v?)
            }
        };
        let mlp = match self.fp8_fused(&mlp_parts, false)? {
            Some((gate_up, _)) => Mlp::Fused(gate_up),
            None => {
                let [gate, up] = mlp_parts.map(|(name, out, _)| self.lin(&name, out, cfg.hidden, false, None));
                Mlp::Split { gate: gate?, up: up? }
            }
        };
        Ok((qkv, q, k, v, mlp))
    }

    /// The projections `parts` (name, output rows, a factor folded into the weight and bias) of
    /// the hidden state as one FP8 matrix on the device, and each part as a view of it; `None`
    /// off CUDA, where a part stays dense, or where a part's rows are not whole 128-row blocks.
    fn fp8_fused(
        &self,
        parts: &[(String, usize, Option<f64>)],
        with_bias: bool,
    ) -> Result<Option<(Linear, Vec<Linear>)>> {
        #[cfg(feature = "cuda")]
        {
            let block = super::fp8::BLOCK;
            let Some(kernels) = &self.fp8_kernels else { return Ok(None) };
            if !parts.iter().all(|(name, out, _)| self.in_fp8(name) && out % block == 0) {
                return Ok(None);
            }
            let inp = self.cfg.hidden;
            let (mut data, mut scale_inv, mut biases) = (Vec::new(), Vec::new(), Vec::new());
            for (name, out, f) in parts {
                let mut w = self.fp8_weight(name, *out, inp, *f)?;
                data.append(&mut w.data);
                scale_inv.append(&mut w.scale_inv);
                biases.extend(self.scaled_bias(name, *out, with_bias, *f)?);
            }
            let rows = parts.iter().map(|p| p.1).sum();
            let w =
                BlockFp8::from_parts(rows, inp, data, scale_inv).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let fused = DeviceFp8::upload(w, self.device, kernels.clone())?;
            let bias = if biases.is_empty() { None } else { Some(Tensor::cat(&biases, 0)?) };
            let mut views = Vec::with_capacity(parts.len());
            let mut at = 0;
            for (_, out, _) in parts {
                let b = bias.as_ref().map(|b| b.narrow(0, at, *out)).transpose()?;
                views.push(Linear::Fp8Cuda(Arc::new(fused.rows(at, *out)?), b));
                at += out;
            }
            Ok(Some((Linear::Fp8Cuda(Arc::new(fused), bias), views)))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (parts, with_bias);
            Ok(None)
        }
    }

    /// Dense: q, k and v as one matrix (one GEMM; q, k and v are views of it), gate and up as one.
    fn fused_projections(&self, p: &str, q_scale: Option<f64>) -> Result<Projections> {
        let (cfg, hd) = (&self.cfg, self.cfg.head_dim);
        let attn = |name: &str| format!("{p}.self_attn.{name}");
        let part = |name: &str, out: usize| -> Result<(Tensor, Option<Tensor>)> {
            Ok((
                self.dense(&format!("{}.weight", attn(name)), out, cfg.hidden)?,
                self.bias(&attn(name), out, self.qkv_bias)?,
            ))
        };
        let (qw, qb) = part("q_proj", cfg.heads * hd)?;
        let (qw, qb) = match q_scale {
            None => (qw, qb),
            Some(f) => ((qw * f)?, qb.map(|b| b * f).transpose()?),
        };
        let (kw, kb) = part("k_proj", cfg.kv_heads * hd)?;
        let (vw, vb_) = part("v_proj", cfg.kv_heads * hd)?;
        let qkv_w = Tensor::cat(&[&qw, &kw, &vw], 0)?;
        let qkv_b = match (qb, kb, vb_) {
            (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[&q, &k, &v], 0)?),
            _ => None,
        };
        drop((qw, kw, vw));
        let view = |off: usize, n: usize| -> Result<Linear> {
            let b = qkv_b.as_ref().map(|b| b.narrow(0, off, n)).transpose()?;
            Ok(Linear::Dense(candle_nn::Linear::new(qkv_w.narrow(0, off, n)?, b)))
        };
        let (h, kvh) = (cfg.heads * hd, cfg.kv_heads * hd);
        let (q, k, v) = (view(0, h)?, view(h, kvh)?, view(h + kvh, kvh)?);
        let qkv = Linear::Dense(candle_nn::Linear::new(qkv_w.clone(), qkv_b.clone()));
        let gate = self.dense(&format!("{p}.mlp.gate_proj.weight"), cfg.intermediate, cfg.hidden)?;
        let up = self.dense(&format!("{p}.mlp.up_proj.weight"), cfg.intermediate, cfg.hidden)?;
        let gate_up = Tensor::cat(&[&gate, &up], 0)?;
        Ok((Some(qkv), q, k, v, Mlp::Fused(Linear::Dense(candle_nn::Linear::new(gate_up, None)))))
    }
}

/// How a model's layer projections are held (embeddings, norms and the output projection stay
/// dense either way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WeightFormat {
    #[default]
    Dense,
    /// E4M3 with 128×128 block factors, except in the layers `dense_layers` names (indices,
    /// negative ones counted from the end: `-1` is the last) and in any module the checkpoint's
    /// `quantization_config.modules_to_not_convert` names.
    Fp8 { dense_layers: Vec<i64> },
}

impl From<bool> for WeightFormat {
    /// `true`: every layer in FP8.
    fn from(fp8: bool) -> WeightFormat {
        if fp8 {
            WeightFormat::Fp8 { dense_layers: Vec::new() }
        } else {
            WeightFormat::Dense
        }
    }
}

/// Layer `i`'s name prefix, as `modules_to_not_convert` lists it: the trailing dot keeps layer 1
/// from matching layer 10.
pub fn layer_module(i: usize) -> String {
    format!("model.layers.{i}.")
}

/// `quantization_config.modules_to_not_convert`: the modules an FP8 checkpoint holds dense.
fn modules_not_converted(json: &Value) -> Vec<String> {
    json.pointer("/quantization_config/modules_to_not_convert")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// A layer's attention and MLP input projections: the fused q/k/v matrix (dense, or FP8 on CUDA
/// where its parts are whole blocks), q, k, v, and the MLP's gate and up.
type Projections = (Option<Linear>, Linear, Linear, Linear, Mlp);

/// A projection weight as the checkpoint holds it.
enum Weight {
    Dense(Tensor),
    Fp8(BlockFp8),
}

/// Weight `name` of `shape`: E4M3 with its `{name}_scale_inv` block factors when the checkpoint
/// has them (DeepSeek's FP8 layout), else dense.
fn read_weight(vb: &candle_nn::VarBuilder, name: &str, (out, inp): (usize, usize)) -> Result<Weight> {
    let scales = format!("{name}_scale_inv");
    if !vb.contains_tensor(&scales) {
        return Ok(Weight::Dense(vb.get((out, inp), name)?));
    }
    let zero = candle_nn::Init::Const(0.0);
    let q = vb.get_with_hints_dtype((out, inp), name, zero, DType::F8E4M3)?;
    let bytes: Vec<u8> = q.flatten_all()?.to_vec1::<float8::F8E4M3>()?.iter().map(|b| b.to_bits()).collect();
    let blocks = (out.div_ceil(super::fp8::BLOCK), inp.div_ceil(super::fp8::BLOCK));
    let s = vb.get_with_hints_dtype(blocks, &scales, zero, DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let w = BlockFp8::from_parts(out, inp, bytes, s).map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))?;
    Ok(Weight::Fp8(w))
}

impl Weight {
    fn dense(self, dtype: DType, device: &Device) -> Result<Tensor> {
        match self {
            Weight::Dense(t) => Ok(t),
            Weight::Fp8(w) => Tensor::from_vec(w.dequantize(), (w.rows, w.cols), device)?.to_dtype(dtype),
        }
    }

    fn fp8(self, name: &str) -> Result<BlockFp8> {
        match self {
            Weight::Fp8(w) => Ok(w),
            Weight::Dense(t) => {
                let (rows, cols) = t.dims2()?;
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                BlockFp8::quantize(&v, rows, cols).map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))
            }
        }
    }
}

/// Refuses a `quantization_config` this loader would misread: only FP8 E4M3 with 128×128
/// blocks and dynamic activation scales (DeepSeek's layout) is known.
fn check_quantization(json: &Value) -> Result<()> {
    let Some(q) = json.get("quantization_config") else { return Ok(()) };
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    let fmt = q.get("fmt").and_then(Value::as_str).unwrap_or("e4m3");
    let block: Option<Vec<u64>> =
        q.get("weight_block_size").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect());
    let bs = super::fp8::BLOCK as u64;
    if method != "fp8" || fmt != "e4m3" || block.as_deref() != Some(&[bs, bs][..]) {
        candle_core::bail!(
            "quantization_config {q}: only quant_method fp8, fmt e4m3, weight_block_size [128, 128] is supported"
        );
    }
    Ok(())
}

/// `model.safetensors`, or the shards listed by `model.safetensors.index.json`.
fn safetensors_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let files = super::hub::shards(&index).map_err(candle_core::Error::Msg)?;
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    candle_core::bail!("{} holds no model.safetensors or model.safetensors.index.json", dir.display())
}

/// The decoder configuration from a GGUF file's metadata.
pub fn config_from_gguf(ct: &gguf_file::Content) -> Result<Config> {
    let md = &ct.metadata;
    let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2" | "qwen3") {
        candle_core::bail!("GGUF architecture {arch:?} is not supported (llama, mistral, qwen2, qwen3 are)");
    }
    let get = |k: &str| md.get(&format!("{arch}.{k}"));
    let req = |k: &str| -> Result<usize> {
        get(k)
            .ok_or_else(|| candle_core::Error::Msg(format!("GGUF metadata lacks {arch}.{k}")))?
            .to_u32()
            .map(|v| v as usize)
    };
    let hidden = req("embedding_length")?;
    let heads = req("attention.head_count")?;
    let scaling = match get("rope.scaling.type").and_then(|v| v.to_string().ok()).map(String::as_str) {
        Some("linear") => {
            get("rope.scaling.factor").and_then(|v| v.to_f32().ok()).map(|f| RopeScaling::Linear { factor: f as f64 })
        }
        Some("yarn") => {
            let factor = get("rope.scaling.factor").and_then(|v| v.to_f32().ok()).unwrap_or(1.0) as f64;
            let original_max =
                get("rope.scaling.original_context_length").and_then(|v| v.to_u32().ok()).unwrap_or(4096) as f64;
            Some(RopeScaling::Yarn {
                factor,
                original_max,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: 0.1 * factor.ln() + 1.0,
            })
        }
        _ => None,
    };
    let vocab = ct.tensor_infos.get("token_embd.weight").map_or(0, |t| t.shape.dims()[0]);
    Ok(Config {
        arch: arch.clone(),
        hidden,
        layers: req("block_count")?,
        heads,
        kv_heads: get("attention.head_count_kv").and_then(|v| v.to_u32().ok()).map_or(heads, |v| v as usize),
        head_dim: get("attention.key_length").and_then(|v| v.to_u32().ok()).map_or(hidden / heads, |v| v as usize),
        intermediate: req("feed_forward_length")?,
        rms_eps: get("attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().ok()).unwrap_or(1e-5) as f64,
        rope_theta: get("rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0) as f64,
        rope_interleaved: matches!(arch.as_str(), "llama" | "mistral"),
        rope_scaling: scaling,
        max_positions: get("context_length").and_then(|v| v.to_u32().ok()).unwrap_or(4096) as usize,
        vocab,
    })
}

/// The decoder configuration from a Hugging Face `config.json`.
pub fn config_from_hf(json: &Value) -> Result<Config> {
    let arch = json.get("model_type").and_then(Value::as_str).unwrap_or("llama").to_string();
    if !matches!(arch.as_str(), "llama" | "mistral" | "qwen2" | "qwen3") {
        candle_core::bail!("model_type {arch:?} is not supported (llama, mistral, qwen2, qwen3 are)");
    }
    let n = |k: &str| json.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let f = |k: &str| json.get(k).and_then(Value::as_f64);
    let req = |k: &str| n(k).ok_or_else(|| candle_core::Error::Msg(format!("config.json lacks {k}")));
    let hidden = req("hidden_size")?;
    let heads = req("num_attention_heads")?;
    let rope_scaling = match json.get("rope_scaling").filter(|v| !v.is_null()) {
        None => None,
        Some(s) => {
            let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
            let sf = |k: &str| s.get(k).and_then(Value::as_f64);
            let factor = sf("factor").unwrap_or(1.0);
            let original_max =
                sf("original_max_position_embeddings").or_else(|| f("max_position_embeddings")).unwrap_or(4096.0);
            match kind {
                "default" => None,
                "linear" => Some(RopeScaling::Linear { factor }),
                "llama3" => Some(RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: sf("low_freq_factor").unwrap_or(1.0),
                    high_freq_factor: sf("high_freq_factor").unwrap_or(4.0),
                    original_max,
                }),
                "yarn" => {
                    let mscale = |m: f64| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
                    let attention_factor = match (sf("attention_factor"), sf("mscale"), sf("mscale_all_dim")) {
                        (Some(a), _, _) => a,
                        (None, Some(m), Some(all)) => mscale(m) / mscale(all),
                        _ => mscale(1.0),
                    };
                    Some(RopeScaling::Yarn {
                        factor,
                        original_max,
                        beta_fast: sf("beta_fast").unwrap_or(32.0),
                        beta_slow: sf("beta_slow").unwrap_or(1.0),
                        attention_factor,
                    })
                }
                other => candle_core::bail!("rope_scaling type {other:?} is not supported (linear, llama3, yarn are)"),
            }
        }
    };
    Ok(Config {
        arch,
        hidden,
        layers: req("num_hidden_layers")?,
        heads,
        kv_heads: n("num_key_value_heads").unwrap_or(heads),
        head_dim: n("head_dim").unwrap_or(hidden / heads),
        intermediate: req("intermediate_size")?,
        rms_eps: f("rms_norm_eps").unwrap_or(1e-6),
        rope_theta: f("rope_theta").unwrap_or(10_000.0),
        rope_interleaved: false,
        rope_scaling,
        max_positions: n("max_position_embeddings").unwrap_or(4096),
        vocab: req("vocab_size")?,
    })
}

/// Metadata of a GGUF file, for callers that only need it (tokenizer, description).
pub fn read_gguf(path: &Path) -> Result<(gguf_file::Content, std::fs::File)> {
    let mut f = std::fs::File::open(path).map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    let ct =
        gguf_file::Content::read(&mut f).map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
    Ok((ct, f))
}
