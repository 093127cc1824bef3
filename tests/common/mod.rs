//! Shared set-up for tests that run the real Lean test toolchain.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use subgoal::lean::discovery::{test_toolchain_lean, LeanInstall, LeanSource};
use subgoal::lean::session::ServerConfig;
use subgoal::process::ProcessLimits;
use subgoal::sandbox::{SandboxMode, SandboxPolicy};
use subgoal::verify::{PoolConfig, VerifyInput};

pub const HEADER: &str = "prelude\nimport SubgoalFixture\n";

/// The test toolchain's `lean`. Missing toolchain is a test failure, never a skip.
pub fn lean() -> PathBuf {
    let p = test_toolchain_lean();
    assert!(p.exists(), "test Lean not installed at {}: run scripts/install-test-toolchain.sh", p.display());
    p
}

pub fn server_config() -> ServerConfig {
    ServerConfig {
        install: LeanInstall::at(lean(), LeanSource::TestToolchain),
        max_heartbeats: Some(200_000),
        memory_mb: Some(4096),
        threads: Some(1),
        limits: ProcessLimits { address_space_mb: Some(16384), open_files: Some(1024), ..Default::default() },
        // Tests run with the sandbox the machine offers; CI machines offer Landlock and namespaces.
        sandbox: SandboxPolicy { mode: SandboxMode::Required, ..Default::default() },
        kill_rss_mb: Some(6144),
        request_timeout: Duration::from_secs(60),
        import_timeout: Duration::from_secs(120),
    }
}

pub fn pool_config(workers: usize, timeout_s: f64) -> PoolConfig {
    PoolConfig {
        server: server_config(),
        workers,
        timeout: Duration::from_secs_f64(timeout_s),
        recycle_after: 1000,
        max_rss_mb: None,
    }
}

/// A candidate proof of `statement` (a `theorem NAME … :=` over the fixture).
pub fn proof(name: &str, statement: &str, proof: &str) -> VerifyInput {
    VerifyInput {
        name: name.into(),
        header: HEADER.into(),
        formal_statement: statement.into(),
        proof: Some(proof.into()),
        code: None,
    }
}

/// The `subgoal` binary built for this test run.
pub fn subgoal_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_subgoal"))
}

/// Runs the binary with `args`, quiet logging and no `SUBGOAL_LEAN` from the caller's shell.
pub fn run_subgoal(args: &[&str]) -> std::process::Output {
    std::process::Command::new(subgoal_bin())
        .args(args)
        .env_remove("SUBGOAL_LEAN")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run subgoal")
}

pub mod script;

/// Fails unless `value` is valid against `schemas/<file>` (a JSON Schema, draft 2020-12).
pub fn assert_schema_valid(file: &str, value: &serde_json::Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(file);
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file} is not a valid schema: {e}"));
    let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{file}: {errors:#?}\nin {value:#}");
}
