// Kernels of the serving engine's paged KV cache (included by decode.cu, launched by fused.rs for
// `Model::forward_paged`). Per layer the cache is [blocks, kv_heads, bs, d]; position p of a
// sequence lives in block table[p / bs] at offset p % bs. Sequences are at positions of their
// own: each token carries its position and the offset of its sequence's block table in one
// array of tables (`tab`).

#include <mma.h>

// rope_kv for tokens at positions of their own: token t of qkv (rows of `stride`: q, k, v heads)
// is rotated at pos[t]; q goes to q_out [tokens, heads, d] scaled by q_scale; k and v into the
// cache through the table at tables + tab[t]. Grid: (heads + 2*kv_heads, tokens); block: d/2.
template <typename T>
__device__ void rope_kv_paged(const T* qkv, int stride, T* q_out, T* kc, T* vc, const T* cos, const T* sin,
                              const uint32_t* pos_a, const uint32_t* tables, const uint32_t* tab, int heads,
                              int kv_heads, int d, int bs, int interleaved, float q_scale) {
    pdl_begin();
    int head = blockIdx.x, t = blockIdx.y, i = threadIdx.x, half = d / 2;
    int pos = (int)pos_a[t];
    const uint32_t* table = tables + tab[t];
    const T* row = qkv + (size_t)t * stride;
    if (head >= heads + kv_heads) {
        int kh = head - heads - kv_heads;
        const T* src = row + (size_t)(heads + kv_heads + kh) * d;
        T* dst = vc + paged_row(table, pos, bs, kv_heads, kh) * d;
        dst[i] = src[i];
        dst[i + half] = src[i + half];
        return;
    }
    const T* src;
    T* dst;
    float scale = 1.f;
    if (head < heads) {
        src = row + (size_t)head * d;
        dst = q_out + ((size_t)t * heads + head) * d;
        scale = q_scale;
    } else {
        int kh = head - heads;
        src = row + (size_t)(heads + kh) * d;
        dst = kc + paged_row(table, pos, bs, kv_heads, kh) * d;
    }
    float c = to_f(cos[(size_t)pos * half + i]), s = to_f(sin[(size_t)pos * half + i]);
    int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    float x0 = to_f(src[a]), x1 = to_f(src[b]);
    dst[a] = from_f<T>((x0 * c - x1 * s) * scale);
    dst[b] = from_f<T>((x0 * s + x1 * c) * scale);
}

// Split-K attention of one query per row over its sequence's cached positions 0..lens[r]-1, read
// through its block table (tables + tab[r]); as attn_split otherwise (q already scaled, the last
// split of each (row, head) merges). Grid: (heads, rows, splits covering the longest row);
// block: ATTN_THREADS.
template <typename T, int EPL>
__device__ void attn_paged(const T* q, const T* kc, const T* vc, float* part, unsigned* counters, T* y,
                           const uint32_t* tables, const uint32_t* tab, const uint32_t* lens, int heads, int kv_heads,
                           int bs) {
    pdl_begin();
    constexpr int D = EPL * 32;
    constexpr int CH = TILE_BYTES / (D * sizeof(T));
    constexpr int PER_WARP = CH / (ATTN_THREADS / 32);
    constexpr int VEC = 16 / sizeof(T);
    constexpr int PER_POS = D / VEC;
    __shared__ __align__(16) T ks[CH * D];
    __shared__ __align__(16) T vs[CH * D];
    __shared__ float ps[CH];
    int head = blockIdx.x, r = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int len = (int)lens[r];
    const uint32_t* table = tables + tab[r];
    int begin = split * CH, n = min(CH, len - begin);
    float* out = part + (((size_t)r * heads + head) * splits + split) * (D + 2);
    if (n <= 0) {
        if (threadIdx.x == 0) out[D] = -INFINITY, out[D + 1] = 0.f;
        return;
    }
    int kh = head / (heads / kv_heads);
    for (int i = threadIdx.x; i < n * PER_POS; i += ATTN_THREADS) {
        int j = i / PER_POS, c = i % PER_POS;
        size_t row = paged_row(table, begin + j, bs, kv_heads, kh);
        __pipeline_memcpy_async((uint4*)(ks + j * D) + c, (const uint4*)(kc + row * D) + c, 16);
    }
    __pipeline_commit();
    for (int i = threadIdx.x; i < n * PER_POS; i += ATTN_THREADS) {
        int j = i / PER_POS, c = i % PER_POS;
        size_t row = paged_row(table, begin + j, bs, kv_heads, kh);
        __pipeline_memcpy_async((uint4*)(vs + j * D) + c, (const uint4*)(vc + row * D) + c, 16);
    }
    __pipeline_commit();
    float qv[EPL];
    const T* qr = q + ((size_t)r * heads + head) * D + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) qv[e] = to_f(qr[e]);
    __pipeline_wait_prior(1);
    __syncthreads();
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
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, ps[j]);
    m = warp_max(m);
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += ATTN_THREADS) ps[j] = __expf(ps[j] - m);
    __pipeline_wait_prior(0);
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
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    int used = (len + CH - 1) / CH;
    if (threadIdx.x == 0) last = atomicAdd(&counters[r * heads + head], 1u) == (unsigned)(used - 1);
    __syncthreads();
    if (!last) return;
    const float* p = part + ((size_t)r * heads + head) * splits * (D + 2);
    float mm = -INFINITY;
    for (int s = 0; s < used; s++) mm = fmaxf(mm, __ldcg(p + s * (D + 2) + D));
    for (int x = threadIdx.x; x < D; x += ATTN_THREADS) {
        float a = 0.f, ll = 0.f;
        for (int s = 0; s < used; s++) {
            float w = __expf(__ldcg(p + s * (D + 2) + D) - mm);
            a += __ldcg(p + s * (D + 2) + x) * w;
            ll += __ldcg(p + s * (D + 2) + D + 1) * w;
        }
        y[((size_t)r * heads + head) * D + x] = from_f<T>(a / ll);
    }
    if (threadIdx.x == 0) counters[r * heads + head] = 0;
}

// ---- Prefill attention: tiled, online softmax (FlashAttention's algorithm) ------------------
//
// The queries of one prompt chunk (`len` tokens at positions context..context+len-1, q already
// scaled) against the sequence's cached positions up to each query's own, without a score matrix
// in memory: a block holds 64 queries of one head, walks the keys 64 at a time (read through the
// block table), and keeps per query a running max, a running sum and the unnormalized output,
// rescaled as the max grows. The two products of a tile run on tensor cores (WMMA 16x16x16, f32
// accumulation); a warp owns 16 query rows throughout, so the softmax needs no block barrier.
// Grid: (ceil(len / 64), heads); block: 128; dynamic shared memory: fa_smem(D, sizeof(T)).

constexpr int FA_Q = 64;
constexpr int FA_K = 64;

template <typename T, int D>
__device__ void attn_prefill(const T* q, const T* kc, const T* vc, T* y, const uint32_t* table, int context, int len,
                             int heads, int kv_heads, int bs) {
    using namespace nvcuda;
    pdl_begin();
    extern __shared__ __align__(128) unsigned char smem[];
    T* qs = (T*)smem;
    T* ks = qs + FA_Q * D;
    T* vs = ks + FA_K * D;
    T* ps = vs + FA_K * D;
    float* ss = (float*)(ps + FA_Q * FA_K);
    float* os = ss + FA_Q * FA_K;
    float* rm = os + FA_Q * D;
    float* rl = rm + FA_Q;
    int head = blockIdx.y, q0 = blockIdx.x * FA_Q;
    int kh = head / (heads / kv_heads);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int nq = min(FA_Q, len - q0);
    constexpr int VEC = 16 / sizeof(T);
    for (int i = threadIdx.x; i < FA_Q * D / VEC; i += blockDim.x) {
        int r = i / (D / VEC), c = (i % (D / VEC)) * VEC;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < nq) v = *(const uint4*)(q + ((size_t)(q0 + r) * heads + head) * D + c);
        *(uint4*)(qs + r * D + c) = v;
    }
    for (int i = threadIdx.x; i < FA_Q * D; i += blockDim.x) os[i] = 0.f;
    for (int r = threadIdx.x; r < FA_Q; r += blockDim.x) rm[r] = -INFINITY, rl[r] = 0.f;
    __syncthreads();
    int last_pos = context + q0 + nq - 1;
    int tiles = last_pos / FA_K + 1;
    for (int t = 0; t < tiles; t++) {
        int k0 = t * FA_K;
        int nk = min(FA_K, last_pos + 1 - k0);
        for (int i = threadIdx.x; i < FA_K * D / VEC; i += blockDim.x) {
            int j = i / (D / VEC), c = (i % (D / VEC)) * VEC;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;
            if (j < nk) {
                size_t row = paged_row(table, k0 + j, bs, kv_heads, kh);
                kv = *(const uint4*)(kc + row * D + c);
                vv = *(const uint4*)(vc + row * D + c);
            }
            *(uint4*)(ks + j * D + c) = kv;
            *(uint4*)(vs + j * D + c) = vv;
        }
        __syncthreads();
        // Scores of this warp's 16 queries against the tile's 64 keys.
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
#pragma unroll
            for (int nt = 0; nt < FA_K / 16; nt++) {
                wmma::fill_fragment(acc, 0.f);
#pragma unroll
                for (int kk = 0; kk < D / 16; kk++) {
                    wmma::load_matrix_sync(a, qs + warp * 16 * D + kk * 16, D);
                    wmma::load_matrix_sync(b, ks + nt * 16 * D + kk * 16, D);
                    wmma::mma_sync(acc, a, b, acc);
                }
                wmma::store_matrix_sync(ss + warp * 16 * FA_K + nt * 16, acc, FA_K, wmma::mem_row_major);
            }
        }
        __syncwarp();
        // Online softmax: two lanes per query row, 32 keys each.
        {
            int r = warp * 16 + lane / 2, side = lane & 1;
            int qpos = context + q0 + r;
            float* srow = ss + r * FA_K;
            float mx = -INFINITY;
            for (int c = side * 32; c < side * 32 + 32; c++) {
                float s = (r < nq && c < nk && k0 + c <= qpos) ? srow[c] : -INFINITY;
                srow[c] = s;
                mx = fmaxf(mx, s);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
            float m_old = rm[r];
            float m_new = fmaxf(m_old, mx);
            // A row that sees no key yet stays at -inf: exponents against 0 then give 0, not NaN.
            float base = m_new == -INFINITY ? 0.f : m_new;
            float sum = 0.f;
            for (int c = side * 32; c < side * 32 + 32; c++) {
                float p = __expf(srow[c] - base);
                ps[r * FA_K + c] = from_f<T>(p);
                sum += p;
            }
            sum += __shfl_xor_sync(0xffffffff, sum, 1);
            float alpha = __expf(m_old - base);
            for (int c = side * (D / 2); c < side * (D / 2) + D / 2; c++) os[r * D + c] *= alpha;
            __syncwarp();
            if (side == 0) rl[r] = rl[r] * alpha + sum, rm[r] = m_new;
        }
        __syncwarp();
        // This warp's outputs += P V.
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
#pragma unroll
            for (int dt = 0; dt < D / 16; dt++) {
                wmma::load_matrix_sync(acc, os + warp * 16 * D + dt * 16, D, wmma::mem_row_major);
#pragma unroll
                for (int kk = 0; kk < FA_K / 16; kk++) {
                    wmma::load_matrix_sync(a, ps + warp * 16 * FA_K + kk * 16, FA_K);
                    wmma::load_matrix_sync(b, vs + kk * 16 * D + dt * 16, D);
                    wmma::mma_sync(acc, a, b, acc);
                }
                wmma::store_matrix_sync(os + warp * 16 * D + dt * 16, acc, D, wmma::mem_row_major);
            }
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < nq * D; i += blockDim.x) {
        int r = i / D, c = i % D;
        float l = rl[r];
        y[((size_t)(q0 + r) * heads + head) * D + c] = from_f<T>(l > 0.f ? os[i] / l : 0.f);
    }
}

#define PAGED(T, S)                                                                                            \
    extern "C" __global__ void rope_kv_paged_##S(const T* qkv, int stride, T* q_out, T* kc, T* vc,             \
                                                 const T* cos, const T* sin, const uint32_t* pos,              \
                                                 const uint32_t* tables, const uint32_t* tab, int heads,       \
                                                 int kv_heads, int d, int bs, int interleaved, float q_scale) { \
        rope_kv_paged<T>(qkv, stride, q_out, kc, vc, cos, sin, pos, tables, tab, heads, kv_heads, d, bs,       \
                         interleaved, q_scale);                                                                \
    }                                                                                                          \
    PAGED_ATTN(T, S, 64) PAGED_ATTN(T, S, 128) PAGED_ATTN(T, S, 256)
#define PAGED_ATTN(T, S, D)                                                                                    \
    extern "C" __global__ void attn_paged##D##_##S(const T* q, const T* kc, const T* vc, float* part,          \
                                                   unsigned* counters, T* y, const uint32_t* tables,           \
                                                   const uint32_t* tab, const uint32_t* lens, int heads,       \
                                                   int kv_heads, int bs) {                                     \
        attn_paged<T, D / 32>(q, kc, vc, part, counters, y, tables, tab, lens, heads, kv_heads, bs);           \
    }
#define PREFILL(T, S, D)                                                                                       \
    extern "C" __global__ void __launch_bounds__(128) attn_prefill##D##_##S(                                   \
        const T* q, const T* kc, const T* vc, T* y, const uint32_t* table, int context, int len, int heads,    \
        int kv_heads, int bs) {                                                                                \
        attn_prefill<T, D>(q, kc, vc, y, table, context, len, heads, kv_heads, bs);                            \
    }

PAGED(float, f32)
PAGED(__nv_bfloat16, bf16)
PAGED(__half, f16)
// Tensor cores take 16-bit inputs: no f32 prefill kernel (f32 models take the generic path).
PREFILL(__nv_bfloat16, bf16, 64) PREFILL(__nv_bfloat16, bf16, 128) PREFILL(__nv_bfloat16, bf16, 256)
PREFILL(__half, f16, 64) PREFILL(__half, f16, 128) PREFILL(__half, f16, 256)
