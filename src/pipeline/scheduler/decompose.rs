//! Decomposition: the planner's sketches of a node, tried in turn. A sketch must verify as
//! `incomplete`; the goal at each `sorry` is read from Lean and restated as a subgoal lemma (a
//! node of the DAG, shared by key) that must elaborate on its own; the subgoals are solved
//! concurrently; their proofs are put back (`recompose`) and the whole verified again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use petgraph::graph::NodeIndex;
use tracing::Instrument;

use super::calls::Origin;
use super::{Ctx, Engine, NodeMeta, Role, Subscription, Via};
use crate::lean::lexer::tokenize;
use crate::lean::source::normalize_header;
use crate::model::{Completion, SamplingParams};
use crate::pipeline::dag::{Node, NodeKind, Provenance, Status};
use crate::pipeline::goal::{parse_goal, Lemma};
use crate::pipeline::library::declarations;
use crate::pipeline::prompts::StatementVars;
use crate::pipeline::recompose::{proof_body, recompose, Layout};
use crate::pipeline::sketch::{outline, parse_answer, sorry_sites, SiteKind, SorrySite};
use crate::text::LineIndex;
use crate::verify::{Document, GoalKind, Verdict, VerifyInput};

impl Engine {
    /// Planner sketches, tried in turn.
    pub(super) async fn decompose(self: &Arc<Self>, i: NodeIndex, ctx: &Ctx) -> Result<(String, Via), String> {
        let (name, header, informal, statement) = self.statement_vars(i);
        let vars =
            StatementVars { name: &name, header: &header, informal_statement: &informal, formal_statement: &statement };
        let prompt = self.prompts.sketch(&vars).map_err(|e| e.to_string())?;
        let seed = self.request_seed(i, Role::Sketch);
        let params = SamplingParams { n: self.cfg.sketches.max(1), seed, ..self.cfg.planner.clone() };
        let out = self.generate(self.planner.as_ref(), vec![prompt], params, ctx).await?;
        let mut reasons = Vec::new();
        for (s, c) in out.into_iter().next().unwrap_or_default().into_iter().enumerate() {
            match self.try_sketch(i, ctx, s, &c, seed).await {
                Ok(done) => return Ok(done),
                Err(r) => reasons.push(format!("sketch {s}: {r}")),
            }
        }
        Err(if reasons.is_empty() { "planner: no sketch".to_string() } else { reasons.join("; ") })
    }

    pub(super) async fn try_sketch(
        self: &Arc<Self>,
        i: NodeIndex,
        ctx: &Ctx,
        s: usize,
        c: &Completion,
        seed: Option<u64>,
    ) -> Result<(String, Via), String> {
        let (name, header, _, statement) = self.statement_vars(i);
        let depth = self.with_dag(|d| d.node(i).provenance.depth);
        let answer = parse_answer(&c.text);
        let code = answer.code.clone().ok_or("the planner's answer has no Lean code block")?;
        let input = VerifyInput {
            name: name.clone(),
            header: header.clone(),
            formal_statement: statement.clone(),
            proof: None,
            code: Some(code.clone()),
        };
        let (record, doc) = self.verify_document(&input, ctx).await;
        let from = Origin {
            model: Some(self.planner.describe()),
            completion: Some(c),
            seed,
            ..Origin::engine(&name, Role::Sketch, s)
        };
        self.log(ctx, &from, Some(&input), &record);
        let mut sketch_node = Node::new(
            NodeKind::Sketch,
            &format!("{name}#sketch{s}"),
            &code,
            format!("sketch:{name}:{s}:{}", crate::digest::sha256_hex(&code)),
            Provenance {
                problem: ctx.problem.to_string(),
                depth,
                model: Some(self.planner.describe()),
                ..Default::default()
            },
        );
        sketch_node.informal = Some(answer.informal.clone()).filter(|t| !t.is_empty());
        let k = self.with_dag(|d| d.add_sketch(i, sketch_node));
        let guard = SketchGuard { engine: self.as_ref(), node: k };
        let doc = match (record.verdict, doc) {
            (Verdict::Proved, Some(doc)) => {
                self.set_status(k, Status::Proved, None);
                guard.done();
                return Ok((doc.checked_source(), Via::Planner));
            }
            (Verdict::Incomplete, Some(doc)) => doc,
            (v, _) => {
                let reason = format!("the sketch is {}: {}", v.as_str(), record.reason);
                self.set_status(k, Status::Failed, Some(reason.clone()));
                guard.done();
                return Err(reason);
            }
        };
        self.set_status(k, Status::Decomposing, None);
        let result = self.solve_sketch(i, k, ctx, &input, &doc).await;
        match &result {
            Ok(_) => self.set_status(k, Status::Proved, None),
            Err(r) => self.set_status(k, Status::Failed, Some(r.clone())),
        }
        guard.done();
        result.map(|code| (code, Via::Decomposition))
    }

    /// Decomposes a sketch the verifier called `incomplete`. Everything from here on works on the
    /// text the verifier checked (reference header and statement, the sketch's `open`s turned
    /// into `open … in`, its proof), never on the model's own file.
    pub(super) async fn solve_sketch(
        self: &Arc<Self>,
        parent: NodeIndex,
        k: NodeIndex,
        ctx: &Ctx,
        sketch: &VerifyInput,
        doc: &Document,
    ) -> Result<String, String> {
        let (header, main) = doc.checked_parts();
        // `main` starts with the sketch's helper theorems, if it declared any.
        let proof_at = doc.proof_start - doc.helpers_start;
        let declared = crate::verify::candidate::statement_name(&sketch.formal_statement).unwrap_or_default();
        let outline = outline(main, Some(&declared)).map_err(|e| format!("sketch: {e}"))?;
        let sites: Vec<SorrySite> =
            sorry_sites(main, &outline).into_iter().filter(|s| s.range.start >= proof_at).collect();
        if sites.is_empty() {
            return Err("the sketch has no `sorry` to decompose".into());
        }
        let goals = self.sketch_goals(ctx, header, main, &sites).await?;
        let plan = SketchSites {
            depth: self.with_dag(|d| d.node(parent).provenance.depth),
            k,
            header,
            main,
            outline: &outline,
            sites: &sites,
            have_names: sites.iter().map(|site| have_name(main, site)).collect(),
            eq_notation: tokenize(header).first().map(|t| t.text(header)) != Some("prelude"),
            header_key: normalize_header(header),
            name: &sketch.name,
        };
        let mut created: Vec<NodeIndex> = Vec::new();
        let mut used_names: Vec<String> = Vec::new();
        let mut lemmas = Vec::new();
        let mut subs = Vec::new();
        for (n, goal) in goals.into_iter().enumerate() {
            match self.subgoal_of_site(ctx, &plan, n, goal, &mut used_names, &mut created).await {
                Ok((sub, lemma)) => {
                    subs.push(sub);
                    lemmas.push(lemma);
                }
                Err(e) => {
                    self.abandon(&created);
                    return Err(e);
                }
            }
        }
        self.with_dag(|d| {
            let order: Vec<String> = subs.iter().map(|&i| d.node(i).name.clone()).collect();
            d.node_mut(k).subgoals = order;
        });
        // One screening check for every new subgoal of the sketch, before any is solved.
        if let Some(portfolio) = self.cfg.closers.for_header(header) {
            self.screen(ctx, header, &subs, &portfolio).await;
        }
        // Solve every subgoal; the first failure fails the sketch and drops the others' handles.
        let handles: Vec<Subscription> = subs.iter().map(|&s| self.subscribe(s, ctx.clone())).collect();
        let names: Vec<String> = lemmas.iter().map(|l| l.name.clone()).collect();
        let proofs: Vec<String> = futures::future::try_join_all(
            handles
                .into_iter()
                .zip(names)
                .map(|(h, n)| async move { h.await.map_err(|r| format!("subgoal {n} failed: {r}")) }),
        )
        .await?;
        self.recompose_sketch(ctx, sketch, doc, &plan, &lemmas, &subs, &proofs).await
    }

    /// Lean's goal at each `sorry` of the sketch, read with options that make them readable
    /// back: proofs and `let` values shown, numerals with their types, names in full.
    async fn sketch_goals(
        &self,
        ctx: &Ctx,
        header: &str,
        main: &str,
        sites: &[SorrySite],
    ) -> Result<Vec<Option<String>>, String> {
        let prefix = format!("{header}{GOAL_OPTIONS}");
        let goal_doc = format!("{prefix}{main}\n");
        let index = LineIndex::new(&goal_doc);
        let positions: Vec<(lsp_types::Position, GoalKind)> = sites
            .iter()
            .map(|site| {
                let (line, character) = index.lsp_of_offset(prefix.len() + sorry_offset(main, site));
                let kind = match site.kind {
                    SiteKind::Term => GoalKind::Term,
                    SiteKind::Tactic => GoalKind::Tactic,
                };
                (lsp_types::Position { line, character }, kind)
            })
            .collect();
        ctx.spend.checks.fetch_add(1, Ordering::Relaxed);
        let _busy = self.activity.enter();
        self.verifier
            .goals(header, &goal_doc, positions)
            .instrument(tracing::info_span!("sketch_goals", sites = sites.len()))
            .await
            .map_err(|e| format!("reading the sketch's goals: {e:?}"))
    }

    /// The subgoal node of site `n` (made, or the shared one with its key), linked as needed by
    /// the sketch, with its lemma; an error when the goal cannot be restated or the restated
    /// lemma does not elaborate (the node is marked `unrestatable`). Nodes this call makes are
    /// added to `created`.
    async fn subgoal_of_site(
        self: &Arc<Self>,
        ctx: &Ctx,
        plan: &SketchSites<'_>,
        n: usize,
        goal: Option<String>,
        used_names: &mut Vec<String>,
        created: &mut Vec<NodeIndex>,
    ) -> Result<(NodeIndex, Lemma), String> {
        let site = &plan.sites[n];
        let step = site.step.map(|s| plan.outline.steps[s].name.clone()).or_else(|| plan.have_names[n].clone());
        // Earlier steps are premises: the outline's, and every `have` an earlier site proves.
        let mut premises: Vec<String> = plan
            .outline
            .steps
            .iter()
            .take(site.step.unwrap_or(plan.outline.steps.len()))
            .map(|s| s.name.clone())
            .collect();
        premises.extend(plan.have_names[..n].iter().flatten().cloned());
        // Unique in the run: another sketch of the same theorem has its own `h1`.
        let base = format!("{}_{}", plan.name, sanitize(step.as_deref().unwrap_or("final")));
        let mut lemma_name = base.clone();
        let mut i = 1;
        while used_names.contains(&lemma_name) || self.with_dag(|d| d.has_name(&lemma_name)) {
            i += 1;
            lemma_name = format!("{base}_{i}");
        }
        used_names.push(lemma_name.clone());
        let parsed = goal
            .ok_or_else(|| "Lean reports no goal at this `sorry`".to_string())
            .and_then(|g| parse_goal(&g).map_err(|e| e.to_string()));
        let lemma = parsed.as_ref().ok().map(|g| Lemma::from_goal(&lemma_name, g, &premises, plan.eq_notation));
        let stmt = lemma.as_ref().map_or_else(String::new, |l| l.statement());
        let key = match &lemma {
            Some(l) => l.key(&plan.header_key),
            None => format!("unrestatable:{lemma_name}:{}", crate::digest::sha256_hex(plan.main)),
        };
        let provenance =
            Provenance { problem: ctx.problem.to_string(), step: step.clone(), depth: plan.depth + 1, model: None };
        let mut node = Node::new(NodeKind::Subgoal, &lemma_name, &stmt, key, provenance);
        node.statement_without_premises = lemma.as_ref().map(|l| l.statement_without_premises());
        let (sub, new) = self.with_dag(|d| d.intern(node));
        if new {
            created.push(sub);
            self.meta(sub, NodeMeta { header: plan.header.to_string(), ..Default::default() });
        }
        self.with_dag(|d| d.link(sub, plan.k)).map_err(|e| e.to_string())?;
        let lemma = match (parsed, lemma) {
            (Ok(_), Some(l)) => l,
            (parsed, _) => {
                let e = parsed.err().unwrap_or_default();
                let reason = format!("the goal at `sorry` {n} cannot be restated: {e}");
                self.set_status(sub, Status::Unrestatable, Some(reason.clone()));
                return Err(reason);
            }
        };
        if let Some(reason) = self.lemma_fails_to_elaborate(ctx, sub, &lemma_name, plan.header, &stmt).await {
            self.set_status(sub, Status::Unrestatable, Some(reason.clone()));
            return Err(format!("{lemma_name}: {reason}"));
        }
        Ok((sub, lemma))
    }

    /// Why the restated lemma of node `sub` does not elaborate on its own, if it does not:
    /// checked once per node, whichever sketch meets it first, before anyone tries to prove it.
    async fn lemma_fails_to_elaborate(
        &self,
        ctx: &Ctx,
        sub: NodeIndex,
        lemma_name: &str,
        header: &str,
        stmt: &str,
    ) -> Option<String> {
        if let Some(ok) = self.meta_of(sub).and_then(|m| m.elaborates) {
            return (!ok).then(|| "the restated lemma does not elaborate".to_string());
        }
        let check = VerifyInput {
            name: lemma_name.to_string(),
            header: header.to_string(),
            formal_statement: stmt.to_string(),
            proof: Some(" sorry".into()),
            code: None,
        };
        let record = self.verify(&check, ctx).await;
        self.log(ctx, &Origin::engine(lemma_name, Role::Lemma, 0), Some(&check), &record);
        let ok = record.verdict == Verdict::Incomplete;
        // A check that timed out or crashed says nothing about the statement.
        if matches!(record.verdict, Verdict::Incomplete | Verdict::Failed | Verdict::Rejected | Verdict::InvalidInput) {
            if let Ok(mut m) = self.metas.lock() {
                if let Some(m) = m.get_mut(&sub) {
                    m.elaborates = Some(ok);
                }
            }
        }
        (!ok).then(|| format!("the restated lemma does not elaborate ({}): {}", record.verdict.as_str(), record.reason))
    }

    /// Nodes made for a sketch that failed before they were tried are not left open.
    fn abandon(&self, created: &[NodeIndex]) {
        self.with_dag(|d| {
            for &c in created {
                let node = d.node_mut(c);
                if node.status == Status::Open {
                    node.status = Status::Cancelled;
                    node.reason = Some("its sketch failed before it was tried".into());
                }
            }
        })
    }

    /// The subgoals' proofs put back into the sketch and the whole verified: inline first, then
    /// each lemma applied at its site. The checked source of the first that Lean proves.
    #[allow(clippy::too_many_arguments)]
    async fn recompose_sketch(
        &self,
        ctx: &Ctx,
        sketch: &VerifyInput,
        doc: &Document,
        plan: &SketchSites<'_>,
        lemmas: &[Lemma],
        subs: &[NodeIndex],
        proofs: &[String],
    ) -> Result<String, String> {
        let (header, main, name) = (plan.header, plan.main, plan.name);
        let proof_at = doc.proof_start - doc.helpers_start;
        // A shared node's proof declares the node's own name, not this sketch's lemma name.
        let node_names: Vec<String> = subs.iter().map(|&s| self.with_dag(|d| d.node(s).name.clone())).collect();
        let mut bodies = Vec::with_capacity(subs.len());
        for (node_name, proof) in node_names.iter().zip(proofs) {
            bodies.push(proof_body(proof, node_name).ok_or_else(|| format!("the proof of {node_name} has no body"))?);
        }
        let helpers = subgoal_helpers(main, &node_names, proofs);
        let mut last = String::new();
        for layout in [Layout::Inline, Layout::Applied] {
            let filled = recompose(main, plan.sites, lemmas, &bodies, layout);
            // A sketch with helpers (its own, or its subgoals' proofs') is checked again as a
            // whole file, helpers and all.
            let (proof, code) = if doc.has_helpers() || !helpers.is_empty() {
                (None, Some(format!("{header}{helpers}{filled}\n")))
            } else {
                (Some(filled[proof_at..].trim_start_matches(' ').to_string()), None)
            };
            let input = VerifyInput {
                name: name.to_string(),
                header: sketch.header.clone(),
                formal_statement: sketch.formal_statement.clone(),
                proof,
                code,
            };
            let (record, checked) = self.verify_document(&input, ctx).await;
            self.log(ctx, &Origin::engine(name, Role::Recompose, layout as usize), Some(&input), &record);
            if let (Verdict::Proved, Some(checked)) = (record.verdict, checked) {
                return Ok(checked.checked_source());
            }
            last = format!("recomposed proof ({layout:?}) is {}: {}", record.verdict.as_str(), record.reason);
        }
        Err(last)
    }
}

/// What every site of one sketch shares while its subgoals are made and put back.
struct SketchSites<'a> {
    /// The depth of the node the sketch decomposes.
    depth: u32,
    /// The sketch's own node: every subgoal is needed by it.
    k: NodeIndex,
    header: &'a str,
    /// The checked text after the header: the sketch's helpers, then the theorem.
    main: &'a str,
    outline: &'a crate::pipeline::sketch::Outline,
    sites: &'a [SorrySite],
    /// The `have` each site proves, when it is one.
    have_names: Vec<Option<String>>,
    /// `=` is notation here (not under the fixture's `prelude`).
    eq_notation: bool,
    header_key: String,
    name: &'a str,
}

/// The helper theorems the subgoals' proofs state before their lemmas (library entries they
/// used, helpers their prover wrote), each once, less those the sketch declares itself: a
/// recomposed file states them before the sketch. Two different helpers under one name keep the
/// first (the other proof then fails to check, and so does the recomposition).
fn subgoal_helpers(main: &str, names: &[String], proofs: &[String]) -> String {
    let mut seen: std::collections::HashSet<String> =
        declarations(main, &tokenize(main)).into_iter().map(|(_, n)| n).collect();
    let mut out = String::new();
    for (name, proof) in names.iter().zip(proofs) {
        let text = &proof[crate::lean::source::header_end(proof)..];
        for (range, n) in declarations(text, &tokenize(text)) {
            if &n != name && seen.insert(n) {
                out.push_str(text[range].trim_end());
                out.push_str("\n\n");
            }
        }
    }
    out
}

/// Options for the document goals are read from: what Lean prints must elaborate again.
const GOAL_OPTIONS: &str = "set_option pp.proofs true\nset_option pp.showLetValues true\n\
    set_option pp.numericTypes true\nset_option pp.fullNames true\n";

/// Marks a sketch cancelled if its work is dropped before it is decided.
struct SketchGuard<'a> {
    engine: &'a Engine,
    node: NodeIndex,
}

impl SketchGuard<'_> {
    fn done(self) {
        std::mem::forget(self);
    }
}

impl Drop for SketchGuard<'_> {
    fn drop(&mut self) {
        self.engine.with_dag(|d| {
            let n = d.node_mut(self.node);
            if !n.status.is_final() {
                n.status = Status::Cancelled;
            }
        });
    }
}

/// Byte offset of the `sorry` token in a site (the site may span `by sorry`).
fn sorry_offset(body: &str, site: &SorrySite) -> usize {
    let text = &body[site.range.clone()];
    tokenize(text)
        .iter()
        .rfind(|t| t.text(text) == "sorry")
        .map_or(site.range.start, |t| site.range.start + t.span.start)
}

/// The name of the `have` a site is the proof of (`have h : P := sorry`), if it is one.
fn have_name(body: &str, site: &SorrySite) -> Option<String> {
    let toks = tokenize(&body[..site.range.start]);
    let mut i = toks.len().checked_sub(1)?;
    if toks[i].text(body) != ":=" {
        return None;
    }
    // Back to the `have` this `:=` belongs to, not past another step.
    while i > 0 {
        i -= 1;
        match toks[i].text(body) {
            "have" => {
                let next = toks.get(i + 1)?;
                return Some(match next.text(body) {
                    ":" => "this".to_string(),
                    t if next.kind == crate::lean::lexer::TokenKind::Ident => t.to_string(),
                    _ => return None,
                });
            }
            ":=" | "sorry" | "by" | "=>" | ";" => return None,
            _ => {}
        }
    }
    None
}

/// A step name usable inside a lemma name.
fn sanitize(step: &str) -> String {
    let s: String = step.chars().map(|c| if crate::lean::lexer::is_id_rest(c) { c } else { '_' }).collect();
    if s.is_empty() {
        "step".into()
    } else {
        s
    }
}
