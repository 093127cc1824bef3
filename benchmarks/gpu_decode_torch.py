# PyTorch side of benchmarks/gpu_decode.rs: the same checkpoint, the same shapes, in one run.
# argv: DIR PROMPTS(comma) BATCHES(comma) NEW_TOKENS. Prints one JSON object.
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM

d, prompts, batches, new = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prompts = [int(x) for x in prompts.split(",") if x]
batches = [int(x) for x in batches.split(",") if x]
model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
vocab = model.config.vocab_size


def ids(t):
    return torch.tensor([[(i * 7919 + 13) % (vocab - 1) for i in range(t)]], device="cuda")


out = {"torch": torch.__version__, "prefill": {}, "attention": {}, "decode": {}}
with torch.inference_mode():
    # Causal attention alone at the same shape as gpu_decode's attention arm: best of 3 runs of 5.
    for p in prompts:
        q, k, v = (torch.randn(1, 32, p, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.cuda.synchronize()
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(5):
                torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t) / 5)
        out["attention"][str(p)] = {"ms": round(best * 1e3, 3)}
        del q, k, v
    for p in prompts:
        x = ids(p)
        model(x)
        torch.cuda.synchronize()
        best = 1e9
        for _ in range(3):
            t = time.perf_counter()
            model(x)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        out["prefill"][str(p)] = {"ms": round(best * 1e3, 2), "tokens_per_s": round(p / best, 2)}
    x = ids(512)
    # The prefill inside generate, timed apart and subtracted.
    model(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    model(x)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t
    for b in batches:
        kw = dict(do_sample=True, top_p=0.95, temperature=1.0, num_return_sequences=b, pad_token_id=0)
        model.generate(x, max_new_tokens=4, min_new_tokens=4, **kw)
        torch.cuda.synchronize()
        t = time.perf_counter()
        model.generate(x, max_new_tokens=new, min_new_tokens=new, **kw)
        torch.cuda.synchronize()
        s = time.perf_counter() - t - prefill_s
        out["decode"][str(b)] = {"ms_per_step": round(s * 1e3 / new, 2), "tokens_per_s": round(b * new / s, 2)}
print(json.dumps(out))
