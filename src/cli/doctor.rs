//! `subgoal doctor`: which Lean was found (an elan proxy resolved to its toolchain), its version
//! and library path, one real check through the same sandbox and re-check every verdict goes
//! through, whether the libraries subgoal needs (Mathlib, or the test fixture) import, and the
//! memory a worker holds after importing them: resident (with the mapped `.olean` files) and
//! owned (what the memory limits count).

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use subgoal::lean::discovery::LeanInstall;
use subgoal::process::{tree_memory, TreeMemory};
use subgoal::verify::{Verdict, Verifier, VerifyInput};

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
    /// A trivial theorem through the verifier: a sandboxed server, then the sandboxed re-check.
    sandboxed_check: Option<Check>,
    imports: Vec<ImportCheck>,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    seconds: f64,
    detail: String,
}

#[derive(Serialize)]
struct ImportCheck {
    module: String,
    ok: bool,
    seconds: f64,
    detail: String,
    /// The worker's process tree after the import.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<TreeMemory>,
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut report = Report {
        lean: None,
        error: None,
        version: None,
        search_path: vec![],
        sandbox: None,
        sandboxed_check: None,
        imports: vec![],
    };
    match args.lean.install() {
        Err(e) => report.error = Some(format!("{e:#}")),
        Ok(install) => {
            report.lean = Some(install.clone());
            match install.version() {
                Err(e) => report.error = Some(e.to_string()),
                Ok(v) => {
                    report.version = Some(v);
                    let search_path = install.search_path();
                    // A Lean without `Init` (the test toolchain) only imports `prelude` modules.
                    let prelude = !search_path.iter().any(|d| d.join("Init.olean").is_file());
                    report.search_path = search_path.iter().map(|p| p.display().to_string()).collect();
                    report.sandbox = Some(subgoal::sandbox::support(install.lean()));
                    let cfg = args.lean.pool_config(install, 1, 600.0, 1000, 0);
                    match Verifier::start(cfg) {
                        Err(e) => report.error = Some(e.to_string()),
                        Ok(verifier) => {
                            let check = sandboxed_check(&verifier).await;
                            if !check.ok {
                                report.error = Some(format!(
                                    "Lean does not check a proof inside the sandbox: {} (see --sandbox)",
                                    check.detail
                                ));
                            }
                            report.sandboxed_check = Some(check);
                            report.imports = check_imports(&verifier, &args.imports, prelude).await;
                            verifier.shutdown().await;
                        }
                    }
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
        if let Some(c) = &report.sandboxed_check {
            println!(
                "check:       {} ({:.1} s, a proof through the sandboxed server and re-check){}",
                if c.ok { "ok" } else { "FAILED" },
                c.seconds,
                if c.detail.is_empty() { String::new() } else { format!(": {}", c.detail) }
            );
        }
        let mib = |b: u64| b / (1024 * 1024);
        for c in &report.imports {
            let memory = c.memory.map_or(String::new(), |m| {
                format!(", worker {} MiB resident, {} MiB owned", mib(m.resident_bytes), mib(m.owned_bytes))
            });
            println!(
                "import {:<20} {} ({:.1} s{memory}){}",
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

/// A theorem that needs no library, checked the way every candidate is.
async fn sandboxed_check(verifier: &Verifier) -> Check {
    let input = VerifyInput {
        name: "sandboxed check".into(),
        header: String::new(),
        formal_statement: String::new(),
        proof: None,
        code: Some("prelude\ntheorem subgoal_doctor_check (p : Prop) (h : p) : p := h\n".into()),
    };
    let started = Instant::now();
    let rec = verifier.verify(&input).await;
    let ok = rec.verdict == Verdict::Proved;
    let detail = if ok { String::new() } else { format!("{}: {}", rec.verdict.as_str(), rec.reason) };
    Check { ok, seconds: started.elapsed().as_secs_f64(), detail }
}

async fn check_imports(verifier: &Verifier, modules: &[String], prelude: bool) -> Vec<ImportCheck> {
    let mut out = Vec::new();
    let prelude = if prelude { "prelude\n" } else { "" };
    for m in modules {
        let input = VerifyInput {
            name: format!("import {m}"),
            header: String::new(),
            formal_statement: String::new(),
            proof: None,
            code: Some(format!("{prelude}import {m}\ntheorem subgoal_doctor_probe (p : Prop) (h : p) : p := h\n")),
        };
        let started = Instant::now();
        let rec = verifier.verify(&input).await;
        let ok = rec.verdict == Verdict::Proved;
        let detail =
            if ok { String::new() } else { rec.messages.first().map_or(rec.reason.clone(), |m| m.text.clone()) };
        // The one worker still has this import open.
        let memory = verifier.pool().server_pids().first().map(|&pid| tree_memory(pid)).filter(|_| ok);
        out.push(ImportCheck { module: m.clone(), ok, seconds: started.elapsed().as_secs_f64(), detail, memory });
    }
    out
}
