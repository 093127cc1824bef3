//! What the GPU benchmarks share: the fused CUDA decode step checked against the generic one.

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
    let argmax = |v: &[f32]| v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let (mut same, mut max_diff, mut max_gap) = (0, 0f32, 0f32);
    for (f, g) in fused.iter().flatten().zip(generic.iter().flatten()) {
        let (af, ag) = (argmax(f), argmax(g));
        same += usize::from(af == ag);
        // Where the argmaxes differ, how far apart the two tokens are in the generic logits: a
        // near-tie (a gap within the logit difference) is rounding, not a wrong kernel.
        max_gap = max_gap.max(g[ag] - g[af]);
        max_diff = f.iter().zip(g).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
    }
    json!({"rows_compared": rows * steps, "same_argmax": same, "max_abs_logit_diff": max_diff, "largest_gap_where_argmax_differs": max_gap})
}
