//! `subgoal bench`: a dataset through the pipeline into a resumable run directory;
//! `subgoal datasets`: the registry of named datasets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};

use subgoal::bench::problems::{self, Selection};
use subgoal::bench::run::{run_problems, Resources};
use subgoal::bench::rundir::RunDir;
use subgoal::bench::statements::{self, StatementReport};
use subgoal::bench::{LeanInfo, ModelInfo, ProblemResult, RunConfig, Shard, Summary, RUN_SCHEMA};
use subgoal::datasets::{self, BenchProblem, FieldMap, Format, Registry};
use subgoal::pipeline::prompts::Prompts;
use subgoal::verify::Verifier;

use super::prove::PipelineArgs;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A registry name (`subgoal datasets list`) or a JSONL file.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directories holding dataset files (searched first; then $SUBGOAL_DATA,
    /// ~/.cache/subgoal/datasets, and the copies in this checkout's benchmarks/data).
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
    /// Run the problems whose statement elaborates even when others do not (those are recorded
    /// as not run and reported apart); without it a run with such statements does not start.
    #[arg(long)]
    pub allow_broken_statements: bool,
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
        // A registry name as it is (`minif2f-v4.24-test` has dots); a file by its stem.
        let stem = if subgoal::datasets::Registry::builtin().get(name).is_some() {
            name.to_string()
        } else {
            Path::new(name).file_stem().map_or(name.to_string(), |s| s.to_string_lossy().into_owned())
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!("{stem}-{now}"))
    }
}

pub use subgoal::bench::problems::data_dirs;

/// The dataset selection the flags name.
fn selection(args: &BenchArgs) -> anyhow::Result<Selection> {
    let dataset = args.dataset.clone().context("give --dataset NAME|FILE (or --resume RUN)")?;
    let format = args.fields.as_deref().map(FieldMap::parse).transpose()?.map(Format::Fields);
    Ok(Selection { dataset, format, split: args.split.clone(), limit: args.limit, shard: args.shard })
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
    let jobs = args.jobs.max(1);
    let (run, config, problems, prover, planner) = match &args.resume {
        Some(path) => {
            let (run, config) = RunDir::open(path)?;
            let problems = problems::reload(&config, &dirs).with_context(|| format!("resuming {}", path.display()))?;
            // What decides results comes from the run; runtime flags from the command line.
            pipeline.prover = Some(config.prover.spec.clone());
            pipeline.planner = Some(config.planner.spec.clone());
            pipeline.lean.lean = config.lean.lean.as_ref().map(PathBuf::from);
            pipeline.lean.lean_project = config.lean.lean_project.as_ref().map(PathBuf::from);
            pipeline.lean.max_heartbeats = config.lean.max_heartbeats;
            pipeline.timeout = config.lean.timeout_s;
            pipeline.allow_native_decide = config.lean.allow_native_decide;
            let (prover, planner) = pipeline.models(jobs).await?;
            (run, config, problems, prover, planner)
        }
        None => {
            let (info, problems) = problems::select(&selection(&args)?, &dirs)?;
            for e in &info.load_errors {
                eprintln!("subgoal: skipped {e}");
            }
            anyhow::ensure!(!problems.is_empty(), "{}: no problems to run", info.name);
            let prompts = Prompts::load(pipeline.prompts.as_deref()).context("loading prompt templates")?;
            let (prover, planner) = pipeline.models(jobs).await?;
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
                engine: pipeline.engine_config(true, jobs)?,
                prompts: prompts.sources.clone(),
                lean_version: pipeline.lean.install()?.version()?,
                lean: LeanInfo {
                    lean: pipeline.lean.lean.as_ref().map(|p| p.display().to_string()),
                    lean_project: pipeline.lean.lean_project.as_ref().map(|p| p.display().to_string()),
                    max_heartbeats: pipeline.lean.max_heartbeats,
                    timeout_s: pipeline.timeout,
                    allow_native_decide: pipeline.allow_native_decide,
                },
                allow_broken_statements: args.allow_broken_statements,
            };
            (RunDir::create(&args.run_path(), &config)?, config, problems, prover, planner)
        }
    };
    let prompts = problems::reload_prompts(&config).with_context(|| format!("running {}", run.path.display()))?;
    let verifier = pipeline.verifier()?;
    let allow = config.allow_broken_statements || args.allow_broken_statements;
    let statements = preflight(&pipeline, &verifier, &config, &problems, allow).await?;
    subgoal::bench::rundir::write_atomic(&run.file("statements.json"), &serde_json::to_string_pretty(&statements)?)?;
    eprintln!(
        "bench {}: {} problems ({} with a statement that does not elaborate); run directory {}",
        config.dataset.name,
        problems.len(),
        statements.broken,
        run.path.display()
    );
    let done_before = run.results().map(|r| r.len()).unwrap_or(0) as u64;
    let bar = progress_bar(problems.len() as u64, done_before, args.no_progress);
    let progress = |_: &ProblemResult, _done: usize, solved: usize| {
        bar.inc(1);
        bar.set_message(format!("solved {solved}"));
    };
    let resources = Resources { verifier: verifier.clone(), prover, planner, prompts };
    let summary = run_problems(&run, &config, &problems, Some(&statements), resources, jobs, &progress).await?;
    bar.finish_and_clear();
    if let Ok(v) = Arc::try_unwrap(verifier) {
        v.shutdown().await;
    }
    Ok((run.path.clone(), summary))
}

/// The statement preflight: every problem's statement elaborated with `sorry` (cached per Lean
/// environment). Refuses to go on when some do not, unless `allow`.
async fn preflight(
    pipeline: &PipelineArgs,
    verifier: &Arc<Verifier>,
    config: &RunConfig,
    problems: &[BenchProblem],
    allow: bool,
) -> anyhow::Result<StatementReport> {
    let install = pipeline.lean.install()?;
    let environment = statements::environment_key(&install, verifier.lean_version());
    let cache = statements::default_cache_dir();
    let report = statements::check(verifier, problems, &config.dataset.name, &environment, cache.as_deref(), 64).await;
    if report.broken > 0 && !allow {
        let examples: Vec<String> =
            report.broken().take(3).map(|c| format!("{} ({}: {})", c.name, c.verdict.as_str(), c.detail)).collect();
        let target = Registry::builtin()
            .get(&config.dataset.name)
            .map(|e| format!("; {} targets Lean {} with Mathlib {}", e.name, e.lean, e.mathlib))
            .unwrap_or_default();
        anyhow::bail!(
            "{} of {} statements do not elaborate under {}{target}: {}. Point --lean-project at a Lake project \
             of the Lean and Mathlib the dataset was written for, or pass --allow-broken-statements to run the \
             others (the broken ones are reported apart). `subgoal datasets check {}` lists them all.",
            report.broken,
            report.checked,
            verifier.lean_version(),
            examples.join(", "),
            config.dataset.name
        );
    }
    Ok(report)
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
    /// Elaborate every statement of a dataset (proof `sorry`) in this Lean environment and
    /// report which do not (exit 1 when some do not). `bench` runs the same check first.
    Check(Box<CheckArgs>),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A registry name or a JSONL file.
    pub dataset: String,
    #[arg(long, value_name = "DIR")]
    pub data_dir: Vec<PathBuf>,
    #[arg(long)]
    pub split: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the report (JSON, `subgoal.statements.v1`) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Lean servers to run (default: number of cores).
    #[arg(long, short)]
    pub workers: Option<usize>,
    /// Wall-clock seconds per statement.
    #[arg(long, default_value_t = 120.0, value_parser = super::positive_seconds)]
    pub timeout: f64,
    /// Check every statement again instead of taking earlier results for this environment.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub lean: super::LeanArgs,
}

async fn check_dataset(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let dirs = data_dirs(&args.data_dir);
    let sel = Selection {
        dataset: args.dataset.clone(),
        format: None,
        split: args.split.clone(),
        limit: args.limit,
        shard: None,
    };
    let (info, problems) = problems::select(&sel, &dirs)?;
    for e in &info.load_errors {
        eprintln!("subgoal: skipped {e}");
    }
    let install = args.lean.install()?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let pool = args.lean.pool_config(install.clone(), workers, args.timeout, 500, 0);
    let verifier = Arc::new(Verifier::start(pool).context("starting Lean")?);
    let environment = statements::environment_key(&install, verifier.lean_version());
    let cache = if args.no_cache { None } else { statements::default_cache_dir() };
    let report = statements::check(&verifier, &problems, &info.name, &environment, cache.as_deref(), workers * 4).await;
    if let Some(out) = &args.out {
        subgoal::bench::rundir::write_atomic(out, &serde_json::to_string_pretty(&report)?)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for c in report.broken() {
            println!("{:<40} {:<14} {}", c.name, c.verdict.as_str(), c.detail);
        }
        println!(
            "{}: {} of {} statements elaborate under {} ({} from the cache)",
            info.name,
            report.checked - report.broken,
            report.checked,
            report.lean_version,
            report.cached
        );
        if let Some(e) = Registry::builtin().get(&info.name) {
            println!("{} targets Lean {} with Mathlib {}", e.name, e.lean, e.mathlib);
        }
    }
    if let Ok(v) = Arc::try_unwrap(verifier) {
        v.shutdown().await;
    }
    Ok(if report.broken == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
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
        DatasetsCommand::Check(args) => check_dataset(*args).await,
    }
}
