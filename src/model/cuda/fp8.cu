// Kernels of FP8 weights (included by decode.cu, launched by fused.rs for `Linear::Fp8Cuda`): E4M3
// bytes [n, k] with one f32 dequantization factor per 128x128 block (`scale`, [ceil(n/128),
// ceil(k/128)], DeepSeek-V3's `weight_scale_inv`), activations in the model's dtype.
//
// Few rows (up to 8: decode) read the bytes and dequantize in registers: half the weight bytes of
// bf16 cross HBM, which bounds a small batch. More rows, up to a few hundred (a batch of decoding
// sequences), take gemm_fp8 on tensor cores, the bytes read once per 64 rows and turned into
// 16-bit values in registers. Past that (prefill) the weight is dequantized to the model's dtype
// once per call for cuBLAS, where compute, not the weight read, bounds the product.

constexpr int FP8_BLOCK = 128;

// Eight E4M3 bytes (two 32-bit words, lowest byte first) to floats.
__device__ __forceinline__ void fp8x8_to_f(uint32_t lo, uint32_t hi, float* out) {
    uint32_t w[2] = {lo, hi};
#pragma unroll
    for (int h = 0; h < 2; h++) {
#pragma unroll
        for (int p = 0; p < 2; p++) {
            float2 f = f8x2((uint16_t)((w[h] >> (16 * p)) & 0xFFFF));
            out[h * 4 + p * 2] = f.x;
            out[h * 4 + p * 2 + 1] = f.y;
        }
    }
}

// out[r, c] = e4m3(w[r, c]) * scale[r / 128, c / 128]. Each thread converts 16 bytes.
// Requires k % 16 == 0. Grid: ceil(n * k / 16 / 256); block: 256.
template <typename T>
__device__ void fp8_dequant(const uint8_t* __restrict__ w, const float* __restrict__ scale, T* __restrict__ out, int n,
                            int k) {
    pdl_begin();
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 16;
    if (i >= (size_t)n * k) return;
    int r = (int)(i / k), c = (int)(i % k);
    float f = scale[(size_t)(r / FP8_BLOCK) * ((k + FP8_BLOCK - 1) / FP8_BLOCK) + c / FP8_BLOCK];
    uint4 b = *(const uint4*)(w + i);
    float v[16];
    fp8x8_to_f(b.x, b.y, v);
    fp8x8_to_f(b.z, b.w, v + 8);
    // Written 16 bytes at a time (out + i is 16-byte aligned: i is a multiple of 16 elements).
    constexpr int PER = 16 / sizeof(T);
    __align__(16) T t[16];
#pragma unroll
    for (int e = 0; e < 16; e++) t[e] = from_f<T>(v[e] * f);
#pragma unroll
    for (int h = 0; h < 16 / PER; h++) *(uint4*)(out + i + h * PER) = *(const uint4*)(t + h * PER);
}

// y[m, n] = res[m, n] + sum_k x[m, k] * e4m3(w[n, k]) * scale[n / 128, k / 128], for the M rows of x:
// as `gemv` (decode.cu) with 16 weight bytes per load; each load lies in one 128-column block, so
// its 16 products are summed and then scaled once.
// Requires k % 16 == 0 and 16-byte aligned rows. Grid: ceil(ceil(n / COLS) / (8 / KS)); block: 256.
template <typename T, int M, int KS>
__device__ void gemv_fp8(const T* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scale,
                         const T* __restrict__ res, T* __restrict__ y, int n, int k) {
    pdl_launch();
    constexpr int V = 16;  // weight bytes per load
    constexpr int XV = 16 / sizeof(T);
    int col0 = gemv_unit<KS>() * GEMV_COLS;
    int kb = (k + FP8_BLOCK - 1) / FP8_BLOCK;
    const uint8_t* wr[GEMV_COLS];
    const float* sr[GEMV_COLS];
    int rows[GEMV_COLS];
#pragma unroll
    for (int c = 0; c < GEMV_COLS; c++) {
        int col = min(col0 + c, n - 1);
        rows[c] = col;
        wr[c] = w + (size_t)col * k;
        sr[c] = scale + (size_t)(col / FP8_BLOCK) * kb;
    }
    prefetch_rows<KS>(w, (size_t)k, rows);
    pdl_wait();
    float acc[GEMV_COLS * M];
#pragma unroll
    for (int j = 0; j < GEMV_COLS * M; j++) acc[j] = 0.f;
#pragma unroll 2
    for (int i = slice_start<KS, V>(); i < k; i += KS * 32 * V) {
        float wf[GEMV_COLS][V];
#pragma unroll
        for (int c = 0; c < GEMV_COLS; c++) {
            uint4 b = __ldcs((const uint4*)(wr[c] + i));
            fp8x8_to_f(b.x, b.y, wf[c]);
            fp8x8_to_f(b.z, b.w, wf[c] + 8);
        }
        float f[GEMV_COLS];
#pragma unroll
        for (int c = 0; c < GEMV_COLS; c++) f[c] = __ldg(sr[c] + i / FP8_BLOCK);
#pragma unroll
        for (int m = 0; m < M; m++) {
            float part[GEMV_COLS];
#pragma unroll
            for (int c = 0; c < GEMV_COLS; c++) part[c] = 0.f;
#pragma unroll
            for (int h = 0; h < V / XV; h++) {
                uint4 xv = __ldg((const uint4*)(x + (size_t)m * k + i + h * XV));
                const T* xe = (const T*)&xv;
#pragma unroll
                for (int e = 0; e < XV; e++) {
                    float xf = to_f(xe[e]);
#pragma unroll
                    for (int c = 0; c < GEMV_COLS; c++) part[c] += wf[c][h * XV + e] * xf;
                }
            }
#pragma unroll
            for (int c = 0; c < GEMV_COLS; c++) acc[c * M + m] += part[c] * f[c];
        }
    }
    if (!unit_sum<KS>(acc)) return;
    gemv_store<T, M>(acc, res, y, col0, n);
}

// part[j] += the dot product of half h (bytes 8h..8h+7) of the 16 E4M3 bytes b[j] with v, for
// each of R loads: the one-row kernels convert a load in two halves to keep their registers.
template <int R>
__device__ __forceinline__ void fp8_half_dots(const uint4 (&b)[R], int h, const float (&v)[8], float (&part)[R]) {
#pragma unroll
    for (int j = 0; j < R; j++) {
        float wf[8];
        if (h == 0) {
            fp8x8_to_f(b[j].x, b[j].y, wf);
        } else {
            fp8x8_to_f(b[j].z, b[j].w, wf);
        }
#pragma unroll
        for (int e = 0; e < 8; e++) part[j] += wf[e] * v[e];
    }
}

// gemv_fp8 at one row with FP8_WIDE columns a unit (n a multiple of it): each load of x serves
// twice the weight rows,
// a warp streams twice the bytes between its start and its reduction, and each 16-byte weight load
// is converted in two halves against one half of x at a time; 64 registers (4 blocks an SM, where
// the two-column kernel's 48 allow 5). fused.rs takes it where n allows (0.93-0.97x the time of
// gemv_fp8's two columns on an H100 at the 7B shape).
// Grid: ceil(ceil(n / FP8_WIDE) / (8 / KS)); block: 256.
constexpr int FP8_WIDE = 4;
template <typename T, int KS>
__device__ void gemv_fp8_wide(const T* __restrict__ x, const uint8_t* __restrict__ w,
                              const float* __restrict__ scale, const T* __restrict__ res, T* __restrict__ y,
                              int n, int k) {
    pdl_launch();
    constexpr int V = 16;  // weight bytes per load
    constexpr int XV = 16 / sizeof(T);
    // n is a multiple of FP8_WIDE, so a unit's columns share one row of factors; a unit past n
    // reads the last one's and stores nothing.
    int col0 = gemv_unit<KS>() * FP8_WIDE, c0 = min(col0, n - FP8_WIDE);
    int rows[FP8_WIDE];
#pragma unroll
    for (int c = 0; c < FP8_WIDE; c++) rows[c] = c0 + c;
    prefetch_rows<KS>(w, (size_t)k, rows);
    pdl_wait();
    const uint8_t* w0 = w + (size_t)c0 * k;
    const float* s0 = scale + (size_t)(c0 / FP8_BLOCK) * ((k + FP8_BLOCK - 1) / FP8_BLOCK);
    float acc[FP8_WIDE];
#pragma unroll
    for (int c = 0; c < FP8_WIDE; c++) acc[c] = 0.f;
#pragma unroll 2
    for (int i = slice_start<KS, V>(); i < k; i += KS * 32 * V) {
        uint4 b[FP8_WIDE];
#pragma unroll
        for (int c = 0; c < FP8_WIDE; c++) b[c] = __ldcs((const uint4*)(w0 + (size_t)c * k + i));
        float part[FP8_WIDE];
#pragma unroll
        for (int c = 0; c < FP8_WIDE; c++) part[c] = 0.f;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            // Bytes 8h..8h+7 of each load against x[i + 8h ..]: one or two 16-byte loads of x.
            float xf[8];
#pragma unroll
            for (int q = 0; q < 8 / XV; q++) {
                uint4 xv = __ldg((const uint4*)(x + i + 8 * h + q * XV));
                const T* xe = (const T*)&xv;
#pragma unroll
                for (int e = 0; e < XV; e++) xf[q * XV + e] = to_f(xe[e]);
            }
            fp8_half_dots(b, h, xf, part);
        }
        float f = __ldg(s0 + i / FP8_BLOCK);
#pragma unroll
        for (int c = 0; c < FP8_WIDE; c++) acc[c] += part[c] * f;
    }
    if (!unit_sum<KS>(acc)) return;
    gemv_store<T, 1, FP8_WIDE>(acc, res, y, col0, n);
}

// e4m3x4_split without its last multiplication: the pairs as 16-bit values 2^-120 (bf16) or 2^-8
// (f16) times the bytes' values; E4M3_BITS_UNSCALE<T> squared takes that back. E4M3 subnormals
// become bf16 subnormals, which the tensor cores may flush: at most 2^-6 of a unit in a block
// whose largest weight is 448.
template <typename T> __device__ __forceinline__ void e4m3x4_bits(uint32_t w, uint32_t& odd, uint32_t& even);
template <> __device__ __forceinline__ void e4m3x4_bits<__nv_bfloat16>(uint32_t w, uint32_t& odd, uint32_t& even) {
    odd = (w & 0x80008000u) | ((w >> 4) & 0x07F007F0u);
    even = ((w << 8) & 0x80008000u) | ((w << 4) & 0x07F007F0u);
}
template <> __device__ __forceinline__ void e4m3x4_bits<__half>(uint32_t w, uint32_t& odd, uint32_t& even) {
    odd = (w & 0x80008000u) | ((w >> 1) & 0x3F803F80u);
    even = ((w << 8) & 0x80008000u) | ((w << 7) & 0x3F803F80u);
}
template <typename T> constexpr float E4M3_BITS_UNSCALE = 0x1p60f;
template <> constexpr float E4M3_BITS_UNSCALE<__half> = 0x1p4f;

// Warps a block of the tensor-core one-row kernels (GEMV_FP8_TC_WARPS in fused.rs).
constexpr int FP8_TC_WARPS = 16;
// A warp of the tensor-core one-row kernels: lane (g, t)'s first bytes in its group's rows g and
// g + 8, the group's row of block factors, and the warp's place among the KS that split k. A
// group past n (n is a multiple of 16) reads the last one's rows and stores nothing.
struct Fp8TcLane {
    const uint8_t* w0;
    const uint8_t* w1;
    const float* sc;
    int ks;
};
template <int KS>
__device__ __forceinline__ Fp8TcLane fp8_tc_lane(const uint8_t* w, const float* scale, int n, int k) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int row0 = min((int)(blockIdx.x * (FP8_TC_WARPS / KS) + warp / KS) * 16, n - 16);
    const uint8_t* w0 = w + (size_t)(row0 + (lane >> 2)) * k + 16 * (lane & 3);
    return {w0, w0 + (size_t)8 * k, scale + (size_t)(row0 / FP8_BLOCK) * ((k + FP8_BLOCK - 1) / FP8_BLOCK), warp % KS};
}

// The end of the tensor-core one-row kernels: each warp's sums for its group's rows g and g + 8
// (lanes t = 0 hold them) through shared memory, the KS warps of a group added per row in order,
// and the row stored with the residual as the unfused path rounds them (each to T).
template <typename T, int KS>
__device__ __forceinline__ void gemv_fp8_tc_store(float s0, float s1, const T* __restrict__ res, T* __restrict__ y,
                                                  int n) {
    constexpr int GROUPS = FP8_TC_WARPS / KS;
    __shared__ float red[FP8_TC_WARPS][16];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if ((lane & 3) == 0) {
        red[warp][lane >> 2] = s0;
        red[warp][(lane >> 2) + 8] = s1;
    }
    __syncthreads();
    if (threadIdx.x < GROUPS * 16) {
        int gi = threadIdx.x >> 4, r = threadIdx.x & 15;
        int row = (blockIdx.x * GROUPS + gi) * 16 + r;
        if (row < n) {
            float acc = 0.f;
#pragma unroll
            for (int j = 0; j < KS; j++) acc += red[gi * KS + j][r];
            y[row] = res ? from_f<T>(to_f(res[row]) + to_f(from_f<T>(acc))) : from_f<T>(acc);
        }
    }
}

// gemv_fp8 at one row on tensor cores (16-bit activations): the weight is mma.sync's A operand, 16
// weight rows (outputs) a warp, and x every column of B, so D's 8 columns hold the same 16 sums.
// Why: at one row the FMA kernels spend about 3.5 instructions a weight byte (gemv_fp8_wide's
// main loop on sm_90: 445 for 128 bytes a lane: a conversion per pair, a half-to-float per value,
// an FMA, x's share), against bf16's 1.5, and read their bytes at 0.42-0.72 of an H200's 4.8 TB/s
// where bf16 reads at 0.63-0.82. Here the tensor cores do the products, which they have compute to
// spare for, and a byte costs its conversion: about 400 instructions for 128 bytes a lane with
// e4m3x4_bits (this kernel), 230 with the hardware's pair conversion (gemv_fp8_tch). Lane (g, t) loads 16
// bytes of rows g and g + 8 at k = 64 c + 16 t of chunk c; word s of a load is MMA step s's
// fragment, its bytes j = 0..3 taken in the order 0, 2 | 1, 3 for the MMA's k = 2t, 2t + 1 |
// 2t + 8, 2t + 9, and x's elements 64 c + 16 t + 4 s + j in the same order. A chunk's 64 products
// are summed by the tensor cores in f32 and scaled by its block's factor. The KS warps of a group
// take chunks c = ks, ks + KS, ... and add their sums through shared memory.
// Requires n % 16 == 0, k % 64 == 0 and 16-byte aligned rows.
// Grid: ceil(n / 16 / (FP8_TC_WARPS / KS)); block: 32 FP8_TC_WARPS.
template <typename T, int KS>
__device__ void gemv_fp8_tc(const T* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scale,
                            const T* __restrict__ res, T* __restrict__ y, int n, int k) {
    pdl_launch();
    constexpr int U = 4;  // U chunks' loads in flight a lane
    const Fp8TcLane L = fp8_tc_lane<KS>(w, scale, n, k);
    const uint8_t *w0 = L.w0, *w1 = L.w1;
    const float* sc = L.sc;
    const int ks = L.ks;
    const T* xt = x + 16 * (threadIdx.x & 3);
    int chunks = k / 64;
    pdl_wait();
    float s0 = 0.f, s1 = 0.f;
    for (int c0 = ks; c0 < chunks; c0 += KS * U) {
        uint4 a[U], b[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = min(c0 + u * KS, chunks - 1);  // past the end: loaded, then skipped
            a[u] = __ldcs((const uint4*)(w0 + (size_t)c * 64));
            b[u] = __ldcs((const uint4*)(w1 + (size_t)c * 64));
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = c0 + u * KS;
            if (c >= chunks) break;
            // x from L1 (every lane of a t reads the same 32 bytes), after the weight's loads.
            uint4 xa = __ldg((const uint4*)(xt + c * 64)), xb = __ldg((const uint4*)(xt + c * 64 + 8));
            uint32_t wa[4] = {a[u].x, a[u].y, a[u].z, a[u].w}, wb[4] = {b[u].x, b[u].y, b[u].z, b[u].w};
            uint32_t xw[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
            float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int s = 0; s < 4; s++) {
                uint32_t fa[4], fb[2];
                e4m3x4_bits<T>(wa[s], fa[2], fa[0]);
                e4m3x4_bits<T>(wb[s], fa[3], fa[1]);
                fb[0] = prmt(xw[2 * s], xw[2 * s + 1], 0x5410);
                fb[1] = prmt(xw[2 * s], xw[2 * s + 1], 0x7632);
                mma16816<T>(d, fa, fb);
            }
            float f = __ldg(sc + c / 2) * E4M3_BITS_UNSCALE<T>;
            s0 += d[0] * E4M3_BITS_UNSCALE<T> * f;
            s1 += d[2] * E4M3_BITS_UNSCALE<T> * f;
        }
    }
    gemv_fp8_tc_store<T, KS>(s0, s1, res, y, n);
}

// gemv_fp8_tc with the hardware's conversion: a pair of weight bytes becomes an f16 pair in one
// instruction (cvt e4m3x2 to f16x2, bytes in their natural order: j = 0, 1 | 2, 3 for the MMA's
// k = 2t, 2t + 1 | 2t + 8, 2t + 9), and x, made f16 once per block in shared memory, is B, so a
// weight byte costs half an instruction. Activations beyond f16's range are scaled by a power of
// two first (the block's largest magnitude brought under 65504), which the factor takes back;
// below it f16 holds every bf16 value but those under 2^-14, which lose bits.
// The first round of weight loads is issued before the wait for the kernel before (it touches
// only the weight). Requires n % 16 == 0, k % 64 == 0, 16-byte aligned rows; dynamic shared
// memory: 2 k bytes. Grid: ceil(n / 16 / (FP8_TC_WARPS / KS)); block: 32 FP8_TC_WARPS.
__device__ __forceinline__ uint32_t e4m3x2_h2(uint32_t pair) {
    __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(pair & 0xFFFF), __NV_E4M3);
    return (uint32_t)h.x | ((uint32_t)h.y << 16);
}
template <typename T, int KS>
__device__ void gemv_fp8_tch(const T* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scale,
                             const T* __restrict__ res, T* __restrict__ y, int n, int k) {
    pdl_launch();
    constexpr int U = 4;
    extern __shared__ __align__(16) unsigned char smem[];
    __half* xh = (__half*)smem;
    __shared__ float wmax[FP8_TC_WARPS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
    const Fp8TcLane L = fp8_tc_lane<KS>(w, scale, n, k);
    const uint8_t *w0 = L.w0, *w1 = L.w1;
    const float* sc = L.sc;
    const int ks = L.ks;
    int chunks = k / 64;
    uint4 a[U], b[U];
    auto load = [&](int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = min(c0 + u * KS, chunks - 1);  // past the end: loaded, then skipped
            a[u] = __ldcs((const uint4*)(w0 + (size_t)c * 64));
            b[u] = __ldcs((const uint4*)(w1 + (size_t)c * 64));
        }
    };
    load(ks);
    pdl_wait();
    // x to f16 in shared memory, scaled by `down` where its largest magnitude needs it.
    constexpr int XV = 16 / sizeof(T);
    float mx = 0.f;
    for (int i = threadIdx.x * XV; i < k; i += blockDim.x * XV) {
        uint4 v = __ldg((const uint4*)(x + i));
        const T* e = (const T*)&v;
#pragma unroll
        for (int j = 0; j < XV; j++) mx = fmaxf(mx, fabsf(to_f(e[j])));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (lane == 0) wmax[warp] = mx;
    __syncthreads();
    mx = 0.f;
#pragma unroll
    for (int j = 0; j < FP8_TC_WARPS; j++) mx = fmaxf(mx, wmax[j]);
    float down = 1.f;
    if (mx > 65504.f) {
        int ex;
        frexpf(mx / 65504.f, &ex);
        down = ldexpf(1.f, -ex);
    }
    for (int i = threadIdx.x * XV; i < k; i += blockDim.x * XV) {
        uint4 v = __ldg((const uint4*)(x + i));
        const T* e = (const T*)&v;
#pragma unroll
        for (int j = 0; j < XV; j += 2) {
            __half2 h = __floats2half2_rn(to_f(e[j]) * down, to_f(e[j + 1]) * down);
            *(__half2*)(xh + i + j) = h;
        }
    }
    __syncthreads();
    float up = 1.f / down;
    const __half* xt = xh + 16 * t;
    float s0 = 0.f, s1 = 0.f;
    for (int c0 = ks; c0 < chunks; c0 += KS * U) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            int c = c0 + u * KS;
            if (c >= chunks) break;
            uint4 xa = *(const uint4*)(xt + c * 64), xb = *(const uint4*)(xt + c * 64 + 8);
            uint32_t wa[4] = {a[u].x, a[u].y, a[u].z, a[u].w}, wb[4] = {b[u].x, b[u].y, b[u].z, b[u].w};
            uint32_t xw[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
            float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int s = 0; s < 4; s++) {
                uint32_t fa[4] = {e4m3x2_h2(wa[s]), e4m3x2_h2(wb[s]), e4m3x2_h2(wa[s] >> 16), e4m3x2_h2(wb[s] >> 16)};
                uint32_t fb[2] = {xw[2 * s], xw[2 * s + 1]};
                mma16816<__half>(d, fa, fb);
            }
            float f = __ldg(sc + c / 2) * up;
            s0 += d[0] * f;
            s1 += d[2] * f;
        }
        if (c0 + KS * U < chunks) load(c0 + KS * U);
    }
    gemv_fp8_tc_store<T, KS>(s0, s1, res, y, n);
}

// dot2_norm (decode.cu) over FP8 weights and R rows: the normalized row's dot products with the
// E4M3 rows `rows` of w ([n, k], factors `scale`), for gemv_silu and gemv_rope. As in gemv_fp8
// each 16-byte load lies in one 128-column block, so its products are summed and then scaled
// once; as in gemv_fp8_wide each load is converted in two halves, each against its half of x ∘ g.
template <typename T, int KS, int R>
__device__ __forceinline__ bool dotn_norm_fp8(const NormIn<T>& in, const uint8_t* __restrict__ w,
                                              const float* __restrict__ scale, const int (&rows)[R], int k,
                                              float (&r)[R]) {
    constexpr int V = 16;  // weight bytes per load
    constexpr int XV = 16 / sizeof(T);
    int kb = (k + FP8_BLOCK - 1) / FP8_BLOCK;
    float acc[R + 1] = {};  // the R dot products, and the sum of squares of x
    // Four rows' loads are in flight per step already; unrolling them twice would spill.
#pragma unroll(R > 2 ? 1 : 2)
    for (int i = slice_start<KS, V>(); i < k; i += KS * 32 * V) {
        uint4 b[R];
#pragma unroll
        for (int j = 0; j < R; j++) b[j] = __ldcs((const uint4*)(w + (size_t)rows[j] * k + i));
        float part[R] = {};
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float xg[8];
#pragma unroll
            for (int q = 0; q < 8 / XV; q++) {
                int at = i + 8 * h + q * XV;
                uint4 xv = __ldg((const uint4*)(in.x + at)), gv = __ldg((const uint4*)(in.g + at));
                const T* xe = (const T*)&xv;
                const T* ge = (const T*)&gv;
#pragma unroll
                for (int e = 0; e < XV; e++) {
                    float sv = to_f(xe[e]);
                    acc[R] += sv * sv;
                    xg[q * XV + e] = sv * to_f(ge[e]);
                }
            }
            fp8_half_dots(b, h, xg, part);
        }
#pragma unroll
        for (int j = 0; j < R; j++) acc[j] += part[j] * __ldg(scale + (size_t)(rows[j] / FP8_BLOCK) * kb + i / FP8_BLOCK);
    }
    if (!unit_sum<KS>(acc)) return false;
    float inv = rsqrtf(acc[R] / k + in.eps);
#pragma unroll
    for (int j = 0; j < R; j++) r[j] = acc[j] * inv;
    return true;
}

// ---- Many rows: FP8 weights on tensor cores ----------------------------------------------
//
// y[m, n] = sum_k x[m, k] * e4m3(w[n, k]) * scale[n / 128, k / 128] for the rows a batch of
// decoding sequences brings (past what the few-row kernel takes, short of prefill sizes). The
// weight crosses HBM once per 16 * MT rows and only as bytes: three stages of one 128-wide step of
// k (the activations' tile and the weight's bytes) arrive in shared memory by cp.async, and each
// warp turns its own weight fragments into 16-bit values in registers with integer operations (an
// E4M3 byte's bits shifted into a bf16/f16 are its value times a power of two, which one exact
// multiplication takes back, subnormals included), so neither a conversion instruction (a quarter
// of the integer rate) nor a decoded tile in shared memory stands between the bytes and mma.sync.
// The weights enter the products exactly, the activations as they are (no 8-bit activations: a
// sample's text should not depend on how many rows share its step), and each 128-wide step's sum
// is scaled by its block's factor in f32 (the running sum is kept in units of the current step's
// factor and rescaled when it changes): the dequantized product the CPU path and gemv_fp8
// compute, up to summation order.
//
// A block of 4 * WM warps owns 16 * MT * WM rows by 128 columns (one factor block along n): warp w
// owns columns 32 (w % 4) .. 32 (w % 4) + 31 (4 tiles of 8) of rows 16 MT (w / 4) onwards, 16 MT of
// them. More warps along m (WM > 1) share one stage of weight bytes in shared memory (each decodes
// its own fragments of it). They are meant for 64 and 128 rows, where one warp per 32 columns of
// all rows leaves few warps per SM (the tiles' shared memory allows 2 blocks of 4 warps at 64 rows)
// and 128 rows read the weight twice. On an H100 they were no faster than WM 1 (fused.rs's
// GEMM_FP8_PICK says by how much), so fused.rs picks none of them.
//
// Inside each 16-wide MMA step k is permuted so that a lane's weight fragment is 4 consecutive
// bytes of one weight row and its activation fragment 4 consecutive elements of one row (the same
// permutation on both sides leaves the product unchanged): lane (g, t4) at step s of half q of the
// 128-wide step takes bytes and elements 64 q + 16 t4 + 4 s + j, j = 0..3; the odd j form the MMA's k = 2 t4, 2 t4 + 1 and the
// even j its k = 2 t4 + 8, 2 t4 + 9. Shared-memory rows are swizzled in 16-byte chunks so these
// reads are free of bank conflicts. With split-K (gridDim.z > 1) each block sums its share of k
// and writes f32 partial sums to part[z][m][n], which gemm_fp8_reduce adds into y; or, with CL,
// the splits are one thread block cluster and add their sums in its shared memory (below).
// KW = 2: two groups of 4 warps take the two halves of each 128-wide step, their sums added
// through shared memory at the end: twice the warps an SM at the same shared memory.
// Requires n % 128 == 0 and k % 128 == 0. Grid: (n / 128, ceil(m / (16 MT WM)), splits), in
// clusters of (1, 1, splits) with CL; block: 128 WM KW; dynamic shared memory:
// G8_STAGES * (16 MT WM * 256 + 16384) bytes (GemmFp8Kernel::smem in fused.rs).
constexpr int G8_N = 128, G8_K = 128, G8_STAGES = 3;

// Thread block clusters (sm_90): the cluster's barrier, and a 16-byte load from the shared memory
// of CTA `rank` of this cluster at the place `local` has in this CTA's.
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ float4 ld_cluster(uint32_t local, int rank) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(remote)
                 : "memory");
#endif
    return v;
}

template <typename T, int MT, int WM, int KW, bool CL>
__device__ void gemm_fp8(const T* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scale,
                         float* __restrict__ part, T* __restrict__ y, int m, int n, int k) {
    static_assert(KW == 1 || (KW == 2 && WM == 1), "warps split k in two, and then only with one warp along m");
    pdl_launch();
    constexpr int ROWS = 16 * MT * WM;
    constexpr int XS = ROWS * G8_K * 2;  // a stage's activation tile: rows of 256 bytes
    constexpr int WS = G8_N * G8_K;      // a stage's weight tile: rows of 128 bytes
    extern __shared__ __align__(16) unsigned char smem[];
    int n0 = blockIdx.x * G8_N, m0 = blockIdx.y * ROWS;
    int kblocks = k / G8_K;
    int kb0, steps;
    k_share(kblocks, kb0, steps);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    // This warp's column group, its half of each step (KW 2), its first row.
    int wn = warp & 3, wk = KW == 2 ? warp >> 2 : 0, wr = KW == 2 ? 0 : (warp >> 2) * 16 * MT;
    int rows = min(ROWS, m - m0);
    const float* factors = scale + (size_t)blockIdx.x * kblocks;  // this block's row of factors
    // Row r's 16-byte chunk c at c ^ (r & 1) (activations) and c ^ 4 (r & 1) (weights). Thread t
    // copies chunk t % 16 of activation rows t / 16 + (NT / 16) j and chunk t % 8 of weight rows
    // t / 8 + (NT / 8) j: both strides are even, so one swizzled offset serves all of a thread's
    // rows. The copies are unrolled with each thread's offsets fixed before the main loop (written
    // as strided loops over the tile, they took about 260 of m4k2's 690 instructions a warp spent
    // on a step). Rows past m read x's last row instead of zeros: their products land in rows the
    // epilogue never stores, and no copy is predicated.
    constexpr int NT = 128 * WM * KW, XJ = ROWS * 16 / NT, WJ = G8_N * 8 / NT;
    static_assert(XJ * NT == ROWS * 16 && WJ * NT == G8_N * 8, "whole copies a thread");
    const int xc = threadIdx.x & 15, xr = threadIdx.x >> 4;
    const uint32_t xdst = xr * 256 + ((xc ^ (xr & 1)) << 4);  // + 256 (NT / 16) j
    const T* xsrc = x + (size_t)m0 * k + xc * 8;
    uint32_t xoff[XJ];  // row offsets from m0's row, in elements
#pragma unroll
    for (int j = 0; j < XJ; j++) xoff[j] = (uint32_t)min(xr + (NT / 16) * j, rows - 1) * (uint32_t)k;
    auto load_x = [&](int kb, int stage) {
        unsigned char* xd = smem + stage * (XS + WS) + xdst;
        const T* src = xsrc + kb * G8_K;
#pragma unroll
        for (int j = 0; j < XJ; j++) __pipeline_memcpy_async(xd + j * 256 * (NT / 16), src + xoff[j], 16);
    };
    const int wc = threadIdx.x & 7, wrow = threadIdx.x >> 3;
    const uint32_t wdst = XS + wrow * 128 + ((wc ^ ((wrow & 1) << 2)) << 4);  // + 128 (NT / 8) j
    const uint8_t* wsrc = w + (size_t)(n0 + wrow) * k + wc * 16;              // + (NT / 8) k j
    auto load_w = [&](int kb, int stage) {
        unsigned char* wd = smem + stage * (XS + WS) + wdst;
        const uint8_t* src = wsrc + kb * G8_K;
#pragma unroll
        for (int j = 0; j < WJ; j++)
            __pipeline_memcpy_async(wd + j * 128 * (NT / 8), src + (size_t)j * (NT / 8) * k, 16);
    };
    auto load = [&](int kb, int stage) {
        load_x(kb, stage);
        load_w(kb, stage);
    };
    float acc[MT][4][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < 4; nt++) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.f;
    float fcur = 1.f;  // the factor acc is counted in
    // The weight bytes of the first stages do not depend on the kernel before (pdl_wait): with
    // `subgoal_prefetch` set they are on their way while it drains, in the first commit group.
    bool early = subgoal_prefetch > 0;
    if (early)
#pragma unroll
        for (int s = 0; s < G8_STAGES - 1; s++)
            if (s < steps) load_w(kb0 + s, s);
    pdl_wait();
#pragma unroll
    for (int s = 0; s < G8_STAGES - 1; s++) {
        if (s < steps) {
            load_x(kb0 + s, s);
            if (!early) load_w(kb0 + s, s);
        }
        __pipeline_commit();
    }
    for (int it = 0; it < steps; it++) {
        float f = __ldg(factors + kb0 + it);
        __pipeline_wait_prior(G8_STAGES - 2);
        __syncthreads();  // step it has landed; every warp is done with the stage loaded next
        if (it + G8_STAGES - 1 < steps) load(kb0 + it + G8_STAGES - 1, (it + G8_STAGES - 1) % G8_STAGES);
        __pipeline_commit();
        if (f == 0.f) continue;  // a zero block adds nothing
        float rescale = fcur / f;
        fcur = f;
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[mt][nt][i] *= rescale;
        const unsigned char* xs = smem + (it % G8_STAGES) * (XS + WS);
        const unsigned char* ws = xs + XS;
#pragma unroll
        for (int qi = 0; qi < 2 / KW; qi++) {
            const int q = KW == 2 ? wk : qi;
            // This lane's weight fragments of steps 4q .. 4q + 3, for its 4 column tiles.
            uint32_t bo[4][4], be[4][4];
#pragma unroll
            for (int nt = 0; nt < 4; nt++) {
                int r = wn * 32 + nt * 8 + g;
                uint4 v = *(const uint4*)(ws + r * 128 + (((4 * q + t4) ^ ((r & 1) << 2)) << 4));
                e4m3x4_split<T>(v.x, bo[nt][0], be[nt][0]);
                e4m3x4_split<T>(v.y, bo[nt][1], be[nt][1]);
                e4m3x4_split<T>(v.z, bo[nt][2], be[nt][2]);
                e4m3x4_split<T>(v.w, bo[nt][3], be[nt][3]);
            }
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                int r0 = wr + mt * 16 + g, r1 = r0 + 8;  // same parity
                int c0 = ((8 * q + 2 * t4) ^ (r0 & 1)) << 4, c1 = ((8 * q + 2 * t4 + 1) ^ (r0 & 1)) << 4;
                uint4 lo0 = *(const uint4*)(xs + r0 * 256 + c0), hi0 = *(const uint4*)(xs + r0 * 256 + c1);
                uint4 lo1 = *(const uint4*)(xs + r1 * 256 + c0), hi1 = *(const uint4*)(xs + r1 * 256 + c1);
                uint32_t u[2][8] = {{lo0.x, lo0.y, lo0.z, lo0.w, hi0.x, hi0.y, hi0.z, hi0.w},
                                    {lo1.x, lo1.y, lo1.z, lo1.w, hi1.x, hi1.y, hi1.z, hi1.w}};
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    uint32_t a[4] = {prmt(u[0][2 * s], u[0][2 * s + 1], 0x7632), prmt(u[1][2 * s], u[1][2 * s + 1], 0x7632),
                                     prmt(u[0][2 * s], u[0][2 * s + 1], 0x5410), prmt(u[1][2 * s], u[1][2 * s + 1], 0x5410)};
#pragma unroll
                    for (int nt = 0; nt < 4; nt++) {
                        uint32_t b[2] = {bo[nt][s], be[nt][s]};
                        mma16816<T>(acc[mt][nt], a, b);
                    }
                }
            }
        }
    }
    if constexpr (KW == 2) {
        // The warps of the second half hand their sums to those of the first, through the
        // pipeline's shared memory (every stage read, no copy in flight). They stay for the
        // cluster's barriers, but write nothing.
        __pipeline_wait_prior(0);
        __syncthreads();
        float4* red = (float4*)smem;
        if (wk == 1) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
                    red[((wn * MT + mt) * 4 + nt) * 32 + lane] =
                        make_float4(acc[mt][nt][0], acc[mt][nt][1], acc[mt][nt][2], acc[mt][nt][3]);
        }
        __syncthreads();
        if (wk == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    float4 o = red[((wn * MT + mt) * 4 + nt) * 32 + lane];
                    acc[mt][nt][0] += o.x, acc[mt][nt][1] += o.y, acc[mt][nt][2] += o.z, acc[mt][nt][3] += o.w;
                }
        }
    }
    if constexpr (CL) {
        // The splits of k are one cluster (gridDim.z CTAs along z, fused.rs launches them so):
        // each CTA leaves its sums, in f32 and counted in units of 1, in its shared memory
        // (rows padded to 136 floats, so a warp's float2 stores fall in distinct banks), and CTA z
        // adds up rows z, z + splits, ... over every CTA of the cluster, in split order as
        // gemm_fp8_reduce does, and writes them: no partial sums cross global memory and no
        // second launch follows.
        constexpr int LD = G8_N + 8;
        float* tile = (float*)smem;
        __pipeline_wait_prior(0);
        __syncthreads();  // every stage (and the halves' exchange) read before the tile overwrites it
        if (wk == 0) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                int r0 = wr + mt * 16 + g, r1 = r0 + 8;
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    int c = wn * 32 + nt * 8 + 2 * t4;
                    *(float2*)(tile + r0 * LD + c) = make_float2(acc[mt][nt][0] * fcur, acc[mt][nt][1] * fcur);
                    *(float2*)(tile + r1 * LD + c) = make_float2(acc[mt][nt][2] * fcur, acc[mt][nt][3] * fcur);
                }
            }
        }
        cluster_sync();
        int splits = gridDim.z, z = blockIdx.z;
        int mine = z < ROWS ? (ROWS - 1 - z) / splits + 1 : 0;  // rows z, z + splits, ... of the tile
        for (int i = threadIdx.x; i < mine * (G8_N / 4); i += blockDim.x) {
            int r = z + splits * (i / (G8_N / 4)), c = 4 * (i % (G8_N / 4));
            if (r >= rows) continue;
            uint32_t local = (uint32_t)__cvta_generic_to_shared(tile + r * LD + c);
            float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
            for (int q = 0; q < splits; q++) {
                float4 v = ld_cluster(local, q);
                t.x += v.x, t.y += v.y, t.z += v.z, t.w += v.w;
            }
            uint2 o = make_uint2(pack2<T>(t.x, t.y), pack2<T>(t.z, t.w));
            *(uint2*)(y + (size_t)(m0 + r) * n + n0 + c) = o;
        }
        cluster_sync();  // no CTA leaves while another still reads its shared memory
        return;
    }
    if (wk != 0) return;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        int r0 = wr + mt * 16 + g, r1 = r0 + 8;
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int c = n0 + wn * 32 + nt * 8 + 2 * t4;
            float v0 = acc[mt][nt][0] * fcur, v1 = acc[mt][nt][1] * fcur;
            float v2 = acc[mt][nt][2] * fcur, v3 = acc[mt][nt][3] * fcur;
            if (gridDim.z == 1) {
                if (r0 < rows) *(uint32_t*)(y + (size_t)(m0 + r0) * n + c) = pack2<T>(v0, v1);
                if (r1 < rows) *(uint32_t*)(y + (size_t)(m0 + r1) * n + c) = pack2<T>(v2, v3);
            } else {
                float* p = part + (size_t)blockIdx.z * m * n;
                if (r0 < rows) *(float2*)(p + (size_t)(m0 + r0) * n + c) = make_float2(v0, v1);
                if (r1 < rows) *(float2*)(p + (size_t)(m0 + r1) * n + c) = make_float2(v2, v3);
            }
        }
    }
}

// y[i] = sum over the splits of part[z][i], for the m * n outputs. Grid: ceil(m * n / 256); block: 256.
template <typename T>
__device__ void gemm_fp8_reduce(const float* __restrict__ part, T* __restrict__ y, int splits, size_t total) {
    pdl_begin();
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    float a = 0.f;
    for (int z = 0; z < splits; z++) a += part[(size_t)z * total + i];
    y[i] = from_f<T>(a);
}

#define FP8_GEMV(T, S, M)                                                                                      \
    extern "C" __global__ void gemv_fp8_##M##_##S(const T* x, const uint8_t* w, const float* scale,            \
                                                  const T* res, T* y, int n, int k) {                          \
        gemv_fp8<T, M, 1>(x, w, scale, res, y, n, k);                                                          \
    }
#define FP8_GEMV1(T, S, KS)                                                                                    \
    extern "C" __global__ void gemv_fp8_1_k##KS##_##S(const T* x, const uint8_t* w, const float* scale,        \
                                                      const T* res, T* y, int n, int k) {                      \
        gemv_fp8<T, 1, KS>(x, w, scale, res, y, n, k);                                                         \
    }
#define FP8_GEMV1W(T, S, KS)                                                                                   \
    extern "C" __global__ void __launch_bounds__(256, 4) gemv_fp8_1w_k##KS##_##S(                              \
        const T* x, const uint8_t* w, const float* scale, const T* res, T* y, int n, int k) {                  \
        gemv_fp8_wide<T, KS>(x, w, scale, res, y, n, k);                                                       \
    }
// gemv_silu_fp8_k<KS>_<S> and gemv_rope_fp8_k<KS>_<S>: the norm-fused one-row projections over
// FP8 weights, with the dense ones' argument list.
#define FP8_EPILOGUE(T, S, KS)                                                                                 \
    GEMV_EPILOGUE_ENTRIES(T, S, KS, uint8_t, 1, , , gemv_silu_fp8_k##KS##_##S, gemv_rope_fp8_k##KS##_##S,     \
                          (dotn_norm_fp8<T, KS, 2>(in, w, scale, rows, k, r)))
// The same with two pairs a unit (gemv_silu_fp8w_k<KS>, gemv_rope_fp8w_k<KS>): each load of x and
// of the norm's weight serves four weight rows. 16-bit activations only; without spills in 64
// registers (4 blocks an SM) for SiLU, 80 (3 blocks) for RoPE, whose epilogue holds more.
#define FP8_EPILOGUE_WIDE(T, S, KS)                                                                            \
    GEMV_EPILOGUE_ENTRIES(T, S, KS, uint8_t, 2, __launch_bounds__(256, 4), __launch_bounds__(256, 3),          \
                          gemv_silu_fp8w_k##KS##_##S, gemv_rope_fp8w_k##KS##_##S,                              \
                          (dotn_norm_fp8<T, KS, 4>(in, w, scale, rows, k, r)))
#define FP8_ALL(T, S)                                                                                          \
    extern "C" __global__ void fp8_dequant_##S(const uint8_t* w, const float* scale, T* out, int n, int k) {   \
        fp8_dequant<T>(w, scale, out, n, k);                                                                   \
    }                                                                                                          \
    FP8_GEMV(T, S, 1) FP8_GEMV(T, S, 2) FP8_GEMV(T, S, 3) FP8_GEMV(T, S, 4) FP8_GEMV(T, S, 5)                  \
    FP8_GEMV(T, S, 6) FP8_GEMV(T, S, 7) FP8_GEMV(T, S, 8) FP8_GEMV1(T, S, 2) FP8_GEMV1(T, S, 4)              \
    FP8_GEMV1(T, S, 8) FP8_EPILOGUE(T, S, 1) FP8_EPILOGUE(T, S, 2) FP8_EPILOGUE(T, S, 4)                      \
    FP8_EPILOGUE(T, S, 8)

// Activations to E4M3 in DeepSeek-V3's 1x128 tiles, for the FP8 GEMM through cuBLASLt (fused.rs's
// `gemm_fp8_lt`, W8A8): a warp takes one 128-wide tile of one row, 4 values a lane, writes its
// bytes to xq ([mp, k]) and its factor (the tile's largest magnitude / 448; 1 for an all-zero
// tile) to xs[tile * mp + row], the outer-dimension-major layout PyTorch hands cuBLASLt for
// VEC128_32F factors, or with k_major to xs[row * k / 128 + tile] (fused.rs's `LtFactors`). mp is m
// rounded up to a multiple of 4 (cuBLASLt's alignment of that layout); rows m to mp - 1 are
// written as zeros with factor 1. Requires k % 128 == 0. Grid: ceil(mp * k / 1024); block: 256.
template <typename T>
__device__ void fp8_quant_rows(const T* __restrict__ x, uint8_t* __restrict__ xq, float* __restrict__ xs, int m,
                               int mp, int k, int k_major) {
    pdl_begin();
    int tiles = k / 128;
    long tile = (long)blockIdx.x * 8 + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (tile >= (long)mp * tiles) return;
    int row = (int)(tile / tiles), t = (int)(tile % tiles);
    size_t at = (size_t)tile * 128 + lane * 4;  // rows are whole tiles, so tile * 128 is the offset
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; j++) v[j] = row < m ? to_f(x[at + j]) : 0.f;
    float a = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    float f = a > 0.f ? a / 448.f : 1.f;
    uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v[0] / f, v[1] / f), __NV_SATFINITE, __NV_E4M3);
    uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v[2] / f, v[3] / f), __NV_SATFINITE, __NV_E4M3);
    *(uint32_t*)(xq + at) = lo | (hi << 16);
    if (lane == 0) xs[k_major ? (size_t)row * tiles + t : (size_t)t * mp + row] = f;
}

// gemm_fp8_m<MT>_<S> (one warp per column group, WM 1) and gemm_fp8_m<MT>x<WM>_<S>; fused.rs's
// GEMM_FP8 lists them.
#define FP8_GEMM_K(T, S, NAME, MT, WM, KW, MINB)                                                               \
    extern "C" __global__ void __launch_bounds__(128 * WM * KW, MINB)                                          \
        NAME##_##S(const T* x, const uint8_t* w, const float* scale, float* part, T* y, int m, int n, int k) { \
        gemm_fp8<T, MT, WM, KW, false>(x, w, scale, part, y, m, n, k);                                         \
    }
// The same and its cluster form (NAME c: the splits of k summed in the cluster's shared memory).
#define FP8_GEMM_KC(T, S, NAME, MT, WM, KW, MINB)                                                              \
    FP8_GEMM_K(T, S, NAME, MT, WM, KW, MINB)                                                                   \
    extern "C" __global__ void __launch_bounds__(128 * WM * KW, MINB)                                          \
        NAME##c_##S(const T* x, const uint8_t* w, const float* scale, float* part, T* y, int m, int n, int k) { \
        gemm_fp8<T, MT, WM, KW, true>(x, w, scale, part, y, m, n, k);                                          \
    }
// The k2 kernels ask for registers that let the blocks their shared memory allows share an SM
// (3 of 60 and 72 KiB, 2 of 96 KiB): the point of them is twice the warps an SM.
#define FP8_GEMM(T, S)                                                                                         \
    FP8_GEMM_KC(T, S, gemm_fp8_m1, 1, 1, 1, 1) FP8_GEMM_KC(T, S, gemm_fp8_m2, 2, 1, 1, 1)                      \
    FP8_GEMM_KC(T, S, gemm_fp8_m3, 3, 1, 1, 1) FP8_GEMM_KC(T, S, gemm_fp8_m4, 4, 1, 1, 1)                      \
    FP8_GEMM_K(T, S, gemm_fp8_m2x2, 2, 2, 1, 1) FP8_GEMM_K(T, S, gemm_fp8_m2x4, 2, 4, 1, 1)                    \
    FP8_GEMM_K(T, S, gemm_fp8_m4x2, 4, 2, 1, 1) FP8_GEMM_KC(T, S, gemm_fp8_m1k2, 1, 1, 2, 3)                   \
    FP8_GEMM_KC(T, S, gemm_fp8_m2k2, 2, 1, 2, 3) FP8_GEMM_K(T, S, gemm_fp8_m4k2, 4, 1, 2, 2)                   \
    extern "C" __global__ void gemm_fp8_reduce_##S(const float* part, T* y, int splits, size_t total) {        \
        gemm_fp8_reduce<T>(part, y, splits, total);                                                            \
    }                                                                                                          \
    extern "C" __global__ void fp8_quant_rows_##S(const T* x, uint8_t* xq, float* xs, int m, int mp, int k,    \
                                                  int k_major) {                                               \
        fp8_quant_rows<T>(x, xq, xs, m, mp, k, k_major);                                                       \
    }

FP8_ALL(float, f32)
FP8_ALL(__nv_bfloat16, bf16)
FP8_ALL(__half, f16)
// gemv_fp8_tc_k<KS>_<S> and gemv_fp8_tch_k<KS>_<S>: the one-row FP8 product on tensor cores.
#define FP8_TC(T, S, KS)                                                                                       \
    extern "C" __global__ void __launch_bounds__(32 * FP8_TC_WARPS, 2) gemv_fp8_tc_k##KS##_##S(                 \
        const T* x, const uint8_t* w, const float* scale, const T* res, T* y, int n, int k) {                  \
        gemv_fp8_tc<T, KS>(x, w, scale, res, y, n, k);                                                         \
    }                                                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * FP8_TC_WARPS, 2) gemv_fp8_tch_k##KS##_##S(                \
        const T* x, const uint8_t* w, const float* scale, const T* res, T* y, int n, int k) {                  \
        gemv_fp8_tch<T, KS>(x, w, scale, res, y, n, k);                                                        \
    }
// The wide one-row kernels (four columns, two pairs a unit) for 16-bit activations only: with f32
// ones they spill in their registers, and fused.rs gives f32 models the narrow ones.
#define FP8_WIDE_ALL(T, S)                                                                                     \
    FP8_GEMV1W(T, S, 1) FP8_GEMV1W(T, S, 2) FP8_GEMV1W(T, S, 4) FP8_GEMV1W(T, S, 8)                            \
    FP8_EPILOGUE_WIDE(T, S, 1) FP8_EPILOGUE_WIDE(T, S, 2) FP8_EPILOGUE_WIDE(T, S, 4) FP8_EPILOGUE_WIDE(T, S, 8) \
    FP8_TC(T, S, 2) FP8_TC(T, S, 4) FP8_TC(T, S, 8) FP8_TC(T, S, 16)
FP8_WIDE_ALL(__nv_bfloat16, bf16)
FP8_WIDE_ALL(__half, f16)
// Tensor cores take 16-bit inputs: f32 models dequantize and take cuBLAS.
FP8_GEMM(__nv_bfloat16, bf16)
FP8_GEMM(__half, f16)
