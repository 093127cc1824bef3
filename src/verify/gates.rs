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

/// Command keywords and meta-level constructs a proof never needs.
const REFUSED_WORDS: &[&str] = &[
    // declarations and scopes
    "axiom",
    "axioms",
    "theorem",
    "lemma",
    "def",
    "definition",
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
    "universes",
    "variable",
    "variables",
    "attribute",
    "mutual",
    "private",
    "protected",
    "noncomputable",
    "unsafe",
    "partial",
    "import",
    "export",
    "deriving",
    "omit",
    "include",
    "local",
    "scoped",
    "alias",
    "irreducible_def",
    "add_decl_doc",
    // code run during elaboration, new syntax, compiler hooks
    "initialize",
    "builtin_initialize",
    "elab",
    "elab_rules",
    "macro",
    "macro_rules",
    "syntax",
    "notation",
    "notation3",
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
    "register_simp_attr",
    "register_option",
    "declare_config_elab",
    "implemented_by",
    "extern",
    // search tactics that may close a goal without a proof term
    "hint",
    "says",
    "library_search",
    "suggest",
    "observe",
    "polyrith",
    "rw_search",
];

/// Term elaborators written `name%` that a proof may use; any other `name%` is refused (such
/// elaborators run code of their own at elaboration time).
const ALLOWED_PERCENT: &[&str] = &["type_of", "ensure_type_of", "ensure_expected_type"];

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
const NATIVE_NAMES: &[&str] =
    &["native_decide", "native", "ofReduceBool", "ofReduceNat", "reduceBool", "reduceNat", "trustCompiler"];

/// Options a proof may set (`set_option NAME VALUE in …`): limits that only make elaboration
/// give up sooner or later (the wall clock still bounds it), and printing/linting options that
/// only change messages. Everything else (`debug.skipKernelTC`, `trace.*` floods, `compiler.*`)
/// is refused.
fn option_allowed(name: &str, value: &str) -> bool {
    let positive = value.parse::<u64>().is_ok_and(|v| v > 0);
    match name {
        "maxRecDepth" | "synthInstance.maxSize" => positive,
        // 0 would turn the heartbeat limit off.
        "maxHeartbeats" | "synthInstance.maxHeartbeats" => positive,
        _ => (name.starts_with("pp.") || name.starts_with("linter.")) && matches!(value, "true" | "false"),
    }
}

/// Characters that make code read differently from how Lean parses it: bidirectional controls
/// ("Trojan Source") and zero-width characters. Refused anywhere, comments included.
fn invisible(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}'..='\u{200F}' | '\u{FEFF}' | '\u{2060}')
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
            TokenKind::Ident => {
                if text == "set_option" {
                    let name = toks.get(i + 1).map(|t| t.text(src)).unwrap_or("");
                    let value = toks.get(i + 2).map(|t| t.text(src)).unwrap_or("");
                    if !option_allowed(name, value) {
                        return Err(format!(
                            "shape gate: `set_option {name} {value}` at line {} is not on the allow-list \
                             (maxHeartbeats/maxRecDepth > 0, pp.*, linter.*)",
                            line_of(src, t.span.start)
                        ));
                    }
                    i += 3;
                    continue;
                }
                if REFUSED_WORDS.contains(&text) && !allowed_words.contains(&text) {
                    return refuse(t, "is a command or meta-level construct; a candidate may only supply a proof");
                }
                if !text.contains('.') && text.len() > 1 && text.ends_with('?') {
                    return refuse(t, "is a search tactic (it can hide `sorry`)");
                }
                if let Some(p) = REFUSED_PREFIXES.iter().find(|p| text.starts_with(*p)) {
                    return refuse(t, &format!("uses the metaprogramming API (`{p}`)"));
                }
                let last = text.rsplit('.').next().unwrap_or(text);
                if !cfg.allow_native_decide && NATIVE_NAMES.contains(&last) {
                    return refuse(t, "trusts the compiled evaluator (pass --allow-native-decide to accept it)");
                }
                if let Some(next) = toks.get(i + 1) {
                    if next.span.start == t.span.end && next.text(src) == "%" && !ALLOWED_PERCENT.contains(&text) {
                        return refuse(t, "is an elaborator that runs at elaboration time (`name%`)");
                    }
                }
                if text.ends_with('!') {
                    if let Some(next) = toks.get(i + 1) {
                        if next.kind == TokenKind::Str && next.span.start == t.span.end && next.text(src).contains('{')
                        {
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
        check_body(" by native_decide", &GateConfig { allow_native_decide: true }).unwrap();
        // A library function whose name ends in `?` is not a search tactic.
        body(" List.get? l 0").unwrap();
    }

    #[test]
    fn metaprogramming_is_refused() {
        assert!(body(" by run_tac do pure ()").is_err());
        assert!(body(" (by_elab pure default)").is_err());
        assert!(body(" Lean.Meta.mkSorry").is_err());
        assert!(body(" (eval% 1)").is_err());
        body(" (show type_of% h from h)").unwrap();
        assert!(body(" s!\"{evil}\"").is_err());
        body(" \"{not code}\"").unwrap();
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
}
