//! One request's state in the engine: its prompt, then its `n` samples, each a sequence with its
//! tokens, its block table, how many of its positions are in the cache, and its own sampling
//! state (so it draws the same tokens alone or in any batch, and after a preemption).

use std::sync::Arc;
use std::time::Instant;

use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokio::sync::mpsc;

use super::blocks::{chain_hash, BlockId, BlockPool};
use super::Event;
use crate::model::stop::{Detokenizer, StopMatcher};
use crate::model::tokenizer::ModelTokenizer;
use crate::model::{Completion, FinishReason, SamplingParams};

/// A request: one prompt, `n` samples.
pub struct Request {
    pub id: u64,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub seed: u64,
    pub stop: StopMatcher,
    pub deltas: bool,
    pub events: mpsc::UnboundedSender<Event>,
    pub started: Instant,
    pub ignore_eos: bool,
    pub sample_max_tokens: Option<Vec<usize>>,
}

impl Request {
    pub fn gone(&self) -> bool {
        self.events.is_closed()
    }

    pub fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }
}

/// What a sequence is: the prompt of a request before its samples exist, or one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Prompt,
    Sample(usize),
}

/// A sequence of tokens with its place in the cache.
pub struct Seq {
    pub request: Arc<Request>,
    pub role: Role,
    /// Prompt, then generated tokens; the last one's keys are not in the cache yet once it
    /// was sampled.
    pub tokens: Vec<u32>,
    /// Positions whose keys and values are in the cache.
    pub computed: usize,
    pub blocks: Vec<BlockId>,
    /// Chain hashes of its full blocks, as far as they are known.
    pub hashes: Vec<u64>,
    /// Admission order: the most recent is preempted first.
    pub admitted: u64,
    pub sampler: Option<LogitsProcessor>,
    pub text: Detokenizer,
    /// Bytes of `text.text` already sent as deltas.
    pub sent: usize,
    /// Byte length of the text to keep (cut at a stop string).
    pub keep: Option<usize>,
}

impl Seq {
    pub fn prompt(request: Arc<Request>) -> Seq {
        Seq {
            tokens: request.prompt.clone(),
            request,
            role: Role::Prompt,
            computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            admitted: 0,
            sampler: None,
            text: Detokenizer::default(),
            sent: 0,
            keep: None,
        }
    }

    /// Sample `i` of a request whose prompt is in `prompt`'s blocks: it shares them (one more
    /// holder each); the caller gives it its own copy of a partial last block.
    pub fn fork(prompt: &Seq, i: usize, pool: &mut BlockPool) -> Seq {
        for &b in &prompt.blocks {
            pool.retain(b);
        }
        let p = &prompt.request.params;
        let sampling = if p.temperature <= 0.0 {
            Sampling::ArgMax
        } else if p.top_p >= 1.0 {
            Sampling::All { temperature: p.temperature }
        } else {
            Sampling::TopP { p: p.top_p, temperature: p.temperature }
        };
        Seq {
            request: prompt.request.clone(),
            role: Role::Sample(i),
            tokens: prompt.tokens.clone(),
            computed: prompt.computed,
            blocks: prompt.blocks.clone(),
            hashes: prompt.hashes.clone(),
            admitted: prompt.admitted,
            // Sample i draws from its own generator seeded `seed + i`, as the embedded backend
            // always has: a seed reproduces every sample.
            sampler: Some(LogitsProcessor::from_sampling(prompt.request.seed.wrapping_add(i as u64), sampling)),
            text: Detokenizer::default(),
            sent: 0,
            keep: None,
        }
    }

    /// The key of this sample's next draw on a device sampler: its request's seed, its index and
    /// the position it draws for, so the draw is the same in any batch and after a preemption.
    pub fn step_seed(&self) -> u64 {
        let i = match self.role {
            Role::Sample(i) => i as u64,
            Role::Prompt => 0,
        };
        let mut x = self.request.seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ (self.tokens.len() as u64);
        // splitmix64's finalizer.
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.request.prompt.len()
    }

    /// Tokens still to run through the model before its next token can be sampled.
    pub fn to_compute(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Blocks needed to hold `positions` positions.
    pub fn blocks_for(positions: usize, block_size: usize) -> usize {
        positions.div_ceil(block_size)
    }

    /// Takes cached blocks for its leading full blocks (prefix cache); leaves at least its last
    /// token to compute, whose logits it needs. Returns the positions found.
    pub fn take_cached_prefix(&mut self, pool: &mut BlockPool) -> usize {
        let bs = pool.block_size();
        let full = (self.tokens.len() - 1) / bs;
        let mut parent = None;
        for i in 0..full {
            let h = chain_hash(parent, &self.tokens[i * bs..(i + 1) * bs]);
            match pool.lookup(h) {
                Some(b) => {
                    self.blocks.push(b);
                    self.hashes.push(h);
                    parent = Some(h);
                }
                None => break,
            }
        }
        self.computed = self.blocks.len() * bs;
        self.computed
    }

    /// Publishes the full blocks whose contents are now computed, so later requests find them.
    pub fn publish_full_blocks(&mut self, pool: &mut BlockPool) {
        let bs = pool.block_size();
        while self.hashes.len() < self.computed / bs {
            let i = self.hashes.len();
            let parent = self.hashes.last().copied();
            let h = chain_hash(parent, &self.tokens[i * bs..(i + 1) * bs]);
            pool.publish(self.blocks[i], h);
            self.hashes.push(h);
        }
    }

    /// Gives back every block (preemption, cancellation, or the end).
    pub fn release(&mut self, pool: &mut BlockPool) {
        for b in self.blocks.drain(..) {
            pool.release(b);
        }
        self.hashes.clear();
        self.computed = 0;
    }

    /// Records the sampled token; returns why the sample ends, if it does.
    pub fn push_token(&mut self, tok: u32, tokenizer: &ModelTokenizer, context: usize) -> Option<FinishReason> {
        self.tokens.push(tok);
        if !self.request.ignore_eos && tokenizer.eos_ids.contains(&tok) {
            self.text.ids.push(tok);
            return Some(FinishReason::Stop);
        }
        let old = self.text.push(tok, |ids| tokenizer.decode(ids));
        if let Some(cut) = self.request.stop.cut(&self.text.text, old) {
            self.keep = Some(cut);
            return Some(FinishReason::Stop);
        }
        let limit = match (&self.request.sample_max_tokens, self.role) {
            (Some(limits), Role::Sample(i)) => limits.get(i).copied().unwrap_or(self.request.params.max_new_tokens),
            _ => self.request.params.max_new_tokens,
        };
        if self.generated() >= limit || self.tokens.len() >= context {
            return Some(FinishReason::Length);
        }
        None
    }

    /// New text that cannot turn out to be the start of a stop string.
    pub fn delta(&mut self, finished: bool) -> Option<String> {
        let text = &self.text.text;
        let end = match (finished, self.keep) {
            (true, Some(k)) => k,
            (true, None) => text.len(),
            (false, _) => {
                let mut end = text.len().saturating_sub(self.request.stop.longest().saturating_sub(1));
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                end
            }
        };
        if end <= self.sent {
            return None;
        }
        let d = text[self.sent..end].to_string();
        self.sent = end;
        Some(d)
    }

    /// The finished sample's completion.
    pub fn completion(&self, finish: FinishReason) -> Completion {
        let mut text = self.text.text.clone();
        if let Some(k) = self.keep {
            text.truncate(k);
        }
        Completion {
            text,
            prompt_tokens: self.request.prompt.len(),
            completion_tokens: self.text.ids.len(),
            finish_reason: finish,
            error: None,
            elapsed_ms: self.request.started.elapsed().as_millis() as u64,
        }
    }
}
