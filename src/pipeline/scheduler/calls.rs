//! The engine's calls out: model requests and Lean checks, each charged to its problem's budget
//! and counted as activity, and the attempt record each verified candidate leaves.

use std::sync::atomic::Ordering;

use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::{Attempt, Ctx, Engine, Role};
use crate::model::{Completion, GenRequest, Generator, Prompt, SamplingParams};
use crate::pipeline::sketch::BlockChoice;
use crate::verify::verdict::Message;
use crate::verify::{Document, Region, VerifyInput, VerifyRecord};

/// Where an attempt came from, for its record.
pub(super) struct Origin<'a> {
    pub node: &'a str,
    pub role: Role,
    pub sample: usize,
    pub model: Option<String>,
    pub completion: Option<&'a Completion>,
    pub block: Option<BlockChoice>,
    pub seed: Option<u64>,
    pub round: Option<u32>,
    pub tactic: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// A candidate the engine wrote itself (a lemma check, a recomposition).
    pub fn engine(node: &'a str, role: Role, sample: usize) -> Origin<'a> {
        Origin { node, role, sample, model: None, completion: None, block: None, seed: None, round: None, tactic: None }
    }
}

/// The seed of the `round`-th request of `role` for the node with key `node_key` in a run seeded
/// `run_seed` (the first 8 bytes of a SHA-256 of the four).
pub fn derive_seed(run_seed: u64, node_key: &str, role: Role, round: u32) -> u64 {
    use sha2::Digest;
    let role = serde_json::to_string(&role).unwrap_or_default();
    let d = sha2::Sha256::digest(format!("{run_seed}\n{role}\n{round}\n{node_key}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

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

    /// Writes the attempt record of a verified (or, for a failed generation, unverifiable)
    /// candidate.
    pub(super) fn log(&self, ctx: &Ctx, from: &Origin<'_>, input: Option<&VerifyInput>, r: &VerifyRecord) {
        let Some(sink) = &self.sink else { return };
        let c = from.completion;
        let code = input.map(super::whole::input_code).unwrap_or_default();
        sink(&Attempt {
            problem: ctx.problem.to_string(),
            node: from.node.to_string(),
            role: from.role,
            sample: from.sample,
            model: from.model.clone(),
            verdict: r.verdict,
            reason: r.reason.clone(),
            messages: input.map(|i| attempt_messages(i, r)).unwrap_or_default(),
            code,
            prompt_tokens: c.map_or(0, |c| c.prompt_tokens),
            completion_tokens: c.map_or(0, |c| c.completion_tokens),
            lean_ms: r.lean_ms,
            elapsed_ms: r.elapsed_ms,
            finish_reason: c.map(|c| c.finish_reason),
            error: c.and_then(|c| c.error.clone()),
            block: from.block.clone(),
            seed: from.seed,
            round: from.round,
            tactic: from.tactic.map(str::to_string),
        });
    }

    /// The seed of the next `role` request for node `i`: derived from the run's seed, the node's
    /// key, the role and how many such requests the node has made, so a repeated prompt (a second
    /// sketch round, a node run again, the same lemma in two problems) draws new samples while a
    /// replay of the run draws the same ones. `None` when the run has no seed.
    pub(super) fn request_seed(&self, i: NodeIndex, role: Role) -> Option<u64> {
        let run_seed = if role == Role::Sketch { self.cfg.planner.seed } else { self.cfg.prover.seed }?;
        let key = self.with_dag(|d| d.node(i).key.clone());
        let round = self
            .metas
            .lock()
            .ok()
            .and_then(|mut m| {
                let n = m.get_mut(&i)?.requests.entry(role).or_insert(0);
                *n += 1;
                Some(*n - 1)
            })
            .unwrap_or(0);
        Some(derive_seed(run_seed, &key, role, round))
    }

    pub(super) fn statement_vars(&self, i: NodeIndex) -> (String, String, String, String) {
        let (name, statement) = self.with_dag(|d| (d.node(i).name.clone(), d.node(i).statement.clone()));
        let meta = self.meta_of(i);
        let header = meta.as_ref().map(|m| m.header.clone()).unwrap_or_default();
        let informal = meta.map(|m| m.informal).unwrap_or_default();
        (name, header, informal, statement)
    }
}

/// Messages an attempt record keeps, at most this many, each cut to `MESSAGE_BYTES`.
const MESSAGES: usize = 32;
const MESSAGE_BYTES: usize = 4096;

/// The verifier's messages with the candidate's positions in the attempt's `code` (a proof-only
/// candidate's code is its header and statement, then the proof): the other regions keep their
/// own coordinates.
fn attempt_messages(input: &VerifyInput, r: &VerifyRecord) -> Vec<Message> {
    // Where the proof starts in `code` when the candidate gave only a proof.
    let shift = match (&input.code, &input.proof) {
        (None, Some(_)) => {
            let prefix = format!("{}{}", input.header, input.formal_statement);
            let lines = prefix.matches('\n').count();
            let col = prefix.rsplit('\n').next().unwrap_or("").chars().count();
            Some((lines, col))
        }
        _ => None,
    };
    r.messages
        .iter()
        .take(MESSAGES)
        .map(|m| {
            let mut m = m.clone();
            if let (Some((lines, col)), Region::Candidate) = (shift, m.region) {
                for p in [&mut m.start, &mut m.end] {
                    if p.line == 1 {
                        p.column += col;
                    }
                    p.line += lines;
                }
            }
            if m.text.len() > MESSAGE_BYTES {
                let mut end = MESSAGE_BYTES;
                while !m.text.is_char_boundary(end) {
                    end -= 1;
                }
                m.text = format!("{}…", &m.text[..end]);
            }
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_only_candidates_messages_are_placed_in_its_code() {
        use crate::verify::verdict::{Pos, Severity, Verdict};
        let input = VerifyInput {
            name: "t".into(),
            header: "import M\n".into(),
            formal_statement: "theorem t : P :=".into(),
            proof: Some(" by\n  simp".into()),
            code: None,
        };
        let at = |line, column| Pos { line, column };
        let msg =
            |region, start| Message { severity: Severity::Error, region, start, end: start, text: "x".repeat(5000) };
        let r = VerifyRecord {
            name: "t".into(),
            verdict: Verdict::Failed,
            reason: String::new(),
            rejected_by: None,
            gates: vec![],
            messages: vec![
                msg(Region::Candidate, at(1, 1)),
                msg(Region::Candidate, at(2, 2)),
                msg(Region::Epilogue, at(1, 0)),
            ],
            axioms: vec![],
            recheck: None,
            elapsed_ms: 0,
            lean_ms: 0,
            lean_version: String::new(),
        };
        let code = crate::pipeline::scheduler::whole::input_code(&input);
        let got = attempt_messages(&input, &r);
        let line_of = |p: Pos| code.lines().nth(p.line - 1).unwrap().chars().skip(p.column).collect::<String>();
        assert_eq!(line_of(got[0].start), "by");
        assert_eq!(line_of(got[1].start), "simp");
        assert_eq!((got[2].start.line, got[2].start.column), (1, 0));
        assert!(got[0].text.len() < 4200 && got[0].text.ends_with('…'));
    }

    #[test]
    fn a_request_seed_changes_with_the_run_seed_the_node_the_role_and_the_round() {
        let base = derive_seed(7, "k", Role::Prover, 0);
        assert_eq!(base, derive_seed(7, "k", Role::Prover, 0));
        for other in [
            derive_seed(8, "k", Role::Prover, 0),
            derive_seed(7, "k2", Role::Prover, 0),
            derive_seed(7, "k", Role::Sketch, 0),
            derive_seed(7, "k", Role::Prover, 1),
        ] {
            assert_ne!(base, other);
        }
    }
}
