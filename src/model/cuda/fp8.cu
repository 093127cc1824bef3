// Kernels of FP8 weights (included by decode.cu, launched by fused.rs for `Linear::Fp8Cuda`): E4M3
// bytes [n, k] with one f32 dequantization factor per 128x128 block (`scale`, [ceil(n/128),
// ceil(k/128)], DeepSeek-V3's `weight_scale_inv`), activations in the model's dtype.
//
// Few rows (decode) read the bytes and dequantize in registers: half the weight bytes of bf16
// cross HBM, which bounds a small batch; up to 32 rows take this kernel 8 rows at a time (the
// bytes read once per 8 rows). Many rows (prefill) dequantize the weight to the model's dtype once
// per call and take cuBLAS, where compute, not the weight read, bounds the product.

#include <cuda_fp8.h>

constexpr int FP8_BLOCK = 128;

// Eight E4M3 bytes (two 32-bit words) to floats: the hardware pairs conversion on sm_89 and later.
__device__ __forceinline__ void fp8x8_to_f(uint32_t lo, uint32_t hi, float* out) {
    uint32_t w[2] = {lo, hi};
#pragma unroll
    for (int h = 0; h < 2; h++) {
#pragma unroll
        for (int p = 0; p < 2; p++) {
            __nv_fp8x2_storage_t pair = (__nv_fp8x2_storage_t)((w[h] >> (16 * p)) & 0xFFFF);
            __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
            float2 f = __half22float2(*(__half2*)&r);
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

FP8_ALL(float, f32)
FP8_ALL(__nv_bfloat16, bf16)
FP8_ALL(__half, f16)
