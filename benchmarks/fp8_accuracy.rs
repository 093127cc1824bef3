//! FP8 against dense weights on the test model (SmolLM2-135M-Instruct, its GGUF written as a bf16
//! Hugging Face checkpoint, the form DeepSeek-Prover-V2-7B ships in, and as an f32 one), on the
//! CPU, every arm in one run:
//! - greedy texts on 16 prompts: bf16 vs f32 vs FP8 weights vs FP8 weights + FP8 KV cache, the
//!   FP8 weights converted from the bf16 checkpoint at load (agreement; where a text parts, the
//!   bf16 model's logit gap between the two tokens at that position, small meaning a near-tie);
//! - next-token negative log-likelihood over DeepSeek-Prover-V2's proofs in
//!   `benchmarks/data` (teacher forced, every position scored in one paged step);
//! - batch-1 decode tokens/s and weight bytes, side by side.
//!
//! The `_a8` arms (`--arms fp8_weights_a8,fp8_weights_a8_kv`, not run by default) round each
//! product's activations to E4M3 per 1×128 tile first, the arithmetic of CUDA's FP8 GEMM through
//! cuBLASLt (`gemm_fp8_lt`).
//!
//! `cargo bench --bench fp8_accuracy -- [--proofs N] [--tokens N] [--arms fp8_weights,fp8_weights_kv,…]`
//! prints one JSON object.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::engine::EngineOptions;
use subgoal::model::paged::{Batch, KvFormat, PagedCache};
use subgoal::model::{GenRequest, Generator, Prompt, SamplingParams};

#[path = "gpu_common.rs"]
#[allow(dead_code)]
mod gpu_common;

const PROMPTS: [&str; 16] = [
    "Theorem: for every natural number n, n + 0 = n. Proof:",
    "import Mathlib\n\ntheorem add_comm' (a b : ℕ) : a + b = b + a := by\n",
    "The sum of the first n odd numbers is",
    "Lemma: if p is prime and p divides ab, then",
    "theorem mathd_algebra_10 : abs ((120 : ℝ) / 100 * 30 - 130 / 100 * 20) = 10 := by\n  norm_num",
    "Let x be a real number with x^2 = 4. Then",
    "To prove that the square root of 2 is irrational, we",
    "In Lean 4, the tactic `linarith` closes goals that",
    "Write a short proof that 7 divides 2^21 - 1.",
    "have h₀ : 0 < x := by",
    "The following Lean code proves that every group of order 2 is abelian:",
    "Step 1: expand (a + b)^2 to get",
    "Induction on n. Base case: n = 0, where",
    "Q: What is 17 * 23? A:",
    "The Cauchy-Schwarz inequality states that",
    "Fermat's little theorem says that for a prime p,",
];

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn proofs(limit: usize) -> Vec<String> {
    let corpus = subgoal::datasets::solutions_corpus().expect("the proofs corpus in benchmarks/data");
    corpus.into_iter().take(limit).map(|(_, code)| code).collect()
}

fn load(dir: &std::path::Path, dtype: &str, kv_fp8: bool, dense_layers: &[i64]) -> Embedded {
    let opts = EmbeddedOptions {
        dtype: Some(dtype.into()),
        fp8_dense_layers: dense_layers.to_vec(),
        engine: EngineOptions { kv_fp8, cache_mb: Some(256), ..Default::default() },
        ..Default::default()
    };
    Embedded::load(dir, &opts).expect("load")
}

/// Greedy continuations of every prompt, as token ids.
fn greedy(m: &Embedded, tokens: usize) -> Vec<Vec<u32>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    PROMPTS
        .iter()
        .map(|p| {
            let params = SamplingParams {
                n: 1,
                temperature: 0.0,
                top_p: 1.0,
                max_new_tokens: tokens,
                stop: vec![],
                seed: Some(0),
            };
            let req = GenRequest { prompts: vec![Prompt::Text((*p).into())], params };
            let c = rt.block_on(m.generate(&req)).expect("generate").remove(0).remove(0);
            m.encode_prompt(&Prompt::Text(c.text)).expect("encode")
        })
        .collect()
}

/// Mean negative log-likelihood per token of `ids[1..]` given the prefix, in one paged step
/// whose every token is its own one-token segment over the shared blocks.
fn nll(m: &Embedded, ids: &[u32], format: KvFormat) -> (f64, usize) {
    nll_with(m, ids, format, true)
}

fn nll_with(m: &Embedded, ids: &[u32], format: KvFormat, rotate: bool) -> (f64, usize) {
    let model = m.model();
    let bs = 16;
    let blocks: Vec<u32> = (0..ids.len().div_ceil(bs) as u32).collect();
    let cache = PagedCache::new(&model.cfg, blocks.len(), bs, format, &Device::Cpu).expect("cache");
    let cache = if rotate { cache } else { cache.without_rotation() };
    // The proof as one prompt chunk, every position's logits returned: its keys and values are
    // written to the cache (in FP8 where the cache is) and read back by every query, as decode
    // rows would read them, with the sequence's cache gathered once per layer instead of once per
    // position.
    let mut batch = Batch::default();
    batch.push(&ids[..ids.len() - 1], 0, blocks, true);
    let logits: Tensor = model.forward_paged_every(&batch, &cache).expect("forward");
    let lp = candle_nn::ops::log_softmax(&logits, 1).expect("log_softmax").to_vec2::<f32>().expect("vec");
    let total: f64 = lp.iter().zip(&ids[1..]).map(|(row, &t)| -(row[t as usize] as f64)).sum();
    (total, ids.len() - 1)
}

fn main() {
    let n_proofs = arg("--proofs", 221);
    let tokens = arg("--tokens", 48);
    let dir = tempfile::tempdir().expect("tempdir");
    let dense = dir.path().join("dense");
    subgoal::model::convert::gguf_to_hf(&subgoal::model::test_model_path(), &dense, DType::F32).expect("convert");
    if std::env::args().any(|a| a == "--shape-7b") {
        shape_7b(arg("--layers", 2));
        return;
    }
    if std::env::args().any(|a| a == "--kv-study") {
        // The FP8 cache alone (f32 weights), with and without the Hadamard rotation, on the
        // first 256 tokens of each proof.
        let m = load(&dense, "f32", false, &[]);
        let corpus = proofs(n_proofs);
        let mut out = serde_json::Map::new();
        for (name, format, rotate) in [
            ("f32_cache", KvFormat::Dense(DType::F32), false),
            ("fp8_cache", KvFormat::Fp8, false),
            ("fp8_cache_rotated", KvFormat::Fp8, true),
        ] {
            let (mut total, mut count) = (0.0, 0usize);
            for code in &corpus {
                let mut ids = m.encode_prompt(&Prompt::Text(code.clone())).expect("encode");
                ids.truncate(256);
                let (t, c) = nll_with(&m, &ids, format, rotate);
                total += t;
                count += c;
            }
            out.insert(name.into(), json!({"nll_per_token": total / count as f64, "tokens": count}));
        }
        println!("{}", serde_json::to_string_pretty(&json!({"kv_study": out, "proofs": corpus.len()})).unwrap());
        return;
    }
    // The reference is the model as a bf16 checkpoint ships it (DeepSeek-Prover-V2-7B's form): the
    // GGUF's weights rounded to bf16, computed in f32. The FP8 arms convert that checkpoint at
    // load, as a user's `--dtype fp8` does; f32 (the GGUF exactly) shows what bf16 itself costs.
    let bf16_dir = dir.path().join("bf16");
    subgoal::model::convert::gguf_to_hf(&subgoal::model::test_model_path(), &bf16_dir, DType::BF16).expect("convert");
    // `_dense_ends`: the first and last layers' projections kept in the compute type
    // (`--fp8-dense-layers 0,-1`), the layers FP8 costs most on this small model.
    let ends: &[i64] = &[0, -1];
    // `_a8`: the activations rounded to E4M3 per 1×128 tile before each FP8 product, the
    // arithmetic of the FP8 GEMM through cuBLASLt (`fp8::set_activation_tiles`); run only when
    // `--arms` names them.
    let arms = [
        ("bf16", &bf16_dir, "f32", false, &[][..], false),
        ("f32", &dense, "f32", false, &[], false),
        ("fp8_weights", &bf16_dir, "fp8", false, &[], false),
        ("fp8_weights_kv", &bf16_dir, "fp8", true, &[], false),
        ("fp8_weights_dense_ends", &bf16_dir, "fp8", false, ends, false),
        ("fp8_weights_kv_dense_ends", &bf16_dir, "fp8", true, ends, false),
        ("fp8_weights_a8", &bf16_dir, "fp8", false, &[], true),
        ("fp8_weights_a8_kv", &bf16_dir, "fp8", true, &[], true),
    ];
    // `--arms a,b`: a subset (bf16 always runs: the others are measured against it).
    let only: Option<Vec<String>> = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "--arms")
        .map(|w| w[1].split(',').map(str::to_string).collect());
    let models: Vec<(&str, Embedded, KvFormat, bool)> = arms
        .iter()
        .filter(|(name, .., a8)| *name == "bf16" || only.as_ref().map_or(!a8, |o| o.iter().any(|x| x == name)))
        .map(|(name, path, dtype, kv, ends, a8)| {
            (*name, load(path, dtype, *kv, ends), KvFormat::of(DType::F32, *kv), *a8)
        })
        .collect();
    // Each model with its activation rounding on or off.
    let arm = |a8: bool| subgoal::model::fp8::set_activation_tiles(a8);

    // Greedy agreement.
    let texts: Vec<Vec<Vec<u32>>> = models
        .iter()
        .map(|(_, m, _, a8)| {
            arm(*a8);
            greedy(m, tokens)
        })
        .collect();
    arm(false);
    let reference = &models[0].1;
    let mut greedy_out = serde_json::Map::new();
    for (a, (name, ..)) in models.iter().enumerate().skip(1) {
        let mut same = 0;
        let mut parted = Vec::new();
        for (p, (x, y)) in PROMPTS.iter().zip(texts[0].iter().zip(&texts[a])) {
            match x.iter().zip(y).position(|(u, v)| u != v) {
                None if x.len() == y.len() => same += 1,
                None => same += 1,
                Some(k) => {
                    let mut prefix = reference.encode_prompt(&Prompt::Text((*p).into())).expect("encode");
                    prefix.extend_from_slice(&x[..k]);
                    let l = reference.next_logits(&prefix).expect("logits");
                    parted.push(json!({"prompt": p, "at_token": k,
                        "dense_logit_gap": l[x[k] as usize] - l[y[k] as usize]}));
                }
            }
        }
        greedy_out.insert(name.to_string(), json!({"identical": same, "of": PROMPTS.len(), "parted": parted}));
    }

    // Negative log-likelihood over the proofs.
    let corpus = proofs(n_proofs);
    let mut nll_out = serde_json::Map::new();
    let mut base = 0.0;
    for (i, (name, m, format, a8)) in models.iter().enumerate() {
        arm(*a8);
        let (mut total, mut count) = (0.0, 0usize);
        let started = Instant::now();
        for code in &corpus {
            let mut ids = m.encode_prompt(&Prompt::Text(code.clone())).expect("encode");
            ids.truncate(1024);
            if ids.len() < 2 {
                continue;
            }
            let (t, c) = nll(m, &ids, *format);
            total += t;
            count += c;
        }
        let mean = total / count.max(1) as f64;
        if i == 0 {
            base = mean;
        }
        nll_out.insert(
            name.to_string(),
            json!({"nll_per_token": mean, "tokens": count,
            "relative_increase": if i == 0 { 0.0 } else { mean / base - 1.0 },
            "seconds": started.elapsed().as_secs_f64()}),
        );
    }

    if let Some(f32_nll) = nll_out.get("f32").and_then(|v| v["nll_per_token"].as_f64()) {
        for (_, v) in nll_out.iter_mut() {
            let mean = v["nll_per_token"].as_f64().unwrap_or(f32_nll);
            v["relative_to_f32"] = json!(mean / f32_nll - 1.0);
        }
    }

    // Batch-1 decode speed.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut speed = serde_json::Map::new();
    for (name, m, _, a8) in &models {
        arm(*a8);
        let params =
            SamplingParams { n: 1, temperature: 0.0, top_p: 1.0, max_new_tokens: 64, stop: vec![], seed: Some(0) };
        let req = GenRequest { prompts: vec![Prompt::Text("Proof:".into())], params };
        rt.block_on(m.generate(&req)).expect("warm up");
        let started = Instant::now();
        let c = rt.block_on(m.generate(&req)).expect("generate").remove(0).remove(0);
        let s = started.elapsed().as_secs_f64();
        speed.insert(name.to_string(), json!({"tokens_per_s": c.completion_tokens as f64 / s}));
    }
    let base_speed = speed["bf16"]["tokens_per_s"].as_f64().unwrap_or(1.0);
    for (_, v) in speed.iter_mut() {
        let t = v["tokens_per_s"].as_f64().unwrap_or(0.0);
        v["vs_bf16"] = json!(t / base_speed);
    }
    let out = json!({
        "bench": "fp8_accuracy",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF: f32 exactly, and rounded to a bf16 checkpoint)",
        "reference": "bf16 (weights rounded to bf16, computed in f32); the FP8 arms are converted from it",
        "device": "cpu",
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "greedy_tokens": tokens,
        "greedy_vs_bf16": greedy_out,
        "proofs": corpus.len(),
        "nll": nll_out,
        "decode_batch1": speed,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

/// DeepSeek-Prover-V2-7B's shape (hidden 4096, 32 heads of 128, intermediate 11008, vocabulary
/// 102400) with `layers` layers of random weights, dense f32 and FP8 from the same tensors: the
/// cosine of their next-token logits over a 64-token prompt and 16 decode steps (the dense
/// model's greedy tokens fed to both). Beside it, `one_projection`: what the formats cost one
/// projection alone, the floor every layer's seven projections add to.
/// One 4096 × 4096 projection of the 7B shape's random weights (normal, std 0.02) on 8 random
/// rows: the cosine of its outputs with the weights in FP8 (E4M3, 128 × 128 block factors) and in
/// bf16 against f32, and the weights' relative error in each.
fn one_projection() -> serde_json::Value {
    const N: usize = 4096;
    const ROWS: usize = 8;
    // A fixed stream of normal draws (Box-Muller over a 64-bit LCG), so every run sees the same.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut normal = move || (-2.0 * uniform().ln()).sqrt() as f32 * (std::f64::consts::TAU * uniform()).cos() as f32;
    let w: Vec<f32> = (0..N * N).map(|_| 0.02 * normal()).collect();
    let x: Vec<f32> = (0..ROWS * N).map(|_| normal()).collect();
    let dense = |w: &[f32]| -> Vec<f32> {
        (0..ROWS)
            .flat_map(|r| {
                let xr = &x[r * N..(r + 1) * N];
                (0..N).map(move |o| w[o * N..(o + 1) * N].iter().zip(xr).map(|(a, b)| a * b).sum::<f32>())
            })
            .collect()
    };
    // The least cosine over the rows.
    let cosine = |a: &[f32], b: &[f32]| -> f64 {
        a.chunks(N).zip(b.chunks(N)).map(|(a, b)| gpu_common::cosine(a, b)).fold(f64::INFINITY, f64::min)
    };
    let rel = |q: &[f32]| -> f64 {
        let e: f64 = w.iter().zip(q).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        (e / w.iter().map(|a| (*a as f64).powi(2)).sum::<f64>()).sqrt()
    };
    let exact = dense(&w);
    let fp8 = subgoal::model::fp8::BlockFp8::quantize(&w, N, N).expect("quantize");
    let y8 = fp8.matmul_t(&x, ROWS);
    let bf16: Vec<f32> = Tensor::from_vec(w.clone(), N * N, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?.to_vec1::<f32>())
        .expect("bf16 rounding");
    let ybf = dense(&bf16);
    json!({
        "shape": [N, N], "rows": ROWS,
        "fp8_output_cosine_min": cosine(&exact, &y8), "fp8_weight_relative_error": rel(&fp8.dequantize()),
        "bf16_output_cosine_min": cosine(&exact, &ybf), "bf16_weight_relative_error": rel(&bf16),
    })
}

fn shape_7b(layers: usize) {
    use subgoal::model::llama::{Config, KvCache, Model};
    let cfg = Config::llama_7b(layers, 102400);
    let dev = Device::Cpu;
    let weights = Model::random_weights(&cfg, &dev, DType::F32).expect("weights");
    let dense = Model::from_weights(cfg.clone(), weights.clone(), &dev, DType::F32, false).expect("dense");
    let fp8 = Model::from_weights(cfg.clone(), weights, &dev, DType::F32, true).expect("fp8");
    let cos = |a: &Tensor, b: &Tensor| -> f64 {
        let (a, b) =
            (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (n(&a) * n(&b))
    };
    let prompt: Vec<u32> = (0..64u32).map(|i| (i * 7919 + 13) % 102400).collect();
    let (mut cd, mut cf) = (KvCache::new(layers), KvCache::new(layers));
    let ids = Tensor::new(prompt.as_slice(), &dev).unwrap().unsqueeze(0).unwrap();
    let (mut ld, mut lf) = (dense.forward(&ids, 0, &mut cd).unwrap(), fp8.forward(&ids, 0, &mut cf).unwrap());
    let mut steps = vec![cos(&ld, &lf)];
    for s in 0..16 {
        let next = ld.flatten_all().unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
        let t = Tensor::new(&[next], &dev).unwrap().unsqueeze(0).unwrap();
        ld = dense.forward(&t, 64 + s, &mut cd).unwrap();
        lf = fp8.forward(&t, 64 + s, &mut cf).unwrap();
        steps.push(cos(&ld, &lf));
    }
    let min = steps.iter().cloned().fold(f64::INFINITY, f64::min);
    let out = json!({
        "bench": "fp8_accuracy --shape-7b",
        "one_projection": one_projection(),
        "shape": {"hidden": 4096, "heads": 32, "head_dim": 128, "intermediate": 11008, "vocab": 102400, "layers": layers},
        "weights": "random normal, std 0.02 (the same tensors for both)",
        "logit_cosine_prefill": steps[0],
        "logit_cosine_min_over_decode": min,
        "logit_cosine_per_step": steps,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
