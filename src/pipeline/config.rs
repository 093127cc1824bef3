//! What an engine is configured with: strategy, depth, samples, sampling parameters, budgets and
//! concurrency (`config.json`'s `engine` in a run directory).

use serde::{Deserialize, Serialize};

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
    /// One repair round for failed candidates, with Lean's messages.
    pub repair: bool,
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
            repair: false,
            verify_all: false,
            budget: Budget::default(),
            model_concurrency: 4,
        }
    }
}
