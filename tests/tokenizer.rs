//! GGUF tokenizers rebuilt from metadata, against independent references: llama.cpp's
//! vocabulary-only GGUF files of DeepSeek-LLM and DeepSeek-Coder with the token ids Hugging
//! Face's own tokenizers give for llama.cpp's test inputs (`scripts/install-test-vocab.sh`), and
//! for DeepSeek-V3 (no vocabulary file available) the pieces its published split patterns give
//! on math and Lean text, worked out by hand here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::quantized::gguf_file::Value as GgufValue;
use subgoal::model::tokenizer::{gguf_tokenizer_document, ModelTokenizer};

fn vocab_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".toolchain/vocab");
    assert!(dir.is_dir(), "reference vocabularies missing at {}: run scripts/install-test-vocab.sh", dir.display());
    dir
}

fn metadata(family: &str) -> HashMap<String, GgufValue> {
    let path = vocab_dir().join(format!("ggml-vocab-{family}.gguf"));
    subgoal::model::llama::read_gguf(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).0.metadata
}

/// llama.cpp's test cases: inputs and the ids Hugging Face gives them (no BOS).
fn cases(family: &str) -> Vec<(String, Vec<u32>)> {
    let read =
        |ext: &str| std::fs::read_to_string(vocab_dir().join(format!("ggml-vocab-{family}.gguf.{ext}"))).unwrap();
    let inputs: Vec<String> = read("inp").split("\n__ggml_vocab_test__\n").map(str::to_owned).collect();
    let outputs: Vec<Vec<u32>> =
        read("out").split('\n').map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(inputs.len(), outputs.len(), "{family}: inputs and outputs pair up");
    inputs.into_iter().zip(outputs).collect()
}

fn check_family(family: &str) {
    let md = metadata(family);
    let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).cloned();
    assert_eq!(pre.as_deref(), Some(family), "the vocabulary file names its pre-tokenizer");
    let tok = ModelTokenizer::from_gguf(&md).unwrap();
    let cases = cases(family);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (input, want) in &cases {
        let got = tok.encode(input, false).unwrap();
        if &got != want {
            wrong.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} cases differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
}

#[test]
fn deepseek_llm_vocabularies_tokenize_as_hugging_face_does() {
    check_family("deepseek-llm");
}

#[test]
fn deepseek_coder_vocabularies_tokenize_as_hugging_face_does() {
    check_family("deepseek-coder");
}

const LEAN: &str = "theorem mathd_algebra_48 (q e : ℂ) (h₀ : q = 9 - 4 * Complex.I) :\n    q - e = 7 - 9 * Complex.I := by\n  rw [h₀]\n  norm_num [Complex.ext_iff] <;> linarith\n";
const MATH: &str = "Let $x^2 + 2x = 12345$. Then $\\frac{3}{4} \\le \\sqrt{x}$, so ∑ᵢ aᵢ ≥ 0 ∧ ∀ ε > 0, ∃ δ.";

#[test]
fn deepseek_tokenizers_round_trip_lean_and_math_text() {
    for family in ["deepseek-llm", "deepseek-coder"] {
        let tok = ModelTokenizer::from_gguf(&metadata(family)).unwrap();
        for text in [LEAN, MATH] {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(&ids), text, "{family}");
        }
    }
}

/// A byte-level vocabulary of the 256 byte symbols and no merges, under pre-tokenizer `pre`:
/// encoding shows the pieces the pre-tokenizer cut.
fn pieces(pre: &str, text: &str) -> Vec<String> {
    // GPT-2's byte-to-symbol table: printable bytes stand for themselves, the rest are shifted.
    let mut symbols = Vec::new();
    let mut n = 0;
    for b in 0u32..256 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        symbols.push(
            char::from_u32(if printable {
                b
            } else {
                256 + {
                    n += 1;
                    n - 1
                }
            })
            .unwrap()
            .to_string(),
        );
    }
    let mut md = HashMap::new();
    md.insert("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre".to_string(), GgufValue::String(pre.into()));
    md.insert(
        "tokenizer.ggml.tokens".to_string(),
        GgufValue::Array(symbols.into_iter().map(GgufValue::String).collect()),
    );
    md.insert("tokenizer.ggml.merges".to_string(), GgufValue::Array(vec![]));
    let doc = gguf_tokenizer_document(&md).unwrap();
    let tok = tokenizers::Tokenizer::from_str(&doc.to_string()).unwrap();
    let enc = tok.encode(text, false).unwrap();
    // Tokens of one piece share a word index; a piece spans its tokens' offsets.
    let mut spans: Vec<(u32, usize, usize)> = Vec::new();
    for (w, &(a, b)) in enc.get_word_ids().iter().zip(enc.get_offsets()) {
        let w = w.expect("every token comes from a piece");
        match spans.last_mut() {
            Some(last) if last.0 == w => last.2 = b,
            _ => spans.push((w, a, b)),
        }
    }
    spans.into_iter().map(|(_, a, b)| text[a..b].to_string()).collect()
}

#[test]
fn deepseek_v3_cuts_numbers_in_threes_and_keeps_spaces_before_symbols() {
    // `\p{N}{1,3}` first (the subscript ₀ is a number too), then letters with an optional
    // leading non-letter, symbols with an optional leading space, and runs of space.
    assert_eq!(pieces("deepseek-v3", "x = 12345"), ["x", " =", " ", "123", "45"]);
    assert_eq!(pieces("deepseek-v3", "h₀ : ℝ"), ["h", "₀", " :", " ℝ"]);
    assert_eq!(pieces("deepseek-v3", "(q : ℂ)"), ["(q", " :", " ℂ", ")"]);
}
