//! A model's projections: GGUF-quantized (`QMatMul`), dense, or FP8 (E4M3 with 128×128 block
//! factors, on the CPU or in device memory), each with an optional bias; the gated MLP's input
//! projections; and, on CUDA, how a fused step takes a projection (the few-row kernels where they
//! apply, with the norm or the residual add folded in).

use std::sync::Arc;

use candle_core::quantized::QMatMul;
#[cfg(feature = "cuda")]
use candle_core::Device;
use candle_core::{DType, Module, Result, Tensor};

use super::fp8::BlockFp8;

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

/// Up to this many rows an FP8 projection on CUDA takes the tensor-core FP8 GEMM where the
/// few-row kernel (up to 8 rows) does not; past it (prefill) the weight is dequantized once per
/// call for cuBLAS, which is compute-bound there. Measured on an H100 at the 7B shape's
/// projections: `gemm_fp8` is faster than dequantizing and then cuBLAS at 128 rows (0.66x of
/// its time for q/k/v), slower at 256 (1.1x). A pick that gives those rows to cuBLASLt's FP8
/// GEMM (`gemm_fp8_lt`, compute-bound there too but on FP8 tensor cores) takes them at any count.
#[cfg(feature = "cuda")]
pub(super) const FP8_GEMM_ROWS: usize = 128;

/// An FP8 weight on a CUDA device: E4M3 bytes `[rows, cols]` (u8), the f32 factors of its 128×128
/// blocks, and the kernels that read them (the few-row product, the tensor-core GEMM and the
/// dequantization).
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

    /// Rows `start..start + len` of this weight, sharing its memory (`start` and `len` whole
    /// 128-row blocks, so the rows keep their own factors).
    pub(super) fn rows(&self, start: usize, len: usize) -> Result<DeviceFp8> {
        let b = super::fp8::BLOCK;
        if start % b != 0 || len % b != 0 {
            candle_core::bail!("FP8 rows {start}..{} do not lie on {b}-row blocks", start + len);
        }
        Ok(DeviceFp8 {
            bytes: self.bytes.narrow(0, start, len)?,
            scale: self.scale.narrow(0, start / b, len / b)?,
            kernels: self.kernels.clone(),
        })
    }

    /// `x @ Wᵀ` for `x` of shape `[.., cols]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, cols) = self.bytes.dims2()?;
        let dims = x.dims().to_vec();
        let x2 = x.reshape((x.elem_count() / cols.max(1), cols))?.contiguous()?;
        // Up to 8 rows `gemv_fp8` reads the bytes once in registers; more rows on it would read
        // them again per 8 (on an H100 at 32 rows, four launches ran at 0.43x of `gemm_fp8`).
        let fast = match self.kernels.gemv_fp8(&x2, &self.bytes, &self.scale, None)? {
            None if x2.dim(0)? <= FP8_GEMM_ROWS || super::fused::gemm_fp8_picks_lt(x2.dim(0)?) => {
                self.kernels.gemm_fp8(&x2, &self.bytes, &self.scale)?
            }
            y => y,
        };
        let y = match fast {
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

    /// The weight of a projection without bias as the norm-fused one-row kernels take it: dense,
    /// or FP8 on the device.
    #[cfg(feature = "cuda")]
    pub(super) fn row_weight(&self) -> Option<super::fused::RowWeight<'_>> {
        match self {
            Linear::Fp8Cuda(w, None) => Some(super::fused::RowWeight::Fp8 { bytes: &w.bytes, scale: &w.scale }),
            _ => self.plain_weight().map(super::fused::RowWeight::Dense),
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
                    // A CUDA model holds `Fp8Cuda`; these bytes live in host memory.
                    candle_core::bail!("CPU-held FP8 weights take CPU activations");
                }
                let dims = x.dims().to_vec();
                let n = x.elem_count() / w.cols.max(1);
                let mut xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                if super::fp8::activation_tiles() {
                    super::fp8::round_activation_tiles(&mut xs, w.cols);
                }
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

/// The gated MLP's input projections: apart (GGUF; FP8 on the CPU, or where gate and up are not
/// whole 128-row blocks), or as one matrix `[gate; up]` (dense weights, FP8 on CUDA), one GEMM
/// instead of two.
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
