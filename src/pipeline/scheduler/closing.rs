//! Closers in the scheduler: one screening check per batch of statements (a theorem alone, or
//! every new subgoal of a sketch at once), recorded per node; then, for a node some tactic
//! closed, that tactic's proof verified like any candidate (every gate, the fresh re-check).

use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::calls::Origin;
use super::whole::input_code;
use super::{Ctx, Engine, Role};
use crate::pipeline::closers::{proof_of, Portfolio, Screen};
use crate::verify::{Verdict, VerifyInput};

impl Engine {
    /// Screens those of `nodes` not screened yet and not done, recording for each the first
    /// tactic that closed it, or that none did. A screen that Lean could not finish counts as
    /// none closing (the nodes go to the prover).
    pub(super) async fn screen(&self, ctx: &Ctx, header: &str, nodes: &[NodeIndex], portfolio: &Portfolio) {
        let todo: Vec<(NodeIndex, String)> = nodes
            .iter()
            .filter(|&&i| self.meta_of(i).is_some_and(|m| m.closer.is_none()))
            .filter_map(|&i| {
                self.with_dag(|d| (!d.node(i).status.is_final()).then(|| (i, d.node(i).statement.clone())))
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let statements: Vec<&str> = todo.iter().map(|(_, s)| s.as_str()).collect();
        let screen = Screen::build(header, &statements, portfolio);
        ctx.spend.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.screens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = {
            let _busy = self.activity.enter();
            self.verifier
                .messages(header, &screen.text)
                .instrument(tracing::info_span!("closer_screen", statements = todo.len()))
                .await
        };
        let picks = match result {
            Ok(messages) => screen.read(&messages),
            Err(e) => {
                tracing::warn!(error = ?e, statements = todo.len(), "closer screen did not finish");
                vec![None; todo.len()]
            }
        };
        if let Ok(mut metas) = self.metas.lock() {
            for ((i, _), pick) in todo.iter().zip(picks) {
                if let Some(m) = metas.get_mut(i) {
                    m.closer = Some(pick);
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
        let tactic = portfolio.tactics.get(self.meta_of(i)?.closer.flatten()?)?;
        let input = VerifyInput {
            name: name.clone(),
            header,
            formal_statement: statement,
            proof: Some(proof_of(tactic)),
            code: None,
        };
        let (record, doc) = self.verify_document(&input, ctx).await;
        self.with_dag(|d| d.node_mut(i).attempts += 1);
        self.log(
            ctx,
            &Origin { tactic: Some(tactic), ..Origin::engine(&name, Role::Closer, 0) },
            &input_code(&input),
            &record,
        );
        match (record.verdict, doc) {
            (Verdict::Proved, Some(doc)) => Some(doc.checked_source()),
            _ => None,
        }
    }
}
