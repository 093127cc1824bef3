// Kernels of the serving engine's paged KV cache (included by decode.cu, launched by fused.rs for
// `Model::forward_paged`). Per layer the cache is [blocks, kv_heads, bs, d]; position p of a
// sequence lives in block table[p / bs] at offset p % bs. Sequences are at positions of their
// own: each token carries its position and the offset of its sequence's block table in one
// array of tables (`tab`).

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
// in memory. A block holds 64 queries of one head and walks the keys 64 at a time (read through
// the block table); each of its 4 warps owns 16 query rows throughout. The products run on tensor
// cores (mma.sync m16n8k16, f32 accumulation) with everything a warp owns in registers: its
// scores, its running max and sum, and its unnormalized output, rescaled as the max grows. The
// scores' accumulator layout is the layout the second product takes its probabilities in, so P
// never goes through shared memory (FlashAttention-2's arrangement). Shared memory holds the
// query tile, the key tile and the value tile transposed, rows padded by 8 elements so that the
// fragment loads of a warp fall in distinct banks.
// Grid: (ceil(len / 64), heads); block: 128; dynamic shared memory: prefill_smem(D) in fused.rs.

constexpr int FA_Q = 64;
constexpr int FA_K = 64;

template <typename T> __device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma16816<__half>(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two values as one 32-bit fragment register: the lower column in the lower half.
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t*)&v;
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t*)&v;
}

template <typename T, int D>
__device__ void attn_prefill(const T* q, const T* kc, const T* vc, T* y, const uint32_t* table, int context, int len,
                             int heads, int kv_heads, int bs) {
    pdl_begin();
    // Padded row strides, in elements.
    constexpr int QS = D + 8, KS = D + 8, VS = FA_K + 8;
    constexpr int VEC = 16 / sizeof(T);
    extern __shared__ __align__(16) unsigned char smem[];
    T* qs = (T*)smem;        // [FA_Q][QS]
    T* ks = qs + FA_Q * QS;  // [FA_K][KS]
    T* vt = ks + FA_K * KS;  // [D][VS]: the value tile transposed (keys along a row)
    int head = blockIdx.y, q0 = blockIdx.x * FA_Q;
    int kh = head / (heads / kv_heads);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // Fragment coordinates: g is the row (of 8) a lane holds, t4 its column pair.
    int g = lane >> 2, t4 = lane & 3;
    int nq = min(FA_Q, len - q0);
    for (int i = threadIdx.x; i < FA_Q * D / VEC; i += blockDim.x) {
        int r = i / (D / VEC), c = (i % (D / VEC)) * VEC;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < nq) v = *(const uint4*)(q + ((size_t)(q0 + r) * heads + head) * D + c);
        *(uint4*)(qs + r * QS + c) = v;
    }
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    const int qpos0 = context + q0 + r0, qpos1 = qpos0 + 8;
    // The last position any query of this warp sees: tiles past it are skipped by the warp.
    const int warp_last = context + q0 + min(warp * 16 + 15, nq - 1);
    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    int last_pos = context + q0 + nq - 1;
    int tiles = last_pos / FA_K + 1;
    for (int tile = 0; tile < tiles; tile++) {
        int k0 = tile * FA_K;
        int nk = min(FA_K, last_pos + 1 - k0);
        __syncthreads();  // the previous tile's readers are done with ks and vt
        // Keys row by row (a warp reads whole rows: coalesced).
        for (int i = threadIdx.x; i < FA_K * D / VEC; i += blockDim.x) {
            int j = i / (D / VEC), c = (i % (D / VEC)) * VEC;
            uint4 kv = make_uint4(0, 0, 0, 0);
            if (j < nk) kv = *(const uint4*)(kc + paged_row(table, k0 + j, bs, kv_heads, kh) * D + c);
            *(uint4*)(ks + j * KS + c) = kv;
        }
        // Values key-fastest, so the transposed stores of a warp fill consecutive elements.
        for (int i = threadIdx.x; i < FA_K * D / VEC; i += blockDim.x) {
            int j = i % FA_K, c = (i / FA_K) * VEC;
            uint4 vv = make_uint4(0, 0, 0, 0);
            if (j < nk) vv = *(const uint4*)(vc + paged_row(table, k0 + j, bs, kv_heads, kh) * D + c);
            const T* ve = (const T*)&vv;
#pragma unroll
            for (int e = 0; e < VEC; e++) vt[(c + e) * VS + j] = ve[e];
        }
        __syncthreads();
        if (k0 > warp_last) continue;
        // S = Q K^T for this warp's 16 rows and the tile's 64 keys: 8 accumulators of 16x8.
        float s[FA_K / 8][4];
#pragma unroll
        for (int n = 0; n < FA_K / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) {
            uint32_t a[4];
            a[0] = *(const uint32_t*)(qs + r0 * QS + kk * 16 + 2 * t4);
            a[1] = *(const uint32_t*)(qs + r1 * QS + kk * 16 + 2 * t4);
            a[2] = *(const uint32_t*)(qs + r0 * QS + kk * 16 + 8 + 2 * t4);
            a[3] = *(const uint32_t*)(qs + r1 * QS + kk * 16 + 8 + 2 * t4);
#pragma unroll
            for (int n = 0; n < FA_K / 8; n++) {
                uint32_t b[2];
                b[0] = *(const uint32_t*)(ks + (n * 8 + g) * KS + kk * 16 + 2 * t4);
                b[1] = *(const uint32_t*)(ks + (n * 8 + g) * KS + kk * 16 + 8 + 2 * t4);
                mma16816<T>(s[n], a, b);
            }
        }
        // Causal mask (and the tile's end), then the rows' maxima across the quad that holds them.
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < FA_K / 8; n++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int col = n * 8 + 2 * t4 + e;
                if (col >= nk || k0 + col > qpos0) s[n][e] = -INFINITY;
                if (col >= nk || k0 + col > qpos1) s[n][2 + e] = -INFINITY;
                mx0 = fmaxf(mx0, s[n][e]);
                mx1 = fmaxf(mx1, s[n][2 + e]);
            }
        }
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, o2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, o2));
        }
        float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
        // A row that sees no key yet stays at -inf: exponents against 0 then give 0, not NaN.
        float b0 = n0 == -INFINITY ? 0.f : n0, b1 = n1 == -INFINITY ? 0.f : n1;
        float alpha0 = __expf(m0 - b0), alpha1 = __expf(m1 - b1);
        m0 = n0, m1 = n1;
        // P = exp(S - max), packed straight into the A fragments of the second product: keys
        // 16kk..16kk+15 are accumulators 2kk (a0, a1) and 2kk+1 (a2, a3).
        uint32_t p[FA_K / 16][4];
        float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
        for (int n = 0; n < FA_K / 8; n++) {
            float p0 = __expf(s[n][0] - b0), p1 = __expf(s[n][1] - b0);
            float p2 = __expf(s[n][2] - b1), p3 = __expf(s[n][3] - b1);
            ls0 += p0 + p1;
            ls1 += p2 + p3;
            p[n / 2][(n % 2) * 2] = pack2<T>(p0, p1);
            p[n / 2][(n % 2) * 2 + 1] = pack2<T>(p2, p3);
        }
        // Each lane keeps its share of the row sums; the quad adds them up at the end.
        l0 = l0 * alpha0 + ls0;
        l1 = l1 * alpha1 + ls1;
#pragma unroll
        for (int dt = 0; dt < D / 8; dt++) {
            o[dt][0] *= alpha0, o[dt][1] *= alpha0;
            o[dt][2] *= alpha1, o[dt][3] *= alpha1;
        }
        // O += P V.
#pragma unroll
        for (int kk = 0; kk < FA_K / 16; kk++) {
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) {
                uint32_t b[2];
                b[0] = *(const uint32_t*)(vt + (dt * 8 + g) * VS + kk * 16 + 2 * t4);
                b[1] = *(const uint32_t*)(vt + (dt * 8 + g) * VS + kk * 16 + 8 + 2 * t4);
                mma16816<T>(o[dt], p[kk], b);
            }
        }
    }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
        l0 += __shfl_xor_sync(0xffffffff, l0, o2);
        l1 += __shfl_xor_sync(0xffffffff, l1, o2);
    }
    float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
        int c = dt * 8 + 2 * t4;
        if (r0 < nq)
            *(uint32_t*)(y + ((size_t)(q0 + r0) * heads + head) * D + c) = pack2<T>(o[dt][0] * inv0, o[dt][1] * inv0);
        if (r1 < nq)
            *(uint32_t*)(y + ((size_t)(q0 + r1) * heads + head) * D + c) = pack2<T>(o[dt][2] * inv1, o[dt][3] * inv1);
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
