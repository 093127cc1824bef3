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
use crate::lean::source::{header_end, normalize_header};
use crate::verify::candidate::copied_preamble;

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
    /// The normalized header it was proved under: only statements under the same header are
    /// offered (elsewhere its names may mean something else).
    pub header_key: String,
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
    /// Adds a proved statement under `header`; `proof` is its verified file (header included).
    pub fn add(&self, problem: &str, header: &str, name: &str, statement: &str, proof: &str) {
        let decls = proof[header_end(proof)..].trim().to_string();
        // A helper's name must be plain (the gate refuses others), so only those are offered.
        if decls.is_empty() || name.contains(['.', '«', '»']) {
            return;
        }
        let entry = Entry {
            problem: problem.to_string(),
            header_key: normalize_header(header),
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

    /// The entries to offer a prompt for `statement` (named `name`, of `problem`, under
    /// `header`): the most similar first, as many as fit in `token_budget` (statements counted at
    /// 4 bytes a token), never the statement's own name, only those proved under the same header.
    pub fn retrieve(
        &self,
        scope: LibraryScope,
        problem: &str,
        header: &str,
        name: &str,
        statement: &str,
        token_budget: usize,
    ) -> Vec<Entry> {
        if scope == LibraryScope::Off || token_budget == 0 {
            return vec![];
        }
        let Ok(es) = self.entries.lock() else { return vec![] };
        let query = features(statement);
        let key = normalize_header(header);
        let mut scored: Vec<(f64, usize)> = es
            .iter()
            .enumerate()
            .filter(|(_, e)| e.name != name && e.header_key == key)
            .filter(|(_, e)| scope == LibraryScope::Run || e.problem == problem)
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
/// model's whole file `code` gets their declarations (each entry's helpers, then the entry; each
/// name once) after its imports and its copy of the rest of `header`, less any declaration of its
/// own under one of those names (a restated library lemma, often with `sorry`; a helper a repair
/// prompt showed it). Returns `None` when the candidate uses none.
pub fn with_entries(code: &str, offered: &[Entry], main: &str, header: &str) -> Option<String> {
    let toks = tokenize(code);
    let mentioned: HashSet<&str> = toks.iter().filter(|t| t.kind == TokenKind::Ident).map(|t| t.text(code)).collect();
    let used: Vec<&Entry> = offered.iter().filter(|e| e.name != main && mentioned.contains(e.name.as_str())).collect();
    if used.is_empty() {
        return None;
    }
    // The declarations to state, each name once; an entry that would state a name another one
    // already states differently is left out (its user then fails to check, nothing worse).
    let mut decls = String::new();
    let mut stated: Vec<(String, String)> = Vec::new();
    for e in used {
        let own: Vec<(String, String)> = declarations(&e.decls, &tokenize(&e.decls))
            .into_iter()
            .map(|(r, n)| (n, e.decls[r].trim_end().to_string()))
            .collect();
        let clash = own.iter().any(|(n, t)| stated.iter().any(|(m, u)| m == n && u != t));
        if clash || own.iter().any(|(n, _)| n == main) {
            continue;
        }
        for (n, t) in own {
            if !stated.iter().any(|(m, _)| *m == n) {
                decls.push_str(&t);
                decls.push_str("\n\n");
                stated.push((n, t));
            }
        }
    }
    if stated.is_empty() {
        return None;
    }
    let imports = header_end(code);
    let start = imports + copied_preamble(&code[imports..], header);
    // The model's own declarations under a stated name are dropped (the verified one stands).
    let mut body = String::new();
    let mut at = start;
    for (range, name) in declarations(code, &toks) {
        if range.start >= start && name != main && stated.iter().any(|(n, _)| *n == name) {
            body.push_str(&code[at..range.start]);
            at = range.end;
        }
    }
    body.push_str(&code[at..]);
    let mut head = code[..start].to_string();
    if !head.is_empty() && !head.ends_with('\n') {
        head.push('\n');
    }
    Some(format!("{head}{decls}{}", body.trim_start_matches('\n')))
}

/// The `theorem`/`lemma` declarations of `src` that start a line at column 0, each with what
/// scopes it on its line (`open … in`, `set_option … in`) and the doc comment right above it,
/// to the next column-0 command (or the end), with its name. An `open … in` or `set_option … in`
/// that does not scope a declaration belongs to the proof it precedes.
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
        "abbrev",
        "instance",
        "private",
        "protected",
    ];
    let column0 = |t: &Token| t.span.start == 0 || src.as_bytes()[t.span.start - 1] == b'\n';
    // What a column-0 command is: a declaration (with the index of its name), another command,
    // or part of a proof (a scoping `… in` before something that is not a declaration).
    enum Start {
        Decl(usize),
        Other,
        Proof,
    }
    let classify = |i: usize| -> Start {
        let mut j = i;
        loop {
            match toks[j].text(src) {
                "theorem" | "lemma" => {
                    return match toks.get(j + 1) {
                        Some(t) if t.kind == TokenKind::Ident => Start::Decl(j + 1),
                        _ => Start::Other,
                    }
                }
                "open" | "set_option" => {
                    // To this command's `in`, if it has one before the next column-0 token.
                    let mut k = j + 1;
                    while k < toks.len() && toks[k].text(src) != "in" && !column0(&toks[k]) {
                        k += 1;
                    }
                    if k >= toks.len() || toks[k].text(src) != "in" {
                        return Start::Other;
                    }
                    if k + 1 >= toks.len() {
                        return Start::Proof;
                    }
                    j = k + 1;
                    if !matches!(toks[j].text(src), "theorem" | "lemma" | "open" | "set_option") {
                        return Start::Proof;
                    }
                }
                _ => return Start::Other,
            }
        }
    };
    // A doc comment alone on the lines right above a command belongs to it.
    let begin = |j: usize| {
        let gap_start = if j > 0 { toks[j - 1].span.end } else { 0 };
        let gap = &src[gap_start..toks[j].span.start];
        let Some(k) = gap.rfind("/--") else { return toks[j].span.start };
        let line_start = gap[..k].rsplit('\n').next().is_some_and(|l| l.trim().is_empty());
        let doc = &gap[k..];
        let closed = doc.find("-/").is_some_and(|e| doc[e + 2..].trim().is_empty());
        if line_start && closed {
            gap_start + k
        } else {
            toks[j].span.start
        }
    };
    let mut starts: Vec<(usize, Option<usize>)> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        let command = t.kind == TokenKind::Ident && COMMANDS.contains(&t.text(src)) || t.kind == TokenKind::HashCommand;
        if !command || !column0(t) {
            continue;
        }
        match classify(i) {
            Start::Decl(name) => starts.push((i, Some(name))),
            Start::Other => starts.push((i, None)),
            Start::Proof => {}
        }
    }
    let mut out = Vec::new();
    for (n, &(i, name)) in starts.iter().enumerate() {
        let Some(name) = name else { continue };
        let end = starts.get(n + 1).map_or(src.len(), |&(j, _)| begin(j));
        out.push((begin(i)..end, toks[name].text(src).to_string()));
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
        let add = |problem: &str, name: &str, stmt: &str, proof: &str| {
            lib.add(problem, HEADER, name, stmt, &format!("{HEADER}{} {proof}\n", stmt));
        };
        add("p", "p_h1", "theorem p_h1 (x : ℝ) (h : 0 < x) :\n    0 < x ^ 2 :=", "by positivity");
        add("p", "p_h2", "theorem p_h2 (a b : ℕ) :\n    a + b = b + a :=", "by omega");
        add("q", "q_h1", "theorem q_h1 (y : ℝ) (h : 0 < y) :\n    0 < y ^ 2 :=", "by positivity");
        lib
    }

    fn names(es: &[Entry]) -> Vec<&str> {
        es.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn retrieval_offers_the_most_similar_statements_of_the_same_problem_first() {
        let lib = library();
        let stmt = "theorem p_h3 (z : ℝ) (hz : 0 < z) : 0 < z ^ 2 * 3 :=";
        assert_eq!(names(&lib.retrieve(LibraryScope::Problem, "p", HEADER, "p_h3", stmt, 1000)), ["p_h1", "p_h2"]);
        assert_eq!(lib.retrieve(LibraryScope::Run, "p", HEADER, "p_h3", stmt, 1000).len(), 3);
        assert!(lib.retrieve(LibraryScope::Off, "p", HEADER, "x", stmt, 1000).is_empty());
    }

    #[test]
    fn retrieval_offers_only_statements_proved_under_the_same_header() {
        let other = "import Mathlib\nabbrev x : ℕ := 3\n";
        assert!(library().retrieve(LibraryScope::Run, "p", other, "t", "theorem t : 0 < x ^ 2 :=", 1000).is_empty());
    }

    #[test]
    fn retrieval_stays_within_the_token_budget_and_never_offers_the_statement_itself() {
        let lib = library();
        let stmt = "theorem p_h9 (x : ℝ) (h : 0 < x) : 0 < x ^ 2 :=";
        assert_eq!(names(&lib.retrieve(LibraryScope::Problem, "p", HEADER, "p_h9", stmt, 14)), ["p_h1"]);
        let own = lib.retrieve(LibraryScope::Problem, "p", HEADER, "p_h1", stmt, 1000);
        assert!(own.iter().all(|e| e.name != "p_h1"));
    }

    #[test]
    fn a_candidate_using_an_entry_states_it_before_its_theorem_in_place_of_its_own_copy() {
        let lib = library();
        let offered = lib.retrieve(
            LibraryScope::Problem,
            "p",
            HEADER,
            "t",
            "theorem t (x : ℝ) (h : 0 < x) : 0 < x ^ 2 + 1 :=",
            1000,
        );
        let code = "import Mathlib\n\ntheorem p_h1 (x : ℝ) (h : 0 < x) : 0 < x ^ 2 := by sorry\n\ntheorem t (x : ℝ) (h : 0 < x) : 0 < x ^ 2 + 1 := by\n  have := p_h1 x h\n  positivity\n";
        let out = with_entries(code, &offered, "t", HEADER).unwrap();
        assert_eq!(
            out,
            "import Mathlib\ntheorem p_h1 (x : ℝ) (h : 0 < x) :\n    0 < x ^ 2 := by positivity\n\ntheorem t (x : ℝ) (h : 0 < x) : 0 < x ^ 2 + 1 := by\n  have := p_h1 x h\n  positivity\n"
        );
        assert!(with_entries("import Mathlib\ntheorem t : True := trivial\n", &offered, "t", HEADER).is_none());
    }

    #[test]
    fn entries_go_after_the_candidates_copy_of_the_whole_header() {
        let header = "import Mathlib\nabbrev sol : ℕ := 3\n";
        let lib = Library::default();
        lib.add("p", header, "p_h1", "theorem p_h1 : sol = 3 :=", &format!("{header}theorem p_h1 : sol = 3 := rfl\n"));
        let offered = lib.retrieve(LibraryScope::Problem, "p", header, "t", "theorem t : sol = 3 :=", 1000);
        let code = format!("{header}theorem t : sol = 3 := by\n  have := p_h1\n  rfl\n");
        let out = with_entries(&code, &offered, "t", header).unwrap();
        assert!(out.starts_with(&format!("{header}theorem p_h1 : sol = 3 := rfl\n\ntheorem t")), "{out}");
    }

    #[test]
    fn an_entry_used_through_two_others_is_stated_once_and_the_models_copy_of_a_helper_dropped() {
        let lib = Library::default();
        let base = "theorem b (n : ℕ) : n = n := rfl";
        lib.add("p", HEADER, "c1", "theorem c1 : 1 = 1 :=", &format!("{HEADER}{base}\n\ntheorem c1 : 1 = 1 := b 1\n"));
        lib.add("p", HEADER, "c2", "theorem c2 : 2 = 2 :=", &format!("{HEADER}{base}\n\ntheorem c2 : 2 = 2 := b 2\n"));
        let offered = lib.retrieve(LibraryScope::Problem, "p", HEADER, "t", "theorem t : 1 = 1 ∧ 2 = 2 :=", 1000);
        // The answer repeats `b`, a helper a repair prompt showed it.
        let code = format!("import Mathlib\n{base}\n\ntheorem t : 1 = 1 ∧ 2 = 2 := ⟨c1, c2⟩\n");
        let out = with_entries(&code, &offered, "t", HEADER).unwrap();
        assert_eq!(out.matches("theorem b ").count(), 1, "{out}");
        assert!(out.find("theorem b ").unwrap() < out.find("theorem c1").unwrap());
        assert!(out.find("theorem c2").unwrap() < out.find("theorem t ").unwrap());
    }

    #[test]
    fn declarations_keep_their_scoping_prefix_doc_comment_and_indented_proof_lines() {
        let src = "import M\n/-- A helper. -/\nopen Real in theorem aux (x : ℝ) : x = x := by\n  set_option maxRecDepth 100 in\n  rfl\n-- see /-- not a doc -/\ntheorem main : True := by\n  open Nat in\n  trivial\nopen Real\ntheorem last : True := trivial\n";
        let got: Vec<(String, &str)> =
            declarations(src, &tokenize(src)).into_iter().map(|(r, n)| (n, &src[r])).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(got[0].0, "aux");
        assert!(
            got[0].1.starts_with("/-- A helper. -/\nopen Real in theorem aux") && got[0].1.contains("  rfl\n"),
            "{:?}",
            got[0].1
        );
        assert_eq!(got[1].0, "main");
        assert!(got[1].1.starts_with("theorem main") && got[1].1.ends_with("  trivial\n"), "{:?}", got[1].1);
        assert_eq!((got[2].0.as_str(), got[2].1), ("last", "theorem last : True := trivial\n"));
    }
}
