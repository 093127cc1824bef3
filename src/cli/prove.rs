//! `subgoal prove`: one theorem through the pipeline; writes the proof, the subgoal graph (JSON
//! and DOT), every attempt (JSONL) and the outcome into an output directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use subgoal::bench::html::{self, RunView};
use subgoal::model::{Generator, SamplingParams};
use subgoal::pipeline::closers::Portfolio;
use subgoal::pipeline::config::{Closers, RepairStyle};
use subgoal::pipeline::dag::Status;
use subgoal::pipeline::library::LibraryScope;
use subgoal::pipeline::problem::Problem;
use subgoal::pipeline::prompts::Prompts;
use subgoal::pipeline::scheduler::{Attempt, Budget, Engine, EngineConfig, Strategy};
use subgoal::verify::{GateConfig, Verifier, VerifyOptions};

use super::{LeanArgs, ModelOptions};

#[derive(Args, Debug)]
pub struct ProveArgs {
    /// A Lean file holding the theorem (its last theorem, or --name); its docstring is the
    /// informal statement.
    #[arg(value_name = "FILE.lean", required_unless_present = "statement", conflicts_with = "statement")]
    pub file: Option<PathBuf>,
    /// The theorem to prove in FILE (default: the last one).
    #[arg(long)]
    pub name: Option<String>,
    /// The formal statement (`theorem NAME … :=`) instead of a file.
    #[arg(long)]
    pub statement: Option<String>,
    /// Import header for --statement (e.g. "import Mathlib").
    #[arg(long, default_value = "", requires = "statement")]
    pub header: String,
    /// Informal statement for --statement.
    #[arg(long, default_value = "", requires = "statement")]
    pub informal: String,
    /// Output directory (default: subgoal-out/NAME).
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// `--strategy` (`subgoal::pipeline::config::Strategy`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairStyleArg {
    Deepseek,
    Goedel,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryArg {
    Off,
    Problem,
    Run,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyArg {
    /// Whole-proof sampling only.
    Whole,
    /// Sketch and decompose the theorem at once.
    Decompose,
    /// Whole-proof sampling first, decomposition when it fails.
    Both,
}

impl From<StrategyArg> for Strategy {
    fn from(a: StrategyArg) -> Strategy {
        match a {
            StrategyArg::Whole => Strategy::Whole,
            StrategyArg::Decompose => Strategy::Decompose,
            StrategyArg::Both => Strategy::Both,
        }
    }
}

/// Models, strategy, budgets and Lean settings: what `prove` and `bench` share.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The prover model (see `subgoal generate --help` for the forms; default: the test model).
    #[arg(long)]
    pub prover: Option<String>,
    /// The planner model that writes sketches (default: the prover).
    #[arg(long)]
    pub planner: Option<String>,
    /// The environment variable holding the prover server's API key (never written anywhere).
    #[arg(long, value_name = "VAR", default_value = subgoal::model::openai::DEFAULT_KEY_ENV)]
    pub prover_api_key_env: String,
    /// The environment variable holding the planner server's API key.
    #[arg(long, value_name = "VAR", default_value = subgoal::model::openai::DEFAULT_KEY_ENV)]
    pub planner_api_key_env: String,
    #[arg(long, value_enum, default_value_t = StrategyArg::Both)]
    pub strategy: StrategyArg,
    /// Decomposition levels (0: none; 1: the theorem only; 2: its subgoals too; …).
    #[arg(long, default_value_t = 2)]
    pub depth: u32,
    /// Prover samples per theorem and subgoal (pass@k).
    #[arg(long, short, default_value_t = 8)]
    pub k: usize,
    /// Planner sketches per decomposition, tried in turn.
    #[arg(long, default_value_t = 2)]
    pub sketches: usize,
    /// Use the CoT prover prompt.
    #[arg(long)]
    pub cot: bool,
    /// Self-correction rounds: each sends the previous round's failed candidates back to the
    /// prover with Lean's errors (`--repair` alone: one round).
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "1", default_value_t = 0)]
    pub repair: u32,
    /// The repair prompt's shape: `deepseek` (the candidate, then Lean's errors by line) or
    /// `goedel` (errors marked in the candidate, reasoning asked first).
    #[arg(long, value_enum, default_value_t = RepairStyleArg::Deepseek)]
    pub repair_style: RepairStyleArg,
    /// Lean's errors in a repair prompt are cut to about this many tokens.
    #[arg(long, default_value_t = 1024)]
    pub repair_error_tokens: usize,
    /// A closer portfolio replacing the default (one tactic a line; lines indented continue the
    /// tactic above; `--` comments). The default, for Mathlib headers: norm_num, linarith, omega,
    /// positivity, ring, simp, nlinarith.
    #[arg(long, value_name = "FILE", conflicts_with = "no_closers")]
    pub closers: Option<PathBuf>,
    /// Try no automation before the prover.
    #[arg(long)]
    pub no_closers: bool,
    /// Heartbeats each closer tactic may use per statement.
    #[arg(long, default_value_t = subgoal::pipeline::closers::DEFAULT_HEARTBEATS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub closer_heartbeats: u64,
    /// Which proved lemmas prover prompts are offered: `problem` (those of the same problem),
    /// `run` (any of the run's), `off`.
    #[arg(long, value_enum, default_value_t = LibraryArg::Problem)]
    pub library: LibraryArg,
    /// Tokens of lemma statements a prompt is offered at most.
    #[arg(long, default_value_t = 512)]
    pub library_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Prover tokens per sample (default: 8192 with --cot, as the model card generates; 2048
    /// without).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    #[arg(long, default_value_t = 0.6)]
    pub planner_temperature: f64,
    /// Planner tokens per sketch (its informal proof comes first).
    #[arg(long, default_value_t = 8192)]
    pub planner_max_tokens: usize,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Budget: model requests for the problem.
    #[arg(long)]
    pub max_model_calls: Option<u64>,
    /// Budget: prompt + completion tokens for the problem.
    #[arg(long)]
    pub max_tokens_total: Option<u64>,
    /// Budget: wall-clock seconds for the problem.
    #[arg(long, value_parser = super::positive_seconds)]
    pub max_wall: Option<f64>,
    /// Model requests in flight at once (default: 4 per problem in flight, at most 256).
    #[arg(long)]
    pub model_concurrency: Option<usize>,
    /// Prompt templates replacing the built-in ones (files named as in prompts/).
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
    /// Lean servers to run (default: number of cores).
    #[arg(long, short)]
    pub workers: Option<usize>,
    /// Wall-clock seconds per Lean check.
    #[arg(long, default_value_t = 60.0, value_parser = super::positive_seconds)]
    pub timeout: f64,
    /// Accept `native_decide` and the axioms of native evaluation.
    #[arg(long)]
    pub allow_native_decide: bool,
    #[command(flatten)]
    pub model: ModelOptions,
    #[command(flatten)]
    pub lean: LeanArgs,
}

impl PipelineArgs {
    /// Prover tokens per sample for the prompt mode.
    pub fn prover_max_tokens(&self) -> usize {
        self.max_tokens.unwrap_or(if self.cot { 8192 } else { 2048 })
    }

    /// Model requests in flight with `jobs` problems in flight.
    pub fn model_concurrency(&self, jobs: usize) -> usize {
        self.model_concurrency.unwrap_or((4 * jobs.max(1)).min(256))
    }

    /// The engine's configuration; `verify_all` for pass@k counting; `jobs` problems in flight.
    pub fn engine_config(&self, verify_all: bool, jobs: usize) -> anyhow::Result<EngineConfig> {
        let closers = match (&self.closers, self.no_closers) {
            (_, true) => Closers::Off,
            (Some(path), false) => Closers::Custom(Portfolio::load(path, self.closer_heartbeats)?),
            (None, false) => Closers::Auto { heartbeats: self.closer_heartbeats },
        };
        Ok(EngineConfig {
            strategy: self.strategy.into(),
            depth: self.depth,
            k: self.k,
            sketches: self.sketches,
            prover: SamplingParams {
                n: 1,
                temperature: self.temperature,
                top_p: self.top_p,
                max_new_tokens: self.prover_max_tokens(),
                stop: vec![],
                seed: self.seed,
            },
            planner: SamplingParams {
                n: 1,
                temperature: self.planner_temperature,
                top_p: self.top_p,
                max_new_tokens: self.planner_max_tokens,
                stop: vec![],
                seed: self.seed,
            },
            cot: self.cot,
            repair: self.repair,
            repair_style: match self.repair_style {
                RepairStyleArg::Deepseek => RepairStyle::Deepseek,
                RepairStyleArg::Goedel => RepairStyle::Goedel,
            },
            repair_error_tokens: self.repair_error_tokens,
            closers,
            library: match self.library {
                LibraryArg::Off => LibraryScope::Off,
                LibraryArg::Problem => LibraryScope::Problem,
                LibraryArg::Run => LibraryScope::Run,
            },
            library_tokens: self.library_tokens,
            verify_all,
            budget: Budget {
                max_model_calls: self.max_model_calls,
                max_tokens: self.max_tokens_total,
                max_wall_s: self.max_wall,
            },
            model_concurrency: self.model_concurrency(jobs),
        })
    }

    /// The prover and the planner (the same generator when they are the same model and key);
    /// `jobs` problems in flight.
    pub async fn models(&self, jobs: usize) -> anyhow::Result<(Arc<dyn Generator>, Arc<dyn Generator>)> {
        let mut options = self.model.clone();
        options.server_concurrency = Some(options.server_concurrency.unwrap_or(self.model_concurrency(jobs)));
        let prover: Arc<dyn Generator> =
            Arc::from(options.open(self.prover.as_deref(), &self.prover_api_key_env).await?);
        let same = self.planner.is_none() || self.planner == self.prover;
        // Keys matter only to servers; one local model is never loaded twice.
        let server = self.prover.as_deref().is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"));
        let planner: Arc<dyn Generator> = if same && (!server || self.planner_api_key_env == self.prover_api_key_env) {
            prover.clone()
        } else {
            let spec = self.planner.as_deref().or(self.prover.as_deref());
            Arc::from(options.open(spec, &self.planner_api_key_env).await?)
        };
        Ok((prover, planner))
    }

    /// The verifier: Lean found, pool started, every gate on.
    pub fn verifier(&self) -> anyhow::Result<Arc<Verifier>> {
        let install = self.lean.install()?;
        let workers =
            self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
        let pool = self.lean.pool_config(install, workers, self.timeout, 500, 0);
        let options =
            VerifyOptions { gates: GateConfig { allow_native_decide: self.allow_native_decide }, ..Default::default() };
        Ok(Arc::new(Verifier::start_with(pool, options).context("starting Lean")?))
    }
}

pub async fn run(args: ProveArgs) -> anyhow::Result<ExitCode> {
    let problem = match (&args.file, &args.statement) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            Problem::from_lean(&text, args.name.as_deref()).with_context(|| format!("in {}", f.display()))?
        }
        (None, Some(s)) => Problem::from_statement(s, &args.header, &args.informal).context("in --statement")?,
        (None, None) => anyhow::bail!("give a FILE.lean or --statement"),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("subgoal-out").join(&problem.name));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let p = &args.pipeline;
    let prompts = Prompts::load(p.prompts.as_deref()).context("loading prompt templates")?;
    let (prover, planner) = p.models(1).await?;
    let verifier = p.verifier()?;

    let attempts_path = out_dir.join("attempts.jsonl");
    let attempts =
        std::fs::File::create(&attempts_path).with_context(|| format!("creating {}", attempts_path.display()))?;
    let attempts = Arc::new(Mutex::new(std::io::BufWriter::new(attempts)));
    let sink_file = attempts.clone();
    let sink = Arc::new(move |a: &Attempt| {
        if let (Ok(mut f), Ok(line)) = (sink_file.lock(), serde_json::to_string(a)) {
            // One line per attempt, flushed, so a killed run keeps what it did.
            let _ = writeln!(f, "{line}").and_then(|_| f.flush());
        }
    });
    let cfg = p.engine_config(false, 1)?;
    eprintln!(
        "proving {} with prover {} and planner {} (strategy {:?}, depth {}, k {}); output in {}",
        problem.name,
        prover.describe(),
        planner.describe(),
        p.strategy,
        p.depth,
        p.k,
        out_dir.display()
    );
    let engine = Engine::new(verifier.clone(), prover, planner, prompts, cfg, Some(sink));
    let progress = tokio::spawn(report_progress(engine.clone()));
    let outcome = engine.prove(&problem).await;
    progress.abort();
    let _ = progress.await;

    let dag = engine.export_dag(Some(&problem.name));
    write(&out_dir.join("dag.json"), &serde_json::to_string_pretty(&dag)?)?;
    write(&out_dir.join("dag.dot"), &dag.to_dot())?;
    write(&out_dir.join("result.json"), &serde_json::to_string_pretty(&outcome)?)?;
    if let Some(proof) = &outcome.proof {
        write(&out_dir.join("proof.lean"), proof)?;
    }
    if let Ok(mut f) = attempts.lock() {
        f.flush().with_context(|| format!("writing {}", attempts_path.display()))?;
    }
    // The same page `report --html` writes for a run, for this one theorem.
    let view = RunView::from_prove_dir(&out_dir, html::DEFAULT_BUDGET_BYTES)
        .with_context(|| format!("reading {} back for report.html", out_dir.display()))?;
    html::write(&out_dir.join("report.html"), &html::page(&format!("subgoal prove: {}", problem.name), &[view]))
        .context("writing report.html")?;
    drop(engine);
    match Arc::try_unwrap(verifier) {
        Ok(v) => v.shutdown().await,
        Err(_) => tracing::debug!("verifier still shared at exit"),
    }
    if outcome.solved {
        println!(
            "{}: proved via {:?} in {:.1} s ({} model calls, {} Lean checks); proof in {}",
            outcome.name,
            outcome.via.unwrap_or(subgoal::pipeline::scheduler::Via::Prover),
            outcome.elapsed_ms as f64 / 1000.0,
            outcome.model_calls,
            outcome.lean_checks,
            out_dir.join("proof.lean").display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{}: not proved in {:.1} s ({} model calls, {} Lean checks): {}",
            outcome.name,
            outcome.elapsed_ms as f64 / 1000.0,
            outcome.model_calls,
            outcome.lean_checks,
            outcome.reason
        );
        Ok(ExitCode::from(1))
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A status line on stderr whenever the graph changes.
async fn report_progress(engine: Arc<Engine>) {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Counted in place: exporting the graph would copy every node and proof twice a second.
        let counts = engine.status_counts();
        let count = |s: Status| counts.get(&s).copied().unwrap_or(0);
        let line = format!(
            "{} nodes: {} proved, {} proving, {} decomposing, {} failed, {} cancelled",
            counts.values().sum::<usize>(),
            count(Status::Proved),
            count(Status::Proving),
            count(Status::Decomposing),
            count(Status::Failed) + count(Status::Unrestatable),
            count(Status::Cancelled)
        );
        if line != last {
            eprintln!("[{:6.1}s] {line}", started.elapsed().as_secs_f64());
            last = line;
        }
    }
}
