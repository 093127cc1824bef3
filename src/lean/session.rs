//! One `lean --server` process and the document it checks: start and `initialize`, open or
//! change the document, the `waitForDiagnostics` barrier under a wall-clock timeout, goal queries,
//! and killing the whole process tree.
//!
//! Policy (which diagnostics make a proof) lives in `verify`; this module only reports what Lean
//! said, or that it did not finish (`CheckFailure`). A timeout or a crash is never a result.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lsp_types::Position;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::discovery::LeanInstall;
use super::protocol::{self, FileProgress, LeanDiagnostic, PlainGoal, PlainTermGoal, PublishDiagnostics};
use crate::lsp::rpc::{Notification, RpcClient, RpcError};
use crate::process::{kill_procs, snapshot_tree, tree_memory, watch_tree, ProcId, ProcessLimits, TreeMemory};

/// How long a server may be without a file worker during a check before it counts as crashed.
const WORKER_GRACE: Duration = Duration::from_secs(3);
use crate::sandbox::{Sandbox, SandboxError, SandboxPolicy};

/// How to start each server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub install: LeanInstall,
    /// `-DmaxHeartbeats=` (Lean's per-command deterministic limit, in thousands of allocations).
    pub max_heartbeats: Option<u64>,
    /// Lean's own `--memory=` cap, in MiB.
    pub memory_mb: Option<u64>,
    /// `LEAN_NUM_THREADS` for the server and its workers.
    pub threads: Option<usize>,
    pub limits: ProcessLimits,
    /// The sandbox every server (and its file workers) runs in.
    pub sandbox: SandboxPolicy,
    /// Memory the server and its file workers own (MiB; anonymous pages, not the mapped `.olean`
    /// files they share) above which a check is stopped and the server killed: the bound that
    /// holds where an address-space limit cannot (Lean reserves far more address space than it
    /// uses, and GMP allocates outside `--memory`).
    pub kill_rss_mb: Option<u64>,
    /// Limit for protocol round trips that are not checks (`initialize`, goal queries).
    pub request_timeout: Duration,
    /// Limit for loading a new import header (not charged to the candidate's own timeout).
    pub import_timeout: Duration,
}

impl ServerConfig {
    /// The sandbox policy with the Lean toolchain added to what may be executed.
    pub fn sandbox_policy(&self) -> SandboxPolicy {
        let mut p = self.sandbox.clone();
        p.exec_roots.extend(crate::sandbox::toolchain_root(self.install.lean()));
        p
    }

    /// What this machine's kernel supports (probed once, with this Lean).
    pub fn sandbox_support(&self) -> crate::sandbox::Support {
        crate::sandbox::support(self.install.lean())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("could not start the Lean server `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the Lean server did not initialize: {0}")]
    Initialize(RpcError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("no document is open")]
    NoDocument,
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

/// Why a check produced no diagnostics to judge.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckFailure {
    /// The wall-clock limit passed before Lean finished; the server was killed.
    Timeout(Duration),
    /// The server or its file worker died; `detail` has what is known (exit status, stderr tail).
    Crashed(String),
}

/// What Lean reported for one version of the document.
#[derive(Debug, Clone)]
pub struct Checked {
    pub diagnostics: Vec<LeanDiagnostic>,
    /// The tokens Lean's parser saw in the document (its semantic tokens, every kind), when
    /// asked for; `None` when the server reported none.
    pub tokens: Option<Vec<protocol::SemanticToken>>,
    pub version: i64,
    pub elapsed: Duration,
}

/// What the server has told us about documents, kept current by a task that drains
/// notifications as they arrive (only the latest diagnostics per document are held: Lean sends
/// the full set each time, so queueing them all would grow quadratically).
#[derive(Default)]
struct Inbox {
    diagnostics: std::collections::HashMap<String, (Option<i64>, Vec<LeanDiagnostic>)>,
    fatal: std::collections::HashSet<String>,
}

/// Starts the inbox task; the watch counts notifications handled, to sync with `routed`.
fn spawn_inbox(mut notes: mpsc::UnboundedReceiver<Notification>) -> (Arc<Mutex<Inbox>>, watch::Receiver<u64>) {
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let state = inbox.clone();
    let (handled_tx, handled_rx) = watch::channel(0u64);
    tokio::spawn(async move {
        while let Some(n) = notes.recv().await {
            handle_note(&state, n);
            handled_tx.send_modify(|c| *c += 1);
        }
    });
    (inbox, handled_rx)
}

fn handle_note(state: &Mutex<Inbox>, n: Notification) {
    match n.method.as_str() {
        protocol::PUBLISH_DIAGNOSTICS => {
            if let Ok(p) = serde_json::from_value::<PublishDiagnostics>(n.params) {
                if let Ok(mut s) = state.lock() {
                    s.diagnostics.insert(p.uri, (p.version, p.diagnostics));
                }
            }
        }
        protocol::FILE_PROGRESS => {
            if let Ok(p) = serde_json::from_value::<FileProgress>(n.params) {
                if p.is_fatal() {
                    if let Ok(mut s) = state.lock() {
                        s.fatal.insert(p.text_document.uri);
                    }
                }
            }
        }
        _ => {}
    }
}

struct OpenDoc {
    uri: String,
    version: i64,
    header_key: String,
}

pub struct LeanServer {
    child: tokio::process::Child,
    pid: u32,
    rpc: RpcClient,
    inbox: Arc<Mutex<Inbox>>,
    handled: watch::Receiver<u64>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    root: PathBuf,
    /// Owns the scratch directory (removed when the server is dropped).
    _sandbox: Sandbox,
    doc: Option<OpenDoc>,
    docs_opened: u64,
    killed: bool,
    /// The process tree as last seen alive: file workers run in their own sessions and are
    /// orphaned if the server dies first, so they are remembered to be killed by identity.
    known_tree: Vec<ProcId>,
    request_timeout: Duration,
    import_timeout: Duration,
    kill_rss_mb: Option<u64>,
    /// The `keyword` index in the server's semantic-token legend.
    keyword_type: Option<u32>,
    /// Candidates checked since start.
    pub checks: u64,
}

impl LeanServer {
    pub async fn start(cfg: &ServerConfig) -> Result<LeanServer, SessionError> {
        let args = ["--server".to_string(), "-Dserver.reportDelayMs=0".to_string()];
        let super::launch::Launch { mut cmd, sandbox, shown } = super::launch::lean_command(cfg, &args, None)?;
        let root = sandbox.path().to_path_buf();
        let mut child = cmd.spawn().map_err(|source| SessionError::Spawn { command: shown.clone(), source })?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SessionError::Spawn { command: shown, source: std::io::Error::other("no stdio pipes") });
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn({
            let tail = stderr_tail.clone();
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(target: "subgoal::lean::stderr", pid, "{line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() >= 40 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            }
        });
        let (rpc, notes) = RpcClient::start(BufReader::new(stdout), stdin);
        let (inbox, handled) = spawn_inbox(notes);
        let mut server = LeanServer {
            child,
            pid,
            rpc,
            inbox,
            handled,
            stderr_tail,
            root,
            _sandbox: sandbox,
            doc: None,
            docs_opened: 0,
            killed: false,
            known_tree: Vec::new(),
            request_timeout: cfg.request_timeout,
            import_timeout: cfg.import_timeout,
            kill_rss_mb: cfg.kill_rss_mb,
            keyword_type: None,
            checks: 0,
        };
        let root_uri = file_uri(&server.root);
        let init = server
            .rpc
            .request("initialize", protocol::initialize_params(&root_uri), cfg.request_timeout)
            .instrument(tracing::debug_span!("lean_request", method = "initialize", pid))
            .await;
        match init {
            Err(e) => {
                server.kill();
                return Err(SessionError::Initialize(e));
            }
            Ok(result) => server.keyword_type = protocol::keyword_token_type(&result),
        }
        server.rpc.notify("initialized", serde_json::json!({}))?;
        tracing::debug!(pid, root = %server.root.display(), "lean server started");
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Header key of the open document, if any: a check with the same key reuses the imports.
    pub fn header_key(&self) -> Option<&str> {
        self.doc.as_ref().map(|d| d.header_key.as_str())
    }

    /// Memory of the server and its file workers (see `TreeMemory`: limits use `owned_bytes`).
    pub fn memory(&self) -> TreeMemory {
        tree_memory(self.pid)
    }

    /// Checks `text` as the next version of the document. A document with the same `header_key`
    /// is changed in place (Lean reuses the imported environment); another header opens a new
    /// document holding only `header_text` first, so the import is paid (and limited) apart from
    /// the candidate's `timeout`. On timeout or crash the server is killed and must be replaced.
    pub async fn check(
        &mut self,
        header_key: &str,
        header_text: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Checked, CheckFailure> {
        if self.header_key() != Some(header_key) {
            let import_timeout = self.import_timeout;
            let span = tracing::debug_span!("import_header", header = header_key);
            let header = self.check_version(header_key, header_text, import_timeout, false).instrument(span).await?;
            // A header Lean refuses (unknown module, …) is the answer for every document under it.
            if header.diagnostics.iter().any(|d| d.severity == Some(protocol::severity::ERROR)) {
                self.kill();
                return Ok(header);
            }
        }
        self.checks += 1;
        self.check_version(header_key, text, timeout, true).await
    }

    async fn check_version(
        &mut self,
        header_key: &str,
        text: &str,
        timeout: Duration,
        tokens: bool,
    ) -> Result<Checked, CheckFailure> {
        let started = Instant::now();
        let (uri, version) = match self.send_text(header_key, text) {
            Ok(uv) => uv,
            Err(e) => return Err(self.crashed(e.to_string())),
        };
        let request = self
            .rpc
            .request(protocol::WAIT_FOR_DIAGNOSTICS, protocol::wait_for_diagnostics_params(&uri, version), timeout)
            .instrument(tracing::debug_span!("lean_request", method = protocol::WAIT_FOR_DIAGNOSTICS, version));
        // Lean may never answer for a document whose file worker died before reporting, and a
        // worker may outgrow memory long before its deadline: watch the tree meanwhile.
        let watch = watch_tree(self.pid, self.kill_rss_mb, Some(WORKER_GRACE));
        let reply = tokio::select! {
            r = request => r,
            alarm = watch => return Err(self.crashed(alarm.to_string())),
        };
        match reply {
            Ok(_) => {}
            Err(RpcError::Timeout { .. }) => {
                self.kill();
                return Err(CheckFailure::Timeout(timeout));
            }
            Err(e) => return Err(self.crashed(e.to_string())),
        }
        // The barrier's reply follows every notification for this version on the stream; wait
        // until the inbox task has handled all of them.
        let target = self.rpc.notifications_routed();
        let mut handled = self.handled.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), handled.wait_for(|h| *h >= target)).await;
        let (latest, fatal) = match self.inbox.lock() {
            Ok(mut s) => {
                let fatal = s.fatal.remove(&uri);
                let latest = s.diagnostics.remove(&uri).filter(|(v, _)| v.is_none_or(|v| v == version)).map(|(_, d)| d);
                (latest, fatal)
            }
            Err(_) => (None, false),
        };
        let errors = latest.as_ref().is_some_and(|ds| ds.iter().any(|d| d.severity == Some(protocol::severity::ERROR)));
        if fatal {
            // A fatal error with an error message is Lean refusing the document (e.g. an unknown
            // import): a result. Without one it is a crash. Either way the worker is unusable.
            if !errors {
                return Err(self.crashed("the file worker reported a fatal error".into()));
            }
            self.kill();
        } else if self.rpc.is_closed() {
            return Err(self.crashed("the server exited during the check".into()));
        }
        self.known_tree = snapshot_tree(self.pid);
        let elapsed = started.elapsed();
        let tokens = if tokens && !fatal { self.lean_tokens(&uri).await } else { None };
        Ok(Checked { diagnostics: latest.unwrap_or_default(), tokens, version, elapsed })
    }

    /// Tokens of the open document, from Lean's semantic tokens (elaboration has finished
    /// when this is asked, so the answer covers the whole document). The `range` request, not
    /// `full`: Lean 4.35's server keeps one thread per answered `full` request alive (about 1 GB
    /// of address space each; a worker died of it after ~20 candidates), `range` does not.
    async fn lean_tokens(&self, uri: &str) -> Option<Vec<protocol::SemanticToken>> {
        let kw = self.keyword_type?;
        let result = self
            .rpc
            .request(protocol::SEMANTIC_TOKENS_RANGE, protocol::whole_document_range_params(uri), self.request_timeout)
            .instrument(tracing::debug_span!("lean_request", method = protocol::SEMANTIC_TOKENS_RANGE))
            .await
            .ok()?;
        let mut tokens = protocol::decode_semantic_tokens(&result)?;
        for t in &mut tokens {
            t.keyword = t.token_type == kw;
        }
        Some(tokens)
    }

    /// `$/lean/plainGoal` at a position of the open document (`None` outside tactic proofs).
    pub async fn plain_goal(&self, pos: Position) -> Result<Option<PlainGoal>, SessionError> {
        self.query(protocol::PLAIN_GOAL, pos).await
    }

    /// `$/lean/plainTermGoal` at a position of the open document.
    pub async fn plain_term_goal(&self, pos: Position) -> Result<Option<PlainTermGoal>, SessionError> {
        self.query(protocol::PLAIN_TERM_GOAL, pos).await
    }

    async fn query<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        pos: Position,
    ) -> Result<Option<T>, SessionError> {
        let doc = self.doc.as_ref().ok_or(SessionError::NoDocument)?;
        let v: Value = self
            .rpc
            .request(method, protocol::position_params(&doc.uri, pos), self.request_timeout)
            .instrument(tracing::debug_span!("lean_request", method))
            .await?;
        Ok(serde_json::from_value(v).ok())
    }

    fn send_text(&mut self, header_key: &str, text: &str) -> Result<(String, i64), RpcError> {
        if let Some(doc) = self.doc.as_mut().filter(|d| d.header_key == header_key) {
            doc.version += 1;
            self.rpc.notify("textDocument/didChange", protocol::did_change_params(&doc.uri, doc.version, text))?;
            return Ok((doc.uri.clone(), doc.version));
        }
        if let Some(old) = self.doc.take() {
            self.rpc.notify("textDocument/didClose", protocol::did_close_params(&old.uri))?;
        }
        self.docs_opened += 1;
        let uri = file_uri(&self.root.join(format!(".subgoal_check_{}_{}.lean", std::process::id(), self.docs_opened)));
        self.rpc.notify("textDocument/didOpen", protocol::did_open_params(&uri, 1, text))?;
        self.doc = Some(OpenDoc { uri: uri.clone(), version: 1, header_key: header_key.to_string() });
        Ok((uri, 1))
    }

    fn crashed(&mut self, detail: String) -> CheckFailure {
        // Kill before reaping: once the server is reaped its pid no longer leads to its workers.
        self.kill();
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!(" (server exit: {s})"),
            _ => String::new(),
        };
        let tail = self.stderr_tail();
        if tail.is_empty() {
            CheckFailure::Crashed(format!("{detail}{status}"))
        } else {
            CheckFailure::Crashed(format!("{detail}{status}; stderr: {tail}"))
        }
    }

    fn stderr_tail(&self) -> String {
        self.stderr_tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | ")).unwrap_or_default()
    }

    /// Kills the server and every process under it. Idempotent.
    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            if self.pid != 0 {
                let mut procs = snapshot_tree(self.pid);
                procs.extend(self.known_tree.iter().filter(|p| !procs.contains(p)).copied().collect::<Vec<_>>());
                kill_procs(&procs);
            }
            let _ = self.child.start_kill();
        }
    }

    pub fn is_dead(&self) -> bool {
        self.killed || self.rpc.is_closed()
    }
}

impl Drop for LeanServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `file://` URI of an absolute path, percent-encoding what URIs do not allow.
pub fn file_uri(path: &std::path::Path) -> String {
    let mut out = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
