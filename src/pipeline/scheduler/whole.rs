//! Whole-proof sampling: the prover's `k` samples of a node, each verified as it arrives, the
//! first `proved` winning (all verified under `verify_all`); then up to `repair` self-correction
//! rounds, each sending the previous round's failed candidates back with Lean's errors. Prompts
//! offer the lemma library's entries, and an answer that uses one states it as a helper.

use std::sync::atomic::Ordering;

use futures::stream::{FuturesUnordered, StreamExt};
use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::calls::Origin;
use super::{Ctx, Engine, Role, Via};
use crate::model::{FinishReason, GenRequest, Prompt, SamplingParams};
use crate::pipeline::config::RepairStyle;
use crate::pipeline::feedback::{feedback, Feedback};
use crate::pipeline::library::{prompt_text, with_entries, Entry};
use crate::pipeline::prompts::{RepairVars, StatementVars};
use crate::pipeline::sketch::{prover_code, BlockChoice};
use crate::verify::{Verdict, VerifyInput};

/// What one round of sampling gave.
struct Round {
    /// A proof, as Lean checked it (under `verify_all`, that of the lowest sample index).
    found: Option<String>,
    /// Failed candidates Lean checked, in sample order, as a repair prompt shows them.
    failures: Vec<Feedback>,
}

impl Engine {
    /// pass@k whole-proof sampling, then the repair rounds.
    pub(super) async fn prove_whole(&self, i: NodeIndex, ctx: &Ctx) -> Result<(String, Via), String> {
        let (name, header, informal, statement) = self.statement_vars(i);
        let offered = self.offered(ctx, &header, &name, &statement);
        let library = prompt_text(&offered);
        let vars =
            StatementVars { name: &name, header: &header, informal_statement: &informal, formal_statement: &statement };
        let prompt = self.prompts.prove_with(&vars, self.cfg.cot, &library).map_err(|e| e.to_string())?;
        let seed = self.request_seed(i, Role::Prover);
        let params = SamplingParams { n: self.cfg.k.max(1), seed, ..self.cfg.prover.clone() };
        let mut round = self.sample_round(i, ctx, vec![prompt], params, Role::Prover, 0, &offered).await?;
        if let Some(code) = round.found {
            return Ok((code, Via::Prover));
        }
        let mut reason = format!("prover: no proof in {} samples", self.cfg.k);
        for r in 1..=self.cfg.repair {
            // Each distinct failed candidate once, at most k a round.
            let mut seen = std::collections::HashSet::new();
            let failures: Vec<Feedback> =
                round.failures.into_iter().filter(|f| seen.insert(f.code.clone())).take(self.cfg.k.max(1)).collect();
            if failures.is_empty() {
                reason.push_str(&format!("; repair round {r}: no failed candidate Lean checked to send back"));
                break;
            }
            let mut prompts = Vec::with_capacity(failures.len());
            for f in &failures {
                let v = RepairVars {
                    name: &name,
                    header: &header,
                    formal_statement: &statement,
                    candidate: &f.code,
                    errors: &f.errors,
                    marked: &f.marked,
                    round: r,
                    library: &library,
                };
                let marked = self.cfg.repair_style == RepairStyle::Goedel;
                prompts.push(self.prompts.repair(&v, marked).map_err(|e| e.to_string())?);
            }
            let seed = self.request_seed(i, Role::Repair);
            let params = SamplingParams { n: 1, seed, ..self.cfg.prover.clone() };
            round = match self.sample_round(i, ctx, prompts, params, Role::Repair, r, &offered).await {
                Ok(round) => round,
                Err(e) => {
                    reason.push_str(&format!("; repair round {r}: {e}"));
                    break;
                }
            };
            if let Some(code) = round.found {
                return Ok((code, Via::Repair));
            }
            if r == self.cfg.repair {
                reason.push_str(&format!(", nor in {r} repair round{}", if r == 1 { "" } else { "s" }));
            }
        }
        Err(reason)
    }

    /// One request's samples, each verified as the model finishes it; once one is proved the
    /// rest are dropped (their generation cancelled) unless every sample is to be verified
    /// (`verify_all`, for pass@k). Sample `s` of prompt `p` is recorded as `p * n + s`.
    #[allow(clippy::too_many_arguments)]
    async fn sample_round(
        &self,
        i: NodeIndex,
        ctx: &Ctx,
        prompts: Vec<Prompt>,
        params: SamplingParams,
        role: Role,
        round: u32,
        offered: &[Entry],
    ) -> Result<Round, String> {
        let (name, header, _, statement) = self.statement_vars(i);
        let (n, seed) = (params.n.max(1), params.seed);
        let req = GenRequest { prompts, params };
        let model = self.prover.describe();
        let round_tag = (role == Role::Repair).then_some(round);
        // Charged once the request can go out, so one cancelled while queued costs nothing.
        let slot = self.model_slots.acquire().await.map_err(|e| e.to_string())?;
        self.charge(ctx)?;
        let (mut slot, mut busy) = (Some(slot), Some(self.activity.enter()));
        let span = tracing::info_span!("model_call", model = %model, ?role, round);
        let mut samples = self.prover.stream(&req);
        let mut generating = true;
        let mut pending = FuturesUnordered::new();
        let mut found: Option<(usize, String)> = None;
        let mut failures: Vec<(usize, Feedback)> = Vec::new();
        loop {
            tokio::select! {
                next = samples.next().instrument(span.clone()), if generating => match next {
                    None => {
                        generating = false;
                        (slot, busy) = (None, None);
                    }
                    Some(Err(e)) => return Err(format!("model {model}: {e}")),
                    Some(Ok(done)) => {
                        let index = done.prompt * n + done.sample;
                        let c = done.completion;
                        ctx.spend.tokens.fetch_add((c.prompt_tokens + c.completion_tokens) as u64, Ordering::Relaxed);
                        if c.finish_reason == FinishReason::Error {
                            self.with_dag(|d| d.node_mut(i).attempts += 1);
                            let reason = format!("no candidate: the sample failed to generate: {}", c.error.as_deref().unwrap_or("?"));
                            let mut record = self.verifier.invalid(&name, reason);
                            record.verdict = Verdict::Failed;
                            let from = Origin { model: Some(model.clone()), completion: Some(&c), seed, round: round_tag, ..Origin::engine(&name, role, index) };
                            self.log(ctx, &from, None, &record);
                            continue;
                        }
                        let (input, block) = candidate_input(&name, &header, &statement, &c.text, offered);
                        pending.push(async move {
                            let checked = self.verify_document(&input, ctx).await;
                            (index, input, block, c, checked)
                        });
                    }
                },
                Some((s, input, block, c, (record, doc))) = pending.next(), if !pending.is_empty() => {
                    self.with_dag(|d| d.node_mut(i).attempts += 1);
                    let from = Origin { model: Some(model.clone()), completion: Some(&c), block, seed, round: round_tag, ..Origin::engine(&name, role, s) };
                    self.log(ctx, &from, Some(&input), &record);
                    match (record.verdict, doc) {
                        (Verdict::Proved, Some(doc)) => {
                            if found.as_ref().is_none_or(|(fs, _)| s < *fs) {
                                found = Some((s, doc.checked_source()));
                            }
                            if !self.cfg.verify_all {
                                break;
                            }
                        }
                        // What a repair prompt shows, only when a repair round may follow.
                        (Verdict::Failed | Verdict::Incomplete, Some(doc)) if round < self.cfg.repair => {
                            failures.push((s, feedback(&doc, &record, self.cfg.repair_error_tokens)));
                        }
                        _ => {}
                    }
                },
                else => break,
            }
        }
        drop((samples, slot, busy));
        // In sample order, so the next round's prompts (and their seeds) do not depend on which
        // check finished first.
        failures.sort_by_key(|(s, _)| *s);
        Ok(Round { found: found.map(|(_, c)| c), failures: failures.into_iter().map(|(_, f)| f).collect() })
    }

    /// The library entries a prompt for `statement` is offered.
    pub(super) fn offered(&self, ctx: &Ctx, header: &str, name: &str, statement: &str) -> Vec<Entry> {
        self.library.retrieve(self.cfg.library, &ctx.problem, header, name, statement, self.cfg.library_tokens)
    }
}

/// The verifier input for a prover's answer: the Lean block `prover_code` picks when the answer
/// has one that declares the theorem, else the text itself (as a whole file when it declares a
/// theorem, else as the proof after the statement). Offered library entries the answer uses are
/// stated before its theorem.
pub(super) fn candidate_input(
    name: &str,
    header: &str,
    statement: &str,
    text: &str,
    offered: &[Entry],
) -> (VerifyInput, Option<BlockChoice>) {
    let (proof, code, block) = match prover_code(text) {
        Some((c, choice)) => (None, Some(c), Some(choice)),
        None if crate::lean::source::declared_theorems(text).is_empty() => {
            (Some(format!(" {}", text.trim())), None, None)
        }
        None => (None, Some(text.to_string()), None),
    };
    let mut input = VerifyInput {
        name: name.to_string(),
        header: header.to_string(),
        formal_statement: statement.to_string(),
        proof,
        code,
    };
    if !offered.is_empty() {
        if let Some(code) = with_entries(&input_code(&input), offered, name, header) {
            input.code = Some(code);
            input.proof = None;
        }
    }
    (input, block)
}

pub(super) fn input_code(input: &VerifyInput) -> String {
    match (&input.code, &input.proof) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) => format!("{}{}{p}", input.header, input.formal_statement),
        (None, None) => String::new(),
    }
}
