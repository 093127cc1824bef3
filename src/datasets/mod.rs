//! Benchmark datasets: the built-in registry (`benchmarks/datasets.json`: which file each
//! benchmark is, where it came from, which Lean and Mathlib it targets, its checksum and size),
//! finding and fetching those files, and reading each upstream JSONL format into normalised
//! `Problem`s. A bad line becomes a `LoadError` naming the file, line and field; it is never
//! silently dropped.
//!
//! This file owns the types; `formats` reads records (detection, one reader per upstream
//! layout), `lean_text` cuts and cleans the Lean text inside them (statement ends, proof stubs,
//! docstrings, answer comments), `registry` resolves names to files and fetches them.

mod formats;
mod lean_text;
mod registry;

pub use formats::{detect, load};
pub use lean_text::strip_answer_comments;
pub use registry::{
    bundled_data_dir, default_data_dirs, fetch, load_entry, resolve, solutions_corpus, Registry, RegistryEntry,
    Resolved,
};

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
    #[error("{}:{line}: {detail}", .path.display())]
    BadLine { path: PathBuf, line: usize, detail: String },
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
