//! The fresh re-check: the exact document a server judged `proved`, checked again by a new
//! `lean --json` process (no server, no incremental state, no shared environment), in its own
//! sandbox, under the same heartbeat budget. What it says is judged by the same `judge`.
//! Its wall clock adds the import budget to the candidate's, since it imports afresh.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::candidate::Document;
use super::verdict::{LeanOutput, LeanTokens, RawMessage, Severity};
use crate::lean::launch::{lean_command, Launch};
use crate::lean::session::{CheckFailure, ServerConfig};
use crate::process::{kill_tree, watch_tree};
use crate::text::LineIndex;

/// File name of the document inside the scratch directory.
const FILE: &str = "Candidate.lean";

/// Most of each output stream kept (the rest is read and dropped, so Lean never blocks on a full
/// pipe): Lean's JSON messages for one document are far smaller.
const OUTPUT_CAP: usize = 64 << 20;

/// Runs `lean --json` on `doc.text` and returns its messages as document offsets. The wall clock
/// is `import_timeout + timeout`: the import has its own budget, as in the pool, so a proof that
/// the pool checked within `timeout` is not failed here because this process imports afresh.
pub async fn run(cfg: &ServerConfig, timeout: Duration, doc: &Document) -> Result<LeanOutput, CheckFailure> {
    let crashed = |what: String| CheckFailure::Crashed(format!("re-check: {what}"));
    let wall = cfg.import_timeout + timeout;
    let mut limits = cfg.limits.clone();
    // A one-shot process may also be bounded by CPU time (a server accumulates it).
    // Lean elaborates on several threads: CPU time can outrun the wall clock by the core count.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    limits.cpu_seconds = Some((wall.as_secs() + 2) * cores.max(cfg.threads.unwrap_or(1) as u64) + 5);
    let args = ["--json".to_string(), FILE.to_string()];
    let Launch { mut cmd, sandbox, shown } =
        lean_command(cfg, &args, Some(&limits)).map_err(|e| crashed(e.to_string()))?;
    std::fs::write(sandbox.path().join(FILE), &doc.text).map_err(|e| crashed(format!("writing the document: {e}")))?;
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| crashed(format!("could not start `{shown}`: {e}")))?;
    let pid = child.id().unwrap_or(0);
    let (out, err) = (child.stdout.take(), child.stderr.take());
    // Both streams are drained at once: reading one to its end first deadlocks against a Lean
    // blocked writing the other into a full pipe.
    let io = async {
        let (o, e) = tokio::join!(read_capped(out), read_capped(err));
        (o, e, child.wait().await)
    };
    let watch = watch_tree(pid, cfg.kill_rss_mb, None);
    let (stdout, stderr, status) = tokio::select! {
        r = tokio::time::timeout(wall, io) => match r {
            Ok(r) => r,
            Err(_) => {
                kill_tree(pid);
                return Err(CheckFailure::Timeout(wall));
            }
        },
        alarm = watch => {
            kill_tree(pid);
            return Err(crashed(alarm.to_string()));
        }
    };
    drop(sandbox);
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

/// Everything a stream yields, up to `OUTPUT_CAP` bytes kept.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut s) = stream else { return kept };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
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
