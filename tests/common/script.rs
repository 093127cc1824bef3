//! Scripted models for pipeline tests: replay transcripts holding the answers a test wants each
//! prompt to get, with the prompts rendered by the same templates the pipeline uses.

use std::sync::Arc;

use subgoal::model::record::{RecordLine, Replay};
use subgoal::model::{Completion, FinishReason, Generator, SamplingParams};
use subgoal::pipeline::config::RepairStyle;
use subgoal::pipeline::feedback::Feedback;
use subgoal::pipeline::prompts::{Prompts, RepairVars, StatementVars};
use subgoal::pipeline::scheduler::EngineConfig;

use super::HEADER;

/// A transcript under construction: which answers the models give to which prompts.
pub struct Script {
    pub cfg: EngineConfig,
    /// The problems' header (default: the fixture's imports).
    pub header: String,
    prompts: Prompts,
    pub lines: Vec<RecordLine>,
}

pub fn answer(code: &str, elapsed_ms: u64) -> Completion {
    Completion {
        text: format!("Here is the proof.\n\n```lean4\n{HEADER}\n{code}\n```\n"),
        prompt_tokens: 10,
        completion_tokens: 20,
        finish_reason: FinishReason::Stop,
        error: None,
        elapsed_ms,
    }
}

impl Script {
    pub fn new(cfg: &EngineConfig) -> Script {
        Script { cfg: cfg.clone(), header: HEADER.into(), prompts: Prompts::load(None).unwrap(), lines: vec![] }
    }

    fn vars<'a>(&'a self, name: &'a str, statement: &'a str, informal: &'a str) -> StatementVars<'a> {
        StatementVars { name, header: &self.header, informal_statement: informal, formal_statement: statement }
    }

    /// The prover's `k` answers for a node (fewer given: the last repeats).
    pub fn prover(&mut self, name: &str, statement: &str, informal: &str, codes: &[&str], elapsed_ms: u64) {
        self.prover_offered(name, statement, informal, "", codes, elapsed_ms);
    }

    /// The same, to the prompt that offers `library` (proved lemmas' statements).
    pub fn prover_offered(
        &mut self,
        name: &str,
        statement: &str,
        informal: &str,
        library: &str,
        codes: &[&str],
        elapsed_ms: u64,
    ) {
        let prompt = self.prompts.prove_with(&self.vars(name, statement, informal), false, library).unwrap();
        let params = SamplingParams { n: self.cfg.k, ..self.cfg.prover.clone() };
        let completions =
            (0..self.cfg.k).map(|i| answer(codes[i.min(codes.len() - 1)], elapsed_ms)).collect::<Vec<_>>();
        self.lines.push(RecordLine { prompt, params, completions });
    }

    /// The planner's sketch for a node.
    pub fn planner(&mut self, name: &str, statement: &str, informal: &str, sketch: &str) {
        let prompt = self.prompts.sketch(&self.vars(name, statement, informal)).unwrap();
        let params = SamplingParams { n: self.cfg.sketches, ..self.cfg.planner.clone() };
        let mut c = answer(sketch, 0);
        c.text = format!("### Detailed Proof and Analysis\nSplit the goal.\n\n{}", c.text);
        self.lines.push(RecordLine { prompt, params, completions: vec![c] });
    }

    /// The prover's answer to a repair prompt for a failed candidate, in round `round`.
    pub fn repair(&mut self, name: &str, statement: &str, f: &Feedback, round: u32, fix: &str) {
        let vars = RepairVars {
            name,
            header: &self.header,
            formal_statement: statement,
            candidate: &f.code,
            errors: &f.errors,
            marked: &f.marked,
            round,
            library: "",
        };
        let marked = self.cfg.repair_style == RepairStyle::Goedel;
        let prompt = self.prompts.repair(&vars, marked).unwrap();
        let params = SamplingParams { n: 1, ..self.cfg.prover.clone() };
        self.lines.push(RecordLine { prompt, params, completions: vec![answer(fix, 0)] });
    }

    pub fn models(&self, dir: &std::path::Path, timed: bool) -> Arc<dyn Generator> {
        let path = dir.join("transcript.jsonl");
        let text: String = self.lines.iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
        std::fs::write(&path, text).unwrap();
        Arc::new(Replay::open(&path).unwrap().timed(timed))
    }
}

impl Script {
    /// Writes the transcript to `path`.
    pub fn write(&self, path: &std::path::Path) {
        let text: String = self.lines.iter().map(|l| serde_json::to_string(l).unwrap() + "\n").collect();
        std::fs::write(path, text).unwrap();
    }
}

pub const TWO_LEVEL: &str = "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And (And p q) r :=";
pub const WRONG: &str = "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And (And p q) r := hp";
pub const H1: &str = "theorem two_level_h1 (p q r : Prop) (hp : p) (hq : q) (hr : r) :\n    And p q :=";
pub const H2: &str = "theorem two_level_h2 (p q r : Prop) (hp : p) (hq : q) (hr : r) (h1 : And p q) :\n    r :=";
pub const H1_A: &str = "theorem two_level_h1_a (p q r : Prop) (hp : p) (hq : q) (hr : r) :\n    p :=";
pub const H1_B: &str = "theorem two_level_h1_b (p q r : Prop) (hp : p) (hq : q) (hr : r) (a : p) :\n    q :=";

pub fn sketch_two_level() -> &'static str {
    "theorem two_level (p q r : Prop) (hp : p) (hq : q) (hr : r) : And (And p q) r :=\n  have h1 : And p q := sorry\n  have h2 : r := sorry\n  And.intro h1 h2"
}

pub fn sketch_h1() -> &'static str {
    "theorem two_level_h1 (p q r : Prop) (hp : p) (hq : q) (hr : r) :\n    And p q :=\n  have a : p := sorry\n  have b : q := sorry\n  And.intro a b"
}

/// The theorem's whole proofs fail; its sketch has two subgoals; the first of them fails whole
/// and is sketched again; everything at the bottom is proved by the prover.
pub fn two_level_script(cfg: &EngineConfig) -> Script {
    let mut s = Script::new(cfg);
    s.prover("two_level", TWO_LEVEL, "Prove it.", &[WRONG], 0);
    s.planner("two_level", TWO_LEVEL, "Prove it.", sketch_two_level());
    s.prover(
        "two_level_h1",
        H1,
        "",
        &["theorem two_level_h1 (p q r : Prop) (hp : p) (hq : q) (hr : r) : And p q := hp"],
        0,
    );
    s.planner("two_level_h1", H1, "", sketch_h1());
    s.prover(
        "two_level_h1_a",
        H1_A,
        "",
        &["theorem two_level_h1_a (p q r : Prop) (hp : p) (hq : q) (hr : r) : p := hp"],
        0,
    );
    s.prover(
        "two_level_h1_b",
        H1_B,
        "",
        &["theorem two_level_h1_b (p q r : Prop) (hp : p) (hq : q) (hr : r) (a : p) : q := hq"],
        0,
    );
    s.prover(
        "two_level_h2",
        H2,
        "",
        &["theorem two_level_h2 (p q r : Prop) (hp : p) (hq : q) (hr : r) (h1 : And p q) : r := hr"],
        0,
    );
    s
}

/// `subgoal prove` on the two-level theorem in `dir`, its models replayed from
/// `two_level_script` at the CLI's defaults: the process's output and the `--out` directory.
pub fn prove_two_level(dir: &std::path::Path) -> (std::process::Output, std::path::PathBuf) {
    // The CLI's defaults for what the transcript is keyed by.
    let cfg = EngineConfig {
        k: 2,
        sketches: 1,
        prover: SamplingParams { max_new_tokens: 2048, seed: None, ..Default::default() },
        planner: SamplingParams { max_new_tokens: 8192, temperature: 0.6, seed: None, ..Default::default() },
        ..Default::default()
    };
    let transcript = dir.join("transcript.jsonl");
    two_level_script(&cfg).write(&transcript);
    let file = dir.join("two_level.lean");
    std::fs::write(&file, format!("{HEADER}\n/-- Prove it. -/\n{TWO_LEVEL} by\n  sorry\n")).unwrap();
    let out_dir = dir.join("out");
    let model = format!("replay:{}", transcript.display());
    let lean = super::lean();
    let out = super::run_subgoal(&[
        "prove",
        file.to_str().unwrap(),
        "--prover",
        &model,
        "-k",
        "2",
        "--sketches",
        "1",
        "--seed",
        "7",
        // Prompts offering proved lemmas depend on which finished first; transcripts key on prompts.
        "--library",
        "off",
        "--out",
        out_dir.to_str().unwrap(),
        "--lean",
        lean.to_str().unwrap(),
    ]);
    (out, out_dir)
}
