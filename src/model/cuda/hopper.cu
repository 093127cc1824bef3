// The FP8 GEMM for many rows on Hopper (compute capability 9.0 only: wgmma is an sm_90a
// instruction, so build.rs compiles this file to a PTX module of its own, and fused.rs loads it
// only on such a GPU, beside decode.cu's, whose kernels run everywhere).
//
// Why: gemm_fp8 (fp8.cu) feeds mma.sync, which on Hopper does not reach the tensor cores' full
// rate and makes each warp issue every 16x8 product itself; past 48 rows it ran below cuBLAS on
// the bf16 weight (0.62x at 128 rows, gpu_decode --gemm-only, 2026-12-07) although it reads half
// the bytes.
// Here one warpgroup's wgmma multiplies 64 weight rows by up to 128 activation rows per
// instruction, asynchronously, so the warps spend their issue slots on decoding the weights.
//
// The product is computed transposed, y^T = W x^T: the weight is wgmma's A operand, taken from
// registers, where each warp decodes its own fragments from the E4M3 bytes (the integer decoding
// of e4m3x4_split, exact, as gemm_fp8 does); the activations are the B operand, read by the
// tensor cores from shared memory in the canonical K-major layout without swizzle (8-row by
// 16-byte core matrices; within a 128-wide step, the 16 core matrices of 8 rows lie side by side,
// 128 bytes apart along k, and groups of 8 rows 2,048 bytes apart). Each 128-wide step of k is
// summed in units of its block's factor and the running sum rescaled when the factor changes,
// as in gemm_fp8: the dequantized product, up to summation order.
//
// A block is one warpgroup (128 threads) and covers 128 weight rows (one factor block along n,
// two 64-row tiles, warp w taking rows 16 w .. 16 w + 15 of each) by NT activation rows. The
// weight bytes pass through shared memory (cp.async, 16-byte chunks swizzled by row) so that each
// lane can read the two bytes of each 8-byte group its fragment needs. Each step's eight 16-wide
// k slices go out as two groups of four; the fragments of one group are decoded while the other
// group's products run. Requires n % 128 == 0 and k % 128 == 0. Grid: (ceil(m / NT), n / 128,
// splits) - the blocks that share a weight tile run together, so the tile is read from memory
// once; block: 128; dynamic shared memory: STAGES * (NT * 256 + 16384) bytes.
//
// Unlike gemm_fp8, it starts no weight copies before pdl_wait (SUBGOAL_CUDA_PREFETCH, off by
// default, reaches decode.cu's module only).
//
// Measured on an H100 and an H200 (docs/models.md), exact as gemm_fp8 and slower than it at 16 to
// 128 rows: fused.rs picks none of these kernels, which stay for comparison and as the base of a
// deeper-pipelined one.

#include "common.cuh"

// d (+)= a b for one 16-wide slice of k: a 64x16 tile of A in registers (four 16-bit pairs a thread,
// as mma.sync's A fragment, warp w of the warpgroup holding rows 16 w ..), B NTx16 in shared memory
// (`desc`), d the thread's NT / 2 accumulators; with acc = 0, d = a b (d is not read).
template <typename T, int NT> __device__ __forceinline__ void wgmma(float* d, const uint32_t* a, uint64_t desc, int acc);
#define WG_D8(d, i)                                                                                                \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]),    \
        "+f"(d[i + 7])

// One specialization of wgmma for each 16-bit type, from NT, the asm operand numbers of the
// accumulators (DREGS, a string), of A's four registers (AREGS), of the descriptor (DESC) and of
// the accumulate flag (ACC, which sets the predicate wgmma's scale-d takes), and the accumulators
// as asm operands (...).
#define WGMMA_T(T, S, NT, DREGS, AREGS, DESC, ACC, ...)                                                         \
    template <> __device__ __forceinline__ void wgmma<T, NT>(float* d, const uint32_t* a, uint64_t desc, int acc) { \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #ACC ", 0;\n"                                       \
                     "wgmma.mma_async.sync.aligned.m64n" #NT "k16.f32." S "." S " {" DREGS "}, {" AREGS "}, %" #DESC \
                     ", p, 1, 1, 0;\n}\n"                                                                      \
                     : __VA_ARGS__                                                                               \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(acc));                        \
    }
#define WGMMA(NT, DREGS, AREGS, DESC, ACC, ...)                                                                  \
    WGMMA_T(__nv_bfloat16, "bf16", NT, DREGS, AREGS, DESC, ACC, __VA_ARGS__)                                     \
    WGMMA_T(__half, "f16", NT, DREGS, AREGS, DESC, ACC, __VA_ARGS__)
// Sixteen asm operand numbers as the list an instruction takes.
#define WG_R16(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p)                                                   \
    "%" #a ", %" #b ", %" #c ", %" #d ", %" #e ", %" #f ", %" #g ", %" #h ", %" #i ", %" #j ", %" #k ", %" #l    \
    ", %" #m ", %" #n ", %" #o ", %" #p
#define WG_R0_15 WG_R16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define WG_R16_31 WG_R16(16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)
#define WG_R32_47 WG_R16(32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47)
#define WG_R48_63 WG_R16(48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63)
WGMMA(32, WG_R0_15, "%16, %17, %18, %19", 20, 21, WG_D8(d, 0), WG_D8(d, 8))
WGMMA(64, WG_R0_15 ", " WG_R16_31, "%32, %33, %34, %35", 36, 37, WG_D8(d, 0), WG_D8(d, 8), WG_D8(d, 16),
      WG_D8(d, 24))
WGMMA(128, WG_R0_15 ", " WG_R16_31 ", " WG_R32_47 ", " WG_R48_63, "%64, %65, %66, %67", 68, 69, WG_D8(d, 0),
      WG_D8(d, 8), WG_D8(d, 16), WG_D8(d, 24), WG_D8(d, 32), WG_D8(d, 40), WG_D8(d, 48), WG_D8(d, 56))

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
// Until at most N of this warpgroup's committed groups are still running.
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Makes this thread's writes to shared memory (cp.async copies, stores) visible to the async
// proxy, through which wgmma reads its shared-memory operand.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// Keeps the compiler from moving reads or writes of v across the point where it stands (the
// accumulators are written by the tensor cores between a wgmma and its wait).
__device__ __forceinline__ void pin(float& v) { asm volatile("" : "+f"(v)::"memory"); }

// The shared-memory descriptor of a K-major operand without swizzle at shared address `addr`:
// core matrices 128 bytes apart along k (leading dimension) and 2,048 bytes apart along the rows
// (stride dimension), both in 16-byte units.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)(128 >> 4) << 16) | ((uint64_t)(2048 >> 4) << 32);
}

constexpr int WG_N = 128, WG_K = 128;

template <typename T, int NT, int STAGES>
__device__ void gemm_fp8_wg(const T* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scale,
                            float* __restrict__ part, T* __restrict__ y, int m, int n, int k) {
    static_assert(NT % 32 == 0 && NT <= 128 && STAGES >= 2, "32, 64 or 128 rows; at least two stages");
    pdl_launch();
    constexpr int XS = NT * WG_K * 2;  // a stage's activations: NT / 8 groups of 16 core matrices
    constexpr int WS = WG_N * WG_K;    // a stage's weights: 128 rows of 128 bytes
    constexpr int ND = NT / 2;         // accumulators a thread holds per 64-row tile
    extern __shared__ __align__(128) unsigned char smem[];
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
    int m0 = blockIdx.x * NT, n0 = blockIdx.y * WG_N;
    int kblocks = k / WG_K;
    int kb0, steps;
    k_share(kblocks, kb0, steps);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int rows = min(NT, m - m0);
    const float* factors = scale + (size_t)blockIdx.y * kblocks;
    // Activation row r's 16-byte chunk c (8 values of k) at (r / 8) 2048 + c 128 + (r % 8) 16:
    // consecutive threads take consecutive rows of one chunk, so a warp's copies fill whole core
    // matrices (no bank conflicts) and read 64 contiguous bytes of each of 8 rows. Thread t copies
    // chunk (t / 8) % 16 of rows 8 j + t % 8, j < NT / 8. Rows past m read x's last row instead of
    // zeros: their products land in columns the epilogue never stores, and no copy is predicated.
    // The loops are unrolled with each thread's offsets fixed before the main loop: written as
    // strided loops over the tile, they took about 380 instructions a step (of about 980).
    const int xc = (threadIdx.x >> 3) & 15, xr = threadIdx.x & 7;
    const uint32_t xdst = xc * 128 + xr * 16;  // + 2048 j
    const T* xsrc[NT / 8];
#pragma unroll
    for (int j = 0; j < NT / 8; j++) xsrc[j] = x + (size_t)(m0 + min(8 * j + xr, rows - 1)) * k + xc * 8;
    auto load_x = [&](int kb, int stage) {
        unsigned char* xd = smem + stage * (XS + WS) + xdst;
#pragma unroll
        for (int j = 0; j < NT / 8; j++) __pipeline_memcpy_async(xd + j * 2048, xsrc[j] + kb * WG_K, 16);
    };
    // Weight row r's chunk c (16 bytes of k) at r 128 + (c ^ (r % 8)) 16. Thread t copies chunk
    // t % 8 of rows t / 8 + 16 j, j < 8 (16 j keeps r % 8, so one swizzled offset serves all).
    const int wr = threadIdx.x >> 3, wc = threadIdx.x & 7;
    const uint32_t wdst = XS + wr * 128 + ((wc ^ (wr & 7)) << 4);  // + 2048 j
    const uint8_t* wsrc = w + (size_t)(n0 + wr) * k + wc * 16;      // + 16 k j
    auto load_w = [&](int kb, int stage) {
        unsigned char* wd = smem + stage * (XS + WS) + wdst;
        const uint8_t* src = wsrc + kb * WG_K;
#pragma unroll
        for (int j = 0; j < WG_N / 16; j++) __pipeline_memcpy_async(wd + j * 2048, src + (size_t)j * 16 * k, 16);
    };
    // The A fragments of slices 4 h .. 4 h + 3 of a stage, for both tiles: lane (g, t4) holds
    // weight rows 16 warp + g and + 8, columns 2 t4, 2 t4 + 1 and those + 8 of each slice. Those
    // four bytes of a row lie in two 32-bit words of the slice's chunk (words t4 / 2 and 2 + t4 / 2,
    // the half t4 % 2): one prmt gathers them in the order e4m3x4_split pairs them in.
    const uint32_t sel = (t4 & 1) ? 0x7362u : 0x5140u;
    auto decode = [&](int stage, int h, uint32_t (&a)[2][4][4]) {
        const unsigned char* ws = smem + stage * (XS + WS) + XS;
#pragma unroll
        for (int ft = 0; ft < 2; ft++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int s = 4 * h + j;
#pragma unroll
                for (int half = 0; half < 2; half++) {
                    int r = ft * 64 + warp * 16 + half * 8 + g;
                    const unsigned char* p = ws + r * 128 + ((s ^ g) << 4);
                    uint32_t lo = *(const uint32_t*)(p + 4 * (t4 >> 1)), hi = *(const uint32_t*)(p + 8 + 4 * (t4 >> 1));
                    uint32_t odd, even;
                    e4m3x4_split<T>(prmt(lo, hi, sel), odd, even);
                    a[ft][j][half] = even;     // columns 2 t4, 2 t4 + 1
                    a[ft][j][2 + half] = odd;  // columns 2 t4 + 8, 2 t4 + 9
                }
            }
    };
    // `fresh`: the first slice overwrites the accumulators instead of adding to them.
    auto issue = [&](int stage, int h, const uint32_t (&a)[2][4][4], float (&acc)[2][ND], bool fresh) {
        uint32_t xaddr = sbase + stage * (XS + WS);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint64_t desc = wg_desc(xaddr + (4 * h + j) * 256);
#pragma unroll
            for (int ft = 0; ft < 2; ft++) wgmma<T, NT>(acc[ft], a[ft][j], desc, fresh && j == 0 ? 0 : 1);
        }
    };
    // The accumulators start undefined and the first product overwrites them: any other
    // instruction that wrote them (zeroing them first, say) would make ptxas serialize every
    // wgmma of the loop (its warning C7515).
    float acc[2][ND];
    bool fresh = true;
    uint32_t a0[2][4][4], a1[2][4][4];
    float fcur = 1.f;  // the factor acc is counted in
    pdl_wait();
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < steps) {
            load_x(kb0 + s, s);
            load_w(kb0 + s, s);
        }
        __pipeline_commit();
    }
    for (int it = 0; it < steps; it++) {
        int stage = it % STAGES;
        float f = __ldg(factors + kb0 + it);
        __pipeline_wait_prior(STAGES - 2);
        fence_async_shared();
        __syncthreads();  // step it has landed, visible to the tensor cores
        // The first group's fragments, while the previous step's second group runs (its first
        // group, which read a0, is done).
        wg_wait<1>();
        decode(stage, 0, a0);
        wg_wait<0>();
#pragma unroll
        for (int ft = 0; ft < 2; ft++)
#pragma unroll
            for (int i = 0; i < ND; i++) pin(acc[ft][i]);
        __syncthreads();  // every warp's products of the previous step are done: its stage is free
        if (it + STAGES - 1 < steps) {
            int next = it + STAGES - 1;
            load_x(kb0 + next, next % STAGES);
            load_w(kb0 + next, next % STAGES);
        }
        __pipeline_commit();
        if (f == 0.f) continue;  // a zero block adds nothing
        float rescale = fcur / f;
        fcur = f;
#pragma unroll
        for (int ft = 0; ft < 2; ft++)
#pragma unroll
            for (int i = 0; i < ND; i++) acc[ft][i] *= rescale;  // the wgmma's "+f" operands order these
        wg_fence();
        issue(stage, 0, a0, acc, fresh);
        wg_commit();
        fresh = false;
        decode(stage, 1, a1);
        wg_fence();
        issue(stage, 1, a1, acc, false);
        wg_commit();
    }
    wg_wait<0>();
#pragma unroll
    for (int ft = 0; ft < 2; ft++)
#pragma unroll
        for (int i = 0; i < ND; i++) pin(acc[ft][i]);
    // Through shared memory (every stage read, no copy in flight) as an f32 tile of NT rows by
    // 128 columns, rows padded to 132 floats, then out in 16-byte pieces along the rows.
    constexpr int LD = WG_N + 4;
    float* tile = (float*)smem;
    __pipeline_wait_prior(0);
    __syncthreads();
#pragma unroll
    for (int ft = 0; ft < 2; ft++)
#pragma unroll
        for (int j = 0; j < NT / 8; j++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int c = ft * 64 + warp * 16 + half * 8 + g, r = 8 * j + 2 * t4;
                // No product at all (no steps, or every factor zero): the sum is 0.
                tile[r * LD + c] = fresh ? 0.f : acc[ft][4 * j + 2 * half] * fcur;
                tile[(r + 1) * LD + c] = fresh ? 0.f : acc[ft][4 * j + 2 * half + 1] * fcur;
            }
    __syncthreads();
    if (gridDim.z == 1) {
        for (int i = threadIdx.x; i < rows * (WG_N / 8); i += 128) {
            int r = i / (WG_N / 8), c = 8 * (i % (WG_N / 8));
            const float* t = tile + r * LD + c;
            uint4 o = make_uint4(pack2<T>(t[0], t[1]), pack2<T>(t[2], t[3]), pack2<T>(t[4], t[5]), pack2<T>(t[6], t[7]));
            *(uint4*)(y + (size_t)(m0 + r) * n + n0 + c) = o;
        }
    } else {
        float* p = part + (size_t)blockIdx.z * m * n;
        for (int i = threadIdx.x; i < rows * (WG_N / 4); i += 128) {
            int r = i / (WG_N / 4), c = 4 * (i % (WG_N / 4));
            *(float4*)(p + (size_t)(m0 + r) * n + n0 + c) = *(const float4*)(tile + r * LD + c);
        }
    }
}

// gemm_fp8_w<NT>_<S>: NT activation rows a block, STAGES steps in flight; fused.rs's GEMM_FP8
// lists them. The stages are chosen so that two blocks share an SM (96 KiB of shared memory each);
// the o3 forms take fewer stages and registers so that three do (the profile found 2 warps a
// scheduler too few to hide each one's latency).
#define FP8_WGMMA_K(T, S, NAME, NT, STAGES, MINB)                                                                \
    extern "C" __global__ void __launch_bounds__(128, MINB)                                                      \
        NAME##_##S(const T* x, const uint8_t* w, const float* scale, float* part, T* y, int m, int n, int k) {   \
        gemm_fp8_wg<T, NT, STAGES>(x, w, scale, part, y, m, n, k);                                               \
    }
#define FP8_WGMMA(T, S)                                                                                          \
    FP8_WGMMA_K(T, S, gemm_fp8_w32, 32, 4, 2) FP8_WGMMA_K(T, S, gemm_fp8_w64, 64, 3, 2)                          \
    FP8_WGMMA_K(T, S, gemm_fp8_w128, 128, 2, 2) FP8_WGMMA_K(T, S, gemm_fp8_w32o3, 32, 3, 3)                      \
    FP8_WGMMA_K(T, S, gemm_fp8_w64o3, 64, 2, 3)
FP8_WGMMA(__nv_bfloat16, bf16)
FP8_WGMMA(__half, f16)
