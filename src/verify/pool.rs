//! The worker pool: N Lean servers, each keeping one document open, fed from one queue.
//!
//! Scheduling prefers a job whose import header matches the worker's open document, so a warm
//! worker keeps its imported environment. A timed-out or crashed server is killed and replaced;
//! servers are recycled after `recycle_after` candidates or above `max_rss_mb`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tracing::Instrument;

use lsp_types::Position;

use crate::lean::session::{CheckFailure, Checked, LeanServer, ServerConfig};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub server: ServerConfig,
    pub workers: usize,
    /// Wall-clock limit per candidate.
    pub timeout: Duration,
    /// Replace a server after this many candidates (bounds Lean's per-version memory growth).
    pub recycle_after: u64,
    /// Replace a server whose process tree owns more memory than this (MiB; see `TreeMemory`).
    pub max_rss_mb: Option<u64>,
}

/// Counters over the pool's life.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PoolStats {
    pub checks: u64,
    pub server_starts: u64,
    pub timeouts: u64,
    pub crashes: u64,
    pub recycles: u64,
    /// Queued checks dropped because their caller had gone.
    pub skipped: u64,
}

/// Which goal to ask for first at a position: a tactic's goal (`$/lean/plainGoal`) or a term's
/// expected type (`$/lean/plainTermGoal`). Inside a tactic block a term `sorry` also has a
/// tactic state around it (the enclosing tactic's), which is not its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoalKind {
    Tactic,
    Term,
}

/// A check's result with the goals asked for.
type CheckedWithGoals = Result<(Checked, Vec<Option<String>>), CheckFailure>;

struct Job {
    /// Times a worker passed over this job for one with its own header.
    skipped: u32,
    header_key: String,
    header_text: String,
    text: String,
    /// Positions whose goals are asked for once the check is done.
    goals: Vec<(Position, GoalKind)>,
    reply: oneshot::Sender<CheckedWithGoals>,
}

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    notify: Notify,
    closed: AtomicBool,
    stats: Mutex<PoolStats>,
    /// pids of live servers, by worker index (for tests and diagnostics).
    pids: Mutex<Vec<Option<u32>>>,
}

pub struct WorkerPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts the workers. Servers start lazily, on each worker's first job.
    pub fn start(cfg: PoolConfig) -> WorkerPool {
        let n = cfg.workers.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            stats: Mutex::new(PoolStats::default()),
            pids: Mutex::new(vec![None; n]),
        });
        let handles = (0..n)
            .map(|i| {
                let shared = shared.clone();
                let cfg = cfg.clone();
                tokio::spawn(worker(i, cfg, shared).instrument(tracing::debug_span!("lean_worker", worker = i)))
            })
            .collect();
        WorkerPool { shared, handles }
    }

    /// Queues a document and waits for Lean's answer.
    pub async fn check(&self, header_key: &str, header_text: &str, text: &str) -> Result<Checked, CheckFailure> {
        self.check_with_goals(header_key, header_text, text, vec![]).await.map(|(c, _)| c)
    }

    /// Checks a document, then asks Lean for the goal at each position, of the kind given first
    /// (the tactic goal: `$/lean/plainGoal`'s first goal; the term goal: `$/lean/plainTermGoal`),
    /// else of the other kind. `None` where Lean has neither.
    pub async fn check_with_goals(
        &self,
        header_key: &str,
        header_text: &str,
        text: &str,
        goals: Vec<(Position, GoalKind)>,
    ) -> CheckedWithGoals {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut q) = self.shared.queue.lock() {
            q.push_back(Job {
                skipped: 0,
                header_key: header_key.to_string(),
                header_text: header_text.to_string(),
                text: text.to_string(),
                goals,
                reply: tx,
            });
        }
        self.shared.notify.notify_waiters();
        rx.await.unwrap_or_else(|_| Err(CheckFailure::Crashed("the worker pool shut down".into())))
    }

    pub fn stats(&self) -> PoolStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Process ids of the running servers (one per worker that has started one).
    pub fn server_pids(&self) -> Vec<u32> {
        self.shared.pids.lock().map(|p| p.iter().flatten().copied().collect()).unwrap_or_default()
    }

    /// Stops the workers and kills their servers.
    pub async fn shutdown(mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        for h in std::mem::take(&mut self.handles) {
            let _ = h.await;
        }
    }
}

impl Drop for WorkerPool {
    /// A pool dropped without `shutdown` still stops its workers; aborting a worker task drops its
    /// `LeanServer`, whose own `Drop` kills the Lean process tree.
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        for h in &self.handles {
            h.abort();
        }
    }
}

async fn worker(index: usize, cfg: PoolConfig, shared: Arc<Shared>) {
    let mut server: Option<LeanServer> = None;
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let job = take_job(&shared, server.as_ref().and_then(|s| s.header_key()));
        let Some(job) = job else {
            if shared.closed.load(Ordering::SeqCst) {
                break;
            }
            notified.await;
            continue;
        };
        // Nobody waits for this check any more (its caller was cancelled): skip it.
        if job.reply.is_closed() {
            bump(&shared, |st| st.skipped += 1);
            continue;
        }
        if server.as_ref().is_some_and(|s| s.is_dead()) {
            server = None;
        }
        if server.is_none() {
            match LeanServer::start(&cfg.server).await {
                Ok(s) => {
                    bump(&shared, |st| st.server_starts += 1);
                    set_pid(&shared, index, Some(s.pid()));
                    server = Some(s);
                }
                Err(e) => {
                    let _ = job.reply.send(Err(CheckFailure::Crashed(e.to_string())));
                    continue;
                }
            }
        }
        let Some(s) = server.as_mut() else { continue };
        let result = match s.check(&job.header_key, &job.header_text, &job.text, cfg.timeout).await {
            Ok(c) => Ok((c, goals_at(s, &job.goals).await)),
            Err(e) => Err(e),
        };
        bump(&shared, |st| st.checks += 1);
        match &result {
            Err(CheckFailure::Timeout(_)) => bump(&shared, |st| st.timeouts += 1),
            Err(CheckFailure::Crashed(_)) => bump(&shared, |st| st.crashes += 1),
            Ok(_) => {}
        }
        let recycle = result.is_ok()
            && (s.checks >= cfg.recycle_after
                || cfg.max_rss_mb.is_some_and(|mb| s.memory().owned_bytes > mb * 1024 * 1024));
        if result.is_err() || recycle {
            if recycle {
                bump(&shared, |st| st.recycles += 1);
                tracing::debug!(checks = s.checks, "recycling lean server");
            }
            s.kill();
            server = None;
            set_pid(&shared, index, None);
        }
        let _ = job.reply.send(result);
    }
    if let Some(mut s) = server {
        s.kill();
    }
    set_pid(&shared, index, None);
}

async fn goals_at(server: &LeanServer, positions: &[(Position, GoalKind)]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(positions.len());
    for &(pos, kind) in positions {
        let order = match kind {
            GoalKind::Tactic => [GoalKind::Tactic, GoalKind::Term],
            GoalKind::Term => [GoalKind::Term, GoalKind::Tactic],
        };
        let mut goal = None;
        for k in order {
            goal = match k {
                GoalKind::Tactic => {
                    server.plain_goal(pos).await.ok().flatten().and_then(|g| g.goals.into_iter().next())
                }
                GoalKind::Term => server.plain_term_goal(pos).await.ok().flatten().map(|g| g.goal),
            };
            if goal.is_some() {
                break;
            }
        }
        out.push(goal);
    }
    out
}

/// A job passed over this many times is taken next, whatever its header (no starvation).
const MAX_SKIPS: u32 = 16;

/// Takes the first job with the worker's header, else the oldest job.
fn take_job(shared: &Shared, header: Option<&str>) -> Option<Job> {
    let mut q = shared.queue.lock().ok()?;
    let head_starved = q.front().is_some_and(|j| j.skipped >= MAX_SKIPS);
    let i = if head_starved { 0 } else { header.and_then(|h| q.iter().position(|j| j.header_key == h)).unwrap_or(0) };
    if i > 0 {
        if let Some(head) = q.front_mut() {
            head.skipped += 1;
        }
    }
    q.remove(i)
}

fn bump(shared: &Shared, f: impl FnOnce(&mut PoolStats)) {
    if let Ok(mut s) = shared.stats.lock() {
        f(&mut s);
    }
}

fn set_pid(shared: &Shared, index: usize, pid: Option<u32>) {
    if let Ok(mut p) = shared.pids.lock() {
        if let Some(slot) = p.get_mut(index) {
            *slot = pid;
        }
    }
}
