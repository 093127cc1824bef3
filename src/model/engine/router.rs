//! Several engines behind one `submit`: one engine per device (each with its own weights and KV
//! pool), every job routed to one of them, and a device that fails taken out of the rotation with
//! its unfinished samples run again elsewhere.
//!
//! Routing: among the healthy engines, those within `slack` samples of the least loaded (load =
//! samples routed there and not yet answered, counted here so a burst of submissions does not
//! all see the same stale engine metrics) are candidates; the one that most recently took the
//! longest run of this prompt's leading blocks wins (its prefix cache likely still holds them:
//! a problem's lemma and repair prompts share the template, header and statement), then the least
//! loaded, then the one with the most free KV blocks. A rough copy of the engines' prefix caches
//! is kept here as chained block hashes, bounded per engine.
//!
//! Failover: each job's events pass through a forwarder. A sample that ends with
//! `the model failed: …` marks its engine failed (logged once) and is run again on another
//! healthy engine; samples draw from `seed + i`, so a rerun gives the same text (on the CPU
//! exactly). The rerun job computes all `n` samples and forwards only the missing ones; text
//! deltas already sent for a sample are not sent twice. With no healthy engine left the failure
//! is handed back.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

use super::{Engine, Event, Job, MetricsSnapshot};
use crate::model::{Completion, GenError, SamplingParams};

/// Block hashes remembered per engine.
const REMEMBERED_BLOCKS: usize = 1 << 16;

/// What the router knows of one engine.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceStats {
    pub device: String,
    pub healthy: bool,
    /// Jobs routed here (reruns included).
    pub jobs: u64,
    /// Samples routed here and not yet answered.
    pub outstanding: usize,
    /// Samples this engine answered that were forwarded.
    pub answered: u64,
    /// Samples run again elsewhere after this engine failed them.
    pub rerouted: u64,
    pub metrics: MetricsSnapshot,
}

struct Replica {
    device: String,
    engine: Engine,
    healthy: AtomicBool,
    jobs: AtomicU64,
    outstanding: AtomicUsize,
    answered: AtomicU64,
    rerouted: AtomicU64,
}

/// Recently routed block-chain hashes of one engine, oldest first out.
#[derive(Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    fn insert(&mut self, h: u64) {
        if self.set.insert(h) {
            self.order.push_back(h);
            if self.order.len() > REMEMBERED_BLOCKS {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

struct Shared {
    replicas: Vec<Replica>,
    seen: Mutex<Vec<Seen>>,
    block_size: usize,
}

/// What routing weighs of one healthy engine, read once per decision.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    index: usize,
    /// Samples routed there and not yet answered.
    load: usize,
    /// Leading blocks of the prompt it most recently took.
    matched: usize,
    /// Free KV blocks.
    free: usize,
}

/// Among engines within `slack` samples of the least loaded, the one with the longest run of
/// the prompt's leading blocks, then the least loaded, then the most free blocks, then the
/// lowest index; none only when there is no candidate.
fn choose(candidates: &[Candidate], slack: usize) -> Option<usize> {
    let least = candidates.iter().map(|c| c.load).min()?;
    candidates
        .iter()
        .filter(|c| c.load <= least.saturating_add(slack))
        .max_by_key(|c| (c.matched, std::cmp::Reverse(c.load), c.free, std::cmp::Reverse(c.index)))
        .map(|c| c.index)
}

/// The engines of every device, one `submit`.
pub struct Router {
    shared: Arc<Shared>,
}

/// Where forwarders run: one small runtime for the process, never dropped, so `submit` works
/// from any thread (benchmarks drive engines without a runtime) and a router may be dropped
/// inside an async context.
fn forwarders() -> Result<&'static tokio::runtime::Runtime, GenError> {
    static RT: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("subgoal-router")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| GenError::Backend(format!("starting the router: {e}")))
}

/// Chained hashes of a prompt's full blocks: `h[i]` names blocks `0..=i`.
fn block_hashes(prompt: &[u32], block_size: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(prompt.len() / block_size.max(1));
    let mut prev = 0u64;
    for block in prompt.chunks_exact(block_size.max(1)) {
        let mut h = DefaultHasher::new();
        prev.hash(&mut h);
        block.hash(&mut h);
        prev = h.finish();
        out.push(prev);
    }
    out
}

/// Whether a completion reports the device failing rather than something about the request.
fn device_failure(c: &Completion) -> bool {
    c.error.as_deref().is_some_and(|e| e.starts_with("the model failed"))
}

impl Router {
    /// Routes over `engines` (`(device name, engine)`), which share one model's tokenizer and
    /// block size.
    pub fn new(engines: Vec<(String, Engine)>) -> Result<Router, GenError> {
        if engines.is_empty() {
            return Err(GenError::Invalid("no engine to route to".into()));
        }
        let block_size = engines[0].1.block_size;
        let replicas: Vec<Replica> = engines
            .into_iter()
            .map(|(device, engine)| Replica {
                device,
                engine,
                healthy: AtomicBool::new(true),
                jobs: AtomicU64::new(0),
                outstanding: AtomicUsize::new(0),
                answered: AtomicU64::new(0),
                rerouted: AtomicU64::new(0),
            })
            .collect();
        let seen = Mutex::new(replicas.iter().map(|_| Seen::default()).collect());
        forwarders()?;
        Ok(Router { shared: Arc::new(Shared { replicas, seen, block_size }) })
    }

    pub fn engines(&self) -> impl Iterator<Item = &Engine> {
        self.shared.replicas.iter().map(|r| &r.engine)
    }

    pub fn len(&self) -> usize {
        self.shared.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.replicas.is_empty()
    }

    /// Per engine: its device, health, routing counts and engine counters.
    pub fn stats(&self) -> Vec<DeviceStats> {
        self.shared
            .replicas
            .iter()
            .map(|r| DeviceStats {
                device: r.device.clone(),
                healthy: r.healthy.load(Ordering::Relaxed),
                jobs: r.jobs.load(Ordering::Relaxed),
                outstanding: r.outstanding.load(Ordering::Relaxed),
                answered: r.answered.load(Ordering::Relaxed),
                rerouted: r.rerouted.load(Ordering::Relaxed),
                metrics: r.engine.metrics.snapshot(),
            })
            .collect()
    }

    /// The engines' counters summed.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut sum = MetricsSnapshot::default();
        for r in &self.shared.replicas {
            sum.add(&r.engine.metrics.snapshot());
        }
        sum
    }

    /// Routes `job` to an engine; its events arrive on its channel as from one engine.
    pub fn submit(&self, job: Job) -> Result<(), GenError> {
        let Job { prompt, params, deltas, events, ignore_eos, sample_max_tokens } = job;
        let hashes = block_hashes(&prompt, self.shared.block_size);
        let spec = Arc::new(Spec { prompt, hashes, params, deltas, ignore_eos, sample_max_tokens });
        let (target, rx) = self.shared.start(&spec, None)?;
        let shared = self.shared.clone();
        forwarders()?.spawn(forward(shared, spec, target, rx, events));
        Ok(())
    }
}

/// What a job asks, kept to run it again.
struct Spec {
    prompt: Vec<u32>,
    /// The prompt's chained block hashes (`block_hashes`), for routing.
    hashes: Vec<u64>,
    params: SamplingParams,
    deltas: bool,
    ignore_eos: bool,
    sample_max_tokens: Option<Vec<usize>>,
}

impl Shared {
    /// The engine for `spec` (never `avoid`).
    fn pick(&self, spec: &Spec, avoid: Option<usize>) -> Option<usize> {
        // Each engine's load is read once: other submissions move it meanwhile, and a second
        // read could put every engine past the bound the first read set (so none would be
        // picked with one healthy engine under a burst of requests).
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let candidates: Vec<Candidate> = (0..self.replicas.len())
            .filter(|&i| Some(i) != avoid && self.replicas[i].healthy.load(Ordering::Relaxed))
            .map(|i| {
                let m = self.replicas[i].engine.metrics.snapshot();
                Candidate {
                    index: i,
                    load: self.replicas[i].outstanding.load(Ordering::Relaxed),
                    matched: spec.hashes.iter().take_while(|h| seen[i].set.contains(h)).count(),
                    free: m.blocks_total.saturating_sub(m.blocks_used),
                }
            })
            .collect();
        choose(&candidates, spec.params.n.max(8))
    }

    /// Submits `spec` to a healthy engine other than `avoid`, counting it there.
    fn start(&self, spec: &Spec, avoid: Option<usize>) -> Result<(usize, mpsc::UnboundedReceiver<Event>), GenError> {
        loop {
            let i = self.pick(spec, avoid).ok_or_else(|| GenError::Backend("no healthy device is left".into()))?;
            let (tx, rx) = mpsc::unbounded_channel();
            let mut job = Job::new(spec.prompt.clone(), spec.params.clone(), spec.deltas, tx);
            job.ignore_eos = spec.ignore_eos;
            job.sample_max_tokens = spec.sample_max_tokens.clone();
            let r = &self.replicas[i];
            match r.engine.submit(job) {
                Ok(()) => {
                    r.jobs.fetch_add(1, Ordering::Relaxed);
                    r.outstanding.fetch_add(spec.params.n, Ordering::Relaxed);
                    if let Ok(mut seen) = self.seen.lock() {
                        for &h in &spec.hashes {
                            seen[i].insert(h);
                        }
                    }
                    return Ok((i, rx));
                }
                Err(e) => self.mark_failed(i, &e.to_string()),
            }
        }
    }

    fn mark_failed(&self, i: usize, why: &str) {
        let r = &self.replicas[i];
        if r.healthy.swap(false, Ordering::Relaxed) {
            tracing::error!(device = %r.device, error = why, "device failed; its requests go to the other devices");
        }
    }
}

/// Passes one job's events to its caller, running failed samples again on another engine.
async fn forward(
    shared: Arc<Shared>,
    spec: Arc<Spec>,
    mut at: usize,
    mut rx: mpsc::UnboundedReceiver<Event>,
    out: mpsc::UnboundedSender<Event>,
) {
    let n = spec.params.n;
    let mut answered = vec![false; n];
    // Characters of each sample's text already sent as deltas.
    let mut sent = vec![0usize; n];
    let mut attempt_text = vec![0usize; n];
    let mut prefilled = false;
    loop {
        let mut redo: Vec<(usize, Completion)> = Vec::new();
        // Samples of this attempt its engine has not answered (its share of the load).
        let mut pending = n;
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                // The caller is gone: dropping `rx` cancels the job at the engine's next step.
                _ = out.closed() => None,
            };
            let Some(event) = event else { break };
            match event {
                Event::Prefilled { .. } if prefilled => {}
                Event::Prefilled { tokens, ms } => {
                    prefilled = true;
                    let _ = out.send(Event::Prefilled { tokens, ms });
                }
                Event::Delta { sample, text } => {
                    let Some(seen) = attempt_text.get_mut(sample) else { continue };
                    let start = *seen;
                    *seen += text.chars().count();
                    if answered[sample] || *seen <= sent[sample] {
                        continue;
                    }
                    let fresh: String = text.chars().skip(sent[sample].saturating_sub(start)).collect();
                    sent[sample] = *seen;
                    let _ = out.send(Event::Delta { sample, text: fresh });
                }
                Event::Done { sample, completion } => {
                    let r = &shared.replicas[at];
                    r.outstanding.fetch_sub(1, Ordering::Relaxed);
                    pending = pending.saturating_sub(1);
                    if sample >= n || answered[sample] {
                        continue;
                    }
                    if device_failure(&completion) {
                        shared.mark_failed(at, completion.error.as_deref().unwrap_or(""));
                        r.rerouted.fetch_add(1, Ordering::Relaxed);
                        redo.push((sample, completion));
                        continue;
                    }
                    answered[sample] = true;
                    r.answered.fetch_add(1, Ordering::Relaxed);
                    let _ = out.send(Event::Done { sample, completion });
                }
            }
        }
        shared.replicas[at].outstanding.fetch_sub(pending, Ordering::Relaxed);
        if out.is_closed() {
            return;
        }
        // The engine dropped the job: samples neither answered nor failed were lost with it.
        for (sample, done) in answered.iter().enumerate() {
            if !done && !redo.iter().any(|(s, _)| *s == sample) {
                redo.push((sample, Completion::failed("the model failed: the engine stopped", 0)));
            }
        }
        if redo.is_empty() {
            return;
        }
        match shared.start(&spec, Some(at)) {
            Ok((next, next_rx)) => {
                tracing::warn!(
                    from = %shared.replicas[at].device,
                    to = %shared.replicas[next].device,
                    samples = redo.len(),
                    "samples rerun on another device"
                );
                at = next;
                rx = next_rx;
                attempt_text = vec![0; n];
            }
            Err(_) => {
                for (sample, completion) in redo {
                    let _ = out.send(Event::Done { sample, completion });
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hashes_name_whole_prefixes() {
        let a = block_hashes(&[1, 2, 3, 4, 5, 6, 7], 2);
        let b = block_hashes(&[1, 2, 3, 4, 9, 9], 2);
        assert_eq!(a.len(), 3);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        // The same block after a different prefix is another hash.
        assert_ne!(block_hashes(&[9, 9, 3, 4], 2)[1], a[1]);
    }

    #[test]
    fn only_a_model_failure_counts_against_the_device() {
        assert!(device_failure(&Completion::failed("the model failed: CUDA_ERROR_ILLEGAL_ADDRESS", 0)));
        assert!(!device_failure(&Completion::failed("the prompt has 9000 tokens; the model's context is 4096", 0)));
    }

    fn candidate(index: usize, load: usize, matched: usize, free: usize) -> Candidate {
        Candidate { index, load, matched, free }
    }

    #[test]
    fn the_least_loaded_engine_is_always_a_candidate_however_loaded() {
        assert_eq!(choose(&[candidate(0, usize::MAX, 0, 0)], 8), Some(0));
        assert_eq!(choose(&[candidate(3, 1_000, 0, 0), candidate(5, 2_000, 9, 0)], 8), Some(3));
        assert_eq!(choose(&[], 8), None);
    }

    #[test]
    fn within_the_slack_the_longest_cached_prefix_wins_then_the_least_loaded_then_free_blocks() {
        let c = [candidate(0, 10, 0, 50), candidate(1, 14, 3, 0), candidate(2, 30, 9, 0)];
        assert_eq!(choose(&c, 8), Some(1), "engine 2 is past the slack");
        let c = [candidate(0, 12, 2, 0), candidate(1, 10, 2, 0), candidate(2, 10, 2, 7)];
        assert_eq!(choose(&c, 8), Some(2));
        let c = [candidate(4, 10, 0, 0), candidate(1, 10, 0, 0)];
        assert_eq!(choose(&c, 8), Some(1), "ties go to the lower index");
    }

    #[test]
    fn seen_forgets_the_oldest_past_its_bound() {
        let mut s = Seen::default();
        for h in 0..(REMEMBERED_BLOCKS as u64 + 3) {
            s.insert(h);
        }
        assert!(!s.set.contains(&0) && !s.set.contains(&2) && s.set.contains(&3));
        assert_eq!(s.set.len(), REMEMBERED_BLOCKS);
    }
}
