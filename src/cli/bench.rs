//! `subgoal bench`: a dataset through the pipeline into a resumable run directory;
//! `subgoal datasets`: the registry of named datasets.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;

use subgoal::bench::rundir::RunDir;
use subgoal::bench::{
    summarize, DatasetInfo, LeanInfo, ModelInfo, ProblemResult, RunConfig, Shard, Summary, RESULT_SCHEMA, RUN_SCHEMA,
};
use subgoal::datasets::{self, BenchProblem, FieldMap, Format, Registry};
use subgoal::pipeline::prompts::Prompts;
use subgoal::pipeline::scheduler::{Attempt, Engine, Role};
use subgoal::verify::Verdict;

use super::prove::PipelineArgs;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A registry name (`subgoal datasets list`) or a JSONL file.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directories holding dataset files (default: $SUBGOAL_DATA, then ~/.cache/subgoal/datasets).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Vec<PathBuf>,
    /// Field mapping for a JSONL of another shape: `name=F,statement=F[,header=F,informal=F,split=F,area=F]`.
    #[arg(long, value_name = "MAP")]
    pub fields: Option<String>,
    /// Only problems of this split (`valid`, `test`).
    #[arg(long)]
    pub split: Option<String>,
    /// Only the first N problems (after --split).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only shard i of N (`i/N`; after --split and --limit): a split by problem name that N
    /// machines can make without talking to each other.
    #[arg(long, value_name = "i/N")]
    pub shard: Option<Shard>,
    /// Problems in flight at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// The run directory (default: runs/DATASET-UNIXTIME).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub run_dir: Option<PathBuf>,
    /// Finish an interrupted run: its dataset, models, prompts and settings come from its
    /// config.json; only runtime flags (workers, jobs, devices, Lean limits) are taken from here.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

impl BenchArgs {
    /// Where the run lives (known before anything is loaded, so logging can go there).
    pub fn run_path(&self) -> PathBuf {
        if let Some(r) = &self.resume {
            return r.clone();
        }
        if let Some(d) = &self.run_dir {
            return d.clone();
        }
        let name = self.dataset.as_deref().unwrap_or("run");
        let stem = Path::new(name).file_stem().map_or(name.to_string(), |s| s.to_string_lossy().into_owned());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("{stem}-{now}"))
    }
}

/// A run's problems, read again as the run read them: the file it recorded if it is still there,
/// else its name through the data dirs; the file must be the same (sha256).
pub fn reload_problems(config: &RunConfig, dirs: &[PathBuf]) -> anyhow::Result<Vec<BenchProblem>> {
    let d = &config.dataset;
    let format = d.format.as_ref().and_then(|f| serde_json::from_value::<Format>(f.clone()).ok());
    let source = if Path::new(&d.path).exists() { d.path.clone() } else { d.name.clone() };
    let (info, problems) = load_problems(&source, dirs, format, d.split.as_deref(), d.limit, d.shard)
        .with_context(|| format!("reloading the dataset {}", d.name))?;
    anyhow::ensure!(
        info.sha256 == d.sha256,
        "{} changed since the run read it (sha256 {} then, {} now)",
        d.path,
        d.sha256,
        info.sha256
    );
    Ok(problems)
}

/// The prompt templates a run used, loaded from where it found them; their hashes must match.
pub fn reload_prompts(config: &RunConfig) -> anyhow::Result<Prompts> {
    let dir = config
        .prompts
        .iter()
        .find(|s| s.origin != "builtin")
        .and_then(|s| Path::new(&s.origin).parent().map(Path::to_path_buf));
    let prompts = Prompts::load(dir.as_deref()).context("loading prompt templates")?;
    let hashes = |s: &[subgoal::pipeline::prompts::TemplateSource]| {
        s.iter().map(|t| (t.file.clone(), t.sha256.clone())).collect::<Vec<_>>()
    };
    anyhow::ensure!(
        hashes(&prompts.sources) == hashes(&config.prompts),
        "the prompt templates differ from the ones the run used (see its config.json \"prompts\")"
    );
    Ok(prompts)
}

pub fn data_dirs(args: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = args.to_vec();
    dirs.extend(datasets::default_data_dirs());
    dirs
}

/// The run's problems: the dataset resolved, loaded, its split and limit applied.
pub fn load_problems(
    dataset: &str,
    dirs: &[PathBuf],
    format: Option<Format>,
    split: Option<&str>,
    limit: Option<usize>,
    shard: Option<Shard>,
) -> anyhow::Result<(DatasetInfo, Vec<BenchProblem>)> {
    let resolved = datasets::resolve(dataset, dirs)?;
    let loaded = match (&resolved.entry, &format) {
        (Some(_), None) => datasets::load_entry(&resolved)?,
        _ => datasets::load(&resolved.path, format.as_ref())?,
    };
    for e in &loaded.errors {
        eprintln!("subgoal: skipped {e}");
    }
    let mut load_errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
    let mut problems: Vec<BenchProblem> = Vec::with_capacity(loaded.problems.len());
    for p in loaded.problems {
        match (split, p.split.as_deref()) {
            (None, _) => problems.push(p),
            (Some(want), Some(have)) if want == have => problems.push(p),
            (Some(_), Some(_)) => {}
            // Not silently dropped: a problem with no split cannot be in the one asked for.
            (Some(want), None) => {
                let e = format!("{}: has no split, so it is not in --split {want}", p.source);
                eprintln!("subgoal: skipped {e}");
                load_errors.push(e);
            }
        }
    }
    if let Some(n) = limit {
        problems.truncate(n);
    }
    if let Some(sh) = shard {
        problems.retain(|p| sh.holds(&p.problem.name));
    }
    // Names are unique: `datasets::load` renames a repeated one.
    // A file is recorded by its absolute path, so `--resume` works from anywhere.
    let name = match &resolved.entry {
        Some(_) => dataset.to_string(),
        None => std::fs::canonicalize(&resolved.path).unwrap_or(resolved.path.clone()).display().to_string(),
    };
    let info = DatasetInfo {
        name,
        path: resolved.path.display().to_string(),
        sha256: loaded.sha256.clone(),
        split: split.map(str::to_owned),
        limit,
        shard,
        format: format.as_ref().and_then(|f| serde_json::to_value(f).ok()),
        problems: problems.len(),
        load_errors,
    };
    Ok((info, problems))
}

/// Per-problem counts taken from the attempts as they are written.
#[derive(Default, Clone)]
struct Tally {
    samples: usize,
    correct: usize,
    first_success: Option<usize>,
    attempts: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (path, summary) = execute(args).await?;
    let label = path.display().to_string();
    print!("{}", subgoal::bench::report::table(&[subgoal::bench::report::Labeled { label, summary: &summary }]));
    Ok(ExitCode::SUCCESS)
}

/// Runs (or resumes) a benchmark to its end; returns the run directory and its summary.
pub async fn execute(args: BenchArgs) -> anyhow::Result<(PathBuf, Summary)> {
    let dirs = data_dirs(&args.data_dir);
    let mut pipeline = args.pipeline.clone();
    let (run, config, problems, prover, planner) = match &args.resume {
        Some(path) => {
            let (run, config) = RunDir::open(path)?;
            let problems = reload_problems(&config, &dirs).with_context(|| format!("resuming {}", path.display()))?;
            // What decides results comes from the run; runtime flags from the command line.
            pipeline.prover = Some(config.prover.spec.clone());
            pipeline.planner = Some(config.planner.spec.clone());
            pipeline.lean.lean = config.lean.lean.as_ref().map(PathBuf::from);
            pipeline.lean.lean_project = config.lean.lean_project.as_ref().map(PathBuf::from);
            pipeline.lean.max_heartbeats = config.lean.max_heartbeats;
            pipeline.timeout = config.lean.timeout_s;
            pipeline.allow_native_decide = config.lean.allow_native_decide;
            let (prover, planner) = pipeline.models().await?;
            (run, config, problems, prover, planner)
        }
        None => {
            let dataset = args.dataset.as_deref().context("give --dataset NAME|FILE (or --resume RUN)")?;
            let format = args.fields.as_deref().map(FieldMap::parse).transpose()?.map(Format::Fields);
            let (info, problems) =
                load_problems(dataset, &dirs, format, args.split.as_deref(), args.limit, args.shard)?;
            anyhow::ensure!(!problems.is_empty(), "{dataset}: no problems to run");
            let prompts = Prompts::load(pipeline.prompts.as_deref()).context("loading prompt templates")?;
            let (prover, planner) = pipeline.models().await?;
            let lean_version = pipeline.lean.install()?.version()?;
            let config = RunConfig {
                schema: RUN_SCHEMA.into(),
                subgoal_version: env!("CARGO_PKG_VERSION").into(),
                created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                dataset: info,
                prover: ModelInfo { spec: pipeline.prover.clone().unwrap_or_default(), describe: prover.describe() },
                planner: ModelInfo {
                    spec: pipeline.planner.clone().or(pipeline.prover.clone()).unwrap_or_default(),
                    describe: planner.describe(),
                },
                engine: pipeline.engine_config(true),
                prompts: prompts.sources.clone(),
                lean_version,
                lean: LeanInfo {
                    lean: pipeline.lean.lean.as_ref().map(|p| p.display().to_string()),
                    lean_project: pipeline.lean.lean_project.as_ref().map(|p| p.display().to_string()),
                    max_heartbeats: pipeline.lean.max_heartbeats,
                    timeout_s: pipeline.timeout,
                    allow_native_decide: pipeline.allow_native_decide,
                },
            };
            let run = RunDir::create(&args.run_path(), &config)?;
            (run, config, problems, prover, planner)
        }
    };
    let prompts = reload_prompts(&config).with_context(|| format!("running {}", run.path.display()))?;
    let _lock = run.lock()?;
    let done = run.repair()?;
    let done_names: std::collections::HashSet<String> = done.iter().map(|r| r.outcome.name.clone()).collect();
    let todo: Vec<BenchProblem> = problems.iter().filter(|p| !done_names.contains(&p.problem.name)).cloned().collect();
    eprintln!(
        "bench {}: {} problems, {} done, {} to run; run directory {}",
        config.dataset.name,
        problems.len(),
        done.len(),
        todo.len(),
        run.path.display()
    );

    let verifier = pipeline.verifier()?;
    let tallies: Arc<Mutex<HashMap<String, Tally>>> = Arc::new(Mutex::new(HashMap::new()));
    let attempts = Arc::new(Mutex::new(run.attempts_writer()?));
    let sink = {
        let tallies = tallies.clone();
        let attempts = attempts.clone();
        Arc::new(move |a: &Attempt| {
            if let Ok(mut t) = tallies.lock() {
                let e = t.entry(a.problem.clone()).or_default();
                e.attempts += 1;
                if a.role == Role::Prover && a.node == a.problem {
                    e.samples += 1;
                    if a.verdict == Verdict::Proved {
                        e.correct += 1;
                        e.first_success = Some(e.first_success.map_or(a.sample, |f| f.min(a.sample)));
                    }
                }
            }
            if let (Ok(mut f), Ok(mut line)) = (attempts.lock(), serde_json::to_string(a)) {
                line.push('\n');
                // One write per line, so a kill leaves at most one torn line (cut on resume).
                let _ = f.write_all(line.as_bytes()).and_then(|_| f.flush());
            }
        })
    };
    let engine = Engine::new(verifier.clone(), prover, planner, prompts, config.engine.clone(), Some(sink));

    let session = std::time::Instant::now();
    let before = run.wall_seconds();
    let session_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let bar = progress_bar(problems.len() as u64, done.len() as u64, args.no_progress);
    let mut results = done;
    let mut solved = results.iter().filter(|r| r.outcome.solved).count();
    bar.set_message(format!("solved {solved}"));
    let mut outcomes = futures::stream::iter(todo.iter().map(|p| {
        let engine = engine.clone();
        async move { (p, engine.prove(&p.problem).await) }
    }))
    .buffer_unordered(args.jobs.max(1));
    while let Some((p, outcome)) = outcomes.next().await {
        let name = &p.problem.name;
        let dag_rel = format!("dags/{}.json", file_safe(name));
        let dag = engine.export_dag(Some(name));
        subgoal::bench::rundir::write_atomic(&run.file(&dag_rel), &serde_json::to_string_pretty(&dag)?)?;
        let t = tallies.lock().ok().and_then(|mut t| t.remove(name)).unwrap_or_default();
        let result = ProblemResult {
            schema: RESULT_SCHEMA.into(),
            outcome,
            split: p.split.clone(),
            area: p.area.clone(),
            source: p.source.clone(),
            samples: t.samples,
            correct: t.correct,
            first_success: t.first_success,
            attempts: t.attempts,
            dag: dag_rel,
        };
        run.append_result(&result)?;
        engine.retire(name);
        solved += result.outcome.solved as usize;
        tracing::info!(problem = %name, solved = result.outcome.solved, reason = %result.outcome.reason, "problem done");
        results.push(result);
        bar.inc(1);
        bar.set_message(format!("solved {solved}"));
        if results.len() % 16 == 0 {
            // The session's time so far, so a killed session still counts (the latest line of a
            // session stands).
            run.record_session(session_id, session.elapsed().as_secs_f64(), results.len())?;
            run.write_summary(&summarize(&config, &results, before + session.elapsed().as_secs_f64()))?;
        }
    }
    drop(outcomes);
    bar.finish_and_clear();
    let wall = session.elapsed().as_secs_f64();
    run.record_session(session_id, wall, results.len())?;
    let summary = summarize(&config, &results, before + wall);
    run.write_summary(&summary)?;
    drop(engine);
    if let Ok(v) = Arc::try_unwrap(verifier) {
        v.shutdown().await;
    }
    Ok((run.path.clone(), summary))
}

fn progress_bar(total: u64, done: u64, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_position(done);
    bar
}

/// A problem name as a file name: readable, and unique by a hash of the exact name (`foo'` and
/// `foo_`, or `Foo` and `foo` on a case-insensitive file system, stay apart).
fn file_safe(name: &str) -> String {
    let readable: String =
        name.chars().take(80).map(|c| if c.is_ascii_alphanumeric() || "_-.".contains(c) { c } else { '_' }).collect();
    let hash = subgoal::digest::sha256_hex(name);
    format!("{readable}-{}", &hash[..10])
}

#[derive(Subcommand, Debug)]
pub enum DatasetsCommand {
    /// The registry: names, counts, Lean/Mathlib versions, and whether each is found locally.
    List {
        #[arg(long, value_name = "DIR")]
        data_dir: Vec<PathBuf>,
    },
    /// Download a dataset into the first data directory and check its sha256.
    Fetch {
        name: String,
        #[arg(long, value_name = "DIR")]
        data_dir: Vec<PathBuf>,
    },
}

pub async fn datasets_command(cmd: DatasetsCommand) -> anyhow::Result<ExitCode> {
    let registry = Registry::builtin();
    match cmd {
        DatasetsCommand::List { data_dir } => {
            let dirs = data_dirs(&data_dir);
            for e in &registry.entries {
                let found = dirs.iter().map(|d| d.join(&e.file)).find(|p| p.exists());
                println!(
                    "{:<26} {:>5}  Lean {:<8} Mathlib {:<10} {}",
                    e.name,
                    e.expected_count,
                    e.lean,
                    e.mathlib,
                    found.map_or("(not found)".to_string(), |p| p.display().to_string())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        DatasetsCommand::Fetch { name, data_dir } => {
            let entry = registry.get(&name).with_context(|| format!("no dataset named {name}"))?;
            let dir = data_dirs(&data_dir).into_iter().next().context("no data directory")?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = datasets::fetch(entry, &dir).await?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
