//! The Llama-family decoder the prover models ship in: Llama (DeepSeek-Prover-V1.5/V2-7B),
//! Mistral, Qwen2 (q/k/v biases) and Qwen3 (per-head q/k RMS norms): its configuration, its
//! layers and the static forward pass (the generic path and the fused CUDA decode step). The
//! projections are `linear`'s, the rotary tables `rope`'s, the static cache `kv_cache`'s; making
//! a model from files is `load`'s job, the paged forward pass `paged`'s.
//!
//! Written here rather than taken from candle-transformers because the KV cache must be ours:
//! pass@k decodes `n` samples of one prompt as one batch after a single prefill, which needs the
//! cache copied across the batch after prefill and rows dropped as samples finish.
//!
//! RoPE: llama.cpp stores Llama's q/k weights permuted for interleaved rotation (`rope_i`);
//! Qwen GGUFs and all safetensors use the half-split rotation (`rope`).

use candle_core::{DType, Device, IndexOp, Result, Tensor};

pub use super::kv_cache::KvCache;
use super::kv_cache::{LayerCache, CACHE_SPARE};
#[cfg(feature = "cuda")]
pub(super) use super::linear::{normalized, project, project_onto};
pub(super) use super::linear::{Linear, Mlp};
pub use super::load::{config_from_gguf, config_from_hf, read_gguf, WeightFormat};
use super::rope::rope_tables;

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

pub(super) struct Layer {
    pub(super) attn_norm: Tensor,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    /// `[q; k; v]` as one matrix (dense weights, and FP8 ones on CUDA where q, k and v are whole
    /// 128-row blocks): the fused decode step's one GEMM. `q`, `k` and `v` are then views of it.
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

/// A point in the device's stream of work (CUDA with the fused kernels; `Model::record_mark` sets
/// it), for timing a span of it on the device's clock: to tell the device's part of a step's time
/// from the host's.
pub struct DeviceMark {
    #[cfg(feature = "cuda")]
    mark: super::fused::Mark,
}

impl DeviceMark {
    /// Milliseconds the device took from this mark to `end`; waits until it has reached both.
    pub fn ms_until(&self, end: &DeviceMark) -> Option<f64> {
        #[cfg(feature = "cuda")]
        return self.mark.ms_until(&end.mark);
        #[cfg(not(feature = "cuda"))]
        {
            let _ = end;
            None
        }
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
    /// Whether paged decode steps read a prefix shared by several rows once for all of them
    /// (`cascade`); on unless `SUBGOAL_CUDA_CASCADE=0`, and switchable at run time for side-by-side
    /// comparisons (`set_cascade`).
    #[cfg(feature = "cuda")]
    pub(super) cascade: std::sync::atomic::AtomicBool,
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
            #[cfg(feature = "cuda")]
            cascade: std::env::var("SUBGOAL_CUDA_CASCADE").map_or(true, |v| v != "0").into(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A mark for `record_mark`, made once and recorded as often as wanted; none on the CPU, or
    /// without the fused kernels.
    pub fn device_mark(&self) -> Option<DeviceMark> {
        #[cfg(feature = "cuda")]
        return self.kernels.as_ref().and_then(|k| k.new_mark()).map(|mark| DeviceMark { mark });
        #[cfg(not(feature = "cuda"))]
        None
    }

    /// Sets `mark` to this point of the device's stream of work; false where it cannot.
    pub fn record_mark(&self, mark: &DeviceMark) -> bool {
        #[cfg(feature = "cuda")]
        return self.kernels.as_ref().is_some_and(|k| k.record(&mark.mark));
        #[cfg(not(feature = "cuda"))]
        {
            let _ = mark;
            false
        }
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

    /// Whether the fused kernels read and write an FP8 paged cache here (CUDA, a 16-bit model:
    /// prompts need the tensor-core prefill kernel).
    pub fn fused_paged_kv8(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.fused_decode() && self.kernels.as_ref().is_some_and(|k| k.has_prefill(self.cfg.head_dim, true));
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

    /// Turns shared-prefix attention of paged decode steps off or back on (CUDA; the CPU path
    /// always reads each row's blocks itself).
    pub fn set_cascade(&self, on: bool) {
        #[cfg(feature = "cuda")]
        self.cascade.store(on, std::sync::atomic::Ordering::Relaxed);
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
                |row| match layer.qkv.as_ref().and_then(Linear::row_weight) {
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
                    Mlp::Fused(gu) => gu.row_weight().map_or(Ok(None), |w| k.gemv_silu(row, w)),
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
