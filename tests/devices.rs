//! Several engines in one process (`--device cpu,cpu` here; `cuda:0,1,…` or `cuda:all` on a GPU
//! host), each with its own weights and KV pool, against the real test model: how requests are
//! spread, which engine a prompt family goes to, and what happens when a device fails.

use std::path::PathBuf;

use subgoal::model::embedded::{parse_devices, Embedded, EmbeddedOptions};
use subgoal::model::engine::EngineOptions;
use subgoal::model::{FinishReason, GenRequest, Generator, Prompt, SamplingParams};

fn model_path() -> PathBuf {
    let p = subgoal::model::test_model_path();
    assert!(p.exists(), "test model not installed at {}: run scripts/install-test-model.sh", p.display());
    p
}

fn load(device: &str) -> Embedded {
    let engine = EngineOptions { cache_mb: Some(96), ..Default::default() };
    Embedded::load(&model_path(), &EmbeddedOptions { device: device.into(), engine, ..Default::default() })
        .expect("load the test model")
}

fn request(prompts: &[String], n: usize, max: usize) -> GenRequest {
    GenRequest {
        prompts: prompts.iter().map(|p| Prompt::Text(p.clone())).collect(),
        params: SamplingParams { n, temperature: 1.0, top_p: 0.95, max_new_tokens: max, stop: vec![], seed: Some(11) },
    }
}

/// A prompt long enough to fill several cache blocks before its last words.
fn family(topic: &str, i: usize) -> String {
    format!(
        "You are a careful mathematician. Here is a theorem about {topic}, stated in Lean 4 with Mathlib, \
         followed by an informal sketch of its proof, its hypotheses and the lemmas it may use. \
         Read them all before writing anything. Subgoal {i}:"
    )
}

#[test]
fn a_device_list_names_one_engine_per_device() {
    assert_eq!(parse_devices("cpu").unwrap(), ["cpu"]);
    assert_eq!(parse_devices("cpu,cpu").unwrap(), ["cpu", "cpu"]);
    assert_eq!(parse_devices("cuda:0,1,3").unwrap(), ["cuda:0", "cuda:1", "cuda:3"]);
    assert_eq!(parse_devices("cuda:2,cuda:0").unwrap(), ["cuda:2", "cuda:0"]);
    assert!(parse_devices("cuda:0,0").unwrap_err().to_string().contains("named twice"));
    assert!(parse_devices("gpu").is_err());
    assert!(parse_devices("cpu,1").is_err(), "a bare index after cpu means nothing");
}

#[test]
fn cuda_all_without_a_gpu_says_so() {
    let err = parse_devices("cuda:all").unwrap_err().to_string();
    assert!(err.contains("no CUDA device"), "{err}");
}

#[tokio::test]
async fn unrelated_prompts_are_spread_evenly_over_the_engines() {
    let m = load("cpu,cpu");
    let prompts: Vec<String> = (0..8).map(|i| format!("Fact number {i}:")).collect();
    let out = m.generate(&request(&prompts, 2, 6)).await.unwrap();
    assert!(out.iter().flatten().all(|c| c.finish_reason != FinishReason::Error), "{out:?}");
    let stats = m.router().stats();
    assert_eq!(stats.len(), 2);
    let answered: Vec<u64> = stats.iter().map(|s| s.answered).collect();
    assert_eq!(answered.iter().sum::<u64>(), 16);
    assert!(answered[0].abs_diff(answered[1]) <= 2, "uneven: {answered:?}");
    assert!(stats.iter().all(|s| s.metrics.generated_tokens > 0), "{stats:?}");
    assert!(stats.iter().all(|s| s.outstanding == 0), "{stats:?}");
}

#[tokio::test]
async fn a_prompt_family_stays_on_the_engine_that_holds_its_prefix() {
    let m = load("cpu,cpu");
    // One problem's first prompt, then three more of it and two of another problem all in
    // flight at once: each family goes where its first prompt went (its blocks are cached
    // there), while a least-loaded rule alone would split them 3 / 3.
    m.generate(&request(&[family("primes", 0)], 1, 4)).await.unwrap();
    let mut prompts: Vec<String> = (1..4).map(|i| family("primes", i)).collect();
    prompts.extend((0..2).map(|i| family("triangles", i)));
    let out = m.generate(&request(&prompts, 1, 4)).await.unwrap();
    assert!(out.iter().flatten().all(|c| c.finish_reason != FinishReason::Error), "{out:?}");
    let stats = m.router().stats();
    assert_eq!(stats.iter().map(|s| s.jobs).collect::<Vec<_>>(), [4, 2], "{stats:?}");
    assert!(stats[0].metrics.prefix_hits > 0, "the family's prefix was not reused: {stats:?}");
}

#[tokio::test]
async fn a_failed_device_s_samples_are_run_again_elsewhere_and_come_back_the_same() {
    let prompts = vec!["The first prime numbers are".to_string(), "A group is abelian when".to_string()];
    let reference = load("cpu").generate(&request(&prompts, 2, 24)).await.unwrap();
    let m = load("cpu,cpu");
    let req = request(&prompts, 2, 24);
    let pending = m.generate(&req);
    // The first prompt goes to engine 0; it fails from its next step on.
    let failing = async {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        m.router().engines().next().unwrap().fail_device();
    };
    let (out, ()) = tokio::join!(pending, failing);
    let out = out.unwrap();
    for (p, (got, want)) in out.iter().zip(&reference).enumerate() {
        for (s, (g, w)) in got.iter().zip(want).enumerate() {
            assert_ne!(g.finish_reason, FinishReason::Error, "prompt {p} sample {s}: {g:?}");
            assert_eq!(g.text, w.text, "prompt {p} sample {s} changed when run again");
        }
    }
    let stats = m.router().stats();
    assert!(!stats[0].healthy && stats[1].healthy, "{stats:?}");
    assert_eq!(stats[0].rerouted, 2, "{stats:?}");
    // Later requests go to the healthy device only.
    let before = stats[1].jobs;
    let later = m.generate(&request(&["Later:".to_string()], 1, 2)).await.unwrap();
    assert_ne!(later[0][0].finish_reason, FinishReason::Error);
    assert_eq!(m.router().stats()[1].jobs, before + 1);
    assert_eq!(m.router().stats()[0].jobs, stats[0].jobs);
}

#[tokio::test]
async fn with_every_device_failed_the_failure_is_handed_back() {
    let m = load("cpu");
    m.router().engines().next().unwrap().fail_device();
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(60), m.generate(&request(&["Anything".to_string()], 2, 4)))
            .await
            .expect("a failed device's request must end")
            .unwrap();
    for c in &out[0] {
        assert_eq!(c.finish_reason, FinishReason::Error);
        assert!(c.error.as_deref().unwrap_or("").contains("model failed"), "{c:?}");
    }
}
