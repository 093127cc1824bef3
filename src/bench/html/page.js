// The report page's script: the problem table (filter, sort, render at most LIMIT rows until
// asked), problem details opened from their JSON block on demand, deep links
// (#problem=NAME&run=I&node=ID, and differ=1 for the comparison filter). Plain DOM, no framework; every text goes in as textContent.
"use strict";
(function () {
  const LIMIT = 500;
  const data = JSON.parse(document.getElementById("data").textContent);
  const runs = data.runs;
  const rows = data.problems;
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  };
  const state = { sort: "name", asc: true, all: false };

  // --- the problem table -------------------------------------------------------------------
  const cols = [
    ["name", "problem", (r) => r.name],
    ["split", "split", (r) => r.split || ""],
    ["area", "area", (r) => r.area || ""],
  ];
  runs.forEach((run, i) => {
    const tag = runs.length > 1 ? ` [${i + 1}]` : "";
    const cell = (r) => r.runs[i];
    cols.push([`st${i}`, `status${tag}`, (r) => (cell(r) ? cell(r).st : "")]);
    cols.push([`via${i}`, `how solved${tag}`, (r) => (cell(r) && cell(r).via) || ""]);
    cols.push([`ms${i}`, `time s${tag}`, (r) => (cell(r) ? cell(r).ms : -1), true]);
    cols.push([`tok${i}`, `tokens${tag}`, (r) => (cell(r) ? cell(r).tok : -1), true]);
    cols.push([`calls${i}`, `model calls${tag}`, (r) => (cell(r) ? cell(r).calls : -1), true]);
  });
  cols.push(["reason", "reason", (r) => { const c = r.runs.find((x) => x); return c ? c.reason : ""; }]);

  function fillSelect(id, values) {
    const s = $(id);
    for (const v of [...new Set(values.filter((x) => x))].sort()) s.append(el("option", { text: v }));
  }
  fillSelect("f-split", rows.map((r) => r.split));
  fillSelect("f-area", rows.map((r) => r.area));
  fillSelect("f-via", rows.flatMap((r) => r.runs.map((c) => c && c.via)));
  if (runs.length > 1) $("f-differ-label").hidden = false;

  const head = el("tr");
  for (const [key, label] of cols) {
    const th = el("th", { "data-key": key, text: label });
    th.addEventListener("click", () => {
      state.asc = state.sort === key ? !state.asc : true;
      state.sort = key;
      render();
    });
    head.append(th);
  }
  document.querySelector("#table thead").append(head);

  function matches(r) {
    const name = $("f-name").value.trim().toLowerCase();
    const status = $("f-status").value, split = $("f-split").value, area = $("f-area").value, via = $("f-via").value;
    if (name && !r.name.toLowerCase().includes(name)) return false;
    if (split && r.split !== split) return false;
    if (area && r.area !== area) return false;
    if (status && !r.runs.some((c) => c && c.st === status)) return false;
    if (via && !r.runs.some((c) => c && c.via === via)) return false;
    if ($("f-differ").checked) {
      const solved = new Set(r.runs.map((c) => (c ? c.st === "solved" : "missing")));
      if (solved.size < 2) return false;
    }
    return true;
  }

  function render() {
    const col = cols.find((c) => c[0] === state.sort) || cols[0];
    const picked = rows.filter(matches);
    picked.sort((a, b) => {
      const x = col[2](a), y = col[2](b);
      const o = col[3] ? x - y : String(x).localeCompare(String(y));
      return state.asc ? o : -o;
    });
    const shown = state.all ? picked : picked.slice(0, LIMIT);
    const body = el("tbody");
    for (const r of shown) {
      const tr = el("tr", { "data-name": r.name });
      for (const [key, , get, numeric] of cols) {
        let v = get(r);
        const td = el("td");
        if (key.startsWith("st")) td.className = "st-" + v;
        if (numeric) {
          td.className = "num";
          v = v < 0 ? "" : key.startsWith("ms") ? (v / 1000).toFixed(1) : String(v);
        }
        if (key === "reason") td.className = "reason";
        td.textContent = v;
        tr.append(td);
      }
      body.append(tr);
    }
    $("table").replaceChild(body, document.querySelector("#table tbody"));
    for (const th of document.querySelectorAll("#table thead th")) {
      th.classList.toggle("sorted", th.dataset.key === state.sort);
      th.classList.toggle("asc", th.dataset.key === state.sort && state.asc);
    }
    $("count").textContent = `${picked.length} of ${rows.length} problems` + (shown.length < picked.length ? `, first ${shown.length} shown` : "");
    $("more").hidden = shown.length >= picked.length;
    markOpen();
  }
  for (const id of ["f-name", "f-status", "f-split", "f-area", "f-via", "f-differ"]) {
    $(id).addEventListener("input", () => { state.all = false; render(); });
  }
  $("more").addEventListener("click", () => { state.all = true; render(); });
  document.querySelector("#table").addEventListener("click", (e) => {
    const tr = e.target.closest("tbody tr");
    if (tr) go({ problem: tr.dataset.name });
  });

  // --- deep links ----------------------------------------------------------------------------
  function parseHash() {
    const out = {};
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      const i = part.indexOf("=");
      if (i > 0) out[decodeURIComponent(part.slice(0, i))] = decodeURIComponent(part.slice(i + 1));
    }
    return out;
  }
  function go(link) {
    const parts = [];
    if ($("f-differ").checked) parts.push("differ=1");
    for (const k of ["problem", "run", "node"]) if (link[k] != null) parts.push(`${k}=${encodeURIComponent(link[k])}`);
    location.hash = parts.join("&");
  }
  function markOpen() {
    const open = parseHash().problem;
    for (const tr of document.querySelectorAll("#table tbody tr")) tr.classList.toggle("open", tr.dataset.name === open);
  }

  // --- problem details -----------------------------------------------------------------------
  const cache = new Map();
  function details(index) {
    if (!cache.has(index)) {
      const node = document.getElementById("d-" + index);
      cache.set(index, node ? JSON.parse(node.textContent) : null);
    }
    return cache.get(index);
  }

  function show() {
    const link = parseHash();
    markOpen();
    const section = $("details");
    const row = rows.find((r) => r.name === link.problem);
    if (!row) { section.hidden = true; return; }
    const present = row.runs.map((c, i) => (c ? i : -1)).filter((i) => i >= 0);
    const runIndex = present.includes(Number(link.run)) ? Number(link.run) : present[0];
    const cell = row.runs[runIndex];
    const d = details(cell.d);
    section.replaceChildren();
    section.hidden = false;
    section.append(el("h2", { text: row.name }));
    if (runs.length > 1) {
      const tabs = el("div", { class: "tabs" });
      row.runs.forEach((c, i) => {
        const b = el("button", { text: `[${i + 1}] ${runs[i].label}: ${c ? c.st : "not finished"}` });
        if (i === runIndex) b.className = "on";
        b.disabled = !c;
        b.addEventListener("click", () => go({ problem: row.name, run: i }));
        tabs.append(b);
      });
      section.append(tabs);
    }
    const facts = el("dl");
    const fact = (k, v) => { if (v !== "" && v != null) facts.append(el("dt", { text: k }), el("dd", { text: String(v) })); };
    fact("status", cell.st);
    fact("how solved", cell.via || "");
    fact("reason", cell.reason);
    fact("whole-proof samples", `${cell.n} (${cell.c} proved)`);
    fact("model calls / tokens / Lean checks", `${cell.calls} / ${cell.tok} / ${cell.checks}`);
    fact("time", `${(cell.ms / 1000).toFixed(1)} s`);
    if (d && d.left_out) fact("attempts not embedded", `${d.left_out} (see attempts.jsonl)`);
    section.append(el("div", { class: "node-panel" }, facts));
    if (!d) { section.append(el("p", { class: "muted", text: "This problem's details are not in the page." })); return; }
    if (d.svg) {
      section.append(el("h3", { text: "Subgoal graph" }));
      const legend = el("div", { class: "legend muted" });
      for (const s of ["proved", "failed", "unrestatable", "cancelled", "open"]) legend.append(el("span", { class: "st-" + s, text: "■ " + s }));
      legend.append(el("span", { text: "arrows: needed by" }));
      const graph = el("div", { class: "graph" });
      graph.innerHTML = d.svg; // built and escaped by the report writer, not from page input
      graph.addEventListener("click", (e) => {
        const g = e.target.closest("g.node");
        if (g) go({ problem: row.name, run: runs.length > 1 ? runIndex : null, node: g.dataset.node });
      });
      section.append(legend, graph);
    }
    const nodes = d.dag ? d.dag.nodes : [];
    // The linked node, else the theorem (its attempts are what a reader looks for first).
    const selected = nodes.find((n) => String(n.id) === link.node) || nodes.find((n) => n.kind === "theorem");
    for (const g of section.querySelectorAll("g.node")) g.classList.toggle("selected", selected && g.dataset.node === String(selected.id));
    const panel = el("div", { class: "node-panel", id: "node-panel" });
    section.append(panel);
    if (selected) renderNode(panel, selected, d);
    else panel.append(el("p", { class: "muted", text: nodes.length ? "Click a node to see its statement, attempts and proof." : "" }));
    const sketches = nodes.filter((n) => n.kind === "sketch");
    if (sketches.length) {
      section.append(el("h3", { text: "Sketches" }));
      for (const s of sketches) {
        section.append(el("div", { class: "muted", text: `${s.name} (${s.status})` }), sketchPre(s.statement));
      }
    }
    section.append(el("h3", { text: `Proof of ${row.name}` }));
    section.append(d.proof ? el("pre", { class: "proof", text: d.proof }) : el("p", { class: "muted", text: "No proof." }));
    if (link.node && selected) panel.scrollIntoView({ block: "start" });
    else section.scrollIntoView({ block: "start" });
  }

  function sketchPre(text) {
    const pre = el("pre", { class: "sketch" });
    let at = 0;
    for (const m of text.matchAll(/\bsorry\b/g)) {
      pre.append(text.slice(at, m.index), el("span", { class: "sorry", text: "sorry" }));
      at = m.index + m[0].length;
    }
    pre.append(text.slice(at));
    return pre;
  }

  function renderNode(panel, n, d) {
    panel.append(el("h3", { text: `${n.kind} ${n.name}` }));
    const facts = el("dl");
    const fact = (k, v) => { if (v !== "" && v != null) facts.append(el("dt", { text: k }), el("dd", { text: String(v) })); };
    fact("status", n.status);
    fact("how proved", n.via || "");
    fact("reason", n.reason || "");
    fact("depth", n.provenance ? n.provenance.depth : "");
    fact("step", n.provenance && n.provenance.step ? n.provenance.step : "");
    fact("problems needing it", (n.problems || []).join(", "));
    panel.append(facts);
    if (n.kind === "sketch") {
      if (n.informal) panel.append(el("h4", { text: "The planner's reasoning" }), el("pre", { text: n.informal }));
      panel.append(el("h4", { text: "Sketch" }), sketchPre(n.statement));
    } else {
      panel.append(el("h4", { text: "Statement" }), el("pre", { class: "statement", text: n.statement }));
      if (n.statement_without_premises && n.statement_without_premises !== n.statement) {
        panel.append(el("h4", { text: "Statement without the earlier steps (form a)" }), el("pre", { class: "statement-a", text: n.statement_without_premises }));
      }
    }
    const mine = d.attempts.filter((a) => a.node === n.name);
    panel.append(el("h4", { text: `Attempts (${mine.length})` }));
    if (mine.length) {
      const t = el("table", { class: "attempts" });
      t.append(el("tr", {}, ...["role", "sample", "round / tactic", "verdict", "reason", "tokens", "Lean ms"].map((h) => el("th", { text: h }))));
      const holder = el("div");
      mine.forEach((a) => {
        const tr = el("tr", { class: "attempt" },
          el("td", { text: a.role }), el("td", { class: "num", text: String(a.sample) }),
          el("td", { text: a.round != null ? `round ${a.round}` : a.tactic || "" }),
          el("td", { class: "verdict v-" + a.verdict, text: a.verdict }),
          el("td", { class: "reason", text: a.reason }),
          el("td", { class: "num", text: String(a.prompt_tokens + a.completion_tokens) }),
          el("td", { class: "num", text: String(a.lean_ms) }));
        tr.addEventListener("click", () => { holder.replaceChildren(attemptView(a)); holder.scrollIntoView({ block: "nearest" }); });
        t.append(tr);
      });
      panel.append(t, holder);
      const first = mine.find((a) => a.verdict === "proved") || mine[0];
      holder.append(attemptView(first));
    }
    if (n.proof) panel.append(el("h4", { text: "Proof" }), el("pre", { class: "proof", text: n.proof }));
  }

  // The candidate with Lean's messages under the lines they are about.
  function attemptView(a) {
    const box = el("div");
    box.append(el("div", { class: "muted", text: `${a.role} sample ${a.sample}: ${a.verdict}${a.finish_reason ? " (model stopped: " + a.finish_reason + ")" : ""}` }));
    const code = el("div", { class: "code" });
    const lines = (a.code || "").split("\n");
    const messages = a.messages || [];
    const at = new Map();
    const elsewhere = [];
    for (const m of messages) {
      if (m.region === "candidate" && m.start.line >= 1 && m.start.line <= lines.length) {
        if (!at.has(m.start.line)) at.set(m.start.line, []);
        at.get(m.start.line).push(m);
      } else elsewhere.push(m);
    }
    lines.forEach((text, i) => {
      const ms = at.get(i + 1) || [];
      const line = el("div", { class: "ln" + (ms.length ? " has-msg" : "") }, el("span", { class: "no", text: String(i + 1) }));
      const m = ms.find((x) => x.severity === "error" && x.end.line === x.start.line && x.end.column > x.start.column);
      if (m) {
        const chars = Array.from(text);
        line.append(chars.slice(0, m.start.column).join(""), el("span", { class: "hl", text: chars.slice(m.start.column, m.end.column).join("") }), chars.slice(m.end.column).join(""));
      } else line.append(text);
      code.append(line);
      for (const x of ms) code.append(el("div", { class: "msg sev-" + x.severity, text: `${x.severity} at ${x.start.line}:${x.start.column}: ${x.text}` }));
    });
    box.append(code);
    if (elsewhere.length) {
      const ul = el("ul");
      for (const x of elsewhere) ul.append(el("li", { class: "sev-" + x.severity, text: `${x.severity} (${x.region} ${x.start.line}:${x.start.column}): ${x.text}` }));
      box.append(el("div", { class: "muted", text: "Messages outside the candidate:" }), ul);
    }
    return box;
  }

  // A link may carry the comparison filter (`differ=1`).
  if (parseHash().differ === "1") $("f-differ").checked = true;
  render();
  document.body.dataset.usableMs = performance.now().toFixed(0);
  window.addEventListener("hashchange", show);
  const open = () => { show(); document.body.dataset.openedMs = performance.now().toFixed(0); };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", open);
  else open();
})();
