//! The fresh re-check: the exact document a server judged `proved`, checked again by a new
//! `lean --json` process (no server, no incremental state, no shared environment), in its own
//! sandbox, under the same heartbeat budget. What it says is judged by the same `judge`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::candidate::Document;
use super::verdict::{LeanOutput, LeanTokens, RawMessage, Severity};
use crate::lean::session::{CheckFailure, ServerConfig};
use crate::process::{kill_tree, watch_tree};
use crate::sandbox::Sandbox;
use crate::text::LineIndex;

/// File name of the document inside the scratch directory.
const FILE: &str = "Candidate.lean";

/// Runs `lean --json` on `doc.text` and returns its messages as document offsets.
pub async fn run(cfg: &ServerConfig, timeout: Duration, doc: &Document) -> Result<LeanOutput, CheckFailure> {
    let crashed = |what: String| CheckFailure::Crashed(format!("re-check: {what}"));
    let sandbox = Sandbox::prepare(&cfg.sandbox_policy(), cfg.sandbox_support()).map_err(|e| crashed(e.to_string()))?;
    std::fs::write(sandbox.path().join(FILE), &doc.text).map_err(|e| crashed(format!("writing the document: {e}")))?;
    let mut args = vec!["--json".to_string()];
    if let Some(h) = cfg.max_heartbeats {
        args.push(format!("-DmaxHeartbeats={h}"));
    }
    if let Some(m) = cfg.memory_mb {
        args.push(format!("--memory={m}"));
    }
    args.push(FILE.to_string());
    let mut limits = cfg.limits.clone();
    // A one-shot process may also be bounded by CPU time (a server accumulates it).
    // Lean elaborates on several threads: CPU time can outrun the wall clock by the core count.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    limits.cpu_seconds = Some((timeout.as_secs() + 2) * cores.max(cfg.threads.unwrap_or(1) as u64) + 5);
    let mut cmd = tokio::process::Command::new(cfg.install.lean());
    cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    sandbox.apply(&mut cmd, &limits);
    cmd.envs(cfg.install.env());
    if let Some(t) = cfg.threads {
        cmd.env("LEAN_NUM_THREADS", t.to_string());
    }
    let mut child = cmd.spawn().map_err(|e| crashed(format!("could not start lean: {e}")))?;
    let pid = child.id().unwrap_or(0);
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let io = async {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o).await;
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut e).await;
        }
        let status = child.wait().await;
        (o, e, status)
    };
    let watch = watch_tree(pid, cfg.kill_rss_mb, None);
    let (stdout, stderr, status) = tokio::select! {
        r = tokio::time::timeout(timeout, io) => match r {
            Ok(r) => r,
            Err(_) => {
                kill_tree(pid);
                return Err(CheckFailure::Timeout(timeout));
            }
        },
        alarm = watch => {
            kill_tree(pid);
            return Err(crashed(alarm.to_string()));
        }
    };
    let stderr = String::from_utf8_lossy(&stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    let status = status.map_err(|e| crashed(e.to_string()))?;
    // Lean exits 1 when it reported errors; anything else that is not success is a crash.
    if !matches!(status.code(), Some(0 | 1)) {
        return Err(crashed(format!("lean exited with {status}: {tail}")));
    }
    let messages = parse_json_messages(&doc.text, &String::from_utf8_lossy(&stdout));
    if status.code() == Some(1) && messages.iter().all(|m| m.severity != Severity::Error) {
        return Err(crashed(format!("lean failed without reporting an error: {tail}")));
    }
    Ok(LeanOutput { messages, tokens: LeanTokens::NotChecked })
}

/// Parses `lean --json` output (one message object per line; 1-based lines, columns in
/// characters) into document offsets. Lines that are not message objects are skipped.
pub fn parse_json_messages(text: &str, stdout: &str) -> Vec<RawMessage> {
    let index = LineIndex::new(text);
    let at = |p: &serde_json::Value| {
        let line = p.get("line")?.as_u64()? as usize;
        let col = p.get("column")?.as_u64()? as usize;
        Some(index.offset_of_line_char(line.saturating_sub(1), col))
    };
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let severity = match v.get("severity")?.as_str()? {
                "error" => Severity::Error,
                "warning" => Severity::Warning,
                "information" => Severity::Info,
                _ => Severity::Hint,
            };
            let start = at(v.get("pos")?)?;
            let end = v.get("endPos").and_then(at).unwrap_or(start);
            Some(RawMessage { severity, start, end, text: v.get("data")?.as_str()?.to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_positions_are_character_columns_on_one_based_lines() {
        let text = "a\n𝔽 bad\n";
        let out = r#"{"severity":"error","pos":{"line":2,"column":2},"endPos":{"line":2,"column":5},"data":"oops"}
not json
{"severity":"information","pos":{"line":1,"column":0},"endPos":null,"data":"info"}"#;
        let m = parse_json_messages(text, out);
        assert_eq!(m.len(), 2);
        assert_eq!(&text[m[0].start..m[0].end], "bad");
        assert_eq!(m[0].severity, Severity::Error);
        assert_eq!((m[1].start, m[1].end), (0, 0));
    }
}
