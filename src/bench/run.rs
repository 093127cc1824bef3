//! Running a dataset into a run directory: the problems not yet done go through one `Engine`,
//! `jobs` at a time; each finished problem's DAG, then its `results.jsonl` line, are written as
//! it ends (the resume point); every attempt is appended to `attempts.jsonl` as it is verified;
//! the summary is rewritten every 16 problems and at the end. Problems whose statement does not
//! elaborate (the preflight's `StatementReport`) are recorded without being run.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use super::rundir::{file_safe, write_atomic, RunDir, RunError};
use super::statements::StatementReport;
use super::{summarize, ProblemResult, RunConfig, Summary, RESULT_SCHEMA};
use crate::datasets::BenchProblem;
use crate::model::{FinishReason, Generator};
use crate::pipeline::prompts::Prompts;
use crate::pipeline::scheduler::{Attempt, Engine, ProblemOutcome, Role};
use crate::verify::{Verdict, Verifier};

/// What a run is run with.
pub struct Resources {
    pub verifier: Arc<Verifier>,
    pub prover: Arc<dyn Generator>,
    pub planner: Arc<dyn Generator>,
    pub prompts: Prompts,
}

/// Told of each finished problem: the result, then how many are done and solved in all.
pub type Progress<'a> = &'a (dyn Fn(&ProblemResult, usize, usize) + Sync);

/// One problem's whole-proof samples of its theorem, counted from its attempts as they come.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SampleTally {
    /// Whole-proof samples verified (the `n` of pass@k).
    pub samples: usize,
    /// Of them, proved (the `c` of pass@k).
    pub correct: usize,
    /// Of them, cut at the token limit.
    pub truncated: usize,
    /// Of them, failed to generate.
    pub errored: usize,
    pub first_success: Option<usize>,
    /// Candidates of every role.
    pub attempts: usize,
    /// Samples of the theorem's self-correction rounds (not in pass@k's `n`).
    pub repair_samples: usize,
}

impl SampleTally {
    pub fn record(&mut self, a: &Attempt) {
        self.attempts += 1;
        if a.role == Role::Repair && a.node == a.problem {
            self.repair_samples += 1;
        }
        if a.role != Role::Prover || a.node != a.problem {
            return;
        }
        self.samples += 1;
        match a.finish_reason {
            Some(FinishReason::Length) => self.truncated += 1,
            Some(FinishReason::Error) => self.errored += 1,
            _ => {}
        }
        if a.verdict == Verdict::Proved {
            self.correct += 1;
            self.first_success = Some(self.first_success.map_or(a.sample, |f| f.min(a.sample)));
        }
    }
}

/// Runs the problems of `problems` that `run` has not finished; returns the summary of all.
pub async fn run_problems(
    run: &RunDir,
    config: &RunConfig,
    problems: &[BenchProblem],
    statements: Option<&StatementReport>,
    res: Resources,
    jobs: usize,
    progress: Progress<'_>,
) -> Result<Summary, RunError> {
    let _lock = run.lock()?;
    let mut results = run.repair()?;
    let done: std::collections::HashSet<String> = results.iter().map(|r| r.outcome.name.clone()).collect();
    let broken: HashMap<&str, String> = statements
        .map(|s| s.broken().map(|c| (c.name.as_str(), format!("{}: {}", c.verdict.as_str(), c.detail))).collect())
        .unwrap_or_default();
    let todo: Vec<&BenchProblem> = problems.iter().filter(|p| !done.contains(&p.problem.name)).collect();
    tracing::info!(
        dataset = %config.dataset.name,
        problems = problems.len(),
        done = results.len(),
        to_run = todo.len(),
        run = %run.path.display(),
        "bench"
    );

    let (tallies, sink) = attempt_sink(run)?;
    let ticker = tokio::spawn(log_engine_metrics(res.prover.clone(), res.planner.clone()));
    let engine =
        Engine::new(res.verifier.clone(), res.prover, res.planner, res.prompts, config.engine.clone(), Some(sink));

    let session = Instant::now();
    let before = run.wall_seconds();
    let session_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let mut solved = results.iter().filter(|r| r.outcome.solved).count();
    let mut outcomes = futures::stream::iter(todo.into_iter().map(|p| {
        let engine = engine.clone();
        let broken = broken.get(p.problem.name.as_str()).cloned();
        async move {
            match broken {
                Some(why) => (p, not_run(&p.problem.name, why), true),
                None => (p, engine.prove(&p.problem).await, false),
            }
        }
    }))
    .buffer_unordered(jobs.max(1));
    while let Some((p, outcome, broken_statement)) = outcomes.next().await {
        let name = &p.problem.name;
        let result = problem_result(run, &engine, &tallies, p, outcome, broken_statement)?;
        run.append_result(&result)?;
        engine.retire(name);
        solved += result.outcome.solved as usize;
        tracing::info!(problem = %name, solved = result.outcome.solved, reason = %result.outcome.reason, "problem done");
        results.push(result);
        progress(results.last().expect("just pushed"), results.len(), solved);
        if results.len() % 16 == 0 {
            // The session's time so far, so a killed session still counts (the latest line of a
            // session stands).
            run.record_session(session_id, session.elapsed().as_secs_f64(), results.len())?;
            run.write_summary(&summarize(config, &results, before + session.elapsed().as_secs_f64()))?;
        }
    }
    drop(outcomes);
    ticker.abort();
    let wall = session.elapsed().as_secs_f64();
    run.record_session(session_id, wall, results.len())?;
    let summary = summarize(config, &results, before + wall);
    run.write_summary(&summary)?;
    Ok(summary)
}

/// Samples counted per problem from the attempts as they happen.
type Tallies = Arc<Mutex<HashMap<String, SampleTally>>>;

/// The engine's attempt sink: each attempt counted for its problem and appended to
/// `attempts.jsonl` as one line.
#[allow(clippy::type_complexity)]
fn attempt_sink(run: &RunDir) -> Result<(Tallies, Arc<dyn Fn(&Attempt) + Send + Sync>), RunError> {
    let tallies: Tallies = Arc::default();
    let attempts = Arc::new(Mutex::new(run.attempts_writer()?));
    let counted = tallies.clone();
    let sink = Arc::new(move |a: &Attempt| {
        if let Ok(mut t) = counted.lock() {
            t.entry(a.problem.clone()).or_default().record(a);
        }
        if let (Ok(mut f), Ok(mut line)) = (attempts.lock(), serde_json::to_string(a)) {
            line.push('\n');
            // One write per line, so a kill leaves at most one torn line (cut on resume).
            let _ = f.write_all(line.as_bytes()).and_then(|_| f.flush());
        }
    });
    Ok((tallies, sink))
}

/// A finished problem's record: its DAG written to `dags/`, its samples' counts taken from the
/// tallies.
fn problem_result(
    run: &RunDir,
    engine: &Engine,
    tallies: &Tallies,
    p: &BenchProblem,
    outcome: ProblemOutcome,
    broken_statement: bool,
) -> Result<ProblemResult, RunError> {
    let name = &p.problem.name;
    let dag_rel = format!("dags/{}.json", file_safe(name));
    let dag = engine.export_dag(Some(name));
    write_atomic(&run.file(&dag_rel), &serde_json::to_string_pretty(&dag).unwrap_or_default())?;
    let t = tallies.lock().ok().and_then(|mut t| t.remove(name)).unwrap_or_default();
    Ok(ProblemResult {
        schema: RESULT_SCHEMA.into(),
        outcome,
        split: p.split.clone(),
        area: p.area.clone(),
        source: p.source.clone(),
        samples: t.samples,
        correct: t.correct,
        truncated: t.truncated,
        errored: t.errored,
        repair_samples: t.repair_samples,
        broken_statement,
        first_success: t.first_success,
        attempts: t.attempts,
        dag: dag_rel,
    })
}

/// Logs the embedded engines' counters once a minute (to `run.log`): batch occupancy, KV blocks,
/// prefix-cache hits, preemptions, tokens/s.
async fn log_engine_metrics(prover: Arc<dyn Generator>, planner: Arc<dyn Generator>) {
    let same = Arc::ptr_eq(&prover, &planner);
    let mut last: [Option<(Instant, u64)>; 2] = [None, None];
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        for (i, (role, g)) in [("prover", &prover), ("planner", &planner)].into_iter().enumerate() {
            if i == 1 && same {
                continue;
            }
            let Some(m) = g.metrics() else { continue };
            let now = Instant::now();
            let rate = last[i].map_or(0.0, |(t, n)| {
                m.generated_tokens.saturating_sub(n) as f64 / now.duration_since(t).as_secs_f64()
            });
            last[i] = Some((now, m.generated_tokens));
            tracing::info!(
                model = role,
                running = m.running,
                waiting = m.waiting,
                kv_blocks_used = m.blocks_used,
                kv_blocks_total = m.blocks_total,
                prefix_hits = m.prefix_hits,
                preemptions = m.preemptions,
                tokens_per_s = format!("{rate:.1}"),
                "engine"
            );
        }
    }
}

/// The outcome of a problem that was not run because its statement does not elaborate.
fn not_run(name: &str, why: String) -> ProblemOutcome {
    ProblemOutcome {
        name: name.to_string(),
        solved: false,
        via: None,
        proof: None,
        reason: format!("not run: the statement does not elaborate ({why})"),
        model_calls: 0,
        tokens: 0,
        lean_checks: 0,
        elapsed_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(node: &str, role: Role, sample: usize, verdict: Verdict) -> Attempt {
        Attempt {
            problem: "t".into(),
            node: node.into(),
            role,
            sample,
            model: None,
            verdict,
            reason: String::new(),
            code: String::new(),
            messages: vec![],
            prompt_tokens: 0,
            completion_tokens: 0,
            lean_ms: 0,
            elapsed_ms: 0,
            finish_reason: None,
            error: None,
            block: None,
            seed: None,
            round: (role == Role::Repair).then_some(1),
            tactic: None,
        }
    }

    #[test]
    fn repair_samples_are_counted_apart_from_the_samples_pass_at_k_is_over() {
        let mut t = SampleTally::default();
        t.record(&attempt("t", Role::Prover, 0, Verdict::Failed));
        t.record(&attempt("t", Role::Prover, 1, Verdict::Failed));
        t.record(&attempt("t", Role::Repair, 0, Verdict::Failed));
        t.record(&attempt("t", Role::Repair, 1, Verdict::Proved));
        // A subgoal's samples are not the theorem's.
        t.record(&attempt("t_h1", Role::Repair, 0, Verdict::Proved));
        assert_eq!((t.samples, t.correct, t.repair_samples, t.attempts), (2, 0, 2, 5));
    }
}
