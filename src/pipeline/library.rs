//! The run's lemma library: every statement the run has proved (subgoal lemmas and theorems),
//! offered to later prover prompts as facts the answer may use by name. This module owns the
//! entries, their retrieval (by similarity of normalized statements, within a token budget),
//! the prompt's text for them, and putting the used ones into a candidate as helper theorems
//! before its statement (where the verifier's gates check them like any helper).
//!
//! An entry's `decls` is the verified file's text after the header: its own helpers (entries it
//! used, or helpers its prover wrote), then the lemma itself, so a candidate that uses it states
//! everything it rests on.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::lean::lexer::{tokenize, Token, TokenKind};
use crate::lean::source::header_end;

/// Which proved lemmas a prompt is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LibraryScope {
    /// None.
    Off,
    /// Those proved for the same problem.
    #[default]
    Problem,
    /// Those proved anywhere in the run.
    Run,
}

/// One proved statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub problem: String,
    pub name: String,
    /// `theorem NAME … :=`.
    pub statement: String,
    /// The declarations to state before a theorem that uses it, in order (its helpers, then
    /// itself).
    pub decls: String,
    features: BTreeMap<String, u32>,
}

/// The library of one run.
#[derive(Debug, Default)]
pub struct Library {
    entries: Mutex<Vec<Entry>>,
}

impl Library {
    /// Adds a proved statement; `proof` is its verified file (header included).
    pub fn add(&self, problem: &str, name: &str, statement: &str, proof: &str) {
        let decls = proof[header_end(proof)..].trim().to_string();
        // A helper's name must be plain (the gate refuses others), so only those are offered.
        if decls.is_empty() || name.contains(['.', '«', '»']) {
            return;
        }
        let entry = Entry {
            problem: problem.to_string(),
            name: name.to_string(),
            statement: statement.trim().to_string(),
            decls,
            features: features(statement),
        };
        if let Ok(mut es) = self.entries.lock() {
            if !es.iter().any(|e| e.name == entry.name) {
                es.push(entry);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries to offer a prompt for `statement` (named `name`, of `problem`): the most
    /// similar first, as many as fit in `token_budget` (statements counted at 4 bytes a token),
    /// never the statement's own name.
    pub fn retrieve(
        &self,
        scope: LibraryScope,
        problem: &str,
        name: &str,
        statement: &str,
        token_budget: usize,
    ) -> Vec<Entry> {
        if scope == LibraryScope::Off || token_budget == 0 {
            return vec![];
        }
        let Ok(es) = self.entries.lock() else { return vec![] };
        let query = features(statement);
        let mut scored: Vec<(f64, usize)> = es
            .iter()
            .enumerate()
            .filter(|(_, e)| e.name != name && (scope == LibraryScope::Run || e.problem == problem))
            .map(|(i, e)| (similarity(&query, &e.features), i))
            .collect();
        // Most similar first; among equals, the earliest proved.
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut out = Vec::new();
        let mut used = 0;
        for (_, i) in scored {
            let cost = es[i].statement.len().div_ceil(4);
            if used + cost > token_budget {
                continue;
            }
            used += cost;
            out.push(es[i].clone());
        }
        out
    }
}

/// The prompt's text for offered entries: their statements, one after another.
pub fn prompt_text(entries: &[Entry]) -> String {
    entries.iter().map(|e| e.statement.trim_end_matches(":=").trim_end().to_string()).collect::<Vec<_>>().join("\n\n")
}

/// Puts the offered entries the candidate uses (names it mentions) before its statement: the
/// model's whole file `code` gets them right after its imports, less any declaration of its own
/// under an entry's name (a restated library lemma, often with `sorry`). Returns `None` when the
/// candidate uses none.
pub fn with_entries(code: &str, offered: &[Entry], main: &str) -> Option<String> {
    let toks = tokenize(code);
    let mentioned: HashSet<&str> = toks.iter().filter(|t| t.kind == TokenKind::Ident).map(|t| t.text(code)).collect();
    let used: Vec<&Entry> = offered.iter().filter(|e| e.name != main && mentioned.contains(e.name.as_str())).collect();
    if used.is_empty() {
        return None;
    }
    let names: HashSet<&str> = used.iter().map(|e| e.name.as_str()).collect();
    let start = header_end(code);
    // The model's own declarations under an entry's name are dropped (the verified one stands).
    let mut body = String::new();
    let mut at = start;
    for (range, name) in declarations(code, &toks) {
        if names.contains(name.as_str()) && name != main {
            body.push_str(&code[at..range.start]);
            at = range.end;
        }
    }
    body.push_str(&code[at..]);
    let mut decls = String::new();
    let mut seen: HashSet<String> = HashSet::new();
    for e in used {
        for (range, name) in declarations(&e.decls, &tokenize(&e.decls)) {
            // An entry used by two entries is stated once.
            if seen.insert(name) {
                decls.push_str(e.decls[range].trim_end());
                decls.push_str("\n\n");
            }
        }
    }
    let mut header = code[..start].to_string();
    if !header.is_empty() && !header.ends_with('\n') {
        header.push('\n');
    }
    Some(format!("{header}{decls}{}", body.trim_start_matches('\n')))
}

/// The line-initial `theorem`/`lemma` declarations of `src` after its header: each from its
/// keyword to the next line-initial command (or the end), with its name.
pub fn declarations(src: &str, toks: &[Token]) -> Vec<(std::ops::Range<usize>, String)> {
    const COMMANDS: &[&str] = &[
        "theorem",
        "lemma",
        "open",
        "set_option",
        "universe",
        "namespace",
        "section",
        "end",
        "def",
        "noncomputable",
        "example",
        "variable",
    ];
    let at_line_start = |t: &Token| src[..t.span.start].rsplit('\n').next().is_some_and(|l| l.trim().is_empty());
    // `open … in` and `set_option … in` belong to the proof they precede.
    let scoped = |t: &Token| {
        let rest = &src[t.span.start..];
        let line = rest.split('\n').next().unwrap_or("");
        matches!(t.text(src), "open" | "set_option") && line.trim_end().ends_with(" in")
    };
    let starts: Vec<usize> = (0..toks.len())
        .filter(|&i| {
            let t = &toks[i];
            (t.kind == TokenKind::Ident && COMMANDS.contains(&t.text(src)) || t.kind == TokenKind::HashCommand)
                && at_line_start(t)
                && !scoped(t)
        })
        .collect();
    // A docstring right before a keyword belongs to its declaration.
    let begin = |j: usize| {
        let gap = if j > 0 { toks[j - 1].span.end } else { 0 };
        src[gap..toks[j].span.start].find("/--").map_or(toks[j].span.start, |k| gap + k)
    };
    let mut out = Vec::new();
    for (n, &i) in starts.iter().enumerate() {
        if !matches!(toks[i].text(src), "theorem" | "lemma") {
            continue;
        }
        let Some(name) = toks.get(i + 1).filter(|t| t.kind == TokenKind::Ident) else { continue };
        let end = starts.get(n + 1).map_or(src.len(), |&j| begin(j));
        out.push((begin(i)..end, name.text(src).to_string()));
    }
    out
}

/// A statement's tokens without its declared name and binder names: identifiers and symbols,
/// counted.
fn features(statement: &str) -> BTreeMap<String, u32> {
    let toks = tokenize(statement);
    let mut out = BTreeMap::new();
    let mut skip_name = false;
    for t in &toks {
        let text = t.text(statement);
        if skip_name {
            skip_name = false;
            continue;
        }
        match t.kind {
            TokenKind::Ident if matches!(text, "theorem" | "lemma") => skip_name = true,
            _ if text == ":=" => {}
            _ => *out.entry(text.to_string()).or_insert(0) += 1,
        }
    }
    out
}

/// Weighted Jaccard similarity of two token multisets.
fn similarity(a: &BTreeMap<String, u32>, b: &BTreeMap<String, u32>) -> f64 {
    let (mut inter, mut union) = (0u32, 0u32);
    for (k, &x) in a {
        let y = b.get(k).copied().unwrap_or(0);
        inter += x.min(y);
        union += x.max(y);
    }
    union += b.iter().filter(|(k, _)| !a.contains_key(*k)).map(|(_, &y)| y).sum::<u32>();
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "import Mathlib\n";

    fn library() -> Library {
        let lib = Library::default();
        lib.add(
            "p",
            "p_h1",
            "theorem p_h1 (x : ℝ) (h : 0 < x) :\n    0 < x ^ 2 :=",
            &format!("{HEADER}theorem p_h1 (x : ℝ) (h : 0 < x) :\n    0 < x ^ 2 := by positivity\n"),
        );
        lib.add(
            "p",
            "p_h2",
            "theorem p_h2 (a b : ℕ) :\n    a + b = b + a :=",
            &format!("{HEADER}theorem p_h2 (a b : ℕ) :\n    a + b = b + a := by omega\n"),
        );
        lib.add(
            "q",
            "q_h1",
            "theorem q_h1 (y : ℝ) (h : 0 < y) :\n    0 < y ^ 2 :=",
            &format!("{HEADER}theorem q_h1 (y : ℝ) (h : 0 < y) :\n    0 < y ^ 2 := by positivity\n"),
        );
        lib
    }

    #[test]
    fn retrieval_offers_the_most_similar_statements_of_the_same_problem_first() {
        let got = library().retrieve(
            LibraryScope::Problem,
            "p",
            "p_h3",
            "theorem p_h3 (z : ℝ) (hz : 0 < z) : 0 < z ^ 2 * 3 :=",
            1000,
        );
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["p_h1", "p_h2"]);
        let run = library().retrieve(
            LibraryScope::Run,
            "p",
            "p_h3",
            "theorem p_h3 (z : ℝ) (hz : 0 < z) : 0 < z ^ 2 :=",
            1000,
        );
        assert_eq!(run.len(), 3);
        assert!(library().retrieve(LibraryScope::Off, "p", "x", "theorem x : True :=", 1000).is_empty());
    }

    #[test]
    fn retrieval_stays_within_the_token_budget_and_never_offers_the_statement_itself() {
        let lib = library();
        let one =
            lib.retrieve(LibraryScope::Problem, "p", "p_h9", "theorem p_h9 (x : ℝ) (h : 0 < x) : 0 < x ^ 2 :=", 14);
        assert_eq!(one.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["p_h1"]);
        let own =
            lib.retrieve(LibraryScope::Problem, "p", "p_h1", "theorem p_h1 (x : ℝ) (h : 0 < x) : 0 < x ^ 2 :=", 1000);
        assert!(own.iter().all(|e| e.name != "p_h1"));
    }

    #[test]
    fn a_candidate_using_an_entry_states_it_before_its_theorem_in_place_of_its_own_copy() {
        let lib = library();
        let offered =
            lib.retrieve(LibraryScope::Problem, "p", "t", "theorem t (x : ℝ) (h : 0 < x) : 0 < x ^ 2 + 1 :=", 1000);
        let code = "import Mathlib\n\ntheorem p_h1 (x : ℝ) (h : 0 < x) : 0 < x ^ 2 := by sorry\n\ntheorem t (x : ℝ) (h : 0 < x) : 0 < x ^ 2 + 1 := by\n  have := p_h1 x h\n  positivity\n";
        let out = with_entries(code, &offered, "t").unwrap();
        assert_eq!(
            out,
            "import Mathlib\ntheorem p_h1 (x : ℝ) (h : 0 < x) :\n    0 < x ^ 2 := by positivity\n\ntheorem t (x : ℝ) (h : 0 < x) : 0 < x ^ 2 + 1 := by\n  have := p_h1 x h\n  positivity\n"
        );
        assert!(with_entries("import Mathlib\ntheorem t : True := trivial\n", &offered, "t").is_none());
    }

    #[test]
    fn an_entry_used_through_two_others_is_stated_once() {
        let lib = Library::default();
        let base = "theorem b (n : ℕ) : n = n := rfl";
        lib.add("p", "b", "theorem b (n : ℕ) : n = n :=", &format!("{HEADER}{base}\n"));
        lib.add("p", "c1", "theorem c1 : 1 = 1 :=", &format!("{HEADER}{base}\n\ntheorem c1 : 1 = 1 := b 1\n"));
        lib.add("p", "c2", "theorem c2 : 2 = 2 :=", &format!("{HEADER}{base}\n\ntheorem c2 : 2 = 2 := b 2\n"));
        let offered = lib.retrieve(LibraryScope::Problem, "p", "t", "theorem t : 1 = 1 ∧ 2 = 2 :=", 1000);
        let out = with_entries("import Mathlib\ntheorem t : 1 = 1 ∧ 2 = 2 := ⟨c1, c2⟩\n", &offered, "t").unwrap();
        assert_eq!(out.matches("theorem b ").count(), 1, "{out}");
        assert!(out.find("theorem b ").unwrap() < out.find("theorem c1").unwrap());
        assert!(out.find("theorem c2").unwrap() < out.find("theorem t ").unwrap());
    }
}
