//! Whole-proof sampling: the prover's `k` samples of a node, each verified, the first `proved`
//! winning (all verified under `verify_all`), and the optional repair round that sends failed
//! candidates back with Lean's errors.

use futures::stream::{FuturesUnordered, StreamExt};
use petgraph::graph::NodeIndex;

use super::{Ctx, Engine, Role, Via};
use crate::model::{Completion, SamplingParams};
use crate::pipeline::prompts::{RepairVars, StatementVars};
use crate::pipeline::sketch::parse_answer;
use crate::verify::{Verdict, VerifyInput, VerifyRecord};

impl Engine {
    /// pass@k whole-proof sampling, then the optional repair round.
    pub(super) async fn prove_whole(&self, i: NodeIndex, ctx: &Ctx) -> Result<(String, Via), String> {
        let (name, header, informal, statement) = self.statement_vars(i);
        let vars =
            StatementVars { name: &name, header: &header, informal_statement: &informal, formal_statement: &statement };
        let prompt = self.prompts.prove(&vars, self.cfg.cot).map_err(|e| e.to_string())?;
        let params = SamplingParams { n: self.cfg.k.max(1), ..self.cfg.prover.clone() };
        let out = self.generate(self.prover.as_ref(), vec![prompt], params, ctx).await?;
        let samples: Vec<Completion> = out.into_iter().next().unwrap_or_default();
        let model = Some(self.prover.describe());
        let mut failures: Vec<(String, String)> = Vec::new();
        let candidates: Vec<(usize, VerifyInput, Completion)> = samples
            .into_iter()
            .enumerate()
            .map(|(s, c)| (s, candidate_input(&name, &header, &statement, &c.text), c))
            .collect();
        let mut found = None;
        {
            let mut pending: FuturesUnordered<_> = candidates
                .iter()
                .map(|(s, input, c)| async move { (*s, input, c, self.verify_document(input, ctx).await) })
                .collect();
            while let Some((s, input, c, (record, doc))) = pending.next().await {
                self.with_dag(|d| d.node_mut(i).attempts += 1);
                self.log(ctx, &name, Role::Prover, s, model.clone(), &input_code(input), Some(c), &record);
                if record.verdict == Verdict::Proved {
                    let better = found.as_ref().is_none_or(|(fs, _)| s < *fs);
                    if let (true, Some(doc)) = (better, doc) {
                        found = Some((s, doc.checked_source()));
                    }
                    if !self.cfg.verify_all {
                        break;
                    }
                } else if record.verdict == Verdict::Failed {
                    failures.push((input_code(input), lean_errors(&record)));
                }
            }
        }
        if let Some((_, code)) = found {
            return Ok((code, Via::Prover));
        }
        let mut reason = format!("prover: no proof in {} samples", self.cfg.k);
        if self.cfg.repair && !failures.is_empty() {
            match self.repair(i, ctx, &name, &header, &statement, failures).await {
                Ok(Some(code)) => return Ok((code, Via::Repair)),
                Ok(None) => reason.push_str(", nor in the repair round"),
                Err(e) => reason.push_str(&format!("; repair: {e}")),
            }
        }
        Err(reason)
    }

    pub(super) async fn repair(
        &self,
        i: NodeIndex,
        ctx: &Ctx,
        name: &str,
        header: &str,
        statement: &str,
        failures: Vec<(String, String)>,
    ) -> Result<Option<String>, String> {
        let mut prompts = Vec::with_capacity(failures.len());
        for (code, errors) in &failures {
            let v = RepairVars { name, header, formal_statement: statement, candidate: code, errors };
            prompts.push(self.prompts.repair(&v).map_err(|e| e.to_string())?);
        }
        let params = SamplingParams { n: 1, ..self.cfg.prover.clone() };
        let out = self.generate(self.prover.as_ref(), prompts, params, ctx).await?;
        for (s, c) in out.into_iter().flatten().enumerate() {
            let input = candidate_input(name, header, statement, &c.text);
            let (record, doc) = self.verify_document(&input, ctx).await;
            self.with_dag(|d| d.node_mut(i).attempts += 1);
            self.log(ctx, name, Role::Repair, s, Some(self.prover.describe()), &input_code(&input), Some(&c), &record);
            if let (Verdict::Proved, Some(doc)) = (record.verdict, doc) {
                return Ok(Some(doc.checked_source()));
            }
        }
        Ok(None)
    }
}

/// The verifier input for a model's answer: its last Lean block when it declares the theorem,
/// else its text as the proof after the statement.
pub(super) fn candidate_input(name: &str, header: &str, statement: &str, text: &str) -> VerifyInput {
    let answer = parse_answer(text);
    let (proof, code) = match answer.code {
        Some(c) => (None, Some(c)),
        None if crate::lean::source::declared_theorems(text).is_empty() => (Some(format!(" {}", text.trim())), None),
        None => (None, Some(text.to_string())),
    };
    VerifyInput {
        name: name.to_string(),
        header: header.to_string(),
        formal_statement: statement.to_string(),
        proof,
        code,
    }
}

pub(super) fn input_code(input: &VerifyInput) -> String {
    match (&input.code, &input.proof) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) => format!("{}{}{p}", input.header, input.formal_statement),
        (None, None) => String::new(),
    }
}

/// Lean's error messages of a failed candidate, as the repair prompt shows them.
pub fn lean_errors(r: &VerifyRecord) -> String {
    let errors: Vec<String> = r
        .messages
        .iter()
        .filter(|m| m.severity == crate::verify::verdict::Severity::Error)
        .map(|m| format!("line {}: {}", m.start.line, m.text))
        .collect();
    if errors.is_empty() {
        r.reason.clone()
    } else {
        errors.join("\n")
    }
}
