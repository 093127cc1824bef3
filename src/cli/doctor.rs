//! `subgoal doctor`: which Lean was found, its version and library path, and whether the
//! libraries subgoal needs (Mathlib, or the test fixture) import.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use subgoal::lean::discovery::LeanInstall;
use subgoal::verify::{PoolConfig, Verdict, Verifier, VerifyInput};

use super::LeanArgs;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
    /// Modules to try importing.
    #[arg(long, value_delimiter = ',', default_value = "Mathlib,SubgoalFixture")]
    pub imports: Vec<String>,
    #[command(flatten)]
    pub lean: LeanArgs,
}

#[derive(Serialize)]
struct Report {
    lean: Option<LeanInstall>,
    error: Option<String>,
    version: Option<String>,
    search_path: Vec<String>,
    /// What the kernel lets the sandbox do on this machine.
    sandbox: Option<subgoal::sandbox::Support>,
    imports: Vec<ImportCheck>,
}

#[derive(Serialize)]
struct ImportCheck {
    module: String,
    ok: bool,
    seconds: f64,
    detail: String,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report =
        Report { lean: None, error: None, version: None, search_path: vec![], sandbox: None, imports: vec![] };
    match args.lean.install() {
        Err(e) => report.error = Some(format!("{e:#}")),
        Ok(install) => {
            report.lean = Some(install.clone());
            match install.version() {
                Err(e) => report.error = Some(e.to_string()),
                Ok(v) => {
                    report.version = Some(v);
                    report.search_path = install.search_path().iter().map(|p| p.display().to_string()).collect();
                    report.sandbox = Some(subgoal::sandbox::support(install.lean()));
                    let cfg = args.lean.pool_config(install, 1, 600.0, 1000, 0);
                    report.imports = check_imports(cfg, &args.imports).await;
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        match &report.lean {
            Some(l) => println!("lean:        {}", serde_json::to_string(l)?),
            None => println!("lean:        not found"),
        }
        if let Some(v) = &report.version {
            println!("version:     {v}");
        }
        for (i, p) in report.search_path.iter().enumerate() {
            println!("{} {p}", if i == 0 { "search path:" } else { "            " });
        }
        if let Some(s) = &report.sandbox {
            let landlock = if s.landlock_abi > 0 {
                format!("Landlock ABI {}", s.landlock_abi)
            } else {
                "no Landlock (Lean can read and write wherever you can)".into()
            };
            println!(
                "sandbox:     {landlock}; network isolation: {}",
                serde_json::to_string(&s.net)?.trim_matches('"')
            );
        }
        for c in &report.imports {
            println!(
                "import {:<20} {} ({:.1} s){}",
                c.module,
                if c.ok { "ok" } else { "NO" },
                c.seconds,
                if c.detail.is_empty() { String::new() } else { format!(": {}", c.detail) }
            );
        }
        if let Some(e) = &report.error {
            println!("error:       {e}");
        }
    }
    Ok(if report.error.is_none() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

async fn check_imports(mut cfg: PoolConfig, modules: &[String]) -> Vec<ImportCheck> {
    cfg.timeout = Duration::from_secs(600);
    let Ok(verifier) = Verifier::start(cfg) else { return vec![] };
    let mut out = Vec::new();
    for m in modules {
        // A test-fixture module is a `prelude` world: it cannot be imported next to Init.
        let prelude = if m == "SubgoalFixture" { "prelude\n" } else { "" };
        let input = VerifyInput {
            name: format!("import {m}"),
            header: String::new(),
            formal_statement: String::new(),
            proof: None,
            code: Some(format!("{prelude}import {m}\ntheorem subgoal_doctor_probe : True := True.intro\n")),
        };
        let started = Instant::now();
        let rec = verifier.verify(&input).await;
        let ok = rec.verdict == Verdict::Proved;
        let detail =
            if ok { String::new() } else { rec.messages.first().map_or(rec.reason.clone(), |m| m.text.clone()) };
        out.push(ImportCheck { module: m.clone(), ok, seconds: started.elapsed().as_secs_f64(), detail });
    }
    verifier.shutdown().await;
    out
}
