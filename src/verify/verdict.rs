//! Verdicts: the exported record of one verification, and the policy that turns what Lean said
//! about a document into a verdict.
//!
//! Invariant: only `judge` produces `Verdict::Proved`, and only when Lean finished, reported no
//! error and no `sorry`, the trusted epilogue's statement check passed, and its `#print axioms`
//! for every required theorem was found and lists only allowed axioms. `Verifier` exports a
//! `proved` only after a fresh process judged the same document `proved` too.

use serde::{Deserialize, Serialize};

use super::candidate::{Document, Region};
use super::gates::{check_lean_tokens, Gate, GateConfig};
use crate::lean::protocol::severity;
use crate::lean::session::{CheckFailure, Checked};
use crate::text::LineIndex;

/// Axioms a proof may depend on: Lean's standard three.
pub const ALLOWED_AXIOMS: [&str; 3] = ["propext", "Classical.choice", "Quot.sound"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Proved,
    /// Lean accepted it only with `sorry`.
    Incomplete,
    /// Lean reported errors.
    Failed,
    /// A soundness gate refused it.
    Rejected,
    Timeout,
    Crashed,
    InvalidInput,
}

impl Verdict {
    pub const ALL: [Verdict; 7] = [
        Verdict::Proved,
        Verdict::Incomplete,
        Verdict::Failed,
        Verdict::Rejected,
        Verdict::Timeout,
        Verdict::Crashed,
        Verdict::InvalidInput,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Proved => "proved",
            Verdict::Incomplete => "incomplete",
            Verdict::Failed => "failed",
            Verdict::Rejected => "rejected",
            Verdict::Timeout => "timeout",
            Verdict::Crashed => "crashed",
            Verdict::InvalidInput => "invalid_input",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
    Info,
    Hint,
}

/// A position: 1-based line, 0-based column counted in Unicode scalar values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A Lean message, positioned in the coordinates of the region it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub severity: Severity,
    pub region: Region,
    pub start: Pos,
    pub end: Pos,
    pub text: String,
}

/// One output line of `subgoal verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub name: String,
    pub verdict: Verdict,
    pub reason: String,
    /// The gate that refused the candidate (verdict `rejected`, or a re-check that disagreed).
    pub rejected_by: Option<Gate>,
    /// Gates the candidate was checked by, in order.
    pub gates: Vec<Gate>,
    pub messages: Vec<Message>,
    /// Axioms of the checked theorem(s), from the trusted epilogue; empty when it did not run.
    pub axioms: Vec<String>,
    /// The fresh-process re-check of a `proved` from the server; null when none ran.
    pub recheck: Option<RecheckResult>,
    /// Wall time from submission to verdict, queueing and header import included.
    pub elapsed_ms: u64,
    /// Wall time Lean took for the candidate itself (from the edit to its diagnostics).
    pub lean_ms: u64,
    pub lean_version: String,
}

/// What the fresh `lean` process said about a document the server proved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecheckResult {
    pub verdict: Verdict,
    pub reason: String,
    /// Whether it agreed with the server (verdict `proved` too).
    pub agreed: bool,
    pub lean_ms: u64,
}

/// A Lean message located in the document (byte offsets), from either the server or `lean --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    pub severity: Severity,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// The tokens Lean's parser saw in the document, for the shape gate's second look.
#[derive(Debug, Clone, PartialEq)]
pub enum LeanTokens {
    /// Not asked for (the fresh re-check: `lean --json` reports no tokens; the same text passed
    /// the server's look).
    NotChecked,
    /// Asked for, but the server gave none: the gate cannot look, so it refuses.
    Missing,
    /// Byte ranges in the document, and whether Lean calls each a keyword.
    Seen(Vec<(std::ops::Range<usize>, bool)>),
}

/// What Lean said about a document, in document offsets.
#[derive(Debug, Clone, PartialEq)]
pub struct LeanOutput {
    pub messages: Vec<RawMessage>,
    pub tokens: LeanTokens,
}

/// Converts the server's diagnostics and keyword tokens (UTF-16 LSP positions) into document
/// offsets, dropping silent diagnostics.
pub fn from_lsp(doc: &Document, checked: &Checked) -> LeanOutput {
    let index = LineIndex::new(&doc.text);
    let messages = messages_of(&index, checked);
    let tokens = match &checked.tokens {
        None => LeanTokens::Missing,
        Some(ks) => LeanTokens::Seen(
            ks.iter()
                .map(|k| {
                    (index.offset_of_lsp(k.line, k.start)..index.offset_of_lsp(k.line, k.start + k.length), k.keyword)
                })
                .collect(),
        ),
    };
    LeanOutput { messages, tokens }
}

/// Lean's messages (less the silent ones) located in the text `index` was built over.
pub fn messages_of(index: &LineIndex, checked: &Checked) -> Vec<RawMessage> {
    checked
        .diagnostics
        .iter()
        .filter(|d| d.is_silent != Some(true))
        .map(|d| {
            let r = d.semantic_range();
            RawMessage {
                severity: match d.severity.unwrap_or(severity::ERROR) {
                    severity::ERROR => Severity::Error,
                    severity::WARNING => Severity::Warning,
                    severity::INFORMATION => Severity::Info,
                    _ => Severity::Hint,
                },
                start: index.offset_of_lsp(r.start.line, r.start.character),
                end: index.offset_of_lsp(r.end.line, r.end.character),
                text: d.text().to_string(),
            }
        })
        .collect()
}

/// What `judge` decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: String,
    pub rejected_by: Option<Gate>,
    pub messages: Vec<Message>,
    pub axioms: Vec<String>,
}

impl Judgement {
    fn new(verdict: Verdict, reason: impl Into<String>) -> Judgement {
        Judgement { verdict, reason: reason.into(), rejected_by: None, messages: vec![], axioms: vec![] }
    }
}

/// Whether an axiom may appear in a proof: Lean's standard three, plus with
/// `allow_native_decide` those of native evaluation.
pub fn axiom_allowed(name: &str, cfg: &GateConfig) -> bool {
    ALLOWED_AXIOMS.contains(&name)
        || cfg.allow_native_decide
            && (matches!(name, "Lean.ofReduceBool" | "Lean.ofReduceNat" | "Lean.trustCompiler")
                || name.contains("._native."))
}

/// Turns what Lean said about a document (or that it did not finish) into a verdict.
pub fn judge(doc: &Document, outcome: Result<LeanOutput, CheckFailure>, cfg: &GateConfig) -> Judgement {
    let LeanOutput { messages: raw, tokens } = match outcome {
        Err(CheckFailure::Timeout(t)) => {
            return Judgement::new(Verdict::Timeout, format!("Lean did not finish within {:.1} s", t.as_secs_f64()))
        }
        Err(CheckFailure::Crashed(d)) => return Judgement::new(Verdict::Crashed, format!("Lean crashed: {d}")),
        Ok(raw) => raw,
    };
    let index = LineIndex::new(&doc.text);
    let mut messages = Vec::new();
    let mut axioms_found: Vec<Option<Vec<String>>> = vec![None; doc.theorems.len()];
    let mut conflicting: Option<String> = None;
    for m in raw {
        let (region, sl, sc) = doc.local_position(&index, m.start);
        let (el, ec) = doc.position_in(&index, region, m.end.max(m.start));
        // Only the epilogue's own messages count as the trusted axiom report.
        if region == Region::Epilogue && m.severity == Severity::Info {
            if let Some((name, axioms)) = parse_axioms(&m.text) {
                if let Some(i) = doc.theorems.iter().position(|t| same_name(t, &name, doc.private)) {
                    if axioms_found[i].as_ref().is_some_and(|prev| *prev != axioms) {
                        conflicting = Some(doc.theorems[i].clone());
                    }
                    axioms_found[i] = Some(axioms);
                }
            }
        }
        messages.push(Message {
            severity: m.severity,
            region,
            start: Pos { line: sl, column: sc },
            end: Pos { line: el, column: ec },
            text: m.text,
        });
    }
    let mut axioms: Vec<String> = axioms_found.iter().flatten().flatten().cloned().collect();
    axioms.sort();
    axioms.dedup();
    let (verdict, reason, rejected_by) = decide(doc, &messages, &tokens, &axioms_found, &axioms, conflicting, cfg);
    Judgement { verdict, reason, rejected_by, messages, axioms }
}

/// The verdict, its reason and the refusing gate, in the order the checks apply.
fn decide(
    doc: &Document,
    messages: &[Message],
    tokens: &LeanTokens,
    axioms_found: &[Option<Vec<String>>],
    axioms: &[String],
    conflicting: Option<String>,
    cfg: &GateConfig,
) -> (Verdict, String, Option<Gate>) {
    let error_in = |pred: &dyn Fn(Region) -> bool| {
        messages
            .iter()
            .find(|m| m.severity == Severity::Error && pred(m.region))
            .map(|m| first_line(&m.text).to_string())
    };
    let rejected = |gate: Gate, reason: String| (Verdict::Rejected, reason, Some(gate));
    // Nothing after a header Lean refused was elaborated.
    if let Some(e) = error_in(&|r| r == Region::Header) {
        return (Verdict::Failed, format!("Lean error in the header: {e}"), None);
    }
    // A candidate Lean read differently from the gate is refused whatever else Lean said.
    if let Err(reason) = second_look(doc, tokens, cfg) {
        return rejected(Gate::Shape, reason);
    }
    if let Some(e) = error_in(&|r| r == Region::Reference) {
        return (Verdict::InvalidInput, format!("the reference statement does not elaborate: {e}"), None);
    }
    if let Some(e) = error_in(&|r| r != Region::Epilogue) {
        return (Verdict::Failed, format!("Lean error: {e}"), None);
    }
    let sorry_warning = messages.iter().any(|m| m.severity == Severity::Warning && is_sorry_warning(&m.text));
    if sorry_warning || axioms.iter().any(|a| a == "sorryAx") {
        return (Verdict::Incomplete, "the proof uses sorry".into(), None);
    }
    if let Some(e) = error_in(&|r| r == Region::Epilogue) {
        let reason = format!("statement gate: the proved theorem does not have the reference statement's type: {e}");
        return rejected(Gate::Statement, reason);
    }
    if let Some(t) = conflicting {
        return rejected(
            Gate::Axioms,
            format!("axioms gate: the trusted `#print axioms` answered twice for `{t}`, differently"),
        );
    }
    if let Some(i) = axioms_found.iter().position(Option::is_none) {
        let reason = format!(
            "axioms gate: the trusted `#print axioms {}` produced no answer (elaboration stopped early, e.g. #exit)",
            doc.theorems[i]
        );
        return rejected(Gate::Axioms, reason);
    }
    let bad: Vec<&str> = axioms.iter().map(String::as_str).filter(|a| !axiom_allowed(a, cfg)).collect();
    if !bad.is_empty() {
        return rejected(Gate::Axioms, format!("axioms gate: depends on disallowed axioms [{}]", bad.join(", ")));
    }
    (Verdict::Proved, String::new(), None)
}

/// The shape gate's look at the tokens Lean reported: none may straddle the statement and the
/// candidate, the candidate's must pass `check_lean_tokens`, and a header the candidate chose
/// may hold only import syntax.
fn second_look(doc: &Document, tokens: &LeanTokens, cfg: &GateConfig) -> Result<(), String> {
    let ks = match tokens {
        LeanTokens::NotChecked => return Ok(()),
        LeanTokens::Missing => {
            return Err("shape gate: Lean did not report the candidate's tokens, so they cannot be checked".into())
        }
        LeanTokens::Seen(ks) => ks,
    };
    let straddles = |at: usize| ks.iter().any(|(r, _)| r.start < at && r.end > at);
    if straddles(doc.candidate_start) {
        return Err("shape gate: a Lean token spans the statement and the candidate".into());
    }
    if doc.has_helpers() && (straddles(doc.helpers_start) || straddles(doc.statement_start)) {
        return Err("shape gate: a Lean token spans the helpers and what is around them".into());
    }
    if doc.has_helpers() {
        let (start, end) = (doc.helpers_start, doc.statement_start);
        let local: Vec<(std::ops::Range<usize>, bool)> = ks
            .iter()
            .filter(|(r, _)| r.start >= start && r.end <= end)
            .map(|(r, k)| (r.start - start..r.end - start, *k))
            .collect();
        let declared: Vec<usize> = doc.helper_keywords.iter().map(|k| k - start).collect();
        check_lean_tokens(&doc.text[start..end], &local, false, &declared, cfg)?;
    }
    let from = doc.candidate_start.max(doc.header_end);
    let local: Vec<(std::ops::Range<usize>, bool)> = ks
        .iter()
        .filter(|(r, _)| r.start >= from && r.end <= doc.candidate_end)
        .map(|(r, k)| (r.start - doc.candidate_start..r.end - doc.candidate_start, *k))
        .collect();
    let candidate = &doc.text[doc.candidate_start..doc.candidate_end];
    check_lean_tokens(candidate, &local, doc.reference.is_none(), &[], cfg)?;
    if doc.candidate_chose_header {
        let header: Vec<_> = ks.iter().filter(|(r, _)| r.start < doc.header_end).cloned().collect();
        header_tokens_are_imports(&doc.text[..doc.header_end], &header)?;
    }
    Ok(())
}

/// In a header the candidate wrote, Lean may read only import syntax, token for token with the
/// gate's reading of it (`header_end` accepted that text as `prelude`/`import M` lines only).
fn header_tokens_are_imports(text: &str, tokens: &[(std::ops::Range<usize>, bool)]) -> Result<(), String> {
    let gate = crate::lean::lexer::tokenize(text);
    for (r, keyword) in tokens {
        let word = text.get(r.clone()).unwrap_or("");
        if !gate.iter().any(|t| t.span.start == r.start) {
            return Err(format!(
                "shape gate: Lean reads `{word}` in the candidate's import header where the gate saw no token"
            ));
        }
        if *keyword && !matches!(word, "prelude" | "module" | "import" | "public" | "private" | "meta" | "all") {
            return Err(format!("shape gate: `{word}` in the candidate's import header is not import syntax"));
        }
    }
    Ok(())
}

/// Lean's `declaration uses 'sorry'` warning; 4.35 quotes it with backticks instead.
pub fn is_sorry_warning(text: &str) -> bool {
    text.starts_with("declaration uses") && (text.contains("'sorry'") || text.contains("`sorry`"))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Whether Lean's printed name `printed` is the declared name `declared`: component by
/// component, a `«x»` that needs no escaping equals `x` (Lean prints it bare), but `«a.b»` is one
/// component and never equals `a.b`. A private declaration prints as `_private.«file».0.NAME`.
fn same_name(declared: &str, printed: &str, private: bool) -> bool {
    let printed = match (private, printed.strip_prefix("_private.")) {
        (true, Some(rest)) => rest.rsplit_once(".0.").map_or(printed, |(_, n)| n),
        _ => printed,
    };
    components(declared) == components(printed)
}

/// Name components with unnecessary `«»` removed.
fn components(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in name.chars() {
        match c {
            '«' if !escaped => escaped = true,
            '»' if escaped => escaped = false,
            '.' if !escaped => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parses `'NAME' depends on axioms: [a, b]` or `'NAME' does not depend on any axioms`.
pub fn parse_axioms(text: &str) -> Option<(String, Vec<String>)> {
    let text = text.trim();
    let rest = text.strip_prefix('\'')?;
    // The name may itself hold `' ` (`«a' b»`): cut at the fixed suffixes, not the first quote.
    if let Some(name) = rest.strip_suffix("' does not depend on any axioms") {
        return Some((name.to_string(), vec![]));
    }
    let close = rest.rfind("' depends on axioms:")?;
    let name = rest[..close].to_string();
    let list = rest[close + "' depends on axioms:".len()..].trim();
    let list = list.strip_prefix('[')?.strip_suffix(']')?;
    let axioms = list.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    Some((name, axioms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_axiom_lists_across_lines() {
        assert_eq!(parse_axioms("'«a' b»' does not depend on any axioms").unwrap().0, "«a' b»");
        assert!(!same_name("«a.b»", "a.b", false));
        assert!(same_name("«foo».bar", "foo.bar", false));
        assert!(same_name("x", "_private.«external:file:///t.lean».0.x", true));
        assert!(!same_name("x", "_private.«external:file:///t.lean».0.x", false));
        let (n, a) = parse_axioms("'t' depends on axioms: [propext,\n Classical.choice, Quot.sound]").unwrap();
        assert_eq!(n, "t");
        assert_eq!(a, vec!["propext", "Classical.choice", "Quot.sound"]);
        assert_eq!(parse_axioms("'u' does not depend on any axioms"), Some(("u".into(), vec![])));
        assert_eq!(parse_axioms("unrelated"), None);
    }
}
