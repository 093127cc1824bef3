//! Tokenizers for the embedded backend: a Hugging Face `tokenizer.json` (with its
//! `tokenizer_config.json` and `generation_config.json`), or one built from a GGUF file's
//! metadata (`tokenizer.ggml.*`) when no `tokenizer.json` is given.
//!
//! A GGUF tokenizer is rebuilt as the `tokenizer.json` document Hugging Face would hold and
//! loaded through the `tokenizers` crate: byte-level BPE (`gpt2` models, with the pre-tokenizer
//! named by `tokenizer.ggml.pre`: GPT-2, Llama 3, Qwen2, SmolLM, DeepSeek-LLM (DeepSeek-Prover
//! and DeepSeek-Math), DeepSeek-Coder, DeepSeek-V3) or SentencePiece-style BPE with byte fallback
//! (`llama` models, merges derived from the piece scores). A pre-tokenizer this module does not
//! know falls back to GPT-2's (logged); give `--tokenizer tokenizer.json` for exact tokenization.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::quantized::gguf_file::Value as GgufValue;
use serde_json::{json, Value};

use super::chat::{template_from_config, ChatTemplate};
use super::{GenError, Prompt};

pub struct ModelTokenizer {
    tok: tokenizers::Tokenizer,
    /// Tokens that end a completion.
    pub eos_ids: Vec<u32>,
    /// Prepended to text prompts when the tokenizer's own post-processor does not.
    bos_id: Option<u32>,
    pub chat: Option<ChatTemplate>,
}

fn err(what: impl std::fmt::Display) -> GenError {
    GenError::Load { model: "tokenizer".into(), detail: what.to_string() }
}

/// A special-token entry of `tokenizer_config.json`: a string or `{"content": …}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

impl ModelTokenizer {
    /// From a `tokenizer.json`; `tokenizer_config.json` and `generation_config.json` beside it
    /// (when present) give the chat template and end-of-sequence tokens.
    pub fn from_tokenizer_json(path: &Path) -> Result<ModelTokenizer, GenError> {
        let tok = tokenizers::Tokenizer::from_file(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read =
            |name: &str| -> Option<Value> { serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok() };
        let config = read("tokenizer_config.json").unwrap_or(Value::Null);
        let bos = token_text(config.get("bos_token"));
        let eos = token_text(config.get("eos_token"));
        let mut eos_ids: Vec<u32> = eos.iter().filter_map(|t| tok.token_to_id(t)).collect();
        if let Some(g) = read("generation_config.json").and_then(|g| g.get("eos_token_id").cloned()) {
            let ids: Vec<u32> = match g {
                Value::Number(n) => n.as_u64().into_iter().map(|i| i as u32).collect(),
                Value::Array(a) => a.iter().filter_map(Value::as_u64).map(|i| i as u32).collect(),
                _ => vec![],
            };
            eos_ids.extend(ids);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let chat = match template_from_config(&config) {
            Some(src) => Some(ChatTemplate::new(&src, bos.as_deref().unwrap_or(""), eos.as_deref().unwrap_or(""))?),
            None => None,
        };
        // tokenizer.json's post-processor adds BOS where the model wants it.
        Ok(ModelTokenizer { tok, eos_ids, bos_id: None, chat })
    }

    /// From GGUF metadata.
    pub fn from_gguf(md: &HashMap<String, GgufValue>) -> Result<ModelTokenizer, GenError> {
        let s = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
        let u = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        let doc = gguf_tokenizer_document(md)?;
        let model = s("tokenizer.ggml.model").unwrap_or_else(|| "gpt2".into());
        let tok = tokenizers::Tokenizer::from_str(&doc.to_string()).map_err(err)?;
        let bos_id = u("tokenizer.ggml.bos_token_id");
        let eos_ids: Vec<u32> = u("tokenizer.ggml.eos_token_id").into_iter().collect();
        let default_bos = model == "llama";
        let add_bos = md.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok()).unwrap_or(default_bos);
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        let chat = match s("tokenizer.chat_template") {
            Some(src) => Some(ChatTemplate::new(&src, &name(bos_id), &name(eos_ids.first().copied()))?),
            None => None,
        };
        Ok(ModelTokenizer { tok, eos_ids, bos_id: if add_bos { bos_id } else { None }, chat })
    }

    /// Token ids of a prompt as the model sees it: a chat prompt through the chat template (which
    /// writes its own special tokens), a text prompt with BOS where the model wants one.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, GenError> {
        match prompt {
            Prompt::Text(t) => {
                let mut ids = self.encode(t, true)?;
                if let Some(b) = self.bos_id {
                    if ids.first() != Some(&b) {
                        ids.insert(0, b);
                    }
                }
                Ok(ids)
            }
            Prompt::Chat(m) => {
                let chat =
                    self.chat.as_ref().ok_or_else(|| GenError::Invalid("this model has no chat template".into()))?;
                self.encode(&chat.render(m)?, false)
            }
        }
    }

    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, GenError> {
        Ok(self
            .tok
            .encode(text, special)
            .map_err(|e| GenError::Backend(format!("tokenizing: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.tok.decode(ids, true).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.tok.get_vocab_size(true)
    }
}

/// The GGUF vocabulary.
fn gguf_tokens(md: &HashMap<String, GgufValue>) -> Result<Vec<String>, GenError> {
    Ok(md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(|| err("the GGUF file has no tokenizer.ggml.tokens (give --tokenizer tokenizer.json)"))?
        .iter()
        .map(|t| t.to_string().cloned().unwrap_or_default())
        .collect())
}

/// The `tokenizer.json` document equivalent to a GGUF file's tokenizer metadata.
pub fn gguf_tokenizer_document(md: &HashMap<String, GgufValue>) -> Result<Value, GenError> {
    let s = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
    let tokens = gguf_tokens(md)?;
    let types: Vec<i32> = md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.iter().map(|t| t.to_i32().unwrap_or(1)).collect())
        .unwrap_or_default();
    let model = s("tokenizer.ggml.model").unwrap_or_else(|| "gpt2".into());
    let doc = match model.as_str() {
        "gpt2" => {
            let merges: Vec<String> = md
                .get("tokenizer.ggml.merges")
                .and_then(|v| v.to_vec().ok())
                .ok_or_else(|| err("a gpt2 GGUF tokenizer needs tokenizer.ggml.merges"))?
                .iter()
                .map(|m| m.to_string().cloned().unwrap_or_default())
                .collect();
            byte_level_bpe(&tokens, &types, &merges, &s("tokenizer.ggml.pre").unwrap_or_default())
        }
        "llama" => {
            let scores: Vec<f32> = md
                .get("tokenizer.ggml.scores")
                .and_then(|v| v.to_vec().ok())
                .map(|v| v.iter().map(|t| t.to_f32().unwrap_or(0.0)).collect())
                .unwrap_or_default();
            let space_prefix = md.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
            sentencepiece_bpe(&tokens, &types, &scores, space_prefix)
        }
        other => {
            return Err(err(format!(
                "GGUF tokenizer model {other:?} is not supported (give --tokenizer tokenizer.json)"
            )))
        }
    };
    Ok(doc)
}

/// Tokens of type 3 (control) and 4 (user-defined) are added tokens; control ones are special.
fn added_tokens(tokens: &[String], types: &[i32]) -> Vec<Value> {
    tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3 | 4)))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": types.get(i) == Some(&3)})
        })
        .collect()
}

fn vocab(tokens: &[String]) -> serde_json::Map<String, Value> {
    tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect()
}

const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek-LLM's splits (deepseek-ai/deepseek-llm-7b-base `tokenizer.json`; llama.cpp
/// `deepseek-llm`), then single digits. The letter class is written with escapes: six of its
/// characters change under Unicode normalisation, which would break its ranges.
const DEEPSEEK_LLM_SPLITS: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+",
    "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+",
    "\\s+$",
    "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+",
];
/// DeepSeek-Coder's splits (deepseek-coder-6.7b-base; llama.cpp `deepseek-coder`), then single
/// digits.
const DEEPSEEK_CODER_SPLITS: &[&str] =
    &["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+"];
/// DeepSeek-V3's splits (DeepSeek-V3 `tokenizer.json`; llama.cpp `deepseek-v3`).
const DEEPSEEK_V3_SPLITS: &[&str] = &[
    "\\p{N}{1,3}",
    "[\u{4E00}-\u{9FA5}\u{3040}-\u{309F}\u{30A0}-\u{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];

/// The pre-tokenizer llama.cpp's `tokenizer.ggml.pre` names, as `tokenizer.json` writes it.
fn pre_tokenizer(pre: &str) -> Value {
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let isolate = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    let split = |pattern: &str| json!({"type": "Sequence", "pretokenizers": [isolate(pattern), byte_level(false)]});
    // Several splits in turn, single digits where `digits`, then the byte mapping.
    let splits = |patterns: &[&str], digits: bool| {
        let mut steps: Vec<Value> = patterns.iter().map(|p| isolate(p)).collect();
        if digits {
            steps.push(json!({"type": "Digits", "individual_digits": true}));
        }
        steps.push(byte_level(false));
        json!({"type": "Sequence", "pretokenizers": steps})
    };
    match pre {
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)
        ]}),
        "llama-bpe" | "llama3" | "falcon3" | "dbrx" | "smaug-bpe" => split(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "qwen35" => split(QWEN2_SPLIT),
        "deepseek-llm" => splits(DEEPSEEK_LLM_SPLITS, true),
        "deepseek-coder" => splits(DEEPSEEK_CODER_SPLITS, true),
        "deepseek-v3" => splits(DEEPSEEK_V3_SPLITS, false),
        "" | "default" | "gpt2" | "gpt-2" | "starcoder" | "refact" | "olmo" => split(GPT2_SPLIT),
        other => {
            tracing::warn!(
                pre = other,
                "unknown GGUF pre-tokenizer: using GPT-2's (give --tokenizer for exact tokens)"
            );
            split(GPT2_SPLIT)
        }
    }
}

/// A byte-level BPE `tokenizer.json` (GPT-2 style) from GGUF vocabulary and merges.
fn byte_level_bpe(tokens: &[String], types: &[i32], merges: &[String], pre: &str) -> Value {
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens(tokens, types),
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab(tokens), "merges": merges}
    })
}

/// A SentencePiece-style BPE `tokenizer.json` (`▁` for spaces, `<0xNN>` byte fallback). GGUF
/// stores piece scores, not merges; a merge `(a, b)` exists where `a`, `b` and `ab` are all
/// pieces, ranked by the score of `ab` (SentencePiece merges higher-scoring pieces first).
fn sentencepiece_bpe(tokens: &[String], types: &[i32], scores: &[f32], space_prefix: bool) -> Value {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f32, usize, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if matches!(types.get(id), Some(2..=6)) {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if ids.contains_key(a) && ids.contains_key(b) {
                merges.push((scores.get(id).copied().unwrap_or(0.0), id, format!("{a} {b}")));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges: Vec<String> = merges.into_iter().map(|m| m.2).collect();
    let unk = types.iter().position(|&t| t == 2).and_then(|i| tokens.get(i)).cloned();
    let mut normalizers = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})];
    if space_prefix {
        normalizers.insert(0, json!({"type": "Prepend", "prepend": "▁"}));
    }
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens(tokens, types),
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab(tokens), "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentencepiece_merges_follow_piece_scores_and_bytes_fall_back() {
        let pieces = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "<0x21>"];
        let tokens: Vec<String> = pieces.iter().map(|s| s.to_string()).collect();
        let types = vec![2, 3, 3, 1, 1, 1, 1, 1, 1, 6];
        let scores = vec![0.0, 0.0, 0.0, -1.0, -2.0, -2.0, -0.5, -0.7, -0.1, 0.0];
        let doc = sentencepiece_bpe(&tokens, &types, &scores, true);
        let tok = tokenizers::Tokenizer::from_str(&doc.to_string()).unwrap();
        let enc = tok.encode("ab!", false).unwrap();
        assert_eq!(enc.get_tokens(), ["▁ab", "<0x21>"]);
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "ab!");
    }
}
