//! A layered drawing of one problem's subgoal graph as inline SVG: the theorem on top, each node
//! one layer below the deepest node it is needed by (longest path), nodes ordered within their
//! layer by the barycenter of their neighbours (a few sweeps down and up, after Sugiyama), edges
//! "needed by" drawn as curves from a node up to the node that needs it.

use std::collections::HashMap;
use std::fmt::Write;

use crate::pipeline::dag::{DagExport, NodeKind, Status};

const NODE_H: f64 = 30.0;
const LAYER_GAP: f64 = 70.0;
const NODE_GAP: f64 = 18.0;
const CHAR_W: f64 = 7.0;
const MAX_LABEL: usize = 28;

/// Where each node is drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Node id → (layer, x of its centre, width).
    pub nodes: HashMap<usize, (usize, f64, f64)>,
    pub width: f64,
    pub height: f64,
}

/// Lays the graph out in layers.
pub fn layout(dag: &DagExport) -> Layout {
    let ids: Vec<usize> = dag.nodes.iter().map(|n| n.id).collect();
    // Edges point "needed by": from → to, so `to` is drawn above `from`.
    let mut parents: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for &[from, to] in &dag.edges {
        parents.entry(from).or_default().push(to);
        children.entry(to).or_default().push(from);
    }
    // Longest path from a top node (one nothing needs); the graph is acyclic, and the depth is
    // bounded by the node count so a malformed file cannot loop.
    let mut layer: HashMap<usize, usize> = ids.iter().map(|&i| (i, 0)).collect();
    for _ in 0..ids.len() {
        let mut changed = false;
        for &[from, to] in &dag.edges {
            let want = layer.get(&to).copied().unwrap_or(0) + 1;
            if let Some(l) = layer.get_mut(&from) {
                if *l < want && want <= ids.len() {
                    *l = want;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let depth = layer.values().copied().max().unwrap_or(0);
    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); depth + 1];
    for &i in &ids {
        layers[layer[&i]].push(i);
    }
    // Barycenter ordering: each layer by the mean position of its neighbours in the layer
    // above (sweeping down), then below (sweeping up).
    let position = |layers: &Vec<Vec<usize>>| -> HashMap<usize, f64> {
        layers.iter().flat_map(|l| l.iter().enumerate().map(|(p, &i)| (i, p as f64))).collect()
    };
    for _ in 0..4 {
        for (l, neighbours) in
            [(1..=depth).collect::<Vec<_>>(), (0..depth).rev().collect()].into_iter().zip([&parents, &children])
        {
            for li in l {
                let pos = position(&layers);
                let key = |i: &usize| {
                    let ns = neighbours.get(i).map(Vec::as_slice).unwrap_or(&[]);
                    if ns.is_empty() {
                        pos[i]
                    } else {
                        ns.iter().map(|n| pos.get(n).copied().unwrap_or(0.0)).sum::<f64>() / ns.len() as f64
                    }
                };
                layers[li].sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.cmp(b)));
            }
        }
    }
    let names: HashMap<usize, &str> = dag.nodes.iter().map(|n| (n.id, n.node.name.as_str())).collect();
    let width_of = |i: usize| label(names.get(&i).copied().unwrap_or("")).chars().count() as f64 * CHAR_W + 20.0;
    let widths: Vec<f64> = layers
        .iter()
        .map(|l| l.iter().map(|&i| width_of(i)).sum::<f64>() + NODE_GAP * l.len().saturating_sub(1) as f64)
        .collect();
    let total = widths.iter().copied().fold(0.0, f64::max) + 2.0 * NODE_GAP;
    let mut nodes = HashMap::new();
    for (li, l) in layers.iter().enumerate() {
        let mut x = (total - widths[li]) / 2.0;
        for &i in l {
            let w = width_of(i);
            nodes.insert(i, (li, x + w / 2.0, w));
            x += w + NODE_GAP;
        }
    }
    Layout { nodes, width: total, height: (depth + 1) as f64 * (NODE_H + LAYER_GAP) - LAYER_GAP + 2.0 * NODE_GAP }
}

/// The graph as an SVG element: each node a `<g class="node kind-… st-…" data-node="ID">` (the
/// page's script opens a node on click), each edge a path from the needed node up to the one
/// needing it.
pub fn svg(dag: &DagExport) -> String {
    let l = layout(dag);
    let y = |layer: usize| NODE_GAP + layer as f64 * (NODE_H + LAYER_GAP);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" viewBox="0 0 {:.0} {:.0}" role="img">"#,
        l.width, l.height, l.width, l.height
    );
    out.push_str(r#"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker></defs>"#);
    for &[from, to] in &dag.edges {
        let (Some(&(lf, xf, _)), Some(&(lt, xt, _))) = (l.nodes.get(&from), l.nodes.get(&to)) else { continue };
        let (y1, y2) = (y(lf), y(lt) + NODE_H);
        let mid = (y1 + y2) / 2.0;
        let _ = write!(
            out,
            r#"<path class="edge" d="M{xf:.1},{y1:.1} C{xf:.1},{mid:.1} {xt:.1},{mid:.1} {xt:.1},{y2:.1}" marker-end="url(#arrow)"/>"#
        );
    }
    for n in &dag.nodes {
        let Some(&(li, x, w)) = l.nodes.get(&n.id) else { continue };
        let kind = match n.node.kind {
            NodeKind::Theorem => "theorem",
            NodeKind::Sketch => "sketch",
            NodeKind::Subgoal => "subgoal",
        };
        let status = status_name(n.node.status);
        let _ = write!(
            out,
            r#"<g class="node kind-{kind} st-{status}" data-node="{}" tabindex="0"><title>{} ({status})</title><rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{NODE_H}" rx="{}"/><text x="{x:.1}" y="{:.1}">{}</text></g>"#,
            n.id,
            escape(&n.node.name),
            x - w / 2.0,
            y(li),
            if n.node.kind == NodeKind::Sketch { 12 } else { 4 },
            y(li) + NODE_H / 2.0 + 4.0,
            escape(&label(&n.node.name)),
        );
    }
    out.push_str("</svg>");
    out
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Open => "open",
        Status::Proving => "proving",
        Status::Decomposing => "decomposing",
        Status::Proved => "proved",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
        Status::Unrestatable => "unrestatable",
    }
}

/// A node's label: its name, its tail kept when long (lemma names share their theorem's prefix).
fn label(name: &str) -> String {
    let n = name.chars().count();
    if n <= MAX_LABEL {
        return name.to_string();
    }
    format!("…{}", name.chars().skip(n - (MAX_LABEL - 1)).collect::<String>())
}

/// Text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::dag::{ExportNode, Node, Provenance};

    fn dag(nodes: &[(usize, NodeKind, &str)], edges: &[[usize; 2]]) -> DagExport {
        DagExport {
            schema: "subgoal.dag.v1".into(),
            nodes: nodes
                .iter()
                .map(|&(id, kind, name)| ExportNode {
                    id,
                    node: Node::new(kind, name, "", name.into(), Provenance::default()),
                })
                .collect(),
            edges: edges.to_vec(),
        }
    }

    #[test]
    fn each_node_sits_one_layer_below_the_deepest_node_that_needs_it() {
        // t ← s ← {a, b}; b is also needed by a's sketch s2 (a ← s2 ← b).
        let d = dag(
            &[
                (0, NodeKind::Theorem, "t"),
                (1, NodeKind::Sketch, "s"),
                (2, NodeKind::Subgoal, "a"),
                (3, NodeKind::Subgoal, "b"),
                (4, NodeKind::Sketch, "s2"),
            ],
            &[[1, 0], [2, 1], [3, 1], [4, 2], [3, 4]],
        );
        let l = layout(&d);
        let layer = |i: usize| l.nodes[&i].0;
        assert_eq!((layer(0), layer(1), layer(2), layer(4), layer(3)), (0, 1, 2, 3, 4));
    }

    #[test]
    fn nodes_of_a_layer_do_not_overlap_and_crossings_are_undone() {
        // Two sketches each needing its own pair of subgoals, listed crosswise.
        let d = dag(
            &[
                (0, NodeKind::Theorem, "t"),
                (1, NodeKind::Sketch, "s1"),
                (2, NodeKind::Sketch, "s2"),
                (3, NodeKind::Subgoal, "b2"),
                (4, NodeKind::Subgoal, "a1"),
                (5, NodeKind::Subgoal, "b1"),
                (6, NodeKind::Subgoal, "a2"),
            ],
            &[[1, 0], [2, 0], [3, 2], [4, 1], [5, 1], [6, 2]],
        );
        let l = layout(&d);
        let x = |i: usize| l.nodes[&i].1;
        // s1's subgoals both left of s2's.
        assert!(x(4).max(x(5)) < x(3).min(x(6)), "{l:?}");
        let mut row: Vec<(f64, f64)> = [3, 4, 5, 6].iter().map(|i| (l.nodes[i].1, l.nodes[i].2)).collect();
        row.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in row.windows(2) {
            assert!(w[0].0 + w[0].1 / 2.0 < w[1].0 - w[1].1 / 2.0);
        }
    }

    #[test]
    fn the_svg_names_every_node_and_escapes_its_text() {
        let d = dag(&[(0, NodeKind::Theorem, "t<&>"), (1, NodeKind::Sketch, "t#sketch0")], &[[1, 0]]);
        let s = svg(&d);
        assert!(s.contains(r#"data-node="0""#) && s.contains(r#"data-node="1""#));
        assert!(s.contains("t&lt;&amp;&gt;") && !s.contains("t<&>"));
        assert_eq!(s.matches("<path class=\"edge\"").count(), 1);
    }
}
