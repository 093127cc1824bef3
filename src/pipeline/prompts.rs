//! The prompt templates of `prompts/`: loaded (the binary's copies, or a user's directory),
//! rendered into chat prompts, and hashed so a run records exactly what the models were asked.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

use crate::digest::sha256_hex;
use crate::model::{ChatMessage, Prompt};

/// The templates, by file name, with the copies this binary was built with.
pub const TEMPLATES: [(&str, &str); 5] = [
    ("sketch.md", include_str!("../../prompts/sketch.md")),
    ("prove.md", include_str!("../../prompts/prove.md")),
    ("prove-cot.md", include_str!("../../prompts/prove-cot.md")),
    ("repair.md", include_str!("../../prompts/repair.md")),
    ("repair-marked.md", include_str!("../../prompts/repair-marked.md")),
];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("prompt template {file}: {detail}")]
    Template { file: String, detail: String },
}

/// What a theorem-level template sees.
#[derive(Debug, Clone, Serialize)]
pub struct StatementVars<'a> {
    pub name: &'a str,
    pub header: &'a str,
    pub informal_statement: &'a str,
    pub formal_statement: &'a str,
}

/// What the repair templates see.
#[derive(Debug, Clone, Serialize)]
pub struct RepairVars<'a> {
    pub name: &'a str,
    pub header: &'a str,
    pub formal_statement: &'a str,
    pub candidate: &'a str,
    pub errors: &'a str,
    pub marked: &'a str,
    pub round: u32,
    pub library: &'a str,
}

#[derive(Serialize)]
struct WithLibrary<'a, 'b> {
    #[serde(flatten)]
    vars: &'b StatementVars<'a>,
    library: &'b str,
}

pub struct Prompts {
    env: Environment<'static>,
    /// (file, sha256 hex, where it came from) for every template.
    pub sources: Vec<TemplateSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TemplateSource {
    pub file: String,
    pub sha256: String,
    /// `builtin` or the path it was read from.
    pub origin: String,
}

impl Prompts {
    /// The built-in templates, each replaced by `dir/<file>` where that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Prompts, PromptError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .build()
            .map_err(|e| PromptError::Template { file: "(syntax)".into(), detail: e.to_string() })?;
        env.set_syntax(syntax);
        let mut sources = Vec::new();
        for (file, builtin) in TEMPLATES {
            let err = |detail: String| PromptError::Template { file: file.to_string(), detail };
            let (text, origin) = match dir.map(|d| d.join(file)).filter(|p| p.exists()) {
                Some(p) => {
                    let text = std::fs::read_to_string(&p).map_err(|e| err(e.to_string()))?;
                    // Absolute, so a run resumed from elsewhere finds the same file.
                    (text, std::fs::canonicalize(&p).unwrap_or(p).display().to_string())
                }
                None => (builtin.to_string(), "builtin".to_string()),
            };
            sources.push(TemplateSource { file: file.to_string(), sha256: sha256_hex(&text), origin });
            env.add_template_owned(file.to_string(), text).map_err(|e| err(e.to_string()))?;
        }
        Ok(Prompts { env, sources })
    }

    fn render(&self, file: &str, vars: impl Serialize) -> Result<Prompt, PromptError> {
        let err = |e: minijinja::Error| PromptError::Template { file: file.to_string(), detail: e.to_string() };
        let text = self.env.get_template(file).and_then(|t| t.render(minijinja::value::Serde(&vars))).map_err(err)?;
        Ok(Prompt::Chat(vec![ChatMessage::new("user", text.trim().to_string())]))
    }

    pub fn sketch(&self, v: &StatementVars) -> Result<Prompt, PromptError> {
        self.render("sketch.md", v)
    }

    pub fn prove(&self, v: &StatementVars, cot: bool) -> Result<Prompt, PromptError> {
        self.prove_with(v, cot, "")
    }

    /// The prover's prompt offering `library` (proved lemmas' statements; empty for none).
    pub fn prove_with(&self, v: &StatementVars, cot: bool, library: &str) -> Result<Prompt, PromptError> {
        self.render(if cot { "prove-cot.md" } else { "prove.md" }, WithLibrary { vars: v, library })
    }

    /// A repair prompt: `marked` selects the template with errors marked in the code.
    pub fn repair(&self, v: &RepairVars, marked: bool) -> Result<Prompt, PromptError> {
        self.render(if marked { "repair-marked.md" } else { "repair.md" }, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(informal: &'a str) -> StatementVars<'a> {
        StatementVars {
            name: "t",
            header: "import Mathlib\n",
            informal_statement: informal,
            formal_statement: "theorem t (n : ℕ) : n = n :=",
        }
    }

    fn text(p: Prompt) -> String {
        match p {
            Prompt::Chat(m) => m[0].content.clone(),
            Prompt::Text(t) => t,
        }
    }

    #[test]
    fn the_prover_prompt_is_the_papers_non_cot_prompt() {
        let p = text(Prompts::load(None).unwrap().prove(&vars(""), false).unwrap());
        assert_eq!(
            p,
            "Complete the following Lean 4 code:\n\n```lean4\nimport Mathlib\ntheorem t (n : ℕ) : n = n := by\n  sorry\n```"
        );
    }

    #[test]
    fn the_informal_statement_reaches_the_prompt_only_when_given() {
        let prompts = Prompts::load(None).unwrap();
        assert!(text(prompts.prove(&vars("Show n = n."), true).unwrap()).contains("/-- Show n = n. -/\ntheorem t"));
        assert!(!text(prompts.sketch(&vars("")).unwrap()).contains("Statement:"));
    }

    #[test]
    fn a_users_directory_replaces_only_the_files_it_has() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prove.md"), "PROVE {{ name }}").unwrap();
        let prompts = Prompts::load(Some(dir.path())).unwrap();
        assert_eq!(text(prompts.prove(&vars(""), false).unwrap()), "PROVE t");
        let origins: Vec<&str> = prompts.sources.iter().map(|s| s.origin.as_str()).collect();
        assert_eq!(origins.iter().filter(|o| **o == "builtin").count(), TEMPLATES.len() - 1);
    }

    #[test]
    fn offered_lemmas_come_before_the_code_and_an_empty_library_leaves_the_papers_prompt() {
        let prompts = Prompts::load(None).unwrap();
        let plain = text(prompts.prove(&vars(""), false).unwrap());
        assert_eq!(text(prompts.prove_with(&vars(""), false, "").unwrap()), plain);
        let offered = text(prompts.prove_with(&vars(""), false, "theorem t_h1 (n : ℕ) : 0 ≤ n").unwrap());
        assert!(offered.starts_with("These lemmas are already proved"), "{offered}");
        assert!(offered.ends_with(&plain), "{offered}");
    }

    #[test]
    fn a_marked_repair_prompt_shows_the_marked_candidate_and_its_round() {
        let prompts = Prompts::load(None).unwrap();
        let v = RepairVars {
            name: "t",
            header: "import Mathlib\n",
            formal_statement: "theorem t : 1 = 1 :=",
            candidate: "theorem t : 1 = 1 := by simp",
            errors: "line 1, column 22: simp made no progress",
            marked: "theorem t : 1 = 1 := by <error>simp</error>",
            round: 2,
            library: "",
        };
        let p = text(prompts.repair(&v, true).unwrap());
        assert!(p.contains("<error>simp</error>") && p.contains("(correction round 1)"), "{p}");
        let p = text(prompts.repair(&v, false).unwrap());
        assert!(p.contains("line 1, column 22: simp made no progress") && !p.contains("<error>"), "{p}");
    }

    #[test]
    fn a_broken_template_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sketch.md"), "{% if %}").unwrap();
        let e = Prompts::load(Some(dir.path())).err().unwrap().to_string();
        assert!(e.contains("sketch.md"), "{e}");
    }
}
