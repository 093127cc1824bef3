//! The HTML report: one self-contained page (no network, no CDN) for one or several runs, or for
//! one `prove --out` directory. This module owns reading what a page shows (results, graphs,
//! attempts; a run still in progress shows what `results.jsonl` holds), bounding how much attempt
//! text it embeds, and writing the page: the summary and pass@k chart up front, a problem table
//! the page's script sorts and filters, and per problem a details block (its graph drawn by
//! `layout`, its nodes, attempts with Lean's messages, its proof) kept as JSON that the script
//! parses only when the problem is opened, so a 10,000-problem page is usable at once.

pub mod layout;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::report::{paper_lines, pass_at_k_svg, summary_rows, Labeled};
use super::rundir::{RunDir, RunError};
use super::{summarize, Summary};
use crate::pipeline::dag::DagExport;
use crate::pipeline::scheduler::{Attempt, ProblemOutcome};
use layout::escape;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// Attempt text a page embeds by default, spread evenly over its problems.
pub const DEFAULT_BUDGET_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{path}: {detail}")]
    File { path: String, detail: String },
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> HtmlError + '_ {
    move |e| HtmlError::File { path: path.display().to_string(), detail: e.to_string() }
}

/// One run (or one `prove` output) as the page shows it.
pub struct RunView {
    pub label: String,
    pub summary: Option<Summary>,
    /// Problems the run was to do (finished ones are `problems`).
    pub total: usize,
    pub problems: Vec<ProblemView>,
}

/// One finished problem.
pub struct ProblemView {
    pub outcome: ProblemOutcome,
    pub split: Option<String>,
    pub area: Option<String>,
    pub broken_statement: bool,
    pub samples: usize,
    pub correct: usize,
    pub dag: Option<DagExport>,
    pub attempts: Vec<Attempt>,
    /// Attempts not embedded (past the page's budget).
    pub attempts_left_out: usize,
}

impl RunView {
    /// A run directory (`subgoal bench`), as far as it got; `budget` bytes of attempt text at
    /// most, spread evenly over its problems.
    pub fn from_run_dir(path: &Path, budget: usize) -> Result<RunView, HtmlError> {
        let (run, config) = RunDir::open(path)?;
        let results = run.results()?;
        let summary = summarize(&config, &results, run.wall_seconds());
        let per_problem = budget / results.len().max(1);
        let mut attempts = read_attempts(&run.file("attempts.jsonl"), per_problem)?;
        let problems = results
            .into_iter()
            .map(|r| {
                let dag = std::fs::read_to_string(run.file(&r.dag)).ok().and_then(|t| serde_json::from_str(&t).ok());
                let (kept, left_out) =
                    attempts.remove(&r.outcome.name).map(|k| (k.kept, k.left_out)).unwrap_or_default();
                ProblemView {
                    split: r.split,
                    area: r.area,
                    broken_statement: r.broken_statement,
                    samples: r.samples,
                    correct: r.correct,
                    dag,
                    attempts: kept,
                    attempts_left_out: left_out,
                    outcome: r.outcome,
                }
            })
            .collect();
        Ok(RunView {
            label: path.display().to_string(),
            total: config.dataset.problems,
            summary: Some(summary),
            problems,
        })
    }

    /// A `prove --out` directory: `result.json`, `dag.json`, `attempts.jsonl`.
    pub fn from_prove_dir(dir: &Path, budget: usize) -> Result<RunView, HtmlError> {
        let path = dir.join("result.json");
        let text = std::fs::read_to_string(&path).map_err(file_err(&path))?;
        let outcome: ProblemOutcome = serde_json::from_str(&text)
            .map_err(|e| HtmlError::File { path: path.display().to_string(), detail: e.to_string() })?;
        let dag = std::fs::read_to_string(dir.join("dag.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        let mut attempts = read_attempts(&dir.join("attempts.jsonl"), budget)?;
        let (kept, left_out) = attempts.remove(&outcome.name).map(|k| (k.kept, k.left_out)).unwrap_or_default();
        let samples = kept
            .iter()
            .filter(|a| a.node == outcome.name && a.role == crate::pipeline::scheduler::Role::Prover)
            .count();
        let correct = kept
            .iter()
            .filter(|a| {
                a.node == outcome.name
                    && a.role == crate::pipeline::scheduler::Role::Prover
                    && a.verdict == crate::verify::Verdict::Proved
            })
            .count();
        Ok(RunView {
            label: dir.display().to_string(),
            summary: None,
            total: 1,
            problems: vec![ProblemView {
                outcome,
                split: None,
                area: None,
                broken_statement: false,
                samples,
                correct,
                dag,
                attempts: kept,
                attempts_left_out: left_out,
            }],
        })
    }
}

#[derive(Default)]
struct Kept {
    kept: Vec<Attempt>,
    bytes: usize,
    left_out: usize,
}

/// Reads `attempts.jsonl` (absent: none), keeping per problem the attempts that fit in
/// `per_problem` bytes of text: every proved one first (its code cut to a quarter of the
/// budget), then the others in order. A torn or foreign line is skipped.
fn read_attempts(path: &Path, per_problem: usize) -> Result<HashMap<String, Kept>, HtmlError> {
    let mut out: HashMap<String, Kept> = HashMap::new();
    let Ok(f) = std::fs::File::open(path) else { return Ok(out) };
    let mut deferred: Vec<Attempt> = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(file_err(path))?;
        let Ok(a) = serde_json::from_str::<Attempt>(&line) else { continue };
        if a.verdict == crate::verify::Verdict::Proved {
            let k = out.entry(a.problem.clone()).or_default();
            let mut a = a;
            cut(&mut a.code, per_problem / 4);
            k.bytes += size(&a);
            k.kept.push(a);
        } else {
            deferred.push(a);
        }
    }
    for mut a in deferred {
        let k = out.entry(a.problem.clone()).or_default();
        let s = size(&a);
        if k.bytes + s <= per_problem {
            k.bytes += s;
            k.kept.push(a);
        } else if k.bytes + 512 <= per_problem {
            // Its verdict and messages still fit, its code does not.
            cut(&mut a.code, per_problem.saturating_sub(k.bytes + 512).max(256));
            k.bytes += size(&a);
            k.kept.push(a);
        } else {
            k.left_out += 1;
        }
    }
    for k in out.values_mut() {
        k.kept.sort_by_key(|a| (a.node.clone(), a.role as u8, a.round, a.sample));
    }
    Ok(out)
}

fn size(a: &Attempt) -> usize {
    a.code.len() + a.reason.len() + a.messages.iter().map(|m| m.text.len()).sum::<usize>() + 200
}

fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n… (cut: the rest is in attempts.jsonl)");
    }
}

/// A problem's row in the table, per run.
#[derive(Serialize)]
struct Cell<'a> {
    /// `solved`, `unsolved` or `broken`.
    st: &'static str,
    via: Option<crate::pipeline::scheduler::Via>,
    reason: &'a str,
    ms: u64,
    tok: u64,
    calls: u64,
    checks: u64,
    n: usize,
    c: usize,
    /// The details block's index.
    d: usize,
}

#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    split: Option<&'a str>,
    area: Option<&'a str>,
    /// One per run (`null` where that run has not finished the problem).
    runs: Vec<Option<Cell<'a>>>,
}

#[derive(Serialize)]
struct RunMeta<'a> {
    label: &'a str,
    total: usize,
    finished: usize,
}

#[derive(Serialize)]
struct Details<'a> {
    run: usize,
    name: &'a str,
    svg: String,
    dag: Option<&'a DagExport>,
    attempts: &'a [Attempt],
    left_out: usize,
    proof: Option<&'a str>,
}

/// The page for `runs` (several: compared problem by problem).
pub fn page(title: &str, runs: &[RunView]) -> String {
    let mut rows: Vec<Row> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut details: Vec<Details> = Vec::new();
    for (ri, run) in runs.iter().enumerate() {
        for p in &run.problems {
            let name = p.outcome.name.as_str();
            let at = *index.entry(name).or_insert_with(|| {
                rows.push(Row {
                    name,
                    split: p.split.as_deref(),
                    area: p.area.as_deref(),
                    runs: (0..runs.len()).map(|_| None).collect(),
                });
                rows.len() - 1
            });
            rows[at].runs[ri] = Some(Cell {
                st: if p.broken_statement {
                    "broken"
                } else if p.outcome.solved {
                    "solved"
                } else {
                    "unsolved"
                },
                via: p.outcome.via,
                reason: &p.outcome.reason,
                ms: p.outcome.elapsed_ms,
                tok: p.outcome.tokens,
                calls: p.outcome.model_calls,
                checks: p.outcome.lean_checks,
                n: p.samples,
                c: p.correct,
                d: details.len(),
            });
            details.push(Details {
                run: ri,
                name,
                svg: p.dag.as_ref().map(layout::svg).unwrap_or_default(),
                dag: p.dag.as_ref(),
                attempts: &p.attempts,
                left_out: p.attempts_left_out,
                proof: p.outcome.proof.as_deref(),
            });
        }
    }
    let metas: Vec<RunMeta> =
        runs.iter().map(|r| RunMeta { label: &r.label, total: r.total, finished: r.problems.len() }).collect();
    let data = serde_json::json!({ "title": title, "runs": metas, "problems": rows });

    let mut out = String::with_capacity(1 << 16);
    out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    out.push_str(&format!("<title>{}</title><style>{STYLE}</style></head><body>\n", escape(title)));
    out.push_str(&format!("<header><h1>{}</h1>", escape(title)));
    out.push_str("<p class=\"runs\">");
    for r in runs {
        out.push_str(&format!(
            "<span class=\"run\">{}: {} of {} problems finished</span> ",
            escape(&r.label),
            r.problems.len(),
            r.total
        ));
    }
    out.push_str("</p></header>\n");
    out.push_str(&summary_section(runs));
    out.push_str(concat!(
        "<section id=\"problems\"><h2>Problems</h2><div class=\"filters\">",
        "<input id=\"f-name\" type=\"search\" placeholder=\"name contains…\">",
        "<select id=\"f-status\"><option value=\"\">any status</option><option>solved</option><option>unsolved</option><option>broken</option></select>",
        "<select id=\"f-split\"><option value=\"\">any split</option></select>",
        "<select id=\"f-area\"><option value=\"\">any area</option></select>",
        "<select id=\"f-via\"><option value=\"\">solved any way</option></select>",
        "<label id=\"f-differ-label\" hidden><input id=\"f-differ\" type=\"checkbox\"> runs differ</label>",
        "<span id=\"count\"></span></div>",
        "<table id=\"table\"><thead></thead><tbody></tbody></table>",
        "<button id=\"more\" hidden>show all</button></section>\n",
        "<section id=\"details\" hidden></section>\n"
    ));
    out.push_str("<script type=\"application/json\" id=\"data\">");
    out.push_str(&json_in_html(&data));
    out.push_str("</script>\n");
    out.push_str(&format!("<script>{SCRIPT}</script>\n"));
    // Details last: the table is usable before the browser has read them.
    for (i, d) in details.iter().enumerate() {
        out.push_str(&format!("<script type=\"application/json\" id=\"d-{i}\">"));
        out.push_str(&json_in_html(d));
        out.push_str("</script>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// The summary table and the pass@k chart (runs with summaries only), with the published numbers.
fn summary_section(runs: &[RunView]) -> String {
    let labeled: Vec<Labeled> = runs
        .iter()
        .filter_map(|r| r.summary.as_ref().map(|s| Labeled { label: r.label.clone(), summary: s }))
        .collect();
    if labeled.is_empty() {
        return String::new();
    }
    let (header, rows) = summary_rows(&labeled);
    let mut out = String::from(
        "<section id=\"summary\"><h2>Summary</h2><div class=\"summary\"><table class=\"numbers\"><thead><tr>",
    );
    for h in &header {
        out.push_str(&format!("<th>{}</th>", escape(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for (name, cells) in &rows {
        out.push_str(&format!("<tr><th>{}</th>", escape(name)));
        for c in cells {
            out.push_str(&format!("<td>{}</td>", escape(c)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    if let Ok(svg) = pass_at_k_svg(&labeled) {
        out.push_str(&format!("<figure class=\"chart\">{svg}</figure>"));
    }
    let paper = paper_lines(&labeled);
    if !paper.is_empty() {
        out.push_str("<div class=\"paper\"><h3>Published (same benchmark, same k)</h3><ul>");
        for line in paper {
            out.push_str(&format!("<li>{}</li>", escape(&line)));
        }
        out.push_str("</ul></div>");
    }
    out.push_str("</div></section>\n");
    out
}

/// JSON safe inside a `<script>` element: `</` never appears.
fn json_in_html<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into()).replace("</", "<\\/")
}

/// Writes `page` to `path`.
pub fn write(path: &Path, page: &str) -> Result<PathBuf, HtmlError> {
    std::fs::write(path, page).map_err(file_err(path))?;
    Ok(path.to_path_buf())
}
