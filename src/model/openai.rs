//! Client for OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, `subgoal serve`):
//! `/v1/completions` for text prompts, `/v1/chat/completions` for chat prompts, one HTTP request
//! per prompt with `n` samples, at most `max_concurrency` in flight, a timeout per attempt, and
//! retries with exponential backoff on connection errors, timeouts, 429, 5xx and unreadable
//! bodies. A prompt that still fails yields `n` error completions naming the cause.
//!
//! Token accounting: a server reports `usage` for the whole request; when a choice carries its
//! own `completion_tokens` (as `subgoal serve` adds) that is used, else the total is split evenly.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{Completion, FinishReason, GenError, GenFuture, GenRequest, Generator, Prompt, SamplingParams};

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Server root, e.g. `http://localhost:8000` (a trailing `/v1` is accepted).
    pub base_url: String,
    /// The `model` field sent with each request.
    pub model: String,
    pub api_key: Option<String>,
    /// Limit for one HTTP attempt.
    pub timeout: Duration,
    pub max_concurrency: usize,
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff; doubles per retry, capped at 30 s.
    pub backoff: Duration,
}

impl OpenAiConfig {
    pub fn new(base_url: &str, model: &str) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.trim_end_matches('/').trim_end_matches("/v1").to_string(),
            model: model.to_string(),
            api_key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(600),
            max_concurrency: 16,
            max_retries: 4,
            backoff: Duration::from_millis(500),
        }
    }
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

impl OpenAiClient {
    pub fn new(cfg: OpenAiConfig) -> Result<OpenAiClient, GenError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| GenError::Load { model: cfg.base_url.clone(), detail: e.to_string() })?;
        let slots = Semaphore::new(cfg.max_concurrency.max(1));
        Ok(OpenAiClient { cfg, http, slots })
    }

    fn body(&self, prompt: &Prompt, p: &SamplingParams) -> (String, Value) {
        let mut body = json!({
            "model": self.cfg.model,
            "n": p.n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_new_tokens,
        });
        if !p.stop.is_empty() {
            body["stop"] = json!(p.stop);
        }
        if let Some(s) = p.seed {
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

    async fn attempt(&self, url: &str, body: &Value, n: usize, chat: bool) -> Result<Vec<Completion>, AttemptError> {
        let mut req = self.http.post(url).json(body);
        if let Some(k) = &self.cfg.api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| AttemptError {
            retry: true,
            detail: if e.is_timeout() {
                format!("no answer within {:.0} s", self.cfg.timeout.as_secs_f64())
            } else {
                format!("request failed: {e}")
            },
        })?;
        let status = resp.status();
        let bytes =
            resp.bytes().await.map_err(|e| AttemptError { retry: true, detail: format!("reading the body: {e}") })?;
        let shown = || String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        if !status.is_success() {
            let retry = status.as_u16() == 429 || status.is_server_error();
            return Err(AttemptError { retry, detail: format!("HTTP {status}: {}", shown()) });
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| AttemptError { retry: true, detail: format!("the body is not JSON ({e}): {}", shown()) })?;
        parse_choices(&v, n, chat)
            .map_err(|detail| AttemptError { retry: false, detail: format!("{detail}: {}", shown()) })
    }

    async fn one(&self, prompt: &Prompt, params: &SamplingParams) -> Vec<Completion> {
        let started = Instant::now();
        let (url, body) = self.body(prompt, params);
        let chat = matches!(prompt, Prompt::Chat(_));
        let _slot = self.slots.acquire().await;
        let mut delay = self.cfg.backoff;
        let mut attempt = 0;
        loop {
            match self.attempt(&url, &body, params.n, chat).await {
                Ok(mut cs) => {
                    let ms = started.elapsed().as_millis() as u64;
                    cs.iter_mut().for_each(|c| c.elapsed_ms = ms);
                    return cs;
                }
                Err(e) if e.retry && attempt < self.cfg.max_retries => {
                    attempt += 1;
                    tracing::warn!(url, attempt, error = %e.detail, "retrying");
                    // Jitter spreads retries of many clients hitting one server.
                    let jitter = Duration::from_millis(u64::from(started.elapsed().subsec_nanos() % 250));
                    tokio::time::sleep(delay + jitter).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    let ms = started.elapsed().as_millis() as u64;
                    let detail = format!("{url}: {} (after {} attempts)", e.detail, attempt + 1);
                    return (0..params.n).map(|_| Completion::failed(detail.clone(), ms)).collect();
                }
            }
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
        Box::pin(async move {
            req.params.validate()?;
            let span =
                tracing::info_span!("generate", backend = "openai", prompts = req.prompts.len(), n = req.params.n);
            Ok(futures::future::join_all(req.prompts.iter().map(|p| self.one(p, &req.params))).instrument(span).await)
        })
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
}
