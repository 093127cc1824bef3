//! subgoal: a theorem-proving agent for Lean 4 after DeepSeek-Prover-V2.
//!
//! See ARCHITECTURE.md for the map. The library surface: `verify::Verifier` (candidates in,
//! verdicts out), `lean` (talking to Lean), `lsp` (the protocol plumbing beneath it).

pub mod bench;
pub mod confine;
pub mod datasets;
pub mod digest;
pub mod lean;
pub mod lsp;
pub mod model;
pub mod pipeline;
pub mod process;
pub mod sandbox;
pub mod synth;
pub mod text;
pub mod verify;
