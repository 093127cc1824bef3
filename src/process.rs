//! Child-process control for every Lean process subgoal starts: its own session (so the whole
//! tree can be killed), resource limits, a death signal tied to subgoal, and reading the process
//! tree from `/proc` (to kill it or measure its memory).
//!
//! Invariant: every Lean child is started through `limit_command_with` (via `sandbox::Sandbox`),
//! and every kill goes through `kill_procs`, which signals a process only while its pid still
//! names the same process.

use std::collections::HashMap;

/// OS limits applied to a child before it runs Lean. `None` leaves the inherited limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessLimits {
    /// RLIMIT_AS, in MiB.
    pub address_space_mb: Option<u64>,
    /// RLIMIT_CPU, in seconds (only for one-shot processes; a warm server accumulates CPU time).
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_FSIZE, in MiB.
    pub file_size_mb: Option<u64>,
    /// RLIMIT_NPROC: processes (threads included) of the user. The kernel does not apply it to
    /// root, and it counts every process of the user, not only this tree.
    pub processes: Option<u64>,
}

/// What a child does between fork and exec beyond rlimits (see `sandbox`).
#[derive(Debug, Clone, Default)]
pub struct ChildSetup {
    pub net: Option<crate::confine::NetPlan>,
    /// Landlock ruleset descriptor to enforce, or -1.
    pub landlock_fd: i32,
}

/// Puts the child in a new session and applies `limits` between fork and exec.
pub fn limit_command(cmd: &mut tokio::process::Command, limits: &ProcessLimits) {
    limit_command_with(cmd, limits, ChildSetup { net: None, landlock_fd: -1 });
}

/// `limit_command`, then the sandbox steps of `setup`.
pub fn limit_command_with(cmd: &mut tokio::process::Command, limits: &ProcessLimits, setup: ChildSetup) {
    let limits = limits.clone();
    // SAFETY: the closure runs in the forked child before exec and only makes syscalls on data
    // prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || child_setup(&limits, &setup));
    }
}

/// The same for a blocking `std::process::Command` (probes).
pub fn limit_std_command(cmd: &mut std::process::Command, limits: &ProcessLimits, setup: ChildSetup) {
    use std::os::unix::process::CommandExt;
    let limits = limits.clone();
    // SAFETY: as in `limit_command_with`.
    unsafe {
        cmd.pre_exec(move || child_setup(&limits, &setup));
    }
}

/// Runs in the child between fork and exec. Order matters: namespaces before the death signal
/// (entering a user namespace clears it), Landlock last (it needs no_new_privs).
fn child_setup(limits: &ProcessLimits, setup: &ChildSetup) -> std::io::Result<()> {
    // SAFETY: async-signal-safe syscalls only.
    unsafe {
        if libc::setsid() < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    set_limit(libc::RLIMIT_AS, limits.address_space_mb.map(|m| m * 1024 * 1024))?;
    set_limit(libc::RLIMIT_CPU, limits.cpu_seconds)?;
    set_limit(libc::RLIMIT_NOFILE, limits.open_files)?;
    set_limit(libc::RLIMIT_FSIZE, limits.file_size_mb.map(|m| m * 1024 * 1024))?;
    set_limit(libc::RLIMIT_NPROC, limits.processes)?;
    if let Some(net) = &setup.net {
        net.enter()?;
    }
    // Die with subgoal, so a killed run leaves no Lean server behind.
    // SAFETY: plain prctl.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    crate::confine::restrict_self(setup.landlock_fd)
}

fn set_limit(resource: libc::__rlimit_resource_t, value: Option<u64>) -> std::io::Result<()> {
    let Some(v) = value else { return Ok(()) };
    let lim = libc::rlimit { rlim_cur: v as libc::rlim_t, rlim_max: v as libc::rlim_t };
    // SAFETY: plain syscall on a stack value.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `pid` and all its descendants, parents before children, read from `/proc`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c.iter().copied().filter(|c| !out.contains(c)).collect::<Vec<_>>());
        }
        i += 1;
    }
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A process as identified at one moment: its pid and start time, so a later signal never hits
/// an unrelated process that reused the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: u32,
    pub start_time: u64,
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 overall; after the `(comm)` field it is the 20th.
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(19)?.parse().ok()
}

/// `pid` and its descendants with their start times.
pub fn snapshot_tree(pid: u32) -> Vec<ProcId> {
    process_tree(pid).into_iter().filter_map(|p| Some(ProcId { pid: p, start_time: start_time(p)? })).collect()
}

/// SIGKILLs each process (and the process group it leads) that is still the same process.
pub fn kill_procs(procs: &[ProcId]) {
    for p in procs.iter().rev() {
        if start_time(p.pid) != Some(p.start_time) {
            continue;
        }
        // SAFETY: signalling a process we identified by pid and start time.
        unsafe {
            if libc::getpgid(p.pid as i32) == p.pid as i32 {
                libc::kill(-(p.pid as i32), libc::SIGKILL);
            }
            libc::kill(p.pid as i32, libc::SIGKILL);
        }
    }
}

/// SIGKILLs `pid`, its descendants and the process groups they lead (Lean's file workers run in
/// sessions of their own). Descendants are found before anything is signalled.
pub fn kill_tree(pid: u32) {
    kill_procs(&snapshot_tree(pid));
}

/// Memory of a process tree, two ways. `resident` is what `statm` (and `ps`) call resident: it
/// includes the pages of mapped files, such as Lean's shared library and the `.olean` files every
/// worker maps (Mathlib: gigabytes, shared by all workers and the page cache). `owned` is the
/// anonymous and shared-memory pages the processes hold themselves (`RssAnon` + `RssShmem`):
/// what a runaway proof grows, and the figure limits are applied to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeMemory {
    pub resident_bytes: u64,
    pub owned_bytes: u64,
}

/// `TreeMemory` of `pid` and its descendants.
pub fn tree_memory(pid: u32) -> TreeMemory {
    memory_of(&process_tree(pid))
}

/// Memory the tree owns (see `TreeMemory`), in bytes.
pub fn tree_owned_bytes(pid: u32) -> u64 {
    tree_memory(pid).owned_bytes
}

/// Why `watch_tree` gave up on a process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeAlarm {
    /// Memory the tree owns passed the limit (bytes seen, limit in MiB).
    OverMemory { bytes: u64, limit_mb: u64 },
    /// The tree had no process below its root for the whole grace period (a Lean server whose
    /// file worker died: Lean may never answer for that document).
    NoChild,
}

impl std::fmt::Display for TreeAlarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TreeAlarm::OverMemory { bytes, limit_mb } => {
                write!(f, "owned memory {} MiB passed the limit of {limit_mb} MiB", bytes / (1024 * 1024))
            }
            TreeAlarm::NoChild => write!(f, "the file worker exited without an answer"),
        }
    }
}

/// Polls a process tree until the memory it owns passes `rss_limit_mb`, or (with
/// `child_grace`) until it has had no child for that long. Never resolves otherwise: race it
/// against the work it guards. The poll costs one `/proc` scan every 250 ms.
pub async fn watch_tree(pid: u32, rss_limit_mb: Option<u64>, child_grace: Option<std::time::Duration>) -> TreeAlarm {
    let tick = std::time::Duration::from_millis(250);
    let mut childless = std::time::Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let tree = process_tree(pid);
        if let Some(limit_mb) = rss_limit_mb {
            let bytes = memory_of(&tree).owned_bytes;
            if bytes > limit_mb * 1024 * 1024 {
                return TreeAlarm::OverMemory { bytes, limit_mb };
            }
        }
        if let Some(grace) = child_grace {
            childless = if tree.len() < 2 { childless + tick } else { std::time::Duration::ZERO };
            if childless >= grace {
                return TreeAlarm::NoChild;
            }
        }
    }
}

fn memory_of(pids: &[u32]) -> TreeMemory {
    let mut m = TreeMemory::default();
    for p in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) else { continue };
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        m.resident_bytes += kib("VmRSS") * 1024;
        m.owned_bytes += (kib("RssAnon") + kib("RssShmem")) * 1024;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kill_tree_kills_grandchildren_in_their_own_session() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg("setsid sleep 300 & sleep 300");
        limit_command(&mut cmd, &ProcessLimits::default());
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let tree = process_tree(pid);
        assert!(tree.len() >= 3, "expected sh and two sleeps, got {tree:?}");
        kill_tree(pid);
        let _ = child.wait().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for p in &tree[1..] {
            let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            assert!(state.is_empty() || state.contains(") Z"), "{p} still alive: {state}");
        }
    }

    #[tokio::test]
    async fn watch_tree_reports_a_tree_over_its_memory_limit() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg("sleep 30");
        let mut child = cmd.spawn().unwrap();
        let alarm = watch_tree(child.id().unwrap(), Some(0), None).await;
        assert!(matches!(alarm, TreeAlarm::OverMemory { limit_mb: 0, .. }), "{alarm:?}");
        let _ = child.kill().await;
    }

    #[tokio::test]
    async fn watch_tree_reports_a_tree_that_stays_without_children() {
        // A Lean server whose file worker died has no child left; Lean never answers then.
        let mut child = tokio::process::Command::new("sleep").arg("30").spawn().unwrap();
        let started = std::time::Instant::now();
        let alarm = watch_tree(child.id().unwrap(), None, Some(std::time::Duration::from_millis(500))).await;
        assert_eq!(alarm, TreeAlarm::NoChild);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let _ = child.kill().await;
    }

    #[tokio::test]
    async fn a_mapped_file_counts_as_resident_but_not_as_owned() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, vec![7u8; 64 << 20]).unwrap();
        // Maps the file and reads one byte per page, as Lean reads the `.olean` files it maps.
        let script =
            "import mmap,sys,time\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,access=mmap.ACCESS_READ)\n\
                      t=sum(m[i] for i in range(0,len(m),4096))\nprint(t,flush=True)\ntime.sleep(30)\n";
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", script])
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await.unwrap();
        let m = tree_memory(child.id().unwrap());
        let _ = child.kill().await;
        assert!(m.resident_bytes >= 64 << 20, "{m:?}");
        assert!(m.owned_bytes < 48 << 20, "{m:?}");
    }

    #[tokio::test]
    async fn address_space_limit_is_applied() {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg("ulimit -v");
        cmd.stdout(std::process::Stdio::piped());
        limit_command(&mut cmd, &ProcessLimits { address_space_mb: Some(512), ..Default::default() });
        let out = cmd.output().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "524288");
    }
}
