//! `subgoal serve`: any `Generator` over the OpenAI-compatible API (`POST /v1/completions`,
//! `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`), so one GPU box can serve many
//! verifier boxes. Errors are OpenAI-shaped (`{"error": {"message", "type"}}`): 400 for a request
//! it cannot honour, 500 when generation failed (clients retry those).

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
}

/// Serves `generator` under the name `model` on `listener` until the future is dropped.
pub async fn serve(
    generator: Arc<dyn Generator>,
    model: String,
    limits: Limits,
    listener: tokio::net::TcpListener,
) -> std::io::Result<()> {
    let state = Arc::new(AppState { generator, model, limits });
    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
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

async fn run(s: &AppState, body: &Value, prompts: Vec<Prompt>, chat: bool) -> Response {
    let params = match params(body, &s.limits) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", e),
    };
    let n = params.n;
    let req = GenRequest { prompts, params };
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
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let created = now.as_secs();
    let id = format!("{}-{}", if chat { "chatcmpl" } else { "cmpl" }, now.as_nanos());
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
