//! Rendering run summaries for people: a text table (one column per run) and SVG plots (pass@k
//! curves, solved rate per area or split), drawn with `plotters`.

use plotters::prelude::*;

use super::{Summary, Tally};

/// One run to show: its label (the run directory) and summary.
pub struct Labeled<'a> {
    pub label: String,
    pub summary: &'a Summary,
}

/// The text table: rows of numbers, one column per run, then the paper's numbers.
pub fn table(runs: &[Labeled]) -> String {
    let (header, rows) = summary_rows(runs);
    let mut out = render(&header, &rows);
    let paper = paper_lines(runs);
    if !paper.is_empty() {
        out.push_str("\nPublished (same benchmark, same k):\n");
        for line in paper {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// The published numbers for the runs' benchmarks and ks, one line each, without repeats.
pub fn paper_lines(runs: &[Labeled]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for p in runs.iter().flat_map(|r| &r.summary.paper) {
        let line = format!(
            "{} {} pass@{}: {}{}  [{}]{}",
            p.model,
            p.mode,
            p.k,
            p.value,
            if p.unit == "percent" { "%" } else { " problems" },
            p.source,
            if p.note.is_empty() { String::new() } else { format!(" ({})", p.note) }
        );
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    seen
}

/// The summary's rows (a name, then one cell per run) under a header of the runs' labels.
pub fn summary_rows(runs: &[Labeled]) -> (Vec<String>, Vec<(String, Vec<String>)>) {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&Summary) -> String| {
        rows.push((name.to_string(), runs.iter().map(|r| f(r.summary)).collect()));
    };
    row("dataset", &|s| s.dataset.clone());
    row("problems", &|s| format!("{} of {}", s.attempted, s.problems));
    row("solved", &|s| format!("{} ({:.1}%)", s.overall.solved, s.overall.solved_pct));
    // Not run (not counted as tried), apart from the unsolved they are tallied with.
    row("statements broken", &|s| s.broken_statements.to_string());
    row("samples", &|s| {
        format!(
            "{} ({} cut at the token limit, {} failed to generate); {} more in repair rounds",
            s.samples, s.samples_truncated, s.samples_errored, s.repair_samples
        )
    });
    let ks = all_ks(runs.iter().map(|r| &r.summary.overall));
    for k in &ks {
        row(&format!("pass@{k}"), &|s| pct(s.overall.pass_at_k.get(&k.to_string())));
    }
    let mut groups: Vec<(String, String)> = Vec::new();
    for r in runs {
        groups.extend(r.summary.by_split.keys().map(|k| ("split".to_string(), k.clone())));
        groups.extend(r.summary.by_area.keys().map(|k| ("area".to_string(), k.clone())));
    }
    groups.sort();
    groups.dedup();
    for (kind, g) in &groups {
        row(&format!("{kind} {g}"), &|s| {
            let t = if kind == "split" { s.by_split.get(g) } else { s.by_area.get(g) };
            t.map_or("-".into(), |t| format!("{}/{} ({:.1}%)", t.solved, t.problems, t.solved_pct))
        });
    }
    row("via", &|s| s.via.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
    row("model calls", &|s| s.model_calls.to_string());
    row("tokens", &|s| s.tokens.to_string());
    row("lean checks", &|s| s.lean_checks.to_string());
    row("problems/hour", &|s| format!("{:.1}", s.problems_per_hour));
    row("load errors", &|s| s.load_errors.to_string());
    let mut header = vec![String::new()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    (header, rows)
}

fn pct(v: Option<&f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}%"))
}

fn all_ks<'a>(tallies: impl Iterator<Item = &'a Tally>) -> Vec<usize> {
    let mut ks: Vec<usize> = tallies.flat_map(|t| t.pass_at_k.keys().filter_map(|k| k.parse().ok())).collect();
    ks.sort_unstable();
    ks.dedup();
    ks
}

fn render(header: &[String], rows: &[(String, Vec<String>)]) -> String {
    let cols = header.len();
    let mut widths = vec![0usize; cols];
    for (i, h) in header.iter().enumerate() {
        widths[i] = h.chars().count();
    }
    for (name, vals) in rows {
        widths[0] = widths[0].max(name.chars().count());
        for (i, v) in vals.iter().enumerate() {
            widths[i + 1] = widths[i + 1].max(v.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}{}", " ".repeat(widths[i] - c.chars().count())))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
            + "\n"
    };
    let mut out = line(header.iter().map(String::as_str).collect());
    out.push_str(&line(widths.iter().map(|_| "").collect::<Vec<_>>()).replace(' ', "-"));
    for (name, vals) in rows {
        let mut cells = vec![name.as_str()];
        cells.extend(vals.iter().map(String::as_str));
        out.push_str(&line(cells));
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("drawing the plot: {0}")]
pub struct PlotError(String);

/// The series' labels in a framed box, the same on every chart.
fn draw_legend<'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, SVGBackend<'a>, CT>) -> Result<(), PlotError> {
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(plot_err)
}

fn plot_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// pass@k curves (log-scale k), one line per run.
pub fn pass_at_k_svg(runs: &[Labeled]) -> Result<String, PlotError> {
    let ks = all_ks(runs.iter().map(|r| &r.summary.overall));
    let max_k = ks.last().copied().unwrap_or(1).max(2) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("pass@k (whole-proof samples)", ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((1f64..max_k).log_scale(), 0f64..100f64)
            .map_err(plot_err)?;
        chart.configure_mesh().x_desc("k").y_desc("pass@k (%)").draw().map_err(plot_err)?;
        for (i, r) in runs.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = r
                .summary
                .overall
                .pass_at_k
                .iter()
                .filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, *v)))
                .collect::<std::collections::BTreeMap<u64, f64>>()
                .into_iter()
                .map(|(k, v)| (k as f64, v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(r.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        }
        draw_legend(&mut chart)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Solved rate per area (or per split when no run has areas), grouped bars, one color per run.
pub fn groups_svg(runs: &[Labeled]) -> Result<String, PlotError> {
    let use_area = runs.iter().any(|r| !r.summary.by_area.is_empty());
    let mut groups: Vec<String> = runs
        .iter()
        .flat_map(|r| if use_area { r.summary.by_area.keys() } else { r.summary.by_split.keys() })
        .cloned()
        .collect();
    groups.sort();
    groups.dedup();
    if groups.is_empty() {
        groups.push("all".into());
    }
    let n = groups.len() as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let names = groups.clone();
        let mut chart = ChartBuilder::on(&root)
            .caption(if use_area { "solved per area" } else { "solved per split" }, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n, 0f64..100f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-9 && i < names.len() {
                    names[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("solved (%)")
            .draw()
            .map_err(plot_err)?;
        let width = 0.8 / runs.len().max(1) as f64;
        for (ri, r) in runs.iter().enumerate() {
            let color = Palette99::pick(ri).to_rgba();
            let bars: Vec<Rectangle<(f64, f64)>> = groups
                .iter()
                .enumerate()
                .filter_map(|(gi, g)| {
                    let t = if g == "all" && groups.len() == 1 && !use_area && r.summary.by_split.is_empty() {
                        Some(&r.summary.overall)
                    } else if use_area {
                        r.summary.by_area.get(g)
                    } else {
                        r.summary.by_split.get(g)
                    }?;
                    let x0 = gi as f64 + 0.1 + ri as f64 * width;
                    Some(Rectangle::new([(x0, 0.0), (x0 + width * 0.95, t.solved_pct)], color.filled()))
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(r.label.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
        }
        draw_legend(&mut chart)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn summary(pass: &[(usize, f64)], areas: &[(&str, usize, usize)]) -> Summary {
        let tally = |solved: usize, problems: usize| Tally {
            problems,
            solved,
            solved_pct: 100.0 * solved as f64 / problems as f64,
            pass_at_k: BTreeMap::new(),
        };
        Summary {
            schema: "subgoal.summary.v1".into(),
            dataset: "minif2f-test".into(),
            problems: 10,
            attempted: 10,
            overall: Tally {
                problems: 10,
                solved: 4,
                solved_pct: 40.0,
                pass_at_k: pass.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            },
            by_split: BTreeMap::new(),
            by_area: areas.iter().map(|(a, s, p)| (a.to_string(), tally(*s, *p))).collect(),
            via: BTreeMap::from([("prover".to_string(), 4)]),
            broken_statements: 0,
            samples: 80,
            samples_truncated: 0,
            samples_errored: 0,
            repair_samples: 0,
            model_calls: 20,
            tokens: 1000,
            lean_checks: 40,
            problem_seconds: 1.0,
            wall_seconds: 1.0,
            problems_per_hour: 3600.0,
            paper: vec![],
            load_errors: 0,
        }
    }

    #[test]
    fn the_table_has_one_column_per_run_and_a_row_per_k() {
        let a = summary(&[(1, 20.0), (2, 30.0)], &[("algebra", 2, 4)]);
        let b = summary(&[(1, 25.0), (2, 35.0), (4, 50.0)], &[]);
        let t = table(&[Labeled { label: "runA".into(), summary: &a }, Labeled { label: "runB".into(), summary: &b }]);
        assert!(t.lines().next().unwrap().contains("runA") && t.lines().next().unwrap().contains("runB"), "{t}");
        let p4 = t.lines().find(|l| l.starts_with("pass@4")).unwrap();
        assert!(p4.contains('-') && p4.contains("50.0%"), "{p4}");
        assert!(t.contains("area algebra") && t.contains("2/4 (50.0%)"), "{t}");
    }

    #[test]
    fn plots_are_svg_documents_with_every_run_labeled() {
        let a = summary(&[(1, 20.0), (8, 60.0)], &[("algebra", 2, 4), ("calculus", 1, 4)]);
        let runs = [Labeled { label: "first-run".into(), summary: &a }];
        let curve = pass_at_k_svg(&runs).unwrap();
        assert!(curve.starts_with("<svg") && curve.contains("first-run") && curve.contains("<polyline"), "{curve}");
        let bars = groups_svg(&runs).unwrap();
        assert!(bars.contains("algebra") && bars.contains("calculus") && bars.contains("<rect"));
    }
}
