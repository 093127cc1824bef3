//! Benchmark datasets: the built-in registry (`benchmarks/datasets.json`: which file each
//! benchmark is, where it came from, which Lean and Mathlib it targets, its checksum and size),
//! finding and fetching those files, and reading each upstream JSONL format into normalised
//! `Problem`s. A bad line becomes a `LoadError` naming the file, line and field; it is never
//! silently dropped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::digest::{hex, sha256_hex};
use crate::lean::lexer::{is_id_first, is_id_rest, tokenize, Token};
use crate::lean::source::statement_span;
use crate::pipeline::problem::Problem;

/// One benchmark problem with what the dataset says about it besides the statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchProblem {
    pub problem: Problem,
    pub split: Option<String>,
    pub area: Option<String>,
    /// `FILE:LINE` of the record, for messages and reports.
    pub source: String,
}

/// How the records of a JSONL file are laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// DeepSeek-Prover's MiniF2F and ProofNet: `name`, `split`, `header`, `informal_prefix`
    /// (a docstring), `formal_statement`.
    #[serde(rename = "deepseek")]
    DeepSeek,
    /// yangky11/miniF2F-lean4 (Mathlib v4.24) converted to JSONL: `name`, `split`, `header`,
    /// `docstring`, `formal_statement`, `lean_file`.
    #[serde(rename = "minif2f_lean424")]
    MiniF2FLean424,
    /// ProverBench: `formal_statement` (header, docstring and theorem), `informal_statement`,
    /// `others` = {`name`, `area`, `header`}.
    #[serde(rename = "proverbench")]
    ProverBench,
    /// PutnamBench converted to JSONL: `name`, `header`, `docstring`, `formal_statement`,
    /// `informal_statement`, `informal_solution` (never read), `tags`.
    #[serde(rename = "putnambench")]
    PutnamBench,
    /// miniCodeProps: `full_name`, `prop_defn`, `deps`.
    #[serde(rename = "minicodeprops")]
    MiniCodeProps,
    /// Any JSONL, with the field names given by the user.
    Fields(FieldMap),
}

/// The names `Format` parses from and prints as (besides `fields:MAPPING`).
pub const FORMAT_NAMES: &str = "deepseek, minif2f_lean424, proverbench, putnambench, minicodeprops";

impl Format {
    /// The format's name as `FromStr` and the registry spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Format::DeepSeek => "deepseek",
            Format::MiniF2FLean424 => "minif2f_lean424",
            Format::ProverBench => "proverbench",
            Format::PutnamBench => "putnambench",
            Format::MiniCodeProps => "minicodeprops",
            Format::Fields(_) => "fields",
        }
    }

    /// The field that holds the split, when the format has one.
    fn split_field(&self) -> Option<&str> {
        match self {
            Format::DeepSeek | Format::MiniF2FLean424 => Some("split"),
            Format::Fields(map) => map.split.as_deref(),
            Format::ProverBench | Format::PutnamBench | Format::MiniCodeProps => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Fields(map) => write!(f, "fields:{map}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Format {
    type Err = DatasetError;

    /// A format name, or `fields:MAPPING` (see `FieldMap::parse`).
    fn from_str(s: &str) -> Result<Format, DatasetError> {
        if let Some(spec) = s.strip_prefix("fields:") {
            return FieldMap::parse(spec).map(Format::Fields);
        }
        match s {
            "deepseek" => Ok(Format::DeepSeek),
            "minif2f_lean424" => Ok(Format::MiniF2FLean424),
            "proverbench" => Ok(Format::ProverBench),
            "putnambench" => Ok(Format::PutnamBench),
            "minicodeprops" => Ok(Format::MiniCodeProps),
            _ => Err(DatasetError::UnknownFormat(s.to_string())),
        }
    }
}

/// Which JSON field holds what, for a JSONL file of no known format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMap {
    pub name: String,
    pub formal_statement: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
}

impl FieldMap {
    /// `name=id,statement=thm,header=hdr,informal=nl,split=split,area=topic`: `name` and
    /// `statement` (or `formal_statement`) are required, the rest optional.
    pub fn parse(spec: &str) -> Result<FieldMap, DatasetError> {
        let bad = |reason: String| DatasetError::FieldMap { spec: spec.to_string(), reason };
        let (mut name, mut statement, mut header, mut informal, mut split, mut area) =
            (None, None, None, None, None, None);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, field) = part.split_once('=').ok_or_else(|| bad(format!("{part:?} is not KEY=FIELD")))?;
            let (key, field) = (key.trim(), field.trim());
            if field.is_empty() {
                return Err(bad(format!("{key:?} names no field")));
            }
            let slot = match key {
                "name" => &mut name,
                "statement" | "formal_statement" => &mut statement,
                "header" => &mut header,
                "informal" => &mut informal,
                "split" => &mut split,
                "area" => &mut area,
                _ => {
                    return Err(bad(format!(
                        "unknown key {key:?} (keys: name, statement, header, informal, split, area)"
                    )))
                }
            };
            if slot.replace(field.to_string()).is_some() {
                return Err(bad(format!("{key:?} is given twice")));
            }
        }
        Ok(FieldMap {
            name: name.ok_or_else(|| bad("`name=FIELD` is required".into()))?,
            formal_statement: statement.ok_or_else(|| bad("`statement=FIELD` is required".into()))?,
            header,
            informal,
            split,
            area,
        })
    }
}

impl fmt::Display for FieldMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name={},statement={}", self.name, self.formal_statement)?;
        let optional =
            [("header", &self.header), ("informal", &self.informal), ("split", &self.split), ("area", &self.area)];
        for (key, field) in optional {
            if let Some(field) = field {
                write!(f, ",{key}={field}")?;
            }
        }
        Ok(())
    }
}

/// A line that could not become a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// `FILE:LINE`.
    pub source: String,
    pub detail: String,
}

// Written by hand: thiserror would take a field called `source` for the underlying error.
impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.detail)
    }
}

impl std::error::Error for LoadError {}

/// A file's problems and the lines that failed.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub format: Format,
    /// SHA-256 of the file as read (what a run records to check on resume).
    pub sha256: String,
    pub problems: Vec<BenchProblem>,
    pub errors: Vec<LoadError>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{}: the file holds no records", .path.display())]
    Empty { path: PathBuf },
    #[error("{}: cannot tell the format from {what}; name one ({FORMAT_NAMES}) or fields:MAPPING", .path.display())]
    Undetectable { path: PathBuf, what: String },
    #[error("unknown format {0:?}: expected one of {FORMAT_NAMES}, or fields:MAPPING")]
    UnknownFormat(String),
    #[error("bad field mapping {spec:?}: {reason}")]
    FieldMap { spec: String, reason: String },
    #[error("no such file: {}", .path.display())]
    NoSuchFile { path: PathBuf },
    #[error("unknown dataset {name:?}: it is not a file, and the registry knows {known}")]
    UnknownDataset { name: String, known: String },
    #[error("dataset {name}: {file} is in none of the data directories searched ({searched}); {hint}")]
    NotFound { name: String, file: String, searched: String, hint: String },
    #[error("{}: sha256 {actual} is not dataset {name}'s {expected} (fetch it again or load by path)", .path.display())]
    Checksum { name: String, path: PathBuf, expected: String, actual: String },
    #[error("dataset {name} has no download URL ({notes}); copy {file} into {} by hand", .dir.display())]
    NoUrl { name: String, file: String, dir: PathBuf, notes: String },
    #[error("downloading {url}: {detail}")]
    Download { url: String, detail: String },
    #[error("{url}: downloaded sha256 {actual} is not dataset {name}'s {expected}; nothing was saved")]
    DownloadChecksum { name: String, url: String, expected: String, actual: String },
}

// ---------------------------------------------------------------------------------------------
// Detection and loading

/// The format a record is in, judged from its field names (`Fields` is never detected).
pub fn detect(record: &Value) -> Option<Format> {
    let rec = record.as_object()?;
    let has = |k: &str| rec.contains_key(k);
    // Most specific first: PutnamBench records also carry `lean_file`.
    if rec.get("others").is_some_and(Value::is_object) && has("formal_statement") {
        Some(Format::ProverBench)
    } else if has("full_name") && has("prop_defn") {
        Some(Format::MiniCodeProps)
    } else if has("formal_statement") && (has("informal_solution") || has("has_solution_abbrev")) {
        Some(Format::PutnamBench)
    } else if has("formal_statement") && has("lean_file") {
        Some(Format::MiniF2FLean424)
    } else if has("formal_statement") && has("informal_prefix") {
        Some(Format::DeepSeek)
    } else {
        None
    }
}

/// Reads a JSONL file in `format` (auto-detected from its first JSON object when `None`).
/// Blank lines are ignored; a bad line is skipped and reported in `errors`; a problem with the
/// whole file (unreadable, no records, format not detectable) is an `Err`.
pub fn load(path: &Path, format: Option<&Format>) -> Result<Loaded, DatasetError> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read { path: path.to_path_buf(), source })?;
    load_bytes(&bytes, path, format, None)
}

fn load_bytes(
    bytes: &[u8],
    path: &Path,
    format: Option<&Format>,
    keep_split: Option<&str>,
) -> Result<Loaded, DatasetError> {
    // Messages name the file, not its directory, as in `minif2f.jsonl:17: …`.
    let label = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let mut errors = Vec::new();
    let mut records = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let source = format!("{label}:{}", i + 1);
        let raw = if i == 0 { raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw) } else { raw };
        let line = match std::str::from_utf8(raw) {
            Ok(line) => line,
            Err(e) => {
                errors.push(LoadError { source, detail: format!("not valid UTF-8: {e}") });
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(rec)) => records.push((source, rec)),
            Ok(_) => errors.push(LoadError { source, detail: "not a JSON object".into() }),
            Err(e) => errors.push(LoadError { source, detail: format!("not valid JSON: {e}") }),
        }
    }
    if records.is_empty() && errors.is_empty() {
        return Err(DatasetError::Empty { path: path.to_path_buf() });
    }
    let format = match format {
        Some(f) => f.clone(),
        None => {
            let Some((source, first)) = records.first() else {
                let what = "any line: no line holds a JSON object".to_string();
                return Err(DatasetError::Undetectable { path: path.to_path_buf(), what });
            };
            let undetectable = || {
                let keys: Vec<&str> = first.keys().map(String::as_str).collect();
                let what = format!("its first record ({source}, fields {})", keys.join(", "));
                DatasetError::Undetectable { path: path.to_path_buf(), what }
            };
            detect(&Value::Object(first.clone())).ok_or_else(undetectable)?
        }
    };
    let mut problems = Vec::new();
    for (source, rec) in records {
        match read_record(&format, &rec, keep_split) {
            Ok(Some(raw)) => match raw.finish(source.clone()) {
                Ok(p) => problems.push(p),
                Err(detail) => errors.push(LoadError { source, detail }),
            },
            Ok(None) => {}
            Err(detail) => errors.push(LoadError { source, detail }),
        }
    }
    // Names identify problems in a run: a repeated one (ProofNet numbers exercises per chapter,
    // so `exercise_3_4` comes twice) is renamed after its line, theorem and all.
    let mut seen = std::collections::HashMap::new();
    for p in &mut problems {
        let count = seen.entry(p.problem.name.clone()).or_insert(0usize);
        *count += 1;
        if *count > 1 {
            let name = format!("{}__L{}", p.problem.name, line_of(&p.source));
            p.problem.formal_statement = rename_declaration(&p.problem.formal_statement, &name);
            p.problem.name = name;
        }
    }
    // Errors were collected in two passes; report them in file order.
    errors.sort_by_key(|e| line_of(&e.source));
    Ok(Loaded { format, sha256: sha256_hex(bytes), problems, errors })
}

fn line_of(source: &str) -> usize {
    source.rsplit(':').next().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The fields of one record before normalisation, with the JSON field each came from (for errors).
struct Raw {
    /// The dataset's name for the problem, when it has one, and its field.
    name: Option<(String, String)>,
    statement: String,
    statement_field: String,
    header: String,
    informal: String,
    split: Option<String>,
    area: Option<String>,
}

type Detail = String;

fn req_str<'a>(rec: &'a Map<String, Value>, key: &str, shown: &str) -> Result<&'a str, Detail> {
    match rec.get(key) {
        None => Err(format!("field {shown:?} is missing")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("field {shown:?} must be a string")),
    }
}

/// A field that may be absent or null.
fn opt_str<'a>(rec: &'a Map<String, Value>, key: &str, shown: &str) -> Result<Option<&'a str>, Detail> {
    match rec.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("field {shown:?} must be a string")),
    }
}

/// Reads the fields `format` names; `Ok(None)` for a record of another split than `keep_split`.
fn read_record(format: &Format, rec: &Map<String, Value>, keep_split: Option<&str>) -> Result<Option<Raw>, Detail> {
    let split = match format.split_field() {
        Some(field) => opt_str(rec, field, field)?.map(str::to_string),
        None => None,
    };
    if let Some(keep) = keep_split {
        match split.as_deref() {
            Some(s) if s == keep => {}
            Some(_) => return Ok(None),
            // Not silently dropped: a record without a split cannot be placed in one.
            None => {
                return Err(format!(
                    "has no split (field {:?}), so it is in no split",
                    format.split_field().unwrap_or("split")
                ))
            }
        }
    }
    let named = |key: &str| -> Result<Option<(String, String)>, Detail> {
        Ok(Some((req_str(rec, key, key)?.to_string(), key.to_string())))
    };
    let raw = match format {
        // The two MiniF2F layouts differ only in where the informal statement is.
        Format::DeepSeek | Format::MiniF2FLean424 => {
            let informal = if matches!(format, Format::DeepSeek) { "informal_prefix" } else { "docstring" };
            Raw {
                name: named("name")?,
                statement: req_str(rec, "formal_statement", "formal_statement")?.to_string(),
                statement_field: "formal_statement".into(),
                header: req_str(rec, "header", "header")?.to_string(),
                informal: opt_str(rec, informal, informal)?.unwrap_or_default().to_string(),
                split,
                area: None,
            }
        }
        Format::ProverBench => read_proverbench(rec)?,
        Format::PutnamBench => read_putnambench(rec)?,
        Format::MiniCodeProps => Raw {
            name: named("full_name")?,
            statement: req_str(rec, "prop_defn", "prop_defn")?.to_string(),
            statement_field: "prop_defn".into(),
            header: req_str(rec, "deps", "deps")?.to_string(),
            informal: String::new(),
            split: None,
            area: None,
        },
        Format::Fields(map) => {
            let optional = |field: &Option<String>| -> Result<Option<String>, Detail> {
                match field {
                    Some(f) => Ok(opt_str(rec, f, f)?.map(str::to_string)),
                    None => Ok(None),
                }
            };
            Raw {
                name: named(&map.name)?,
                statement: req_str(rec, &map.formal_statement, &map.formal_statement)?.to_string(),
                statement_field: map.formal_statement.clone(),
                header: optional(&map.header)?.unwrap_or_default(),
                informal: optional(&map.informal)?.unwrap_or_default(),
                split,
                area: optional(&map.area)?,
            }
        }
    };
    Ok(Some(raw))
}

/// ProverBench's `formal_statement` is `others.header + "\n" + theorem`, and the header ends with
/// the informal docstring when there is one. The theorem's own name is often generic and not
/// unique (`formal_statement`, twice), so it is renamed to the ProverBench id (`others.name`):
/// that keeps names unique and matching the benchmark's, and a theorem's name cannot change
/// what it states.
fn read_proverbench(rec: &Map<String, Value>) -> Result<Raw, Detail> {
    let others = match rec.get("others") {
        None => return Err("field \"others\" is missing".into()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("field \"others\" must be an object".into()),
    };
    let id = req_str(others, "name", "others.name")?;
    let full_header = req_str(others, "header", "others.header")?;
    let area = opt_str(others, "area", "others.area")?.map(str::to_string);
    let full = req_str(rec, "formal_statement", "formal_statement")?;
    let theorem = full
        .strip_prefix(full_header)
        .ok_or_else(|| "field \"formal_statement\" does not start with others.header".to_string())?;
    if !is_identifier(id) {
        return Err(format!("field \"others.name\" ({id:?}) is not a Lean identifier"));
    }
    let (header, docstring) = cut_trailing_docstring(full_header);
    let informal = match opt_str(rec, "informal_statement", "informal_statement")? {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ => docstring.to_string(),
    };
    Ok(Raw {
        name: Some((id.to_string(), "others.name".into())),
        statement: rename_declaration(theorem, id),
        statement_field: "formal_statement".into(),
        header: header.to_string(),
        informal,
        split: None,
        area,
    })
}

/// PutnamBench headers may hold `abbrev NAME_solution : T := sorry` followed by a comment with
/// the answer; the comments are cut (see `strip_answer_comments`) and `informal_solution` is
/// never read.
fn read_putnambench(rec: &Map<String, Value>) -> Result<Raw, Detail> {
    let header = req_str(rec, "header", "header")?;
    if let Some(name) = solution_with_value(header) {
        return Err(format!("field \"header\" defines {name} with a value, not `sorry`: that value is the answer"));
    }
    let informal = match opt_str(rec, "informal_statement", "informal_statement")? {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ => opt_str(rec, "docstring", "docstring")?.unwrap_or_default().to_string(),
    };
    let area = match rec.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Array(tags)) => {
            let tags: Option<Vec<&str>> = tags.iter().map(Value::as_str).collect();
            let tags = tags.ok_or_else(|| "field \"tags\" must be a list of strings".to_string())?;
            (!tags.is_empty()).then(|| tags.join(", "))
        }
        Some(_) => return Err("field \"tags\" must be a list of strings".into()),
    };
    Ok(Raw {
        name: Some((req_str(rec, "name", "name")?.to_string(), "name".into())),
        statement: req_str(rec, "formal_statement", "formal_statement")?.to_string(),
        statement_field: "formal_statement".into(),
        header: strip_answer_comments(header),
        informal,
        split: None,
        area,
    })
}

impl Raw {
    /// Normalises into a `Problem`: the statement trimmed and ending in `:=`, the header ending in
    /// one newline, the informal statement as plain text, and the name checked against the
    /// declaration.
    fn finish(self, source: String) -> Result<BenchProblem, Detail> {
        let field = &self.statement_field;
        let stmt = strip_proof_stub(&self.statement);
        if !stmt.ends_with(":=") {
            let tail: String = stmt.chars().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(format!("field {field:?} does not end in := (it ends {tail:?})"));
        }
        let Some((decl, _, declared)) = statement_span(stmt, None) else {
            return Err(match other_declaration(stmt) {
                Some(kw) => {
                    format!("field {field:?} declares a `{kw}`, not a theorem or lemma (subgoal proves theorems only)")
                }
                None => format!("field {field:?} declares no theorem or lemma"),
            });
        };
        if statement_assign_end(stmt, decl) != Some(stmt.len()) {
            return Err(format!("field {field:?} has a `:=` before its end that no `let` or `have` explains"));
        }
        if let Some((name, name_field)) = &self.name {
            if *name != declared {
                return Err(format!("field {name_field:?} is {name:?} but field {field:?} declares {declared:?}"));
            }
        }
        // Text before the declaration (definitions, a docstring) joins the header / informal.
        let p = Problem::from_lean(stmt, None).map_err(|e| format!("field {field:?}: {e}"))?;
        // `statement_span` stops at the first `:=` outside brackets, which for a statement with a
        // `let x := v` (20 in PutnamBench and ProverBench) is the let's: keep the whole statement.
        let formal_statement = stmt[decl..].to_string();
        let mut header = self.header.trim_end().to_string();
        let before = p.header.trim_end();
        if !before.is_empty() {
            if !header.is_empty() {
                header.push('\n');
            }
            header.push_str(before);
        }
        if !header.is_empty() {
            header.push('\n');
        }
        let informal = match plain_informal(&self.informal) {
            "" => p.informal_statement,
            s => s.to_string(),
        };
        // An answer after `abbrev …_solution := sorry` never reaches a model, whatever the format.
        let header = if header.contains("_solution") { strip_answer_comments(&header) } else { header };
        let problem = Problem { name: p.name, header, informal_statement: informal, formal_statement };
        Ok(BenchProblem { problem, split: self.split, area: self.area, source })
    }
}

/// The end of the `:=` that closes the statement declared at byte `decl`: the first one outside
/// brackets that does not belong to a `let`/`have` in the statement itself.
fn statement_assign_end(src: &str, decl: usize) -> Option<usize> {
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
fn strip_proof_stub(s: &str) -> &str {
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
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let rest = s.strip_suffix(word)?;
    match rest.chars().next_back() {
        Some(c) if is_id_rest(c) || c == '.' => None,
        _ => Some(rest),
    }
}

/// The keyword of a non-theorem declaration in `src` (ProofNet has `def` problems), for errors.
fn other_declaration(src: &str) -> Option<&'static str> {
    const KEYWORDS: [&str; 9] =
        ["def", "abbrev", "instance", "example", "structure", "inductive", "class", "opaque", "axiom"];
    tokenize(src).iter().find_map(|t| KEYWORDS.iter().find(|k| **k == t.text(src)).copied())
}

/// A docstring's text: without `/--`, `-/` and surrounding whitespace.
fn plain_informal(s: &str) -> &str {
    let t = s.trim();
    match t.strip_prefix("/--").and_then(|x| x.strip_suffix("-/")) {
        Some(inner) => inner.trim(),
        None => t,
    }
}

/// Splits a header ending in a `/-- … -/` docstring into the header before it and its text.
fn cut_trailing_docstring(header: &str) -> (&str, &str) {
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
fn block_comment_len(s: &str) -> usize {
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

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_id_first) && chars.all(is_id_rest)
}

/// `theorem` renamed to `name` (its last declaration); unchanged when none is found, which the
/// later checks report.
fn rename_declaration(theorem: &str, name: &str) -> String {
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
fn solution_abbrevs(src: &str, toks: &[Token]) -> Vec<usize> {
    toks.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0].text(src) == "abbrev" && w[1].text(src).ends_with("_solution"))
        .map(|(i, _)| i)
        .collect()
}

/// The name of an `abbrev …_solution` in `header` whose value is not `sorry`, if any.
fn solution_with_value(header: &str) -> Option<String> {
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
fn drop_comments(gap: &str) -> String {
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

// ---------------------------------------------------------------------------------------------
// Registry

/// One benchmark in `benchmarks/datasets.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    pub name: String,
    /// The file name looked for in the data directories.
    pub file: String,
    pub format: Format,
    /// Only records of this split belong to the benchmark.
    #[serde(default)]
    pub split: Option<String>,
    /// Where `fetch` downloads the file; `None` for data converted outside the repo.
    #[serde(default)]
    pub url: Option<String>,
    /// The upstream commit the file is from.
    pub revision: String,
    /// Problems the benchmark has once loaded.
    pub expected_count: usize,
    /// Records that are known not to load (ProofNet's `def` problems), so a regression can be
    /// told from them.
    #[serde(default)]
    pub expected_errors: usize,
    pub lean: String,
    pub mathlib: String,
    /// Hex sha256 of the whole file; empty to skip the check.
    pub sha256: String,
    /// Provenance, license and caveats.
    pub notes: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Registry {
    pub entries: Vec<RegistryEntry>,
}

impl Registry {
    /// The registry compiled into the binary.
    pub fn builtin() -> Registry {
        serde_json::from_str(include_str!("../benchmarks/datasets.json"))
            .expect("benchmarks/datasets.json is a valid registry (a test loads it)")
    }

    pub fn get(&self, name: &str) -> Option<&RegistryEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

/// A dataset file, and its registry entry when it was named by one.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    pub entry: Option<RegistryEntry>,
}

/// An existing file path is that file; otherwise a registry name, looked for in `data_dirs` in
/// order.
pub fn resolve(name_or_path: &str, data_dirs: &[PathBuf]) -> Result<Resolved, DatasetError> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        return Ok(Resolved { path: path.to_path_buf(), entry: None });
    }
    let registry = Registry::builtin();
    let Some(entry) = registry.get(name_or_path) else {
        if name_or_path.contains(std::path::MAIN_SEPARATOR) || name_or_path.ends_with(".jsonl") {
            return Err(DatasetError::NoSuchFile { path: path.to_path_buf() });
        }
        return Err(DatasetError::UnknownDataset {
            name: name_or_path.to_string(),
            known: registry.names().join(", "),
        });
    };
    if let Some(found) = data_dirs.iter().map(|d| d.join(&entry.file)).find(|p| p.is_file()) {
        return Ok(Resolved { path: found, entry: Some(entry.clone()) });
    }
    let searched = match data_dirs {
        [] => "none given".to_string(),
        dirs => dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
    };
    let hint = match entry.url {
        Some(_) => format!("run `subgoal datasets fetch {}`, or pass --data-dir DIR holding it", entry.name),
        None => format!(
            "it cannot be downloaded ({}); copy it into a data directory, or pass --data-dir DIR holding it",
            entry.notes
        ),
    };
    Err(DatasetError::NotFound { name: entry.name.clone(), file: entry.file.clone(), searched, hint })
}

/// `$SUBGOAL_DATA` (colon-separated), then `~/.cache/subgoal/datasets`, then the copies this
/// checkout carries (`benchmarks/data`, with their provenance), so a fresh clone runs the
/// registry's benchmarks without a download.
pub fn default_data_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("SUBGOAL_DATA")
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".cache/subgoal/datasets"));
    }
    dirs.push(bundled_data_dir());
    dirs
}

/// The benchmark files kept in this checkout.
pub fn bundled_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benchmarks/data")
}

/// Loads a resolved dataset. With a registry entry: the file's sha256 must match the entry's
/// (unless that is empty) or this is an `Err`, because a benchmark's numbers are only comparable
/// on the registered bytes (to use a changed file anyway, load it by path); then the entry's
/// format is used and only its split kept (a line too broken to tell its split is reported
/// whatever it is). Without one: `load` with auto-detection.
pub fn load_entry(resolved: &Resolved) -> Result<Loaded, DatasetError> {
    let path = &resolved.path;
    let Some(entry) = &resolved.entry else {
        return load(path, None);
    };
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read { path: path.clone(), source })?;
    let loaded = load_bytes(&bytes, path, Some(&entry.format), entry.split.as_deref())?;
    if !entry.sha256.is_empty() {
        let actual = loaded.sha256.clone();
        if !actual.eq_ignore_ascii_case(&entry.sha256) {
            return Err(DatasetError::Checksum {
                name: entry.name.clone(),
                path: path.clone(),
                expected: entry.sha256.clone(),
                actual,
            });
        }
    }
    Ok(loaded)
}

/// Downloads `entry.url` to `dir/entry.file` (creating `dir`) through a temporary file that is
/// renamed only once the sha256 matches, so a partial or wrong download never takes the name.
/// A file already there with the right sha256 is kept without downloading.
pub async fn fetch(entry: &RegistryEntry, dir: &Path) -> Result<PathBuf, DatasetError> {
    let Some(url) = &entry.url else {
        return Err(DatasetError::NoUrl {
            name: entry.name.clone(),
            file: entry.file.clone(),
            dir: dir.to_path_buf(),
            notes: entry.notes.clone(),
        });
    };
    let dest = dir.join(&entry.file);
    if !entry.sha256.is_empty() {
        if let Ok(bytes) = tokio::fs::read(&dest).await {
            if sha256_hex(&bytes).eq_ignore_ascii_case(&entry.sha256) {
                return Ok(dest);
            }
        }
    }
    tokio::fs::create_dir_all(dir).await.map_err(|source| DatasetError::Write { path: dir.to_path_buf(), source })?;
    let tmp = dir.join(format!(".{}.part-{}", entry.file, std::process::id()));
    let result = download(url, &tmp).await.and_then(|actual| {
        if entry.sha256.is_empty() || actual.eq_ignore_ascii_case(&entry.sha256) {
            Ok(())
        } else {
            Err(DatasetError::DownloadChecksum {
                name: entry.name.clone(),
                url: url.clone(),
                expected: entry.sha256.clone(),
                actual,
            })
        }
    });
    let result = match result {
        Ok(()) => {
            tokio::fs::rename(&tmp, &dest).await.map_err(|source| DatasetError::Write { path: dest.clone(), source })
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        // Best effort: the temporary file must not linger, but failing to remove it is not the error.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|()| dest)
}

/// Streams `url` into `tmp`, returning the hex sha256 of what was written.
async fn download(url: &str, tmp: &Path) -> Result<String, DatasetError> {
    use tokio::io::AsyncWriteExt;

    let failed = |e: reqwest::Error| DatasetError::Download { url: url.to_string(), detail: e.to_string() };
    let write_err = |source| DatasetError::Write { path: tmp.to_path_buf(), source };
    let client =
        reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(30)).build().map_err(failed)?;
    let mut response = client.get(url).send().await.and_then(|r| r.error_for_status()).map_err(failed)?;
    let mut file = tokio::fs::File::create(tmp).await.map_err(write_err)?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err)?;
    }
    file.sync_all().await.map_err(write_err)?;
    Ok(hex(&hasher.finalize()))
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

    #[test]
    fn a_field_map_needs_name_and_statement_and_known_keys() {
        let m = FieldMap::parse("name=id, statement=thm,informal=nl").unwrap();
        assert_eq!((m.name.as_str(), m.formal_statement.as_str(), m.informal.as_deref()), ("id", "thm", Some("nl")));
        assert!(FieldMap::parse("statement=thm").unwrap_err().to_string().contains("`name=FIELD` is required"));
        assert!(FieldMap::parse("name=id").unwrap_err().to_string().contains("`statement=FIELD` is required"));
        assert!(FieldMap::parse("name=id,statement=s,topic=t").unwrap_err().to_string().contains("unknown key"));
        assert!(FieldMap::parse("name=id,name=x,statement=s").unwrap_err().to_string().contains("twice"));
        assert!(FieldMap::parse("name,statement=s").unwrap_err().to_string().contains("not KEY=FIELD"));
    }

    #[test]
    fn formats_print_and_parse_by_name() {
        for f in
            [Format::DeepSeek, Format::MiniF2FLean424, Format::ProverBench, Format::PutnamBench, Format::MiniCodeProps]
        {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
            assert_eq!(serde_json::to_value(&f).unwrap(), Value::String(f.name().into()));
        }
        let fields: Format = "fields:name=id,statement=thm,split=s".parse().unwrap();
        assert_eq!(fields.to_string(), "fields:name=id,statement=thm,split=s");
        assert!("lean".parse::<Format>().is_err());
    }

    #[test]
    fn the_builtin_registry_parses_with_unique_names() {
        let r = Registry::builtin();
        let mut names = r.names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), r.entries.len());
    }
}
