//! What the GPU benchmarks (and `fp8_accuracy`, for `cosine`) share: the GPU's name and HBM
//! bandwidth, the comparison of two paths' logits, and the fused CUDA decode step checked against
//! the generic one.

use candle_core::{DType, Tensor};
use serde_json::{json, Value};
use subgoal::model::llama::{KvCache, Model};

/// The fused step against the generic one on the same inputs: the prompt (`(1, t)` ids) prefilled,
/// its cache copied to `rows` rows, then `steps` greedy steps through the fused path, and the same
/// tokens fed through the generic path. Returns the rows compared, those whose argmax agree, the
/// largest logit difference, and the largest gap (in the generic logits) between the two argmaxes
/// where they differ; leaves the fused path on.
pub fn fused_vs_generic(model: &mut Model, prompt: &Tensor, rows: usize, steps: usize) -> Value {
    let run = |model: &Model, forced: Option<&[Vec<u32>]>| {
        let t = prompt.dim(1).unwrap();
        let mut cache = KvCache::default();
        let mut logits = model.forward(prompt, 0, &mut cache).unwrap();
        cache.expand(rows).unwrap();
        logits = logits.broadcast_as((rows, logits.dim(1).unwrap())).unwrap().contiguous().unwrap();
        let (mut out, mut fed) = (Vec::new(), Vec::new());
        for step in 0..steps {
            let next: Vec<u32> = match forced {
                Some(f) => f[step].clone(),
                None => logits.argmax(1).unwrap().to_vec1::<u32>().unwrap(),
            };
            let ids = Tensor::from_vec(next.clone(), (rows, 1), prompt.device()).unwrap();
            fed.push(next);
            // The logits of each decode step (the prefill's are the same on both paths).
            logits = model.forward(&ids, t + step, &mut cache).unwrap();
            out.push(logits.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap());
        }
        (out, fed)
    };
    let (fused, fed) = run(model, None);
    model.set_fused_decode(false);
    let (generic, _) = run(model, Some(&fed));
    model.set_fused_decode(true);
    let (generic, fused): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
        (generic.into_iter().flatten().collect(), fused.into_iter().flatten().collect());
    logit_agreement(&generic, &fused)
}

/// `--fp8-dense-layers 0,-1` among `args`: the layers an FP8 arm keeps in bf16 (none if absent),
/// as the CLI's option of that name takes them.
pub fn fp8_dense_layers(args: &[String]) -> Vec<i64> {
    args.windows(2)
        .find(|w| w[0] == "--fp8-dense-layers")
        .map(|w| w[1].split(',').map(|i| i.trim().parse().expect("--fp8-dense-layers: layer indices")).collect())
        .unwrap_or_default()
}

/// The GPU's name, as nvidia-smi gives it (empty without it).
pub fn gpu_name() -> String {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

/// HBM bandwidth in TB/s for the rooflines: an H200's 4.8, else an H100 SXM's 3.35.
pub fn hbm_tb_per_s(gpu: &str) -> f64 {
    if gpu.contains("H200") {
        4.8
    } else {
        3.35
    }
}

/// The index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// The cosine of two vectors (in f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(1e-30)
}

/// Rows of logits from another path against the reference's: rows compared, rows whose argmax
/// agree, the largest difference, the largest reference logit, and where the argmaxes differ the
/// largest gap between the two tokens in the reference logits (a near-tie, a gap within the
/// difference, is rounding, not a wrong kernel).
pub fn logit_agreement(reference: &[Vec<f32>], other: &[Vec<f32>]) -> Value {
    let (mut same, mut max_diff, mut max_abs, mut max_gap) = (0, 0f32, 0f32, 0f32);
    for (r, o) in reference.iter().zip(other) {
        let (ar, ao) = (argmax(r), argmax(o));
        same += usize::from(ar == ao);
        max_gap = max_gap.max(r[ar] - r[ao]);
        max_diff = r.iter().zip(o).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
        max_abs = r.iter().map(|x| x.abs()).fold(max_abs, f32::max);
    }
    json!({"rows_compared": reference.len().min(other.len()), "same_argmax": same, "max_abs_logit_diff": max_diff,
        "max_abs_logit": max_abs, "largest_gap_where_argmax_differs": max_gap})
}
