//! The scheduler: proves problems by whole-proof sampling and recursive decomposition, within
//! budgets, with every candidate through the verifier.
//!
//! A node (theorem or subgoal) is solved by one task however many sketches need it: `subscribe`
//! hands out handles to a shared future, and when the last handle is dropped before the node is
//! done (its sketches failed, or the problem ran out of time) the work is dropped with it: model
//! calls and queued Lean checks are cancelled and the node is marked `cancelled`.
//!
//! Solving a node: (1) the prover samples `k` whole proofs (theorems skip this under
//! `--strategy decompose`), with an optional repair round; (2) if none verifies and the depth
//! allows, the planner writes sketches, tried in turn: a sketch must pass the verifier as
//! `incomplete` (statement kept, only `sorry` missing), each `sorry`'s goal is read from Lean and
//! restated as a lemma that must elaborate on its own, the lemmas are solved concurrently
//! (recursively), and their proofs are put back and the whole verified again.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::dag::{Dag, DagExport, Node, NodeKind, Provenance, Status};
use super::goal::{parse_goal, Lemma};
use super::prompts::{Prompts, RepairVars, StatementVars};
use super::recompose::{proof_body, recompose, Layout};
use super::sketch::{outline, parse_answer, sorry_sites, BlockChoice, SiteKind, SorrySite};
use crate::lean::lexer::tokenize;
use crate::lean::source::normalize_header;
use crate::model::{Completion, FinishReason, GenRequest, Generator, Prompt, SamplingParams};
use crate::text::LineIndex;
use crate::verify::{Document, GoalKind, Verdict, Verifier, VerifyInput, VerifyRecord};

pub use super::problem::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Whole-proof sampling only.
    Whole,
    /// Sketch and decompose the theorem at once.
    Decompose,
    /// Whole-proof sampling first, decomposition when it fails.
    Both,
}

/// Limits per problem (`None`: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub max_model_calls: Option<u64>,
    pub max_tokens: Option<u64>,
    /// Seconds.
    pub max_wall_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub strategy: Strategy,
    /// Decomposition levels: 0 never decomposes; 1 decomposes the theorem only; …
    pub depth: u32,
    /// Prover samples per node (pass@k).
    pub k: usize,
    /// Planner sketches per decomposition, tried in turn.
    pub sketches: usize,
    pub prover: SamplingParams,
    pub planner: SamplingParams,
    /// CoT prover prompt.
    pub cot: bool,
    /// One repair round for failed candidates, with Lean's messages.
    pub repair: bool,
    /// Verify every sample even after one succeeds (pass@k counting); otherwise the first
    /// success stops the rest.
    pub verify_all: bool,
    pub budget: Budget,
    /// Model requests in flight at once.
    pub model_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            strategy: Strategy::Both,
            depth: 2,
            k: 8,
            sketches: 2,
            prover: SamplingParams { max_new_tokens: 2048, ..Default::default() },
            planner: SamplingParams { max_new_tokens: 4096, temperature: 0.6, ..Default::default() },
            cot: false,
            repair: false,
            verify_all: false,
            budget: Budget::default(),
            model_concurrency: 4,
        }
    }
}

/// What produced a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// How a node was proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Prover,
    Repair,
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

/// Counters one problem's budget is charged to.
#[derive(Default)]
struct Spend {
    calls: AtomicU64,
    tokens: AtomicU64,
    checks: AtomicU64,
}

#[derive(Clone)]
struct Ctx {
    problem: Arc<str>,
    spend: Arc<Spend>,
}

type NodeResult = Result<String, String>;

struct Running {
    fut: Shared<BoxFuture<'static, NodeResult>>,
    interest: usize,
    /// Which run of the node this is (a cancelled node may run again later).
    generation: u64,
}

pub struct Engine {
    verifier: Arc<Verifier>,
    prover: Arc<dyn Generator>,
    planner: Arc<dyn Generator>,
    prompts: Prompts,
    cfg: EngineConfig,
    dag: Mutex<Dag>,
    running: Mutex<HashMap<NodeIndex, Running>>,
    /// Header, informal statement and how it was proved, of each theorem and subgoal.
    metas: Mutex<HashMap<NodeIndex, NodeMeta>>,
    generations: AtomicU64,
    model_slots: tokio::sync::Semaphore,
    sink: Option<AttemptSink>,
    /// Time with at least one model call or Lean check in flight is not the engine's own.
    activity: Activity,
}

impl Engine {
    pub fn new(
        verifier: Arc<Verifier>,
        prover: Arc<dyn Generator>,
        planner: Arc<dyn Generator>,
        prompts: Prompts,
        cfg: EngineConfig,
        sink: Option<AttemptSink>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            verifier,
            prover,
            planner,
            prompts,
            model_slots: tokio::sync::Semaphore::new(cfg.model_concurrency.max(1)),
            generations: AtomicU64::new(0),
            cfg,
            dag: Mutex::new(Dag::new()),
            running: Mutex::new(HashMap::new()),
            metas: Mutex::new(HashMap::new()),
            sink,
            activity: Activity::default(),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The whole graph, or one problem's part of it.
    pub fn export_dag(&self, problem: Option<&str>) -> DagExport {
        self.with_dag(|d| d.export(problem))
    }

    /// Forgets a finished problem's part of the graph (see `Dag::retire`); call it once its
    /// outcome and export are written, in runs over many problems.
    pub fn retire(&self, problem: &str) -> usize {
        let running: Vec<NodeIndex> = match self.running.lock() {
            Ok(r) => r.keys().copied().collect(),
            Err(_) => return 0,
        };
        let removed = self.with_dag(|d| d.retire(problem, &running));
        if let Ok(mut m) = self.metas.lock() {
            m.retain(|i, _| !removed.contains(i));
        }
        removed.len()
    }

    /// Nodes in each status, for progress lines.
    pub fn status_counts(&self) -> HashMap<Status, usize> {
        self.with_dag(|d| d.status_counts())
    }

    pub fn dag_is_acyclic(&self) -> bool {
        self.with_dag(|d| d.is_acyclic())
    }

    /// Wall time so far with no model call or Lean check in flight.
    pub fn idle_time(&self) -> Duration {
        self.activity.idle()
    }

    fn with_dag<T>(&self, f: impl FnOnce(&mut Dag) -> T) -> T {
        let mut d = self.dag.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }

    fn set_status(&self, i: NodeIndex, status: Status, reason: Option<String>) {
        self.with_dag(|d| {
            let n = d.node_mut(i);
            n.status = status;
            if reason.is_some() {
                n.reason = reason;
            }
        });
    }

    /// Proves one problem. Never fails: every problem becomes an outcome.
    pub async fn prove(self: &Arc<Self>, problem: &Problem) -> ProblemOutcome {
        let started = Instant::now();
        let ctx = Ctx { problem: Arc::from(problem.name.as_str()), spend: Arc::new(Spend::default()) };
        let span = tracing::info_span!("problem", name = %problem.name);
        // The key keeps the declared name: its namespace decides how the statement's names
        // resolve, so two statements alike but for their names may mean different things.
        let header_key = normalize_header(&problem.header);
        let key = format!("{header_key}\n{}", super::sketch::normalize_statement(&problem.formal_statement));
        let node = Node::new(
            NodeKind::Theorem,
            &problem.name,
            &problem.formal_statement,
            key,
            Provenance { problem: problem.name.clone(), ..Default::default() },
        );
        let (i, _) = self.with_dag(|d| d.intern(node));
        self.meta(
            i,
            NodeMeta {
                header: problem.header.clone(),
                informal: problem.informal_statement.clone(),
                elaborates: None,
                via: None,
            },
        );
        let work = self.subscribe(i, ctx.clone());
        let result = match self.cfg.budget.max_wall_s {
            Some(limit) => match tokio::time::timeout(Duration::from_secs_f64(limit), work).instrument(span).await {
                Ok(r) => r,
                Err(_) => Err(format!("budget: the problem ran past its wall-time limit of {limit} s")),
            },
            None => work.instrument(span).await,
        };
        let via = self.meta_of(i).and_then(|m| m.via);
        let (solved, proof, reason) = match result {
            Ok(code) => (true, Some(code), "proved".to_string()),
            Err(r) => (false, None, r),
        };
        ProblemOutcome {
            name: problem.name.clone(),
            solved,
            via: if solved { via } else { None },
            proof,
            reason,
            model_calls: ctx.spend.calls.load(Ordering::Relaxed),
            tokens: ctx.spend.tokens.load(Ordering::Relaxed),
            lean_checks: ctx.spend.checks.load(Ordering::Relaxed),
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }

    fn meta(&self, i: NodeIndex, m: NodeMeta) {
        if let Ok(mut metas) = self.metas.lock() {
            metas.entry(i).or_insert(m);
        }
    }

    fn meta_of(&self, i: NodeIndex) -> Option<NodeMeta> {
        self.metas.lock().ok()?.get(&i).cloned()
    }

    /// A handle on the node's result, starting its work if nobody has yet. Lock order: `running`
    /// then the graph, here and wherever a node's run starts or ends, so a node is never started
    /// twice nor cancelled after it finished.
    fn subscribe(self: &Arc<Self>, i: NodeIndex, ctx: Ctx) -> Subscription {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = running.get_mut(&i) {
            entry.interest += 1;
            return Subscription {
                engine: self.clone(),
                node: i,
                fut: entry.fut.clone(),
                generation: Some(entry.generation),
            };
        }
        let (status, proof, reason) = self.with_dag(|d| {
            let n = d.node(i);
            (n.status, n.proof.clone(), n.reason.clone())
        });
        let ready = match status {
            Status::Proved => Some(proof.ok_or_else(|| "proved without a proof".to_string())),
            Status::Failed | Status::Unrestatable => Some(Err(reason.unwrap_or_else(|| "failed".into()))),
            _ => None,
        };
        if let Some(r) = ready {
            let fut = futures::future::ready(r).boxed().shared();
            return Subscription { engine: self.clone(), node: i, fut, generation: None };
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let engine = self.clone();
        let fut = async move { engine.solve(i, ctx, generation).await }.boxed().shared();
        running.insert(i, Running { fut: fut.clone(), interest: 1, generation });
        Subscription { engine: self.clone(), node: i, fut, generation: Some(generation) }
    }

    /// A handle on an unfinished node is gone; the last one drops the node's work.
    fn unsubscribe(&self, i: NodeIndex, generation: u64) {
        let dropped = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get_mut(&i) {
                // A handle on an earlier run of the node does not count against this one.
                Some(r) if r.generation == generation => {
                    r.interest = r.interest.saturating_sub(1);
                    if r.interest == 0 {
                        self.with_dag(|d| {
                            let n = d.node_mut(i);
                            if !n.status.is_final() {
                                n.status = Status::Cancelled;
                                n.reason = Some("no sketch needs it any more".into());
                            }
                        });
                        running.remove(&i)
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        // The map's handle on the work is dropped here, outside both locks: dropping the work
        // drops the handles it holds, which lock again.
        drop(dropped);
    }

    /// Ends a node's run: its final status and result go into the graph and its entry leaves
    /// `running` in one step, so no subscriber sees it finished but unrecorded, or the reverse.
    fn finish(&self, i: NodeIndex, generation: u64, result: &NodeResult, via: Option<Via>, out_of_budget: bool) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.with_dag(|d| {
            let n = d.node_mut(i);
            match result {
                Ok(code) => {
                    n.status = Status::Proved;
                    n.reason = None;
                    n.proof = Some(code.clone());
                }
                // Running out of a problem's budget says nothing about the node: another problem
                // that needs it later starts it again.
                Err(r) if out_of_budget => {
                    n.status = Status::Cancelled;
                    n.reason = Some(r.clone());
                }
                Err(r) => {
                    n.status = Status::Failed;
                    n.reason = Some(r.clone());
                }
            }
        });
        if let (Ok(_), Some(v), Ok(mut metas)) = (result, via, self.metas.lock()) {
            if let Some(m) = metas.get_mut(&i) {
                m.via = Some(v);
            }
        }
        let entry = if running.get(&i).is_some_and(|r| r.generation == generation) { running.remove(&i) } else { None };
        drop(running);
        drop(entry);
    }

    async fn solve(self: Arc<Self>, i: NodeIndex, ctx: Ctx, generation: u64) -> NodeResult {
        let (name, kind, depth) = self.with_dag(|d| {
            let n = d.node(i);
            (n.name.clone(), n.kind, n.provenance.depth)
        });
        let span = tracing::info_span!("node", name = %name, depth);
        let (result, via) = async {
            let mut reasons: Vec<String> = Vec::new();
            let whole = kind == NodeKind::Subgoal || self.cfg.strategy != Strategy::Decompose;
            if whole {
                self.set_status(i, Status::Proving, None);
                match self.prove_whole(i, &ctx).await {
                    Ok((code, via)) => return (Ok(code), Some(via)),
                    Err(r) => reasons.push(r),
                }
            }
            let decompose =
                depth < self.cfg.depth && (kind == NodeKind::Subgoal || self.cfg.strategy != Strategy::Whole);
            if decompose {
                self.set_status(i, Status::Decomposing, None);
                match self.decompose(i, &ctx).await {
                    Ok((code, via)) => return (Ok(code), Some(via)),
                    Err(r) => reasons.push(r),
                }
            } else if !whole {
                reasons.push("no strategy applies (depth 0 with --strategy decompose)".into());
            }
            (Err(reasons.join("; ")), None)
        }
        .instrument(span.clone())
        .await;
        self.finish(i, generation, &result, via, self.exhausted(&ctx).is_some());
        let _enter = span.enter();
        match &result {
            Ok(_) => tracing::info!(via = ?via, "node proved"),
            Err(reason) => tracing::info!(%reason, "node failed"),
        }
        result
    }

    /// Charges a model call to the problem's budget, or refuses it.
    fn charge(&self, ctx: &Ctx) -> Result<(), String> {
        if let Some(why) = self.exhausted(ctx) {
            return Err(why);
        }
        ctx.spend.calls.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Why the problem's budget allows no more model calls, if it does not.
    fn exhausted(&self, ctx: &Ctx) -> Option<String> {
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

    async fn generate(
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

    async fn verify(&self, input: &VerifyInput, ctx: &Ctx) -> VerifyRecord {
        self.verify_document(input, ctx).await.0
    }

    /// The verdict, and for a `proved` one the file Lean checked (what is reported as the proof).
    async fn verify_document(&self, input: &VerifyInput, ctx: &Ctx) -> (VerifyRecord, Option<Document>) {
        ctx.spend.checks.fetch_add(1, Ordering::Relaxed);
        let _busy = self.activity.enter();
        self.verifier.verify_document(input).await
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
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

    fn statement_vars(&self, i: NodeIndex) -> (String, String, String, String) {
        let (name, statement) = self.with_dag(|d| (d.node(i).name.clone(), d.node(i).statement.clone()));
        let meta = self.meta_of(i);
        let header = meta.as_ref().map(|m| m.header.clone()).unwrap_or_default();
        let informal = meta.map(|m| m.informal).unwrap_or_default();
        (name, header, informal, statement)
    }

    /// pass@k whole-proof sampling, then the optional repair round.
    async fn prove_whole(&self, i: NodeIndex, ctx: &Ctx) -> Result<(String, Via), String> {
        let (name, header, informal, statement) = self.statement_vars(i);
        let vars =
            StatementVars { name: &name, header: &header, informal_statement: &informal, formal_statement: &statement };
        let prompt = self.prompts.prove(&vars, self.cfg.cot).map_err(|e| e.to_string())?;
        let params = SamplingParams { n: self.cfg.k.max(1), ..self.cfg.prover.clone() };
        let out = self.generate(self.prover.as_ref(), vec![prompt], params, ctx).await?;
        let samples: Vec<Completion> = out.into_iter().next().unwrap_or_default();
        let model = Some(self.prover.describe());
        let mut failures: Vec<(String, String)> = Vec::new();
        let candidates: Vec<(usize, VerifyInput, Completion)> = samples
            .into_iter()
            .enumerate()
            .map(|(s, c)| (s, candidate_input(&name, &header, &statement, &c.text), c))
            .collect();
        let mut found = None;
        {
            let mut pending: FuturesUnordered<_> = candidates
                .iter()
                .map(|(s, input, c)| async move { (*s, input, c, self.verify_document(input, ctx).await) })
                .collect();
            while let Some((s, input, c, (record, doc))) = pending.next().await {
                self.with_dag(|d| d.node_mut(i).attempts += 1);
                self.log(ctx, &name, Role::Prover, s, model.clone(), &input_code(input), Some(c), &record);
                if record.verdict == Verdict::Proved {
                    let better = found.as_ref().is_none_or(|(fs, _)| s < *fs);
                    if let (true, Some(doc)) = (better, doc) {
                        found = Some((s, doc.checked_source()));
                    }
                    if !self.cfg.verify_all {
                        break;
                    }
                } else if record.verdict == Verdict::Failed {
                    failures.push((input_code(input), lean_errors(&record)));
                }
            }
        }
        if let Some((_, code)) = found {
            return Ok((code, Via::Prover));
        }
        let mut reason = format!("prover: no proof in {} samples", self.cfg.k);
        if self.cfg.repair && !failures.is_empty() {
            match self.repair(i, ctx, &name, &header, &statement, failures).await {
                Ok(Some(code)) => return Ok((code, Via::Repair)),
                Ok(None) => reason.push_str(", nor in the repair round"),
                Err(e) => reason.push_str(&format!("; repair: {e}")),
            }
        }
        Err(reason)
    }

    async fn repair(
        &self,
        i: NodeIndex,
        ctx: &Ctx,
        name: &str,
        header: &str,
        statement: &str,
        failures: Vec<(String, String)>,
    ) -> Result<Option<String>, String> {
        let mut prompts = Vec::with_capacity(failures.len());
        for (code, errors) in &failures {
            let v = RepairVars { name, header, formal_statement: statement, candidate: code, errors };
            prompts.push(self.prompts.repair(&v).map_err(|e| e.to_string())?);
        }
        let params = SamplingParams { n: 1, ..self.cfg.prover.clone() };
        let out = self.generate(self.prover.as_ref(), prompts, params, ctx).await?;
        for (s, c) in out.into_iter().flatten().enumerate() {
            let input = candidate_input(name, header, statement, &c.text);
            let (record, doc) = self.verify_document(&input, ctx).await;
            self.with_dag(|d| d.node_mut(i).attempts += 1);
            self.log(ctx, name, Role::Repair, s, Some(self.prover.describe()), &input_code(&input), Some(&c), &record);
            if let (Verdict::Proved, Some(doc)) = (record.verdict, doc) {
                return Ok(Some(doc.checked_source()));
            }
        }
        Ok(None)
    }

    /// Planner sketches, tried in turn.
    async fn decompose(self: &Arc<Self>, i: NodeIndex, ctx: &Ctx) -> Result<(String, Via), String> {
        let (name, header, informal, statement) = self.statement_vars(i);
        let vars =
            StatementVars { name: &name, header: &header, informal_statement: &informal, formal_statement: &statement };
        let prompt = self.prompts.sketch(&vars).map_err(|e| e.to_string())?;
        let params = SamplingParams { n: self.cfg.sketches.max(1), ..self.cfg.planner.clone() };
        let out = self.generate(self.planner.as_ref(), vec![prompt], params, ctx).await?;
        let mut reasons = Vec::new();
        for (s, c) in out.into_iter().next().unwrap_or_default().into_iter().enumerate() {
            match self.try_sketch(i, ctx, s, &c).await {
                Ok(done) => return Ok(done),
                Err(r) => reasons.push(format!("sketch {s}: {r}")),
            }
        }
        Err(if reasons.is_empty() { "planner: no sketch".to_string() } else { reasons.join("; ") })
    }

    async fn try_sketch(
        self: &Arc<Self>,
        i: NodeIndex,
        ctx: &Ctx,
        s: usize,
        c: &Completion,
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
        self.log(ctx, &name, Role::Sketch, s, Some(self.planner.describe()), &code, Some(c), &record);
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
    async fn solve_sketch(
        self: &Arc<Self>,
        parent: NodeIndex,
        k: NodeIndex,
        ctx: &Ctx,
        sketch: &VerifyInput,
        doc: &Document,
    ) -> Result<String, String> {
        let depth = self.with_dag(|d| d.node(parent).provenance.depth);
        let (header, main) = doc.checked_parts();
        let proof_at = doc.proof_start - doc.statement_start;
        let declared = crate::verify::candidate::statement_name(&sketch.formal_statement).unwrap_or_default();
        let outline = outline(main, Some(&declared)).map_err(|e| format!("sketch: {e}"))?;
        let sites: Vec<SorrySite> =
            sorry_sites(main, &outline).into_iter().filter(|s| s.range.start >= proof_at).collect();
        if sites.is_empty() {
            return Err("the sketch has no `sorry` to decompose".into());
        }
        // Goals are read with options that make them readable back: proofs and `let` values
        // shown, numerals with their types, names in full.
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
        let goals = {
            let _busy = self.activity.enter();
            self.verifier
                .goals(header, &goal_doc, positions)
                .instrument(tracing::info_span!("sketch_goals", sites = sites.len()))
                .await
                .map_err(|e| format!("reading the sketch's goals: {e:?}"))?
        };
        let eq_notation = tokenize(header).first().map(|t| t.text(header)) != Some("prelude");
        let header_key = normalize_header(header);
        let mut lemmas = Vec::new();
        let mut subs = Vec::new();
        let mut created: Vec<NodeIndex> = Vec::new();
        let mut used_names: Vec<String> = Vec::new();
        let have_names: Vec<Option<String>> = sites.iter().map(|site| have_name(main, site)).collect();
        let name = &sketch.name;
        let result: Result<(), String> = async {
            for (n, (site, goal)) in sites.iter().zip(goals).enumerate() {
                let step = site.step.map(|s| outline.steps[s].name.clone()).or_else(|| have_names[n].clone());
                // Earlier steps are premises: the outline's, and every `have` an earlier site proves.
                let mut premises: Vec<String> = outline
                    .steps
                    .iter()
                    .take(site.step.unwrap_or(outline.steps.len()))
                    .map(|s| s.name.clone())
                    .collect();
                premises.extend(have_names[..n].iter().flatten().cloned());
                // Unique in the run: another sketch of the same theorem has its own `h1`.
                let base = format!("{name}_{}", sanitize(step.as_deref().unwrap_or("final")));
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
                let lemma = parsed.as_ref().ok().map(|g| Lemma::from_goal(&lemma_name, g, &premises, eq_notation));
                let stmt = lemma.as_ref().map_or_else(String::new, |l| l.statement());
                let key = match &lemma {
                    Some(l) => l.key(&header_key),
                    None => format!("unrestatable:{lemma_name}:{}", crate::digest::sha256_hex(main)),
                };
                let mut node = Node::new(
                    NodeKind::Subgoal,
                    &lemma_name,
                    &stmt,
                    key,
                    Provenance { problem: ctx.problem.to_string(), step: step.clone(), depth: depth + 1, model: None },
                );
                node.statement_without_premises = lemma.as_ref().map(|l| l.statement_without_premises());
                let (sub, new) = self.with_dag(|d| d.intern(node));
                if new {
                    created.push(sub);
                    self.meta(
                        sub,
                        NodeMeta { header: header.to_string(), informal: String::new(), elaborates: None, via: None },
                    );
                }
                self.with_dag(|d| d.link(sub, k)).map_err(|e| e.to_string())?;
                let lemma = match (parsed, lemma) {
                    (Ok(_), Some(l)) => l,
                    (parsed, _) => {
                        let e = parsed.err().unwrap_or_default();
                        let reason = format!("the goal at `sorry` {n} cannot be restated: {e}");
                        self.set_status(sub, Status::Unrestatable, Some(reason.clone()));
                        return Err(reason);
                    }
                };
                // The restated lemma must elaborate on its own before anyone tries to prove it
                // (once per node, whichever sketch meets it first).
                let elaborates = self.meta_of(sub).and_then(|m| m.elaborates);
                let reason = match elaborates {
                    Some(ok) => (!ok).then(|| "the restated lemma does not elaborate".to_string()),
                    None => {
                        let check = VerifyInput {
                            name: lemma_name.clone(),
                            header: header.to_string(),
                            formal_statement: stmt.clone(),
                            proof: Some(" sorry".into()),
                            code: None,
                        };
                        let record = self.verify(&check, ctx).await;
                        self.log(ctx, &lemma_name, Role::Lemma, 0, None, &format!("{stmt} sorry"), None, &record);
                        let ok = record.verdict == Verdict::Incomplete;
                        // A check that timed out or crashed says nothing about the statement.
                        if matches!(
                            record.verdict,
                            Verdict::Incomplete | Verdict::Failed | Verdict::Rejected | Verdict::InvalidInput
                        ) {
                            if let Ok(mut m) = self.metas.lock() {
                                if let Some(m) = m.get_mut(&sub) {
                                    m.elaborates = Some(ok);
                                }
                            }
                        }
                        (!ok).then(|| {
                            format!(
                                "the restated lemma does not elaborate ({}): {}",
                                record.verdict.as_str(),
                                record.reason
                            )
                        })
                    }
                };
                if let Some(reason) = reason {
                    self.set_status(sub, Status::Unrestatable, Some(reason.clone()));
                    return Err(format!("{lemma_name}: {reason}"));
                }
                lemmas.push(lemma);
                subs.push(sub);
            }
            Ok(())
        }
        .await;
        // Nodes made for this sketch that nobody will solve are not left open.
        let abandon = |engine: &Engine| {
            engine.with_dag(|d| {
                for &c in &created {
                    let node = d.node_mut(c);
                    if node.status == Status::Open {
                        node.status = Status::Cancelled;
                        node.reason = Some("its sketch failed before it was tried".into());
                    }
                }
            })
        };
        if let Err(e) = result {
            abandon(self);
            return Err(e);
        }
        self.with_dag(|d| {
            let order: Vec<String> = subs.iter().map(|&i| d.node(i).name.clone()).collect();
            d.node_mut(k).subgoals = order;
        });
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
        // A shared node's proof declares the node's own name, not this sketch's lemma name.
        let mut bodies = Vec::with_capacity(subs.len());
        for (&sub, proof) in subs.iter().zip(&proofs) {
            let node_name = self.with_dag(|d| d.node(sub).name.clone());
            bodies.push(proof_body(proof, &node_name).ok_or_else(|| format!("the proof of {node_name} has no body"))?);
        }
        // Recompose and verify: inline first, then each lemma applied at its site.
        let mut last = String::new();
        for layout in [Layout::Inline, Layout::Applied] {
            let filled = recompose(main, &sites, &lemmas, &bodies, layout);
            let input = VerifyInput {
                name: name.to_string(),
                header: sketch.header.clone(),
                formal_statement: sketch.formal_statement.clone(),
                proof: Some(filled[proof_at..].trim_start_matches(' ').to_string()),
                code: None,
            };
            let (record, checked) = self.verify_document(&input, ctx).await;
            self.log(ctx, name, Role::Recompose, layout as usize, None, &input_code(&input), None, &record);
            if let (Verdict::Proved, Some(checked)) = (record.verdict, checked) {
                return Ok(checked.checked_source());
            }
            last = format!("recomposed proof ({layout:?}) is {}: {}", record.verdict.as_str(), record.reason);
        }
        Err(last)
    }
}

/// Options for the document goals are read from: what Lean prints must elaborate again.
const GOAL_OPTIONS: &str = "set_option pp.proofs true\nset_option pp.showLetValues true\n\
    set_option pp.numericTypes true\nset_option pp.fullNames true\n";

/// Per-node data the graph does not export.
#[derive(Debug, Clone)]
struct NodeMeta {
    header: String,
    informal: String,
    /// Subgoals: whether the restated lemma elaborates on its own (`None`: not checked yet).
    elaborates: Option<bool>,
    /// How it was proved, once it is.
    via: Option<Via>,
}

/// A handle on a node's result; dropping the last one before it finishes cancels the work.
pub struct Subscription {
    engine: Arc<Engine>,
    node: NodeIndex,
    fut: Shared<BoxFuture<'static, NodeResult>>,
    /// The run this handle counts toward (handles on finished nodes count toward none).
    generation: Option<u64>,
}

impl Future for Subscription {
    type Output = NodeResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<NodeResult> {
        self.fut.poll_unpin(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(g) = self.generation {
            self.engine.unsubscribe(self.node, g);
        }
    }
}

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

/// Counts wall time during which nothing external (model, Lean) is in flight.
#[derive(Default)]
struct Activity {
    inner: Mutex<ActivityState>,
}

#[derive(Default)]
struct ActivityState {
    busy: usize,
    idle: Duration,
    since: Option<Instant>,
}

struct Busy<'a>(&'a Activity);

impl Activity {
    fn enter(&self) -> Busy<'_> {
        if let Ok(mut s) = self.inner.lock() {
            if s.busy == 0 {
                if let Some(t) = s.since.take() {
                    s.idle += t.elapsed();
                }
            }
            s.busy += 1;
        }
        Busy(self)
    }

    fn idle(&self) -> Duration {
        match self.inner.lock() {
            Ok(s) => {
                s.idle + if s.busy == 0 { s.since.map_or(Duration::ZERO, |t| t.elapsed()) } else { Duration::ZERO }
            }
            Err(_) => Duration::ZERO,
        }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.inner.lock() {
            s.busy -= 1;
            if s.busy == 0 {
                s.since = Some(Instant::now());
            }
        }
    }
}

/// The verifier input for a model's answer: its last Lean block when it declares the theorem,
/// else its text as the proof after the statement.
fn candidate_input(name: &str, header: &str, statement: &str, text: &str) -> VerifyInput {
    let answer = parse_answer(text);
    let (proof, code) = match answer.code {
        Some(c) => (None, Some(c)),
        None if crate::lean::source::declared_theorems(text).is_empty() => (Some(format!(" {}", text.trim())), None),
        None => (None, Some(text.to_string())),
    };
    VerifyInput {
        name: name.to_string(),
        header: header.to_string(),
        formal_statement: statement.to_string(),
        proof,
        code,
    }
}

fn input_code(input: &VerifyInput) -> String {
    match (&input.code, &input.proof) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) => format!("{}{}{p}", input.header, input.formal_statement),
        (None, None) => String::new(),
    }
}

/// Lean's error messages of a failed candidate, as the repair prompt shows them.
pub fn lean_errors(r: &VerifyRecord) -> String {
    let errors: Vec<String> = r
        .messages
        .iter()
        .filter(|m| m.severity == crate::verify::verdict::Severity::Error)
        .map(|m| format!("line {}: {}", m.start.line, m.text))
        .collect();
    if errors.is_empty() {
        r.reason.clone()
    } else {
        errors.join("\n")
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
