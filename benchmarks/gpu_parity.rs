//! Greedy output on the GPU against the CPU path, on a small real model: the test model's GGUF
//! (SmolLM2-135M by default) rewritten as dense f32 safetensors (`model::convert`, so both
//! devices compute the same arithmetic up to summation order), loaded by the embedded backend on
//! the CPU and on CUDA, and the same prompts decoded greedily on both.
//!
//! Also compares, on CUDA, the fused decode step with the generic one step by step (largest
//! logit difference, argmax agreement), in f32 and bf16.
//!
//! Run by hand on a GPU machine (the CUDA build: `scripts/build-cuda.sh`):
//!   gpu_parity [--model GGUF] [--tokens 64]
//! Prints JSON; exits 1 when a greedy text differs between the devices.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::llama::Model;
use subgoal::model::{GenRequest, Generator, Prompt, SamplingParams};

#[path = "gpu_common.rs"]
#[allow(dead_code)]
mod gpu_common;

const PROMPTS: &[&str] = &[
    "The theorem states that every prime number greater than two",
    "def fib : Nat → Nat\n  | 0 => 0\n  | 1 => 1\n",
    "Here is a short poem about the sea:",
    "Question: what is 17 times 23?\nAnswer:",
];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let gguf = arg(&args, "--model").map(PathBuf::from).unwrap_or_else(subgoal::model::test_model_path);
    let tokens: usize = arg(&args, "--tokens").and_then(|v| v.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir().expect("a temporary directory");
    subgoal::model::convert::gguf_to_hf(&gguf, dir.path(), DType::F32).expect("convert the GGUF model");

    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let load = |device: &str| {
        Embedded::load(
            dir.path(),
            &EmbeddedOptions { device: device.into(), dtype: Some("f32".into()), ..Default::default() },
        )
        .expect("load the converted model")
    };
    let (cpu, cuda) = (load("cpu"), load("cuda"));
    let params = |n: usize| SamplingParams {
        n,
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: tokens,
        stop: vec![],
        seed: Some(0),
    };
    let request = |n: usize| GenRequest {
        prompts: PROMPTS.iter().map(|p| Prompt::Text(p.to_string())).collect(),
        params: params(n),
    };
    let mut greedy = Vec::new();
    let mut identical = true;
    for n in [1, 3] {
        let a = rt.block_on(cpu.generate(&request(n))).expect("cpu generation");
        let b = rt.block_on(cuda.generate(&request(n))).expect("cuda generation");
        for ((p, ca), cb) in PROMPTS.iter().zip(&a).zip(&b) {
            for (x, y) in ca.iter().zip(cb) {
                let same = x.text == y.text && x.error.is_none() && y.error.is_none();
                identical &= same;
                let diverge = x.text.chars().zip(y.text.chars()).take_while(|(u, v)| u == v).count();
                greedy.push(json!({
                    "batch": n, "prompt": p, "identical": same, "cpu": x.text, "cuda": y.text,
                    "common_prefix_chars": diverge, "cpu_tokens": x.completion_tokens, "cuda_tokens": y.completion_tokens,
                    "errors": [x.error, y.error],
                }));
            }
        }
    }

    // The fused decode step against the generic one, step by step, on the same model.
    let ids = cpu.encode_prompt(&Prompt::Text(PROMPTS[0].into())).expect("encode");
    let device = Device::new_cuda(0).expect("a CUDA device");
    let prompt = Tensor::new(ids.as_slice(), &device).and_then(|t| t.unsqueeze(0)).expect("the prompt on the GPU");
    let mut fused_vs_generic = serde_json::Map::new();
    for dtype in [DType::F32, DType::BF16] {
        let mut model = Model::from_safetensors(dir.path(), &device, dtype, false).expect("load");
        let mut row = gpu_common::fused_vs_generic(&mut model, &prompt, 1, tokens);
        row["fused_available"] = json!(model.fused_decode());
        fused_vs_generic.insert(format!("{dtype:?}").to_lowercase(), row);
    }
    let report = json!({
        "benchmark": "gpu_parity",
        "model": gguf.display().to_string(),
        "tokens": tokens,
        "greedy_identical_cpu_cuda_f32": identical,
        "greedy": greedy,
        "fused_vs_generic": fused_vs_generic,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if !identical {
        std::process::exit(1);
    }
}
