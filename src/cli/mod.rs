//! Command-line edge: flag definitions and the commands. Errors become `anyhow` here, with
//! context naming the file or flag involved; the library below stays typed.

mod doctor;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use subgoal::lean::discovery::{LeanChoice, LeanInstall};
use subgoal::lean::session::ServerConfig;
use subgoal::process::ProcessLimits;
use subgoal::sandbox::{SandboxMode, SandboxPolicy};
use subgoal::verify::PoolConfig;

#[derive(Parser, Debug)]
#[command(
    name = "subgoal",
    version,
    about = "Lean 4 theorem proving after DeepSeek-Prover-V2: sketch, decompose, prove, verify"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check candidate proofs with Lean and print one verdict per candidate.
    Verify(verify::VerifyArgs),
    /// Show which Lean subgoal finds and what it can import.
    Doctor(doctor::DoctorArgs),
}

/// How to find and bound Lean; shared by every command that runs it.
#[derive(Args, Debug, Clone)]
pub struct LeanArgs {
    /// The `lean` executable to run.
    #[arg(long, value_name = "PATH")]
    pub lean: Option<PathBuf>,
    /// A Lake project: Lean runs as `lake env lean` in it (how Mathlib is found).
    #[arg(long, value_name = "DIR")]
    pub lean_project: Option<PathBuf>,
    /// Lean's maxHeartbeats for each command (0: unlimited).
    #[arg(long, default_value_t = 200_000)]
    pub max_heartbeats: u64,
    /// Lean's own memory cap per process, MiB (passed as --memory).
    #[arg(long, default_value_t = 8192)]
    pub memory_mb: u64,
    /// OS address-space limit per Lean process, MiB (0: none). Mathlib maps several GiB of .olean files.
    #[arg(long, default_value_t = 32768)]
    pub address_space_mb: u64,
    /// Stop a check when its Lean processes hold more resident memory than this, MiB
    /// (default: 80% of physical memory shared among the workers; 0: never).
    #[arg(long, value_name = "MIB")]
    pub kill_rss_mb: Option<u64>,
    /// Seconds allowed to load a new import header.
    #[arg(long, default_value_t = 600)]
    pub import_timeout: u64,
    /// Sandbox for Lean processes: `auto` uses what the kernel offers (Landlock, network
    /// namespace), `required` refuses to run without both, `off` keeps only the scratch
    /// directory, scrubbed environment and rlimits.
    #[arg(long, value_enum, default_value_t = SandboxArg::Auto)]
    pub sandbox: SandboxArg,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxArg {
    Auto,
    Required,
    Off,
}

impl From<SandboxArg> for SandboxMode {
    fn from(a: SandboxArg) -> Self {
        match a {
            SandboxArg::Auto => SandboxMode::Auto,
            SandboxArg::Required => SandboxMode::Required,
            SandboxArg::Off => SandboxMode::Off,
        }
    }
}

impl LeanArgs {
    pub fn install(&self) -> anyhow::Result<LeanInstall> {
        Ok(LeanInstall::discover(&LeanChoice { lean: self.lean.clone(), lean_project: self.lean_project.clone() })?)
    }

    pub fn server_config(&self, install: LeanInstall, threads: usize, workers: usize) -> ServerConfig {
        ServerConfig {
            install,
            max_heartbeats: Some(self.max_heartbeats),
            memory_mb: (self.memory_mb > 0).then_some(self.memory_mb),
            threads: Some(threads.max(1)),
            limits: ProcessLimits {
                address_space_mb: (self.address_space_mb > 0).then_some(self.address_space_mb),
                open_files: Some(4096),
                ..Default::default()
            },
            sandbox: SandboxPolicy { mode: self.sandbox.into(), ..Default::default() },
            kill_rss_mb: match self.kill_rss_mb {
                Some(0) => None,
                Some(mb) => Some(mb),
                None => physical_memory_mb().map(|m| (m * 4 / 5 / workers.max(1) as u64).max(1024)),
            },
            request_timeout: Duration::from_secs(120),
            import_timeout: Duration::from_secs(self.import_timeout),
        }
    }

    pub fn pool_config(
        &self,
        install: LeanInstall,
        workers: usize,
        timeout: f64,
        recycle_after: u64,
        max_rss_mb: u64,
    ) -> PoolConfig {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PoolConfig {
            server: self.server_config(install, cores / workers.max(1), workers),
            workers,
            timeout: Duration::from_secs_f64(timeout),
            recycle_after,
            max_rss_mb: (max_rss_mb > 0).then_some(max_rss_mb),
        }
    }
}

/// Total physical memory from `/proc/meminfo`, MiB.
fn physical_memory_mb() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Clap parser for a duration flag in seconds: finite and positive.
pub fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "subgoal=info",
        _ => "subgoal=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Verify(a) => verify::run(a).await,
        Command::Doctor(a) => doctor::run(a).await,
    }
}
