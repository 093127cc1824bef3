//! The serving engine on the CPU with the real test model: concurrent requests, a cache too small
//! for them, cancellation, the prefix cache, and `subgoal serve` streaming to many clients. The
//! CPU path runs the same scheduler, block pool and paged forward pass as a GPU; on the CPU every
//! row's arithmetic is independent of the batch, so a sample must come out token for token the
//! same whatever else runs beside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::engine::EngineOptions;
use subgoal::model::{Completion, FinishReason, GenRequest, Generator, Prompt, SamplingParams};

fn model_path() -> PathBuf {
    let p = subgoal::model::test_model_path();
    assert!(p.exists(), "test model missing at {}: run scripts/install-test-model.sh", p.display());
    p
}

fn load(engine: EngineOptions) -> Embedded {
    Embedded::load(&model_path(), &EmbeddedOptions { engine, ..Default::default() }).expect("load the test model")
}

fn request(prompt: &str, n: usize, seed: u64, max: usize) -> GenRequest {
    GenRequest {
        prompts: vec![Prompt::Text(prompt.into())],
        params: SamplingParams {
            n,
            temperature: 1.0,
            top_p: 0.95,
            max_new_tokens: max,
            stop: vec![],
            seed: Some(seed),
        },
    }
}

/// Prompts of different lengths (a Lean statement, prose, a long header).
fn workload() -> Vec<GenRequest> {
    vec![
        request("theorem foo (n : ℕ) : n + 0 = n := by", 3, 1, 12),
        request("Prove that the sum of two even numbers is even.", 1, 2, 16),
        request(
            "import Mathlib\nopen Real\n\n/-- Show that 2 ≤ √5. -/\ntheorem t : (2 : ℝ) ≤ Real.sqrt 5 := by\n",
            2,
            3,
            10,
        ),
        request("Once upon a time", 2, 4, 14),
        request("1, 2, 3, 5, 8, 13,", 1, 5, 8),
        request("Lemma. For all primes p > 2, p is odd. Proof:", 3, 6, 12),
    ]
}

/// The engine's counters once it has published the step after the last answer.
async fn settled(engine: &Embedded) -> subgoal::model::engine::MetricsSnapshot {
    let started = Instant::now();
    loop {
        let m = engine.metrics();
        if (m.running == 0 && m.blocks_used == 0) || started.elapsed() > Duration::from_secs(5) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn texts(out: &[Vec<Completion>]) -> Vec<Vec<String>> {
    out.iter().map(|cs| cs.iter().map(|c| c.text.clone()).collect()).collect()
}

/// Each request run on its own, one after the other.
async fn alone(engine: &Embedded, reqs: &[GenRequest]) -> Vec<Vec<Vec<String>>> {
    let mut out = Vec::new();
    for r in reqs {
        out.push(texts(&engine.generate(r).await.unwrap()));
    }
    out
}

/// Every request at once.
async fn together(engine: &Embedded, reqs: &[GenRequest]) -> Vec<Vec<Vec<String>>> {
    let outs = futures::future::join_all(reqs.iter().map(|r| engine.generate(r))).await;
    outs.into_iter().map(|o| texts(&o.unwrap())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_give_exactly_the_samples_they_give_alone() {
    let reqs = workload();
    let expected = alone(&load(EngineOptions::default()), &reqs).await;
    // Small steps: prompts are read in chunks between other sequences' decodes.
    let engine = load(EngineOptions { max_batch_tokens: 16, ..Default::default() });
    let got = together(&engine, &reqs).await;
    assert_eq!(got, expected);
    let m = settled(&engine).await;
    assert_eq!(m.requests_done, reqs.len() as u64);
    assert_eq!((m.running, m.waiting, m.blocks_used), (0, 0, 0), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_steps_time_is_split_into_planning_the_forward_pass_and_what_follows() {
    let engine = load(EngineOptions::default());
    let started = Instant::now();
    engine.generate(&request("Fact:", 2, 3, 8)).await.unwrap();
    let m = settled(&engine).await;
    let wall_us = started.elapsed().as_micros() as u64;
    assert!(m.steps > 0 && m.plan_us > 0 && m.forward_us > 0 && m.after_us > 0, "{m:?}");
    // The three parts are disjoint stretches of the engine thread's time.
    assert!(m.plan_us + m.forward_us + m.after_us <= wall_us, "{m:?} in {wall_us} us");
    // The device's own clock is read only where there is a device stream to mark.
    assert_eq!(m.device_forward_us, 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_too_small_for_the_batch_preempts_and_loses_or_repeats_no_sample() {
    let reqs = workload();
    let expected = alone(&load(EngineOptions::default()), &reqs).await;
    // 10 blocks of 8 positions: about two requests' worth at a time.
    let engine = load(EngineOptions { cache_blocks: Some(10), block_size: 8, ..Default::default() });
    let out = futures::future::join_all(reqs.iter().map(|r| engine.generate(r))).await;
    // One prompt per request: its completions.
    let out: Vec<Vec<Completion>> = out.into_iter().map(|o| o.unwrap().remove(0)).collect();
    for (r, cs) in reqs.iter().zip(&out) {
        assert_eq!(cs.len(), r.params.n);
        for c in cs {
            assert!(c.error.is_none() && c.finish_reason != FinishReason::Error, "{c:?}");
            assert!(c.completion_tokens <= r.params.max_new_tokens, "{c:?}");
        }
    }
    let got: Vec<Vec<Vec<String>>> = out.iter().map(|o| texts(std::slice::from_ref(o))).collect();
    assert_eq!(got, expected);
    let m = settled(&engine).await;
    assert!(m.preemptions > 0, "the cache was never short: {m:?}");
    assert_eq!(m.blocks_used, 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_mid_generation_frees_its_blocks() {
    let engine = load(EngineOptions::default());
    let req = request("Write a long story about a prime number:", 4, 9, 2000);
    {
        let mut events = engine.stream_events(&req, true);
        // Wait for the first text, then walk away.
        while let Some(e) = events.next().await {
            if matches!(e.unwrap().1, subgoal::model::engine::Event::Delta { .. }) {
                break;
            }
        }
        assert!(engine.metrics().blocks_used > 0);
    }
    let started = Instant::now();
    while engine.metrics().blocks_used > 0 || engine.metrics().running > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "still held: {:?}", engine.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(engine.metrics().generated_tokens < 4 * 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_found_in_the_prefix_cache_gives_the_same_samples() {
    let engine = load(EngineOptions::default());
    let long = "import Mathlib\nimport Aesop\nset_option maxHeartbeats 400000\nopen BigOperators Real Nat Topology Rat\n\n\
                /-- The sum of the first n odd numbers is n squared. -/\ntheorem sum_odd (n : ℕ) :\n    ∑ i in Finset.range n, (2 * i + 1) = n ^ 2 := by\n";
    let req = request(long, 2, 11, 10);
    let first = engine.generate(&req).await.unwrap();
    let hits = engine.metrics().prefix_hits;
    let second = engine.generate(&req).await.unwrap();
    assert!(engine.metrics().prefix_hits > hits, "{:?}", engine.metrics());
    assert_eq!(texts(&second), texts(&first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_of_a_request_copy_its_partial_last_block_rather_than_read_the_prompt_again() {
    // Blocks of 6: the prompt fills some and ends inside the next, which each sample but the
    // first gets a copy of. A sample that got none would be read again through the prefix cache.
    let engine = load(EngineOptions { block_size: 6, ..Default::default() });
    let out = engine.generate(&request("theorem foo (n : ℕ) : n + 0 = n := by", 4, 21, 6)).await.unwrap();
    assert_eq!(out[0].len(), 4);
    let m = settled(&engine).await;
    assert!(m.prompt_tokens > 6 && m.prompt_tokens % 6 != 0, "the prompt must end mid-block: {m:?}");
    assert_eq!(m.prefix_hits, 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_streams_to_64_concurrent_clients_and_reports_metrics() {
    let engine = Arc::new(load(EngineOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let g: Arc<dyn Generator> = engine.clone();
    tokio::spawn(subgoal::model::serve::serve(g, "m".into(), Default::default(), listener));
    let http = reqwest::Client::new();
    let body = |seed: u64| serde_json::json!({"prompt": format!("Fact {seed}:"), "max_tokens": 6, "temperature": 1.0, "top_p": 0.95, "seed": seed, "stream": true});
    let one = |seed: u64| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let resp = http.post(format!("{url}/v1/completions")).json(&body(seed)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
            let text = resp.text().await.unwrap();
            let mut out = String::new();
            let mut finished = false;
            for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if line == "[DONE]" {
                    break;
                }
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                for c in v["choices"].as_array().unwrap_or_else(|| panic!("an event without choices: {line}")) {
                    out.push_str(c["text"].as_str().unwrap_or(""));
                    finished |= !c["finish_reason"].is_null();
                }
            }
            assert!(finished, "{text}");
            out
        }
    };
    let streamed: Vec<String> = futures::future::join_all((0..64).map(one)).await;
    // A few of them again, directly: the same text.
    for seed in [0u64, 17, 63] {
        let direct = engine.generate(&request(&format!("Fact {seed}:"), 1, seed, 6)).await.unwrap();
        assert_eq!(streamed[seed as usize], direct[0][0].text, "seed {seed}");
    }
    // The gauges are published after each step: wait for the one after the last answer.
    let started = Instant::now();
    while engine.metrics().running > 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        let line =
            metrics.lines().find(|l| l.starts_with(&format!("subgoal_{name} "))).unwrap_or_else(|| panic!("{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("generated_tokens_total") >= 64.0 * 6.0, "{metrics}");
    assert_eq!(value("running_sequences"), 0.0);
    assert!(value("requests_total") >= 67.0);
}
