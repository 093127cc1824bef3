//! The Llama-family decoder the prover models ship in: Llama (DeepSeek-Prover-V1.5/V2-7B),
//! Mistral, Qwen2 (q/k/v biases) and Qwen3 (per-head q/k RMS norms): its layers, projections
//! (GGUF-quantized, dense or FP8), RoPE, the static KV cache and the static forward pass. Making
//! one from files is `load`'s job.
//!
//! Written here rather than taken from candle-transformers because the KV cache must be ours:
//! pass@k decodes `n` samples of one prompt as one batch after a single prefill, which needs the
//! cache copied across the batch after prefill and rows dropped as samples finish.
//!
//! RoPE: llama.cpp stores Llama's q/k weights permuted for interleaved rotation (`rope_i`);
//! Qwen GGUFs and all safetensors use the half-split rotation (`rope`).

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};

use super::fp8::BlockFp8;
pub use super::load::{config_from_gguf, config_from_hf, read_gguf};

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

impl Config {
    /// The Llama 7B layout DeepSeek-Prover-V2-7B uses (hidden 4096, 32 heads of 128 without
    /// grouping, intermediate 11008) with `layers` layers and a `vocab`-token vocabulary: the
    /// shape benchmarks build random models at.
    pub fn llama_7b(layers: usize, vocab: usize) -> Config {
        Config {
            arch: "llama".into(),
            hidden: 4096,
            layers,
            heads: 32,
            kv_heads: 32,
            head_dim: 128,
            intermediate: 11008,
            rms_eps: 1e-6,
            rope_theta: 10000.0,
            rope_interleaved: false,
            rope_scaling: None,
            max_positions: 16384,
            vocab,
        }
    }
}

/// A projection: quantized (GGUF) or dense (safetensors), with an optional bias.
pub(super) enum Linear {
    Quantized(QMatMul, Option<Tensor>),
    Dense(candle_nn::Linear),
    /// E4M3 with 128×128 block factors (`--dtype fp8`, or an FP8 checkpoint), on the CPU.
    Fp8(Arc<BlockFp8>, Option<Tensor>),
    /// The same on a CUDA device: the bytes and factors in device memory, read by the FP8 kernels.
    #[cfg(feature = "cuda")]
    Fp8Cuda(Arc<DeviceFp8>, Option<Tensor>),
}

/// An FP8 weight on a CUDA device: E4M3 bytes `[rows, cols]` (u8), the f32 factors of its 128×128
/// blocks, and the kernels that read them (the few-row product and the dequantization).
#[cfg(feature = "cuda")]
pub(super) struct DeviceFp8 {
    pub(super) bytes: Tensor,
    pub(super) scale: Tensor,
    pub(super) kernels: Arc<super::fused::Kernels>,
}

#[cfg(feature = "cuda")]
impl DeviceFp8 {
    /// `w` moved to `device`.
    pub(super) fn upload(w: BlockFp8, device: &Device, kernels: Arc<super::fused::Kernels>) -> Result<DeviceFp8> {
        let (rb, cb) = (w.row_blocks(), w.col_blocks());
        let bytes = Tensor::from_vec(w.data, (w.rows, w.cols), device)?;
        let scale = Tensor::from_vec(w.scale_inv, (rb, cb), device)?;
        Ok(DeviceFp8 { bytes, scale, kernels })
    }

    /// `x @ Wᵀ` for `x` of shape `[.., cols]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, cols) = self.bytes.dims2()?;
        let dims = x.dims().to_vec();
        let x2 = x.reshape((x.elem_count() / cols.max(1), cols))?.contiguous()?;
        let y = match self.kernels.gemv_fp8(&x2, &self.bytes, &self.scale, None)? {
            Some(y) => y,
            None => x2.matmul(&self.kernels.dequantize_fp8(&self.bytes, &self.scale)?.t()?)?,
        };
        let mut shape = dims[..dims.len() - 1].to_vec();
        shape.push(rows);
        y.reshape(shape)
    }
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
            #[cfg(feature = "cuda")]
            Linear::Fp8Cuda(w, b) => {
                let y = w.forward(x)?;
                match b {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
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
    if let Linear::Fp8Cuda(w, None) = l {
        if let Some(sum) = k.gemv_fp8(x, &w.bytes, &w.scale, Some(&residual))? {
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
    pub(super) fn assemble(
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
