//! Starting a sandboxed Lean process: the one place that builds Lean's command line (heartbeats,
//! `--memory`), its environment (the install's `LEAN_PATH`, `LEAN_NUM_THREADS`) and puts it in a
//! fresh `Sandbox` with the configured rlimits. The server (`session`) and the fresh re-check
//! (`verify::recheck`) both start Lean here, so they run the same Lean the same way.

use std::process::Stdio;

use super::session::ServerConfig;
use crate::process::ProcessLimits;
use crate::sandbox::{Sandbox, SandboxError};

/// A prepared Lean command and the sandbox it must run in (which must outlive the process).
pub struct Launch {
    pub cmd: tokio::process::Command,
    pub sandbox: Sandbox,
    /// The command line, for error messages.
    pub shown: String,
}

/// `lean` with `mode_args` first (`--server`, or `--json FILE`), then the configured limits,
/// in a new sandbox with piped stdio. `limits` overrides the configured rlimits (a one-shot
/// process also gets a CPU-time limit).
pub fn lean_command(
    cfg: &ServerConfig,
    mode_args: &[String],
    limits: Option<&ProcessLimits>,
) -> Result<Launch, SandboxError> {
    let mut args = mode_args.to_vec();
    if let Some(h) = cfg.max_heartbeats {
        args.push(format!("-DmaxHeartbeats={h}"));
    }
    if let Some(m) = cfg.memory_mb {
        args.push(format!("--memory={m}"));
    }
    let prog = cfg.install.lean();
    let sandbox = Sandbox::prepare(&cfg.sandbox_policy(), cfg.sandbox_support())?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    sandbox.apply(&mut cmd, limits.unwrap_or(&cfg.limits));
    cmd.envs(cfg.install.env());
    if let Some(t) = cfg.threads {
        cmd.env("LEAN_NUM_THREADS", t.to_string());
    }
    Ok(Launch { cmd, sandbox, shown: format!("{} {}", prog.display(), args.join(" ")) })
}
