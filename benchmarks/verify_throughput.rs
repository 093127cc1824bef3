//! Warm pool vs a fresh `lean` process per candidate, on the same candidates in one run.
//!
//! Run by hand: `cargo bench --bench verify_throughput [-- --candidates N]`. Prints JSON.
//!
//! The header is heavy in the way real headers are: a generated module to import
//! (`SubgoalBenchHeavy`, thousands of inductive types) and preamble commands after the imports
//! that take ≥ 0.5 s to elaborate. A warm worker reuses both (Lean keeps the imported
//! environment and the snapshots of unchanged commands); a fresh process pays for both every time.

#[path = "common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use subgoal::lean::discovery::{test_toolchain_lean, LeanSource};
use subgoal::sandbox::SandboxMode;
use subgoal::verify::{Document, GateConfig, Verdict, Verifier, VerifyInput, VerifyOptions};

const HEAVY_MODULE: &str = "SubgoalBenchHeavy";
const HEAVY_TYPES: usize = 1500;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--candidates")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let lean = test_toolchain_lean();
    assert!(lean.exists(), "run scripts/install-test-toolchain.sh first");
    let libdir = lean.parent().unwrap().join("../lib/lean");
    let module_build_s = ensure_heavy_module(&lean, &libdir);

    let header = format!(
        "prelude\nimport SubgoalFixture\nimport {HEAVY_MODULE}\n\n\
         -- Preamble: elaborated once per warm worker, every time by a fresh process.\n\
         theorem bench_preamble : Eq (Nat.beq (Slow.spin 7 0) 0) false := rfl\n\n"
    );
    let inputs: Vec<VerifyInput> = (0..n)
        .map(|i| VerifyInput {
            name: format!("c{i}"),
            header: header.clone(),
            formal_statement: format!("theorem c{i} (p q : Prop) (h : And p q) : And q p :="),
            proof: Some(format!("\n  have h{i} : q := h.right\n  And.intro h{i} h.left")),
            code: None,
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let cfg = common::test_toolchain_pool(&lean, 1);

    // (a) Warm pool, one worker, candidates one after another; no fresh re-check (what
    // `--no-recheck` is for: measuring the pool itself).
    let (warm_total, first_ms, warm_ms, overhead_ms) = rt.block_on(async {
        let v = Verifier::start_with(cfg.clone(), VerifyOptions { recheck: false, ..Default::default() }).unwrap();
        // The first candidate pays for the import and preamble; it is reported apart.
        let t = Instant::now();
        let r = v.verify(&inputs[0]).await;
        assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
        let first_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut warm = Vec::new();
        let mut overhead = Vec::new();
        let t = Instant::now();
        for input in &inputs[1..] {
            let s = Instant::now();
            let r = v.verify(input).await;
            let wall = s.elapsed().as_secs_f64() * 1e3;
            assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
            warm.push(wall);
            overhead.push(wall - r.lean_ms as f64);
        }
        let total = t.elapsed().as_secs_f64();
        assert_eq!(v.stats().server_starts, 1, "the header must be reused, not re-imported");
        v.shutdown().await;
        (total, first_ms, warm, overhead)
    });

    // (d) As (a) with the sandbox off (scratch directory, environment and rlimits only): what
    // Landlock and the network namespace cost a warm check.
    let unsandboxed_total = rt.block_on(async {
        let mut off = cfg.clone();
        off.server.sandbox.mode = SandboxMode::Off;
        let v = Verifier::start_with(off, VerifyOptions { recheck: false, ..Default::default() }).unwrap();
        assert_eq!(v.verify(&inputs[0]).await.verdict, Verdict::Proved);
        let t = Instant::now();
        for input in &inputs[1..] {
            assert_eq!(v.verify(input).await.verdict, Verdict::Proved);
        }
        let total = t.elapsed().as_secs_f64();
        v.shutdown().await;
        total
    });

    // (c) The default: warm pool plus a fresh re-check of every `proved` (all of them here).
    let rechecked_total = rt.block_on(async {
        let v = Verifier::start(cfg).unwrap();
        assert_eq!(v.verify(&inputs[0]).await.verdict, Verdict::Proved);
        let t = Instant::now();
        for input in &inputs[1..] {
            let r = v.verify(input).await;
            assert!(r.recheck.as_ref().is_some_and(|c| c.agreed), "{r:?}");
        }
        let total = t.elapsed().as_secs_f64();
        v.shutdown().await;
        total
    });

    // (b) A fresh `lean` process per candidate, same documents.
    let scratch = tempfile::tempdir().unwrap();
    let mut cold = Vec::new();
    let t = Instant::now();
    for input in &inputs[1..] {
        let doc = Document::build(input, &GateConfig::default()).unwrap();
        let file = scratch.path().join(format!("{}.lean", input.name));
        std::fs::write(&file, &doc.text).unwrap();
        let s = Instant::now();
        let out = std::process::Command::new(&lean).arg("--json").arg(&file).output().unwrap();
        cold.push(s.elapsed().as_secs_f64() * 1e3);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let cold_total = t.elapsed().as_secs_f64();

    // Import alone (fresh process, header only, no preamble) for context.
    let import_only = scratch.path().join("import_only.lean");
    std::fs::write(&import_only, format!("prelude\nimport SubgoalFixture\nimport {HEAVY_MODULE}\n")).unwrap();
    let s = Instant::now();
    std::process::Command::new(&lean).arg(&import_only).output().unwrap();
    let import_ms = s.elapsed().as_secs_f64() * 1e3;

    let m = (n - 1) as f64;
    let warm_rate = m / warm_total;
    let cold_rate = m / cold_total;
    let report = json!({
        "benchmark": "verify_throughput",
        "lean": subgoal::lean::discovery::LeanInstall::at(lean.clone(), LeanSource::TestToolchain).version().unwrap_or_default(),
        "candidates": n - 1,
        "header": {
            "heavy_module_types": HEAVY_TYPES,
            "heavy_module_build_s": module_build_s,
            "fresh_process_import_only_ms": round(import_ms),
            "first_warm_candidate_ms": round(first_ms),
        },
        "warm_pool": {"candidates_per_s": round(warm_rate), "mean_ms": round(mean(&warm_ms)), "p50_ms": round(pct(&warm_ms, 0.5)), "max_ms": round(pct(&warm_ms, 1.0))},
        "cold_process": {"candidates_per_s": round(cold_rate), "mean_ms": round(mean(&cold)), "p50_ms": round(pct(&cold, 0.5)), "max_ms": round(pct(&cold, 1.0))},
        "warm_over_cold": round(warm_rate / cold_rate),
        "warm_without_sandbox": {"candidates_per_s": round(m / unsandboxed_total), "sandbox_cost_ratio": round(warm_total / unsandboxed_total)},
        "warm_with_recheck": {"candidates_per_s": round(m / rechecked_total), "recheck_cost_ratio": round(rechecked_total / warm_total)},
        "overhead_beyond_lean_ms": {"mean": round(mean(&overhead_ms)), "p50": round(pct(&overhead_ms, 0.5)), "max": round(pct(&overhead_ms, 1.0))},
        "goals": {"warm_over_cold_at_least": 20, "overhead_ms_at_most": 5},
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

/// Generates and compiles the heavy module once (it is cached next to the fixture library).
fn ensure_heavy_module(lean: &Path, libdir: &Path) -> f64 {
    let olean = libdir.join(format!("{HEAVY_MODULE}.olean"));
    if olean.exists() {
        return 0.0;
    }
    let dir = tempfile::tempdir().unwrap();
    let src: PathBuf = dir.path().join(format!("{HEAVY_MODULE}.lean"));
    let mut text = String::from("prelude\nimport SubgoalFixture\nnamespace BenchHeavy\n");
    for i in 0..HEAVY_TYPES {
        text.push_str(&format!("inductive T{i} : Type where | a | b (x : T{i}) | c (x y : T{i})\n"));
        text.push_str(&format!("theorem t{i} (p : Prop) (h : p) : And p p := And.intro h h\n"));
    }
    text.push_str("end BenchHeavy\n");
    std::fs::write(&src, text).unwrap();
    eprintln!("verify_throughput: compiling {HEAVY_MODULE} ({HEAVY_TYPES} inductive types), once");
    let t = Instant::now();
    let status = std::process::Command::new(lean)
        .current_dir(dir.path())
        .arg("-o")
        .arg(&olean)
        .arg(format!("{HEAVY_MODULE}.lean"))
        .status()
        .unwrap();
    assert!(status.success(), "compiling the heavy module failed");
    t.elapsed().as_secs_f64()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s.get(((s.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
