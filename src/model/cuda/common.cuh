// What the two PTX modules share (decode.cu and the Hopper-only hopper.cu include it): headers,
// programmatic dependent launch, and the 16-bit packing and E4M3 decoding of the FP8 GEMMs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_pipeline.h>
#include <stdint.h>

// This block's share of the kblocks 128-wide steps of k that the gridDim.z blocks along z split
// between them (the FP8 GEMMs' split-k): its first step and how many it takes (none for a block
// past the last step).
__device__ __forceinline__ void k_share(int kblocks, int& kb0, int& steps) {
    int per = (kblocks + gridDim.z - 1) / gridDim.z;
    kb0 = blockIdx.z * per;
    steps = max(0, min(kblocks, kb0 + per) - kb0);
}

// Programmatic dependent launch (sm_90 and later; `fused.rs` launches with it where the device has
// it): the next kernel on the stream may be scheduled once every block of this one has started,
// so its launch overlaps this one's tail; each kernel then waits here, before its first read,
// until the kernel before it has finished and its writes are visible. Both are no-ops for a
// launch without the attribute. Every kernel calls pdl_begin first, or pdl_launch first and
// pdl_wait before its first read of anything a kernel writes: what comes between may touch only
// the weights, which no kernel on the stream writes (the launch can overlap several kernels back).
__device__ __forceinline__ void pdl_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_begin() {
    pdl_launch();
    pdl_wait();
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

// A 32-bit word of four E4M3 bytes as two pairs of 16-bit values: `odd` holds bytes 1 and 3,
// `even` bytes 0 and 2 (the lower byte in the lower half).
template <typename T> __device__ __forceinline__ void e4m3x4_split(uint32_t w, uint32_t& odd, uint32_t& even);
template <> __device__ __forceinline__ void e4m3x4_split<__nv_bfloat16>(uint32_t w, uint32_t& odd, uint32_t& even) {
    // Sign to bit 15, exponent and mantissa to bits 4..10: the value times 2^-120, then times
    // 2^120 (0x7B80) by fma with -0.
    uint32_t o = (w & 0x80008000u) | ((w >> 4) & 0x07F007F0u);
    uint32_t e = ((w << 8) & 0x80008000u) | ((w << 4) & 0x07F007F0u);
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(odd) : "r"(o), "r"(0x7B807B80u), "r"(0x80008000u));
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(even) : "r"(e), "r"(0x7B807B80u), "r"(0x80008000u));
}
template <> __device__ __forceinline__ void e4m3x4_split<__half>(uint32_t w, uint32_t& odd, uint32_t& even) {
    // Sign to bit 15, exponent and mantissa to bits 7..13: the value times 2^-8, then times 2^8
    // (0x5C00).
    uint32_t o = (w & 0x80008000u) | ((w >> 1) & 0x3F803F80u);
    uint32_t e = ((w << 8) & 0x80008000u) | ((w << 7) & 0x3F803F80u);
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(odd) : "r"(o), "r"(0x5C005C00u), "r"(0x80008000u));
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(even) : "r"(e), "r"(0x5C005C00u), "r"(0x80008000u));
}

// Bytes [a, b] and [c, d] of two 32-bit words as one (prmt's selector, lowest byte first).
__device__ __forceinline__ uint32_t prmt(uint32_t lo, uint32_t hi, uint32_t sel) {
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(lo), "r"(hi), "r"(sel));
    return r;
}
