//! What a self-correction prompt shows of a failed candidate: the file Lean checked (header,
//! helpers, statement, proof; never the trusted reference or epilogue), Lean's errors located in
//! that file as `line L, column C: message` and cut to a token budget, and the same file with the
//! text of each error marked in place between `<error>` and `</error>`.

use crate::text::LineIndex;
use crate::verify::verdict::Severity;
use crate::verify::{Document, VerifyRecord};

/// A failed candidate as the repair prompt shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The checked file.
    pub code: String,
    /// Lean's errors, one per line, within the budget.
    pub errors: String,
    /// The checked file with each error's text marked.
    pub marked: String,
}

/// The feedback for a candidate that Lean checked; `token_budget` bounds the error list (4 bytes
/// a token; the messages past it are counted, not shown).
pub fn feedback(doc: &Document, record: &VerifyRecord, token_budget: usize) -> Feedback {
    let code = doc.checked_source();
    let doc_index = LineIndex::new(&doc.text);
    let code_index = LineIndex::new(&code);
    // Each error as a range of `code` (or none, for one outside it), in order.
    let mut located: Vec<(Option<(usize, usize)>, &str)> = record
        .messages
        .iter()
        .filter(|m| m.severity == Severity::Error)
        .map(|m| {
            let start = doc.offset_in(&doc_index, m.region, m.start.line, m.start.column);
            let end = doc.offset_in(&doc_index, m.region, m.end.line, m.end.column);
            let range = doc.source_offset(start).map(|s| {
                let e = doc.source_offset(end).unwrap_or(s).max(s);
                (s, e.min(code.len()))
            });
            (range, m.text.as_str())
        })
        .collect();
    located.sort_by_key(|(r, _)| r.map_or(usize::MAX, |(s, _)| s));
    let budget = token_budget.saturating_mul(4);
    let mut errors = String::new();
    let mut shown = 0;
    for (range, text) in &located {
        let line = match range {
            Some((s, _)) => {
                let (l, c) = code_index.line_char_of_offset(*s);
                format!("line {}, column {c}: {}", l + 1, text.trim())
            }
            None => format!("(outside the proof) {}", text.trim()),
        };
        if !errors.is_empty() && errors.len() + line.len() + 1 > budget {
            break;
        }
        if !errors.is_empty() {
            errors.push('\n');
        }
        errors.push_str(&cut(&line, budget));
        shown += 1;
    }
    if shown < located.len() {
        errors.push_str(&format!("\n… and {} more errors", located.len() - shown));
    }
    if located.is_empty() {
        errors = record.reason.clone();
    }
    Feedback { marked: mark(&code, located.iter().filter_map(|(r, _)| *r)), code, errors }
}

/// `code` with `<error>`/`</error>` around each range (an empty range marks the point; ranges
/// that overlap an earlier one are merged into it).
fn mark(code: &str, ranges: impl Iterator<Item = (usize, usize)>) -> String {
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in ranges {
        let (s, e) = (floor(code, s), floor(code, e));
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = String::with_capacity(code.len() + 16 * merged.len());
    let mut at = 0;
    for (s, e) in merged {
        out.push_str(&code[at..s]);
        out.push_str("<error>");
        out.push_str(&code[s..e]);
        out.push_str("</error>");
        at = e;
    }
    out.push_str(&code[at..]);
    out
}

fn floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", &s[..floor(s, max)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verdict::{Message, Pos, Verdict};
    use crate::verify::{GateConfig, VerifyInput};

    fn doc() -> Document {
        let input = VerifyInput {
            name: "t".into(),
            header: "import Mathlib\n".into(),
            formal_statement: "theorem t (x : ℕ) : x + 0 = x :=".into(),
            proof: None,
            code: Some("import Mathlib\n\ntheorem t (x : ℕ) : x + 0 = x := by\n  simp\n  linarith\n".into()),
        };
        Document::build(&input, &GateConfig::default()).unwrap()
    }

    /// An error on the document text `needle`, positioned as the verifier records it.
    fn error_on(doc: &Document, needle: &str, text: &str) -> Message {
        let index = LineIndex::new(&doc.text);
        let start = doc.text.find(needle).unwrap();
        let (region, l, c) = doc.local_position(&index, start);
        let (el, ec) = doc.position_in(&index, region, start + needle.len());
        Message {
            severity: Severity::Error,
            region,
            start: Pos { line: l, column: c },
            end: Pos { line: el, column: ec },
            text: text.into(),
        }
    }

    fn record(messages: Vec<Message>) -> VerifyRecord {
        VerifyRecord {
            name: "t".into(),
            verdict: Verdict::Failed,
            reason: "Lean reports errors".into(),
            rejected_by: None,
            gates: vec![],
            messages,
            axioms: vec![],
            recheck: None,
            elapsed_ms: 0,
            lean_ms: 0,
            lean_version: String::new(),
        }
    }

    #[test]
    fn errors_are_located_in_the_checked_file_and_marked_in_place() {
        let d = doc();
        let f = feedback(&d, &record(vec![error_on(&d, "linarith", "linarith failed")]), 1000);
        assert_eq!(f.code, d.checked_source());
        let line = f.code[..f.code.find("linarith").unwrap()].matches('\n').count() + 1;
        assert_eq!(f.errors, format!("line {line}, column 2: linarith failed"));
        assert!(f.marked.contains("  simp\n  <error>linarith</error>\n"), "{}", f.marked);
    }

    #[test]
    fn errors_past_the_budget_are_counted_not_shown() {
        let d = doc();
        let many: Vec<Message> = (0..50).map(|i| error_on(&d, "simp", &format!("error number {i}"))).collect();
        let f = feedback(&d, &record(many), 20);
        assert!(f.errors.len() < 20 * 4 + 40, "{}", f.errors);
        assert!(f.errors.ends_with("more errors"), "{}", f.errors);
        assert_eq!(f.marked.matches("<error>").count(), 1);
    }

    #[test]
    fn a_failure_without_errors_shows_its_reason() {
        let d = doc();
        assert_eq!(feedback(&d, &record(vec![]), 100).errors, "Lean reports errors");
    }
}
