//! The sandbox around Lean, with hostile workloads against the real Lean and real programs.
//!
//! The fixture world has no `IO` (no `Init`), so a candidate cannot itself call the file system
//! or spawn a process here; those two attacks are played by the sandboxed Lean binary (writing
//! an `.olean` where it was told to) and by real programs started inside the same sandbox. The
//! candidates that loop or allocate without bound go through the whole verifier.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use subgoal::process::{process_tree, ProcessLimits};
use subgoal::sandbox::{support, toolchain_root, Sandbox, SandboxMode, SandboxPolicy};
use subgoal::verify::{Verdict, Verifier};

fn lean_policy() -> SandboxPolicy {
    SandboxPolicy {
        mode: SandboxMode::Required,
        exec_roots: toolchain_root(&lean()).into_iter().collect(),
        writable: vec![],
    }
}

fn sandbox(policy: &SandboxPolicy) -> Sandbox {
    Sandbox::prepare(policy, support(&lean())).expect("this machine must offer Landlock and a network namespace")
}

fn run_in(sb: &Sandbox, program: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    sb.apply_std(&mut cmd, &ProcessLimits::default());
    cmd.output()
}

fn write_fixture_file(dir: &Path) {
    std::fs::write(dir.join("A.lean"), format!("{HEADER}theorem a : True := True.intro\n")).unwrap();
}

#[test]
fn sandboxed_lean_cannot_write_outside_its_scratch_directory() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("A.olean");
    let sb = sandbox(&lean_policy());
    write_fixture_file(sb.path());
    let out = run_in(&sb, &lean(), &["-o", target.to_str().unwrap(), "A.lean"]).unwrap();
    assert!(!out.status.success(), "lean wrote outside its sandbox: {out:?}");
    assert!(!target.exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "no trace outside the sandbox");
}

#[test]
fn sandboxed_lean_can_write_inside_its_scratch_directory() {
    let sb = sandbox(&lean_policy());
    write_fixture_file(sb.path());
    let out = run_in(&sb, &lean(), &["-o", "A.olean", "A.lean"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(sb.path().join("A.olean").exists());
}

#[test]
fn sandboxed_lean_cannot_start_programs_outside_the_toolchain() {
    let sb = sandbox(&lean_policy());
    assert!(run_in(&sb, &lean(), &["--version"]).unwrap().status.success(), "lean itself must run");
    let marker = sb.path().join("ran");
    let shell = run_in(&sb, Path::new("/bin/sh"), &["-c", &format!("touch {}", marker.display())]);
    assert!(shell.map_or(true, |o| !o.status.success()), "a shell started inside the sandbox");
    assert!(!marker.exists());
}

#[test]
fn scratch_directory_is_removed_with_the_sandbox() {
    let sb = sandbox(&lean_policy());
    let dir: PathBuf = sb.path().to_path_buf();
    write_fixture_file(&dir);
    drop(sb);
    assert!(!dir.exists());
}

#[test]
fn sandboxed_programs_reach_no_network_and_write_only_their_scratch_directory() {
    // Everything may be executed here (to run Python); the file and network rules still hold.
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join("python3")),
        )
        .find(|p| p.exists())
        .expect("python3 (the install script needs it too)");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let outside = tempfile::tempdir().unwrap();
    let policy = SandboxPolicy { mode: SandboxMode::Required, exec_roots: vec!["/".into()], writable: vec![] };
    let sb = sandbox(&policy);
    let script = format!(
        r#"
import socket
def attempt(f):
    try:
        f(); return "ok"
    except Exception as e:
        return "denied"
print("connect", attempt(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2)))
print("outside", attempt(lambda: open("{outside}/x", "w").write("x")))
print("inside", attempt(lambda: open("inside", "w").write("x")))
"#,
        outside = outside.path().display()
    );
    let out = run_in(&sb, &python, &["-c", &script]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("connect denied"), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("outside denied"), "{stdout}");
    assert!(stdout.contains("inside ok"), "{stdout}");
    assert!(listener.accept().is_err(), "a connection reached the host");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// Pids of the pool's servers and their file workers, while they run.
async fn pool_processes(v: &Verifier) -> Vec<u32> {
    v.pool().server_pids().into_iter().flat_map(process_tree).collect()
}

fn all_dead(pids: &[u32]) -> bool {
    pids.iter().all(|p| {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z")
    })
}

#[tokio::test]
async fn a_candidate_that_loops_times_out_and_leaves_no_process() {
    let v = Verifier::start(pool_config(1, 3.0)).unwrap();
    let input = proof("slow", "theorem slow : Eq (Nat.beq (Slow.spin 40 0) 0) false :=", " rfl");
    let check = v.verify(&input);
    let (r, pids) = tokio::join!(check, async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        pool_processes(&v).await
    });
    v.shutdown().await;
    assert_eq!(r.verdict, Verdict::Timeout, "{r:?}");
    assert!(!pids.is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(all_dead(&pids), "processes left behind: {pids:?}");
}

#[tokio::test]
async fn a_candidate_that_allocates_without_bound_is_stopped_at_the_memory_limit() {
    // Twelve squarings of a 26-million-bit number would need about 13 GB (GMP allocates outside
    // Lean's `--memory`); the resident-memory watch stops it at its limit.
    let mut cfg = pool_config(1, 60.0);
    cfg.server.kill_rss_mb = Some(1024);
    let header = format!("{HEADER}def Hog.sq (n : Nat) : Nat := Nat.mul n n\n");
    let sq12 = (0..12).fold("Slow.big".to_string(), |acc, _| format!("(Hog.sq {acc})"));
    let mut input = proof("hog", &format!("theorem hog : Eq (Nat.beq {sq12} 0) false :="), " rfl");
    input.header = header;
    let v = Verifier::start(cfg).unwrap();
    let r = v.verify(&input).await;
    v.shutdown().await;
    assert_eq!(r.verdict, Verdict::Crashed, "{r:?}");
    assert!(r.reason.contains("passed the limit of 1024 MiB"), "{r:?}");
}
