//! The DeepSeek-Prover-V2 pipeline: sketch a theorem into `have` steps, turn each `sorry` into a
//! subgoal lemma, prove the lemmas (recursively decomposing failures), recompose, verify.
//!
//! `sketch` reads Lean proof text (steps, `sorry` sites, hollowing and filling); `goal` turns
//! Lean's printed goals into lemma statements; `dag` holds the subgoal graph; `prompts` renders
//! the prompt templates; `recompose` puts proofs back; `scheduler` runs it all within budgets,
//! configured by `config`, leaving the `records` it exports. `closers` tries Lean's automation
//! before any model call; `library` offers the run's proved lemmas to later prompts.

pub mod closers;
pub mod config;
pub mod dag;
pub mod feedback;
pub mod goal;
pub mod library;
pub mod problem;
pub mod prompts;
pub mod recompose;
pub mod records;
pub mod scheduler;
pub mod sketch;
