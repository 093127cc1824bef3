//! Whole-proof sampling: the prover's `k` samples of a node, each verified, the first `proved`
//! winning (all verified under `verify_all`), and the optional repair round that sends failed
//! candidates back with Lean's errors.

use std::sync::atomic::Ordering;

use futures::stream::{FuturesUnordered, StreamExt};
use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::calls::Origin;
use super::{Ctx, Engine, Role, Via};
use crate::model::{FinishReason, GenRequest, SamplingParams};
use crate::pipeline::prompts::{RepairVars, StatementVars};
use crate::pipeline::sketch::{prover_code, BlockChoice};
use crate::verify::{Verdict, VerifyInput, VerifyRecord};

impl Engine {
    /// pass@k whole-proof sampling, then the optional repair round. Samples are verified as the
    /// model finishes each one; once one is proved the rest are dropped (their generation is
    /// cancelled) unless every sample is to be verified (`verify_all`, for pass@k).
    pub(super) async fn prove_whole(&self, i: NodeIndex, ctx: &Ctx) -> Result<(String, Via), String> {
        let (name, header, informal, statement) = self.statement_vars(i);
        let vars =
            StatementVars { name: &name, header: &header, informal_statement: &informal, formal_statement: &statement };
        let prompt = self.prompts.prove(&vars, self.cfg.cot).map_err(|e| e.to_string())?;
        let seed = self.request_seed(i, Role::Prover);
        let req = GenRequest {
            prompts: vec![prompt],
            params: SamplingParams { n: self.cfg.k.max(1), seed, ..self.cfg.prover.clone() },
        };
        let model = self.prover.describe();
        // Charged once the request can go out, so one cancelled while queued costs nothing.
        let slot = self.model_slots.acquire().await.map_err(|e| e.to_string())?;
        self.charge(ctx)?;
        let (mut slot, mut busy) = (Some(slot), Some(self.activity.enter()));
        let span = tracing::info_span!("model_call", model = %model);
        let mut samples = self.prover.stream(&req);
        let mut generating = true;
        let mut pending = FuturesUnordered::new();
        let mut found: Option<(usize, String)> = None;
        let mut failures: Vec<(String, String)> = Vec::new();
        loop {
            tokio::select! {
                next = samples.next().instrument(span.clone()), if generating => match next {
                    None => {
                        generating = false;
                        (slot, busy) = (None, None);
                    }
                    Some(Err(e)) => return Err(format!("model {model}: {e}")),
                    Some(Ok(done)) => {
                        let c = done.completion;
                        ctx.spend.tokens.fetch_add((c.prompt_tokens + c.completion_tokens) as u64, Ordering::Relaxed);
                        if c.finish_reason == FinishReason::Error {
                            self.with_dag(|d| d.node_mut(i).attempts += 1);
                            let reason = format!("no candidate: the sample failed to generate: {}", c.error.as_deref().unwrap_or("?"));
                            let mut record = self.verifier.invalid(&name, reason);
                            record.verdict = Verdict::Failed;
                            let from = Origin { node: &name, role: Role::Prover, sample: done.sample, model: Some(model.clone()), completion: Some(&c), block: None, seed };
                            self.log(ctx, &from, "", &record);
                            continue;
                        }
                        let (input, block) = candidate_input(&name, &header, &statement, &c.text);
                        pending.push(async move {
                            let checked = self.verify_document(&input, ctx).await;
                            (done.sample, input, block, c, checked)
                        });
                    }
                },
                Some((s, input, block, c, (record, doc))) = pending.next(), if !pending.is_empty() => {
                    self.with_dag(|d| d.node_mut(i).attempts += 1);
                    let from = Origin { node: &name, role: Role::Prover, sample: s, model: Some(model.clone()), completion: Some(&c), block, seed };
                    self.log(ctx, &from, &input_code(&input), &record);
                    if record.verdict == Verdict::Proved {
                        if let (true, Some(doc)) = (found.as_ref().is_none_or(|(fs, _)| s < *fs), doc) {
                            found = Some((s, doc.checked_source()));
                        }
                        if !self.cfg.verify_all {
                            break;
                        }
                    } else if record.verdict == Verdict::Failed {
                        failures.push((input_code(&input), lean_errors(&record)));
                    }
                },
                else => break,
            }
        }
        drop((samples, slot, busy));
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
        let seed = self.request_seed(i, Role::Repair);
        let params = SamplingParams { n: 1, seed, ..self.cfg.prover.clone() };
        let out = self.generate(self.prover.as_ref(), prompts, params, ctx).await?;
        for (s, c) in out.into_iter().flatten().enumerate() {
            let (input, block) = candidate_input(name, header, statement, &c.text);
            let (record, doc) = self.verify_document(&input, ctx).await;
            self.with_dag(|d| d.node_mut(i).attempts += 1);
            let from = Origin {
                node: name,
                role: Role::Repair,
                sample: s,
                model: Some(self.prover.describe()),
                completion: Some(&c),
                block,
                seed,
            };
            self.log(ctx, &from, &input_code(&input), &record);
            if let (Verdict::Proved, Some(doc)) = (record.verdict, doc) {
                return Ok(Some(doc.checked_source()));
            }
        }
        Ok(None)
    }
}

/// The verifier input for a prover's answer: the Lean block `prover_code` picks when the answer
/// has one that declares the theorem, else the text itself (as a whole file when it declares a
/// theorem, else as the proof after the statement).
pub(super) fn candidate_input(
    name: &str,
    header: &str,
    statement: &str,
    text: &str,
) -> (VerifyInput, Option<BlockChoice>) {
    let (proof, code, block) = match prover_code(text) {
        Some((c, choice)) => (None, Some(c), Some(choice)),
        None if crate::lean::source::declared_theorems(text).is_empty() => {
            (Some(format!(" {}", text.trim())), None, None)
        }
        None => (None, Some(text.to_string()), None),
    };
    let input = VerifyInput {
        name: name.to_string(),
        header: header.to_string(),
        formal_statement: statement.to_string(),
        proof,
        code,
    };
    (input, block)
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
