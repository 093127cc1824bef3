//! A theorem to prove, and reading one from a Lean file or from flags.

use serde::{Deserialize, Serialize};

use crate::lean::source::statement_span;

/// One theorem to prove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub name: String,
    /// Everything before the theorem: imports, `open` and `set_option` lines (with its trailing
    /// newline).
    pub header: String,
    /// The statement in natural language (empty when there is none).
    #[serde(default)]
    pub informal_statement: String,
    /// The formal statement through its `:=`.
    pub formal_statement: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemError {
    #[error("no theorem or lemma {0} with a `:=` found")]
    NoStatement(String),
}

impl Problem {
    /// The theorem `name` (default: the last one) of a Lean file. Its docstring becomes the
    /// informal statement; what follows the statement's `:=` (a proof, `by sorry`) is dropped.
    pub fn from_lean(text: &str, name: Option<&str>) -> Result<Problem, ProblemError> {
        let missing = || ProblemError::NoStatement(name.map(|n| format!("`{n}`")).unwrap_or_default());
        let (decl, assign, found) = statement_span(text, name).ok_or_else(missing)?;
        let before = &text[..decl];
        // A docstring directly before the declaration is the informal statement.
        let (header, informal) = match before.trim_end().strip_suffix("-/").and_then(|b| b.rfind("/--").map(|i| (i, b)))
        {
            Some((open, b)) => (&text[..open], b[open + 3..].trim().to_string()),
            None => (before, String::new()),
        };
        let mut header = header.trim_end().to_string();
        if !header.is_empty() {
            header.push('\n');
        }
        Ok(Problem {
            name: found,
            header,
            informal_statement: informal,
            formal_statement: text[decl..assign].to_string(),
        })
    }

    /// A statement given on the command line (`theorem NAME … :=`, with or without `by sorry`).
    pub fn from_statement(statement: &str, header: &str, informal: &str) -> Result<Problem, ProblemError> {
        let mut p = Problem::from_lean(statement, None)?;
        p.header = if header.is_empty() || header.ends_with('\n') { header.to_string() } else { format!("{header}\n") };
        if !informal.is_empty() {
            p.informal_statement = informal.to_string();
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lean_file_gives_header_docstring_and_statement() {
        let text =
            "import Mathlib\nopen Real\n\n/-- Show that 1 = 1. -/\ntheorem t (x : ℝ := 1) : x = x := by\n  sorry\n";
        let p = Problem::from_lean(text, None).unwrap();
        assert_eq!(p.name, "t");
        assert_eq!(p.header, "import Mathlib\nopen Real\n");
        assert_eq!(p.informal_statement, "Show that 1 = 1.");
        assert_eq!(p.formal_statement, "theorem t (x : ℝ := 1) : x = x :=");
    }

    #[test]
    fn a_named_theorem_is_chosen_over_the_last() {
        let text = "theorem a : True := sorry\ntheorem b : True := sorry\n";
        assert_eq!(Problem::from_lean(text, Some("a")).unwrap().formal_statement, "theorem a : True :=");
        assert_eq!(Problem::from_lean(text, None).unwrap().name, "b");
        assert_eq!(
            Problem::from_lean(text, Some("c")).unwrap_err().to_string(),
            "no theorem or lemma `c` with a `:=` found"
        );
    }

    #[test]
    fn a_statement_flag_takes_the_header_flag() {
        let p = Problem::from_statement("theorem t : True := by sorry", "import Mathlib", "").unwrap();
        assert_eq!((p.header.as_str(), p.formal_statement.as_str()), ("import Mathlib\n", "theorem t : True :="));
    }
}
