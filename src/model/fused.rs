//! The fused decode-step kernels on CUDA (`cuda/decode.cu`, compiled to PTX by `build.rs`) and
//! their launches on candle tensors.
//!
//! Why: through candle's generic ops a decode step of a 7B model was bound by the CPU launching
//! about 27 kernels per layer. These kernels bring a layer to 5 launches at one row (9 from two
//! rows on) and sample on the device; they take the position from device memory, a prerequisite for
//! capturing a step as a CUDA graph (not done; programmatic dependent launch, `Module::pdl`, overlaps
//! each launch with the kernel before it instead).
//!
//! Addresses are taken without cudarc's per-use events: candle runs every kernel on one stream,
//! and frees are ordered on it. Under programmatic dependent launch a kernel may start before the
//! one before it ends, which stays safe only because every kernel in decode.cu waits (`pdl_wait`,
//! or `pdl_begin`) before it reads anything a kernel writes, touching only the weights before
//! that: a new kernel must do the same.
//!
//! Every tensor passed in must be contiguous and on the kernels' device; outputs are fresh
//! tensors of the inputs' dtype.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::sys::{self, CUdevice_attribute};
use candle_core::cuda_backend::cudarc::driver::{
    result, CudaContext, CudaEvent, CudaStream, DevicePtr, DriverError, LaunchConfig,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, CudaStorageSlice};
use candle_core::op::BackpropOp;
use candle_core::{bail, DType, Device, Result, Shape, Storage, Tensor};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode.ptx"));
/// The Hopper-only kernels (`cuda/hopper.cu`, compiled for sm_90a): loaded beside `PTX` on a GPU
/// of compute capability 9.0, where they run, and nowhere else.
const HOPPER_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/hopper.ptx"));
const ATTN_THREADS: u32 = 128;
/// Bytes of keys per attention split (`TILE_BYTES` in decode.cu): a split covers
/// `ATTN_TILE_BYTES / (head_dim * dtype size)` positions, loaded to shared memory at once.
const ATTN_TILE_BYTES: usize = 16384;
/// Vocabulary entries per sampling block.
const SAMPLE_CHUNK: usize = 512;
/// Draws per row and step (`DRAWS` in decode.cu) and the per-block record of `sample_partial`.
const DRAWS: usize = 8;
const SLOTS: usize = DRAWS + 1;
const PART: usize = 2 + 2 * SLOTS;
/// The most rows `gemv` has a kernel for.
const GEMV_MAX_ROWS: usize = 8;
/// Up to how many rows `gemv` replaces cuBLAS by default: measured on an H200 at the 7B shape, it
/// wins at one row and loses from two (it turns compute-bound as rows share each weight load).
const GEMV_ROWS: usize = 1;
/// Warps per unit (`KS` in decode.cu) the one-row projections have kernels for.
const SPLITS: [usize; 4] = [1, 2, 4, 8];
/// Warps per SM a one-row projection of each `Split` aims for, to have loads enough in flight to
/// cover HBM latency: a target for the work of a launch (the warps of all its waves, so it may
/// exceed the 64 an SM holds at once), tuned on an H200's 132 SMs. Chosen by `SUBGOAL_CUDA_GEMV_SPLIT` sweeps on an H200 at the 7B shape (batch
/// 1, tokens/s): q/k/v at 2 warps per unit, gate/up at 2, o and down at 8 (247.5) beat 2/1/8
/// (243.8), 1/1/8 (242.5) and 2/1/4 (240.1); the lm_head's 51,200 units stay at 1.
const WARPS_PER_SM: [usize; 3] = [48, 96, 96];
/// Warps per block of the few-row projections (`GEMV_WARPS` in decode.cu).
const GEMV_WARPS: usize = 8;
/// Output columns per unit of the plain projection (`GEMV_COLS` in decode.cu).
const GEMV_COLS: usize = 2;
/// Kernel names (each with a dtype suffix in the module), one list per family, indexed as they
/// are launched: the few-row projections by rows - 1, the one-row ones by index into `SPLITS`.
const GEMV: [&str; GEMV_MAX_ROWS] = ["gemv1", "gemv2", "gemv3", "gemv4", "gemv5", "gemv6", "gemv7", "gemv8"];
const GEMV1_SPLIT: [&str; 4] = ["gemv1", "gemv1_k2", "gemv1_k4", "gemv1_k8"];
const GEMV_SILU_SPLIT: [&str; 4] = ["gemv_silu_k1", "gemv_silu_k2", "gemv_silu_k4", "gemv_silu_k8"];
const GEMV_ROPE_SPLIT: [&str; 4] = ["gemv_rope_k1", "gemv_rope_k2", "gemv_rope_k4", "gemv_rope_k8"];
const GEMV_SILU_FP8_SPLIT: [&str; 4] = ["gemv_silu_fp8_k1", "gemv_silu_fp8_k2", "gemv_silu_fp8_k4", "gemv_silu_fp8_k8"];
const GEMV_ROPE_FP8_SPLIT: [&str; 4] = ["gemv_rope_fp8_k1", "gemv_rope_fp8_k2", "gemv_rope_fp8_k4", "gemv_rope_fp8_k8"];
/// The same over FP8 weights with two pairs a unit (16-bit activations only), unless
/// `SUBGOAL_CUDA_GEMV_FP8_PAIRS=1`.
const GEMV_SILU_FP8W_SPLIT: [&str; 4] =
    ["gemv_silu_fp8w_k1", "gemv_silu_fp8w_k2", "gemv_silu_fp8w_k4", "gemv_silu_fp8w_k8"];
const GEMV_ROPE_FP8W_SPLIT: [&str; 4] =
    ["gemv_rope_fp8w_k1", "gemv_rope_fp8w_k2", "gemv_rope_fp8w_k4", "gemv_rope_fp8w_k8"];
const GEMV_FP8: [&str; GEMV_MAX_ROWS] =
    ["gemv_fp8_1", "gemv_fp8_2", "gemv_fp8_3", "gemv_fp8_4", "gemv_fp8_5", "gemv_fp8_6", "gemv_fp8_7", "gemv_fp8_8"];
const GEMV_FP8_1_SPLIT: [&str; 4] = ["gemv_fp8_1", "gemv_fp8_1_k2", "gemv_fp8_1_k4", "gemv_fp8_1_k8"];
/// The one-row FP8 product with `GEMV_FP8_WIDE` columns a unit (`gemv_fp8_wide`), taken for 16-bit
/// activations and n a multiple of it unless `SUBGOAL_CUDA_GEMV_FP8_COLS=2`. On an H100 at the 7B
/// shape it took 0.93–0.97× of the two-column kernel's time on each projection (alternating runs
/// of `gpu_decode --gemv-only`), and the batch-1 step 0.99× (2026-12-07).
const GEMV_FP8_1W_SPLIT: [&str; 4] = ["gemv_fp8_1w_k1", "gemv_fp8_1w_k2", "gemv_fp8_1w_k4", "gemv_fp8_1w_k8"];
const GEMV_FP8_WIDE: usize = 4;
/// The one-row FP8 product on tensor cores (`gemv_fp8_tc` / `gemv_fp8_tch` in fp8.cu, 16-bit
/// activations), by warps per group of 16 outputs: the weight's bytes made 16-bit by integer
/// operations (`GemvFp8Path::TcBits`) or by the hardware's pair conversion with x in f16
/// (`GemvFp8Path::TcHw`).
const GEMV_FP8_TC: [&str; 4] = ["gemv_fp8_tc_k2", "gemv_fp8_tc_k4", "gemv_fp8_tc_k8", "gemv_fp8_tc_k16"];
const GEMV_FP8_TCH: [&str; 4] = ["gemv_fp8_tch_k2", "gemv_fp8_tch_k4", "gemv_fp8_tch_k8", "gemv_fp8_tch_k16"];
const GEMV_FP8_TC_SPLITS: [usize; 4] = [2, 4, 8, 16];
/// Warps a block of those kernels (`FP8_TC_WARPS` in fp8.cu).
const GEMV_FP8_TC_WARPS: usize = 16;

/// Which one-row FP8 product `gemv_fp8` takes (`SUBGOAL_CUDA_GEMV_FP8_TC`: 0, 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemvFp8Path {
    /// FMA on f32 values (`gemv_fp8_wide`, `gemv_fp8`).
    Fma,
    /// Tensor cores, the bytes made 16-bit by integer operations (`gemv_fp8_tc`).
    TcBits,
    /// Tensor cores, the hardware's pair conversion and x in f16 (`gemv_fp8_tch`).
    TcHw,
}
/// An attention kernel family: per head size 64, 128 and 256 (`head_index`), over a cache in the
/// model's dtype (`[0]`) and over an FP8 one (`[1]`).
type AttnFamily = [[&'static str; 3]; 2];
/// Prefill attention.
const PREFILL: AttnFamily = [
    ["attn_prefill64", "attn_prefill128", "attn_prefill256"],
    ["attn_prefill64_kv8", "attn_prefill128_kv8", "attn_prefill256_kv8"],
];
/// Prefill attention at head size 128 with two groups of 16 query rows a warp (128 queries a
/// block; over a cache in the model's dtype, over an FP8 one). Taken where its blocks fill more
/// than one wave of the GPU (`Kernels::prefill_groups`); `SUBGOAL_CUDA_PREFILL_GROUPS=1` or `=2`
/// forces the narrow or the wide kernel. On an H100 it ran at 1.15× the narrow kernel's speed at
/// 8,192 tokens, 1.14–1.23× at 2,048, and 0.87× at 1,000 (256 blocks on 264 slots) (2026-12-07).
const PREFILL_WIDE: [&str; 2] = ["attn_prefill128w", "attn_prefill128w_kv8"];
/// Shared-prefix attention of decode rows (the prefill kernel's cascade form).
const CASCADE: AttnFamily = [
    ["attn_cascade64", "attn_cascade128", "attn_cascade256"],
    ["attn_cascade64_kv8", "attn_cascade128_kv8", "attn_cascade256_kv8"],
];
/// Keys per tile of the prefill and cascade kernels (`FA_K` in paged.cu): a cascade span is a
/// whole number of tiles.
const FA_K: usize = 64;
/// One kernel of the FP8 GEMM for many rows (`gemm_fp8`, fp8.cu): blocks of
/// `4 * warps_m * warps_k` warps, each warp `16 * mt` rows by 32 columns over `1 / warps_k` of
/// every 128-wide step, so a block covers `16 * mt * warps_m` rows. With `cluster`, the blocks
/// that split k between them form one thread block cluster and add their sums up in its shared
/// memory, in place of partial sums in global memory and `gemm_fp8_reduce`. With `hopper`, a
/// kernel of `gemm_fp8_wg` (hopper.cu, compute capability 9.0 only): one warpgroup of wgmma,
/// `16 * mt` rows a block. `stages`: the buffers of its `cp.async` pipeline, copies running
/// `stages - 1` steps of k ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmFp8Kernel {
    pub name: &'static str,
    pub mt: usize,
    pub warps_m: usize,
    pub warps_k: usize,
    pub cluster: bool,
    pub hopper: bool,
    pub stages: usize,
    /// Not a kernel of ours: the rows quantized to E4M3 in 1×128 tiles (`fp8_quant_rows`) and
    /// the product taken by cuBLASLt's block-scaled FP8 GEMM (`cublaslt.rs`, W8A8), for any
    /// number of rows, the rows' factors laid out as given; the other fields mean nothing for it.
    pub lt: Option<LtFactors>,
}

/// How `gemm_fp8_lt` lays out the rows' 1×128 factors for cuBLASLt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LtFactors {
    /// `[k / 128, rows]`, rows padded to 4: the layout PyTorch's `_scaled_mm` hands cuBLASLt.
    OuterMajor,
    /// `[rows, k / 128]`: the other reading of cuBLAS's documentation, built beside it so that
    /// one GPU run (`gpu_decode --gemm-only`'s difference from the f32 product) tells which is
    /// right.
    KMajor,
}

impl GemmFp8Kernel {
    /// Rows of x one block covers.
    pub fn rows(&self) -> usize {
        16 * self.mt * self.warps_m
    }
    fn threads(&self) -> u32 {
        128 * (self.warps_m * self.warps_k) as u32
    }
    /// Dynamic shared memory: per stage, the block's rows of x (128 16-bit activations each) and
    /// 128 weight rows of 128 bytes (fp8.cu and hopper.cu alike).
    fn smem(&self) -> usize {
        self.stages * (self.rows() * 128 * 2 + 128 * 128)
    }
}

const fn g8(name: &'static str, mt: usize, warps_m: usize, warps_k: usize) -> GemmFp8Kernel {
    GemmFp8Kernel { name, mt, warps_m, warps_k, cluster: false, hopper: false, stages: GEMM_FP8_STAGES, lt: None }
}
const fn g8c(name: &'static str, mt: usize, warps_k: usize) -> GemmFp8Kernel {
    GemmFp8Kernel { name, mt, warps_m: 1, warps_k, cluster: true, hopper: false, stages: GEMM_FP8_STAGES, lt: None }
}
const fn g8w(name: &'static str, rows: usize, stages: usize) -> GemmFp8Kernel {
    GemmFp8Kernel { name, mt: rows / 16, warps_m: 1, warps_k: 1, cluster: false, hopper: true, stages, lt: None }
}

const fn g8lt(name: &'static str, factors: LtFactors) -> GemmFp8Kernel {
    GemmFp8Kernel { name, mt: 1, warps_m: 1, warps_k: 1, cluster: false, hopper: false, stages: 1, lt: Some(factors) }
}

/// Every `gemm_fp8` kernel fp8.cu and hopper.cu instantiate, and cuBLASLt's (`gemm_fp8_lt…`).
pub const GEMM_FP8: [GemmFp8Kernel; 23] = [
    g8("gemm_fp8_m1", 1, 1, 1),
    g8("gemm_fp8_m2", 2, 1, 1),
    g8("gemm_fp8_m3", 3, 1, 1),
    g8("gemm_fp8_m4", 4, 1, 1),
    g8("gemm_fp8_m2x2", 2, 2, 1),
    g8("gemm_fp8_m2x4", 2, 4, 1),
    g8("gemm_fp8_m4x2", 4, 2, 1),
    g8("gemm_fp8_m1k2", 1, 1, 2),
    g8("gemm_fp8_m2k2", 2, 1, 2),
    g8("gemm_fp8_m4k2", 4, 1, 2),
    g8c("gemm_fp8_m1c", 1, 1),
    g8c("gemm_fp8_m2c", 2, 1),
    g8c("gemm_fp8_m3c", 3, 1),
    g8c("gemm_fp8_m4c", 4, 1),
    g8c("gemm_fp8_m1k2c", 1, 2),
    g8c("gemm_fp8_m2k2c", 2, 2),
    g8w("gemm_fp8_w32", 32, 4),
    g8w("gemm_fp8_w64", 64, 3),
    g8w("gemm_fp8_w128", 128, 2),
    g8w("gemm_fp8_w32o3", 32, 3),
    g8w("gemm_fp8_w64o3", 64, 2),
    g8lt("gemm_fp8_lt", LtFactors::OuterMajor),
    g8lt("gemm_fp8_lt_k", LtFactors::KMajor),
];
/// The most blocks a cluster holds on every GPU that has clusters (the splits of k of a cluster
/// kernel are capped to it).
const CLUSTER_MAX: usize = 8;
/// The kernel `gemm_fp8` takes for up to so many rows (indices into `GEMM_FP8`), the last for
/// any more (each block then takes its share of the rows). Past 48 rows, `gemm_fp8_m4`: on an
/// H200 at the 7B shape's four projections (`gpu_decode --gemm-only`, 2026-12-07, the copies
/// unrolled) it took 0.94× `gemm_fp8_m4k2`'s time at 64 rows and 0.92× at 128, and the engine at
/// 96 rows a step ran 1.02× faster with it. (On an H100 before the copies were unrolled `m4k2`
/// had been the faster, by 4 and 11 %; unrolling them sped up `m4` by 1.23× and 1.34× on
/// the H200, `m4k2` by 1.11× and 1.12×; on the H100, measured the same day, `m4` took 0.95× and
/// 0.93× `m4k2`'s time unrolled.) The kernels with more
/// warps along m (on that H100 0.88–0.97× `m4`'s speed; on the H200, unrolled, 0.47–0.87× at
/// 64 and 128 rows) and the cluster forms are not picked; they stay for comparison on other GPUs.
/// So do hopper.cu's wgmma kernels, `gemm_fp8_w…` (on the same H200 the best of them,
/// `w32o3` and `w64o3`, took 1.18× and 1.25× the picked kernels' time at 32 and 64 rows).
const GEMM_FP8_PICK: [(usize, usize); 4] = [
    (16, gemm_fp8_index("gemm_fp8_m1")),
    (32, gemm_fp8_index("gemm_fp8_m2")),
    (48, gemm_fp8_index("gemm_fp8_m3")),
    (usize::MAX, gemm_fp8_index("gemm_fp8_m4")),
];

/// The index of the `GEMM_FP8` kernel named `name`, at compile time (a name not there fails the
/// build), so the pick above names kernels rather than positions in the list.
const fn gemm_fp8_index(name: &str) -> usize {
    let mut i = 0;
    while i < GEMM_FP8.len() {
        let (a, b) = (GEMM_FP8[i].name.as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("no such gemm_fp8 kernel")
}
/// A pick that replaces `GEMM_FP8_PICK` for the whole process (`set_gemm_fp8_pick`), so a
/// benchmark compares picks in one run, on one machine, without a rebuild.
static GEMM_FP8_PICK_SET: std::sync::RwLock<Option<Vec<(usize, usize)>>> = std::sync::RwLock::new(None);

/// Replaces the kernel `gemm_fp8` takes by row count, for every model in the process, from a spec
/// `ROWS:KERNEL,…,max:KERNEL` (up to ROWS rows that kernel; names as in `GEMM_FP8`, the
/// `gemm_fp8_` prefix optional), or restores the built-in pick with `None`. Returns the pick as
/// `(most rows, kernel name)` pairs.
pub fn set_gemm_fp8_pick(spec: Option<&str>) -> Result<Vec<(usize, &'static str)>> {
    let pick = match spec {
        None => None,
        Some(spec) => {
            let names = GEMM_FP8.map(|g| g.name);
            Some(
                super::fp8::parse_pick(spec, &names, "gemm_fp8_")
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            )
        }
    };
    let shown = pick.as_deref().unwrap_or(&GEMM_FP8_PICK).iter().map(|&(r, i)| (r, GEMM_FP8[i].name)).collect();
    *GEMM_FP8_PICK_SET.write().unwrap_or_else(|e| e.into_inner()) = pick;
    Ok(shown)
}

/// The `GEMM_FP8` index `gemm_fp8` takes for `rows` rows: the pick set by `set_gemm_fp8_pick`,
/// else the built-in one. A kernel the GPU did not load is refused by `gemm_fp8_with`, whichever
/// pick named it.
fn gemm_fp8_pick(rows: usize) -> usize {
    let set = GEMM_FP8_PICK_SET.read().unwrap_or_else(|e| e.into_inner());
    pick_for(set.as_deref().unwrap_or(&GEMM_FP8_PICK), rows)
}

/// The `GEMM_FP8` index `pick` gives `rows` rows.
fn pick_for(pick: &[(usize, usize)], rows: usize) -> usize {
    pick.iter().find(|&&(max, _)| rows <= max).map_or(0, |&(_, i)| i)
}
/// Whether the pick gives `rows` rows to cuBLASLt (`gemm_fp8_lt`), which takes any number of
/// rows, prefill's too.
pub fn gemm_fp8_picks_lt(rows: usize) -> bool {
    GEMM_FP8[gemm_fp8_pick(rows)].lt.is_some()
}
const GEMM_FP8_REDUCE: &str = "gemm_fp8_reduce";
/// Rows to E4M3 in 1×128 tiles for `gemm_fp8_lt`.
const FP8_QUANT_ROWS: &str = "fp8_quant_rows";
/// Decode attention over the paged cache.
const PAGED: AttnFamily = [
    ["attn_paged64", "attn_paged128", "attn_paged256"],
    ["attn_paged64_kv8", "attn_paged128_kv8", "attn_paged256_kv8"],
];

/// Decode rows' shared prefixes for `attention_paged` (laid out by the paged forward pass):
/// `blocks` has four numbers per query block (offset of its rows in `rows`, how many, its group's
/// block-table offset, shared positions), `starts` each row's first position of its own.
pub struct Cascade<'a> {
    pub blocks: &'a Tensor,
    pub rows: &'a Tensor,
    pub starts: &'a Tensor,
    pub query_blocks: usize,
    pub max_shared: usize,
    /// `starts` and the rows' lengths on the host (they size the launches).
    pub row_starts: &'a [u32],
    pub row_lens: &'a [u32],
}

/// Launches kernel `$name` of `$k` with `$cfg` and the arguments in order.
macro_rules! launch {
    ($k:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {
        launch!(cluster 1; $k, $name, $cfg, $($arg),+)
    };
    // Blocks in clusters of `$z` along z.
    (cluster $z:expr; $k:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {
        // SAFETY: every caller passes the argument list of the kernel's signature in decode.cu or
        // hopper.cu, with addresses of live tensors whose sizes the launch geometry respects. The
        // pointers are taken in the launching statement, so even a temporary argument lives until
        // the driver has copied the values.
        unsafe { $k.module.launch(&$k.stream, $name, $cfg, $z, &mut [$( kernel_arg($arg) ),+]) }?
    };
}

/// The kernels' modules (decode.cu's, and hopper.cu's where it loads), loaded into the stream's
/// context through the driver API (cudarc's launcher cannot set launch attributes), with their
/// functions by short name. With `pdl`, every launch asks for programmatic dependent launch
/// (`pdl_begin` in decode.cu): on an H200 a decode step is about 160 dependent launches, and this
/// overlaps each one's launch with the tail of the kernel before it.
struct Module {
    module: sys::CUmodule,
    /// Modules loaded after the first (`add`), unloaded with it.
    extra: Vec<sys::CUmodule>,
    funcs: HashMap<&'static str, sys::CUfunction>,
    ctx: Arc<CudaContext>,
    pdl: bool,
}

// SAFETY: module and function handles belong to the context, not to a thread; every use binds the
// context to the calling thread first.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

impl Module {
    /// Loads `PTX` into the stream's context and looks up `names` (short name, PTX entry).
    fn load(stream: &CudaStream, names: &[(&'static str, String)], pdl: bool) -> Result<Module> {
        let err = |e: DriverError| candle_core::Error::Msg(format!("loading the fused kernels: {e}"));
        let ctx = stream.context().clone();
        ctx.bind_to_thread().map_err(err)?;
        let module = load_image(PTX)?;
        let mut m = Module { module, extra: Vec::new(), funcs: HashMap::new(), ctx, pdl };
        m.funcs.extend(look_up(module, names)?);
        let depth = env_knob("SUBGOAL_CUDA_PREFETCH").unwrap_or(PREFETCH_DEPTH).min(PREFETCH_MAX) as i32;
        // The constant starts at 0 (no prefetch): a failure to set it costs speed, not the module.
        if let Err(e) = m.set_int("subgoal_prefetch", depth) {
            tracing::warn!(error = %e, "SUBGOAL_CUDA_PREFETCH not applied");
        }
        Ok(m)
    }

    /// Loads a second PTX image into the same context and looks up `names` in it; on failure
    /// (a driver that cannot compile it, say) nothing of it is kept.
    fn add(&mut self, image: &str, names: &[(&'static str, String)]) -> Result<()> {
        let err = |e: DriverError| candle_core::Error::Msg(format!("loading the fused kernels: {e}"));
        self.ctx.bind_to_thread().map_err(err)?;
        let module = load_image(image)?;
        match look_up(module, names) {
            Ok(found) => {
                self.funcs.extend(found);
                self.extra.push(module);
                Ok(())
            }
            Err(e) => {
                // SAFETY: loaded just above; none of its functions was kept or launched.
                let _ = unsafe { result::module::unload(module) };
                Err(e)
            }
        }
    }

    /// Writes `value` into the module's `__constant__ int` named `name`.
    fn set_int(&self, name: &str, value: i32) -> Result<()> {
        let err = |e: DriverError| candle_core::Error::Msg(format!("{name}: {e}"));
        let c_name = CString::new(name).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let (mut ptr, mut bytes): (sys::CUdeviceptr, usize) = (0, 0);
        // SAFETY: a loaded module, a NUL-terminated name, and places for the address and size.
        unsafe { sys::cuModuleGetGlobal_v2(&mut ptr, &mut bytes, self.module, c_name.as_ptr()) }
            .result()
            .map_err(err)?;
        if bytes != std::mem::size_of::<i32>() {
            bail!("{name}: {bytes} bytes in the module, not an int");
        }
        // SAFETY: the global holds exactly one i32 (checked above), and `value` lives across the
        // copy.
        unsafe { sys::cuMemcpyHtoD_v2(ptr, (&value as *const i32).cast(), bytes) }.result().map_err(err)?;
        // From pageable memory the copy may still be in flight when the call returns, and the
        // kernels run on a non-blocking stream: let it land before any launch.
        self.ctx.synchronize().map_err(err)
    }

    /// How many blocks of `threads` threads and `smem` bytes of dynamic shared memory of kernel
    /// `name` an SM holds at once.
    fn resident_blocks(&self, name: &str, threads: u32, smem: usize) -> Result<usize> {
        let f = *self.funcs.get(name).ok_or_else(|| candle_core::Error::Msg(format!("kernel {name} not loaded")))?;
        let err = |e: DriverError| candle_core::Error::Msg(format!("{name}: occupancy: {e}"));
        self.ctx.bind_to_thread().map_err(err)?;
        let mut blocks: std::ffi::c_int = 0;
        // SAFETY: a function of the loaded module, and a place for the count.
        unsafe { sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut blocks, f, threads as i32, smem) }
            .result()
            .map_err(err)?;
        Ok(blocks.max(0) as usize)
    }

    /// Launches `name` on `stream`, with the programmatic-stream-serialization attribute when
    /// `pdl`, and its blocks in clusters of `cluster_z` along z where that is more than 1.
    ///
    /// # Safety
    /// `params` holds pointers to the kernel's arguments, in its signature's order and types.
    unsafe fn launch(
        &self,
        stream: &CudaStream,
        name: &str,
        cfg: LaunchConfig,
        cluster_z: u32,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let f = *self.funcs.get(name).ok_or_else(|| candle_core::Error::Msg(format!("kernel {name} not loaded")))?;
        let err = |e: DriverError| candle_core::Error::Msg(format!("{name}: {e}"));
        self.ctx.bind_to_thread().map_err(err)?;
        // SAFETY: plain C data; zero is a valid value of every field.
        let mut attrs: [sys::CUlaunchAttribute; 2] = unsafe { std::mem::zeroed() };
        let mut used = 0;
        if self.pdl {
            attrs[used].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attrs[used].value.programmaticStreamSerializationAllowed = 1;
            used += 1;
        }
        if cluster_z > 1 {
            attrs[used].id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            attrs[used].value.clusterDim.x = 1;
            attrs[used].value.clusterDim.y = 1;
            attrs[used].value.clusterDim.z = cluster_z;
            used += 1;
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: stream.cu_stream(),
            attrs: attrs.as_mut_ptr(),
            numAttrs: used as u32,
        };
        // SAFETY: the caller's contract on `params`; `config` and `attrs` outlive the call.
        unsafe { sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()) }.result().map_err(err)
    }
}

/// Looks up `names` (short name, PTX entry) in `module`, giving each kernel that needs it its
/// dynamic shared memory; a kernel whose shared memory the GPU refuses is left out.
fn look_up(module: sys::CUmodule, names: &[(&'static str, String)]) -> Result<Vec<(&'static str, sys::CUfunction)>> {
    let err = |e: DriverError| candle_core::Error::Msg(format!("loading the fused kernels: {e}"));
    let mut found = Vec::with_capacity(names.len());
    for (short, entry) in names {
        let name = CString::new(entry.as_str()).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        // SAFETY: `module` is loaded.
        let f = unsafe { result::module::get_function(module, name) }.map_err(err)?;
        if let Some(bytes) = dynamic_smem(short) {
            // These kernels' tiles take more than the 48 KiB of shared memory a launch gets by
            // default; a GPU without that much goes without them (prompts take the generic
            // path, FP8 products the dequantized weight), keeping every other kernel.
            let bytes = bytes as i32;
            // SAFETY: a function of the loaded module and a documented attribute.
            let set = unsafe {
                sys::cuFuncSetAttribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes,
                )
            }
            .result();
            if let Err(e) = set {
                tracing::warn!(kernel = short, bytes, error = %e, "kernel unavailable on this GPU");
                continue;
            }
        }
        found.push((*short, f));
    }
    Ok(found)
}

/// Loads a PTX image into the current context.
fn load_image(image: &str) -> Result<sys::CUmodule> {
    let err = |e: DriverError| candle_core::Error::Msg(format!("loading the fused kernels: {e}"));
    let image = CString::new(image).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    // SAFETY: a NUL-terminated PTX image; the caller unloads the module.
    unsafe { result::module::load_data(image.as_ptr().cast()) }.map_err(err)
}

impl Drop for Module {
    fn drop(&mut self) {
        // Queued launches may still use the module (say, after an error mid-step): let them finish.
        if self.ctx.bind_to_thread().is_ok() && self.ctx.synchronize().is_ok() {
            // SAFETY: loaded in `load`, unloaded once, after every launch has finished; none can
            // follow (the owner is dropping).
            let _ = unsafe { result::module::unload(self.module) };
            for &m in &self.extra {
                // SAFETY: as above, for the modules `add` loaded.
                let _ = unsafe { result::module::unload(m) };
            }
        }
    }
}

/// What rotating one position and writing it into a layer's cache need: the layer's caches
/// (`[rows, kv_heads, cap, d]`), the model's rotary tables (`[positions, d / 2]`), the position
/// (one u32 on the device), the query heads, the rotation's layout and q's scale.
#[derive(Clone, Copy)]
pub struct RopeStep<'a> {
    pub caches: (&'a Tensor, &'a Tensor),
    pub tables: (&'a Tensor, &'a Tensor),
    pub pos: &'a Tensor,
    pub heads: usize,
    pub interleaved: bool,
    pub q_scale: f32,
}

/// One layer's paged keys and values (`[blocks, kv_heads, bs, d]`): in the model's dtype, or E4M3
/// bytes (u8) with each row's factor in `scales` (f32, `[blocks, kv_heads, bs, 1]`, keys' then
/// values').
#[derive(Clone, Copy)]
pub struct PagedKv<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub scales: Option<(&'a Tensor, &'a Tensor)>,
}

/// What the paged rotation and cache write of a step need: the layer's paged caches, the rotary
/// tables, each token's position (u32 `[tokens]`), the block
/// tables of the step's sequences back to back (u32) and each token's offset into them (u32
/// `[tokens]`), the query heads, the rotation's layout and q's scale.
#[derive(Clone, Copy)]
pub struct PagedRope<'a> {
    pub caches: PagedKv<'a>,
    pub tables: (&'a Tensor, &'a Tensor),
    pub pos: &'a Tensor,
    pub block_tables: &'a Tensor,
    pub tab: &'a Tensor,
    pub heads: usize,
    pub interleaved: bool,
    pub q_scale: f32,
}

/// A row normalized inside the projection that takes it: RMSNorm of `x` (`[1, k]`) with weight
/// `g` (`[k]`) and epsilon `eps`.
#[derive(Clone, Copy)]
pub struct NormIn<'a> {
    pub x: &'a Tensor,
    pub g: &'a Tensor,
    pub eps: f32,
}

/// The weight of a one-row projection with the norm in its loads (`gemv_silu`, `gemv_rope`,
/// `gemv_rope_paged`): dense in the kernels' dtype, or E4M3 bytes with their 128×128 block
/// factors (as `gemv_fp8` takes them).
#[derive(Clone, Copy)]
pub enum RowWeight<'a> {
    Dense(&'a Tensor),
    Fp8 { bytes: &'a Tensor, scale: &'a Tensor },
}

impl RowWeight<'_> {
    fn dims(&self) -> Result<(usize, usize)> {
        match self {
            RowWeight::Dense(w) => w.dims2(),
            RowWeight::Fp8 { bytes, .. } => bytes.dims2(),
        }
    }

    /// Output pairs a unit of the norm-fused kernels over this weight (`Kernels::fp8_pairs` for
    /// FP8, one for dense weights).
    fn pairs(&self, k: &Kernels) -> usize {
        match self {
            RowWeight::Dense(_) => 1,
            RowWeight::Fp8 { .. } => k.fp8_pairs,
        }
    }

    /// The kernel of `names` (the dense family, the FP8 one with one pair a unit, with two) and the
    /// weight's and factors' addresses (no factors for dense weights).
    fn launch_parts(
        &self,
        names: [[&'static str; 4]; 3],
        pairs: usize,
        split: usize,
    ) -> Result<(&'static str, u64, u64)> {
        Ok(match self {
            RowWeight::Dense(w) => (names[0][split], addr(w)?, 0),
            RowWeight::Fp8 { bytes, scale } => (names[pairs][split], addr(bytes)?, addr(scale)?),
        })
    }
}

/// The one-row projections, each with its kernels per warps per unit.
#[derive(Clone, Copy)]
enum Split {
    Qkv = 0,
    GateUp = 1,
    Plain = 2,
}

/// The kernels for one device and dtype, looked up once.
pub struct Kernels {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    dtype: DType,
    module: Module,
    gemv_rows: usize,
    /// `SUBGOAL_CUDA_GEMV_SPLIT` per `Split`, where set to one of `SPLITS`.
    gemv_split: [Option<usize>; 3],
    /// Whether the one-row FP8 product takes `gemv_fp8_wide` (16-bit activations, unless
    /// `SUBGOAL_CUDA_GEMV_FP8_COLS=2`).
    gemv_fp8_wide: bool,
    /// The one-row FP8 product's path (`SUBGOAL_CUDA_GEMV_FP8_TC`), and the tensor-core paths'
    /// warps per group (`SUBGOAL_CUDA_GEMV_TC_SPLIT`; unset: `launch_gemv_fp8_tc` decides).
    gemv_fp8_path: GemvFp8Path,
    gemv_tc_split: Option<usize>,
    /// Output pairs a unit of the norm-fused one-row kernels over FP8 weights: 2 for 16-bit
    /// activations unless `SUBGOAL_CUDA_GEMV_FP8_PAIRS=1`, else 1.
    fp8_pairs: usize,
    /// `SUBGOAL_CUDA_PREFILL_GROUPS`, where set to 1 or 2 (groups of 16 query rows a warp).
    prefill_groups: Option<usize>,
    /// Blocks of each `PREFILL_WIDE` kernel an SM holds at once (0 where not loaded).
    prefill_wide_resident: [usize; 2],
    /// Streaming multiprocessors of the device.
    sms: usize,
    /// Blocks of each `GEMM_FP8` kernel an SM holds at once (its shared memory and registers).
    gemm_fp8_resident: [usize; GEMM_FP8.len()],
    /// Thread block clusters: compute capability 9.0 or later, and PTX built for it (the cluster
    /// instructions are compiled out for older targets).
    clusters: bool,
    /// Per (row, head) counts of finished attention splits, zero between launches (the last split
    /// resets its count); grown on demand.
    counters: std::sync::Mutex<Option<Tensor>>,
    /// cuBLASLt's FP8 GEMM and its workspace, made at its first use (the error inside where the
    /// library could not be set up).
    lt: std::sync::OnceLock<std::result::Result<std::sync::Mutex<LtState>, String>>,
}

struct LtState {
    gemm: super::cublaslt::LtGemm,
    _workspace: Tensor,
    /// Weight factors with their rows padded for cuBLASLt, by the tensor they were made from.
    scales: HashMap<candle_core::TensorId, Tensor>,
}

/// `scale` (`[n / 128, k / 128]` f32) as cuBLASLt's BLK128x128_32F factors take it: rows of a
/// multiple of 4 blocks, the padding zero. The same tensor when k / 128 is one already; else a
/// padded copy, made once per tensor (a model's weights pass the same tensor at every call).
fn lt_scale(cache: &mut HashMap<candle_core::TensorId, Tensor>, scale: &Tensor) -> Result<Tensor> {
    let (_, blocks) = scale.dims2()?;
    if blocks % 4 == 0 {
        return scale.contiguous();
    }
    if let Some(padded) = cache.get(&scale.id()) {
        return Ok(padded.clone());
    }
    // Benchmarks make weights by the hundred; a model holds a few hundred. Past that the cache
    // starts again rather than keep the factors of weights long gone.
    if cache.len() >= 4096 {
        cache.clear();
    }
    let padded = scale.pad_with_zeros(1, 0, blocks.div_ceil(4) * 4 - blocks)?.contiguous()?;
    cache.insert(scale.id(), padded.clone());
    Ok(padded)
}

/// Whether the tensor-core one-row FP8 products take `[1, k] @ [n, k]^T`: n a multiple of 16, k of
/// 64, and x in f16 beside the kernel's own 1,088 bytes within the default 48 KiB of shared memory.
fn gemv_fp8_tc_fits(n: usize, k: usize) -> bool {
    n % 16 == 0 && k % 64 == 0 && 2 * k + 2048 <= 48 * 1024
}

fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => bail!("the fused decode kernels do not take {other:?}"),
    })
}

/// The SM version `PTX` was compiled for (`.target sm_NN`; 0 if absent).
fn ptx_target() -> u32 {
    PTX.lines()
        .find_map(|l| l.trim().strip_prefix(".target sm_"))
        .and_then(|t| t.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok())
        .unwrap_or(0)
}

/// Queries a block of `attn_prefill` takes with `groups` groups of 16 rows a warp (`64 WR` in
/// paged.cu).
fn prefill_queries(groups: usize) -> usize {
    64 * groups
}

/// Dynamic shared memory of `attn_prefill` for head size `d` and `groups` groups of 16 query rows
/// a warp (16-bit inputs): two stages of key and value tiles of 64 rows, rows padded by 8
/// elements, and the query tile where the queries do not fit in registers (past head size 128, or
/// two groups) (paged.cu). An FP8 cache's tiles are decoded into the same buffers.
fn prefill_smem(d: usize, groups: usize) -> usize {
    const K: usize = 64;
    let queries = if d <= 128 && groups == 1 { 0 } else { prefill_queries(groups) * (d + 8) };
    (4 * K * (d + 8) + queries) * 2
}

/// The first weight loads each few-row projection asks into L2 before it waits for the kernel
/// before it (`subgoal_prefetch`, decode.cu), unless `SUBGOAL_CUDA_PREFETCH` says otherwise.
const PREFETCH_DEPTH: usize = 0;
/// The most the kernels take (`PREFETCH_MAX` in decode.cu).
const PREFETCH_MAX: usize = 4;

/// A numeric tuning knob from the environment (read when the kernels load), where set to a number.
fn env_knob(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Dynamic shared memory of the kernels that take it (over the default 48 KiB), by short name.
fn dynamic_smem(short: &str) -> Option<usize> {
    if let Some(g) = GEMM_FP8.iter().find(|g| g.name == short) {
        return Some(g.smem());
    }
    if PREFILL_WIDE.contains(&short) {
        return Some(prefill_smem(128, 2));
    }
    let rest = short.strip_prefix("attn_prefill").or_else(|| short.strip_prefix("attn_cascade"))?;
    let d = rest.split('_').next()?.parse::<usize>().ok()?;
    Some(prefill_smem(d, 1))
}

/// Stages of `gemm_fp8` (`G8_STAGES` in fp8.cu).
const GEMM_FP8_STAGES: usize = 3;

/// The index of head size `d` in the attention kernels' lists.
fn head_index(d: usize) -> Option<usize> {
    match d {
        64 => Some(0),
        128 => Some(1),
        256 => Some(2),
        _ => None,
    }
}

/// A family's kernel for head size `d`, over an FP8 cache or not.
fn attn_name(family: &AttnFamily, d: usize, fp8: bool) -> Option<&'static str> {
    head_index(d).map(|i| family[usize::from(fp8)][i])
}

/// The addresses of an FP8 cache's row factors (keys', values'); null for a cache in the model's
/// dtype, whose kernels take the same arguments and do not read them.
fn factors(kv: &PagedKv) -> Result<(u64, u64)> {
    match kv.scales {
        Some((ks, vs)) => Ok((addr(ks)?, addr(vs)?)),
        None => Ok((0, 0)),
    }
}

/// A kernel argument as the driver takes it: a pointer to its value. Only `Copy` values (scalars
/// and device addresses), so a buffer object cannot be passed by mistake where its address is meant.
fn kernel_arg<T: Copy>(v: &T) -> *mut c_void {
    v as *const T as *mut c_void
}

/// Device address of a contiguous tensor's first element.
fn addr(t: &Tensor) -> Result<u64> {
    let (st, layout) = t.storage_and_layout();
    if !layout.is_contiguous() {
        bail!("the fused decode kernels take contiguous tensors (got strides {:?})", layout.stride());
    }
    let Storage::Cuda(cs) = &*st else { bail!("the fused decode kernels take CUDA tensors") };
    let stream = cs.device.cuda_stream();
    let base = match &cs.slice {
        CudaStorageSlice::F32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::BF16(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::F16(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U8(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::I64(s) => s.device_ptr(&stream).0,
        _ => bail!("the fused decode kernels do not take {:?}", t.dtype()),
    };
    Ok(base + (layout.start_offset() * t.dtype().size_in_bytes()) as u64)
}

/// A timed event of the kernels' stream, to measure the device's time over a span of launches.
pub struct Mark(CudaEvent);

impl Mark {
    /// Milliseconds of the device's clock from this mark to `end`, once both are reached
    /// (blocks until then).
    pub fn ms_until(&self, end: &Mark) -> Option<f64> {
        self.0.elapsed_ms(&end.0).ok().map(f64::from)
    }
}

impl Kernels {
    /// A timed event on the kernels' context, recorded at a point of their stream by `record` as
    /// often as wanted; none where the driver refuses one.
    pub fn new_mark(&self) -> Option<Mark> {
        self.stream.context().new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).ok().map(Mark)
    }

    /// Records `mark` at this point of the stream; false where the driver refuses.
    pub fn record(&self, mark: &Mark) -> bool {
        mark.0.record(&self.stream).is_ok()
    }

    /// Loads the kernels for `dtype` on `device`; `None` off CUDA or for other dtypes.
    pub fn load(device: &Device, dtype: DType) -> Result<Option<Kernels>> {
        let Device::Cuda(dev) = device else { return Ok(None) };
        let Ok(sfx) = suffix(dtype) else { return Ok(None) };
        const OTHERS: [&str; 8] = [
            "add_rmsnorm",
            "silu_mul",
            "rope_kv",
            "attn_split64",
            "attn_split128",
            "attn_split256",
            "rope_kv_paged",
            "rope_kv_paged_kv8",
        ];
        // The tensor-core kernels (prefill and shared-prefix attention, the FP8 GEMM for many rows)
        // take 16-bit inputs only, as does the wide one-row FP8 product.
        let tensor_core: Vec<&'static str> = if dtype == DType::F32 {
            Vec::new()
        } else {
            PREFILL
                .iter()
                .chain(&CASCADE)
                .flatten()
                .copied()
                .chain(PREFILL_WIDE)
                .chain(GEMM_FP8.iter().filter(|g| !g.hopper && g.lt.is_none()).map(|g| g.name))
                .chain([GEMM_FP8_REDUCE, FP8_QUANT_ROWS])
                .chain(GEMV_FP8_1W_SPLIT)
                .chain(GEMV_FP8_TC)
                .chain(GEMV_FP8_TCH)
                .chain(GEMV_SILU_FP8W_SPLIT)
                .chain(GEMV_ROPE_FP8W_SPLIT)
                .collect()
        };
        // The one-row kernels with one warp per unit (index 0) are the row-count lists' first.
        let entries: Vec<(&'static str, String)> = OTHERS
            .iter()
            .chain(GEMV.iter())
            .chain(GEMV1_SPLIT[1..].iter())
            .chain(GEMV_SILU_SPLIT.iter())
            .chain(GEMV_ROPE_SPLIT.iter())
            .chain(GEMV_SILU_FP8_SPLIT.iter())
            .chain(GEMV_ROPE_FP8_SPLIT.iter())
            .chain(std::iter::once(&"fp8_dequant"))
            .chain(GEMV_FP8.iter())
            .chain(GEMV_FP8_1_SPLIT[1..].iter())
            .chain(PAGED.iter().flatten())
            .chain(tensor_core.iter())
            .map(|&name| (name, format!("{name}_{sfx}")))
            .chain(["sample_partial", "sample_pick", "sample_mass", "sample_accept"].map(|n| (n, n.to_string())))
            .collect();
        // Up to how many rows projections take `gemv` rather than cuBLAS (a tuning knob; 0: never).
        let gemv_rows = env_knob("SUBGOAL_CUDA_GEMV_ROWS").unwrap_or(GEMV_ROWS);
        // Warps per unit of the one-row projections (a tuning knob; unset: `split_choice` decides):
        // one number for all, or three for q/k/v, gate/up and the others.
        let knob: Vec<Option<usize>> = std::env::var("SUBGOAL_CUDA_GEMV_SPLIT")
            .unwrap_or_default()
            .split(',')
            .map(|v| v.trim().parse().ok().filter(|s| SPLITS.contains(s)))
            .collect();
        let gemv_split = match knob[..] {
            [one] => [one; 3],
            [qkv, gate_up, plain] => [qkv, gate_up, plain],
            _ => [None; 3],
        };
        let stream = dev.cuda_stream();
        let sms = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| candle_core::Error::Msg(format!("SM count: {e}")))?;
        let major = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(|e| candle_core::Error::Msg(format!("compute capability: {e}")))?;
        // Programmatic dependent launch on compute capability 9.0 and later unless
        // `SUBGOAL_CUDA_PDL=0`. It needs the PTX at sm_90 or later too: PTX for an older target has
        // no `griddepcontrol.wait` (decode.cu compiles it out), and its kernels must not overlap.
        let pdl = major >= 9 && ptx_target() >= 90 && std::env::var("SUBGOAL_CUDA_PDL").map_or(true, |v| v != "0");
        // `SUBGOAL_CUDA_GEMM_FP8_PICK`: the FP8 GEMM's kernel by row count, where no pick is set yet
        // (a benchmark's flag is).
        if let Ok(spec) = std::env::var("SUBGOAL_CUDA_GEMM_FP8_PICK") {
            let unset = GEMM_FP8_PICK_SET.read().unwrap_or_else(|e| e.into_inner()).is_none();
            if unset {
                set_gemm_fp8_pick(Some(&spec))
                    .map_err(|e| candle_core::Error::Msg(format!("SUBGOAL_CUDA_GEMM_FP8_PICK: {e}")))?;
            }
        }
        let mut module = Module::load(&stream, &entries, pdl)?;
        // The wgmma kernels: sm_90a code runs on compute capability 9.0 and no other (a minor
        // version the driver does not tell counts as another). They are optional: nothing about
        // them fails the load, and build.rs leaves their module empty where nvcc cannot build it.
        let minor = stream.context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).ok();
        if (major, minor) == (9, Some(0)) && dtype != DType::F32 && !HOPPER_PTX.is_empty() {
            let names: Vec<(&'static str, String)> =
                GEMM_FP8.iter().filter(|g| g.hopper).map(|g| (g.name, format!("{}_{sfx}", g.name))).collect();
            if let Err(e) = module.add(HOPPER_PTX, &names) {
                tracing::warn!(error = %e, "the Hopper FP8 GEMM kernels did not load; gemm_fp8 goes without them");
            }
        }
        let mut gemm_fp8_resident = [1; GEMM_FP8.len()];
        for (resident, g) in gemm_fp8_resident.iter_mut().zip(&GEMM_FP8) {
            if module.funcs.contains_key(g.name) {
                let blocks = module.resident_blocks(g.name, g.threads(), g.smem());
                *resident = if g.hopper { blocks.unwrap_or(1) } else { blocks? }.max(1);
            }
        }
        let mut prefill_wide_resident = [0; 2];
        for (resident, name) in prefill_wide_resident.iter_mut().zip(PREFILL_WIDE) {
            if module.funcs.contains_key(name) {
                *resident = module.resident_blocks(name, 128, prefill_smem(128, 2))?;
            }
        }
        Ok(Some(Kernels {
            dev: dev.clone(),
            stream,
            dtype,
            module,
            gemv_rows: gemv_rows.min(GEMV_MAX_ROWS),
            gemv_split,
            gemv_fp8_wide: dtype != DType::F32 && env_knob("SUBGOAL_CUDA_GEMV_FP8_COLS") != Some(2),
            gemv_fp8_path: match env_knob("SUBGOAL_CUDA_GEMV_FP8_TC") {
                Some(1) if dtype != DType::F32 => GemvFp8Path::TcBits,
                Some(2) if dtype != DType::F32 => GemvFp8Path::TcHw,
                _ => GemvFp8Path::Fma,
            },
            gemv_tc_split: env_knob("SUBGOAL_CUDA_GEMV_TC_SPLIT").filter(|s| GEMV_FP8_TC_SPLITS.contains(s)),
            fp8_pairs: if dtype != DType::F32 && env_knob("SUBGOAL_CUDA_GEMV_FP8_PAIRS") != Some(1) { 2 } else { 1 },
            prefill_groups: env_knob("SUBGOAL_CUDA_PREFILL_GROUPS").filter(|g| [1, 2].contains(g)),
            prefill_wide_resident,
            sms: sms.max(1) as usize,
            gemm_fp8_resident,
            clusters: major >= 9 && ptx_target() >= 90,
            counters: Default::default(),
            lt: Default::default(),
        }))
    }

    /// An uninitialized tensor of `dtype` (every element is written by a kernel).
    fn empty<S: Into<Shape>>(&self, shape: S, dtype: DType) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        // SAFETY: callers launch a kernel that writes every element before the tensor is read (or,
        // for cuBLASLt's workspace, hand it to the library as scratch it writes before reading).
        let slice = unsafe {
            match dtype {
                DType::F32 => CudaStorageSlice::F32(self.dev.alloc::<f32>(n)?),
                DType::BF16 => CudaStorageSlice::BF16(self.dev.alloc::<half::bf16>(n)?),
                DType::F16 => CudaStorageSlice::F16(self.dev.alloc::<half::f16>(n)?),
                DType::U32 => CudaStorageSlice::U32(self.dev.alloc::<u32>(n)?),
                DType::U8 => CudaStorageSlice::U8(self.dev.alloc::<u8>(n)?),
                other => bail!("no fused buffer of {other:?}"),
            }
        };
        let storage = Storage::Cuda(CudaStorage { slice, device: self.dev.clone() });
        Ok(Tensor::from_storage(storage, shape, BackpropOp::none(), false))
    }

    fn check(&self, t: &Tensor) -> Result<()> {
        if t.dtype() != self.dtype {
            bail!("fused decode: a {:?} tensor where {:?} was expected", t.dtype(), self.dtype);
        }
        Ok(())
    }

    /// The caches, rotary tables and position a step reads: the kernels' dtype, and a u32 position.
    fn check_step(&self, caches: (&Tensor, &Tensor), tables: Option<(&Tensor, &Tensor)>, pos: &Tensor) -> Result<()> {
        self.check(caches.0)?;
        self.check(caches.1)?;
        if let Some((c, s)) = tables {
            self.check(c)?;
            self.check(s)?;
        }
        if pos.dtype() != DType::U32 || pos.elem_count() != 1 {
            bail!("fused decode: the position must be one u32, not {:?} {:?}", pos.dtype(), pos.dims());
        }
        Ok(())
    }

    /// `(x + delta, rmsnorm(x + delta) * w)` for rows `[n, hidden]`.
    pub fn add_rmsnorm(&self, x: &Tensor, delta: Option<&Tensor>, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
        self.check(x)?;
        self.check(w)?;
        if let Some(d) = delta {
            self.check(d)?;
        }
        let (rows, hidden) = x.dims2()?;
        let out = self.empty((2, rows, hidden), self.dtype)?;
        let (px, pw, po) = (addr(x)?, addr(w)?, addr(&out)?);
        let pd = match delta {
            Some(d) => {
                if d.dims() != x.dims() {
                    bail!("add_rmsnorm: delta {:?} for x {:?}", d.dims(), x.dims());
                }
                addr(d)?
            }
            None => 0,
        };
        let (rows_i, hidden_i) = (rows as i32, hidden as i32);
        let threads = (hidden.div_ceil(32) * 32).min(1024) as u32;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
        launch!(self, "add_rmsnorm", cfg, &px, &pd, &pw, &po, &rows_i, &hidden_i, &eps);
        Ok((out.get(0)?, out.get(1)?))
    }

    /// `silu(gate) * up` for rows `[gate | up]` of `2 * inter`.
    pub fn silu_mul(&self, gate_up: &Tensor) -> Result<Tensor> {
        self.check(gate_up)?;
        let (rows, two) = gate_up.dims2()?;
        let inter = two / 2;
        let out = self.empty((rows, inter), self.dtype)?;
        let (pi, po) = (addr(gate_up)?, addr(&out)?);
        let (rows_i, inter_i) = (rows as i32, inter as i32);
        let blocks = (rows * inter).div_ceil(256).min(65_535) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        launch!(self, "silu_mul", cfg, &pi, &po, &rows_i, &inter_i);
        Ok(out)
    }

    /// Rotates this position's q and k (rows of `qkv`: q, k, v heads back to back), writes k and v
    /// into the caches at `*pos`, and returns q `[rows, heads * d]` scaled.
    pub fn rope_kv(&self, qkv: &Tensor, step: &RopeStep) -> Result<Tensor> {
        let RopeStep { caches, tables, pos, heads, interleaved, q_scale } = *step;
        self.check(qkv)?;
        self.check_step(caches, Some(tables), pos)?;
        let (rows, stride) = qkv.dims2()?;
        let (crows, kv_heads, cap, d) = caches.0.dims4()?;
        if crows != rows || stride != (heads + 2 * kv_heads) * d || caches.1.dims() != caches.0.dims() {
            bail!("rope_kv: qkv {:?} does not match the cache {:?}", qkv.dims(), caches.0.dims());
        }
        let q = self.empty((rows, heads * d), self.dtype)?;
        let (pqkv, pq, pk, pv) = (addr(qkv)?, addr(&q)?, addr(caches.0)?, addr(caches.1)?);
        let (pc, ps, pp) = (addr(tables.0)?, addr(tables.1)?, addr(pos)?);
        let ints = [stride as i32, heads as i32, kv_heads as i32, d as i32, cap as i32, interleaved as i32];
        let cfg = LaunchConfig {
            grid_dim: ((heads + 2 * kv_heads) as u32, rows as u32, 1),
            block_dim: ((d / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self, "rope_kv", cfg, &pqkv, &ints[0], &pq, &pk, &pv, &pc, &ps, &pp, &ints[1], &ints[2], &ints[3],
            &ints[4], &ints[5], &q_scale
        );
        Ok(q)
    }

    /// Attention of one query per row (`q`: `[rows, heads * d]`, scaled) over the cache's positions
    /// `0..=*pos`, split over the cache's capacity so the launch does not depend on the position;
    /// one launch (the last split of each head merges the others).
    pub fn attention(&self, q: &Tensor, caches: (&Tensor, &Tensor), pos: &Tensor, heads: usize) -> Result<Tensor> {
        self.check(q)?;
        self.check_step(caches, None, pos)?;
        let (rows, kv_heads, cap, d) = caches.0.dims4()?;
        let kernel = match d {
            64 => "attn_split64",
            128 => "attn_split128",
            256 => "attn_split256",
            _ => bail!("fused attention takes head_dim 64, 128 or 256, not {d}"),
        };
        let chunk = ATTN_TILE_BYTES / (d * self.dtype.size_in_bytes());
        let splits = cap.div_ceil(chunk);
        let part = self.empty((rows, heads, splits, d + 2), DType::F32)?;
        let out = self.empty((rows, heads * d), self.dtype)?;
        let counters = self.counters(rows * heads)?;
        let (pq, pk, pv, pp, ppart, pc, po) =
            (addr(q)?, addr(caches.0)?, addr(caches.1)?, addr(pos)?, addr(&part)?, addr(&counters)?, addr(&out)?);
        let ints = [heads as i32, kv_heads as i32, cap as i32];
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, rows as u32, splits as u32),
            block_dim: (ATTN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, kernel, cfg, &pq, &pk, &pv, &ppart, &pc, &po, &pp, &ints[0], &ints[1], &ints[2]);
        Ok(out)
    }

    /// One token per row of `logits` (`[rows, vocab]`, f32): greedy at temperature 0, else drawn
    /// from the top-p distribution at that temperature with noise keyed by `seed` (a caller
    /// passes a fresh seed per step). Only the ids leave the device.
    pub fn sample(&self, logits: &Tensor, temperature: f64, top_p: f64, seed: u64) -> Result<Vec<u32>> {
        let rows = logits.dim(0)?;
        let seeds: Vec<u64> = (0..rows as u64).map(|r| seed ^ (r + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)).collect();
        self.sample_seeded(logits, temperature, top_p, &seeds)
    }

    /// As `sample`, with each row's noise keyed by its own seed: a row draws the same token
    /// whatever other rows are in the batch.
    pub fn sample_seeded(&self, logits: &Tensor, temperature: f64, top_p: f64, seeds: &[u64]) -> Result<Vec<u32>> {
        let logits = logits.to_dtype(DType::F32)?.contiguous()?;
        let (rows, vocab) = logits.dims2()?;
        if seeds.len() != rows {
            bail!("sample_seeded: {} seeds for {rows} rows", seeds.len());
        }
        let seeds = Tensor::new(seeds.iter().map(|&s| s as i64).collect::<Vec<i64>>(), logits.device())?;
        let pseeds = addr(&seeds)?;
        let chunks = vocab.div_ceil(SAMPLE_CHUNK);
        let greedy = temperature <= 0.0;
        let check = !greedy && top_p < 1.0;
        let inv_t = if greedy { 1.0f32 } else { (1.0 / temperature) as f32 };
        let part = self.empty((rows, chunks, PART), DType::F32)?;
        let cand = self.empty((rows, SLOTS), DType::U32)?;
        let stats = self.empty((rows, 2), DType::F32)?;
        let out = self.empty(rows, DType::U32)?;
        let (pl, ppart, pcand, pstats, pout) = (addr(&logits)?, addr(&part)?, addr(&cand)?, addr(&stats)?, addr(&out)?);
        // Draws per row: none when greedy, one without top-p, all with it.
        let draws = if greedy {
            0
        } else if check {
            DRAWS
        } else {
            1
        };
        let (vocab_i, chunk_i, chunks_i, greedy_i, check_i, draws_i) =
            (vocab as i32, SAMPLE_CHUNK as i32, chunks as i32, greedy as i32, check as i32, draws as i32);
        let grid =
            LaunchConfig { grid_dim: (chunks as u32, rows as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let per_row = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (32, 1, 1), shared_mem_bytes: 0 };
        launch!(self, "sample_partial", grid, &pl, &vocab_i, &chunk_i, &inv_t, &pseeds, &draws_i, &ppart);
        launch!(self, "sample_pick", per_row, &ppart, &chunks_i, &greedy_i, &check_i, &pcand, &pstats, &pout);
        if check {
            let mass = self.empty((rows, chunks, DRAWS), DType::F32)?;
            let pmass = addr(&mass)?;
            let top_p = top_p as f32;
            launch!(self, "sample_mass", grid, &pl, &vocab_i, &chunk_i, &inv_t, &pcand, &pstats, &pmass);
            launch!(self, "sample_accept", per_row, &pmass, &chunks_i, &pcand, &pstats, &top_p, &pout);
        }
        let ids = out.to_vec1::<u32>()?;
        if let Some(r) = ids.iter().position(|&id| id as usize >= vocab) {
            bail!("row {r} of the logits has no finite value to sample from");
        }
        Ok(ids)
    }

    /// `residual + x @ w^T` (`residual` optional, `[rows, n]`) for few rows (`x`: `[rows, k]`, `w`:
    /// `[n, k]` as `nn.Linear` keeps it) with one read of `w`; `None` where the kernel does not
    /// apply (too many rows, unaligned shapes), for the caller to take the GEMM.
    pub fn gemv(&self, x: &Tensor, w: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
        let (rows, k) = x.dims2()?;
        let (n, _) = w.dims2()?;
        if !self.gemv_fits(x, w, k)? {
            return Ok(None);
        }
        let pr = match residual {
            Some(r) if r.dims() == [rows, n] && r.dtype() == self.dtype => addr(r)?,
            Some(r) => bail!("gemv: residual {:?} {:?} for output [{rows}, {n}] {:?}", r.dtype(), r.dims(), self.dtype),
            None => 0,
        };
        let y = self.empty((rows, n), self.dtype)?;
        let (px, pw, py) = (addr(x)?, addr(w)?, addr(&y)?);
        let (n_i, k_i) = (n as i32, k as i32);
        if rows == 1 {
            let (split, cfg) = self.split_choice(n.div_ceil(GEMV_COLS), Split::Plain);
            launch!(self, GEMV1_SPLIT[split], cfg, &px, &pw, &pr, &py, &n_i, &k_i);
        } else {
            // One warp per unit.
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(GEMV_COLS * GEMV_WARPS) as u32, 1, 1),
                block_dim: (32 * GEMV_WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(self, GEMV[rows - 1], cfg, &px, &pw, &pr, &py, &n_i, &k_i);
        }
        Ok(Some(y))
    }

    /// `residual + x @ dequant(w)^T` for FP8 weights (`w`: E4M3 bytes `[n, k]`, `scale`: its
    /// 128×128 block factors `[ceil(n/128), ceil(k/128)]`, f32): few rows (up to 8) read the bytes
    /// once and dequantize in registers; `None` for more rows or unaligned shapes, which take
    /// `dequantize_fp8` and the GEMM.
    pub fn gemv_fp8(
        &self,
        x: &Tensor,
        w: &Tensor,
        scale: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Option<Tensor>> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        if rows > GEMV_MAX_ROWS || !self.fp8_operands_fit(x, w, scale)? {
            return Ok(None);
        }
        let pr = match residual {
            Some(r) if r.dims() == [rows, n] && r.dtype() == self.dtype => addr(r)?,
            Some(r) => bail!("gemv_fp8: residual {:?} {:?} for output [{rows}, {n}]", r.dtype(), r.dims()),
            None => 0,
        };
        let y = self.empty((rows, n), self.dtype)?;
        let (px, pw, ps, py) = (addr(x)?, addr(w)?, addr(&scale.contiguous()?)?, addr(&y)?);
        let (n_i, k_i) = (n as i32, k as i32);
        if rows == 1 && self.gemv_fp8_path != GemvFp8Path::Fma && gemv_fp8_tc_fits(n, k) {
            self.launch_gemv_fp8_tc(self.gemv_fp8_path, None, [px, pw, ps, pr, py], n, k)?;
        } else if rows == 1 {
            let wide = self.gemv_fp8_wide && n % GEMV_FP8_WIDE == 0;
            let (cols, names) = if wide { (GEMV_FP8_WIDE, GEMV_FP8_1W_SPLIT) } else { (GEMV_COLS, GEMV_FP8_1_SPLIT) };
            let (i, cfg) = self.split_choice(n.div_ceil(cols), Split::Plain);
            launch!(self, names[i], cfg, &px, &pw, &ps, &pr, &py, &n_i, &k_i);
        } else {
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(GEMV_COLS * GEMV_WARPS) as u32, 1, 1),
                block_dim: (32 * GEMV_WARPS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(self, GEMV_FP8[rows - 1], cfg, &px, &pw, &ps, &pr, &py, &n_i, &k_i);
        }
        Ok(Some(y))
    }

    /// `gemv_fp8` at one row through `path` with `split` warps per group of 16 outputs (`None`: as
    /// `gemv_fp8` chooses), for benchmarks that compare them; `None` where the path does not take
    /// the shapes (its dtype, n a multiple of 16, k of 64).
    pub fn gemv_fp8_with(
        &self,
        x: &Tensor,
        w: &Tensor,
        scale: &Tensor,
        path: GemvFp8Path,
        split: Option<usize>,
    ) -> Result<Option<Tensor>> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        if path == GemvFp8Path::Fma {
            return self.gemv_fp8(x, w, scale, None);
        }
        if rows != 1 || self.dtype == DType::F32 || !gemv_fp8_tc_fits(n, k) || !self.fp8_operands_fit(x, w, scale)? {
            return Ok(None);
        }
        let y = self.empty((1, n), self.dtype)?;
        let (px, pw, ps, py) = (addr(x)?, addr(w)?, addr(&scale.contiguous()?)?, addr(&y)?);
        self.launch_gemv_fp8_tc(path, split, [px, pw, ps, 0, py], n, k)?;
        Ok(Some(y))
    }

    /// Launches the tensor-core one-row FP8 product of `path` on the addresses `[x, w, scale,
    /// residual (0: none), y]`. Warps per group: `split`, else `SUBGOAL_CUDA_GEMV_TC_SPLIT`, else
    /// the fewest that give the GPU 32 warps an SM (16 where none does).
    fn launch_gemv_fp8_tc(
        &self,
        path: GemvFp8Path,
        split: Option<usize>,
        a: [u64; 5],
        n: usize,
        k: usize,
    ) -> Result<()> {
        let groups = n / 16;
        let ks = split.or(self.gemv_tc_split).filter(|s| GEMV_FP8_TC_SPLITS.contains(s));
        let i = match ks {
            Some(s) => GEMV_FP8_TC_SPLITS.iter().position(|&x| x == s).unwrap_or(0),
            None => GEMV_FP8_TC_SPLITS
                .iter()
                .position(|&s| groups * s >= 32 * self.sms)
                .unwrap_or(GEMV_FP8_TC_SPLITS.len() - 1),
        };
        let per_block = GEMV_FP8_TC_WARPS / GEMV_FP8_TC_SPLITS[i];
        let (names, smem) = match path {
            GemvFp8Path::TcHw => (GEMV_FP8_TCH, 2 * k as u32),
            _ => (GEMV_FP8_TC, 0),
        };
        let cfg = LaunchConfig {
            grid_dim: (groups.div_ceil(per_block) as u32, 1, 1),
            block_dim: (32 * GEMV_FP8_TC_WARPS as u32, 1, 1),
            shared_mem_bytes: smem,
        };
        let (n_i, k_i) = (n as i32, k as i32);
        let [px, pw, ps, pr, py] = a;
        launch!(self, names[i], cfg, &px, &pw, &ps, &pr, &py, &n_i, &k_i);
        Ok(())
    }

    /// What both FP8 products take: some rows `x` `[m, k]` (k a multiple of 16, aligned), E4M3
    /// bytes `w` `[n, k]` contiguous and 16-byte aligned, and their f32 block factors
    /// `[ceil(n/128), ceil(k/128)]`.
    fn fp8_operands_fit(&self, x: &Tensor, w: &Tensor, scale: &Tensor) -> Result<bool> {
        let (rows, k) = x.dims2()?;
        let (n, wk) = w.dims2()?;
        Ok(rows > 0
            && wk == k
            && k % 16 == 0
            && self.aligned(x)
            && w.dtype() == DType::U8
            && w.is_contiguous()
            && w.layout().start_offset() % 16 == 0
            && scale.dtype() == DType::F32
            && scale.dims2()? == (n.div_ceil(128), k.div_ceil(128)))
    }

    /// `x @ Wᵀ` for many rows with an FP8 weight (`w`: E4M3 bytes `[n, k]`, `scale` its 128×128
    /// block factors) on tensor cores, the bytes read once per block of rows (up to 64 with the
    /// kernels `GEMM_FP8_PICK` takes) and made 16-bit in registers (`gemm_fp8`, fp8.cu); `None`
    /// where it does not run (f32, or n or k not a multiple of 128).
    pub fn gemm_fp8(&self, x: &Tensor, w: &Tensor, scale: &Tensor) -> Result<Option<Tensor>> {
        self.gemm_fp8_with(x, w, scale, None, None)
    }

    /// `gemm_fp8` with a given kernel (`GEMM_FP8`'s entry; `None`: the one `GEMM_FP8_PICK` takes
    /// for this many rows) and k split into `splits` parts (`None`: as `fp8::gemm_splits`
    /// chooses), for benchmarks that compare the choices.
    pub fn gemm_fp8_with(
        &self,
        x: &Tensor,
        w: &Tensor,
        scale: &Tensor,
        kernel: Option<GemmFp8Kernel>,
        splits: Option<usize>,
    ) -> Result<Option<Tensor>> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        let mut index = match kernel {
            Some(g) => match GEMM_FP8.iter().position(|&c| c == g) {
                Some(i) => i,
                None => bail!("gemm_fp8: no kernel {}", g.name),
            },
            None => gemm_fp8_pick(rows),
        };
        if let Some(factors) = GEMM_FP8[index].lt {
            if let Some(y) = self.gemm_fp8_lt(x, w, scale, factors)? {
                return Ok(Some(y));
            }
            // Where cuBLASLt has no algorithm: nothing for a kernel asked for by name, the
            // dequantized weight for prefill's many rows (the caller's), else the kernel the
            // built-in pick takes.
            if kernel.is_some() || rows > super::linear::FP8_GEMM_ROWS {
                return Ok(None);
            }
            index = pick_for(&GEMM_FP8_PICK, rows);
        }
        let g = GEMM_FP8[index];
        let fits = self.module.funcs.contains_key(g.name)
            && self.module.funcs.contains_key(GEMM_FP8_REDUCE)
            && (!g.cluster || self.clusters)
            && k % 128 == 0
            && n % 128 == 0
            && self.fp8_operands_fit(x, w, scale)?;
        if !fits {
            return Ok(None);
        }
        let (nb, mb, kb) = (n / 128, rows.div_ceil(g.rows()), k / 128);
        let slots = self.sms * self.gemm_fp8_resident[index];
        let mut splits = splits.map_or_else(|| super::fp8::gemm_splits(nb * mb, kb, slots, g.stages), |s| s.max(1));
        if g.cluster {
            splits = super::fp8::cluster_splits(splits, kb, CLUSTER_MAX);
        }
        let y = self.empty((rows, n), self.dtype)?;
        let part = if splits > 1 && !g.cluster { Some(self.empty((splits, rows, n), DType::F32)?) } else { None };
        let scale = scale.contiguous()?;
        let (px, pw, ps, py) = (addr(x)?, addr(w)?, addr(&scale)?, addr(&y)?);
        let pp = part.as_ref().map_or(Ok(0), addr)?;
        let (m_i, n_i, k_i) = (rows as i32, n as i32, k as i32);
        // The Hopper kernels take the row blocks along x, so that those sharing a weight tile run
        // side by side and read it from memory once.
        let grid_dim =
            if g.hopper { (mb as u32, nb as u32, splits as u32) } else { (nb as u32, mb as u32, splits as u32) };
        let cfg = LaunchConfig { grid_dim, block_dim: (g.threads(), 1, 1), shared_mem_bytes: g.smem() as u32 };
        let cluster_z = if g.cluster { splits as u32 } else { 1 };
        launch!(cluster cluster_z; self, g.name, cfg, &px, &pw, &ps, &pp, &py, &m_i, &n_i, &k_i);
        if part.is_some() {
            let total = rows * n;
            let cfg = LaunchConfig {
                grid_dim: (total.div_ceil(256) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let (s_i, t_u) = (splits as i32, total as u64);
            launch!(self, GEMM_FP8_REDUCE, cfg, &pp, &py, &s_i, &t_u);
        }
        Ok(Some(y))
    }

    /// `gemm_fp8` through cuBLASLt (W8A8): the rows quantized to E4M3 per 1×128 tile, then the
    /// library's block-scaled product. `None` where it does not run: f32, shapes off its
    /// multiples (k of 128, n of 16), or no algorithm from cuBLASLt (before cuBLAS 12.9, or off
    /// compute capability 9.0).
    fn gemm_fp8_lt(&self, x: &Tensor, w: &Tensor, scale: &Tensor, factors: LtFactors) -> Result<Option<Tensor>> {
        let (rows, k) = x.dims2()?;
        let n = w.dim(0)?;
        if self.dtype == DType::F32
            || k % 128 != 0
            || n % 16 != 0
            || !self.module.funcs.contains_key(FP8_QUANT_ROWS)
            || !self.fp8_operands_fit(x, w, scale)?
        {
            return Ok(None);
        }
        let Ok(lt) = self.lt.get_or_init(|| self.lt_state()) else { return Ok(None) };
        let mut lt = lt.lock().unwrap_or_else(|e| e.into_inner());
        // cuBLASLt's factor layouts are aligned to 4 along their outer dimension: the rows go in
        // padded to a multiple of 4 (the padding quantized as zeros, its products not returned),
        // and the weight's factors with rows of a multiple of 4 blocks (`lt_scale`).
        let padded = rows.div_ceil(4) * 4;
        let shape = (padded, n, k);
        let lt_err = |e: super::cublaslt::CublasError| candle_core::Error::Msg(format!("cuBLASLt FP8 GEMM: {e:?}"));
        if !lt.gemm.supports(shape).map_err(lt_err)? {
            return Ok(None);
        }
        let w_scale = lt_scale(&mut lt.scales, scale)?;
        let xq = self.empty((padded, k), DType::U8)?;
        let xs_shape = match factors {
            LtFactors::OuterMajor => (k / 128, padded),
            LtFactors::KMajor => (padded, k / 128),
        };
        let xs = self.empty(xs_shape, DType::F32)?;
        let (px, pq, ps) = (addr(x)?, addr(&xq)?, addr(&xs)?);
        let (m_i, mp_i, k_i, k_major) = (rows as i32, padded as i32, k as i32, i32::from(factors == LtFactors::KMajor));
        let cfg = LaunchConfig {
            grid_dim: ((padded * k).div_ceil(1024) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, FP8_QUANT_ROWS, cfg, &px, &pq, &ps, &m_i, &mp_i, &k_i, &k_major);
        let y = self.empty((padded, n), self.dtype)?;
        let ops = super::cublaslt::Operands { x: pq, x_scale: ps, w: addr(w)?, w_scale: addr(&w_scale)?, y: addr(&y)? };
        // SAFETY: the operands are live tensors of the shapes named, and the temporaries among
        // them are freed in stream order, after the product that reads them.
        let queued = unsafe { lt.gemm.matmul(shape, &ops, self.stream.cu_stream().cast()) }.map_err(lt_err)?;
        if !queued {
            return Ok(None);
        }
        Ok(Some(if padded == rows { y } else { y.narrow(0, 0, rows)? }))
    }

    /// Which scale modes cuBLASLt's FP8 GEMM has an algorithm for at `rows` × `n` × `k`
    /// (`cublaslt::LtGemm::probe`), for benchmarks to report; where cuBLASLt did not set up, one
    /// entry `setup` with the error.
    pub fn gemm_fp8_lt_probe(&self, rows: usize, n: usize, k: usize) -> Vec<(String, String)> {
        match self.lt.get_or_init(|| self.lt_state()) {
            Ok(lt) => lt.lock().unwrap_or_else(|e| e.into_inner()).gemm.probe((rows, n, k)),
            Err(e) => vec![("setup".into(), e.clone())],
        }
    }

    /// cuBLASLt's handle and workspace, or (said once in the log) why they cannot be had.
    fn lt_state(&self) -> std::result::Result<std::sync::Mutex<LtState>, String> {
        let made = self.empty((super::cublaslt::WORKSPACE_BYTES,), DType::U8).and_then(|ws| {
            let gemm = super::cublaslt::LtGemm::new(addr(&ws)?, self.dtype == DType::BF16)
                .map_err(|e| candle_core::Error::Msg(format!("{e:?}")))?;
            Ok(LtState { gemm, _workspace: ws, scales: HashMap::new() })
        });
        made.map(std::sync::Mutex::new).map_err(|e| {
            tracing::warn!(error = %e, "cuBLASLt did not set up; gemm_fp8 goes without it");
            e.to_string()
        })
    }

    /// An FP8 weight (`w`: E4M3 bytes `[n, k]`, `scale` its block factors) in the kernels' dtype,
    /// for a GEMM over many rows.
    pub fn dequantize_fp8(&self, w: &Tensor, scale: &Tensor) -> Result<Tensor> {
        let (n, k) = w.dims2()?;
        if w.dtype() != DType::U8 || k % 16 != 0 || scale.dtype() != DType::F32 {
            bail!("dequantize_fp8: E4M3 bytes [n, k] with k a multiple of 16 and f32 factors");
        }
        let w = w.contiguous()?;
        let scale = scale.contiguous()?;
        let out = self.empty((n, k), self.dtype)?;
        let (pw, ps, po) = (addr(&w)?, addr(&scale)?, addr(&out)?);
        let (n_i, k_i) = (n as i32, k as i32);
        let cfg = LaunchConfig {
            grid_dim: ((n * k / 16).div_ceil(256) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, "fp8_dequant", cfg, &pw, &ps, &po, &n_i, &k_i);
        Ok(out)
    }

    /// The index into `SPLITS` (warps per unit) and the launch geometry of a one-row projection of
    /// `kind` computing `units` units: the fewest warps per unit that give the device the kind's
    /// `WARPS_PER_SM`, unless `SUBGOAL_CUDA_GEMV_SPLIT` says otherwise.
    fn split_choice(&self, units: usize, kind: Split) -> (usize, LaunchConfig) {
        let target = WARPS_PER_SM[kind as usize] * self.sms;
        let i = match self.gemv_split[kind as usize] {
            Some(s) => SPLITS.iter().position(|&x| x == s).unwrap_or(0),
            None => SPLITS.iter().position(|&s| units * s >= target).unwrap_or(SPLITS.len() - 1),
        };
        let per_block = GEMV_WARPS / SPLITS[i];
        let cfg = LaunchConfig {
            grid_dim: (units.div_ceil(per_block) as u32, 1, 1),
            block_dim: (32 * GEMV_WARPS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        (i, cfg)
    }

    /// Whether the few-row kernels take `x` (`[rows, k]`) against `w` (`[n, wk]`, `wk == k`):
    /// few enough rows, 16-byte aligned contiguous rows of the kernels' dtype.
    fn gemv_fits(&self, x: &Tensor, w: &Tensor, k: usize) -> Result<bool> {
        let (rows, _) = x.dims2()?;
        let (_, wk) = w.dims2()?;
        Ok(rows > 0
            && rows <= self.gemv_rows
            && wk == k
            && k % self.per_load() == 0
            && self.aligned(x)
            && self.aligned(w))
    }

    /// Elements of the kernels' dtype in one 16-byte load.
    fn per_load(&self) -> usize {
        16 / self.dtype.size_in_bytes()
    }

    /// Whether `t` is of the kernels' dtype, contiguous, and starts on a 16-byte load.
    fn aligned(&self, t: &Tensor) -> bool {
        t.dtype() == self.dtype && t.is_contiguous() && t.layout().start_offset() % self.per_load() == 0
    }

    /// For the normalized row of `row` and `w` = `[gate; up]` (`[2 * inter, k]`, dense or FP8):
    /// `silu(h @ gate^T) * (h @ up^T)`, `[1, inter]`, in one launch; `None` where the kernel does
    /// not apply.
    pub fn gemv_silu(&self, row: &NormIn, w: RowWeight) -> Result<Option<Tensor>> {
        let (two, k) = w.dims()?;
        if two % 2 != 0 || !self.norm_fits(row, w)? {
            return Ok(None);
        }
        let (inter, pairs) = (two / 2, w.pairs(self));
        let (split, cfg) = self.split_choice(inter.div_ceil(pairs), Split::GateUp);
        let (name, pw, ps) =
            w.launch_parts([GEMV_SILU_SPLIT, GEMV_SILU_FP8_SPLIT, GEMV_SILU_FP8W_SPLIT], pairs, split)?;
        let y = self.empty((1, inter), self.dtype)?;
        let (px, pg, py) = (addr(row.x)?, addr(row.g)?, addr(&y)?);
        let (inter_i, k_i) = (inter as i32, k as i32);
        launch!(self, name, cfg, &px, &pg, &row.eps, &pw, &ps, &py, &inter_i, &k_i);
        Ok(Some(y))
    }

    /// `rope_kv` of the projection `h @ w^T` of the normalized row of `row` (`w`: `[q; k; v]`):
    /// normalization, projection and rotation in one launch; returns q, or `None` where the kernel
    /// does not apply.
    pub fn gemv_rope(&self, row: &NormIn, w: RowWeight, step: &RopeStep) -> Result<Option<Tensor>> {
        let RopeStep { caches, tables, pos, heads, interleaved, q_scale } = *step;
        let (n, k) = w.dims()?;
        let (crows, kv_heads, cap, d) = caches.0.dims4()?;
        if crows != 1 || n != (heads + 2 * kv_heads) * d || !self.norm_fits(row, w)? {
            return Ok(None);
        }
        self.check_step(caches, Some(tables), pos)?;
        let (name, cfg, pw, pf) = self.rope_launch(w, heads, kv_heads, d)?;
        let q = self.empty((1, heads * d), self.dtype)?;
        let (px, pg, pq, pk, pv) = (addr(row.x)?, addr(row.g)?, addr(&q)?, addr(caches.0)?, addr(caches.1)?);
        let (pc, ps, pp) = (addr(tables.0)?, addr(tables.1)?, addr(pos)?);
        let ints = [heads as i32, kv_heads as i32, d as i32, cap as i32, interleaved as i32, k as i32];
        let (no_table, no_bs) = (0u64, 0i32);
        launch!(
            self, name, cfg, &px, &pg, &row.eps, &pw, &pf, &pq, &pk, &pv, &pc, &ps, &pp, &ints[0], &ints[1], &ints[2],
            &ints[3], &ints[4], &q_scale, &ints[5], &no_table, &no_bs
        );
        Ok(Some(q))
    }

    /// The kernel, launch geometry and weight and factor addresses of a norm-fused q/k/v projection
    /// (`gemv_rope`, `gemv_rope_paged`) over `w`.
    fn rope_launch(
        &self,
        w: RowWeight,
        heads: usize,
        kv_heads: usize,
        d: usize,
    ) -> Result<(&'static str, LaunchConfig, u64, u64)> {
        let (pairs, per) = ((heads + 2 * kv_heads) * d / 2, w.pairs(self));
        let (split, cfg) = self.split_choice(pairs.div_ceil(per), Split::Qkv);
        let names = [GEMV_ROPE_SPLIT, GEMV_ROPE_FP8_SPLIT, GEMV_ROPE_FP8W_SPLIT];
        let (name, pw, pf) = w.launch_parts(names, per, split)?;
        Ok((name, cfg, pw, pf))
    }

    /// Whether a normalizing projection takes `row` against `w`: one aligned row and a norm weight
    /// of its length, of the kernels' dtype, and a weight the one-row kernels read.
    fn norm_fits(&self, row: &NormIn, w: RowWeight) -> Result<bool> {
        let (rows, k) = row.x.dims2()?;
        if rows != 1 || row.g.dims() != [k] || !self.aligned(row.g) {
            return Ok(false);
        }
        match w {
            RowWeight::Dense(w) => self.gemv_fits(row.x, w, k),
            RowWeight::Fp8 { bytes, scale } => self.fp8_operands_fit(row.x, bytes, scale),
        }
    }

    /// `gemv_rope` for one row of the serving engine: k and v go into the paged cache
    /// (`[blocks, kv_heads, bs, d]`) through the row's block table (`table`, u32 on the device).
    pub fn gemv_rope_paged(
        &self,
        row: &NormIn,
        w: RowWeight,
        step: &PagedRope,
        table: &Tensor,
    ) -> Result<Option<Tensor>> {
        let PagedRope { caches, tables, pos, heads, interleaved, q_scale, .. } = *step;
        // An FP8 cache's rows are quantized by `rope_kv_paged`'s FP8 kernel.
        if caches.scales.is_some() {
            return Ok(None);
        }
        let caches = (caches.k, caches.v);
        let (n, k) = w.dims()?;
        let (_, kv_heads, bs, d) = caches.0.dims4()?;
        if n != (heads + 2 * kv_heads) * d || !self.norm_fits(row, w)? || pos.elem_count() != 1 {
            return Ok(None);
        }
        self.check_step(caches, Some(tables), pos)?;
        let (name, cfg, pw, pf) = self.rope_launch(w, heads, kv_heads, d)?;
        let q = self.empty((1, heads * d), self.dtype)?;
        let (px, pg, pq, pk, pv) = (addr(row.x)?, addr(row.g)?, addr(&q)?, addr(caches.0)?, addr(caches.1)?);
        let (pc, ps, pp, pt) = (addr(tables.0)?, addr(tables.1)?, addr(pos)?, addr(table)?);
        let ints = [heads as i32, kv_heads as i32, d as i32, 0, interleaved as i32, k as i32, bs as i32];
        launch!(
            self, name, cfg, &px, &pg, &row.eps, &pw, &pf, &pq, &pk, &pv, &pc, &ps, &pp, &ints[0], &ints[1], &ints[2],
            &ints[3], &ints[4], &q_scale, &ints[5], &pt, &ints[6]
        );
        Ok(Some(q))
    }

    /// Rotates every token's q and k at its own position, writes k and v into the paged cache
    /// through its sequence's block table (quantized, with their rows' factors, into an FP8
    /// cache), and returns q `[tokens, heads * d]` scaled.
    pub fn rope_kv_paged(&self, qkv: &Tensor, step: &PagedRope) -> Result<Tensor> {
        let PagedRope { caches, tables, pos, heads, interleaved, q_scale, block_tables, tab } = *step;
        self.check(qkv)?;
        self.check_kv(&caches)?;
        self.check(tables.0)?;
        self.check(tables.1)?;
        let (tokens, stride) = qkv.dims2()?;
        let (_, kv_heads, bs, d) = caches.k.dims4()?;
        if stride != (heads + 2 * kv_heads) * d || pos.elem_count() != tokens || tab.elem_count() != tokens {
            bail!(
                "rope_kv_paged: qkv {:?} for {} positions and cache {:?}",
                qkv.dims(),
                pos.elem_count(),
                caches.k.dims()
            );
        }
        let q = self.empty((tokens, heads * d), self.dtype)?;
        let (pqkv, pq, pk, pv) = (addr(qkv)?, addr(&q)?, addr(caches.k)?, addr(caches.v)?);
        let (pc, ps, pp, pt, ptab) = (addr(tables.0)?, addr(tables.1)?, addr(pos)?, addr(block_tables)?, addr(tab)?);
        let ints = [stride as i32, heads as i32, kv_heads as i32, d as i32, bs as i32, interleaved as i32];
        let cfg = LaunchConfig {
            grid_dim: ((heads + 2 * kv_heads) as u32, tokens as u32, 1),
            block_dim: ((d / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let kernel = if caches.scales.is_some() { "rope_kv_paged_kv8" } else { "rope_kv_paged" };
        let (pks, pvs) = factors(&caches)?;
        let [stride, heads, kv_heads, d, bs, inter] = ints.each_ref();
        launch!(
            self, kernel, cfg, &pqkv, stride, &pq, &pk, &pv, &pks, &pvs, &pc, &ps, &pp, &pt, &ptab, heads, kv_heads, d,
            bs, inter, &q_scale
        );
        Ok(q)
    }

    /// Paged keys and values: in the kernels' dtype, or FP8 bytes with f32 row factors.
    fn check_kv(&self, kv: &PagedKv) -> Result<()> {
        match kv.scales {
            None => {
                self.check(kv.k)?;
                self.check(kv.v)
            }
            Some((ks, vs)) => {
                if kv.k.dtype() != DType::U8 || kv.v.dtype() != DType::U8 {
                    bail!("fused decode: an FP8 cache of {:?}, not u8", kv.k.dtype());
                }
                if ks.dtype() != DType::F32 || vs.dtype() != DType::F32 {
                    bail!("fused decode: FP8 cache factors of {:?}, not f32", ks.dtype());
                }
                Ok(())
            }
        }
    }

    /// Attention of one query per row (`q`: `[rows, heads * d]`, scaled) over its sequence's first
    /// `lens[r]` positions, read through its block table (`block_tables` at `tab[r]`); `max_len` is
    /// the longest row's length (it sets the splits). With `cascade`, the rows' shared prefixes are
    /// read once per group (`attn_cascade`) and each row's own positions after them by itself.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_paged(
        &self,
        q: &Tensor,
        caches: PagedKv,
        block_tables: &Tensor,
        tab: &Tensor,
        lens: &Tensor,
        max_len: usize,
        heads: usize,
        cascade: Option<Cascade>,
    ) -> Result<Tensor> {
        self.check(q)?;
        self.check_kv(&caches)?;
        let rows = q.dim(0)?;
        let (_, kv_heads, bs, d) = caches.k.dims4()?;
        let fp8 = caches.scales.is_some();
        let Some(kernel) = attn_name(&PAGED, d, fp8) else {
            bail!("paged attention takes head_dim 64, 128 or 256, not {d}")
        };
        // Positions per split: as many as fill the kernel's tile (twice as many in FP8).
        let chunk = ATTN_TILE_BYTES / (d * caches.k.dtype().size_in_bytes());
        let cascade_kernel = self.loaded_attn(&CASCADE, d, fp8);
        let cascade = cascade.filter(|c| {
            c.max_shared > 0 && c.row_starts.len() == rows && c.row_lens.len() == rows && cascade_kernel.is_some()
        });
        // Each row's partial results: its prefix spans' (cascade), then its own splits'.
        let (splits, slots, span) = match &cascade {
            None => {
                let s = max_len.div_ceil(chunk).max(1);
                (s, s, 1)
            }
            Some(c) => {
                let span = self.cascade_span(c.max_shared, c.query_blocks, heads);
                let mine = |r: usize| (c.row_lens[r] - c.row_starts[r]) as usize;
                let splits = (0..rows).map(|r| mine(r).div_ceil(chunk)).max().unwrap_or(1).max(1);
                let slots = (0..rows)
                    .map(|r| (c.row_starts[r] as usize).div_ceil(span) + mine(r).div_ceil(chunk))
                    .max()
                    .unwrap_or(1)
                    .max(1);
                (splits, slots, span)
            }
        };
        let part = self.empty((rows, heads, slots, d + 2), DType::F32)?;
        let out = self.empty((rows, heads * d), self.dtype)?;
        let counters = self.counters(rows * heads)?;
        let (pq, pk, pv, ppart, pc, po) =
            (addr(q)?, addr(caches.k)?, addr(caches.v)?, addr(&part)?, addr(&counters)?, addr(&out)?);
        let (pt, ptab, pl) = (addr(block_tables)?, addr(tab)?, addr(lens)?);
        let (pks, pvs) = factors(&caches)?;
        let ints = [heads as i32, kv_heads as i32, bs as i32, span as i32, slots as i32];
        let [heads_i, kv_heads_i, bs_i, span_i, slots_i] = ints.each_ref();
        let mut pstarts = 0u64;
        if let (Some(c), Some(name)) = (&cascade, cascade_kernel) {
            pstarts = addr(c.starts)?;
            let (pb, pr) = (addr(c.blocks)?, addr(c.rows)?);
            let cfg = LaunchConfig {
                grid_dim: (heads as u32, c.query_blocks as u32, c.max_shared.div_ceil(span) as u32),
                block_dim: (128, 1, 1),
                shared_mem_bytes: prefill_smem(d, 1) as u32,
            };
            launch!(
                self, name, cfg, &pq, &pk, &pv, &pks, &pvs, &ppart, &pt, &pb, &pr, span_i, slots_i, heads_i,
                kv_heads_i, bs_i
            );
        }
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, rows as u32, splits as u32),
            block_dim: (ATTN_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self, kernel, cfg, &pq, &pk, &pv, &pks, &pvs, &ppart, &pc, &po, &pt, &ptab, &pl, &pstarts, span_i, slots_i,
            heads_i, kv_heads_i, bs_i
        );
        Ok(out)
    }

    /// Positions per cascade block: whole key tiles, as few as still give about two blocks per SM
    /// over all heads and query blocks (fewer, longer spans each carry their queries' fragments
    /// over more keys; too few blocks leave SMs idle).
    fn cascade_span(&self, max_shared: usize, query_blocks: usize, heads: usize) -> usize {
        let tiles = max_shared.div_ceil(FA_K).max(1);
        let spans = (2 * self.sms).div_ceil((heads * query_blocks).max(1)).clamp(1, tiles);
        FA_K * tiles.div_ceil(spans)
    }

    /// A family's kernel for head size `d` (over an FP8 cache or not), where this GPU loaded it
    /// (the tensor-core kernels need more shared memory than some GPUs give).
    fn loaded_attn(&self, family: &AttnFamily, d: usize, fp8: bool) -> Option<&'static str> {
        attn_name(family, d, fp8).filter(|name| self.module.funcs.contains_key(name))
    }

    /// Whether shared-prefix attention runs here for head size `d`, over an FP8 cache or not.
    pub fn has_cascade(&self, d: usize, fp8: bool) -> bool {
        self.loaded_attn(&CASCADE, d, fp8).is_some()
    }

    /// Whether the tiled prefill attention runs here for head size `d`, over an FP8 cache or not.
    pub fn has_prefill(&self, d: usize, fp8: bool) -> bool {
        self.loaded_attn(&PREFILL, d, fp8).is_some()
    }

    /// Groups of 16 query rows a warp for prefill attention of `len` queries over `heads` heads
    /// of size `d`: 2 (`PREFILL_WIDE`, twice the products per fragment loaded) where its blocks
    /// fill more than one wave of the GPU, else 1 (twice the blocks, so a short prompt keeps
    /// more SMs busy); `SUBGOAL_CUDA_PREFILL_GROUPS` decides where set and the kernel is loaded.
    fn prefill_groups(&self, d: usize, fp8: bool, heads: usize, len: usize) -> usize {
        let resident = self.prefill_wide_resident[usize::from(fp8)];
        if d != 128 || resident == 0 {
            return 1;
        }
        let wide_blocks = heads * len.div_ceil(prefill_queries(2));
        self.prefill_groups.unwrap_or(if wide_blocks > resident * self.sms { 2 } else { 1 })
    }

    /// Prefill attention of one prompt chunk: `q` (`[len, heads * d]`, scaled) at positions
    /// `context..context + len` of the sequence with block table `table`, each query over the
    /// positions up to its own; `None` for f32 (no tensor-core kernel).
    pub fn attention_prefill(
        &self,
        q: &Tensor,
        caches: PagedKv,
        table: &Tensor,
        context: usize,
        heads: usize,
    ) -> Result<Option<Tensor>> {
        let (_, kv_heads, bs, d) = caches.k.dims4()?;
        let fp8 = caches.scales.is_some();
        let Some(narrow) = self.loaded_attn(&PREFILL, d, fp8) else { return Ok(None) };
        let len = q.dim(0)?;
        let groups = self.prefill_groups(d, fp8, heads, len);
        let kernel = if groups == 2 { PREFILL_WIDE[usize::from(fp8)] } else { narrow };
        self.check(q)?;
        self.check_kv(&caches)?;
        let out = self.empty((len, heads * d), self.dtype)?;
        let (pq, pk, pv, po, pt) = (addr(q)?, addr(caches.k)?, addr(caches.v)?, addr(&out)?, addr(table)?);
        let ints = [context as i32, len as i32, heads as i32, kv_heads as i32, bs as i32];
        let cfg = LaunchConfig {
            grid_dim: (heads as u32, len.div_ceil(prefill_queries(groups)) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: prefill_smem(d, groups) as u32,
        };
        let [context, len, heads, kv_heads, bs] = ints.each_ref();
        let (pks, pvs) = factors(&caches)?;
        launch!(self, kernel, cfg, &pq, &pk, &pv, &pks, &pvs, &po, &pt, context, len, heads, kv_heads, bs);
        Ok(Some(out))
    }

    /// At least `n` zeroed counters for the attention's last-split merge (each launch leaves its
    /// counters at zero, and a launch reads them only after the one before it has finished: stream
    /// order, or `pdl_begin`'s wait).
    fn counters(&self, n: usize) -> Result<Tensor> {
        let mut c = self.counters.lock().map_err(|_| candle_core::Error::Msg("fused counters poisoned".into()))?;
        if c.as_ref().map_or(0, |t| t.elem_count()) < n {
            *c = Some(Tensor::zeros(n.max(4096), DType::U32, &Device::Cuda(self.dev.clone()))?);
        }
        c.clone().ok_or_else(|| candle_core::Error::Msg("fused counters missing".into()))
    }
}
