//! The `subgoal` binary end to end: real files on disk, the real test Lean.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

#[test]
fn malformed_lines_are_invalid_input_and_the_rest_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let good = serde_json::json!({
        "name": "ok", "header": HEADER,
        "formal_statement": "theorem ok (p : Prop) (hp : p) : p :=", "proof": " hp"
    });
    std::fs::write(
        &input,
        format!("{good}\n{{\"name\": \"broken\", \"proof\": \n\n{{\"name\": 3}}\n{{\"name\": \"no_body\", \"formal_statement\": \"theorem x : True :=\"}}\n{good}\n"),
    )
    .unwrap();
    let lean = lean();
    let out = run_subgoal(&["verify", "--input", input.to_str().unwrap(), "--json", "--lean", lean.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = records(&out.stdout);
    let verdicts: Vec<&str> = recs.iter().map(|r| r["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["proved", "invalid_input", "invalid_input", "invalid_input", "proved"]);
    assert!(recs[1]["reason"].as_str().unwrap().starts_with("line 2:"), "{}", recs[1]);
    assert!(recs[2]["reason"].as_str().unwrap().starts_with("line 4:"), "{}", recs[2]);
    assert_eq!(recs[3]["name"], "no_body");
}

#[test]
fn every_record_matches_the_documented_schema() {
    let lean = lean();
    let out = run_subgoal(&["verify", "--json", "--lean", lean.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recs = records(&out.stdout);
    assert!(recs.len() >= 5);
    for r in &recs {
        assert_schema_valid("verify-record.schema.json", r);
        for m in r["messages"].as_array().unwrap() {
            assert!(m["start"]["line"].as_u64().unwrap() >= 1, "{m}");
        }
    }
}

#[test]
fn a_single_lean_file_is_checked_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("two.lean");
    std::fs::write(&file, format!("{HEADER}theorem a : True := True.intro\ntheorem b (p : Prop) : p := sorry\n"))
        .unwrap();
    let lean = lean();
    let out = run_subgoal(&["verify", "--input", file.to_str().unwrap(), "--json", "--lean", lean.to_str().unwrap()]);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["name"], "two");
    assert_eq!(recs[0]["verdict"], "incomplete");
}

#[test]
fn out_file_receives_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.jsonl");
    let lean = lean();
    let out = run_subgoal(&["verify", "--out", out_file.to_str().unwrap(), "--lean", lean.to_str().unwrap()]);
    assert!(out.status.success());
    let written = std::fs::read(&out_file).unwrap();
    assert_eq!(records(&written).len(), include_str!("../examples/verify-demo.jsonl").lines().count());
}

#[test]
fn missing_lean_is_a_clear_error() {
    let out = run_subgoal(&["verify", "--lean", "/nonexistent/lean"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/lean") && err.contains("not executable"), "{err}");
}

#[test]
fn missing_input_file_is_a_clear_error() {
    let lean = lean();
    let out = run_subgoal(&["verify", "--input", "/nonexistent/in.jsonl", "--lean", lean.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/in.jsonl"));
}

#[test]
fn doctor_reports_version_and_which_libraries_import() {
    let lean = lean();
    let out = run_subgoal(&["doctor", "--json", "--lean", lean.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["version"].as_str().unwrap().contains("4.35.0"));
    let imports = r["imports"].as_array().unwrap();
    let ok = |m: &str| imports.iter().find(|c| c["module"] == m).unwrap()["ok"].as_bool().unwrap();
    assert!(ok("SubgoalFixture"));
    assert!(!ok("Mathlib"));
    assert!(r["search_path"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with("lib/lean")));
}

#[test]
fn lean_project_is_resolved_through_lake_env_to_its_lean_and_lean_path() {
    // Lake is not installable here; this `lake` answers `lake env printenv VAR` the way Lake
    // does for a project (and records its working directory), so discovery's real code runs and
    // the real Lean server then starts from what it resolved.
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("proj");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(project.join("lakefile.toml"), "name = \"p\"\n").unwrap();
    let lake = bin.join("lake");
    let lean = lean();
    let sysroot = lean.parent().unwrap().parent().unwrap();
    let lib = sysroot.join("lib/lean");
    std::fs::write(
        &lake,
        format!(
            "#!/bin/sh\npwd > \"{}/lake-cwd\"\n[ \"$1\" = env ] || exit 3\n[ \"$2\" = printenv ] || exit 4\n\
             case \"$3\" in LEAN_PATH) echo \"{}\";; LEAN_SYSROOT) echo \"{}\";; *) exit 1;; esac\n",
            dir.path().display(),
            lib.display(),
            sysroot.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&lake).status().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new(subgoal_bin())
        .args(["doctor", "--json", "--imports", "SubgoalFixture", "--lean-project", project.to_str().unwrap()])
        .env("PATH", path)
        .env_remove("SUBGOAL_LEAN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["lean"]["kind"], "lake", "{r}");
    assert_eq!(r["lean"]["lean_path"], lib.to_str().unwrap(), "{r}");
    assert!(r["version"].as_str().unwrap().contains("4.35.0"), "{r}");
    assert_eq!(r["imports"][0]["ok"], true, "{r}");
    let cwd = std::fs::read_to_string(dir.path().join("lake-cwd")).unwrap();
    assert_eq!(std::path::Path::new(cwd.trim()).canonicalize().unwrap(), project.canonicalize().unwrap());
}

#[test]
fn generate_prints_n_completions_as_json() {
    let out = Command::new(subgoal_bin())
        .args(["generate", "--prompt", "Two plus two is", "--n", "2", "--seed", "1", "--max-tokens", "5", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cs = doc["results"][0]["completions"].as_array().unwrap();
    assert_eq!(cs.len(), 2);
    assert!(cs.iter().all(|c| c["completion_tokens"].as_u64().unwrap() <= 5));
    assert!(doc["model"].as_str().unwrap().starts_with("embedded:"));
}

#[test]
fn generate_with_a_missing_model_names_it() {
    let out = Command::new(subgoal_bin())
        .args(["generate", "--prompt", "x", "--model", "/nonexistent/m.gguf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/m.gguf"));
}

#[test]
fn prove_writes_the_proof_the_graph_and_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (out, out_dir) = common::script::prove_two_level(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("two_level: proved via Decomposition"), "{stdout}");
    let proof = std::fs::read_to_string(out_dir.join("proof.lean")).unwrap();
    assert!(proof.starts_with(HEADER) && proof.contains("have h1 : And p q :="), "{proof}");
    let dag: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("dag.json")).unwrap()).unwrap();
    assert_schema_valid("dag.schema.json", &dag);
    assert_eq!(dag["nodes"].as_array().unwrap().len(), 7, "theorem, 2 sketches, 4 subgoals");
    assert!(std::fs::read_to_string(out_dir.join("dag.dot")).unwrap().starts_with("digraph subgoals {"));
    let result: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("result.json")).unwrap()).unwrap();
    assert_schema_valid("prove-result.schema.json", &result);
    assert_eq!(result["solved"], true);
    let attempts = records(&std::fs::read(out_dir.join("attempts.jsonl")).unwrap());
    for a in &attempts {
        assert_schema_valid("attempt.schema.json", a);
    }
    assert!(attempts.iter().any(|a| a["role"] == "recompose" && a["verdict"] == "proved"));
    let prover_attempts = |node: &str| attempts.iter().filter(|a| a["role"] == "prover" && a["node"] == node).count();
    // Both samples fail for the theorem and its first subgoal; elsewhere a success may stop the rest.
    assert_eq!((prover_attempts("two_level"), prover_attempts("two_level_h1")), (2, 2));
    for node in ["two_level_h2", "two_level_h1_a", "two_level_h1_b"] {
        assert!((1..=2).contains(&prover_attempts(node)), "{node}");
    }
}

#[test]
fn prove_names_the_file_without_a_theorem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.lean");
    std::fs::write(&file, "prelude\nimport SubgoalFixture\n-- nothing here\n").unwrap();
    let lean = lean();
    let out = run_subgoal(&[
        "prove",
        file.to_str().unwrap(),
        "--prover",
        "replay:/nonexistent",
        "--lean",
        lean.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty.lean") && err.contains("no theorem"), "{err}");
}

#[test]
fn a_closers_file_that_cannot_be_read_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.lean");
    std::fs::write(&file, format!("{HEADER}\ntheorem t (p : Prop) (hp : p) : p := by\n  sorry\n")).unwrap();
    let bad = dir.path().join("closers.txt");
    std::fs::write(&bad, "assumption\nnative_decide\n").unwrap();
    let lean = lean();
    for (path, words) in [
        ("/nonexistent/closers.txt", vec!["/nonexistent/closers.txt"]),
        (bad.to_str().unwrap(), vec!["closers.txt", "native_decide"]),
    ] {
        let out = run_subgoal(&["prove", file.to_str().unwrap(), "--closers", path, "--lean", lean.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(words.iter().all(|w| err.contains(w)), "{err}");
    }
}
