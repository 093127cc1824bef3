//! `subgoal serve`: any `Generator` over the OpenAI-compatible API (`POST /v1/completions`,
//! `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`, and Prometheus text at
//! `GET /metrics`), so one GPU box can serve many verifier boxes. With `"stream": true` the answer
//! is server-sent events: text as the engine generates it, each choice's end (with its
//! `completion_tokens`), then usage and `[DONE]`. Errors are OpenAI-shaped (`{"error": {"message",
//! "type"}}`): 400 for a request it cannot honour, 500 when generation failed (clients retry those;
//! in a stream, an `error` event ends it).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ChatMessage, FinishReason, GenRequest, Generator, Prompt, SamplingParams};

/// What one request may ask for; past these it is answered 400, so no single request can take
/// the server's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Samples per prompt (`n`).
    pub max_n: usize,
    /// New tokens per sample (`max_tokens`).
    pub max_tokens: usize,
    /// Prompts per request (a `prompt` array).
    pub max_prompts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_n: 64, max_tokens: 32768, max_prompts: 64 }
    }
}

struct AppState {
    generator: Arc<dyn Generator>,
    model: String,
    limits: Limits,
    /// Generated tokens and time at the previous `/metrics` scrape (for tokens/s).
    last_scrape: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

/// Serves `generator` under the name `model` on `listener` until the future is dropped.
pub async fn serve(
    generator: Arc<dyn Generator>,
    model: String,
    limits: Limits,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    let state = Arc::new(AppState { generator, model, limits, last_scrape: std::sync::Mutex::new(None) });
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).await
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into(), "type": kind}}))).into_response()
}

async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": s.model, "object": "model", "owned_by": "subgoal"}]}))
}

/// Sampling parameters from an OpenAI request body (OpenAI's defaults where absent), within
/// `limits`.
fn params(body: &Value, limits: &Limits) -> Result<SamplingParams, String> {
    let num = |k: &str| body.get(k).filter(|v| !v.is_null());
    let mut p = SamplingParams { n: 1, temperature: 1.0, top_p: 1.0, max_new_tokens: 256, stop: vec![], seed: None };
    if let Some(v) = num("n") {
        p.n = v.as_u64().ok_or("\"n\" must be a positive integer")? as usize;
    }
    if let Some(v) = num("temperature") {
        p.temperature = v.as_f64().ok_or("\"temperature\" must be a number")?;
    }
    if let Some(v) = num("top_p") {
        p.top_p = v.as_f64().ok_or("\"top_p\" must be a number")?;
    }
    if let Some(v) = num("max_tokens").or_else(|| num("max_completion_tokens")) {
        p.max_new_tokens = v.as_u64().ok_or("\"max_tokens\" must be a positive integer")? as usize;
    }
    if let Some(v) = num("seed") {
        p.seed = Some(v.as_u64().ok_or("\"seed\" must be a non-negative integer")?);
    }
    match num("stop") {
        None => {}
        Some(Value::String(s)) => p.stop = vec![s.clone()],
        Some(Value::Array(a)) => {
            p.stop = a
                .iter()
                .map(|s| s.as_str().map(str::to_owned).ok_or("\"stop\" must hold strings"))
                .collect::<Result<_, _>>()?
        }
        Some(_) => return Err("\"stop\" must be a string or an array of strings".into()),
    }
    p.validate().map_err(|e| e.to_string())?;
    if p.n > limits.max_n {
        return Err(format!(
            "\"n\" is {}; this server gives at most {} samples per prompt (--max-n)",
            p.n, limits.max_n
        ));
    }
    if p.max_new_tokens > limits.max_tokens {
        return Err(format!(
            "\"max_tokens\" is {}; this server generates at most {} tokens per sample (--max-tokens-limit)",
            p.max_new_tokens, limits.max_tokens
        ));
    }
    Ok(p)
}

fn parse_body(bytes: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(bytes).map_err(|e| {
        Box::new(error(StatusCode::BAD_REQUEST, "invalid_request_error", format!("the body is not JSON: {e}")))
    })
}

async fn completions(State(s): State<Arc<AppState>>, bytes: axum::body::Bytes) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let prompts: Vec<Prompt> = match body.get("prompt") {
        Some(Value::String(t)) => vec![Prompt::Text(t.clone())],
        Some(Value::Array(a)) if a.len() > s.limits.max_prompts => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                format!(
                    "{} prompts; this server takes at most {} per request (--max-prompts)",
                    a.len(),
                    s.limits.max_prompts
                ),
            )
        }
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            a.iter().filter_map(|t| t.as_str()).map(|t| Prompt::Text(t.to_string())).collect()
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "\"prompt\" must be a string or an array of strings",
            )
        }
    };
    run(&s, &body, prompts, false).await
}

async fn chat_completions(State(s): State<Arc<AppState>>, bytes: axum::body::Bytes) -> Response {
    let body = match parse_body(&bytes) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let messages: Result<Vec<ChatMessage>, _> =
        serde_json::from_value(body.get("messages").cloned().unwrap_or(Value::Null));
    match messages {
        Ok(m) if !m.is_empty() => run(&s, &body, vec![Prompt::Chat(m)], true).await,
        _ => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "\"messages\" must be a non-empty array of {role, content}",
        ),
    }
}

async fn run(s: &Arc<AppState>, body: &Value, prompts: Vec<Prompt>, chat: bool) -> Response {
    let params = match params(body, &s.limits) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", e),
    };
    let n = params.n;
    let req = GenRequest { prompts, params };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(s.clone(), req, chat);
    }
    let out = match s.generator.generate(&req).await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string()),
    };
    if let Some(e) = out.iter().flatten().find_map(|c| c.error.clone()) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e);
    }
    let mut choices = Vec::new();
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    for (pi, cs) in out.iter().enumerate() {
        prompt_tokens += cs.first().map_or(0, |c| c.prompt_tokens);
        for (j, c) in cs.iter().enumerate() {
            completion_tokens += c.completion_tokens;
            let finish = if c.finish_reason == FinishReason::Length { "length" } else { "stop" };
            let mut choice =
                json!({"index": pi * n + j, "finish_reason": finish, "completion_tokens": c.completion_tokens});
            if chat {
                choice["message"] = json!({"role": "assistant", "content": c.text});
            } else {
                choice["text"] = json!(c.text);
                choice["logprobs"] = Value::Null;
            }
            choices.push(choice);
        }
    }
    let (id, created) = response_id(chat);
    Json(json!({
        "id": id,
        "object": if chat { "chat.completion" } else { "text_completion" },
        "created": created,
        "model": s.model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }))
    .into_response()
}

fn response_id(chat: bool) -> (String, u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (format!("{}-{}", if chat { "chatcmpl" } else { "cmpl" }, now.as_nanos()), now.as_secs())
}

/// A streamed answer: one event per text delta, one per finished choice (with its
/// `completion_tokens`; the text not yet sent, for backends that send none before), then usage
/// and `[DONE]`. The request is dropped (and its work with it) when the client goes away.
fn stream(s: Arc<AppState>, req: GenRequest, chat: bool) -> Response {
    let (id, created) = response_id(chat);
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let n = req.params.n;
    let generator = s.generator.clone();
    let model = s.model.clone();
    let chunk = move |index: usize, text: &str, finish: Option<&str>, tokens: Option<(usize, usize)>| {
        let mut choice = json!({"index": index, "finish_reason": finish});
        if chat {
            choice["delta"] = json!({"content": text});
        } else {
            choice["text"] = json!(text);
        }
        // A finished choice carries its own token counts: a client uses them as they come, where
        // the request's usage arrives only after the last choice.
        if let Some((prompt, completion)) = tokens {
            choice["completion_tokens"] = json!(completion);
            choice["prompt_tokens"] = json!(prompt);
        }
        format!(
            "data: {}\n\n",
            json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]})
        )
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut events = generator.events(&req);
        let mut sent: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        let (mut prompt_tokens, mut completion_tokens) = (0usize, 0usize);
        let mut first_of_prompt = std::collections::HashSet::new();
        while let Some(e) = futures::StreamExt::next(&mut events).await {
            let line = match e {
                Ok(crate::model::GenEvent::Delta { prompt, sample, text }) => {
                    *sent.entry(prompt * n + sample).or_default() += text.len();
                    chunk(prompt * n + sample, &text, None, None)
                }
                Ok(crate::model::GenEvent::Done(d)) => {
                    let c = d.completion;
                    if let Some(err) = c.error {
                        let _ = tx
                            .send(format!("data: {}\n\n", json!({"error": {"message": err, "type": "server_error"}})))
                            .await;
                        return;
                    }
                    let index = d.prompt * n + d.sample;
                    let done = sent.get(&index).copied().unwrap_or(0).min(c.text.len());
                    let rest = if c.text.is_char_boundary(done) { &c.text[done..] } else { "" };
                    if first_of_prompt.insert(d.prompt) {
                        prompt_tokens += c.prompt_tokens;
                    }
                    completion_tokens += c.completion_tokens;
                    let finish = if c.finish_reason == FinishReason::Length { "length" } else { "stop" };
                    chunk(index, rest, Some(finish), Some((c.prompt_tokens, c.completion_tokens)))
                }
                Err(e) => {
                    let _ = tx
                        .send(format!(
                            "data: {}\n\n",
                            json!({"error": {"message": e.to_string(), "type": "server_error"}})
                        ))
                        .await;
                    return;
                }
            };
            if tx.send(line).await.is_err() {
                // The client left: dropping the events drops the request.
                return;
            }
        }
        let usage = json!({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}});
        let _ = tx.send(format!("data: {usage}\n\n")).await;
        let _ = tx.send("data: [DONE]\n\n".to_string()).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "could not start the stream"))
}

/// Prometheus text: the engine's gauges and counters, and tokens/s since the last scrape.
async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let Some(m) = s.generator.metrics() else {
        return (StatusCode::OK, "# this backend keeps no engine metrics\n").into_response();
    };
    let now = std::time::Instant::now();
    let rate = match s.last_scrape.lock() {
        Ok(mut last) => {
            let r = last.map_or(0.0, |(t, tokens)| {
                let secs = now.duration_since(t).as_secs_f64();
                if secs > 0.0 {
                    (m.generated_tokens.saturating_sub(tokens)) as f64 / secs
                } else {
                    0.0
                }
            });
            *last = Some((now, m.generated_tokens));
            r
        }
        Err(_) => 0.0,
    };
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!("# HELP subgoal_{name} {help}\n# TYPE subgoal_{name} {kind}\nsubgoal_{name} {value}\n"));
    };
    put("running_sequences", "gauge", "Sequences in the running batch.", m.running.to_string());
    put("waiting_sequences", "gauge", "Sequences waiting for admission or preempted.", m.waiting.to_string());
    put("kv_blocks_used", "gauge", "KV cache blocks held by sequences.", m.blocks_used.to_string());
    put(
        "kv_blocks_free",
        "gauge",
        "KV cache blocks free or only cached.",
        (m.blocks_total - m.blocks_used).to_string(),
    );
    put("prefix_cache_hits_total", "counter", "Prompt blocks found in the prefix cache.", m.prefix_hits.to_string());
    put(
        "prefix_cache_misses_total",
        "counter",
        "Prompt blocks not found in the prefix cache.",
        m.prefix_misses.to_string(),
    );
    put("preemptions_total", "counter", "Sequences preempted for lack of KV blocks.", m.preemptions.to_string());
    put("generated_tokens_total", "counter", "Tokens sampled.", m.generated_tokens.to_string());
    put("prompt_tokens_total", "counter", "Prompt tokens received.", m.prompt_tokens.to_string());
    put("steps_total", "counter", "Engine steps run.", m.steps.to_string());
    put("requests_total", "counter", "Prompts admitted and then answered or dropped.", m.requests_done.to_string());
    put(
        "generation_tokens_per_second",
        "gauge",
        "Tokens sampled per second since the previous scrape.",
        format!("{rate:.1}"),
    );
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_defaults_apply_and_bad_fields_are_named() {
        let l = Limits::default();
        let p = params(&json!({"max_tokens": 5, "stop": "\n"}), &l).unwrap();
        assert_eq!((p.n, p.max_new_tokens, p.stop.clone()), (1, 5, vec!["\n".to_string()]));
        assert!(params(&json!({"n": "two"}), &l).unwrap_err().contains("\"n\""));
        assert!(params(&json!({"top_p": 0}), &l).unwrap_err().contains("top_p"));
    }

    #[test]
    fn requests_past_the_limits_are_refused_naming_the_limit() {
        let l = Limits { max_n: 4, max_tokens: 100, max_prompts: 2 };
        assert!(params(&json!({"n": 4, "max_tokens": 100}), &l).is_ok());
        assert!(params(&json!({"n": 5}), &l).unwrap_err().contains("at most 4"));
        assert!(params(&json!({"max_tokens": 101}), &l).unwrap_err().contains("at most 100"));
    }
}
