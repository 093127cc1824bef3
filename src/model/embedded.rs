//! The embedded backend: a model run in-process with candle, on the CPU or a CUDA device, behind
//! the serving engine (`engine`): every prompt of every concurrent request goes into its one
//! queue, is read once, and its `n` samples share the prompt's cache blocks and are decoded in
//! whatever batch is running, each handed back the moment it finishes (`Generator::stream`).
//! Sample `i` draws from its own generator seeded `seed + i`, so a seed reproduces every sample
//! whatever else is running. Dropping the request's stream (or future) drops its work at the
//! engine's next step.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};
use futures::StreamExt;

use super::engine::router::Router;
use super::engine::{Engine, EngineOptions, Event, Job, MetricsSnapshot};
use super::llama::{KvCache, Model, WeightFormat};
use super::tokenizer::ModelTokenizer;
use super::{GenError, GenEvent, GenFuture, GenRequest, Generator, Prompt, SampleDone, SampleStream};

#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// `cpu` (default), `cuda`, `cuda:N`, a comma list or `cuda:all`: one engine per device,
    /// requests routed among them (`engine::router`).
    pub device: String,
    /// Activation and dense-weight precision: `f32`, `bf16`, `f16` (default: f32 on CPU, bf16 on
    /// CUDA), or `fp8`: projections in E4M3 with 128×128 block factors, activations in f32 (CPU)
    /// or bf16 (CUDA).
    pub dtype: Option<String>,
    /// With `fp8`: the layers whose projections stay dense (indices, negative from the end: the
    /// first and last layers, `[0, -1]`, carry the most of FP8's loss on small models).
    pub fp8_dense_layers: Vec<i64>,
    /// A `tokenizer.json` to use instead of the model's own.
    pub tokenizer: Option<PathBuf>,
    /// The serving engine's cache and batch sizes.
    pub engine: EngineOptions,
}

/// Prefill and decode counts of the last request, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct GenStats {
    pub prefill_tokens: usize,
    pub prefill_ms: f64,
    /// Tokens decoded over all samples.
    pub decode_tokens: usize,
    pub decode_ms: f64,
}

pub struct Embedded {
    model: Arc<Model>,
    tok: Arc<ModelTokenizer>,
    router: Router,
    desc: String,
    stats: Arc<Mutex<GenStats>>,
}

pub fn parse_device(spec: &str) -> Result<Device, GenError> {
    let bad = |d: String| GenError::Load { model: format!("device {spec}"), detail: d };
    match spec {
        "" | "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| bad(format!("{e} (build with --features cuda)"))),
        s => match s.strip_prefix("cuda:").and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => Device::new_cuda(i).map_err(|e| bad(format!("{e} (build with --features cuda)"))),
            None => Err(bad("expected cpu, cuda or cuda:N".into())),
        },
    }
}

/// The devices `--device` names, one engine each: `cpu`, `cuda`, `cuda:N`, a comma list
/// (`cuda:0,1,3` or `cuda:0,cuda:1`; `cpu,cpu` runs two CPU engines), or `cuda:all` (every
/// CUDA device the driver lists).
pub fn parse_devices(spec: &str) -> Result<Vec<String>, GenError> {
    let bad = |d: &str| GenError::Load { model: format!("device {spec}"), detail: d.to_string() };
    let mut out = Vec::new();
    let mut last_cuda = false;
    for item in spec.split(',').map(str::trim) {
        match item {
            "" if spec.trim().is_empty() => out.push("cpu".to_string()),
            "cuda:all" => {
                let n = (0..64).take_while(|&i| Device::new_cuda(i).is_ok()).count();
                if n == 0 {
                    return Err(bad("cuda:all: no CUDA device (a CUDA build and a GPU are needed)"));
                }
                out.extend((0..n).map(|i| format!("cuda:{i}")));
                last_cuda = true;
            }
            i if i.parse::<usize>().is_ok() && last_cuda => out.push(format!("cuda:{i}")),
            "cpu" => {
                out.push(item.to_string());
                last_cuda = false;
            }
            "cuda" => {
                out.push("cuda:0".to_string());
                last_cuda = true;
            }
            i if i.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok()) => {
                out.push(item.to_string());
                last_cuda = true;
            }
            _ => return Err(bad("expected cpu, cuda, cuda:N, a comma list of them, or cuda:all")),
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(d) = out.iter().find(|d| d.starts_with("cuda") && !seen.insert(d.as_str())) {
        return Err(bad(&format!("{d} is named twice (one engine per GPU)")));
    }
    Ok(out)
}

/// The compute precision and whether the projections are held in FP8.
fn parse_dtype(spec: Option<&str>, device: &Device) -> Result<(DType, bool), GenError> {
    match spec {
        None => Ok((if device.is_cpu() { DType::F32 } else { DType::BF16 }, false)),
        Some("f32") => Ok((DType::F32, false)),
        Some("bf16") => Ok((DType::BF16, false)),
        Some("f16") => Ok((DType::F16, false)),
        Some("fp8") if device.is_cpu() => Ok((DType::F32, true)),
        // On CUDA the activations stay in bf16; the projections read E4M3 bytes (measured on an
        // H100 at the 7B shape, 2026-12-06: 1.24x bf16's decode rate at one row, 1.11x at 16,
        // 1.03x at 32, 0.96x at 64; docs/models.md, FP8).
        Some("fp8") => Ok((DType::BF16, true)),
        Some(other) => Err(GenError::Invalid(format!("dtype {other:?}: expected f32, bf16, f16 or fp8"))),
    }
}

/// The GGUF file a path names: the file itself, or the only `.gguf` in a directory without
/// `config.json`.
fn gguf_in(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    if path.join("config.json").exists() {
        return None;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    (found.len() == 1).then(|| found.remove(0))
}

/// The model at `path` on one device, its tokenizer, and a description.
fn load_one(path: &Path, opts: &EmbeddedOptions, device: &Device) -> Result<(Model, ModelTokenizer, String), GenError> {
    let load = |d: String| GenError::Load { model: path.display().to_string(), detail: d };
    let device = device.clone();
    let (dtype, fp8) = parse_dtype(opts.dtype.as_deref(), &device)?;
    if !fp8 && !opts.fp8_dense_layers.is_empty() {
        return Err(GenError::Invalid("--fp8-dense-layers applies to --dtype fp8 only".into()));
    }
    let format =
        if fp8 { WeightFormat::Fp8 { dense_layers: opts.fp8_dense_layers.clone() } } else { WeightFormat::Dense };
    let (model, tok, kind) = match gguf_in(path) {
        Some(file) => {
            let (ct, mut f) = super::llama::read_gguf(&file).map_err(|e| load(e.to_string()))?;
            let tok = match &opts.tokenizer {
                Some(t) => ModelTokenizer::from_tokenizer_json(t)?,
                None => ModelTokenizer::from_gguf(&ct.metadata)?,
            };
            if fp8 {
                return Err(load(
                    "--dtype fp8 takes a Hugging Face directory; a GGUF file is quantized already \
                     (`subgoal convert FILE DIR --dtype fp8` writes an FP8 directory from it)"
                        .into(),
                ));
            }
            let model = Model::from_gguf(&ct, &mut f, &device, dtype).map_err(|e| load(e.to_string()))?;
            (model, tok, "gguf")
        }
        None => {
            let tj = opts.tokenizer.clone().unwrap_or_else(|| path.join("tokenizer.json"));
            let tok = ModelTokenizer::from_tokenizer_json(&tj)?;
            let model = Model::from_safetensors(path, &device, dtype, format).map_err(|e| load(e.to_string()))?;
            (model, tok, "safetensors")
        }
    };
    if tok.vocab_size() > model.cfg.vocab {
        tracing::warn!(
            tokenizer = tok.vocab_size(),
            model = model.cfg.vocab,
            "the tokenizer knows more tokens than the model"
        );
    }
    let desc = format!(
        "embedded:{} ({kind}, {}, {} layers, {} on {}{})",
        path.display(),
        model.cfg.arch,
        model.cfg.layers,
        match (fp8, opts.fp8_dense_layers.as_slice()) {
            (false, _) => format!("{dtype:?}"),
            (true, []) => format!("fp8 weights, {dtype:?}"),
            (true, kept) => format!("fp8 weights (layers {kept:?} dense), {dtype:?}"),
        },
        if device.is_cpu() { "cpu" } else { "cuda" },
        if opts.engine.kv_fp8 { ", fp8 KV cache" } else { "" }
    );
    Ok((model, tok, desc))
}

impl Embedded {
    /// Loads a GGUF file, or a Hugging Face directory (`config.json`, `tokenizer.json`,
    /// `*.safetensors`), or a directory holding one GGUF file.
    pub fn load(path: &Path, opts: &EmbeddedOptions) -> Result<Embedded, GenError> {
        let load = |d: String| GenError::Load { model: path.display().to_string(), detail: d };
        if !path.exists() {
            return Err(load("no such file or directory".into()));
        }
        let devices = parse_devices(&opts.device)?;
        let started = Instant::now();
        let mut engines = Vec::with_capacity(devices.len());
        let mut first: Option<(Arc<Model>, Arc<ModelTokenizer>, String)> = None;
        for name in &devices {
            // Weights are loaded once per device; engines on one device (`cpu,cpu`) share them.
            let (model, tok) = match (&first, name.as_str()) {
                (Some((m, t, _)), "cpu") if m.device().is_cpu() => (m.clone(), t.clone()),
                _ => {
                    let (model, tok, desc) = load_one(path, opts, &parse_device(name)?)?;
                    let (model, tok) = (Arc::new(model), Arc::new(tok));
                    first.get_or_insert((model.clone(), tok.clone(), desc));
                    (model, tok)
                }
            };
            engines.push((name.clone(), Engine::start(model, tok, &opts.engine)?));
        }
        let (model, tok, desc) = first.ok_or_else(|| load("no device".into()))?;
        let desc =
            if devices.len() > 1 { format!("{desc}, {} engines: {}", devices.len(), devices.join(",")) } else { desc };
        tracing::info!(model = %desc, load_ms = started.elapsed().as_millis() as u64, "model loaded");
        let router = Router::new(engines)?;
        Ok(Embedded { model, tok, router, desc, stats: Arc::default() })
    }

    /// The engines' counters, summed over devices.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.router.metrics()
    }

    /// The engines, one per device, and how requests were routed among them.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Blocks of the KV cache, and positions per block.
    pub fn cache_shape(&self) -> (usize, usize) {
        let e = self.router.engines().next().expect("a router has an engine");
        (e.cache_blocks, e.block_size)
    }

    /// Counts of the last request.
    pub fn last_stats(&self) -> GenStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Token ids of a prompt as this model sees it.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, GenError> {
        self.tok.encode_prompt(prompt)
    }

    /// Text of token ids (special tokens left out).
    pub fn decode(&self, ids: &[u32]) -> Result<String, GenError> {
        Ok(self.tok.decode(ids))
    }

    /// Next-token logits after `ids` (one prefill, outside the engine), for tests and tools.
    pub fn next_logits(&self, ids: &[u32]) -> Result<Vec<f32>, GenError> {
        let t = Tensor::new(ids, self.model.device()).and_then(|t| t.unsqueeze(0)).map_err(backend)?;
        let logits = self.model.forward(&t, 0, &mut KvCache::default()).map_err(backend)?;
        logits.i(0).and_then(|l| l.to_vec1::<f32>()).map_err(backend)
    }

    /// The model itself (benchmarks compare paths on it).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}

fn backend(e: candle_core::Error) -> GenError {
    GenError::Backend(e.to_string())
}

impl Generator for Embedded {
    fn generate<'a>(&'a self, req: &'a GenRequest) -> GenFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let mut events = self.stream_events(req, false);
            let mut out: Vec<Vec<Option<super::Completion>>> = vec![vec![None; req.params.n]; req.prompts.len()];
            let mut stats = GenStats::default();
            while let Some(e) = events.next().await {
                match e? {
                    (_, Event::Prefilled { tokens, ms }) => {
                        stats.prefill_tokens += tokens;
                        stats.prefill_ms = stats.prefill_ms.max(ms);
                    }
                    (p, Event::Done { sample, completion }) => {
                        stats.decode_tokens += completion.completion_tokens;
                        out[p][sample] = Some(completion);
                    }
                    (_, Event::Delta { .. }) => {}
                }
            }
            stats.decode_ms = started.elapsed().as_secs_f64() * 1e3 - stats.prefill_ms;
            if let Ok(mut s) = self.stats.lock() {
                *s = stats;
            }
            Ok(out
                .into_iter()
                .map(|p| {
                    p.into_iter().map(|c| c.unwrap_or_else(|| super::Completion::failed("never answered", 0))).collect()
                })
                .collect())
        })
    }

    fn stream<'a>(&'a self, req: &'a GenRequest) -> SampleStream<'a> {
        self.stream_events(req, false)
            .filter_map(|e| {
                futures::future::ready(match e {
                    Ok((prompt, Event::Done { sample, completion })) => {
                        Some(Ok(SampleDone { prompt, sample, completion }))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
            })
            .boxed()
    }

    fn events<'a>(&'a self, req: &'a GenRequest) -> super::EventStream<'a> {
        self.stream_events(req, true)
            .filter_map(|e| {
                futures::future::ready(match e {
                    Ok((prompt, Event::Done { sample, completion })) => {
                        Some(Ok(GenEvent::Done(SampleDone { prompt, sample, completion })))
                    }
                    Ok((prompt, Event::Delta { sample, text })) => Some(Ok(GenEvent::Delta { prompt, sample, text })),
                    Ok((_, Event::Prefilled { .. })) => None,
                    Err(e) => Some(Err(e)),
                })
            })
            .boxed()
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn metrics(&self) -> Option<MetricsSnapshot> {
        Some(self.router.metrics())
    }
}

impl Embedded {
    /// Every event of a request's prompts (text deltas when `deltas`), tagged with the prompt's
    /// index, as the engine sends them.
    pub fn stream_events<'a>(
        &'a self,
        req: &'a GenRequest,
        deltas: bool,
    ) -> futures::stream::BoxStream<'a, Result<(usize, Event), GenError>> {
        if let Err(e) = req.params.validate() {
            return futures::stream::iter(vec![Err(e)]).boxed();
        }
        let mut streams = Vec::with_capacity(req.prompts.len());
        for (i, p) in req.prompts.iter().enumerate() {
            let prompt = match self.tok.encode_prompt(p) {
                Ok(ids) => ids,
                Err(e) => return futures::stream::iter(vec![Err(e)]).boxed(),
            };
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let job = Job::new(prompt, req.params.clone(), deltas, tx);
            if let Err(e) = self.router.submit(job) {
                return futures::stream::iter(vec![Err(e)]).boxed();
            }
            streams.push(tokio_stream_of(rx).map(move |e| Ok((i, e))));
        }
        let span = tracing::info_span!("generate", backend = "embedded", prompts = req.prompts.len(), n = req.params.n);
        let _enter = span.enter();
        futures::stream::select_all(streams).boxed()
    }
}

/// The receiving end of an engine channel as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}
