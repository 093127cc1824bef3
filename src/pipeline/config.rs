//! What an engine is configured with: strategy, depth, samples, sampling parameters, budgets and
//! concurrency (`config.json`'s `engine` in a run directory).

use serde::{Deserialize, Serialize};

use super::closers::{Portfolio, DEFAULT_HEARTBEATS};
use super::library::LibraryScope;
use crate::model::SamplingParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Whole-proof sampling only.
    Whole,
    /// Sketch and decompose the theorem at once.
    Decompose,
    /// Whole-proof sampling first, decomposition when it fails.
    Both,
}

/// Limits per problem (`None`: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub max_model_calls: Option<u64>,
    pub max_tokens: Option<u64>,
    /// Seconds.
    pub max_wall_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub strategy: Strategy,
    /// Decomposition levels: 0 never decomposes; 1 decomposes the theorem only; …
    pub depth: u32,
    /// Prover samples per node (pass@k).
    pub k: usize,
    /// Planner sketches per decomposition, tried in turn.
    pub sketches: usize,
    pub prover: SamplingParams,
    pub planner: SamplingParams,
    /// CoT prover prompt.
    pub cot: bool,
    /// Self-correction rounds: each sends the previous round's failed candidates back to the
    /// prover with Lean's messages (0: none).
    #[serde(deserialize_with = "rounds", default)]
    pub repair: u32,
    /// The repair prompt's shape.
    #[serde(default)]
    pub repair_style: RepairStyle,
    /// Lean's messages in a repair prompt are cut to about this many tokens (4 bytes a token).
    #[serde(default = "default_repair_error_tokens")]
    pub repair_error_tokens: usize,
    /// The automation tried before the prover.
    #[serde(default)]
    pub closers: Closers,
    /// Which of the run's proved lemmas prover prompts are offered.
    #[serde(default)]
    pub library: LibraryScope,
    /// Tokens of lemma statements a prompt is offered at most (4 bytes a token).
    #[serde(default = "default_library_tokens")]
    pub library_tokens: usize,
    /// Verify every sample even after one succeeds (pass@k counting); otherwise the first
    /// success stops the rest.
    pub verify_all: bool,
    pub budget: Budget,
    /// Model requests in flight at once.
    pub model_concurrency: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            strategy: Strategy::Both,
            depth: 2,
            k: 8,
            sketches: 2,
            prover: SamplingParams { max_new_tokens: 2048, ..Default::default() },
            planner: SamplingParams { max_new_tokens: 4096, temperature: 0.6, ..Default::default() },
            cot: false,
            repair: 0,
            repair_style: RepairStyle::default(),
            repair_error_tokens: default_repair_error_tokens(),
            closers: Closers::default(),
            library: LibraryScope::default(),
            library_tokens: default_library_tokens(),
            verify_all: false,
            budget: Budget::default(),
            model_concurrency: 4,
        }
    }
}

fn default_repair_error_tokens() -> usize {
    1024
}

fn default_library_tokens() -> usize {
    512
}

/// `repair` as a number of rounds; a run directory written when it was a switch says `true`/`false`.
fn rounds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rounds {
        Switch(bool),
        Count(u32),
    }
    Ok(match Rounds::deserialize(d)? {
        Rounds::Switch(b) => u32::from(b),
        Rounds::Count(n) => n,
    })
}

/// How a repair prompt shows the failed candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStyle {
    /// The candidate, then Lean's messages with their lines (`repair.md`).
    #[default]
    Deepseek,
    /// The candidate with each error's text marked in place, then the messages, asking for
    /// reasoning before the corrected proof (`repair-marked.md`, after Goedel-Prover-V2).
    Goedel,
}

/// The automation portfolio tried before the prover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closers {
    /// None.
    Off,
    /// Mathlib's default portfolio where the header imports Mathlib, else none.
    Auto { heartbeats: u64 },
    /// A user's portfolio, for every header.
    Custom(Portfolio),
}

impl Default for Closers {
    fn default() -> Self {
        Closers::Auto { heartbeats: DEFAULT_HEARTBEATS }
    }
}

impl Closers {
    /// The portfolio for statements under `header`, if any.
    pub fn for_header(&self, header: &str) -> Option<Portfolio> {
        match self {
            Closers::Off => None,
            Closers::Auto { heartbeats } => {
                Portfolio::default_for(header).map(|p| Portfolio { heartbeats: *heartbeats, ..p })
            }
            Closers::Custom(p) => Some(p.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_written_when_repair_was_a_switch_still_reads() {
        let mut v = serde_json::to_value(EngineConfig::default()).unwrap();
        v["repair"] = serde_json::json!(true);
        for key in ["repair_style", "repair_error_tokens", "closers", "library", "library_tokens"] {
            v.as_object_mut().unwrap().remove(key);
        }
        let cfg: EngineConfig = serde_json::from_value(v).unwrap();
        assert_eq!(cfg.repair, 1);
        assert_eq!(cfg.closers, Closers::default());
    }
}
