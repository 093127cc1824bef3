//! The serving engine on a GPU against the engine it replaced, side by side in one run, at the
//! DeepSeek-Prover-V2-7B shape (Llama, 30 layers, hidden 4096, 32 heads without grouping: 480 KiB
//! of KV cache per token) and at the Llama-2-7B shape TensorRT-LLM publishes (32 layers, vocabulary
//! 32,000), with random bf16 weights made on the device.
//!
//!   gpu_serve [--prompts 2] [--k 32] [--mean 4500] [--max 8192] [--trt-seqs-short 48]
//!             [--trt-seqs-long 24] [--layers 30] [--only-trt] [--no-trt]
//!             [--baseline-k 8] [--no-baseline] [--bandwidth TB/s] [--devices cuda:all] [--kv-fp8]
//!             [--cascade-ab] [--fp8] [--fp8-dense-layers 0,-1] [--gemm-fp8-pick SPEC]
//!             [--gemm-fp8-picks SPEC;SPEC]
//!
//! Prints JSON:
//! - `paged_vs_static`: the engine's fused paged step (tiled prefill attention, paged split-K
//!   decode attention) against the static path of before (`Model::forward` with a contiguous
//!   cache: materialized prefill attention, its own fused decode step) on the same tokens: logits
//!   and argmax. Under it, `cascade_vs_plain` (and `_fp8_cache`): one decode step of rows in two
//!   shared-prefix groups and a lone row, with shared-prefix (cascade) attention and without, over
//!   the same cache: logits and argmax, at the full depth and on a one-layer model.
//! - `batch1`: one request, one sample, through the engine.
//! - `devices` (with `--devices LIST` naming several GPUs): the pass@k workload scaled by the
//!   number of devices through one engine per device behind the router, against the one-GPU
//!   run of `passk`: the speed-up and each device's share of the tokens (goal: 2 GPUs ≥ 1.9×,
//!   4 ≥ 3.8×, 8 ≥ 7.5×; every device within 5 % of the mean).
//! - `passk`: `--prompts` prompts of 300-1,500 tokens, `--k` samples each, lengths drawn from a
//!   long-tailed (log-normal) distribution of mean `--mean`, at most `--max`, end-of-sequence
//!   ignored; output tokens/s and wall time through the engine, and through the static batch of
//!   before (one prompt at a time, its cache copied to k rows, rows leaving as they finish) at the
//!   largest k that runs (`--baseline-k`, halved on out-of-memory). With `--cascade-ab`, the engine
//!   again with every row reading its prompt's blocks itself (`engine_no_cascade`, and with
//!   `--kv-fp8` `engine_fp8_cache_no_cascade`), and the ratios.
//! - `trt`: 128 in / 2,048 out and 2,048 / 2,048, `--trt-seqs-short` and `--trt-seqs-long`
//!   sequences (0 leaves a shape out).
//! - `--kv-fp8`: each engine run of `passk` and `trt` again with the cache in FP8
//!   (`--kv-dtype fp8`: E4M3 with a factor per row, so twice the blocks in the same memory), its
//!   figures under `engine_fp8_cache` and its speed-up over the bf16 cache beside them.
//! - `--fp8`: the same again with the weights in FP8 too (`--dtype fp8 --kv-dtype fp8`: E4M3 with
//!   128×128 block factors, quantized from the same random weights; the output head stays bf16),
//!   under `engine_fp8_weights_fp8_cache`, with its speed-up over the bf16 engine. The bf16 model
//!   stays loaded beside it, so its cache gets the memory both models leave (as the bf16 runs'
//!   does), not the 6.5 GB more an FP8 model alone would leave.
//! - `--fp8-dense-layers LIST`: the FP8-weights arms with those layers kept in bf16 (the CLI's
//!   option of that name).
//! - `--gemm-fp8-pick 32:m2,64:m2x2,max:m4x2` sets which FP8 GEMM kernel runs up to how many rows
//!   for the whole run (`fused::set_gemm_fp8_pick`); `--gemm-fp8-picks A;B` runs the TensorRT
//!   shapes' FP8-weights arm again under each pick (`engine_fp8_weights_fp8_cache_by_pick`).
//! - Beside each engine figure, the memory-bandwidth limit at the occupancy the engine ran at:
//!   every step reads the weights once and each decode row's cached positions (and, with a
//!   shared prefix read once per request, less).

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use subgoal::model::engine::router::{DeviceStats, Router};
use subgoal::model::engine::{Engine, EngineOptions, Event, Job, MetricsSnapshot};
use subgoal::model::llama::{Config, KvCache, Model, WeightFormat};
use subgoal::model::paged::{Batch, KvFormat, PagedCache};
use subgoal::model::tokenizer::ModelTokenizer;
use subgoal::model::SamplingParams;

#[path = "gpu_common.rs"]
#[allow(dead_code)]
mod gpu_common;

/// `fused::set_gemm_fp8_pick` (the kernel of the FP8 GEMM by row count), the pick it set as JSON;
/// without the cuda feature there is no such GEMM, and nothing to set.
fn set_gemm_fp8_pick(spec: Option<&str>) -> Value {
    #[cfg(feature = "cuda")]
    {
        json!(subgoal::model::fused::set_gemm_fp8_pick(spec).expect("--gemm-fp8-pick(s)"))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = spec;
        Value::Null
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn r(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A deterministic generator (splitmix64) for prompt tokens and lengths.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Log-normal with this mean and sigma 0.6 (a long right tail), clamped to [64, max].
    fn length(&mut self, mean: f64, max: usize) -> usize {
        let sigma = 0.6f64;
        let mu = mean.ln() - sigma * sigma / 2.0;
        let z = (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos();
        ((mu + sigma * z).exp().round() as usize).clamp(64, max)
    }
    fn tokens(&mut self, n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|_| (self.next() % (vocab as u64 - 1)) as u32).collect()
    }
}

/// A byte-level tokenizer of 256 tokens with no end-of-sequence token: the engine needs one to
/// detokenize; the random model's ids past 255 decode to nothing.
fn tokenizer(dir: &std::path::Path) -> ModelTokenizer {
    let vocab: serde_json::Map<String, Value> = (0..256u32)
        .map(|b| {
            let c = char::from_u32(if (33..=126).contains(&b) { b } else { 0x100 + b }).unwrap();
            (c.to_string(), json!(b))
        })
        .collect();
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    ModelTokenizer::from_tokenizer_json(&path).unwrap()
}

/// Submits every job (prompt, each sample's length; generated past end of sequence to exactly
/// those lengths) through `submit` and waits for all: wall seconds and output tokens.
fn run_jobs(
    submit: impl Fn(Job) -> Result<(), subgoal::model::GenError>,
    jobs: &[(Vec<u32>, Vec<usize>)],
    rt: &tokio::runtime::Runtime,
) -> (f64, u64) {
    let started = Instant::now();
    let mut receivers = Vec::new();
    for (i, (prompt, lengths)) in jobs.iter().enumerate() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let params = SamplingParams {
            n: lengths.len(),
            temperature: 1.0,
            top_p: 0.95,
            max_new_tokens: *lengths.iter().max().unwrap(),
            stop: vec![],
            seed: Some(i as u64),
        };
        let mut job = Job::new(prompt.clone(), params, false, tx);
        job.ignore_eos = true;
        job.sample_max_tokens = Some(lengths.clone());
        submit(job).unwrap();
        receivers.push(rx);
    }
    let tokens: u64 = rt.block_on(async {
        let mut total = 0u64;
        for mut rx in receivers {
            while let Some(e) = rx.recv().await {
                if let Event::Done { completion, .. } = e {
                    assert!(completion.error.is_none(), "{completion:?}");
                    total += completion.completion_tokens as u64;
                }
            }
        }
        total
    });
    (started.elapsed().as_secs_f64(), tokens)
}

/// Bytes a decode step reads of the weights of `cfg`: the layers' projections at `per` bytes a
/// weight and the output projection in bf16 (the embedding only at the rows it looks up).
fn weight_bytes(cfg: &Config, per: f64) -> f64 {
    let layers = cfg.layers * (4 * cfg.hidden * cfg.hidden + 3 * cfg.hidden * cfg.intermediate);
    2.0 * (cfg.vocab * cfg.hidden) as f64 + per * layers as f64
}

/// `weight_bytes` with the projections in E4M3 and their block factors (4 bytes per 128×128).
fn weight_bytes_fp8(cfg: &Config) -> f64 {
    weight_bytes(cfg, 1.0 + 4.0 / (128.0 * 128.0))
}

/// Bytes of keys and values a cached position holds across the layers: bf16, or (`fp8`) the FP8
/// cache's byte per element and factor per (position, head) row (the cache's own block size at
/// one position).
fn kv_bytes_per_token(cfg: &Config, fp8: bool) -> f64 {
    PagedCache::block_bytes(cfg, 1, KvFormat::of(DType::BF16, fp8)) as f64
}

/// Engine report `a`'s tokens/s over `b`'s.
fn rate_ratio(a: &Value, b: &Value) -> Value {
    json!(r(a["tokens_per_s"].as_f64().unwrap_or(0.0) / b["tokens_per_s"].as_f64().unwrap_or(f64::NAN)))
}

/// Runs jobs through a fresh engine (its cache in FP8 with `kv_fp8`); returns wall seconds,
/// output tokens, the engine's counters and its cache blocks.
fn engine_run(
    model: &Arc<Model>,
    tok: &Arc<ModelTokenizer>,
    jobs: &[(Vec<u32>, Vec<usize>)],
    rt: &tokio::runtime::Runtime,
    kv_fp8: bool,
) -> (f64, u64, MetricsSnapshot, usize) {
    let opts = EngineOptions { kv_fp8, ..EngineOptions::default() };
    let engine = Engine::start(model.clone(), tok.clone(), &opts).expect("start the engine");
    let (wall, tokens) = run_jobs(|job| engine.submit(job), jobs, rt);
    let m = engine.metrics.snapshot();
    let blocks = engine.cache_blocks;
    drop(engine);
    (wall, tokens, m, blocks)
}

/// `engine_run` over one engine per device behind the router: wall seconds, output tokens and
/// each device's counts.
fn router_run(
    models: &[(String, Arc<Model>)],
    tok: &Arc<ModelTokenizer>,
    jobs: &[(Vec<u32>, Vec<usize>)],
    rt: &tokio::runtime::Runtime,
) -> (f64, u64, Vec<DeviceStats>) {
    let engines = models
        .iter()
        .map(|(d, m)| (d.clone(), Engine::start(m.clone(), tok.clone(), &EngineOptions::default()).expect("start")))
        .collect();
    let router = Router::new(engines).expect("the router");
    let (wall, tokens) = run_jobs(|job| router.submit(job), jobs, rt);
    (wall, tokens, router.stats())
}

/// The engine of before: one prompt at a time, prefilled once, its cache copied to `k` rows,
/// decoded as one batch with rows leaving as their samples end. `None` on out-of-memory.
fn static_batch(model: &Model, prompt: &[u32], lengths: &[usize], device: &Device) -> Option<(f64, u64)> {
    let k = lengths.len();
    let started = Instant::now();
    let mut cache = KvCache::new(model.cfg.layers);
    let ids = Tensor::new(prompt, device).ok()?.unsqueeze(0).ok()?;
    let logits = model.forward(&ids, 0, &mut cache).ok()?;
    let rows = logits.broadcast_as((k, model.cfg.vocab)).ok()?.contiguous().ok()?;
    let mut next = model.sample_rows(&rows, 1.0, 0.95, 1).ok()?;
    cache.expand(k).ok()?;
    let mut alive: Vec<usize> = (0..k).collect();
    let mut made = vec![1usize; k];
    let mut pos = prompt.len();
    let mut tokens = k as u64;
    loop {
        let keep: Vec<usize> = (0..alive.len()).filter(|&i| made[alive[i]] < lengths[alive[i]]).collect();
        if keep.is_empty() {
            break;
        }
        if keep.len() < alive.len() {
            let idx: Vec<u32> = keep.iter().map(|&i| i as u32).collect();
            cache.retain(&idx).ok()?;
            next = keep.iter().map(|&i| next[i]).collect();
            alive = keep.iter().map(|&i| alive[i]).collect();
        }
        let input = Tensor::from_vec(next.clone(), (alive.len(), 1), device).ok()?;
        let logits = model.forward(&input, pos, &mut cache).ok()?;
        pos += 1;
        next = model.sample_rows(&logits, 1.0, 0.95, pos as u64).ok()?;
        for &a in &alive {
            made[a] += 1;
        }
        tokens += alive.len() as u64;
    }
    device.synchronize().ok()?;
    Some((started.elapsed().as_secs_f64(), tokens))
}

/// Tokens/s the memory bandwidth allows at the engine's occupancy: every step reads the weights,
/// each decode row its cached positions (`shared`: a request's common prompt once).
fn hbm_limit(m: &MetricsSnapshot, tokens: u64, weight_bytes: f64, kv_bytes: f64, bandwidth: f64, shared: bool) -> f64 {
    let positions = m.positions_read - if shared { m.positions_shared } else { 0 };
    let bytes = m.steps as f64 * weight_bytes + positions as f64 * kv_bytes;
    tokens as f64 / (bytes / bandwidth)
}

fn engine_report(wall: f64, tokens: u64, m: &MetricsSnapshot, blocks: usize, weights: f64, kv: f64, bw: f64) -> Value {
    let rate = tokens as f64 / wall;
    let limit = hbm_limit(m, tokens, weights, kv, bw, false);
    let limit_shared = hbm_limit(m, tokens, weights, kv, bw, true);
    json!({
        "wall_s": r(wall), "output_tokens": tokens, "tokens_per_s": r(rate),
        "hbm_limit_tokens_per_s": r(limit), "fraction_of_limit": r(rate / limit),
        "hbm_limit_shared_prefix_once_tokens_per_s": r(limit_shared), "fraction_of_shared_limit": r(rate / limit_shared),
        "mean_decode_rows_per_step": r(m.decode_rows as f64 / m.steps.max(1) as f64),
        "steps": m.steps, "preemptions": m.preemptions, "prefix_hits": m.prefix_hits, "cache_blocks": blocks,
        // Where a step's time goes on the engine thread (the device's time is the rest of the
        // wall time per step, overlapped with `forward` as far as launches run ahead).
        "ms_per_step": r(wall * 1e3 / m.steps.max(1) as f64),
        "engine_thread_ms_per_step": {
            "plan": r(m.plan_us as f64 / 1e3 / m.steps.max(1) as f64),
            "forward": r(m.forward_us as f64 / 1e3 / m.steps.max(1) as f64),
            "after": r(m.after_us as f64 / 1e3 / m.steps.max(1) as f64),
        },
        // The device's own time from a step's first upload to the end of its forward pass: the
        // rest of `ms_per_step` is sampling and the device waiting for the host.
        "device_forward_ms_per_step": r(m.device_forward_us as f64 / 1e3 / m.steps.max(1) as f64),
    })
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "subgoal=debug".into()),
        )
        .try_init();
    let args: Vec<String> = std::env::args().collect();
    let layers: usize = arg(&args, "--layers", 30);
    let prompts: usize = arg(&args, "--prompts", 2);
    let k: usize = arg(&args, "--k", 32);
    let mean: f64 = arg(&args, "--mean", 4500.0);
    let max: usize = arg(&args, "--max", 8192);
    // As many sequences as fit an H100's cache at each shape's full length (about 50 at 2,176
    // positions, 26 at 4,096).
    let trt_short: usize = arg(&args, "--trt-seqs-short", 48);
    let trt_long: usize = arg(&args, "--trt-seqs-long", 24);
    let baseline_k: usize = arg(&args, "--baseline-k", 8);
    let no_baseline = args.iter().any(|a| a == "--no-baseline");
    // `--gemm-fp8-pick SPEC`: the FP8 GEMM's kernel by row count for the whole run
    // (`fused::set_gemm_fp8_pick`); `--gemm-fp8-picks A;B`: the TensorRT shapes' FP8 arm again
    // under each.
    let gemm_pick = Some(arg(&args, "--gemm-fp8-pick", String::new())).filter(|s| !s.is_empty());
    let gemm_default = set_gemm_fp8_pick(gemm_pick.as_deref());
    let gemm_picks: Vec<String> = arg(&args, "--gemm-fp8-picks", String::new())
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let device = Device::new_cuda(0).expect("a CUDA device (this benchmark needs the cuda build and a GPU)");
    let gpu = gpu_common::gpu_name();
    let bandwidth = arg(&args, "--bandwidth", gpu_common::hbm_tb_per_s(&gpu)) * 1e12;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tok = Arc::new(tokenizer(dir.path()));
    let mut rng = Rng(7);

    // The Prover-V2-7B shape (skipped with --only-trt: a second model made in the same process
    // after a first one may find its memory not yet returned).
    let only_trt = args.iter().any(|a| a == "--only-trt");
    let cfg = Config::llama_7b(layers, 102400);
    let kv_bytes = kv_bytes_per_token(&cfg, false);
    let kv_fp8 = args.iter().any(|a| a == "--kv-fp8");
    let fp8 = args.iter().any(|a| a == "--fp8");
    // `--fp8-dense-layers 0,-1`: the FP8 arms with those layers' projections kept in bf16.
    let fp8_format = WeightFormat::Fp8 { dense_layers: gpu_common::fp8_dense_layers(&args) };
    let kv_bytes_fp8 = kv_bytes_per_token(&cfg, true);
    let t0 = Instant::now();
    let progress = |what: &str, v: &Value| eprintln!("[{:7.1}s] {what}: {v}", t0.elapsed().as_secs_f64());
    let (parity, b1, passk) = if only_trt {
        (Value::Null, Value::Null, Value::Null)
    } else {
        // The Prover-V2-7B shape (its weights kept for the FP8 model of `--fp8`).
        let weights = Model::random_weights(&cfg, &device, DType::BF16).expect("random weights");
        let model =
            Arc::new(Model::from_weights(cfg.clone(), weights.clone(), &device, DType::BF16, false).expect("model"));
        let weight_bytes = weight_bytes(&cfg, 2.0);

        progress("model", &json!({"weight_bytes": weight_bytes}));
        let mut parity = paged_vs_static(&model, &device, &mut rng);
        progress("paged_vs_static", &parity);
        parity["cascade_vs_plain"] = cascade_vs_plain(&model, &device, &mut rng, false);
        progress("cascade_vs_plain", &parity["cascade_vs_plain"]);
        parity["cascade_vs_plain_fp8_cache"] = cascade_vs_plain(&model, &device, &mut rng, true);
        progress("cascade_vs_plain, fp8 cache", &parity["cascade_vs_plain_fp8_cache"]);
        {
            // One layer: no depth for rounding differences to grow through, so what remains is
            // the kernels' own.
            let one = Model::random(Config::llama_7b(1, cfg.vocab), &device, DType::BF16).expect("random model");
            parity["cascade_vs_plain_1_layer"] = cascade_vs_plain(&one, &device, &mut rng, false);
            progress("cascade_vs_plain, 1 layer", &parity["cascade_vs_plain_1_layer"]);
            parity["cascade_vs_plain_1_layer_fp8_cache"] = cascade_vs_plain(&one, &device, &mut rng, true);
            progress("cascade_vs_plain, 1 layer, fp8 cache", &parity["cascade_vs_plain_1_layer_fp8_cache"]);
        }
        device.synchronize().unwrap();

        let b1 = {
            let prompt = rng.tokens(512, cfg.vocab);
            let (wall, tokens, m, blocks) = engine_run(&model, &tok, &[(prompt.clone(), vec![256])], &rt, false);
            let mut v = engine_report(wall, tokens, &m, blocks, weight_bytes, kv_bytes, bandwidth);
            // The same through the static path (its fused one-row step), for the ratio.
            if let Some((w, t)) = static_batch(&model, &prompt, &[256], &device) {
                v["static_tokens_per_s"] = json!(r(t as f64 / w));
            }
            v
        };
        progress("batch1", &b1);

        let passk_jobs: Vec<(Vec<u32>, Vec<usize>)> = (0..prompts)
            .map(|_| {
                let len = 300 + (rng.next() % 1201) as usize;
                (rng.tokens(len, cfg.vocab), (0..k).map(|_| rng.length(mean, max)).collect())
            })
            .collect();
        // One engine run over the pass@k jobs, its report also in the log (a run stopped by a time
        // limit keeps it) with the raw counters.
        let passk_run = |model: &Arc<Model>, weight_bytes: f64, what: &str, fp8: bool, cascade: bool| {
            model.set_cascade(cascade);
            let (wall, tokens, m, blocks) = engine_run(model, &tok, &passk_jobs, &rt, fp8);
            model.set_cascade(true);
            let v = engine_report(
                wall,
                tokens,
                &m,
                blocks,
                weight_bytes,
                if fp8 { kv_bytes_fp8 } else { kv_bytes },
                bandwidth,
            );
            progress(what, &json!({"report": v, "metrics": m}));
            v
        };
        let mut passk = json!({
            "prompts": prompts, "k": k, "mean_length": r(passk_jobs.iter().flat_map(|j| &j.1).sum::<usize>() as f64 / (prompts * k) as f64),
            "engine": passk_run(&model, weight_bytes, "passk engine", false, true),
        });
        // The same engine with every row reading its whole prefix itself, for the ratio.
        let cascade_ab = args.iter().any(|a| a == "--cascade-ab");
        if cascade_ab {
            let v = passk_run(&model, weight_bytes, "passk engine, no cascade", false, false);
            passk["cascade_over_plain"] = rate_ratio(&passk["engine"], &v);
            passk["engine_no_cascade"] = v;
        }
        if kv_fp8 {
            let v = passk_run(&model, weight_bytes, "passk engine, fp8 cache", true, true);
            passk["fp8_cache_over_bf16"] = rate_ratio(&v, &passk["engine"]);
            passk["engine_fp8_cache"] = v;
            if cascade_ab {
                let v = passk_run(&model, weight_bytes, "passk engine, fp8 cache, no cascade", true, false);
                passk["fp8_cache_cascade_over_plain"] = rate_ratio(&passk["engine_fp8_cache"], &v);
                passk["engine_fp8_cache_no_cascade"] = v;
            }
        }
        if fp8 {
            let t = Instant::now();
            let m8 = Arc::new(
                Model::from_weights(cfg.clone(), weights.clone(), &device, DType::BF16, fp8_format.clone())
                    .expect("the FP8 model"),
            );
            progress("fp8 model", &json!({"quantize_s": r(t.elapsed().as_secs_f64())}));
            let v = passk_run(&m8, weight_bytes_fp8(&cfg), "passk engine, fp8 weights and cache", true, true);
            passk["fp8_weights_and_cache_over_bf16"] = rate_ratio(&v, &passk["engine"]);
            passk["engine_fp8_weights_fp8_cache"] = v;
        }
        drop(weights);
        if !no_baseline {
            let mut bk = baseline_k.min(k);
            let mut done = None;
            while bk >= 1 && done.is_none() {
                let mut total = (0.0, 0u64);
                let mut ok = true;
                for (prompt, lengths) in &passk_jobs {
                    match static_batch(&model, prompt, &lengths[..bk], &device) {
                        Some((w, t)) => total = (total.0 + w, total.1 + t),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if ok {
                    done = Some((bk, total));
                } else {
                    bk /= 2;
                }
            }
            progress("passk static", &json!({"done": done.map(|(k, (w, t))| (k, w, t))}));
            if let Some((bk, (w, t))) = done {
                let rate = t as f64 / w;
                passk["static_batch"] = json!({"k": bk, "wall_s": r(w), "output_tokens": t, "tokens_per_s": r(rate)});
                passk["engine_over_static"] = rate_ratio(&passk["engine"], &json!({"tokens_per_s": rate}));
            }
        }
        // Every GPU named by --devices: the workload times the devices, one engine each.
        if let Some(spec) = args.iter().position(|a| a == "--devices").and_then(|i| args.get(i + 1)) {
            let names = subgoal::model::embedded::parse_devices(spec).expect("--devices");
            let mut models = vec![(names[0].clone(), model.clone())];
            for name in &names[1..] {
                let d = subgoal::model::embedded::parse_device(name).expect("device");
                models
                    .push((name.clone(), Arc::new(Model::random(cfg.clone(), &d, DType::BF16).expect("random model"))));
            }
            let jobs: Vec<(Vec<u32>, Vec<usize>)> = (0..names.len()).flat_map(|_| passk_jobs.iter().cloned()).collect();
            let (wall, tokens, stats) = router_run(&models, &tok, &jobs, &rt);
            let rate = tokens as f64 / wall;
            let one = passk["engine"]["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
            let mean = stats.iter().map(|s| s.metrics.generated_tokens as f64).sum::<f64>() / stats.len() as f64;
            let per: Vec<Value> = stats
                .iter()
                .map(|s| {
                    json!({"device": s.device, "jobs": s.jobs, "samples": s.answered,
                    "generated_tokens": s.metrics.generated_tokens,
                    "vs_mean": r(s.metrics.generated_tokens as f64 / mean), "healthy": s.healthy})
                })
                .collect();
            let worst =
                stats.iter().map(|s| (s.metrics.generated_tokens as f64 / mean - 1.0).abs()).fold(0.0, f64::max);
            passk["devices"] = json!({"devices": names, "prompts": jobs.len(), "wall_s": r(wall), "output_tokens": tokens,
                "tokens_per_s": r(rate), "one_gpu_tokens_per_s": one, "speedup": r(rate / one),
                "largest_deviation_from_mean": r(worst), "per_device": per});
            progress("devices", &passk["devices"]);
            drop(models);
        }
        drop(model);
        // Frees are queued on the stream: let them finish before the next model is made.
        device.synchronize().unwrap();

        (parity, b1, passk)
    };
    // TensorRT-LLM's Llama-2-7B shapes.
    let cfg2 = Config::llama_7b(32, 32000);
    let (kv2, kv2_fp8) = (kv_bytes_per_token(&cfg2, false), kv_bytes_per_token(&cfg2, true));
    let w2 = weight_bytes(&cfg2, 2.0);
    let no_trt = args.iter().any(|a| a == "--no-trt");
    let (model2, model2_fp8) = if no_trt {
        (None, None)
    } else {
        let weights = Model::random_weights(&cfg2, &device, DType::BF16).expect("random weights");
        let m8 = fp8.then(|| {
            Arc::new(
                Model::from_weights(cfg2.clone(), weights.clone(), &device, DType::BF16, fp8_format.clone())
                    .expect("FP8 model"),
            )
        });
        (Some(Arc::new(Model::from_weights(cfg2.clone(), weights, &device, DType::BF16, false).expect("model"))), m8)
    };
    let mut trt = serde_json::Map::new();
    for (input, output, seqs) in [(128usize, 2048usize, trt_short), (2048, 2048, trt_long)] {
        let Some(model2) = &model2 else { break };
        if seqs == 0 {
            continue; // `--trt-seqs-short 0` or `--trt-seqs-long 0` leaves that shape out
        }
        let jobs: Vec<(Vec<u32>, Vec<usize>)> =
            (0..seqs).map(|_| (rng.tokens(input, cfg2.vocab), vec![output])).collect();
        let (wall, tokens, m, blocks) = engine_run(model2, &tok, &jobs, &rt, false);
        let mut v = engine_report(wall, tokens, &m, blocks, w2, kv2, bandwidth);
        if kv_fp8 {
            let (wall, tokens, m, blocks) = engine_run(model2, &tok, &jobs, &rt, true);
            let f = engine_report(wall, tokens, &m, blocks, w2, kv2_fp8, bandwidth);
            v["fp8_cache_over_bf16"] = rate_ratio(&f, &v);
            v["engine_fp8_cache"] = f;
        }
        if let Some(m8) = &model2_fp8 {
            let (wall, tokens, m, blocks) = engine_run(m8, &tok, &jobs, &rt, true);
            let f = engine_report(wall, tokens, &m, blocks, weight_bytes_fp8(&cfg2), kv2_fp8, bandwidth);
            v["fp8_weights_and_cache_over_bf16"] = rate_ratio(&f, &v);
            v["engine_fp8_weights_fp8_cache"] = f;
            // `--gemm-fp8-picks A;B`: the FP8 model again under each other pick of GEMM kernel.
            let mut picks = serde_json::Map::new();
            for spec in gemm_picks.iter() {
                let shown = set_gemm_fp8_pick(Some(spec));
                let (wall, tokens, m, blocks) = engine_run(m8, &tok, &jobs, &rt, true);
                let mut f = engine_report(wall, tokens, &m, blocks, weight_bytes_fp8(&cfg2), kv2_fp8, bandwidth);
                f["over_default_pick"] = rate_ratio(&f, &v["engine_fp8_weights_fp8_cache"]);
                f["pick"] = shown;
                picks.insert(spec.clone(), f);
                set_gemm_fp8_pick(gemm_pick.as_deref());
            }
            if !picks.is_empty() {
                v["engine_fp8_weights_fp8_cache_by_pick"] = Value::Object(picks);
            }
        }
        if !no_baseline {
            // The engine of before runs one sequence at a time; two give its rate.
            let mut total = (0.0, 0u64);
            for (prompt, lengths) in jobs.iter().take(2) {
                if let Some((w, t)) = static_batch(model2, prompt, lengths, &device) {
                    total = (total.0 + w, total.1 + t);
                }
            }
            if total.0 > 0.0 {
                v["static_batch_tokens_per_s"] = json!(r(total.1 as f64 / total.0));
            }
        }
        progress(&format!("trt {input}/{output}"), &v);
        v["sequences"] = json!(seqs);
        trt.insert(format!("{input}/{output}"), v);
    }
    let report = json!({
        "benchmark": "gpu_serve",
        "gpu": gpu,
        "bandwidth_tb_per_s": bandwidth / 1e12,
        "shape": {"layers": layers, "hidden": 4096, "heads": 32, "kv_heads": 32, "vocab": 102400, "dtype": "bf16", "kv_bytes_per_token": kv_bytes},
        "paged_vs_static": parity,
        "batch1": b1,
        "passk": passk,
        "trt_llama2_7b": trt,
        "gemm_fp8_pick": gemm_default,
        "fp8_dense_layers": match &fp8_format { WeightFormat::Fp8 { dense_layers } => json!(dense_layers), _ => Value::Null },
        "published_trt_llm_v0_9_fp8_h200": {"128/2048": 8348, "2048/2048": 3522},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// The engine's fused paged path against the static contiguous one, same weights and tokens: a
/// 700-token prompt (tiled prefill attention over the blocks), then 8 greedy steps (paged split-K
/// attention), with a second sequence beside the one compared.
/// Shared-prefix (cascade) attention against each row reading all its blocks, on one decode step
/// over the same cache: two prompts in shared blocks, each with rows of their own suffixes (so
/// two groups at different offsets), one row with a prompt of its own, and every row's logits
/// compared. Over a bf16 cache and, with `fp8`, an FP8 one.
fn cascade_vs_plain(model: &Model, device: &Device, rng: &mut Rng, fp8: bool) -> Value {
    let bs = 16;
    let format = KvFormat::of(DType::BF16, fp8);
    let cache = PagedCache::new(&model.cfg, 512, bs, format, device).unwrap();
    let mut next_block = 0u32;
    let mut take = |n: usize| -> Vec<u32> {
        let t = (next_block..next_block + n as u32).collect();
        next_block += n as u32;
        t
    };
    // (prompt length, rows sharing it): 704 and 1,216 positions (whole blocks), and a lone row.
    let mut rows: Vec<(Vec<u32>, usize)> = Vec::new(); // (block table, context before the step)
    for (len, n) in [(704usize, 9usize), (1216, 5), (300, 1)] {
        let prompt = rng.tokens(len, model.cfg.vocab);
        let shared = take(len.div_ceil(bs));
        let mut b = Batch::default();
        b.push(&prompt, 0, shared.clone(), false);
        model.forward_paged(&b, &cache).unwrap();
        for _ in 0..n {
            let own = 1 + (rng.next() % 60) as usize;
            let start = if len % bs == 0 { shared.clone() } else { shared[..len / bs].to_vec() };
            let mut table = start.clone();
            // A prompt ending mid-block gets its own copy of that block (copy-on-write).
            if len % bs != 0 {
                let copy = take(1)[0];
                cache.copy_block(shared[len / bs], copy).unwrap();
                table.push(copy);
            }
            table.extend(take((len + own + 1).div_ceil(bs) - table.len()));
            let mut b = Batch::default();
            b.push(&rng.tokens(own, model.cfg.vocab), len, table.clone(), false);
            model.forward_paged(&b, &cache).unwrap();
            rows.push((table, len + own));
        }
    }
    let mut step = Batch::default();
    for (table, context) in &rows {
        step.push(&[rng.tokens(1, model.cfg.vocab)[0]], *context, table.clone(), true);
    }
    model.set_cascade(false);
    let plain = model.forward_paged(&step, &cache).unwrap().to_vec2::<f32>().unwrap();
    model.set_cascade(true);
    let cascade = model.forward_paged(&step, &cache).unwrap().to_vec2::<f32>().unwrap();
    let mut v = gpu_common::logit_agreement(&plain, &cascade);
    v["layers"] = json!(model.cfg.layers);
    v["groups"] = json!(2);
    v
}

fn paged_vs_static(model: &Model, device: &Device, rng: &mut Rng) -> Value {
    let prompt = rng.tokens(700, model.cfg.vocab);
    let bs = 16;
    let cache = PagedCache::new(&model.cfg, 128, bs, KvFormat::Dense(DType::BF16), device).unwrap();
    let table: Vec<u32> = (0..64).collect();
    let mut batch = Batch::default();
    batch.push(&prompt, 0, table.clone(), true);
    let mut paged = vec![model.forward_paged(&batch, &cache).unwrap().to_vec2::<f32>().unwrap().remove(0)];
    let mut kv = KvCache::new(model.cfg.layers);
    let ids = Tensor::new(prompt.as_slice(), device).unwrap().unsqueeze(0).unwrap();
    let mut generic = vec![model.forward(&ids, 0, &mut kv).unwrap().to_vec2::<f32>().unwrap().remove(0)];
    // A second sequence in the batch (its own blocks) beside the one compared.
    let other = rng.tokens(40, model.cfg.vocab);
    let other_table: Vec<u32> = (64..128).collect();
    let mut b2 = Batch::default();
    b2.push(&other, 0, other_table.clone(), false);
    model.forward_paged(&b2, &cache).unwrap();
    for step in 0..8 {
        let tok = gpu_common::argmax(paged.last().unwrap()) as u32;
        let mut b = Batch::default();
        b.push(&[tok], prompt.len() + step, table.clone(), true);
        b.push(&[other[step % other.len()]], other.len() + step, other_table.clone(), false);
        paged.push(model.forward_paged(&b, &cache).unwrap().to_vec2::<f32>().unwrap().remove(0));
        let ids = Tensor::new(&[tok], device).unwrap().unsqueeze(0).unwrap();
        generic.push(model.forward(&ids, prompt.len() + step, &mut kv).unwrap().to_vec2::<f32>().unwrap().remove(0));
    }
    gpu_common::logit_agreement(&generic, &paged)
}
