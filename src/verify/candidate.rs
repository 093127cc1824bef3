//! What gets checked: a verification request (reference statement + candidate), the Lean document
//! built from it with a trusted epilogue, and the map from document positions back to the
//! candidate's own coordinates.

use serde::{Deserialize, Serialize};

use crate::lean::lexer::tokenize;
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
    #[error("{0}")]
    Gate(String),
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
    /// Byte ranges in `text`.
    pub statement_start: usize,
    pub candidate_start: usize,
    pub candidate_end: usize,
    pub epilogue_start: usize,
}

/// The theorem name a formal statement declares.
pub fn statement_name(formal_statement: &str) -> Option<String> {
    declared_theorems(formal_statement).into_iter().next()
}

/// Tokens of a statement up to (not including) its final `:=` or `:= by`; `None` when it does
/// not end that way.
fn statement_tokens(statement: &str) -> Option<Vec<&str>> {
    let mut toks: Vec<&str> = tokenize(statement).iter().map(|t| t.text(statement)).collect();
    if toks.last() == Some(&"by") {
        toks.pop();
    }
    (toks.pop() == Some(":=")).then_some(toks)
}

/// Whether `code` contains the statement's tokens, contiguously, followed by `:=`.
fn contains_statement(code: &str, statement: &str) -> bool {
    let want = statement_tokens(statement).unwrap_or_default();
    let have: Vec<&str> = tokenize(code).iter().map(|t| t.text(code)).collect();
    !want.is_empty()
        && have
            .windows(want.len() + 1)
            .any(|w| w[..want.len()].iter().zip(&want).all(|(a, b)| a == b) && w[want.len()] == ":=")
}

impl Document {
    /// Builds the document: header, statement, candidate, then a trusted `#print axioms` for
    /// each theorem that must be proved. A missing epilogue answer is a failure, so a candidate
    /// that stops elaboration early (`#exit`) cannot pass.
    pub fn build(input: &VerifyInput) -> Result<Document, BuildError> {
        match (&input.proof, &input.code) {
            (Some(_), Some(_)) => Err("give either \"proof\" or \"code\", not both".into()),
            (None, None) => Err("missing \"proof\" or \"code\"".into()),
            (Some(proof), None) => {
                let name = statement_name(&input.formal_statement)
                    .ok_or("\"formal_statement\" declares no theorem (expected `theorem NAME …`)")?;
                // The proof is appended to the statement: a statement that does not end at `:=`
                // would let the candidate extend the theorem's type.
                if statement_tokens(&input.formal_statement).is_none() {
                    return Err("\"formal_statement\" must end with `:=` or `:= by`".into());
                }
                let mut text = input.header.clone();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                let statement_start = text.len();
                text.push_str(&input.formal_statement);
                let candidate_start = text.len();
                text.push_str(proof);
                let candidate_end = text.len();
                let header_len = header_end(&input.header);
                Ok(Self::finish(text, header_len, vec![name], statement_start, candidate_start, candidate_end))
            }
            (None, Some(code)) => {
                let header_len = header_end(code);
                let theorems = if input.formal_statement.trim().is_empty() {
                    declared_theorems(code)
                } else {
                    let name = statement_name(&input.formal_statement)
                        .ok_or("\"formal_statement\" declares no theorem (expected `theorem NAME …`)")?;
                    // The candidate must keep the reference imports and state the theorem as
                    // given (token for token, comments and layout aside).
                    if !input.header.trim().is_empty()
                        && normalize_header(&code[..header_len])
                            != normalize_header(&input.header[..header_end(&input.header)])
                    {
                        return Err(BuildError::Gate(
                            "statement gate: the candidate's imports differ from \"header\"".into(),
                        ));
                    }
                    if !contains_statement(code, &input.formal_statement) {
                        return Err(BuildError::Gate(format!(
                            "statement gate: the candidate does not state `{name}` exactly as \"formal_statement\""
                        )));
                    }
                    vec![name]
                };
                if theorems.is_empty() {
                    return Err("the candidate declares no theorem".into());
                }
                let text = code.clone();
                let end = text.len();
                Ok(Self::finish(text, header_len, theorems, 0, 0, end))
            }
        }
    }

    fn finish(
        mut text: String,
        header_end: usize,
        theorems: Vec<String>,
        statement_start: usize,
        candidate_start: usize,
        candidate_end: usize,
    ) -> Document {
        text.push_str("\n\n");
        let epilogue_start = text.len();
        for t in &theorems {
            text.push_str(&format!("#print axioms {t}\n"));
        }
        Document {
            header_key: normalize_header(&text[..header_end]),
            text,
            header_end,
            theorems,
            statement_start,
            candidate_start,
            candidate_end,
            epilogue_start,
        }
    }

    pub fn region_of(&self, offset: usize) -> Region {
        if offset >= self.epilogue_start {
            Region::Epilogue
        } else if offset >= self.candidate_start && offset <= self.candidate_end {
            Region::Candidate
        } else if offset >= self.statement_start {
            Region::Statement
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
            Region::Header => (0, self.statement_start),
            Region::Statement => (self.statement_start, self.candidate_start),
            Region::Candidate => (self.candidate_start, self.candidate_end),
            Region::Epilogue => (self.epilogue_start, self.text.len()),
        };
        let offset = offset.clamp(base, end.max(base));
        let (l0, c0) = index.line_char_of_offset(base);
        let (l, c) = index.line_char_of_offset(offset);
        (l - l0 + 1, if l == l0 { c - c0 } else { c })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn proof_is_appended_after_statement_with_trusted_epilogue() {
        let d = Document::build(&proof_input(" hp")).unwrap();
        assert!(d.text.starts_with("prelude\nimport SubgoalFixture\ntheorem t"));
        assert!(d.text.ends_with("\n\n#print axioms t\n"));
        assert_eq!(&d.text[d.candidate_start..d.candidate_end], " hp");
        assert_eq!(d.header_key, "prelude import SubgoalFixture");
    }

    #[test]
    fn candidate_positions_are_relative_to_the_candidate() {
        let d = Document::build(&proof_input("\n  𝔽x\n  bad")).unwrap();
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
        let d = Document::build(&input).unwrap();
        assert_eq!(d.theorems, vec!["a", "b"]);
    }

    #[test]
    fn statement_not_ending_at_assign_is_refused() {
        let mut i = proof_input(" → p := fun h => h");
        i.formal_statement = "theorem t (p : Prop) : p".into();
        assert!(Document::build(&i).unwrap_err().to_string().contains(":="));
    }

    #[test]
    fn code_must_state_the_reference_statement_under_the_reference_imports() {
        let mut i = proof_input("");
        i.proof = None;
        i.code = Some("prelude\nimport SubgoalFixture\ntheorem t : True := True.intro\n".into());
        assert!(matches!(Document::build(&i), Err(BuildError::Gate(_))));
        i.code = Some("prelude\nimport Other\ntheorem t (p : Prop) (hp : p) : p := hp\n".into());
        assert!(Document::build(&i).unwrap_err().to_string().contains("imports differ"));
        i.code = Some("prelude\nimport SubgoalFixture\n-- layout and comments may differ\ntheorem t (p : Prop)\n    (hp : p) : p := hp\n".into());
        assert!(Document::build(&i).is_ok());
    }

    #[test]
    fn proof_and_code_together_is_refused() {
        let mut i = proof_input("hp");
        i.code = Some("x".into());
        assert!(Document::build(&i).is_err());
    }
}
