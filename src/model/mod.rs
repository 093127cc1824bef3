//! Model backends behind one interface: `Generator` takes a batch of prompts and sampling
//! parameters and returns, for each prompt, `n` completions.
//!
//! Backends: `embedded` (candle, in-process: GGUF or safetensors, CPU or CUDA), `openai` (an
//! OpenAI-compatible server: vLLM, SGLang, llama.cpp, or `subgoal serve`), `replay` (answers
//! from a recording). `record::Recorder` wraps any of them. `spec` parses `--model`.
//! `serve` exposes a generator over the OpenAI API. Prompt formatting (`chat`) and stop strings
//! (`stop`) are shared by the backends that need them.
//!
//! Invariant: a `Generator` never panics on input and never returns fewer completions than asked
//! for: a failed sample is a `Completion` with `finish_reason: error`; only a request that could
//! not be attempted at all is an `Err`.

pub mod cascade;
pub mod chat;
pub mod convert;
#[cfg(feature = "cuda")]
mod cublaslt;
pub mod device_memory;
pub mod embedded;
pub mod engine;
pub mod fp8;
#[cfg(feature = "cuda")]
pub mod fused;
pub mod hub;
mod kv_cache;
mod linear;
pub mod llama;
mod load;
pub mod openai;
pub mod paged;
pub mod record;
mod rope;
pub mod sample;
pub mod serve;
pub mod spec;
pub mod stop;
pub mod tokenizer;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A prompt: raw text (completed as is) or chat messages (formatted by the model's template).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// Sampling parameters, shared by every prompt of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Completions per prompt.
    pub n: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// Generation stops before the first occurrence of any of these (not included in the text).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Sample i of a prompt uses seed `seed + i`; `None` draws a seed.
    #[serde(default)]
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { n: 1, temperature: 1.0, top_p: 0.95, max_new_tokens: 256, stop: vec![], seed: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The sample failed; `error` says why.
    Error,
}

/// One completion of one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    /// Tokens of the prompt as the model saw it (template applied).
    pub prompt_tokens: usize,
    /// Tokens generated, including any cut off by a stop string.
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the request this completion belongs to.
    pub elapsed_ms: u64,
}

impl Completion {
    pub fn failed(error: impl Into<String>, elapsed_ms: u64) -> Completion {
        Completion {
            text: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            finish_reason: FinishReason::Error,
            error: Some(error.into()),
            elapsed_ms,
        }
    }
}

/// A batch of prompts with shared parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    pub prompts: Vec<Prompt>,
    pub params: SamplingParams,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("model {model}: {detail}")]
    Load { model: String, detail: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("{0}")]
    Backend(String),
    #[error("replay: no recorded answer for {0}")]
    ReplayMiss(String),
    #[error("generation was cancelled")]
    Cancelled,
}

pub type GenFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Vec<Completion>>, GenError>> + Send + 'a>>;

/// One finished sample of a request: sample `sample` of prompt `prompt`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleDone {
    pub prompt: usize,
    pub sample: usize,
    pub completion: Completion,
}

/// A request's samples as each finishes (in no set order); an `Err` ends it (the request could
/// not be tried). Every sample is yielded exactly once.
pub type SampleStream<'a> = Pin<Box<dyn futures::Stream<Item = Result<SampleDone, GenError>> + Send + 'a>>;

/// What a streamed request yields: text as it is generated (backends that can say), and each
/// finished sample.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Delta { prompt: usize, sample: usize, text: String },
    Done(SampleDone),
}

pub type EventStream<'a> = Pin<Box<dyn futures::Stream<Item = Result<GenEvent, GenError>> + Send + 'a>>;

/// The interface every backend implements. Dropping the returned future or stream cancels the
/// work.
pub trait Generator: Send + Sync {
    /// For each prompt, `params.n` completions, in order.
    fn generate<'a>(&'a self, req: &'a GenRequest) -> GenFuture<'a>;
    /// The same samples, each handed over as soon as it is finished, so a caller can check one
    /// while the others are still being generated (and drop the rest once one is enough). The
    /// default waits for `generate` and yields its samples in order.
    fn stream<'a>(&'a self, req: &'a GenRequest) -> SampleStream<'a> {
        use futures::{FutureExt, StreamExt};
        let all = self.generate(req).map(|r| match r {
            Ok(out) => futures::stream::iter(
                out.into_iter()
                    .enumerate()
                    .flat_map(|(prompt, cs)| {
                        cs.into_iter().enumerate().map(move |(sample, completion)| SampleDone {
                            prompt,
                            sample,
                            completion,
                        })
                    })
                    .map(Ok)
                    .collect::<Vec<_>>(),
            ),
            Err(e) => futures::stream::iter(vec![Err(e)]),
        });
        Box::pin(all.into_stream().flatten())
    }
    /// Text as it is generated and each finished sample (`subgoal serve` streams these). The
    /// default has no text deltas: each sample's text comes with its end.
    fn events<'a>(&'a self, req: &'a GenRequest) -> EventStream<'a> {
        use futures::StreamExt;
        Box::pin(self.stream(req).map(|r| r.map(GenEvent::Done)))
    }
    /// A short description (`embedded:…`, `openai:…`, `replay:…`).
    fn describe(&self) -> String;
    /// The serving engine's counters, for a backend that has one.
    fn metrics(&self) -> Option<engine::MetricsSnapshot> {
        None
    }
}

/// A request's samples gathered from its stream, in order (what `generate` returns).
pub async fn collect_samples(req: &GenRequest, mut stream: SampleStream<'_>) -> Result<Vec<Vec<Completion>>, GenError> {
    use futures::StreamExt;
    let mut out: Vec<Vec<Option<Completion>>> = vec![vec![None; req.params.n]; req.prompts.len()];
    while let Some(done) = stream.next().await {
        let d = done?;
        if let Some(slot) = out.get_mut(d.prompt).and_then(|p| p.get_mut(d.sample)) {
            *slot = Some(d.completion);
        }
    }
    Ok(out
        .into_iter()
        .map(|p| {
            p.into_iter()
                .map(|c| c.unwrap_or_else(|| Completion::failed("the backend never finished this sample", 0)))
                .collect()
        })
        .collect())
}

/// The test model `scripts/install-test-model.sh` installs in this checkout.
pub fn test_model_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".toolchain/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

impl SamplingParams {
    /// Refuses parameters no backend can honour.
    pub fn validate(&self) -> Result<(), GenError> {
        let bad = |m: &str| Err(GenError::Invalid(m.to_string()));
        if self.n == 0 {
            return bad("n must be at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature must be a finite number ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1");
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_serialize_as_text_or_message_lists() {
        let t = serde_json::to_string(&Prompt::Text("a".into())).unwrap();
        assert_eq!(t, "\"a\"");
        let c: Prompt = serde_json::from_str(r#"[{"role":"user","content":"hi"}]"#).unwrap();
        assert_eq!(c, Prompt::Chat(vec![ChatMessage::new("user", "hi")]));
    }

    #[test]
    fn impossible_parameters_are_refused() {
        let ok = SamplingParams::default();
        ok.validate().unwrap();
        assert!(SamplingParams { n: 0, ..ok.clone() }.validate().is_err());
        assert!(SamplingParams { top_p: 0.0, ..ok.clone() }.validate().is_err());
        assert!(SamplingParams { stop: vec![String::new()], ..ok }.validate().is_err());
    }
}
