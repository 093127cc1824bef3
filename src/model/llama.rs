//! The Llama-family decoder the prover models ship in: Llama (DeepSeek-Prover-V1.5/V2-7B),
//! Mistral, Qwen2 (q/k/v biases) and Qwen3 (per-head q/k RMS norms), from GGUF (quantized
//! weights, `QMatMul`) or Hugging Face safetensors (dense weights).
//!
//! Written here rather than taken from candle-transformers because the KV cache must be ours:
//! pass@k decodes `n` samples of one prompt as one batch after a single prefill, which needs the
//! cache copied across the batch after prefill and rows dropped as samples finish.
//!
//! RoPE: llama.cpp stores Llama's q/k weights permuted for interleaved rotation (`rope_i`);
//! Qwen GGUFs and all safetensors use the half-split rotation (`rope`).

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use serde_json::Value;

use super::fp8::BlockFp8;

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Linear { factor: f64 },
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max: f64 },
    Yarn { factor: f64, original_max: f64, beta_fast: f64, beta_slow: f64, attention_factor: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub rope_interleaved: bool,
    pub rope_scaling: Option<RopeScaling>,
    pub max_positions: usize,
    pub vocab: usize,
}

/// A projection: quantized (GGUF) or dense (safetensors), with an optional bias.
pub(super) enum Linear {
    Quantized(QMatMul, Option<Tensor>),
    Dense(candle_nn::Linear),
    /// E4M3 with 128×128 block factors (`--dtype fp8`, or an FP8 checkpoint), on the CPU.
    Fp8(Arc<BlockFp8>, Option<Tensor>),
}

impl Linear {
    /// The weight of a dense projection without bias (what the fused few-row kernels take).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(super) fn plain_weight(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense(l) if l.bias().is_none() => Some(l.weight()),
            _ => None,
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Quantized(w, b) => {
                let y = w.forward(x)?;
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            // One GEMM over all rows: candle_nn's Linear broadcasts the weight over the batch, which
            // makes a batch of `b` one-row products (the weight read once per row) in decoding.
            Linear::Fp8(w, b) => {
                if !x.device().is_cpu() {
                    candle_core::bail!("FP8 weights run on the CPU only in this build");
                }
                let dims = x.dims().to_vec();
                let n = x.elem_count() / w.cols.max(1);
                let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let y = if n <= super::fp8::DIRECT_ROWS {
                    Tensor::from_vec(w.matmul_t(&xs, n), (n, w.rows), x.device())?
                } else {
                    let dense = Tensor::from_vec(w.dequantize(), (w.rows, w.cols), x.device())?;
                    Tensor::from_vec(xs, (n, w.cols), x.device())?.matmul(&dense.t()?)?
                };
                let y = match b {
                    Some(b) => y.broadcast_add(&b.to_dtype(DType::F32)?)?,
                    None => y,
                };
                let mut shape = dims[..dims.len() - 1].to_vec();
                shape.push(w.rows);
                y.to_dtype(x.dtype())?.reshape(shape)
            }
            Linear::Dense(l) => match x.dims() {
                &[b, t, i] => {
                    let y = x.reshape((b * t, i))?.matmul(&l.weight().t()?)?;
                    let y = match l.bias() {
                        Some(bias) => y.broadcast_add(bias)?,
                        None => y,
                    };
                    y.reshape((b, t, ()))
                }
                _ => l.forward(x),
            },
        }
    }
}

/// A projection of a fused decode step's rows: the few-row kernel for dense weights without bias,
/// else the projection's own path.
#[cfg(feature = "cuda")]
pub(super) fn project(k: &super::fused::Kernels, l: &Linear, x: &Tensor) -> Result<Tensor> {
    if let Some(w) = l.plain_weight() {
        if let Some(y) = k.gemv(x, w, None)? {
            return Ok(y);
        }
    }
    l.forward(x)
}

/// The residual stream `residual` after the projection `l(x)` is added to it: the sum, where the
/// few-row kernel adds it in its epilogue, else the stream and the projection still to add (which
/// the next add_rmsnorm adds, one launch fewer than adding here).
#[cfg(feature = "cuda")]
pub(super) fn project_onto(
    k: &super::fused::Kernels,
    l: &Linear,
    x: &Tensor,
    residual: Tensor,
) -> Result<(Tensor, Option<Tensor>)> {
    if let Some(w) = l.plain_weight() {
        if let Some(sum) = k.gemv(x, w, Some(&residual))? {
            return Ok((sum, None));
        }
    }
    Ok((residual, Some(l.forward(x)?)))
}

/// A layer's input `x + delta` normalized by `g` and projected: by `fused` (a projection with the
/// norm in its loads) where there is no delta to add and it applies, else by add_rmsnorm and then
/// `generic`. Leaves the residual stream (the sum) in `x` and no delta.
#[cfg(feature = "cuda")]
pub(super) fn normalized<R>(
    k: &super::fused::Kernels,
    (x, delta): (&mut Tensor, &mut Option<Tensor>),
    g: &Tensor,
    eps: f32,
    fused: impl FnOnce(&super::fused::NormIn) -> Result<Option<R>>,
    generic: impl FnOnce(&Tensor) -> Result<R>,
) -> Result<R> {
    if delta.is_none() {
        if let Some(r) = fused(&super::fused::NormIn { x, g, eps })? {
            return Ok(r);
        }
    }
    let (sum, h) = k.add_rmsnorm(x, delta.take().as_ref(), g, eps)?;
    *x = sum;
    generic(&h)
}

/// The gated MLP's input projections: apart (GGUF), or as one matrix `[gate; up]` (dense weights),
/// one GEMM instead of two.
pub(super) enum Mlp {
    Split { gate: Linear, up: Linear },
    Fused(Linear),
}

impl Mlp {
    /// `silu(gate(x)) * up(x)`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mlp::Split { gate, up } => candle_nn::ops::silu(&gate.forward(x)?)? * up.forward(x)?,
            Mlp::Fused(gu) => {
                let y = gu.forward(x)?;
                let i = y.dim(candle_core::D::Minus1)? / 2;
                let gate = y.narrow(candle_core::D::Minus1, 0, i)?;
                let up = y.narrow(candle_core::D::Minus1, i, i)?;
                candle_nn::ops::silu(&gate)? * up
            }
        }
    }
}

pub(super) struct Layer {
    pub(super) attn_norm: Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    /// `[q; k; v]` as one matrix (dense weights): the fused decode step's one GEMM. `q`, `k` and
    /// `v` are then views of it.
    pub(super) qkv: Option<Linear>,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) q_norm: Option<Tensor>,
    pub(super) k_norm: Option<Tensor>,
    pub(super) ffn_norm: Tensor,
    pub(super) mlp: Mlp,
    pub(super) down: Linear,
    /// `q`'s weights already carry the attention scale `1/sqrt(head_dim)` (dense weights without
    /// q/k norms), which saves a kernel per layer and step.
    pub(super) q_scaled: bool,
}

/// One layer's keys and values: buffers `(batch, kv_heads, capacity, head_dim)` of which the first
/// `len` positions are filled. A step writes its positions in place; the buffers grow by
/// doubling, so a decode step copies one position, not the whole cache.
#[derive(Debug, Clone)]
struct LayerCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// Spare positions a new cache starts with (a prompt plus this many steps before it first grows).
const CACHE_SPARE: usize = 512;

impl LayerCache {
    fn new(k: &Tensor, v: &Tensor, spare: usize) -> Result<LayerCache> {
        let (b, h, t, d) = k.dims4()?;
        let cap = t + spare.max(1);
        let kb = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
        let vb = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
        kb.slice_set(&k.contiguous()?, 2, 0)?;
        vb.slice_set(&v.contiguous()?, 2, 0)?;
        Ok(LayerCache { k: kb, v: vb, len: t })
    }

    /// Makes room for `extra` more positions.
    fn reserve(&mut self, extra: usize) -> Result<()> {
        let cap = self.k.dim(2)?;
        if self.len + extra > cap {
            let (b, h, _, d) = self.k.dims4()?;
            let new_cap = (2 * cap).max(self.len + extra);
            let kb = Tensor::zeros((b, h, new_cap, d), self.k.dtype(), self.k.device())?;
            let vb = Tensor::zeros((b, h, new_cap, d), self.v.dtype(), self.v.device())?;
            kb.slice_set(&self.keys()?.contiguous()?, 2, 0)?;
            vb.slice_set(&self.values()?.contiguous()?, 2, 0)?;
            self.k = kb;
            self.v = vb;
        }
        Ok(())
    }

    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let t = k.dim(2)?;
        self.reserve(t)?;
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += t;
        Ok(())
    }

    /// The filled positions, as views into the buffers.
    fn keys(&self) -> Result<Tensor> {
        self.k.narrow(2, 0, self.len)
    }

    fn values(&self) -> Result<Tensor> {
        self.v.narrow(2, 0, self.len)
    }
}

/// Keys and values of every layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    /// Spare positions a layer's buffers start with (0: `CACHE_SPARE`).
    spare: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> KvCache {
        KvCache { layers: vec![None; layers], spare: CACHE_SPARE }
    }

    /// A cache whose buffers start with `spare` free positions (tests use a few, to make them grow).
    pub fn with_spare(layers: usize, spare: usize) -> KvCache {
        KvCache { layers: vec![None; layers], spare }
    }

    /// Copies a batch-1 cache (after a prefill) into `n` rows.
    pub fn expand(&mut self, n: usize) -> Result<()> {
        for c in self.layers.iter_mut().flatten() {
            let (_, h, cap, d) = c.k.dims4()?;
            c.k = c.k.broadcast_as((n, h, cap, d))?.contiguous()?;
            c.v = c.v.broadcast_as((n, h, cap, d))?.contiguous()?;
        }
        Ok(())
    }

    /// Keeps only the rows in `keep` (samples still running), in that order.
    pub fn retain(&mut self, keep: &[u32]) -> Result<()> {
        let Some(dev) = self.layers.iter().flatten().next().map(|c| c.k.device().clone()) else { return Ok(()) };
        let idx = Tensor::new(keep, &dev)?;
        for c in self.layers.iter_mut().flatten() {
            c.k = c.k.index_select(&idx, 0)?;
            c.v = c.v.index_select(&idx, 0)?;
        }
        Ok(())
    }
}

pub struct Model {
    pub cfg: Config,
    pub(super) embed: Tensor,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Tensor,
    pub(super) lm_head: Linear,
    pub(super) cos: Tensor,
    pub(super) sin: Tensor,
    dtype: DType,
    device: Device,
    /// The fused kernels (CUDA, f32/bf16/f16): the sampler, and the decode step when
    /// `step_fits`; both off when `fused_on` is false (`Model::set_fused_decode`).
    #[cfg(feature = "cuda")]
    pub(super) kernels: Option<super::fused::Kernels>,
    #[cfg(feature = "cuda")]
    pub(super) step_fits: bool,
    #[cfg(feature = "cuda")]
    pub(super) fused_on: bool,
}

/// Inverse frequencies of the rotary embedding, with the configured scaling, and the factor
/// cos/sin are multiplied by (YaRN's attention factor, else 1).
fn inv_freq(cfg: &Config) -> (Vec<f64>, f64) {
    let d = cfg.head_dim as f64;
    let base: Vec<f64> = (0..cfg.head_dim / 2).map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / d)).collect();
    match &cfg.rope_scaling {
        None => (base, 1.0),
        Some(RopeScaling::Linear { factor }) => (base.iter().map(|f| f / factor).collect(), 1.0),
        Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max }) => {
            let low_wavelen = original_max / low_freq_factor;
            let high_wavelen = original_max / high_freq_factor;
            let f = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (original_max / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (f, 1.0)
        }
        Some(RopeScaling::Yarn { factor, original_max, beta_fast, beta_slow, attention_factor }) => {
            let dim = cfg.head_dim as f64;
            let correction = |rotations: f64| {
                dim * (original_max / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * cfg.rope_theta.ln())
            };
            let low = correction(*beta_fast).floor().max(0.0);
            let high = correction(*beta_slow).ceil().min(dim - 1.0);
            let span = if (high - low).abs() < 1e-3 { 1e-3 } else { high - low };
            let f = base
                .iter()
                .enumerate()
                .map(|(i, &extrapolated)| {
                    let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                    let keep = 1.0 - ramp;
                    extrapolated / factor * (1.0 - keep) + extrapolated * keep
                })
                .collect();
            (f, *attention_factor)
        }
    }
}

fn rope_tables(cfg: &Config, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let (freqs, scale) = inv_freq(cfg);
    // Enough positions for any prompt and completion the model was trained for, bounded so a
    // huge advertised context does not cost memory up front.
    let n = cfg.max_positions.clamp(1, 1 << 17);
    let half = freqs.len();
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for f in &freqs {
            let a = p as f64 * f;
            cos.push((a.cos() * scale) as f32);
            sin.push((a.sin() * scale) as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), device)?.to_dtype(dtype)?,
        Tensor::from_vec(sin, (n, half), device)?.to_dtype(dtype)?,
    ))
}

/// What every layer of one forward pass shares: the configuration, the rotary tables for its
/// positions and the causal mask (prefill only).
struct Step<'a> {
    cfg: &'a Config,
    spare: usize,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
}

impl Layer {
    fn attention(&self, step: &Step, x: &Tensor, cache: &mut Option<LayerCache>) -> Result<Tensor> {
        let Step { cfg, cos, sin, mask, .. } = step;
        let (b, t, _) = x.dims3()?;
        let (h, kvh, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let split = |y: Tensor, heads: usize| y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous();
        let mut q = split(self.q.forward(x)?, h)?;
        let mut k = split(self.k.forward(x)?, kvh)?;
        let v = split(self.v.forward(x)?, kvh)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = candle_nn::ops::rms_norm(&q, qn, cfg.rms_eps as f32)?;
            k = candle_nn::ops::rms_norm(&k, kn, cfg.rms_eps as f32)?;
        }
        let rope = if cfg.rope_interleaved { candle_nn::rotary_emb::rope_i } else { candle_nn::rotary_emb::rope };
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?;
        let c = match cache {
            Some(c) => {
                c.append(&k, &v)?;
                c
            }
            None => cache.insert(LayerCache::new(&k, &v, step.spare)?),
        };
        let (k, v) = (c.keys()?, c.values()?);
        let total = k.dim(2)?;
        let rep = h / kvh;
        let expand = |y: Tensor| -> Result<Tensor> {
            if rep == 1 {
                return Ok(y);
            }
            y.unsqueeze(2)?.broadcast_as((b, kvh, rep, total, d))?.reshape((b, h, total, d))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let scores = q.matmul(&k.t()?)?;
        let scores = if self.q_scaled { scores } else { (scores * (1.0 / (d as f64).sqrt()))? };
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        // `v` is a view into the cache (rows of `head_dim`, heads `capacity` rows apart), which the
        // matmul takes as it is.
        let y = probs.matmul(&v)?;
        self.o.forward(&y.transpose(1, 2)?.reshape((b, t, h * d))?)
    }

    fn forward(&self, step: &Step, x: &Tensor, cache: &mut Option<LayerCache>) -> Result<Tensor> {
        let eps = step.cfg.rms_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &self.attn_norm, eps)?;
        let x = (x + self.attention(step, &h, cache)?)?;
        let h = candle_nn::ops::rms_norm(&x, &self.ffn_norm, eps)?;
        let ffn = self.down.forward(&self.mlp.forward(&h)?)?;
        x + ffn
    }
}

impl Model {
    fn assemble(
        cfg: Config,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Linear,
        dtype: DType,
        device: &Device,
    ) -> Result<Model> {
        let (cos, sin) = rope_tables(&cfg, dtype, device)?;
        #[cfg(feature = "cuda")]
        let step_fits = matches!(cfg.head_dim, 64 | 128 | 256)
            && cfg.kv_heads > 0
            && cfg.heads % cfg.kv_heads == 0
            && !layers.is_empty()
            && layers.iter().all(|l| l.q_norm.is_none());
        Ok(Model {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            dtype,
            device: device.clone(),
            #[cfg(feature = "cuda")]
            kernels: match super::fused::Kernels::load(device, dtype) {
                Ok(k) => k,
                Err(e) => {
                    // The generic path still works (say, a driver too old for the PTX).
                    tracing::warn!(error = %e, "fused CUDA kernels unavailable; decoding through the generic path");
                    None
                }
            },
            #[cfg(feature = "cuda")]
            step_fits,
            #[cfg(feature = "cuda")]
            fused_on: true,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Activation and dense-weight precision.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Positions a sequence may have (the model's context, bounded by the RoPE tables).
    pub fn context(&self) -> usize {
        self.cos.dim(0).unwrap_or(self.cfg.max_positions)
    }

    /// Whether decode steps take the fused CUDA kernels (on CUDA, for Llama-shaped models without
    /// q/k norms; off for comparisons with `set_fused_decode(false)`).
    pub fn fused_decode(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.kernels.is_some() && self.step_fits && self.fused_on;
        #[cfg(not(feature = "cuda"))]
        false
    }

    /// Turns the fused decode step and sampler off or back on (off, the generic path runs on
    /// every device).
    pub fn set_fused_decode(&mut self, on: bool) {
        #[cfg(feature = "cuda")]
        {
            self.fused_on = on;
        }
        let _ = on;
    }

    /// One token per row of `logits` with each row's noise keyed by its own seed (so a sample
    /// draws alike in any batch), on the device by the fused sampler; `None` where there is none
    /// (the CPU, or the kernels off), for the caller to sample each row itself.
    pub fn sample_rows_seeded(
        &self,
        logits: &Tensor,
        temperature: f64,
        top_p: f64,
        seeds: &[u64],
    ) -> Result<Option<Vec<u32>>> {
        #[cfg(feature = "cuda")]
        if let (Some(k), true) = (&self.kernels, self.fused_on) {
            return k.sample_seeded(logits, temperature, top_p, seeds).map(Some);
        }
        let _ = (logits, temperature, top_p, seeds);
        Ok(None)
    }

    /// One token per row of `logits` (`(rows, vocab)`), drawn on the model's device: greedy at
    /// temperature 0, else from the top-p distribution. The fused sampler (CUDA) keys its noise by
    /// `step_seed`, which callers vary per step; `sample::sample_rows` draws from the device's
    /// generator.
    pub fn sample_rows(&self, logits: &Tensor, temperature: f64, top_p: f64, step_seed: u64) -> Result<Vec<u32>> {
        #[cfg(feature = "cuda")]
        if let (Some(k), true) = (&self.kernels, self.fused_on) {
            return k.sample(logits, temperature, top_p, step_seed);
        }
        let _ = step_seed;
        super::sample::sample_rows(logits, temperature, top_p)
    }

    /// One decode step (`ids`: `(batch, 1)`) through the fused kernels; every layer's cache holds
    /// the positions before `pos`.
    #[cfg(feature = "cuda")]
    fn forward_fused(
        &self,
        k: &super::fused::Kernels,
        ids: &Tensor,
        pos: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let eps = cfg.rms_eps as f32;
        let pos_t = Tensor::new(&[pos as u32], &self.device)?;
        let q_scale =
            if self.layers.first().is_some_and(|l| l.q_scaled) { 1.0 } else { 1.0 / (cfg.head_dim as f32).sqrt() };
        // The residual stream as `x + delta`: projections add into it in their epilogue where the
        // few-row kernel applies (no delta left), else leave the delta to `normalized`.
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?;
        let mut delta: Option<Tensor> = None;
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let Some(c) = c.as_mut() else { candle_core::bail!("fused decode without a prefilled cache") };
            if c.len != pos {
                candle_core::bail!("fused decode at position {pos} with {} cached positions", c.len);
            }
            c.reserve(1)?;
            let step = super::fused::RopeStep {
                caches: (&c.k, &c.v),
                tables: (&self.cos, &self.sin),
                pos: &pos_t,
                heads: cfg.heads,
                interleaved: cfg.rope_interleaved,
                q_scale,
            };
            let q = normalized(
                k,
                (&mut x, &mut delta),
                &layer.attn_norm,
                eps,
                |row| match layer.qkv.as_ref().and_then(Linear::plain_weight) {
                    Some(w) => k.gemv_rope(row, w, &step),
                    None => Ok(None),
                },
                |h| {
                    let qkv = match &layer.qkv {
                        Some(qkv) => project(k, qkv, h)?,
                        None => Tensor::cat(&[layer.q.forward(h)?, layer.k.forward(h)?, layer.v.forward(h)?], 1)?,
                    };
                    k.rope_kv(&qkv, &step)
                },
            )?;
            c.len += 1;
            let a = k.attention(&q, (&c.k, &c.v), &pos_t, cfg.heads)?;
            (x, delta) = project_onto(k, &layer.o, &a, x)?;
            let act = normalized(
                k,
                (&mut x, &mut delta),
                &layer.ffn_norm,
                eps,
                |row| match &layer.mlp {
                    Mlp::Fused(gu) => gu.plain_weight().map_or(Ok(None), |w| k.gemv_silu(row, w)),
                    Mlp::Split { .. } => Ok(None),
                },
                |h| match &layer.mlp {
                    Mlp::Fused(gu) => k.silu_mul(&project(k, gu, h)?),
                    split => split.forward(h),
                },
            )?;
            (x, delta) = project_onto(k, &layer.down, &act, x)?;
        }
        let (_, h) = k.add_rmsnorm(&x, delta.as_ref(), &self.norm, eps)?;
        project(k, &self.lm_head, &h)?.to_dtype(DType::F32)
    }

    /// Runs `ids` (`(batch, t)`, every row at the same positions `pos..pos + t`) through the model,
    /// extending `cache`; returns the next-token logits of each row, `(batch, vocab)`, in f32.
    pub fn forward(&self, ids: &Tensor, pos: usize, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if pos + t > self.cos.dim(0)? {
            candle_core::bail!("position {} is past the model's context of {}", pos + t, self.cos.dim(0)?);
        }
        #[cfg(feature = "cuda")]
        if let (Some(k), true) = (&self.kernels, self.fused_decode()) {
            if t == 1 && cache.layers.len() == self.layers.len() && cache.layers.iter().all(Option::is_some) {
                return self.forward_fused(k, ids, pos, cache);
            }
        }
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden))?;
        let mask = if t > 1 {
            let total = pos + t;
            let m: Vec<f32> = (0..t)
                .flat_map(|i| (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            Some(Tensor::from_vec(m, (t, total), &self.device)?.to_dtype(self.dtype)?)
        } else {
            None
        };
        if cache.layers.len() != self.layers.len() {
            *cache = KvCache::new(self.layers.len());
        }
        let spare = if cache.spare == 0 { CACHE_SPARE } else { cache.spare };
        let step =
            Step { cfg: &self.cfg, spare, cos: self.cos.narrow(0, pos, t)?, sin: self.sin.narrow(0, pos, t)?, mask };
        for (layer, c) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(&step, &x, c)?;
        }
        let last = x.i((.., t - 1, ..))?.contiguous()?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, self.cfg.rms_eps as f32)?;
        self.lm_head.forward(&last)?.to_dtype(DType::F32)
    }

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
    /// With `fp8`, the projections are held in E4M3 with 128×128 block factors (quantized here
    /// unless the checkpoint already holds them so); without, an FP8 checkpoint is dequantized.
    pub fn from_safetensors(dir: &Path, device: &Device, dtype: DType, fp8: bool) -> Result<Model> {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", dir.join("config.json").display())))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| candle_core::Error::Msg(format!("config.json: {e}")))?;
        let cfg = config_from_hf(&json)?;
        check_quantization(&json)?;
        let files = safetensors_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(&files, dtype, device)? };
        Model::from_var_builder(cfg, &json, vb, device, dtype, fp8)
    }

    /// A Llama-shaped model of `cfg` with random weights (normal, std 0.02; norms 1), made on the
    /// device without files: for benchmarks at a shape whose weights cannot be had.
    pub fn random(cfg: Config, device: &Device, dtype: DType) -> Result<Model> {
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
        let vb = candle_nn::VarBuilder::from_tensors(t, dtype, device);
        Model::from_var_builder(cfg, &Value::Null, vb, device, dtype, false)
    }

    /// The model `vb` holds, laid out as Hugging Face names it (`json`: its config.json); with
    /// `fp8` its projections in E4M3.
    fn from_var_builder(
        cfg: Config,
        json: &Value,
        vb: candle_nn::VarBuilder,
        device: &Device,
        dtype: DType,
        fp8: bool,
    ) -> Result<Model> {
        let tie = json.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false);
        let qkv_bias = cfg.arch == "qwen2" || json.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let o_bias = cfg.arch != "qwen2" && json.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let (hd, h, kvh) = (cfg.head_dim, cfg.heads, cfg.kv_heads);
        let dense = |name: &str, out: usize, inp: usize| read_weight(&vb, name, (out, inp))?.dense(dtype, device);
        let bias = |name: &str, out: usize, on: bool| -> Result<Option<Tensor>> {
            if on {
                Ok(Some(vb.get(out, &format!("{name}.bias"))?))
            } else {
                Ok(None)
            }
        };
        // A projection in the chosen format; `scale` folds a constant into its weight and bias.
        let lin = |name: &str, out: usize, inp: usize, with_bias: bool, scale: Option<f64>| -> Result<Linear> {
            let w = read_weight(&vb, &format!("{name}.weight"), (out, inp))?;
            let b = bias(name, out, with_bias)?;
            let b = match scale {
                Some(f) => b.map(|b| b * f).transpose()?,
                None => b,
            };
            if fp8 {
                let mut w = w.fp8(name)?;
                if let Some(f) = scale {
                    w.scale(f as f32);
                }
                Ok(Linear::Fp8(Arc::new(w), b))
            } else {
                let w = w.dense(dtype, device)?;
                let w = match scale {
                    Some(f) => (w * f)?,
                    None => w,
                };
                Ok(Linear::Dense(candle_nn::Linear::new(w, b)))
            }
        };
        let embed = dense("model.embed_tokens.weight", cfg.vocab, cfg.hidden)?;
        let vocab = embed.dim(0)?;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("model.layers.{i}");
            let qk_norm = cfg.arch == "qwen3";
            // Without q/k norms the attention scale can live in q's weights (a norm would undo it).
            let q_scale = (!qk_norm).then(|| 1.0 / (hd as f64).sqrt());
            let attn = |name: &str| format!("{p}.self_attn.{name}");
            let (qkv, q, k, v, mlp) = if fp8 {
                // Separate projections: a fused matrix would put q's and k's rows in one block.
                let q = lin(&attn("q_proj"), h * hd, cfg.hidden, qkv_bias, q_scale)?;
                let k = lin(&attn("k_proj"), kvh * hd, cfg.hidden, qkv_bias, None)?;
                let v = lin(&attn("v_proj"), kvh * hd, cfg.hidden, qkv_bias, None)?;
                let gate = lin(&format!("{p}.mlp.gate_proj"), cfg.intermediate, cfg.hidden, false, None)?;
                let up = lin(&format!("{p}.mlp.up_proj"), cfg.intermediate, cfg.hidden, false, None)?;
                (None, q, k, v, Mlp::Split { gate, up })
            } else {
                let part = |name: &str, out: usize| -> Result<(Tensor, Option<Tensor>)> {
                    Ok((dense(&format!("{}.weight", attn(name)), out, cfg.hidden)?, bias(&attn(name), out, qkv_bias)?))
                };
                let (qw, qb) = part("q_proj", h * hd)?;
                let (qw, qb) = match q_scale {
                    None => (qw, qb),
                    Some(f) => ((qw * f)?, qb.map(|b| b * f).transpose()?),
                };
                let (kw, kb) = part("k_proj", kvh * hd)?;
                let (vw, vb_) = part("v_proj", kvh * hd)?;
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
                let (q, k, v) = (view(0, h * hd)?, view(h * hd, kvh * hd)?, view((h + kvh) * hd, kvh * hd)?);
                let qkv = Linear::Dense(candle_nn::Linear::new(qkv_w.clone(), qkv_b.clone()));
                let gate = dense(&format!("{p}.mlp.gate_proj.weight"), cfg.intermediate, cfg.hidden)?;
                let up = dense(&format!("{p}.mlp.up_proj.weight"), cfg.intermediate, cfg.hidden)?;
                let gate_up = Tensor::cat(&[&gate, &up], 0)?;
                (Some(qkv), q, k, v, Mlp::Fused(Linear::Dense(candle_nn::Linear::new(gate_up, None))))
            };
            layers.push(Layer {
                attn_norm: vb.get(cfg.hidden, &format!("{p}.input_layernorm.weight"))?,
                qkv,
                q,
                q_scaled: !qk_norm,
                k,
                v,
                o: lin(&attn("o_proj"), cfg.hidden, h * hd, o_bias, None)?,
                q_norm: if qk_norm { Some(vb.get(hd, &format!("{p}.self_attn.q_norm.weight"))?) } else { None },
                k_norm: if qk_norm { Some(vb.get(hd, &format!("{p}.self_attn.k_norm.weight"))?) } else { None },
                ffn_norm: vb.get(cfg.hidden, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp,
                down: lin(&format!("{p}.mlp.down_proj"), cfg.hidden, cfg.intermediate, false, None)?,
            });
        }
        let norm = vb.get(cfg.hidden, "model.norm.weight")?;
        // The output projection stays dense (as DeepSeek's FP8 releases keep it).
        let lm_head = if tie || !vb.contains_tensor("lm_head.weight") {
            Linear::Dense(candle_nn::Linear::new(embed.clone(), None))
        } else {
            Linear::Dense(candle_nn::Linear::new(dense("lm_head.weight", vocab, cfg.hidden)?, None))
        };
        Model::assemble(Config { vocab, ..cfg }, embed, layers, norm, lm_head, dtype, device)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: Option<RopeScaling>) -> Config {
        Config {
            arch: "llama".into(),
            hidden: 64,
            layers: 1,
            heads: 1,
            kv_heads: 1,
            head_dim: 64,
            intermediate: 1,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_interleaved: false,
            rope_scaling: scaling,
            max_positions: 8,
            vocab: 1,
        }
    }

    #[test]
    fn linear_rope_scaling_divides_every_frequency() {
        let (base, _) = inv_freq(&cfg(None));
        let (scaled, _) = inv_freq(&cfg(Some(RopeScaling::Linear { factor: 4.0 })));
        for (b, s) in base.iter().zip(&scaled) {
            assert!((b / 4.0 - s).abs() < 1e-12);
        }
    }

    #[test]
    fn yarn_keeps_high_frequencies_and_interpolates_low_ones() {
        let (base, _) = inv_freq(&cfg(None));
        let yarn = RopeScaling::Yarn {
            factor: 4.0,
            original_max: 4096.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: 1.1,
        };
        let (scaled, scale) = inv_freq(&cfg(Some(yarn)));
        assert_eq!(scale, 1.1);
        assert!((scaled[0] - base[0]).abs() < 1e-12, "the fastest rotation is kept");
        let last = base.len() - 1;
        assert!((scaled[last] - base[last] / 4.0).abs() < 1e-12, "the slowest is interpolated");
    }

    #[test]
    fn hf_config_reads_gqa_head_dim_and_scaling() {
        let j = serde_json::json!({
            "model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 16,
            "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072, "rope_theta": 1000000.0,
            "max_position_embeddings": 40960, "vocab_size": 100, "rope_scaling": {"rope_type": "linear", "factor": 2.0}
        });
        let c = config_from_hf(&j).unwrap();
        assert_eq!((c.kv_heads, c.head_dim), (8, 128));
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        assert!(config_from_hf(&serde_json::json!({"model_type": "gpt_neox"})).is_err());
    }
}
