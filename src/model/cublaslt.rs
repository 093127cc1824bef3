//! The FP8 GEMM for many rows through cuBLASLt's block-scaled kernels (W8A8, DeepSeek-V3's
//! scaling): the E4M3 weight with its 128×128 block factors as operand A, the activations
//! quantized to E4M3 in 1×128 tiles (`fp8_quant_rows`, fp8.cu) as operand B, f32 accumulation
//! promoted per 128-wide step by the library, the output in the model's 16-bit dtype.
//!
//! This module owns the cuBLASLt handle, its workspace and one plan (descriptors and the
//! algorithm the heuristic chose) per shape; `fused::Kernels::gemm_fp8_with` quantizes the rows
//! and calls it. cuBLAS has the block-scaled modes from 12.9 and only on compute capability 9.0:
//! elsewhere the heuristic finds no algorithm and the caller takes its own kernels.

use std::collections::HashMap;
use std::ffi::c_void;

use candle_core::cuda_backend::cudarc::cublaslt::result as lt;
pub use candle_core::cuda_backend::cudarc::cublaslt::result::CublasError;
use candle_core::cuda_backend::cudarc::cublaslt::sys;

extern "C" {
    // cublasLt.h's setter with the attribute as its underlying 32-bit integer: the scale-mode
    // attributes (cuBLAS 12.8 and later) then need no binding newer than the toolkit's, and an
    // older library refuses them at run time rather than the build failing.
    #[link_name = "cublasLtMatmulDescSetAttribute"]
    fn set_desc_attribute(
        desc: sys::cublasLtMatmulDesc_t,
        attr: u32,
        buf: *const c_void,
        size: usize,
    ) -> sys::cublasStatus_t;
}

/// `CUBLASLT_MATMUL_DESC_A_SCALE_MODE` and `_B_SCALE_MODE`.
const A_SCALE_MODE: u32 = 31;
const B_SCALE_MODE: u32 = 32;
/// `CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F` (one f32 per 128 elements along k) and
/// `_BLK128x128_32F` (one per 128×128 block).
const SCALE_VEC128_32F: i32 = 4;
const SCALE_BLK128X128_32F: i32 = 5;
/// Workspace for the split-k algorithms the heuristic may choose.
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// One shape's descriptors and algorithm.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each was created once by `Plan::new` and is destroyed once, here.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.d);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

impl Plan {
    /// `y [rows, n] = x [rows, k] · w [n, k]ᵀ` in cuBLAS's column-major terms: A is w as a k × n
    /// matrix, transposed; B is x as k × rows; D is y as n × rows. The factors as cuBLASLt reads
    /// them, the layouts PyTorch's `_scaled_mm` hands it for the same blockwise modes: the
    /// weight's row-major `[n / 128, k / 128]` with each row padded to a multiple of 4 blocks
    /// (`fused::lt_scale`), the rows' outer-dimension-major `[k / 128, rows]` with rows a multiple
    /// of 4 (`fp8_quant_rows`). (Not yet checked on a GPU: `gpu_decode --gemm-only` measures this
    /// product's difference from the f32 one beside every kernel's.)
    ///
    /// `modes`: the scale modes of A and B; `scales`: a device address the scale pointers hold
    /// while the heuristic is asked (block-scaled operands need one there, real and aligned,
    /// though nothing is read from it). `None` where the heuristic has no algorithm.
    fn new(
        handle: sys::cublasLtHandle_t,
        out: sys::cudaDataType,
        (rows, n, k): (usize, usize, usize),
        modes: (i32, i32),
        scales: u64,
    ) -> Result<Option<Plan>, CublasError> {
        let e4m3 = sys::cudaDataType::CUDA_R_8F_E4M3;
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F)?;
        // From here on the plan owns what it holds, so an early return destroys it.
        let mut plan = Plan {
            desc,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            d: std::ptr::null_mut(),
            // SAFETY: a plain C struct of integers, for which all zeros is a value.
            algo: unsafe { std::mem::zeroed() },
        };
        plan.a = lt::create_matrix_layout(e4m3, k as u64, n as u64, k as i64)?;
        plan.b = lt::create_matrix_layout(e4m3, k as u64, rows as u64, k as i64)?;
        plan.d = lt::create_matrix_layout(out, n as u64, rows as u64, n as i64)?;
        // `CUBLAS_OP_T` (cublas_api.h's 1, an int).
        let transpose: i32 = 1;
        // SAFETY: the descriptor is live; each value is the attribute's documented type.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&transpose as *const i32).cast(),
                std::mem::size_of::<i32>(),
            )?;
            let size = std::mem::size_of::<i32>();
            set_desc_attribute(desc, A_SCALE_MODE, (&modes.0 as *const i32).cast(), size).result()?;
            set_desc_attribute(desc, B_SCALE_MODE, (&modes.1 as *const i32).cast(), size).result()?;
            plan.set_scales(scales, scales)?;
        }
        let pref = lt::create_matmul_pref()?;
        // SAFETY: `pref` is live until destroyed below; the layouts and descriptor are the plan's.
        let found = unsafe {
            let r = lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&WORKSPACE_BYTES as *const usize).cast(),
                std::mem::size_of::<usize>(),
            )
            .and_then(|()| lt::get_matmul_algo_heuristic(handle, desc, plan.a, plan.b, plan.d, plan.d, pref));
            let _ = lt::destroy_matmul_pref(pref);
            r
        };
        match found {
            Ok(h) => {
                plan.algo = h.algo;
                Ok(Some(plan))
            }
            // No algorithm for these types, modes or this GPU.
            Err(CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points the descriptor at the weight's and the rows' factors.
    ///
    /// # Safety
    /// The descriptor is live (it is, for a plan's life).
    unsafe fn set_scales(&self, a: u64, b: u64) -> Result<(), CublasError> {
        let pointer = std::mem::size_of::<u64>();
        lt::set_matmul_desc_attribute(
            self.desc,
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
            (&a as *const u64).cast(),
            pointer,
        )?;
        lt::set_matmul_desc_attribute(
            self.desc,
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
            (&b as *const u64).cast(),
            pointer,
        )
    }
}

/// The handle, its workspace (device memory the caller keeps alive) and the plans made so far.
pub struct LtGemm {
    handle: sys::cublasLtHandle_t,
    workspace: u64,
    out: sys::cudaDataType,
    plans: HashMap<(usize, usize, usize), Option<Plan>>,
}

// SAFETY: the handle and descriptors are used by one thread at a time (`Kernels` keeps this in a
// mutex) and belong to no thread in particular.
unsafe impl Send for LtGemm {}

impl Drop for LtGemm {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created once in `new`, destroyed once, after every plan made with it.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

/// Device addresses of one product's operands.
pub struct Operands {
    /// E4M3 activations `[rows, k]` and their f32 tile factors `[k / 128, rows]`.
    pub x: u64,
    pub x_scale: u64,
    /// E4M3 weight `[n, k]` and its f32 block factors `[n / 128, k / 128]`, rows padded to a
    /// multiple of 4.
    pub w: u64,
    pub w_scale: u64,
    /// The output `[rows, n]` in the dtype `LtGemm::new` was given.
    pub y: u64,
}

impl LtGemm {
    /// `workspace`: the address of `WORKSPACE_BYTES` of device memory that outlives this; `bf16`:
    /// the output dtype (else f16).
    pub fn new(workspace: u64, bf16: bool) -> Result<LtGemm, CublasError> {
        let out = if bf16 { sys::cudaDataType::CUDA_R_16BF } else { sys::cudaDataType::CUDA_R_16F };
        Ok(LtGemm { handle: lt::create_handle()?, workspace, out, plans: HashMap::new() })
    }

    /// Whether cuBLASLt has an algorithm for `rows` × `n` × `k` (the heuristic is asked once per
    /// shape).
    pub fn supports(&mut self, shape: (usize, usize, usize)) -> Result<bool, CublasError> {
        Ok(self.plan(shape)?.is_some())
    }

    fn plan(&mut self, shape: (usize, usize, usize)) -> Result<Option<&Plan>, CublasError> {
        if !self.plans.contains_key(&shape) {
            let modes = (SCALE_BLK128X128_32F, SCALE_VEC128_32F);
            let plan = Plan::new(self.handle, self.out, shape, modes, self.workspace)?;
            if plan.is_none() {
                tracing::warn!(?shape, "cuBLASLt has no block-scaled FP8 algorithm for this shape");
            }
            self.plans.insert(shape, plan);
        }
        Ok(self.plans.get(&shape).and_then(Option::as_ref))
    }

    /// Which scale modes of (A, B) cuBLASLt has an algorithm for at `shape`, with 16-bit and f32
    /// output, each as `"A/B out": "ok" or the status`: what a benchmark reports where the
    /// block-scaled product does not run.
    pub fn probe(&self, shape: (usize, usize, usize)) -> Vec<(String, String)> {
        let modes = [
            ("blk128x128/vec128", (SCALE_BLK128X128_32F, SCALE_VEC128_32F)),
            ("vec128/blk128x128", (SCALE_VEC128_32F, SCALE_BLK128X128_32F)),
            ("vec128/vec128", (SCALE_VEC128_32F, SCALE_VEC128_32F)),
            ("scalar/scalar", (0, 0)),
        ];
        let outs = [("16-bit", self.out), ("f32", sys::cudaDataType::CUDA_R_32F)];
        let mut found = Vec::new();
        for (name, m) in modes {
            for (out_name, out) in outs {
                let r = match Plan::new(self.handle, out, shape, m, self.workspace) {
                    Ok(Some(_)) => "ok".to_string(),
                    Ok(None) => "no algorithm".to_string(),
                    Err(e) => format!("{e:?}"),
                };
                found.push((format!("{name} {out_name}"), r));
            }
        }
        found
    }

    /// Queues `y = x · wᵀ` on `stream`; `Ok(false)` (nothing queued) where cuBLASLt has no
    /// algorithm for the shape.
    ///
    /// # Safety
    /// The operands are live device memory of the shapes named, written by nothing else until the
    /// product has run on `stream`.
    pub unsafe fn matmul(
        &mut self,
        (rows, n, k): (usize, usize, usize),
        ops: &Operands,
        stream: sys::cudaStream_t,
    ) -> Result<bool, CublasError> {
        let (handle, workspace) = (self.handle, self.workspace);
        let Some(plan) = self.plan((rows, n, k))? else { return Ok(false) };
        plan.set_scales(ops.w_scale, ops.x_scale)?;
        let (alpha, beta) = (1f32, 0f32);
        lt::matmul(
            handle,
            plan.desc,
            (&alpha as *const f32).cast(),
            (&beta as *const f32).cast(),
            ops.w as *const c_void,
            plan.a,
            ops.x as *const c_void,
            plan.b,
            ops.y as *const c_void,
            plan.d,
            ops.y as *mut c_void,
            plan.d,
            &plan.algo,
            workspace as *mut c_void,
            WORKSPACE_BYTES,
            stream,
        )?;
        Ok(true)
    }
}
