//! Facts about Lean source text read off its tokens: where the import header ends and which
//! theorems a file declares. Text-only; nothing here runs Lean.

use super::lexer::{tokenize, TokenKind};

/// Byte offset where the module header (`module`, `prelude`, `import …` lines) ends: everything
/// before it is what Lean re-imports when it changes; everything after is ordinary commands.
pub fn header_end(src: &str) -> usize {
    let toks = tokenize(src);
    let mut end = 0;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text(src);
        match t {
            "prelude" | "module" => {
                end = toks[i].span.end;
                i += 1;
            }
            "public" | "private" | "meta" if toks.get(i + 1).is_some_and(|n| n.text(src) == "import") => {
                i += 1;
            }
            "import" => {
                // `import all X` exists in module syntax; take identifiers up to the next line.
                let line_end = src[toks[i].span.end..].find('\n').map_or(src.len(), |n| toks[i].span.end + n);
                i += 1;
                while i < toks.len() && toks[i].kind == TokenKind::Ident && toks[i].span.start < line_end {
                    end = toks[i].span.end;
                    i += 1;
                }
            }
            _ => break,
        }
    }
    // Include the rest of the header's last line.
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
