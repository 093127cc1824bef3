//! Model backends against the real test model (SmolLM2-135M-Instruct, Q4_1 GGUF, installed by
//! scripts/install-test-model.sh): generation, sampling, stop strings, tokenizer, chat template,
//! the safetensors loader, the Hub cache, the OpenAI server and client, record/replay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use candle_core::{Device, Tensor};
use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::openai::{OpenAiClient, OpenAiConfig};
use subgoal::model::record::{Recorder, Replay};
use subgoal::model::{ChatMessage, FinishReason, GenRequest, Generator, Prompt, SamplingParams};

fn model_path() -> PathBuf {
    let p = subgoal::model::test_model_path();
    assert!(p.exists(), "test model not installed at {}: run scripts/install-test-model.sh", p.display());
    p
}

/// One loaded model shared by the tests of this file (loading takes a second).
fn model() -> Arc<Embedded> {
    static M: OnceLock<Arc<Embedded>> = OnceLock::new();
    M.get_or_init(|| Arc::new(Embedded::load(&model_path(), &EmbeddedOptions::default()).expect("load the test model")))
        .clone()
}

fn params(n: usize, temperature: f64, seed: u64, max: usize) -> SamplingParams {
    SamplingParams { n, temperature, top_p: 0.9, max_new_tokens: max, stop: vec![], seed: Some(seed) }
}

fn text(p: &str) -> Prompt {
    Prompt::Text(p.into())
}

async fn one(g: &dyn Generator, prompt: Prompt, p: SamplingParams) -> Vec<subgoal::model::Completion> {
    g.generate(&GenRequest { prompts: vec![prompt], params: p }).await.unwrap().remove(0)
}

#[tokio::test]
async fn the_same_seed_gives_the_same_text() {
    let m = model();
    let a = one(m.as_ref(), text("Lemma: for every natural number n,"), params(1, 0.9, 7, 24)).await;
    let b = one(m.as_ref(), text("Lemma: for every natural number n,"), params(1, 0.9, 7, 24)).await;
    assert_eq!(a[0].text, b[0].text);
    assert!(!a[0].text.is_empty());
}

#[tokio::test]
async fn n_samples_are_decoded_as_one_batch_and_each_is_reported() {
    // Its own model: `last_stats` counts the last request, and the shared model serves the other tests at once.
    let m = Embedded::load(&model_path(), &EmbeddedOptions::default()).expect("load the test model");
    let cs = one(&m, text("Here is a short poem about primes:"), params(4, 1.0, 3, 16)).await;
    assert_eq!(cs.len(), 4);
    for c in &cs {
        assert_eq!(c.finish_reason, FinishReason::Length, "{c:?}");
        assert_eq!(c.completion_tokens, 16);
        assert!(c.prompt_tokens > 0);
    }
    let distinct: std::collections::HashSet<&str> = cs.iter().map(|c| c.text.as_str()).collect();
    assert!(distinct.len() > 1, "four samples at temperature 1 were identical: {cs:?}");
    let stats = m.last_stats();
    assert_eq!(stats.decode_tokens, 64);
}

#[tokio::test]
async fn a_greedy_batch_of_two_equals_the_single_greedy_run() {
    // Greedy rows do not depend on the seed: a batch of two equals the single greedy run.
    let m = model();
    let single = one(m.as_ref(), text("The square root of 16 is"), params(1, 0.0, 0, 8)).await;
    let batch = one(m.as_ref(), text("The square root of 16 is"), params(2, 0.0, 0, 8)).await;
    assert_eq!(batch[0].text, single[0].text);
    assert_eq!(batch[1].text, single[0].text);
}

#[tokio::test]
async fn a_stop_string_ends_the_completion_before_it() {
    let m = model();
    let free = one(m.as_ref(), text("1, 2, 3, 4, 5,"), params(1, 0.0, 0, 24)).await;
    let t = &free[0].text;
    // A stop string taken from the middle of the greedy text, spanning token boundaries.
    let chars: Vec<char> = t.chars().collect();
    assert!(chars.len() > 8, "{t:?}");
    let stop: String = chars[4..8].iter().collect();
    let mut p = params(1, 0.0, 0, 24);
    p.stop = vec![stop.clone()];
    let cut = one(m.as_ref(), text("1, 2, 3, 4, 5,"), p).await;
    assert_eq!(cut[0].finish_reason, FinishReason::Stop);
    assert_eq!(cut[0].text, t[..t.find(&stop).unwrap()], "stop {stop:?}");
    assert!(cut[0].completion_tokens < 24);
}

#[tokio::test]
async fn the_tokenizer_round_trips_lean_unicode() {
    let m = model();
    let s = "theorem t (x : ℝ) : ∀ ε > 0, x ≤ x + ε ⊢ ∑ i in s, f i 𝔽 ⟨a, b⟩ «name»";
    let ids = m.encode_prompt(&text(s)).unwrap();
    assert_eq!(m.decode(&ids).unwrap(), s);
}

#[tokio::test]
async fn chat_prompts_go_through_the_model_s_chat_template() {
    let m = model();
    let ids = m.encode_prompt(&Prompt::Chat(vec![ChatMessage::new("user", "Prove 1 + 1 = 2.")])).unwrap();
    let plain = m.encode_prompt(&text("<|im_start|>")).unwrap();
    assert_eq!(ids[0], *plain.last().unwrap(), "the template opens with <|im_start|>, a special token");
    // The template adds a default system message and opens the assistant's turn.
    let rendered = format!("{:?}", ids.len());
    assert!(ids.len() > 20, "{rendered}");
    // The reply ends at the template's end-of-turn token (the model's end of sequence), well
    // before the token limit, and that token is not part of the text.
    let cs = one(m.as_ref(), Prompt::Chat(vec![ChatMessage::new("user", "Say hello.")]), params(1, 0.0, 0, 64)).await;
    assert_eq!(cs[0].finish_reason, FinishReason::Stop, "{:?}", cs[0]);
    assert!(cs[0].completion_tokens < 64 && !cs[0].text.trim().is_empty(), "{:?}", cs[0]);
    assert!(!cs[0].text.contains("<|im_end|>"), "{:?}", cs[0]);
}

#[tokio::test]
async fn dropping_a_generation_frees_the_model_for_the_next_request() {
    let m = model();
    let long = GenRequest { prompts: vec![text("Count:")], params: params(1, 1.0, 1, 4000) };
    assert!(tokio::time::timeout(Duration::from_millis(300), m.generate(&long)).await.is_err());
    let started = std::time::Instant::now();
    one(m.as_ref(), text("Hi"), params(1, 0.0, 0, 2)).await;
    assert!(started.elapsed() < Duration::from_secs(20), "the cancelled run kept the model: {:?}", started.elapsed());
}

/// Converts the GGUF test model into a Hugging Face directory (`subgoal::model::convert`).
fn convert_to_hf(dir: &Path) {
    let cfg = subgoal::model::convert::gguf_to_hf(&model_path(), dir, candle_core::DType::F32).unwrap();
    assert_eq!((cfg.arch.as_str(), cfg.vocab), ("llama", 49152));
}

#[tokio::test]
async fn a_gguf_cut_to_its_first_layers_loads_as_a_smaller_model_of_the_same_family() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let cfg = subgoal::model::convert::gguf_first_layers(&model_path(), &cut, 2).unwrap();
    assert_eq!((cfg.arch.as_str(), cfg.layers), ("llama", 2));
    assert!(std::fs::metadata(&cut).unwrap().len() < std::fs::metadata(model_path()).unwrap().len());
    let small = Embedded::load(&cut, &EmbeddedOptions::default()).unwrap();
    assert!(small.describe().contains("2 layers"), "{}", small.describe());
    let ids = model().encode_prompt(&text("The theorem states that every prime")).unwrap();
    assert_eq!(small.encode_prompt(&text("The theorem states that every prime")).unwrap(), ids);
    let (a, b) = (model().next_logits(&ids).unwrap(), small.next_logits(&ids).unwrap());
    assert_eq!(a.len(), b.len());
    assert!(b.iter().all(|x| x.is_finite()));
    assert_ne!(a, b, "two layers of thirty compute something else");
    assert!(subgoal::model::convert::gguf_first_layers(&model_path(), &cut, 31).is_err());
}

#[tokio::test]
async fn a_safetensors_model_computes_what_the_gguf_it_came_from_computes() {
    let dir = tempfile::tempdir().unwrap();
    convert_to_hf(dir.path());
    let hf = Embedded::load(dir.path(), &EmbeddedOptions::default()).unwrap();
    let ids = model().encode_prompt(&text("The theorem states that every prime")).unwrap();
    assert_eq!(hf.encode_prompt(&text("The theorem states that every prime")).unwrap(), ids);
    let a = model().next_logits(&ids).unwrap();
    let b = hf.next_logits(&ids).unwrap();
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0;
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cosine = dot / (norm(&a) * norm(&b));
    assert_eq!(argmax(&a), argmax(&b));
    // Q4_1 matmuls quantize activations; the dense model does not: close, not equal.
    assert!(cosine > 0.99, "cosine {cosine}");
    let cs = one(&hf, Prompt::Chat(vec![ChatMessage::new("user", "Hi")]), params(1, 0.0, 0, 4)).await;
    assert!(cs[0].error.is_none(), "{cs:?}");
}

#[tokio::test]
async fn a_hub_id_resolves_from_the_local_cache_offline() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("models--test-org--smollm-gguf");
    let sha = "1111111111111111111111111111111111111111";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    let snap = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink(model_path(), snap.join("model.Q4_1.gguf")).unwrap();
    let spec = subgoal::model::spec::ModelSpec::parse("test-org/smollm-gguf:model.Q4_1.gguf").unwrap();
    let opts =
        subgoal::model::spec::OpenOptions { hub_cache: Some(root.path().into()), offline: true, ..Default::default() };
    let g = subgoal::model::spec::open(&spec, &opts).await.unwrap();
    let cs = one(g.as_ref(), text("Hello"), params(1, 0.0, 0, 3)).await;
    assert_eq!(cs[0].completion_tokens, 3);
}

async fn serve_on_free_port(g: Arc<dyn Generator>) -> String {
    serve_with_limits(g, subgoal::model::serve::Limits::default()).await
}

async fn serve_with_limits(g: Arc<dyn Generator>, limits: subgoal::model::serve::Limits) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(subgoal::model::serve::serve(g, "smollm".into(), limits, listener));
    format!("http://{addr}")
}

#[tokio::test]
async fn serve_answers_400_to_a_request_past_its_bounds() {
    let limits = subgoal::model::serve::Limits { max_n: 4, max_tokens: 64, max_prompts: 2 };
    let url = serve_with_limits(model(), limits).await;
    let http = reqwest::Client::new();
    for (body, says) in [
        (serde_json::json!({"prompt": "a", "n": 5, "max_tokens": 4}), "at most 4 samples"),
        (serde_json::json!({"prompt": "a", "max_tokens": 65}), "at most 64 tokens"),
        (serde_json::json!({"prompt": ["a", "b", "c"], "max_tokens": 4}), "at most 2 per request"),
    ] {
        let r = http.post(format!("{url}/v1/completions")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"]["message"].as_str().unwrap().contains(says), "{v}");
    }
}

fn client(url: &str, timeout_ms: u64, retries: u32) -> OpenAiClient {
    let mut cfg = OpenAiConfig::new(url, "smollm");
    cfg.idle_timeout = Duration::from_millis(timeout_ms);
    cfg.max_retries = retries;
    cfg.backoff = Duration::from_millis(20);
    OpenAiClient::new(cfg).unwrap()
}

#[tokio::test]
async fn the_openai_client_against_subgoal_serve_returns_what_the_model_returns() {
    let url = serve_on_free_port(model()).await;
    let c = client(&url, 60_000, 0);
    let direct = one(model().as_ref(), text("Euclid proved that"), params(2, 0.0, 0, 6)).await;
    let served = one(&c, text("Euclid proved that"), params(2, 0.0, 0, 6)).await;
    assert_eq!(served.len(), 2);
    assert_eq!(served[0].text, direct[0].text);
    assert_eq!(served[1].completion_tokens, direct[1].completion_tokens);
    let chat = one(&c, Prompt::Chat(vec![ChatMessage::new("user", "Hi")]), params(1, 0.0, 0, 4)).await;
    assert!(chat[0].error.is_none(), "{chat:?}");
}

/// A local server that misbehaves in the way `mode` says, counting the requests it got.
async fn misbehaving(mode: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::routing::post;
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/v1/completions",
        post(move || {
            let h = h.clone();
            async move {
                let k = h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let ok = r#"{"choices":[{"index":0,"text":"fine","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
                match (mode, k) {
                    ("hang", _) => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        (axum::http::StatusCode::OK, String::new())
                    }
                    ("500-then-ok", 0) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom".to_string()),
                    ("truncated", _) => (axum::http::StatusCode::OK, ok[..40].to_string()),
                    ("400", _) => (axum::http::StatusCode::BAD_REQUEST, r#"{"error":{"message":"bad n"}}"#.to_string()),
                    _ => (axum::http::StatusCode::OK, ok.to_string()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn a_hanging_server_times_out_after_its_retries_with_an_error_completion() {
    let (url, hits) = misbehaving("hang").await;
    let cs = one(&client(&url, 200, 2), text("x"), params(1, 0.0, 0, 4)).await;
    assert_eq!(cs[0].finish_reason, FinishReason::Error);
    assert!(cs[0].error.as_deref().unwrap().contains("no answer within"), "{cs:?}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let (url, hits) = misbehaving("500-then-ok").await;
    let cs = one(&client(&url, 5000, 2), text("x"), params(1, 0.0, 0, 4)).await;
    assert_eq!(cs[0].text, "fine");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn truncated_json_is_a_clear_error() {
    let (url, _) = misbehaving("truncated").await;
    let cs = one(&client(&url, 5000, 1), text("x"), params(1, 0.0, 0, 4)).await;
    assert!(cs[0].error.as_deref().unwrap().contains("not JSON"), "{cs:?}");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let (url, hits) = misbehaving("400").await;
    let cs = one(&client(&url, 5000, 3), text("x"), params(1, 0.0, 0, 4)).await;
    assert!(cs[0].error.as_deref().unwrap().contains("400"), "{cs:?}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_recording_replays_the_same_completions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.jsonl");
    struct Shared(Arc<Embedded>);
    impl Generator for Shared {
        fn generate<'a>(&'a self, req: &'a GenRequest) -> subgoal::model::GenFuture<'a> {
            self.0.generate(req)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }
    let rec = Recorder::new(Box::new(Shared(model())), &path).unwrap();
    let req = GenRequest { prompts: vec![text("a"), text("b")], params: params(2, 0.8, 5, 5) };
    let live = rec.generate(&req).await.unwrap();
    let replay = Replay::open(&path).unwrap();
    assert_eq!(replay.generate(&req).await.unwrap(), live);
    let other = GenRequest { prompts: vec![text("c")], params: params(2, 0.8, 5, 5) };
    assert!(replay.generate(&other).await.is_err());
}

/// Writes a small random-weight Hugging Face model of `model_type` (2 layers, hidden 64) with the
/// test model's tokenizer, as a real directory on disk.
fn random_hf_model(dir: &Path, model_type: &str) {
    let (ct, _) = subgoal::model::llama::read_gguf(&model_path()).unwrap();
    let doc = subgoal::model::tokenizer::gguf_tokenizer_document(&ct.metadata).unwrap();
    std::fs::write(dir.join("tokenizer.json"), doc.to_string()).unwrap();
    let (vocab, hidden, inter, heads, kv, hd, layers) = (49152, 64, 128, 4, 2, 16, 2);
    let dev = Device::Cpu;
    let mut w: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, shape: &[usize]| {
        w.insert(name, Tensor::randn(0f32, 0.05, shape, &dev).unwrap());
    };
    put("model.embed_tokens.weight".into(), &[vocab, hidden]);
    put("model.norm.weight".into(), &[hidden]);
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        put(format!("{p}.input_layernorm.weight"), &[hidden]);
        put(format!("{p}.post_attention_layernorm.weight"), &[hidden]);
        for (n, out) in [("q", heads * hd), ("k", kv * hd), ("v", kv * hd)] {
            put(format!("{p}.self_attn.{n}_proj.weight"), &[out, hidden]);
            if model_type == "qwen2" {
                put(format!("{p}.self_attn.{n}_proj.bias"), &[out]);
            }
        }
        put(format!("{p}.self_attn.o_proj.weight"), &[hidden, heads * hd]);
        if model_type == "qwen3" {
            put(format!("{p}.self_attn.q_norm.weight"), &[hd]);
            put(format!("{p}.self_attn.k_norm.weight"), &[hd]);
        }
        put(format!("{p}.mlp.gate_proj.weight"), &[inter, hidden]);
        put(format!("{p}.mlp.up_proj.weight"), &[inter, hidden]);
        put(format!("{p}.mlp.down_proj.weight"), &[hidden, inter]);
    }
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    let config = serde_json::json!({
        "model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": hd, "intermediate_size": inter, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 512, "vocab_size": vocab, "tie_word_embeddings": true,
        "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 256}
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[tokio::test]
async fn qwen2_and_qwen3_model_directories_load_and_generate() {
    for arch in ["qwen2", "qwen3"] {
        let dir = tempfile::tempdir().unwrap();
        random_hf_model(dir.path(), arch);
        let m = Embedded::load(dir.path(), &EmbeddedOptions::default()).unwrap();
        assert!(m.describe().contains(arch), "{}", m.describe());
        let cs = one(&m, text("theorem"), params(2, 1.0, 4, 6)).await;
        assert!(cs.iter().all(|c| c.error.is_none() && c.completion_tokens > 0), "{arch}: {cs:?}");
    }
}

#[tokio::test]
async fn the_qwen_specific_weights_change_what_the_model_computes() {
    // A Qwen3 directory relabelled as Llama ignores q/k norms: the logits must differ, which
    // shows the norms are applied when the config says qwen3.
    let dir = tempfile::tempdir().unwrap();
    random_hf_model(dir.path(), "qwen3");
    let ids = model().encode_prompt(&text("a b c")).unwrap();
    let qwen = Embedded::load(dir.path(), &EmbeddedOptions::default()).unwrap().next_logits(&ids).unwrap();
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap().replace("qwen3", "llama");
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let llama = Embedded::load(dir.path(), &EmbeddedOptions::default()).unwrap().next_logits(&ids).unwrap();
    let diff: f32 = qwen.iter().zip(&llama).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-3, "q/k norms made no difference");
}

#[test]
fn a_cache_that_grows_while_decoding_gives_the_logits_of_one_that_does_not() {
    // Buffers starting with 3 spare positions grow several times over 20 decode steps; with 1,000
    // they never do. Both must give the same logits, and the token a fresh full pass picks (the
    // quantized matmuls of a 1-token and a 30-token pass round differently, so not bit for bit).
    let (ct, mut f) = subgoal::model::llama::read_gguf(&model_path()).unwrap();
    let model = subgoal::model::llama::Model::from_gguf(&ct, &mut f, &Device::Cpu, candle_core::DType::F32).unwrap();
    let ids: Vec<u32> = (0..30u32).map(|i| 100 + i * 37).collect();
    let layers = model.cfg.layers;
    let incremental = |spare: usize| {
        let mut cache = subgoal::model::llama::KvCache::with_spare(layers, spare);
        let prompt = Tensor::new(&ids[..10], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mut last = model.forward(&prompt, 0, &mut cache).unwrap();
        for (i, &id) in ids[10..].iter().enumerate() {
            let x = Tensor::new(&[id], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            last = model.forward(&x, 10 + i, &mut cache).unwrap();
        }
        last
    };
    let (grown, roomy) = (incremental(3), incremental(1000));
    let diff: f32 = (&grown - &roomy).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(diff < 1e-5, "a grown cache changed the logits by {diff}");
    let full_ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let full = model.forward(&full_ids, 0, &mut subgoal::model::llama::KvCache::new(layers)).unwrap();
    let argmax = |t: &Tensor| t.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    assert_eq!(argmax(&grown), argmax(&full));
}
