//! The embedded backend: a model run in-process with candle, on the CPU or a CUDA device.
//!
//! One prompt at a time: a single prefill of the prompt, the KV cache copied to `n` rows, then
//! the `n` samples decoded as one batch, rows dropped from the batch as samples finish (EOS,
//! a stop string, `max_new_tokens`, or the model's context). On the CPU sample `i` draws from its
//! own RNG seeded `seed + i`; on a GPU every row is drawn on the device (`Model::sample_rows`) with
//! noise keyed by the seed and the step. Either way a seed reproduces the samples on that device.
//! Generation runs on a blocking thread;
//! dropping the future stops it at the next token.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tracing::Instrument;

use super::llama::{KvCache, Model};
use super::stop::{Detokenizer, StopMatcher};
use super::tokenizer::ModelTokenizer;
use super::{Completion, FinishReason, GenError, GenFuture, GenRequest, Generator, Prompt, SamplingParams};

#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// `cpu` (default), `cuda` or `cuda:N`.
    pub device: String,
    /// Activation and dense-weight precision: `f32`, `bf16`, `f16` (default: f32 on CPU, bf16 on CUDA).
    pub dtype: Option<String>,
    /// A `tokenizer.json` to use instead of the model's own.
    pub tokenizer: Option<PathBuf>,
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

struct Engine {
    model: Model,
    tok: ModelTokenizer,
}

pub struct Embedded {
    engine: Arc<Mutex<Engine>>,
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

fn parse_dtype(spec: Option<&str>, device: &Device) -> Result<DType, GenError> {
    match spec {
        None => Ok(if device.is_cpu() { DType::F32 } else { DType::BF16 }),
        Some("f32") => Ok(DType::F32),
        Some("bf16") => Ok(DType::BF16),
        Some("f16") => Ok(DType::F16),
        Some(other) => Err(GenError::Invalid(format!("dtype {other:?}: expected f32, bf16 or f16"))),
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

impl Embedded {
    /// Loads a GGUF file, or a Hugging Face directory (`config.json`, `tokenizer.json`,
    /// `*.safetensors`), or a directory holding one GGUF file.
    pub fn load(path: &Path, opts: &EmbeddedOptions) -> Result<Embedded, GenError> {
        let load = |d: String| GenError::Load { model: path.display().to_string(), detail: d };
        if !path.exists() {
            return Err(load("no such file or directory".into()));
        }
        let device = parse_device(&opts.device)?;
        let dtype = parse_dtype(opts.dtype.as_deref(), &device)?;
        let started = Instant::now();
        let (model, tok, kind) = match gguf_in(path) {
            Some(file) => {
                let (ct, mut f) = super::llama::read_gguf(&file).map_err(|e| load(e.to_string()))?;
                let tok = match &opts.tokenizer {
                    Some(t) => ModelTokenizer::from_tokenizer_json(t)?,
                    None => ModelTokenizer::from_gguf(&ct.metadata)?,
                };
                let model = Model::from_gguf(&ct, &mut f, &device, dtype).map_err(|e| load(e.to_string()))?;
                (model, tok, "gguf")
            }
            None => {
                let tj = opts.tokenizer.clone().unwrap_or_else(|| path.join("tokenizer.json"));
                let tok = ModelTokenizer::from_tokenizer_json(&tj)?;
                let model = Model::from_safetensors(path, &device, dtype).map_err(|e| load(e.to_string()))?;
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
            "embedded:{} ({kind}, {}, {} layers, {:?} on {})",
            path.display(),
            model.cfg.arch,
            model.cfg.layers,
            dtype,
            if device.is_cpu() { "cpu" } else { "cuda" }
        );
        tracing::info!(model = %desc, load_ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(Embedded { engine: Arc::new(Mutex::new(Engine { model, tok })), desc, stats: Arc::default() })
    }

    /// Counts of the last request.
    pub fn last_stats(&self) -> GenStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Token ids of a prompt as this model sees it.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, GenError> {
        let e = self.engine.lock().map_err(|_| GenError::Backend("model lock poisoned".into()))?;
        e.tok.encode_prompt(prompt)
    }

    /// Text of token ids (special tokens left out).
    pub fn decode(&self, ids: &[u32]) -> Result<String, GenError> {
        let e = self.engine.lock().map_err(|_| GenError::Backend("model lock poisoned".into()))?;
        Ok(e.tok.decode(ids))
    }

    /// Next-token logits after `ids` (one prefill), for tests and tools.
    pub fn next_logits(&self, ids: &[u32]) -> Result<Vec<f32>, GenError> {
        let e = self.engine.lock().map_err(|_| GenError::Backend("model lock poisoned".into()))?;
        let t = Tensor::new(ids, e.model.device()).and_then(|t| t.unsqueeze(0)).map_err(backend)?;
        let logits = e.model.forward(&t, 0, &mut KvCache::default()).map_err(backend)?;
        logits.i(0).and_then(|l| l.to_vec1::<f32>()).map_err(backend)
    }
}

fn backend(e: candle_core::Error) -> GenError {
    GenError::Backend(e.to_string())
}

/// Sets the flag when dropped: the blocking generation loop checks it after every token.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Generator for Embedded {
    fn generate<'a>(&'a self, req: &'a GenRequest) -> GenFuture<'a> {
        Box::pin(async move {
            req.params.validate()?;
            let cancel = Arc::new(AtomicBool::new(false));
            let _guard = CancelOnDrop(cancel.clone());
            let engine = self.engine.clone();
            let stats = self.stats.clone();
            let req = req.clone();
            let span =
                tracing::info_span!("generate", backend = "embedded", prompts = req.prompts.len(), n = req.params.n);
            tokio::task::spawn_blocking(move || {
                let engine = engine.lock().map_err(|_| GenError::Backend("model lock poisoned".into()))?;
                let mut total = GenStats::default();
                let mut out = Vec::with_capacity(req.prompts.len());
                for p in &req.prompts {
                    let (cs, st) = engine.complete(p, &req.params, &cancel)?;
                    total.prefill_tokens += st.prefill_tokens;
                    total.prefill_ms += st.prefill_ms;
                    total.decode_tokens += st.decode_tokens;
                    total.decode_ms += st.decode_ms;
                    out.push(cs);
                }
                if let Ok(mut s) = stats.lock() {
                    *s = total;
                }
                Ok(out)
            })
            .instrument(span)
            .await
            .map_err(|e| GenError::Backend(format!("generation thread failed: {e}")))?
        })
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }
}

/// One running sample.
struct Sample {
    sampler: LogitsProcessor,
    text: Detokenizer,
    /// Byte length of `text.text` to keep (cut at a stop string).
    keep: Option<usize>,
    finish: Option<FinishReason>,
}

impl Engine {
    /// The `n` completions of one prompt. An error inside generation becomes error completions;
    /// only cancellation is an `Err`.
    fn complete(
        &self,
        prompt: &Prompt,
        params: &SamplingParams,
        cancel: &AtomicBool,
    ) -> Result<(Vec<Completion>, GenStats), GenError> {
        let started = Instant::now();
        let ids = self.tok.encode_prompt(prompt)?;
        match self.run(&ids, params, cancel) {
            Ok((samples, stats)) => {
                let ms = started.elapsed().as_millis() as u64;
                let cs = samples
                    .into_iter()
                    .map(|s| {
                        let mut text = s.text.text;
                        if let Some(k) = s.keep {
                            text.truncate(k);
                        }
                        Completion {
                            text,
                            prompt_tokens: ids.len(),
                            completion_tokens: s.text.ids.len(),
                            finish_reason: s.finish.unwrap_or(FinishReason::Length),
                            error: None,
                            elapsed_ms: ms,
                        }
                    })
                    .collect();
                Ok((cs, stats))
            }
            Err(GenError::Cancelled) => Err(GenError::Cancelled),
            Err(e) => {
                let ms = started.elapsed().as_millis() as u64;
                let detail = e.to_string();
                Ok(((0..params.n).map(|_| Completion::failed(detail.clone(), ms)).collect(), GenStats::default()))
            }
        }
    }

    fn run(
        &self,
        ids: &[u32],
        params: &SamplingParams,
        cancel: &AtomicBool,
    ) -> Result<(Vec<Sample>, GenStats), GenError> {
        if ids.is_empty() {
            return Err(GenError::Invalid("the prompt has no tokens".into()));
        }
        let model = &self.model;
        let context = model.cfg.max_positions;
        if ids.len() >= context {
            return Err(GenError::Invalid(format!(
                "the prompt has {} tokens; the model's context is {context}",
                ids.len()
            )));
        }
        let dev = model.device();
        let sampling = if params.temperature <= 0.0 {
            Sampling::ArgMax
        } else if params.top_p >= 1.0 {
            Sampling::All { temperature: params.temperature }
        } else {
            Sampling::TopP { p: params.top_p, temperature: params.temperature }
        };
        let seed = params.seed.unwrap_or_else(random_seed);
        let stop = StopMatcher::new(&params.stop);
        let mut samples: Vec<Sample> = (0..params.n)
            .map(|i| Sample {
                sampler: LogitsProcessor::from_sampling(seed.wrapping_add(i as u64), sampling.clone()),
                text: Detokenizer::default(),
                keep: None,
                finish: None,
            })
            .collect();
        let mut stats = GenStats { prefill_tokens: ids.len(), ..Default::default() };
        let t0 = Instant::now();
        let mut cache = KvCache::default();
        let input = Tensor::new(ids, dev).and_then(|t| t.unsqueeze(0)).map_err(backend)?;
        let logits = model.forward(&input, 0, &mut cache).map_err(backend)?;
        stats.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        // On a GPU every row is sampled on the device in one go (`Model::sample_rows`: the fused
        // sampler keys its noise by `step_seed`, the generic one draws from the device's generator
        // seeded here); on the CPU each sample keeps its own seeded sampler.
        let device_sampling = super::sample::on_device(dev);
        if device_sampling {
            let _ = dev.set_seed(seed);
        }
        let mut next: Vec<u32> = if device_sampling {
            let rows = logits.broadcast_as((params.n, logits.dim(1).map_err(backend)?)).map_err(backend)?;
            model.sample_rows(&rows, params.temperature, params.top_p, step_seed(seed, 0)).map_err(backend)?
        } else {
            let first = logits.i(0).map_err(backend)?;
            let mut next = Vec::with_capacity(params.n);
            for s in samples.iter_mut() {
                next.push(s.sampler.sample(&first).map_err(backend)?);
            }
            next
        };
        cache.expand(params.n).map_err(backend)?;
        // Batch row r decodes sample rows[r].
        let mut rows: Vec<usize> = (0..params.n).collect();
        let mut pos = ids.len();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(GenError::Cancelled);
            }
            let mut keep_rows = Vec::with_capacity(rows.len());
            for (r, &si) in rows.iter().enumerate() {
                let s = &mut samples[si];
                let tok = next[r];
                stats.decode_tokens += 1;
                if self.tok.eos_ids.contains(&tok) {
                    s.text.ids.push(tok);
                    s.finish = Some(FinishReason::Stop);
                    continue;
                }
                let old = s.text.push(tok, |ids| self.tok.decode(ids));
                if let Some(cut) = stop.cut(&s.text.text, old) {
                    s.keep = Some(cut);
                    s.finish = Some(FinishReason::Stop);
                    continue;
                }
                if s.text.ids.len() >= params.max_new_tokens || pos + 1 >= context {
                    s.finish = Some(FinishReason::Length);
                    continue;
                }
                keep_rows.push(r);
            }
            if keep_rows.is_empty() {
                break;
            }
            if keep_rows.len() < rows.len() {
                let keep: Vec<u32> = keep_rows.iter().map(|&r| r as u32).collect();
                cache.retain(&keep).map_err(backend)?;
                next = keep_rows.iter().map(|&r| next[r]).collect();
                rows = keep_rows.iter().map(|&r| rows[r]).collect();
            }
            let input = Tensor::new(next.as_slice(), dev).and_then(|t| t.unsqueeze(1)).map_err(backend)?;
            let logits = model.forward(&input, pos, &mut cache).map_err(backend)?;
            pos += 1;
            if device_sampling {
                next = model
                    .sample_rows(&logits, params.temperature, params.top_p, step_seed(seed, pos))
                    .map_err(backend)?;
            } else {
                for (r, &si) in rows.iter().enumerate() {
                    let row = logits.i(r).map_err(backend)?;
                    next[r] = samples[si].sampler.sample(&row).map_err(backend)?;
                }
            }
        }
        stats.decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok((samples, stats))
    }
}

/// The sampler's key for one decode step of a request seeded with `seed`.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}
