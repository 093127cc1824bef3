//! Benchmark runs: the records a run directory holds, the pass@k estimator, and the summary.
//!
//! A run directory (`subgoal bench`) holds `config.json` (`RunConfig`: everything needed to
//! reproduce the run), `attempts.jsonl` (the pipeline's `Attempt`s, appended and flushed),
//! `results.jsonl` (`ProblemResult`, one line per finished problem, appended and flushed: the
//! resume point), `dags/NAME.json`, `statements.json` (the statement preflight), `summary.json`
//! (`Summary`) and `run.log`. `problems` selects a dataset's problems, `statements` checks that
//! their statements elaborate, `run` runs them, `rundir` reads and repairs the directory, `report`
//! renders it as text and plots, `html` as one page to browse.

pub mod html;
pub mod problems;
pub mod report;
pub mod run;
pub mod rundir;
pub mod statements;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pipeline::prompts::TemplateSource;
use crate::pipeline::scheduler::{EngineConfig, ProblemOutcome};

pub const RUN_SCHEMA: &str = "subgoal.run.v1";
pub const RESULT_SCHEMA: &str = "subgoal.result.v1";
pub const SUMMARY_SCHEMA: &str = "subgoal.summary.v1";

/// `config.json`: what was run, with what, so the run can be resumed and reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub schema: String,
    pub subgoal_version: String,
    pub created_unix: u64,
    pub dataset: DatasetInfo,
    pub prover: ModelInfo,
    pub planner: ModelInfo,
    pub engine: EngineConfig,
    pub prompts: Vec<TemplateSource>,
    pub lean_version: String,
    /// Lean settings that change verdicts.
    pub lean: LeanInfo,
    /// `--allow-broken-statements`: problems whose statement does not elaborate are recorded as
    /// not run instead of stopping the run.
    #[serde(default)]
    pub allow_broken_statements: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Registry name, or the file as given.
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub split: Option<String>,
    pub limit: Option<usize>,
    /// `--shard i/N`: this run holds the problems `shard_of` puts in shard i of N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// `--field` mapping or format, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<serde_json::Value>,
    /// Problems in the run (after split and limit).
    pub problems: usize,
    /// Lines of the file that could not be loaded.
    pub load_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// As given on the command line.
    pub spec: String,
    /// What the backend says it is.
    pub describe: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeanInfo {
    pub lean: Option<String>,
    pub lean_project: Option<String>,
    pub max_heartbeats: u64,
    pub timeout_s: f64,
    pub allow_native_decide: bool,
}

/// Shard `index` of `count`: a deterministic split of a dataset that needs no coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// `i/N` with `i < N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s:?}: expected i/N with 0 <= i < N, e.g. 0/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) =
            (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the problem named `name` belongs to this shard: by a hash of the name, so the
    /// split holds whatever the order or machine.
    pub fn holds(&self, name: &str) -> bool {
        shard_of(name, self.count) == self.index
    }
}

/// The shard of `count` a problem name falls in (SHA-256 of the name, first 8 bytes).
pub fn shard_of(name: &str, count: usize) -> usize {
    use sha2::Digest;
    let d = sha2::Sha256::digest(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % count.max(1) as u64) as usize
}

/// One line of `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemResult {
    pub schema: String,
    /// How the problem ended (`name`, `solved`, `via`, `proof`, `reason`, spend), as `prove`'s
    /// `result.json` has it.
    #[serde(flatten)]
    pub outcome: ProblemOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<String>,
    /// `FILE:LINE` in the dataset.
    pub source: String,
    /// Whole-proof samples of the theorem that were verified (the `n` of pass@k).
    pub samples: usize,
    /// How many of them Lean proved (the `c` of pass@k).
    pub correct: usize,
    /// How many of them the token limit cut (still samples: they count as wrong).
    #[serde(default)]
    pub truncated: usize,
    /// How many of them failed to generate (still samples: they count as wrong).
    #[serde(default)]
    pub errored: usize,
    /// Samples of the theorem's self-correction rounds (`--repair`), apart from `samples`.
    #[serde(default)]
    pub repair_samples: usize,
    /// The statement does not elaborate in this Lean environment: the problem was not run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broken_statement: bool,
    /// Index of the first proved whole-proof sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_success: Option<usize>,
    /// Candidates verified for this problem, every role.
    pub attempts: usize,
    /// The problem's subgoal graph, relative to the run directory.
    pub dag: String,
}

/// The unbiased pass@k estimator (Chen et al. 2021): the chance that at least one of `k`
/// samples drawn without replacement from `n`, of which `c` are correct, is correct:
/// `1 - C(n-c, k) / C(n, k)`, computed as a product so it neither overflows nor loses precision.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let mut fail = 1.0f64;
    for i in (n - c + 1)..=n {
        fail *= 1.0 - k as f64 / i as f64;
    }
    Some(1.0 - fail)
}

/// The ks to report for `n` samples: powers of two up to `n`, and `n` itself.
pub fn report_ks(n: usize) -> Vec<usize> {
    let mut ks: Vec<usize> =
        std::iter::successors(Some(1usize), |k| k.checked_mul(2)).take_while(|&k| k <= n).collect();
    if n > 0 && ks.last() != Some(&n) {
        ks.push(n);
    }
    ks
}

/// Counts over a group of problems.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub problems: usize,
    pub solved: usize,
    /// `solved / problems`, in percent.
    pub solved_pct: f64,
    /// Mean unbiased pass@k over the problems with at least k whole-proof samples, in percent
    /// (a theorem a closer proved counts as solved at every k; `via` says how many).
    pub pass_at_k: BTreeMap<String, f64>,
}

/// A published number for the same benchmark, shown beside ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaperResult {
    pub benchmark: String,
    pub model: String,
    pub mode: String,
    pub k: usize,
    /// Percent of problems, or a count of problems when `unit` is `problems`.
    pub value: f64,
    #[serde(default = "percent")]
    pub unit: String,
    pub source: String,
    #[serde(default)]
    pub note: String,
}

fn percent() -> String {
    "percent".into()
}

/// The table of published results in `benchmarks/paper-results.json`.
pub fn paper_results() -> Vec<PaperResult> {
    serde_json::from_str(include_str!("../../benchmarks/paper-results.json")).unwrap_or_default()
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub schema: String,
    pub dataset: String,
    /// Problems in the run; `attempted` of them have finished.
    pub problems: usize,
    pub attempted: usize,
    pub overall: Tally,
    pub by_split: BTreeMap<String, Tally>,
    pub by_area: BTreeMap<String, Tally>,
    /// Solved problems by how they were proved.
    pub via: BTreeMap<String, usize>,
    /// Problems not run because their statement does not elaborate (counted as unsolved in the
    /// tallies, so the denominators stay the benchmark's).
    #[serde(default)]
    pub broken_statements: usize,
    /// Whole-proof samples of the theorems, and of them those cut at the token limit and those
    /// that failed to generate (both counted as wrong in pass@k).
    #[serde(default)]
    pub samples: usize,
    #[serde(default)]
    pub samples_truncated: usize,
    #[serde(default)]
    pub samples_errored: usize,
    /// Samples of the theorems' self-correction rounds, apart from `samples`.
    #[serde(default)]
    pub repair_samples: usize,
    pub model_calls: u64,
    pub tokens: u64,
    pub lean_checks: u64,
    /// Sum of the problems' own times.
    pub problem_seconds: f64,
    /// Wall time of the run's sessions (every `bench` and `--resume` invocation).
    #[serde(default)]
    pub wall_seconds: f64,
    /// Finished problems per hour of wall time.
    #[serde(default)]
    pub problems_per_hour: f64,
    /// Published results for this benchmark at the ks reported here.
    pub paper: Vec<PaperResult>,
    pub load_errors: usize,
}

/// `k_run`: the samples each problem was to get. A problem that got fewer (a budget ran out, the
/// model failed) counts its missing samples as wrong, so every k averages over every problem.
fn tally<'a>(results: impl Iterator<Item = &'a ProblemResult>, k_run: usize) -> Tally {
    let rs: Vec<&ProblemResult> = results.collect();
    let solved = rs.iter().filter(|r| r.outcome.solved).count();
    let n_of = |r: &ProblemResult| r.samples.max(k_run);
    let max_n = rs.iter().map(|r| n_of(r)).max().unwrap_or(0);
    let mut pass = BTreeMap::new();
    for k in report_ks(max_n) {
        // A theorem a closer proved needed no sample: solved at every k.
        let correct = |r: &ProblemResult| {
            if r.outcome.solved && r.outcome.via == Some(crate::pipeline::scheduler::Via::Closer) {
                n_of(r)
            } else {
                r.correct
            }
        };
        let vals: Vec<f64> = rs.iter().filter_map(|r| pass_at_k(n_of(r), correct(r), k)).collect();
        if !vals.is_empty() {
            pass.insert(k.to_string(), round2(100.0 * vals.iter().sum::<f64>() / vals.len() as f64));
        }
    }
    Tally {
        problems: rs.len(),
        solved,
        solved_pct: if rs.is_empty() { 0.0 } else { round2(100.0 * solved as f64 / rs.len() as f64) },
        pass_at_k: pass,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The summary of a run's results so far.
pub fn summarize(config: &RunConfig, results: &[ProblemResult], wall_seconds: f64) -> Summary {
    let mut by_split: BTreeMap<String, Vec<&ProblemResult>> = BTreeMap::new();
    let mut by_area: BTreeMap<String, Vec<&ProblemResult>> = BTreeMap::new();
    let mut via = BTreeMap::new();
    for r in results {
        if let Some(s) = &r.split {
            by_split.entry(s.clone()).or_default().push(r);
        }
        if let Some(a) = &r.area {
            by_area.entry(a.clone()).or_default().push(r);
        }
        if let (true, Some(v)) = (r.outcome.solved, r.outcome.via) {
            let name = serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            *via.entry(name).or_insert(0) += 1;
        }
    }
    // pass@k is over whole-proof samples: none when the strategy never samples whole proofs.
    let k_run =
        if config.engine.strategy == crate::pipeline::scheduler::Strategy::Decompose { 0 } else { config.engine.k };
    let overall = tally(results.iter(), k_run);
    let ks: Vec<usize> = overall.pass_at_k.keys().filter_map(|k| k.parse().ok()).collect();
    let paper =
        paper_results().into_iter().filter(|p| p.benchmark == config.dataset.name && ks.contains(&p.k)).collect();
    Summary {
        schema: SUMMARY_SCHEMA.into(),
        dataset: config.dataset.name.clone(),
        problems: config.dataset.problems,
        attempted: results.len(),
        overall,
        by_split: by_split.into_iter().map(|(k, v)| (k, tally(v.into_iter(), k_run))).collect(),
        by_area: by_area.into_iter().map(|(k, v)| (k, tally(v.into_iter(), k_run))).collect(),
        via,
        broken_statements: results.iter().filter(|r| r.broken_statement).count(),
        samples: results.iter().map(|r| r.samples).sum(),
        samples_truncated: results.iter().map(|r| r.truncated).sum(),
        samples_errored: results.iter().map(|r| r.errored).sum(),
        repair_samples: results.iter().map(|r| r.repair_samples).sum(),
        model_calls: results.iter().map(|r| r.outcome.model_calls).sum(),
        tokens: results.iter().map(|r| r.outcome.tokens).sum(),
        lean_checks: results.iter().map(|r| r.outcome.lean_checks).sum(),
        problem_seconds: round2(results.iter().map(|r| r.outcome.elapsed_ms as f64 / 1000.0).sum()),
        wall_seconds: round2(wall_seconds),
        problems_per_hour: if wall_seconds > 0.0 { round2(results.len() as f64 * 3600.0 / wall_seconds) } else { 0.0 },
        paper,
        load_errors: config.dataset.load_errors.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_matches_hand_computed_values() {
        // n = 4, c = 1: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2; pass@4 = 1.
        assert_eq!(pass_at_k(4, 1, 1), Some(0.25));
        assert!((pass_at_k(4, 1, 2).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(pass_at_k(4, 1, 4), Some(1.0));
        // n = 10, c = 3, k = 5: 1 - C(7,5)/C(10,5) = 1 - 21/252.
        assert!((pass_at_k(10, 3, 5).unwrap() - (1.0 - 21.0 / 252.0)).abs() < 1e-12);
        assert_eq!(pass_at_k(8, 0, 8), Some(0.0));
        assert_eq!(pass_at_k(2, 1, 4), None);
    }

    #[test]
    fn pass_at_k_stays_finite_for_thousands_of_samples() {
        let p = pass_at_k(8192, 5, 1024).unwrap();
        assert!(p > 0.0 && p < 1.0, "{p}");
        assert!((pass_at_k(8192, 8192, 1).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn shards_partition_the_problems() {
        let names: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        for n in &names {
            assert_eq!(shards.iter().filter(|s| s.holds(n)).count(), 1, "{n}");
        }
        let sizes: Vec<usize> = shards.iter().map(|s| names.iter().filter(|n| s.holds(n)).count()).collect();
        assert!(sizes.iter().all(|&k| k > 40), "{sizes:?}");
        assert!("3/3".parse::<Shard>().is_err() && "1".parse::<Shard>().is_err());
    }

    #[test]
    fn ks_are_powers_of_two_and_n() {
        assert_eq!(report_ks(8), [1, 2, 4, 8]);
        assert_eq!(report_ks(6), [1, 2, 4, 6]);
        assert!(report_ks(0).is_empty());
    }

    #[test]
    fn the_paper_table_parses_and_names_its_sources() {
        let t = paper_results();
        assert!(t.len() >= 20);
        assert!(t.iter().all(|p| !p.source.is_empty() && p.k > 0));
        assert!(t.iter().any(|p| p.benchmark == "minif2f-test" && p.k == 32 && p.value == 82.4));
    }
}
