//! Verdicts: the exported record of one verification, and the policy that turns what Lean said
//! about a document into a verdict.
//!
//! Invariant: only `judge` produces `Verdict::Proved`, and only when Lean finished, reported no
//! error and no `sorry`, and the trusted epilogue's `#print axioms` for every required theorem
//! was found and lists only allowed axioms.

use serde::{Deserialize, Serialize};

use super::candidate::{Document, Region};
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
    pub messages: Vec<Message>,
    /// Axioms of the checked theorem(s), from the trusted epilogue; empty when it did not run.
    pub axioms: Vec<String>,
    /// Wall time from submission to verdict, queueing and header import included.
    pub elapsed_ms: u64,
    /// Wall time Lean took for the candidate itself (from the edit to its diagnostics).
    pub lean_ms: u64,
    pub lean_version: String,
}

/// Turns a finished or failed check into a verdict.
pub fn judge(doc: &Document, outcome: &Result<Checked, CheckFailure>) -> (Verdict, String, Vec<Message>, Vec<String>) {
    let checked = match outcome {
        Err(CheckFailure::Timeout(t)) => {
            return (Verdict::Timeout, format!("Lean did not finish within {:.1} s", t.as_secs_f64()), vec![], vec![])
        }
        Err(CheckFailure::Crashed(d)) => return (Verdict::Crashed, format!("Lean crashed: {d}"), vec![], vec![]),
        Ok(c) => c,
    };
    let index = LineIndex::new(&doc.text);
    let mut messages = Vec::new();
    let mut axioms_found: Vec<Option<Vec<String>>> = vec![None; doc.theorems.len()];
    for d in &checked.diagnostics {
        if d.is_silent == Some(true) {
            continue;
        }
        let r = d.semantic_range();
        let start = index.offset_of_lsp(r.start.line, r.start.character);
        let end = index.offset_of_lsp(r.end.line, r.end.character);
        let sev = match d.severity.unwrap_or(severity::ERROR) {
            severity::ERROR => Severity::Error,
            severity::WARNING => Severity::Warning,
            severity::INFORMATION => Severity::Info,
            _ => Severity::Hint,
        };
        let (region, sl, sc) = doc.local_position(&index, start);
        let (el, ec) = doc.position_in(&index, region, end.max(start));
        // Only the epilogue's own messages count as the trusted axiom report.
        if region == Region::Epilogue && sev == Severity::Info {
            if let Some((name, axioms)) = parse_axioms(d.text()) {
                if let Some(i) = doc.theorems.iter().position(|t| same_name(t, &name)) {
                    axioms_found[i] = Some(axioms);
                }
            }
        }
        messages.push(Message {
            severity: sev,
            region,
            start: Pos { line: sl, column: sc },
            end: Pos { line: el, column: ec },
            text: d.text().to_string(),
        });
    }
    let mut axioms: Vec<String> = axioms_found.iter().flatten().flatten().cloned().collect();
    axioms.sort();
    axioms.dedup();

    if let Some(e) = messages.iter().find(|m| m.severity == Severity::Error) {
        return (Verdict::Failed, format!("Lean error: {}", first_line(&e.text)), messages, axioms);
    }
    let sorry_warning = messages.iter().any(|m| m.severity == Severity::Warning && is_sorry_warning(&m.text));
    if sorry_warning || axioms.iter().any(|a| a == "sorryAx") {
        return (Verdict::Incomplete, "the proof uses sorry".into(), messages, axioms);
    }
    if let Some(i) = axioms_found.iter().position(Option::is_none) {
        return (
            Verdict::Rejected,
            format!(
                "axioms gate: the trusted `#print axioms {}` produced no answer (elaboration stopped early, e.g. #exit)",
                doc.theorems[i]
            ),
            messages,
            axioms,
        );
    }
    let bad: Vec<&String> = axioms.iter().filter(|a| !ALLOWED_AXIOMS.contains(&a.as_str())).collect();
    if !bad.is_empty() {
        let bad: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
        return (
            Verdict::Rejected,
            format!("axioms gate: depends on disallowed axioms [{}]", bad.join(", ")),
            messages,
            axioms,
        );
    }
    (Verdict::Proved, String::new(), messages, axioms)
}

/// Lean's `declaration uses 'sorry'` warning; 4.35 quotes it with backticks instead.
pub fn is_sorry_warning(text: &str) -> bool {
    text.starts_with("declaration uses") && (text.contains("'sorry'") || text.contains("`sorry`"))
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn same_name(a: &str, b: &str) -> bool {
    let strip = |s: &str| s.replace(['«', '»'], "");
    strip(a) == strip(b)
}

/// Parses `'NAME' depends on axioms: [a, b]` or `'NAME' does not depend on any axioms`.
pub fn parse_axioms(text: &str) -> Option<(String, Vec<String>)> {
    let text = text.trim();
    let rest = text.strip_prefix('\'')?;
    let close = rest.find("' ")?;
    let name = rest[..close].to_string();
    let tail = rest[close + 2..].trim();
    if tail == "does not depend on any axioms" {
        return Some((name, vec![]));
    }
    let list = tail.strip_prefix("depends on axioms:")?.trim();
    let list = list.strip_prefix('[')?.strip_suffix(']')?;
    let axioms = list.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    Some((name, axioms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_axiom_lists_across_lines() {
        let (n, a) = parse_axioms("'t' depends on axioms: [propext,\n Classical.choice, Quot.sound]").unwrap();
        assert_eq!(n, "t");
        assert_eq!(a, vec!["propext", "Classical.choice", "Quot.sound"]);
        assert_eq!(parse_axioms("'u' does not depend on any axioms"), Some(("u".into(), vec![])));
        assert_eq!(parse_axioms("unrelated"), None);
    }
}
