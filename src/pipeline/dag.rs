//! The subgoal graph: theorems, their sketches and the subgoal lemmas those sketches need, in a
//! `petgraph` graph with edges "needed by" (subgoal → sketch → the theorem or subgoal it proves).
//!
//! Invariants: a subgoal is one node per normalized statement (`key`) within a run, however many
//! sketches (of however many problems) need it; the graph is acyclic (`link` refuses an edge that
//! would close a cycle: a sketch that needs the very statement it is proving). The graph only
//! records; the scheduler decides what runs. `retire` forgets a finished problem's part (keeping
//! proved subgoals for reuse), so a long run's memory follows its live problems, not its length.

use std::collections::HashMap;

use petgraph::graph::NodeIndex;
use petgraph::stable_graph::StableDiGraph;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};

use super::records::Via;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Theorem,
    Sketch,
    Subgoal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not started.
    Open,
    /// The prover (or planner) is working on it.
    Proving,
    /// Waiting for its subgoals (sketches, and nodes being decomposed).
    Decomposing,
    Proved,
    Failed,
    /// No dependent needs it any more; its work was stopped.
    Cancelled,
    /// Lean's goal at the `sorry` could not be restated as a lemma (see `reason`).
    Unrestatable,
}

impl Status {
    pub fn is_final(self) -> bool {
        matches!(self, Status::Proved | Status::Failed | Status::Cancelled | Status::Unrestatable)
    }
}

/// Where a node came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The problem that created it.
    pub problem: String,
    /// The step (`have` name) of the sketch it restates, for subgoals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Decomposition depth: 0 for theorems.
    pub depth: u32,
    /// The model that wrote it (sketches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub kind: NodeKind,
    pub name: String,
    /// Lean statement (`theorem NAME … :=`) for theorems and subgoals; the sketch's code for sketches.
    pub statement: String,
    /// Subgoals: the statement without earlier subgoals as premises (the paper's form (a)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_without_premises: Option<String>,
    /// Sketches: the subgoals' node names, in the order of their `sorry`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subgoals: Vec<String>,
    /// Sketches: the planner's informal reasoning that came with the sketch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informal: Option<String>,
    /// Normalized statement with its import header: equal keys are one node.
    pub key: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Candidates verified for this node.
    pub attempts: u32,
    /// The verified proof (complete Lean code of the statement), once proved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// How it was proved, once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    pub provenance: Provenance,
    /// Every problem whose proof needs this node.
    pub problems: Vec<String>,
}

impl Node {
    pub fn new(kind: NodeKind, name: &str, statement: &str, key: String, provenance: Provenance) -> Node {
        Node {
            kind,
            name: name.to_string(),
            statement: statement.to_string(),
            statement_without_premises: None,
            subgoals: vec![],
            informal: None,
            key,
            status: Status::Open,
            reason: None,
            attempts: 0,
            proof: None,
            via: None,
            problems: vec![provenance.problem.clone()],
            provenance,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("the sketch needs `{0}`, which is the statement it is meant to prove (a cycle)")]
    Cycle(String),
}

#[derive(Debug, Default)]
pub struct Dag {
    graph: StableDiGraph<Node, ()>,
    /// Theorems and subgoals by key (sketches are never shared).
    by_key: HashMap<String, NodeIndex>,
    /// Names of the theorems and subgoals in `by_key`, so a new lemma name is checked in O(1).
    names: std::collections::HashSet<String>,
}

/// The graph as exported (`dag.json`): node ids are indices into `nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagExport {
    pub schema: String,
    pub nodes: Vec<ExportNode>,
    /// `[from, to]`: `from` is needed by `to`.
    pub edges: Vec<[usize; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportNode {
    pub id: usize,
    #[serde(flatten)]
    pub node: Node,
}

pub const DAG_SCHEMA: &str = "subgoal.dag.v1";

impl Dag {
    pub fn new() -> Dag {
        Dag::default()
    }

    pub fn contains(&self, i: NodeIndex) -> bool {
        self.graph.contains_node(i)
    }

    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.graph[i]
    }

    pub fn node_mut(&mut self, i: NodeIndex) -> &mut Node {
        &mut self.graph[i]
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Whether a theorem or subgoal of this name exists.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// How many nodes are in each status.
    pub fn status_counts(&self) -> HashMap<Status, usize> {
        let mut counts = HashMap::new();
        for i in self.graph.node_indices() {
            *counts.entry(self.graph[i].status).or_insert(0) += 1;
        }
        counts
    }

    /// The node with this key, if any.
    pub fn find(&self, key: &str) -> Option<NodeIndex> {
        self.by_key.get(key).copied()
    }

    /// A theorem or subgoal node, shared by key: returns the existing node (recording that
    /// `problem` needs it too) or a new one, and whether it was new.
    pub fn intern(&mut self, node: Node) -> (NodeIndex, bool) {
        if let Some(&i) = self.by_key.get(&node.key) {
            let problem = node.provenance.problem;
            let n = &mut self.graph[i];
            if !n.problems.contains(&problem) {
                n.problems.push(problem);
            }
            return (i, false);
        }
        let key = node.key.clone();
        let i = self.graph.add_node(node);
        if self.graph[i].kind != NodeKind::Sketch {
            self.by_key.insert(key, i);
            self.names.insert(self.graph[i].name.clone());
        }
        (i, true)
    }

    /// A sketch of `target`: never shared.
    pub fn add_sketch(&mut self, target: NodeIndex, node: Node) -> NodeIndex {
        let i = self.graph.add_node(node);
        self.graph.add_edge(i, target, ());
        i
    }

    /// Records that `from` is needed by `to`. Refuses (and adds nothing) when `to` already
    /// depends on `from`'s statement, directly or not.
    pub fn link(&mut self, from: NodeIndex, to: NodeIndex) -> Result<(), DagError> {
        if from == to || petgraph::algo::has_path_connecting(&self.graph, to, from, None) {
            return Err(DagError::Cycle(self.graph[from].name.clone()));
        }
        if self.graph.find_edge(from, to).is_none() {
            self.graph.add_edge(from, to, ());
        }
        debug_assert!(!petgraph::algo::is_cyclic_directed(&self.graph), "the subgoal graph has a cycle");
        Ok(())
    }

    /// Forgets what only `problem` needed, once it is done: every node no other problem needs,
    /// except proved subgoals (kept, so a later sketch reuses them) and nodes that work still in
    /// `running` depends on. Returns the nodes removed.
    pub fn retire(&mut self, problem: &str, running: &[NodeIndex]) -> Vec<NodeIndex> {
        // Nodes some running node needs, directly or not, must stay.
        let mut live: Vec<NodeIndex> = running.iter().copied().filter(|&i| self.graph.contains_node(i)).collect();
        let mut stack = live.clone();
        while let Some(i) = stack.pop() {
            for d in self.dependencies(i) {
                if !live.contains(&d) {
                    live.push(d);
                    stack.push(d);
                }
            }
        }
        let mut removed = Vec::new();
        let ids: Vec<NodeIndex> = self.graph.node_indices().collect();
        for i in ids {
            let n = &mut self.graph[i];
            n.problems.retain(|p| p != problem);
            let keep = !n.problems.is_empty()
                || (n.kind == NodeKind::Subgoal && n.status == Status::Proved)
                || live.contains(&i)
                || !n.status.is_final();
            if keep {
                continue;
            }
            if self.by_key.get(&n.key) == Some(&i) {
                let (key, name) = (n.key.clone(), n.name.clone());
                self.by_key.remove(&key);
                self.names.remove(&name);
            }
            self.graph.remove_node(i);
            removed.push(i);
        }
        removed
    }

    /// Nodes `i` is needed by.
    pub fn dependents(&self, i: NodeIndex) -> Vec<NodeIndex> {
        self.graph.edges_directed(i, Direction::Outgoing).map(|e| e.target()).collect()
    }

    /// Nodes `i` needs.
    pub fn dependencies(&self, i: NodeIndex) -> Vec<NodeIndex> {
        self.graph.edges_directed(i, Direction::Incoming).map(|e| e.source()).collect()
    }

    pub fn is_acyclic(&self) -> bool {
        !petgraph::algo::is_cyclic_directed(&self.graph)
    }

    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.graph.node_indices().map(|i| (i, &self.graph[i]))
    }

    /// The whole graph, or with `problem`, the part that problem's theorem needs.
    pub fn export(&self, problem: Option<&str>) -> DagExport {
        let keep: Vec<NodeIndex> = match problem {
            None => self.graph.node_indices().collect(),
            Some(p) => {
                let roots: Vec<NodeIndex> = self
                    .graph
                    .node_indices()
                    .filter(|&i| self.graph[i].kind == NodeKind::Theorem && self.graph[i].provenance.problem == p)
                    .collect();
                let mut seen = roots.clone();
                let mut stack = roots;
                while let Some(i) = stack.pop() {
                    for d in self.dependencies(i) {
                        if !seen.contains(&d) {
                            seen.push(d);
                            stack.push(d);
                        }
                    }
                }
                seen.sort();
                seen
            }
        };
        let id_of = |i: NodeIndex| keep.iter().position(|&k| k == i);
        let nodes = keep.iter().enumerate().map(|(id, &i)| ExportNode { id, node: self.graph[i].clone() }).collect();
        let mut edges: Vec<[usize; 2]> = self
            .graph
            .edge_indices()
            .filter_map(|e| {
                let (a, b) = self.graph.edge_endpoints(e)?;
                Some([id_of(a)?, id_of(b)?])
            })
            .collect();
        edges.sort();
        DagExport { schema: DAG_SCHEMA.to_string(), nodes, edges }
    }
}

impl DagExport {
    /// Graphviz DOT: one box per node, colored by status, edges "needed by".
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph subgoals {\n  rankdir=BT;\n  node [shape=box, style=filled, fontname=\"monospace\"];\n",
        );
        for n in &self.nodes {
            let color = match n.node.status {
                Status::Proved => "palegreen",
                Status::Failed | Status::Unrestatable => "lightpink",
                Status::Cancelled => "lightgray",
                Status::Proving | Status::Decomposing => "lightyellow",
                Status::Open => "white",
            };
            let shape = match n.node.kind {
                NodeKind::Theorem => "doubleoctagon",
                NodeKind::Sketch => "note",
                NodeKind::Subgoal => "box",
            };
            let kind = serde_json::to_value(n.node.kind).ok().and_then(|v| v.as_str().map(str::to_owned));
            let status = serde_json::to_value(n.node.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            let label = format!(
                "{}\n{} · {} · {} attempts",
                n.node.name,
                kind.unwrap_or_default(),
                status.unwrap_or_default(),
                n.node.attempts
            );
            s.push_str(&format!("  n{} [label=\"{}\", shape={shape}, fillcolor={color}];\n", n.id, dot_escape(&label)));
        }
        for [a, b] in &self.edges {
            s.push_str(&format!("  n{a} -> n{b};\n"));
        }
        s.push_str("}\n");
        s
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: NodeKind, name: &str, key: &str, problem: &str) -> Node {
        Node::new(kind, name, name, key.to_string(), Provenance { problem: problem.into(), ..Default::default() })
    }

    #[test]
    fn equal_keys_are_one_node_needed_by_both_problems() {
        let mut d = Dag::new();
        let (a, new_a) = d.intern(node(NodeKind::Subgoal, "s", "k", "p1"));
        let (b, new_b) = d.intern(node(NodeKind::Subgoal, "s2", "k", "p2"));
        assert_eq!(a, b);
        assert!(new_a && !new_b);
        assert_eq!(d.node(a).problems, ["p1", "p2"]);
    }

    #[test]
    fn an_edge_that_closes_a_cycle_is_refused() {
        let mut d = Dag::new();
        let (t, _) = d.intern(node(NodeKind::Theorem, "t", "kt", "p"));
        let s = d.add_sketch(t, node(NodeKind::Sketch, "sk", "ks", "p"));
        let (g, _) = d.intern(node(NodeKind::Subgoal, "g", "kg", "p"));
        d.link(g, s).unwrap();
        // A sketch of `g` that needs the theorem `t` (which needs `g`) closes a cycle.
        let s2 = d.add_sketch(g, node(NodeKind::Sketch, "sk2", "ks2", "p"));
        assert_eq!(d.link(t, s2), Err(DagError::Cycle("t".into())));
        assert!(d.is_acyclic());
    }

    #[test]
    fn retiring_a_problem_keeps_proved_subgoals_and_what_others_need() {
        let mut d = Dag::new();
        let (t1, _) = d.intern(node(NodeKind::Theorem, "t1", "k1", "p1"));
        let s1 = d.add_sketch(t1, node(NodeKind::Sketch, "s1", "ks1", "p1"));
        let (proved, _) = d.intern(node(NodeKind::Subgoal, "g", "kg", "p1"));
        let (failed, _) = d.intern(node(NodeKind::Subgoal, "f", "kf", "p1"));
        let (shared, _) = d.intern(node(NodeKind::Subgoal, "h", "kh", "p1"));
        d.intern(node(NodeKind::Subgoal, "h", "kh", "p2"));
        for (i, st) in [(t1, Status::Failed), (s1, Status::Failed), (proved, Status::Proved), (failed, Status::Failed)]
        {
            d.node_mut(i).status = st;
        }
        for g in [proved, failed, shared] {
            d.link(g, s1).unwrap();
        }
        let removed = d.retire("p1", &[]);
        assert_eq!(removed, [t1, s1, failed]);
        assert!(d.contains(proved) && d.contains(shared));
        assert_eq!(d.find("kg"), Some(proved));
        assert_eq!(d.find("kf"), None);
        assert_eq!(d.node(shared).problems, ["p2"]);
    }

    #[test]
    fn retiring_keeps_what_running_work_needs() {
        let mut d = Dag::new();
        let (t, _) = d.intern(node(NodeKind::Theorem, "t", "kt", "p1"));
        let s = d.add_sketch(t, node(NodeKind::Sketch, "s", "ks", "p1"));
        d.node_mut(s).status = Status::Failed;
        let (g, _) = d.intern(node(NodeKind::Subgoal, "g", "kg", "p1"));
        d.node_mut(g).status = Status::Failed;
        d.link(g, s).unwrap();
        // `t` is still being solved (for another problem): its sketch and subgoal stay.
        assert!(d.retire("p1", &[t]).is_empty());
    }

    #[test]
    fn a_problems_export_holds_only_what_its_theorem_needs() {
        let mut d = Dag::new();
        let (t1, _) = d.intern(node(NodeKind::Theorem, "t1", "k1", "p1"));
        let (t2, _) = d.intern(node(NodeKind::Theorem, "t2", "k2", "p2"));
        let s1 = d.add_sketch(t1, node(NodeKind::Sketch, "s1", "ks1", "p1"));
        let (g, _) = d.intern(node(NodeKind::Subgoal, "g", "kg", "p1"));
        d.link(g, s1).unwrap();
        let _ = t2;
        let e = d.export(Some("p1"));
        let names: Vec<&str> = e.nodes.iter().map(|n| n.node.name.as_str()).collect();
        assert_eq!(names, ["t1", "s1", "g"]);
        assert_eq!(e.edges, [[1, 0], [2, 1]]);
        let dot = e.to_dot();
        assert!(dot.contains("n2 -> n1;") && dot.starts_with("digraph"), "{dot}");
    }
}
