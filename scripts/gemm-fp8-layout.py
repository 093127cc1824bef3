#!/usr/bin/env python3
"""A lane-by-lane emulation of `gemm_fp8` (src/model/cuda/fp8.cu), the FP8-weight GEMM on tensor
cores, for checking its data layout without a GPU.

It replays what each lane of each warp does: the swizzled shared-memory writes of a stage, the
16-byte reads of its weight and activation chunks, the integer decode of E4M3 bytes into 16-bit
pairs (and the exact multiply that undoes the exponent offset), the `prmt` regrouping of the
activations, and the per-step factor handling (the sum kept in units of the current factor);
for the forms with two warp groups along k, the second group's hand-over through shared memory,
and for split k, the partial sums or the cluster's padded tiles and each CTA's share of their
rows (every index checked to stay inside the stages' shared memory and to be taken once).
It assembles each mma.sync m16n8k16 operand from the lanes' registers by the PTX fragment
layout, and compares the block's output with a float64 product of the dequantized weight. A
wrong index anywhere gives an O(1) error. Every finite E4M3 code is checked in every byte
position of a word too.

    python3 scripts/gemm-fp8-layout.py      # needs numpy; prints the errors, exits 1 on a mismatch

Keep it in step with the kernel when the kernel's layout changes.
"""
import numpy as np, struct
rng = np.random.default_rng(1)

def e4m3_val(b):
    s = -1.0 if b & 0x80 else 1.0
    e = (b >> 3) & 15; m = b & 7
    if e == 0: return s * m / 8 * 2.0**-6
    return s * (1 + m / 8) * 2.0**(e - 7)

def bf16_val(h):
    return struct.unpack('<f', struct.pack('<I', (h & 0xFFFF) << 16))[0]

def f16_val(h):
    return float(np.frombuffer(struct.pack('<H', h & 0xFFFF), dtype=np.float16)[0])

def split(w, kind):
    if kind == 'bf16':
        o = (w & 0x80008000) | ((w >> 4) & 0x07F007F0)
        e = ((w << 8) & 0x80008000) | ((w << 4) & 0x07F007F0)
        f = lambda h: bf16_val(h) * 2.0**120
    else:
        o = (w & 0x80008000) | ((w >> 1) & 0x3F803F80)
        e = ((w << 8) & 0x80008000) | ((w << 7) & 0x3F803F80)
        f = lambda h: f16_val(h) * 2.0**8
    o &= 0xFFFFFFFF; e &= 0xFFFFFFFF
    return (f(o & 0xFFFF), f(o >> 16)), (f(e & 0xFFFF), f(e >> 16))

def prmt(lo, hi, sel):
    bs = [(lo >> (8*i)) & 255 for i in range(4)] + [(hi >> (8*i)) & 255 for i in range(4)]
    return sum(bs[(sel >> (4*i)) & 7] << (8*i) for i in range(4))

# Every finite code decodes exactly, in each byte position of a word.
for kind in ['bf16', 'f16']:
    for b in range(256):
        if b & 0x7F == 0x7F: continue
        for pos in range(4):
            w = b << (8*pos)
            o, e = split(w, kind)
            vals = [e[0], o[0], e[1], o[1]]  # bytes 0,1,2,3
            for p in range(4):
                want = e4m3_val(b) if p == pos else 0.0
                assert vals[p] == want or (want == 0 and vals[p] == 0), (kind, hex(b), pos, p, vals[p], want)
print("decode ok")

STAGES, LD = 3, 136  # G8_STAGES, and the cluster tile's padded row (fp8.cu)

def word(buf, off):
    return int(buf[off]) | int(buf[off+1]) << 8 | int(buf[off+2]) << 16 | int(buf[off+3]) << 24

def frag(C, lane):
    """A lane's four accumulator values of a 16x8 tile (mma.sync's C layout)."""
    g, t4 = lane >> 2, lane & 3
    return [C[g, 2*t4], C[g, 2*t4+1], C[g+8, 2*t4], C[g+8, 2*t4+1]]

def cta(xcode, wbytes, scale, kind, MT, WM, KW, bx, m0, rows, kb0, kb1):
    """One CTA's warps over steps kb0..kb1: each warp's 16x8 sums by (warp, mt, nt), in units of
    the last factor, and that factor."""
    ROWS = 16*MT*WM
    # Every warp's sums start at zero (a CTA whose every block has factor 0 still stores them).
    acc = {(warp, mt, nt): np.zeros((16, 8)) for warp in range(4*WM*KW) for mt in range(MT) for nt in range(4)}
    fcur = 1.0
    n0 = bx*128
    for it in range(kb0, kb1):
        f = scale[bx, it]
        xs = np.zeros(ROWS*256, dtype=np.uint8); ws = np.zeros(128*128, dtype=np.uint8)
        # Each thread's unrolled copies, as the kernel places them: chunk t % 16 of activation
        # rows t / 16 + (NT / 16) j (rows past m read the last row), chunk t % 8 of weight rows
        # t / 8 + (NT / 8) j; every 16-byte chunk of the stage written once.
        NT = 128*WM*KW
        xw = np.zeros(ROWS*16, dtype=int); ww = np.zeros(128*8, dtype=int)
        for t in range(NT):
            xc, xr = t & 15, t >> 4
            xdst = xr*256 + ((xc ^ (xr & 1)) << 4)
            for j in range(ROWS*16 // NT):
                d = xdst + j*256*(NT // 16)
                r = min(xr + (NT // 16)*j, rows - 1)
                xs[d:d+16] = xcode[m0+r, it*128 + xc*8: it*128 + xc*8 + 8].view(np.uint8)
                xw[d // 16] += 1
            wc, wrow = t & 7, t >> 3
            wdst = wrow*128 + ((wc ^ ((wrow & 1) << 2)) << 4)
            for j in range(128*8 // NT):
                d = wdst + j*128*(NT // 8)
                r = wrow + (NT // 8)*j
                ws[d:d+16] = wbytes[n0+r, it*128 + wc*16: it*128 + wc*16 + 16]
                ww[d // 16] += 1
        assert (xw == 1).all() and (ww == 1).all()
        if f == 0: continue
        rs = fcur / f; fcur = f
        for key in acc: acc[key] = acc[key] * rs
        for warp in range(4*WM*KW):
            wn = warp & 3
            wk = warp >> 2 if KW == 2 else 0
            wr = 0 if KW == 2 else (warp >> 2)*16*MT
            for qi in range(2 // KW):
                q = wk if KW == 2 else qi
                B = {(nt, s): np.zeros((16, 8)) for nt in range(4) for s in range(4)}
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    for nt in range(4):
                        r = wn*32 + nt*8 + g
                        base = r*128 + (((4*q + t4) ^ ((r & 1) << 2)) << 4)
                        for s in range(4):
                            o, e = split(word(ws, base + 4*s), kind)
                            Bm = B[(nt, s)]
                            Bm[2*t4, g], Bm[2*t4+1, g] = o
                            Bm[2*t4+8, g], Bm[2*t4+9, g] = e
                for mt in range(MT):
                    for s in range(4):
                        A = np.zeros((16, 16))
                        for lane in range(32):
                            g, t4 = lane >> 2, lane & 3
                            r0 = wr + mt*16 + g; r1 = r0 + 8
                            c0 = ((8*q + 2*t4) ^ (r0 & 1)) << 4; c1 = ((8*q + 2*t4 + 1) ^ (r0 & 1)) << 4
                            u = []
                            for rr in (r0, r1):
                                lo = [word(xs, rr*256 + c0 + 4*i) for i in range(4)]
                                hi = [word(xs, rr*256 + c1 + 4*i) for i in range(4)]
                                u.append(lo + hi)
                            a = [prmt(u[0][2*s], u[0][2*s+1], 0x7632), prmt(u[1][2*s], u[1][2*s+1], 0x7632),
                                 prmt(u[0][2*s], u[0][2*s+1], 0x5410), prmt(u[1][2*s], u[1][2*s+1], 0x5410)]
                            h = f16_val
                            A[g, 2*t4], A[g, 2*t4+1] = h(a[0] & 0xFFFF), h(a[0] >> 16)
                            A[g+8, 2*t4], A[g+8, 2*t4+1] = h(a[1] & 0xFFFF), h(a[1] >> 16)
                            A[g, 2*t4+8], A[g, 2*t4+9] = h(a[2] & 0xFFFF), h(a[2] >> 16)
                            A[g+8, 2*t4+8], A[g+8, 2*t4+9] = h(a[3] & 0xFFFF), h(a[3] >> 16)
                        for nt in range(4):
                            key = (warp, mt, nt)
                            acc[key] = acc[key] + A @ B[(nt, s)]
    if KW == 2:
        # The second group's sums through shared memory, by the kernel's index, to the first's.
        red = {}
        for (warp, mt, nt), C in acc.items():
            if warp >> 2 == 1:
                for lane in range(32):
                    i = (((warp & 3)*MT + mt)*4 + nt)*32 + lane
                    assert i not in red and (i + 1)*16 <= STAGES*(ROWS*256 + 16384)
                    red[i] = frag(C, lane)
        for (warp, mt, nt), C in list(acc.items()):
            if warp >> 2 == 0:
                D = C.copy()
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    o = red.pop((((warp & 3)*MT + mt)*4 + nt)*32 + lane)
                    D[g, 2*t4] += o[0]; D[g, 2*t4+1] += o[1]; D[g+8, 2*t4] += o[2]; D[g+8, 2*t4+1] += o[3]
                acc[(warp, mt, nt)] = D
        assert not red
        acc = {key: C for key, C in acc.items() if key[0] >> 2 == 0}
    return acc, fcur

def problem(m, n, k, rng):
    """Random E4M3 weight bytes [n, k] (no NaN codes), their 128x128 block factors (one block
    zero), activations [m, k] as f16 codes, and the float64 product of the dequantized weight."""
    wbytes = rng.integers(0, 256, size=(n, k), dtype=np.uint8)
    wbytes[(wbytes & 0x7F) == 0x7F] = 0x3C
    kb = k // 128
    scale = rng.uniform(0.5, 2.0, size=(n // 128, kb)); scale[0, 1 % kb] = 0.0
    x = rng.standard_normal((m, k)).astype(np.float32)
    # The activations as f16 codes: the kernels only move them as 16-bit lanes, so one format
    # stands for both (the weights' decode is checked in each).
    xv = x.astype(np.float16).astype(np.float64)
    xcode = x.astype(np.float16).view(np.uint16)
    table = np.array([e4m3_val(b) if b & 0x7F != 0x7F else 0 for b in range(256)])
    ref = xv @ (table[wbytes] * np.repeat(np.repeat(scale, 128, 0), 128, 1)).T
    return wbytes, scale, xcode, ref

def run(m, n, k, MT, kind, WM=1, KW=1, splits=1, cluster=False):
    ROWS = 16*MT*WM
    wbytes, scale, xcode, ref = problem(m, n, k, rng)
    kb = k // 128
    y = np.full((m, n), np.nan)
    per = -(-kb // splits)
    for bx in range(n // 128):
        for by in range((m + ROWS - 1) // ROWS):
            n0, m0 = bx*128, by*ROWS
            rows = min(ROWS, m - m0)
            # Each split's output tile: the plain epilogue's stores, or the cluster's tile in
            # shared memory (rows padded to LD floats).
            tiles = []
            for z in range(splits):
                acc, fcur = cta(xcode, wbytes, scale, kind, MT, WM, KW, bx, m0, rows, z*per, min(kb, z*per + per))
                t = np.full(ROWS*LD, np.nan) if cluster else np.zeros((ROWS, 128))
                for (warp, mt, nt), C in acc.items():
                    wr = 0 if KW == 2 else (warp >> 2)*16*MT
                    for lane in range(32):
                        g, t4 = lane >> 2, lane & 3
                        r0 = wr + mt*16 + g; r1 = r0 + 8
                        c = (warp & 3)*32 + nt*8 + 2*t4
                        v = [a * fcur for a in frag(C, lane)]
                        if cluster:
                            assert (r1*LD + c + 2)*4 <= STAGES*(ROWS*256 + 16384)
                            t[r0*LD + c], t[r0*LD + c + 1], t[r1*LD + c], t[r1*LD + c + 1] = v
                        else:
                            if r0 < rows: t[r0, c], t[r0, c + 1] = v[0], v[1]
                            if r1 < rows: t[r1, c], t[r1, c + 1] = v[2], v[3]
                tiles.append(t)
            if cluster:
                # CTA z adds up rows z, z + splits, ... of every CTA's tile, in split order.
                seen = set()
                for z in range(splits):
                    mine = (ROWS - 1 - z) // splits + 1 if z < ROWS else 0
                    for i in range(mine * 32):
                        r, c = z + splits*(i // 32), 4*(i % 32)
                        if r >= rows: continue
                        assert (r, c) not in seen; seen.add((r, c))
                        tot = np.zeros(4)
                        for q in range(splits):
                            tot += tiles[q][r*LD + c: r*LD + c + 4]
                        y[m0 + r, n0 + c: n0 + c + 4] = tot
                assert len(seen) == rows * 32
            else:
                y[m0:m0 + rows, n0:n0 + 128] = sum(t[:rows] for t in tiles)
    err = np.abs(y - ref).max() / np.abs(ref).max()
    print(m, n, k, f"MT={MT} WM={WM} KW={KW} splits={splits}{' cluster' if cluster else ''}", kind, "max rel err", err)
    assert err < 1e-9

if __name__ == '__main__':
    run(20, 128, 256, 2, 'bf16')
    run(9, 256, 128, 1, 'f16')
    run(50, 128, 384, 4, 'bf16')
    # Warps along m (gemm_fp8_m2x2, m2x4, m4x2): rows past one block's, and a partial last block.
    run(70, 128, 256, 2, 'bf16', WM=2)
    run(100, 128, 256, 2, 'f16', WM=4)
    run(150, 128, 256, 4, 'bf16', WM=2)
    # Two warp groups along k (gemm_fp8_m1k2, m2k2, m4k2), the zero factor block in the first's half.
    run(20, 256, 384, 1, 'bf16', KW=2)
    run(40, 128, 256, 2, 'f16', KW=2)
    run(70, 128, 256, 4, 'bf16', KW=2)
    # Split k with partial sums (gemm_fp8_reduce), and as one cluster (gemm_fp8_m<MT>c, m1k2c, m2k2c):
    # more splits than a block has rows, a last split with fewer steps, a split whose one block has
    # factor 0.
    run(20, 128, 640, 2, 'bf16', splits=3)
    run(9, 128, 640, 1, 'bf16', splits=3, cluster=True)
    run(36, 256, 384, 3, 'f16', splits=3, cluster=True)
    run(30, 128, 512, 2, 'bf16', KW=2, splits=4, cluster=True)
    run(5, 128, 1024, 1, 'f16', KW=2, splits=8, cluster=True)
