// Kernels of FP8 weights (included by decode.cu, launched by fused.rs for `Linear::Fp8Cuda`): E4M3
// bytes [n, k] with one f32 dequantization factor per 128x128 block (`scale`, [ceil(n/128),
// ceil(k/128)], DeepSeek-V3's `weight_scale_inv`), activations in the model's dtype.
//
// Few rows (decode) read the bytes and dequantize in registers: half the weight bytes of bf16
// cross HBM, which bounds a small batch; up to 32 rows take this kernel 8 rows at a time (the
// bytes read once per 8 rows). Many rows (prefill) dequantize the weight to the model's dtype once
// per call and take cuBLAS, where compute, not the weight read, bounds the product.

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
    pdl_begin();
    constexpr int V = 16;  // weight bytes per load
    constexpr int XV = 16 / sizeof(T);
    int col0 = gemv_unit<KS>() * GEMV_COLS;
    int kb = (k + FP8_BLOCK - 1) / FP8_BLOCK;
    const uint8_t* wr[GEMV_COLS];
    const float* sr[GEMV_COLS];
#pragma unroll
    for (int c = 0; c < GEMV_COLS; c++) {
        int col = min(col0 + c, n - 1);
        wr[c] = w + (size_t)col * k;
        sr[c] = scale + (size_t)(col / FP8_BLOCK) * kb;
    }
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

// ---- Many rows: a mixed-input GEMM on tensor cores ----------------------------------------
//
// y[m, n] = sum_k x[m, k] * e4m3(w[n, k]) * scale[n / 128, k / 128] for the rows a batch of
// decoding sequences brings (past what the few-row kernel takes, short of prefill sizes): the
// weight bytes cross HBM once per 64 rows, where dequantizing the whole weight first writes and
// reads it again in 16 bits. A block owns 64 rows by 128 columns (one block of the factors along
// n) and walks k 128 at a time (one factor along k): the x tile and the weight's bytes arrive by
// cp.async, two stages deep; the bytes are then decoded, times their one factor, into a T tile in
// shared memory, and 4 warps of 16 rows each multiply on tensor cores (mma.sync m16n8k16, f32
// accumulation). The product of a byte and its factor rounded to T is the only rounding beyond
// bf16's GEMM. With split-K (gridDim.z > 1) each block sums its share of k and writes f32
// partial sums to part[z][m][n], which gemm_fp8_reduce adds into y.
// Requires n % 128 == 0 and k % 128 == 0. Grid: (n / 128, ceil(m / 64), splits); block: 128;
// dynamic shared memory: FP8_GEMM_SMEM bytes (gemm_fp8_smem in fused.rs).
constexpr int G8_M = 64, G8_N = 128, G8_K = 128;
constexpr int G8_AS = G8_K + 8;  // padded row stride of the x and decoded weight tiles, in elements

template <typename T>
__device__ void gemm_fp8(const T* __restrict__ x, const uint8_t* __restrict__ w, const float* __restrict__ scale,
                         float* __restrict__ part, T* __restrict__ y, int m, int n, int k) {
    pdl_begin();
    extern __shared__ __align__(16) unsigned char smem[];
    T* xs = (T*)smem;                                  // [2][G8_M][G8_AS]
    uint8_t* wraw = (uint8_t*)(xs + 2 * G8_M * G8_AS);  // [2][G8_N][G8_K]
    T* wt = (T*)(wraw + 2 * G8_N * G8_K);              // [G8_N][G8_AS]
    constexpr int VEC = 16 / sizeof(T);
    int nb = blockIdx.x, n0 = nb * G8_N, m0 = blockIdx.y * G8_M;
    int kblocks = k / G8_K;
    int per = (kblocks + gridDim.z - 1) / gridDim.z;
    int kb0 = blockIdx.z * per, kb1 = min(kblocks, kb0 + per);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int rows = min(G8_M, m - m0);
    auto load = [&](int kb, int stage) {
        T* xd = xs + stage * G8_M * G8_AS;
        uint8_t* wd = wraw + stage * G8_N * G8_K;
        for (int i = threadIdx.x; i < G8_M * G8_K / VEC; i += blockDim.x) {
            int r = i / (G8_K / VEC), c = (i % (G8_K / VEC)) * VEC;
            if (r < rows)
                __pipeline_memcpy_async((uint4*)(xd + r * G8_AS + c), (const uint4*)(x + (size_t)(m0 + r) * k + kb * G8_K + c), 16);
            else
                *(uint4*)(xd + r * G8_AS + c) = make_uint4(0, 0, 0, 0);
        }
        for (int i = threadIdx.x; i < G8_N * G8_K / 16; i += blockDim.x) {
            int r = i / (G8_K / 16), c = (i % (G8_K / 16)) * 16;
            __pipeline_memcpy_async((uint4*)(wd + r * G8_K + c), (const uint4*)(w + (size_t)(n0 + r) * k + kb * G8_K + c), 16);
        }
        __pipeline_commit();
    };
    float acc[G8_N / 8][4];
#pragma unroll
    for (int i = 0; i < G8_N / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    // Lane offsets of the ldmatrix row addresses (as in attn_prefill).
    const T* arow = xs + (warp * 16 + (lane & 15)) * G8_AS + (lane >> 4) * 8;
    const int boff = (((lane >> 4) << 3) + (lane & 7)) * G8_AS + ((lane >> 3) & 1) * 8;
    if (kb0 < kb1) load(kb0, 0);
    for (int kb = kb0; kb < kb1; kb++) {
        int stage = (kb - kb0) & 1;
        if (kb + 1 < kb1) {
            __pipeline_wait_prior(0);
            __syncthreads();  // this stage has landed; the other one's readers are done
            load(kb + 1, stage ^ 1);
        } else {
            __pipeline_wait_prior(0);
            __syncthreads();
        }
        // Decode this stage's weight bytes with their block's factor.
        float f = scale[(size_t)nb * kblocks + kb];
        const uint8_t* wsrc = wraw + stage * G8_N * G8_K;
        for (int i = threadIdx.x; i < G8_N * G8_K / 16; i += blockDim.x) {
            int r = i / (G8_K / 16), c = (i % (G8_K / 16)) * 16;
            f8x16_store<T>(*(const uint4*)(wsrc + r * G8_K + c), f, wt + r * G8_AS + c);
        }
        __syncthreads();
        const T* xa = arow + stage * G8_M * G8_AS;
#pragma unroll
        for (int kk = 0; kk < G8_K / 16; kk++) {
            uint32_t a[4];
            ldsm4(a, xa + kk * 16);
            mma_rows<T, G8_N / 8>(acc, a, wt + boff + kk * 16, G8_AS);
        }
        __syncthreads();  // wt is decoded afresh next step
    }
    int r0 = warp * 16 + g, r1 = r0 + 8;
#pragma unroll
    for (int nt = 0; nt < G8_N / 8; nt++) {
        int c = n0 + nt * 8 + 2 * t4;
        if (gridDim.z == 1) {
            if (r0 < rows) *(uint32_t*)(y + (size_t)(m0 + r0) * n + c) = pack2<T>(acc[nt][0], acc[nt][1]);
            if (r1 < rows) *(uint32_t*)(y + (size_t)(m0 + r1) * n + c) = pack2<T>(acc[nt][2], acc[nt][3]);
        } else {
            float* p = part + (size_t)blockIdx.z * m * n;
            if (r0 < rows) *(float2*)(p + (size_t)(m0 + r0) * n + c) = make_float2(acc[nt][0], acc[nt][1]);
            if (r1 < rows) *(float2*)(p + (size_t)(m0 + r1) * n + c) = make_float2(acc[nt][2], acc[nt][3]);
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
#define FP8_ALL(T, S)                                                                                          \
    extern "C" __global__ void fp8_dequant_##S(const uint8_t* w, const float* scale, T* out, int n, int k) {   \
        fp8_dequant<T>(w, scale, out, n, k);                                                                   \
    }                                                                                                          \
    FP8_GEMV(T, S, 1) FP8_GEMV(T, S, 2) FP8_GEMV(T, S, 3) FP8_GEMV(T, S, 4) FP8_GEMV(T, S, 5)                  \
    FP8_GEMV(T, S, 6) FP8_GEMV(T, S, 7) FP8_GEMV(T, S, 8) FP8_GEMV1(T, S, 2) FP8_GEMV1(T, S, 4)              \
    FP8_GEMV1(T, S, 8)

#define FP8_GEMM(T, S)                                                                                         \
    extern "C" __global__ void __launch_bounds__(128) gemm_fp8_##S(const T* x, const uint8_t* w,               \
                                                                   const float* scale, float* part, T* y,      \
                                                                   int m, int n, int k) {                      \
        gemm_fp8<T>(x, w, scale, part, y, m, n, k);                                                            \
    }                                                                                                          \
    extern "C" __global__ void gemm_fp8_reduce_##S(const float* part, T* y, int splits, size_t total) {        \
        gemm_fp8_reduce<T>(part, y, splits, total);                                                            \
    }

FP8_ALL(float, f32)
FP8_ALL(__nv_bfloat16, bf16)
FP8_ALL(__half, f16)
// Tensor cores take 16-bit inputs: f32 models dequantize and take cuBLAS.
FP8_GEMM(__nv_bfloat16, bf16)
FP8_GEMM(__half, f16)
