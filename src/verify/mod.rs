//! Verification: candidate proofs in, trusted verdicts out.
//!
//! `candidate` builds the Lean document, `pool` runs it through warm Lean servers, `verdict`
//! judges what Lean said. `Verifier` ties them together and is the API the rest of subgoal uses.

pub mod candidate;
pub mod pool;
pub mod verdict;

use std::time::Instant;

use tracing::Instrument;

pub use candidate::{BuildError, Document, InputError, Region, VerifyInput};
pub use pool::{PoolConfig, PoolStats, WorkerPool};
pub use verdict::{Message, Verdict, VerifyRecord, ALLOWED_AXIOMS};

use crate::lean::discovery::DiscoveryError;

pub struct Verifier {
    pool: WorkerPool,
    lean_version: String,
}

impl Verifier {
    /// Checks that Lean runs (`lean --version`) and starts the pool.
    pub fn start(cfg: PoolConfig) -> Result<Verifier, DiscoveryError> {
        let lean_version = cfg.server.install.version()?;
        Ok(Verifier { pool: WorkerPool::start(cfg), lean_version })
    }

    pub fn lean_version(&self) -> &str {
        &self.lean_version
    }

    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Verifies one candidate. Never fails: every problem becomes a verdict.
    pub async fn verify(&self, input: &VerifyInput) -> VerifyRecord {
        let span = tracing::info_span!("candidate", name = %input.name);
        async {
            let started = Instant::now();
            let doc = match Document::build(input) {
                Ok(d) => d,
                Err(BuildError::Invalid(reason)) => return self.unchecked(&input.name, Verdict::InvalidInput, reason),
                Err(BuildError::Gate(reason)) => return self.unchecked(&input.name, Verdict::Rejected, reason),
            };
            let outcome = self.pool.check(&doc.header_key, &doc.text[..doc.header_end], &doc.text).await;
            let (verdict, reason, messages, axioms) = verdict::judge(&doc, &outcome);
            let lean_ms = outcome.as_ref().map_or(0, |c| c.elapsed.as_millis() as u64);
            tracing::info!(verdict = verdict.as_str(), "checked");
            VerifyRecord {
                name: input.name.clone(),
                verdict,
                reason,
                messages,
                axioms,
                elapsed_ms: started.elapsed().as_millis() as u64,
                lean_ms,
                lean_version: self.lean_version.clone(),
            }
        }
        .instrument(span)
        .await
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
            messages: vec![],
            axioms: vec![],
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
