//! The Lean text inside dataset records: where a statement's `:=` is, proof stubs, docstrings,
//! `…_solution` abbreviations and the answer comments after them, renaming a declaration.

use super::*;

/// The end of the `:=` that closes the statement declared at byte `decl`: the first one outside
/// brackets that does not belong to a `let`/`have` in the statement itself.
pub(super) fn statement_assign_end(src: &str, decl: usize) -> Option<usize> {
    let toks = tokenize(src);
    let start = toks.iter().position(|t| t.span.start == decl)? + 2;
    let (mut depth, mut binders) = (0i32, 0usize);
    for t in toks.get(start..)? {
        match t.text(src) {
            "(" | "[" | "{" | "⦃" | "⟨" => depth += 1,
            ")" | "]" | "}" | "⦄" | "⟩" => depth -= 1,
            "let" | "letI" | "have" | "haveI" if depth == 0 => binders += 1,
            ":=" if depth == 0 && binders > 0 => binders -= 1,
            ":=" if depth == 0 => return Some(t.span.end),
            _ => {}
        }
    }
    None
}

/// Drops a trailing `by`, `sorry` or `by sorry`: prompts append their own ` by\n  sorry`.
pub(super) fn strip_proof_stub(s: &str) -> &str {
    let mut s = s.trim();
    if let Some(rest) = strip_word(s, "sorry") {
        s = rest.trim_end();
    }
    if let Some(rest) = strip_word(s, "by") {
        s = rest.trim_end();
    }
    s
}

/// `s` without a final `word`, when that word is not the tail of a longer identifier.
pub(super) fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_suffix(word)?;
    match rest.chars().next_back() {
        Some(c) if is_id_rest(c) || c == '.' => None,
        _ => Some(rest),
    }
}

/// The keyword of a non-theorem declaration in `src` (ProofNet has `def` problems), for errors.
pub(super) fn other_declaration(src: &str) -> Option<&'static str> {
    const KEYWORDS: [&str; 9] =
        ["def", "abbrev", "instance", "example", "structure", "inductive", "class", "opaque", "axiom"];
    tokenize(src).iter().find_map(|t| KEYWORDS.iter().find(|k| **k == t.text(src)).copied())
}

/// A docstring's text: without `/--`, `-/` and surrounding whitespace.
pub(super) fn plain_informal(s: &str) -> &str {
    let t = s.trim();
    match t.strip_prefix("/--").and_then(|x| x.strip_suffix("-/")) {
        Some(inner) => inner.trim(),
        None => t,
    }
}

/// Splits a header ending in a `/-- … -/` docstring into the header before it and its text.
pub(super) fn cut_trailing_docstring(header: &str) -> (&str, &str) {
    let t = header.trim_end();
    if let Some(open) = t.strip_suffix("-/").and_then(|b| b.rfind("/--")) {
        // Only when that docstring is one comment running to the end (not `/-- a -/ x -/`).
        if block_comment_len(&t[open..]) == t.len() - open {
            return (&header[..open], plain_informal(&t[open..]));
        }
    }
    (header, "")
}

/// The length of the `/- … -/` comment that `s` starts with, nesting as Lean does: one character
/// after `/-` is consumed before looking for `-/` (so `/--` and `/-!` open doc comments).
pub(super) fn block_comment_len(s: &str) -> usize {
    let mut chars = s.char_indices().skip(2);
    let mut pos = chars.next().map_or(s.len(), |(i, c)| i + c.len_utf8());
    let mut depth = 1usize;
    while depth > 0 && pos < s.len() {
        let rest = &s[pos..];
        if rest.starts_with("/-") {
            depth += 1;
            pos += 2;
        } else if rest.starts_with("-/") {
            depth -= 1;
            pos += 2;
        } else {
            pos += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    pos.min(s.len())
}

pub(super) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_id_first) && chars.all(is_id_rest)
}

/// `theorem` renamed to `name` (its last declaration); unchanged when none is found, which the
/// later checks report.
pub(super) fn rename_declaration(theorem: &str, name: &str) -> String {
    let Some((decl, _, _)) = statement_span(theorem, None) else {
        return theorem.to_string();
    };
    let toks = tokenize(theorem);
    match toks.iter().position(|t| t.span.start == decl).and_then(|k| toks.get(k + 1)) {
        Some(old) => format!("{}{name}{}", &theorem[..old.span.start], &theorem[old.span.end..]),
        None => theorem.to_string(),
    }
}

/// The index of each `abbrev NAME_solution` keyword token (after `noncomputable` or not).
pub(super) fn solution_abbrevs(src: &str, toks: &[Token]) -> Vec<usize> {
    toks.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].text(src) == "abbrev" && w[1].text(src).ends_with("_solution"))
        .map(|(i, _)| i)
        .collect()
}

/// The name of an `abbrev …_solution` in `header` whose value is not `sorry`, if any.
pub(super) fn solution_with_value(header: &str) -> Option<String> {
    let toks = tokenize(header);
    for i in solution_abbrevs(header, &toks) {
        let mut depth = 0i32;
        for (j, t) in toks.iter().enumerate().skip(i + 2) {
            match t.text(header) {
                "(" | "[" | "{" | "⦃" | "⟨" => depth += 1,
                ")" | "]" | "}" | "⦄" | "⟩" => depth -= 1,
                ":=" if depth == 0 => {
                    if toks.get(j + 1).map(|v| v.text(header)) != Some("sorry") {
                        return Some(toks[i + 1].text(header).to_string());
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    None
}

/// The header with every comment from the first `abbrev …_solution` on removed: `--` lines,
/// `/- … -/` blocks, and comments trailing a line. The answer is conventionally the comment right
/// after the abbrev, but cutting every later comment also covers multi-line and displaced ones,
/// and comments mean nothing to Lean, so nothing the proof needs is lost.
pub fn strip_answer_comments(header: &str) -> String {
    let toks = tokenize(header);
    let Some(&first) = solution_abbrevs(header, &toks).first() else {
        return header.to_string();
    };
    let mut out = header[..toks[first].span.start].to_string();
    for (j, t) in toks.iter().enumerate().skip(first) {
        out.push_str(t.text(header));
        let gap_end = toks.get(j + 1).map_or(header.len(), |n| n.span.start);
        out.push_str(&drop_comments(&header[t.span.end..gap_end]));
    }
    out
}

/// `gap`, which holds only whitespace and comments (what the lexer skips between two tokens),
/// without its comments. A line left blank by a removed comment goes; the first line (the end of
/// the previous token's line) keeps its newline, and two tokens on one line stay apart.
pub(super) fn drop_comments(gap: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    let mut cut = false;
    let mut first = true;
    let mut rest = gap;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("--") {
            cut = true;
            rest = &rest[rest.find('\n').unwrap_or(rest.len())..];
            continue;
        }
        if rest.starts_with("/-") {
            cut = true;
            rest = &rest[block_comment_len(rest)..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
        if c != '\n' {
            line.push(c);
            continue;
        }
        if !(cut && !first && line.trim().is_empty()) {
            out.push_str(if cut { line.trim_end() } else { &line });
            out.push('\n');
        }
        line.clear();
        cut = false;
        first = false;
    }
    match (cut, first) {
        (false, _) => out.push_str(&line),
        (true, true) => out.push(' '),
        // The next token then starts its line.
        (true, false) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_stub_after_the_assign_is_dropped() {
        assert_eq!(strip_proof_stub("theorem t : True := by\n"), "theorem t : True :=");
        assert_eq!(strip_proof_stub("theorem t : True:= by sorry"), "theorem t : True:=");
        assert_eq!(strip_proof_stub("theorem t : True :=\nsorry\n"), "theorem t : True :=");
        assert_eq!(strip_proof_stub("  theorem t : True :=  "), "theorem t : True :=");
    }

    #[test]
    fn a_word_ending_in_by_is_not_a_stub() {
        assert_eq!(strip_proof_stub("theorem t : P := hby"), "theorem t : P := hby");
        assert_eq!(strip_proof_stub("theorem t : P := x.sorry"), "theorem t : P := x.sorry");
    }

    #[test]
    fn a_let_in_the_statement_does_not_end_it() {
        let s = "theorem t (n : ℕ) : let m := n + 1\n  m > n :=";
        assert_eq!(statement_assign_end(s, 0), Some(s.len()));
        let s = "theorem t (x : ℕ := 1) : have h : x = x := rfl; True :=";
        assert_eq!(statement_assign_end(s, 0), Some(s.len()));
        let s = "theorem t : True := trivial :=";
        assert_eq!(statement_assign_end(s, 0), Some(s.find(":=").unwrap() + 2));
    }

    #[test]
    fn docstring_delimiters_are_stripped_from_informal_text() {
        assert_eq!(plain_informal("/-- Show that 1 = 1.-/\n"), "Show that 1 = 1.");
        assert_eq!(plain_informal("/--\nLines.\n-/"), "Lines.");
        assert_eq!(plain_informal("  plain  "), "plain");
    }

    #[test]
    fn a_trailing_docstring_is_cut_off_a_header() {
        let (h, doc) = cut_trailing_docstring("import Mathlib\n\n/-- Find x. -/\n");
        assert_eq!((h, doc), ("import Mathlib\n\n", "Find x."));
        let kept = "import Mathlib\n/-- d -/\ndef f := 1\n";
        assert_eq!(cut_trailing_docstring(kept), (kept, ""));
        let plain_comment = "import Mathlib\n/- not a docstring -/\n";
        assert_eq!(cut_trailing_docstring(plain_comment), (plain_comment, ""));
    }

    #[test]
    fn the_answer_line_after_a_solution_abbrev_is_removed() {
        let h = "import Mathlib\n\nabbrev p_solution : ℕ := sorry\n-- 2\n";
        assert_eq!(strip_answer_comments(h), "import Mathlib\n\nabbrev p_solution : ℕ := sorry\n");
    }

    #[test]
    fn block_and_trailing_answer_comments_are_removed_and_code_after_them_kept() {
        let h = "import Mathlib\nnoncomputable abbrev p_solution : ℝ := sorry -- 1/2\n/- the answer:\n  1/2 -/\n\n\
                 def f : ℕ := 1 /- x -/ + 2\n";
        assert_eq!(
            strip_answer_comments(h),
            "import Mathlib\nnoncomputable abbrev p_solution : ℝ := sorry\n\ndef f : ℕ := 1 + 2\n"
        );
    }

    #[test]
    fn comments_before_the_solution_abbrev_and_headers_without_one_are_kept() {
        let h = "import Mathlib\n-- a note\nopen Real\n";
        assert_eq!(strip_answer_comments(h), h);
        let h = "import Mathlib\n-- a note\nabbrev q_solution : ℕ := sorry\n-- 3\n";
        assert_eq!(strip_answer_comments(h), "import Mathlib\n-- a note\nabbrev q_solution : ℕ := sorry\n");
    }

    #[test]
    fn a_solution_abbrev_with_a_value_is_caught() {
        assert_eq!(solution_with_value("abbrev p_solution : ℕ := 2\n"), Some("p_solution".into()));
        assert_eq!(solution_with_value("abbrev p_solution : Set (ℕ := 1) := sorry\n"), None);
        assert_eq!(solution_with_value("import Mathlib\n"), None);
    }

    #[test]
    fn a_declaration_is_renamed_in_place() {
        let t = "\n/-- doc -/\ntheorem formal_statement (x : ℕ) : x = x :=";
        assert_eq!(rename_declaration(t, "calculus__p1"), "\n/-- doc -/\ntheorem calculus__p1 (x : ℕ) : x = x :=");
    }
}
