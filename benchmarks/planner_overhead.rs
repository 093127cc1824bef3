//! The pipeline's own cost: a replayed run of many synthetic problems through real Lean, measuring
//! the share of wall time during which neither a model call nor a Lean check was in flight, the
//! engine's own CPU time, and resident memory as the problem count grows.
//!
//! Run by hand: `cargo bench --bench planner_overhead [-- --problems N --jobs J --latency-ms L
//! --compare-problems M]`.
//! Prints JSON. Every problem takes the full path: the prover's whole proof fails, the planner's
//! sketch has two steps, each step's lemma is proved by the prover, and the recomposed proof is
//! verified. Models answer from a timed replay (each call takes `--latency-ms`); the fresh
//! re-check of each `proved` is off here (it measures Lean, not the pipeline). Finished problems
//! are retired from the graph as a batch run does (`--keep-graph` keeps them, for comparison).
//! Then the first M problems run again, with the closer portfolio off and on (`assumption`, which
//! closes every second subgoal): model calls and tokens per problem side by side.

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::json;
use subgoal::lean::discovery::test_toolchain_lean;
use subgoal::model::record::{RecordLine, Replay};
use subgoal::model::{Completion, FinishReason, Generator, SamplingParams};
use subgoal::pipeline::closers::Portfolio;
use subgoal::pipeline::config::Closers;
use subgoal::pipeline::library::LibraryScope;
use subgoal::pipeline::prompts::{Prompts, StatementVars};
use subgoal::pipeline::scheduler::{Engine, EngineConfig, Problem, Strategy};
use subgoal::verify::{Verifier, VerifyOptions};

const HEADER: &str = "prelude\nimport SubgoalFixture\n";

/// Each replayed model call's latency (`--latency-ms`), for the report.
static LATENCY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--problems", 1000) as usize;
    let jobs = arg(&args, "--jobs", 32) as usize;
    let latency_ms = arg(&args, "--latency-ms", 20);
    LATENCY_MS.store(latency_ms, std::sync::atomic::Ordering::Relaxed);
    let workers = arg(&args, "--workers", 2) as usize;
    // `--keep-graph`: never retire finished problems (the whole run's graph stays in memory).
    let retire = !args.iter().any(|a| a == "--keep-graph");
    let lean = test_toolchain_lean();
    assert!(lean.exists(), "run scripts/install-test-toolchain.sh first");

    let cfg = EngineConfig {
        strategy: Strategy::Both,
        depth: 1,
        k: 1,
        sketches: 1,
        prover: SamplingParams { max_new_tokens: 256, seed: None, ..Default::default() },
        planner: SamplingParams { max_new_tokens: 512, seed: None, ..Default::default() },
        model_concurrency: jobs,
        // The transcript is keyed by prompts; offered lemmas would change them.
        library: LibraryScope::Off,
        closers: Closers::Off,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("transcript.jsonl");
    let problems = write_transcript(&transcript, n, &cfg, latency_ms);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut report = run(&rt, &lean, workers, &transcript, &problems, cfg.clone(), jobs, retire);
    assert_eq!(report["solved"], n, "every synthetic problem must be solved through its sketch");
    // The same replay with the closer portfolio on: every h2 (`r`, with `hr` at hand) is closable
    // by `assumption`, no h1 (`And p q`) or theorem is: half the subgoals.
    let m = arg(&args, "--compare-problems", 200) as usize;
    let arms: Vec<(&str, Closers)> = vec![
        ("off", Closers::Off),
        ("on", Closers::Custom(Portfolio { tactics: vec!["assumption".into()], heartbeats: 50_000 })),
    ];
    let mut comparison = serde_json::Map::new();
    for (label, closers) in arms {
        let arm = run(
            &rt,
            &lean,
            workers,
            &transcript,
            &problems[..m.min(n)],
            EngineConfig { closers, ..cfg.clone() },
            jobs,
            true,
        );
        let per = |key: &str| round(arm[key].as_f64().unwrap_or(0.0) / arm["problems"].as_f64().unwrap_or(1.0));
        comparison.insert(
            label.to_string(),
            json!({
                "solved": arm["solved"],
                "model_calls_per_problem": per("model_calls"),
                "tokens_per_problem": per("tokens"),
                "lean_checks_per_problem": per("lean_checks"),
                "wall_s": arm["wall_s"],
            }),
        );
    }
    let ratio = |key: &str| {
        round(comparison["on"][key].as_f64().unwrap_or(0.0) / comparison["off"][key].as_f64().unwrap_or(1.0).max(1e-9))
    };
    let (calls, tokens) = (ratio("model_calls_per_problem"), ratio("tokens_per_problem"));
    comparison.insert("problems".into(), json!(m.min(n)));
    comparison.insert("closable_subgoal_share".into(), json!(0.5));
    comparison.insert("model_calls_on_over_off".into(), json!(calls));
    comparison.insert("tokens_on_over_off".into(), json!(tokens));
    report["closers"] = serde_json::Value::Object(comparison);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// One replayed run of `problems`.
#[allow(clippy::too_many_arguments)]
fn run(
    rt: &tokio::runtime::Runtime,
    lean: &std::path::Path,
    workers: usize,
    transcript: &std::path::Path,
    problems: &[Problem],
    cfg: EngineConfig,
    jobs: usize,
    retire: bool,
) -> serde_json::Value {
    let n = problems.len();
    let latency_ms = LATENCY_MS.load(std::sync::atomic::Ordering::Relaxed);
    let pool = common::test_toolchain_pool(lean, workers);
    rt.block_on(async {
        let verifier =
            Arc::new(Verifier::start_with(pool, VerifyOptions { recheck: false, ..Default::default() }).unwrap());
        let model: Arc<dyn Generator> = Arc::new(Replay::open(transcript).unwrap().timed(true));
        let engine = Engine::new(verifier.clone(), model.clone(), model, Prompts::load(None).unwrap(), cfg, None);
        let cpu0 = self_cpu_s();
        let started = Instant::now();
        let mut solved = 0usize;
        let mut done = 0usize;
        let mut model_calls = 0u64;
        let mut tokens = 0u64;
        let mut lean_checks = 0u64;
        let mut rss_mb_at = serde_json::Map::new();
        let mut outcomes = futures::stream::iter(problems.iter().map(|p| {
            let engine = engine.clone();
            async move { engine.prove(p).await }
        }))
        .buffer_unordered(jobs);
        let mut retired = 0usize;
        while let Some(o) = outcomes.next().await {
            done += 1;
            if retire {
                retired += engine.retire(&o.name);
            }
            solved += o.solved as usize;
            model_calls += o.model_calls;
            tokens += o.tokens;
            lean_checks += o.lean_checks;
            if !o.solved && done - solved <= 3 {
                // A transcript that no longer matches the pipeline's prompts shows here first.
                eprintln!("planner_overhead: {} unsolved: {}", o.name, o.reason);
            }
            if done % (n / 4).max(1) == 0 || done == n {
                rss_mb_at.insert(done.to_string(), json!(round(rss_mb("VmRSS"))));
            }
        }
        drop(outcomes);
        let wall = started.elapsed().as_secs_f64();
        let cpu = self_cpu_s() - cpu0;
        let idle = engine.idle_time().as_secs_f64();
        let dag = engine.export_dag(None);
        let dag_json_mb = serde_json::to_string(&dag).map_or(0, |s| s.len()) as f64 / 1e6;
        let report = json!({
            "benchmark": "planner_overhead",
            "problems": n,
            "solved": solved,
            "jobs": jobs,
            "lean_workers": workers,
            "model_latency_ms": latency_ms,
            "model_calls": model_calls,
            "tokens": tokens,
            "lean_checks": lean_checks,
            "wall_s": round(wall),
            "problems_per_s": round(n as f64 / wall),
            "outside_model_and_lean_fraction": round4(idle / wall),
            "engine_cpu_fraction_of_wall": round4(cpu / wall),
            "engine_cpu_ms_per_problem": round(cpu * 1e3 / n as f64),
            "retire_finished_problems": retire,
            "nodes_retired": retired,
            "dag_nodes_at_end": dag.nodes.len(),
            "dag_json_mb": round(dag_json_mb),
            "rss_mb_after_problems": rss_mb_at,
            "peak_rss_mb": round(rss_mb("VmHWM")),
            "goals": {"outside_model_and_lean_fraction_below": 0.01, "memory": "flat in the problem count"},
        });
        drop(engine);
        if let Ok(v) = Arc::try_unwrap(verifier) {
            v.shutdown().await;
        }
        report
    })
}

/// Problems and the transcript that scripts them: whole proof wrong, a two-step sketch, both
/// lemmas proved.
fn write_transcript(path: &std::path::Path, n: usize, cfg: &EngineConfig, latency_ms: u64) -> Vec<Problem> {
    let prompts = Prompts::load(None).unwrap();
    let answer = |code: String| Completion {
        text: format!("```lean4\n{HEADER}\n{code}\n```"),
        prompt_tokens: 100,
        completion_tokens: 50,
        finish_reason: FinishReason::Stop,
        error: None,
        elapsed_ms: latency_ms,
    };
    let mut text = String::new();
    let mut push = |name: &str, statement: &str, informal: &str, sketch: bool, code: String| {
        let v = StatementVars { name, header: HEADER, informal_statement: informal, formal_statement: statement };
        let (prompt, params) = if sketch {
            (prompts.sketch(&v).unwrap(), SamplingParams { n: cfg.sketches, ..cfg.planner.clone() })
        } else {
            (prompts.prove(&v, false).unwrap(), SamplingParams { n: cfg.k, ..cfg.prover.clone() })
        };
        let line = RecordLine { prompt, params, completions: vec![answer(code)] };
        text.push_str(&serde_json::to_string(&line).unwrap());
        text.push('\n');
    };
    let mut problems = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("b{i}");
        let hyps = format!("(p q r : Prop) (hp : p) (hq : q) (hr : r) (hi : Eq {i} {i})");
        let statement = format!("theorem {name} {hyps} : And (And p q) r :=");
        push(&name, &statement, "", false, format!("{statement} hp"));
        push(
            &name,
            &statement,
            "",
            true,
            format!("{statement}\n  have h1 : And p q := sorry\n  have h2 : r := sorry\n  And.intro h1 h2"),
        );
        // As Lean prints the goal back (numerals with their types).
        let lemma_hyps = format!("(p q r : Prop) (hp : p) (hq : q) (hr : r) (hi : Eq ({i} : Nat) ({i} : Nat))");
        let h1 = format!("theorem {name}_h1 {lemma_hyps} :\n    And p q :=");
        let p1 = format!("theorem {name}_h1 {lemma_hyps} : And p q := And.intro hp hq");
        push(&format!("{name}_h1"), &h1, "", false, p1);
        let h2 = format!("theorem {name}_h2 {lemma_hyps} (h1 : And p q) :\n    r :=");
        push(&format!("{name}_h2"), &h2, "", false, format!("theorem {name}_h2 {lemma_hyps} (h1 : And p q) : r := hr"));
        problems.push(Problem {
            name,
            header: HEADER.into(),
            informal_statement: String::new(),
            formal_statement: statement,
        });
    }
    std::fs::write(path, text).unwrap();
    problems
}

/// This process's CPU time (Lean runs in child processes, not counted).
fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rss_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}
