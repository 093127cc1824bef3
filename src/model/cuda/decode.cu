// Fused kernels for one decode step of the Llama-family decoder (src/model/fused.rs launches them).
//
// Why: the generic path issues about 27 kernels per layer for a decode step and, on an H200 at
// the 7B shape, was bound by the CPU launching them. These bring a layer to 5 launches at one row
// (9 from two rows on): residual add with RMSNorm, RoPE with the KV-cache write, split-K attention
// over the cache, SiLU times up, a few-row GEMV (at one row with the norm before it in its loads
// and the residual add in its epilogue), and the sampler. The position is read from device
// memory, never baked into a launch (a prerequisite for capturing a step as a CUDA graph, which is
// not done: a step still allocates its outputs and uploads the position).
//
// Arithmetic is in f32; values are rounded to the storage type where the generic path stores them.

#include "common.cuh"

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }

// E4M3 (FP8 weights in fp8.cu, the FP8 cache in paged.cu): two bytes (the lower first) as floats
// through the hardware pair conversion of sm_89 and later, and a float saturated to one.
__device__ __forceinline__ float2 f8x2(uint16_t w) {
    __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)w, __NV_E4M3);
    return __half22float2(__half2(h));
}
__device__ __forceinline__ uint8_t to_f8(float x) { return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3); }

// E4M3 without a conversion instruction, for the FP8 cache's attn_paged: a byte's sign moved to
// bit 31 and its other seven bits to bits 26..20 make an f32 equal to the byte's value times
// 2^-120, exactly, subnormals included (they become f32 subnormals, which nothing here flushes);
// E4M3's NaN, which no converter here writes, reads as 480. Three integer operations a value
// instead of the conversion unit's pair conversion and two f16-to-f32 conversions. Measured on an
// H100 (32 rows, 2,048 positions) a step with the FP8 cache took 0.97 of the time; gemv_fp8 at
// one row was no faster with it (0.97x) and keeps the conversion. Callers take the 2^120 back
// as F8_RAW_A * F8_RAW_B, two factors so that no product can overflow or fall into subnormals for
// any value that matters: one goes into the sum, the other into the factor it is multiplied by
// anyway.
constexpr float F8_RAW_A = 0x1p64f, F8_RAW_B = 0x1p56f;
// The byte in bits 31..24 of t.
__device__ __forceinline__ float f8_raw_top(uint32_t t) { return __int_as_float(((int)t >> 4) & (int)0x87F00000); }
// The N (at most 4) lowest bytes of w, lowest first.
template <int N> __device__ __forceinline__ void f8_raw(uint32_t w, float* out) {
#pragma unroll
    for (int e = 0; e < N; e++) out[e] = f8_raw_top(w << (24 - 8 * e));
}

// How many of its first weight loads a projection kernel asks into L2 between pdl_launch and
// pdl_wait (0: none), set once per module load (fused.rs, `SUBGOAL_CUDA_PREFETCH`). Weights never
// depend on the kernel before, so a block that is resident while that kernel drains can start
// their fetch then: each projection of a decode step otherwise begins with every block waiting
// out a full memory latency at once, and ends with the SMs idling one by one.
__constant__ int subgoal_prefetch;
constexpr int PREFETCH_MAX = 4;  // at most so many (fused.rs clamps the setting to it)

__device__ __forceinline__ void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#endif
}

// A thread's walk through a sequence's cached positions, `step` at a time from `pos`: one division
// to find the first block, then a comparison a step. Each position's own paged_row costs a
// division, a remainder and a table read, which in the attention kernels' tile loads took more
// issue slots than the copies.
struct TableWalk {
    int blk, off;
    __device__ __forceinline__ TableWalk(int pos, int bs) : blk(pos / bs), off(pos - (pos / bs) * bs) {}
    __device__ __forceinline__ size_t row(const uint32_t* table, int bs, int kv_heads, int kh) const {
        return ((size_t)table[blk] * kv_heads + kh) * bs + off;
    }
    __device__ __forceinline__ void advance(int step, int bs) {
        for (off += step; off >= bs; off -= bs) blk++;
    }
};

// Row of (head kh, position pos) of a sequence with block table `table` in the serving engine's
// paged cache [blocks, kv_heads, bs, d] (paged.cu).
__device__ __forceinline__ size_t paged_row(const uint32_t* table, int pos, int bs, int kv_heads, int kh) {
    return TableWalk(pos, bs).row(table, bs, kv_heads, kh);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
    return v;
}

// The warp's sums of C values (C a power of two, at most 32; each lane holds a part of each),
// dealt out: lane L returns the total of v[L % C]. Halving exchanges (lanes whose bit o is set
// keep the upper half of what is left and send the lower) take 31 shuffles for 32 sums, where
// reducing each sum across the warp takes 5 apiece. v is overwritten.
//
// deal_step is one halving exchange: O of the 2 * O values in v stay.
template <int O> __device__ __forceinline__ void deal_step(float* v, int lane) {
    // Selected by masks, not `?:`, which the compiler turns into indexing v through memory.
    uint32_t up = (lane & O) ? ~0u : 0u;
#pragma unroll
    for (int i = 0; i < O; i++) {
        uint32_t lo = __float_as_uint(v[i]), hi = __float_as_uint(v[i + O]);
        float send = __uint_as_float((lo & up) | (hi & ~up)), keep = __uint_as_float((hi & up) | (lo & ~up));
        v[i] = keep + __shfl_xor_sync(0xffffffff, send, O);
    }
    if constexpr (O > 1) deal_step<O / 2>(v, lane);
}

template <int C> __device__ __forceinline__ float warp_sum_deal(float* v, int lane) {
    static_assert(C >= 1 && C <= 32 && (C & (C - 1)) == 0, "C is a power of two up to 32");
    if constexpr (C > 1) deal_step<C / 2>(v, lane);
    float a = v[0];
    // Lanes L and L ^ o (o >= C) hold parts of the same sum.
#pragma unroll
    for (int o = C; o < 32; o <<= 1) a += __shfl_xor_sync(0xffffffff, a, o);
    return a;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    float t = lane < warps ? part[lane] : 0.f;
    return warp_sum(t);
}

// out = [x + delta ; rmsnorm(x + delta) * w], rows of `hidden`; `delta` may be null.
// Grid: one block per row.
template <typename T>
__device__ void add_rmsnorm(const T* x, const T* delta, const T* w, T* out, int rows, int hidden, float eps) {
    pdl_begin();
    constexpr int HELD = 8;  // values a thread keeps in registers (hidden <= HELD * blockDim.x)
    int r = blockIdx.x;
    const T* xr = x + (size_t)r * hidden;
    const T* dr = delta ? delta + (size_t)r * hidden : nullptr;
    T* sr = out + (size_t)r * hidden;
    T* nr = out + ((size_t)rows + r) * hidden;
    float ss = 0.f;
    if (hidden <= HELD * (int)blockDim.x) {
        float v[HELD], wv[HELD];
#pragma unroll
        for (int t = 0; t < HELD; t++) {
            int i = threadIdx.x + t * blockDim.x;
            v[t] = 0.f;
            wv[t] = 0.f;
            if (i < hidden) {
                // Rounded first: the norm sees the sum as stored, as in the generic path.
                T s = from_f<T>(to_f(xr[i]) + (dr ? to_f(dr[i]) : 0.f));
                sr[i] = s;
                v[t] = to_f(s);
                ss += v[t] * v[t];
                wv[t] = to_f(w[i]);  // loaded before the reduction, off its critical path
            }
        }
        float inv = rsqrtf(block_sum(ss) / hidden + eps);
#pragma unroll
        for (int t = 0; t < HELD; t++) {
            int i = threadIdx.x + t * blockDim.x;
            if (i < hidden) nr[i] = from_f<T>(v[t] * inv * wv[t]);
        }
        return;
    }
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        T s = from_f<T>(to_f(xr[i]) + (dr ? to_f(dr[i]) : 0.f));
        sr[i] = s;
        ss += to_f(s) * to_f(s);
    }
    float inv = rsqrtf(block_sum(ss) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) nr[i] = from_f<T>(to_f(sr[i]) * inv * to_f(w[i]));
}

// out[r, i] = silu(in[r, i]) * in[r, inter + i]; in is `[gate | up]` per row.
template <typename T>
__device__ void silu_mul(const T* in, T* out, int rows, int inter) {
    pdl_begin();
    size_t n = (size_t)rows * inter;
    for (size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        size_t r = k / inter, i = k % inter;
        float g = to_f(in[r * 2 * inter + i]);
        float u = to_f(in[r * 2 * inter + inter + i]);
        out[k] = from_f<T>(g / (1.f + __expf(-g)) * u);
    }
}

// Rotates q and k of one position and writes k and v into the cache at `*pos`.
// qkv: rows of `stride` elements holding q (heads*d), k (kv_heads*d), v (kv_heads*d).
// q_out: [rows, heads, d]; caches: [rows, kv_heads, cap, d]; cos/sin: [positions, d/2].
// Grid: (heads + 2*kv_heads, rows); block: d/2 threads, one rotation pair each.
template <typename T>
__device__ void rope_kv(const T* qkv, int stride, T* q_out, T* kc, T* vc, const T* cos, const T* sin,
                        const uint32_t* pos_p, int heads, int kv_heads, int d, int cap, int interleaved,
                        float q_scale) {
    pdl_begin();
    int head = blockIdx.x, r = blockIdx.y, i = threadIdx.x, half = d / 2;
    uint32_t pos = *pos_p;
    const T* row = qkv + (size_t)r * stride;
    if (head >= heads + kv_heads) {
        int kh = head - heads - kv_heads;
        const T* src = row + (size_t)(heads + kv_heads + kh) * d;
        T* dst = vc + (((size_t)r * kv_heads + kh) * cap + pos) * d;
        dst[i] = src[i];
        dst[i + half] = src[i + half];
        return;
    }
    const T* src;
    T* dst;
    float scale = 1.f;
    if (head < heads) {
        src = row + (size_t)head * d;
        dst = q_out + ((size_t)r * heads + head) * d;
        scale = q_scale;
    } else {
        int kh = head - heads;
        src = row + (size_t)(heads + kh) * d;
        dst = kc + (((size_t)r * kv_heads + kh) * cap + pos) * d;
    }
    float c = to_f(cos[(size_t)pos * half + i]), s = to_f(sin[(size_t)pos * half + i]);
    int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    float x0 = to_f(src[a]), x1 = to_f(src[b]);
    dst[a] = from_f<T>((x0 * c - x1 * s) * scale);
    dst[b] = from_f<T>((x0 * s + x1 * c) * scale);
}

// Split-K attention of one query position over the cache (flash-decoding).
// q: [rows, heads, d] (already scaled); caches: [rows, kv_heads, cap, d], positions 0..=*pos filled.
// part: [rows, heads, splits, d + 2] f32: each split's unnormalized output, its max and its sum;
// the last split to finish (counted in `counters`, zero between launches) merges them into y
// [rows, heads * d]. Grid: (heads, rows, splits); block: 128 threads. A split covers CH positions (16 KiB of keys):
// its keys and values are loaded to shared memory at once, so the loads are in flight together
// rather than one position after another.
constexpr int ATTN_THREADS = 128;
constexpr int TILE_BYTES = 16384;
template <typename T, int EPL>
__device__ void attn_split(const T* q, const T* kc, const T* vc, float* part, unsigned* counters, T* y,
                           const uint32_t* pos_p, int heads, int kv_heads, int cap) {
    pdl_begin();
    constexpr int D = EPL * 32;
    constexpr int CH = TILE_BYTES / (D * sizeof(T));
    constexpr int PER_WARP = CH / (ATTN_THREADS / 32);
    constexpr int VEC = 16 / sizeof(T);
    __shared__ __align__(16) T ks[CH * D];
    __shared__ __align__(16) T vs[CH * D];
    __shared__ float ps[CH];
    int head = blockIdx.x, r = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int len = (int)*pos_p + 1;
    int begin = split * CH, n = min(CH, len - begin);
    float* out = part + (((size_t)r * heads + head) * splits + split) * (D + 2);
    if (n <= 0) {
        if (threadIdx.x == 0) out[D] = -INFINITY, out[D + 1] = 0.f;
        return;
    }
    int kh = head / (heads / kv_heads);
    const T* kb = kc + (((size_t)r * kv_heads + kh) * cap + begin) * D;
    const T* vb = vc + (((size_t)r * kv_heads + kh) * cap + begin) * D;
    // Asynchronous copies, all in flight at once (a load-then-store loop waits out the memory
    // latency once per iteration); the values keep arriving while the scores are computed.
    for (int i = threadIdx.x; i < n * D / VEC; i += ATTN_THREADS)
        __pipeline_memcpy_async((uint4*)ks + i, (const uint4*)kb + i, 16);
    __pipeline_commit();
    for (int i = threadIdx.x; i < n * D / VEC; i += ATTN_THREADS)
        __pipeline_memcpy_async((uint4*)vs + i, (const uint4*)vb + i, 16);
    __pipeline_commit();
    float qv[EPL];
    const T* qr = q + ((size_t)r * heads + head) * D + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) qv[e] = to_f(qr[e]);
    __pipeline_wait_prior(1);  // this thread's keys
    __syncthreads();
    // Scores: warp w takes positions w, w + 4, …; a lane sums its EPL elements, then all of the
    // warp's positions are reduced together.
    float sc[PER_WARP];
#pragma unroll
    for (int p = 0; p < PER_WARP; p++) {
        int j = warp + p * (ATTN_THREADS / 32);
        float a = 0.f;
        if (j < n) {
#pragma unroll
            for (int e = 0; e < EPL; e++) a += qv[e] * to_f(ks[j * D + lane * EPL + e]);
        }
        sc[p] = a;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
        for (int p = 0; p < PER_WARP; p++) sc[p] += __shfl_xor_sync(0xffffffff, sc[p], o);
    if (lane == 0) {
#pragma unroll
        for (int p = 0; p < PER_WARP; p++) {
            int j = warp + p * (ATTN_THREADS / 32);
            if (j < n) ps[j] = sc[p];
        }
    }
    __syncthreads();
    // Max and sum over the split, each warp on its own (no further barrier for the max).
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, ps[j]);
    m = warp_max(m);
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += ATTN_THREADS) ps[j] = __expf(ps[j] - m);
    __pipeline_wait_prior(0);  // this thread's values
    __syncthreads();
    float l = 0.f;
    for (int j = lane; j < n; j += 32) l += ps[j];
    l = warp_sum(l);
    for (int x = threadIdx.x; x < D; x += ATTN_THREADS) {
        float a = 0.f;
#pragma unroll 8
        for (int j = 0; j < n; j++) a += ps[j] * to_f(vs[j * D + x]);
        out[x] = a;
    }
    if (threadIdx.x == 0) out[D] = m, out[D + 1] = l;
    // The last split of this (row, head) to finish merges them all and resets the counter.
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    int used = (len + CH - 1) / CH;
    if (threadIdx.x == 0) last = atomicAdd(&counters[r * heads + head], 1u) == (unsigned)(used - 1);
    __syncthreads();
    if (!last) return;
    const float* p = part + ((size_t)r * heads + head) * splits * (D + 2);
    float mm = -INFINITY;
#pragma unroll 8
    for (int s = 0; s < used; s++) mm = fmaxf(mm, __ldcg(p + s * (D + 2) + D));
    for (int x = threadIdx.x; x < D; x += ATTN_THREADS) {
        float a = 0.f, ll = 0.f;
#pragma unroll 4
        for (int s = 0; s < used; s++) {
            float w = __expf(__ldcg(p + s * (D + 2) + D) - mm);
            a += __ldcg(p + s * (D + 2) + x) * w;
            ll += __ldcg(p + s * (D + 2) + D + 1) * w;
        }
        y[((size_t)r * heads + head) * D + x] = from_f<T>(a / ll);
    }
    if (threadIdx.x == 0) counters[r * heads + head] = 0;
}

// Attention for head size D (a lane takes D / 32 elements).
#define ATTN(T, S, D)                                                                                          \
    extern "C" __global__ void attn_split##D##_##S(const T* q, const T* kc, const T* vc, float* part,          \
                                                   unsigned* counters, T* y, const uint32_t* pos, int heads,   \
                                                   int kv_heads, int cap) {                                    \
        attn_split<T, D / 32>(q, kc, vc, part, counters, y, pos, heads, kv_heads, cap);                        \
    }

#define INSTANTIATE(T, S)                                                                                      \
    extern "C" __global__ void add_rmsnorm_##S(const T* x, const T* delta, const T* w, T* out, int rows,       \
                                               int hidden, float eps) {                                        \
        add_rmsnorm<T>(x, delta, w, out, rows, hidden, eps);                                                   \
    }                                                                                                          \
    extern "C" __global__ void silu_mul_##S(const T* in, T* out, int rows, int inter) {                        \
        silu_mul<T>(in, out, rows, inter);                                                                     \
    }                                                                                                          \
    extern "C" __global__ void rope_kv_##S(const T* qkv, int stride, T* q_out, T* kc, T* vc, const T* cos,     \
                                           const T* sin, const uint32_t* pos, int heads, int kv_heads, int d,  \
                                           int cap, int interleaved, float q_scale) {                          \
        rope_kv<T>(qkv, stride, q_out, kc, vc, cos, sin, pos, heads, kv_heads, d, cap, interleaved, q_scale);  \
    }                                                                                                          \
    ATTN(T, S, 64) ATTN(T, S, 128) ATTN(T, S, 256)

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(__half, f16)

// Projections of few rows split k among KS warps: a block's 8 warps form 8 / KS units of KS warps,
// a unit computing one output unit (columns) and its warp w taking the k-slice w % KS. Why: at one
// row and 4,096 output columns, one warp per column pair leaves an H200 about 16 warps per SM, too
// few loads in flight to reach HBM speed; KS warps per unit multiply them.
constexpr int GEMV_WARPS = 8;

// The global unit of this warp.
template <int KS>
__device__ __forceinline__ int gemv_unit() {
    return blockIdx.x * (GEMV_WARPS / KS) + (threadIdx.x >> 5) / KS;
}

// First element of this lane in its warp's k-slice, and the stride between its loads, for loads of
// V elements.
template <int KS, int V>
__device__ __forceinline__ int slice_start() {
    return ((((threadIdx.x >> 5) % KS) << 5) + (threadIdx.x & 31)) * V;
}

// The first `subgoal_prefetch` 16-byte loads of this lane in each of the R weight rows `rows` (of
// `row_bytes` bytes from `w`) into L2, as the few-row kernels' k-slices will make them; one lane
// in eight asks, each for its 128-byte line. For the window between pdl_launch and pdl_wait.
template <int KS, int R>
__device__ __forceinline__ void prefetch_rows(const void* w, size_t row_bytes, const int (&rows)[R]) {
    if ((threadIdx.x & 7) != 0) return;
    int depth = subgoal_prefetch;
#pragma unroll
    for (int j = 0; j < PREFETCH_MAX; j++) {
        size_t at = (size_t)slice_start<KS, 16>() + (size_t)j * KS * 32 * 16;
        if (j >= depth || at >= row_bytes) break;
#pragma unroll
        for (int r = 0; r < R; r++) prefetch_l2((const unsigned char*)w + (size_t)rows[r] * row_bytes + at);
    }
}

// Sums the N values of each warp over the warps of its unit. Every lane passes its partial sums;
// returns true in the one thread (lane 0 of the unit's first warp) whose v then holds the unit's
// totals. Every thread of the block must call it (it synchronizes the block when KS > 1).
template <int KS, int N>
__device__ __forceinline__ bool unit_sum(float (&v)[N]) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < N; j++) v[j] = warp_sum(v[j]);
    if constexpr (KS == 1) {
        return lane == 0;
    } else {
        __shared__ float part[GEMV_WARPS][N];
        if (lane == 0)
#pragma unroll
            for (int j = 0; j < N; j++) part[warp][j] = v[j];
        __syncthreads();
        if (lane != 0 || warp % KS != 0) return false;
#pragma unroll
        for (int j = 0; j < N; j++) {
            float t = 0.f;
#pragma unroll
            for (int s = 0; s < KS; s++) t += part[warp + s][j];
            v[j] = t;
        }
        return true;
    }
}

// Output columns of one few-row unit (`gemv`, `gemv_fp8`).
constexpr int GEMV_COLS = 2;
// The few-row projections' epilogue: the unit's C sums per row (acc[c * M + m] for column col0 + c,
// row m) written to y, plus res where given, columns past n left alone.
template <typename T, int M, int C = GEMV_COLS>
__device__ __forceinline__ void gemv_store(const float* acc, const T* res, T* y, int col0, int n) {
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
        for (int m = 0; m < M; m++)
            if (col0 + c < n) {
                size_t at = (size_t)m * n + col0 + c;
                // With a residual, the sum of the two as the unfused path rounds them: each to T.
                y[at] = res ? from_f<T>(to_f(res[at]) + to_f(from_f<T>(acc[c * M + m]))) : from_f<T>(acc[c * M + m]);
            }
}

// y[m, n] = res[m, n] + sum_k x[m, k] * w[n, k] for the M rows of x (res optional: the residual
// stream the projection adds to): the projections of a decode step with few
// rows, where a GEMM library's tiles waste bandwidth. A unit computes COLS output columns, so each
// load of x serves COLS weight rows; weights stream past L1 (read once), x stays there.
// Requires k % (16 / sizeof(T)) == 0 and 16-byte aligned rows.
// Grid: ceil(ceil(n / COLS) / (8 / KS)); block: 256.
template <typename T, int M, int KS>
__device__ void gemv(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ res, T* __restrict__ y,
                     int n, int k) {
    pdl_launch();
    constexpr int V = 16 / sizeof(T);
    int col0 = gemv_unit<KS>() * GEMV_COLS;
    // Units past n compute a clamped column and write nothing: they must reach unit_sum's barrier.
    const T* wr[GEMV_COLS];
    int rows[GEMV_COLS];
#pragma unroll
    for (int c = 0; c < GEMV_COLS; c++) {
        rows[c] = min(col0 + c, n - 1);
        wr[c] = w + (size_t)rows[c] * k;
    }
    prefetch_rows<KS>(w, (size_t)k * sizeof(T), rows);
    pdl_wait();
    float acc[GEMV_COLS * M];
#pragma unroll
    for (int j = 0; j < GEMV_COLS * M; j++) acc[j] = 0.f;
#pragma unroll 2
    for (int i = slice_start<KS, V>(); i < k; i += KS * 32 * V) {
        uint4 wv[GEMV_COLS];
#pragma unroll
        for (int c = 0; c < GEMV_COLS; c++) wv[c] = __ldcs((const uint4*)(wr[c] + i));
#pragma unroll
        for (int m = 0; m < M; m++) {
            uint4 xv = __ldg((const uint4*)(x + (size_t)m * k + i));
            const T* xe = (const T*)&xv;
            float xf[V];
#pragma unroll
            for (int e = 0; e < V; e++) xf[e] = to_f(xe[e]);
#pragma unroll
            for (int c = 0; c < GEMV_COLS; c++) {
                const T* we = (const T*)&wv[c];
#pragma unroll
                for (int e = 0; e < V; e++) acc[c * M + m] += to_f(we[e]) * xf[e];
            }
        }
    }
    if (!unit_sum<KS>(acc)) return;
    gemv_store<T, M>(acc, res, y, col0, n);
}

#define GEMV(T, S, M)                                                                                          \
    extern "C" __global__ void gemv##M##_##S(const T* x, const T* w, const T* res, T* y, int n, int k) {       \
        gemv<T, M, 1>(x, w, res, y, n, k);                                                                     \
    }
#define GEMV1(T, S, KS)                                                                                        \
    extern "C" __global__ void gemv1_k##KS##_##S(const T* x, const T* w, const T* res, T* y, int n, int k) {   \
        gemv<T, 1, KS>(x, w, res, y, n, k);                                                                    \
    }
#define GEMVS(T, S)                                                                                            \
    GEMV(T, S, 1) GEMV(T, S, 2) GEMV(T, S, 3) GEMV(T, S, 4) GEMV(T, S, 5) GEMV(T, S, 6) GEMV(T, S, 7)          \
    GEMV(T, S, 8) GEMV1(T, S, 2) GEMV1(T, S, 4) GEMV1(T, S, 8)

GEMVS(float, f32)
GEMVS(__nv_bfloat16, bf16)
GEMVS(__half, f16)

// The RMSNorm a one-row projection takes in its loads (the norm kernel it replaces was a launch
// bound by latency, 5 µs at hidden 4,096 on an H200): the row x normalized by g. The norm's scale
// is a factor of every dot product, so it is applied after the sums: W · (x ∘ g) / rms(x).
template <typename T>
struct NormIn {
    const T* x;
    const T* g;
    float eps;
};

// The normalized row's dot products with two weight rows over this warp's k-slice, summed over
// the unit (valid where unit_sum returns true, which this returns).
template <typename T, int KS>
__device__ __forceinline__ bool dot2_norm(const NormIn<T>& in, const T* __restrict__ wa, const T* __restrict__ wb,
                                          int k, float (&r)[2]) {
    constexpr int V = 16 / sizeof(T);
    float acc[3] = {0.f, 0.f, 0.f};  // the two dot products, and the sum of squares of x
#pragma unroll 2
    for (int i = slice_start<KS, V>(); i < k; i += KS * 32 * V) {
        uint4 va = __ldcs((const uint4*)(wa + i)), vb = __ldcs((const uint4*)(wb + i));
        uint4 xv = __ldg((const uint4*)(in.x + i)), gv = __ldg((const uint4*)(in.g + i));
        const T* ea = (const T*)&va;
        const T* eb = (const T*)&vb;
        const T* xe = (const T*)&xv;
        const T* ge = (const T*)&gv;
#pragma unroll
        for (int e = 0; e < V; e++) {
            float sv = to_f(xe[e]);
            acc[2] += sv * sv;
            float xf = sv * to_f(ge[e]);
            acc[0] += to_f(ea[e]) * xf;
            acc[1] += to_f(eb[e]) * xf;
        }
    }
    if (!unit_sum<KS>(acc)) return false;
    float inv = rsqrtf(acc[2] / k + in.eps);
    r[0] = acc[0] * inv;
    r[1] = acc[1] * inv;
    return true;
}

// The one-row projections with the norm in their loads and work of their own in the epilogue take
// their weights through `dot(rows, r)`: the normalized row's dot products with the 2P weight rows
// `rows`, summed over the unit (valid where it returns true, in one thread of the unit). A unit
// takes P output pairs. Dense weights pass dot2_norm (P = 1); FP8 ones (fp8.cu) a reader of bytes
// and block factors (P = 1, or 2 for 16-bit activations).

// The gated MLP's input projection of one normalized row with SiLU × up in its epilogue: a unit
// computes gate columns c and up columns inter + c of [gate; up] ([2 * inter, k]) for its P
// columns c and writes y[c] = silu(gate) * up, the projections rounded to T first as the unfused
// path stores them. Grid: ceil(ceil(inter / P) / (8 / KS)); block: 256.
// `w` and `row_bytes`: the weight's bytes and the length of a row of them, for prefetch_rows.
template <typename T, int KS, int P, typename Dot>
__device__ void gemv_silu(Dot dot, const void* w, size_t row_bytes, T* y, int inter) {
    pdl_launch();
    int u = gemv_unit<KS>();
    int rows[2 * P];
#pragma unroll
    for (int j = 0; j < P; j++) {
        int c = min(u * P + j, inter - 1);
        rows[j] = c;
        rows[P + j] = inter + c;
    }
    prefetch_rows<KS>(w, row_bytes, rows);
    pdl_wait();
    float r[2 * P];
    if (!dot(rows, r)) return;
#pragma unroll
    for (int j = 0; j < P; j++) {
        int c = u * P + j;
        if (c >= inter) continue;
        float g = to_f(from_f<T>(r[j])), up = to_f(from_f<T>(r[P + j]));
        y[c] = from_f<T>(g / (1.f + __expf(-g)) * up);
    }
}

// The two columns of rotation pair `pc` of q/k/v: within head pc / half, columns a and b
// (interleaved or half-split as the model rotates).
__device__ __forceinline__ void rope_pair(int pc, int half, int interleaved, int& head, int& i, int& a, int& b) {
    head = pc / half, i = pc % half;
    a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
}

// The q/k/v projection of one normalized row with rope_kv's work in its epilogue: a unit computes
// the two columns of each of its P rotation pairs (q, k or v head), rotates q and k at *pos,
// scales q, and writes q to q_out [heads * d] and k, v into the caches [kv_heads, cap, d] at *pos,
// or, with a block table, into the paged cache [blocks, kv_heads, bs, d] (cap then unused).
// Grid: ceil(ceil((heads + 2 * kv_heads) * d / 2 / P) / (8 / KS)); block: 256.
template <typename T, int KS, int P, typename Dot>
__device__ void gemv_rope(Dot dot, const void* w, size_t row_bytes, T* q_out, T* kc, T* vc, const T* cos, const T* sin,
                          const uint32_t* pos_p, int heads, int kv_heads, int d, int cap, int interleaved,
                          float q_scale, const uint32_t* table, int bs) {
    pdl_launch();
    int half = d / 2, pairs = (heads + 2 * kv_heads) * half;
    int u = gemv_unit<KS>();
    int rows[2 * P];
#pragma unroll
    for (int j = 0; j < P; j++) {
        int head, i, a, b;
        rope_pair(min(u * P + j, pairs - 1), half, interleaved, head, i, a, b);
        rows[2 * j] = head * d + a;
        rows[2 * j + 1] = head * d + b;
    }
    prefetch_rows<KS>(w, row_bytes, rows);
    pdl_wait();
    float r[2 * P];
    if (!dot(rows, r)) return;
    uint32_t pos = *pos_p;
    auto cache_row = [&](int kh) -> size_t {
        return table ? paged_row(table, (int)pos, bs, kv_heads, kh) : (size_t)kh * cap + pos;
    };
#pragma unroll
    for (int j = 0; j < P; j++) {
        int p = u * P + j;
        if (p >= pairs) continue;
        int head, i, a, b;
        rope_pair(p, half, interleaved, head, i, a, b);
        float x0 = to_f(from_f<T>(r[2 * j])), x1 = to_f(from_f<T>(r[2 * j + 1]));
        if (head >= heads + kv_heads) {
            T* dst = vc + cache_row(head - heads - kv_heads) * d;
            dst[a] = from_f<T>(x0);
            dst[b] = from_f<T>(x1);
            continue;
        }
        float c = to_f(cos[(size_t)pos * half + i]), s = to_f(sin[(size_t)pos * half + i]);
        T* dst;
        float scale = 1.f;
        if (head < heads) {
            dst = q_out + (size_t)head * d;
            scale = q_scale;
        } else {
            dst = kc + cache_row(head - heads) * d;
        }
        dst[a] = from_f<T>((x0 * c - x1 * s) * scale);
        dst[b] = from_f<T>((x0 * s + x1 * c) * scale);
    }
}

// The entry points of both weight kinds share one argument list (`W`: the weight's element type;
// `scale`: an FP8 weight's block factors, unread for dense ones), so fused.rs launches them alike.
// ATTR_SILU, ATTR_ROPE: launch bounds where a kernel needs them.
#define GEMV_EPILOGUE_ENTRIES(T, S, KS, W, P, ATTR_SILU, ATTR_ROPE, NAME_SILU, NAME_ROPE, DOT)               \
    extern "C" __global__ void ATTR_SILU NAME_SILU(const T* x, const T* g, float eps, const W* w,                   \
                                              const float* scale, T* y, int inter, int k) {                    \
        NormIn<T> in{x, g, eps};                                                                               \
        gemv_silu<T, KS, P>([&](const auto& rows, auto& r) { return DOT; }, w, (size_t)k * sizeof(W), y, inter); \
    }                                                                                                          \
    extern "C" __global__ void ATTR_ROPE NAME_ROPE(const T* x, const T* g, float eps, const W* w,                   \
                                              const float* scale, T* q_out, T* kc, T* vc, const T* cos,        \
                                              const T* sin, const uint32_t* pos, int heads, int kv_heads,      \
                                              int d, int cap, int interleaved, float q_scale, int k,           \
                                              const uint32_t* table, int bs) {                                 \
        NormIn<T> in{x, g, eps};                                                                               \
        gemv_rope<T, KS, P>([&](const auto& rows, auto& r) { return DOT; }, w, (size_t)k * sizeof(W), q_out, kc, \
                            vc, cos, sin, pos, heads, kv_heads, d, cap, interleaved, q_scale, table, bs);      \
    }
#define GEMV_EPILOGUE(T, S, KS)                                                                                \
    GEMV_EPILOGUE_ENTRIES(T, S, KS, T, 1, , , gemv_silu_k##KS##_##S, gemv_rope_k##KS##_##S,                   \
                          (dot2_norm<T, KS>(in, w + (size_t)rows[0] * k, w + (size_t)rows[1] * k, k, r)))
#define GEMV_EPILOGUES(T, S)                                                                                   \
    GEMV_EPILOGUE(T, S, 1) GEMV_EPILOGUE(T, S, 2) GEMV_EPILOGUE(T, S, 4) GEMV_EPILOGUE(T, S, 8)
GEMV_EPILOGUES(float, f32)
GEMV_EPILOGUES(__nv_bfloat16, bf16)
GEMV_EPILOGUES(__half, f16)

// ---- Sampling: one token per row of f32 logits, on the device --------------------------------
//
// Gumbel-max with top-p by rejection (as `sample::sample_rows`, whose rationale holds here), with
// DRAWS independent draws per row made at once so no round trip is needed for a redraw: the first
// draw inside the nucleus is taken (a draw falls outside with probability at most 1 - top_p, so all
// DRAWS fail with probability at most (1 - top_p)^DRAWS; the argmax, always inside, is taken then).
// The noise is a counter-based hash of (seed, row, draw, token), so a step needs no generator state.
// Slot DRAWS is the plain argmax (greedy); ties go to the lowest token id, as on the CPU.

constexpr int DRAWS = 8;
constexpr int SLOTS = DRAWS + 1;
constexpr int PART = 2 + 2 * SLOTS;  // max, sum, SLOTS scores, SLOTS ids (as int bits)

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

__device__ __forceinline__ float gumbel(uint64_t seed, uint64_t stream, uint32_t j) {
    uint64_t h = mix64(seed ^ mix64(stream * 0x9E3779B97F4A7C15ULL + j));
    // 23 bits: (2^23 - 0.5) / 2^23 is exact in f32, so u < 1 and the noise stays finite (24 bits
    // would round the top value up to 1 and give +inf).
    float u = ((float)(h >> 41) + 0.5f) * (1.0f / 8388608.0f);
    return -logf(-logf(u));
}

__device__ __forceinline__ bool better(float s, int i, float bs, int bi) { return s > bs || (s == bs && i < bi); }

// Argmax of (score, id) over the warp; every lane gets the result.
__device__ __forceinline__ void warp_argmax(float& s, int& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float s2 = __shfl_xor_sync(0xffffffff, s, o);
        int i2 = __shfl_xor_sync(0xffffffff, i, o);
        if (better(s2, i2, s, i)) s = s2, i = i2;
    }
}

// Argmax of (score, id) over the block; thread 0 gets the result.
__device__ void block_argmax(float& s, int& i) {
    __shared__ float ss[32];
    __shared__ int si[32];
    warp_argmax(s, i);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) ss[warp] = s, si[warp] = i;
    __syncthreads();
    if (warp == 0) {
        s = lane < warps ? ss[lane] : -INFINITY;
        i = lane < warps ? si[lane] : 0x7fffffff;
        warp_argmax(s, i);
    }
}

// Per (chunk, row): the chunk's max and sum of exp(z - max) of z = logit * inv_t, and its best
// (score, id) per slot; `draws` of the DRAWS slots are drawn (0 when greedy, 1 without top-p),
// with noise keyed by the row's own seed (seeds[r]), so a sample draws the same whatever row of
// the batch it is. Grid: (chunks, rows); block: 256.
extern "C" __global__ void sample_partial(const float* logits, int vocab, int chunk, float inv_t,
                                          const uint64_t* seeds, int draws, float* part) {
    pdl_begin();
    int c = blockIdx.x, r = blockIdx.y, chunks = gridDim.x;
    const float* row = logits + (size_t)r * vocab;
    int begin = c * chunk, end = min(begin + chunk, vocab);
    float m = -INFINITY, s = 0.f;
    float best[SLOTS];
    int bi[SLOTS];
#pragma unroll
    for (int k = 0; k < SLOTS; k++) best[k] = -INFINITY, bi[k] = 0x7fffffff;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) {
        float z = row[j] * inv_t;
        if (!(z > -INFINITY)) continue;  // -inf or NaN: no probability, never drawn
        if (z > m) {
            s = s * __expf(m - z) + 1.f;
            m = z;
        } else {
            s += __expf(z - m);
        }
        if (better(z, j, best[DRAWS], bi[DRAWS])) best[DRAWS] = z, bi[DRAWS] = j;
#pragma unroll
        for (int k = 0; k < DRAWS; k++) {
            if (k >= draws) break;
            float g = z + gumbel(seeds[r], (uint64_t)k, (uint32_t)j);
            if (better(g, j, best[k], bi[k])) best[k] = g, bi[k] = j;
        }
    }
    float* out = part + ((size_t)r * chunks + c) * PART;
    // Max and sum: the block's max first, then the sums rescaled to it.
    __shared__ float red[32];
    float bm = warp_max(m);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) red[warp] = bm;
    __syncthreads();
    bm = -INFINITY;
    for (int w = 0; w < warps; w++) bm = fmaxf(bm, red[w]);
    float total = block_sum(m == -INFINITY ? 0.f : s * __expf(m - bm));
    if (threadIdx.x == 0) out[0] = bm, out[1] = total;
    for (int k = 0; k < SLOTS; k++) {
        float sc = best[k];
        int id = bi[k];
        block_argmax(sc, id);
        if (threadIdx.x == 0) out[2 + k] = sc, out[2 + SLOTS + k] = __int_as_float(id);
    }
}

// Per row: merges the chunks into the candidates (one id per slot) and (max, sum); writes the
// token when no top-p check is needed. Grid: rows; block: 32.
extern "C" __global__ void sample_pick(const float* part, int chunks, int greedy, int check, int* cand, float* stats,
                                       uint32_t* out) {
    pdl_begin();
    int r = blockIdx.x, lane = threadIdx.x;
    const float* p = part + (size_t)r * chunks * PART;
    float m = -INFINITY;
    for (int c = lane; c < chunks; c += 32) m = fmaxf(m, p[c * PART]);
    m = warp_max(m);
    float z = 0.f;
    for (int c = lane; c < chunks; c += 32) {
        float cm = p[c * PART];
        if (cm > -INFINITY) z += p[c * PART + 1] * __expf(cm - m);
    }
    z = warp_sum(z);
    for (int k = 0; k < SLOTS; k++) {
        float s = -INFINITY;
        int i = 0x7fffffff;
        for (int c = lane; c < chunks; c += 32) {
            float s2 = p[c * PART + 2 + k];
            int i2 = __float_as_int(p[c * PART + 2 + SLOTS + k]);
            if (better(s2, i2, s, i)) s = s2, i = i2;
        }
        warp_argmax(s, i);
        if (lane == 0) cand[r * SLOTS + k] = i;
    }
    if (lane == 0) {
        stats[2 * r] = m;
        stats[2 * r + 1] = z;
        if (!check) out[r] = (uint32_t)cand[r * SLOTS + (greedy ? DRAWS : 0)];
    }
}

// Per (chunk, row): for each draw, the unnormalized mass of the tokens more probable than it.
// Grid: (chunks, rows); block: 256.
extern "C" __global__ void sample_mass(const float* logits, int vocab, int chunk, float inv_t, const int* cand,
                                       const float* stats, float* mass) {
    pdl_begin();
    int c = blockIdx.x, r = blockIdx.y, chunks = gridDim.x;
    const float* row = logits + (size_t)r * vocab;
    int begin = c * chunk, end = min(begin + chunk, vocab);
    float m = stats[2 * r];
    float th[DRAWS], acc[DRAWS];
#pragma unroll
    for (int k = 0; k < DRAWS; k++) {
        int c = cand[r * SLOTS + k];
        th[k] = c < vocab ? row[c] * inv_t : INFINITY;  // no draw (greedy or fewer draws): no mass
        acc[k] = 0.f;
    }
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x) {
        float z = row[j] * inv_t;
        float e = __expf(z - m);
#pragma unroll
        for (int k = 0; k < DRAWS; k++)
            if (z > th[k]) acc[k] += e;
    }
    for (int k = 0; k < DRAWS; k++) {
        float t = block_sum(acc[k]);
        if (threadIdx.x == 0) mass[((size_t)r * chunks + c) * DRAWS + k] = t;
    }
}

// Per row: the first draw inside the nucleus, else the argmax. Grid: rows; block: 32.
extern "C" __global__ void sample_accept(const float* mass, int chunks, const int* cand, const float* stats,
                                         float top_p, uint32_t* out) {
    pdl_begin();
    int r = blockIdx.x, lane = threadIdx.x;
    float z = stats[2 * r + 1];
    int pick = cand[r * SLOTS + DRAWS];
    for (int k = DRAWS - 1; k >= 0; k--) {
        float a = 0.f;
        for (int c = lane; c < chunks; c += 32) a += mass[((size_t)r * chunks + c) * DRAWS + k];
        a = warp_sum(a);
        if (a / z < top_p) pick = cand[r * SLOTS + k];
    }
    if (lane == 0) out[r] = (uint32_t)pick;
}

#include "paged.cu"
#include "fp8.cu"
