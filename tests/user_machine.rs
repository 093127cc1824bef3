//! What a user's machine has and the test machine lacks, rebuilt by each test from the real test
//! Lean: an elan installation (proxy, toolchains, settings under `HOME`), a library whose `.olean`
//! is large, a Lean that writes a lot or starts slowly. Each test first shows the failure the
//! stand-in reproduces, then the behaviour that replaces it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;
use subgoal::lean::discovery::{LeanInstall, LeanSource};
use subgoal::lean::session::SessionError;
use subgoal::verify::{Gate, Verdict, Verifier};

const AND_SWAP: &str = "theorem and_swap (p q : Prop) (h : And p q) : And q p :=";
const AND_SWAP_PROOF: &str = " And.intro h.right h.left";

/// The test toolchain's root (`bin/lean`, `lib/libleanshared.so`, `lib/lean/SubgoalFixture.olean`).
fn toolchain_root() -> PathBuf {
    lean().parent().unwrap().parent().unwrap().to_path_buf()
}

fn chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `HOME/.elan` as elan lays it out: `bin/elan`, `bin/lean` and `bin/lake` as hard links to it,
/// one toolchain under `toolchains/`, and the default toolchain in `settings.toml`. The toolchain's
/// `bin/lean` is a copy of the test Lean's executable with its libraries beside it. `elan` is a
/// small program that behaves as elan does for what subgoal asks: run as `lean`, it finds the
/// default toolchain through `ELAN_HOME` or `HOME` (failing without them) and runs its `lean`;
/// as `elan which TOOL` it prints that toolchain's binary.
fn fake_elan(home: &Path) -> PathBuf {
    let elan_home = home.join(".elan");
    let toolchain = elan_home.join("toolchains/leanprover--lean4---v4.35.0");
    std::fs::create_dir_all(elan_home.join("bin")).unwrap();
    std::fs::create_dir_all(toolchain.join("bin")).unwrap();
    std::fs::copy(lean(), toolchain.join("bin/lean")).unwrap();
    std::os::unix::fs::symlink(toolchain_root().join("lib"), toolchain.join("lib")).unwrap();
    std::fs::write(elan_home.join("settings.toml"), "default_toolchain = \"leanprover--lean4---v4.35.0\"\n").unwrap();
    let src = r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
  char home[4096], path[8192], tc[512], line[1024];
  const char *e = getenv("ELAN_HOME"), *h = getenv("HOME");
  if (e) snprintf(home, sizeof home, "%s", e); else if (h) snprintf(home, sizeof home, "%s/.elan", h); else home[0] = 0;
  snprintf(path, sizeof path, "%s/settings.toml", home);
  FILE *f = fopen(path, "r"); tc[0] = 0;
  while (f && fgets(line, sizeof line, f)) sscanf(line, "default_toolchain = \"%511[^\"]\"", tc);
  if (!tc[0]) { fprintf(stderr, "error: no default toolchain configured\n"); return 1; }
  const char *self = strrchr(argv[0], '/'); self = self ? self + 1 : argv[0];
  if (!strcmp(self, "elan")) {
    if (argc < 3 || strcmp(argv[1], "which")) return 2;
    printf("%s/toolchains/%s/bin/%s\n", home, tc, argv[2]); return 0;
  }
  snprintf(path, sizeof path, "%s/toolchains/%s/bin/%s", home, tc, self);
  execv(path, argv); perror(path); return 1;
}
"#;
    std::fs::write(home.join("elan.c"), src).unwrap();
    let elan = elan_home.join("bin/elan");
    let status = Command::new("cc").arg(home.join("elan.c")).arg("-o").arg(&elan).status().expect("run cc");
    assert!(status.success(), "the fake elan did not compile");
    for proxy in ["lean", "lake"] {
        std::fs::hard_link(&elan, elan_home.join("bin").join(proxy)).unwrap();
    }
    elan_home.join("bin")
}

#[tokio::test]
async fn an_unresolved_elan_proxy_cannot_run_in_the_sandbox() {
    // What discovery used to do: run the proxy itself. The sandbox gives Lean a scratch HOME and
    // no ELAN_HOME, so the proxy finds no toolchain and the server never answers.
    subgoal::sandbox::support(&lean());
    let home = tempfile::tempdir().unwrap();
    let bin = fake_elan(home.path());
    let mut cfg = server_config();
    cfg.install = LeanInstall::at(bin.join("lean"), LeanSource::Path);
    cfg.request_timeout = Duration::from_secs(10);
    match subgoal::lean::session::LeanServer::start(&cfg).await {
        Err(e) => assert!(matches!(e, SessionError::Initialize(_)), "{e}"),
        Ok(mut server) => {
            let text = format!("{HEADER}{AND_SWAP}{AND_SWAP_PROOF}\n");
            let r = server.check("h", HEADER, &text, Duration::from_secs(10)).await;
            assert!(r.is_err(), "the proxy checked a document in the sandbox");
        }
    }
}

#[test]
fn an_elan_proxy_on_path_is_resolved_to_its_toolchain_and_checks_in_the_sandbox() {
    let home = tempfile::tempdir().unwrap();
    let bin = fake_elan(home.path());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let candidate = proof("and_swap", AND_SWAP, AND_SWAP_PROOF);
    std::fs::write(&input, serde_json::to_string(&candidate).unwrap() + "\n").unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let run = |args: &[&str]| {
        Command::new(subgoal_bin())
            .args(args)
            .env("HOME", home.path())
            .env("PATH", &path)
            .env_remove("ELAN_HOME")
            .env_remove("SUBGOAL_LEAN")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run(&["verify", "--json", "--sandbox", "required", "--input", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["verdict"], "proved", "{record}");
    assert!(record["recheck"]["verdict"] == "proved", "{record}");

    let out = run(&["doctor", "--json", "--sandbox", "required", "--imports", "SubgoalFixture"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let toolchain_lean = home.path().join(".elan/toolchains/leanprover--lean4---v4.35.0/bin/lean");
    assert_eq!(report["lean"]["lean"], toolchain_lean.to_str().unwrap(), "{report}");
    assert_eq!(report["lean"]["elan_proxy"], bin.join("lean").to_str().unwrap(), "{report}");
    assert_eq!(report["sandboxed_check"]["ok"], true, "{report}");
}

#[test]
fn doctor_fails_when_lean_cannot_check_inside_the_sandbox() {
    // A `lean` that answers `--version` outside the sandbox but cannot run inside it (here: a
    // script, whose interpreter the sandbox does not let it execute, that needs HOME).
    let home = tempfile::tempdir().unwrap();
    let wrapper = home.path().join("lean");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\n[ -d \"$HOME/.real\" ] || exit 7\nexec {} \"$@\"\n", lean().display()),
    )
    .unwrap();
    chmod_x(&wrapper);
    std::fs::create_dir(home.path().join(".real")).unwrap();
    let out = Command::new(subgoal_bin())
        .args(["doctor", "--json", "--imports", "SubgoalFixture", "--lean", wrapper.to_str().unwrap()])
        .env("HOME", home.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["version"].as_str().unwrap_or("").contains("4.35.0"), "{report}");
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert_eq!(report["sandboxed_check"]["ok"], false, "{report}");
    assert!(report["error"].as_str().unwrap().contains("inside the sandbox"), "{report}");
}

/// A library `Big` whose `.olean` holds two string literals of `mib` MiB each that differ only in
/// their last character, compiled with the test Lean into `dir`. Checking `S L1 → S L2` makes
/// Lean compare them, which reads every page of both from the mapped file.
fn big_library(dir: &Path, mib: usize) {
    let body: String = (0..mib << 20).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    let src = format!(
        "prelude\nimport SubgoalFixture\n\
         noncomputable def L1 : String := \"{body}a\"\nnoncomputable def L2 : String := \"{body}b\"\n"
    );
    std::fs::write(dir.join("Big.lean"), src).unwrap();
    let status = Command::new(lean())
        .args(["-o", "Big.olean", "Big.lean"])
        .current_dir(dir)
        .status()
        .expect("run lean to compile Big");
    assert!(status.success(), "Big.lean did not compile");
    let size = std::fs::metadata(dir.join("Big.olean")).unwrap().len();
    assert!(size >= (2 * mib as u64) << 20, "Big.olean has only {size} bytes");
}

#[test]
fn workers_that_map_a_large_olean_are_not_killed_for_the_pages_they_share() {
    let lib = tempfile::tempdir().unwrap();
    big_library(lib.path(), 24);
    let header = "prelude\nimport Big\n";
    let mut lines = Vec::new();
    // First one check per worker that reads both literals (and fails: they differ), then checks
    // that run for about a second each (the memory watch looks every 250 ms) on those workers.
    for i in 0..6 {
        let (statement, proof) = if i < 3 {
            (format!("theorem touch{i} (S : String → Prop) (h : S L1) : S L2 :="), " h".to_string())
        } else {
            (
                format!("theorem slow{i} (S : String → Prop) (h : S L1) : And (S L1) (Eq (Nat.beq (Slow.spin 8 0) 0) false) :="),
                " And.intro h rfl".to_string(),
            )
        };
        let input = subgoal::verify::VerifyInput {
            name: format!("c{i}"),
            header: header.into(),
            formal_statement: statement,
            proof: Some(proof),
            code: None,
        };
        lines.push(serde_json::to_string(&input).unwrap());
    }
    let input = lib.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    // Each worker tree maps Lean's shared library and, once Lean has compared the literals, both
    // of them: well over 150 MiB resident per tree, of which it owns a few dozen.
    let lean_path = format!("{}:{}", toolchain_root().join("lib/lean").display(), lib.path().display());
    let out = Command::new(subgoal_bin())
        .args(["verify", "--json", "--workers", "3", "--kill-rss-mb", "150", "--sandbox", "required"])
        .args(["--input", input.to_str().unwrap(), "--lean", lean().to_str().unwrap()])
        .env("LEAN_PATH", &lean_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 6);
    for r in &records {
        let expected = if ["c0", "c1", "c2"].contains(&r["name"].as_str().unwrap()) { "failed" } else { "proved" };
        assert_eq!(r["verdict"], expected, "{r}");
    }

    // Doctor shows both figures: what the worker maps is far more than what it owns.
    let out = Command::new(subgoal_bin())
        .args(["doctor", "--json", "--imports", "Big", "--lean", lean().to_str().unwrap()])
        .env("LEAN_PATH", &lean_path)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let memory = &report["imports"][0]["memory"];
    assert!(memory.is_object(), "{report}");
    let (resident, owned) = (memory["resident_bytes"].as_u64().unwrap(), memory["owned_bytes"].as_u64().unwrap());
    assert!(resident > owned + (64 << 20), "{report}");
}

/// A `lean` that runs the real one (the test Lean's `lean_main`) after, in `--json` mode (the
/// re-check), doing what `behaviour` says: C statements with `argc`/`argv` in scope.
fn wrapped_lean(dir: &Path, behaviour: &str) -> PathBuf {
    let src = format!(
        "#include <stdio.h>\n#include <string.h>\n#include <unistd.h>\n\
         int lean_main(int argc, char **argv);\n\
         int main(int argc, char **argv) {{\n\
           for (int i = 1; i < argc; i++) if (!strcmp(argv[i], \"--json\")) {{ {behaviour} break; }}\n\
           return lean_main(argc, argv);\n}}\n"
    );
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("wrapper.c"), src).unwrap();
    let libdir = toolchain_root().join("lib");
    let status = Command::new("cc")
        .arg(dir.join("wrapper.c"))
        .arg("-o")
        .arg(dir.join("bin/lean"))
        .arg(format!("-L{}", libdir.display()))
        .arg("-lleanshared")
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .status()
        .expect("run cc");
    assert!(status.success(), "the wrapper did not compile");
    // Lean finds its library beside its binary.
    std::os::unix::fs::symlink(&libdir, dir.join("lib")).unwrap();
    dir.join("bin/lean")
}

#[tokio::test]
async fn a_recheck_that_writes_megabytes_to_both_streams_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    // 1.5 MiB to stderr first, then 1.5 MiB to stdout: a reader that drains stdout to its end
    // before stderr never sees stdout close.
    let lean = wrapped_lean(
        dir.path(),
        "static char b[1 << 16]; memset(b, 'x', sizeof b - 1); b[sizeof b - 1] = '\\n'; \
         for (int k = 0; k < 24; k++) fwrite(b, 1, sizeof b, stderr); fflush(stderr); \
         for (int k = 0; k < 24; k++) fwrite(b, 1, sizeof b, stdout); fflush(stdout);",
    );
    let mut cfg = pool_config(1, 20.0);
    cfg.server.install = LeanInstall::at(lean, LeanSource::Flag);
    let v = Verifier::start(cfg).unwrap();
    let started = std::time::Instant::now();
    let r = v.verify(&proof("and_swap", AND_SWAP, AND_SWAP_PROOF)).await;
    v.shutdown().await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_recheck_whose_import_is_slow_gets_the_import_budget_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    // The re-check's process starts 4 s late, as a fresh process importing a large library
    // does; the candidate itself checks well within its 3 s.
    let lean = wrapped_lean(dir.path(), "sleep(4);");
    let mut cfg = pool_config(1, 3.0);
    cfg.server.install = LeanInstall::at(lean, LeanSource::Flag);
    let v = Verifier::start(cfg).unwrap();
    let r = v.verify(&proof("and_swap", AND_SWAP, AND_SWAP_PROOF)).await;
    let disagreements = v.recheck_stats().disagreements;
    v.shutdown().await;
    assert_eq!(r.verdict, Verdict::Proved, "{r:?}");
    assert_ne!(r.rejected_by, Some(Gate::Recheck));
    assert_eq!(disagreements, 0);
}
