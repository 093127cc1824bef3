//! Verification: candidate proofs in, trusted verdicts out.
//!
//! `gates` refuses candidates by their tokens, `candidate` builds the Lean document from trusted
//! parts, `pool` runs it through warm Lean servers, `verdict` judges what Lean said, and
//! `recheck` confirms each `proved` in a fresh process. `Verifier` ties them together and is the
//! API the rest of subgoal uses.

pub mod candidate;
pub mod gates;
pub mod pool;
pub mod recheck;
pub mod verdict;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::Instrument;

pub use candidate::{BuildError, Document, InputError, Region, VerifyInput};
pub use gates::{Gate, GateConfig};
pub use pool::{GoalKind, PoolConfig, PoolStats, WorkerPool};
pub use verdict::{Message, RecheckResult, Verdict, VerifyRecord, ALLOWED_AXIOMS};

use crate::lean::discovery::DiscoveryError;

/// Policy beyond the pool: which gates apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    pub gates: GateConfig,
    /// Re-check every `proved` in a fresh `lean` process before reporting it (default on; off
    /// only for benchmarking the pool).
    pub recheck: bool,
    /// Wall-clock limit of one re-check (default: the pool's per-candidate timeout).
    pub recheck_timeout: Option<std::time::Duration>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { gates: GateConfig::default(), recheck: true, recheck_timeout: None }
    }
}

/// Re-check counters over a verifier's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecheckStats {
    pub rechecks: u64,
    /// Server `proved` that the fresh process did not confirm: a bug or an attack.
    pub disagreements: u64,
}

pub struct Verifier {
    pool: WorkerPool,
    lean_version: String,
    options: VerifyOptions,
    server: crate::lean::session::ServerConfig,
    /// Wall-clock limit of one re-check.
    timeout: std::time::Duration,
    /// Bounds concurrent re-check processes to the pool's size.
    recheck_slots: tokio::sync::Semaphore,
    rechecks: AtomicU64,
    disagreements: AtomicU64,
}

impl Verifier {
    /// Checks that Lean runs (`lean --version`) and starts the pool, with every gate on.
    pub fn start(cfg: PoolConfig) -> Result<Verifier, DiscoveryError> {
        Self::start_with(cfg, VerifyOptions::default())
    }

    pub fn start_with(cfg: PoolConfig, options: VerifyOptions) -> Result<Verifier, DiscoveryError> {
        let lean_version = cfg.server.install.version()?;
        Ok(Verifier {
            server: cfg.server.clone(),
            timeout: options.recheck_timeout.unwrap_or(cfg.timeout),
            recheck_slots: tokio::sync::Semaphore::new(cfg.workers.max(1)),
            pool: WorkerPool::start(cfg),
            lean_version,
            options,
            rechecks: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
        })
    }

    pub fn lean_version(&self) -> &str {
        &self.lean_version
    }

    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub fn recheck_stats(&self) -> RecheckStats {
        RecheckStats {
            rechecks: self.rechecks.load(Ordering::Relaxed),
            disagreements: self.disagreements.load(Ordering::Relaxed),
        }
    }

    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Verifies one candidate. Never fails: every problem becomes a verdict.
    pub async fn verify(&self, input: &VerifyInput) -> VerifyRecord {
        self.verify_document(input).await.0
    }

    /// `verify`, with the document Lean checked when one was built (`Document::checked_source`
    /// is the file a `proved` verdict is about).
    pub async fn verify_document(&self, input: &VerifyInput) -> (VerifyRecord, Option<Document>) {
        let span = tracing::info_span!("candidate", name = %input.name);
        async {
            let started = Instant::now();
            let gates_cfg = self.options.gates;
            let doc = match Document::build(input, &gates_cfg) {
                Ok(d) => d,
                Err(BuildError::Invalid(reason)) => {
                    return (self.unchecked(&input.name, Verdict::InvalidInput, reason), None)
                }
                Err(BuildError::Gate(gate, reason)) => {
                    let mut r = self.unchecked(&input.name, Verdict::Rejected, reason);
                    r.rejected_by = Some(gate);
                    r.gates = vec![gate];
                    tracing::info!(verdict = "rejected", gate = gate.as_str(), "refused before Lean");
                    return (r, None);
                }
            };
            let outcome = self.pool.check(&doc.header_key, &doc.text[..doc.header_end], &doc.text).await;
            let lean_ms = outcome.as_ref().map_or(0, |c| c.elapsed.as_millis() as u64);
            let j = verdict::judge(&doc, outcome.map(|c| verdict::from_lsp(&doc, &c)), &gates_cfg);
            let mut record = VerifyRecord {
                name: input.name.clone(),
                verdict: j.verdict,
                reason: j.reason,
                rejected_by: j.rejected_by,
                gates: doc.gates.clone(),
                messages: j.messages,
                axioms: j.axioms,
                recheck: None,
                elapsed_ms: 0,
                lean_ms,
                lean_version: self.lean_version.clone(),
            };
            if record.verdict == Verdict::Proved && self.options.recheck {
                self.recheck(&doc, &mut record).await;
            }
            record.elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::info!(verdict = record.verdict.as_str(), "checked");
            (record, Some(doc))
        }
        .instrument(span)
        .await
    }

    /// Confirms a server `proved` in a fresh process; on disagreement the fresh verdict wins.
    async fn recheck(&self, doc: &Document, record: &mut VerifyRecord) {
        let _slot = self.recheck_slots.acquire().await;
        let started = Instant::now();
        let outcome = recheck::run(&self.server, self.timeout, doc).instrument(tracing::info_span!("recheck")).await;
        let j = verdict::judge(doc, outcome, &self.options.gates);
        self.rechecks.fetch_add(1, Ordering::Relaxed);
        let agreed = j.verdict == Verdict::Proved;
        record.gates.push(Gate::Recheck);
        record.recheck = Some(RecheckResult {
            verdict: j.verdict,
            reason: j.reason.clone(),
            agreed,
            lean_ms: started.elapsed().as_millis() as u64,
        });
        if !agreed {
            self.disagreements.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(recheck = j.verdict.as_str(), reason = %j.reason, "fresh re-check disagrees with the server");
            record.verdict = j.verdict;
            record.reason = format!(
                "recheck: the server said proved, a fresh lean process said {}: {}",
                j.verdict.as_str(),
                j.reason
            );
            record.rejected_by = Some(Gate::Recheck);
            record.messages = j.messages;
            record.axioms = j.axioms;
        }
    }

    /// Checks `text` (a whole file whose imports are those of `header`) and reads the goal at
    /// each position: Lean's printed goal, for the planner to restate as lemmas. No gates: this
    /// answers questions, it proves nothing. Nothing here is trusted.
    pub async fn goals(
        &self,
        header: &str,
        text: &str,
        positions: Vec<(lsp_types::Position, GoalKind)>,
    ) -> Result<Vec<Option<String>>, crate::lean::session::CheckFailure> {
        // Keyed on the imports only, as `verify` keys, so the worker keeps its imported environment.
        let imports = &header[..crate::lean::source::header_end(header)];
        let key = crate::lean::source::normalize_header(imports);
        let (_, goals) = self.pool.check_with_goals(&key, imports, text, positions).await?;
        Ok(goals)
    }

    /// Checks `text` (a whole file whose imports are those of `header`) and returns Lean's
    /// messages, located in `text`. No gates and no verdict: this screens (which closer closes
    /// which statement), it proves nothing.
    pub async fn messages(
        &self,
        header: &str,
        text: &str,
    ) -> Result<Vec<verdict::RawMessage>, crate::lean::session::CheckFailure> {
        let imports = &header[..crate::lean::source::header_end(header)];
        let key = crate::lean::source::normalize_header(imports);
        let checked = self.pool.check(&key, imports, text).await?;
        Ok(verdict::messages_of(&crate::text::LineIndex::new(text), &checked))
    }

    /// The record for an input that could not be checked at all.
    pub fn invalid(&self, name: &str, reason: impl Into<String>) -> VerifyRecord {
        self.unchecked(name, Verdict::InvalidInput, reason)
    }

    /// A verdict reached before Lean ran.
    fn unchecked(&self, name: &str, verdict: Verdict, reason: impl Into<String>) -> VerifyRecord {
        VerifyRecord {
            name: name.to_string(),
            verdict,
            reason: reason.into(),
            rejected_by: None,
            gates: vec![],
            messages: vec![],
            axioms: vec![],
            recheck: None,
            elapsed_ms: 0,
            lean_ms: 0,
            lean_version: self.lean_version.clone(),
        }
    }

    pub async fn shutdown(self) {
        self.pool.shutdown().await;
    }
}

/// Parses one JSONL input line (1-based `line` for messages).
pub fn parse_input_line(line: usize, text: &str) -> Result<VerifyInput, InputError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| InputError::Json { line, detail: e.to_string() })?;
    let obj = value.as_object().ok_or_else(|| InputError::Field { line, detail: "expected a JSON object".into() })?;
    for key in ["name", "header", "formal_statement", "proof", "code"] {
        if let Some(v) = obj.get(key) {
            if !v.is_string() && !v.is_null() {
                return Err(InputError::Field { line, detail: format!("field \"{key}\" must be a string") });
            }
        }
    }
    let input: VerifyInput =
        serde_json::from_value(value.clone()).map_err(|e| InputError::Field { line, detail: e.to_string() })?;
    if input.name.trim().is_empty() {
        return Err(InputError::Field { line, detail: "field \"name\" is empty".into() });
    }
    Ok(input)
}

/// The name to report for a line that could not be parsed: its `name` if readable.
pub fn name_for_bad_line(line: usize, text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .unwrap_or_else(|| format!("line {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_line_names_its_line_number() {
        let e = parse_input_line(7, "{not json").unwrap_err();
        assert!(e.to_string().starts_with("line 7:"), "{e}");
        let e = parse_input_line(3, r#"{"name": 5}"#).unwrap_err();
        assert!(e.to_string().contains("\"name\" must be a string"), "{e}");
    }
}
