//! Client for OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, `subgoal serve`):
//! `/v1/completions` for text prompts, `/v1/chat/completions` for chat prompts, one HTTP request
//! per prompt with `n` samples, at most `max_concurrency` in flight.
//!
//! Requests are streamed (server-sent events): a sample is handed over the moment its choice
//! finishes, and an attempt fails only when the server sends nothing for `idle_timeout`, so a
//! long chain-of-thought answer is bounded by the server's silence, not by its length. A server
//! that answers with plain JSON instead is read as such. A failed attempt (connection error,
//! silence, 429, 5xx, unreadable data) is retried with exponential backoff for the samples not yet
//! finished only, with a seed of their own; a prompt that still fails yields error completions
//! for what is missing, naming the cause.
//!
//! Token accounting: a choice's `completion_tokens` when the server gives it (as `subgoal serve`
//! does), else its number of streamed chunks (vLLM, SGLang and llama.cpp send one token per chunk
//! by default) or, for a JSON answer, the request's total split evenly; the prompt's tokens from
//! the latest `usage` the server reported (vLLM reports it as it goes when asked).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{
    collect_samples, Completion, FinishReason, GenError, GenFuture, GenRequest, Generator, Prompt, SampleDone,
    SampleStream, SamplingParams,
};

/// The environment variable that holds an API key unless another is named.
pub const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";

#[derive(Clone)]
pub struct OpenAiConfig {
    /// Server root, e.g. `http://localhost:8000` (a trailing `/v1` is accepted).
    pub base_url: String,
    /// The `model` field sent with each request.
    pub model: String,
    /// Sent as a bearer token; never written anywhere (`Debug` hides it).
    pub api_key: Option<String>,
    /// An attempt fails when the server sends nothing for this long.
    pub idle_timeout: Duration,
    pub max_concurrency: usize,
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff; doubles per retry, capped at 30 s.
    pub backoff: Duration,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("idle_timeout", &self.idle_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

impl OpenAiConfig {
    /// A configuration whose key, if any, is read from `OPENAI_API_KEY`.
    pub fn new(base_url: &str, model: &str) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.trim_end_matches('/').trim_end_matches("/v1").to_string(),
            model: model.to_string(),
            api_key: api_key_from(DEFAULT_KEY_ENV),
            idle_timeout: Duration::from_secs(600),
            max_concurrency: 16,
            max_retries: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

/// The key held by environment variable `var`, if it is set and not empty.
pub fn api_key_from(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|k| !k.is_empty())
}

pub struct OpenAiClient {
    cfg: OpenAiConfig,
    http: reqwest::Client,
    slots: Semaphore,
}

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
struct AttemptError {
    retry: bool,
    detail: String,
}

impl AttemptError {
    fn retry(detail: impl Into<String>) -> AttemptError {
        AttemptError { retry: true, detail: detail.into() }
    }
    fn fatal(detail: impl Into<String>) -> AttemptError {
        AttemptError { retry: false, detail: detail.into() }
    }
    /// The server sent nothing for `idle`.
    fn silent(idle: Duration) -> AttemptError {
        AttemptError::retry(format!("no answer within {:.0} s", idle.as_secs_f64()))
    }
}

/// A choice being streamed.
#[derive(Default)]
struct Partial {
    text: String,
    chunks: usize,
}

/// Where finished samples go: sample index within the prompt, and the completion.
type Emit<'e> = &'e mut (dyn FnMut(usize, Completion) + Send);

/// An answer that is not an event stream: an error status, or one JSON body with every choice.
async fn read_plain(
    resp: reqwest::Response,
    idle: Duration,
    targets: &[usize],
    chat: bool,
    emit: Emit<'_>,
) -> Result<(), AttemptError> {
    let status = resp.status();
    let bytes = read_all(resp, idle).await?;
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if !status.is_success() {
        let retry = status.as_u16() == 429 || status.is_server_error();
        return Err(AttemptError { retry, detail: format!("HTTP {status}: {shown}") });
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| AttemptError::retry(format!("the body is not JSON ({e}): {shown}")))?;
    let cs = parse_choices(&v, targets.len(), chat).map_err(|d| AttemptError::fatal(format!("{d}: {shown}")))?;
    for (i, c) in cs.into_iter().enumerate() {
        emit(targets[i], c);
    }
    Ok(())
}

/// A streamed answer: server-sent events, each choice's text gathered until its
/// `finish_reason`, then handed to `emit`. Silence past `idle` is an error to retry, as is a
/// stream that ends with a choice unfinished.
async fn read_events(
    resp: reqwest::Response,
    idle: Duration,
    targets: &[usize],
    chat: bool,
    emit: Emit<'_>,
) -> Result<(), AttemptError> {
    let mut events = resp.bytes_stream().eventsource();
    let mut partial: HashMap<usize, Partial> = HashMap::new();
    let mut finished = vec![false; targets.len()];
    let mut prompt_tokens = 0usize;
    loop {
        let event = match tokio::time::timeout(idle, events.next()).await {
            Err(_) => return Err(AttemptError::silent(idle)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(AttemptError::retry(format!("reading the event stream: {e}"))),
            Ok(Some(Ok(ev))) => ev,
        };
        if event.data.trim() == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&event.data).map_err(|e| {
            let shown: String = event.data.chars().take(300).collect();
            AttemptError::retry(format!("an event is not JSON ({e}): {shown}"))
        })?;
        if let Some(err) = v.get("error") {
            return Err(AttemptError::retry(format!("the server reported an error: {err}")));
        }
        if let Some(p) = v.get("usage").and_then(|u| u.get("prompt_tokens")).and_then(Value::as_u64) {
            prompt_tokens = p as usize;
        }
        for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            if index >= targets.len() {
                return Err(AttemptError::fatal(format!("asked for {} choices, got index {index}", targets.len())));
            }
            let piece = if chat {
                c.get("delta").and_then(|d| d.get("content")).and_then(Value::as_str)
            } else {
                c.get("text").and_then(Value::as_str)
            };
            let p = partial.entry(index).or_default();
            // A finishing chunk often carries no text; it is no token.
            if let Some(t) = piece.filter(|t| !t.is_empty()) {
                p.text.push_str(t);
                p.chunks += 1;
            }
            let Some(reason) = c.get("finish_reason").and_then(Value::as_str) else { continue };
            if std::mem::replace(&mut finished[index], true) {
                continue;
            }
            let p = partial.remove(&index).unwrap_or_default();
            let completion_tokens = c.get("completion_tokens").and_then(Value::as_u64).map_or(p.chunks, |t| t as usize);
            let prompt_tokens = c.get("prompt_tokens").and_then(Value::as_u64).map_or(prompt_tokens, |t| t as usize);
            emit(
                targets[index],
                Completion {
                    text: p.text,
                    prompt_tokens,
                    completion_tokens,
                    finish_reason: if reason == "length" { FinishReason::Length } else { FinishReason::Stop },
                    error: None,
                    elapsed_ms: 0,
                },
            );
        }
    }
    match finished.iter().filter(|f| !**f).count() {
        0 => Ok(()),
        open => Err(AttemptError::retry(format!("the stream ended with {open} choice(s) unfinished"))),
    }
}

impl OpenAiClient {
    pub fn new(cfg: OpenAiConfig) -> Result<OpenAiClient, GenError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.idle_timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| GenError::Load { model: cfg.base_url.clone(), detail: e.to_string() })?;
        let slots = Semaphore::new(cfg.max_concurrency.max(1));
        Ok(OpenAiClient { cfg, http, slots })
    }

    fn body(&self, prompt: &Prompt, p: &SamplingParams, n: usize, seed: Option<u64>) -> (String, Value) {
        let mut body = json!({
            "model": self.cfg.model,
            "n": n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_new_tokens,
            "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": true},
        });
        if !p.stop.is_empty() {
            body["stop"] = json!(p.stop);
        }
        if let Some(s) = seed {
            body["seed"] = json!(s);
        }
        match prompt {
            Prompt::Text(t) => {
                body["prompt"] = json!(t);
                (format!("{}/v1/completions", self.cfg.base_url), body)
            }
            Prompt::Chat(m) => {
                body["messages"] = json!(m);
                (format!("{}/v1/chat/completions", self.cfg.base_url), body)
            }
        }
    }

    /// One HTTP attempt for the samples `targets` (choice `i` is sample `targets[i]`); each
    /// finished choice goes to `emit` at once. On error, the choices that finished are kept.
    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        targets: &[usize],
        chat: bool,
        emit: Emit<'_>,
    ) -> Result<(), AttemptError> {
        let idle = self.cfg.idle_timeout;
        let mut req = self.http.post(url).json(body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k);
        }
        let resp = match tokio::time::timeout(idle, req.send()).await {
            Err(_) => return Err(AttemptError::silent(idle)),
            Ok(Err(e)) => return Err(AttemptError::retry(format!("request failed: {e}"))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let event_stream = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !status.is_success() || !event_stream {
            return read_plain(resp, idle, targets, chat, emit).await;
        }
        read_events(resp, idle, targets, chat, emit).await
    }

    /// All `params.n` samples of one prompt, each sent to `out` as it finishes.
    async fn one(
        &self,
        prompt_index: usize,
        prompt: &Prompt,
        params: &SamplingParams,
        out: mpsc::UnboundedSender<SampleDone>,
    ) {
        let started = Instant::now();
        let chat = matches!(prompt, Prompt::Chat(_));
        let _slot = self.slots.acquire().await;
        let mut done = vec![false; params.n];
        let mut delay = self.cfg.backoff;
        let mut attempt: u32 = 0;
        loop {
            let targets: Vec<usize> = (0..params.n).filter(|&i| !done[i]).collect();
            if targets.is_empty() {
                return;
            }
            // A retry asks for the missing samples only, with a seed of its own (the same seed
            // would redraw the samples already received).
            let seed = params.seed.map(|s| s.wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let (url, body) = self.body(prompt, params, targets.len(), seed);
            let mut emit = |sample: usize, mut c: Completion| {
                c.elapsed_ms = started.elapsed().as_millis() as u64;
                done[sample] = true;
                let _ = out.unbounded_send(SampleDone { prompt: prompt_index, sample, completion: c });
            };
            let result = self.attempt(&url, &body, &targets, chat, &mut emit).await;
            match result {
                Ok(()) => {}
                Err(e) if e.retry && attempt < self.cfg.max_retries => {
                    attempt += 1;
                    let missing = done.iter().filter(|d| !**d).count();
                    tracing::warn!(url, attempt, missing, error = %e.detail, "retrying");
                    // Jitter spreads retries of many clients hitting one server.
                    let jitter = Duration::from_millis(u64::from(started.elapsed().subsec_nanos() % 250));
                    tokio::time::sleep(delay + jitter).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    let ms = started.elapsed().as_millis() as u64;
                    let detail = format!("{url}: {} (after {} attempts)", e.detail, attempt + 1);
                    for sample in (0..params.n).filter(|&i| !done[i]) {
                        let c = Completion::failed(detail.clone(), ms);
                        let _ = out.unbounded_send(SampleDone { prompt: prompt_index, sample, completion: c });
                    }
                    return;
                }
            }
        }
    }
}

/// The whole body of a non-streamed answer, failing when the server goes silent.
async fn read_all(resp: reqwest::Response, idle: Duration) -> Result<Vec<u8>, AttemptError> {
    let mut body = resp.bytes_stream();
    let mut bytes = Vec::new();
    loop {
        match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return Err(AttemptError::silent(idle)),
            Ok(None) => return Ok(bytes),
            Ok(Some(Err(e))) => return Err(AttemptError::retry(format!("reading the body: {e}"))),
            Ok(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
        }
    }
}

/// Reads `choices` (ordered by `index`) and `usage` from a completions response.
fn parse_choices(v: &Value, n: usize, chat: bool) -> Result<Vec<Completion>, String> {
    let choices = v.get("choices").and_then(Value::as_array).ok_or("the response has no \"choices\" array")?;
    if choices.len() != n {
        return Err(format!("asked for {n} choices, got {}", choices.len()));
    }
    let usage = v.get("usage");
    let prompt_tokens = usage.and_then(|u| u.get("prompt_tokens")).and_then(Value::as_u64).unwrap_or(0) as usize;
    let total = usage.and_then(|u| u.get("completion_tokens")).and_then(Value::as_u64).unwrap_or(0) as usize;
    let mut out: Vec<(usize, Completion)> = Vec::new();
    for (i, c) in choices.iter().enumerate() {
        let index = c.get("index").and_then(Value::as_u64).map_or(i, |x| x as usize);
        let text = if chat {
            c.get("message").and_then(|m| m.get("content")).and_then(Value::as_str)
        } else {
            c.get("text").and_then(Value::as_str)
        }
        .ok_or_else(|| format!("choice {i} has no text"))?;
        let finish_reason = match c.get("finish_reason").and_then(Value::as_str) {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let completion_tokens = c
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .map_or(total / n + usize::from(i < total % n), |t| t as usize);
        out.push((
            index,
            Completion {
                text: text.to_string(),
                prompt_tokens,
                completion_tokens,
                finish_reason,
                error: None,
                elapsed_ms: 0,
            },
        ));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

impl Generator for OpenAiClient {
    fn generate<'a>(&'a self, req: &'a GenRequest) -> GenFuture<'a> {
        Box::pin(collect_samples(req, self.stream(req)))
    }

    fn stream<'a>(&'a self, req: &'a GenRequest) -> SampleStream<'a> {
        if let Err(e) = req.params.validate() {
            return Box::pin(futures::stream::iter(vec![Err(e)]));
        }
        let span = tracing::info_span!("generate", backend = "openai", prompts = req.prompts.len(), n = req.params.n);
        let (tx, rx) = mpsc::unbounded();
        // The prompts run concurrently and send their samples as they finish; the channel closes
        // when the last one is done. The driver yields nothing itself: it only has to be polled.
        let driver = futures::future::join_all(
            req.prompts.iter().enumerate().map(|(i, p)| self.one(i, p, &req.params, tx.clone())),
        )
        .map(move |_| drop(tx))
        .instrument(span)
        .into_stream()
        .filter_map(|_| futures::future::ready(None));
        Box::pin(futures::stream::select(rx.map(Ok), driver))
    }

    fn describe(&self) -> String {
        format!("openai:{} (model {})", self.cfg.base_url, self.cfg.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_ordered_by_index_with_per_choice_tokens_when_given() {
        let v = json!({
            "choices": [
                {"index": 1, "text": "b", "finish_reason": "length", "completion_tokens": 7},
                {"index": 0, "text": "a", "finish_reason": "stop", "completion_tokens": 3}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 10}
        });
        let cs = parse_choices(&v, 2, false).unwrap();
        assert_eq!((cs[0].text.as_str(), cs[0].completion_tokens), ("a", 3));
        assert_eq!((cs[1].finish_reason, cs[1].prompt_tokens), (FinishReason::Length, 5));
    }

    #[test]
    fn a_response_without_choices_is_an_error_naming_what_is_missing() {
        assert!(parse_choices(&json!({"id": 1}), 1, false).unwrap_err().contains("choices"));
        assert!(parse_choices(&json!({"choices": [{"text": "a"}]}), 2, false).unwrap_err().contains("asked for 2"));
    }

    #[test]
    fn the_debug_form_hides_the_key() {
        let mut cfg = OpenAiConfig::new("http://x", "m");
        cfg.api_key = Some("sk-secret-123".into());
        assert!(!format!("{cfg:?}").contains("sk-secret-123"));
    }
}
