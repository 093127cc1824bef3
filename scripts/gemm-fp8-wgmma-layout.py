#!/usr/bin/env python3
"""A lane-by-lane emulation of `gemm_fp8_wg` (src/model/cuda/hopper.cu), the FP8-weight GEMM on
Hopper's wgmma, for checking its data layout without a GPU.

It replays one block's copies into shared memory (the activations in the canonical K-major
layout without swizzle, the weight rows with their 16-byte chunks swizzled by row), each lane's
two 32-bit reads per weight row and 16-wide slice, the prmt that gathers the four bytes its A
fragment needs, and the integer E4M3 decode; it assembles each warpgroup's 64x16 A tile from the
lanes' registers by the PTX fragment layout (warp w of the warpgroup rows 16 w ..), reads the
B operand from shared memory through the matrix descriptor's fields (start address, leading and
stride byte offsets, as the PTX ISA's canonical layout ((8, m), (T, 2k)) : ((T, SBO), (1, LBO))
defines them for K-major without swizzle), and follows the factor handling (the first product
overwriting undefined accumulators, the sum kept in units of the current factor, zero blocks
skipped), the f32 tile of the epilogue and the stores, and split k's partial sums. It compares
the output with a float64 product of the dequantized weight: a wrong index gives an O(1) error.
The activations are f16 codes in every run (the kernel only moves them as 16-bit values; the
`bf16` runs check the weights' bf16 decode), and the epilogue reads the accumulators by their
place in the tile: the order of the accumulator registers (the PTX D fragment) is the kernel's
alone, checked by the GPU run.

    python3 scripts/gemm-fp8-wgmma-layout.py    # needs numpy; exits 1 on a mismatch

What it cannot check is the hardware's reading of the PTX (the fragment layouts and the
descriptor as documented); gpu_decode --gemm-only checks the kernel itself against the f32
product on the GPU. Keep it in step with the kernel when the kernel's layout changes.
"""
import importlib.util, os
import numpy as np

spec = importlib.util.spec_from_file_location("mma_layout", os.path.join(os.path.dirname(__file__), "gemm-fp8-layout.py"))
# The decode and prmt helpers of the mma.sync kernel's emulation, and its random problems.
base = importlib.util.module_from_spec(spec); spec.loader.exec_module(base)
split, prmt, word, f16_val = base.split, base.prmt, base.word, base.f16_val
rng = np.random.default_rng(2)

WG_N, WG_K = 128, 128
LD = WG_N + 4  # the epilogue tile's padded row

def desc_fields(addr):
    """The descriptor wg_desc builds: start address, LBO, SBO, in bytes (as encoded and decoded)."""
    d = ((addr & 0x3FFFF) >> 4) | ((128 >> 4) << 16) | ((2048 >> 4) << 32)
    return (d & 0x3FFF) << 4, ((d >> 16) & 0x3FFF) << 4, ((d >> 32) & 0x3FFF) << 4

def b_tile(smem, addr, NT):
    """wgmma's B operand (NT rows of 16 values of k, K-major, no swizzle) as the descriptor at
    `addr` lays it out: row r, value c at start + (r // 8) SBO + (r % 8) 16 + (c // 8) LBO + (c % 8) 2."""
    start, lbo, sbo = desc_fields(addr)
    B = np.zeros((NT, 16))
    for r in range(NT):
        for c in range(16):
            off = start + (r // 8) * sbo + (r % 8) * 16 + (c // 8) * lbo + (c % 8) * 2
            assert off + 2 <= len(smem)
            B[r, c] = f16_val(int(smem[off]) | int(smem[off + 1]) << 8)
    return B

def block(xcode, wbytes, scale, kind, NT, STAGES, bx, by, m, kb0, kb1):
    """One block (one warpgroup) over steps kb0..kb1: its f32 tile (NT rows by 128 columns)."""
    XS, WS = NT * WG_K * 2, WG_N * WG_K
    smem = np.zeros(STAGES * (XS + WS), dtype=np.uint8)
    m0, n0 = bx * NT, by * WG_N
    rows = min(NT, m - m0)
    acc = [np.full((64, NT), np.nan) for _ in range(2)]  # undefined until the first product
    fresh, fcur = True, 1.0
    for it in range(kb0, kb1):
        stage = (it - kb0) % STAGES
        xd, wd = stage * (XS + WS), stage * (XS + WS) + XS
        written = set()
        for t in range(128):  # load_x and load_w, thread by thread and copy by copy
            xc, xr = (t >> 3) & 15, t & 7
            for j in range(NT // 8):
                d = xd + xc * 128 + xr * 16 + j * 2048
                src = m0 + min(8 * j + xr, rows - 1)  # rows past m re-read the last one
                assert d not in written; written.add(d)
                smem[d:d + 16] = xcode[src, it * 128 + xc * 8: it * 128 + xc * 8 + 8].view(np.uint8)
            wr, wc = t >> 3, t & 7
            for j in range(WG_N // 16):
                d = wd + wr * 128 + ((wc ^ (wr & 7)) << 4) + j * 2048
                assert d not in written; written.add(d)
                r = wr + 16 * j
                smem[d:d + 16] = wbytes[n0 + r, it * 128 + wc * 16: it * 128 + wc * 16 + 16]
        assert len(written) == (NT * 16 + WG_N * 8)  # every chunk of the stage, once
        f = scale[by, it]
        if f == 0: continue
        rs = fcur / f; fcur = f
        acc = [a * rs for a in acc]
        for h in range(2):
            for j in range(4):
                s = 4 * h + j
                Bt = b_tile(smem, xd + s * 256, NT)
                for ft in range(2):
                    A = np.full((64, 16), np.nan)
                    for t in range(128):  # decode: every thread's fragment of this slice and tile
                        warp, lane = t >> 5, t & 31
                        g, t4 = lane >> 2, lane & 3
                        sel = 0x7362 if t4 & 1 else 0x5140
                        regs = [0] * 4
                        for half in range(2):
                            r = ft * 64 + warp * 16 + half * 8 + g
                            p = wd + r * 128 + ((s ^ g) << 4)
                            lo, hi = word(smem, p + 4 * (t4 >> 1)), word(smem, p + 8 + 4 * (t4 >> 1))
                            odd, even = split(prmt(lo, hi, sel), kind)
                            regs[half], regs[2 + half] = even, odd
                        # mma.sync's A layout, within the warp's 16 rows of the 64.
                        R = warp * 16
                        A[R + g, 2 * t4], A[R + g, 2 * t4 + 1] = regs[0]
                        A[R + g + 8, 2 * t4], A[R + g + 8, 2 * t4 + 1] = regs[1]
                        A[R + g, 2 * t4 + 8], A[R + g, 2 * t4 + 9] = regs[2]
                        A[R + g + 8, 2 * t4 + 8], A[R + g + 8, 2 * t4 + 9] = regs[3]
                    assert not np.isnan(A).any()
                    prod = A @ Bt.T
                    acc[ft] = prod if (fresh and j == 0 and h == 0) else acc[ft] + prod
            fresh = False if h == 0 else fresh
    # The epilogue: each thread's accumulators (the C layout, repeated along NT) into the tile.
    tile = np.full(NT * LD, np.nan)
    for ft in range(2):
        for t in range(128):
            warp, lane = t >> 5, t & 31
            g, t4 = lane >> 2, lane & 3
            for j in range(NT // 8):
                for half in range(2):
                    c, r = ft * 64 + warp * 16 + half * 8 + g, 8 * j + 2 * t4
                    for e in range(2):
                        v = 0.0 if fresh else acc[ft][warp * 16 + half * 8 + g, r + e] * fcur
                        assert np.isnan(tile[(r + e) * LD + c]); tile[(r + e) * LD + c] = v
    assert (NT * LD) * 4 <= STAGES * (XS + WS)
    return tile, rows

def run(m, n, k, NT, STAGES, kind, splits=1):
    wbytes, scale, xcode, ref = base.problem(m, n, k, rng)
    kb = k // 128
    y = np.full((m, n), np.nan)
    part = np.zeros((splits, m, n))
    per = -(-kb // splits)
    for bx in range(-(-m // NT)):
        for by in range(n // WG_N):
            for z in range(splits):
                tile, rows = block(xcode, wbytes, scale, kind, NT, STAGES, bx, by, m, z * per, min(kb, z * per + per))
                m0, n0 = bx * NT, by * WG_N
                # The stores: 8 (or 4 for partial sums) consecutive columns a thread a time.
                w = 8 if splits == 1 else 4
                for i in range(rows * (WG_N // w)):
                    r, c = i // (WG_N // w), w * (i % (WG_N // w))
                    v = tile[r * LD + c: r * LD + c + w]
                    assert not np.isnan(v).any()
                    if splits == 1: y[m0 + r, n0 + c: n0 + c + w] = v
                    else: part[z, m0 + r, n0 + c: n0 + c + w] = v
    if splits > 1: y = part.sum(0)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    print(m, n, k, f"NT={NT} STAGES={STAGES} splits={splits}", kind, "max rel err", err)
    assert err < 1e-9

run(20, 128, 256, 32, 4, 'bf16')
run(40, 256, 384, 32, 4, 'f16')
run(64, 128, 256, 64, 3, 'bf16')
run(100, 128, 512, 128, 2, 'f16')
# The o3 forms' stages (gemm_fp8_w32o3, w64o3).
run(40, 128, 512, 32, 3, 'bf16')
run(64, 128, 384, 64, 2, 'f16')
# A last block of rows partly empty, a split with fewer steps, a split whose one block has factor 0
# (its sum is the epilogue's zero).
run(70, 128, 640, 64, 3, 'bf16', splits=3)
run(9, 128, 384, 32, 4, 'f16', splits=3)
print("ok")
