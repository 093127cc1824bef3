//! The decomposition pipeline end to end: real Lean (the test toolchain), models scripted by
//! replay transcripts these tests write. Each lemma statement a test scripts is what the pipeline
//! must restate from Lean's goals: a different restatement misses the transcript and fails.

mod common;

use std::sync::{Arc, Mutex};

use common::script::*;
use common::{pool_config, HEADER};
use subgoal::model::SamplingParams;
use subgoal::pipeline::closers::Portfolio;
use subgoal::pipeline::config::Closers;
use subgoal::pipeline::dag::{NodeKind, Status};
use subgoal::pipeline::library::LibraryScope;
use subgoal::pipeline::prompts::Prompts;
use subgoal::pipeline::scheduler::{Attempt, Engine, EngineConfig, Problem, ProblemOutcome, Role, Strategy, Via};
use subgoal::verify::{Verdict, Verifier, VerifyInput};

fn config(depth: u32) -> EngineConfig {
    EngineConfig {
        strategy: Strategy::Both,
        depth,
        k: 2,
        sketches: 1,
        prover: SamplingParams { max_new_tokens: 512, seed: None, ..Default::default() },
        planner: SamplingParams { max_new_tokens: 1024, seed: None, ..Default::default() },
        model_concurrency: 2,
        // Prompts offering proved lemmas depend on which finished first; transcripts key on
        // prompts, so only the library's own tests turn it on.
        library: LibraryScope::Off,
        ..Default::default()
    }
}

struct Run {
    engine: Arc<Engine>,
    verifier: Arc<Verifier>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    _dir: tempfile::TempDir,
}

fn start(script: &Script, timed: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let model = script.models(dir.path(), timed);
    let verifier = Arc::new(Verifier::start(pool_config(2, 60.0)).unwrap());
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let sink = attempts.clone();
    let engine = Engine::new(
        verifier.clone(),
        model.clone(),
        model,
        Prompts::load(None).unwrap(),
        script.cfg.clone(),
        Some(Arc::new(move |a: &Attempt| sink.lock().unwrap().push(a.clone()))),
    );
    Run { engine, verifier, attempts, _dir: dir }
}

impl Run {
    fn attempts(&self, node: &str, role: Role) -> Vec<Attempt> {
        self.attempts.lock().unwrap().iter().filter(|a| a.node == node && a.role == role).cloned().collect()
    }

    fn status(&self, name: &str) -> Status {
        let dag = self.engine.export_dag(None);
        dag.nodes
            .iter()
            .find(|n| n.node.name == name)
            .unwrap_or_else(|| panic!("no node {name} in {dag:#?}"))
            .node
            .status
    }
}

fn problem(name: &str, statement: &str) -> Problem {
    Problem {
        name: name.into(),
        header: HEADER.into(),
        informal_statement: "Prove it.".into(),
        formal_statement: statement.into(),
    }
}

async fn prove(run: &Run, name: &str, statement: &str) -> ProblemOutcome {
    run.engine.prove(&problem(name, statement)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_level_decomposition_proves_the_theorem() {
    let run = start(&two_level_script(&config(2)), false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(out.solved, "{out:#?}\n{:#?}", run.engine.export_dag(None));
    assert_eq!(out.via, Some(Via::Decomposition));
    for node in ["two_level", "two_level_h1", "two_level_h2", "two_level_h1_a", "two_level_h1_b"] {
        assert_eq!(run.status(node), Status::Proved, "{node}");
    }
    // The sub-subgoal was restated with the earlier step `a` as a premise (form b) …
    let dag = run.engine.export_dag(Some("two_level"));
    let b = dag.nodes.iter().find(|n| n.node.name == "two_level_h1_b").unwrap();
    assert_eq!(b.node.statement, H1_B);
    // … and without it in form (a).
    assert_eq!(
        b.node.statement_without_premises.as_deref(),
        Some("theorem two_level_h1_b (p q r : Prop) (hp : p) (hq : q) (hr : r) :\n    q :=")
    );
    assert_eq!(dag.nodes.iter().filter(|n| n.node.kind == NodeKind::Sketch).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recomposed_proof_is_verified_again_and_holds_every_step() {
    let run = start(&two_level_script(&config(2)), false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    let proof = out.proof.expect("solved");
    // The final proof went through every gate and the fresh re-check …
    let recomposed = run.attempts("two_level", Role::Recompose);
    assert!(recomposed.iter().any(|a| a.verdict == Verdict::Proved), "{recomposed:#?}");
    // … holds the sub-subgoal proofs in place, no `sorry` …
    assert!(proof.contains("have a : p := (hp)") && proof.contains("have h2 : r := (hr)"), "{proof}");
    assert!(!proof.contains("sorry"), "{proof}");
    // … and is, as written, a whole file Lean proves (checked with no reference statement).
    assert!(proof.starts_with(HEADER) && proof.contains(TWO_LEVEL), "{proof}");
    let input = VerifyInput {
        name: "two_level".into(),
        header: String::new(),
        formal_statement: String::new(),
        proof: None,
        code: Some(proof),
    };
    let record = run.verifier.verify(&input).await;
    assert_eq!(record.verdict, Verdict::Proved, "{record:#?}");
    assert!(record.recheck.is_some_and(|r| r.agreed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_depth_limit_stops_decomposition_and_a_failed_subgoal_fails_its_parents() {
    // Depth 1: the theorem is decomposed, its subgoals are not; `two_level_h1` fails whole.
    let run = start(&two_level_script(&config(1)), false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(!out.solved && out.proof.is_none(), "{out:#?}");
    assert!(out.reason.contains("subgoal two_level_h1 failed"), "{}", out.reason);
    assert!(run.attempts("two_level_h1", Role::Sketch).is_empty(), "decomposed beyond the depth limit");
    assert_eq!(run.status("two_level_h1"), Status::Failed);
    assert_eq!(run.status("two_level"), Status::Failed);
    let dag = run.engine.export_dag(Some("two_level"));
    let sketch = dag.nodes.iter().find(|n| n.node.kind == NodeKind::Sketch).unwrap();
    assert_eq!(sketch.node.status, Status::Failed);
    // Nothing on the path to the theorem is exported as proved.
    assert!(dag.nodes.iter().filter(|n| n.node.kind != NodeKind::Subgoal).all(|n| n.node.status != Status::Proved));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_subgoal_cancels_the_outstanding_work_of_its_siblings() {
    let cfg = config(1);
    let mut s = two_level_script(&cfg);
    // `two_level_h2`'s prover takes 60 s; `two_level_h1` fails at once.
    s.lines.retain(|l| !serde_json::to_string(&l.prompt).unwrap().contains("two_level_h2"));
    s.prover(
        "two_level_h2",
        H2,
        "",
        &["theorem two_level_h2 (p q r : Prop) (hp : p) (hq : q) (hr : r) (h1 : And p q) : r := hr"],
        60_000,
    );
    let run = start(&s, true);
    let started = std::time::Instant::now();
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(!out.solved);
    assert!(started.elapsed().as_secs() < 45, "the sibling's model call was not cancelled");
    assert_eq!(run.status("two_level_h2"), Status::Cancelled);
    assert!(run.attempts("two_level_h2", Role::Prover).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_subgoal_in_two_theorems_is_proved_once() {
    let cfg = config(1);
    let mut s = Script::new(&cfg);
    let t1 = "theorem t1 (p q : Prop) (hp : p) (hq : q) : And (And p q) p :=";
    let t2 = "theorem t2 (p q : Prop) (hp : p) (hq : q) : And q (And p q) :=";
    s.prover("t1", t1, "Prove it.", &["theorem t1 (p q : Prop) (hp : p) (hq : q) : And (And p q) p := hp"], 0);
    s.prover("t2", t2, "Prove it.", &["theorem t2 (p q : Prop) (hp : p) (hq : q) : And q (And p q) := hp"], 0);
    s.planner(
        "t1",
        t1,
        "Prove it.",
        "theorem t1 (p q : Prop) (hp : p) (hq : q) : And (And p q) p :=\n  have h : And p q := sorry\n  And.intro h hp",
    );
    s.planner("t2", t2, "Prove it.", "theorem t2 (p q : Prop) (hp : p) (hq : q) : And q (And p q) :=\n  have pq : And p q := sorry\n  And.intro hq pq");
    // Only `t1_h` is scripted: `t2_pq` is the same statement and must not reach the prover.
    s.prover(
        "t1_h",
        "theorem t1_h (p q : Prop) (hp : p) (hq : q) :\n    And p q :=",
        "",
        &["theorem t1_h (p q : Prop) (hp : p) (hq : q) : And p q := And.intro hp hq"],
        0,
    );
    let run = start(&s, false);
    let o1 = prove(&run, "t1", t1).await;
    let o2 = prove(&run, "t2", t2).await;
    assert!(o1.solved && o2.solved, "{o1:#?}\n{o2:#?}");
    let dag = run.engine.export_dag(None);
    let shared: Vec<_> = dag.nodes.iter().filter(|n| n.node.kind == NodeKind::Subgoal).collect();
    assert_eq!(shared.len(), 1, "{dag:#?}");
    assert_eq!(shared[0].node.problems, ["t1", "t2"]);
    assert_eq!(shared[0].node.attempts, 1);
    // Both sketches need the one node.
    assert_eq!(dag.edges.iter().filter(|[from, _]| *from == shared[0].id).count(), 2);
    assert!(o2.proof.unwrap().contains("have pq : And p q := (And.intro hp hq)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sketch_that_changes_the_statement_is_refused() {
    let cfg = config(1);
    let mut s = Script::new(&cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 0);
    // The sketch drops the conclusion's `r`.
    s.planner(
        "two_level",
        TWO_LEVEL,
        "Prove it.",
        "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And p q :=\n  have h1 : p := sorry\n  And.intro h1 hq",
    );
    let run = start(&s, false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(!out.solved);
    let sketches = run.attempts("two_level", Role::Sketch);
    assert_eq!(sketches.len(), 1);
    assert_eq!(sketches[0].verdict, Verdict::Rejected, "{:#?}", sketches[0]);
    assert!(out.reason.contains("the sketch is rejected"), "{}", out.reason);
    // No subgoal was made of it.
    let dag = run.engine.export_dag(None);
    assert!(dag.nodes.iter().all(|n| n.node.kind != NodeKind::Subgoal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goals_with_inaccessible_names_an_instance_and_a_let_are_restated_and_applied() {
    let cfg = EngineConfig { strategy: Strategy::Decompose, ..config(1) };
    let mut s = Script::new(&cfg);
    let stmt =
        "theorem inacc (p : Prop) [Decidable p] (f : Nat → Prop) : (m : Nat) → f m → And (f m) (Or p (Not p)) :=";
    s.planner(
        "inacc",
        stmt,
        "Prove it.",
        &format!("{stmt}\n  fun _ h =>\n  let k : Nat := Nat.add 1 1\n  have h1 : Eq k 2 := sorry\n  sorry"),
    );
    // Lean prints `x✝ : Nat`, `inst✝ : Decidable p` and `k : Nat := Nat.add 1 1`.
    // Numerals print with their types (`pp.numericTypes`), so they elaborate as they did.
    let binders = "(p : Prop) [Decidable p] (f : Nat → Prop) (x_1 : Nat) (h : f x_1) (k : Nat) \
                   (k_def : Eq k (Nat.add (1 : Nat) (1 : Nat)))";
    let h1 = format!("theorem inacc_h1 {binders} :\n    Eq k (2 : Nat) :=");
    let fin = format!("theorem inacc_final {binders} (h1 : Eq k (2 : Nat)) :\n    And (f x_1) (Or p (Not p)) :=");
    // Both proofs use names the sketch's context does not have (`k_def`, `x_1`).
    s.prover("inacc_h1", &h1, "", &[&format!("theorem inacc_h1 {binders} : Eq k (2 : Nat) := k_def")], 0);
    let fin_proof = format!(
        "theorem inacc_final {binders} (h1 : Eq k (2 : Nat)) : And (f x_1) (Or p (Not p)) :=\n  @And.intro (f x_1) (Or p (Not p)) h (dite p (fun hp => Or.inl hp) (fun hn => Or.inr hn))"
    );
    s.prover("inacc_final", &fin, "", &[&fin_proof], 0);
    let run = start(&s, false);
    let out = prove(&run, "inacc", stmt).await;
    assert!(out.solved, "{out:#?}\n{:#?}", run.engine.export_dag(None));
    // Each restated lemma elaborated on its own before it was proved.
    for lemma in ["inacc_h1", "inacc_final"] {
        let checks = run.attempts(lemma, Role::Lemma);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].verdict, Verdict::Incomplete, "{:#?}", checks[0]);
    }
    // Pasting the proofs in place fails (their names are not the context's); applying the
    // lemmas at their `sorry`s is what Lean accepted.
    let layouts: Vec<Verdict> = run.attempts("inacc", Role::Recompose).iter().map(|a| a.verdict).collect();
    assert_eq!(layouts, [Verdict::Failed, Verdict::Proved]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_candidate_goes_back_once_with_leans_errors() {
    let cfg = EngineConfig { strategy: Strategy::Whole, repair: 1, k: 1, ..config(0) };
    // What Lean says about the wrong proof is what the repair prompt must carry.
    let feedback = feedback_on(&format!("{HEADER}\n{WRONG}\n")).await;
    assert!(feedback.errors.starts_with("line "), "{}", feedback.errors);
    assert!(feedback.marked.contains("<error>"), "{}", feedback.marked);
    let mut s = Script::new(&cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 0);
    s.repair("two_level", TWO_LEVEL, &feedback, 1, FIXED);
    let run = start(&s, false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(out.solved, "{out:#?}");
    assert_eq!(out.via, Some(Via::Repair));
    let repairs = run.attempts("two_level", Role::Repair);
    assert_eq!(repairs.iter().map(|a| a.round).collect::<Vec<_>>(), [Some(1)]);
}

const FIXED: &str =
    "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And (And p q) r := And.intro (And.intro hp hq) hr";
const WRONG_TOO: &str =
    "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And (And p q) r := And.intro hp hr";

/// What a repair prompt shows of `code` (the two_level candidate), as Lean judges it.
async fn feedback_on(code: &str) -> subgoal::pipeline::feedback::Feedback {
    let verifier = Verifier::start(pool_config(1, 60.0)).unwrap();
    let input = VerifyInput {
        name: "two_level".into(),
        header: HEADER.into(),
        formal_statement: TWO_LEVEL.into(),
        proof: None,
        code: Some(code.to_string()),
    };
    let (record, doc) = verifier.verify_document(&input).await;
    verifier.shutdown().await;
    subgoal::pipeline::feedback::feedback(&doc.unwrap(), &record, 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_that_fails_is_repaired_again_in_the_next_round_with_its_own_errors() {
    let cfg = EngineConfig { strategy: Strategy::Whole, repair: 2, k: 1, ..config(0) };
    let first = feedback_on(&format!("{HEADER}\n{WRONG}\n")).await;
    let second = feedback_on(&format!("{HEADER}\n{WRONG_TOO}\n")).await;
    assert_ne!(first.errors, second.errors);
    let mut s = Script::new(&cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 0);
    s.repair("two_level", TWO_LEVEL, &first, 1, WRONG_TOO);
    s.repair("two_level", TWO_LEVEL, &second, 2, FIXED);
    let run = start(&s, false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(out.solved, "{out:#?}");
    assert_eq!(out.via, Some(Via::Repair));
    let rounds: Vec<(Option<u32>, Verdict)> =
        run.attempts("two_level", Role::Repair).iter().map(|a| (a.round, a.verdict)).collect();
    assert_eq!(rounds, [(Some(1), Verdict::Failed), (Some(2), Verdict::Proved)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_repair_rounds_the_failure_says_how_many_samples_were_tried() {
    let cfg = EngineConfig { strategy: Strategy::Whole, repair: 1, k: 1, ..config(0) };
    let first = feedback_on(&format!("{HEADER}\n{WRONG}\n")).await;
    let mut s = Script::new(&cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 0);
    s.repair("two_level", TWO_LEVEL, &first, 1, WRONG_TOO);
    let run = start(&s, false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(!out.solved);
    assert_eq!(out.reason, "prover: no proof in 1 samples, nor in 1 repair round");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_strategy_never_sketches() {
    let cfg = EngineConfig { strategy: Strategy::Whole, ..config(2) };
    let run = start(&two_level_script(&cfg), false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(!out.solved);
    assert_eq!(out.reason, "prover: no proof in 2 samples");
    assert!(run.attempts("two_level", Role::Sketch).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_stops_at_its_model_call_budget() {
    let mut cfg = config(2);
    cfg.budget.max_model_calls = Some(1);
    let run = start(&two_level_script(&cfg), false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(!out.solved);
    assert_eq!(out.model_calls, 1);
    assert!(out.reason.contains("budget: 1 model calls used"), "{}", out.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_past_its_wall_time_is_stopped_and_its_work_cancelled() {
    let mut cfg = config(2);
    cfg.budget.max_wall_s = Some(1.0);
    let mut s = Script::new(&cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 60_000);
    let run = start(&s, true);
    let started = std::time::Instant::now();
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(started.elapsed().as_secs() < 10);
    assert!(!out.solved && out.reason.contains("wall-time limit of 1 s"), "{}", out.reason);
    assert_eq!(run.status("two_level"), Status::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sketch_node_keeps_the_planners_informal_reasoning() {
    let run = start(&two_level_script(&config(2)), false);
    prove(&run, "two_level", TWO_LEVEL).await;
    let dag = run.engine.export_dag(Some("two_level"));
    let sketch = dag.nodes.iter().find(|n| n.node.name == "two_level#sketch0").unwrap();
    assert_eq!(
        sketch.node.informal.as_deref(),
        Some("### Detailed Proof and Analysis\nSplit the goal.\n\nHere is the proof.")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn theorems_alike_but_for_their_names_are_proved_apart() {
    // A name's namespace decides what a statement's names mean: equal text is not equal meaning.
    let cfg = EngineConfig { strategy: Strategy::Whole, ..config(0) };
    let mut s = Script::new(&cfg);
    for name in ["A.t", "B.t"] {
        let statement = format!("theorem {name} (p : Prop) (hp : p) : p :=");
        s.prover(name, &statement, "Prove it.", &[&format!("{statement} hp")], 0);
    }
    let run = start(&s, false);
    for name in ["A.t", "B.t"] {
        let out = prove(&run, name, &format!("theorem {name} (p : Prop) (hp : p) : p :=")).await;
        assert!(out.solved, "{out:#?}");
        assert!(out.proof.unwrap().contains(&format!("theorem {name} ")));
        assert_eq!(run.attempts(name, Role::Prover).len(), 1, "{name} was proved by its own samples");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_request_gets_a_seed_of_its_own_that_a_second_run_draws_again() {
    // The transcript carries no seeds, so it answers whatever seeds the engine derives; a recorder
    // around it writes down the parameters of every request.
    let script = two_level_script(&config(2));
    let mut seeded = config(2);
    seeded.prover.seed = Some(7);
    seeded.planner.seed = Some(7);
    let run_once = |tag: &'static str| {
        let script = &script;
        let seeded = seeded.clone();
        async move {
            let dir = tempfile::tempdir().unwrap();
            let transcript = dir.path().join("transcript.jsonl");
            script.write(&transcript);
            let recording = dir.path().join(format!("{tag}.jsonl"));
            let replay = subgoal::model::record::Replay::open(&transcript).unwrap();
            let model: Arc<dyn subgoal::model::Generator> =
                Arc::new(subgoal::model::record::Recorder::new(Box::new(replay), &recording).unwrap());
            let verifier = Arc::new(Verifier::start(pool_config(2, 60.0)).unwrap());
            let attempts = Arc::new(Mutex::new(Vec::new()));
            let sink = attempts.clone();
            let engine = Engine::new(
                verifier,
                model.clone(),
                model,
                Prompts::load(None).unwrap(),
                seeded,
                Some(Arc::new(move |a: &Attempt| sink.lock().unwrap().push(a.clone()))),
            );
            let out = engine.prove(&problem("two_level", TWO_LEVEL)).await;
            assert!(out.solved, "{out:#?}");
            let lines: Vec<subgoal::model::record::RecordLine> = std::fs::read_to_string(&recording)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let mut seeds: Vec<(String, u64)> = lines
                .iter()
                .map(|l| (serde_json::to_string(&l.prompt).unwrap(), l.params.seed.expect("every request is seeded")))
                .collect();
            seeds.sort();
            let recorded: Vec<Option<u64>> =
                attempts.lock().unwrap().iter().filter(|a| a.role == Role::Prover).map(|a| a.seed).collect();
            (seeds, recorded)
        }
    };
    let (first, attempt_seeds) = run_once("first").await;
    let (second, _) = run_once("second").await;
    // Theorem and subgoals, prover and planner: five requests, five different seeds.
    let distinct: std::collections::HashSet<u64> = first.iter().map(|(_, s)| *s).collect();
    assert_eq!(distinct.len(), first.len(), "{first:#?}");
    assert!(first.len() >= 5, "{first:#?}");
    assert!(!distinct.contains(&7));
    // The same run again draws the same seeds, request by request.
    assert_eq!(first, second);
    // Each prover attempt records the seed of its request.
    assert!(attempt_seeds.iter().all(|s| s.is_some_and(|s| distinct.contains(&s))), "{attempt_seeds:?}");
}

/// A portfolio of the fixture's tactics (Mathlib's default needs Mathlib).
fn closers(tactics: &[&str]) -> Closers {
    Closers::Custom(Portfolio { tactics: tactics.iter().map(|t| t.to_string()).collect(), heartbeats: 50_000 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_theorem_a_closer_proves_costs_no_model_call() {
    let cfg = EngineConfig { closers: closers(&["constructor", "assumption"]), ..config(1) };
    // No transcript: any model call would miss it and fail the problem.
    let run = start(&Script::new(&cfg), false);
    let statement = "theorem closable (p q : Prop) (hp : p) (hq : q) : q :=";
    let out = prove(&run, "closable", statement).await;
    assert!(out.solved, "{out:#?}");
    assert_eq!(out.via, Some(Via::Closer));
    assert_eq!(out.model_calls, 0);
    assert!(out.proof.as_deref().unwrap().contains("by\n  assumption"), "{:?}", out.proof);
    let tried = run.attempts("closable", Role::Closer);
    assert_eq!(tried.len(), 1, "only the tactic the screen picked is verified");
    assert_eq!((tried[0].tactic.as_deref(), tried[0].verdict), (Some("assumption"), Verdict::Proved));
    let dag = run.engine.export_dag(None);
    assert_eq!(dag.nodes[0].node.via, Some(Via::Closer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sketchs_subgoals_are_screened_in_one_check_and_only_the_unclosed_go_to_the_prover() {
    let cfg = EngineConfig { closers: closers(&["assumption"]), ..config(1) };
    let mut s = Script::new(&cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 0);
    s.planner("two_level", TWO_LEVEL, "Prove it.", sketch_two_level());
    // h2 (`r`, with `hr` at hand) is the closer's; only h1 reaches the prover.
    s.prover(
        "two_level_h1",
        H1,
        "",
        &["theorem two_level_h1 (p q r : Prop) (hp : p) (hq : q) (hr : r) : And p q := And.intro hp hq"],
        0,
    );
    let run = start(&s, false);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(out.solved, "{out:#?}\n{:#?}", run.engine.export_dag(None));
    assert_eq!(out.via, Some(Via::Decomposition));
    // One screen for the theorem, one for both subgoals of its sketch.
    assert_eq!(run.engine.closer_screens(), 2);
    assert!(run.attempts("two_level_h2", Role::Prover).is_empty());
    assert_eq!(run.attempts("two_level_h2", Role::Closer).len(), 1);
    assert!(run.attempts("two_level_h1", Role::Closer).is_empty(), "no tactic closed h1: nothing to verify");
    let dag = run.engine.export_dag(None);
    let via = |name: &str| dag.nodes.iter().find(|n| n.node.name == name).and_then(|n| n.node.via);
    assert_eq!((via("two_level_h1"), via("two_level_h2")), (Some(Via::Prover), Some(Via::Closer)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lemma_proved_earlier_in_the_run_is_offered_and_an_answer_using_it_states_it_first() {
    let cfg = EngineConfig { library: LibraryScope::Run, ..config(1) };
    let and_of = "theorem and_of (p q : Prop) (hp : p) (hq : q) : And p q :=";
    let offered = "theorem and_of (p q : Prop) (hp : p) (hq : q) : And p q";
    let one_step = "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And (And p q) r :=\n  have h1 : And p q := sorry\n  And.intro h1 hr";
    let mut s = Script::new(&cfg);
    // Nothing is proved yet when the first problem's prompt is written.
    s.prover(
        "and_of",
        and_of,
        "Prove it.",
        &["theorem and_of (p q : Prop) (hp : p) (hq : q) : And p q := And.intro hp hq"],
        0,
    );
    s.prover_offered("two_level", TWO_LEVEL, "Prove it.", offered, &[WRONG], 0);
    s.planner("two_level", TWO_LEVEL, "Prove it.", one_step);
    let h1 = "theorem two_level_h1 (p q r : Prop) (hp : p) (hq : q) (hr : r) :\n    And p q :=";
    s.prover_offered(
        "two_level_h1",
        h1,
        "",
        offered,
        &["theorem two_level_h1 (p q r : Prop) (hp : p) (hq : q) (hr : r) : And p q := and_of p q hp hq"],
        0,
    );
    let run = start(&s, false);
    assert!(prove(&run, "and_of", and_of).await.solved);
    let out = prove(&run, "two_level", TWO_LEVEL).await;
    assert!(out.solved, "{out:#?}\n{:#?}", run.engine.export_dag(None));
    assert_eq!(out.via, Some(Via::Decomposition));
    let used = run.attempts("two_level_h1", Role::Prover);
    assert!(used[0].code.find("theorem and_of").unwrap() < used[0].code.find("theorem two_level_h1").unwrap());
    // The recomposed proof states the lemma its subgoal's proof used, before the theorem.
    let proof = out.proof.unwrap();
    assert!(proof.find("theorem and_of").unwrap() < proof.find("theorem two_level ").unwrap(), "{proof}");
}
