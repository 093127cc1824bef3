//! The automation portfolio ("closers"): tactics tried on a statement before any model call, so
//! the GPU is spent only where Lean's own automation fails. This module owns the portfolio (the
//! default for Mathlib, or a user's file), the screening document that tries every tactic on
//! every statement of a batch in one Lean check, and reading off Lean's messages which tactic
//! closed which statement.
//!
//! A screen proves nothing: it only picks, per statement, the first tactic that closed it; the
//! scheduler then verifies `by <tactic>` like any candidate (every gate and the fresh re-check).
//! Each tactic runs as its own command under `set_option maxHeartbeats N in`, so a tactic that
//! runs long ends in a heartbeat error for that command alone, not in a wall-clock timeout that
//! would cost the worker (and its imported environment).

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lean::lexer::{tokenize, TokenKind};
use crate::verify::gates::{check_body, GateConfig};
use crate::verify::verdict::{RawMessage, Severity};

/// The default portfolio for Mathlib, cheapest and most specific first (the first that closes a
/// statement is the proof kept).
pub const MATHLIB_TACTICS: [&str; 7] = ["norm_num", "linarith", "omega", "positivity", "ring", "simp", "nlinarith"];

/// Heartbeats each tactic may use in a screen (Lean's default for a whole declaration is 200000).
pub const DEFAULT_HEARTBEATS: u64 = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum ClosersError {
    #[error("closers file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("closers: tactic {index} (`{tactic}`) is refused by the shape gate: {detail}")]
    Refused { index: usize, tactic: String, detail: String },
    #[error("closers: the portfolio has no tactic")]
    Empty,
    #[error("closers: a tactic's heartbeats must be at least 1 (0 would mean no limit)")]
    Heartbeats,
}

/// The tactics tried, in order, and the heartbeats each may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Portfolio {
    pub tactics: Vec<String>,
    pub heartbeats: u64,
}

impl Portfolio {
    pub fn mathlib() -> Portfolio {
        Portfolio { tactics: MATHLIB_TACTICS.iter().map(|t| t.to_string()).collect(), heartbeats: DEFAULT_HEARTBEATS }
    }

    /// The default for a header: Mathlib's portfolio when it imports Mathlib, else none (a
    /// library without those tactics would only spend a Lean check per node).
    pub fn default_for(header: &str) -> Option<Portfolio> {
        let imports = &header[..crate::lean::source::header_end(header)];
        let toks = tokenize(imports);
        let mathlib = toks.windows(2).any(|w| {
            w[0].text(imports) == "import" && {
                let m = w[1].text(imports);
                m == "Mathlib" || m.starts_with("Mathlib.")
            }
        });
        mathlib.then(Portfolio::mathlib)
    }

    /// A portfolio file: one tactic per line, a line that starts with whitespace continuing the
    /// tactic above (for multi-line tactics); blank lines and `--` comment lines are skipped.
    /// Every tactic must pass the shape gate as a proof would.
    pub fn parse(text: &str, heartbeats: u64) -> Result<Portfolio, ClosersError> {
        // Each tactic's lines: its first, then its indented continuations.
        let mut blocks: Vec<Vec<&str>> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with("--") {
                continue;
            }
            match blocks.last_mut() {
                Some(block) if line.starts_with([' ', '\t']) => block.push(line.trim_end()),
                _ => blocks.push(vec![trimmed]),
            }
        }
        // Continuations keep their indentation relative to each other (a bullet's lines stay
        // under it), less what they all share.
        let tactics = blocks
            .into_iter()
            .map(|b| {
                let common = b[1..].iter().map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
                let mut t = b[0].to_string();
                for l in &b[1..] {
                    t.push('\n');
                    t.push_str(&l[common..]);
                }
                t
            })
            .collect();
        let p = Portfolio { tactics, heartbeats };
        p.validate()?;
        Ok(p)
    }

    pub fn load(path: &Path, heartbeats: u64) -> Result<Portfolio, ClosersError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClosersError::File { path: path.display().to_string(), detail: e.to_string() })?;
        Portfolio::parse(&text, heartbeats).map_err(|e| match e {
            ClosersError::Refused { .. } | ClosersError::Empty | ClosersError::Heartbeats => {
                ClosersError::File { path: path.display().to_string(), detail: e.to_string() }
            }
            other => other,
        })
    }

    fn validate(&self) -> Result<(), ClosersError> {
        if self.tactics.is_empty() {
            return Err(ClosersError::Empty);
        }
        // 0 would mean no limit at all.
        if self.heartbeats == 0 {
            return Err(ClosersError::Heartbeats);
        }
        for (index, t) in self.tactics.iter().enumerate() {
            check_body(&proof_of(t), &GateConfig::default()).map_err(|detail| ClosersError::Refused {
                index,
                tactic: t.clone(),
                detail,
            })?;
        }
        Ok(())
    }
}

/// The proof a tactic gives a statement ending in `:=`: ` by` and the tactic on the lines below.
pub fn proof_of(tactic: &str) -> String {
    let mut s = String::from(" by");
    for line in tactic.lines() {
        s.push_str("\n  ");
        s.push_str(line);
    }
    s
}

/// The most (statement, tactic) commands one screen holds: each may use its heartbeats, and
/// the whole check must end within the pool's wall-clock timeout (a timeout costs the worker).
pub const MAX_COMMANDS: usize = 24;

/// The document a screen checks, and where each (statement, tactic) command lies in it.
#[derive(Debug, Clone)]
pub struct Screen {
    pub text: String,
    /// `commands[s][t]`: the byte range of statement `s` tried with tactic `t` (empty for a
    /// statement that declares no theorem, which no tactic closes).
    pub commands: Vec<Vec<Range<usize>>>,
}

impl Screen {
    /// Every tactic on every statement, each a command of its own under its own name (the
    /// statements are `theorem NAME … :=`, as the verifier takes them).
    pub fn build(header: &str, statements: &[&str], portfolio: &Portfolio) -> Screen {
        let mut text = header.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let mut commands = Vec::with_capacity(statements.len());
        for (s, stmt) in statements.iter().enumerate() {
            let mut row = Vec::new();
            for (t, tactic) in portfolio.tactics.iter().enumerate() {
                let Some(renamed) = rename(stmt, &format!("subgoal_closer_{s}_{t}")) else { break };
                text.push('\n');
                let start = text.len();
                text.push_str(&format!("set_option maxHeartbeats {} in\n", portfolio.heartbeats));
                text.push_str(renamed.trim_end());
                text.push_str(&proof_of(tactic));
                text.push('\n');
                row.push(start..text.len());
            }
            commands.push(row);
        }
        // Something after the last command, so an error at the end of the input is not taken
        // for the last command's.
        text.push_str("\n-- end of the screen\n");
        Screen { text, commands }
    }

    /// How many statements one screen takes with `portfolio` (at least one).
    pub fn batch(portfolio: &Portfolio) -> usize {
        (MAX_COMMANDS / portfolio.tactics.len().max(1)).max(1)
    }

    /// For each statement, the tactics whose command Lean accepted with no error and no `sorry`,
    /// in portfolio order; `None` when the screen cannot be read (an error outside every
    /// command: the header failed, or the input ended early).
    pub fn read(&self, messages: &[RawMessage]) -> Option<Vec<Vec<usize>>> {
        let bad = |m: &RawMessage| {
            m.severity == Severity::Error || m.severity == Severity::Warning && m.text.contains("sorry")
        };
        let inside = |m: &RawMessage, r: &Range<usize>| m.start >= r.start && m.start < r.end;
        let stray = messages
            .iter()
            .any(|m| m.severity == Severity::Error && !self.commands.iter().flatten().any(|r| inside(m, r)));
        if stray {
            return None;
        }
        Some(
            self.commands
                .iter()
                .map(|row| (0..row.len()).filter(|&t| !messages.iter().any(|m| bad(m) && inside(m, &row[t]))).collect())
                .collect(),
        )
    }
}

/// `statement` (`… theorem NAME … :=`) declared under `name` instead: the last component of
/// its name replaced, everything else kept (what scopes it, its namespace); `None` when it
/// declares no theorem.
fn rename(statement: &str, name: &str) -> Option<String> {
    let toks = tokenize(statement);
    let w = toks
        .windows(2)
        .find(|w| matches!(w[0].text(statement), "theorem" | "lemma") && w[1].kind == TokenKind::Ident)?;
    let old = w[1].text(statement);
    // `A.b` → `A.name`: the namespace decides how the statement's names resolve.
    let keep = old.rfind('.').filter(|_| !old.contains('«')).map_or(0, |i| i + 1);
    Some(format!("{}{}{name}{}", &statement[..w[1].span.start], &old[..keep], &statement[w[1].span.end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_portfolio_file_takes_one_tactic_a_line_with_indented_continuations() {
        let text = "-- cheap first\nnorm_num\n\nrcases h with h | h\n  · simp at h\n    linarith\n  · linarith\n";
        let p = Portfolio::parse(text, 10).unwrap();
        assert_eq!(p.tactics, vec!["norm_num", "rcases h with h | h\n· simp at h\n  linarith\n· linarith"]);
        assert_eq!(proof_of(&p.tactics[1]), " by\n  rcases h with h | h\n  · simp at h\n    linarith\n  · linarith");
    }

    #[test]
    fn a_portfolio_tactic_the_shape_gate_refuses_is_an_error_naming_it() {
        let e = Portfolio::parse("norm_num\nnative_decide\n", 10).unwrap_err().to_string();
        assert!(e.contains("tactic 1") && e.contains("native_decide"), "{e}");
        assert!(matches!(Portfolio::parse("-- nothing\n", 10), Err(ClosersError::Empty)));
        assert!(matches!(Portfolio::parse("simp\n", 0), Err(ClosersError::Heartbeats)));
    }

    #[test]
    fn mathlib_headers_get_the_default_portfolio_and_others_none() {
        assert!(Portfolio::default_for("import Mathlib\nimport Aesop\nopen Real\n").is_some());
        assert!(Portfolio::default_for("import Mathlib.Tactic\n").is_some());
        assert!(Portfolio::default_for("prelude\nimport SubgoalFixture\n").is_none());
    }

    #[test]
    fn a_renamed_statement_keeps_what_scopes_it_and_its_namespace() {
        assert_eq!(
            rename("/-- doc -/\nprivate theorem A.b.x (n : N) : P n :=", "c").unwrap(),
            "/-- doc -/\nprivate theorem A.b.c (n : N) : P n :="
        );
        assert!(rename("def x : N := 1", "c").is_none());
    }

    fn msg(start: usize, severity: Severity, text: &str) -> RawMessage {
        RawMessage { severity, start, end: start + 1, text: text.into() }
    }

    #[test]
    fn a_screen_reads_every_tactic_without_an_error_in_its_command() {
        let p = Portfolio { tactics: vec!["a".into(), "b".into(), "c".into()], heartbeats: 7 };
        let screen = Screen::build("import M\n", &["theorem x (n : N) : P n :=", "theorem y : Q :="], &p);
        assert!(screen
            .text
            .contains("set_option maxHeartbeats 7 in\ntheorem subgoal_closer_0_1 (n : N) : P n := by\n  b\n"));
        let at = |s: usize, t: usize| screen.commands[s][t].start + 40;
        let messages = vec![
            msg(at(0, 0), Severity::Error, "linarith failed"),
            msg(at(1, 0), Severity::Warning, "declaration uses 'sorry'"),
            msg(at(1, 1), Severity::Error, "unsolved goals"),
            msg(at(1, 2), Severity::Error, "unsolved goals"),
            msg(at(0, 1), Severity::Info, "Try this: ring_nf"),
        ];
        assert_eq!(screen.read(&messages), Some(vec![vec![1, 2], vec![]]));
    }

    #[test]
    fn an_error_outside_every_command_makes_the_screen_unreadable() {
        let p = Portfolio { tactics: vec!["a".into()], heartbeats: 7 };
        let screen = Screen::build("import M\n", &["theorem x : P :="], &p);
        // The header failed, or the input ended inside the last command.
        assert_eq!(screen.read(&[msg(2, Severity::Error, "unknown module")]), None);
        assert_eq!(screen.read(&[msg(screen.text.len(), Severity::Error, "unexpected end of input")]), None);
        assert_eq!(screen.read(&[]), Some(vec![vec![0]]));
    }

    #[test]
    fn a_batch_holds_as_many_statements_as_fit_the_command_bound() {
        let seven = Portfolio::mathlib();
        assert_eq!(Screen::batch(&seven), MAX_COMMANDS / 7);
        let many = Portfolio { tactics: vec!["a".into(); 100], heartbeats: 1 };
        assert_eq!(Screen::batch(&many), 1);
    }
}
