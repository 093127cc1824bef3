//! The static KV cache of `Model::forward`: per layer, buffers `(batch, kv_heads, capacity,
//! head_dim)` that grow by doubling, copied across a batch after a prefill (`expand`) and narrowed
//! as samples finish (`retain`). The serving engine's paged cache is `paged`'s.

use candle_core::{Result, Tensor};

/// One layer's keys and values: buffers `(batch, kv_heads, capacity, head_dim)` of which the first
/// `len` positions are filled. A step writes its positions in place; the buffers grow by
/// doubling, so a decode step copies one position, not the whole cache.
#[derive(Debug, Clone)]
pub(super) struct LayerCache {
    pub(super) k: Tensor,
    pub(super) v: Tensor,
    pub(super) len: usize,
}

/// Spare positions a new cache starts with (a prompt plus this many steps before it first grows).
pub(super) const CACHE_SPARE: usize = 512;

impl LayerCache {
    pub(super) fn new(k: &Tensor, v: &Tensor, spare: usize) -> Result<LayerCache> {
        let (b, h, t, d) = k.dims4()?;
        let cap = t + spare.max(1);
        let kb = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
        let vb = Tensor::zeros((b, h, cap, d), v.dtype(), v.device())?;
        kb.slice_set(&k.contiguous()?, 2, 0)?;
        vb.slice_set(&v.contiguous()?, 2, 0)?;
        Ok(LayerCache { k: kb, v: vb, len: t })
    }

    /// Makes room for `extra` more positions.
    pub(super) fn reserve(&mut self, extra: usize) -> Result<()> {
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

    pub(super) fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let t = k.dim(2)?;
        self.reserve(t)?;
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += t;
        Ok(())
    }

    /// The filled positions, as views into the buffers.
    pub(super) fn keys(&self) -> Result<Tensor> {
        self.k.narrow(2, 0, self.len)
    }

    pub(super) fn values(&self) -> Result<Tensor> {
        self.v.narrow(2, 0, self.len)
    }
}

/// Keys and values of every layer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub(super) layers: Vec<Option<LayerCache>>,
    /// Spare positions a layer's buffers start with (0: `CACHE_SPARE`).
    pub(super) spare: usize,
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
