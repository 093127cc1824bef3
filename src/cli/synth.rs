//! `subgoal synth`: chain-of-thought cold-start data from runs (finished ones, or one it runs and
//! resumes itself); `subgoal merge`: shards' outputs joined, de-duplicated, counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use subgoal::bench::rundir::{write_atomic, RunDir};
use subgoal::bench::ProblemResult;
use subgoal::digest::sha256_hex;
use subgoal::pipeline::dag::{DagExport, NodeKind, Status};
use subgoal::pipeline::recompose::proof_body;
use subgoal::synth::{
    chat_record, contamination_key, examples_of, pair_record, select_unique, selected, Example, Selection, Solved,
    SynthStats,
};
use subgoal::verify::{Verdict, Verifier, VerifyInput};

use subgoal::bench::problems::{self, data_dirs};

use super::bench::{execute, BenchArgs};

/// Which solved problems give examples (`subgoal::synth::Selection`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectArg {
    /// Every problem proved through decomposition.
    All,
    /// The paper's rule: the prover sampled whole proofs and none verified, and every subgoal was
    /// proved (so the theorem was proved through decomposition).
    Paper,
}

impl From<SelectArg> for Selection {
    fn from(a: SelectArg) -> Selection {
        match a {
            SelectArg::All => Selection::All,
            SelectArg::Paper => Selection::Paper,
        }
    }
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Finished (or interrupted) run directories to read; without it, the dataset is run first
    /// (into OUT/run, resumed if it is there).
    #[arg(long, value_name = "RUN")]
    pub from_run: Vec<PathBuf>,
    /// Output directory: chat.jsonl, pairs.jsonl, stats.json.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Which solved problems give examples.
    #[arg(long, value_enum, default_value_t = SelectArg::All)]
    pub select: SelectArg,
    /// Drop examples whose statement is in this benchmark (a registry name or a file; repeatable).
    #[arg(long, value_name = "DATASET")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

pub async fn run(mut args: SynthArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut runs = args.from_run.clone();
    if runs.is_empty() {
        let run_dir = args.out.join("run");
        if run_dir.join("config.json").exists() {
            args.bench.resume = Some(run_dir.clone());
            args.bench.run_dir = None;
        } else {
            args.bench.run_dir = Some(run_dir.clone());
        }
        let (path, _) = execute(args.bench.clone()).await?;
        runs.push(path);
    }
    let dirs = data_dirs(&args.bench.data_dir);
    let excluded = exclusion_set(&args.exclude, &dirs)?;
    let verifier = args.bench.pipeline.verifier()?;
    let mut all = Vec::new();
    let mut stats = SynthStats::default();
    let mut wall_seconds = 0.0;
    for path in &runs {
        let (run, config) = RunDir::open(path)?;
        let results = run.results()?;
        let problems = problems::reload(&config, &dirs).with_context(|| format!("reading {}", path.display()))?;
        let problems: HashMap<&str, &subgoal::pipeline::problem::Problem> =
            problems.iter().map(|p| (p.problem.name.as_str(), &p.problem)).collect();
        let prompts = problems::reload_prompts(&config).with_context(|| format!("reading {}", path.display()))?;
        stats.problems += results.len();
        stats.solved += results.iter().filter(|r| r.outcome.solved).count();
        stats.model_calls += results.iter().map(|r| r.outcome.model_calls).sum::<u64>();
        stats.tokens += results.iter().map(|r| r.outcome.tokens).sum::<u64>();
        stats.lean_checks += results.iter().map(|r| r.outcome.lean_checks).sum::<u64>();
        wall_seconds += run.wall_seconds();
        for r in results.iter().filter(|r| selected(r, args.select.into())) {
            let Some(problem) = problems.get(r.outcome.name.as_str()) else {
                anyhow::bail!("{}: problem {} is not in the run's dataset any more", path.display(), r.outcome.name);
            };
            let dag = read_dag(&run, r)?;
            stats.selected += 1;
            let form_a = form_a_proofs(&verifier, &dag, &problem.header).await;
            let solved = Solved { result: r, dag: &dag, problem };
            all.extend(examples_of(&solved, &config, &prompts, &form_a)?);
        }
    }
    // Every proof checks again, against its statement, before it is written; the file written is
    // the one the verifier checked (the proof after the statement, under the problem's header).
    let checked: Vec<(Example, Verdict, bool, Option<String>)> = futures::stream::iter(all.into_iter().map(|e| {
        let v = verifier.clone();
        async move {
            let Some((body, _)) = proof_body(&e.proof, &e.name) else { return (e, Verdict::InvalidInput, false, None) };
            let input = VerifyInput {
                name: e.name.clone(),
                header: e.header.clone(),
                formal_statement: e.statement.clone(),
                proof: Some(format!(" {body}")),
                code: None,
            };
            let (r, doc) = v.verify_document(&input).await;
            let agreed = r.recheck.as_ref().is_some_and(|c| c.agreed);
            (e, r.verdict, agreed, doc.map(|d| d.checked_source()))
        }
    }))
    .buffered(8)
    .collect()
    .await;
    let mut verified = Vec::new();
    for (mut e, verdict, agreed, source) in checked {
        if let (Verdict::Proved, true, Some(source)) = (verdict, agreed, source) {
            e.provenance.verdict = verdict;
            e.provenance.recheck_agreed = agreed;
            e.proof = source;
            verified.push(e);
        } else {
            tracing::warn!(name = %e.name, verdict = verdict.as_str(), "an example's proof no longer verifies");
            stats.failed_reverification += 1;
        }
    }
    let (kept, dups, contaminated) = select_unique(verified, &excluded);
    stats.duplicates_dropped = dups;
    stats.contaminated_dropped = contaminated;
    finish_stats(&mut stats, &kept, wall_seconds);
    write_outputs(
        &args.out,
        &kept.iter().map(chat_record).collect::<Vec<_>>(),
        &kept.iter().map(pair_record).collect::<Vec<_>>(),
        &serde_json::to_value(&stats)?,
    )?;
    if let Ok(v) = Arc::try_unwrap(verifier) {
        v.shutdown().await;
    }
    println!(
        "{}: {} CoT and {} subgoal examples from {} selected of {} solved problems ({} duplicates and {} contaminated dropped, {} failed re-verification)",
        args.out.display(),
        stats.cot_examples,
        stats.subgoal_examples,
        stats.selected,
        stats.solved,
        stats.duplicates_dropped,
        stats.contaminated_dropped,
        stats.failed_reverification
    );
    Ok(ExitCode::SUCCESS)
}

fn finish_stats(stats: &mut SynthStats, kept: &[Example], wall_seconds: f64) {
    use subgoal::synth::ExampleKind;
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

fn read_dag(run: &RunDir, r: &ProblemResult) -> anyhow::Result<DagExport> {
    let path = run.file(&r.dag);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a subgoal graph", path.display()))
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
fn exclusion_set(names: &[String], dirs: &[PathBuf]) -> anyhow::Result<HashSet<String>> {
    let mut keys = HashSet::new();
    for name in names {
        let sel = problems::Selection { dataset: name.clone(), ..Default::default() };
        let (_, problems) = problems::select(&sel, dirs).with_context(|| format!("--exclude {name}"))?;
        keys.extend(problems.iter().map(|p| contamination_key(&p.problem.formal_statement)));
    }
    Ok(keys)
}

/// Writes both layouts and the stats, each through a temporary file and a rename: a crash
/// leaves the previous output or the new one, never a torn record.
fn write_outputs(dir: &Path, chat: &[Value], pairs: &[Value], stats: &Value) -> anyhow::Result<()> {
    let jsonl = |rows: &[Value]| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    let (chat, pairs) = (jsonl(chat), jsonl(pairs));
    // Removed first and written last, with the others' hashes: an output set is complete exactly
    // when its stats.json is there and the hashes match (`merge` checks).
    let _ = std::fs::remove_file(dir.join("stats.json"));
    write_atomic(&dir.join("chat.jsonl"), &chat)?;
    write_atomic(&dir.join("pairs.jsonl"), &pairs)?;
    let mut stats = stats.clone();
    stats["sha256"] = serde_json::json!({"chat.jsonl": sha256_hex(&chat), "pairs.jsonl": sha256_hex(&pairs)});
    write_atomic(&dir.join("stats.json"), &serde_json::to_string_pretty(&stats)?)?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Synthesis output directories (one per shard).
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
}

/// Joins shards: examples de-duplicated by key (the first in example order wins, as in one
/// unsharded synthesis), in one stable order; counts summed.
pub async fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let read = |dir: &Path, file: &str| -> anyhow::Result<Vec<Value>> {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let stats: Value = std::fs::read_to_string(dir.join("stats.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .with_context(|| format!("{}: no stats.json, so the output is incomplete", dir.display()))?;
        anyhow::ensure!(
            stats["sha256"][file].as_str() == Some(sha256_hex(&text).as_str()),
            "{} does not match its stats.json: the output is incomplete or was changed",
            path.display()
        );
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
            .collect()
    };
    let order = |v: &Value| {
        let m = &v["metadata"];
        (
            m["provenance"]["problem"].as_str().unwrap_or("").to_string(),
            m["kind"].to_string(),
            m["form"].to_string(),
            m["name"].as_str().unwrap_or("").to_string(),
        )
    };
    let mut layouts: Vec<Vec<Value>> = Vec::new();
    let mut dups = 0;
    for file in ["chat.jsonl", "pairs.jsonl"] {
        let mut rows = Vec::new();
        for dir in &args.inputs {
            rows.extend(read(dir, file)?);
        }
        rows.sort_by_key(|a| order(a));
        let mut seen = HashSet::new();
        let before = rows.len();
        rows.retain(|r| seen.insert(r["metadata"]["key"].as_str().unwrap_or("").to_string()));
        dups = before - rows.len();
        layouts.push(rows);
    }
    let mut shards = Vec::new();
    let mut total = SynthStats::default();
    let mut wall_hours = 0.0;
    for dir in &args.inputs {
        let text = std::fs::read_to_string(dir.join("stats.json"))
            .with_context(|| format!("reading {}/stats.json", dir.display()))?;
        let s: SynthStats = serde_json::from_str(&text).with_context(|| format!("{}/stats.json", dir.display()))?;
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
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut stats = serde_json::to_value(&total)?;
    stats["shards"] = Value::Array(shards);
    stats["duplicates_across_shards"] = dups.into();
    write_outputs(&args.out, &layouts[0], &layouts[1], &stats)?;
    println!(
        "{}: {} examples ({} CoT, {} subgoal) from {} shards; {} duplicates across shards dropped",
        args.out.display(),
        layouts[0].len(),
        total.cot_examples,
        total.subgoal_examples,
        args.inputs.len(),
        dups
    );
    Ok(ExitCode::SUCCESS)
}
