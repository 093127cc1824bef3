//! `subgoal synth`: chain-of-thought cold-start data from runs (finished ones, or one it runs and
//! resumes itself); `subgoal merge`: shards' outputs joined, de-duplicated, counted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use subgoal::bench::problems::data_dirs;
use subgoal::synth::{synthesize, Selection, SynthOptions};

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
        // The dataset is run first, into OUT/run, resumed when a killed synthesis left it there.
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
    let verifier = args.bench.pipeline.verifier()?;
    let opts = SynthOptions { select: args.select.into(), exclude: &args.exclude, data_dirs: &dirs };
    let stats = synthesize(&runs, &args.out, &opts, &verifier).await;
    if let Ok(v) = Arc::try_unwrap(verifier) {
        v.shutdown().await;
    }
    let stats = stats.with_context(|| format!("synthesizing into {}", args.out.display()))?;
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

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Synthesis output directories (one per shard).
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
}

/// Joins shards (`subgoal::synth::merge`).
pub async fn merge(args: MergeArgs) -> anyhow::Result<ExitCode> {
    let m = subgoal::synth::merge(&args.inputs, &args.out)
        .with_context(|| format!("merging into {}", args.out.display()))?;
    println!(
        "{}: {} examples ({} CoT, {} subgoal) from {} shards; {} duplicates across shards dropped",
        args.out.display(),
        m.examples,
        m.stats.cot_examples,
        m.stats.subgoal_examples,
        args.inputs.len(),
        m.duplicates_across_shards
    );
    Ok(ExitCode::SUCCESS)
}
