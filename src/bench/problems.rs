//! Which problems a run holds: a dataset resolved through the data directories, loaded, its
//! split, limit and shard applied (`select`); and, for a run read again (`--resume`, `synth`),
//! the same problems and prompt templates, refused when the files changed since.

use std::path::{Path, PathBuf};

use super::{DatasetInfo, RunConfig, Shard};
use crate::datasets::{self, BenchProblem, DatasetError, Format};
use crate::pipeline::prompts::{PromptError, Prompts, TemplateSource};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{name}: no problems to run")]
    Empty { name: String },
    #[error("{path} changed since the run read it (sha256 {then} then, {now} now)")]
    Changed { path: String, then: String, now: String },
    #[error("loading prompt templates: {0}")]
    Prompts(#[from] PromptError),
    #[error("the prompt templates differ from the ones the run used (see its config.json \"prompts\")")]
    PromptsChanged,
}

/// What to take from a dataset.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// A registry name or a JSONL file.
    pub dataset: String,
    /// A format (or field mapping) instead of detection or the registry's.
    pub format: Option<Format>,
    pub split: Option<String>,
    pub limit: Option<usize>,
    pub shard: Option<Shard>,
}

/// Problems that could not be loaded, or were left out for a reason worth telling, with why.
pub type Skipped = Vec<String>;

/// The data directories searched: those given, then `datasets::default_data_dirs`.
pub fn data_dirs(given: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = given.to_vec();
    dirs.extend(datasets::default_data_dirs());
    dirs
}

/// The run's problems: the dataset resolved, loaded, its split, limit and shard applied.
/// Problems without the asked-for split are skipped with a message (never silently).
pub fn select(sel: &Selection, dirs: &[PathBuf]) -> Result<(DatasetInfo, Vec<BenchProblem>), SelectError> {
    let resolved = datasets::resolve(&sel.dataset, dirs)?;
    let loaded = match (&resolved.entry, &sel.format) {
        (Some(_), None) => datasets::load_entry(&resolved)?,
        _ => datasets::load(&resolved.path, sel.format.as_ref())?,
    };
    let mut load_errors: Skipped = loaded.errors.iter().map(|e| e.to_string()).collect();
    let mut problems: Vec<BenchProblem> = Vec::with_capacity(loaded.problems.len());
    for p in loaded.problems {
        match (sel.split.as_deref(), p.split.as_deref()) {
            (None, _) => problems.push(p),
            (Some(want), Some(have)) if want == have => problems.push(p),
            (Some(_), Some(_)) => {}
            (Some(want), None) => {
                load_errors.push(format!("{}: has no split, so it is not in --split {want}", p.source))
            }
        }
    }
    if let Some(n) = sel.limit {
        problems.truncate(n);
    }
    if let Some(sh) = sel.shard {
        problems.retain(|p| sh.holds(&p.problem.name));
    }
    // Names are unique: `datasets::load` renames a repeated one.
    // A file is recorded by its absolute path, so `--resume` works from anywhere.
    let name = match &resolved.entry {
        Some(_) => sel.dataset.clone(),
        None => std::fs::canonicalize(&resolved.path).unwrap_or(resolved.path.clone()).display().to_string(),
    };
    let info = DatasetInfo {
        name,
        path: resolved.path.display().to_string(),
        sha256: loaded.sha256.clone(),
        split: sel.split.clone(),
        limit: sel.limit,
        shard: sel.shard,
        format: sel.format.as_ref().and_then(|f| serde_json::to_value(f).ok()),
        problems: problems.len(),
        load_errors,
    };
    Ok((info, problems))
}

/// A run's problems, read again as the run read them: the file it recorded if it is still there,
/// else its name through the data dirs; the file must be the same (sha256).
pub fn reload(config: &RunConfig, dirs: &[PathBuf]) -> Result<Vec<BenchProblem>, SelectError> {
    let d = &config.dataset;
    let sel = Selection {
        dataset: if Path::new(&d.path).exists() { d.path.clone() } else { d.name.clone() },
        format: d.format.as_ref().and_then(|f| serde_json::from_value::<Format>(f.clone()).ok()),
        split: d.split.clone(),
        limit: d.limit,
        shard: d.shard,
    };
    let (info, problems) = select(&sel, dirs)?;
    if info.sha256 != d.sha256 {
        return Err(SelectError::Changed { path: d.path.clone(), then: d.sha256.clone(), now: info.sha256 });
    }
    Ok(problems)
}

/// The prompt templates a run used, loaded from where it found them; their hashes must match.
pub fn reload_prompts(config: &RunConfig) -> Result<Prompts, SelectError> {
    let dir = config
        .prompts
        .iter()
        .find(|s| s.origin != "builtin")
        .and_then(|s| Path::new(&s.origin).parent().map(Path::to_path_buf));
    let prompts = Prompts::load(dir.as_deref())?;
    let hashes = |s: &[TemplateSource]| s.iter().map(|t| (t.file.clone(), t.sha256.clone())).collect::<Vec<_>>();
    if hashes(&prompts.sources) != hashes(&config.prompts) {
        return Err(SelectError::PromptsChanged);
    }
    Ok(prompts)
}
