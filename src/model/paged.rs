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

/// How the cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFormat {
    /// In the model's compute type.
    Dense(DType),
    /// E4M3 bytes with one `f32` factor per (token, head) row: half of bf16's bytes (plus 4 per
    /// row), a quarter of f32's.
    Fp8,
}

impl KvFormat {
    pub fn of(dtype: DType, fp8: bool) -> KvFormat {
        if fp8 {
            KvFormat::Fp8
        } else {
            KvFormat::Dense(dtype)
        }
    }
}

/// Keys and values of every layer, in blocks; with FP8, each (block, head, offset) row's factor
/// in `k_scale`/`v_scale`, `(blocks, kv_heads, block_size, 1)`.
pub struct PagedCache {
    pub block_size: usize,
    pub blocks: usize,
    pub format: KvFormat,
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub k_scale: Vec<Tensor>,
    pub v_scale: Vec<Tensor>,
    /// FP8 with a power-of-two head size: the normalized Hadamard matrix rows are multiplied by
    /// before quantizing and after reading. It is orthonormal and its own inverse, so attention
    /// sees the same vectors, but it spreads a row's few large channels (RoPE'd keys have them)
    /// over all channels, so the row's one factor fits every channel better.
    rotation: Option<Tensor>,
    /// FP8: every byte's value, to decode the cache with one lookup.
    lut: Option<Tensor>,
}

/// The `d × d` Sylvester Hadamard matrix over `sqrt(d)` (`d` a power of two).
fn hadamard(d: usize, device: &Device) -> Result<Tensor> {
    let scale = 1.0 / (d as f32).sqrt();
    let m: Vec<f32> =
        (0..d * d).map(|i| if ((i / d) & (i % d)).count_ones() % 2 == 0 { scale } else { -scale }).collect();
    Tensor::from_vec(m, (d, d), device)
}

impl PagedCache {
    /// Bytes one block takes over all layers (keys and values).
    pub fn block_bytes(cfg: &Config, block_size: usize, format: KvFormat) -> usize {
        let row = match format {
            KvFormat::Dense(dtype) => cfg.head_dim * dtype.size_in_bytes(),
            KvFormat::Fp8 => cfg.head_dim + 4,
        };
        2 * cfg.layers * cfg.kv_heads * block_size * row
    }

    pub fn new(
        cfg: &Config,
        blocks: usize,
        block_size: usize,
        format: KvFormat,
        device: &Device,
    ) -> Result<PagedCache> {
        let shape = (blocks, cfg.kv_heads, block_size, cfg.head_dim);
        let dtype = match format {
            KvFormat::Dense(d) => d,
            KvFormat::Fp8 => DType::U8,
        };
        // The CUDA kernels quantize rows as they are (no rotation): measured on the CPU, the
        // rotation takes the negative log-likelihood's increase from 0.38 % to 0.12 %, both inside
        // the 1 % goal, and rotating there would cost a transform of every row and query.
        let rotation = match format {
            KvFormat::Fp8 if cfg.head_dim.is_power_of_two() && device.is_cpu() => Some(hadamard(cfg.head_dim, device)?),
            _ => None,
        };
        let lut = match format {
            KvFormat::Fp8 => Some(Tensor::new(&super::fp8::table()[..], device)?),
            KvFormat::Dense(_) => None,
        };
        let mut cache = PagedCache {
            block_size,
            blocks,
            format,
            k: vec![],
            v: vec![],
            k_scale: vec![],
            v_scale: vec![],
            rotation,
            lut,
        };
        for _ in 0..cfg.layers {
            cache.k.push(Tensor::zeros(shape, dtype, device)?);
            cache.v.push(Tensor::zeros(shape, dtype, device)?);
            if format == KvFormat::Fp8 {
                cache.k_scale.push(Tensor::zeros((blocks, cfg.kv_heads, block_size, 1), DType::F32, device)?);
                cache.v_scale.push(Tensor::zeros((blocks, cfg.kv_heads, block_size, 1), DType::F32, device)?);
            }
        }
        Ok(cache)
    }

    /// Layer `l`'s keys and values as the fused kernels take them.
    #[cfg(feature = "cuda")]
    pub fn layer(&self, l: usize) -> super::fused::PagedKv<'_> {
        super::fused::PagedKv {
            k: &self.k[l],
            v: &self.v[l],
            scales: (self.format == KvFormat::Fp8).then(|| (&self.k_scale[l], &self.v_scale[l])),
        }
    }

    /// Drops the FP8 rotation (benchmarks compare the two).
    pub fn without_rotation(mut self) -> PagedCache {
        self.rotation = None;
        self
    }

    /// Copies block `from` into block `to` in every layer (a sample's own copy of a shared
    /// partial block).
    pub fn copy_block(&self, from: u32, to: u32) -> Result<()> {
        for t in self.k.iter().chain(&self.v).chain(&self.k_scale).chain(&self.v_scale) {
            // A copy of its own: a narrowed view shares the cache's storage, which `slice_set`
            // refuses.
            let src = t.narrow(0, from as usize, 1)?.copy()?;
            t.slice_set(&src, 0, to as usize)?;
        }
        Ok(())
    }

    /// Writes `x` (`(rows, head_dim)`, one row per token and head) at cache rows `rows` (as
    /// `write_rows` gives them) of layer `l`'s keys (`values` false) or values.
    fn write(&self, l: usize, values: bool, x: &Tensor, rows: &Tensor) -> Result<()> {
        let (cache, scales) = if values { (&self.v[l], &self.v_scale) } else { (&self.k[l], &self.k_scale) };
        let (blocks, kvh, bs, d) = cache.dims4()?;
        let flat = cache.reshape((blocks * kvh * bs, d))?;
        match self.format {
            KvFormat::Dense(_) => flat.scatter_set(rows, &x.contiguous()?, 0),
            KvFormat::Fp8 => {
                let n = x.dim(0)?;
                let x = x.to_dtype(DType::F32)?;
                let x = match &self.rotation {
                    Some(h) => x.matmul(h)?,
                    None => x,
                };
                let (bytes, factors) = super::fp8::quantize_rows(&x.flatten_all()?.to_vec1()?, d);
                flat.scatter_set(rows, &Tensor::from_vec(bytes, (n, d), x.device())?, 0)?;
                let s = scales[l].reshape((blocks * kvh * bs, 1))?;
                s.scatter_set(&rows.narrow(1, 0, 1)?.contiguous()?, &Tensor::from_vec(factors, (n, 1), x.device())?, 0)
            }
        }
    }

    /// Layer `l`'s keys (`values` false) or values of the blocks `table` names, as
    /// `(kv_heads, total, head_dim)` in `dtype`: the first `total` positions of a sequence.
    fn read(&self, l: usize, values: bool, table: &Tensor, total: usize, dtype: DType) -> Result<Tensor> {
        let cache = if values { &self.v[l] } else { &self.k[l] };
        let (_, kvh, bs, d) = cache.dims4()?;
        let nb = table.dim(0)?;
        let gather = |c: &Tensor, width: usize| -> Result<Tensor> {
            c.index_select(table, 0)?.transpose(0, 1)?.reshape((kvh, nb * bs, width))?.narrow(1, 0, total)
        };
        match self.format {
            KvFormat::Dense(_) => gather(cache, d),
            KvFormat::Fp8 => {
                let (scales, lut) = match (&self.lut, values) {
                    (Some(lut), true) => (&self.v_scale[l], lut),
                    (Some(lut), false) => (&self.k_scale[l], lut),
                    (None, _) => candle_core::bail!("an FP8 cache without its decoding table"),
                };
                let bytes = gather(cache, d)?.flatten_all()?;
                let x = lut.index_select(&bytes, 0)?.reshape((kvh, total, d))?;
                let x = x.broadcast_mul(&gather(scales, 1)?)?;
                let x = match &self.rotation {
                    Some(h) => x.reshape((kvh * total, d))?.matmul(h)?.reshape((kvh, total, d))?,
                    None => x,
                };
                x.to_dtype(dtype)
            }
        }
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

/// The tokens of a step whose logits it returns: every token, or each segment's last where the
/// segment asks for logits.
fn logit_rows(batch: &Batch, every: bool) -> Vec<u32> {
    if every {
        return (0..batch.ids.len() as u32).collect();
    }
    batch.segments.iter().filter(|s| s.logits).map(|s| (s.start + s.len - 1) as u32).collect()
}

impl Model {
    /// Runs one step: writes every token's keys and values into its sequence's blocks and
    /// returns the next-token logits (f32) of the segments that ask for them, in order,
    /// `(segments with logits, vocab)`. On CUDA with the fused kernels a batch must list its
    /// one-token (decode) segments first.
    pub fn forward_paged(&self, batch: &Batch, cache: &PagedCache) -> Result<Tensor> {
        self.paged_step(batch, cache, false)
    }

    /// `forward_paged`, returning the next-token logits of every token of the batch, `(tokens,
    /// vocab)`, whatever its segments ask: a text scored in one prompt chunk (each position's
    /// prediction of the next) instead of one decode row per position, which gathers the
    /// sequence's cache once per position.
    pub fn forward_paged_every(&self, batch: &Batch, cache: &PagedCache) -> Result<Tensor> {
        self.paged_step(batch, cache, true)
    }

    fn paged_step(&self, batch: &Batch, cache: &PagedCache, every: bool) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = batch.ids.len();
        if n == 0 {
            candle_core::bail!("an empty step");
        }
        #[cfg(feature = "cuda")]
        if let (Some(k), true) = (&self.kernels, self.fused_decode()) {
            // Prompt chunks need the tiled prefill kernel (16-bit types, shared memory enough);
            // without it such a step takes the generic path.
            let chunks = batch.segments.iter().any(|s| s.len > 1);
            if !chunks || k.has_prefill(cfg.head_dim, cache.format == KvFormat::Fp8) {
                return self.forward_paged_fused(k, batch, cache, every);
            }
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
            let a = layer.attention_paged(cfg, &h, (&cos, &sin), (cache, l), &rows, batch, &tables)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            x = (&x + layer.down.forward(&layer.mlp.forward(&h)?)?)?;
        }
        let last = logit_rows(batch, every);
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
        (cache, l): (&PagedCache, usize),
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
        cache.write(l, false, &k, rows)?;
        cache.write(l, true, &v, rows)?;
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
            let expand = |y: Tensor| -> Result<Tensor> {
                if rep == 1 {
                    return Ok(y);
                }
                y.unsqueeze(1)?.broadcast_as((kvh, rep, total, d))?.reshape((h, total, d))
            };
            // (kv_heads, total, d): the sequence's positions, gathered block by block.
            let keys = work(expand(cache.read(l, false, table, total, x.dtype())?)?)?;
            let values = work(expand(cache.read(l, true, table, total, x.dtype())?)?)?;
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

/// A step's sequence data on the device, for the fused kernels.
#[cfg(feature = "cuda")]
struct DeviceStep {
    /// Each token's position.
    pos: Tensor,
    /// The segments' block tables, back to back.
    tables: Tensor,
    /// Each token's offset into `tables`.
    tab: Tensor,
    /// The decode rows (the leading one-token segments): their table offsets and lengths.
    rows: usize,
    row_tab: Tensor,
    row_lens: Tensor,
    max_len: usize,
    /// Each prefill segment: (first token, tokens, context, its block table alone).
    prefills: Vec<(usize, usize, usize, Tensor)>,
    /// The first decode row's table alone (the one-row fused projection writes through it).
    first_table: Option<Tensor>,
    /// Decode rows that share a prefix, when there are any and the kernels take them.
    cascade: Option<CascadeStep>,
}

/// The decode rows' shared prefixes laid out for `attn_cascade` (paged.cu): per query block of up
/// to 64 rows of one group, (offset of its rows in `rows`, rows, its group's table offset, shared
/// positions); each decode row's first position of its own (0 outside every group).
#[cfg(feature = "cuda")]
struct CascadeStep {
    blocks: Tensor,
    rows: Tensor,
    starts: Tensor,
    query_blocks: usize,
    max_shared: usize,
    host_starts: Vec<u32>,
    host_lens: Vec<u32>,
}

/// Rows of a cascade query block (`FA_Q` in paged.cu).
#[cfg(feature = "cuda")]
const CASCADE_ROWS: usize = 64;
/// The least shared prefix worth a cascade group: one key tile of the kernel (`FA_K`).
#[cfg(feature = "cuda")]
const CASCADE_MIN_SHARED: usize = 64;
/// The least a step's groups must spare for the extra launch per layer to pay: at the 7B shape a
/// position is 16 KiB of keys and values per layer, so 1,024 positions are 16 MiB, about 5 µs of
/// an H100's bandwidth, against a launch of a few µs (estimated, not measured).
#[cfg(feature = "cuda")]
const CASCADE_MIN_SAVED: usize = 1024;

#[cfg(feature = "cuda")]
impl CascadeStep {
    fn new(
        batch: &Batch,
        rows: usize,
        offsets: &[u32],
        lens: &[u32],
        block_size: usize,
        device: &Device,
    ) -> Result<Option<CascadeStep>> {
        let decode: Vec<super::cascade::Row> = batch.segments[..rows]
            .iter()
            .map(|s| super::cascade::Row { blocks: &s.blocks, context: s.context })
            .collect();
        let groups = super::cascade::groups(&decode, block_size, CASCADE_MIN_SHARED);
        if groups.is_empty() || super::cascade::saved_positions(&groups) < CASCADE_MIN_SAVED {
            return Ok(None);
        }
        let mut blocks: Vec<u32> = Vec::new();
        let mut members: Vec<u32> = Vec::new();
        let mut starts = vec![0u32; rows];
        for g in &groups {
            for chunk in g.rows.chunks(CASCADE_ROWS) {
                blocks.extend([members.len() as u32, chunk.len() as u32, offsets[g.rows[0]], g.shared as u32]);
                members.extend(chunk.iter().map(|&r| r as u32));
            }
            for &r in &g.rows {
                starts[r] = g.shared as u32;
            }
        }
        Ok(Some(CascadeStep {
            query_blocks: blocks.len() / 4,
            max_shared: groups.iter().map(|g| g.shared).max().unwrap_or(0),
            blocks: Tensor::new(blocks.as_slice(), device)?,
            rows: Tensor::new(members.as_slice(), device)?,
            starts: Tensor::new(starts.as_slice(), device)?,
            host_starts: starts,
            host_lens: lens.to_vec(),
        }))
    }

    fn args(&self) -> super::fused::Cascade<'_> {
        super::fused::Cascade {
            blocks: &self.blocks,
            rows: &self.rows,
            starts: &self.starts,
            query_blocks: self.query_blocks,
            max_shared: self.max_shared,
            row_starts: &self.host_starts,
            row_lens: &self.host_lens,
        }
    }
}

#[cfg(feature = "cuda")]
impl DeviceStep {
    /// With `cascade`, decode rows that share a prefix are grouped for `attn_cascade`.
    fn new(batch: &Batch, block_size: usize, cascade: bool, device: &Device) -> Result<DeviceStep> {
        let mut flat: Vec<u32> = Vec::new();
        let mut tab: Vec<u32> = Vec::with_capacity(batch.ids.len());
        let mut offsets = Vec::with_capacity(batch.segments.len());
        for s in &batch.segments {
            let used = (s.context + s.len).div_ceil(block_size);
            offsets.push(flat.len() as u32);
            tab.extend(std::iter::repeat_n(flat.len() as u32, s.len));
            flat.extend_from_slice(&s.blocks[..used]);
        }
        let rows = batch.segments.iter().take_while(|s| s.len == 1).count();
        if batch.segments[rows..].iter().any(|s| s.len == 1) {
            candle_core::bail!("a paged batch lists its decode segments first");
        }
        let lens: Vec<u32> = batch.segments[..rows].iter().map(|s| (s.context + 1) as u32).collect();
        let mut prefills = Vec::new();
        for s in batch.segments.iter().skip(rows) {
            let used = (s.context + s.len).div_ceil(block_size);
            prefills.push((s.start, s.len, s.context, Tensor::new(&s.blocks[..used], device)?));
        }
        let first_table = match batch.segments.first() {
            Some(s) if rows == 1 => Some(Tensor::new(&s.blocks[..(s.context + 1).div_ceil(block_size)], device)?),
            _ => None,
        };
        let cascade = if cascade && rows > 1 {
            CascadeStep::new(batch, rows, &offsets, &lens, block_size, device)?
        } else {
            None
        };
        Ok(DeviceStep {
            pos: Tensor::new(batch.positions().as_slice(), device)?,
            tables: Tensor::new(flat.as_slice(), device)?,
            tab: Tensor::new(tab.as_slice(), device)?,
            rows,
            row_tab: Tensor::new(&offsets[..rows.max(1).min(offsets.len())], device)?,
            row_lens: Tensor::new(if lens.is_empty() { &[1u32][..] } else { lens.as_slice() }, device)?,
            max_len: lens.iter().copied().max().unwrap_or(1) as usize,
            prefills,
            first_table,
            cascade,
        })
    }
}

#[cfg(feature = "cuda")]
impl Model {
    /// `forward_paged` through the fused kernels: per layer the residual add and norm, the q/k/v
    /// projection (at one row with the norm, RoPE and the cache write in one launch), RoPE with
    /// the paged cache write, split-K attention of the decode rows over their blocks, tiled
    /// attention of each prompt chunk, and the projections with their residual adds.
    fn forward_paged_fused(
        &self,
        k: &super::fused::Kernels,
        batch: &Batch,
        cache: &PagedCache,
        every: bool,
    ) -> Result<Tensor> {
        use super::llama::{normalized, project, project_onto, Linear, Mlp};
        let cfg = &self.cfg;
        let eps = cfg.rms_eps as f32;
        let device = self.device();
        let cascade = self.cascade.load(std::sync::atomic::Ordering::Relaxed)
            && k.has_cascade(cfg.head_dim, cache.format == KvFormat::Fp8);
        let step = DeviceStep::new(batch, cache.block_size, cascade, device)?;
        let q_scale =
            if self.layers.first().is_some_and(|l| l.q_scaled) { 1.0 } else { 1.0 / (cfg.head_dim as f32).sqrt() };
        let ids = Tensor::new(batch.ids.as_slice(), device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let mut delta: Option<Tensor> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let caches = cache.layer(l);
            let rope = super::fused::PagedRope {
                caches,
                tables: (&self.cos, &self.sin),
                pos: &step.pos,
                block_tables: &step.tables,
                tab: &step.tab,
                heads: cfg.heads,
                interleaved: cfg.rope_interleaved,
                q_scale,
            };
            let q = normalized(
                k,
                (&mut x, &mut delta),
                &layer.attn_norm,
                eps,
                |row| match (layer.qkv.as_ref().and_then(Linear::row_weight), &step.first_table) {
                    (Some(w), Some(table)) => k.gemv_rope_paged(row, w, &rope, table),
                    _ => Ok(None),
                },
                |h| {
                    let qkv = match &layer.qkv {
                        Some(qkv) => project(k, qkv, h)?,
                        None => Tensor::cat(&[layer.q.forward(h)?, layer.k.forward(h)?, layer.v.forward(h)?], 1)?,
                    };
                    k.rope_kv_paged(&qkv, &rope)
                },
            )?;
            let mut parts = Vec::with_capacity(1 + step.prefills.len());
            if step.rows > 0 {
                let qd = q.narrow(0, 0, step.rows)?;
                parts.push(k.attention_paged(
                    &qd,
                    caches,
                    &step.tables,
                    &step.row_tab,
                    &step.row_lens,
                    step.max_len,
                    cfg.heads,
                    step.cascade.as_ref().map(CascadeStep::args),
                )?);
            }
            for (start, len, context, table) in &step.prefills {
                let qs = q.narrow(0, *start, *len)?;
                let out = match k.attention_prefill(&qs, caches, table, *context, cfg.heads)? {
                    Some(o) => o,
                    None => candle_core::bail!("no prefill attention kernel for {:?}", self.dtype()),
                };
                parts.push(out);
            }
            let a = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 0)? };
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
        let last = logit_rows(batch, every);
        if last.is_empty() {
            return Tensor::zeros((0, cfg.vocab), DType::F32, device);
        }
        let (_, h) = k.add_rmsnorm(&x, delta.as_ref(), &self.norm, eps)?;
        let h =
            if last.len() == batch.ids.len() { h } else { h.index_select(&Tensor::new(last.as_slice(), device)?, 0)? };
        project(k, &self.lm_head, &h.contiguous()?)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copying_a_block_copies_its_keys_and_values_in_every_layer() {
        let cfg = Config::llama_7b(2, 16);
        let cfg = Config { hidden: 128, heads: 2, kv_heads: 2, head_dim: 64, ..cfg };
        let cache = PagedCache::new(&cfg, 4, 4, KvFormat::Dense(DType::F32), &Device::Cpu).unwrap();
        let block = |t: &Tensor, b: usize| t.narrow(0, b, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, t) in cache.k.iter().chain(&cache.v).enumerate() {
            let fill = Tensor::full(i as f32 + 1.0, (1, 2, 4, 64), &Device::Cpu).unwrap();
            t.slice_set(&fill, 0, 1).unwrap();
        }
        cache.copy_block(1, 3).unwrap();
        for (i, t) in cache.k.iter().chain(&cache.v).enumerate() {
            assert_eq!(block(t, 3), vec![i as f32 + 1.0; 2 * 4 * 64], "tensor {i}");
            assert_eq!(block(t, 1), block(t, 3));
        }
    }

    #[test]
    fn the_hadamard_rotation_is_its_own_inverse() {
        let h = hadamard(64, &Device::Cpu).unwrap();
        let hh = h.matmul(&h).unwrap().to_vec2::<f32>().unwrap();
        for (i, row) in hh.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-5, "({i}, {j}): {v}");
            }
        }
    }
}
