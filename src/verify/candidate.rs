//! What gets checked: a verification request (reference statement + candidate), the Lean document
//! built from it with a trusted epilogue, and the map from document positions back to the
//! candidate's own coordinates.

use serde::{Deserialize, Serialize};

use super::gates::{check_body, check_file, split_preamble, Gate, GateConfig, Preamble};
use crate::lean::lexer::{tokenize, Token};
use crate::lean::source::{declared_theorems, header_end, normalize_header};
use crate::text::LineIndex;

/// One input line of `subgoal verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyInput {
    pub name: String,
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub formal_statement: String,
    /// Proof text appended after `formal_statement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// A whole candidate file that must prove `formal_statement`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    #[error("line {line}: not valid JSON: {detail}")]
    Json { line: usize, detail: String },
    #[error("line {line}: {detail}")]
    Field { line: usize, detail: String },
}

/// Why no document could be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// The request itself is malformed (verdict `invalid_input`).
    #[error("{0}")]
    Invalid(String),
    /// The candidate was refused before Lean saw it (verdict `rejected`).
    #[error("{1}")]
    Gate(Gate, String),
}

impl From<&str> for BuildError {
    fn from(s: &str) -> Self {
        BuildError::Invalid(s.to_string())
    }
}

impl From<String> for BuildError {
    fn from(s: String) -> Self {
        BuildError::Invalid(s)
    }
}

/// Which part of the checked document a position lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    Header,
    /// The trusted copy of the reference statement, elaborated before any candidate text.
    Reference,
    /// Helper theorems a whole-file candidate declared before its restatement.
    Helpers,
    Statement,
    Candidate,
    Epilogue,
}

/// The Lean document for one request.
#[derive(Debug, Clone)]
pub struct Document {
    pub text: String,
    /// Import header, normalised: documents with equal keys can share a warm worker.
    pub header_key: String,
    /// Byte length of the import header at the start of `text`.
    pub header_end: usize,
    /// Names whose axioms the trusted epilogue prints.
    pub theorems: Vec<String>,
    /// The trusted reference axiom the epilogue compares the theorem with (statement gate).
    pub reference: Option<String>,
    /// Byte ranges in `text`.
    pub reference_start: usize,
    /// The candidate's helper theorems (an empty range when it has none) end at `statement_start`.
    pub helpers_start: usize,
    pub statement_start: usize,
    /// Just past the reference statement (where the proof begins).
    pub proof_start: usize,
    pub candidate_start: usize,
    pub candidate_end: usize,
    pub epilogue_start: usize,
    /// (line, column) of the candidate region's start in the candidate's own text (non-zero when
    /// the proof was cut out of a whole-file candidate).
    pub candidate_origin: (usize, usize),
    /// Gates this document is checked by (the re-check is added by the verifier).
    pub gates: Vec<Gate>,
    /// The import header came from the candidate (a whole file, or code under an empty
    /// reference header): Lean's tokens there are checked too.
    pub candidate_chose_header: bool,
    /// The theorem is `private` (Lean prints its name mangled).
    pub private: bool,
    /// Document offsets of the `theorem`/`lemma` keywords that start helper declarations (the
    /// only places a candidate may declare anything).
    pub helper_keywords: Vec<usize>,
}

/// A whole-file candidate's helpers as the document holds them.
#[derive(Default)]
struct Helpers {
    text: String,
    /// Offsets of the declaration keywords in `text`.
    keywords: Vec<usize>,
    names: Vec<String>,
}

impl Helpers {
    /// Each helper of `preamble` (a slice of `src`) in order, under the `open` commands written
    /// before it, as `open … in` so they scope that declaration only.
    fn from_preamble(src: &str, preamble: &Preamble) -> Helpers {
        let mut h = Helpers::default();
        for d in &preamble.helpers {
            let opens: String = preamble
                .directives
                .iter()
                .filter(|r| r.end <= d.range.start)
                .map(|r| preamble_opens(&src[r.clone()]))
                .collect();
            h.text.push_str(&opens);
            h.keywords.push(h.text.len());
            h.text.push_str(&src[d.range.clone()]);
            h.text.push_str("\n\n");
            h.names.push(d.name.clone());
        }
        h
    }
}

/// Bytes at the start of `preamble` that repeat, token for token, the part of `header` after its
/// imports (0 when they do not, or when that part is empty).
pub fn copied_preamble(preamble: &str, header: &str) -> usize {
    let reference = &header[header_end(header)..];
    let want = tokenize(reference);
    if want.is_empty() {
        return 0;
    }
    let have = tokenize(preamble);
    if have.len() < want.len() || !have.iter().zip(&want).all(|(a, b)| a.text(preamble) == b.text(reference)) {
        return 0;
    }
    have[want.len() - 1].span.end
}

/// The theorem name a formal statement declares.
pub fn statement_name(formal_statement: &str) -> Option<String> {
    declared_theorems(formal_statement).into_iter().next()
}

/// A reference statement cut at its tokens: everything up to its final `:=` (and `by`).
struct Statement<'a> {
    src: &'a str,
    toks: Vec<Token>,
    /// Index of the final `:=` token.
    assign: usize,
}

impl<'a> Statement<'a> {
    fn parse(src: &'a str) -> Option<Statement<'a>> {
        let toks = tokenize(src);
        let mut n = toks.len();
        if n > 0 && toks[n - 1].text(src) == "by" {
            n -= 1;
        }
        (n > 0 && toks[n - 1].text(src) == ":=").then(|| Statement { src, assign: n - 1, toks })
    }

    fn words(&self) -> impl Iterator<Item = &str> {
        self.toks[..self.assign].iter().map(|t| t.text(self.src))
    }

    /// The statement through its `:=`, without a trailing `by`.
    fn through_assign(&self) -> &'a str {
        &self.src[..self.toks[self.assign].span.end]
    }

    /// The trusted reference: whatever precedes the declaration keyword (`open … in`, doc
    /// comments, modifiers), then `axiom NAME` + the statement's binders and type. `NAME` sits in
    /// the theorem's namespace, so the signature resolves names as the theorem's does (a
    /// declaration `A.foo` reads its signature inside namespace `A`).
    fn reference_axiom(&self, name: &str) -> Option<(String, String)> {
        let kw = self.toks.iter().position(|t| matches!(t.text(self.src), "theorem" | "lemma"))?;
        let name_tok = self.toks.get(kw + 1)?;
        // Scoping prefixes (`open … in`, `set_option … in`) and the `private`/`protected`
        // modifier carry over; anything else before the keyword (attributes, other commands
        // the statement text happens to hold) does not.
        let words: Vec<&str> = self.toks[..kw].iter().map(|t| t.text(self.src)).collect();
        let mut prefix = String::new();
        let mut i = 0;
        while i < words.len() {
            if matches!(words[i], "open" | "set_option") {
                if let Some(end) = words[i..].iter().position(|w| *w == "in") {
                    prefix.push_str(&words[i..=i + end].join(" "));
                    prefix.push('\n');
                    i += end + 1;
                    continue;
                }
            }
            if matches!(words[i], "private" | "protected") && i + 1 == words.len() {
                prefix.push_str(words[i]);
                prefix.push(' ');
            }
            i += 1;
        }
        let namespace = name_tok.text(self.src).rsplit_once('.').map(|(ns, _)| format!("{ns}.")).unwrap_or_default();
        let full = format!("{namespace}{name}");
        let sig = &self.src[name_tok.span.end..self.toks[self.assign].span.start];
        Some((format!("{prefix}axiom {full}{}\n", sig.trim_end()), full))
    }

    /// Whether the declaration is `private`.
    fn is_private(&self) -> bool {
        let kw = self.toks.iter().position(|t| matches!(t.text(self.src), "theorem" | "lemma")).unwrap_or(0);
        self.toks[..kw].iter().any(|t| t.text(self.src) == "private")
    }

    /// The statement through its last token (`:=` or `by`): a trailing comment is dropped, so the
    /// proof cannot land inside it.
    fn through_last_token(&self) -> &'a str {
        // `parse` checked that the last token is `:=` or `by`.
        self.toks.last().map_or(self.src, |t| &self.src[..t.span.end])
    }
}

/// Where the reference statement's tokens occur in `code`, followed by `:=`: (start byte of the
/// statement, end byte of the `:=`).
fn find_statement(code: &str, code_toks: &[Token], stmt: &Statement) -> Option<(usize, usize)> {
    let want: Vec<&str> = stmt.words().collect();
    if want.is_empty() {
        return None;
    }
    let have: Vec<&str> = code_toks.iter().map(|t| t.text(code)).collect();
    (0..have.len().saturating_sub(want.len()))
        .find(|&i| have[i..i + want.len()] == want[..] && have[i + want.len()] == ":=")
        .map(|i| (code_toks[i].span.start, code_toks[i + want.len()].span.end))
}

/// A fresh name for the reference axiom: a candidate cannot guess it.
fn reference_name() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("_subgoal_reference_{:016x}", h.finish())
}

fn shape<T>(r: Result<T, String>) -> Result<T, BuildError> {
    r.map_err(|e| BuildError::Gate(Gate::Shape, e))
}

impl Document {
    /// Builds the document from trusted parts: the reference header, a trusted copy of the
    /// reference statement (as an axiom, elaborated before any candidate text), the reference
    /// statement with the candidate's proof, then a trusted epilogue that checks the theorem
    /// against the reference and prints its axioms. A whole-file candidate contributes only its
    /// proof, cut after its restatement of the reference statement. Refusals of the shape gate
    /// and the statement's textual match happen here, before Lean runs.
    pub fn build(input: &VerifyInput, cfg: &GateConfig) -> Result<Document, BuildError> {
        match (&input.proof, &input.code) {
            (Some(_), Some(_)) => Err("give either \"proof\" or \"code\", not both".into()),
            (None, None) => Err("missing \"proof\" or \"code\"".into()),
            (Some(proof), None) => {
                let stmt = reference(input)?;
                shape(check_body(proof, cfg))?;
                Self::assemble(&input.header, &stmt, stmt.through_last_token(), &Helpers::default(), "", proof, (0, 0))
            }
            (None, Some(code)) if input.formal_statement.trim().is_empty() => Self::whole_file(code, cfg),
            (None, Some(code)) => {
                let stmt = reference(input)?;
                let header_len = header_end(code);
                let statement_gate = |m: String| BuildError::Gate(Gate::Statement, format!("statement gate: {m}"));
                // A candidate with no imports of its own is read under the reference header.
                if !input.header.trim().is_empty()
                    && header_len > 0
                    && normalize_header(&code[..header_len])
                        != normalize_header(&input.header[..header_end(&input.header)])
                {
                    return Err(statement_gate("the candidate's imports differ from \"header\"".into()));
                }
                let toks = tokenize(code);
                let Some((at, assign_end)) = find_statement(code, &toks, &stmt) else {
                    let name = statement_name(&input.formal_statement).unwrap_or_default();
                    return Err(statement_gate(format!(
                        "the candidate does not state `{name}` exactly as \"formal_statement\" (token for token)"
                    )));
                };
                // Between the imports and the statement only `open`/allowed options may stand;
                // they are discarded: the document is rebuilt from the reference header.
                // A candidate that copied the reference header's own preamble (its `def`s,
                // `abbrev`s, options) may keep it: it is discarded with the rest, and the reference
                // header stands. Only what follows it is checked.
                let preamble_start = header_len + copied_preamble(&code[header_len..at], &input.header);
                let preamble_text = &code[preamble_start..at];
                let preamble = shape(split_preamble(preamble_text, cfg))?;
                let body = &code[assign_end..];
                shape(check_body(body, cfg))?;
                let index = LineIndex::new(code);
                let origin = index.line_char_of_offset(assign_end);
                // With no reference header, the candidate's own imports (and only those) stand.
                let header = if input.header.trim().is_empty() { &code[..header_len] } else { input.header.as_str() };
                let opens: String =
                    preamble.directives.iter().map(|r| preamble_opens(&preamble_text[r.clone()])).collect();
                let helpers = Helpers::from_preamble(preamble_text, &preamble);
                let mut doc = Self::assemble(header, &stmt, stmt.through_assign(), &helpers, &opens, body, origin)?;
                doc.candidate_chose_header = input.header.trim().is_empty();
                Ok(doc)
            }
        }
    }

    fn assemble(
        header: &str,
        stmt: &Statement,
        statement: &str,
        helpers: &Helpers,
        opens: &str,
        body: &str,
        candidate_origin: (usize, usize),
    ) -> Result<Document, BuildError> {
        let name = statement_name(stmt.src).ok_or(NO_THEOREM)?;
        let (axiom, reference) = stmt.reference_axiom(&reference_name()).ok_or(NO_THEOREM)?;
        let mut text = header.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let reference_start = text.len();
        text.push_str(&axiom);
        // Helpers come after the trusted reference (so they cannot change how it elaborates)
        // and before the statement the epilogue compares with it.
        let helpers_start = text.len();
        text.push_str(&helpers.text);
        let statement_start = text.len();
        text.push_str(statement);
        let proof_start = text.len();
        // A space between statement and proof, so neither can extend the other's last token
        // (`:= by` + `_elab …` would read as `by_elab`).
        text.push(' ');
        // `open` commands a whole-file candidate wrote before its statement apply to its proof
        // only (`open A in …`), never to the trusted statement.
        text.push_str(opens);
        let candidate_start = text.len();
        text.push_str(body);
        let candidate_end = text.len();
        text.push_str("\n\n");
        let epilogue_start = text.len();
        // The epilogue names the theorem by its full name from the root, so no `open` in the
        // header or alias can make it mean another constant (a private name resolves only as
        // written).
        let private = stmt.is_private();
        let full = format!("{}{name}", current_namespace(header));
        let target = if private { name.clone() } else { format!("_root_.{full}") };
        // The statement gate: the kernel must accept the theorem at the reference's type.
        text.push_str(&format!("example : type_of% @{reference} := @{target}\n"));
        text.push_str(&format!("#print axioms {target}\n"));
        // Every helper answers to the axioms gate too, used or not.
        let namespace = current_namespace(header);
        let helper_names: Vec<String> = helpers.names.iter().map(|n| format!("{namespace}{n}")).collect();
        for n in &helper_names {
            text.push_str(&format!("#print axioms _root_.{n}\n"));
        }
        let header_end = header_end(header);
        Ok(Document {
            header_key: normalize_header(&header[..header_end]),
            text,
            header_end,
            theorems: std::iter::once(if private { name } else { full }).chain(helper_names).collect(),
            reference: Some(reference),
            reference_start,
            helpers_start,
            statement_start,
            proof_start,
            candidate_start,
            candidate_end,
            epilogue_start,
            candidate_origin,
            gates: vec![Gate::Shape, Gate::Statement, Gate::Axioms],
            candidate_chose_header: false,
            private,
            helper_keywords: helpers.keywords.iter().map(|k| helpers_start + k).collect(),
        })
    }

    /// A file checked as written (no reference statement): the shape gate over everything after
    /// its imports, and the axioms of every theorem it declares.
    fn whole_file(code: &str, cfg: &GateConfig) -> Result<Document, BuildError> {
        let header_len = header_end(code);
        shape(check_file(&code[header_len..], cfg))?;
        let theorems = declared_theorems(code);
        if theorems.is_empty() {
            return Err("the candidate declares no theorem".into());
        }
        let mut text = code.to_string();
        let end = text.len();
        text.push_str("\n\n");
        let epilogue_start = text.len();
        for t in &theorems {
            text.push_str(&format!("#print axioms _root_.{t}\n"));
        }
        Ok(Document {
            header_key: normalize_header(&text[..header_len]),
            text,
            header_end: header_len,
            theorems,
            reference: None,
            reference_start: 0,
            helpers_start: header_len,
            statement_start: header_len,
            proof_start: header_len,
            candidate_start: 0,
            candidate_end: end,
            epilogue_start,
            candidate_origin: (0, 0),
            gates: vec![Gate::Shape, Gate::Axioms],
            candidate_chose_header: true,
            private: false,
            helper_keywords: vec![],
        })
    }

    /// The file Lean checked, less the trusted reference axiom and epilogue: the header, then
    /// the helpers, the statement and the proof exactly as elaborated. A `proved` document's
    /// source is a complete proof on its own.
    pub fn checked_parts(&self) -> (&str, &str) {
        if self.reference.is_none() {
            return (&self.text[..self.header_end], &self.text[self.header_end..self.candidate_end]);
        }
        (&self.text[..self.reference_start], &self.text[self.helpers_start..self.candidate_end])
    }

    /// Whether the candidate declared helper theorems.
    pub fn has_helpers(&self) -> bool {
        self.helpers_start < self.statement_start
    }

    pub fn checked_source(&self) -> String {
        let (header, main) = self.checked_parts();
        format!("{header}{main}\n")
    }

    pub fn region_of(&self, offset: usize) -> Region {
        if offset >= self.epilogue_start {
            Region::Epilogue
        } else if offset >= self.candidate_start && offset <= self.candidate_end {
            Region::Candidate
        } else if offset >= self.statement_start {
            Region::Statement
        } else if offset >= self.helpers_start && self.reference.is_some() {
            Region::Helpers
        } else if offset >= self.reference_start && self.reference.is_some() {
            Region::Reference
        } else {
            Region::Header
        }
    }

    /// (1-based line, 0-based char column) of a document byte offset, in the coordinates of the
    /// region it lies in (the candidate's own text for candidate positions). `index` is the
    /// document's `LineIndex`, built once per document by the caller.
    pub fn local_position(&self, index: &LineIndex, offset: usize) -> (Region, usize, usize) {
        let region = self.region_of(offset);
        let (l, c) = self.position_in(index, region, offset);
        (region, l, c)
    }

    /// Like `local_position`, in a given region's coordinates; offsets outside it are clamped
    /// (an end position past the region's end stays at its end).
    pub fn position_in(&self, index: &LineIndex, region: Region, offset: usize) -> (usize, usize) {
        let (base, end) = match region {
            Region::Header => (0, if self.reference.is_some() { self.reference_start } else { self.statement_start }),
            Region::Reference => (self.reference_start, self.helpers_start),
            Region::Helpers => (self.helpers_start, self.statement_start),
            Region::Statement => (self.statement_start, self.candidate_start),
            Region::Candidate => (self.candidate_start, self.candidate_end),
            Region::Epilogue => (self.epilogue_start, self.text.len()),
        };
        let offset = offset.clamp(base, end.max(base));
        let (l0, c0) = index.line_char_of_offset(base);
        let (l, c) = index.line_char_of_offset(offset);
        let (line, col) = (l - l0, if l == l0 { c - c0 } else { c });
        if region == Region::Candidate {
            let (ol, oc) = self.candidate_origin;
            return (line + ol + 1, if line == 0 { col + oc } else { col });
        }
        (line + 1, col)
    }
}

impl Document {
    /// The document byte offset of a position given in `region`'s coordinates (the inverse of
    /// `position_in`).
    pub fn offset_in(&self, index: &LineIndex, region: Region, line: usize, column: usize) -> usize {
        let base = match region {
            Region::Header => 0,
            Region::Reference => self.reference_start,
            Region::Helpers => self.helpers_start,
            Region::Statement => self.statement_start,
            Region::Candidate => self.candidate_start,
            Region::Epilogue => self.epilogue_start,
        };
        let (l0, c0) = index.line_char_of_offset(base);
        let (mut line0, mut col) = (line.saturating_sub(1), column);
        if region == Region::Candidate {
            let (ol, oc) = self.candidate_origin;
            line0 = line0.saturating_sub(ol);
            if line0 == 0 {
                col = col.saturating_sub(oc);
            }
        }
        let col = if line0 == 0 { c0 + col } else { col };
        index.offset_of_line_char(l0 + line0, col)
    }

    /// Where a document offset lies in `checked_source`, if it lies in a part of it (not in the
    /// trusted reference or epilogue).
    pub fn source_offset(&self, offset: usize) -> Option<usize> {
        if self.reference.is_none() {
            return (offset <= self.candidate_end).then_some(offset);
        }
        if offset < self.reference_start {
            Some(offset)
        } else if offset >= self.helpers_start && offset <= self.candidate_end {
            Some(offset - (self.helpers_start - self.reference_start))
        } else {
            None
        }
    }
}

/// The namespace the header leaves open (`namespace A.B` … without its `end`), as `A.B.`.
fn current_namespace(header: &str) -> String {
    let rest = &header[header_end(header)..];
    let words: Vec<&str> = tokenize(rest).iter().map(|t| t.text(rest)).collect();
    let mut scopes: Vec<Option<&str>> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        match *w {
            "namespace" => scopes.push(words.get(i + 1).copied()),
            "section" => scopes.push(None),
            "end" => {
                scopes.pop();
            }
            _ => {}
        }
    }
    scopes.into_iter().flatten().map(|n| format!("{n}.")).collect()
}

/// `open … in ` for each `open` command of a candidate's preamble: its names and
/// `renaming`/`hiding` clauses up to the end of its line or the next command (the preamble passed
/// `check_preamble`; the text only ever scopes the proof).
fn preamble_opens(preamble: &str) -> String {
    let toks = tokenize(preamble);
    let mut out = String::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].text(preamble) != "open" {
            i += 1;
            continue;
        }
        let line_end = preamble[toks[i].span.end..].find('\n').map_or(preamble.len(), |n| toks[i].span.end + n);
        let mut words = Vec::new();
        let mut j = i + 1;
        while j < toks.len() && toks[j].span.start < line_end {
            let w = toks[j].text(preamble);
            if matches!(w, "open" | "set_option" | "universe" | "noncomputable" | "section" | "in") {
                break;
            }
            words.push(w);
            j += 1;
        }
        if !words.is_empty() {
            out.push_str(&format!("open {} in ", words.join(" ")));
        }
        // `open X in` before the statement: its `in` is consumed here.
        if toks.get(j).is_some_and(|t| t.text(preamble) == "in") {
            j += 1;
        }
        i = j;
    }
    out
}

const NO_THEOREM: &str = "\"formal_statement\" declares no theorem (expected `theorem NAME …`)";

/// The request's reference statement, which must declare a theorem and end at `:=` (the proof
/// is appended to it: a statement that does not end there would let the candidate extend the
/// theorem's type).
fn reference(input: &VerifyInput) -> Result<Statement<'_>, BuildError> {
    statement_name(&input.formal_statement).ok_or(NO_THEOREM)?;
    Statement::parse(&input.formal_statement).ok_or_else(|| "\"formal_statement\" must end with `:=` or `:= by`".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(i: &VerifyInput) -> Result<Document, BuildError> {
        Document::build(i, &GateConfig::default())
    }

    fn proof_input(proof: &str) -> VerifyInput {
        VerifyInput {
            name: "t".into(),
            header: "prelude\nimport SubgoalFixture\n".into(),
            formal_statement: "theorem t (p : Prop) (hp : p) : p :=".into(),
            proof: Some(proof.into()),
            code: None,
        }
    }

    #[test]
    fn proof_follows_a_trusted_reference_and_statement_with_a_trusted_epilogue() {
        let d = build(&proof_input(" hp")).unwrap();
        let r = d.reference.clone().unwrap();
        assert!(d
            .text
            .starts_with(&format!("prelude\nimport SubgoalFixture\naxiom {r} (p : Prop) (hp : p) : p\ntheorem t")));
        assert!(
            d.text.ends_with(&format!("\n\nexample : type_of% @{r} := @_root_.t\n#print axioms _root_.t\n")),
            "{}",
            d.text
        );
        assert_eq!(&d.text[d.candidate_start..d.candidate_end], " hp");
        assert_eq!(d.header_key, "prelude import SubgoalFixture");
    }

    fn code_input(header: &str, code: &str) -> VerifyInput {
        VerifyInput {
            name: "t".into(),
            header: header.into(),
            formal_statement: "theorem t (p : Prop) (hp : p) : p :=".into(),
            proof: None,
            code: Some(code.into()),
        }
    }

    #[test]
    fn a_candidate_may_repeat_the_reference_headers_definitions() {
        let header =
            "prelude\nimport SubgoalFixture\nnoncomputable def f : Nat := 1\nabbrev s_solution : Nat := sorry\n";
        let code = format!("{header}\n/-- doc -/\ntheorem t (p : Prop) (hp : p) : p := hp");
        let d = build(&code_input(header, &code)).unwrap();
        assert!(d.text.starts_with(header) && d.text.matches("def f").count() == 1, "{}", d.text);
        // A definition of its own is still refused.
        let own = format!("{header}def g : Nat := 2\ntheorem t (p : Prop) (hp : p) : p := hp");
        assert!(matches!(build(&code_input(header, &own)), Err(BuildError::Gate(Gate::Shape, _))));
    }

    #[test]
    fn a_candidate_without_imports_is_read_under_the_reference_header() {
        let d =
            build(&code_input("prelude\nimport SubgoalFixture\n", "theorem t (p : Prop) (hp : p) : p := hp")).unwrap();
        assert!(d.text.starts_with("prelude\nimport SubgoalFixture\n"));
        let other = build(&code_input(
            "prelude\nimport SubgoalFixture\n",
            "prelude\nimport Other\ntheorem t (p : Prop) (hp : p) : p := hp",
        ));
        assert!(matches!(other, Err(BuildError::Gate(Gate::Statement, _))));
    }

    #[test]
    fn reference_names_differ_between_documents() {
        assert_ne!(build(&proof_input(" hp")).unwrap().reference, build(&proof_input(" hp")).unwrap().reference);
    }

    #[test]
    fn candidate_positions_are_relative_to_the_candidate() {
        let d = build(&proof_input("\n  𝔽x\n  bad")).unwrap();
        let idx = LineIndex::new(&d.text);
        let off = d.text.find("bad").unwrap();
        assert_eq!(d.local_position(&idx, off), (Region::Candidate, 3, 2));
        let off = d.candidate_start + d.text[d.candidate_start..].find('x').unwrap();
        assert_eq!(d.local_position(&idx, off), (Region::Candidate, 2, 3));
    }

    #[test]
    fn code_without_statement_checks_every_declared_theorem() {
        let input = VerifyInput {
            name: "f".into(),
            header: String::new(),
            formal_statement: String::new(),
            proof: None,
            code: Some("prelude\ntheorem a : x := y\ntheorem b : x := y".into()),
        };
        let d = build(&input).unwrap();
        assert_eq!(d.theorems, vec!["a", "b"]);
        assert_eq!(d.gates, vec![Gate::Shape, Gate::Axioms]);
    }

    #[test]
    fn statement_not_ending_at_assign_is_refused() {
        let mut i = proof_input(" → p := fun h => h");
        i.formal_statement = "theorem t (p : Prop) : p".into();
        assert!(build(&i).unwrap_err().to_string().contains(":="));
    }

    #[test]
    fn code_must_state_the_reference_statement_under_the_reference_imports() {
        let mut i = proof_input("");
        i.proof = None;
        i.code = Some("prelude\nimport SubgoalFixture\ntheorem t : True := True.intro\n".into());
        assert!(matches!(build(&i), Err(BuildError::Gate(Gate::Statement, _))));
        i.code = Some("prelude\nimport Other\ntheorem t (p : Prop) (hp : p) : p := hp\n".into());
        assert!(build(&i).unwrap_err().to_string().contains("imports differ"));
        i.code = Some("prelude\nimport SubgoalFixture\n-- layout and comments may differ\ntheorem t (p : Prop)\n    (hp : p) : p := hp\n".into());
        assert!(build(&i).is_ok());
    }

    #[test]
    fn code_contributes_only_its_proof_positioned_in_its_own_coordinates() {
        let mut i = proof_input("");
        i.proof = None;
        i.code = Some("prelude\nimport SubgoalFixture\nopen Foo\ntheorem t (p : Prop) (hp : p) : p :=\n  bad".into());
        let d = build(&i).unwrap();
        assert_eq!(&d.text[d.candidate_start..d.candidate_end], "\n  bad");
        // The candidate's `open` applies to its proof only, never to the trusted statement.
        assert!(!d.text[..d.statement_start].contains("open Foo"));
        assert!(d.text[..d.candidate_start].ends_with(":= open Foo in "), "{}", d.text);
        let idx = LineIndex::new(&d.text);
        let off = d.text.find("bad").unwrap();
        assert_eq!(d.local_position(&idx, off), (Region::Candidate, 5, 2));
    }

    #[test]
    fn code_with_a_helper_declaration_before_the_statement_is_refused() {
        let mut i = proof_input("");
        i.proof = None;
        i.code =
            Some("prelude\nimport SubgoalFixture\naxiom cheat : False\ntheorem t (p : Prop) (hp : p) : p := hp".into());
        assert!(matches!(build(&i), Err(BuildError::Gate(Gate::Shape, _))));
    }

    #[test]
    fn proof_and_code_together_is_refused() {
        let mut i = proof_input("hp");
        i.code = Some("x".into());
        assert!(build(&i).is_err());
    }
}
