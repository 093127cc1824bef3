//! The HTML report in a real browser (headless Chromium, installed by `scripts/test.sh`): pages
//! made from real runs of the fixture pipeline (a `prove --out` directory, a `bench` run) and from
//! a 10,000-problem run directory, loaded from disk. Each test reads the DOM after the page's
//! script ran, fails on any console message (errors and uncaught exceptions included), and saves
//! a screenshot under `target/tmp/report-html/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::script::{self, Script};
use common::*;
use serde_json::Value;
use subgoal::pipeline::scheduler::EngineConfig;

/// Chromium: `$SUBGOAL_CHROMIUM`, else `chromium` on PATH. Missing is a failure, never a skip.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("SUBGOAL_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("headless Chromium not found: run scripts/install-test-browser.sh (or set SUBGOAL_CHROMIUM)")
    })
}

fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-html");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn browser(profile: &Path) -> Command {
    let mut c = Command::new(chromium());
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--disable-extensions", "--enable-logging=stderr", "--v=0", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM after load of `page` opened at `hash`; fails on any console message. Saves a
/// screenshot as `shot`.png of the page opened at `shot_hash` (headless Chromium paints only the
/// first window's height of a page, so a deep link that scrolls far shows blank).
fn load(page: &Path, hash: &str, shot: &str, shot_hash: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}#{hash}", page.display());
    let out = browser(profile.path()).arg("--dump-dom").arg(&url).output().expect("running chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed on {url}: {stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages on {url}:\n{}", console.join("\n"));
    let png = shots().join(format!("{shot}.png"));
    if std::env::var_os("SUBGOAL_KEEP_PAGES").is_some() {
        std::fs::copy(page, shots().join(format!("{shot}.html"))).unwrap();
    }
    let shot = browser(profile.path())
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1400,3000")
        .arg(format!("file://{}#{shot_hash}", page.display()))
        .output()
        .expect("running chromium");
    assert!(shot.status.success() && png.exists(), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The text of the element with `id` in `dom` (tags dropped), crude but enough for assertions.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let open = dom[..start].rfind('<').unwrap();
    let tag: String = dom[open + 1..].chars().take_while(|c| c.is_alphanumeric()).collect();
    // The element's end: its closing tag at the same depth.
    let mut depth = 0;
    let mut i = open;
    while i < dom.len() {
        if dom[i..].starts_with(&format!("<{tag}")) {
            depth += 1;
        } else if dom[i..].starts_with(&format!("</{tag}>")) {
            depth -= 1;
            if depth == 0 {
                break;
            }
        }
        i += dom[i..].chars().next().map_or(1, char::len_utf8);
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in dom[open..i].chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn data_attr(dom: &str, name: &str) -> Option<f64> {
    let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
    dom[at..].split('"').next()?.parse().ok()
}

#[test]
fn prove_writes_a_page_whose_deep_link_opens_a_subgoal_with_its_statement_and_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (out, out_dir) = script::prove_two_level(dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = out_dir.join("report.html");
    let dag: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("dag.json")).unwrap()).unwrap();
    let h1 = dag["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "two_level_h1_a").unwrap()["id"]
        .as_u64()
        .unwrap();

    let link = format!("problem=two_level&node={h1}");
    let dom = load(&page, &link, "prove-deep-link", &link);
    let panel = text_of(&dom, "node-panel");
    assert!(panel.contains("subgoal two_level_h1_a"), "{panel}");
    assert!(panel.contains("two_level_h1_a (p q r : Prop)"), "the statement is shown: {panel}");
    assert!(panel.contains("proved"), "its verdicts are shown: {panel}");
    let details = text_of(&dom, "details");
    assert!(details.contains("Subgoal graph") && details.contains("sorry"), "graph and sketch shown: {details}");
    // The graph: every node of the DAG drawn, the selected one marked.
    assert_eq!(dom.matches("class=\"node ").count(), dag["nodes"].as_array().unwrap().len());
    assert!(dom.contains(&format!("data-node=\"{h1}\"")));
    assert!(data_attr(&dom, "data-usable-ms").is_some());
}

/// A DeepSeek-format dataset of `n` fixture problems, run by `bench` in `dir`; the problems
/// `solved` picks get a right sample, the others only wrong ones.
fn bench_run_solving(dir: &Path, n: usize, solved: impl Fn(usize) -> bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for i in 0..n {
        let line = serde_json::json!({
            "name": format!("p{i}"),
            "split": if i % 2 == 0 { "valid" } else { "test" },
            "informal_prefix": format!("/-- Problem {i}. -/\n"),
            "formal_statement": format!("theorem p{i} (a b : Prop) (ha : a) (hb : b) : And a b := by\n"),
            "header": HEADER,
        });
        text.push_str(&format!("{line}\n"));
    }
    let data = dir.join("tiny.jsonl");
    std::fs::write(&data, text).unwrap();
    let cfg = EngineConfig {
        k: 2,
        prover: subgoal::model::SamplingParams { max_new_tokens: 2048, seed: None, ..Default::default() },
        ..Default::default()
    };
    let loaded = subgoal::datasets::load(&data, None).unwrap();
    let mut s = Script::new(&cfg);
    for (i, bp) in loaded.problems.iter().enumerate() {
        let p = &bp.problem;
        let proof = if solved(i) { "And.intro ha hb" } else { "ha" };
        let code = format!("{} {proof}", p.formal_statement);
        s.prover(&p.name, &p.formal_statement, &p.informal_statement, &[&code], 0);
    }
    let transcript = dir.join("t.jsonl");
    s.write(&transcript);
    let run = dir.join("run");
    let lean = lean();
    let model = format!("replay:{}", transcript.display());
    let out = Command::new(subgoal_bin())
        .args(["bench", "--dataset", data.to_str().unwrap(), "--strategy", "whole", "-k", "2", "--seed", "7"])
        .args(["--prover", &model, "--lean", lean.to_str().unwrap(), "--no-progress", "--workers", "1"])
        .args(["--run-dir", run.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run
}

/// Even problems solved, odd ones not.
fn bench_run(dir: &Path, n: usize) -> PathBuf {
    bench_run_solving(dir, n, |i| i % 2 == 0)
}

#[test]
fn two_runs_are_compared_problem_by_problem() {
    let dir = tempfile::tempdir().unwrap();
    let a = bench_run_solving(&dir.path().join("a"), 4, |i| i % 2 == 0);
    let b = bench_run_solving(&dir.path().join("b"), 4, |i| i != 3);
    let page = dir.path().join("ab.html");
    let out = run_subgoal(&[
        "report",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--no-plots",
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Only p1 is solved by one run and not the other.
    let dom = load(&page, "differ=1&problem=p1&run=1", "two-runs", "differ=1&problem=p1&run=1");
    assert!(text_of(&dom, "count").starts_with("1 of 4 problems"), "{}", text_of(&dom, "count"));
    let table = text_of(&dom, "table");
    assert!(table.contains("status [1]") && table.contains("status [2]"), "{table}");
    assert!(table.contains("p1 test unsolved") && table.contains("solved prover"), "{table}");
    let details = text_of(&dom, "details");
    assert!(details.contains("[1]") && details.contains("[2]") && details.contains("status solved"), "{details}");
}

#[test]
fn a_bench_runs_page_lists_every_problem_and_shows_leans_messages_in_a_failed_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let run = bench_run(dir.path(), 6);
    let page = dir.path().join("run.html");
    let out = run_subgoal(&["report", run.to_str().unwrap(), "--no-plots", "--html", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dom = load(&page, "problem=p1&node=0", "bench-failed-problem", "problem=p1&node=0");
    assert!(text_of(&dom, "count").starts_with("6 of 6 problems"), "{}", text_of(&dom, "count"));
    assert_eq!(text_of(&dom, "table").matches("unsolved").count(), 3);
    assert!(text_of(&dom, "summary").contains("pass@2"));
    let panel = text_of(&dom, "node-panel");
    assert!(panel.contains("theorem p1") && panel.contains("failed"), "{panel}");
    // Lean's message sits under the candidate line it is about.
    assert!(dom.contains("class=\"ln has-msg\""), "no message placed in the candidate");
    assert!(dom.contains("class=\"msg sev-error\""));
}

#[test]
fn a_page_of_ten_thousand_problems_is_usable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let small = bench_run(dir.path(), 2);
    // 10,000 finished problems: the small run's records, renamed.
    let big = dir.path().join("big");
    std::fs::create_dir_all(big.join("dags")).unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(small.join("config.json")).unwrap()).unwrap();
    config["dataset"]["problems"] = 10_000.into();
    std::fs::write(big.join("config.json"), config.to_string()).unwrap();
    let result: Value =
        serde_json::from_str(std::fs::read_to_string(small.join("results.jsonl")).unwrap().lines().next().unwrap())
            .unwrap();
    let attempts: Vec<Value> = std::fs::read_to_string(small.join("attempts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["problem"] == result["name"])
        .collect();
    let dag = std::fs::read_to_string(small.join(result["dag"].as_str().unwrap())).unwrap();
    std::fs::write(big.join("dags/shared.json"), dag).unwrap();
    let (mut results, mut lines) = (String::new(), String::new());
    for i in 0..10_000 {
        let name = format!("q{i:05}");
        let mut r = result.clone();
        r["name"] = name.clone().into();
        r["dag"] = "dags/shared.json".into();
        r["solved"] = (i % 3 != 0).into();
        results.push_str(&format!("{r}\n"));
        for a in &attempts {
            let mut a = a.clone();
            a["problem"] = name.clone().into();
            lines.push_str(&format!("{a}\n"));
        }
    }
    std::fs::write(big.join("results.jsonl"), results).unwrap();
    std::fs::write(big.join("attempts.jsonl"), lines).unwrap();
    let page = dir.path().join("big.html");
    let out = run_subgoal(&["report", big.to_str().unwrap(), "--no-plots", "--html", page.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mb = std::fs::metadata(&page).unwrap().len() as f64 / 1e6;

    let dom = load(&page, "problem=q09999&node=0", "ten-thousand", "");
    assert!(
        text_of(&dom, "count").starts_with("10000 of 10000 problems, first 500 shown"),
        "{}",
        text_of(&dom, "count")
    );
    assert!(text_of(&dom, "node-panel").contains("q09999") || text_of(&dom, "details").contains("q09999"));
    let usable = data_attr(&dom, "data-usable-ms").expect("the page says when its table was usable");
    let opened = data_attr(&dom, "data-opened-ms").expect("the page says when it opened the deep link");
    eprintln!("report_html: 10,000 problems, page {mb:.1} MB, table usable after {usable} ms, deep link opened after {opened} ms");
    // The goal is 2 s on a person's machine; here, a bound that only a page rendering all its
    // details (or all its rows) up front would break on a 2-core CI machine.
    assert!(usable < 2_000.0, "table usable only after {usable} ms");
}
