//! `subgoal verify`: read candidates (JSONL or one `.lean` file), verify them through the pool,
//! write one record per input line in input order.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use subgoal::verify::{
    name_for_bad_line, parse_input_line, GateConfig, Verifier, VerifyInput, VerifyOptions, VerifyRecord,
};

use super::LeanArgs;

/// Candidates verified when no `--input` is given: a few proofs over the test fixture library.
const DEMO_INPUT: &str = include_str!("../../examples/verify-demo.jsonl");

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// JSONL of {"name","header","formal_statement","proof"|"code"}, or a single .lean file.
    /// Without it, the embedded demo set (needs the test toolchain) is verified.
    #[arg(long, short, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Write JSONL records here (default: stdout with --json, else a table on stdout).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print JSONL records on stdout.
    #[arg(long)]
    pub json: bool,
    /// Lean servers to run (default: number of cores).
    #[arg(long, short)]
    pub workers: Option<usize>,
    /// Wall-clock seconds per candidate.
    #[arg(long, default_value_t = 60.0, value_parser = super::positive_seconds)]
    pub timeout: f64,
    /// Replace a Lean server after this many candidates.
    #[arg(long, default_value_t = 500)]
    pub recycle_after: u64,
    /// Replace a Lean server whose processes own more memory than this, MiB (anonymous memory,
    /// not the mapped `.olean` files; 0: never).
    #[arg(long, default_value_t = 0)]
    pub max_rss_mb: u64,
    /// Skip the fresh-process re-check of each `proved` (for benchmarking the pool only:
    /// records then say `"recheck": null`).
    #[arg(long)]
    pub no_recheck: bool,
    /// Accept `native_decide` and the axioms of native evaluation (trusts Lean's compiler).
    #[arg(long)]
    pub allow_native_decide: bool,
    #[command(flatten)]
    pub lean: LeanArgs,
}

enum Item {
    Input { line: usize, input: VerifyInput },
    Bad { name: String, reason: String },
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let items = read_items(args.input.as_ref())?;
    let install = args.lean.install()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.unwrap_or(cores).max(1);
    let cfg = args.lean.pool_config(install, workers, args.timeout, args.recycle_after, args.max_rss_mb);
    let options = VerifyOptions {
        gates: GateConfig { allow_native_decide: args.allow_native_decide },
        recheck: !args.no_recheck,
        recheck_timeout: None,
    };
    let verifier = Verifier::start_with(cfg, options).context("starting Lean")?;

    let mut sink: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let as_json = args.json || args.out.is_some();
    let total = items.len();
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let verifier_ref = &verifier;
    // `buffered` keeps input order while up to 4 candidates per worker are in flight.
    let mut results = futures::stream::iter(items)
        .map(|item| async move {
            match item {
                Item::Input { line, input } => {
                    let mut r = verifier_ref.verify(&input).await;
                    if r.verdict == subgoal::verify::Verdict::InvalidInput && line > 0 {
                        r.reason = format!("line {line}: {}", r.reason);
                    }
                    r
                }
                Item::Bad { name, reason } => verifier_ref.invalid(&name, reason),
            }
        })
        .buffered(workers * 4);
    while let Some(rec) = results.next().await {
        *counts.entry(rec.verdict.as_str()).or_default() += 1;
        write_record(&mut sink, &rec, as_json)?;
    }
    drop(results);
    sink.flush()?;
    let stats = verifier.stats();
    let rechecks = verifier.recheck_stats();
    verifier.shutdown().await;
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "subgoal verify: {total} candidates: {} (lean servers started {}, timeouts {}, crashes {}; \
         fresh re-checks {}, disagreements {})",
        summary.join(", "),
        stats.server_starts,
        stats.timeouts,
        stats.crashes,
        rechecks.rechecks,
        rechecks.disagreements
    );
    if rechecks.disagreements > 0 {
        eprintln!(
            "subgoal verify: WARNING: {} candidates the Lean server accepted were refused by a fresh lean process \
             (a bug or an attack; see records with \"rejected_by\": \"recheck\")",
            rechecks.disagreements
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_record(sink: &mut dyn Write, rec: &VerifyRecord, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        serde_json::to_writer(&mut *sink, rec)?;
        writeln!(sink)?;
    } else {
        writeln!(sink, "{:<32} {:<13} {:>7} ms  {}", rec.name, rec.verdict.as_str(), rec.elapsed_ms, rec.reason)?;
    }
    // Flushed per record so a killed run keeps every finished line.
    sink.flush()?;
    Ok(())
}

fn read_items(input: Option<&PathBuf>) -> anyhow::Result<Vec<Item>> {
    let Some(path) = input else {
        return Ok(parse_jsonl(DEMO_INPUT));
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "lean") {
        let name = path.file_stem().map_or("input".into(), |s| s.to_string_lossy().into_owned());
        return Ok(vec![Item::Input {
            line: 0,
            input: VerifyInput {
                name,
                header: String::new(),
                formal_statement: String::new(),
                proof: None,
                code: Some(text),
            },
        }]);
    }
    Ok(parse_jsonl(&text))
}

fn parse_jsonl(text: &str) -> Vec<Item> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match parse_input_line(i + 1, l) {
            Ok(input) => Item::Input { line: i + 1, input },
            Err(e) => Item::Bad { name: name_for_bad_line(i + 1, l), reason: e.to_string() },
        })
        .collect()
}
