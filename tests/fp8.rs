//! FP8 (E4M3) weights and KV cache on the CPU, against references written here: the E4M3 code
//! from its bit layout (sign, 4-bit exponent of bias 7, 3-bit mantissa, subnormals, 0x7F/0xFF
//! NaN, no infinity) with round-to-nearest-even by search over the value table; block factors
//! recomputed from each block's largest magnitude; an FP8 checkpoint written by this file with
//! the `safetensors` crate; and the dense model's logits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};
use subgoal::model::embedded::{Embedded, EmbeddedOptions};
use subgoal::model::fp8::{self, BlockFp8};
use subgoal::model::paged::{Batch, KvFormat, PagedCache};
use subgoal::model::Prompt;

// ---- the reference E4M3 code ----

/// The value of an E4M3 byte, from its bit fields.
fn ref_value(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = (((b >> 3) & 0x0F) as i32, (b & 0x07) as f32);
    if b & 0x7F == 0x7F {
        f32::NAN
    } else if e == 0 {
        sign * (m / 8.0) * 2f32.powi(-6)
    } else {
        sign * (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

/// The byte nearest `x`: magnitudes clamped to 448, the nearest of the 127 finite non-negative
/// codes (increasing with the code) found by binary search, a tie going to the even code.
fn ref_encode(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7F;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let a = x.abs().min(448.0);
    let values: Vec<f32> = (0u8..=0x7E).map(ref_value).collect();
    let hi = values.partition_point(|&v| v < a).min(0x7E);
    let code = if hi == 0 || values[hi] == a {
        hi
    } else {
        let lo = hi - 1;
        let (dl, dh) = (a - values[lo], values[hi] - a);
        if dl < dh || (dl == dh && lo % 2 == 0) {
            lo
        } else {
            hi
        }
    };
    sign | code as u8
}

/// Reference block quantization: factor = block amax / 448 (1 for a zero block).
fn ref_quantize(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let (rb, cb) = (rows.div_ceil(128), cols.div_ceil(128));
    let mut amax = vec![0f32; rb * cb];
    for r in 0..rows {
        for c in 0..cols {
            let m = &mut amax[(r / 128) * cb + c / 128];
            *m = m.max(w[r * cols + c].abs());
        }
    }
    let scales: Vec<f32> = amax.iter().map(|&m| if m > 0.0 { m / 448.0 } else { 1.0 }).collect();
    let bytes = (0..rows * cols).map(|i| ref_encode(w[i] / scales[(i / cols / 128) * cb + (i % cols) / 128])).collect();
    (bytes, scales)
}

// ---- models on disk ----

fn model_path() -> PathBuf {
    let p = subgoal::model::test_model_path();
    assert!(p.exists(), "test model not installed at {}: run scripts/install-test-model.sh", p.display());
    p
}

/// The test model's first two layers as a dense f32 Hugging Face directory.
fn dense_cut(dir: &Path) -> PathBuf {
    let cut = dir.join("cut.gguf");
    subgoal::model::convert::gguf_first_layers(&model_path(), &cut, 2).unwrap();
    let dense = dir.join("dense");
    subgoal::model::convert::gguf_to_hf(&cut, &dense, DType::F32).unwrap();
    dense
}

fn load(dir: &Path, dtype: &str) -> Embedded {
    let opts = EmbeddedOptions { dtype: Some(dtype.into()), ..Default::default() };
    Embedded::load(dir, &opts).unwrap_or_else(|e| panic!("load {} as {dtype}: {e}", dir.display()))
}

fn ids(m: &Embedded) -> Vec<u32> {
    m.encode_prompt(&Prompt::Text("Theorem: for every natural number n, n + 0 = n. Proof:".into())).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).unwrap().0
}

/// Every tensor of a safetensors file: (dtype, shape, bytes).
fn read_all(path: &Path) -> HashMap<String, (StDtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect()
}

/// `subgoal convert SRC OUT FLAGS…`, which must succeed.
fn convert(src: &Path, out: &Path, flags: &[&str]) {
    let run = Command::new(env!("CARGO_BIN_EXE_subgoal")).arg("convert").args([src, out]).args(flags).output().unwrap();
    assert!(run.status.success(), "convert: {}", String::from_utf8_lossy(&run.stderr));
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn is_projection(name: &str) -> bool {
    name.starts_with("model.layers.") && name.ends_with("_proj.weight")
}

/// Writes `dense` as an FP8 checkpoint with this file's reference quantizer: what DeepSeek's
/// FP8 releases hold (F8_E4M3 projections, F32 `weight_scale_inv`, a `quantization_config`).
fn write_reference_checkpoint(dense: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dense.join(f), out.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dense.join("config.json")).unwrap()).unwrap();
    config["quantization_config"] = serde_json::json!({
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]
    });
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let mut tensors: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, (dtype, shape, data)) in read_all(&dense.join("model.safetensors")) {
        if is_projection(&name) {
            let (rows, cols) = (shape[0], shape[1]);
            let (q, s) = ref_quantize(&f32s(&data), rows, cols);
            let sb: Vec<u8> = s.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((format!("{name}_scale_inv"), StDtype::F32, vec![rows.div_ceil(128), cols.div_ceil(128)], sb));
            tensors.push((name, StDtype::F8_E4M3, shape, q));
        } else {
            tensors.push((name, dtype, shape, data));
        }
    }
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
}

// ---- the code ----

#[test]
fn e4m3_encoding_matches_the_reference_at_every_tie_and_edge() {
    let mut xs: Vec<f32> = vec![0.0, -0.0, 448.0, -448.0, 449.0, 464.0, 465.0, 1e30, -1e30, f32::INFINITY];
    xs.extend([f32::NEG_INFINITY, 2f32.powi(-10), 3.0 * 2f32.powi(-10), 2f32.powi(-12), f32::MIN_POSITIVE]);
    let values: Vec<f32> = (0u8..=0x7E).map(ref_value).collect();
    for w in values.windows(2) {
        let mid = (w[0] + w[1]) / 2.0;
        for x in [w[0], w[1], mid, mid.next_up(), mid.next_down()] {
            xs.extend([x, -x]);
        }
    }
    // Every binade from far below the subnormals to far above the largest value.
    let mut state = 0x2545F4914F6CDD1Du64;
    for _ in 0..20_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let e = (state % 40) as i32 - 20;
        let m = 1.0 + (state >> 20) as f32 / (1u64 << 44) as f32;
        xs.push(if state & 1 == 0 { m * 2f32.powi(e) } else { -m * 2f32.powi(e) });
    }
    for x in xs {
        assert_eq!(fp8::encode(x), ref_encode(x), "encode({x:e})");
    }
    assert_eq!(fp8::encode(f32::NAN) & 0x7F, 0x7F);
    for b in 0..=255u8 {
        let (got, want) = (fp8::decode(b), ref_value(b));
        assert!(got == want || (got.is_nan() && want.is_nan()), "decode({b:#04x}) = {got}, want {want}");
    }
}

/// A value in [-1, 1) that varies with `i` without pattern along a block (a multiplicative hash).
fn spread(i: usize) -> f32 {
    ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0
}

#[test]
fn each_128_block_is_scaled_to_its_own_largest_magnitude() {
    // 300 × 200: partial blocks on both edges; blocks whose magnitudes differ by 10^6.
    let (rows, cols) = (300, 200);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            let mag = 10f32.powi(((r / 128) * 2 + c / 128) as i32 - 3);
            mag * spread(i)
        })
        .collect();
    let q = BlockFp8::quantize(&w, rows, cols).unwrap();
    let (bytes, scales) = ref_quantize(&w, rows, cols);
    assert_eq!((q.row_blocks(), q.col_blocks()), (3, 2));
    assert_eq!(q.scale_inv, scales);
    assert_eq!(q.data, bytes);
    // Dequantized, each value is within half an E4M3 step of its block's scale.
    let back = q.dequantize();
    for (i, (a, b)) in w.iter().zip(&back).enumerate() {
        let s = scales[(i / cols / 128) * 2 + (i % cols) / 128];
        let bound = (a.abs() / 16.0).max(s * 2f32.powi(-10)) * 1.0001;
        assert!((a - b).abs() <= bound, "({}, {}): {a} became {b}", i / cols, i % cols);
    }
}

#[test]
fn activation_tiles_round_each_128_wide_piece_of_a_row_to_its_own_factor() {
    // Rows of 300: tiles of 128, 128 and 44; magnitudes 10^4 apart between tiles, and an all-zero
    // tile.
    let (rows, cols) = (3, 300);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            if r == 2 && c < 128 {
                return 0.0;
            }
            let mag = 10f32.powi((c / 128) as i32 * 2 - 2);
            mag * spread(i)
        })
        .collect();
    let mut got = x.clone();
    fp8::round_activation_tiles(&mut got, cols);
    for r in 0..rows {
        for (t, c0) in [0usize, 128, 256].into_iter().enumerate() {
            let tile = &x[r * cols + c0..r * cols + (c0 + 128).min(cols)];
            let amax = tile.iter().fold(0f32, |m, v| m.max(v.abs()));
            let f = if amax > 0.0 { amax / 448.0 } else { 1.0 };
            for (j, v) in tile.iter().enumerate() {
                let want = ref_value(ref_encode(v / f)) * f;
                assert_eq!(got[r * cols + c0 + j], want, "row {r}, tile {t}, column {j}");
            }
        }
    }
    assert!(got[2 * cols..2 * cols + 128].iter().all(|&v| v == 0.0));
}

#[test]
fn an_all_zero_block_gets_factor_one_and_stays_zero() {
    let w = vec![0f32; 130 * 3];
    let q = BlockFp8::quantize(&w, 130, 3).unwrap();
    assert_eq!(q.scale_inv, vec![1.0, 1.0]);
    assert!(q.dequantize().iter().all(|&x| x == 0.0));
}

#[test]
fn a_weight_scale_inv_checkpoint_loads_as_the_reference_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let dense = dense_cut(dir.path());
    let ckpt = dir.path().join("fp8");
    write_reference_checkpoint(&dense, &ckpt);
    let from_ckpt = load(&ckpt, "fp8");
    let at_load = load(&dense, "fp8");
    let ids = ids(&from_ckpt);
    let (a, b) = (from_ckpt.next_logits(&ids).unwrap(), at_load.next_logits(&ids).unwrap());
    // The same bytes and factors, whoever quantized them: the same numbers.
    assert_eq!(a, b, "a checkpoint quantized by the reference and weights quantized at load differ");
    // Loaded without --dtype fp8 the checkpoint is dequantized into dense weights.
    let widened = load(&ckpt, "f32").next_logits(&ids).unwrap();
    let worst = a.iter().zip(&widened).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3, "fp8 product vs dequantized dense product: {worst}");
}

#[test]
fn fp8_weights_keep_the_dense_model_s_next_token_logits() {
    let dir = tempfile::tempdir().unwrap();
    let dense_dir = dense_cut(dir.path());
    let (dense, fp8w) = (load(&dense_dir, "f32"), load(&dense_dir, "fp8"));
    for prompt in
        ["Theorem: for every natural number n, n + 0 = n. Proof:", "import Mathlib\n\ntheorem foo (a b : ℕ) :"]
    {
        let ids = dense.encode_prompt(&Prompt::Text(prompt.into())).unwrap();
        // The prompt as one prefill (many rows: dense product) and its last token alone after
        // the rest (one row: the product that reads FP8 bytes).
        for (name, m) in [("prefill", None), ("one row", Some(ids.len() - 1))] {
            let (a, b) = match m {
                None => (dense.next_logits(&ids).unwrap(), fp8w.next_logits(&ids).unwrap()),
                Some(k) => (one_row_logits(&dense, &ids, k), one_row_logits(&fp8w, &ids, k)),
            };
            let c = cosine(&a, &b);
            assert!(c > 0.999, "{prompt:?} {name}: cosine {c}");
            assert_eq!(argmax(&a), argmax(&b), "{prompt:?} {name}: the next token changed");
        }
    }
}

/// Logits after `ids`, read as a prefill of `ids[..k]` and then one decode step of the rest,
/// through the paged step (the serving engine's path).
fn one_row_logits(m: &Embedded, ids: &[u32], k: usize) -> Vec<f32> {
    paged_logits(m, ids, k, KvFormat::Dense(DType::F32))
}

fn paged_logits(m: &Embedded, ids: &[u32], k: usize, format: KvFormat) -> Vec<f32> {
    let cache = PagedCache::new(&m.model().cfg, 8, 16, format, &Device::Cpu).unwrap();
    logits_over(m, ids, k, cache)
}

/// The next-token logits after `ids`, its first `k` read as one chunk into `cache` and the rest
/// decoded one by one over it.
fn logits_over(m: &Embedded, ids: &[u32], k: usize, cache: PagedCache) -> Vec<f32> {
    let model = m.model();
    let blocks: Vec<u32> = (0..8).collect();
    let mut first = Batch::default();
    first.push(&ids[..k], 0, blocks.clone(), false);
    model.forward_paged(&first, &cache).unwrap();
    for (i, &t) in ids[k..].iter().enumerate() {
        let last = k + i + 1 == ids.len();
        let mut step = Batch::default();
        step.push(&[t], k + i, blocks.clone(), last);
        let out: Tensor = model.forward_paged(&step, &cache).unwrap();
        if last {
            return out.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        }
    }
    panic!("no token after the first {k} of {}", ids.len());
}

#[test]
fn scoring_a_text_in_one_chunk_gives_each_position_the_logits_decoding_gives_it() {
    // `forward_paged_every` (how fp8_accuracy scores its proofs) over an FP8 cache: the chunk's
    // queries read every key and value back from the cache, quantized, as decode rows would.
    let dir = tempfile::tempdir().unwrap();
    let m = load(&dense_cut(dir.path()), "f32");
    let ids = ids(&m);
    let model = m.model();
    let cache = PagedCache::new(&model.cfg, 8, 16, KvFormat::Fp8, &Device::Cpu).unwrap();
    let mut batch = Batch::default();
    batch.push(&ids, 0, (0..8).collect(), false);
    let every = model.forward_paged_every(&batch, &cache).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(every.len(), ids.len(), "one row of logits per token");
    for p in [1, ids.len() / 2, ids.len() - 1] {
        // The logits after token p: the tokens before it as a chunk, then p as a decode row.
        let want = paged_logits(&m, &ids[..=p], p, KvFormat::Fp8);
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = want.iter().zip(&every[p]).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff <= 1e-4 * scale, "position {p}: logits differ by {diff} (largest {scale})");
        assert_eq!(argmax(&want), argmax(&every[p]), "position {p}: the next token changed");
    }
}

#[test]
fn an_fp8_kv_cache_keeps_the_logits_of_the_dense_cache() {
    let dir = tempfile::tempdir().unwrap();
    let dense = load(&dense_cut(dir.path()), "f32");
    let ids = ids(&dense);
    // Half the prompt cached, the rest decoded token by token over the cache.
    let k = ids.len() / 2;
    let a = paged_logits(&dense, &ids, k, KvFormat::Dense(DType::F32));
    let b = paged_logits(&dense, &ids, k, KvFormat::Fp8);
    let c = cosine(&a, &b);
    assert!(c > 0.999, "cosine {c}");
    assert_eq!(argmax(&a), argmax(&b));
    assert_ne!(a, b, "the FP8 cache computed exactly what f32 did: was it used?");
    // A quarter of f32's bytes per position, plus a factor per head.
    let cfg = &dense.model().cfg;
    let (d, f) = (
        PagedCache::block_bytes(cfg, 16, KvFormat::Dense(DType::F32)),
        PagedCache::block_bytes(cfg, 16, KvFormat::Fp8),
    );
    assert_eq!(d, 4 * cfg.head_dim * 2 * cfg.layers * cfg.kv_heads * 16);
    assert_eq!(f, (cfg.head_dim + 4) * 2 * cfg.layers * cfg.kv_heads * 16);
}

#[test]
fn an_fp8_kv_cache_stored_unrotated_as_on_cuda_keeps_the_logits_too() {
    // The CUDA kernels quantize rows as they are, without the CPU's Hadamard rotation.
    let dir = tempfile::tempdir().unwrap();
    let dense = load(&dense_cut(dir.path()), "f32");
    let ids = ids(&dense);
    let k = ids.len() / 2;
    let cfg = &dense.model().cfg;
    let a = paged_logits(&dense, &ids, k, KvFormat::Dense(DType::F32));
    let rotated = paged_logits(&dense, &ids, k, KvFormat::Fp8);
    let plain = PagedCache::new(cfg, 8, 16, KvFormat::Fp8, &Device::Cpu).unwrap().without_rotation();
    let b = logits_over(&dense, &ids, k, plain);
    let c = cosine(&a, &b);
    assert!(c > 0.999, "cosine {c}");
    assert_eq!(argmax(&a), argmax(&b));
    assert_ne!(b, rotated, "the unrotated cache computed what the rotated one did: was the rotation dropped?");
}

#[test]
fn convert_writes_deepseek_s_fp8_layout_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let dense = dense_cut(dir.path());
    let (fp8_dir, back_dir) = (dir.path().join("fp8"), dir.path().join("back"));
    convert(&dense, &fp8_dir, &["--dtype", "fp8"]);
    let written = read_all(&fp8_dir.join("model.safetensors"));
    let original = read_all(&dense.join("model.safetensors"));
    let q = "model.layers.1.self_attn.q_proj.weight";
    let (dt, shape, bytes) = &written[q];
    assert_eq!((*dt, shape.clone()), (StDtype::F8_E4M3, vec![576, 576]));
    let (st, sshape, sbytes) = &written[&format!("{q}_scale_inv")];
    assert_eq!((*st, sshape.clone()), (StDtype::F32, vec![5, 5]));
    let (ref_bytes, ref_scales) = ref_quantize(&f32s(&original[q].2), 576, 576);
    assert_eq!(bytes, &ref_bytes);
    assert_eq!(f32s(sbytes), ref_scales);
    // Norms and embeddings are not projections: left as they were.
    assert_eq!(written["model.norm.weight"], original["model.norm.weight"]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fp8_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["weight_block_size"], serde_json::json!([128, 128]));
    assert!(fp8_dir.join("tokenizer.json").exists());
    // And back to dense: each weight is its reference dequantization.
    convert(&fp8_dir, &back_dir, &["--dtype", "f32"]);
    let back = read_all(&back_dir.join("model.safetensors"));
    assert!(!back.keys().any(|k| k.ends_with("_scale_inv")));
    let want: Vec<f32> = ref_bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| ref_value(b) * ref_scales[(i / 576 / 128) * 5 + (i % 576) / 128])
        .collect();
    assert_eq!(f32s(&back[q].2), want);
}

#[test]
fn fp8_weights_from_a_gguf_file_are_refused_with_the_way_to_convert() {
    let opts = EmbeddedOptions { dtype: Some("fp8".into()), ..Default::default() };
    let err = Embedded::load(&model_path(), &opts).err().expect("a GGUF file with --dtype fp8 loaded");
    assert!(err.to_string().contains("subgoal convert"), "{err}");
}

#[test]
fn an_unknown_quantization_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dense = dense_cut(dir.path());
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dense.join("config.json")).unwrap()).unwrap();
    config["quantization_config"] = serde_json::json!({"quant_method": "fp8", "weight_block_size": [1, 128]});
    std::fs::write(dense.join("config.json"), config.to_string()).unwrap();
    let err = Embedded::load(&dense, &EmbeddedOptions::default()).err().expect("loaded a [1, 128] block layout");
    assert!(err.to_string().contains("weight_block_size"), "{err}");
}

// ---- layers kept dense under FP8 weights (`--fp8-dense-layers`) ----

fn load_keeping(dir: &Path, layers: &[i64]) -> Result<Embedded, subgoal::model::GenError> {
    let opts = EmbeddedOptions { dtype: Some("fp8".into()), fp8_dense_layers: layers.to_vec(), ..Default::default() };
    Embedded::load(dir, &opts)
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn fp8_with_every_layer_kept_dense_is_the_dense_model_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let dense_dir = dense_cut(dir.path());
    let dense = load(&dense_dir, "f32");
    let kept = load_keeping(&dense_dir, &[0, -1]).unwrap();
    let ids = ids(&dense);
    assert_eq!(dense.next_logits(&ids).unwrap(), kept.next_logits(&ids).unwrap());
    assert_eq!(one_row_logits(&dense, &ids, ids.len() - 1), one_row_logits(&kept, &ids, ids.len() - 1));
}

#[test]
fn one_layer_kept_dense_moves_fp8_logits_toward_the_dense_model() {
    let dir = tempfile::tempdir().unwrap();
    let dense_dir = dense_cut(dir.path());
    let (dense, fp8w) = (load(&dense_dir, "f32"), load(&dense_dir, "fp8"));
    let last = load_keeping(&dense_dir, &[-1]).unwrap();
    let ids = ids(&dense);
    let (d, f, l) =
        (dense.next_logits(&ids).unwrap(), fp8w.next_logits(&ids).unwrap(), last.next_logits(&ids).unwrap());
    // Layer 0 is still in FP8, so not the dense model; layer 1 is dense, so nearer it.
    assert!(distance(&l, &d) > 0.0, "keeping layer 1 dense made layer 0 dense too");
    assert!(distance(&l, &d) < distance(&f, &d), "kept {} vs all FP8 {}", distance(&l, &d), distance(&f, &d));
}

#[test]
fn a_dense_layer_past_the_model_s_layers_is_refused_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let dense_dir = dense_cut(dir.path());
    let err = load_keeping(&dense_dir, &[2]).err().expect("layer 2 of a 2-layer model kept");
    assert!(err.to_string().contains("dense layer 2: the model has 2 layers"), "{err}");
    assert!(load_keeping(&dense_dir, &[-3]).is_err(), "layer -3 of a 2-layer model kept");
}

#[test]
fn dense_layers_count_negative_indices_from_the_end() {
    assert_eq!(fp8::resolve_layers(&[-1, 0, 29, -30], 30).unwrap(), vec![0, 29]);
    assert_eq!(fp8::resolve_layers(&[], 30).unwrap(), Vec::<usize>::new());
}

#[test]
fn dense_layers_without_fp8_weights_are_refused() {
    let opts = EmbeddedOptions { fp8_dense_layers: vec![0], ..Default::default() };
    let err = Embedded::load(&model_path(), &opts).err().expect("dense layers loaded without --dtype fp8");
    assert!(err.to_string().contains("--dtype fp8"), "{err}");
}

#[test]
fn convert_keeps_dense_layers_as_stored_and_lists_them_as_not_converted() {
    let dir = tempfile::tempdir().unwrap();
    let dense = dense_cut(dir.path());
    let out = dir.path().join("fp8-last-dense");
    convert(&dense, &out, &["--dtype", "fp8", "--fp8-dense-layers", "-1"]);
    let (written, original) = (read_all(&out.join("model.safetensors")), read_all(&dense.join("model.safetensors")));
    let (q0, q1) = ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.weight");
    assert_eq!(written[q0].0, StDtype::F8_E4M3);
    assert_eq!(written[q1], original[q1], "the kept layer's projection was rewritten");
    assert!(!written.contains_key(&format!("{q1}_scale_inv")));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["quantization_config"]["modules_to_not_convert"], serde_json::json!(["model.layers.1."]));
    // Loaded with --dtype fp8, the checkpoint's kept layer stays dense: the model that keeping
    // the layer at load gives.
    let (from_ckpt, at_load) = (load(&out, "fp8"), load_keeping(&dense, &[1]).unwrap());
    let ids = ids(&from_ckpt);
    assert_eq!(from_ckpt.next_logits(&ids).unwrap(), at_load.next_logits(&ids).unwrap());
}

// ---- picking the CUDA GEMM's kernel by row count (`fused::set_gemm_fp8_pick`) ----

const KERNELS: [&str; 3] = ["gemm_fp8_m1", "gemm_fp8_m2", "gemm_fp8_m2x2"];

#[test]
fn a_kernel_pick_maps_row_counts_to_kernels_named_with_or_without_their_prefix() {
    let pick = fp8::parse_pick("16:m1, 32:gemm_fp8_m2 ,max:m2x2", &KERNELS, "gemm_fp8_").unwrap();
    assert_eq!(pick, vec![(16, 0), (32, 1), (usize::MAX, 2)]);
}

#[test]
fn a_kernel_pick_naming_an_unknown_kernel_is_refused_with_its_name() {
    let err = fp8::parse_pick("16:m1,max:m9", &KERNELS, "gemm_fp8_").unwrap_err().to_string();
    assert!(err.contains("\"m9\"") && err.contains("gemm_fp8_m2x2"), "{err}");
}

#[test]
fn a_kernel_pick_must_rise_and_end_with_max() {
    for spec in ["32:m1,16:m2,max:m2x2", "16:m1,16:m2,max:m2x2", "16:m1,32:m2", "max:m1,max:m2", "", "m1", "x:m1"] {
        assert!(fp8::parse_pick(spec, &KERNELS, "gemm_fp8_").is_err(), "{spec:?} was taken");
    }
}
