//! The verifier against the real Lean server (test toolchain + SubgoalFixture): one behaviour per
//! test, each named for it.

mod common;

use std::time::Duration;

use common::*;
use subgoal::lean::session::LeanServer;
use subgoal::process::process_tree;
use subgoal::verify::{Region, Verdict, Verifier, VerifyInput, VerifyRecord};

const AND_SWAP: &str = "theorem and_swap (p q : Prop) (h : And p q) : And q p :=";
const SLOW: &str = "theorem slow : Eq (Nat.beq (Slow.spin 40 0) 0) false :=";

fn verifier(workers: usize, timeout_s: f64) -> Verifier {
    Verifier::start(pool_config(workers, timeout_s)).expect("start verifier")
}

/// Verifies one candidate with a fresh one-worker verifier.
async fn check_one(input: VerifyInput) -> VerifyRecord {
    let v = verifier(1, 60.0);
    let r = v.verify(&input).await;
    v.shutdown().await;
    r
}

/// Starts the never-finishing `SLOW` check on `v` in the background.
fn slow_check_in_background(v: &std::sync::Arc<Verifier>) -> tokio::task::JoinHandle<VerifyRecord> {
    let v = v.clone();
    tokio::spawn(async move { v.verify(&proof("slow", SLOW, " rfl")).await })
}

/// Waits until the pool's server has a file worker busy on a check; returns the server's pid and
/// its file workers' pids.
async fn busy_file_workers(v: &Verifier) -> Option<(u32, Vec<u32>)> {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(&server) = v.pool().server_pids().first() {
            if process_tree(server).len() >= 2 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Some((server, process_tree(server)[1..].to_vec()));
            }
        }
    }
    None
}

#[tokio::test]
async fn correct_term_proof_is_proved_with_no_axioms() {
    let r = check_one(proof("and_swap", AND_SWAP, " And.intro h.right h.left")).await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    assert!(r.axioms.is_empty());
    assert!(r.lean_version.contains("4.35.0"));
}

#[tokio::test]
async fn sorry_is_incomplete() {
    let r = check_one(proof("and_swap", AND_SWAP, " sorry")).await;
    assert_eq!(r.verdict, Verdict::Incomplete, "{r:?}");
    assert_eq!(r.axioms, vec!["sorryAx"]);
}

#[tokio::test]
async fn sorry_in_a_nested_have_is_incomplete() {
    let r = check_one(proof("and_swap", AND_SWAP, "\n  have hq : q := sorry\n  And.intro hq h.left")).await;
    assert_eq!(r.verdict, Verdict::Incomplete, "{r:?}");
}

#[tokio::test]
async fn type_error_is_failed_with_the_error_in_candidate_coordinates() {
    let r = check_one(proof("and_swap", AND_SWAP, "\n  h")).await;
    assert_eq!(r.verdict, Verdict::Failed, "{r:?}");
    let err = r.messages.iter().find(|m| m.region == Region::Candidate).expect("a candidate message");
    assert_eq!((err.start.line, err.start.column), (2, 2), "{err:?}");
}

#[tokio::test]
async fn error_columns_after_non_bmp_characters_count_characters_not_utf16_units() {
    // `𝔽` is one character but two UTF-16 units; Lean's error spans `h 𝔽`, which on the wire is
    // UTF-16 columns 12..16 of the line, and in characters 11..14.
    let r = check_one(proof("and_swap", AND_SWAP, "\n  /- 𝔽 -/ (h 𝔽)")).await;
    assert_eq!(r.verdict, Verdict::Failed, "{r:?}");
    let m = r.messages.iter().find(|m| m.region == Region::Candidate).expect("a candidate message");
    assert_eq!((m.start.line, m.start.column, m.end.line, m.end.column), (2, 11, 2, 14), "{m:?}");
    let line: Vec<char> = "  /- 𝔽 -/ (h 𝔽)".chars().collect();
    assert_eq!(line[m.start.column..m.end.column].iter().collect::<String>(), "h 𝔽");
}

#[tokio::test]
async fn disallowed_axiom_is_rejected() {
    let v = verifier(1, 60.0);
    let statement = "axiom cheat : False\ntheorem uses_cheat : False :=";
    let r = v.verify(&proof("uses_cheat", statement, " cheat")).await;
    assert_eq!(r.verdict, Verdict::Rejected, "{r:?}");
    assert!(r.reason.contains("cheat"), "{}", r.reason);
    v.shutdown().await;
}

#[tokio::test]
async fn standard_axioms_are_allowed() {
    let v = verifier(1, 60.0);
    let statement = "theorem by_propext (p q : Prop) (h : Iff p q) : Eq p q :=";
    let r = v.verify(&proof("by_propext", statement, " propext h")).await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    assert_eq!(r.axioms, vec!["propext"]);
    v.shutdown().await;
}

#[tokio::test]
async fn exit_before_the_trusted_epilogue_is_rejected() {
    let r = check_one(proof("and_swap", AND_SWAP, " And.intro h.right h.left\n#exit")).await;
    assert_eq!(r.verdict, Verdict::Rejected, "{r:?}");
}

#[tokio::test]
async fn elaboration_past_the_wall_clock_limit_is_timeout_and_the_pool_recovers() {
    let v = verifier(1, 2.0);
    let r = v.verify(&proof("slow", SLOW, " rfl")).await;
    assert_eq!(r.verdict, Verdict::Timeout, "{r:?}");
    assert!(r.elapsed_ms < 20_000, "{r:?}");
    let r = v.verify(&proof("and_swap", AND_SWAP, " And.intro h.right h.left")).await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    assert_eq!(v.stats().timeouts, 1);
    assert_eq!(v.stats().server_starts, 2);
    v.shutdown().await;
}

#[tokio::test]
async fn killed_worker_is_crashed_and_the_pool_recovers() {
    let v = std::sync::Arc::new(verifier(1, 60.0));
    let slow = slow_check_in_background(&v);
    // Wait until the file worker (a child of the server) is running the slow check, then kill it.
    let (_, workers) = busy_file_workers(&v).await.expect("never saw a file worker to kill");
    for p in workers {
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    let r = slow.await.unwrap();
    assert_eq!(r.verdict, Verdict::Crashed, "{r:?}");
    let r = v.verify(&proof("and_swap", AND_SWAP, " And.intro h.right h.left")).await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    assert_eq!(v.stats().crashes, 1);
}

#[tokio::test]
async fn unchanged_header_reuses_the_same_file_worker() {
    let cfg = server_config();
    let mut server = LeanServer::start(&cfg).await.unwrap();
    let doc = |n: u32| format!("{HEADER}theorem t{n} : True := True.intro\n");
    let t = Duration::from_secs(30);
    let key = "prelude import SubgoalFixture";
    server.check(key, HEADER, &doc(1), t).await.unwrap();
    let workers_before = process_tree(server.pid());
    for n in 2..6 {
        let c = server.check(key, HEADER, &doc(n), t).await.unwrap();
        assert!(c.diagnostics.iter().all(|d| d.severity != Some(1)), "{:?}", c.diagnostics);
    }
    assert_eq!(process_tree(server.pid()), workers_before, "the file worker was restarted");
    // A different header opens a new document: a new file worker re-imports.
    let other = "prelude\nimport SubgoalFixture\nimport SubgoalFixture\n";
    server.check("other", other, &format!("{other}theorem u : True := True.intro\n"), t).await.unwrap();
    assert_ne!(process_tree(server.pid()), workers_before);
}

#[tokio::test]
async fn two_workers_return_fifty_verdicts_in_input_order() {
    let v = verifier(2, 60.0);
    let inputs: Vec<_> = (0..50)
        .map(|i| {
            let statement = format!("theorem t{i} (p q : Prop) (h : And p q) : And q p :=");
            let body = if i % 3 == 0 { " h" } else { " And.intro h.right h.left" };
            proof(&format!("t{i}"), &statement, body)
        })
        .collect();
    let records = futures::future::join_all(inputs.iter().map(|i| v.verify(i))).await;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.name, format!("t{i}"));
        let want = if i % 3 == 0 { Verdict::Failed } else { Verdict::Proved };
        assert_eq!(r.verdict, want, "{r:?}");
    }
    assert_eq!(v.stats().server_starts, 2);
    v.shutdown().await;
}

#[tokio::test]
async fn unknown_import_is_failed_not_crashed_and_the_pool_recovers() {
    let v = verifier(1, 60.0);
    let mut bad = proof("and_swap", AND_SWAP, " And.intro h.right h.left");
    bad.header = "prelude\nimport NoSuchModule\n".into();
    let r = v.verify(&bad).await;
    assert_eq!(r.verdict, Verdict::Failed, "{r:?}");
    assert!(r.reason.contains("NoSuchModule"), "{}", r.reason);
    let r = v.verify(&proof("and_swap", AND_SWAP, " And.intro h.right h.left")).await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    v.shutdown().await;
}

#[tokio::test]
async fn servers_are_recycled_after_k_candidates() {
    let mut cfg = pool_config(1, 60.0);
    cfg.recycle_after = 2;
    let v = Verifier::start(cfg).unwrap();
    for _ in 0..5 {
        let r = v.verify(&proof("and_swap", AND_SWAP, " And.intro h.right h.left")).await;
        assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    }
    let s = v.stats();
    assert_eq!((s.recycles, s.server_starts), (2, 3), "{s:?}");
    v.shutdown().await;
}

#[tokio::test]
async fn servers_above_the_rss_bound_are_recycled() {
    let mut cfg = pool_config(1, 60.0);
    cfg.max_rss_mb = Some(1); // any live Lean exceeds 1 MiB
    let v = Verifier::start(cfg).unwrap();
    for _ in 0..2 {
        let r = v.verify(&proof("and_swap", AND_SWAP, " And.intro h.right h.left")).await;
        assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    }
    assert_eq!(v.stats().recycles, 2);
    v.shutdown().await;
}

#[tokio::test]
async fn killed_server_leaves_no_orphaned_file_worker() {
    let v = std::sync::Arc::new(verifier(1, 60.0));
    let slow = slow_check_in_background(&v);
    let (server, workers) = busy_file_workers(&v).await.expect("never saw a file worker");
    // Kill only the server: its file workers live in their own sessions.
    unsafe { libc::kill(server as i32, libc::SIGKILL) };
    let r = slow.await.unwrap();
    assert_eq!(r.verdict, Verdict::Crashed, "{r:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in workers {
        let stat = std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z"), "file worker {w} survived: {stat}");
    }
}

#[tokio::test]
async fn the_server_reports_lean_keyword_tokens_at_their_places() {
    let cfg = server_config();
    let mut server = LeanServer::start(&cfg).await.unwrap();
    let text = format!("{HEADER}theorem k (p : Prop) (hp : p) : p := (fun h => h) hp\n");
    let c = server.check("prelude import SubgoalFixture", HEADER, &text, Duration::from_secs(30)).await.unwrap();
    let keywords = c.tokens.expect("Lean reports semantic tokens");
    let line = text.lines().position(|l| l.starts_with("theorem k")).unwrap() as u32;
    let col = text.lines().nth(line as usize).unwrap().find("fun").unwrap() as u32;
    assert!(keywords.iter().any(|k| k.line == line && k.start == col && k.length == 3), "{keywords:?}");
}

#[tokio::test]
async fn a_server_keeps_a_bounded_number_of_threads_over_many_checks() {
    // Lean 4.35 keeps a thread per answered `semanticTokens/full`; the gate asks `range`.
    let v = verifier(1, 60.0);
    for i in 0..30 {
        let r = v.verify(&proof(&format!("t{i}"), &format!("theorem t{i} (p : Prop) (hp : p) : p :="), " hp")).await;
        assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    }
    let threads: usize = v
        .pool()
        .server_pids()
        .iter()
        .flat_map(|&p| process_tree(p))
        .map(|p| std::fs::read_dir(format!("/proc/{p}/task")).map_or(0, |d| d.count()))
        .sum();
    v.shutdown().await;
    assert!(threads < 40, "{threads} threads after 30 checks");
}
