//! Lean proof text at the text level, for the sketch step of the pipeline: reading a planner's
//! answer, finding a theorem's top-level `have` steps, locating `sorry` sites, hollowing a proof
//! into a sketch and filling a sketch back in. No Lean runs here; everything works on the tokens
//! of `crate::lean::lexer`, so comments and strings never count as code.
//!
//! Conventions: byte ranges index the code; columns count chars (as Lean's do). A line-starting
//! token "ends" a block when its column is at or left of the block's owner, which is how Lean's
//! tactic blocks and `have … := e` terms end.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::lean::lexer::{tokenize, Token, TokenKind};

/// A planner model's answer split into its reasoning and its final Lean code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerAnswer {
    /// Everything before the chosen code block, trimmed.
    pub informal: String,
    /// The body of the last fenced block that declares a `theorem` or `lemma`, verbatim.
    pub code: Option<String>,
}

/// How a proof is written: `by` and tactics, or a term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProofMode {
    Tactic,
    Term,
}

/// One top-level `have` of a theorem's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The hypothesis name; `this` for an anonymous `have : P`.
    pub name: String,
    /// The text between the name and `:=`, trimmed, binders included; the `:` of a plain
    /// `have h : P` is dropped.
    pub statement: String,
    /// Byte range of the proof, from its first token to the end of its last token.
    pub proof: Range<usize>,
    /// Column (chars) of the `have` keyword.
    pub indent: usize,
    /// `Tactic` when the proof starts with `by`.
    pub mode: ProofMode,
}

/// The shape of one theorem's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outline {
    pub name: String,
    pub mode: ProofMode,
    /// Byte offset of the proof's first token (`by` in tactic mode); the statement is the text
    /// before it.
    pub proof_start: usize,
    pub steps: Vec<Step>,
    /// The rest of the proof after the last step (after `by`, or the whole term, when there are
    /// none), trimmed; its end is the end of the proof. Empty (at the last step's end) when the
    /// proof stops at its last step.
    pub closing: Range<usize>,
    /// `have`s inside step proofs: reported, not decomposed.
    pub nested_haves: usize,
}

impl Outline {
    /// Byte offset just past the proof's last token.
    pub fn proof_end(&self) -> usize {
        self.closing.end
    }
}

/// What a `sorry` stands for, which decides what may replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// A term: replace the range with a term (`by …` included).
    Term,
    /// A tactic in a tactic block: replace it with tactics.
    Tactic,
}

/// One `sorry` in a theorem's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SorrySite {
    /// The `sorry`, or the whole `by sorry` when that is exactly a step's proof.
    pub range: Range<usize>,
    pub kind: SiteKind,
    /// Index of the top-level step whose proof holds it.
    pub step: Option<usize>,
    /// The step's `have` column, else the column where the sorry's line starts.
    pub indent: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SketchError {
    #[error("no theorem or lemma in the code")]
    NoTheorem,
    #[error("no theorem or lemma named `{0}` in the code")]
    TheoremNotFound(String),
    #[error("`{0}` has no `:=` before its proof")]
    NoAssign(String),
    #[error("`{0}` has an empty proof")]
    EmptyProof(String),
}

/// Splits a model's answer into reasoning and code: the code is the last fenced block (```` ```lean4 ````,
/// ```` ```lean ```` or bare) that declares a theorem or lemma, so the paper's sections (plan, `have`
/// sketch, complete proof) need no special treatment. An unterminated last fence runs to the end of the
/// text, since answers get cut off by the token limit.
pub fn parse_answer(text: &str) -> PlannerAnswer {
    let chosen = fenced_blocks(text).into_iter().rev().find(|b| {
        let lang = b.lang.to_ascii_lowercase();
        matches!(lang.as_str(), "" | "lean" | "lean4") && declares_theorem(&text[b.body.clone()])
    });
    match chosen {
        Some(b) => {
            PlannerAnswer { informal: text[..b.open_start].trim().to_string(), code: Some(text[b.body].to_string()) }
        }
        None => PlannerAnswer { informal: text.trim().to_string(), code: None },
    }
}

/// Which of an answer's Lean blocks a prover candidate was taken from, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockChoice {
    /// 0-based, among the answer's Lean blocks that declare a theorem.
    pub index: usize,
    /// How many such blocks the answer has.
    pub of: usize,
    pub rule: BlockRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockRule {
    /// The block under the CoT format's `### Complete Lean 4 Proof` heading.
    CompleteHeading,
    /// The last block without `sorry` (the complete proof comes after the `have … sorry` sketch).
    LastWithoutSorry,
    /// The last block (every block has a `sorry`).
    Last,
}

/// The code a prover's answer proposes. DeepSeek-Prover-V2's CoT answers hold a `have … := by
/// sorry` sketch and then the complete proof: the block under `### Complete Lean 4 Proof` wins,
/// else the last block with no `sorry` (an unterminated block cut by the token limit included:
/// Lean then says what it lacks), else the last block.
pub fn prover_code(text: &str) -> Option<(String, BlockChoice)> {
    let blocks: Vec<Fence> = fenced_blocks(text)
        .into_iter()
        .filter(|b| {
            let lang = b.lang.to_ascii_lowercase();
            matches!(lang.as_str(), "" | "lean" | "lean4") && declares_theorem(&text[b.body.clone()])
        })
        .collect();
    let of = blocks.len();
    let heading = text.find("### Complete Lean 4 Proof");
    let has_sorry =
        |b: &Fence| tokenize(&text[b.body.clone()]).iter().any(|t| t.text(&text[b.body.clone()]) == "sorry");
    let (index, rule) = if let Some(i) = heading.and_then(|h| blocks.iter().position(|b| b.open_start > h)) {
        (i, BlockRule::CompleteHeading)
    } else if let Some(i) = blocks.iter().rposition(|b| !has_sorry(b)) {
        (i, BlockRule::LastWithoutSorry)
    } else {
        (of.checked_sub(1)?, BlockRule::Last)
    };
    Some((text[blocks[index].body.clone()].to_string(), BlockChoice { index, of, rule }))
}

struct Fence {
    /// Start of the opening fence line.
    open_start: usize,
    body: Range<usize>,
    /// First word of the info string.
    lang: String,
}

/// CommonMark-style backtick fences: an opening line of 3+ backticks and an info string, closed by a
/// line of at least as many backticks and nothing else.
fn fenced_blocks(text: &str) -> Vec<Fence> {
    let mut lines = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        lines.push(start..start + line.len());
        start += line.len();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = text[lines[i].clone()].trim();
        let ticks = line.chars().take_while(|&c| c == '`').count();
        if ticks < 3 || line[ticks..].contains('`') {
            i += 1;
            continue;
        }
        let lang = line[ticks..].split_whitespace().next().unwrap_or("").to_string();
        let body_start = lines[i].end;
        let close = (i + 1..lines.len()).find(|&j| {
            let l = text[lines[j].clone()].trim();
            l.len() >= ticks && l.chars().all(|c| c == '`')
        });
        let (body_end, next) = match close {
            Some(j) => (lines[j].start, j + 1),
            None => (text.len(), lines.len()),
        };
        out.push(Fence { open_start: lines[i].start, body: body_start..body_end, lang });
        i = next;
    }
    out
}

fn declares_theorem(code: &str) -> bool {
    tokenize(code).iter().any(|t| t.kind == TokenKind::Ident && matches!(t.text(code), "theorem" | "lemma"))
}

/// Tokens with the layout facts the rules need.
struct Lexed<'a> {
    src: &'a str,
    toks: Vec<Token>,
    /// Whether a newline separates the token from the previous one (or only whitespace precedes the
    /// first token on its line).
    line_start: Vec<bool>,
    /// Column in chars.
    col: Vec<usize>,
}

impl<'a> Lexed<'a> {
    fn new(src: &'a str) -> Self {
        let toks = tokenize(src);
        let mut line_start = Vec::with_capacity(toks.len());
        let mut col = Vec::with_capacity(toks.len());
        for (j, t) in toks.iter().enumerate() {
            let begin = line_begin(src, t.span.start);
            let before = &src[begin..t.span.start];
            col.push(before.chars().count());
            line_start.push(match j {
                0 => before.trim().is_empty(),
                _ => src[toks[j - 1].span.end..t.span.start].contains('\n'),
            });
        }
        Lexed { src, toks, line_start, col }
    }

    fn text(&self, j: usize) -> &'a str {
        self.toks[j].text(self.src)
    }

    fn is_ident(&self, j: usize, word: &str) -> bool {
        self.toks[j].kind == TokenKind::Ident && self.text(j) == word
    }

    fn is_symbol(&self, j: usize, sym: &str) -> bool {
        self.toks[j].kind == TokenKind::Symbol && self.text(j) == sym
    }

    /// +1 for an opening bracket, -1 for a closing one.
    fn bracket(&self, j: usize) -> i32 {
        if self.toks[j].kind != TokenKind::Symbol {
            return 0;
        }
        match self.text(j) {
            "(" | "[" | "{" | "⟨" | "⦃" | "@[" | "⁅" => 1,
            ")" | "]" | "}" | "⟩" | "⦄" | "⁆" => -1,
            _ => 0,
        }
    }

    /// A token that starts the next command, which ends the current declaration's proof.
    fn starts_command(&self, j: usize) -> bool {
        if !self.line_start[j] || self.col[j] != 0 {
            return false;
        }
        match self.toks[j].kind {
            TokenKind::HashCommand => true,
            TokenKind::Symbol => self.text(j) == "@[",
            TokenKind::Ident => COMMANDS.contains(&self.text(j)),
            _ => false,
        }
    }

    /// First token after `from` that starts a line at or left of `col`, or `limit`.
    fn block_end(&self, from: usize, limit: usize, col: usize) -> usize {
        (from..limit).find(|&j| self.line_start[j] && self.col[j] <= col).unwrap_or(limit)
    }

    /// Index of the first token starting at or after `offset`.
    fn index_at(&self, offset: usize) -> usize {
        self.toks.partition_point(|t| t.span.start < offset)
    }
}

const COMMANDS: &[&str] = &[
    "theorem",
    "lemma",
    "def",
    "example",
    "abbrev",
    "instance",
    "structure",
    "class",
    "inductive",
    "axiom",
    "opaque",
    "end",
    "namespace",
    "section",
    "open",
    "variable",
    "universe",
    "noncomputable",
    "private",
    "protected",
    "set_option",
    "import",
    "attribute",
    "macro",
    "macro_rules",
    "syntax",
    "elab",
    "notation",
    "mutual",
];

fn line_begin(src: &str, offset: usize) -> usize {
    src[..offset].rfind('\n').map_or(0, |p| p + 1)
}

/// Column (chars) of the first non-whitespace char on the line holding `offset`.
fn line_indent(src: &str, offset: usize) -> usize {
    let begin = line_begin(src, offset);
    let line = src[begin..].split('\n').next().unwrap_or("");
    line.chars().take_while(|c| c.is_whitespace()).count()
}

/// What a `have` at token `i` turned out to be.
struct HaveParse {
    /// `None` for a `have` that is not a step: no type (`have h := e`), or a pattern (`have ⟨x, hx⟩ : P`).
    step: Option<Step>,
    /// The token after its proof.
    next: usize,
}

/// Reads `have name binders : type := proof` at token `i`; `None` when it has no `:=` or no proof
/// before the next line at or left of the `have`.
fn parse_have(lx: &Lexed, i: usize, limit: usize) -> Option<HaveParse> {
    let have_col = lx.col[i];
    let extent = lx.block_end(i + 1, limit, have_col);
    let mut k = i + 1;
    let mut pattern = false;
    let (name, stmt_from) = if k < extent && lx.toks[k].kind == TokenKind::Ident {
        k += 1;
        (lx.text(k - 1).to_string(), lx.toks[k - 1].span.end)
    } else {
        pattern = k < extent && lx.is_symbol(k, "⟨");
        ("this".to_string(), lx.toks[i].span.end)
    };
    // The statement ends at the first `:=` outside brackets, so binder defaults `(x : T := d)` stay in
    // it; a `:` outside brackets before that is the type ascription a step needs.
    let mut depth = 0;
    let mut typed = false;
    let mut assign = None;
    while k < extent {
        if depth == 0 && lx.is_symbol(k, ":=") {
            assign = Some(k);
            break;
        }
        typed |= depth == 0 && lx.is_symbol(k, ":");
        depth += lx.bracket(k);
        k += 1;
    }
    let a = assign?;
    let first = a + 1;
    if first >= extent {
        return None;
    }
    let by = lx.is_ident(first, "by");
    // A `by` block runs to the end of the indented extent; a term also stops at a `;` or a tactic
    // combinator outside brackets, which belong to the enclosing tactic sequence or term chain.
    let end = if by {
        extent
    } else {
        let mut d = 0;
        let mut j = first;
        while j < extent {
            if d == 0 && lx.toks[j].kind == TokenKind::Symbol && matches!(lx.text(j), ";" | "<;>" | "<|>") {
                break;
            }
            d += lx.bracket(j);
            if d < 0 {
                break;
            }
            j += 1;
        }
        j
    };
    if end == first {
        return None;
    }
    let step = (typed && !pattern).then(|| {
        let statement = lx.src[stmt_from..lx.toks[a].span.start].trim();
        let statement = statement.strip_prefix(':').unwrap_or(statement).trim();
        Step {
            name,
            statement: statement.to_string(),
            proof: lx.toks[first].span.start..lx.toks[end - 1].span.end,
            indent: have_col,
            mode: if by { ProofMode::Tactic } else { ProofMode::Term },
        }
    });
    Some(HaveParse { step, next: end })
}

/// Finds the theorem (`theorem` names it, else the last `theorem`/`lemma`) and its top-level steps.
///
/// Tactic mode: a step is a `have` that starts a line at the column of the proof's first tactic.
/// Term mode: the steps are the leading chain `have … := e` (newline or `;`) `have …` … body.
/// Only a `have` with a type is a step; an untyped `have h := e` is left in the proof text as an
/// ordinary tactic (in term mode the chain goes on past it), because there is no statement to prove
/// apart from `e`.
pub fn outline(code: &str, theorem: Option<&str>) -> Result<Outline, SketchError> {
    let lx = Lexed::new(code);
    let n = lx.toks.len();
    let decls: Vec<usize> = (0..n.saturating_sub(1))
        .filter(|&j| (lx.is_ident(j, "theorem") || lx.is_ident(j, "lemma")) && lx.toks[j + 1].kind == TokenKind::Ident)
        .collect();
    let decl = match theorem {
        Some(want) => *decls
            .iter()
            .find(|&&j| lx.text(j + 1) == want)
            .ok_or_else(|| SketchError::TheoremNotFound(want.to_string()))?,
        None => *decls.last().ok_or(SketchError::NoTheorem)?,
    };
    let name = lx.text(decl + 1).to_string();

    let mut depth = 0;
    let mut assign = None;
    for j in decl + 2..n {
        if lx.starts_command(j) {
            break;
        }
        if depth == 0 && lx.is_symbol(j, ":=") {
            assign = Some(j);
            break;
        }
        depth += lx.bracket(j);
    }
    let a = assign.ok_or_else(|| SketchError::NoAssign(name.clone()))?;
    let end = (a + 1..n).find(|&j| lx.starts_command(j)).unwrap_or(n);
    let first = a + 1;
    if first >= end {
        return Err(SketchError::EmptyProof(name));
    }
    let mode = if lx.is_ident(first, "by") { ProofMode::Tactic } else { ProofMode::Term };

    let mut steps = Vec::new();
    // Where the closing may start when there are no steps.
    let mut anchor = lx.toks[first].span.start;
    match mode {
        ProofMode::Tactic => {
            let base = first + 1;
            if base >= end {
                return Err(SketchError::EmptyProof(name));
            }
            anchor = lx.toks[first].span.end;
            let base_col = lx.col[base];
            let mut i = base;
            while i < end {
                let at_base = (i == base || lx.line_start[i]) && lx.col[i] == base_col;
                if at_base && lx.is_ident(i, "have") {
                    if let Some(HaveParse { step: Some(step), next }) = parse_have(&lx, i, end) {
                        steps.push(step);
                        i = next;
                        continue;
                    }
                }
                i += 1;
            }
        }
        ProofMode::Term => {
            let mut i = first;
            while i < end && lx.is_ident(i, "have") {
                let Some(parsed) = parse_have(&lx, i, end) else { break };
                steps.extend(parsed.step);
                i = parsed.next;
                if i < end && lx.is_symbol(i, ";") {
                    i += 1;
                }
            }
        }
    }

    let proof_end = lx.toks[end - 1].span.end;
    if let Some(last) = steps.last() {
        anchor = last.proof.end;
        // A `;` right after the last step separates it from the closing.
        let after = lx.index_at(anchor);
        if after < end && lx.is_symbol(after, ";") {
            anchor = lx.toks[after].span.end;
        }
    }
    let rest = &code[anchor..proof_end];
    let closing = proof_end - rest.trim_start().len()..proof_end;
    let nested_haves = steps
        .iter()
        .map(|s| {
            let (from, to) = (lx.index_at(s.proof.start), lx.index_at(s.proof.end));
            (from..to).filter(|&j| lx.is_ident(j, "have")).count()
        })
        .sum();
    Ok(Outline { name, mode, proof_start: lx.toks[first].span.start, steps, closing, nested_haves })
}

/// Every `sorry` token in the theorem's proof, in source order.
///
/// A `sorry` is a tactic when it stands where a tactic starts: first after `by`, at the column of
/// the innermost open tactic block, or after `;`, `<;>`, `·`, a tactic combinator such as `try`, or
/// the `=>` of a `case`/`next`/match alternative. Anywhere else (`exact sorry`, `:= sorry`,
/// `[sorry]`) it is a term. A step whose proof is exactly `by sorry` gives one term site covering
/// it, so the step's whole proof can be put back.
pub fn sorry_sites(code: &str, outline: &Outline) -> Vec<SorrySite> {
    let lx = Lexed::new(code);
    let from = lx.index_at(outline.proof_start);
    let to = lx.index_at(outline.proof_end());
    let mut sites = Vec::new();
    let mut depth = 0;
    // Open tactic blocks: (column of their tactics, bracket depth where they opened).
    let mut blocks: Vec<(usize, i32)> = Vec::new();
    let mut after_by = false;
    for j in from..to {
        let col = lx.col[j];
        if lx.line_start[j] {
            while blocks.last().is_some_and(|b| b.0 > col) {
                blocks.pop();
            }
        }
        let tactic_pos = if after_by {
            blocks.push((col, depth));
            true
        } else {
            blocks.last().is_some_and(|&(bcol, bdepth)| {
                bdepth == depth && ((lx.line_start[j] && col == bcol) || (j > from && follows_tactic_separator(&lx, j)))
            })
        };
        after_by = false;
        if lx.is_ident(j, "sorry") {
            sites.push(site_at(&lx, outline, j, tactic_pos));
        }
        if lx.is_ident(j, "by") {
            after_by = true;
        }
        depth += lx.bracket(j);
        while blocks.last().is_some_and(|b| b.1 > depth) {
            blocks.pop();
        }
    }
    sites
}

/// Whether the token before `j` ends where a new tactic begins.
fn follows_tactic_separator(lx: &Lexed, j: usize) -> bool {
    let p = j - 1;
    match lx.toks[p].kind {
        TokenKind::Symbol => match lx.text(p) {
            ";" | "<;>" | "<|>" | "·" => true,
            // `case h => sorry` and `| inl h => sorry` take tactics; `fun x => sorry` a term.
            "=>" => {
                let mut q = p;
                while q > 0 && !lx.line_start[q] {
                    q -= 1;
                    if lx.is_ident(q, "fun") || lx.is_symbol(q, "λ") {
                        return false;
                    }
                }
                true
            }
            _ => false,
        },
        TokenKind::Ident => matches!(lx.text(p), "try" | "all_goals" | "any_goals" | "repeat" | "focus"),
        _ => false,
    }
}

fn site_at(lx: &Lexed, outline: &Outline, j: usize, tactic_pos: bool) -> SorrySite {
    let span = lx.toks[j].span.clone();
    let step = outline.steps.iter().position(|s| s.proof.start <= span.start && span.end <= s.proof.end);
    if let Some(i) = step {
        let proof = &outline.steps[i].proof;
        let whole_by = j > 0 && lx.is_ident(j - 1, "by") && lx.toks[j - 1].span.start == proof.start;
        if span.end == proof.end && (whole_by || span.start == proof.start) {
            return SorrySite { range: proof.clone(), kind: SiteKind::Term, step, indent: outline.steps[i].indent };
        }
    }
    SorrySite {
        range: span.clone(),
        kind: if tactic_pos { SiteKind::Tactic } else { SiteKind::Term },
        step,
        indent: match step {
            Some(i) => outline.steps[i].indent,
            None => line_indent(lx.src, span.start),
        },
    }
}

/// The sketch: every step's proof replaced by `by sorry` (tactic step) or `sorry` (term step); the
/// closing and any tactics between steps stay.
pub fn hollow(code: &str, outline: &Outline) -> String {
    splice(code, hollow_edits(outline))
}

/// `hollow`, and the closing replaced by `sorry` too (appended on its own line when the proof ends
/// at its last step).
pub fn hollow_closing(code: &str, outline: &Outline) -> String {
    let mut edits = hollow_edits(outline);
    let closing = outline.closing.clone();
    if !closing.is_empty() {
        edits.push((closing, "sorry".to_string()));
    } else if let Some(last) = outline.steps.last() {
        edits.push((closing, format!("\n{}sorry", " ".repeat(last.indent))));
    }
    splice(code, edits)
}

fn hollow_edits(outline: &Outline) -> Vec<(Range<usize>, String)> {
    outline
        .steps
        .iter()
        .map(|s| {
            let text = match s.mode {
                ProofMode::Tactic => "by sorry",
                ProofMode::Term => "sorry",
            };
            (s.proof.clone(), text.to_string())
        })
        .collect()
}

/// Replaces each site's range with its proof (`None` leaves the site as is). All ranges refer to
/// `code` as given, so the edits are applied together; overlapping or out-of-bounds ranges are
/// skipped. Texts go in verbatim: re-indent them first with `reindent`.
pub fn fill(code: &str, sites: &[SorrySite], proofs: &[Option<String>]) -> String {
    let edits = sites.iter().zip(proofs).filter_map(|(s, p)| p.as_ref().map(|p| (s.range.clone(), p.clone())));
    splice(code, edits.collect())
}

/// Applies non-overlapping replacements given against the original text.
fn splice(code: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|e| (e.0.start, e.0.end));
    let mut out = String::with_capacity(code.len());
    let mut cursor = 0;
    for (range, text) in edits {
        let valid = cursor <= range.start
            && range.start <= range.end
            && range.end <= code.len()
            && code.is_char_boundary(range.start)
            && code.is_char_boundary(range.end);
        if !valid {
            continue;
        }
        out.push_str(&code[cursor..range.start]);
        out.push_str(&text);
        cursor = range.end;
    }
    out.push_str(&code[cursor..]);
    out
}

/// Shifts lines 2.. of `text` by `delta` columns (the first line goes where the caller puts it).
/// Indentation never goes below 0; whitespace-only lines become empty.
pub fn reindent(text: &str, delta: isize) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i == 0 {
            out.push_str(line);
            continue;
        }
        out.push('\n');
        if line.trim().is_empty() {
            continue;
        }
        let body = line.trim_start_matches(' ');
        let lead = (line.len() - body.len()) as isize;
        out.push_str(&" ".repeat((lead + delta).max(0) as usize));
        out.push_str(body);
    }
    out
}

/// The least indentation (chars) among non-blank lines 2.. of `text`; `None` when there are none.
pub fn min_continuation_indent(text: &str) -> Option<usize> {
    text.split('\n')
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.chars().take_while(|c| c.is_whitespace()).count())
        .min()
}

/// A statement's tokens joined by single spaces, comments dropped: a key for de-duplication.
pub fn normalize_statement(text: &str) -> String {
    let toks = tokenize(text);
    let words: Vec<&str> = toks.iter().map(|t| t.text(text)).collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TACTIC: &str = "theorem t (a b : ℕ) (h : a = b) : b = a ∧ a = a := by
  have h₁ : b = a := by
    sorry
  have h₂ : a = a := by sorry
  exact ⟨h₁, h₂⟩
";

    const TERM: &str = "theorem and_swap (p q : Prop) (hp : p) (hq : q) : q ∧ p :=
  have h1 : q := sorry
  have h2 : p := sorry
  And.intro h1 h2
";

    fn proof_text<'a>(code: &'a str, s: &Step) -> &'a str {
        &code[s.proof.clone()]
    }

    #[test]
    fn the_code_is_the_last_fenced_block_that_declares_a_theorem() {
        let text = concat!(
            "### Detailed Proof and Analysis\n",
            "We show b = a.\n",
            "\n",
            "### Step-by-Step Abstract Plan\n",
            "1. Symmetry.\n",
            "\n",
            "### Lean 4 Proof with `have` Statements\n",
            "```lean4\n",
            "theorem t : 1 = 1 := by\n",
            "  have h : 1 = 1 := by sorry\n",
            "  sorry\n",
            "```\n",
            "\n",
            "### Complete Lean 4 Proof\n",
            "```lean4\n",
            "theorem t : 1 = 1 := by\n",
            "  have h : 1 = 1 := by rfl\n",
            "  exact h\n",
            "```\n",
            "Done.\n",
            "```\n",
            "#eval 1\n",
            "```\n",
        );
        let answer = parse_answer(text);
        assert_eq!(answer.code.as_deref(), Some("theorem t : 1 = 1 := by\n  have h : 1 = 1 := by rfl\n  exact h\n"));
        assert!(answer.informal.starts_with("### Detailed Proof and Analysis"));
        assert!(answer.informal.ends_with("### Complete Lean 4 Proof"));
        assert!(answer.informal.contains("by sorry"));
    }

    #[test]
    fn an_unterminated_last_fence_runs_to_the_end_of_the_text() {
        let answer = parse_answer("Plan.\n```lean\nlemma l : True := by\n  have h : True := by");
        assert_eq!(answer.informal, "Plan.");
        assert_eq!(answer.code.as_deref(), Some("lemma l : True := by\n  have h : True := by"));
    }

    #[test]
    fn bare_fences_count_and_other_languages_do_not() {
        let answer = parse_answer("A\n```\ntheorem a : True := trivial\n```\nB\n```python\ntheorem = 1\n```\n");
        assert_eq!(answer.code.as_deref(), Some("theorem a : True := trivial\n"));
        assert_eq!(answer.informal, "A");
    }

    #[test]
    fn an_answer_without_a_theorem_block_has_no_code() {
        let answer = parse_answer("  I cannot do this.\n```lean4\n-- theorem in a comment\n#check Nat\n```\n");
        assert_eq!(answer.code, None);
        assert!(answer.informal.starts_with("I cannot"));
    }

    #[test]
    fn a_tactic_sketch_has_one_step_per_base_have_and_a_closing() {
        let o = outline(TACTIC, None).unwrap();
        assert_eq!(o.name, "t");
        assert_eq!(o.mode, ProofMode::Tactic);
        assert!(TACTIC[o.proof_start..].starts_with("by\n"));
        let names: Vec<&str> = o.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["h₁", "h₂"]);
        assert_eq!(o.steps[0].statement, "b = a");
        assert_eq!(proof_text(TACTIC, &o.steps[0]), "by\n    sorry");
        assert_eq!(proof_text(TACTIC, &o.steps[1]), "by sorry");
        assert!(o.steps.iter().all(|s| s.indent == 2 && s.mode == ProofMode::Tactic));
        assert_eq!(&TACTIC[o.closing.clone()], "exact ⟨h₁, h₂⟩");
        assert_eq!(o.nested_haves, 0);
    }

    #[test]
    fn a_term_sketch_is_a_chain_of_haves_then_a_body() {
        let o = outline(TERM, None).unwrap();
        assert_eq!(o.mode, ProofMode::Term);
        assert!(TERM[o.proof_start..].starts_with("have h1"));
        assert_eq!(o.steps.len(), 2);
        assert_eq!(o.steps[1].statement, "p");
        assert_eq!(proof_text(TERM, &o.steps[1]), "sorry");
        assert_eq!(o.steps[1].mode, ProofMode::Term);
        assert_eq!(&TERM[o.closing.clone()], "And.intro h1 h2");
    }

    #[test]
    fn term_chain_steps_may_be_separated_by_semicolons() {
        let code = "theorem s (p : Prop) (hp : p) : p ∧ p := have a : p := id hp; have b : p := a; ⟨a, b⟩";
        let o = outline(code, None).unwrap();
        assert_eq!(o.steps.iter().map(|s| proof_text(code, s)).collect::<Vec<_>>(), ["id hp", "a"]);
        assert_eq!(&code[o.closing.clone()], "⟨a, b⟩");
    }

    #[test]
    fn an_anonymous_have_is_named_this() {
        let code = "theorem t : True := by\n  have : 1 = 1 := rfl\n  trivial";
        let step = &outline(code, None).unwrap().steps[0];
        assert_eq!((step.name.as_str(), step.statement.as_str()), ("this", "1 = 1"));
        assert_eq!(step.mode, ProofMode::Term);
    }

    #[test]
    fn binders_are_part_of_the_statement() {
        let code = "theorem t : True := by\n  have h (x : ℕ) {y : ℕ} : x + y = y + x := by omega\n  trivial";
        let step = &outline(code, None).unwrap().steps[0];
        assert_eq!(step.name, "h");
        assert_eq!(step.statement, "(x : ℕ) {y : ℕ} : x + y = y + x");
        assert_eq!(proof_text(code, step), "by omega");
    }

    #[test]
    fn a_binder_default_assignment_is_not_the_proof_start() {
        let code = "theorem t (n : ℕ := 3) : n = n := by\n  have h (m : ℕ := 2) : m = m := rfl\n  rfl";
        let o = outline(code, None).unwrap();
        assert!(code[o.proof_start..].starts_with("by\n  have"));
        assert_eq!(o.steps[0].statement, "(m : ℕ := 2) : m = m");
        assert_eq!(proof_text(code, &o.steps[0]), "rfl");
    }

    #[test]
    fn comments_between_steps_belong_to_no_step() {
        let code = concat!(
            "theorem t : True := by\n",
            "  have a : True := by\n",
            "    -- inside\n",
            "    trivial\n",
            "    -- trailing\n",
            "\n",
            "  -- between\n",
            "  have b : True := trivial -- same line\n",
            "  /- block -/\n",
            "  exact b",
        );
        let o = outline(code, None).unwrap();
        assert_eq!(proof_text(code, &o.steps[0]), "by\n    -- inside\n    trivial");
        assert_eq!(proof_text(code, &o.steps[1]), "trivial");
        assert_eq!(&code[o.closing.clone()], "-- same line\n  /- block -/\n  exact b");
    }

    #[test]
    fn a_statement_may_span_lines() {
        let code =
            "theorem t : True := by\n  have big :\n      1 + 1 = 2 ∧\n      2 = 2 := by\n    norm_num\n  trivial";
        let step = &outline(code, None).unwrap().steps[0];
        assert_eq!(step.statement, "1 + 1 = 2 ∧\n      2 = 2");
        assert_eq!(proof_text(code, step), "by\n    norm_num");
    }

    #[test]
    fn columns_count_chars_and_ranges_count_bytes() {
        let code = concat!(
            "theorem t : True := by\n",
            "  · have hα : α = α := rfl\n",
            "    trivial\n",
            "  have hβ : (β : ℝ) = β := by\n",
            "    rfl\n",
            "  trivial",
        );
        let o = outline(code, None).unwrap();
        assert_eq!(o.steps.len(), 1, "the `have` after `·` is not at the base column");
        let step = &o.steps[0];
        assert_eq!(step.indent, 2);
        assert_eq!(step.proof.start, code.find("by\n    rfl").unwrap());
        let code = "theorem τ : True := by\n  have ε₁ : ∀ ε > 0, ε = ε := fun _ _ => rfl\n  trivial";
        let step = &outline(code, None).unwrap().steps[0];
        assert_eq!(proof_text(code, step), "fun _ _ => rfl");
        assert_eq!(step.name, "ε₁");
    }

    #[test]
    fn only_typed_haves_are_steps() {
        let code = concat!(
            "theorem t (h : 1 = 1) : True := by\n",
            "  have h2 := h\n",
            "  obtain ⟨x, hx⟩ : ∃ x, x = 1 := ⟨1, rfl⟩\n",
            "  let y : ℕ := 1\n",
            "  show True\n",
            "  suffices h3 : True by exact h3\n",
            "  have h4 : 2 = 2 := rfl\n",
            "  trivial",
        );
        let o = outline(code, None).unwrap();
        assert_eq!(o.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["h4"]);
    }

    #[test]
    fn an_untyped_have_does_not_break_a_term_chain() {
        let code = "theorem t (hp : p) : p :=\n  have a := hp\n  have b : p := a\n  b";
        let o = outline(code, None).unwrap();
        assert_eq!(o.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["b"]);
        assert_eq!(&code[o.closing.clone()], "b");
    }

    #[test]
    fn haves_inside_step_proofs_are_counted_not_decomposed() {
        let code = concat!(
            "theorem t : True := by\n",
            "  have a : True := by\n",
            "    have b : True := trivial\n",
            "    have := b\n",
            "    exact b\n",
            "  trivial",
        );
        let o = outline(code, None).unwrap();
        assert_eq!((o.steps.len(), o.nested_haves), (1, 2));
    }

    #[test]
    fn the_named_theorem_is_chosen_else_the_last() {
        let code = "lemma first : True := trivial\n\ntheorem second : True := by\n  trivial\n";
        assert_eq!(outline(code, None).unwrap().name, "second");
        let o = outline(code, Some("first")).unwrap();
        assert_eq!((o.name.as_str(), o.mode), ("first", ProofMode::Term));
        assert_eq!(&code[o.closing.clone()], "trivial", "the proof ends at the next command");
    }

    #[test]
    fn outline_errors_say_what_is_missing() {
        assert_eq!(outline("def x := 1", None), Err(SketchError::NoTheorem));
        assert_eq!(outline("theorem a : True := trivial", Some("b")), Err(SketchError::TheoremNotFound("b".into())));
        assert_eq!(outline("theorem a : True\n#check 1", None), Err(SketchError::NoAssign("a".into())));
        assert_eq!(outline("theorem a : True :=", None), Err(SketchError::EmptyProof("a".into())));
        assert_eq!(
            outline("theorem a : True := by\n\ntheorem b : True := trivial", Some("a")),
            Err(SketchError::EmptyProof("a".into()))
        );
    }

    #[test]
    fn a_step_proof_that_is_by_sorry_is_one_term_site() {
        let o = outline(TACTIC, None).unwrap();
        let sites = sorry_sites(TACTIC, &o);
        assert_eq!(sites.len(), 2);
        assert_eq!(&TACTIC[sites[0].range.clone()], "by\n    sorry");
        assert_eq!(&TACTIC[sites[1].range.clone()], "by sorry");
        assert!(sites.iter().all(|s| s.kind == SiteKind::Term && s.indent == 2));
        assert_eq!(sites.iter().map(|s| s.step).collect::<Vec<_>>(), [Some(0), Some(1)]);
    }

    #[test]
    fn a_bare_sorry_line_is_a_tactic_site() {
        let code = "theorem t : True := by\n  have h : True := by\n    simp\n    sorry\n  sorry";
        let o = outline(code, None).unwrap();
        let sites = sorry_sites(code, &o);
        assert_eq!(sites.len(), 2);
        assert_eq!((sites[0].kind, sites[0].step, sites[0].indent), (SiteKind::Tactic, Some(0), 2));
        assert_eq!((sites[1].kind, sites[1].step, sites[1].indent), (SiteKind::Tactic, None, 2));
        assert_eq!(&code[sites[1].range.clone()], "sorry");
    }

    #[test]
    fn a_sorry_in_an_argument_is_a_term_site() {
        let code = concat!(
            "theorem t : 1 = 1 := by\n",
            "  have h : 1 = 1 := by\n",
            "    exact sorry\n",
            "  nlinarith [sorry, h]\n",
            "  all_goals sorry",
        );
        let o = outline(code, None).unwrap();
        let kinds: Vec<SiteKind> = sorry_sites(code, &o).iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SiteKind::Term, SiteKind::Term, SiteKind::Tactic]);
    }

    #[test]
    fn a_sorry_after_a_case_arrow_is_a_tactic_and_after_fun_a_term() {
        let code = concat!(
            "theorem t : True := by\n",
            "  cases h with\n",
            "  | inl a => sorry\n",
            "  | inr b => exact (fun _ => sorry) 0\n",
            "  · sorry",
        );
        let o = outline(code, None).unwrap();
        let kinds: Vec<SiteKind> = sorry_sites(code, &o).iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SiteKind::Tactic, SiteKind::Term, SiteKind::Tactic]);
    }

    #[test]
    fn term_mode_sites_are_terms() {
        let code = "theorem t (hp : p) : p ∧ p :=\n  have a : p := sorry\n  have b : p := by sorry\n  sorry";
        let o = outline(code, None).unwrap();
        let sites = sorry_sites(code, &o);
        let got: Vec<(&str, SiteKind, Option<usize>)> =
            sites.iter().map(|s| (&code[s.range.clone()], s.kind, s.step)).collect();
        assert_eq!(
            got,
            [
                ("sorry", SiteKind::Term, Some(0)),
                ("by sorry", SiteKind::Term, Some(1)),
                ("sorry", SiteKind::Term, None)
            ]
        );
    }

    #[test]
    fn sorries_outside_the_proof_are_not_sites() {
        let code =
            "-- sorry\ntheorem t (h : \"sorry\" = \"sorry\") : True := by\n  trivial\n\ntheorem u : True := sorry";
        let o = outline(code, Some("t")).unwrap();
        assert!(sorry_sites(code, &o).is_empty());
    }

    #[test]
    fn hollow_replaces_step_proofs_and_keeps_the_rest() {
        let code =
            "theorem t : True := by\n  have a : 1 = 1 := by\n    norm_num\n  have b : 2 = 2 := rfl\n  intro\n  trivial";
        let o = outline(code, None).unwrap();
        assert_eq!(
            hollow(code, &o),
            "theorem t : True := by\n  have a : 1 = 1 := by sorry\n  have b : 2 = 2 := sorry\n  intro\n  trivial"
        );
        assert_eq!(
            hollow_closing(code, &o),
            "theorem t : True := by\n  have a : 1 = 1 := by sorry\n  have b : 2 = 2 := sorry\n  sorry"
        );
    }

    #[test]
    fn hollow_closing_adds_a_sorry_line_when_the_proof_ends_at_a_step() {
        let code = "theorem t : True := by\n  have a : True := by\n    trivial\n";
        let o = outline(code, None).unwrap();
        assert_eq!(hollow_closing(code, &o), "theorem t : True := by\n  have a : True := by sorry\n  sorry\n");
    }

    #[test]
    fn hollow_then_fill_restores_a_term_proof() {
        let code = concat!(
            "theorem and_swap (p q : Prop) (hp : p) (hq : q) : q ∧ p :=\n",
            "  have h1 : q := hq\n",
            "  have h2 : p := by\n",
            "    exact hp\n",
            "  And.intro h1 h2\n",
        );
        let o = outline(code, None).unwrap();
        let sketch = hollow(code, &o);
        assert_eq!(
            sketch,
            concat!(
                "theorem and_swap (p q : Prop) (hp : p) (hq : q) : q ∧ p :=\n",
                "  have h1 : q := sorry\n",
                "  have h2 : p := by sorry\n",
                "  And.intro h1 h2\n",
            )
        );
        let sketch_outline = outline(&sketch, None).unwrap();
        let sites = sorry_sites(&sketch, &sketch_outline);
        let proofs: Vec<Option<String>> = o.steps.iter().map(|s| Some(code[s.proof.clone()].to_string())).collect();
        assert_eq!(fill(&sketch, &sites, &proofs), code);
    }

    #[test]
    fn fill_leaves_sites_without_a_proof() {
        let code = "theorem t : True := by\n  have a : True := by sorry\n  have b : True := by sorry\n  sorry";
        let sites = sorry_sites(code, &outline(code, None).unwrap());
        let filled = fill(code, &sites, &[None, Some("trivial".into()), Some("exact a".into())]);
        assert_eq!(
            filled,
            "theorem t : True := by\n  have a : True := by sorry\n  have b : True := trivial\n  exact a"
        );
    }

    #[test]
    fn fill_skips_ranges_that_do_not_fit_the_code() {
        let sites = [SorrySite { range: 3..99, kind: SiteKind::Term, step: None, indent: 0 }];
        assert_eq!(fill("abc", &sites, &[Some("x".into())]), "abc");
    }

    #[test]
    fn reindent_shifts_continuation_lines_only() {
        assert_eq!(reindent("by\n  simp\n\n    ring", 2), "by\n    simp\n\n      ring");
        assert_eq!(reindent("by\n  simp\n   \n ring", -2), "by\nsimp\n\nring");
        assert_eq!(reindent("  first", 4), "  first");
    }

    #[test]
    fn min_continuation_indent_ignores_the_first_and_blank_lines() {
        assert_eq!(min_continuation_indent("x\n    a\n\n  b\n      c"), Some(2));
        assert_eq!(min_continuation_indent("by simp"), None);
        assert_eq!(min_continuation_indent("by simp\n   \n"), None);
    }

    #[test]
    fn normalized_statements_ignore_layout_and_comments() {
        assert_eq!(normalize_statement("∀ x : ℕ,\n    x = x -- trivially"), "∀ x : ℕ , x = x");
        assert_eq!(normalize_statement("(a+b)  =  c"), normalize_statement("( a + b ) = c"));
    }

    #[test]
    fn modes_and_kinds_serialize_in_snake_case() {
        assert_eq!(serde_json::to_string(&ProofMode::Tactic).unwrap(), "\"tactic\"");
        assert_eq!(serde_json::to_string(&SiteKind::Term).unwrap(), "\"term\"");
    }

    #[test]
    fn a_cot_answer_gives_its_complete_proof_not_its_sketch() {
        let sketch = "```lean4\ntheorem t : True := by\n  have h : True := by sorry\n  sorry\n```";
        let full = "```lean4\ntheorem t : True := by\n  trivial\n```";
        let answer =
            format!("### Lean 4 Proof with `have` Statements\n{sketch}\n### Complete Lean 4 Proof\n{full}\nDone.");
        let (code, choice) = prover_code(&answer).unwrap();
        assert!(code.contains("trivial") && !code.contains("sorry"), "{code}");
        assert_eq!(choice, BlockChoice { index: 1, of: 2, rule: BlockRule::CompleteHeading });
        // Without the heading, the last block with no `sorry`, even one the token limit cut off.
        let (_, choice) = prover_code(&format!("{full}\n{sketch}")).unwrap();
        assert_eq!((choice.index, choice.rule), (0, BlockRule::LastWithoutSorry));
        let (code, choice) = prover_code(&format!("{sketch}\n```lean4\ntheorem t : True := by\n  tri")).unwrap();
        assert_eq!((choice.index, choice.rule), (1, BlockRule::LastWithoutSorry), "{code}");
        let (_, choice) = prover_code(sketch).unwrap();
        assert_eq!((choice.index, choice.of, choice.rule), (0, 1, BlockRule::Last));
        assert!(prover_code("no code here").is_none());
    }
}
