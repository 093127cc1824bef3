//! Chain-of-thought cold-start data from finished runs, as DeepSeek-Prover-V2 built its cold-start
//! set: for a theorem proved through decomposition, the planner's informal analysis, a plan, the
//! Lean sketch with `have` statements and the complete verified proof (the four sections the
//! paper's model writes), plus one example per proved subgoal lemma in both of the paper's forms.
//!
//! This module owns the example types, their keys (de-duplication and the contamination guard),
//! which problems are selected, and the two layouts (chat messages and prompt/completion pairs).
//! `examples` makes one solved problem's examples; `build` runs a whole synthesis (re-verifying
//! every proof with Lean) and merges shards.

pub mod build;
mod examples;

pub use build::{merge, synthesize, Merged, SynthError, SynthOptions};
pub use examples::{cot_completion, examples_of};

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::bench::ProblemResult;
use crate::model::SamplingParams;
use crate::pipeline::dag::DagExport;
use crate::pipeline::problem::Problem;
use crate::pipeline::scheduler::Via;
use crate::pipeline::sketch::normalize_statement;
use crate::verify::Verdict;

pub const EXAMPLE_SCHEMA: &str = "subgoal.example.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleKind {
    /// A theorem: informal analysis, plan, sketch, complete proof.
    Cot,
    /// A subgoal lemma and its proof (curriculum data).
    Subgoal,
}

/// The paper's two subgoal forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LemmaForm {
    /// (b): the earlier subgoals are premises.
    WithPremises,
    /// (a): the theorem's hypotheses only.
    WithoutPremises,
}

/// Which solved problems give examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Every problem proved through decomposition.
    All,
    /// The paper's rule: the prover sampled whole proofs and none verified, and every subgoal was
    /// proved (so the theorem was proved through decomposition).
    Paper,
}

/// Who wrote a part of an example, and how they were asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartSource {
    pub model: String,
    pub sampling: SamplingParams,
}

/// Where an example came from and what checked it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub problem: String,
    pub dataset: String,
    /// The planner (informal analysis and sketch) for CoT examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<PartSource>,
    /// The prover (whole proofs of the subgoals).
    pub prover: PartSource,
    pub lean_version: String,
    /// The verdict of the re-verification at synthesis time (always `proved` in an output).
    pub verdict: Verdict,
    /// Whether the fresh-process re-check agreed.
    pub recheck_agreed: bool,
    /// How the example's proof was found: `decomposition` for CoT examples; for a subgoal, how
    /// its node was proved (`closer` marks automation's proofs, which no model wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// Time the problem took in its run.
    pub problem_elapsed_ms: u64,
    /// SHA-256 of prompt and completion.
    pub content_sha256: String,
}

/// One training example before it is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub kind: ExampleKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<LemmaForm>,
    /// The theorem or lemma name.
    pub name: String,
    pub header: String,
    /// `theorem NAME … :=`.
    pub statement: String,
    /// The complete verified Lean file.
    pub proof: String,
    /// The user message: the prover's prompt template for this statement.
    pub prompt: String,
    /// The assistant message.
    pub completion: String,
    pub provenance: Provenance,
}

impl Example {
    /// Equal keys are the same example (normalized statement without its name).
    pub fn key(&self) -> String {
        let form = self.form.map_or("", |f| match f {
            LemmaForm::WithPremises => "b",
            LemmaForm::WithoutPremises => "a",
        });
        format!("{:?}:{form}:{}", self.kind, statement_key(&self.header, &self.statement))
    }
}

/// A statement's identity for de-duplication and the contamination guard: its header and tokens,
/// without the declared name.
pub fn statement_key(header: &str, statement: &str) -> String {
    // The whole header: two problems alike but for a `def` in their headers are different.
    let h = normalize_statement(header);
    format!("{h}\n{}", normalize_statement(&strip_decl_name(statement)))
}

/// The contamination key: the statement's tokens only (headers differ between copies of a
/// benchmark).
pub fn contamination_key(statement: &str) -> String {
    normalize_statement(&strip_decl_name(statement))
}

fn strip_decl_name(statement: &str) -> String {
    let toks = crate::lean::lexer::tokenize(statement);
    match toks.windows(2).find(|w| matches!(w[0].text(statement), "theorem" | "lemma")) {
        Some(w) => format!("{}{}", &statement[..w[0].span.start], &statement[w[1].span.end..]),
        None => statement.to_string(),
    }
}

/// A problem's record, its graph and the problem itself: what synthesis reads.
pub struct Solved<'a> {
    pub result: &'a ProblemResult,
    pub dag: &'a DagExport,
    pub problem: &'a Problem,
}

/// Whether a result is selected.
pub fn selected(r: &ProblemResult, rule: Selection) -> bool {
    let decomposed = r.outcome.solved && r.outcome.via == Some(Via::Decomposition);
    match rule {
        Selection::All => decomposed,
        Selection::Paper => decomposed && r.samples > 0 && r.correct == 0,
    }
}

/// Counts of a synthesis, written as `stats.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SynthStats {
    pub problems: usize,
    pub solved: usize,
    pub selected: usize,
    pub cot_examples: usize,
    pub subgoal_examples: usize,
    pub duplicates_dropped: usize,
    pub contaminated_dropped: usize,
    /// Examples whose proof no longer verified (never written).
    pub failed_reverification: usize,
    pub examples_per_solved_problem: f64,
    /// Problems per hour of the runs' wall time (every session).
    pub problems_per_hour: f64,
    pub model_calls: u64,
    pub tokens: u64,
    pub lean_checks: u64,
}

/// Drops examples whose statement is in `excluded`, then duplicates: examples are put in one
/// stable order (problem, kind, form, name) and the first of equal keys is kept, so shards
/// merged later keep the same one an unsharded run keeps. Returns the kept examples and the
/// counts of duplicates and contaminated examples dropped.
pub fn select_unique(mut examples: Vec<Example>, excluded: &HashSet<String>) -> (Vec<Example>, usize, usize) {
    let before = examples.len();
    examples.retain(|e| !excluded.contains(&contamination_key(&e.statement)));
    let contaminated = before - examples.len();
    examples.sort_by(|a, b| {
        (&a.provenance.problem, a.kind, a.form, &a.name).cmp(&(&b.provenance.problem, b.kind, b.form, &b.name))
    });
    let mut seen = HashSet::new();
    let before = examples.len();
    examples.retain(|e| seen.insert(e.key()));
    (examples.clone(), before - examples.len(), contaminated)
}

/// The chat layout: `{"messages": [user, assistant], "metadata": …}`.
pub fn chat_record(e: &Example) -> serde_json::Value {
    serde_json::json!({
        "messages": [
            {"role": "user", "content": e.prompt},
            {"role": "assistant", "content": e.completion},
        ],
        "metadata": metadata(e),
    })
}

/// The prompt/completion layout: `{"prompt", "completion", "metadata"}`.
pub fn pair_record(e: &Example) -> serde_json::Value {
    serde_json::json!({"prompt": e.prompt, "completion": e.completion, "metadata": metadata(e)})
}

fn metadata(e: &Example) -> serde_json::Value {
    serde_json::json!({
        "schema": EXAMPLE_SCHEMA,
        "key": e.key(),
        "kind": e.kind,
        "form": e.form,
        "name": e.name,
        "statement": e.statement,
        "header": e.header,
        "proof": e.proof,
        "provenance": e.provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_the_declared_name_and_spacing() {
        assert_eq!(
            statement_key("import M\n", "theorem a (x : N) : P x :="),
            statement_key("import M\n", "theorem  b (x : N) :\n  P x :=")
        );
        assert_ne!(statement_key("import M\n", "theorem a : P :="), statement_key("import N\n", "theorem a : P :="));
        assert_eq!(contamination_key("theorem a : P :="), contamination_key("lemma z : P :="));
    }
}
