//! FP8 weights and cache entries in DeepSeek-V3's layout: E4M3 bytes (the `float8` crate's
//! conversion, CUDA's `__nv_cvt_float_to_fp8` with saturation: round to nearest even, ±448 at
//! most, NaN kept), one `f32` dequantization factor (`weight_scale_inv`) per 128×128 block of a
//! weight, and one per (token, head) row of the KV cache. Owns the conversion both ways and the
//! CPU product `x · Wᵀ` that reads the bytes as they are.
//!
//! Why blocks: one scale per tensor lets a few large weights crush the rest into E4M3's
//! subnormals; a scale per 128×128 tile keeps every tile's largest value at 448. The product sums
//! each block's 128 terms in `f32` and only then multiplies by the block's factor, as DeepSeek's
//! kernels promote partial sums every 128 elements.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows and columns of one weight block.
pub const BLOCK: usize = 128;
/// The largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;
/// Below this many rows the product reads FP8 bytes directly; above, it dequantizes the weight
/// once and multiplies dense (measured on 2 cores with the test model: the direct loop wins up
/// to about 8 rows, the dense GEMM beyond).
pub const DIRECT_ROWS: usize = 8;

/// The E4M3 byte nearest `x` (ties to even, saturating at ±448, NaN to 0x7F).
pub fn encode(x: f32) -> u8 {
    float8::F8E4M3::from_f32(x).to_bits()
}

/// The value of an E4M3 byte (0x7F and 0xFF are NaN).
pub fn decode(b: u8) -> f32 {
    table()[b as usize]
}

/// The value of a finite E4M3 byte from its bits, without a table (the form a compiler turns into
/// vector instructions): a normal byte's exponent and mantissa moved into an `f32`'s fields with
/// the bias difference (127 - 7) added; a subnormal one (exponent 0) is `mantissa × 2⁻⁹`. Wrong for
/// the NaN codes, which `BlockFp8` never holds.
#[inline(always)]
fn decode_finite(b: u8) -> f32 {
    let b = b as u32;
    let sign = (b & 0x80) << 24;
    let em = b & 0x7F;
    let normal = f32::from_bits(sign | ((em << 20) + (120 << 23)));
    let sub = f32::from_bits(sign | (em as f32 * (1.0 / 512.0)).to_bits());
    if em < 8 {
        sub
    } else {
        normal
    }
}

/// `Σ a·b` over equal-length slices with eight partial sums, so the loop vectorizes (one running
/// sum would fix the order of additions and keep it scalar).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Every byte's value, computed once.
pub fn table() -> &'static [f32; 256] {
    static T: OnceLock<[f32; 256]> = OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|b| float8::F8E4M3::from_bits(b as u8).to_f32()))
}

/// Why a weight cannot be held in FP8.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Fp8Error {
    #[error("{0} values for a {1}×{2} weight")]
    Size(usize, usize, usize),
    #[error("{0} block factors for a {1}×{2} weight (expected {3})")]
    Scales(usize, usize, usize, usize),
    #[error("a weight holds {0} at ({1}, {2}): FP8 keeps finite values only")]
    NotFinite(f32, usize, usize),
    #[error("GEMM kernel pick {0:?}: {1}")]
    Pick(String, String),
    #[error("dense layer {0}: the model has {1} layers (0 to {max}, or -1 to -{1})", max = .1.saturating_sub(1))]
    Layer(i64, usize),
}

/// Layer indices as given (negative ones counted from the end: `-1` is the last) resolved
/// against a model of `layers` layers: sorted, each once.
pub fn resolve_layers(given: &[i64], layers: usize) -> Result<Vec<usize>, Fp8Error> {
    let n = layers as i64;
    let mut out: Vec<usize> = given
        .iter()
        .map(|&i| match i {
            i if (0..n).contains(&i) => Ok(i as usize),
            i if (-n..0).contains(&i) => Ok((n + i) as usize),
            i => Err(Fp8Error::Layer(i, layers)),
        })
        .collect::<Result<_, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A pick of kernel by row count, `ROWS:KERNEL,…,max:KERNEL` (up to ROWS rows that kernel, the
/// last for any more), as indices into `kernels`, whose names may be given without `prefix`:
/// `(most rows, index)` pairs, the row counts rising and the last `usize::MAX`. How CUDA's FP8
/// GEMM is told which of its kernels to run (`fused::set_gemm_fp8_pick`).
pub fn parse_pick(spec: &str, kernels: &[&str], prefix: &str) -> Result<Vec<(usize, usize)>, Fp8Error> {
    let bad = |why: String| Fp8Error::Pick(spec.to_string(), why);
    let mut pick: Vec<(usize, usize)> = Vec::new();
    for part in spec.split(',') {
        let Some((rows, name)) = part.split_once(':') else {
            return Err(bad(format!("{part:?} is not ROWS:KERNEL")));
        };
        let rows = match rows.trim() {
            "max" => usize::MAX,
            r => r.parse().map_err(|_| bad(format!("{r:?} is not a row count")))?,
        };
        let name = name.trim();
        let Some(i) = kernels.iter().position(|k| *k == name || k.strip_prefix(prefix) == Some(name)) else {
            return Err(bad(format!("no kernel {name:?} (there are {})", kernels.join(", "))));
        };
        if pick.last().is_some_and(|&(last, _)| last >= rows) {
            return Err(bad("row counts must rise".into()));
        }
        pick.push((rows, i));
    }
    if pick.last().is_none_or(|&(last, _)| last != usize::MAX) {
        return Err(bad("the last entry must be max:KERNEL".into()));
    }
    Ok(pick)
}

/// A `rows × cols` weight in E4M3 with one dequantization factor per 128×128 block: element
/// `(r, c)` is `decode(data[r * cols + c]) * scale_inv[(r / 128) * col_blocks + c / 128]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockFp8 {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
    pub scale_inv: Vec<f32>,
}

impl BlockFp8 {
    pub fn row_blocks(&self) -> usize {
        self.rows.div_ceil(BLOCK)
    }

    pub fn col_blocks(&self) -> usize {
        self.cols.div_ceil(BLOCK)
    }

    /// Quantizes a row-major weight: each block's factor is its largest magnitude over 448 (1
    /// for an all-zero block), each element its nearest E4M3 value after division.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<BlockFp8, Fp8Error> {
        if w.len() != rows * cols {
            return Err(Fp8Error::Size(w.len(), rows, cols));
        }
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return Err(Fp8Error::NotFinite(w[i], i / cols, i % cols));
        }
        let (rb, cb) = (rows.div_ceil(BLOCK), cols.div_ceil(BLOCK));
        let mut scale_inv = vec![1f32; rb * cb];
        for (i, s) in scale_inv.iter_mut().enumerate() {
            let (br, bc) = (i / cb, i % cb);
            let mut amax = 0f32;
            for r in br * BLOCK..((br + 1) * BLOCK).min(rows) {
                for c in bc * BLOCK..((bc + 1) * BLOCK).min(cols) {
                    amax = amax.max(w[r * cols + c].abs());
                }
            }
            if amax > 0.0 {
                *s = amax / E4M3_MAX;
            }
        }
        let mut data = vec![0u8; rows * cols];
        data.par_chunks_mut(cols.max(1)).enumerate().for_each(|(r, out)| {
            let srow = &scale_inv[(r / BLOCK) * cb..(r / BLOCK + 1) * cb];
            for (c, o) in out.iter_mut().enumerate() {
                *o = encode(w[r * cols + c] / srow[c / BLOCK]);
            }
        });
        Ok(BlockFp8 { rows, cols, data, scale_inv })
    }

    /// A weight as a checkpoint stores it: its bytes and its `weight_scale_inv`.
    pub fn from_parts(rows: usize, cols: usize, data: Vec<u8>, scale_inv: Vec<f32>) -> Result<BlockFp8, Fp8Error> {
        if data.len() != rows * cols {
            return Err(Fp8Error::Size(data.len(), rows, cols));
        }
        let want = rows.div_ceil(BLOCK) * cols.div_ceil(BLOCK);
        if scale_inv.len() != want {
            return Err(Fp8Error::Scales(scale_inv.len(), rows, cols, want));
        }
        if let Some(i) = data.iter().position(|b| b & 0x7F == 0x7F) {
            return Err(Fp8Error::NotFinite(f32::NAN, i / cols, i % cols));
        }
        if let Some(i) = scale_inv.iter().position(|s| !s.is_finite()) {
            return Err(Fp8Error::NotFinite(scale_inv[i], i / cols.div_ceil(BLOCK), i % cols.div_ceil(BLOCK)));
        }
        Ok(BlockFp8 { rows, cols, data, scale_inv })
    }

    /// The weight in `f32`, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let cb = self.col_blocks();
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols.max(1)).enumerate().for_each(|(r, o)| {
            let srow = &self.scale_inv[(r / BLOCK) * cb..(r / BLOCK + 1) * cb];
            let q = &self.data[r * self.cols..(r + 1) * self.cols];
            for (c, v) in o.iter_mut().enumerate() {
                *v = decode_finite(q[c]) * srow[c / BLOCK];
            }
        });
        out
    }

    /// Multiplies every factor by `f` (folds a constant scale into the weight exactly).
    pub fn scale(&mut self, f: f32) {
        for s in &mut self.scale_inv {
            *s *= f;
        }
    }

    /// `x · Wᵀ` for `n` row-major rows of `x` (`n × cols`), as `n × rows`. Each output reads its
    /// weight row's bytes once for all `n` rows; every block's 128 products are summed in `f32`
    /// and then scaled and added to the total.
    pub fn matmul_t(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.cols);
        let cb = self.col_blocks();
        // Output-major (rows × n) so each task owns one weight row; transposed at the end.
        let mut by_row = vec![0f32; self.rows * n];
        let fast = simd_available();
        by_row.par_chunks_mut(n.max(1)).enumerate().for_each(|(r, out)| {
            let q = &self.data[r * self.cols..(r + 1) * self.cols];
            let srow = &self.scale_inv[(r / BLOCK) * cb..(r / BLOCK + 1) * cb];
            if fast {
                // SAFETY: `simd_available` checked the CPU has the features.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    row_avx2(q, srow, x, out)
                }
            } else {
                row_product(q, srow, x, out)
            }
        });
        let mut y = vec![0f32; n * self.rows];
        for r in 0..self.rows {
            for i in 0..n {
                y[i * self.rows + r] = by_row[r * n + i];
            }
        }
        y
    }

    /// Bytes held: the E4M3 values and the factors.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * self.scale_inv.len()
    }
}

/// One weight row's products with every row of `x` (`out.len()` rows): per 128-column block the
/// bytes decoded once, dotted with each row in `f32`, and the sum scaled by the block's factor.
#[inline(always)]
fn row_product(q: &[u8], srow: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = q.len();
    let mut w = [0f32; BLOCK];
    for (b, &s) in srow.iter().enumerate() {
        let lo = b * BLOCK;
        let hi = (lo + BLOCK).min(cols);
        for (wi, &qi) in w.iter_mut().zip(&q[lo..hi]) {
            *wi = decode_finite(qi);
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o += dot(&x[i * cols + lo..i * cols + hi], &w[..hi - lo]) * s;
        }
    }
}

/// `row_product` compiled for AVX2 and FMA (the portable build targets SSE2 only; the dense
/// GEMM picks its kernels at run time too).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(q: &[u8], srow: &[f32], x: &[f32], out: &mut [f32]) {
    row_product(q, srow, x, out)
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantizes rows of `width` values each to E4M3 with one factor per row (the KV cache's
/// per-token, per-head scale): returns the bytes and the factors.
pub fn quantize_rows(x: &[f32], width: usize) -> (Vec<u8>, Vec<f32>) {
    let rows = x.len() / width.max(1);
    let mut bytes = vec![0u8; x.len()];
    let mut scales = vec![1f32; rows];
    for ((row, out), s) in x.chunks(width).zip(bytes.chunks_mut(width)).zip(scales.iter_mut()) {
        *s = tile_factor(row);
        for (o, v) in out.iter_mut().zip(row) {
            *o = encode(v / *s);
        }
    }
    (bytes, scales)
}

/// The dequantization factor of one row or tile quantized on its own: its largest finite magnitude
/// over 448, or 1 where every value is zero.
fn tile_factor(values: &[f32]) -> f32 {
    let amax = values.iter().fold(0f32, |m, v| if v.is_finite() { m.max(v.abs()) } else { m });
    if amax > 0.0 {
        amax / E4M3_MAX
    } else {
        1.0
    }
}

/// Whether the CPU's FP8 products first round their activations to E4M3 per 1×128 tile of each
/// row, as CUDA's FP8 GEMM through cuBLASLt (`gemm_fp8_lt`, W8A8) quantizes them, so that its
/// accuracy can be measured on the CPU (`fp8_accuracy`'s `_a8` arms). Off unless set: the CPU
/// itself gains no speed from it.
static ACTIVATION_TILES: AtomicBool = AtomicBool::new(false);

/// Turns the CPU's activation rounding (`ACTIVATION_TILES`) on or off for the whole process.
pub fn set_activation_tiles(on: bool) {
    ACTIVATION_TILES.store(on, Ordering::Relaxed);
}

/// Whether the CPU's FP8 products round their activations first.
pub fn activation_tiles() -> bool {
    ACTIVATION_TILES.load(Ordering::Relaxed)
}

/// Replaces every 128-wide tile of every row of `x` (rows of `cols`; a row's last tile may be
/// shorter) by its E4M3 rounding: each value divided by the tile's factor (its largest magnitude
/// / 448, 1 for an all-zero tile), encoded, decoded and multiplied back, as `fp8_quant_rows`
/// (fp8.cu) quantizes the rows for cuBLASLt.
pub fn round_activation_tiles(x: &mut [f32], cols: usize) {
    for row in x.chunks_mut(cols.max(1)) {
        for tile in row.chunks_mut(BLOCK) {
            let f = tile_factor(tile);
            for v in tile.iter_mut() {
                *v = decode(encode(*v / f)) * f;
            }
        }
    }
}

/// How many parts the many-row FP8 GEMM on CUDA splits k into (`gemm_fp8` in fused.rs): `tiles`
/// output tiles of 128 columns, `steps` 128-wide steps of k, room for `slots` blocks resident at
/// once on the GPU, and `stages` steps each part keeps at least (its pipeline's depth). As many
/// parts as still fit in one wave of resident blocks: more blocks keep more weight bytes in
/// flight, and a second wave would start only when the first ends (measured on an H100 at 64
/// rows: 288 blocks on 264 slots took twice the time of 192 at 32 rows).
pub fn gemm_splits(tiles: usize, steps: usize, slots: usize, stages: usize) -> usize {
    (slots / tiles.max(1)).min(steps / stages.max(1)).max(1)
}

/// `splits` (as `gemm_splits` chose) for a kernel whose splits of k form one thread block cluster
/// of at most `cap` blocks, over `steps` 128-wide steps: within the cap, with the steps spread so
/// that every block of the cluster gets some (each block takes `ceil(steps / splits)` of them, so
/// 9 steps in 8 parts would leave 3 blocks idle), and at least 1.
pub fn cluster_splits(splits: usize, steps: usize, cap: usize) -> usize {
    let per = steps.div_ceil(splits.clamp(1, cap.max(1))).max(1);
    steps.div_ceil(per).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_reads_the_same_weight_dequantize_gives() {
        let (rows, cols, n) = (130, 260, 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0).collect();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 997.0).collect();
        let q = BlockFp8::quantize(&w, rows, cols).unwrap();
        let dense = q.dequantize();
        let y = q.matmul_t(&x, n);
        for i in 0..n {
            for r in 0..rows {
                let want: f64 = (0..cols).map(|c| x[i * cols + c] as f64 * dense[r * cols + c] as f64).sum();
                let got = y[i * rows + r] as f64;
                assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "({i}, {r}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn the_bit_decoding_agrees_with_the_table_on_every_finite_code() {
        for b in (0..=255u8).filter(|b| b & 0x7F != 0x7F) {
            assert_eq!(decode_finite(b).to_bits(), decode(b).to_bits(), "{b:#04x}");
        }
    }

    #[test]
    fn a_checkpoint_byte_that_is_nan_is_refused() {
        let mut data = vec![0u8; 6];
        data[4] = 0xFF;
        assert!(matches!(BlockFp8::from_parts(2, 3, data, vec![1.0]), Err(Fp8Error::NotFinite(_, 1, 1))));
    }

    #[test]
    fn a_weight_that_is_not_finite_is_refused_with_its_place() {
        let mut w = vec![0.5f32; 4 * 3];
        w[7] = f32::NAN;
        assert!(matches!(BlockFp8::quantize(&w, 4, 3), Err(Fp8Error::NotFinite(_, 2, 1))));
    }

    #[test]
    fn the_gemm_splits_k_into_as_many_parts_as_fit_one_wave_of_blocks() {
        // 96 tiles on 264 slots: 2 parts (192 blocks), not 3 (288, a second wave).
        assert_eq!(gemm_splits(96, 32, 264, 3), 2);
        assert_eq!(gemm_splits(96, 32, 396, 3), 4);
    }

    #[test]
    fn the_gemm_keeps_a_pipeline_of_steps_in_each_part_and_at_least_one_part() {
        assert_eq!(gemm_splits(32, 32, 396, 3), 10);
        assert_eq!(gemm_splits(344, 32, 264, 3), 1);
        assert_eq!(gemm_splits(8, 2, 264, 3), 1);
    }

    #[test]
    fn a_cluster_kernels_splits_stay_within_the_cap_and_leave_no_block_without_steps() {
        assert_eq!(cluster_splits(12, 86, 8), 8);
        assert_eq!(cluster_splits(8, 9, 8), 5);
        assert_eq!(cluster_splits(10, 32, 8), 8);
        for steps in 1..200 {
            for splits in 1..20 {
                let s = cluster_splits(splits, steps, 8);
                let per = steps.div_ceil(s);
                assert!((1..=8).contains(&s) && s <= splits.max(1), "{splits} splits of {steps}: {s}");
                assert!((s - 1) * per < steps, "{splits} splits of {steps}: block {} idle", s - 1);
            }
        }
    }

    #[test]
    fn a_cluster_kernel_over_no_steps_still_launches_one_block_along_k() {
        assert_eq!(cluster_splits(4, 0, 8), 1);
        assert_eq!(cluster_splits(0, 5, 8), 1);
    }

    #[test]
    fn checkpoint_parts_of_the_wrong_size_are_refused() {
        assert!(BlockFp8::from_parts(129, 10, vec![0; 1290], vec![1.0]).is_err());
        assert!(BlockFp8::from_parts(129, 10, vec![0; 1290], vec![1.0, 1.0]).is_ok());
    }
}
