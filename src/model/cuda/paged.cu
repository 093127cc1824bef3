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

// ---- The FP8 cache (`--kv-dtype fp8`) ------------------------------------------------------
// E4M3 bytes, one per element, and one f32 factor per (block, head, offset) row in a tensor of
// its own ([blocks, kv_heads, bs], the row index is the element row's): the row's largest finite
// magnitude over 448, as fp8.rs's quantize_rows on the CPU. The rows are stored unrotated (the
// CPU cache's Hadamard rotation is not applied here).

// N consecutive cache elements (p aligned to N elements) as floats: 16-bit or f32 values, or E4M3
// bytes (N of 2, 4 or 8) decoded times 2^-120 (f8_raw; the caller applies the row factor and
// takes the 2^-120 back with it).
template <int N> __device__ __forceinline__ void kv_row(const uint8_t* p, float* out) {
    static_assert(N == 2 || N % 4 == 0, "E4M3 cache rows are read 2 or 4k bytes a lane");
    if constexpr (N == 2) {
        f8_raw<2>(*(const uint16_t*)p, out);
    } else {
#pragma unroll
        for (int e = 0; e < N; e += 4) f8_raw<4>(*(const uint32_t*)(p + e), out + e);
    }
}
template <int N, typename T> __device__ __forceinline__ void kv_row(const T* p, float* out) {
#pragma unroll
    for (int e = 0; e < N; e++) out[e] = to_f(p[e]);
}

// rope_kv_paged into an FP8 cache: q as there; each k (rotated) and v row quantized with its
// row's factor (ksc/vsc). Grid: (heads + 2*kv_heads, tokens); block: d/2.
template <typename T>
__device__ void rope_kv_paged8(const T* qkv, int stride, T* q_out, uint8_t* kc, uint8_t* vc, float* ksc, float* vsc,
                               const T* cos, const T* sin, const uint32_t* pos_a, const uint32_t* tables,
                               const uint32_t* tab, int heads, int kv_heads, int d, int bs, int interleaved,
                               float q_scale) {
    pdl_begin();
    __shared__ float wmax[8];
    int head = blockIdx.x, t = blockIdx.y, i = threadIdx.x, half = d / 2;
    int pos = (int)pos_a[t];
    // q, k and v heads lie in this order along a row of qkv.
    const T* src = qkv + (size_t)t * stride + (size_t)head * d;
    int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    float x0 = to_f(src[a]), x1 = to_f(src[b]);
    bool value = head >= heads + kv_heads;
    if (!value) {
        float c = to_f(cos[(size_t)pos * half + i]), s = to_f(sin[(size_t)pos * half + i]);
        float r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
        x0 = r0, x1 = r1;
    }
    if (head < heads) {
        T* dst = q_out + ((size_t)t * heads + head) * d;
        dst[a] = from_f<T>(x0 * q_scale);
        dst[b] = from_f<T>(x1 * q_scale);
        return;
    }
    int kh = value ? head - heads - kv_heads : head - heads;
    size_t row = paged_row(tables + tab[t], pos, bs, kv_heads, kh);
    float m = fmaxf(isfinite(x0) ? fabsf(x0) : 0.f, isfinite(x1) ? fabsf(x1) : 0.f);
    m = warp_max(m);
    if ((i & 31) == 0) wmax[i >> 5] = m;
    __syncthreads();
    m = 0.f;
    for (int w = 0; w < (half + 31) / 32; w++) m = fmaxf(m, wmax[w]);
    float f = m > 0.f ? m / 448.f : 1.f;
    uint8_t* dst = (value ? vc : kc) + row * d;
    dst[a] = to_f8(x0 / f);
    dst[b] = to_f8(x1 / f);
    if (i == 0) (value ? vsc : ksc)[row] = f;
}

// Split-K attention of one query per row over its sequence's cached positions starts[r]..lens[r]-1
// (starts null: from 0), read through its block table (tables + tab[r]); as attn_split otherwise
// (q already scaled, the last split of each (row, head) merges). A row that starts past 0 shares
// its first starts[r] positions with other rows, and attn_cascade has already left their partial
// results in the row's first ceil(starts[r] / span) slots; this kernel's splits follow them and
// the merge takes all of them. Partials: [rows, heads, slots, D + 2] (the weighted sum, then the
// max score and the sum of exponentials). Grid: (heads, rows, splits covering the longest
// row's part); block: ATTN_THREADS.
template <typename T, typename KT, int EPL>
__device__ void attn_paged(const T* q, const KT* kc, const KT* vc, const float* ksc, const float* vsc, float* part,
                           unsigned* counters, T* y, const uint32_t* tables, const uint32_t* tab, const uint32_t* lens,
                           const uint32_t* starts, int span, int slots, int heads, int kv_heads, int bs) {
    pdl_begin();
    // An FP8 cache (KT uint8_t) has a factor per row (ksc, vsc): a score takes its key's, and a
    // probability its value's before the weighted sum (pw), while the softmax sum takes none. Its
    // bytes are decoded times 2^-120 (f8_raw): a score's sum takes F8_RAW_A and its factor
    // F8_RAW_B; pw takes F8_RAW_A and the weighted sum F8_RAW_B.
    constexpr bool F8 = sizeof(KT) == 1;
    constexpr int D = EPL * 32;
    constexpr int CH = TILE_BYTES / (D * sizeof(KT));
    constexpr int PER_WARP = CH / (ATTN_THREADS / 32);
    constexpr int VEC = 16 / sizeof(KT);
    constexpr int PER_POS = D / VEC;
    __shared__ __align__(16) KT ks[CH * D];
    __shared__ __align__(16) KT vs[CH * D];
    __shared__ float ps[CH];
    __shared__ float kf[F8 ? CH : 1], pw_[F8 ? CH : 1];
    float* pw = F8 ? pw_ : ps;
    int head = blockIdx.x, r = blockIdx.y, split = blockIdx.z;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int len = (int)lens[r];
    const uint32_t* table = tables + tab[r];
    int start = starts ? (int)starts[r] : 0;
    int pre = (start + span - 1) / span;  // the shared prefix's slots
    int begin = start + split * CH, n = min(CH, len - begin);
    // Past this row's end: a slot the merge does not read.
    if (n <= 0) return;
    float* out = part + (((size_t)r * heads + head) * slots + pre + split) * (D + 2);
    int kh = head / (heads / kv_heads);
    // Each thread copies one 16-byte column of every STEP-th position from its first, walking the
    // block table (TableWalk); the values' copies reuse the keys' rows. A row index fits in 32
    // bits: the cache's rows of D bytes or more fill the GPU's memory well before 2^32.
    constexpr int STEP = ATTN_THREADS / PER_POS;
    static_assert(ATTN_THREADS % PER_POS == 0 && CH % STEP == 0, "whole passes over a tile");
    const int j0 = threadIdx.x / PER_POS, c = threadIdx.x % PER_POS;
    uint32_t rows[CH / STEP];
    TableWalk walk(begin + j0, bs);
#pragma unroll
    for (int it = 0; it < CH / STEP; it++) {
        int j = j0 + it * STEP;
        if (j < n) {
            rows[it] = (uint32_t)walk.row(table, bs, kv_heads, kh);
            __pipeline_memcpy_async((uint4*)(ks + j * D) + c, (const uint4*)(kc + (size_t)rows[it] * D) + c, 16);
        }
        walk.advance(STEP, bs);
    }
    __pipeline_commit();
#pragma unroll
    for (int it = 0; it < CH / STEP; it++) {
        int j = j0 + it * STEP;
        if (j < n)
            __pipeline_memcpy_async((uint4*)(vs + j * D) + c, (const uint4*)(vc + (size_t)rows[it] * D) + c, 16);
    }
    __pipeline_commit();
    if constexpr (F8) {
        // The value factors wait in pw until the probabilities multiply them.
        for (int j = threadIdx.x; j < n; j += ATTN_THREADS) {
            size_t row = paged_row(table, begin + j, bs, kv_heads, kh);
            kf[j] = ksc[row] * F8_RAW_B;
            pw[j] = vsc[row] * F8_RAW_A;
        }
    }
    float qv[EPL];
    const T* qr = q + ((size_t)r * heads + head) * D + lane * EPL;
#pragma unroll
    for (int e = 0; e < EPL; e++) qv[e] = to_f(qr[e]);
    __pipeline_wait_prior(1);
    __syncthreads();
    // Scores of every tile row, the rows past n (never loaded) too: they are dropped below, and
    // no branch per row is cheaper than the products it would skip.
    float sc[PER_WARP];
#pragma unroll
    for (int p = 0; p < PER_WARP; p++) {
        int j = warp + p * (ATTN_THREADS / 32);
        float kv[EPL];
        kv_row<EPL>(ks + j * D + lane * EPL, kv);
        float a = 0.f;
#pragma unroll
        for (int e = 0; e < EPL; e++) a += qv[e] * kv[e];
        sc[p] = a;
    }
    // Each lane holds a part of every score: warp_sum_deal sums them 32 at a time and leaves
    // score c0 + lane in lane `lane`, which scales and stores it.
    constexpr int C = PER_WARP < 32 ? PER_WARP : 32;
    static_assert(PER_WARP % C == 0 && (C & (C - 1)) == 0, "scores are dealt in powers of two");
#pragma unroll
    for (int c0 = 0; c0 < PER_WARP; c0 += C) {
        float a = warp_sum_deal<C>(sc + c0, lane);
        int j = warp + (c0 + (lane & (C - 1))) * (ATTN_THREADS / 32);
        if (lane < C && j < n) {
            if constexpr (F8) a = a * F8_RAW_A * kf[j];
            ps[j] = a;
        }
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = lane; j < n; j += 32) m = fmaxf(m, ps[j]);
    m = warp_max(m);
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += ATTN_THREADS) {
        ps[j] = __expf(ps[j] - m);
        if constexpr (F8) pw[j] *= ps[j];
    }
    __pipeline_wait_prior(0);
    __syncthreads();
    float l = 0.f;
    for (int j = lane; j < n; j += 32) l += ps[j];
    l = warp_sum(l);
    if constexpr (F8) {
        // Four columns a thread (one 32-bit read of bytes), the positions dealt round-robin to
        // ATTN_THREADS / (D / 4) groups whose sums meet in shared memory (the key tile's, free
        // now): one byte a thread would leave three quarters of each read and of the decode idle.
        constexpr int CT = D / 4, G = ATTN_THREADS / CT;
        static_assert(ATTN_THREADS % CT == 0 && G * D * sizeof(float) <= sizeof(ks), "value groups fit");
        int c4 = (threadIdx.x % CT) * 4, grp = threadIdx.x / CT;
        float a[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 4
        for (int j = grp; j < n; j += G) {
            float v[4];
            f8_raw<4>(*(const uint32_t*)(vs + j * D + c4), v);
            float p = pw[j];
#pragma unroll
            for (int e = 0; e < 4; e++) a[e] += p * v[e];
        }
        float* red = (float*)ks;
#pragma unroll
        for (int e = 0; e < 4; e++) red[grp * D + c4 + e] = a[e];
        __syncthreads();
        for (int x = threadIdx.x; x < D; x += ATTN_THREADS) {
            float t = 0.f;
#pragma unroll
            for (int g2 = 0; g2 < G; g2++) t += red[g2 * D + x];
            out[x] = t * F8_RAW_B;
        }
    } else {
        for (int x = threadIdx.x; x < D; x += ATTN_THREADS) {
            float a = 0.f;
#pragma unroll 8
            for (int j = 0; j < n; j++) a += pw[j] * to_f(vs[j * D + x]);
            out[x] = a;
        }
    }
    if (threadIdx.x == 0) out[D] = m, out[D + 1] = l;
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    int mine = (len - start + CH - 1) / CH, used = pre + mine;
    if (threadIdx.x == 0) last = atomicAdd(&counters[r * heads + head], 1u) == (unsigned)(mine - 1);
    __syncthreads();
    if (!last) return;
    const float* p = part + ((size_t)r * heads + head) * slots * (D + 2);
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
// in memory. A block holds 64 WR queries of one head and walks the keys 64 at a time (read through
// the block table); each of its 4 warps owns WR groups of 16 query rows throughout. With WR = 2
// each key and value fragment a warp loads serves twice the products; WR = 1 makes twice the
// blocks, which keeps more SMs busy on a short prompt (fused.rs chooses). The products run on
// tensor cores (mma.sync m16n8k16, f32 accumulation) with everything a warp owns in registers: its
// scores, its running max and sum, and its unnormalized output, rescaled as the max grows. The
// scores' accumulator layout is the layout the second product takes its probabilities in, so P
// never goes through shared memory (FlashAttention-2's arrangement).
//
// Memory: key and value tiles arrive by cp.async into two stages, the next tile's copy in flight
// while the tensor cores work on this one. Both are stored as they lie in the cache (rows of D,
// padded by 8 elements so that the 8 row addresses of an ldmatrix fall in distinct banks);
// ldmatrix hands out the key fragments as they are and the value fragments transposed. With
// D <= 128 a warp keeps its query fragments in registers (loaded once, through the second stage's
// key buffer before it is first filled); with D = 256 or WR = 2 they would not fit, and stay in
// shared memory. Blocks go heaviest first (the last query block of every head, then the one
// before), so the short diagonal blocks fill the tail rather than the long ones.
// Grid: (heads, ceil(len / (64 WR))); block: FA_THREADS; dynamic shared memory: prefill_smem(D, WR)
// in fused.rs.
//
// CASCADE: the same kernel serves decode rows that share a prefix (attn_cascade below). Its
// queries are up to 64 decode rows of one group (their indices in `rows`), its keys one span of
// the group's shared positions, no mask but the span's end (every query comes after the prefix),
// and it leaves each row's unnormalized partial result in the slot attn_paged's merge reads. So
// the prefix is read once per group, by tensor cores, instead of once per row.

constexpr int FA_Q = 64;
constexpr int FA_K = 64;
constexpr int FA_THREADS = 128;

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

// Four 8x8 tiles of 16-bit values from shared memory: lane l names row l % 8 of tile l / 8, and
// register i gets tile i's (row lane / 4, columns 2 (lane % 4) and the next); `trans` hands out
// the tiles transposed.
__device__ __forceinline__ void ldsm4(uint32_t* r, const void* p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm4_trans(uint32_t* r, const void* p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// 2^x in one instruction (the special function unit's approximation; 2^-inf = 0).
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Sixteen E4M3 bytes times f, as sixteen T at dst (16-byte aligned).
template <typename T> __device__ __forceinline__ void f8x16_store(uint4 w, float f, T* dst) {
    const uint16_t* h = (const uint16_t*)&w;
    uint32_t out[8];
#pragma unroll
    for (int e = 0; e < 8; e++) {
        float2 v = f8x2(h[e]);
        out[e] = pack2<T>(v.x * f, v.y * f);
    }
    *(uint4*)dst = make_uint4(out[0], out[1], out[2], out[3]);
    *(uint4*)(dst + 8) = make_uint4(out[4], out[5], out[6], out[7]);
}

// A cascade block's work (CASCADE): its query rows, and the group's shared positions.
struct CascadeBlock {
    const uint32_t* rows;  // the decode rows' indices in q (nq of them)
    float* part;           // attn_paged's partials, [rows, heads, slots, D + 2]
    int span, slots;
};

template <typename T, typename KT, int D, bool CASCADE, int WR>
__device__ void attn_prefill(const T* q, const KT* kc, const KT* vc, const float* ksc, const float* vsc, T* y,
                             const uint32_t* table, int context, int len, int heads, int kv_heads, int bs,
                             CascadeBlock cb) {
    static_assert(!CASCADE || WR == 1, "a cascade block holds one group of rows a warp");
    pdl_begin();
    // An FP8 cache (KT uint8_t) is decoded on the way in: its tiles are loaded, scaled by their
    // rows' factors and stored in T, synchronously (the copy of the next tile still overlaps
    // nothing but this tile's own loads).
    constexpr bool F8 = sizeof(KT) == 1;
    constexpr int RS = D + 8;  // padded row stride of every tile, in elements
    constexpr int VEC = 16 / sizeof(T);
    constexpr int CPR = D / VEC;  // 16-byte chunks per row
    constexpr int BQ = FA_Q * WR;  // this block's queries: WR groups of 16 rows per warp
    constexpr bool QREG = D <= 128 && WR == 1;
    constexpr float LOG2E = 1.4426950408889634f;
    extern __shared__ __align__(16) unsigned char smem[];
    T* ks = (T*)smem;              // [2][FA_K][RS]: the key tiles of the two stages
    T* vs = ks + 2 * FA_K * RS;    // [2][FA_K][RS]: the value tiles
    T* qs = QREG ? ks + FA_K * RS  // the second stage's key tile until the loop first fills it
                 : vs + 2 * FA_K * RS;
    int head = blockIdx.x, q0 = CASCADE ? 0 : (gridDim.y - 1 - blockIdx.y) * BQ;
    int kh = head / (heads / kv_heads);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // Fragment coordinates: g is the row (of 8) a lane holds, t4 its column pair.
    int g = lane >> 2, t4 = lane & 3;
    // Prefill: this block's queries, and keys from 0 to the last query's position. Cascade: `len`
    // rows, and the keys of span blockIdx.z of the `context` shared positions.
    int nq = CASCADE ? len : min(BQ, len - q0);
    int first_tile = CASCADE ? blockIdx.z * cb.span / FA_K : 0;
    int last_pos = CASCADE ? min(context, (int)(blockIdx.z + 1) * cb.span) - 1 : context + q0 + nq - 1;
    int tiles = last_pos / FA_K + 1;
    if (CASCADE && first_tile * FA_K > last_pos) return;
    auto q_row = [&](int r) -> size_t { return CASCADE ? (size_t)cb.rows[r] : (size_t)(q0 + r); };
    // Each thread copies one 16-byte column of every STEP-th row of a tile from its first, walking
    // the block table (TableWalk).
    constexpr int CW = F8 ? D / 16 : CPR;  // 16-byte chunks of a cached row
    constexpr int STEP = FA_THREADS / CW;
    static_assert(FA_THREADS % CW == 0 && FA_K % STEP == 0, "whole passes over a tile");
    auto load_tile = [&](int tile, int stage) {
        int k0 = tile * FA_K, nk = min(FA_K, last_pos + 1 - k0);
        T* kb = ks + stage * FA_K * RS;
        T* vb = vs + stage * FA_K * RS;
        const int j0 = threadIdx.x / CW, c8 = threadIdx.x % CW;  // first row, column in 16 bytes
        TableWalk walk(k0 + j0, bs);
#pragma unroll
        for (int it = 0; it < FA_K / STEP; it++) {
            const int j = j0 + it * STEP;
            if constexpr (F8) {
                int c = c8 * 16;
                uint4 k8 = make_uint4(0, 0, 0, 0), v8 = make_uint4(0, 0, 0, 0);
                float kf = 0.f, vf = 0.f;
                if (j < nk) {
                    size_t row = walk.row(table, bs, kv_heads, kh);
                    k8 = *(const uint4*)(kc + row * D + c);
                    v8 = *(const uint4*)(vc + row * D + c);
                    kf = ksc[row], vf = vsc[row];
                }
                f8x16_store<T>(k8, kf, kb + j * RS + c);
                f8x16_store<T>(v8, vf, vb + j * RS + c);
            } else {
                int c = c8 * VEC;
                if (j < nk) {
                    const size_t at = walk.row(table, bs, kv_heads, kh) * D + c;
                    __pipeline_memcpy_async((uint4*)(kb + j * RS + c), (const uint4*)((const T*)kc + at), 16);
                    __pipeline_memcpy_async((uint4*)(vb + j * RS + c), (const uint4*)((const T*)vc + at), 16);
                } else {
                    // Past the last key: zeros, so that P (zero there) times V stays finite.
                    *(uint4*)(kb + j * RS + c) = make_uint4(0, 0, 0, 0);
                    *(uint4*)(vb + j * RS + c) = make_uint4(0, 0, 0, 0);
                }
            }
            walk.advance(STEP, bs);
        }
        __pipeline_commit();
    };
    load_tile(first_tile, 0);
    for (int i = threadIdx.x; i < BQ * CPR; i += FA_THREADS) {
        int r = i / CPR, c = (i % CPR) * VEC;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < nq) v = *(const uint4*)(q + (q_row(r) * heads + head) * D + c);
        *(uint4*)(qs + r * RS + c) = v;
    }
    __syncthreads();
    // This lane's row address for the query fragments of its warp's first group of 16 rows (tiles:
    // rows 0-7 | 8-15 by columns 0-7 | 8-15); group h is 16 h rows further.
    const int wrow = warp * 16 * WR;
    const T* qrow = qs + (wrow + (lane & 15)) * RS + (lane >> 4) * 8;
    uint32_t qf[QREG ? D / 16 : 1][4];
    if constexpr (QREG) {
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++) ldsm4(qf[kk], qrow + kk * 16);
        __syncthreads();  // the second stage's key tile is free again
    }
    // The first and last positions of this warp's queries: tiles past the last are skipped, and
    // only tiles reaching past the first need the causal mask.
    const int warp_first = context + q0 + wrow;
    const int qpos = warp_first + g;  // the position of this lane's first row
    const int warp_last = context + q0 + min(wrow + 16 * WR - 1, nq - 1);
    // Lane offsets of the key tiles' fragment rows (tiles: keys 0-7 | 8-15 of a pair of
    // 8-column groups, by dims 0-7 | 8-15) and of the value tiles' (keys 0-15 by dims 0-7 | 8-15).
    const int koff = (((lane >> 4) << 3) + (lane & 7)) * RS + ((lane >> 3) & 1) * 8;
    const int voff = (lane & 15) * RS + (lane >> 4) * 8;
    float o[WR][D / 8][4];
#pragma unroll
    for (int h = 0; h < WR; h++)
#pragma unroll
        for (int i = 0; i < D / 8; i++) o[h][i][0] = o[h][i][1] = o[h][i][2] = o[h][i][3] = 0.f;
    // Per group, running maxima in log2 units (scores times log2 e) of its rows g and g + 8, and
    // this lane's share of their sums.
    float m[WR][2], l[WR][2];
#pragma unroll
    for (int h = 0; h < WR; h++) m[h][0] = m[h][1] = -INFINITY, l[h][0] = l[h][1] = 0.f;
    for (int tile = first_tile; tile < tiles; tile++) {
        int stage = (tile - first_tile) & 1;
        if (tile + 1 < tiles) {
            load_tile(tile + 1, stage ^ 1);
            __pipeline_wait_prior(1);
        } else {
            __pipeline_wait_prior(0);
        }
        __syncthreads();
        int k0 = tile * FA_K;
        int nk = min(FA_K, last_pos + 1 - k0);
        const T* kb = ks + stage * FA_K * RS;
        const T* vb = vs + stage * FA_K * RS;
        if (CASCADE ? wrow < nq : k0 <= warp_last) {
            // S = Q K^T for this warp's rows and the tile's 64 keys: per group, 8 accumulators of
            // 16x8. Each key fragment serves every group.
            float s[WR][FA_K / 8][4];
#pragma unroll
            for (int h = 0; h < WR; h++)
#pragma unroll
                for (int n = 0; n < FA_K / 8; n++) s[h][n][0] = s[h][n][1] = s[h][n][2] = s[h][n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t a[WR][4];
#pragma unroll
                for (int h = 0; h < WR; h++) {
                    if constexpr (QREG) {
                        a[h][0] = qf[kk][0], a[h][1] = qf[kk][1], a[h][2] = qf[kk][2], a[h][3] = qf[kk][3];
                    } else {
                        ldsm4(a[h], qrow + h * 16 * RS + kk * 16);
                    }
                }
#pragma unroll
                for (int nt = 0; nt < FA_K / 8; nt += 2) {
                    uint32_t f[4];
                    ldsm4(f, kb + koff + kk * 16 + nt * 8 * RS);
#pragma unroll
                    for (int h = 0; h < WR; h++) {
                        mma16816<T>(s[h][nt], a[h], f);
                        mma16816<T>(s[h][nt + 1], a[h], f + 2);
                    }
                }
            }
            bool mask = (!CASCADE && k0 + FA_K - 1 > warp_first) || nk < FA_K;
            // P = 2^(S - max), packed straight into the A fragments of the second product: keys
            // 16kk..16kk+15 are accumulators 2kk (a0, a1) and 2kk+1 (a2, a3).
            uint32_t p[WR][FA_K / 16][4];
            float alpha[WR][2];
#pragma unroll
            for (int h = 0; h < WR; h++) {
                const int qpos0 = qpos + h * 16, qpos1 = qpos0 + 8;
                float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
                for (int n = 0; n < FA_K / 8; n++) {
                    if (mask) {
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            int col = n * 8 + 2 * t4 + e;
                            if (col >= nk || (!CASCADE && k0 + col > qpos0)) s[h][n][e] = -INFINITY;
                            if (col >= nk || (!CASCADE && k0 + col > qpos1)) s[h][n][2 + e] = -INFINITY;
                        }
                    }
                    mx0 = fmaxf(mx0, fmaxf(s[h][n][0], s[h][n][1]));
                    mx1 = fmaxf(mx1, fmaxf(s[h][n][2], s[h][n][3]));
                }
#pragma unroll
                for (int o2 = 1; o2 < 4; o2 <<= 1) {
                    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffff, mx0, o2));
                    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffff, mx1, o2));
                }
                // Scores stay in natural units; the maxima, and each exponent's argument (one FMA),
                // are in log2 units.
                float n0 = fmaxf(m[h][0], mx0 * LOG2E), n1 = fmaxf(m[h][1], mx1 * LOG2E);
                // A row that sees no key yet stays at -inf: exponents against 0 then give 0, not NaN.
                float b0 = n0 == -INFINITY ? 0.f : n0, b1 = n1 == -INFINITY ? 0.f : n1;
                alpha[h][0] = ex2(m[h][0] - b0), alpha[h][1] = ex2(m[h][1] - b1);
                m[h][0] = n0, m[h][1] = n1;
                float ls0 = 0.f, ls1 = 0.f;
#pragma unroll
                for (int n = 0; n < FA_K / 8; n++) {
                    float p0 = ex2(fmaf(s[h][n][0], LOG2E, -b0)), p1 = ex2(fmaf(s[h][n][1], LOG2E, -b0));
                    float p2 = ex2(fmaf(s[h][n][2], LOG2E, -b1)), p3 = ex2(fmaf(s[h][n][3], LOG2E, -b1));
                    ls0 += p0 + p1;
                    ls1 += p2 + p3;
                    p[h][n / 2][(n % 2) * 2] = pack2<T>(p0, p1);
                    p[h][n / 2][(n % 2) * 2 + 1] = pack2<T>(p2, p3);
                }
                l[h][0] = l[h][0] * alpha[h][0] + ls0;
                l[h][1] = l[h][1] * alpha[h][1] + ls1;
            }
            // Once the maxima settle (most tiles of a long prompt) no row of the warp moves and the
            // rescale of its D / 2 outputs per lane and group is skipped.
            bool moved = false;
#pragma unroll
            for (int h = 0; h < WR; h++) moved |= alpha[h][0] != 1.f || alpha[h][1] != 1.f;
            if (__any_sync(0xffffffff, moved)) {
#pragma unroll
                for (int h = 0; h < WR; h++)
#pragma unroll
                    for (int dt = 0; dt < D / 8; dt++) {
                        o[h][dt][0] *= alpha[h][0], o[h][dt][1] *= alpha[h][0];
                        o[h][dt][2] *= alpha[h][1], o[h][dt][3] *= alpha[h][1];
                    }
            }
            // O += P V: one transposed ldmatrix gives the fragments of two 8-dim groups, for every
            // group of rows.
#pragma unroll
            for (int kk = 0; kk < FA_K / 16; kk++) {
#pragma unroll
                for (int dt = 0; dt < D / 8; dt += 2) {
                    uint32_t b[4];
                    ldsm4_trans(b, vb + kk * 16 * RS + voff + dt * 8);
#pragma unroll
                    for (int h = 0; h < WR; h++) {
                        mma16816<T>(o[h][dt], p[h][kk], b);
                        mma16816<T>(o[h][dt + 1], p[h][kk], b + 2);
                    }
                }
            }
        }
        __syncthreads();  // this stage is refilled by the next iteration's prefetch
    }
#pragma unroll
    for (int h = 0; h < WR; h++)
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
            l[h][0] += __shfl_xor_sync(0xffffffff, l[h][0], o2);
            l[h][1] += __shfl_xor_sync(0xffffffff, l[h][1], o2);
        }
    if constexpr (CASCADE) {
        // Unnormalized, with the max in natural-log units, as attn_paged's splits leave theirs.
        constexpr float LN2 = 0.6931471805599453f;
#pragma unroll
        for (int h2 = 0; h2 < 2; h2++) {
            int r = wrow + g + 8 * h2;
            if (r >= nq) continue;
            float* out = cb.part + ((q_row(r) * heads + head) * cb.slots + blockIdx.z) * (D + 2);
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++)
                *(float2*)(out + dt * 8 + 2 * t4) = make_float2(o[0][dt][2 * h2], o[0][dt][2 * h2 + 1]);
            if (t4 == 0) out[D] = m[0][h2] * LN2, out[D + 1] = l[0][h2];
        }
    } else {
#pragma unroll
        for (int h = 0; h < WR; h++) {
            const int r0 = wrow + h * 16 + g, r1 = r0 + 8;
            float inv0 = l[h][0] > 0.f ? 1.f / l[h][0] : 0.f, inv1 = l[h][1] > 0.f ? 1.f / l[h][1] : 0.f;
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++) {
                int c = dt * 8 + 2 * t4;
                if (r0 < nq)
                    *(uint32_t*)(y + (q_row(r0) * heads + head) * D + c) =
                        pack2<T>(o[h][dt][0] * inv0, o[h][dt][1] * inv0);
                if (r1 < nq)
                    *(uint32_t*)(y + (q_row(r1) * heads + head) * D + c) =
                        pack2<T>(o[h][dt][2] * inv1, o[h][dt][3] * inv1);
            }
        }
    }
}

#define PAGED(T, S)                                                                                            \
    extern "C" __global__ void rope_kv_paged_##S(                                                              \
        const T* qkv, int stride, T* q_out, T* kc, T* vc, float*, float*, const T* cos, const T* sin,          \
        const uint32_t* pos, const uint32_t* tables, const uint32_t* tab, int heads, int kv_heads, int d,      \
        int bs, int interleaved, float q_scale) {                                                              \
        rope_kv_paged<T>(qkv, stride, q_out, kc, vc, cos, sin, pos, tables, tab, heads, kv_heads, d, bs,       \
                         interleaved, q_scale);                                                                \
    }                                                                                                          \
    extern "C" __global__ void rope_kv_paged_kv8_##S(                                                          \
        const T* qkv, int stride, T* q_out, uint8_t* kc, uint8_t* vc, float* ksc, float* vsc, const T* cos,    \
        const T* sin, const uint32_t* pos, const uint32_t* tables, const uint32_t* tab, int heads,             \
        int kv_heads, int d, int bs, int interleaved, float q_scale) {                                         \
        rope_kv_paged8<T>(qkv, stride, q_out, kc, vc, ksc, vsc, cos, sin, pos, tables, tab, heads, kv_heads,   \
                          d, bs, interleaved, q_scale);                                                        \
    }                                                                                                          \
    PAGED_ATTN(T, S, 64) PAGED_ATTN(T, S, 128) PAGED_ATTN(T, S, 256)
#define PAGED_ATTN(T, S, D)                                                                                    \
    extern "C" __global__ void attn_paged##D##_##S(                                                            \
        const T* q, const T* kc, const T* vc, const float*, const float*, float* part, unsigned* counters,     \
        T* y, const uint32_t* tables, const uint32_t* tab, const uint32_t* lens, const uint32_t* starts,       \
        int span, int slots, int heads, int kv_heads, int bs) {                                                \
        attn_paged<T, T, D / 32>(q, kc, vc, nullptr, nullptr, part, counters, y, tables, tab, lens, starts,    \
                                 span, slots, heads, kv_heads, bs);                                            \
    }                                                                                                          \
    extern "C" __global__ void attn_paged##D##_kv8_##S(                                                        \
        const T* q, const uint8_t* kc, const uint8_t* vc, const float* ksc, const float* vsc, float* part,     \
        unsigned* counters, T* y, const uint32_t* tables, const uint32_t* tab, const uint32_t* lens,           \
        const uint32_t* starts, int span, int slots, int heads, int kv_heads, int bs) {                        \
        attn_paged<T, uint8_t, D / 32>(q, kc, vc, ksc, vsc, part, counters, y, tables, tab, lens, starts,      \
                                       span, slots, heads, kv_heads, bs);                                      \
    }
// Every entry point over a cache in T takes the FP8 one's factor pointers too (unread), so that the
// two share one argument list. MINB: blocks per SM to fit registers for (at head size 128, three:
// 168 registers, no spills, against two at the 175 the compiler would otherwise take). CMINB: the
// same for the cascade entry points, whose extra state spills at three (191 registers at two).
#define PREFILL(T, S, D, MINB, CMINB)                                                                          \
    extern "C" __global__ void __launch_bounds__(128, MINB) attn_prefill##D##_##S(                             \
        const T* q, const T* kc, const T* vc, const float*, const float*, T* y, const uint32_t* table,         \
        int context, int len, int heads, int kv_heads, int bs) {                                               \
        attn_prefill<T, T, D, false, 1>(q, kc, vc, nullptr, nullptr, y, table, context, len, heads,            \
                                        kv_heads, bs, CascadeBlock{});                                         \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128, MINB) attn_prefill##D##_kv8_##S(                         \
        const T* q, const uint8_t* kc, const uint8_t* vc, const float* ksc, const float* vsc, T* y,            \
        const uint32_t* table, int context, int len, int heads, int kv_heads, int bs) {                        \
        attn_prefill<T, uint8_t, D, false, 1>(q, kc, vc, ksc, vsc, y, table, context, len, heads,              \
                                              kv_heads, bs, CascadeBlock{});                                   \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128, CMINB) attn_cascade##D##_##S(                            \
        const T* q, const T* kc, const T* vc, const float*, const float*, float* part, const uint32_t* tables, \
        const uint32_t* groups, const uint32_t* rows, int span, int slots, int heads, int kv_heads, int bs) {  \
        const uint32_t* gr = groups + 4 * blockIdx.y;                                                          \
        attn_prefill<T, T, D, true, 1>(q, kc, vc, nullptr, nullptr, nullptr, tables + gr[2], (int)gr[3],       \
                                       (int)gr[1], heads, kv_heads, bs, CascadeBlock{rows + gr[0], part, span, \
                                       slots});                                                                \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128, CMINB) attn_cascade##D##_kv8_##S(                        \
        const T* q, const uint8_t* kc, const uint8_t* vc, const float* ksc, const float* vsc, float* part,     \
        const uint32_t* tables, const uint32_t* groups, const uint32_t* rows, int span, int slots, int heads,  \
        int kv_heads, int bs) {                                                                                \
        const uint32_t* gr = groups + 4 * blockIdx.y;                                                          \
        attn_prefill<T, uint8_t, D, true, 1>(q, kc, vc, ksc, vsc, nullptr, tables + gr[2], (int)gr[3],         \
                                             (int)gr[1], heads, kv_heads, bs,                                  \
                                             CascadeBlock{rows + gr[0], part, span, slots});                   \
    }

PAGED(float, f32)
PAGED(__nv_bfloat16, bf16)
PAGED(__half, f16)
// Tensor cores take 16-bit inputs: no f32 prefill kernel (f32 models take the generic path).
// WR = 2 (128 queries a block, the queries in shared memory) at head size 128, over 16-bit caches
// and FP8 ones: 255 registers at most (no spills), two blocks an SM.
#define PREFILL_WIDE(T, S)                                                                                     \
    extern "C" __global__ void __launch_bounds__(128, 2) attn_prefill128w_##S(                                 \
        const T* q, const T* kc, const T* vc, const float*, const float*, T* y, const uint32_t* table,         \
        int context, int len, int heads, int kv_heads, int bs) {                                               \
        attn_prefill<T, T, 128, false, 2>(q, kc, vc, nullptr, nullptr, y, table, context, len, heads,          \
                                          kv_heads, bs, CascadeBlock{});                                       \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(128, 2) attn_prefill128w_kv8_##S(                             \
        const T* q, const uint8_t* kc, const uint8_t* vc, const float* ksc, const float* vsc, T* y,            \
        const uint32_t* table, int context, int len, int heads, int kv_heads, int bs) {                        \
        attn_prefill<T, uint8_t, 128, false, 2>(q, kc, vc, ksc, vsc, y, table, context, len, heads, kv_heads,  \
                                                bs, CascadeBlock{});                                           \
    }

PREFILL(__nv_bfloat16, bf16, 64, 1, 1)
PREFILL(__nv_bfloat16, bf16, 128, 3, 2)
PREFILL(__nv_bfloat16, bf16, 256, 1, 1)
PREFILL(__half, f16, 64, 1, 1)
PREFILL(__half, f16, 128, 3, 2)
PREFILL(__half, f16, 256, 1, 1)
PREFILL_WIDE(__nv_bfloat16, bf16)
PREFILL_WIDE(__half, f16)
