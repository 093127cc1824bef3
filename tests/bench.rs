//! `subgoal bench` and `subgoal report` end to end: a small prelude problem set, real Lean, the
//! prover scripted by a replay transcript; a real process killed mid-run and resumed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::script::Script;
use common::*;
use serde_json::Value;
use subgoal::model::SamplingParams;
use subgoal::pipeline::scheduler::EngineConfig;

/// The bench defaults the transcripts are keyed by (`-k 2`; they carry no seed, so they answer
/// the seeds `--seed 7` derives for each request).
fn cfg() -> EngineConfig {
    EngineConfig {
        k: 2,
        prover: SamplingParams { max_new_tokens: 2048, seed: None, ..Default::default() },
        ..Default::default()
    }
}

/// A DeepSeek-format dataset of `n` problems over the fixture, with one malformed line.
fn dataset(dir: &Path, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let split = if i % 2 == 0 { "valid" } else { "test" };
        let line = serde_json::json!({
            "name": format!("p{i}"),
            "split": split,
            "informal_prefix": format!("/-- Problem {i}. -/\n"),
            "formal_statement": format!("theorem p{i} (a b : Prop) (ha : a) (hb : b) : And a b := by\n"),
            "header": HEADER,
        });
        text.push_str(&format!("{line}\n"));
        if i == 0 {
            text.push_str("{\"name\": \"broken\", \"split\": \"valid\"}\n");
        }
    }
    let path = dir.join("tiny.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

const RIGHT: &str = "And.intro ha hb";
const WRONG: &str = "ha";

/// Problem `i`'s two samples: p0 both right, p1 one right, others wrong.
fn script(path: &Path, n: usize, latency_ms: u64) -> Script {
    let loaded = subgoal::datasets::load(path, None).unwrap();
    assert_eq!(loaded.problems.len(), n);
    let mut s = Script::new(&cfg());
    for (i, bp) in loaded.problems.iter().enumerate() {
        let p = &bp.problem;
        let answer = |proof: &str| format!("{} {proof}", p.formal_statement);
        let samples = match i {
            0 => [answer(RIGHT), answer(RIGHT)],
            1 => [answer(WRONG), answer(RIGHT)],
            _ => [answer(WRONG), answer(WRONG)],
        };
        let codes: Vec<&str> = samples.iter().map(String::as_str).collect();
        s.prover(&p.name, &p.formal_statement, &p.informal_statement, &codes, latency_ms);
    }
    s
}

/// The statement checks are cached per user; each test gets a cache of its own.
fn bench_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(subgoal_bin());
    c.arg("bench").args(args).env("RUST_LOG", "warn").env_remove("SUBGOAL_DATA");
    c.env("XDG_CACHE_HOME", std::env::temp_dir().join(format!("subgoal-test-cache-{}", std::process::id())));
    c
}

fn common_args<'a>(dataset: &'a str, model: &'a str, lean: &'a str) -> Vec<&'a str> {
    vec![
        "--dataset",
        dataset,
        "--strategy",
        "whole",
        "-k",
        "2",
        "--seed",
        "7",
        "--prover",
        model,
        "--lean",
        lean,
        "--no-progress",
        "--workers",
        "1",
    ]
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?} in {}: {e}", path.display())))
        .collect()
}

#[test]
fn a_run_records_every_problem_and_summarizes_pass_at_k() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3);
    let transcript = dir.path().join("t.jsonl");
    script(&data, 3, 0).write(&transcript);
    let run = dir.path().join("run");
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
    args.extend(["--run-dir", run.to_str().unwrap()]);
    let out = bench_cmd(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tiny.jsonl:2:"), "the malformed line is reported: {stderr}");

    let results = lines(&run.join("results.jsonl"));
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_schema_valid("result.schema.json", r);
    }
    let by_name = |n: &str| results.iter().find(|r| r["name"] == n).unwrap().clone();
    assert_eq!((by_name("p0")["correct"].as_u64(), by_name("p0")["first_success"].as_u64()), (Some(2), Some(0)));
    assert_eq!((by_name("p1")["correct"].as_u64(), by_name("p1")["first_success"].as_u64()), (Some(1), Some(1)));
    assert_eq!((by_name("p2")["correct"].as_u64(), by_name("p2")["solved"].as_bool()), (Some(0), Some(false)));
    assert!(results.iter().all(|r| r["samples"] == 2));

    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_schema_valid("summary.schema.json", &summary);
    assert_eq!(summary["overall"]["solved"], 2);
    // pass@1 = mean(2/2, 1/2, 0) = 50 %; pass@2 = mean(1, 1, 0) = 66.67 %.
    assert_eq!(summary["overall"]["pass_at_k"]["1"], 50.0);
    assert_eq!(summary["overall"]["pass_at_k"]["2"], 66.67);
    assert_eq!(summary["by_split"]["valid"]["problems"], 2);
    assert_eq!(summary["by_split"]["test"]["solved"], 1);
    assert_eq!(summary["load_errors"], 1);
    let config: Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_schema_valid("run-config.schema.json", &config);
    assert_eq!(config["engine"]["k"], 2);
    assert!(config["prompts"].as_array().unwrap().iter().all(|p| p["sha256"].as_str().unwrap().len() == 64));
    assert!(std::fs::read_to_string(run.join("run.log")).unwrap().contains("problem done"));
    assert_eq!(lines(&run.join("attempts.jsonl")).len(), 6);
}

#[test]
fn report_prints_the_table_and_writes_both_plots() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3);
    let transcript = dir.path().join("t.jsonl");
    script(&data, 3, 0).write(&transcript);
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    let runs: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("run{i}"))).collect();
    for run in &runs {
        let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
        args.extend(["--run-dir", run.to_str().unwrap()]);
        assert!(bench_cmd(&args).output().unwrap().status.success());
    }
    let plots = dir.path().join("plots");
    let out = Command::new(subgoal_bin())
        .args(["report", runs[0].to_str().unwrap(), runs[1].to_str().unwrap(), "--plots", plots.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pass2 = table.lines().find(|l| l.starts_with("pass@2")).unwrap();
    assert_eq!(pass2.matches("66.7%").count(), 2, "{table}");
    assert!(table.contains("split valid"), "{table}");
    for f in ["pass_at_k.svg", "groups.svg"] {
        let svg = std::fs::read_to_string(plots.join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("run1"), "{f}");
    }
}

#[test]
fn a_killed_run_resumes_with_no_problem_lost_or_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let n = 6;
    let data = dataset(dir.path(), n);
    let transcript = dir.path().join("t.jsonl");
    // Each prover call takes 1.5 s, one problem at a time: the kill lands mid-run.
    script(&data, n, 1500).write(&transcript);
    let run = dir.path().join("run");
    let model = format!("replay-timed:{}", transcript.display());
    let lean = lean();
    let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
    args.extend(["--run-dir", run.to_str().unwrap(), "--jobs", "1"]);
    let mut child = bench_cmd(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while lines(&run.join("results.jsonl")).len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(120), "the run made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let before = lines(&run.join("results.jsonl")).len();
    assert!(before < n, "the run finished before it was killed");

    let resumed = Command::new(subgoal_bin())
        .args(["bench", "--resume", run.to_str().unwrap(), "--lean", lean.to_str().unwrap(), "--no-progress"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    let results = lines(&run.join("results.jsonl"));
    let mut names: Vec<&str> = results.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5"]);
    // Every problem's two samples appear exactly once among the attempts.
    let attempts = lines(&run.join("attempts.jsonl"));
    for name in &names {
        let mine: Vec<u64> =
            attempts.iter().filter(|a| a["problem"] == *name).map(|a| a["sample"].as_u64().unwrap()).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1], "{name}: {mine:?}");
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["attempted"].as_u64(), summary["overall"]["solved"].as_u64()), (Some(6), Some(2)));
}

#[test]
fn a_new_run_in_a_used_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 1);
    let transcript = dir.path().join("t.jsonl");
    script(&data, 1, 0).write(&transcript);
    let run = dir.path().join("run");
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
    args.extend(["--run-dir", run.to_str().unwrap()]);
    assert!(bench_cmd(&args).output().unwrap().status.success());
    let again = bench_cmd(&args).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

/// The dataset of `dataset`, with problem `p{broken}`'s statement naming something the fixture
/// does not have.
fn dataset_with_broken_statement(dir: &Path, n: usize, broken: usize) -> PathBuf {
    let path = dataset(dir, n);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("theorem p{broken} (a b : Prop) (ha : a)"),
        &format!("theorem p{broken} (a b : Prop) (ha : Nat.noSuchThing a)"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_run_with_statements_that_do_not_elaborate_stops_unless_allowed_and_reports_them_apart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset_with_broken_statement(dir.path(), 3, 2);
    let transcript = dir.path().join("t.jsonl");
    script(&data, 3, 0).write(&transcript);
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    let run = dir.path().join("run");
    let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
    args.extend(["--run-dir", run.to_str().unwrap()]);
    let out = bench_cmd(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1 of 3 statements do not elaborate") && stderr.contains("p2"), "{stderr}");
    assert!(lines(&run.join("results.jsonl")).is_empty(), "nothing ran");

    let run = dir.path().join("run2");
    let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
    args.extend(["--run-dir", run.to_str().unwrap(), "--allow-broken-statements"]);
    let out = bench_cmd(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results = lines(&run.join("results.jsonl"));
    let p2 = results.iter().find(|r| r["name"] == "p2").unwrap();
    assert_eq!(p2["broken_statement"], true, "{p2}");
    assert_eq!(p2["model_calls"], 0, "{p2}");
    assert!(results.iter().filter(|r| r["name"] != "p2").all(|r| r.get("broken_statement").is_none()));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["broken_statements"], 1);
    assert_eq!(summary["overall"]["problems"], 3, "the denominators stay the benchmark's");
    let statements: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("statements.json")).unwrap()).unwrap();
    assert_schema_valid("statements.schema.json", &statements);
    assert!(String::from_utf8_lossy(&out.stdout).contains("statements broken"), "the table says it");
}

#[test]
fn datasets_check_names_each_statement_that_does_not_elaborate_and_caches_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset_with_broken_statement(dir.path(), 3, 1);
    let lean = lean();
    let check = || {
        Command::new(subgoal_bin())
            .args(["datasets", "check", data.to_str().unwrap(), "--json", "--lean", lean.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .env("XDG_CACHE_HOME", dir.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_schema_valid("statements.schema.json", &report);
    assert_eq!((report["checked"].as_u64(), report["broken"].as_u64()), (Some(3), Some(1)));
    let broken: Vec<&Value> = report["problems"].as_array().unwrap().iter().filter(|p| p["ok"] == false).collect();
    assert_eq!(broken[0]["name"], "p1");
    assert!(broken[0]["detail"].as_str().unwrap().contains("Nat.noSuchThing"), "{report}");
    let again: Value = serde_json::from_slice(&check().stdout).unwrap();
    assert_eq!(again["cached"], 3, "{again}");
    assert_eq!(again["problems"], report["problems"]);
}

#[test]
fn samples_cut_at_the_token_limit_or_failed_are_counted_apart_from_wrong_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 1);
    let mut s = script(&data, 1, 0);
    // p0's two samples: one cut off by the token limit, one that failed to generate.
    let line = s.lines.last_mut().unwrap();
    line.completions[0].finish_reason = subgoal::model::FinishReason::Length;
    line.completions[0].text = "theorem p0 (a b : Prop) (ha : a) (hb : b) : And a b := by\n  exact And.int".into();
    line.completions[1] = subgoal::model::Completion::failed("the server went away", 0);
    let transcript = dir.path().join("t.jsonl");
    s.write(&transcript);
    let run = dir.path().join("run");
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    let mut args = common_args(data.to_str().unwrap(), &model, lean.to_str().unwrap());
    args.extend(["--run-dir", run.to_str().unwrap()]);
    let out = bench_cmd(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = &lines(&run.join("results.jsonl"))[0];
    assert_eq!(
        (r["samples"].as_u64(), r["truncated"].as_u64(), r["errored"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{r}"
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!((summary["samples_truncated"].as_u64(), summary["samples_errored"].as_u64()), (Some(1), Some(1)));
    let attempts = lines(&run.join("attempts.jsonl"));
    let reasons: Vec<&str> = attempts.iter().filter_map(|a| a["finish_reason"].as_str()).collect();
    assert!(reasons.contains(&"length") && reasons.contains(&"error"), "{attempts:#?}");
    let errored = attempts.iter().find(|a| a["finish_reason"] == "error").unwrap();
    assert_eq!((errored["lean_ms"].as_u64(), errored["error"].as_str()), (Some(0), Some("the server went away")));
    for a in &attempts {
        assert_schema_valid("attempt.schema.json", a);
    }
}
