//! GPU inference speed against PyTorch, side by side in one run: the DeepSeek-Prover-V2-7B shape
//! (Llama: hidden 4096, 30 layers, 32 heads, MLP 11008, vocabulary 102400; 6.91 B parameters)
//! with random bf16 weights written here as safetensors, loaded by subgoal's own safetensors path
//! and by `transformers`.
//!
//! Run by hand on a GPU machine (the CUDA build: `scripts/build-cuda.sh`):
//!   gpu_decode [--dir DIR] [--layers 30] [--new-tokens 256] [--batches 1,8,32] [--prompts 512,2048]
//!              [--python /opt/torch/.venv/bin/python] [--no-torch] [--cpu-sampling] [--no-generic] [--fp8]
//!              [--gemm-only] [--gemv-only] [--attention-only] [--fp8-dense-layers 0,-1]
//!              [--kv-rows 32] [--kv-context 2048] [--gemm-fp8-pick SPEC]
//! Prints JSON: prefill tokens/s at each prompt length, decode tokens/s at each batch (one
//! 512-token prompt, its cache copied to the batch: pass@k as one batch), PyTorch's
//! `generate` on the same weights and shapes, the ratios, and the HBM roofline at batch 1
//! (weight bytes over the HBM bandwidth per token: 4.8 TB/s on an H200, 3.35 on an H100).
//! Sampling is temperature 1, top-p 0.95 on both sides.
//! Decode runs twice, through the fused decode step and sampler and through the generic ones
//! (`--no-generic` skips it), for their ratio in the same run, and the two steps' logits are
//! compared (`fused_vs_generic_logits`). A checkpoint already in `--dir` is reused.
//!
//! With `--fp8`, the FP8 model's fused step is compared with its own generic one too
//! (`fp8.fused_vs_generic_logits`: one and two rows, the same weights, only the kernels differ).
//! With `--fp8 --fp8-dense-layers LIST`, `fp8.dense_layers`: FP8 again with those layers kept in
//! bf16 (`--fp8-dense-layers` of the CLI), its rates beside all-FP8's and bf16's.
//!
//! `kv_cache` compares the serving engine's paged cache in bf16 and in FP8 (`--kv-dtype fp8`):
//! decode steps of `--kv-rows` sequences at `--kv-context` positions each (each its own blocks,
//! so every step reads every row's keys and values), and the FP8 cache's logits against bf16's
//! on one sequence (its prompt, then 16 greedy steps). With `--fp8`, the FP8 weights decode over
//! both caches too.
//!
//! `--gemm-only` runs only the FP8 GEMM's check (no model): `gemm_fp8` at the 7B shape's
//! projections and 16 to 1,024 rows against the f32 product, cuBLAS in bf16 and dequantizing for
//! cuBLAS, a sweep of split counts, and every `gemm_fp8` kernel whose blocks hold half to twice
//! the rows, and cuBLASLt's (`gemm_fp8_lt`) at every count (`gemm_fp8_by_kernel`: time and
//! difference from the f32 product), with the scale modes cuBLASLt has an algorithm for
//! (`cublaslt_fp8_probe`); and at one and four
//! rows `gemv_fp8` beside the bf16 `gemv` where that takes the rows (one, by default), as weight
//! bytes read per second, and at one row the tensor-core products (`tc_bits`, `tc_hw`: time,
//! difference, speed over the default, time at each split). `--gemv-only` runs
//! only those (with `SUBGOAL_CUDA_GEMV_SPLIT=N`, recorded as `gemv_split`, to compare splits).
//! `--attention-only` runs only the prefill attention kernel's arm (`subgoal.attention`), at each
//! `--prompts` length, and the same over an FP8 cache (`attention_kv8`, against the f32 product of
//! what its bytes decode to); `SUBGOAL_CUDA_PREFILL_GROUPS=1` or `=2` picks the kernel.
//! `--gemm-fp8-pick 32:m2k2,max:m4` sets the FP8 GEMM's kernel by row count for the whole run
//! (`fused::set_gemm_fp8_pick`, recorded as `gemm_fp8_pick`). Every report records
//! `SUBGOAL_CUDA_PREFETCH` (the weight loads each projection asks into L2 before it waits for the
//! kernel before it) as `prefetch`, so runs with different settings can be told apart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde_json::{json, Value};
use subgoal::model::fused::{GemvFp8Path, Kernels, GEMM_FP8};
use subgoal::model::llama::{KvCache, Model, WeightFormat};
use subgoal::model::paged::{Batch, KvFormat, PagedCache};

#[path = "gpu_common.rs"]
#[allow(dead_code)]
mod gpu_common;
use gpu_common::{argmax, cosine};

const HIDDEN: usize = 4096;
const INTERMEDIATE: usize = 11008;
const HEADS: usize = 32;
const VOCAB: usize = 102400;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn list(args: &[String], name: &str, default: &[usize]) -> Vec<usize> {
    arg(args, name).map_or(default.to_vec(), |v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
}

fn main() {
    // Warnings (a kernel family that did not load, cuBLASLt not setting up) on stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "subgoal=warn".into()),
        )
        .try_init();
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| "/tmp/prover-v2-7b-random".into()));
    let layers: usize = arg(&args, "--layers").and_then(|v| v.parse().ok()).unwrap_or(30);
    let new_tokens: usize = arg(&args, "--new-tokens").and_then(|v| v.parse().ok()).unwrap_or(256);
    let batches = list(&args, "--batches", &[1, 8, 32]);
    let prompts = list(&args, "--prompts", &[512, 2048]);
    let python = arg(&args, "--python").unwrap_or_else(|| "/opt/torch/.venv/bin/python".into());
    let cpu_sampling = args.iter().any(|a| a == "--cpu-sampling");
    let device = Device::new_cuda(0).expect("a CUDA device (this benchmark needs the cuda build and a GPU)");
    // HBM bandwidth for the rooflines: an H200's 4.8 TB/s, else an H100 SXM's 3.35.
    let gpu = gpu_common::gpu_name();
    let hbm_bytes_per_s = gpu_common::hbm_tb_per_s(&gpu) * 1e12;
    let pick = arg(&args, "--gemm-fp8-pick");
    let gemm_fp8_pick = json!(subgoal::model::fused::set_gemm_fp8_pick(pick.as_deref()).expect("--gemm-fp8-pick"));
    let prefetch = std::env::var("SUBGOAL_CUDA_PREFETCH").ok();
    // `--gemm-only`: the FP8 GEMM's check alone, no model (a quick look at a kernel change).
    // `--attention-only`: the prefill attention kernel alone at each `--prompts` length (no model;
    // PyTorch's SDPA beside it comes from a full run).
    if args.iter().any(|a| a == "--attention-only") {
        let kernels = Kernels::load(&device, DType::BF16).ok().flatten().expect("the fused kernels");
        let arm = |fp8: bool| -> serde_json::Map<String, Value> {
            prompts.iter().map(|&p| (p.to_string(), attention_alone(&kernels, p, fp8, &device))).collect()
        };
        let groups = std::env::var("SUBGOAL_CUDA_PREFILL_GROUPS").ok();
        println!(
            "{}",
            json!({"benchmark": "gpu_decode", "gpu": gpu, "prefill_groups": groups, "prefetch": prefetch,
                   "attention": arm(false), "attention_kv8": arm(true)})
        );
        return;
    }
    // `--gemv-only`: its few-row part alone (the one-row kernels' split is `SUBGOAL_CUDA_GEMV_SPLIT`).
    let gemv_only = args.iter().any(|a| a == "--gemv-only");
    if gemv_only || args.iter().any(|a| a == "--gemm-only") {
        let kernels = Kernels::load(&device, DType::BF16).ok().flatten().expect("the fused kernels");
        // Which of cuBLASLt's FP8 scale modes have an algorithm at q/k/v's shape and 64 rows
        // (`gemm_fp8_lt` takes the 128×128 weight blocks with 1×128 row tiles).
        let probe: serde_json::Map<String, Value> =
            kernels.gemm_fp8_lt_probe(64, 12288, 4096).into_iter().map(|(k, v)| (k, json!(v))).collect();
        let v = json!({"benchmark": "gpu_decode", "gpu": gpu, "hbm_tb_per_s": hbm_bytes_per_s / 1e12,
                       "prefetch": prefetch, "gemm_fp8_pick": gemm_fp8_pick,
                       "gemv_split": std::env::var("SUBGOAL_CUDA_GEMV_SPLIT").ok(),
                       "cublaslt_fp8_probe": probe,
                       "gemm_fp8": gemm_fp8_check(&kernels, &device, gemv_only)});
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
        return;
    }

    let t = Instant::now();
    let params = write_random_model(&dir, layers, &device);
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut model = Model::from_safetensors(&dir, &device, DType::BF16, false).expect("load the model");
    let load_s = t.elapsed().as_secs_f64();
    let weight_bytes = params as f64 * 2.0;

    // Prefill: one prompt of each length, timed after a warm-up.
    let mut prefill = serde_json::Map::new();
    for &p in &prompts {
        let ids = prompt_ids(1, p, &device);
        let run = || {
            let mut cache = KvCache::new(layers);
            let t = Instant::now();
            let logits = model.forward(&ids, 0, &mut cache).unwrap();
            device.synchronize().unwrap();
            drop(logits);
            t.elapsed().as_secs_f64()
        };
        run();
        let s = (0..3).map(|_| run()).fold(f64::MAX, f64::min);
        // The serving engine's prefill: the prompt as one chunk into a paged cache, attention
        // tiled with an online softmax (no score matrix).
        let cache = PagedCache::new(&model.cfg, p.div_ceil(16) + 1, 16, KvFormat::Dense(DType::BF16), &device).unwrap();
        let ids_vec: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
        let mut batch = Batch::default();
        batch.push(&ids_vec, 0, (0..(p.div_ceil(16) + 1) as u32).collect(), true);
        let sp = time_paged(&model, &batch, &cache, &device);
        let agreement = logits_agreement(&model, &ids, &batch, &cache, layers);
        drop(cache);
        prefill.insert(
            p.to_string(),
            json!({"ms": r(s * 1e3), "tokens_per_s": r(p as f64 / s),
                   "paged_ms": r(sp * 1e3), "paged_tokens_per_s": r(p as f64 / sp), "paged_vs_generic": agreement}),
        );
    }

    // Each part also goes to stderr as it ends, so a later failure keeps what came before.
    let progress = |what: &str, v: &dyn std::fmt::Display| eprintln!("{what}: {v}");
    progress("prefill", &Value::Object(prefill.clone()));
    // Prefill attention alone, one layer's worth (all heads), against PyTorch's SDPA below.
    let kernels = Kernels::load(&device, DType::BF16).ok().flatten().expect("the fused kernels");
    let attention: serde_json::Map<String, Value> =
        prompts.iter().map(|&p| (p.to_string(), attention_alone(&kernels, p, false, &device))).collect();
    progress("attention", &Value::Object(attention.clone()));

    // Decode: a 512-token prompt, its cache copied to `b` rows, `new_tokens` sampled steps.
    let fused = model.fused_decode();
    let decode = decode_rates(&model, &batches, layers, new_tokens, cpu_sampling, &device);
    progress("decode", &Value::Object(decode.clone()));
    let (generic, agreement) = if fused && !args.iter().any(|a| a == "--no-generic") {
        model.set_fused_decode(false);
        let g = decode_rates(&model, &batches, layers, new_tokens, cpu_sampling, &device);
        model.set_fused_decode(true);
        (Value::Object(g), agreement(&mut model, &dir, &device))
    } else {
        (Value::Null, Value::Null)
    };

    // FP8 weights (`--fp8`): the same checkpoint quantized at load to E4M3 with 128x128 block
    // factors, decoded at the same batches; its logits against bf16's on a 512-token prompt and on
    // each of 16 greedy steps (the per-step logit cosine).
    // The FP8 model is loaded once, for this arm and the cache arm below.
    let t = Instant::now();
    let mut m8 = args
        .iter()
        .any(|a| a == "--fp8")
        .then(|| Model::from_safetensors(&dir, &device, DType::BF16, true).expect("load the model in FP8"));
    let load8 = t.elapsed().as_secs_f64();
    let fp8 = if let Some(m8) = &mut m8 {
        let rates = decode_rates(m8, &batches, layers, new_tokens, cpu_sampling, &device);
        let cosine = fp8_cosine(&model, m8, layers, &device);
        // The FP8 model's fused step (its norm-fused one-row kernels, its fused q/k/v and
        // gate/up) against its own generic path, the same weights: only the kernels differ.
        let prompt = prompt_ids(1, 512, &device);
        let fused_vs_generic = json!({"1": gpu_common::fused_vs_generic(m8, &prompt, 1, 16),
                                      "2": gpu_common::fused_vs_generic(m8, &prompt, 2, 16)});
        progress("fp8 decode", &json!({"rates": &rates, "cosine": &cosine, "fused_vs_generic": &fused_vs_generic}));
        let gemm = gemm_fp8_check(&kernels, &device, false);
        progress("gemm_fp8", &gemm);
        let mut ratios = serde_json::Map::new();
        for (k, v) in &rates {
            let (a, b) = (v["tokens_per_s"].as_f64().unwrap_or(0.0), decode[k]["tokens_per_s"].as_f64().unwrap_or(0.0));
            ratios.insert(format!("decode_{k}_fp8_over_bf16"), json!(if b > 0.0 { r(a / b) } else { 0.0 }));
        }
        // `--fp8-dense-layers 0,-1`: FP8 again with those layers' projections kept in bf16,
        // what the accuracy they buy costs in speed, beside the all-FP8 rates of this run.
        let dense_layers = gpu_common::fp8_dense_layers(&args);
        let kept = if dense_layers.is_empty() {
            Value::Null
        } else {
            let format = WeightFormat::Fp8 { dense_layers: dense_layers.clone() };
            let m =
                Model::from_safetensors(&dir, &device, DType::BF16, format).expect("load the model in FP8, ends dense");
            let kept_rates = decode_rates(&m, &batches, layers, new_tokens, cpu_sampling, &device);
            let kept_cosine = fp8_cosine(&model, &m, layers, &device);
            let mut over = serde_json::Map::new();
            for (k, v) in &kept_rates {
                let a = v["tokens_per_s"].as_f64().unwrap_or(0.0);
                let (f, b) = (
                    rates[k]["tokens_per_s"].as_f64().unwrap_or(0.0),
                    decode[k]["tokens_per_s"].as_f64().unwrap_or(0.0),
                );
                over.insert(format!("decode_{k}_over_fp8"), json!(if f > 0.0 { r(a / f) } else { 0.0 }));
                over.insert(format!("decode_{k}_over_bf16"), json!(if b > 0.0 { r(a / b) } else { 0.0 }));
            }
            let out =
                json!({"layers": dense_layers, "decode": kept_rates, "ratios": over, "logits_vs_bf16": kept_cosine});
            progress("fp8 decode, layers kept dense", &out);
            out
        };
        json!({"load_s": r(load8), "decode": rates, "gemm_fp8": gemm, "fused_vs_generic_logits": fused_vs_generic,
               "ratios": ratios, "logits_vs_bf16": cosine, "dense_layers": kept,
               // Bytes per token: the projections in one byte each, the output head in two (it
               // stays bf16), counted like the bf16 roofline (embeddings included): `params`.
               "roofline_batch1_tokens_per_s": r(hbm_bytes_per_s / params as f64)})
    } else {
        Value::Null
    };

    // The paged cache in bf16 and in FP8, with the bf16 weights and (`--fp8`) the FP8 ones.
    let kv_rows: usize = arg(&args, "--kv-rows").and_then(|v| v.parse().ok()).unwrap_or(32);
    let kv_context: usize = arg(&args, "--kv-context").and_then(|v| v.parse().ok()).unwrap_or(2048);
    let mut kv_cache = serde_json::Map::new();
    kv_cache.insert("rows".into(), json!(kv_rows));
    kv_cache.insert("context".into(), json!(kv_context));
    kv_cache.insert("logits_fp8_vs_bf16_cache".into(), kv_agreement(&model, kv_context, &device));
    progress("kv logits", &kv_cache["logits_fp8_vs_bf16_cache"]);
    let mut steps = vec![];
    for (name, m) in std::iter::once(("bf16_weights", &model)).chain(m8.iter().map(|m| ("fp8_weights", m))) {
        for (cache_name, format) in [("bf16_cache", KvFormat::Dense(DType::BF16)), ("fp8_cache", KvFormat::Fp8)] {
            let ms = kv_step_ms(m, kv_rows, kv_context, format, &device);
            progress(&format!("kv {name} {cache_name} ms/step"), &ms);
            steps.push((format!("{name}_{cache_name}"), ms));
            kv_cache.insert(format!("{name}_{cache_name}_ms_per_step"), json!(r(ms)));
        }
    }
    drop(m8);
    if let Some((_, base)) = steps.first() {
        for (name, ms) in &steps[1..] {
            kv_cache.insert(format!("{name}_speedup_over_bf16"), json!(r(base / ms)));
        }
    }
    // Bytes a step reads at this occupancy: the weights once and every row's keys and values.
    let kv_bytes = |per_token: f64| kv_rows as f64 * kv_context as f64 * per_token;
    let per_token_bf16 = (2 * layers * HIDDEN * 2) as f64;
    let per_token_fp8 = (2 * layers * (HIDDEN + 4 * HEADS)) as f64;
    kv_cache.insert(
        "hbm_limit_ms_per_step".into(),
        json!({
            "bf16_weights_bf16_cache": r((weight_bytes + kv_bytes(per_token_bf16)) / hbm_bytes_per_s * 1e3),
            "bf16_weights_fp8_cache": r((weight_bytes + kv_bytes(per_token_fp8)) / hbm_bytes_per_s * 1e3),
            "bandwidth_tb_per_s": hbm_bytes_per_s / 1e12,
        }),
    );

    let torch = if args.iter().any(|a| a == "--no-torch") {
        Value::Null
    } else {
        run_torch(&python, &dir, &prompts, &batches, new_tokens)
    };
    let ratio = |ours: &Value, theirs: &Value| match (ours["tokens_per_s"].as_f64(), theirs["tokens_per_s"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(r(a / b)),
        _ => Value::Null,
    };
    let mut ratios = serde_json::Map::new();
    for (k, v) in &decode {
        ratios.insert(format!("decode_{k}_fused_over_generic"), ratio(v, &generic[k]));
    }
    for (kind, ours) in [("prefill", &prefill), ("decode", &decode)] {
        for (k, v) in ours {
            ratios.insert(format!("{kind}_{k}_subgoal_over_torch"), ratio(v, &torch[kind][k]));
        }
    }
    for (k, v) in &attention {
        let (ours, theirs) = (v["ms"].as_f64(), torch["attention"][k]["ms"].as_f64());
        if let (Some(a), Some(b)) = (ours, theirs) {
            ratios.insert(format!("attention_{k}_subgoal_over_torch"), json!(r(b / a)));
        }
    }
    for (k, v) in &prefill {
        let paged = json!({"tokens_per_s": v["paged_tokens_per_s"]});
        ratios.insert(format!("prefill_{k}_paged_over_torch"), ratio(&paged, &torch["prefill"][k]));
    }
    let report = json!({
        "benchmark": "gpu_decode",
        "gpu": gpu,
        "prefetch": prefetch,
        "gemm_fp8_pick": gemm_fp8_pick,
        "shape": {"layers": layers, "hidden": HIDDEN, "intermediate": INTERMEDIATE, "heads": HEADS, "vocab": VOCAB, "params": params, "dtype": "bf16"},
        "write_weights_s": r(write_s),
        "load_s": r(load_s),
        "new_tokens": new_tokens,
        "sampling": if cpu_sampling { "cpu, per row" } else { "on the device" },
        "subgoal": {"prefill": prefill, "attention": attention, "decode": decode, "decode_generic_step": generic},
        "fused_decode": fused,
        "fused_vs_generic_logits": agreement,
        "fp8": fp8,
        "kv_cache": kv_cache,
        "torch": torch,
        "ratios": ratios,
        "roofline_batch1_tokens_per_s": r(hbm_bytes_per_s / weight_bytes),
        "goals": {"decode_batch1_tokens_per_s": 240, "decode_batch32_tokens_per_s": 3000},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// Seconds per call of `f`: the best of 3 runs of `calls` calls, after one to warm up.
fn best_of_3(device: &Device, calls: usize, f: &dyn Fn()) -> f64 {
    f();
    device.synchronize().unwrap();
    (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            device.synchronize().unwrap();
            t.elapsed().as_secs_f64() / calls as f64
        })
        .fold(f64::MAX, f64::min)
}

/// The tiled prefill attention kernel alone on one layer's shape (32 heads of 128, `p` queries
/// at positions 0..p over a paged cache of 16-token blocks, random inputs): the best of 3 runs of
/// 5 launches, its rate in causal TFLOP/s, and its output on two heads against attention computed
/// in f32 with the score matrix materialized.
fn attention_alone(k: &Kernels, p: usize, fp8: bool, device: &Device) -> Value {
    const D: usize = 128;
    let blocks = p.div_ceil(16);
    let rand = |shape: &[usize], scale: f64| {
        (Tensor::randn(0f32, 1.0, shape, device).unwrap() * scale).unwrap().to_dtype(DType::BF16).unwrap()
    };
    let q = rand(&[p, HEADS * D], 1.0 / (D as f64).sqrt());
    let (mut kc, mut vc) = (rand(&[blocks, HEADS, 16, D], 1.0), rand(&[blocks, HEADS, 16, D], 1.0));
    // An FP8 cache: each row's bytes and factor, and (for the reference) what they decode to.
    let mut fp8_cache = None;
    if fp8 {
        let quantize = |c: &Tensor| {
            let host: Vec<f32> = c.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let (bytes, scales) = subgoal::model::fp8::quantize_rows(&host, D);
            let decoded: Vec<f32> = bytes
                .chunks(D)
                .zip(&scales)
                .flat_map(|(row, s)| row.iter().map(move |&b| subgoal::model::fp8::decode(b) * s))
                .collect();
            let shape = c.dims().to_vec();
            (
                Tensor::from_vec(bytes, shape.as_slice(), device).unwrap(),
                Tensor::from_vec(scales, (blocks, HEADS, 16, 1), device).unwrap(),
                Tensor::from_vec(decoded, shape.as_slice(), device).unwrap(),
            )
        };
        let ((kb, ks, kd), (vb, vs, vd)) = (quantize(&kc), quantize(&vc));
        (kc, vc) = (kd, vd);
        fp8_cache = Some((kb, vb, ks, vs));
    }
    let table = Tensor::arange(0u32, blocks as u32, device).unwrap();
    let kv = match &fp8_cache {
        Some((kb, vb, ks, vs)) => subgoal::model::fused::PagedKv { k: kb, v: vb, scales: Some((ks, vs)) },
        None => subgoal::model::fused::PagedKv { k: &kc, v: &vc, scales: None },
    };
    let launch = || k.attention_prefill(&q, kv, &table, 0, HEADS).unwrap().expect("a prefill kernel");
    let s = best_of_3(device, 5, &|| drop(launch()));
    let flops = 4.0 * (p * p) as f64 / 2.0 * (D * HEADS) as f64;
    let out = launch().to_dtype(DType::F32).unwrap();
    // The reference, on heads 0 and the last: (p, D) rows of the cache as positions.
    let cache_rows = |c: &Tensor, h: usize| {
        c.narrow(1, h, 1)
            .unwrap()
            .reshape((blocks * 16, D))
            .unwrap()
            .narrow(0, 0, p)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let pos = Tensor::arange(0u32, p as u32, device).unwrap();
    let future = pos.unsqueeze(0).unwrap().broadcast_gt(&pos.unsqueeze(1).unwrap()).unwrap();
    let neg = Tensor::full(f32::NEG_INFINITY, (p, p), device).unwrap();
    let (mut diff, mut scale) = (0f32, 0f32);
    for h in [0, HEADS - 1] {
        let qh = q.narrow(1, h * D, D).unwrap().contiguous().unwrap().to_dtype(DType::F32).unwrap();
        let scores = qh.matmul(&cache_rows(&kc, h).t().unwrap()).unwrap();
        let scores = future.where_cond(&neg, &scores).unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let want = probs.matmul(&cache_rows(&vc, h)).unwrap();
        let got = out.narrow(1, h * D, D).unwrap();
        let d = (want.clone() - got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let m = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        diff = diff.max(d);
        scale = scale.max(m);
    }
    json!({"ms": r(s * 1e3), "causal_tflops": r(flops / s / 1e12), "max_abs_diff_vs_f32": diff, "max_abs_f32": scale})
}

/// `gemm_fp8` on its own at the 7B shape's projection sizes and at 16 to 1,024 rows: against the
/// same product in f32 (the weight dequantized on the host, cuBLAS in f32: the largest difference
/// over the largest output, which the bf16 output's rounding alone puts near 2^-9), and its time
/// beside bf16 cuBLAS on the dense weight of the same shape and beside dequantizing the bytes for
/// cuBLAS (best of 3 runs of 10 launches).
fn gemm_fp8_check(k: &Kernels, device: &Device, gemv_only: bool) -> Value {
    let mut out = serde_json::Map::new();
    for (name, n, kk) in [
        ("qkv", 3 * HIDDEN, HIDDEN),
        ("o", HIDDEN, HIDDEN),
        ("gate_up", 2 * INTERMEDIATE, HIDDEN),
        ("down", HIDDEN, INTERMEDIATE),
    ] {
        let host: Vec<f32> = (0..n * kk).map(|i| (((i * 7919) % 1999) as f32 - 999.0) * 0.02 / 999.0).collect();
        let q = subgoal::model::fp8::BlockFp8::quantize(&host, n, kk).unwrap();
        let exact = Tensor::from_vec(q.dequantize(), (n, kk), device).unwrap();
        let dense = exact.to_dtype(DType::BF16).unwrap();
        let (rb, cb) = (q.row_blocks(), q.col_blocks());
        let bytes = Tensor::from_vec(q.data, (n, kk), device).unwrap();
        let scale = Tensor::from_vec(q.scale_inv, (rb, cb), device).unwrap();
        // Decode's few rows: `gemv_fp8` beside the bf16 `gemv` on the same values, each as the
        // weight bytes it reads per second.
        for rows in [1usize, 4] {
            let x = Tensor::randn(0f32, 1.0, (rows, kk), device).unwrap().to_dtype(DType::BF16).unwrap();
            let want = x.to_dtype(DType::F32).unwrap().matmul(&exact.t().unwrap()).unwrap();
            let got = k.gemv_fp8(&x, &bytes, &scale, None).unwrap().expect("gemv_fp8 takes the 7B shapes");
            let got = got.to_dtype(DType::F32).unwrap();
            let diff = (&want - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let time = |f: &dyn Fn()| best_of_3(device, 10, f);
            let t8 = time(&|| drop(k.gemv_fp8(&x, &bytes, &scale, None).unwrap()));
            let mut v = json!({"max_abs_diff_vs_f32": diff, "gemv_fp8_us": r(t8 * 1e6),
                               "fp8_weight_tb_per_s": r((n * kk) as f64 / t8 / 1e12)});
            // The bf16 `gemv` takes one row unless SUBGOAL_CUDA_GEMV_ROWS says more (cuBLAS wins
            // from two); where it declines there is nothing of its to time.
            if k.gemv(&x, &dense, None).unwrap().is_some() {
                let t16 = time(&|| drop(k.gemv(&x, &dense, None).unwrap()));
                v["gemv_bf16_us"] = json!(r(t16 * 1e6));
                v["fp8_over_bf16_speed"] = json!(r(t16 / t8));
                v["bf16_weight_tb_per_s"] = json!(r((2 * n * kk) as f64 / t16 / 1e12));
            }
            // At one row, the tensor-core products beside it (`SUBGOAL_CUDA_GEMV_FP8_TC`): each
            // path's time and difference at its default split and at every split.
            if rows == 1 {
                for (label, path) in [("tc_bits", GemvFp8Path::TcBits), ("tc_hw", GemvFp8Path::TcHw)] {
                    let Some(got) = k.gemv_fp8_with(&x, &bytes, &scale, path, None).unwrap() else { continue };
                    let got = got.to_dtype(DType::F32).unwrap();
                    let diff = (&want - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    let t = time(&|| drop(k.gemv_fp8_with(&x, &bytes, &scale, path, None).unwrap()));
                    let by_split: serde_json::Map<String, Value> = [2usize, 4, 8, 16]
                        .iter()
                        .map(|&s| {
                            let ts = time(&|| drop(k.gemv_fp8_with(&x, &bytes, &scale, path, Some(s)).unwrap()));
                            (s.to_string(), json!(r(ts * 1e6)))
                        })
                        .collect();
                    v[label] = json!({"us": r(t * 1e6), "max_abs_diff_vs_f32": diff,
                                      "weight_tb_per_s": r((n * kk) as f64 / t / 1e12),
                                      "over_default_speed": r(t8 / t), "us_by_split": by_split});
                }
            }
            out.insert(format!("{name}_{n}x{kk}_rows_{rows}"), v);
        }
        for rows in if gemv_only { vec![] } else { vec![16usize, 32, 64, 128, 256, 1024] } {
            let x = Tensor::randn(0f32, 1.0, (rows, kk), device).unwrap().to_dtype(DType::BF16).unwrap();
            let Some(got) = k.gemm_fp8(&x, &bytes, &scale).unwrap() else {
                out.insert(format!("{name}_{rows}"), json!("gemm_fp8 does not take this shape"));
                continue;
            };
            let want = x.to_dtype(DType::F32).unwrap().matmul(&exact.t().unwrap()).unwrap();
            let got = got.to_dtype(DType::F32).unwrap();
            let diff = (&want - &got).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale_out = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let time = |f: &dyn Fn()| best_of_3(device, 10, f);
            let t_gemm = time(&|| drop(k.gemm_fp8(&x, &bytes, &scale).unwrap()));
            // The split of k the kernel chooses against others, at the same shape.
            let sweep: serde_json::Map<String, Value> = [1usize, 2, 3, 4, 6, 8, 12]
                .iter()
                .filter(|&&sp| kk / 128 / sp >= 3)
                .map(|&sp| {
                    let t = time(&|| drop(k.gemm_fp8_with(&x, &bytes, &scale, None, Some(sp)).unwrap()));
                    (sp.to_string(), json!(r(t * 1e6)))
                })
                .collect();
            // Every kernel whose blocks hold half to twice these rows, each with its own split
            // choice: its time and its largest difference from the f32 product.
            let kernels: serde_json::Map<String, Value> = GEMM_FP8
                .iter()
                .filter(|g| g.lt.is_some() || (2 * g.rows() >= rows && g.rows() <= 2 * rows))
                .map(|&g| {
                    let run = || k.gemm_fp8_with(&x, &bytes, &scale, Some(g), None).unwrap();
                    // A GPU without the kernel's shared memory did not load it.
                    let Some(out) = run() else { return (g.name.to_string(), json!("not loaded")) };
                    let out = out.to_dtype(DType::F32).unwrap();
                    let d = (&want - &out).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    let t = time(&|| drop(run()));
                    (g.name.to_string(), json!({"us": r(t * 1e6), "max_abs_diff_vs_f32": d}))
                })
                .collect();
            let t_deq = time(&|| drop(x.matmul(&k.dequantize_fp8(&bytes, &scale).unwrap().t().unwrap()).unwrap()));
            let t_bf16 = time(&|| drop(x.matmul(&dense.t().unwrap()).unwrap()));
            out.insert(
                format!("{name}_{n}x{kk}_rows_{rows}"),
                json!({"max_abs_diff_vs_f32": diff, "max_abs_output": scale_out,
                       "gemm_fp8_us": r(t_gemm * 1e6), "dequantize_then_cublas_us": r(t_deq * 1e6),
                       "bf16_cublas_us": r(t_bf16 * 1e6),
                       "gemm_fp8_over_bf16_speed": r(t_bf16 / t_gemm),
                       "weight_tb_per_s": r((n * kk) as f64 / t_gemm / 1e12),
                       "gemm_fp8_us_by_splits": sweep, "gemm_fp8_by_kernel": kernels}),
            );
        }
    }
    Value::Object(out)
}

/// Milliseconds per decode step of `rows` sequences at `context` positions each in a paged cache
/// of `format` (16-token blocks, each sequence its own): the prompts are prefilled one by one,
/// then 2 warm-up steps and 16 timed ones, every row's token a fixed one.
fn kv_step_ms(model: &Model, rows: usize, context: usize, format: KvFormat, device: &Device) -> f64 {
    const STEPS: usize = 18;
    let per_row = (context + STEPS).div_ceil(16);
    let cache = PagedCache::new(&model.cfg, rows * per_row, 16, format, device).unwrap();
    let table = |r: usize| ((r * per_row) as u32..((r + 1) * per_row) as u32).collect::<Vec<u32>>();
    let ids: Vec<u32> = prompt_ids(1, context, device).flatten_all().unwrap().to_vec1().unwrap();
    for r in 0..rows {
        let mut batch = Batch::default();
        batch.push(&ids, 0, table(r), true);
        drop(model.forward_paged(&batch, &cache).unwrap());
    }
    let step = |s: usize| {
        let mut batch = Batch::default();
        for r in 0..rows {
            batch.push(&[1], context + s, table(r), true);
        }
        drop(model.forward_paged(&batch, &cache).unwrap());
    };
    step(0);
    step(1);
    device.synchronize().unwrap();
    let t = Instant::now();
    for s in 2..STEPS {
        step(s);
    }
    device.synchronize().unwrap();
    t.elapsed().as_secs_f64() * 1e3 / (STEPS - 2) as f64
}

/// The FP8 cache's logits against the bf16 cache's, same weights: one prompt of `context`
/// tokens, then 16 greedy steps, both fed the bf16 cache's greedy token: cosine per step and
/// argmax agreement.
fn kv_agreement(model: &Model, context: usize, device: &Device) -> Value {
    let blocks: Vec<u32> = (0..(context + 17).div_ceil(16) as u32).collect();
    let dense = PagedCache::new(&model.cfg, blocks.len(), 16, KvFormat::Dense(DType::BF16), device).unwrap();
    let fp8 = PagedCache::new(&model.cfg, blocks.len(), 16, KvFormat::Fp8, device).unwrap();
    let ids: Vec<u32> = prompt_ids(1, context, device).flatten_all().unwrap().to_vec1().unwrap();
    let (mut cosines, mut same) = (vec![], 0);
    let mut feed = |tokens: &[u32], at: usize| -> u32 {
        let mut batch = Batch::default();
        batch.push(tokens, at, blocks.clone(), true);
        let a: Vec<f32> = model.forward_paged(&batch, &dense).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = model.forward_paged(&batch, &fp8).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        cosines.push(cosine(&a, &b));
        same += usize::from(argmax(&a) == argmax(&b));
        argmax(&a) as u32
    };
    let mut next = feed(&ids, 0);
    for s in 0..16 {
        next = feed(&[next], context + s);
    }
    let min = cosines.iter().copied().fold(f64::MAX, f64::min);
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    json!({"steps": cosines.len(), "cosine_min": min, "cosine_mean": mean, "same_argmax": same})
}

/// Seconds of one paged prefill (`batch` into `cache`), the best of 3 after a warm-up.
fn time_paged(model: &Model, batch: &Batch, cache: &PagedCache, device: &Device) -> f64 {
    let run = || {
        let t = Instant::now();
        let logits = model.forward_paged(batch, cache).unwrap();
        device.synchronize().unwrap();
        drop(logits);
        t.elapsed().as_secs_f64()
    };
    run();
    (0..3).map(|_| run()).fold(f64::MAX, f64::min)
}

/// The paged prefill's last-token logits against the generic path's (which materializes the
/// scores): the largest difference, the largest logit, and whether their argmaxes agree.
fn logits_agreement(model: &Model, ids: &Tensor, batch: &Batch, cache: &PagedCache, layers: usize) -> Value {
    let mut kv = KvCache::new(layers);
    let generic = model.forward(ids, 0, &mut kv).and_then(|l| l.flatten_all()?.to_dtype(DType::F32));
    let tiled = model.forward_paged(batch, cache).and_then(|l| l.flatten_all()?.to_dtype(DType::F32));
    match (generic, tiled) {
        (Ok(a), Ok(b)) => {
            let (a, b): (Vec<f32>, Vec<f32>) = (a.to_vec1().unwrap(), b.to_vec1().unwrap());
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
            json!({"max_abs_logit_diff": diff, "max_abs_logit": scale, "same_argmax": argmax(&a) == argmax(&b)})
        }
        (a, b) => json!({"error": format!("{:?} / {:?}", a.err(), b.err())}),
    }
}

/// Logits of `fp8` against `dense` (the same weights): cosine and argmax agreement on a 512-token
/// prompt and on 16 greedy steps after it, each model fed its own greedy tokens until they part
/// (then both take the dense model's token, so every step compares the same context).
fn fp8_cosine(dense: &Model, fp8: &Model, layers: usize, device: &Device) -> Value {
    let ids = prompt_ids(1, 512, device);
    let (mut ca, mut cb) = (KvCache::new(layers), KvCache::new(layers));
    let mut a = dense.forward(&ids, 0, &mut ca).unwrap();
    let mut b = fp8.forward(&ids, 0, &mut cb).unwrap();
    let mut cosines = Vec::new();
    let mut same = 0;
    for step in 0..17 {
        let (va, vb): (Vec<f32>, Vec<f32>) =
            (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
        cosines.push(cosine(&va, &vb));
        let (ta, tb) = (argmax(&va), argmax(&vb));
        same += usize::from(ta == tb);
        if step == 16 {
            break;
        }
        let next = Tensor::from_vec(vec![ta as u32], (1, 1), device).unwrap();
        a = dense.forward(&next, 512 + step, &mut ca).unwrap();
        b = fp8.forward(&next, 512 + step, &mut cb).unwrap();
    }
    let min = cosines.iter().copied().fold(f64::MAX, f64::min);
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    json!({"steps": cosines.len(), "cosine_min": min, "cosine_mean": mean, "same_argmax": same, "goal_cosine": 0.999})
}

/// Decode tokens/s at each batch: a 512-token prompt, its cache copied to `b` rows, `new_tokens`
/// sampled steps, after a short warm-up.
fn decode_rates(
    model: &Model,
    batches: &[usize],
    layers: usize,
    new_tokens: usize,
    cpu_sampling: bool,
    device: &Device,
) -> serde_json::Map<String, Value> {
    let mut decode = serde_json::Map::new();
    for &b in batches {
        let run = |steps: usize| {
            let mut cache = KvCache::new(layers);
            let logits = model.forward(&prompt_ids(1, 512, device), 0, &mut cache).unwrap();
            cache.expand(b).unwrap();
            let mut samplers: Vec<LogitsProcessor> = (0..b)
                .map(|i| LogitsProcessor::from_sampling(i as u64, Sampling::TopP { p: 0.95, temperature: 1.0 }))
                .collect();
            let mut last = logits.broadcast_as((b, VOCAB)).unwrap().contiguous().unwrap();
            device.synchronize().unwrap();
            let t = Instant::now();
            let mut host = 0.0;
            for step in 0..steps {
                // What `subgoal generate` does on a GPU: every row sampled on the device
                // (`--cpu-sampling`: each row on the CPU, the path before).
                let next: Vec<u32> = if cpu_sampling {
                    let rows = last.to_device(&Device::Cpu).unwrap();
                    (0..b).map(|i| samplers[i].sample(&rows.get(i).unwrap()).unwrap()).collect()
                } else {
                    model.sample_rows(&last, 1.0, 0.95, step as u64).unwrap()
                };
                let ids = Tensor::from_vec(next, (b, 1), device).unwrap();
                let f = Instant::now();
                last = model.forward(&ids, 512 + step, &mut cache).unwrap();
                host += f.elapsed().as_secs_f64();
            }
            device.synchronize().unwrap();
            (t.elapsed().as_secs_f64(), host)
        };
        run(4);
        // `forward_host_ms_per_step`: the CPU's time in `forward`, which returns once the step's
        // kernels are queued; near `ms_per_step`, the step is bound by launching them.
        let (s, host) = run(new_tokens);
        decode.insert(
            b.to_string(),
            json!({"ms_per_step": r(s * 1e3 / new_tokens as f64), "forward_host_ms_per_step": r(host * 1e3 / new_tokens as f64), "tokens_per_s": r((b * new_tokens) as f64 / s)}),
        );
    }

    decode
}

/// The fused step against the generic one at this shape, 16 greedy steps after a 512-token prompt
/// at one row (the few-row kernels) and two (cuBLAS): in bf16 on `model`, and in f32 on the
/// checkpoint loaded again as f32 (rounding apart, the kernels must agree).
fn agreement(model: &mut Model, dir: &Path, device: &Device) -> Value {
    let prompt = prompt_ids(1, 512, device);
    let both = |m: &mut Model| json!({"1": gpu_common::fused_vs_generic(m, &prompt, 1, 16), "2": gpu_common::fused_vs_generic(m, &prompt, 2, 16)});
    let bf16 = both(model);
    let f32 = match Model::from_safetensors(dir, device, DType::F32, false) {
        // Without the fused step the comparison would be generic against generic.
        Ok(m) if !m.fused_decode() => json!({"error": "the fused step is off for the f32 model"}),
        Ok(mut m) => both(&mut m),
        Err(e) => json!({"error": e.to_string()}),
    };
    json!({"bf16": bf16, "f32": f32})
}

fn r(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn prompt_ids(b: usize, t: usize, device: &Device) -> Tensor {
    let ids: Vec<u32> = (0..b * t).map(|i| ((i * 7919 + 13) % (VOCAB - 1)) as u32).collect();
    Tensor::from_vec(ids, (b, t), device).unwrap()
}

/// Writes `config.json` and random bf16 weights (std 0.02, norms 1) in per-layer safetensors
/// shards with an index, as a Hugging Face checkpoint is laid out. Returns the parameter count.
fn write_random_model(dir: &Path, layers: usize, device: &Device) -> usize {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
    if let (Some(c), Some(i)) = (read("config.json"), read("model.safetensors.index.json")) {
        if c["num_hidden_layers"].as_u64() == Some(layers as u64) {
            return i["metadata"]["total_size"].as_u64().unwrap_or(0) as usize / 2;
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_hidden_layers": layers,
        "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "vocab_size": VOCAB,
        "max_position_embeddings": 16384, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": false, "torch_dtype": "bfloat16",
        "bos_token_id": 100000, "eos_token_id": 100001,
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let rand = |shape: &[usize]| Tensor::randn(0f32, 0.02, shape, device).unwrap().to_dtype(DType::BF16).unwrap();
    let ones = |n: usize| Tensor::ones(n, DType::BF16, device).unwrap();
    let mut weight_map = serde_json::Map::new();
    let mut params = 0usize;
    let mut shards: Vec<(String, HashMap<String, Tensor>)> = Vec::new();
    let mut head = HashMap::new();
    head.insert("model.embed_tokens.weight".to_string(), rand(&[VOCAB, HIDDEN]));
    head.insert("lm_head.weight".to_string(), rand(&[VOCAB, HIDDEN]));
    head.insert("model.norm.weight".to_string(), ones(HIDDEN));
    shards.push(("model-embed.safetensors".into(), head));
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let mut t = HashMap::new();
        for (name, shape) in [
            ("self_attn.q_proj", [HIDDEN, HIDDEN]),
            ("self_attn.k_proj", [HIDDEN, HIDDEN]),
            ("self_attn.v_proj", [HIDDEN, HIDDEN]),
            ("self_attn.o_proj", [HIDDEN, HIDDEN]),
            ("mlp.gate_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.up_proj", [INTERMEDIATE, HIDDEN]),
            ("mlp.down_proj", [HIDDEN, INTERMEDIATE]),
        ] {
            t.insert(format!("{p}.{name}.weight"), rand(&shape));
        }
        t.insert(format!("{p}.input_layernorm.weight"), ones(HIDDEN));
        t.insert(format!("{p}.post_attention_layernorm.weight"), ones(HIDDEN));
        shards.push((format!("model-layer{l:02}.safetensors"), t));
    }
    for (file, tensors) in &shards {
        for (name, t) in tensors {
            params += t.elem_count();
            weight_map.insert(name.clone(), json!(file));
        }
        candle_core::safetensors::save(tensors, dir.join(file)).unwrap();
    }
    let index = json!({"metadata": {"total_size": params * 2}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string(&index).unwrap()).unwrap();
    params
}

/// PyTorch + transformers on the same checkpoint: prefill (one forward) and `generate` (sampling,
/// exactly `new_tokens` new tokens, the batch as `num_return_sequences` of one prompt).
fn run_torch(python: &str, dir: &Path, prompts: &[usize], batches: &[usize], new_tokens: usize) -> Value {
    let script = include_str!("gpu_decode_torch.py");
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(prompts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","))
        .arg(batches.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(","))
        .arg(new_tokens.to_string())
        .output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or_else(
            |e| json!({"error": format!("unreadable output: {e}: {}", String::from_utf8_lossy(&o.stdout))}),
        ),
        Ok(o) => json!({"error": String::from_utf8_lossy(&o.stderr).lines().rev().take(5).collect::<Vec<_>>()}),
        Err(e) => json!({"error": format!("{python}: {e}")}),
    }
}
