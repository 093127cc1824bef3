//! Lean's printed goals read back, and subgoal lemmas built from them.
//!
//! At each `sorry` of a sketch Lean prints the goal (`$/lean/plainGoal` or `plainTermGoal`):
//! hypothesis lines `x y : T`, `k : T := v` (a `let`), then `⊢ target`. `parse_goal` reads that
//! text; `Lemma::from_goal` restates it as a closed lemma in the paper's two forms: (b) every
//! hypothesis, earlier subgoals included, and (a) without the earlier subgoals. Names Lean cannot
//! print (`x✝`, shadowed `h✝¹`) get fresh names; anonymous instances (`inst✝`) become `[C]`
//! binders; a `let` becomes a variable with its defining equation. Whether the restated lemma
//! elaborates is for Lean to say (the scheduler checks each one); what cannot be restated at all
//! (metavariables, elided terms) is an error here.

use serde::{Deserialize, Serialize};

use crate::lean::lexer::is_id_rest;

/// One hypothesis line: names sharing a type, and a value for a `let`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hyp {
    pub names: Vec<String>,
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A goal as Lean printed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goal {
    /// The `case` tag, if Lean printed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    pub hyps: Vec<Hyp>,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoalError {
    #[error("the goal has no `⊢` line")]
    NoTarget,
    #[error("cannot read the hypothesis line {0:?}")]
    BadHypothesis(String),
    #[error("the goal mentions the metavariable {0}: it cannot be restated as a lemma")]
    Metavariable(String),
    #[error("the goal has elided terms (⋯): it cannot be restated as a lemma")]
    Elided,
}

const INACCESSIBLE: char = '✝';
const SUPERSCRIPT_DIGITS: &str = "⁰¹²³⁴⁵⁶⁷⁸⁹";

/// Reads Lean's rendering of one goal.
pub fn parse_goal(text: &str) -> Result<Goal, GoalError> {
    // Lines starting at column 0 begin an entry; indented lines continue the previous one.
    let mut entries: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match entries.last_mut() {
            Some(last) if line.starts_with(char::is_whitespace) => {
                last.push('\n');
                last.push_str(line);
            }
            _ => entries.push(line.to_string()),
        }
    }
    let mut case = None;
    let mut hyps = Vec::new();
    let mut target = None;
    for (i, entry) in entries.iter().enumerate() {
        if let Some(t) = entry.strip_prefix('⊢') {
            target = Some(t.trim().to_string());
            // Anything after the target belongs to another goal.
            break;
        }
        if i == 0 {
            if let Some(tag) = entry.strip_prefix("case ") {
                case = Some(tag.trim().to_string());
                continue;
            }
        }
        hyps.push(parse_hyp(entry)?);
    }
    let target = target.ok_or(GoalError::NoTarget)?;
    let goal = Goal { case, hyps, target };
    goal.restatable()?;
    Ok(goal)
}

fn parse_hyp(entry: &str) -> Result<Hyp, GoalError> {
    let bad = || GoalError::BadHypothesis(entry.to_string());
    // `names :` then the type, on the same line or wrapped onto the next.
    let colon = entry
        .match_indices(" :")
        .map(|(i, _)| i)
        .find(|&i| entry[i + 2..].chars().next().is_none_or(char::is_whitespace))
        .ok_or_else(bad)?;
    let names: Vec<String> = entry[..colon].split_whitespace().map(str::to_string).collect();
    let name_ok = |n: &String| {
        n.chars().all(|c| {
            is_id_rest(c) || c == '.' || c == INACCESSIBLE || SUPERSCRIPT_DIGITS.contains(c) || "«»".contains(c)
        })
    };
    if names.is_empty() || !names.iter().all(name_ok) {
        return Err(bad());
    }
    let rest = &entry[colon + 2..];
    let (ty, value) = match top_level_find(rest, " := ") {
        Some(i) => (rest[..i].trim(), Some(rest[i + 4..].trim().to_string())),
        None => (rest.trim(), None),
    };
    if ty.is_empty() || value.as_deref() == Some("") {
        return Err(bad());
    }
    Ok(Hyp { names, ty: ty.to_string(), value })
}

/// First occurrence of `pat` outside brackets.
fn top_level_find(s: &str, pat: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' | '⟨' | '⦃' => depth += 1,
            ')' | ']' | '}' | '⟩' | '⦄' => depth -= 1,
            _ if depth == 0 && s[i..].starts_with(pat) => return Some(i),
            _ => {}
        }
    }
    None
}

impl Goal {
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.hyps
            .iter()
            .flat_map(|h| std::iter::once(h.ty.as_str()).chain(h.value.as_deref()))
            .chain([self.target.as_str()])
    }

    /// Refuses goals whose text cannot be elaborated again.
    fn restatable(&self) -> Result<(), GoalError> {
        for t in self.texts() {
            if t.contains('⋯') {
                return Err(GoalError::Elided);
            }
            if let Some(m) = find_metavariable(t) {
                return Err(GoalError::Metavariable(m));
            }
        }
        Ok(())
    }
}

/// A `?name` that is not part of an identifier such as `Nat.find?`.
fn find_metavariable(t: &str) -> Option<String> {
    let mut prev: Option<char> = None;
    for (i, c) in t.char_indices() {
        if c == '?' && !prev.is_some_and(is_id_rest) {
            let rest = &t[i + 1..];
            if rest.starts_with(|n: char| n.is_alphabetic() || n == '_') {
                let end = rest.find(|n: char| !(is_id_rest(n) || n == '.')).unwrap_or(rest.len());
                return Some(format!("?{}", &rest[..end]));
            }
        }
        prev = Some(c);
    }
    None
}

/// How a lemma argument is supplied where the lemma is applied at its `sorry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arg {
    /// The context's variable of this name.
    Named(String),
    /// Left to unification (`_`): the context's name is inaccessible.
    Hole,
    /// `rfl`: the defining equation of a `let`.
    Rfl,
    /// An instance binder: synthesized, not passed.
    Instance,
}

/// One binder of a lemma statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binder {
    pub text: String,
    pub args: Vec<Arg>,
    /// The binder is an earlier subgoal (dropped in form (a)).
    pub premise: bool,
}

/// A subgoal restated as a closed lemma.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lemma {
    pub name: String,
    pub binders: Vec<Binder>,
    pub target: String,
}

impl Lemma {
    /// Builds the lemma for `goal`. Hypotheses named in `premises` (earlier subgoals) are marked so
    /// form (a) can drop them. `eq_notation`: write `x = v` for a `let` (false where `=` has no
    /// notation, as in a `prelude` world).
    pub fn from_goal(name: &str, goal: &Goal, premises: &[String], eq_notation: bool) -> Lemma {
        let renames = fresh_names(goal);
        let rename = |t: &str| renames.iter().fold(t.to_string(), |acc, (from, to)| replace_name(&acc, from, to));
        let mut binders = Vec::new();
        for h in &goal.hyps {
            let ty = rename(&h.ty);
            let accessible: Vec<&String> = h.names.iter().filter(|n| !n.contains(INACCESSIBLE)).collect();
            if let Some(v) = &h.value {
                for n in &h.names {
                    let new = renames.iter().find(|(f, _)| f == n).map_or(n.clone(), |(_, t)| t.clone());
                    let arg = if n.contains(INACCESSIBLE) { Arg::Hole } else { Arg::Named(n.clone()) };
                    binders.push(Binder { text: format!("({new} : {ty})"), args: vec![arg], premise: false });
                    let v = rename(v);
                    let eq = if eq_notation { format!("{new} = {v}") } else { format!("Eq {new} ({v})") };
                    let def = fresh_def_name(goal, &new);
                    binders.push(Binder { text: format!("({def} : {eq})"), args: vec![Arg::Rfl], premise: false });
                }
                continue;
            }
            // Anonymous instances: `[C]`, synthesized where the lemma is applied.
            for _ in h.names.iter().filter(|n| is_anonymous_instance(n)) {
                binders.push(Binder { text: format!("[{ty}]"), args: vec![Arg::Instance], premise: false });
            }
            let others: Vec<&String> = h.names.iter().filter(|n| !is_anonymous_instance(n)).collect();
            // Consecutive names that are alike in being premises or not stay in one binder.
            let mut group: Vec<(&String, bool)> = Vec::new();
            let flush = |group: &mut Vec<(&String, bool)>, binders: &mut Vec<Binder>| {
                if group.is_empty() {
                    return;
                }
                let names: Vec<String> = group
                    .iter()
                    .map(|(n, _)| renames.iter().find(|(f, _)| f == *n).map_or((*n).clone(), |(_, t)| t.clone()))
                    .collect();
                let args = group
                    .iter()
                    .map(|(n, _)| if n.contains(INACCESSIBLE) { Arg::Hole } else { Arg::Named((*n).clone()) })
                    .collect();
                binders.push(Binder { text: format!("({} : {ty})", names.join(" ")), args, premise: group[0].1 });
                group.clear();
            };
            for n in others {
                let premise = accessible.contains(&n) && premises.iter().any(|p| p == n);
                if group.last().is_some_and(|(_, p)| *p != premise) {
                    flush(&mut group, &mut binders);
                }
                group.push((n, premise));
            }
            flush(&mut group, &mut binders);
        }
        Lemma { name: name.to_string(), binders, target: rename(&goal.target) }
    }

    /// `theorem NAME binders :\n    target :=` with every binder (form (b)).
    pub fn statement(&self) -> String {
        self.statement_with(|_| true)
    }

    /// Form (a): without the earlier subgoals as premises.
    pub fn statement_without_premises(&self) -> String {
        self.statement_with(|b| !b.premise)
    }

    fn statement_with(&self, keep: impl Fn(&Binder) -> bool) -> String {
        let mut s = format!("theorem {}", self.name);
        for b in self.binders.iter().filter(|b| keep(b)) {
            s.push(' ');
            s.push_str(&b.text);
        }
        s.push_str(" :\n    ");
        s.push_str(&indent_continuation(&self.target, 4));
        s.push_str(" :=");
        s
    }

    /// The statement without its name: equal keys are the same subgoal.
    pub fn key(&self, header_key: &str) -> String {
        let binders: Vec<&str> = self.binders.iter().map(|b| b.text.as_str()).collect();
        let body = format!("{} : {}", binders.join(" "), self.target);
        format!("{header_key}\n{}", crate::pipeline::sketch::normalize_statement(&body))
    }

    /// `(fun binders => proof)` applied to the context's variables: the lemma used at its `sorry`
    /// when the proof cannot be pasted in place (its names differ from the context's).
    pub fn application(&self, proof: &str) -> String {
        let mut binders = Vec::new();
        let mut args = Vec::new();
        for b in &self.binders {
            binders.push(b.text.as_str());
            for a in &b.args {
                match a {
                    Arg::Named(n) => args.push(n.clone()),
                    Arg::Hole => args.push("_".into()),
                    Arg::Rfl => args.push("rfl".into()),
                    Arg::Instance => {}
                }
            }
        }
        if binders.is_empty() {
            return format!("({proof})");
        }
        let args = if args.is_empty() { String::new() } else { format!(" {}", args.join(" ")) };
        format!("((fun {} => {proof}){args})", binders.join(" "))
    }
}

fn is_anonymous_instance(name: &str) -> bool {
    name.strip_prefix("inst").is_some_and(|rest| rest.starts_with(INACCESSIBLE))
}

/// Continuation lines of a multi-line target, indented under the first.
fn indent_continuation(text: &str, cols: usize) -> String {
    let pad = " ".repeat(cols);
    text.lines()
        .enumerate()
        .map(|(i, l)| if i == 0 { l.to_string() } else { format!("{pad}{}", l.trim_start()) })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `x_def`, or `x_def_2`, … when the goal already uses that name.
fn fresh_def_name(goal: &Goal, var: &str) -> String {
    let used = |cand: &str| {
        goal.hyps.iter().flat_map(|h| &h.names).any(|n| n == cand) || goal.texts().any(|t| mentions(t, cand))
    };
    let mut cand = format!("{var}_def");
    let mut i = 2;
    while used(&cand) {
        cand = format!("{var}_def_{i}");
        i += 1;
    }
    cand
}

/// Fresh names for the inaccessible ones (`x✝` → `x_1`), avoiding every name in the goal.
fn fresh_names(goal: &Goal) -> Vec<(String, String)> {
    let all: Vec<&String> = goal.hyps.iter().flat_map(|h| &h.names).collect();
    let mut taken: Vec<String> = all.iter().map(|n| n.to_string()).collect();
    let mut out = Vec::new();
    for n in all.iter().filter(|n| n.contains(INACCESSIBLE) && !is_anonymous_instance(n)) {
        let base = n.split(INACCESSIBLE).next().unwrap_or("x");
        let base = if base.is_empty() { "x" } else { base };
        let mut i = 1;
        let fresh = loop {
            let cand = format!("{base}_{i}");
            let in_text = goal.texts().any(|t| mentions(t, &cand));
            if !taken.contains(&cand) && !in_text {
                break cand;
            }
            i += 1;
        };
        taken.push(fresh.clone());
        out.push((n.to_string(), fresh));
    }
    // Longest first, so `h✝¹` is not rewritten as `h✝` followed by `¹`.
    out.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    out
}

/// Whether `text` holds `name` as a whole name.
fn mentions(text: &str, name: &str) -> bool {
    whole_name_at(text, name).next().is_some()
}

/// Byte offsets of the whole-name occurrences of `name` in `text`: not inside a longer name, nor
/// followed by `✝` or a superscript digit (`h✝` is not `h✝¹`).
fn whole_name_at<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices(name).map(|(i, _)| i).filter(move |&start| {
        let end = start + name.len();
        let before_ok = !text[..start].chars().next_back().is_some_and(|c| is_id_rest(c) || c == '.');
        let after_ok = !text[end..]
            .chars()
            .next()
            .is_some_and(|c| is_id_rest(c) || c == INACCESSIBLE || SUPERSCRIPT_DIGITS.contains(c));
        before_ok && after_ok
    })
}

/// Replaces whole-name occurrences of `from` in `text`.
fn replace_name(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    for start in whole_name_at(text, from) {
        out.push_str(&text[i..start]);
        out.push_str(to);
        i = start + from.len();
    }
    out.push_str(&text[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypotheses_and_target_are_read_from_lean_output() {
        let g = parse_goal("p q : Prop\nhp : p\nhq h1 : q\n⊢ And q p").unwrap();
        assert_eq!(g.hyps.len(), 3);
        assert_eq!(g.hyps[0].names, ["p", "q"]);
        assert_eq!(g.hyps[2].ty, "q");
        assert_eq!(g.target, "And q p");
    }

    #[test]
    fn wrapped_lines_continue_their_entry() {
        let g = parse_goal("case succ\nx : Nat\nh :\n  Eq x\n    x\n⊢ Eq (f x)\n    (g x)").unwrap();
        assert_eq!(g.case.as_deref(), Some("succ"));
        assert_eq!(g.hyps[1].ty.split_whitespace().collect::<Vec<_>>(), ["Eq", "x", "x"]);
        assert_eq!(g.target.split_whitespace().collect::<Vec<_>>().join(" "), "Eq (f x) (g x)");
    }

    #[test]
    fn a_let_hypothesis_keeps_its_value() {
        let g = parse_goal("n : Nat\nk : Nat := n.add 1\n⊢ True").unwrap();
        assert_eq!(g.hyps[1].value.as_deref(), Some("n.add 1"));
    }

    #[test]
    fn metavariables_and_elisions_cannot_be_restated() {
        assert_eq!(parse_goal("x : Nat\n⊢ Eq x ?m.5").unwrap_err(), GoalError::Metavariable("?m.5".into()));
        assert_eq!(parse_goal("h : P ⋯\n⊢ True").unwrap_err(), GoalError::Elided);
        assert!(parse_goal("x : Nat\n⊢ Eq (Nat.find? x) x").is_ok());
        assert_eq!(parse_goal("x : Nat").unwrap_err(), GoalError::NoTarget);
    }

    #[test]
    fn form_b_keeps_earlier_subgoals_and_form_a_drops_them() {
        let g = parse_goal("p q : Prop\nhp : p\nhq h1 : q\n⊢ p").unwrap();
        let l = Lemma::from_goal("t_h2", &g, &["h1".into()], false);
        assert_eq!(l.statement(), "theorem t_h2 (p q : Prop) (hp : p) (hq : q) (h1 : q) :\n    p :=");
        assert_eq!(l.statement_without_premises(), "theorem t_h2 (p q : Prop) (hp : p) (hq : q) :\n    p :=");
    }

    #[test]
    fn inaccessible_names_get_fresh_names_everywhere() {
        let g = parse_goal("x✝ : Nat\nh✝¹ : f x✝\nh✝ : g x✝\nh : True\n⊢ f x✝").unwrap();
        let l = Lemma::from_goal("L", &g, &[], true);
        assert_eq!(l.statement(), "theorem L (x_1 : Nat) (h_1 : f x_1) (h_2 : g x_1) (h : True) :\n    f x_1 :=");
        assert_eq!(l.application("pf"), "((fun (x_1 : Nat) (h_1 : f x_1) (h_2 : g x_1) (h : True) => pf) _ _ _ h)");
    }

    #[test]
    fn a_fresh_name_avoids_names_already_used() {
        let g = parse_goal("x_1 : Nat\nx✝ : Nat\n⊢ Eq x✝ x_1").unwrap();
        let l = Lemma::from_goal("L", &g, &[], true);
        assert_eq!(l.statement(), "theorem L (x_1 : Nat) (x_2 : Nat) :\n    Eq x_2 x_1 :=");
    }

    #[test]
    fn anonymous_instances_become_instance_binders() {
        let g = parse_goal("p : Prop\ninst✝ : Decidable p\n⊢ Or p (Not p)").unwrap();
        let l = Lemma::from_goal("L", &g, &[], true);
        assert_eq!(l.statement(), "theorem L (p : Prop) [Decidable p] :\n    Or p (Not p) :=");
        assert_eq!(l.application("pf"), "((fun (p : Prop) [Decidable p] => pf) p)");
    }

    #[test]
    fn a_let_becomes_a_variable_and_its_equation() {
        let g = parse_goal("n : Nat\nk : Nat := n.add 1\n⊢ P k").unwrap();
        let l = Lemma::from_goal("L", &g, &[], false);
        assert_eq!(l.statement(), "theorem L (n : Nat) (k : Nat) (k_def : Eq k (n.add 1)) :\n    P k :=");
        assert_eq!(l.application("pf"), "((fun (n : Nat) (k : Nat) (k_def : Eq k (n.add 1)) => pf) n k rfl)");
        let l = Lemma::from_goal("L", &g, &[], true);
        assert!(l.statement().contains("(k_def : k = n.add 1)"));
    }

    #[test]
    fn a_let_equation_avoids_a_name_in_use() {
        let g = parse_goal("k : Nat := 1\nk_def : True\n⊢ P k").unwrap();
        let l = Lemma::from_goal("L", &g, &[], true);
        assert!(l.statement().contains("(k : Nat) (k_def_2 : k = 1) (k_def : True)"), "{}", l.statement());
    }

    #[test]
    fn the_key_ignores_the_name_and_spacing() {
        let a = Lemma::from_goal("A", &parse_goal("p : Prop\nh : p\n⊢ p").unwrap(), &[], true);
        let b = Lemma::from_goal("B", &parse_goal("p  : Prop\nh :   p\n⊢ p").unwrap(), &[], true);
        assert_eq!(a.key("import M"), b.key("import M"));
        assert_ne!(a.key("import M"), a.key("import N"));
    }
}
