//! Reading a dataset file: the format a record is in, and one reader per upstream layout
//! into `BenchProblem`s, a bad line becoming a `LoadError`.

use super::lean_text::*;
use super::*;
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

pub(super) fn load_bytes(
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
