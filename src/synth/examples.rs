//! One solved problem's examples: the CoT example (the planner's analysis, a plan, the sketch,
//! the complete proof, in the paper's four sections) and each proved subgoal's, in the paper's
//! two forms. Nothing here checks a proof; `build` re-verifies what this makes.

use std::collections::BTreeMap;

use super::{Example, ExampleKind, LemmaForm, PartSource, Provenance, Solved};
use crate::bench::RunConfig;
use crate::digest::sha256_hex;
use crate::pipeline::dag::{DagExport, ExportNode, NodeKind, Status};
use crate::pipeline::prompts::{PromptError, Prompts, StatementVars};
use crate::verify::Verdict;

/// The examples one solved problem gives, before re-verification: its CoT example and one per
/// proved subgoal in form (b) and, with `form_a_proof` for it, form (a).
pub fn examples_of(
    s: &Solved,
    config: &RunConfig,
    prompts: &Prompts,
    form_a_proofs: &BTreeMap<String, String>,
) -> Result<Vec<Example>, PromptError> {
    let Some(proof) = &s.result.outcome.proof else { return Ok(Vec::new()) };
    let base = Provenance {
        problem: s.problem.name.clone(),
        dataset: config.dataset.name.clone(),
        planner: None,
        prover: PartSource { model: config.prover.describe.clone(), sampling: config.engine.prover.clone() },
        lean_version: config.lean_version.clone(),
        verdict: Verdict::Proved,
        recheck_agreed: false,
        via: s.result.outcome.via,
        problem_elapsed_ms: s.result.outcome.elapsed_ms,
        content_sha256: String::new(),
    };
    let mut out = Vec::new();
    if let Some(sketch) = proving_sketch(s.dag) {
        let planner = PartSource { model: config.planner.describe.clone(), sampling: config.engine.planner.clone() };
        out.push(cot_example(s, sketch, proof, prompts, Provenance { planner: Some(planner), ..base.clone() })?);
    }
    let proved = s.dag.nodes.iter().filter(|n| n.node.kind == NodeKind::Subgoal && n.node.status == Status::Proved);
    for n in proved {
        out.extend(subgoal_examples(s, n, form_a_proofs, prompts, &base)?);
    }
    for e in &mut out {
        e.provenance.content_sha256 = sha256_hex(format!("{}\u{0}{}", e.prompt, e.completion));
    }
    Ok(out)
}

/// The proved sketch node that proved the theorem.
fn proving_sketch(dag: &DagExport) -> Option<&ExportNode> {
    let theorem = dag.nodes.iter().find(|n| n.node.kind == NodeKind::Theorem)?;
    dag.edges
        .iter()
        .filter(|[_, to]| *to == theorem.id)
        .filter_map(|[from, _]| dag.nodes.iter().find(|n| n.id == *from))
        .find(|n| n.node.kind == NodeKind::Sketch && n.node.status == Status::Proved)
}

/// The theorem's example: the prover's prompt, and the planner's analysis, the plan (the
/// sketch's subgoals in the order of its `sorry`s), the sketch and the complete proof.
fn cot_example(
    s: &Solved,
    sketch: &ExportNode,
    proof: &str,
    prompts: &Prompts,
    provenance: Provenance,
) -> Result<Example, PromptError> {
    let subgoals: Vec<(String, String)> = sketch
        .node
        .subgoals
        .iter()
        .filter_map(|name| s.dag.nodes.iter().find(|n| n.node.kind == NodeKind::Subgoal && &n.node.name == name))
        .map(|n| (n.node.provenance.step.clone().unwrap_or_else(|| "final".into()), target_of(&n.node.statement)))
        .collect();
    let vars = StatementVars {
        name: &s.problem.name,
        header: &s.problem.header,
        informal_statement: &s.problem.informal_statement,
        formal_statement: &s.problem.formal_statement,
    };
    Ok(Example {
        kind: ExampleKind::Cot,
        form: None,
        name: s.problem.name.clone(),
        header: s.problem.header.clone(),
        statement: s.problem.formal_statement.clone(),
        proof: proof.to_string(),
        prompt: text(prompts.prove(&vars, true)?),
        completion: cot_completion(
            sketch.node.informal.as_deref().unwrap_or(""),
            &plan(&subgoals),
            &sketch.node.statement,
            proof,
        ),
        provenance,
    })
}

/// A proved subgoal's examples: form (b) always, form (a) where its statement differs and
/// `form_a_proofs` has a proof of it.
fn subgoal_examples(
    s: &Solved,
    n: &ExportNode,
    form_a_proofs: &BTreeMap<String, String>,
    prompts: &Prompts,
    base: &Provenance,
) -> Result<Vec<Example>, PromptError> {
    let Some(lemma_proof) = &n.node.proof else { return Ok(Vec::new()) };
    let mut forms = vec![(LemmaForm::WithPremises, n.node.statement.clone(), lemma_proof.clone())];
    if let (Some(a), Some(pa)) = (&n.node.statement_without_premises, form_a_proofs.get(&n.node.name)) {
        if a != &n.node.statement {
            forms.push((LemmaForm::WithoutPremises, a.clone(), pa.clone()));
        }
    }
    forms
        .into_iter()
        .map(|(form, statement, proof)| {
            let vars = StatementVars {
                name: &n.node.name,
                header: &s.problem.header,
                informal_statement: "",
                formal_statement: &statement,
            };
            Ok(Example {
                kind: ExampleKind::Subgoal,
                form: Some(form),
                name: n.node.name.clone(),
                header: s.problem.header.clone(),
                prompt: text(prompts.prove(&vars, false)?),
                completion: format!("```lean4\n{}\n```\n", proof.trim_end()),
                statement,
                proof,
                provenance: Provenance { via: n.node.via, ..base.clone() },
            })
        })
        .collect()
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

fn text(p: crate::model::Prompt) -> String {
    match p {
        crate::model::Prompt::Text(t) => t,
        crate::model::Prompt::Chat(m) => m.into_iter().map(|m| m.content).collect::<Vec<_>>().join("\n"),
    }
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
    fn the_plan_lists_each_step_with_its_target() {
        assert_eq!(target_of("theorem t_h1 (p : Prop) (hp : p) :\n    And p p :="), "And p p");
        assert_eq!(plan(&[("h1".into(), "p".into()), ("final".into(), "q".into())]), "1. `h1`: p\n2. `final`: q");
    }
}
