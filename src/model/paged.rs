//! The paged KV cache and one forward pass over a mixed batch: every running sequence's next
//! token and chunks of prompts still being read, flattened into one list of tokens so each
//! projection is one matrix product over all of them, with attention per sequence over the
//! blocks its block table names.
//!
//! Layout: per layer, keys and values are `(blocks, kv_heads, block_size, head_dim)`, so one head
//! of one block is a contiguous tile. A token at position `p` of a sequence lives in block
//! `table[p / block_size]` at offset `p % block_size`.

use candle_core::{DType, Device, IndexOp, Result, Tensor};

use super::llama::{Config, Model};

/// Keys and values of every layer, in blocks.
pub struct PagedCache {
    pub block_size: usize,
    pub blocks: usize,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl PagedCache {
    /// Bytes one block takes over all layers (keys and values).
    pub fn block_bytes(cfg: &Config, block_size: usize, dtype: DType) -> usize {
        2 * cfg.layers * cfg.kv_heads * block_size * cfg.head_dim * dtype.size_in_bytes()
    }

    pub fn new(cfg: &Config, blocks: usize, block_size: usize, dtype: DType, device: &Device) -> Result<PagedCache> {
        let shape = (blocks, cfg.kv_heads, block_size, cfg.head_dim);
        let mut k = Vec::with_capacity(cfg.layers);
        let mut v = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            k.push(Tensor::zeros(shape, dtype, device)?);
            v.push(Tensor::zeros(shape, dtype, device)?);
        }
        Ok(PagedCache { block_size, blocks, k, v })
    }

    /// Copies block `from` into block `to` in every layer (a sample's own copy of a shared
    /// partial block).
    pub fn copy_block(&self, from: u32, to: u32) -> Result<()> {
        for t in self.k.iter().chain(&self.v) {
            let src = t.narrow(0, from as usize, 1)?.contiguous()?;
            t.slice_set(&src, 0, to as usize)?;
        }
        Ok(())
    }
}

/// One sequence's part of a step: tokens `start..start + len` of the batch, at positions
/// `context..context + len` of the sequence (the positions before are in its blocks already).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: usize,
    pub len: usize,
    pub context: usize,
    /// Its block table: enough blocks for `context + len` positions.
    pub blocks: Vec<u32>,
    /// Whether the step returns logits for its last token.
    pub logits: bool,
}

/// The tokens of one step and whose they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub ids: Vec<u32>,
    pub segments: Vec<Segment>,
}

impl Batch {
    /// Adds `tokens` of a sequence at positions from `context` on.
    pub fn push(&mut self, tokens: &[u32], context: usize, blocks: Vec<u32>, logits: bool) {
        self.segments.push(Segment { start: self.ids.len(), len: tokens.len(), context, blocks, logits });
        self.ids.extend_from_slice(tokens);
    }

    /// Each token's position in its sequence.
    pub fn positions(&self) -> Vec<u32> {
        let mut p = Vec::with_capacity(self.ids.len());
        for s in &self.segments {
            p.extend((s.context..s.context + s.len).map(|x| x as u32));
        }
        p
    }
}

/// Row indices of the cache viewed as `(blocks * kv_heads * block_size, head_dim)` where each
/// token's head `h` goes, one row per token and head, repeated across `head_dim` (scatter's form).
fn write_rows(batch: &Batch, kv_heads: usize, block_size: usize, head_dim: usize, device: &Device) -> Result<Tensor> {
    let mut rows = Vec::with_capacity(batch.ids.len() * kv_heads * head_dim);
    for s in &batch.segments {
        for p in s.context..s.context + s.len {
            let block = s.blocks[p / block_size] as usize;
            for h in 0..kv_heads {
                let row = ((block * kv_heads + h) * block_size + p % block_size) as u32;
                rows.extend(std::iter::repeat_n(row, head_dim));
            }
        }
    }
    Tensor::from_vec(rows, (batch.ids.len() * kv_heads, head_dim), device)
}

impl Model {
    /// Runs one step: writes every token's keys and values into its sequence's blocks and
    /// returns the next-token logits (f32) of the segments that ask for them, in order,
    /// `(segments with logits, vocab)`.
    pub fn forward_paged(&self, batch: &Batch, cache: &PagedCache) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = batch.ids.len();
        if n == 0 {
            candle_core::bail!("an empty step");
        }
        let device = self.device();
        let positions = batch.positions();
        if let Some(&p) = positions.iter().max() {
            if p as usize >= self.cos.dim(0)? {
                candle_core::bail!("position {p} is past the model's context of {}", self.cos.dim(0)?);
            }
        }
        let pos = Tensor::new(positions.as_slice(), device)?;
        let cos = self.cos.index_select(&pos, 0)?;
        let sin = self.sin.index_select(&pos, 0)?;
        let rows = write_rows(batch, cfg.kv_heads, cache.block_size, cfg.head_dim, device)?;
        let tables: Vec<Tensor> = batch
            .segments
            .iter()
            .map(|s| {
                let used = (s.context + s.len).div_ceil(cache.block_size);
                Tensor::new(&s.blocks[..used], device)
            })
            .collect::<Result<_>>()?;
        let ids = Tensor::new(batch.ids.as_slice(), device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let eps = cfg.rms_eps as f32;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let a = layer.attention_paged(cfg, &h, (&cos, &sin), (&cache.k[l], &cache.v[l]), &rows, batch, &tables)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            x = (&x + layer.down.forward(&layer.mlp.forward(&h)?)?)?;
        }
        let last: Vec<u32> = batch.segments.iter().filter(|s| s.logits).map(|s| (s.start + s.len - 1) as u32).collect();
        if last.is_empty() {
            return Tensor::zeros((0, cfg.vocab), DType::F32, device);
        }
        let x = x.index_select(&Tensor::new(last.as_slice(), device)?, 0)?;
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        self.lm_head.forward(&x)?.to_dtype(DType::F32)
    }
}

impl super::llama::Layer {
    /// Attention of a paged step: projections over all tokens, RoPE at each token's position,
    /// keys and values written to the blocks, then per segment attention of its queries over its
    /// sequence's cached positions (causal within the segment).
    #[allow(clippy::too_many_arguments)]
    fn attention_paged(
        &self,
        cfg: &Config,
        x: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
        (kc, vc): (&Tensor, &Tensor),
        rows: &Tensor,
        batch: &Batch,
        tables: &[Tensor],
    ) -> Result<Tensor> {
        let n = x.dim(0)?;
        let (h, kvh, d) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        // (1, heads, n, d): the tokens as one "sequence" whose positions the tables give.
        let split = |y: Tensor, heads: usize| y.reshape((1, n, heads, d))?.transpose(1, 2)?.contiguous();
        let mut q = split(self.q.forward(x)?, h)?;
        let mut k = split(self.k.forward(x)?, kvh)?;
        let v = self.v.forward(x)?.reshape((n * kvh, d))?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = candle_nn::ops::rms_norm(&q, qn, cfg.rms_eps as f32)?;
            k = candle_nn::ops::rms_norm(&k, kn, cfg.rms_eps as f32)?;
        }
        let rope = if cfg.rope_interleaved { candle_nn::rotary_emb::rope_i } else { candle_nn::rotary_emb::rope };
        let q = rope(&q, cos, sin)?;
        let k = rope(&k, cos, sin)?.transpose(1, 2)?.reshape((n * kvh, d))?;
        let (blocks, _, bs, _) = kc.dims4()?;
        kc.reshape((blocks * kvh * bs, d))?.scatter_set(rows, &k.contiguous()?, 0)?;
        vc.reshape((blocks * kvh * bs, d))?.scatter_set(rows, &v.contiguous()?, 0)?;
        let scale = if self.q_scaled { 1.0 } else { 1.0 / (d as f64).sqrt() };
        let rep = h / kvh;
        // On the CPU the scores and weighted sums are computed in f64: a matrix product's
        // rounding depends on how many query rows it has, and the quantized projections round
        // activations to 8 bits, so a 1e-7 difference between reading a prompt in one chunk or
        // several (or a token in a prefill or a decode step) would change later tokens. In f64
        // the results agree to f32 precision whatever the chunking.
        let exact = x.device().is_cpu() && x.dtype() == DType::F32;
        let work = |t: Tensor| -> Result<Tensor> {
            if exact {
                t.to_dtype(DType::F64)
            } else {
                Ok(t)
            }
        };
        let mut outs = Vec::with_capacity(batch.segments.len());
        for (s, table) in batch.segments.iter().zip(tables) {
            let total = s.context + s.len;
            // (kv_heads, total, d): the sequence's positions, gathered block by block.
            let gather = |c: &Tensor| -> Result<Tensor> {
                let nb = table.dim(0)?;
                c.index_select(table, 0)?.transpose(0, 1)?.reshape((kvh, nb * bs, d))?.narrow(1, 0, total)
            };
            let expand = |y: Tensor| -> Result<Tensor> {
                if rep == 1 {
                    return Ok(y);
                }
                y.unsqueeze(1)?.broadcast_as((kvh, rep, total, d))?.reshape((h, total, d))
            };
            let keys = work(expand(gather(kc)?)?)?;
            let values = work(expand(gather(vc)?)?)?;
            let qs = work(q.i(0)?.narrow(1, s.start, s.len)?.contiguous()?)?;
            let scores = (qs.matmul(&keys.t()?)? * scale)?;
            let scores = if s.len > 1 {
                // Query j sits at position context + j and sees positions up to it.
                let m: Vec<f32> = (0..s.len)
                    .flat_map(|j| (0..total).map(move |p| if p > s.context + j { f32::NEG_INFINITY } else { 0.0 }))
                    .collect();
                let mask = Tensor::from_vec(m, (s.len, total), x.device())?.to_dtype(scores.dtype())?;
                scores.broadcast_add(&mask)?
            } else {
                scores
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let y = probs.matmul(&values)?.to_dtype(x.dtype())?;
            outs.push(y.transpose(0, 1)?.reshape((s.len, h * d))?);
        }
        let y = Tensor::cat(&outs, 0)?;
        self.o.forward(&y)
    }
}
