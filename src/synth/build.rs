//! A synthesis from finished runs to its output directory (`synthesize`), and shards' outputs
//! joined into one (`merge`). Owns the order of the work: read each run's selected problems,
//! make their examples, check every proof again with Lean, drop duplicates and benchmark
//! statements, and write `chat.jsonl`, `pairs.jsonl` and `stats.json` so that a crash leaves the
//! previous output set or the new one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde_json::Value;

use super::{
    chat_record, contamination_key, examples_of, pair_record, select_unique, selected, Example, ExampleKind, Selection,
    Solved, SynthStats,
};
use crate::bench::problems::{self, SelectError};
use crate::bench::rundir::{write_atomic, RunDir, RunError};
use crate::bench::ProblemResult;
use crate::digest::sha256_hex;
use crate::pipeline::dag::{DagExport, NodeKind, Status};
use crate::pipeline::prompts::PromptError;
use crate::pipeline::recompose::proof_body;
use crate::verify::{Verdict, Verifier, VerifyInput};

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{path}: {source}")]
    Run { path: String, source: RunError },
    #[error("{what}: {source}")]
    Select { what: String, source: Box<SelectError> },
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error("{run}: problem {problem} is not in the run's dataset any more")]
    MissingProblem { run: String, problem: String },
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
    #[error("writing the output: {0}")]
    Write(#[from] RunError),
}

/// What `synthesize` takes besides the runs.
pub struct SynthOptions<'a> {
    pub select: Selection,
    /// Benchmarks (registry names or files) whose statements are dropped.
    pub exclude: &'a [String],
    /// The data directories the runs' datasets are found in.
    pub data_dirs: &'a [PathBuf],
}

/// Examples from `runs`, each proof checked again by `verifier`, written to `out`.
pub async fn synthesize(
    runs: &[PathBuf],
    out: &Path,
    opts: &SynthOptions<'_>,
    verifier: &Verifier,
) -> Result<SynthStats, SynthError> {
    let excluded = exclusion_set(opts.exclude, opts.data_dirs)?;
    let mut stats = SynthStats::default();
    let mut wall_seconds = 0.0;
    let mut all = Vec::new();
    for path in runs {
        let (examples, wall) = run_examples(path, opts, verifier, &mut stats).await?;
        all.extend(examples);
        wall_seconds += wall;
    }
    let (verified, failed) = reverify(all, verifier).await;
    stats.failed_reverification = failed;
    let (kept, dups, contaminated) = select_unique(verified, &excluded);
    stats.duplicates_dropped = dups;
    stats.contaminated_dropped = contaminated;
    finish_stats(&mut stats, &kept, wall_seconds);
    let stats_value = serde_json::to_value(&stats).unwrap_or_default();
    write_outputs(
        out,
        &kept.iter().map(chat_record).collect::<Vec<_>>(),
        &kept.iter().map(pair_record).collect::<Vec<_>>(),
        &stats_value,
    )?;
    Ok(stats)
}

/// One run's examples, before re-verification, and its wall time; its counts added to `stats`.
async fn run_examples(
    path: &Path,
    opts: &SynthOptions<'_>,
    verifier: &Verifier,
    stats: &mut SynthStats,
) -> Result<(Vec<Example>, f64), SynthError> {
    let shown = path.display().to_string();
    let (run, config) = RunDir::open(path).map_err(|source| SynthError::Run { path: shown.clone(), source })?;
    let results = run.results().map_err(|source| SynthError::Run { path: shown.clone(), source })?;
    let select_err = |source| SynthError::Select { what: format!("reading {shown}"), source: Box::new(source) };
    let problems = problems::reload(&config, opts.data_dirs).map_err(select_err)?;
    let problems: HashMap<&str, &crate::pipeline::problem::Problem> =
        problems.iter().map(|p| (p.problem.name.as_str(), &p.problem)).collect();
    let prompts = problems::reload_prompts(&config).map_err(select_err)?;
    stats.problems += results.len();
    stats.solved += results.iter().filter(|r| r.outcome.solved).count();
    stats.model_calls += results.iter().map(|r| r.outcome.model_calls).sum::<u64>();
    stats.tokens += results.iter().map(|r| r.outcome.tokens).sum::<u64>();
    stats.lean_checks += results.iter().map(|r| r.outcome.lean_checks).sum::<u64>();
    let mut out = Vec::new();
    for r in results.iter().filter(|r| selected(r, opts.select)) {
        let Some(problem) = problems.get(r.outcome.name.as_str()) else {
            return Err(SynthError::MissingProblem { run: shown, problem: r.outcome.name.clone() });
        };
        let dag = read_dag(&run, r)?;
        stats.selected += 1;
        let form_a = form_a_proofs(verifier, &dag, &problem.header).await;
        out.extend(examples_of(&Solved { result: r, dag: &dag, problem }, &config, &prompts, &form_a)?);
    }
    Ok((out, run.wall_seconds()))
}

/// Every proof checked again against its statement; the proof kept is the file the verifier
/// checked (the proof after the statement, under the problem's header). Returns the examples
/// that verified and the count of those that did not.
async fn reverify(examples: Vec<Example>, verifier: &Verifier) -> (Vec<Example>, usize) {
    // The verdict, whether the fresh-process re-check agreed, and the file checked.
    type Checked = (Example, Option<(Verdict, bool, String)>);
    let checked: Vec<Checked> = futures::stream::iter(examples.into_iter().map(|e| async move {
        let Some((body, _)) = proof_body(&e.proof, &e.name) else { return (e, None) };
        let input = VerifyInput {
            name: e.name.clone(),
            header: e.header.clone(),
            formal_statement: e.statement.clone(),
            proof: Some(format!(" {body}")),
            code: None,
        };
        let (r, doc) = verifier.verify_document(&input).await;
        let agreed = r.recheck.as_ref().is_some_and(|c| c.agreed);
        let found = doc.map(|d| (r.verdict, agreed, d.checked_source()));
        (e, found)
    }))
    .buffered(8)
    .collect()
    .await;
    let mut verified = Vec::new();
    let mut failed = 0;
    for (mut e, found) in checked {
        match found {
            Some((verdict @ Verdict::Proved, true, source)) => {
                e.provenance.verdict = verdict;
                e.provenance.recheck_agreed = true;
                e.proof = source;
                verified.push(e);
            }
            other => {
                let verdict = other.map_or(Verdict::InvalidInput, |(v, _, _)| v);
                tracing::warn!(name = %e.name, verdict = verdict.as_str(), "an example's proof no longer verifies");
                failed += 1;
            }
        }
    }
    (verified, failed)
}

fn finish_stats(stats: &mut SynthStats, kept: &[Example], wall_seconds: f64) {
    stats.cot_examples = kept.iter().filter(|e| e.kind == ExampleKind::Cot).count();
    stats.subgoal_examples = kept.iter().filter(|e| e.kind == ExampleKind::Subgoal).count();
    stats.examples_per_solved_problem =
        if stats.solved == 0 { 0.0 } else { round2(kept.len() as f64 / stats.solved as f64) };
    stats.problems_per_hour =
        if wall_seconds > 0.0 { round2(stats.problems as f64 * 3600.0 / wall_seconds) } else { 0.0 };
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn read_dag(run: &RunDir, r: &ProblemResult) -> Result<DagExport, SynthError> {
    let path = run.file(&r.dag);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| SynthError::Read { path: shown.clone(), source })?;
    serde_json::from_str(&text)
        .map_err(|e| SynthError::Invalid { path: shown, detail: format!("not a subgoal graph: {e}") })
}

/// Form (a) of each proved subgoal, where the form (b) proof proves it too (it did not use the
/// earlier steps): the verified file, by subgoal name.
async fn form_a_proofs(verifier: &Verifier, dag: &DagExport, header: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in dag.nodes.iter().filter(|n| n.node.kind == NodeKind::Subgoal && n.node.status == Status::Proved) {
        let (Some(a), Some(proof)) = (&n.node.statement_without_premises, &n.node.proof) else { continue };
        if a == &n.node.statement {
            continue;
        }
        let Some((body, _)) = proof_body(proof, &n.node.name) else { continue };
        let input = VerifyInput {
            name: n.node.name.clone(),
            header: header.to_string(),
            formal_statement: a.clone(),
            proof: Some(format!(" {body}")),
            code: None,
        };
        if let (r, Some(doc)) = verifier.verify_document(&input).await {
            if r.verdict == Verdict::Proved {
                out.insert(n.node.name.clone(), doc.checked_source());
            }
        }
    }
    out
}

/// Contamination keys of every statement in the excluded benchmarks.
fn exclusion_set(names: &[String], dirs: &[PathBuf]) -> Result<HashSet<String>, SynthError> {
    let mut keys = HashSet::new();
    for name in names {
        let sel = problems::Selection { dataset: name.clone(), ..Default::default() };
        let (_, problems) = problems::select(&sel, dirs)
            .map_err(|source| SynthError::Select { what: format!("--exclude {name}"), source: Box::new(source) })?;
        keys.extend(problems.iter().map(|p| contamination_key(&p.problem.formal_statement)));
    }
    Ok(keys)
}

/// Writes both layouts and the stats, each through a temporary file and a rename: a crash
/// leaves the previous output or the new one, never a torn record.
fn write_outputs(dir: &Path, chat: &[Value], pairs: &[Value], stats: &Value) -> Result<(), SynthError> {
    std::fs::create_dir_all(dir).map_err(|source| RunError::Io { path: dir.display().to_string(), source })?;
    let jsonl = |rows: &[Value]| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let (chat, pairs) = (jsonl(chat), jsonl(pairs));
    // Removed first and written last, with the others' hashes: an output set is complete exactly
    // when its stats.json is there and the hashes match (`merge` checks).
    let _ = std::fs::remove_file(dir.join("stats.json"));
    write_atomic(&dir.join("chat.jsonl"), &chat)?;
    write_atomic(&dir.join("pairs.jsonl"), &pairs)?;
    let mut stats = stats.clone();
    stats["sha256"] = serde_json::json!({"chat.jsonl": sha256_hex(&chat), "pairs.jsonl": sha256_hex(&pairs)});
    write_atomic(&dir.join("stats.json"), &serde_json::to_string_pretty(&stats).unwrap_or_default())?;
    Ok(())
}

/// What a merge wrote.
pub struct Merged {
    pub stats: SynthStats,
    pub examples: usize,
    /// Examples found in more than one shard (one kept).
    pub duplicates_across_shards: usize,
}

/// Joins shards' outputs into `out`: examples de-duplicated by key (the first in example order
/// wins, as in one unsharded synthesis), in one stable order; counts summed. A shard whose files
/// do not match its `stats.json` is incomplete and refused.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<Merged, SynthError> {
    // Each shard's stats.json, read once: the hashes its layouts must match, and its counts.
    let recorded: Vec<Value> = inputs.iter().map(|dir| shard_stats(dir)).collect::<Result<_, _>>()?;
    let mut layouts: Vec<Vec<Value>> = Vec::new();
    let mut dups = 0;
    for file in ["chat.jsonl", "pairs.jsonl"] {
        let mut rows = Vec::new();
        for (dir, stats) in inputs.iter().zip(&recorded) {
            rows.extend(read_shard(dir, file, stats)?);
        }
        rows.sort_by_key(merge_order);
        let mut seen = HashSet::new();
        let before = rows.len();
        rows.retain(|r| seen.insert(r["metadata"]["key"].as_str().unwrap_or("").to_string()));
        dups = before - rows.len();
        layouts.push(rows);
    }
    let mut shards = Vec::new();
    let mut total = SynthStats::default();
    let mut wall_hours = 0.0;
    for (dir, stats) in inputs.iter().zip(&recorded) {
        let s: SynthStats = serde_json::from_value(stats.clone()).map_err(|e| SynthError::Invalid {
            path: dir.join("stats.json").display().to_string(),
            detail: e.to_string(),
        })?;
        total.problems += s.problems;
        total.solved += s.solved;
        total.selected += s.selected;
        total.duplicates_dropped += s.duplicates_dropped;
        total.contaminated_dropped += s.contaminated_dropped;
        total.failed_reverification += s.failed_reverification;
        total.model_calls += s.model_calls;
        total.tokens += s.tokens;
        total.lean_checks += s.lean_checks;
        if s.problems_per_hour > 0.0 {
            wall_hours += s.problems as f64 / s.problems_per_hour;
        }
        shards.push(serde_json::json!({"dir": dir.display().to_string(), "stats": s}));
    }
    total.duplicates_dropped += dups;
    total.problems_per_hour = if wall_hours > 0.0 { round2(total.problems as f64 / wall_hours) } else { 0.0 };
    let kinds = |k: &str| layouts[0].iter().filter(|r| r["metadata"]["kind"] == k).count();
    total.cot_examples = kinds("cot");
    total.subgoal_examples = kinds("subgoal");
    total.examples_per_solved_problem =
        if total.solved == 0 { 0.0 } else { round2(layouts[0].len() as f64 / total.solved as f64) };
    let mut stats = serde_json::to_value(&total).unwrap_or_default();
    stats["shards"] = Value::Array(shards);
    stats["duplicates_across_shards"] = dups.into();
    write_outputs(out, &layouts[0], &layouts[1], &stats)?;
    Ok(Merged { stats: total, examples: layouts[0].len(), duplicates_across_shards: dups })
}

/// The order examples are merged in: an unsharded synthesis's (problem, kind, form, name).
fn merge_order(v: &Value) -> (String, String, String, String) {
    let m = &v["metadata"];
    (
        m["provenance"]["problem"].as_str().unwrap_or("").to_string(),
        m["kind"].to_string(),
        m["form"].to_string(),
        m["name"].as_str().unwrap_or("").to_string(),
    )
}

/// A shard's `stats.json`; without one the shard's output is incomplete.
fn shard_stats(dir: &Path) -> Result<Value, SynthError> {
    std::fs::read_to_string(dir.join("stats.json")).ok().and_then(|s| serde_json::from_str(&s).ok()).ok_or_else(|| {
        SynthError::Invalid {
            path: dir.display().to_string(),
            detail: "no stats.json, so the output is incomplete".into(),
        }
    })
}

/// One layout of a shard, refused unless it matches the hash its `stats.json` (`stats`) records.
fn read_shard(dir: &Path, file: &str, stats: &Value) -> Result<Vec<Value>, SynthError> {
    let path = dir.join(file);
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| SynthError::Read { path: shown.clone(), source })?;
    if stats["sha256"][file].as_str() != Some(sha256_hex(&text).as_str()) {
        return Err(SynthError::Invalid {
            path: shown,
            detail: "does not match its stats.json: the output is incomplete or was changed".into(),
        });
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| SynthError::Invalid { path: format!("{shown}:{}", i + 1), detail: e.to_string() })
        })
        .collect()
}
