//! The statement preflight: does each problem's statement elaborate in this Lean environment?
//! Each is checked with the proof `sorry` on the verifier's pool; `incomplete` (nothing wrong but
//! the `sorry`) means it does. A statement written for another Lean or Mathlib (the DeepSeek files
//! target Lean 4.9 with a mid-2024 Mathlib) would otherwise make every sample `invalid_input` and
//! count as unsolved beside the paper's numbers.
//!
//! Results are cached per environment (Lean version and library path, the Lake manifest when
//! there is one) and per statement (header and statement text), so a dataset, any subset of it
//! or a resumed run is checked once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::datasets::BenchProblem;
use crate::lean::discovery::LeanInstall;
use crate::verify::verdict::Severity;
use crate::verify::{Verdict, Verifier, VerifyInput};

pub const STATEMENTS_SCHEMA: &str = "subgoal.statements.v1";

/// How one statement fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementCheck {
    pub name: String,
    /// `FILE:LINE` in the dataset.
    pub source: String,
    /// The statement elaborates (the check with `sorry` was `incomplete`).
    pub ok: bool,
    pub verdict: Verdict,
    /// Lean's first error, or the verifier's reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `statements.json` in a run directory, and what `subgoal datasets check` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementReport {
    pub schema: String,
    pub dataset: String,
    pub lean_version: String,
    /// What the results hold for (see `environment_key`).
    pub environment: String,
    pub checked: usize,
    pub broken: usize,
    /// Taken from the cache rather than checked now.
    pub cached: usize,
    pub problems: Vec<StatementCheck>,
}

impl StatementReport {
    pub fn broken(&self) -> impl Iterator<Item = &StatementCheck> {
        self.problems.iter().filter(|c| !c.ok)
    }
}

/// What a statement's elaboration depends on besides its own text: the Lean version, the library
/// path Lean searches, and for a Lake project its manifest (the pinned Mathlib).
pub fn environment_key(install: &LeanInstall, lean_version: &str) -> String {
    let mut parts = vec![lean_version.to_string()];
    parts.extend(install.search_path().iter().map(|p| p.display().to_string()));
    if let LeanInstall::Lake { project, .. } = install {
        let manifest = std::fs::read_to_string(project.join("lake-manifest.json")).unwrap_or_default();
        parts.push(crate::digest::sha256_hex(&manifest));
    }
    crate::digest::sha256_hex(parts.join("\n"))
}

/// `~/.cache/subgoal/statements` (or `$XDG_CACHE_HOME/subgoal/statements`).
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("subgoal/statements"))
}

fn statement_key(p: &BenchProblem) -> String {
    crate::digest::sha256_hex(format!("{}\n{}", p.problem.header, p.problem.formal_statement))
}

/// Results cached for one environment: statement key → (verdict, detail).
type Cache = BTreeMap<String, (Verdict, String)>;

fn cache_file(dir: &Path, environment: &str) -> PathBuf {
    dir.join(format!("{environment}.json"))
}

fn read_cache(dir: Option<&Path>, environment: &str) -> Cache {
    dir.and_then(|d| std::fs::read_to_string(cache_file(d, environment)).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn write_cache(dir: &Path, environment: &str, cache: &Cache) {
    let written = std::fs::create_dir_all(dir).map_err(|e| e.to_string()).and_then(|_| {
        let text = serde_json::to_string(cache).map_err(|e| e.to_string())?;
        super::rundir::write_atomic(&cache_file(dir, environment), &text).map_err(|e| e.to_string())
    });
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), error = %e, "could not cache the statement checks");
    }
}

/// Checks every problem's statement (`parallel` at a time; the pool bounds Lean's concurrency),
/// taking what `cache_dir` already knows for this environment. Timeouts and crashes are not
/// cached: they say nothing about the statement.
pub async fn check(
    verifier: &Arc<Verifier>,
    problems: &[BenchProblem],
    dataset: &str,
    environment: &str,
    cache_dir: Option<&Path>,
    parallel: usize,
) -> StatementReport {
    let mut cache = read_cache(cache_dir, environment);
    let known = |p: &BenchProblem| cache.get(&statement_key(p)).cloned();
    let mut checks: Vec<Option<StatementCheck>> =
        problems.iter().map(|p| known(p).map(|(verdict, detail)| judged(p, verdict, detail))).collect();
    let cached = checks.iter().filter(|c| c.is_some()).count();
    let todo: Vec<usize> = (0..problems.len()).filter(|&i| checks[i].is_none()).collect();
    let mut results = futures::stream::iter(todo.into_iter().map(|i| {
        let p = &problems[i];
        async move {
            let input = VerifyInput {
                name: p.problem.name.clone(),
                header: p.problem.header.clone(),
                formal_statement: p.problem.formal_statement.clone(),
                proof: Some(" sorry".into()),
                code: None,
            };
            let r = verifier.verify(&input).await;
            let detail = r
                .messages
                .iter()
                .find(|m| m.severity == Severity::Error)
                .map_or_else(|| r.reason.clone(), |m| first_line(&m.text));
            (i, r.verdict, detail)
        }
    }))
    .buffer_unordered(parallel.max(1));
    while let Some((i, verdict, detail)) = results.next().await {
        if !matches!(verdict, Verdict::Timeout | Verdict::Crashed) {
            cache.insert(statement_key(&problems[i]), (verdict, detail.clone()));
        }
        checks[i] = Some(judged(&problems[i], verdict, detail));
    }
    drop(results);
    if let Some(dir) = cache_dir {
        write_cache(dir, environment, &cache);
    }
    let problems: Vec<StatementCheck> = checks.into_iter().flatten().collect();
    StatementReport {
        schema: STATEMENTS_SCHEMA.into(),
        dataset: dataset.to_string(),
        lean_version: verifier.lean_version().to_string(),
        environment: environment.to_string(),
        checked: problems.len(),
        broken: problems.iter().filter(|c| !c.ok).count(),
        cached,
        problems,
    }
}

fn judged(p: &BenchProblem, verdict: Verdict, detail: String) -> StatementCheck {
    // `proved` by `sorry` cannot happen; anything but `incomplete` means the statement, its
    // header or the environment is broken.
    let ok = verdict == Verdict::Incomplete;
    StatementCheck {
        name: p.problem.name.clone(),
        source: p.source.clone(),
        ok,
        verdict,
        detail: if ok { String::new() } else { detail },
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line.to_string()
    }
}
