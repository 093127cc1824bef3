//! Closers in the scheduler: screening checks per batch of statements (a theorem alone, or the
//! new subgoals of a sketch together, as many a check as `Screen::batch` allows), the answer kept
//! per node; then, for a node some tactics closed, each of them verified in turn like any
//! candidate (every gate, the fresh re-check) until one is proved.

use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::calls::Origin;
use super::{Ctx, Engine, Role};
use crate::pipeline::closers::{proof_of, Portfolio, Screen};
use crate::verify::{Verdict, VerifyInput};

impl Engine {
    /// Screens those of `nodes` not screened yet and not done, recording for each the tactics
    /// that closed it (possibly none). A screen Lean could not finish or that cannot be read
    /// leaves a batch's nodes unscreened (each is screened alone when it is solved), and a lone
    /// node's as closed by none (it goes to the prover).
    pub(super) async fn screen(&self, ctx: &Ctx, header: &str, nodes: &[NodeIndex], portfolio: &Portfolio) {
        let todo: Vec<(NodeIndex, String)> = nodes
            .iter()
            .filter(|&&i| self.meta_of(i).is_some_and(|m| m.closer.is_none()))
            .filter_map(|&i| {
                self.with_dag(|d| (!d.node(i).status.is_final()).then(|| (i, d.node(i).statement.clone())))
            })
            .collect();
        for batch in todo.chunks(Screen::batch(portfolio)) {
            let statements: Vec<&str> = batch.iter().map(|(_, s)| s.as_str()).collect();
            let screen = Screen::build(header, &statements, portfolio);
            ctx.spend.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.screens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = {
                let _busy = self.activity.enter();
                self.verifier
                    .messages(header, &screen.text)
                    .instrument(tracing::info_span!("closer_screen", statements = batch.len()))
                    .await
            };
            let picks = match result {
                Ok(messages) => screen.read(&messages),
                Err(e) => {
                    tracing::warn!(error = ?e, statements = batch.len(), "closer screen did not finish");
                    None
                }
            };
            let picks = match picks {
                Some(p) => p,
                None if batch.len() == 1 => vec![vec![]],
                None => continue,
            };
            if let Ok(mut metas) = self.metas.lock() {
                for ((i, _), pick) in batch.iter().zip(picks) {
                    if let Some(m) = metas.get_mut(i) {
                        m.closer = Some(pick);
                    }
                }
            }
        }
    }

    /// The node's proof by a closer, if its portfolio has one that Lean verifies.
    pub(super) async fn close(&self, i: NodeIndex, ctx: &Ctx) -> Option<String> {
        let (name, header, _, statement) = self.statement_vars(i);
        let portfolio = self.cfg.closers.for_header(&header)?;
        if self.meta_of(i)?.closer.is_none() {
            self.screen(ctx, &header, &[i], &portfolio).await;
        }
        // The screen only ranks: each tactic it saw close the statement is verified in turn.
        for t in self.meta_of(i)?.closer.unwrap_or_default() {
            let Some(tactic) = portfolio.tactics.get(t) else { continue };
            let input = VerifyInput {
                name: name.clone(),
                header: header.clone(),
                formal_statement: statement.clone(),
                proof: Some(proof_of(tactic)),
                code: None,
            };
            let (record, doc) = self.verify_document(&input, ctx).await;
            self.with_dag(|d| d.node_mut(i).attempts += 1);
            self.log(
                ctx,
                &Origin { tactic: Some(tactic), ..Origin::engine(&name, Role::Closer, t) },
                Some(&input),
                &record,
            );
            if let (Verdict::Proved, Some(doc)) = (record.verdict, doc) {
                return Some(doc.checked_source());
            }
        }
        None
    }
}
