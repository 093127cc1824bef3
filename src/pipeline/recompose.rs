//! Recomposition: the subgoals' verified proofs put back in place of the sketch's `sorry`s.
//!
//! Two layouts, tried in order by the scheduler: `Inline` pastes each lemma's proof at its
//! `sorry`, re-indented for the site (the lemma's binders carry the context's own names, so the
//! proof reads the same there); `Applied` puts the lemma itself there as `(fun binders => proof)`
//! applied to the context's variables, for when the names differ (inaccessible `x✝`, a `let`'s
//! equation). Only Lean decides which one is a proof: this module writes text.

use serde::{Deserialize, Serialize};

use super::goal::Lemma;
use super::sketch::{fill, SiteKind, SorrySite};
use crate::lean::lexer::tokenize;
use crate::lean::source::statement_span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    Inline,
    Applied,
}

/// The proof of `name` in a verified file: the text after its statement's `:=`, and the column
/// that text starts at.
pub fn proof_body(code: &str, name: &str) -> Option<(String, usize)> {
    let (_, after, _) = statement_span(code, Some(name))?;
    let rest = &code[after..];
    let lead = rest.len() - rest.trim_start().len();
    let start = after + lead;
    let body = code[start..].trim_end();
    if body.is_empty() {
        return None;
    }
    let line_start = code[..start].rfind('\n').map_or(0, |i| i + 1);
    Some((body.to_string(), code[line_start..start].chars().count()))
}

/// A proof body as lines with their columns (the first line at `col`, the body's own column).
struct Block {
    lines: Vec<(usize, String)>,
}

impl Block {
    fn new(text: &str, col: usize) -> Block {
        let lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    (col, l.trim().to_string())
                } else {
                    (l.len() - l.trim_start().len(), l.trim().to_string())
                }
            })
            .collect();
        Block { lines }
    }

    /// Lines shifted so the least indented non-blank line sits at `target`.
    fn render(&self, target: usize, first_inline: bool) -> String {
        let min = self.lines.iter().filter(|(_, l)| !l.is_empty()).map(|(c, _)| *c).min().unwrap_or(0);
        let mut out = String::new();
        for (i, (c, l)) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            if l.is_empty() {
                continue;
            }
            if !(i == 0 && first_inline) {
                out.push_str(&" ".repeat(c - min + target));
            }
            out.push_str(l);
        }
        out
    }
}

/// A proof body's tactic block (after `by`), if it is one.
fn tactics(body: &str, body_col: usize) -> Option<Block> {
    let rest = body.strip_prefix("by")?;
    if rest.starts_with(crate::lean::lexer::is_id_rest) || rest.trim().is_empty() {
        return None;
    }
    let first = rest.lines().next().unwrap_or("");
    if first.trim().is_empty() {
        // `by` alone on its line: every tactic line keeps its own indentation.
        let after = &rest[rest.find('\n')? + 1..];
        let own = after.len() - after.trim_start_matches([' ', '\t']).len();
        Some(Block::new(after, own))
    } else {
        // `by tac`: the first tactic sits after `by` and its spaces.
        let lead = first.len() - first.trim_start().len();
        Some(Block::new(rest.trim_start(), body_col + 2 + lead))
    }
}

/// What replaces one `sorry` site, given the lemma's verified proof body.
pub fn site_text(
    site: &SorrySite,
    site_col: usize,
    lemma: &Lemma,
    body: &str,
    body_col: usize,
    layout: Layout,
) -> String {
    let tac = tactics(body, body_col);
    match (layout, site.kind) {
        (Layout::Inline, SiteKind::Term) => match tac {
            Some(b) => format!("by\n{}", b.render(site.indent + 2, false)),
            None => format!("({})", Block::new(body, body_col).render(site.indent + 4, true)),
        },
        (Layout::Inline, SiteKind::Tactic) => match tac {
            Some(b) => b.render(site_col, true),
            None => format!("exact ({})", Block::new(body, body_col).render(site_col + 4, true)),
        },
        (Layout::Applied, kind) => {
            let term = match tac {
                Some(b) => format!("by\n{}", b.render(site.indent + 6, false)),
                None => Block::new(body, body_col).render(site.indent + 6, true),
            };
            let applied = lemma.application(&term);
            match kind {
                SiteKind::Term => applied,
                SiteKind::Tactic => format!("exact {applied}"),
            }
        }
    }
}

/// The sketch with every site replaced, in one layout. `bodies[i]` is the verified proof body for
/// site `i` and its column (see `proof_body`).
pub fn recompose(
    sketch: &str,
    sites: &[SorrySite],
    lemmas: &[Lemma],
    bodies: &[(String, usize)],
    layout: Layout,
) -> String {
    let texts: Vec<Option<String>> = sites
        .iter()
        .zip(lemmas)
        .zip(bodies)
        .map(|((site, lemma), (body, col))| {
            let line_start = sketch[..site.range.start].rfind('\n').map_or(0, |i| i + 1);
            let site_col = sketch[line_start..site.range.start].chars().count();
            let anchored = SorrySite { indent: anchor_column(sketch, site), ..site.clone() };
            Some(site_text(&anchored, site_col, lemma, body, *col, layout))
        })
        .collect();
    fill(sketch, sites, &texts)
}

/// The column a site's pasted lines must stay right of: that of the `have` (or `show`, `let`,
/// …) whose `:=` the site follows, which may sit deeper than its step (`· have h : Q := sorry`);
/// else the deeper of the step's and the line's indentation.
fn anchor_column(sketch: &str, site: &SorrySite) -> usize {
    let col_of = |offset: usize| {
        let line_start = sketch[..offset].rfind('\n').map_or(0, |i| i + 1);
        sketch[line_start..offset].chars().count()
    };
    let toks = tokenize(&sketch[..site.range.start]);
    if toks.last().map(|t| t.text(sketch)) == Some(":=") {
        for t in toks.iter().rev().skip(1).take(400) {
            match t.text(sketch) {
                "have" | "show" | "let" | "suffices" | "obtain" | "haveI" | "letI" => return col_of(t.span.start),
                ":=" | "by" | "sorry" => break,
                _ => {}
            }
        }
    }
    let line_start = sketch[..site.range.start].rfind('\n').map_or(0, |i| i + 1);
    let line = &sketch[line_start..];
    let line_indent = line.len() - line.trim_start_matches(' ').len();
    site.indent.max(line_indent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::goal::{parse_goal, Lemma};

    fn lemma(name: &str, goal: &str) -> Lemma {
        Lemma::from_goal(name, &parse_goal(goal).unwrap(), &[], true)
    }

    fn body(code: &str, name: &str) -> (String, usize) {
        proof_body(code, name).unwrap()
    }

    fn site(range: std::ops::Range<usize>, kind: SiteKind, indent: usize) -> SorrySite {
        SorrySite { range, kind, step: Some(0), indent }
    }

    #[test]
    fn the_body_is_what_follows_the_statements_assign() {
        let code = "import M\ntheorem L (x : Nat := 1) : P x := by\n  simp\n  rfl\n";
        assert_eq!(proof_body(code, "L"), Some(("by\n  simp\n  rfl".to_string(), 34)));
        assert_eq!(proof_body(code, "Other"), None);
    }

    #[test]
    fn a_tactic_proof_is_indented_under_its_have() {
        let sketch = "theorem t : P := by\n  have h : Q := by sorry\n  exact h";
        let start = sketch.find("by sorry").unwrap();
        let s = site(start..start + 8, SiteKind::Term, 2);
        let l = lemma("t_h", "⊢ Q");
        let b = body("theorem t_h : Q := by\n    simp\n    ring", "t_h");
        let out = recompose(sketch, &[s], &[l], &[b], Layout::Inline);
        assert_eq!(out, "theorem t : P := by\n  have h : Q := by\n    simp\n    ring\n  exact h");
    }

    #[test]
    fn a_term_proof_is_parenthesized() {
        let sketch = "theorem t : P :=\n  have h : Q := sorry\n  f h";
        let start = sketch.find("sorry").unwrap();
        let s = site(start..start + 5, SiteKind::Term, 2);
        let b = body("theorem t_h : Q := Q.intro", "t_h");
        let out = recompose(sketch, &[s], &[lemma("t_h", "⊢ Q")], &[b], Layout::Inline);
        assert_eq!(out, "theorem t : P :=\n  have h : Q := (Q.intro)\n  f h");
    }

    #[test]
    fn a_closing_sorry_tactic_takes_the_tactics_at_its_column() {
        let sketch = "theorem t : P := by\n  have h : Q := by sorry\n  sorry";
        let start = sketch.rfind("sorry").unwrap();
        let s = SorrySite { range: start..start + 5, kind: SiteKind::Tactic, step: None, indent: 2 };
        let proof = "theorem t_final (h : Q) : P := by\n  apply f\n  exact h";
        let out = recompose(sketch, &[s], &[lemma("t_final", "h : Q\n⊢ P")], &[body(proof, "t_final")], Layout::Inline);
        assert_eq!(out, "theorem t : P := by\n  have h : Q := by sorry\n  apply f\n  exact h");
    }

    #[test]
    fn a_have_nested_in_a_step_anchors_its_pasted_tactics() {
        let sketch =
            "theorem t : P := by\n  have h : P := by\n    constructor\n    · have h' : Q := sorry\n      exact h'";
        let start = sketch.find("sorry").unwrap();
        let s = site(start..start + 5, SiteKind::Term, 2);
        let b = body("theorem t_h' : Q := by\n  simp\n  ring", "t_h'");
        let out = recompose(sketch, &[s], &[lemma("t_h'", "⊢ Q")], &[b], Layout::Inline);
        assert!(out.contains("    · have h' : Q := by\n        simp\n        ring\n      exact h'"), "{out}");
    }

    #[test]
    fn the_applied_layout_passes_the_contexts_variables() {
        let sketch = "theorem t (n : Nat) : P n :=\n  fun _ =>\n  have h : Q := sorry\n  h";
        let start = sketch.find("sorry").unwrap();
        let s = site(start..start + 5, SiteKind::Term, 2);
        let l = lemma("t_h", "n : Nat\nx✝ : R n\n⊢ Q");
        let b = body("theorem t_h (n : Nat) (x_1 : R n) : Q := g x_1", "t_h");
        let out = recompose(sketch, &[s], &[l], &[b], Layout::Applied);
        assert!(out.contains("have h : Q := ((fun (n : Nat) (x_1 : R n) => g x_1) n _)"));
    }
}
