//! The records the engine exports: one `Attempt` per verified candidate (`attempts.jsonl`) and
//! one `ProblemOutcome` per problem (`result.json`, and flattened into `results.jsonl`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::FinishReason;
use crate::pipeline::sketch::BlockChoice;
use crate::verify::Verdict;

/// What produced a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A whole proof from the prover.
    Prover,
    /// A repaired proof from the prover.
    Repair,
    /// A sketch from the planner.
    Sketch,
    /// A subgoal lemma checked to elaborate on its own.
    Lemma,
    /// Subgoal proofs put back into a sketch.
    Recompose,
    /// A proof from the automation portfolio (`closers`), tried before any model call.
    Closer,
}

/// One line of `attempts.jsonl`: one candidate and what the verifier said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub problem: String,
    /// The node (theorem or subgoal) the candidate is for.
    pub node: String,
    pub role: Role,
    /// Sample index within its request.
    pub sample: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub verdict: Verdict,
    pub reason: String,
    /// The Lean code checked (or the model's text, when it had none).
    pub code: String,
    /// What Lean said (at most 32 messages, each cut to 4 KiB). Positions in the `candidate`
    /// region are in `code`'s lines and columns; others in their own region's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<crate::verify::verdict::Message>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub lean_ms: u64,
    pub elapsed_ms: u64,
    /// Why the model stopped: `stop`, `length` (cut at the token limit), `error` (nothing was
    /// generated; the candidate was not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// What went wrong generating the sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which Lean block of a prover's answer was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<BlockChoice>,
    /// The seed of the request the sample came from (derived from the run's `--seed` and the
    /// request's identity; `None` when the run has no seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Repair candidates: the self-correction round (1 for the first repair of the prover's
    /// samples, 2 for a repair of a round-1 repair, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Closer candidates: the portfolio tactic tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tactic: Option<String>,
}

/// How a node was proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Prover,
    Repair,
    /// A tactic of the automation portfolio closed it with no model call.
    Closer,
    /// The planner's answer proved it with no `sorry` left.
    Planner,
    Decomposition,
}

/// The result of one problem (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemOutcome {
    pub name: String,
    pub solved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// The complete verified Lean file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    pub reason: String,
    pub model_calls: u64,
    pub tokens: u64,
    pub lean_checks: u64,
    pub elapsed_ms: u64,
}

pub type AttemptSink = Arc<dyn Fn(&Attempt) + Send + Sync>;
