//! The shape gate: what a candidate may contain, decided on Lean tokens (comments and string
//! literals are not code), before Lean sees it. Also the names of all gates, for records.
//!
//! A candidate supplies a proof, nothing else: no new top-level commands (they could declare
//! axioms, re-open scopes or run code during elaboration), no meta-level constructs, no search
//! tactics (they can hide `sorry`), no `native_decide` unless allowed, no options beyond a short
//! allow-list, and no invisible Unicode. A refusal names the token and its line.
//!
//! Invariant: this is a deny-list over the token stream, so it cannot know commands a library
//! adds with new keywords; the statement and axiom gates, the fresh re-check and the sandbox are
//! the layers behind it (see ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::lean::lexer::{tokenize, Token, TokenKind};

/// The checks a verdict can pass through, in the order they apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Tokens of the candidate (this module).
    Shape,
    /// The proved constant has the reference statement's type (trusted epilogue).
    Statement,
    /// Trusted `#print axioms` lists only allowed axioms.
    Axioms,
    /// The final document, re-checked by a fresh `lean` process.
    Recheck,
}

impl Gate {
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Shape => "shape",
            Gate::Statement => "statement",
            Gate::Axioms => "axioms",
            Gate::Recheck => "recheck",
        }
    }
}

/// Knobs of the gates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateConfig {
    /// Accept `native_decide` / `decide +native` and the axioms they add
    /// (`Lean.ofReduceBool`, `Lean.trustCompiler`, `…._native.…`): trusts Lean's compiler.
    pub allow_native_decide: bool,
}

/// Keywords of core Lean that start commands or run code during elaboration: refused wherever
/// they appear as code, before Lean runs (core keywords can never be identifiers).
const CORE_WORDS: &[&str] = &[
    // declarations and scopes
    "axiom",
    "theorem",
    "def",
    "example",
    "instance",
    "structure",
    "inductive",
    "coinductive",
    "class",
    "abbrev",
    "opaque",
    "namespace",
    "section",
    "end",
    "universe",
    "variable",
    "attribute",
    "mutual",
    "private",
    "protected",
    "noncomputable",
    "unsafe",
    "partial",
    "nonrec",
    "meta",
    "import",
    "export",
    "deriving",
    "omit",
    "include",
    "local",
    "scoped",
    "add_decl_doc",
    "init_quot",
    "unif_hint",
    "binder_predicate",
    "grind_pattern",
    "seal",
    "unseal",
    "recommended_spelling",
    "register_builtin_option",
    "register_tactic_tag",
    "register_linter_set",
    "declare_simp_like_tactic",
    // code run during elaboration, new syntax, compiler hooks
    "initialize",
    "builtin_initialize",
    "elab",
    "elab_rules",
    "macro",
    "macro_rules",
    "syntax",
    "notation",
    "infix",
    "infixl",
    "infixr",
    "prefix",
    "postfix",
    "declare_syntax_cat",
    "run_cmd",
    "run_elab",
    "run_meta",
    "run_tac",
    "by_elab",
    "simproc",
    "simproc_decl",
    "dsimproc",
    "dsimproc_decl",
    "builtin_simproc",
    "builtin_simproc_decl",
    "builtin_dsimproc",
    "builtin_dsimproc_decl",
    "register_simp_attr",
    "register_option",
    "declare_config_elab",
    "implemented_by",
    "native_decide",
];

/// Keywords libraries (Mathlib, Batteries, Aesop) add. They are refused where Lean itself reports
/// them as keywords (its semantic tokens, after elaboration), so a local variable that happens
/// to be called `hint` or `alias` in a world without Mathlib is not refused.
const LIBRARY_WORDS: &[&str] = &[
    "lemma",
    "alias",
    "irreducible_def",
    "notation3",
    "proof_wanted",
    "compile_inductive",
    "compile_def",
    "suppress_compilation",
    "unsuppress_compilation",
    "assert_not_exists",
    "assert_not_imported",
    "library_note",
    "initialize_simps_projections",
    "mk_iff_of_inductive_prop",
    "register_label_attr",
    "declare_aesop_rule_sets",
    "add_aesop_rules",
    "hint",
    "says",
    "library_search",
    "suggest",
    "observe",
    "polyrith",
    "rw_search",
    "variable?",
];

/// Search tactics that may close a goal without a proof term (refused before Lean runs; any other
/// keyword ending in `?` is refused when Lean reports it).
const SEARCH_TACTICS: &[&str] = &[
    "apply?",
    "exact?",
    "rw?",
    "rw??",
    "simp?",
    "simp?!",
    "simp_all?",
    "simp_all?!",
    "simpa?",
    "simpa?!",
    "dsimp?",
    "dsimp?!",
    "aesop?",
    "field_simp?",
    "norm_num?",
    "push_cast?",
    "rfl?",
    "decide?",
    "omega?",
    "grind?",
    "try?",
    "unfold?",
    "show_term?",
    "observe?",
    "hint?",
    "bound?",
];

/// Declaration keywords a whole-file candidate (no reference statement) may use.
const FILE_DECLARATIONS: &[&str] = &["theorem", "lemma", "example"];

/// Namespaces of the metaprogramming and compiler API.
const REFUSED_PREFIXES: &[&str] = &[
    "Lean.Elab",
    "Lean.Meta",
    "Lean.Parser",
    "Lean.Environment",
    "Lean.Kernel",
    "Lean.Compiler",
    "Lean.IR",
    "Lean.Syntax",
    "Lean.Macro",
    "Lean.addDecl",
    "Elab.",
    "Meta.",
];

/// Last name components that reach the compiled evaluator from a proof.
const NATIVE_NAMES: &[&str] = &["ofReduceBool", "ofReduceNat", "reduceBool", "reduceNat", "trustCompiler"];

/// Options a proof may set (`set_option NAME VALUE in …`): limits that only make elaboration
/// give up sooner or later (the wall clock still bounds it; recursion depth is capped so Lean's
/// stack is not), and printing/linting options that only change messages. Everything else
/// (`debug.skipKernelTC`, `trace.*` floods, `compiler.*`) is refused.
fn option_allowed(name: &str, value: &str) -> bool {
    let number = value.replace('_', "").parse::<u64>().ok();
    match name {
        "maxRecDepth" => number.is_some_and(|v| (1..=100_000).contains(&v)),
        // 0 would turn the limit off.
        "maxHeartbeats" | "synthInstance.maxHeartbeats" | "synthInstance.maxSize" => number.is_some_and(|v| v > 0),
        _ => {
            (name.starts_with("pp.") || name.starts_with("linter."))
                && (matches!(value, "true" | "false") || number.is_some())
        }
    }
}

const OPTION_RULE: &str =
    "maxHeartbeats/synthInstance.maxHeartbeats/synthInstance.maxSize > 0, maxRecDepth ≤ 100000, pp.*, linter.*";

/// Commands a whole-file candidate may put between its imports and the restated statement
/// (they are discarded: the document is rebuilt from the reference header).
const PREAMBLE_WORDS: &[&str] = &["open", "scoped", "in", "set_option", "universe", "noncomputable", "section"];

/// Characters that make code read differently from how Lean parses it: bidirectional controls
/// ("Trojan Source") and zero-width characters. Refused anywhere, comments included.
fn invisible(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{FEFF}' | '\u{2060}')
}

/// Whether Lean reporting `word` as a keyword in a candidate refuses it (`file`: a whole file
/// checked as written, where `theorem`/`lemma`/`example` may declare).
pub fn refused_lean_keyword(word: &str, file: bool, cfg: &GateConfig) -> bool {
    if file && FILE_DECLARATIONS.contains(&word) {
        return false;
    }
    if word == "native_decide" {
        return !cfg.allow_native_decide;
    }
    word.starts_with('#')
        || CORE_WORDS.contains(&word)
        || LIBRARY_WORDS.contains(&word)
        || word.len() > 1 && word.ends_with('?')
}

/// Checks a proof body (the text after the reference statement's `:=`).
pub fn check_body(src: &str, cfg: &GateConfig) -> Result<(), String> {
    check_tokens(src, cfg, &[])
}

/// Checks a whole file checked as written: like a body, but `theorem`/`lemma`/`example` may
/// start declarations.
pub fn check_file(src: &str, cfg: &GateConfig) -> Result<(), String> {
    check_tokens(src, cfg, FILE_DECLARATIONS)
}

/// A helper theorem a whole-file candidate declares before restating the reference statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperDecl {
    /// From its `theorem`/`lemma` keyword to the end of its proof, in the preamble.
    pub range: std::ops::Range<usize>,
    pub name: String,
}

/// What a whole-file candidate wrote before its restatement, split by the gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preamble {
    /// `open`, `set_option`, `universe` commands, in order.
    pub directives: Vec<std::ops::Range<usize>>,
    /// Helper theorems, in order.
    pub helpers: Vec<HelperDecl>,
}

/// Splits and checks what a whole-file candidate wrote between its imports and its restatement
/// of the reference statement: `open`/`set_option`/`universe` commands (checked by
/// `check_preamble`), and helper `theorem`/`lemma` declarations, each a plain name (no
/// namespace, no `«»`), binders, a type and a proof that pass `check_body`. Each command starts
/// a line. Anything else (a `def`, an attribute, a `namespace`, an `axiom`, text before the first
/// command) is refused.
pub fn split_preamble(src: &str, cfg: &GateConfig) -> Result<Preamble, String> {
    const STARTS: &[&str] = &["open", "set_option", "universe", "theorem", "lemma"];
    if let Some((i, c)) = src.char_indices().find(|&(_, c)| invisible(c)) {
        return Err(format!("shape gate: invisible character U+{:04X} at line {}", c as u32, line_of(src, i)));
    }
    let toks = tokenize(src);
    let at_line_start = |t: &Token| src[..t.span.start].rsplit('\n').next().is_some_and(|l| l.trim().is_empty());
    let starts: Vec<usize> = (0..toks.len())
        .filter(|&i| toks[i].kind == TokenKind::Ident && STARTS.contains(&toks[i].text(src)) && at_line_start(&toks[i]))
        .collect();
    // Nothing may come before the first command (check_preamble names a refused word there).
    if let Some(first) = toks.first().filter(|_| starts.first() != Some(&0)) {
        let before = starts.first().map_or(src.len(), |&j| toks[j].span.start);
        check_preamble(&src[..before])?;
        return Err(format!(
            "shape gate: `{}` at line {} before the statement is not a command a candidate may write",
            first.text(src),
            line_of(src, first.span.start)
        ));
    }
    let mut out = Preamble::default();
    for (n, &i) in starts.iter().enumerate() {
        let end = starts.get(n + 1).map_or(src.len(), |&j| toks[j].span.start);
        let chunk = &src[toks[i].span.start..end];
        match toks[i].text(src) {
            "theorem" | "lemma" => {
                let line = line_of(src, toks[i].span.start);
                let name = toks.get(i + 1).filter(|t| t.span.start < end && t.kind == TokenKind::Ident);
                let Some(name) = name else {
                    return Err(format!("shape gate: the helper declaration at line {line} has no name"));
                };
                let text = name.text(src);
                if text.contains(['.', '«', '»']) || text.starts_with('_') {
                    return Err(format!(
                        "shape gate: helper `{text}` at line {line}: a helper's name must be a plain name, not in a \
                         namespace"
                    ));
                }
                let rest = &src[name.span.end..end];
                if !tokenize(rest).iter().any(|t| t.text(rest) == ":=") {
                    return Err(format!("shape gate: helper `{text}` at line {line} has no `:=` and proof"));
                }
                check_body(rest, cfg).map_err(|e| format!("{e} (in helper `{text}`, line {line} of the preamble)"))?;
                let range = toks[i].span.start..toks[i].span.start + chunk.trim_end().len();
                out.helpers.push(HelperDecl { range, name: text.to_string() });
            }
            _ => {
                check_preamble(chunk)?;
                out.directives.push(toks[i].span.start..end);
            }
        }
    }
    Ok(out)
}

/// Checks what a whole-file candidate wrote between its imports and its restatement of the
/// reference statement: only `open`, options and the like, which are discarded.
pub fn check_preamble(src: &str) -> Result<(), String> {
    if let Some((i, c)) = src.char_indices().find(|&(_, c)| invisible(c)) {
        return Err(format!("shape gate: invisible character U+{:04X} at line {}", c as u32, line_of(src, i)));
    }
    for t in tokenize(src) {
        let text = t.text(src);
        let command = t.kind == TokenKind::HashCommand
            || t.kind == TokenKind::Symbol && text == "@["
            || t.kind == TokenKind::Ident && CORE_WORDS.iter().chain(LIBRARY_WORDS).any(|w| *w == text);
        if t.kind == TokenKind::Ident {
            if let Some(p) = REFUSED_PREFIXES.iter().find(|p| text.starts_with(*p)) {
                return Err(format!(
                    "shape gate: `{text}` at line {} uses the metaprogramming API (`{p}`)",
                    line_of(src, t.span.start)
                ));
            }
        }
        if command && !PREAMBLE_WORDS.contains(&text) {
            return Err(format!(
                "shape gate: `{text}` at line {} before the statement; a candidate may only supply a proof \
                 (only open/set_option/universe and helper theorems may precede the statement)",
                line_of(src, t.span.start)
            ));
        }
    }
    Ok(())
}

fn check_tokens(src: &str, cfg: &GateConfig, allowed_words: &[&str]) -> Result<(), String> {
    if let Some((i, c)) = src.char_indices().find(|&(_, c)| invisible(c)) {
        return Err(format!("shape gate: invisible character U+{:04X} at line {}", c as u32, line_of(src, i)));
    }
    let toks = tokenize(src);
    let refuse = |t: &Token, why: &str| {
        Err(format!("shape gate: `{}` at line {} {why}", t.text(src), line_of(src, t.span.start)))
    };
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let text = t.text(src);
        match t.kind {
            TokenKind::HashCommand => return refuse(t, "is a command; a candidate may only supply a proof"),
            TokenKind::Symbol if text == "@[" => {
                return refuse(t, "starts an attribute; a candidate may only supply a proof")
            }
            TokenKind::Symbol if text == "`" => return refuse(t, "starts a syntax quotation (metaprogramming)"),
            TokenKind::Ident if text.contains(['\n', '\r']) => return refuse(t, "is a name spanning lines"),
            TokenKind::Ident => {
                if text == "set_option" {
                    let name = toks.get(i + 1).map(|t| t.text(src)).unwrap_or("");
                    let value = toks.get(i + 2).map(|t| t.text(src)).unwrap_or("");
                    if !option_allowed(name, value) {
                        return Err(format!(
                            "shape gate: `set_option {name} {value}` at line {} is not on the allow-list ({OPTION_RULE})",
                            line_of(src, t.span.start)
                        ));
                    }
                    i += 3;
                    continue;
                }
                // `decide +native`, `{ native := true }`; a local `let native := …` is fine.
                let prev = (i > 0).then(|| toks[i - 1].text(src));
                let next = toks.get(i + 1).map(|n| n.text(src));
                let native_option = text == "native"
                    && (i > 0 && matches!(prev, Some("+" | "-")) && toks[i - 1].span.end == t.span.start
                        || matches!(prev, Some("{" | ",")) && next == Some(":="));
                if text == "native_decide" || native_option {
                    if !cfg.allow_native_decide {
                        return refuse(t, "trusts the compiled evaluator (pass --allow-native-decide to accept it)");
                    }
                } else if CORE_WORDS.contains(&text) && !allowed_words.contains(&text) {
                    return refuse(t, "is a command or meta-level construct; a candidate may only supply a proof");
                }
                // Inside a proof `open` scopes a term (`open A in e`); without its `in` it is a
                // command after the proof (an alias for the epilogue to trip on). A whole file
                // may open namespaces: its epilogue names theorems from `_root_`.
                if text == "open" && !allowed_words.contains(&"theorem") && !open_has_in(src, &toks, i) {
                    return refuse(t, "opens namespaces for the rest of the file; write `open … in`");
                }
                if SEARCH_TACTICS.contains(&text) {
                    return refuse(t, "is a search tactic (it can hide `sorry`)");
                }
                if let Some(p) = REFUSED_PREFIXES.iter().find(|p| text.starts_with(*p)) {
                    return refuse(t, &format!("uses the metaprogramming API (`{p}`)"));
                }
                let last = text.rsplit('.').next().unwrap_or(text);
                if !cfg.allow_native_decide && NATIVE_NAMES.contains(&last) {
                    return refuse(t, "trusts the compiled evaluator (pass --allow-native-decide to accept it)");
                }
                // `s!"…{e}…"`, `s! "…"`, `dbg_trace "…{e}…"`: code inside the literal.
                if text.ends_with('!') || text == "dbg_trace" {
                    if let Some(next) = toks.get(i + 1) {
                        if next.kind == TokenKind::Str && next.text(src).contains('{') {
                            return refuse(t, "interpolates code inside a string literal");
                        }
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The shape gate's second look, after Lean ran, at the tokens Lean's own parser reports in the
/// candidate (its semantic tokens of every kind, as byte ranges of `candidate`): each must start
/// inside a code token the lexer saw (not in a comment, a string or character literal, or between
/// tokens); else the lexer was out of step with Lean and what it passed is not what Lean ran.
/// Tokens whose text is refused (library keywords such as `lemma`, anything `#…`, keywords
/// ending in `?`) are refused where Lean calls them keywords. A Lean token may be longer than the lexer's (`type_of%`,
/// `ℝ≥0`), so only its start is matched.
pub fn check_lean_tokens(
    candidate: &str,
    tokens: &[(std::ops::Range<usize>, bool)],
    file: bool,
    declared_at: &[usize],
    cfg: &GateConfig,
) -> Result<(), String> {
    let toks = tokenize(candidate);
    for (r, keyword) in tokens {
        let Some(word) = candidate.get(r.clone()) else { continue };
        let line = line_of(candidate, r.start);
        // A Lean token must start where a gate token starts, or at a component of a dotted name
        // the gate read as one identifier (`h.left`).
        let in_code = toks.iter().any(|t| {
            !matches!(t.kind, TokenKind::Str | TokenKind::Char)
                && (t.span.start == r.start
                    || t.kind == TokenKind::Ident
                        && t.span.start < r.start
                        && r.start < t.span.end
                        && candidate[..r.start].ends_with('.'))
        });
        if !in_code {
            return Err(format!(
                "shape gate: Lean reads `{word}` at line {line} as code where the gate saw a comment, a literal or \
                 other text (the candidate is written to be read two ways)"
            ));
        }
        // Names are refused only where Lean calls them keywords (a local `alias` is fine);
        // `#…` never names anything.
        // A helper's own `theorem`/`lemma` is a declaration where the gate split one off.
        let declaration = FILE_DECLARATIONS.contains(&word) && declared_at.contains(&r.start);
        if (*keyword || word.starts_with('#')) && refused_lean_keyword(word, file, cfg) && !declaration {
            return Err(format!("shape gate: `{word}` at line {line} is a keyword a candidate may not use"));
        }
    }
    Ok(())
}

/// Whether the `open` at `toks[i]` is followed, after its names and clauses, by `in`.
fn open_has_in(src: &str, toks: &[Token], i: usize) -> bool {
    for t in &toks[i + 1..] {
        let w = t.text(src);
        match t.kind {
            TokenKind::Ident if w == "in" => return true,
            TokenKind::Ident if !CORE_WORDS.contains(&w) => {}
            TokenKind::Symbol if matches!(w, "(" | ")" | "→" | "->") => {}
            _ => return false,
        }
    }
    false
}

fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Result<(), String> {
        check_body(s, &GateConfig::default())
    }

    #[test]
    fn gate_words_in_comments_and_names_are_code_free() {
        body("  -- no sorry here, no axiom, no #eval\n  /- set_option debug.skipKernelTC true -/ axiom_free_bound h")
            .unwrap();
        body(" fun h_unsafe macro_step => h_unsafe").unwrap();
    }

    #[test]
    fn top_level_commands_in_a_body_are_refused_with_their_line() {
        let e = body(" hp\n\naxiom cheat : False").unwrap_err();
        assert!(e.contains("`axiom` at line 3"), "{e}");
        assert!(body(" hp\n#exit").unwrap_err().contains("#exit"));
        assert!(body(" hp\nnamespace Foo").is_err());
        assert!(body(" hp\n@[implemented_by f] def g := 1").is_err());
    }

    #[test]
    fn options_outside_the_allow_list_are_refused() {
        assert!(body(" set_option debug.skipKernelTC true in hp").unwrap_err().contains("debug.skipKernelTC"));
        assert!(body(" set_option maxHeartbeats 0 in hp").is_err());
        body(" set_option maxHeartbeats 400000 in hp").unwrap();
        body(" set_option pp.all true in hp").unwrap();
    }

    #[test]
    fn search_tactics_and_native_decide_are_refused() {
        assert!(body(" by exact?").unwrap_err().contains("search tactic"));
        assert!(body(" by apply?").is_err());
        assert!(body(" by native_decide").unwrap_err().contains("--allow-native-decide"));
        assert!(body(" by decide +native").is_err());
        assert!(body(" by decide (config := { native := true })").is_err());
        check_body(" by native_decide", &GateConfig { allow_native_decide: true }).unwrap();
        // Functions whose names end in `?`, and locals named like library tactics, are not search tactics.
        body(" List.get? l 0").unwrap();
        body(" get? l 0").unwrap();
        body(" fun (hint : p) (native : q) (alias : r) => hint").unwrap();
        body(" let native := h\n  native").unwrap();
        body(" a + native").unwrap();
        body(" open Nat renaming succ → s in h").unwrap();
        assert!(body(" h\nopen a renaming b → e\n").unwrap_err().contains("open … in"));
    }

    #[test]
    fn metaprogramming_is_refused() {
        assert!(body(" by run_tac do pure ()").is_err());
        assert!(body(" (by_elab pure default)").is_err());
        assert!(body(" Lean.Meta.mkSorry").is_err());
        body(" (show type_of% h from h)").unwrap();
        body(" Nat.mod n%2").unwrap();
        assert!(body(" (dbg_trace \"{x}\"; h)").is_err());
        assert!(body(" s! \"{x}\"").is_err());
        assert!(body(" s!\"{evil}\"").is_err());
        body(" \"{not code}\"").unwrap();
    }

    #[test]
    fn lean_keywords_the_lexer_did_not_see_are_refused() {
        let cfg = GateConfig::default();
        // Lean reads `#check` here; a lexer out of step would have seen a string.
        let src = " x \"hidden\" #check";
        let at = |w: &str| src.find(w).unwrap()..src.find(w).unwrap() + w.len();
        check_lean_tokens(src, &[(at("#check"), false)], false, &[], &cfg).unwrap_err();
        let desync = check_lean_tokens(src, &[(at("hidden"), true)], false, &[], &cfg).unwrap_err();
        assert!(desync.contains("read two ways"), "{desync}");
        check_lean_tokens(" fun h => h", &[(std::ops::Range { start: 1, end: 4 }, true)], false, &[], &cfg).unwrap();
    }

    #[test]
    fn a_local_named_like_a_library_keyword_is_not_refused() {
        check_lean_tokens(
            " alias",
            &[(std::ops::Range { start: 1, end: 6 }, false)],
            false,
            &[],
            &GateConfig::default(),
        )
        .unwrap();
    }

    #[test]
    fn library_keywords_are_refused_when_lean_reports_them() {
        let cfg = GateConfig::default();
        check_lean_tokens(" hint", &[(std::ops::Range { start: 1, end: 5 }, true)], false, &[], &cfg).unwrap_err();
        check_lean_tokens(" lemma", &[(std::ops::Range { start: 1, end: 6 }, true)], true, &[], &cfg).unwrap();
        check_lean_tokens(" aesop?", &[(std::ops::Range { start: 1, end: 7 }, true)], false, &[], &cfg).unwrap_err();
    }

    #[test]
    fn preambles_may_open_and_set_options_only() {
        check_preamble("open scoped Real\nset_option autoImplicit false\n").unwrap();
        assert!(check_preamble("theorem helper : True := True.intro\n").unwrap_err().contains("`theorem`"));
    }

    #[test]
    fn invisible_characters_are_refused_even_in_comments() {
        assert!(body(" hp -- \u{202E}txet").unwrap_err().contains("U+202E"));
    }

    #[test]
    fn files_may_declare_theorems_but_not_axioms() {
        check_file("theorem a : True := True.intro\nexample : True := True.intro", &GateConfig::default()).unwrap();
        assert!(check_file("axiom x : False", &GateConfig::default()).is_err());
    }

    #[test]
    fn a_preamble_splits_into_directives_and_helper_theorems_or_lemmas() {
        let src = "open Real\nlemma h1 (x : Nat) : x = x := rfl\n\ntheorem h2 : True :=\n  trivial\nset_option maxHeartbeats 400000\n";
        let p = split_preamble(src, &GateConfig::default()).unwrap();
        let names: Vec<&str> = p.helpers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2"]);
        assert_eq!(&src[p.helpers[1].range.clone()], "theorem h2 : True :=\n  trivial");
        assert_eq!(p.directives.len(), 2);
    }

    #[test]
    fn helpers_in_a_namespace_or_after_other_text_on_their_line_are_refused() {
        let cfg = GateConfig::default();
        assert!(split_preamble("theorem A.h : True := trivial\n", &cfg).unwrap_err().contains("plain name"));
        assert!(split_preamble("theorem h : True := trivial theorem g : True := trivial\n", &cfg).is_err());
        assert!(split_preamble("noncomputable theorem h : True := trivial\n", &cfg).is_err());
        assert!(split_preamble("theorem h : True\n", &cfg).unwrap_err().contains(":="));
    }
}
