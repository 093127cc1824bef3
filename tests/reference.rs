//! The decoder against a reference that shares no code with it: a Llama forward pass in numpy
//! (`tests/reference/llama_forward.py`) over the test model's GGUF tensors as llama.cpp's own
//! `gguf` package reads and dequantizes them, in f64. Installed by
//! scripts/install-test-reference.sh.

use std::path::PathBuf;
use std::process::Command;

use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::Prompt;

fn model_path() -> PathBuf {
    let p = subgoal::model::test_model_path();
    assert!(p.exists(), "test model not installed at {}: run scripts/install-test-model.sh", p.display());
    p
}

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".toolchain/pyref/bin/python");
    assert!(
        p.exists(),
        "the numpy reference is not installed at {}: run scripts/install-test-reference.sh",
        p.display()
    );
    p
}

/// The reference's next-token logits after `ids`.
fn reference(ids: &[u32]) -> Vec<f64> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/llama_forward.py");
    let out = Command::new(python())
        .arg(script)
        .arg(model_path())
        .args(ids.iter().map(|i| i.to_string()))
        .output()
        .expect("run the numpy reference");
    assert!(out.status.success(), "reference failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the reference prints a JSON list")
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0
}

/// Largest difference and the cosine between two logit vectors.
fn compare(a: &[f32], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max);
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    (worst, dot / (na * nb))
}

const PROMPT: &str = "theorem two_add_two : 2 + 2 = 4 := by\n  norm_num\n\nThe proof above";

#[test]
fn the_dense_decoder_computes_the_reference_s_logits() {
    // The GGUF widened to f32 safetensors: dense arithmetic on both sides, so they agree to f32
    // rounding (the q/k rows unpermuted on our side, rotated in adjacent pairs on the other).
    let dir = tempfile::tempdir().unwrap();
    subgoal::model::convert::gguf_to_hf(&model_path(), dir.path(), candle_core::DType::F32).unwrap();
    let m = Embedded::load(dir.path(), &EmbeddedOptions::default()).unwrap();
    let ids = m.encode_prompt(&Prompt::Text(PROMPT.into())).unwrap();
    let want = reference(&ids);
    let got = m.next_logits(&ids).unwrap();
    let (worst, cos) = compare(&got, &want);
    let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    assert!(worst < 1e-3, "largest difference {worst} (logits up to {scale})");
    assert!(cos > 0.999_999, "cosine {cos}");
    let wide: Vec<f64> = got.iter().map(|x| *x as f64).collect();
    assert_eq!(argmax(&wide), argmax(&want));
    println!("dense vs reference: largest difference {worst:.2e} of logits up to {scale:.1}, cosine {cos:.9}");
}

#[test]
fn the_quantized_decoder_stays_near_the_reference() {
    // The GGUF read as it is: candle's quantized products round activations to 8 bits, so the
    // agreement is looser, but the next token is the same.
    let m = Embedded::load(&model_path(), &EmbeddedOptions::default()).unwrap();
    let ids = m.encode_prompt(&Prompt::Text(PROMPT.into())).unwrap();
    let want = reference(&ids);
    let got = m.next_logits(&ids).unwrap();
    let (worst, cos) = compare(&got, &want);
    assert!(cos > 0.999, "cosine {cos}");
    let wide: Vec<f64> = got.iter().map(|x| *x as f64).collect();
    assert_eq!(argmax(&wide), argmax(&want));
    println!("quantized vs reference: largest difference {worst:.2e}, cosine {cos:.6}");
}
