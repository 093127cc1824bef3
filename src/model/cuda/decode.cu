// Fused kernels for one decode step of the Llama-family decoder (src/model/fused.rs launches them).
//
// Why: a decode step of a 7B model on an H200 is bound by launching kernels, not by the GPU; the
// generic path issues about 27 kernels per layer. These fuse a step's layer into 10: residual add
// with RMSNorm, RoPE with the KV-cache write, split-K attention over the cache and its combine,
// and SiLU times up, around the four GEMMs. The position is read from device memory, never baked
// into a launch, so a whole step can be captured once as a CUDA graph and replayed.
//
// Arithmetic is in f32; values are rounded to the storage type where the generic path stores them.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
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
    int r = blockIdx.x;
    const T* xr = x + (size_t)r * hidden;
    const T* dr = delta ? delta + (size_t)r * hidden : nullptr;
    T* sr = out + (size_t)r * hidden;
    T* nr = out + ((size_t)rows + r) * hidden;
    float ss = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        // Rounded first: the norm sees the sum as stored, as in the generic path.
        T s = from_f<T>(to_f(xr[i]) + (dr ? to_f(dr[i]) : 0.f));
        sr[i] = s;
        float f = to_f(s);
        ss += f * f;
    }
    float inv = rsqrtf(block_sum(ss) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) nr[i] = from_f<T>(to_f(sr[i]) * inv * to_f(w[i]));
}

// out[r, i] = silu(in[r, i]) * in[r, inter + i]; in is `[gate | up]` per row.
template <typename T>
__device__ void silu_mul(const T* in, T* out, int rows, int inter) {
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
// part: [rows, heads, splits, d + 2] f32: the split's unnormalized output, its max and its sum.
// Grid: (heads, rows, splits); block: 4 warps; a split covers `chunk` positions; a warp takes
// positions warp, warp + 4, … of its split, a lane EPL = d/32 elements of each.
constexpr int ATTN_WARPS = 4;
template <typename T, int EPL>
__device__ void attn_split(const T* q, const T* kc, const T* vc, float* part, const uint32_t* pos_p, int heads,
                           int kv_heads, int cap, int chunk) {
    constexpr int D = EPL * 32;
    int head = blockIdx.x, r = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int len = (int)*pos_p + 1;
    int begin = split * chunk, end = min(begin + chunk, len);
    int kh = head / (heads / kv_heads);
    const T* qr = q + ((size_t)r * heads + head) * D + lane * EPL;
    const T* kb = kc + ((size_t)r * kv_heads + kh) * cap * D + lane * EPL;
    const T* vb = vc + ((size_t)r * kv_heads + kh) * cap * D + lane * EPL;
    float qv[EPL], acc[EPL];
#pragma unroll
    for (int e = 0; e < EPL; e++) {
        qv[e] = to_f(qr[e]);
        acc[e] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    // Two positions per iteration, loads issued before either reduction, to keep loads in flight.
    int j = begin + warp;
    for (; j + ATTN_WARPS < end; j += 2 * ATTN_WARPS) {
        const T* k0 = kb + (size_t)j * D;
        const T* k1 = kb + (size_t)(j + ATTN_WARPS) * D;
        float s0 = 0.f, s1 = 0.f;
#pragma unroll
        for (int e = 0; e < EPL; e++) {
            s0 += qv[e] * to_f(k0[e]);
            s1 += qv[e] * to_f(k1[e]);
        }
        s0 = warp_sum(s0);
        s1 = warp_sum(s1);
        float mn = fmaxf(m, fmaxf(s0, s1));
        float corr = __expf(m - mn), p0 = __expf(s0 - mn), p1 = __expf(s1 - mn);
        l = l * corr + p0 + p1;
        const T* v0 = vb + (size_t)j * D;
        const T* v1 = vb + (size_t)(j + ATTN_WARPS) * D;
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[e] = acc[e] * corr + p0 * to_f(v0[e]) + p1 * to_f(v1[e]);
        m = mn;
    }
    if (j < end) {
        const T* k0 = kb + (size_t)j * D;
        float s0 = 0.f;
#pragma unroll
        for (int e = 0; e < EPL; e++) s0 += qv[e] * to_f(k0[e]);
        s0 = warp_sum(s0);
        float mn = fmaxf(m, s0);
        float corr = __expf(m - mn), p0 = __expf(s0 - mn);
        l = l * corr + p0;
        const T* v0 = vb + (size_t)j * D;
#pragma unroll
        for (int e = 0; e < EPL; e++) acc[e] = acc[e] * corr + p0 * to_f(v0[e]);
        m = mn;
    }
    // Merge the warps.
    __shared__ float sm[ATTN_WARPS], sl[ATTN_WARPS], sacc[ATTN_WARPS][D];
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < EPL; e++) sacc[warp][lane * EPL + e] = acc[e];
    __syncthreads();
    float* out = part + (((size_t)r * heads + head) * splits + split) * (D + 2);
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; w++) mm = fmaxf(mm, sm[w]);
    for (int x = threadIdx.x; x < D; x += blockDim.x) {
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sm[w] > -INFINITY) a += sacc[w][x] * __expf(sm[w] - mm);
        out[x] = a;
    }
    if (threadIdx.x == 0) {
        float ll = 0.f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; w++)
            if (sm[w] > -INFINITY) ll += sl[w] * __expf(sm[w] - mm);
        out[D] = mm;
        out[D + 1] = ll;
    }
}

// Merges the splits: out[r, head*d + x] = Σ acc·e^(m-M) / Σ l·e^(m-M). Grid: (heads, rows); block: d.
template <typename T>
__device__ void attn_combine(const float* part, T* out, int heads, int d, int splits) {
    int head = blockIdx.x, r = blockIdx.y, x = threadIdx.x;
    const float* p = part + ((size_t)r * heads + head) * splits * (d + 2);
    float mm = -INFINITY;
    for (int s = 0; s < splits; s++) mm = fmaxf(mm, p[s * (d + 2) + d]);
    float a = 0.f, l = 0.f;
    for (int s = 0; s < splits; s++) {
        float ms = p[s * (d + 2) + d];
        if (ms == -INFINITY) continue;
        float w = __expf(ms - mm);
        a += p[s * (d + 2) + x] * w;
        l += p[s * (d + 2) + d + 1] * w;
    }
    out[((size_t)r * heads + head) * d + x] = from_f<T>(a / l);
}

#define INSTANTIATE(T, S)                                                                                      \
    extern "C" __global__ void add_rmsnorm_##S(const T* x, const T* delta, const T* w, T* out, int rows,        \
                                               int hidden, float eps) {                                        \
        add_rmsnorm<T>(x, delta, w, out, rows, hidden, eps);                                                   \
    }                                                                                                          \
    extern "C" __global__ void silu_mul_##S(const T* in, T* out, int rows, int inter) {                        \
        silu_mul<T>(in, out, rows, inter);                                                                     \
    }                                                                                                          \
    extern "C" __global__ void rope_kv_##S(const T* qkv, int stride, T* q_out, T* kc, T* vc, const T* cos,      \
                                           const T* sin, const uint32_t* pos, int heads, int kv_heads, int d,  \
                                           int cap, int interleaved, float q_scale) {                          \
        rope_kv<T>(qkv, stride, q_out, kc, vc, cos, sin, pos, heads, kv_heads, d, cap, interleaved, q_scale);  \
    }                                                                                                          \
    extern "C" __global__ void attn_split64_##S(const T* q, const T* kc, const T* vc, float* part,              \
                                                const uint32_t* pos, int heads, int kv_heads, int cap,         \
                                                int chunk) {                                                   \
        attn_split<T, 2>(q, kc, vc, part, pos, heads, kv_heads, cap, chunk);                                   \
    }                                                                                                          \
    extern "C" __global__ void attn_split128_##S(const T* q, const T* kc, const T* vc, float* part,             \
                                                 const uint32_t* pos, int heads, int kv_heads, int cap,        \
                                                 int chunk) {                                                  \
        attn_split<T, 4>(q, kc, vc, part, pos, heads, kv_heads, cap, chunk);                                   \
    }                                                                                                          \
    extern "C" __global__ void attn_split256_##S(const T* q, const T* kc, const T* vc, float* part,             \
                                                 const uint32_t* pos, int heads, int kv_heads, int cap,        \
                                                 int chunk) {                                                  \
        attn_split<T, 8>(q, kc, vc, part, pos, heads, kv_heads, cap, chunk);                                   \
    }                                                                                                          \
    extern "C" __global__ void attn_combine_##S(const float* part, T* out, int heads, int d, int splits) {     \
        attn_combine<T>(part, out, heads, d, splits);                                                          \
    }

INSTANTIATE(float, f32)
INSTANTIATE(__nv_bfloat16, bf16)
INSTANTIATE(__half, f16)
