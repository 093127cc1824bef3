//! `subgoal report`: one run's numbers, or several runs side by side, as a table (or JSON), with
//! SVG plots of pass@k and of the solved rate per area or split, and optionally one HTML page to
//! browse them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use subgoal::bench::html::{self, RunView};
use subgoal::bench::report::{groups_svg, pass_at_k_svg, table, Labeled};
use subgoal::bench::rundir::RunDir;
use subgoal::bench::{summarize, Summary};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories (`subgoal bench --run-dir`); several are compared column by column.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// Print the summaries as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to write `pass_at_k.svg` and `groups.svg` (default: the first run's directory).
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Write no plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Also write one self-contained HTML page: the summary, every problem's subgoal graph, its
    /// attempts with Lean's messages, its proof (several runs: compared problem by problem).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Attempt text the page embeds at most, spread evenly over the problems (MiB).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub html_max_mb: usize,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let mut summaries: Vec<(String, Summary)> = Vec::new();
    for path in &args.runs {
        let (run, config) = RunDir::open(path)?;
        // Recomputed from results.jsonl, so a run still in progress (or killed) reports what it has.
        let results = run.results().with_context(|| format!("reading the results of {}", path.display()))?;
        summaries.push((path.display().to_string(), summarize(&config, &results, run.wall_seconds())));
    }
    let labeled: Vec<Labeled> = summaries.iter().map(|(l, s)| Labeled { label: l.clone(), summary: s }).collect();
    if args.json {
        let all: Vec<&Summary> = summaries.iter().map(|(_, s)| s).collect();
        let doc = if all.len() == 1 { serde_json::to_value(all[0])? } else { serde_json::to_value(&all)? };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", table(&labeled));
    }
    if let Some(file) = &args.html {
        let budget = args.html_max_mb << 20;
        let mut views = Vec::new();
        for path in &args.runs {
            views.push(
                RunView::from_run_dir(path, budget / args.runs.len())
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
        let title = match summaries.as_slice() {
            [(_, s)] => format!("subgoal run: {}", s.dataset),
            _ => format!(
                "subgoal runs: {}",
                summaries.iter().map(|(_, s)| s.dataset.as_str()).collect::<Vec<_>>().join(" vs ")
            ),
        };
        html::write(file, &html::page(&title, &views)).with_context(|| format!("writing {}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    if !args.no_plots {
        let dir = args.plots.clone().unwrap_or_else(|| args.runs[0].clone());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (file, svg) in [("pass_at_k.svg", pass_at_k_svg(&labeled)?), ("groups.svg", groups_svg(&labeled)?)] {
            let path = dir.join(file);
            std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
