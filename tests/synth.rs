//! `subgoal synth` and `subgoal merge` end to end: runs over prelude problems with real Lean and
//! models scripted by replay transcripts; the examples are checked against their schemas and
//! re-verified; shards, merging and a killed synthesis are compared with one uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::script::Script;
use common::*;
use serde_json::Value;
use subgoal::model::SamplingParams;
use subgoal::pipeline::scheduler::EngineConfig;
use subgoal::verify::{Verdict, Verifier, VerifyInput};

/// The CLI's defaults the transcripts are keyed by (`-k 1 --sketches 1`; they carry no seed, so
/// they answer the seeds `--seed 7` derives for each request).
fn cfg() -> EngineConfig {
    EngineConfig {
        k: 1,
        sketches: 1,
        prover: SamplingParams { max_new_tokens: 2048, seed: None, ..Default::default() },
        planner: SamplingParams { max_new_tokens: 8192, temperature: 0.6, seed: None, ..Default::default() },
        ..Default::default()
    }
}

fn statement(name: &str) -> String {
    format!("theorem {name} (a b : Prop) (ha : a) (hb : b) : And a b :=")
}

/// Problems `names` in DeepSeek format, all stating `And a b` from `a` and `b` (their subgoals are
/// named after their problem, so only problems run together share them).
fn dataset(dir: &Path, file: &str, names: &[&str]) -> PathBuf {
    dataset_with_header(dir, file, names, HEADER)
}

fn dataset_with_header(dir: &Path, file: &str, names: &[&str], header: &str) -> PathBuf {
    let text: String = names
        .iter()
        .map(|n| {
            let line = serde_json::json!({
                "name": n, "split": "test", "informal_prefix": format!("/-- {n}. -/\n"),
                "formal_statement": format!("{} by\n", statement(n)), "header": header,
            });
            format!("{line}\n")
        })
        .collect();
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// `decomposed` problems fail whole and are proved through a two-step sketch; `whole` ones are
/// proved by the prover at once.
fn script(decomposed: &[&str], whole: &[&str], latency_ms: u64) -> Script {
    script_with_header(decomposed, whole, latency_ms, HEADER)
}

fn script_with_header(decomposed: &[&str], whole: &[&str], latency_ms: u64, header: &str) -> Script {
    let mut s = Script::new(&cfg());
    s.header = header.into();
    for n in decomposed {
        let st = statement(n);
        s.prover(n, &st, &format!("{n}."), &[&format!("{st} ha")], latency_ms);
        s.planner(
            n,
            &st,
            &format!("{n}."),
            &format!("{st}\n  have h1 : a := sorry\n  have h2 : b := sorry\n  And.intro h1 h2"),
        );
        let h1 = format!("theorem {n}_h1 (a b : Prop) (ha : a) (hb : b) :\n    a :=");
        s.prover(
            &format!("{n}_h1"),
            &h1,
            "",
            &[&format!("theorem {n}_h1 (a b : Prop) (ha : a) (hb : b) : a := ha")],
            latency_ms,
        );
        let h2 = format!("theorem {n}_h2 (a b : Prop) (ha : a) (hb : b) (h1 : a) :\n    b :=");
        let p2 = format!("theorem {n}_h2 (a b : Prop) (ha : a) (hb : b) (h1 : a) : b := hb");
        s.prover(&format!("{n}_h2"), &h2, "", &[&p2], latency_ms);
    }
    for n in whole {
        let st = statement(n);
        s.prover(n, &st, &format!("{n}."), &[&format!("{st} And.intro ha hb")], latency_ms);
    }
    s
}

fn subgoal(args: &[&str]) -> std::process::Output {
    Command::new(subgoal_bin()).args(args).env("RUST_LOG", "warn").env_remove("SUBGOAL_DATA").output().unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `subgoal synth --dataset …` with the flags the transcripts are keyed by.
fn synth_args(data: &Path, model: &str, lean: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "synth",
        "--dataset",
        data.to_str().unwrap(),
        "--prover",
        model,
        "-k",
        "1",
        "--sketches",
        "1",
        "--depth",
        "1",
        "--seed",
        "7",
        "--lean",
        lean.to_str().unwrap(),
        "--workers",
        "1",
        "--no-progress",
        // Prompts offering proved lemmas depend on which finished first; transcripts key on prompts.
        "--library",
        "off",
        "--out",
        out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run_synth(args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = subgoal(&refs);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Records as compared across runs: everything but the time a problem took.
fn comparable(path: &Path) -> Vec<Value> {
    lines(path)
        .into_iter()
        .map(|mut r| {
            r["metadata"]["provenance"].as_object_mut().unwrap().remove("problem_elapsed_ms");
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthesis_writes_schema_valid_examples_whose_proofs_reverify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.jsonl", &["q0", "q1"]);
    let transcript = dir.path().join("t.jsonl");
    script(&["q0"], &["q1"], 0).write(&transcript);
    let out = dir.path().join("out");
    let model = format!("replay:{}", transcript.display());
    run_synth(&synth_args(&data, &model, &lean(), &out, &[]));

    let chat = lines(&out.join("chat.jsonl"));
    let pairs = lines(&out.join("pairs.jsonl"));
    chat.iter().for_each(|r| assert_schema_valid("synth-chat.schema.json", r));
    pairs.iter().for_each(|r| assert_schema_valid("synth-pair.schema.json", r));
    assert_eq!(chat.len(), pairs.len());
    let kinds: Vec<(String, String, String)> = chat
        .iter()
        .map(|r| {
            let m = &r["metadata"];
            (m["kind"].as_str().unwrap().into(), m["name"].as_str().unwrap().into(), m["form"].to_string())
        })
        .collect();
    // q1 was proved whole: no example. q0: its CoT example; h1 in form (b) only (it has no
    // earlier step), h2 in both forms (its proof does not use h1).
    assert_eq!(
        kinds,
        [
            ("cot".into(), "q0".into(), "null".into()),
            ("subgoal".into(), "q0_h1".into(), "\"with_premises\"".into()),
            ("subgoal".into(), "q0_h2".into(), "\"with_premises\"".into()),
            ("subgoal".into(), "q0_h2".into(), "\"without_premises\"".into()),
        ]
    );
    let cot = chat[0]["messages"][1]["content"].as_str().unwrap();
    for section in [
        "### Detailed Proof and Analysis\n\nSplit the goal.",
        "### Step-by-Step Abstract Plan\n\n1. `h1`: a\n2. `h2`: b",
        "### Lean 4 Proof with `have` Statements",
        "have h1 : a := sorry",
        "### Complete Lean 4 Proof",
    ] {
        assert!(cot.contains(section), "{section:?} missing from {cot}");
    }
    assert!(chat[0]["messages"][0]["content"].as_str().unwrap().starts_with("Complete the following Lean 4 code:"));
    assert!(chat[0]["metadata"]["provenance"]["planner"]["model"].as_str().unwrap().starts_with("replay:"));
    // Every written proof is a proof of its statement, checked again here.
    let verifier = Verifier::start(pool_config(1, 60.0)).unwrap();
    for r in &chat {
        let m = &r["metadata"];
        let input = VerifyInput {
            name: m["name"].as_str().unwrap().into(),
            header: m["header"].as_str().unwrap().into(),
            formal_statement: m["statement"].as_str().unwrap().into(),
            proof: None,
            code: Some(m["proof"].as_str().unwrap().into()),
        };
        let record = verifier.verify(&input).await;
        assert_eq!(record.verdict, Verdict::Proved, "{}: {}", input.name, record.reason);
    }
    verifier.shutdown().await;
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(
        (stats["problems"].as_u64(), stats["solved"].as_u64(), stats["selected"].as_u64()),
        (Some(2), Some(2), Some(1))
    );
    assert_eq!(stats["examples_per_solved_problem"], 2.0);
}

#[test]
fn the_paper_rule_takes_only_problems_whose_whole_proofs_were_tried_and_failed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), "d.jsonl", &["q0"]);
    let transcript = dir.path().join("t.jsonl");
    script(&["q0"], &[], 0).write(&transcript);
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    // With `--strategy decompose` no whole proof was tried: `all` takes q0, `paper` does not.
    let out = dir.path().join("decompose");
    run_synth(&synth_args(&data, &model, &lean, &out, &["--strategy", "decompose"]));
    let run = out.join("run");
    for (rule, cot) in [("all", 1), ("paper", 0)] {
        let o = dir.path().join(rule);
        run_synth(
            &[
                "synth",
                "--from-run",
                run.to_str().unwrap(),
                "--select",
                rule,
                "--out",
                o.to_str().unwrap(),
                "--lean",
                lean.to_str().unwrap(),
            ]
            .map(String::from),
        );
        let n = lines(&o.join("chat.jsonl")).iter().filter(|r| r["metadata"]["kind"] == "cot").count();
        assert_eq!(n, cot, "--select {rule}");
    }
    // With `--strategy both` the whole proof was tried and failed: `paper` takes q0.
    let both = dir.path().join("both");
    run_synth(&synth_args(&data, &model, &lean, &both, &["--select", "paper"]));
    assert_eq!(lines(&both.join("chat.jsonl")).iter().filter(|r| r["metadata"]["kind"] == "cot").count(), 1);
}

#[test]
fn duplicate_and_benchmark_statements_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // q0 and q0copy state the same theorem under two names; the excluded benchmark holds q1's
    // statement under a third name.
    let data = dataset(dir.path(), "d.jsonl", &["q0", "q0copy", "q1"]);
    let transcript = dir.path().join("t.jsonl");
    script(&["q0", "q0copy", "q1"], &[], 0).write(&transcript);
    let out = dir.path().join("out");
    let model = format!("replay:{}", transcript.display());
    let excl = dataset(dir.path(), "excluded.jsonl", &["zzz"]);
    // Every problem states `And a b` from the same hypotheses, so the excluded statement matches
    // all three CoT examples; without the guard only q0copy's would go (a duplicate of q0's).
    run_synth(&synth_args(&data, &model, &lean(), &out, &[]));
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    let cots = lines(&out.join("chat.jsonl")).iter().filter(|r| r["metadata"]["kind"] == "cot").count();
    assert_eq!(cots, 1, "one CoT example per distinct statement");
    assert!(stats["duplicates_dropped"].as_u64().unwrap() >= 2, "{stats}");
    let guarded = dir.path().join("guarded");
    let run = out.join("run");
    run_synth(
        &[
            "synth",
            "--from-run",
            run.to_str().unwrap(),
            "--exclude",
            excl.to_str().unwrap(),
            "--out",
            guarded.to_str().unwrap(),
            "--lean",
            lean().to_str().unwrap(),
        ]
        .map(String::from),
    );
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(guarded.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["contaminated_dropped"], 3, "{stats}");
    assert_eq!(lines(&guarded.join("chat.jsonl")).iter().filter(|r| r["metadata"]["kind"] == "cot").count(), 0);
}

#[test]
fn two_shards_merged_equal_one_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["s0", "s1", "s2", "s3", "s4", "s5"];
    let data = dataset(dir.path(), "d.jsonl", &names);
    let transcript = dir.path().join("t.jsonl");
    script(&names, &[], 0).write(&transcript);
    let model = format!("replay:{}", transcript.display());
    let lean = lean();
    let whole = dir.path().join("whole");
    run_synth(&synth_args(&data, &model, &lean, &whole, &[]));
    let shards: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("shard{i}"))).collect();
    for (i, out) in shards.iter().enumerate() {
        run_synth(&synth_args(&data, &model, &lean, out, &["--shard", &format!("{i}/2")]));
    }
    let sizes: Vec<usize> = shards.iter().map(|s| lines(&s.join("run/results.jsonl")).len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), names.len(), "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > 0), "each shard has problems: {sizes:?}");
    let merged = dir.path().join("merged");
    let out = subgoal(&[
        "merge",
        shards[0].to_str().unwrap(),
        shards[1].to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["chat.jsonl", "pairs.jsonl"] {
        assert_eq!(comparable(&merged.join(f)), comparable(&whole.join(f)), "{f}");
    }
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(merged.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["problems"], 6);
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);
}

#[test]
fn a_killed_synthesis_resumes_to_the_output_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["k0", "k1", "k2", "k3"];
    let data = dataset(dir.path(), "d.jsonl", &names);
    let lean = lean();
    // The same answers, each model call taking 0.4 s, one problem at a time: killed mid-run.
    let slow = dir.path().join("slow.jsonl");
    script(&names, &[], 400).write(&slow);
    let model = format!("replay-timed:{}", slow.display());
    let reference = dir.path().join("reference");
    run_synth(&synth_args(&data, &model, &lean, &reference, &["--jobs", "1"]));
    let out = dir.path().join("out");
    let args = synth_args(&data, &model, &lean, &out, &["--jobs", "1"]);
    let mut child = Command::new(subgoal_bin())
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let results = out.join("run/results.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&results).map_or(0, |t| t.lines().count()) < 1 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("chat.jsonl").exists(), "killed before it wrote any output");
    run_synth(&args);
    for f in ["chat.jsonl", "pairs.jsonl"] {
        assert_eq!(comparable(&out.join(f)), comparable(&reference.join(f)), "{f}");
    }
    assert_eq!(lines(&results).len(), names.len());
}

#[test]
fn problems_whose_header_defines_things_give_examples_too() {
    // ProverBench, PutnamBench and miniCodeProps headers hold `def`s and `abbrev`s; the examples'
    // proofs are checked again under that header.
    let dir = tempfile::tempdir().unwrap();
    let header = format!("{HEADER}\nnoncomputable def two : Nat := 2\n");
    let data = dataset_with_header(dir.path(), "d.jsonl", &["q0"], &header);
    let transcript = dir.path().join("t.jsonl");
    script_with_header(&["q0"], &[], 0, &header).write(&transcript);
    let out = dir.path().join("out");
    run_synth(&synth_args(&data, &format!("replay:{}", transcript.display()), &lean(), &out, &[]));
    let chat = lines(&out.join("chat.jsonl"));
    assert_eq!(chat.len(), 4, "{chat:#?}");
    assert!(chat.iter().all(|r| r["metadata"]["proof"].as_str().unwrap().contains("def two")));
    let stats: Value = serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["failed_reverification"], 0);
}
