//! The serving engine: one loop per device owns the model and its paged KV cache, and every
//! request (pipeline nodes, `subgoal serve` clients) enters one queue. Each step decodes every
//! running sequence's next token and reads chunks of waiting prompts, as one batch
//! (`paged::Batch`); a request is admitted when the cache has blocks for it; a sample leaves the
//! batch the step it finishes and is handed back at once; a step that cannot get a block
//! preempts the most recently admitted sequence, whose blocks are freed and whose tokens are
//! read again later (the prefix cache usually still holds its prompt).
//!
//! Modules: `blocks` (block pool and prefix cache), `sequence` (a request's samples and their
//! sampling state), `step` (what one step runs, and what it does with the logits).
//!
//! Invariant: every sample of every request is answered exactly once (a `Done` event), whatever
//! preemption or cancellation happened; a request whose receiver is gone is dropped at the next
//! step and its blocks freed.

pub mod blocks;
pub mod router;
mod sequence;
mod step;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::llama::Model;
use super::tokenizer::ModelTokenizer;
use super::{Completion, GenError, SamplingParams};

/// How the engine sizes its cache and batches.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Positions per KV block.
    pub block_size: usize,
    /// Blocks in the cache; when `None`, from `cache_mb`, else from `cache_fraction` of the
    /// device memory left after the weights (CUDA) or 1 GiB (CPU).
    pub cache_blocks: Option<usize>,
    pub cache_mb: Option<usize>,
    pub cache_fraction: f64,
    /// Tokens one step may run: every decode first, prompt chunks in what is left.
    pub max_batch_tokens: usize,
    /// Sequences decoded at once.
    pub max_running: usize,
    /// Keys and values in E4M3 with one factor per token and head (`--kv-dtype fp8`; on CUDA through
    /// the fused kernels, bf16 or f16 models).
    pub kv_fp8: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            block_size: 16,
            cache_blocks: None,
            cache_mb: None,
            cache_fraction: 0.9,
            max_batch_tokens: 2048,
            max_running: 256,
            kv_fp8: false,
        }
    }
}

/// What the engine sends back for a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt is read (`tokens` of it, `ms` after the job arrived); its samples start.
    Prefilled { tokens: usize, ms: f64 },
    /// New text of a sample (only when the request asked for deltas).
    Delta { sample: usize, text: String },
    /// A sample is finished; its completion.
    Done { sample: usize, completion: Completion },
}

/// A request for `params.n` samples of one prompt.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Send `Delta` events as text arrives.
    pub deltas: bool,
    pub events: mpsc::UnboundedSender<Event>,
    /// Benchmarks: generate past end-of-sequence tokens, and stop sample `i` after
    /// `sample_max_tokens[i]` tokens (in place of `params.max_new_tokens`).
    pub ignore_eos: bool,
    pub sample_max_tokens: Option<Vec<usize>>,
}

impl Job {
    pub fn new(prompt: Vec<u32>, params: SamplingParams, deltas: bool, events: mpsc::UnboundedSender<Event>) -> Job {
        Job { prompt, params, deltas, events, ignore_eos: false, sample_max_tokens: None }
    }
}

/// Counters a running engine keeps, for `/metrics` and progress logs.
#[derive(Debug, Default)]
pub struct Metrics {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    pub blocks_used: AtomicUsize,
    pub blocks_total: AtomicUsize,
    pub prefix_hits: AtomicU64,
    pub prefix_misses: AtomicU64,
    pub preemptions: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub requests_done: AtomicU64,
    /// Over all steps: decode rows, the cached positions they read, and of those the positions of
    /// a prompt another row of the same request read in the same step (what attention that reads
    /// a shared prefix once would save). Benchmarks compute the memory-bandwidth limit from them.
    pub decode_rows: AtomicU64,
    pub positions_read: AtomicU64,
    pub positions_shared: AtomicU64,
    /// Microseconds of the engine thread over all steps: scheduling and building the batch,
    /// inside the model's forward call (launching the kernels, and any wait a launch implies),
    /// and after it (sampling, which waits for the device, and the sequences' bookkeeping). Where
    /// a step's time goes when it is slower than the device's bytes allow.
    pub plan_us: AtomicU64,
    pub forward_us: AtomicU64,
    pub after_us: AtomicU64,
    /// Microseconds of the device's clock over all steps from a step's first upload to the end
    /// of its forward pass (CUDA with the fused kernels; 0 elsewhere). Against the wall time per
    /// step it splits off what the device spends outside the model (sampling) and waits for the
    /// host (the step's bookkeeping and planning); against `forward_us`, whether the launches
    /// keep ahead of it.
    pub device_forward_us: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    pub running: usize,
    pub waiting: usize,
    pub blocks_used: usize,
    pub blocks_total: usize,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub preemptions: u64,
    pub generated_tokens: u64,
    pub prompt_tokens: u64,
    pub steps: u64,
    pub requests_done: u64,
    pub decode_rows: u64,
    pub positions_read: u64,
    pub positions_shared: u64,
    pub plan_us: u64,
    pub forward_us: u64,
    pub after_us: u64,
    pub device_forward_us: u64,
}

impl MetricsSnapshot {
    /// Adds another engine's counters (several devices reported as one).
    pub fn add(&mut self, o: &MetricsSnapshot) {
        self.running += o.running;
        self.waiting += o.waiting;
        self.blocks_used += o.blocks_used;
        self.blocks_total += o.blocks_total;
        self.prefix_hits += o.prefix_hits;
        self.prefix_misses += o.prefix_misses;
        self.preemptions += o.preemptions;
        self.generated_tokens += o.generated_tokens;
        self.prompt_tokens += o.prompt_tokens;
        self.steps += o.steps;
        self.requests_done += o.requests_done;
        self.decode_rows += o.decode_rows;
        self.positions_read += o.positions_read;
        self.positions_shared += o.positions_shared;
        self.plan_us += o.plan_us;
        self.forward_us += o.forward_us;
        self.after_us += o.after_us;
        self.device_forward_us += o.device_forward_us;
    }
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let l = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            running: l(&self.running),
            waiting: l(&self.waiting),
            blocks_used: l(&self.blocks_used),
            blocks_total: l(&self.blocks_total),
            prefix_hits: g(&self.prefix_hits),
            prefix_misses: g(&self.prefix_misses),
            preemptions: g(&self.preemptions),
            generated_tokens: g(&self.generated_tokens),
            prompt_tokens: g(&self.prompt_tokens),
            steps: g(&self.steps),
            requests_done: g(&self.requests_done),
            decode_rows: g(&self.decode_rows),
            positions_read: g(&self.positions_read),
            positions_shared: g(&self.positions_shared),
            plan_us: g(&self.plan_us),
            forward_us: g(&self.forward_us),
            after_us: g(&self.after_us),
            device_forward_us: g(&self.device_forward_us),
        }
    }
}

/// The handle callers hold: submits jobs to the engine thread. Dropping the last handle stops
/// the thread once its work is done.
pub struct Engine {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    pub cache_blocks: usize,
    pub block_size: usize,
}

impl Engine {
    /// Starts the loop on a thread of its own, with a cache sized per `opts`.
    pub fn start(model: Arc<Model>, tok: Arc<ModelTokenizer>, opts: &EngineOptions) -> Result<Engine, GenError> {
        let blocks = cache_blocks(&model, opts)?;
        if opts.kv_fp8 && !model.device().is_cpu() && !model.fused_paged_kv8() {
            return Err(GenError::Invalid(
                "--kv-dtype fp8 on a GPU needs the fused kernels for a bf16 or f16 model (--dtype bf16)".into(),
            ));
        }
        let format = super::paged::KvFormat::of(model.dtype(), opts.kv_fp8);
        let cache = super::paged::PagedCache::new(&model.cfg, blocks, opts.block_size, format, model.device())
            .map_err(|e| GenError::Load { model: "KV cache".into(), detail: e.to_string() })?;
        let metrics = Arc::new(Metrics::default());
        metrics.blocks_total.store(blocks, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let stopping = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let state = step::Loop::new(model, tok, cache, opts.clone(), metrics.clone(), failed.clone());
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("subgoal-engine".into())
            .spawn(move || state.run(rx, stop))
            .map_err(|e| GenError::Backend(format!("starting the engine thread: {e}")))?;
        tracing::info!(blocks, block_size = opts.block_size, "engine started");
        Ok(Engine {
            jobs: Some(tx),
            thread: Some(thread),
            metrics,
            stopping,
            failed,
            cache_blocks: blocks,
            block_size: opts.block_size,
        })
    }

    /// From the next step on, every step fails as on a lost device (its samples end as
    /// `the model failed: …`): the failure drill the multi-device router is tested with.
    pub fn fail_device(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Queues a job; its events arrive on its channel.
    pub fn submit(&self, job: Job) -> Result<(), GenError> {
        let jobs = self.jobs.as_ref().ok_or_else(|| GenError::Backend("the engine has stopped".into()))?;
        jobs.send(job).map_err(|_| GenError::Backend("the engine has stopped".into()))
    }
}

impl Drop for Engine {
    /// Stops the loop and waits for it, so the cache's memory is free when this returns (work
    /// whose receivers are gone is dropped at the loop's next step).
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Blocks the cache gets: as asked, or what the memory budget holds.
fn cache_blocks(model: &Model, opts: &EngineOptions) -> Result<usize, GenError> {
    if let Some(b) = opts.cache_blocks {
        return Ok(b.max(1));
    }
    let format = super::paged::KvFormat::of(model.dtype(), opts.kv_fp8);
    let per_block = super::paged::PagedCache::block_bytes(&model.cfg, opts.block_size, format);
    let budget = match opts.cache_mb {
        Some(mb) => mb << 20,
        None => super::device_memory::cache_budget(model.device(), opts.cache_fraction).unwrap_or(1 << 30),
    };
    let blocks = budget / per_block.max(1);
    if blocks == 0 {
        return Err(GenError::Load {
            model: "KV cache".into(),
            detail: format!("{budget} bytes hold no block of {per_block} bytes; give more memory"),
        });
    }
    Ok(blocks)
}
