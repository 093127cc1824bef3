//! The engine loop: accept jobs, admit what the cache has room for, plan one step (every decode,
//! then prompt chunks in the tokens left), get blocks for it (preempting the most recently
//! admitted sequences when there are none), run the model, and sample, fork, finish and answer.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{IndexOp, Tensor};

use super::blocks::BlockPool;
use super::sequence::{Request, Role, Seq};
use super::{EngineOptions, Event, Job, Metrics};
use crate::model::llama::{DeviceMark, Model};
use crate::model::paged::{Batch, PagedCache};
use crate::model::stop::StopMatcher;
use crate::model::tokenizer::ModelTokenizer;
use crate::model::{Completion, FinishReason};

pub struct Loop {
    model: Arc<Model>,
    tok: Arc<ModelTokenizer>,
    cache: PagedCache,
    pool: BlockPool,
    opts: EngineOptions,
    metrics: Arc<Metrics>,
    /// Prompts not yet admitted, and preempted sequences (at the front).
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// Samples each request still owes.
    open: HashMap<u64, usize>,
    next_id: u64,
    admissions: u64,
    context: usize,
    /// Set by `Engine::fail_device`: every step fails as on a lost device.
    failed: Arc<AtomicBool>,
    /// Two marks of the device's stream (CUDA), made once, set around each step's forward pass.
    marks: Option<(DeviceMark, DeviceMark)>,
}

/// What one running sequence does in a step.
struct Member {
    index: usize,
    tokens: usize,
    logits: bool,
}

impl Loop {
    pub fn new(
        model: Arc<Model>,
        tok: Arc<ModelTokenizer>,
        cache: PagedCache,
        opts: EngineOptions,
        metrics: Arc<Metrics>,
        failed: Arc<AtomicBool>,
    ) -> Loop {
        let context = model.context();
        let marks = model.device_mark().zip(model.device_mark());
        Loop {
            pool: BlockPool::new(cache.blocks, cache.block_size),
            model,
            tok,
            cache,
            opts,
            metrics,
            waiting: VecDeque::new(),
            running: Vec::new(),
            open: HashMap::new(),
            next_id: 0,
            admissions: 0,
            context,
            failed,
            marks,
        }
    }

    pub fn run(mut self, jobs: std::sync::mpsc::Receiver<Job>, stopping: Arc<AtomicBool>) {
        loop {
            if self.waiting.is_empty() && self.running.is_empty() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                match jobs.recv() {
                    Ok(job) => self.accept(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = jobs.try_recv() {
                self.accept(job);
            }
            self.step();
            self.publish_metrics();
        }
    }

    fn accept(&mut self, job: Job) {
        let id = self.next_id;
        self.next_id += 1;
        let n = job.params.n;
        let request = Arc::new(Request {
            id,
            seed: job.params.seed.unwrap_or_else(super::super::embedded::random_seed),
            stop: StopMatcher::new(&job.params.stop),
            prompt: job.prompt,
            params: job.params,
            deltas: job.deltas,
            events: job.events,
            started: Instant::now(),
            ignore_eos: job.ignore_eos,
            sample_max_tokens: job.sample_max_tokens,
        });
        let needed = Seq::blocks_for(request.prompt.len() + 1, self.pool.block_size());
        let refuse = if request.prompt.is_empty() {
            Some("the prompt has no tokens".to_string())
        } else if request.prompt.len() >= self.context {
            Some(format!("the prompt has {} tokens; the model's context is {}", request.prompt.len(), self.context))
        } else if needed > self.pool.total() {
            Some(format!(
                "the prompt needs {needed} KV blocks and the cache has {} (give the cache more memory)",
                self.pool.total()
            ))
        } else {
            None
        };
        self.metrics.prompt_tokens.fetch_add(request.prompt.len() as u64, Ordering::Relaxed);
        match refuse {
            Some(why) => {
                for sample in 0..n {
                    request.send(Event::Done { sample, completion: Completion::failed(why.clone(), 0) });
                }
            }
            None => {
                self.open.insert(id, n);
                self.waiting.push_back(Seq::prompt(request));
            }
        }
    }

    /// Sequences in the batch once every admitted prompt has forked.
    fn slots(&self) -> usize {
        self.running.iter().map(|s| if s.role == Role::Prompt { s.request.params.n } else { 1 }).sum()
    }

    /// Admits waiting sequences in order while the cache and the batch have room for them.
    fn admit(&mut self) {
        while let Some(front) = self.waiting.front() {
            let n = if front.role == Role::Prompt { front.request.params.n } else { 1 };
            let bs = self.pool.block_size();
            // Blocks for its tokens and one more position: less than that can never run.
            let least = Seq::blocks_for(front.tokens.len() + 1, bs);
            if least > self.pool.total() {
                let Some(mut seq) = self.waiting.pop_front() else { break };
                self.finish_full(&mut seq);
                continue;
            }
            // With headroom for each sample's first new position.
            let need = Seq::blocks_for(front.tokens.len(), bs) + n;
            if self.slots() + n > self.opts.max_running || need > self.pool.available() {
                // A lone sequence still goes: preemption makes room for the samples.
                if !self.running.is_empty() {
                    break;
                }
            }
            let Some(mut seq) = self.waiting.pop_front() else { break };
            seq.take_cached_prefix(&mut self.pool);
            self.admissions += 1;
            seq.admitted = self.admissions;
            self.running.push(seq);
        }
    }

    /// Drops the sequences of requests nobody waits for any more.
    fn drop_cancelled(&mut self) {
        let pool = &mut self.pool;
        let mut gone: Vec<u64> = Vec::new();
        for list in [&mut self.running as &mut dyn SeqList, &mut self.waiting] {
            list.retain_seqs(&mut |s: &mut Seq| {
                if s.request.gone() {
                    s.release(pool);
                    gone.push(s.request.id);
                    false
                } else {
                    true
                }
            });
        }
        for id in gone {
            if self.open.remove(&id).is_some() {
                self.metrics.requests_done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Frees the blocks of the most recently admitted running sequence other than `keep` and
    /// queues it to be read again. False when there is none.
    fn preempt_newest(&mut self, keep: usize) -> bool {
        let victim = (0..self.running.len()).filter(|&i| i != keep).max_by_key(|&i| self.running[i].admitted);
        let Some(i) = victim else { return false };
        let mut seq = self.running.remove(i);
        seq.release(&mut self.pool);
        tracing::debug!(request = seq.request.id, "preempted");
        self.metrics.preemptions.fetch_add(1, Ordering::Relaxed);
        self.waiting.push_front(seq);
        true
    }

    /// Plans the step: who runs how many tokens, with blocks for them.
    fn plan(&mut self) -> Vec<Member> {
        let decodes = self.running.iter().filter(|s| s.to_compute() == 1).count();
        let mut chunk_budget = self.opts.max_batch_tokens.saturating_sub(decodes).max(1);
        // Oldest first: when blocks run out, the newest (not yet planned) give theirs up.
        self.running.sort_by_key(|s| s.admitted);
        let mut members = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            let todo = self.running[i].to_compute();
            let tokens = if todo == 1 { 1 } else { todo.min(chunk_budget) };
            if tokens == 0 {
                i += 1;
                continue;
            }
            let bs = self.pool.block_size();
            let need = Seq::blocks_for(self.running[i].computed + tokens, bs);
            let mut ok = true;
            while self.running[i].blocks.len() < need {
                match self.pool.allocate() {
                    Some(b) => self.running[i].blocks.push(b),
                    None => {
                        // Preempt a newer sequence; if this is the newest, itself.
                        let newest = (0..self.running.len()).max_by_key(|&j| self.running[j].admitted);
                        if newest != Some(i) && self.preempt_newest(i) {
                            continue;
                        }
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                let whole = Seq::blocks_for(self.running[i].computed + tokens, bs) > self.pool.total();
                if whole || (self.running.len() == 1 && self.waiting.is_empty()) {
                    // The cache cannot hold this sequence even alone.
                    let mut seq = self.running.remove(i);
                    self.finish_full(&mut seq);
                } else {
                    let mut seq = self.running.remove(i);
                    seq.release(&mut self.pool);
                    self.metrics.preemptions.fetch_add(1, Ordering::Relaxed);
                    self.waiting.push_front(seq);
                }
                continue;
            }
            if todo > 1 {
                chunk_budget -= tokens;
            }
            members.push(Member { index: i, tokens, logits: tokens == todo });
            i += 1;
        }
        members
    }

    /// Ends a sequence the whole cache cannot hold.
    fn finish_full(&mut self, seq: &mut Seq) {
        tracing::warn!(request = seq.request.id, tokens = seq.tokens.len(), "the KV cache cannot hold this sequence");
        match seq.role {
            Role::Prompt => {
                let why = "the KV cache cannot hold this prompt".to_string();
                for sample in 0..seq.request.params.n {
                    self.answer(seq.request.clone(), sample, Completion::failed(why.clone(), 0));
                }
            }
            Role::Sample(i) => {
                let c = seq.completion(FinishReason::Length);
                self.answer(seq.request.clone(), i, c);
            }
        }
        seq.release(&mut self.pool);
    }

    fn answer(&mut self, request: Arc<Request>, sample: usize, completion: Completion) {
        // Counted before the last answer goes out, so whoever receives it sees the count.
        if let Some(open) = self.open.get_mut(&request.id) {
            *open -= 1;
            if *open == 0 {
                self.open.remove(&request.id);
                self.metrics.requests_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        request.send(Event::Done { sample, completion });
    }

    fn step(&mut self) {
        let started = Instant::now();
        self.drop_cancelled();
        self.admit();
        let mut members = self.plan();
        if members.is_empty() {
            return;
        }
        // One-token segments first: the fused attention takes the decode rows as one block.
        members.sort_by_key(|m| m.tokens != 1);
        self.count_reads(&members);
        let mut batch = Batch::default();
        for m in &members {
            let s = &self.running[m.index];
            batch.push(&s.tokens[s.computed..s.computed + m.tokens], s.computed, s.blocks.clone(), m.logits);
        }
        let steps = self.metrics.steps.fetch_add(1, Ordering::Relaxed) + 1;
        if steps % 1000 == 0 {
            tracing::debug!(
                steps,
                running = self.running.len(),
                waiting = self.waiting.len(),
                tokens = batch.ids.len(),
                blocks_used = self.pool.used(),
                "engine step"
            );
        }
        let planned = Instant::now();
        let mut timed = false;
        let result = if self.failed.load(Ordering::Relaxed) {
            Err(candle_core::Error::Msg("the device is marked failed".into()))
        } else {
            let marks = self.marks.as_ref();
            timed = marks.is_some_and(|(a, _)| self.model.record_mark(a));
            let r = self.model.forward_paged(&batch, &self.cache);
            timed &= marks.is_some_and(|(_, b)| self.model.record_mark(b));
            r
        };
        let launched = Instant::now();
        match result {
            Ok(logits) => self.after_step(&members, &logits),
            Err(e) => self.fail_running(&format!("the model failed: {e}")),
        }
        // Sampling has read the tokens back by now, so both marks are passed: no wait.
        if let (true, Some((a, b))) = (timed, &self.marks) {
            if let Some(ms) = a.ms_until(b) {
                self.metrics.device_forward_us.fetch_add((ms * 1e3) as u64, Ordering::Relaxed);
            }
        }
        let us = |a: Instant, b: Instant| b.duration_since(a).as_micros() as u64;
        self.metrics.plan_us.fetch_add(us(started, planned), Ordering::Relaxed);
        self.metrics.forward_us.fetch_add(us(planned, launched), Ordering::Relaxed);
        self.metrics.after_us.fetch_add(us(launched, Instant::now()), Ordering::Relaxed);
    }

    /// Adds this step's decode reads to the metrics: rows, positions read, and positions of a
    /// prompt read by more than one row of its request.
    fn count_reads(&self, members: &[Member]) {
        let bs = self.pool.block_size();
        let mut rows = 0u64;
        let mut read = 0u64;
        let mut per_request: HashMap<u64, (u64, u64)> = HashMap::new();
        for m in members.iter().filter(|m| m.tokens == 1) {
            let s = &self.running[m.index];
            rows += 1;
            read += (s.computed + 1) as u64;
            let shared = (s.request.prompt.len().min(s.computed) / bs * bs) as u64;
            let e = per_request.entry(s.request.id).or_insert((0, shared));
            e.0 += 1;
        }
        let shared: u64 = per_request.values().map(|&(n, p)| n.saturating_sub(1) * p).sum();
        self.metrics.decode_rows.fetch_add(rows, Ordering::Relaxed);
        self.metrics.positions_read.fetch_add(read, Ordering::Relaxed);
        self.metrics.positions_shared.fetch_add(shared, Ordering::Relaxed);
    }

    fn fail_running(&mut self, why: &str) {
        tracing::error!(error = why, "engine step failed");
        let running = std::mem::take(&mut self.running);
        for mut s in running {
            match s.role {
                Role::Prompt => {
                    for sample in 0..s.request.params.n {
                        self.answer(s.request.clone(), sample, Completion::failed(why, 0));
                    }
                }
                Role::Sample(i) => self.answer(s.request.clone(), i, Completion::failed(why, 0)),
            }
            s.release(&mut self.pool);
        }
    }

    fn after_step(&mut self, members: &[Member], logits: &Tensor) {
        let mut row = 0;
        let mut forks: Vec<usize> = Vec::new();
        let mut done: Vec<(usize, FinishReason)> = Vec::new();
        let mut draws: Vec<(usize, usize)> = Vec::new();
        for m in members {
            let seq = &mut self.running[m.index];
            seq.computed += m.tokens;
            seq.publish_full_blocks(&mut self.pool);
            if m.logits {
                match seq.role {
                    Role::Prompt => forks.push(m.index),
                    Role::Sample(_) => draws.push((m.index, row)),
                }
                row += 1;
            }
        }
        let tokens = self.draw(&draws, logits);
        for ((index, _), tok) in draws.iter().zip(tokens) {
            let seq = &mut self.running[*index];
            let tok = match tok {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "sampling failed");
                    done.push((*index, FinishReason::Error));
                    continue;
                }
            };
            self.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if let Some(f) = seq.push_token(tok, &self.tok, self.context) {
                done.push((*index, f));
            } else if let (true, Role::Sample(i)) = (seq.request.deltas, seq.role) {
                if let Some(d) = seq.delta(false) {
                    seq.request.send(Event::Delta { sample: i, text: d });
                }
            }
        }
        // Rows of forking prompts: each member with logits took one row, in order.
        let fork_rows: Vec<(usize, usize)> = members
            .iter()
            .filter(|m| m.logits)
            .enumerate()
            .filter(|(_, m)| forks.contains(&m.index))
            .map(|(r, m)| (m.index, r))
            .collect();
        // Finish (and remove) from the highest index down, so indices stay valid.
        let mut removals: Vec<usize> = done.iter().map(|d| d.0).chain(fork_rows.iter().map(|f| f.0)).collect();
        removals.sort_unstable();
        removals.dedup();
        let reasons: HashMap<usize, FinishReason> = done.into_iter().collect();
        let rows: HashMap<usize, usize> = fork_rows.into_iter().collect();
        for &i in removals.iter().rev() {
            let mut seq = self.running.remove(i);
            if let Some(&r) = rows.get(&i) {
                let l = logits.i(r);
                self.fork(seq, l);
                continue;
            }
            let finish = reasons[&i];
            let Role::Sample(sample) = seq.role else { continue };
            if seq.request.deltas {
                if let Some(d) = seq.delta(true) {
                    seq.request.send(Event::Delta { sample, text: d });
                }
            }
            let completion = if finish == FinishReason::Error {
                Completion::failed("sampling failed", seq.request.started.elapsed().as_millis() as u64)
            } else {
                seq.completion(finish)
            };
            seq.release(&mut self.pool);
            self.answer(seq.request.clone(), sample, completion);
        }
    }

    /// The next token of each sequence in `draws` (running index, logits row): on the device in
    /// one go per (temperature, top-p) where the model has a sampler there, each row keyed by
    /// its sample's seed and position; else each sequence from its own generator.
    fn draw(&mut self, draws: &[(usize, usize)], logits: &Tensor) -> Vec<candle_core::Result<u32>> {
        let mut out: Vec<Option<candle_core::Result<u32>>> = (0..draws.len()).map(|_| None).collect();
        let mut groups: Vec<((u64, u64), Vec<usize>)> = Vec::new();
        for (i, &(index, _)) in draws.iter().enumerate() {
            let p = &self.running[index].request.params;
            let key = (p.temperature.to_bits(), p.top_p.to_bits());
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for (key, members) in groups {
            let rows: Vec<u32> = members.iter().map(|&i| draws[i].1 as u32).collect();
            let seeds: Vec<u64> = members.iter().map(|&i| self.running[draws[i].0].step_seed()).collect();
            let device = logits.device();
            let picked = Tensor::new(rows.as_slice(), device)
                .and_then(|r| logits.index_select(&r, 0))
                .and_then(|l| self.model.sample_rows_seeded(&l, f64::from_bits(key.0), f64::from_bits(key.1), &seeds));
            match picked {
                Ok(Some(ids)) => {
                    for (&i, id) in members.iter().zip(ids) {
                        out[i] = Some(Ok(id));
                    }
                }
                Ok(None) => {
                    for &i in &members {
                        let (index, r) = draws[i];
                        let seq = &mut self.running[index];
                        out[i] = Some(logits.i(r).and_then(|l| sample(seq, &l)));
                    }
                }
                Err(e) => {
                    for &i in &members {
                        out[i] = Some(Err(candle_core::Error::Msg(e.to_string())));
                    }
                }
            }
        }
        out.into_iter().map(|o| o.unwrap_or_else(|| Err(candle_core::Error::Msg("no draw".into())))).collect()
    }

    /// A prompt whose logits are in: its `n` samples, each sharing the prompt's full blocks and
    /// holding its own copy of a partial last block, each drawing its first token.
    fn fork(&mut self, mut prompt: Seq, logits: candle_core::Result<Tensor>) {
        let n = prompt.request.params.n;
        let bs = self.pool.block_size();
        let partial = prompt.computed % bs != 0;
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = Seq::fork(&prompt, i, &mut self.pool);
            if partial && i > 0 {
                // Copy on write, done now: every sample writes its next position into that block.
                let shared = s.blocks.pop().expect("a partial block");
                match self.pool.allocate() {
                    Some(b) if self.cache.copy_block(shared, b).is_ok() => {
                        self.pool.release(shared);
                        s.blocks.push(b);
                    }
                    other => {
                        // No block to copy into: the sample is read again later, from the prefix
                        // cache mostly.
                        if let Some(b) = other {
                            self.pool.release(b);
                        }
                        self.pool.release(shared);
                        s.release(&mut self.pool);
                    }
                }
            }
            samples.push(s);
        }
        prompt.release(&mut self.pool);
        let ms = prompt.request.started.elapsed().as_secs_f64() * 1e3;
        prompt.request.send(Event::Prefilled { tokens: prompt.request.prompt.len(), ms });
        let row = match logits {
            Ok(r) => r,
            Err(e) => {
                for s in samples.iter_mut() {
                    s.release(&mut self.pool);
                }
                let why = format!("the model failed: {e}");
                for i in 0..n {
                    self.answer(prompt.request.clone(), i, Completion::failed(why.clone(), 0));
                }
                return;
            }
        };
        let seeds: Vec<u64> = samples.iter().map(Seq::step_seed).collect();
        let p = &prompt.request.params;
        let on_device = row
            .unsqueeze(0)
            .and_then(|r| r.broadcast_as((n, r.dim(1)?))?.contiguous())
            .and_then(|rows| self.model.sample_rows_seeded(&rows, p.temperature, p.top_p, &seeds));
        let on_device = match on_device {
            Ok(Some(ids)) => Some(ids),
            _ => None,
        };
        for (i, mut s) in samples.into_iter().enumerate() {
            let drawn = match &on_device {
                Some(ids) => Ok(ids[i]),
                None => sample(&mut s, &row),
            };
            let finish = match drawn {
                Ok(tok) => {
                    self.metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
                    s.push_token(tok, &self.tok, self.context)
                }
                Err(_) => Some(FinishReason::Error),
            };
            match finish {
                Some(f) => {
                    if s.request.deltas {
                        if let Some(d) = s.delta(true) {
                            s.request.send(Event::Delta { sample: i, text: d });
                        }
                    }
                    let c = s.completion(f);
                    s.release(&mut self.pool);
                    self.answer(s.request.clone(), i, c);
                }
                None if s.blocks.is_empty() => self.waiting.push_front(s),
                None => self.running.push(s),
            }
        }
    }

    fn publish_metrics(&self) {
        let m = &self.metrics;
        m.running.store(self.slots(), Ordering::Relaxed);
        m.waiting.store(
            self.waiting.iter().map(|s| if s.role == Role::Prompt { s.request.params.n } else { 1 }).sum(),
            Ordering::Relaxed,
        );
        m.blocks_used.store(self.pool.used(), Ordering::Relaxed);
        m.prefix_hits.store(self.pool.hits, Ordering::Relaxed);
        m.prefix_misses.store(self.pool.misses, Ordering::Relaxed);
    }
}

/// One token for a sample from its logits row, with its own generator.
fn sample(seq: &mut Seq, row: &Tensor) -> candle_core::Result<u32> {
    match seq.sampler.as_mut() {
        Some(s) => s.sample(row),
        None => candle_core::bail!("a prompt has no sampler"),
    }
}

/// `retain` over the engine's two lists of sequences.
trait SeqList {
    fn retain_seqs(&mut self, f: &mut dyn FnMut(&mut Seq) -> bool);
}

impl SeqList for Vec<Seq> {
    fn retain_seqs(&mut self, f: &mut dyn FnMut(&mut Seq) -> bool) {
        self.retain_mut(|s| f(s));
    }
}

impl SeqList for VecDeque<Seq> {
    fn retain_seqs(&mut self, f: &mut dyn FnMut(&mut Seq) -> bool) {
        self.retain_mut(|s| f(s));
    }
}
