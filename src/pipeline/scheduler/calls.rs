//! The engine's calls out: model requests and Lean checks, each charged to its problem's budget
//! and counted as activity, and the attempt record each verified candidate leaves.

use std::sync::atomic::Ordering;

use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::{Attempt, Ctx, Engine, Role};
use crate::model::{Completion, GenRequest, Generator, Prompt, SamplingParams};
use crate::verify::{Document, VerifyInput, VerifyRecord};

impl Engine {
    /// Charges a model call to the problem's budget, or refuses it.
    pub(super) fn charge(&self, ctx: &Ctx) -> Result<(), String> {
        if let Some(why) = self.exhausted(ctx) {
            return Err(why);
        }
        ctx.spend.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Why the problem's budget allows no more model calls, if it does not.
    pub(super) fn exhausted(&self, ctx: &Ctx) -> Option<String> {
        let b = &self.cfg.budget;
        let (calls, tokens) = (ctx.spend.calls.load(Ordering::Relaxed), ctx.spend.tokens.load(Ordering::Relaxed));
        if b.max_model_calls.is_some_and(|m| calls >= m) {
            return Some(format!("budget: {calls} model calls used"));
        }
        if b.max_tokens.is_some_and(|m| tokens >= m) {
            return Some(format!("budget: {tokens} tokens used"));
        }
        None
    }

    pub(super) async fn generate(
        &self,
        model: &dyn Generator,
        prompts: Vec<Prompt>,
        params: SamplingParams,
        ctx: &Ctx,
    ) -> Result<Vec<Vec<Completion>>, String> {
        // Charged once the request can go out, so one cancelled while queued costs nothing.
        let _slot = self.model_slots.acquire().await.map_err(|e| e.to_string())?;
        self.charge(ctx)?;
        let req = GenRequest { prompts, params };
        let _busy = self.activity.enter();
        let out = model.generate(&req).instrument(tracing::info_span!("model_call", model = %model.describe())).await;
        let out = out.map_err(|e| format!("model {}: {e}", model.describe()))?;
        let tokens: usize = out.iter().flatten().map(|c| c.prompt_tokens + c.completion_tokens).sum();
        ctx.spend.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        Ok(out)
    }

    pub(super) async fn verify(&self, input: &VerifyInput, ctx: &Ctx) -> VerifyRecord {
        self.verify_document(input, ctx).await.0
    }

    /// The verdict, and for a `proved` one the file Lean checked (what is reported as the proof).
    pub(super) async fn verify_document(&self, input: &VerifyInput, ctx: &Ctx) -> (VerifyRecord, Option<Document>) {
        ctx.spend.checks.fetch_add(1, Ordering::Relaxed);
        let _busy = self.activity.enter();
        self.verifier.verify_document(input).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn log(
        &self,
        ctx: &Ctx,
        node: &str,
        role: Role,
        sample: usize,
        model: Option<String>,
        code: &str,
        c: Option<&Completion>,
        r: &VerifyRecord,
    ) {
        if let Some(sink) = &self.sink {
            sink(&Attempt {
                problem: ctx.problem.to_string(),
                node: node.to_string(),
                role,
                sample,
                model,
                verdict: r.verdict,
                reason: r.reason.clone(),
                code: code.to_string(),
                prompt_tokens: c.map_or(0, |c| c.prompt_tokens),
                completion_tokens: c.map_or(0, |c| c.completion_tokens),
                lean_ms: r.lean_ms,
                elapsed_ms: r.elapsed_ms,
                finish_reason: c.map(|c| c.finish_reason),
                error: c.and_then(|c| c.error.clone()),
                block: None,
                seed: None,
            });
        }
    }

    pub(super) fn statement_vars(&self, i: NodeIndex) -> (String, String, String, String) {
        let (name, statement) = self.with_dag(|d| (d.node(i).name.clone(), d.node(i).statement.clone()));
        let meta = self.meta_of(i);
        let header = meta.as_ref().map(|m| m.header.clone()).unwrap_or_default();
        let informal = meta.map(|m| m.informal).unwrap_or_default();
        (name, header, informal, statement)
    }
}
