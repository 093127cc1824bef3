//! Benchmark datasets: the registry against the real files this checkout carries (benchmarks/data), each format's
//! normalisation, bad lines, field mappings, resolving names, and fetching (no network: a local
//! server).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use subgoal::datasets::{
    detect, fetch, load, load_entry, resolve, BenchProblem, DatasetError, FieldMap, Format, Loaded, Registry,
    RegistryEntry, Resolved,
};
use subgoal::digest::sha256_hex;
use subgoal::pipeline::problem::Problem;

/// The checkout's data directory; its absence fails the tests that need it, loudly.
fn shared_dir() -> PathBuf {
    let dir = subgoal::datasets::bundled_data_dir();
    assert!(dir.is_dir(), "the benchmark data is missing: expected it in {}", dir.display());
    dir
}

fn shared(file: &str) -> PathBuf {
    let path = shared_dir().join(file);
    assert!(path.is_file(), "missing dataset file {}", path.display());
    path
}

fn load_registered(name: &str) -> Loaded {
    let resolved = resolve(name, &[shared_dir()]).unwrap_or_else(|e| panic!("{name}: {e}"));
    load_entry(&resolved).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn all_registered() -> Vec<(RegistryEntry, Loaded)> {
    Registry::builtin().entries.into_iter().map(|e| (e.clone(), load_registered(&e.name))).collect()
}

fn count_by<'a>(
    problems: &'a [BenchProblem],
    key: impl Fn(&'a BenchProblem) -> Option<&'a str>,
) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for p in problems {
        *counts.entry(key(p).unwrap_or("(none)")).or_default() += 1;
    }
    counts
}

const HEADER: &str = "import Mathlib\n";

/// A JSONL file of `lines` in a fresh temporary directory.
fn jsonl(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (dir, path)
}

fn deepseek(name: &str, statement: &str) -> String {
    let informal = "/-- Easy. -/\n";
    json!({"name": name, "split": "test", "informal_prefix": informal, "formal_statement": statement, "header": HEADER})
        .to_string()
}

/// Loads `good`, `bad`, `good` as DeepSeek records and returns the one error, checking that both
/// good lines loaded.
fn the_error_between_two_good_lines(bad: String) -> String {
    let good = deepseek("t", "theorem t : True := by\n");
    let (_dir, path) = jsonl(&[good.clone(), bad, good]);
    let loaded = load(&path, Some(&Format::DeepSeek)).unwrap();
    assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.errors);
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert_eq!(loaded.errors[0].source, "bad.jsonl:2");
    loaded.errors[0].to_string()
}

// --- The registry against the shared files ---------------------------------------------------

#[test]
fn every_registry_entry_loads_its_expected_count_with_only_its_known_errors() {
    for (entry, loaded) in all_registered() {
        println!(
            "{:<24} {:>4} problems (expected {}), {} errors (expected {})",
            entry.name,
            loaded.problems.len(),
            entry.expected_count,
            loaded.errors.len(),
            entry.expected_errors
        );
        assert_eq!(loaded.problems.len(), entry.expected_count, "{}", entry.name);
        assert_eq!(loaded.errors.len(), entry.expected_errors, "{}: {:#?}", entry.name, loaded.errors);
    }
}

#[test]
fn proofnet_def_problems_are_its_only_errors() {
    for name in ["proofnet-test", "proofnet-valid"] {
        let loaded = load_registered(name);
        for e in &loaded.errors {
            assert!(e.detail.contains("declares a `def`, not a theorem or lemma"), "{e}");
        }
    }
}

#[test]
fn minif2f_has_244_problems_in_each_split_in_both_versions() {
    for name in ["minif2f", "minif2f-v4.24-test", "minif2f-v4.24-valid"] {
        let loaded = load_registered(name);
        println!("{name}: {:?}", count_by(&loaded.problems, |p| p.split.as_deref()));
    }
    let deepseek = load_registered("minif2f");
    assert_eq!(count_by(&deepseek.problems, |p| p.split.as_deref()), BTreeMap::from([("test", 244), ("valid", 244)]));
    let v424 = load(&shared("minif2f_lean4_yangky11_v4.24.jsonl"), None).unwrap();
    assert_eq!(count_by(&v424.problems, |p| p.split.as_deref()), BTreeMap::from([("test", 244), ("valid", 244)]));
}

#[test]
fn proverbench_areas_match_the_readme() {
    let loaded = load_registered("proverbench-partial");
    let areas = count_by(&loaded.problems, |p| p.area.as_deref());
    println!("proverbench-partial areas: {areas:?}");
    let readme = BTreeMap::from([
        ("aime", 15),
        ("number_theory", 33),
        ("elementary_algebra", 24),
        ("linear_algebra", 25),
        ("abstract_algebra", 36),
        ("calculus", 70),
        ("real_analysis", 14),
        ("complex_analysis", 4),
        ("functional_analysis", 4),
        ("probability", 5),
    ]);
    assert_eq!(areas, readme);
    assert_eq!(loaded.problems.len(), 230);
}

#[test]
fn proverbench_problems_are_named_by_their_unique_ids() {
    let loaded = load_registered("proverbench-partial");
    let raw: Vec<Value> = raw_records("proverbench.from-Autoformalizer-with-Tool-Feedback.jsonl");
    let ids: Vec<&str> = raw.iter().map(|r| r["others"]["name"].as_str().unwrap()).collect();
    let names: Vec<&str> = loaded.problems.iter().map(|p| p.problem.name.as_str()).collect();
    assert_eq!(names, ids);
    let p = &loaded.problems[0].problem;
    assert!(p.formal_statement.starts_with("theorem aime_2024i_p2 "), "{}", p.formal_statement);
}

#[test]
fn proverbench_prefers_informal_statement_and_cuts_the_docstring_off_the_header() {
    let loaded = load_registered("proverbench-partial");
    for p in &loaded.problems {
        assert!(!p.problem.informal_statement.is_empty(), "{}", p.source);
        let h = p.problem.header.trim_end();
        let last_comment = h.rfind("/-").map_or("", |i| &h[i..]);
        assert!(!(last_comment.starts_with("/--") && h.ends_with("-/")), "{}: {h:?}", p.source);
    }
    assert!(loaded.problems[0].problem.informal_statement.starts_with("- Real numbers $x$ and $y$"));
}

#[test]
fn putnambench_has_672_problems() {
    assert_eq!(load_registered("putnambench").problems.len(), 672);
}

// --- PutnamBench answers ---------------------------------------------------------------------

fn raw_records(file: &str) -> Vec<Value> {
    std::fs::read_to_string(shared(file))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn everything_in(p: &Problem) -> String {
    format!("{}\n{}\n{}\n{}", p.name, p.header, p.informal_statement, p.formal_statement)
}

#[test]
fn no_putnambench_problem_contains_its_answer() {
    let loaded = load_registered("putnambench");
    let by_name: HashMap<&str, &Problem> =
        loaded.problems.iter().map(|p| (p.problem.name.as_str(), &p.problem)).collect();
    let mut checked = 0;
    for rec in raw_records("putnambench_lean4.jsonl") {
        if rec["has_solution_abbrev"] != json!(true) {
            continue;
        }
        let name = rec["name"].as_str().unwrap();
        let p = by_name[name];
        let abbrev = p.header.find("_solution").unwrap_or_else(|| panic!("{name}: the solution abbrev was dropped"));
        let after = &p.header[abbrev..];
        assert!(!after.contains("--") && !after.contains("/-"), "{name}: a comment follows the abbrev: {after:?}");
        let everything = everything_in(p);
        let solution = rec["informal_solution"].as_str().unwrap().trim();
        assert!(!everything.contains(solution), "{name}: informal_solution {solution:?} appears");
        // The answer comment itself, as upstream wrote it.
        let raw_header = rec["header"].as_str().unwrap();
        let comment =
            raw_header[raw_header.find("_solution").unwrap()..].lines().find(|l| l.trim_start().starts_with("--"));
        let comment = comment.unwrap_or_else(|| panic!("{name}: no answer comment upstream"));
        assert!(!everything.contains(comment.trim()), "{name}: the answer comment {comment:?} appears");
        checked += 1;
    }
    println!("putnambench: {checked} problems with a solution abbrev checked");
    assert_eq!(checked, 346);
}

// --- Normalisation of every problem ----------------------------------------------------------

#[test]
fn every_problem_ends_in_assign_and_reads_back_through_from_lean() {
    for (entry, loaded) in all_registered() {
        for bp in &loaded.problems {
            let p = &bp.problem;
            assert!(p.formal_statement.ends_with(":="), "{}: {:?}", bp.source, p.formal_statement);
            assert_eq!(p.formal_statement, p.formal_statement.trim(), "{}", bp.source);
            let back = Problem::from_lean(&format!("{}{}", p.header, p.formal_statement), None)
                .unwrap_or_else(|e| panic!("{} ({}): {e}", bp.source, entry.name));
            assert_eq!(back.name, p.name, "{}", bp.source);
            // `statement_span` ends a statement at its first `:=` outside brackets, which for
            // `… : let x := v; P x :=` is the let's; the loader keeps the whole statement.
            let has_let = ["let ", "letI ", "have ", "haveI "].iter().any(|kw| p.formal_statement.contains(kw));
            if !has_let {
                assert_eq!(back.formal_statement, p.formal_statement, "{}", bp.source);
            }
        }
    }
}

#[test]
fn every_header_ends_in_exactly_one_newline() {
    for (_, loaded) in all_registered() {
        for bp in &loaded.problems {
            let h = &bp.problem.header;
            assert!(h.is_empty() || (h.ends_with('\n') && !h.ends_with("\n\n")), "{}: {h:?}", bp.source);
        }
    }
}

#[test]
fn informal_statements_carry_no_docstring_delimiters() {
    for (_, loaded) in all_registered() {
        for bp in &loaded.problems {
            let s = &bp.problem.informal_statement;
            assert!(!s.starts_with("/--") && !s.ends_with("-/"), "{}: {s:?}", bp.source);
        }
    }
    let minif2f = load_registered("minif2f");
    assert!(minif2f.problems[0].problem.informal_statement.starts_with("Let $z=\\frac{1+i}{\\sqrt{2}}.$"));
}

#[test]
fn a_by_sorry_after_the_statement_is_dropped() {
    let loaded = load_registered("minicodeprops");
    let p = &loaded.problems[0].problem;
    let statement = "theorem prop_01 (n: Nat) (xs: List α) :\n List.take n xs ++ List.drop n xs = xs:=";
    assert_eq!(p.formal_statement, statement);
    assert_eq!(p.header, "import Mathlib\n");
}

// --- Bad lines -------------------------------------------------------------------------------

#[test]
fn a_line_that_is_not_json_is_one_error_naming_file_and_line() {
    let e = the_error_between_two_good_lines("{\"name\": \"broken\", ".into());
    assert!(e.starts_with("bad.jsonl:2: not valid JSON: "), "{e}");
}

#[test]
fn a_missing_field_is_one_error_naming_the_field() {
    let bad = json!({"name": "t", "split": "test", "header": HEADER}).to_string();
    assert_eq!(the_error_between_two_good_lines(bad), "bad.jsonl:2: field \"formal_statement\" is missing");
}

#[test]
fn a_non_string_field_is_one_error_naming_the_field() {
    let bad = json!({"name": "t", "header": HEADER, "informal_prefix": "", "formal_statement": 3}).to_string();
    assert_eq!(the_error_between_two_good_lines(bad), "bad.jsonl:2: field \"formal_statement\" must be a string");
}

#[test]
fn a_statement_without_assign_is_one_error_naming_the_field() {
    let e = the_error_between_two_good_lines(deepseek("t", "theorem t : True"));
    assert!(e.starts_with("bad.jsonl:2: field \"formal_statement\" does not end in :="), "{e}");
}

#[test]
fn a_name_other_than_the_declared_one_is_one_error_naming_the_field() {
    let e = the_error_between_two_good_lines(deepseek("u", "theorem t : True :="));
    assert_eq!(e, "bad.jsonl:2: field \"name\" is \"u\" but field \"formal_statement\" declares \"t\"");
}

#[test]
fn a_statement_that_declares_no_theorem_is_one_error() {
    let e = the_error_between_two_good_lines(deepseek("t", "def t : ℕ :="));
    assert!(e.contains("field \"formal_statement\" declares a `def`"), "{e}");
}

#[test]
fn blank_lines_are_ignored_and_lines_keep_their_numbers() {
    let (_dir, path) = jsonl(&[String::new(), deepseek("t", "theorem t : True :="), "   ".into(), "[1]".into()]);
    let loaded = load(&path, None).unwrap();
    assert_eq!(loaded.problems[0].source, "bad.jsonl:2");
    assert_eq!(loaded.errors.iter().map(ToString::to_string).collect::<Vec<_>>(), ["bad.jsonl:4: not a JSON object"]);
}

#[test]
fn a_file_with_no_records_is_an_error() {
    let (_dir, path) = jsonl(&["".into(), "  ".into()]);
    assert!(matches!(load(&path, None), Err(DatasetError::Empty { .. })));
}

#[test]
fn a_file_of_no_known_format_is_an_error_without_a_mapping() {
    let (_dir, path) = jsonl(&[json!({"id": "t", "thm": "theorem t : True :="}).to_string()]);
    let err = load(&path, None).unwrap_err();
    assert!(matches!(err, DatasetError::Undetectable { .. }), "{err}");
    assert!(err.to_string().contains("fields id, thm"), "{err}");
}

#[test]
fn an_unreadable_file_is_an_error() {
    let err = load(Path::new("/nonexistent/x.jsonl"), None).unwrap_err();
    assert!(matches!(err, DatasetError::Read { .. }), "{err}");
}

// --- Field mappings --------------------------------------------------------------------------

#[test]
fn a_field_mapping_reads_jsonl_with_other_field_names() {
    let rec = json!({
        "id": "t", "thm": "theorem t (n : ℕ) : n = n := by sorry", "hdr": "import Mathlib\n\nopen Nat\n\n",
        "nl": "/-- Show n = n. -/", "part": "dev", "topic": "algebra"
    });
    let (_dir, path) = jsonl(&[rec.to_string()]);
    let map = FieldMap::parse("name=id,statement=thm,header=hdr,informal=nl,split=part,area=topic").unwrap();
    let loaded = load(&path, Some(&Format::Fields(map))).unwrap();
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let bp = &loaded.problems[0];
    assert_eq!(
        bp.problem,
        Problem {
            name: "t".into(),
            header: "import Mathlib\n\nopen Nat\n".into(),
            informal_statement: "Show n = n.".into(),
            formal_statement: "theorem t (n : ℕ) : n = n :=".into(),
        }
    );
    assert_eq!(
        (bp.split.as_deref(), bp.area.as_deref(), bp.source.as_str()),
        (Some("dev"), Some("algebra"), "bad.jsonl:1")
    );
}

#[test]
fn a_mapped_statement_may_carry_its_own_header_and_docstring() {
    let rec = json!({"id": "t", "lean": "import Mathlib\n/-- Trivial. -/\ntheorem t : True := by\n  sorry\n"});
    let (_dir, path) = jsonl(&[rec.to_string()]);
    let loaded = load(&path, Some(&"fields:name=id,statement=lean".parse().unwrap())).unwrap();
    let p = &loaded.problems[0].problem;
    assert_eq!((p.header.as_str(), p.informal_statement.as_str()), ("import Mathlib\n", "Trivial."));
}

// --- Detection -------------------------------------------------------------------------------

#[test]
fn each_shared_file_is_detected_as_its_format() {
    let cases = [
        ("minif2f.jsonl", Format::DeepSeek),
        ("proofnet.jsonl", Format::DeepSeek),
        ("minif2f_core_candidates.jsonl", Format::DeepSeek),
        ("minif2f_lean4_yangky11_v4.24.jsonl", Format::MiniF2FLean424),
        ("proverbench.from-Autoformalizer-with-Tool-Feedback.jsonl", Format::ProverBench),
        ("putnambench_lean4.jsonl", Format::PutnamBench),
        ("minicodeprops_bench_ps.jsonl", Format::MiniCodeProps),
    ];
    for (file, format) in cases {
        let first: Value =
            serde_json::from_str(std::fs::read_to_string(shared(file)).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(detect(&first), Some(format.clone()), "{file}");
        assert_eq!(load(&shared(file), None).unwrap().format, format, "{file}");
    }
    assert_eq!(detect(&json!({"id": 1})), None);
}

// --- Resolving names -------------------------------------------------------------------------

#[test]
fn an_unknown_name_is_an_error_listing_the_known_ones() {
    let err = resolve("minif2f-tset", &[shared_dir()]).unwrap_err().to_string();
    assert!(err.contains("unknown dataset \"minif2f-tset\""), "{err}");
    for name in Registry::builtin().names() {
        assert!(err.contains(name), "{err} lacks {name}");
    }
}

#[test]
fn a_known_name_missing_from_the_data_dirs_is_an_error_naming_them() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let err = resolve("minif2f-test", &[a.path().into(), b.path().into()]).unwrap_err().to_string();
    assert!(err.contains(&a.path().display().to_string()) && err.contains(&b.path().display().to_string()), "{err}");
    assert!(err.contains("subgoal datasets fetch minif2f-test") && err.contains("--data-dir"), "{err}");
}

#[test]
fn a_name_is_found_in_the_first_data_dir_holding_its_file() {
    let empty = tempfile::tempdir().unwrap();
    let resolved = resolve("putnambench", &[empty.path().into(), shared_dir()]).unwrap();
    assert_eq!(resolved.path, shared_dir().join("putnambench_lean4.jsonl"));
    assert_eq!(resolved.entry.unwrap().name, "putnambench");
}

#[test]
fn an_existing_path_resolves_to_itself_without_an_entry() {
    let path = shared("minif2f.jsonl");
    let resolved = resolve(path.to_str().unwrap(), &[]).unwrap();
    assert_eq!((resolved.path, resolved.entry), (path, None));
}

#[test]
fn a_registered_file_with_other_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(shared("minif2f.jsonl")).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(dir.path().join("minif2f.jsonl"), &bytes).unwrap();
    let resolved = resolve("minif2f-test", &[dir.path().into()]).unwrap();
    let err = load_entry(&resolved).unwrap_err();
    assert!(matches!(err, DatasetError::Checksum { .. }), "{err}");
    // Loading it by path still works.
    assert_eq!(load_entry(&Resolved { entry: None, ..resolved }).unwrap().problems.len(), 488);
}

#[test]
fn an_entry_without_a_checksum_loads_any_bytes() {
    let mut entry = Registry::builtin().get("minicodeprops").unwrap().clone();
    entry.sha256.clear();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&entry.file);
    let first = std::fs::read_to_string(shared(&entry.file)).unwrap().lines().next().unwrap().to_string();
    std::fs::write(&path, first).unwrap();
    assert_eq!(load_entry(&Resolved { path, entry: Some(entry) }).unwrap().problems.len(), 1);
}

// --- Fetching --------------------------------------------------------------------------------

/// Serves `body` over HTTP on 127.0.0.1 to one request; returns the URL.
fn serve_once(body: &'static [u8]) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        conn.write_all(head.as_bytes()).unwrap();
        conn.write_all(body).unwrap();
    });
    format!("http://127.0.0.1:{port}/data.jsonl")
}

const BODY: &[u8] = b"{\"name\": \"t\"}\n";

fn entry_for(url: Option<String>, sha256: String) -> RegistryEntry {
    let mut entry = Registry::builtin().get("minif2f-test").unwrap().clone();
    entry.url = url;
    entry.sha256 = sha256;
    entry
}

#[tokio::test]
async fn fetch_refuses_an_entry_without_a_url_and_names_its_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let entry = Registry::builtin().get("putnambench").unwrap().clone();
    let err = fetch(&entry, dir.path()).await.unwrap_err().to_string();
    assert!(err.contains("has no download URL") && err.contains("trishullab/PutnamBench"), "{err}");
    assert!(err.contains("copy putnambench_lean4.jsonl"), "{err}");
}

#[tokio::test]
async fn fetch_writes_the_file_when_its_sha256_matches() {
    let dir = tempfile::tempdir().unwrap();
    let entry = entry_for(Some(serve_once(BODY)), sha256_hex(BODY));
    let path = fetch(&entry, &dir.path().join("sub")).await.unwrap();
    assert_eq!(path, dir.path().join("sub/minif2f.jsonl"));
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1, "a temporary file was left");
}

#[tokio::test]
async fn fetch_leaves_nothing_behind_when_the_sha256_differs() {
    let dir = tempfile::tempdir().unwrap();
    let entry = entry_for(Some(serve_once(BODY)), sha256_hex(b"other bytes"));
    let err = fetch(&entry, dir.path()).await.unwrap_err();
    assert!(matches!(err, DatasetError::DownloadChecksum { .. }), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a file was left behind");
}

#[tokio::test]
async fn fetch_keeps_a_file_that_already_matches_without_downloading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("minif2f.jsonl"), BODY).unwrap();
    // Nothing listens on this URL: a download attempt would fail.
    let entry = entry_for(Some("http://127.0.0.1:9/none".into()), sha256_hex(BODY));
    assert_eq!(fetch(&entry, dir.path()).await.unwrap(), dir.path().join("minif2f.jsonl"));
}

#[test]
fn every_registered_dataset_names_each_problem_once() {
    // Problem names identify problems in a run; ProofNet repeats exercise numbers, renamed on load.
    for (entry, loaded) in all_registered() {
        let mut names: Vec<&str> = loaded.problems.iter().map(|p| p.problem.name.as_str()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "{}: a name repeats", entry.name);
        for p in &loaded.problems {
            let declared = subgoal::lean::source::statement_span(&p.problem.formal_statement, None).map(|(_, _, n)| n);
            assert_eq!(declared.as_deref(), Some(p.problem.name.as_str()), "{}", entry.name);
        }
    }
}
