//! A text-level census of the repository's DeepSeek-Prover-V2 MiniF2F proofs
//! (`benchmarks/data/deepseek-prover-v2-minif2f-solutions*.jsonl`): of every `have … := by` step
//! (nested ones included), how many the authors' model closed with one tactic, and with which;
//! for each tactic of the default closer portfolio, the share of steps it alone closed, bare (what
//! the portfolio runs) or with arguments (`nlinarith [sq_nonneg (a - b)]`, which the bare tactic
//! may not match). It reads text only: no Lean runs, so it bounds what the portfolio can take
//! off the prover, it does not measure it.
//!
//! Run by hand: `cargo bench --bench closer_census`. Prints JSON.

use std::collections::BTreeMap;

use serde_json::json;
use subgoal::pipeline::closers::MATHLIB_TACTICS;

fn main() {
    let corpus = subgoal::datasets::solutions_corpus().expect("the proofs corpus in benchmarks/data");
    let mut proofs = 0usize;
    let mut steps = 0usize;
    let mut one_tactic = 0usize;
    let mut by_head: BTreeMap<String, usize> = BTreeMap::new();
    let mut bare: BTreeMap<String, usize> = BTreeMap::new();
    for (_, code) in &corpus {
        proofs += 1;
        for proof in have_proofs(code) {
            steps += 1;
            if let Some(tactic) = single_tactic(&proof) {
                one_tactic += 1;
                let head = tactic.split(|c: char| c.is_whitespace() || c == '[').next().unwrap_or("").to_string();
                *by_head.entry(head.clone()).or_insert(0) += 1;
                if tactic.trim() == head {
                    *bare.entry(head).or_insert(0) += 1;
                }
            }
        }
    }
    let pct = |n: usize| (1000.0 * n as f64 / steps.max(1) as f64).round() / 10.0;
    let portfolio: serde_json::Map<String, serde_json::Value> = MATHLIB_TACTICS
        .iter()
        .map(|t| {
            let all = by_head.get(*t).copied().unwrap_or(0);
            let b = bare.get(*t).copied().unwrap_or(0);
            (t.to_string(), json!({"steps": all, "pct_of_steps": pct(all), "bare": b, "bare_pct_of_steps": pct(b)}))
        })
        .collect();
    let portfolio_all: usize = MATHLIB_TACTICS.iter().map(|t| by_head.get(*t).copied().unwrap_or(0)).sum();
    let portfolio_bare: usize = MATHLIB_TACTICS.iter().map(|t| bare.get(*t).copied().unwrap_or(0)).sum();
    let mut others: Vec<(String, usize)> =
        by_head.iter().filter(|(k, _)| !MATHLIB_TACTICS.contains(&k.as_str())).map(|(k, v)| (k.clone(), *v)).collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.1));
    let report = json!({
        "benchmark": "closer_census",
        "files": ["benchmarks/data/deepseek-prover-v2-minif2f-solutions.valid.jsonl"],
        "proofs": proofs,
        "have_steps": steps,
        "closed_by_one_tactic": one_tactic,
        "closed_by_one_tactic_pct": pct(one_tactic),
        "portfolio_tactic_alone": {"steps": portfolio_all, "pct_of_steps": pct(portfolio_all), "bare": portfolio_bare, "bare_pct_of_steps": pct(portfolio_bare)},
        "by_portfolio_tactic": portfolio,
        "other_single_tactics_top10": others.into_iter().take(10).collect::<BTreeMap<_, _>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// The tactic proofs of every `have … := by` in `code`: the text after `by` up to the next line
/// indented no deeper than the `have`'s line.
fn have_proofs(code: &str) -> Vec<String> {
    let lines: Vec<&str> = code.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if !(t.starts_with("have ") || t.starts_with("have:")) {
            continue;
        }
        // The statement may continue onto later lines before its `:= by`.
        let mut j = i;
        let mut joined = String::new();
        while j < lines.len() {
            joined.push_str(lines[j]);
            joined.push('\n');
            if lines[j].contains(":= by") || lines[j].trim_end().ends_with(":=") || j > i + 6 {
                break;
            }
            j += 1;
        }
        let Some(at) = joined.find(":= by") else { continue };
        let mut proof = joined[at + ":= by".len()..].to_string();
        let base = indent(line);
        for l in &lines[j + 1..] {
            if !l.trim().is_empty() && indent(l) <= base {
                break;
            }
            proof.push_str(l);
            proof.push('\n');
        }
        out.push(proof);
    }
    out
}

/// The proof's tactic when it is one: one line, or continuation lines deeper than its first line
/// (a term broken across lines), with no `;` or `<;>` joining tactics.
fn single_tactic(proof: &str) -> Option<String> {
    let lines: Vec<&str> = proof.lines().filter(|l| !l.trim().is_empty()).collect();
    let first = lines.first()?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    // `:= by` at the end of its line: a block, one tactic only if every later line is deeper.
    // `:= by tac` on the line: later lines continue `tac`'s term.
    let block = proof.trim_start_matches([' ', '\t']).starts_with('\n');
    if block && lines.iter().skip(1).any(|l| indent(l) <= indent(first)) {
        return None;
    }
    let text = lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    if text.contains("<;>") || text.contains(';') || text.starts_with('·') {
        return None;
    }
    Some(text)
}
