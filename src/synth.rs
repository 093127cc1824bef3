//! Chain-of-thought cold-start data from finished runs, as DeepSeek-Prover-V2 built its cold-start
//! set: for a theorem proved through decomposition, the planner's informal analysis, a plan, the
//! Lean sketch with `have` statements and the complete verified proof (the four sections the
//! paper's model writes), plus one example per proved subgoal lemma in both of the paper's forms.
//!
//! This module turns a run's records into `Example`s (selection, de-duplication, contamination
//! guard) and writes them in two layouts: chat messages and prompt/completion pairs. Verifying
//! that each proof still checks is the caller's (it needs Lean); the records say what it found.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::bench::{ProblemResult, RunConfig};
use crate::digest::sha256_hex;
use crate::model::SamplingParams;
use crate::pipeline::dag::{DagExport, NodeKind, Status};
use crate::pipeline::problem::Problem;
use crate::pipeline::prompts::{PromptError, Prompts, StatementVars};
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

/// The CoT completion in the paper's four sections.
pub fn cot_completion(informal: &str, plan: &str, sketch: &str, proof: &str) -> String {
    let analysis = analysis_section(informal);
    format!(
        "### Detailed Proof and Analysis\n\n{analysis}\n\n### Step-by-Step Abstract Plan\n\n{plan}\n\n\
         ### Lean 4 Proof with `have` Statements\n\n```lean4\n{}\n```\n\n### Complete Lean 4 Proof\n\n```lean4\n{}\n```\n",
        sketch.trim_end(),
        proof.trim_end()
    )
}

/// The planner's analysis: its "Detailed Proof and Analysis" section when it wrote the paper's
/// format (its own plan, sketch and proof sections are not kept: the example's are the checked
/// ones), else all its informal text.
fn analysis_section(informal: &str) -> &str {
    let informal = informal.trim();
    let body = informal.strip_prefix("### Detailed Proof and Analysis").unwrap_or(informal);
    let end =
        ["### Step-by-Step Abstract Plan", "### Lean 4 Proof with `have` Statements", "### Complete Lean 4 Proof"]
            .iter()
            .filter_map(|h| body.find(h))
            .min()
            .unwrap_or(body.len());
    body[..end].trim()
}

/// The plan: one line per subgoal of the sketch, in order, with its statement.
fn plan(subgoals: &[(String, String)]) -> String {
    subgoals
        .iter()
        .enumerate()
        .map(|(i, (step, target))| format!("{}. `{step}`: {target}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The target of a lemma statement (`theorem N binders :\n    T :=` → `T`), for the plan.
fn target_of(statement: &str) -> String {
    let s = statement.trim_end().trim_end_matches(":=").trim_end();
    match s.rfind(" :\n") {
        Some(i) => s[i + 3..].split_whitespace().collect::<Vec<_>>().join(" "),
        None => s.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// The examples one solved problem gives, before re-verification: its CoT example and one per
/// proved subgoal in form (b) and, with `form_a_proof` for it, form (a).
pub fn examples_of(
    s: &Solved,
    config: &RunConfig,
    prompts: &Prompts,
    form_a_proofs: &BTreeMap<String, String>,
) -> Result<Vec<Example>, PromptError> {
    let mut out = Vec::new();
    let Some(proof) = &s.result.outcome.proof else { return Ok(out) };
    let prover = PartSource { model: config.prover.describe.clone(), sampling: config.engine.prover.clone() };
    let provenance = |planner: Option<PartSource>| Provenance {
        problem: s.problem.name.clone(),
        dataset: config.dataset.name.clone(),
        planner,
        prover: prover.clone(),
        lean_version: config.lean_version.clone(),
        verdict: Verdict::Proved,
        recheck_agreed: false,
        via: s.result.outcome.via,
        problem_elapsed_ms: s.result.outcome.elapsed_ms,
        content_sha256: String::new(),
    };
    let nodes = &s.dag.nodes;
    let node = |id: usize| nodes.iter().find(|n| n.id == id);
    let theorem = nodes.iter().find(|n| n.node.kind == NodeKind::Theorem);
    // The sketch that proved the theorem, and its subgoals in order.
    let sketch = theorem.and_then(|t| {
        s.dag
            .edges
            .iter()
            .filter(|[_, to]| *to == t.id)
            .filter_map(|[from, _]| node(*from))
            .find(|n| n.node.kind == NodeKind::Sketch && n.node.status == Status::Proved)
    });
    if let Some(sk) = sketch {
        // In the order of the sketch's `sorry`s.
        let subgoals: Vec<(String, String)> = sk
            .node
            .subgoals
            .iter()
            .filter_map(|name| nodes.iter().find(|n| n.node.kind == NodeKind::Subgoal && &n.node.name == name))
            .map(|n| (n.node.provenance.step.clone().unwrap_or_else(|| "final".into()), target_of(&n.node.statement)))
            .collect();
        let vars = StatementVars {
            name: &s.problem.name,
            header: &s.problem.header,
            informal_statement: &s.problem.informal_statement,
            formal_statement: &s.problem.formal_statement,
        };
        let planner = PartSource { model: config.planner.describe.clone(), sampling: config.engine.planner.clone() };
        out.push(Example {
            kind: ExampleKind::Cot,
            form: None,
            name: s.problem.name.clone(),
            header: s.problem.header.clone(),
            statement: s.problem.formal_statement.clone(),
            proof: proof.clone(),
            prompt: text(prompts.prove(&vars, true)?),
            completion: cot_completion(
                sk.node.informal.as_deref().unwrap_or(""),
                &plan(&subgoals),
                &sk.node.statement,
                proof,
            ),
            provenance: provenance(Some(planner)),
        });
    }
    for n in nodes.iter().filter(|n| n.node.kind == NodeKind::Subgoal && n.node.status == Status::Proved) {
        let Some(lemma_proof) = &n.node.proof else { continue };
        let mut forms = vec![(LemmaForm::WithPremises, n.node.statement.clone(), lemma_proof.clone())];
        if let (Some(a), Some(pa)) = (&n.node.statement_without_premises, form_a_proofs.get(&n.node.name)) {
            if a != &n.node.statement {
                forms.push((LemmaForm::WithoutPremises, a.clone(), pa.clone()));
            }
        }
        for (form, statement, proof) in forms {
            let vars = StatementVars {
                name: &n.node.name,
                header: &s.problem.header,
                informal_statement: "",
                formal_statement: &statement,
            };
            let prompt = text(prompts.prove(&vars, false)?);
            out.push(Example {
                kind: ExampleKind::Subgoal,
                form: Some(form),
                name: n.node.name.clone(),
                header: s.problem.header.clone(),
                statement,
                completion: format!("```lean4\n{}\n```\n", proof.trim_end()),
                proof,
                prompt,
                provenance: Provenance { via: n.node.via, ..provenance(None) },
            });
        }
    }
    for e in &mut out {
        e.provenance.content_sha256 = sha256_hex(format!("{}\u{0}{}", e.prompt, e.completion));
    }
    Ok(out)
}

fn text(p: crate::model::Prompt) -> String {
    match p {
        crate::model::Prompt::Text(t) => t,
        crate::model::Prompt::Chat(m) => m.into_iter().map(|m| m.content).collect::<Vec<_>>().join("\n"),
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
    fn the_cot_completion_has_the_papers_four_sections_in_order() {
        let c = cot_completion(
            "### Detailed Proof and Analysis\nSplit.",
            "1. `h1`: p",
            "theorem t := sorry",
            "theorem t := rfl",
        );
        let at = |h: &str| c.find(h).unwrap_or_else(|| panic!("{h} missing in {c}"));
        assert!(at("### Detailed Proof and Analysis") < at("### Step-by-Step Abstract Plan"));
        assert!(at("### Step-by-Step Abstract Plan") < at("### Lean 4 Proof with `have` Statements"));
        assert!(at("### Lean 4 Proof with `have` Statements") < at("### Complete Lean 4 Proof"));
        assert_eq!(c.matches("### Detailed Proof and Analysis").count(), 1);
        assert!(c.ends_with("```lean4\ntheorem t := rfl\n```\n"));
    }

    #[test]
    fn only_the_planners_analysis_section_is_kept() {
        let informal =
            "### Detailed Proof and Analysis\nWhy.\n### Step-by-Step Abstract Plan\n1. x\n### Complete Lean 4 Proof";
        let c = cot_completion(informal, "1. `h`: p", "sketch", "proof");
        assert_eq!(c.matches("### Step-by-Step Abstract Plan").count(), 1, "{c}");
        assert_eq!(c.matches("### Complete Lean 4 Proof").count(), 1, "{c}");
        assert!(c.starts_with("### Detailed Proof and Analysis\n\nWhy.\n\n"), "{c}");
    }

    #[test]
    fn keys_ignore_the_declared_name_and_spacing() {
        assert_eq!(
            statement_key("import M\n", "theorem a (x : N) : P x :="),
            statement_key("import M\n", "theorem  b (x : N) :\n  P x :=")
        );
        assert_ne!(statement_key("import M\n", "theorem a : P :="), statement_key("import N\n", "theorem a : P :="));
        assert_eq!(contamination_key("theorem a : P :="), contamination_key("lemma z : P :="));
    }

    #[test]
    fn the_plan_lists_each_step_with_its_target() {
        assert_eq!(target_of("theorem t_h1 (p : Prop) (hp : p) :\n    And p p :="), "And p p");
        assert_eq!(plan(&[("h1".into(), "p".into()), ("final".into(), "q".into())]), "1. `h1`: p\n2. `final`: q");
    }
}
