//! Facts about Lean source text read off its tokens: where the import header ends and which
//! theorems a file declares. Text-only; nothing here runs Lean.

use super::lexer::{tokenize, TokenKind};

/// Byte offset where the module header (`module`, `prelude`, `import …` lines) ends: everything
/// before it is what Lean re-imports when it changes; everything after is ordinary commands.
pub fn header_end(src: &str) -> usize {
    let toks = tokenize(src);
    let text = |i: usize| toks.get(i).map(|t| t.text(src));
    let mut end = 0;
    let mut i = 0;
    if matches!(text(0), Some("module")) {
        end = toks[0].span.end;
        i = 1;
    }
    if matches!(text(i), Some("prelude")) {
        end = toks[i].span.end;
        i += 1;
    }
    // Lean's grammar: `[public] [meta] import [all] MODULE`, one module per `import`.
    loop {
        let mut j = i;
        if matches!(text(j), Some("public" | "private")) {
            j += 1;
        }
        if matches!(text(j), Some("meta")) {
            j += 1;
        }
        if text(j) != Some("import") {
            break;
        }
        j += 1;
        if matches!(text(j), Some("all")) {
            j += 1;
        }
        match toks.get(j) {
            Some(m) if m.kind == TokenKind::Ident => {
                end = m.span.end;
                i = j + 1;
            }
            _ => break,
        }
    }
    // Include the rest of the header's last line when nothing else is on it.
    match src[end..].find('\n') {
        Some(n) if src[end..end + n].trim().is_empty() => end + n + 1,
        _ => end,
    }
}

/// The import header of `src`, whitespace-normalised, used as the key for reusing a worker.
pub fn header_key(src: &str) -> String {
    normalize_header(&src[..header_end(src)])
}

/// The key of an import header already cut out of its file (see `header_end`).
pub fn normalize_header(header: &str) -> String {
    header.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Where the theorem or lemma `name` (or, with `None`, the last one) is declared: the byte offset
/// of its `theorem`/`lemma` keyword, the offset just past its statement's `:=` (the first `:=`
/// outside brackets, so a binder default `(x : T := d)` stays in the statement), and its name.
pub fn statement_span(src: &str, name: Option<&str>) -> Option<(usize, usize, String)> {
    let toks = tokenize(src);
    let decl = toks
        .windows(2)
        .enumerate()
        .filter(|(_, w)| matches!(w[0].text(src), "theorem" | "lemma") && w[1].kind == TokenKind::Ident)
        .filter(|(_, w)| name.is_none_or(|n| w[1].text(src) == n))
        .map(|(i, _)| i)
        .next_back()?;
    let mut depth = 0i32;
    // A `let x := v; …` or `have h : p := e; …` inside the statement owns the next `:=`.
    let mut owed = 0usize;
    for t in &toks[decl + 2..] {
        match t.text(src) {
            "(" | "[" | "{" | "⦃" | "⟨" => depth += 1,
            ")" | "]" | "}" | "⦄" | "⟩" => depth -= 1,
            "let" | "letI" | "have" | "haveI" if depth == 0 => owed += 1,
            ":=" if depth == 0 && owed > 0 => owed -= 1,
            ":=" if depth == 0 => {
                return Some((toks[decl].span.start, t.span.end, toks[decl + 1].text(src).to_string()))
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod statement_tests {
    use super::*;

    #[test]
    fn a_let_inside_the_statement_keeps_its_own_assign() {
        let src = "theorem t : let x := 1; x = 1 := by rfl";
        let (start, end, name) = statement_span(src, None).unwrap();
        assert_eq!((&src[start..end], name.as_str()), ("theorem t : let x := 1; x = 1 :=", "t"));
    }
}

/// Names of the theorems and lemmas declared in `src`, in order.
pub fn declared_theorems(src: &str) -> Vec<String> {
    let toks = tokenize(src);
    toks.windows(2)
        .filter(|w| matches!(w[0].text(src), "theorem" | "lemma") && w[1].kind == TokenKind::Ident)
        .map(|w| w[1].text(src).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_takes_one_module_and_the_header_ends_at_anything_else() {
        let src = "prelude\nimport SubgoalFixture inductive Evil : Prop\ntheorem t : True := True.intro\n";
        assert_eq!(&src[..header_end(src)], "prelude\nimport SubgoalFixture");
        let src = "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n";
        assert_eq!(&src[..header_end(src)], "import Mathlib\nimport Aesop\n");
        let src = "module\npublic import all A.B\nmeta import C\n";
        assert_eq!(header_end(src), src.len());
    }

    #[test]
    fn header_is_prelude_and_imports_only() {
        let src = "prelude\nimport SubgoalFixture\n\ntheorem t : True := True.intro\n";
        let end = header_end(src);
        assert_eq!(&src[..end], "prelude\nimport SubgoalFixture\n");
        assert_eq!(header_key(src), "prelude import SubgoalFixture");
    }

    #[test]
    fn mathlib_header_stops_before_set_option_and_open() {
        let src = "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n\nopen Real\n";
        assert_eq!(header_key(src), "import Mathlib import Aesop");
    }

    #[test]
    fn theorem_names_ignore_comments() {
        let src = "/-- theorem fake -/\ntheorem «real one» : True := True.intro\n-- lemma no\nlemma b : True := x";
        assert_eq!(declared_theorems(src), vec!["«real one»", "b"]);
    }
}
