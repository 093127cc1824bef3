"""An independent reference for subgoal's decoder: a Llama forward pass in numpy, written from
the architecture's definition, over the tensors of a GGUF file as llama.cpp's own Python package
(`gguf`) reads and dequantizes them. Nothing here comes from subgoal.

    python llama_forward.py MODEL.gguf ID ID ...   ->  JSON list of the next-token logits (float)

RoPE: llama.cpp stores Llama's q/k rows so that rotation acts on adjacent pairs (2i, 2i+1).
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types[0].name == "STRING" else v[0].item()


def main():
    path, ids = sys.argv[1], [int(x) for x in sys.argv[2:]]
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    get = lambda k: field(r, f"{arch}.{k}")
    hidden, layers = get("embedding_length"), get("block_count")
    heads, kv_heads = get("attention.head_count"), get("attention.head_count_kv")
    eps, theta = get("attention.layer_norm_rms_epsilon"), get("rope.freq_base")
    hd = hidden // heads
    w = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        w[t.name] = a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim > 1 else a.reshape(-1)
    out_w = w.get("output.weight", w["token_embd.weight"])

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    n = len(ids)
    pos = np.arange(n)[:, None]
    freqs = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos * freqs[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # x: (n, h, hd), pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    x = w["token_embd.weight"][ids]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for l in range(layers):
        p = lambda name: w[f"blk.{l}.{name}.weight"]
        h = rms(x, p("attn_norm"))
        q = rope((h @ p("attn_q").T).reshape(n, heads, hd))
        k = rope((h @ p("attn_k").T).reshape(n, kv_heads, hd))
        v = (h @ p("attn_v").T).reshape(n, kv_heads, hd)
        rep = heads // kv_heads
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = np.einsum("hqk,khd->qhd", att, v).reshape(n, hidden)
        x = x + y @ p("attn_output").T
        h = rms(x, p("ffn_norm"))
        g, u = h @ p("ffn_gate").T, h @ p("ffn_up").T
        x = x + ((g / (1 + np.exp(-g))) * u) @ p("ffn_down").T
    logits = rms(x[-1], w["output_norm.weight"]) @ out_w.T
    json.dump([float(z) for z in logits], sys.stdout)


if __name__ == "__main__":
    main()
