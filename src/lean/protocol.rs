//! Lean's language-server messages as typed Rust values: the standard LSP messages a verifier uses
//! plus Lean's extensions (`$/lean/fileProgress`, `textDocument/waitForDiagnostics`,
//! `$/lean/plainGoal`, `$/lean/plainTermGoal`) and Lean's extra diagnostic fields.
//!
//! Every Lean-specific field is optional: they differ across Lean versions.

use lsp_types::{Position, Range};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const FILE_PROGRESS: &str = "$/lean/fileProgress";
pub const PUBLISH_DIAGNOSTICS: &str = "textDocument/publishDiagnostics";
pub const WAIT_FOR_DIAGNOSTICS: &str = "textDocument/waitForDiagnostics";
pub const PLAIN_GOAL: &str = "$/lean/plainGoal";
pub const PLAIN_TERM_GOAL: &str = "$/lean/plainTermGoal";

/// LSP severity numbers.
pub mod severity {
    pub const ERROR: u8 = 1;
    pub const WARNING: u8 = 2;
    pub const INFORMATION: u8 = 3;
    pub const HINT: u8 = 4;
}

/// Lean's `leanTags` values.
pub mod lean_tag {
    pub const UNSOLVED_GOALS: u32 = 1;
    pub const GOALS_ACCOMPLISHED: u32 = 2;
}

/// A diagnostic as Lean publishes it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeanDiagnostic {
    pub range: Range,
    #[serde(default)]
    pub full_range: Option<Range>,
    #[serde(default)]
    pub severity: Option<u8>,
    #[serde(default)]
    pub message: DiagnosticMessage,
    #[serde(default)]
    pub lean_tags: Option<Vec<u32>>,
    #[serde(default)]
    pub is_silent: Option<bool>,
}

impl LeanDiagnostic {
    /// The semantic range: Lean's `fullRange` when present (the display `range` may be cut short).
    pub fn semantic_range(&self) -> Range {
        self.full_range.unwrap_or(self.range)
    }
    pub fn text(&self) -> &str {
        match &self.message {
            DiagnosticMessage::Plain(s) => s,
            DiagnosticMessage::Other(_) => "",
        }
    }
}

/// Lean sends plain strings to clients without widget support; anything else is kept raw.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum DiagnosticMessage {
    Plain(String),
    Other(Value),
}

impl Default for DiagnosticMessage {
    fn default() -> Self {
        DiagnosticMessage::Plain(String::new())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PublishDiagnostics {
    pub uri: String,
    #[serde(default)]
    pub version: Option<i64>,
    pub diagnostics: Vec<LeanDiagnostic>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VersionedUri {
    pub uri: String,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `$/lean/fileProgress`: ranges still being processed; kind 2 means the worker hit a fatal error.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileProgress {
    pub text_document: VersionedUri,
    pub processing: Vec<ProcessingInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProcessingInfo {
    pub range: Range,
    #[serde(default)]
    pub kind: Option<u8>,
}

pub const PROGRESS_FATAL_ERROR: u8 = 2;

impl FileProgress {
    pub fn is_fatal(&self) -> bool {
        self.processing.iter().any(|p| p.kind == Some(PROGRESS_FATAL_ERROR))
    }
}

/// Result of `$/lean/plainGoal`: `None` when the position is not inside a tactic proof.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PlainGoal {
    pub rendered: String,
    pub goals: Vec<String>,
}

/// Result of `$/lean/plainTermGoal`: the expected type at a position.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PlainTermGoal {
    pub goal: String,
    pub range: Range,
}

pub fn position_params(uri: &str, pos: Position) -> Value {
    json!({"textDocument": {"uri": uri}, "position": pos})
}

pub fn wait_for_diagnostics_params(uri: &str, version: i64) -> Value {
    json!({"uri": uri, "version": version})
}

/// `initialize` params: standard LSP plus Lean's `initializationOptions.editDelay` (0, so
/// elaboration starts at once) and no widget or silent-diagnostic support (fewer messages).
pub fn initialize_params(root_uri: &str) -> Value {
    let params = lsp_types::InitializeParams { process_id: Some(std::process::id()), ..Default::default() };
    let mut v = serde_json::to_value(params).unwrap_or_else(|_| json!({}));
    v["rootUri"] = json!(root_uri);
    v["initializationOptions"] = json!({"editDelay": 0, "hasWidgets": false});
    v["capabilities"]["lean"] = json!({"silentDiagnosticSupport": false});
    v
}

/// The index of the `keyword` token type in the server's semantic-token legend (from the
/// `initialize` result), if it has one.
pub fn keyword_token_type(init_result: &Value) -> Option<u32> {
    init_result
        .pointer("/capabilities/semanticTokensProvider/legend/tokenTypes")?
        .as_array()?
        .iter()
        .position(|t| t.as_str() == Some("keyword"))
        .map(|i| i as u32)
}

/// A semantic token, in LSP coordinates (0-based line, UTF-16 start column and length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemanticToken {
    pub line: u32,
    pub start: u32,
    pub length: u32,
    pub token_type: u32,
    /// The legend names this type `keyword` (set by the session, which knows the legend).
    pub keyword: bool,
}

/// Decodes the relative five-integer encoding of a semantic-tokens answer's `data`.
pub fn decode_semantic_tokens(result: &Value) -> Option<Vec<SemanticToken>> {
    let data: Vec<u32> =
        result.get("data")?.as_array()?.iter().map(|v| v.as_u64().map(|x| x as u32)).collect::<Option<_>>()?;
    let (mut line, mut start) = (0u32, 0u32);
    let mut out = Vec::with_capacity(data.len() / 5);
    for chunk in data.chunks_exact(5) {
        if chunk[0] > 0 {
            line += chunk[0];
            start = chunk[1];
        } else {
            start += chunk[1];
        }
        out.push(SemanticToken { line, start, length: chunk[2], token_type: chunk[3], keyword: false });
    }
    Some(out)
}

pub const SEMANTIC_TOKENS_RANGE: &str = "textDocument/semanticTokens/range";

/// Parameters covering every line of a document.
pub fn whole_document_range_params(uri: &str) -> Value {
    json!({"textDocument": {"uri": uri}, "range": {"start": {"line": 0, "character": 0}, "end": {"line": u32::MAX / 2, "character": 0}}})
}

/// `didOpen` with Lean's `dependencyBuildMode: never`, so a missing `.olean` is an error, not a build.
pub fn did_open_params(uri: &str, version: i64, text: &str) -> Value {
    json!({
        "textDocument": {"uri": uri, "languageId": "lean4", "version": version, "text": text},
        "dependencyBuildMode": "never"
    })
}

/// Full-text `didChange`.
pub fn did_change_params(uri: &str, version: i64, text: &str) -> Value {
    json!({
        "textDocument": {"uri": uri, "version": version},
        "contentChanges": [{"text": text}]
    })
}

pub fn did_close_params(uri: &str) -> Value {
    json!({"textDocument": {"uri": uri}})
}

#[cfg(test)]
mod tests {
    #[test]
    fn semantic_tokens_decode_relative_positions() {
        let r = serde_json::json!({"data": [1, 2, 3, 0, 0,  0, 5, 2, 1, 0,  2, 1, 4, 0, 0]});
        let t = super::decode_semantic_tokens(&r).unwrap();
        assert_eq!((t[0].line, t[0].start, t[0].length), (1, 2, 3));
        assert_eq!((t[1].line, t[1].start, t[1].token_type), (1, 7, 1));
        assert_eq!((t[2].line, t[2].start), (3, 1));
    }

    use super::*;

    #[test]
    fn diagnostic_reads_lean_extension_fields() {
        let d: LeanDiagnostic = serde_json::from_value(json!({
            "range": {"start": {"line": 1, "character": 2}, "end": {"line": 1, "character": 3}},
            "fullRange": {"start": {"line": 1, "character": 2}, "end": {"line": 4, "character": 0}},
            "severity": 1, "message": "unsolved goals", "leanTags": [1], "isSilent": false,
            "source": "Lean 4"
        }))
        .unwrap();
        assert_eq!(d.semantic_range().end.line, 4);
        assert_eq!(d.lean_tags, Some(vec![lean_tag::UNSOLVED_GOALS]));
        assert_eq!(d.text(), "unsolved goals");
    }

    #[test]
    fn diagnostic_without_lean_fields_still_parses() {
        let d: LeanDiagnostic = serde_json::from_value(json!({
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
            "message": "x"
        }))
        .unwrap();
        assert_eq!(d.full_range, None);
        assert_eq!(d.semantic_range(), d.range);
    }

    #[test]
    fn fatal_progress_is_recognised() {
        let p: FileProgress = serde_json::from_value(json!({
            "textDocument": {"uri": "file:///a.lean", "version": 3},
            "processing": [{"range": {"start": {"line": 0, "character": 0}, "end": {"line": 9, "character": 0}}, "kind": 2}]
        }))
        .unwrap();
        assert!(p.is_fatal());
    }
}
