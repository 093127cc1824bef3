//! The scheduler: proves problems by whole-proof sampling and recursive decomposition, within
//! budgets, with every candidate through the verifier. This module owns the nodes' lifecycle: a
//! node (theorem or subgoal) is solved by one task however many sketches need it: `subscribe`
//! hands out handles to a shared future, and when the last handle is dropped before the node is
//! done (its sketches failed, or the problem ran out of time) the work is dropped with it: model
//! calls and queued Lean checks are cancelled and the node is marked `cancelled`.
//!
//! Solving a node: (0) the automation portfolio is tried (`closing`: one screening check, batched
//! over a sketch's new subgoals, then the chosen tactic verified), (1) the prover samples `k` whole proofs (`whole`; theorems skip this under
//! `--strategy decompose`), then up to `repair` self-correction rounds; prompts offer the run's
//! lemma library; (2) if none verifies and the depth
//! allows, the planner writes sketches, tried in turn (`decompose`): a sketch must pass the
//! verifier as `incomplete` (statement kept, only `sorry` missing), each `sorry`'s goal is read
//! from Lean and restated as a lemma that must elaborate on its own, the lemmas are solved
//! concurrently (recursively), and their proofs are put back and the whole verified again.
//! Every model call and Lean check goes through `calls`, which charges the problem's budget,
//! derives the request's seed and writes the attempt record; `activity` measures the engine's
//! own time.

mod activity;
mod calls;
mod closing;
mod decompose;
mod whole;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use petgraph::graph::NodeIndex;
use tracing::Instrument;

use self::activity::Activity;
use super::dag::{Dag, DagExport, Node, NodeKind, Provenance, Status};
use super::library::Library;
use super::prompts::Prompts;
use crate::lean::source::normalize_header;
use crate::model::Generator;
use crate::verify::Verifier;

pub use self::calls::derive_seed;
pub use super::config::{Budget, EngineConfig, Strategy};
pub use super::problem::Problem;
pub use super::records::{Attempt, AttemptSink, ProblemOutcome, Role, Via};

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
    /// Every statement the run has proved, offered to later prompts.
    library: Library,
    /// Closer screening checks run (each covers a batch of statements).
    screens: AtomicU64,
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
            library: Library::default(),
            screens: AtomicU64::new(0),
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

    /// Closer screening checks run so far (one per batch of statements).
    pub fn closer_screens(&self) -> u64 {
        self.screens.load(Ordering::Relaxed)
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
                ..Default::default()
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
        let via = self.with_dag(|d| d.node(i).via);
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
                    n.via = via;
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
        if let Ok(code) = result {
            let (kind, name, statement, problem) = self.with_dag(|d| {
                let n = d.node(i);
                (n.kind, n.name.clone(), n.statement.clone(), n.provenance.problem.clone())
            });
            if kind != NodeKind::Sketch {
                let header = self.meta_of(i).map(|m| m.header).unwrap_or_default();
                self.library.add(&problem, &header, &name, &statement, code);
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
            if let Some(code) = self.close(i, &ctx).await {
                return (Ok(code), Some(Via::Closer));
            }
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
}

/// Per-node data the graph does not export.
#[derive(Debug, Clone, Default)]
struct NodeMeta {
    header: String,
    informal: String,
    /// Subgoals: whether the restated lemma elaborates on its own (`None`: not checked yet).
    elaborates: Option<bool>,
    /// Model requests the node has made, by role (for request seeds).
    requests: HashMap<Role, u32>,
    /// The closer screen's answer: the portfolio tactics that closed the statement, in order
    /// (empty: none did; `None`: not screened yet).
    closer: Option<Vec<usize>>,
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
