//! Embedded generation speed: prefill and decode tokens/s for n = 1, and n = 8 decoded as one
//! batch after a single prefill against 8 sequential n = 1 runs, in one run. Prints JSON.
//!
//! Run by hand: `cargo bench --bench generate_throughput [-- --model PATH --device cuda --tokens N]`
//! (default: the test model on the CPU).

use std::time::Instant;

use serde_json::json;
use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::{GenRequest, Generator, Prompt, SamplingParams};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = arg(&args, "--model").map(std::path::PathBuf::from).unwrap_or_else(subgoal::model::test_model_path);
    let device = arg(&args, "--device").unwrap_or_else(|| "cpu".into());
    let tokens: usize = arg(&args, "--tokens").and_then(|v| v.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let t = Instant::now();
    let m = Embedded::load(&model, &EmbeddedOptions { device: device.clone(), ..Default::default() })
        .expect("load the model");
    let load_s = t.elapsed().as_secs_f64();
    // A prover-style prompt: a Lean statement and the start of a proof.
    let prompt = Prompt::Text(
        "Complete the following Lean 4 code:\n\n```lean4\nimport Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n\n\
         open BigOperators Real Nat Topology Rat\n\n/-- Show that for any natural number n, the sum of the first n odd \
         numbers is n squared. -/\ntheorem sum_odd (n : ℕ) : ∑ i in Finset.range n, (2 * i + 1) = n ^ 2 := by\n"
            .into(),
    );
    let params = |n: usize, seed: u64| SamplingParams {
        n,
        temperature: 1.0,
        top_p: 0.95,
        max_new_tokens: tokens,
        stop: vec![],
        seed: Some(seed),
    };
    let run = |n: usize, seed: u64| {
        let req = GenRequest { prompts: vec![prompt.clone()], params: params(n, seed) };
        let t = Instant::now();
        let out = rt.block_on(m.generate(&req)).unwrap();
        let wall = t.elapsed().as_secs_f64();
        let generated: usize = out[0].iter().map(|c| c.completion_tokens).sum();
        (wall, generated, m.last_stats())
    };
    // Warm-up (first-use allocations).
    run(1, 0);
    let (w1, g1, s1) = run(1, 1);
    let (w8, g8, s8) = run(8, 1);
    let mut seq_wall = 0.0;
    let mut seq_tokens = 0;
    for i in 0..8 {
        let (w, g, _) = run(1, 1 + i);
        seq_wall += w;
        seq_tokens += g;
    }
    let batched_rate = g8 as f64 / w8;
    let sequential_rate = seq_tokens as f64 / seq_wall;
    let r = |x: f64| (x * 100.0).round() / 100.0;
    let report = json!({
        "benchmark": "generate_throughput",
        "model": m.describe(),
        "device": device,
        "load_s": r(load_s),
        "prompt_tokens": s1.prefill_tokens,
        "max_new_tokens": tokens,
        "n1": {
            "prefill_tokens_per_s": r(s1.prefill_tokens as f64 / (s1.prefill_ms / 1e3)),
            "decode_tokens_per_s": r(s1.decode_tokens as f64 / (s1.decode_ms / 1e3)),
            "generated": g1, "wall_s": r(w1),
        },
        "n8_batched": {
            "decode_tokens_per_s": r(s8.decode_tokens as f64 / (s8.decode_ms / 1e3)),
            "generated": g8, "wall_s": r(w8), "tokens_per_s_wall": r(batched_rate),
        },
        "n8_sequential": {"generated": seq_tokens, "wall_s": r(seq_wall), "tokens_per_s_wall": r(sequential_rate)},
        "batched_over_sequential": r(batched_rate / sequential_rate),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
