//! The OpenAI-compatible client against scripted servers that stream as vLLM and SGLang do
//! (server-sent events, one chunk per token, choices finishing at different times), and that
//! misbehave the ways long generations do: going silent half way, answering slowly but steadily.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use subgoal::model::openai::{OpenAiClient, OpenAiConfig};
use subgoal::model::{FinishReason, GenRequest, Generator, Prompt, SamplingParams};

/// A choice's piece of text, and its finish reason when it finishes.
type Piece = (usize, String, Option<&'static str>);

/// One scripted event: wait, then send this piece (`None`: go silent for good).
type Step = (u64, Option<Piece>);

/// What the server saw of each request: its body and its Authorization header.
type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

fn chunk(index: usize, text: &str, finish: Option<&'static str>) -> Piece {
    (index, text.to_string(), finish)
}

/// A piece as the completions or the chat endpoint streams it.
fn event((index, text, finish): &Piece, chat: bool) -> Value {
    if chat {
        json!({"object": "chat.completion.chunk", "choices": [{"index": index, "delta": {"content": text}, "finish_reason": finish}]})
    } else {
        json!({"object": "text_completion", "choices": [{"index": index, "text": text, "finish_reason": finish}]})
    }
}

/// A server that answers request `i` (0-based) with the events `script(i, body)` gives.
async fn scripted(script: impl Fn(usize, &Value) -> Vec<Step> + Send + Sync + 'static) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let script = Arc::new(script);
    let s = seen.clone();
    let handler = move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::Json<Value>| {
        let (s, script) = (s.clone(), script.clone());
        async move {
            let chat = uri.path().ends_with("/chat/completions");
            let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let i = {
                let mut seen = s.lock().unwrap();
                seen.push((body.0.clone(), auth));
                seen.len() - 1
            };
            let steps = script(i, &body.0);
            let events = futures::stream::unfold(steps.into_iter(), move |mut steps| async move {
                let (wait, data) = steps.next()?;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                match data {
                    Some(p) => {
                        Some((Ok::<_, std::convert::Infallible>(format!("data: {}\n\n", event(&p, chat))), steps))
                    }
                    None => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        None
                    }
                }
            })
            .chain(futures::stream::once(async { Ok("data: [DONE]\n\n".to_string()) }));
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from_stream(events))
                .unwrap()
        }
    };
    let app = axum::Router::new()
        .route("/v1/completions", axum::routing::post(handler.clone()))
        .route("/v1/chat/completions", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn client(url: &str, idle_ms: u64) -> OpenAiClient {
    let mut cfg = OpenAiConfig::new(url, "m");
    cfg.idle_timeout = Duration::from_millis(idle_ms);
    cfg.max_retries = 2;
    cfg.backoff = Duration::from_millis(10);
    OpenAiClient::new(cfg).unwrap()
}

fn request(n: usize) -> GenRequest {
    GenRequest {
        prompts: vec![Prompt::Text("theorem t : True := by".into())],
        params: SamplingParams { n, max_new_tokens: 64, seed: Some(5), ..Default::default() },
    }
}

#[tokio::test]
async fn a_long_answer_is_bounded_by_the_servers_silence_not_its_length() {
    // 30 tokens 50 ms apart (1.5 s in all) against a 400 ms idle timeout.
    let (url, seen) = scripted(|_, _| {
        let mut steps: Vec<Step> = (0..30).map(|k| (50, Some(chunk(0, &format!("t{k} "), None)))).collect();
        steps.push((50, Some(chunk(0, "", Some("length")))));
        steps
    })
    .await;
    let out = client(&url, 400).generate(&request(1)).await.unwrap();
    let c = &out[0][0];
    assert_eq!(c.finish_reason, FinishReason::Length, "{c:?}");
    assert!(c.text.starts_with("t0 t1 ") && c.text.ends_with("t29 "), "{c:?}");
    assert_eq!(c.completion_tokens, 30);
    assert_eq!(seen.lock().unwrap().len(), 1, "no retry");
}

#[tokio::test]
async fn only_the_samples_that_did_not_finish_are_asked_for_again() {
    let (url, seen) = scripted(|i, _| match i {
        // Choices 0 and 2 finish; choice 1 is half way when the server goes silent.
        0 => vec![
            (0, Some(chunk(0, "zero", Some("stop")))),
            (0, Some(chunk(1, "half", None))),
            (0, Some(chunk(2, "two", Some("stop")))),
            (0, None),
        ],
        _ => vec![(0, Some(chunk(0, "one", Some("stop"))))],
    })
    .await;
    let out = client(&url, 300).generate(&request(3)).await.unwrap();
    let texts: Vec<&str> = out[0].iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["zero", "one", "two"]);
    assert!(out[0].iter().all(|c| c.error.is_none()), "{out:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].0["n"], 1, "the retry asks for the missing sample only");
    assert_ne!(seen[0].0["seed"], seen[1].0["seed"], "with a seed of its own");
    assert_eq!(seen[0].0["stream"], true);
}

#[tokio::test]
async fn each_sample_is_handed_over_when_its_choice_finishes() {
    let (url, _) =
        scripted(|_, _| vec![(0, Some(chunk(1, "quick", Some("stop")))), (1500, Some(chunk(0, "slow", Some("stop"))))])
            .await;
    let c = client(&url, 5000);
    let req = request(2);
    let started = Instant::now();
    let mut stream = c.stream(&req);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!((first.sample, first.completion.text.as_str()), (1, "quick"));
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    let second = stream.next().await.unwrap().unwrap();
    assert_eq!((second.sample, second.completion.text.as_str()), (0, "slow"));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_server_that_stays_silent_gives_error_samples_naming_the_silence() {
    let (url, seen) = scripted(|_, _| vec![(0, None)]).await;
    let out = client(&url, 200).generate(&request(2)).await.unwrap();
    for c in &out[0] {
        assert_eq!(c.finish_reason, FinishReason::Error);
        assert!(c.error.as_deref().unwrap().contains("no answer within"), "{c:?}");
    }
    assert_eq!(seen.lock().unwrap().len(), 3, "the first attempt and two retries");
}

#[test]
fn the_api_key_comes_from_the_named_variable_and_is_written_nowhere() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proof = "```lean4\nprelude\nimport SubgoalFixture\ntheorem and_swap (p q : Prop) (h : And p q) : And q p := And.intro h.right h.left\n```";
    let (url, seen) = rt.block_on(scripted(move |_, _| vec![(0, Some(chunk(0, proof, Some("stop"))))]));
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let secret = "sk-test-4f1c9a7e2b";
    let out = std::process::Command::new(common::subgoal_bin())
        .args(["prove", "--statement", "theorem and_swap (p q : Prop) (h : And p q) : And q p :="])
        .args(["--header", common::HEADER, "--prover", &url, "--prover-api-key-env", "PROVER_KEY", "-k", "1"])
        .args(["--strategy", "whole", "--out", out_dir.to_str().unwrap(), "-vv"])
        .args(["--lean", common::lean().to_str().unwrap(), "--record", dir.path().join("rec.jsonl").to_str().unwrap()])
        .env("PROVER_KEY", secret)
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let attempts = std::fs::read_to_string(out_dir.join("attempts.jsonl")).unwrap_or_default();
    assert!(out.status.success(), "{stderr}\n{attempts}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].1.as_deref(), Some(format!("Bearer {secret}").as_str()));
    assert!(!stderr.contains(secret), "the key is in the log");
    for entry in walk(dir.path()) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(!text.contains(secret), "the key is in {}", entry.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    assert!(!files.is_empty());
    files
}

#[test]
fn a_proof_is_checked_as_soon_as_it_streams_in_and_the_other_samples_are_dropped() {
    // Sample 1 is a proof at once; sample 0 never finishes. The problem is proved without
    // waiting for it, and the request is dropped.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proof = "```lean4\nprelude\nimport SubgoalFixture\ntheorem and_swap (p q : Prop) (h : And p q) : And q p := And.intro h.right h.left\n```";
    let (url, _) = rt.block_on(scripted(move |_, _| {
        vec![(0, Some(chunk(0, "thinking ", None))), (0, Some(chunk(1, proof, Some("stop")))), (0, None)]
    }));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = std::process::Command::new(common::subgoal_bin())
        .args(["prove", "--statement", "theorem and_swap (p q : Prop) (h : And p q) : And q p :="])
        .args(["--header", common::HEADER, "--prover", &url, "-k", "2", "--strategy", "whole"])
        .args(["--server-timeout", "120", "--out", dir.path().to_str().unwrap()])
        .args(["--lean", common::lean().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(60), "waited {:?} for the silent sample", started.elapsed());
    let attempts = std::fs::read_to_string(dir.path().join("attempts.jsonl")).unwrap();
    assert_eq!(attempts.lines().count(), 1, "only the finished sample was checked: {attempts}");
}
