// jray live views: the DAG, the object store, counts, worker timelines and a task table.
//
// One ES module, two hosts: anywidget loads it for jray.dashboard() (default export
// `render`), and the JupyterLab panel imports `createViews`. Input messages are the
// Python ViewModel's `full` and `patch` dicts (jray/views/model.py); nothing already
// drawn moves: new tasks are appended, state changes only switch a class.

const NS = "http://www.w3.org/2000/svg";
const COL = 70, ROW = 26, R = 8, PAD = 30;
// the task table keeps this many rows in the page (the newest that match the filter): a
// table of thousands of rows costs the browser far more to lay out than the whole graph
const TABLE_ROWS = 100;
// nodes and edges go into groups of this many: the browser recomputes a group's bounds
// over all its children when one changes, so small groups keep an update's layout small
const CHUNK = 250;
const STATES = ["submitted", "waiting", "ready", "running", "blocked", "finished", "failed",
  "cancelled", "reconstructing"];

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

function fmtBytes(n) {
  if (n == null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function fmtDur(t) {
  if (t.start == null) return "";
  const end = t.end ?? Date.now() / 1000;
  const s = Math.max(0, end - t.start);
  return s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`;
}

const CSS = `
.jray-views{font:12px/1.4 var(--jp-ui-font-family,system-ui,sans-serif);color:var(--jp-ui-font-color1,#222)}
.jray-views .jv-top{display:flex;gap:6px;flex-wrap:wrap;align-items:center;margin:4px 0}
.jray-views .jv-chip{padding:1px 6px;border-radius:8px;background:#eee}
.jray-views .jv-graph{overflow:auto;max-height:var(--jv-graph-h,360px);border:1px solid #ddd;background:var(--jp-layout-color0,#fff)}
.jray-views svg .jv-t{cursor:pointer;stroke:#555;stroke-width:.5}
.jray-views svg .jv-sel{stroke:#000;stroke-width:2.5}
.jray-views svg .st-submitted,.jray-views svg .st-waiting{fill:#c9d3dd}
.jray-views svg .st-ready{fill:#9ecae1}.jray-views svg .st-running{fill:#f0b429}
.jray-views svg .st-blocked{fill:#e0c068}.jray-views svg .st-finished{fill:#4caf50}
.jray-views svg .st-failed{fill:#e53935}.jray-views svg .st-cancelled{fill:#9e9e9e}
.jray-views svg .st-reconstructing{fill:#ab47bc}
.jray-views svg .jv-e{stroke:#999;stroke-width:1;fill:none}
.jray-views svg .jv-g{fill:#6a8caf;fill-opacity:.06;stroke:#6a8caf;stroke-opacity:.3}
.jray-views svg .jv-gl{fill:#456;font-size:10px}
.jray-views svg .jv-fold{fill:#fff;stroke:#456;stroke-dasharray:3 2}
.jray-views .jv-detail{white-space:pre-wrap;font-family:var(--jp-code-font-family,monospace);background:#f7f7f7;padding:4px;max-height:200px;overflow:auto}
.jray-views table{border-collapse:collapse;width:100%}
.jray-views table[data-jv=tasks]{table-layout:fixed}
.jray-views table[data-jv=tasks] td{overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.jray-views td,.jray-views th{text-align:left;padding:1px 6px;border-bottom:1px solid #eee}
.jray-views .jv-bar{height:8px;background:#eee;position:relative;min-width:120px}
.jray-views .jv-bar>span{position:absolute;left:0;top:0;bottom:0;background:#4a90d9}
.jray-views .jv-tl{position:relative;height:10px;background:#f3f3f3;margin:1px 0}
.jray-views .jv-tl>span{position:absolute;top:0;bottom:0;min-width:1px}
.jray-views .jv-tables{display:flex;gap:16px;flex-wrap:wrap}
.jray-views .jv-tables>div{flex:1 1 300px;max-height:240px;overflow:auto;contain:content}
.jray-views .jv-note{color:#666;font-size:11px}
`;

export function createViews(root, opts = {}) {
  const onSelect = opts.onSelect || (() => {});
  const request = opts.request || (() => {});
  root.classList.add("jray-views");
  if (!document.getElementById("jray-views-css")) {
    const style = el("style", { id: "jray-views-css" });
    style.textContent = CSS;
    document.head.appendChild(style);
  }
  const top = el("div", { class: "jv-top" });
  const graphBox = el("div", { class: "jv-graph" });
  const g = svg("svg", { class: "jv-svg", width: 200, height: 60 });
  const groupLayer = svg("g"), edgeLayer = svg("g"), foldLayer = svg("g"), nodeLayer = svg("g");
  g.append(groupLayer, edgeLayer, foldLayer, nodeLayer);
  graphBox.appendChild(g);
  const detail = el("div", { class: "jv-detail", "data-jv": "detail" }, "Click a task for details.");
  const tables = el("div", { class: "jv-tables" });
  const taskBox = el("div");
  const filter = el("input", { type: "search", placeholder: "filter tasks", "aria-label": "filter tasks" });
  const taskTable = el("table", { "data-jv": "tasks" });
  taskTable.innerHTML = "<colgroup><col style='width:46%'><col style='width:18%'><col style='width:18%'>" +
    "<col style='width:18%'></colgroup><thead><tr><th>task</th><th>state</th><th>node</th><th>duration</th></tr></thead>";
  const taskBody = el("tbody");
  taskTable.appendChild(taskBody);
  const taskNote = el("div", { class: "jv-note", "data-jv": "tasks-note" });
  taskBox.append(filter, taskNote, taskTable);
  const storeBox = el("div", { "data-jv": "store" });
  const tlBox = el("div", { "data-jv": "timeline" });
  tables.append(taskBox, storeBox, tlBox);
  root.append(top, graphBox, detail, tables);

  const tasks = new Map();      // id -> record
  const nodes = new Map();      // id -> circle
  const rows = new Map();       // id -> <tr>
  const groups = new Map();     // group -> {rect, label, x0, y0, x1, y1}
  const tracebacks = new Map();
  const edgesOf = new Map();    // id -> the edge paths that touch it (removal without a query)
  // the newest group of each layer, filled up to CHUNK, then a new one
  const chunks = new Map([[nodeLayer, { g: null, n: 0 }], [edgeLayer, { g: null, n: 0 }]]);
  function put(layer, child) {
    const c = chunks.get(layer);
    if (!c.g || c.n >= CHUNK) {
      c.g = svg("g");
      c.n = 0;
      layer.appendChild(c.g);
    }
    c.g.appendChild(child);
    c.n++;
  }
  function drop(child) {
    const parent = child.parentNode;
    child.remove();
    if (parent && !parent.firstChild && parent.parentNode) {
      for (const c of chunks.values()) if (c.g === parent) c.g = null;
      parent.remove();
    }
  }
  let selected = null, maxX = 0, maxY = 0;
  const renderTimes = [];       // ms per update: the DOM changes, then style and layout
  const applyTimes = [];        // ms per update: the DOM changes alone

  let sizedX = -1, sizedY = -1;
  function resize() {
    // grow in steps (columns by 4, rows by a quarter more): resizing the svg lays out
    // every node in it again, so it happens every few updates, not on each one
    if (maxX > sizedX) {
      sizedX = maxX + 4;
      g.setAttribute("width", String(PAD * 2 + (sizedX + 1) * COL));
    }
    if (maxY > sizedY) {
      sizedY = Math.ceil((maxY + 8) * 1.25);
      g.setAttribute("height", String(PAD * 2 + (sizedY + 1) * ROW));
    }
  }
  const px = (x) => PAD + x * COL, py = (y) => PAD + y * ROW;

  const grown = new Set();       // groups whose box changed in this update
  function growGroup(t) {
    let gr = groups.get(t.group);
    if (!gr) {
      gr = { rect: svg("rect", { class: "jv-g", rx: 6 }), label: svg("text", { class: "jv-gl" }),
        x0: t.x, y0: t.y, x1: t.x, y1: t.y };
      gr.label.textContent = t.group;
      groupLayer.append(gr.rect, gr.label);
      groups.set(t.group, gr);
    } else if (t.x >= gr.x0 && t.x <= gr.x1 && t.y >= gr.y0 && t.y <= gr.y1) {
      return;
    }
    gr.x0 = Math.min(gr.x0, t.x); gr.y0 = Math.min(gr.y0, t.y);
    gr.x1 = Math.max(gr.x1, t.x); gr.y1 = Math.max(gr.y1, t.y);
    grown.add(gr);
  }

  function drawGroup(gr) {
    const x = px(gr.x0) - 14, y = py(gr.y0) - 20;
    gr.rect.setAttribute("x", x); gr.rect.setAttribute("y", y);
    gr.rect.setAttribute("width", px(gr.x1) - px(gr.x0) + 28);
    gr.rect.setAttribute("height", py(gr.y1) - py(gr.y0) + 32);
    gr.label.setAttribute("x", x + 3); gr.label.setAttribute("y", y + 9);
  }

  function addTask(t) {
    tasks.set(t.id, t);
    maxX = Math.max(maxX, t.x); maxY = Math.max(maxY, t.y);
    growGroup(t);
    for (const src of t.inputs) {
      const s = tasks.get(src);
      if (!s) continue;
      const line = svg("path", { class: "jv-e", "data-from": src, "data-to": t.id,
        d: `M${px(s.x) + R},${py(s.y)} C${px(s.x) + COL / 2},${py(s.y)} ${px(t.x) - COL / 2},${py(t.y)} ${px(t.x) - R},${py(t.y)}` });
      put(edgeLayer, line);
      for (const end of [src, t.id]) {
        const list = edgesOf.get(end);
        if (list) list.push(line); else edgesOf.set(end, [line]);
      }
    }
    const c = svg("circle", { class: `jv-t st-${t.state}`, cx: px(t.x), cy: py(t.y), r: R,
      "data-task-id": t.id, "data-state": t.state, tabindex: 0 });
    const title = svg("title");
    title.textContent = `${t.label} (${t.state})`;
    c.appendChild(title);
    put(nodeLayer, c);
    nodes.set(t.id, c);
  }

  function makeRow(t) {
    const tr = el("tr", { "data-task-id": t.id });
    tr.append(el("td", {}, t.group), el("td", {}, t.state), el("td", {}, t.node ? t.node.slice(0, 8) : ""),
      el("td", {}, fmtDur(t)));
    rows.set(t.id, tr);
    return tr;
  }

  const matches = (t, q) => !q || `${t.group} ${t.label} ${t.state}`.toLowerCase().includes(q);

  // rows for tasks just added (oldest first): the newest matching go on top, and the
  // table keeps TABLE_ROWS rows
  function addRows(added) {
    const q = filter.value.trim().toLowerCase();
    const frag = document.createDocumentFragment();
    let n = 0;
    for (let i = added.length - 1; i >= 0 && n < TABLE_ROWS; i--) {
      if (matches(added[i], q)) { frag.appendChild(makeRow(added[i])); n++; }
    }
    taskBody.prepend(frag);
    while (rows.size > TABLE_ROWS) {
      const last = taskBody.lastElementChild;
      rows.delete(last.getAttribute("data-task-id"));
      last.remove();
    }
  }

  function refilter() {
    rows.clear();
    taskBody.replaceChildren();
    addRows([...tasks.values()]);
    noteRows();
  }

  function noteRows() {
    const q = filter.value.trim();
    taskNote.textContent = rows.size >= TABLE_ROWS
      ? `the newest ${rows.size} of ${tasks.size} tasks${q ? " that match" : ""} (filter to find others)`
      : "";
  }

  function updateTask(t) {
    const c = nodes.get(t.id);
    if (c) {
      c.setAttribute("class", `jv-t st-${t.state}${selected === t.id ? " jv-sel" : ""}`);
      c.setAttribute("data-state", t.state);
      c.firstChild.textContent = `${t.label} (${t.state})`;
    }
    const tr = rows.get(t.id);
    if (tr) {
      tr.children[1].textContent = t.state;
      tr.children[2].textContent = t.node ? t.node.slice(0, 8) : "";
      tr.children[3].textContent = fmtDur(t);
    }
    if (selected === t.id) showDetail(t);
  }

  function removeTask(id) {
    tasks.delete(id);
    const c = nodes.get(id);
    if (c) drop(c);
    nodes.delete(id);
    rows.get(id)?.remove(); rows.delete(id);
    for (const e of edgesOf.get(id) || []) drop(e);
    edgesOf.delete(id);
  }

  filter.addEventListener("input", refilter);
  // one listener per layer, not one per task
  const clicked = (ev) => {
    const hit = ev.target.closest("[data-task-id]");
    if (hit) select(hit.getAttribute("data-task-id"));
  };
  nodeLayer.addEventListener("click", clicked);
  taskBody.addEventListener("click", clicked);
  tlBox.addEventListener("click", clicked);

  function showDetail(t) {
    const when = (v) => (v == null ? "–" : new Date(v * 1000).toLocaleTimeString());
    const lines = [`${t.label}  [${t.state}]`, `group: ${t.group}`,
      t.cell ? `cell: In [${t.cell[1]}] (id ${t.cell[0]})` : "cell: –",
      `submitted ${when(t.submit)}, started ${when(t.start)}, ended ${when(t.end)} (${fmtDur(t) || "–"})`,
      `node ${t.node || "–"}, worker pid ${t.pid ?? "–"}`, `task ${t.id}`];
    if (t.state === "failed" || t.state === "cancelled") {
      const tb = tracebacks.get(t.id);
      lines.push("", tb ?? "(fetching the remote traceback…)");
      if (tb == null) request({ type: "traceback", id: t.id });
    }
    detail.textContent = lines.join("\n");
  }

  function select(id) {
    if (selected && nodes.get(selected)) nodes.get(selected).classList.remove("jv-sel");
    selected = id;
    const t = tasks.get(id);
    if (!t) return;
    nodes.get(id)?.classList.add("jv-sel");
    showDetail(t);
    onSelect(t);
  }

  function drawFolded(folded) {
    foldLayer.replaceChildren();
    for (const f of folded) {
      const r = svg("rect", { class: "jv-fold", x: px(f.x) - 12, y: py(f.y) - 9, width: 24, height: 18,
        rx: 4, "data-folded": f.group });
      const title = svg("title");
      title.textContent = `${f.group}: ${f.count} older finished tasks folded (${f.failed} not ok)`;
      r.appendChild(title);
      const tx = svg("text", { x: px(f.x) - 9, y: py(f.y) + 4, class: "jv-gl" });
      tx.textContent = String(f.count);
      foldLayer.append(r, tx);
    }
  }

  // each part of the summary is rebuilt only when what it shows changed
  const drawn = { top: "", store: "", objects: "", timeline: "" };
  function changed(part, value) {
    const key = JSON.stringify(value);
    if (drawn[part] === key) return false;
    drawn[part] = key;
    return true;
  }

  function drawSummary(m) {
    if (changed("top", [m.counts, m.object_count, m.object_bytes, m.left_out])) drawTop(m);
    if (changed("store", [m.store, m.objects])) drawStore(m);
    if (changed("timeline", m.timeline)) drawTimeline(m);
  }

  function drawTop(m) {
    top.replaceChildren(el("b", {}, "jray"));
    for (const s of STATES) {
      if (m.counts[s]) top.appendChild(el("span", { class: `jv-chip`, "data-count": s }, `${s} ${m.counts[s]}`));
    }
    top.appendChild(el("span", { class: "jv-chip" }, `${m.object_count} objects, ${fmtBytes(m.object_bytes)}`));
    if (m.left_out) top.appendChild(el("span", { class: "jv-chip" }, `${m.left_out} older tasks not shown`));
  }

  function drawStore(m) {
    const st = [el("b", {}, "object store")];
    const t = el("table");
    for (const [node, s] of Object.entries(m.store || {})) {
      const bar = el("div", { class: "jv-bar" });
      const fill = el("span");
      fill.style.width = `${s.capacity ? Math.min(100, (100 * s.used) / s.capacity) : 0}%`;
      bar.appendChild(fill);
      const tr = el("tr");
      const td = el("td"); td.appendChild(bar);
      tr.append(el("td", {}, node.slice(0, 8)), td,
        el("td", {}, `${fmtBytes(s.used)} / ${fmtBytes(s.capacity)}, spilled ${fmtBytes(s.spilled_bytes)}`));
      t.appendChild(tr);
    }
    st.push(t);
    const big = el("table", { "data-jv": "objects" });
    big.innerHTML = "<thead><tr><th>largest objects</th><th>size</th><th>where</th><th>held by</th></tr></thead>";
    for (const o of m.objects || []) {
      const tr = el("tr", { "data-object-id": o.id, title: `object ${o.id}` });
      const maker = o.task && tasks.get(o.task);
      tr.append(el("td", {}, maker ? `${maker.label} → ${o.id.slice(16, 28)}` : `put ${o.id.slice(16, 28)}`), el("td", {}, fmtBytes(o.size)), el("td", {}, o.where),
        el("td", {}, (o.vars || []).join(", ")));
      big.appendChild(tr);
    }
    st.push(big);
    storeBox.replaceChildren(...st);
  }

  function drawTimeline(m) {
    // timelines: the last tasks of each worker, over the span they cover
    const tl = [el("b", {}, "workers (recent tasks)")];
    const lines = Object.entries(m.timeline || {});
    let t0 = Infinity, t1 = -Infinity;
    for (const [, items] of lines) for (const it of items) { t0 = Math.min(t0, it[2] ?? Infinity); t1 = Math.max(t1, it[3] ?? -Infinity); }
    const span = Math.max(1e-3, t1 - t0);
    for (const [pid, items] of lines) {
      const row = el("div", { class: "jv-tl", title: `worker pid ${pid}`, "data-pid": pid });
      for (const [id, label, a, b, state] of items) {
        if (a == null || b == null) continue;
        const s = el("span", { class: `st-${state}`, title: `${label} (${state})`, "data-task-id": id });
        s.style.left = `${(100 * (a - t0)) / span}%`;
        s.style.width = `${(100 * (b - a)) / span}%`;
        s.style.background = state === "finished" ? "#4caf50" : "#e53935";
        row.appendChild(s);
      }
      tl.push(el("div", {}, `pid ${pid}`), row);
    }
    tlBox.replaceChildren(...tl);
  }

  function clear() {
    tasks.clear(); nodes.clear(); rows.clear(); groups.clear(); edgesOf.clear();
    groupLayer.replaceChildren(); edgeLayer.replaceChildren(); nodeLayer.replaceChildren();
    for (const k of Object.keys(drawn)) drawn[k] = "";
    taskBody.replaceChildren(); grown.clear(); maxX = 0; maxY = 0; sizedX = -1; sizedY = -1;
    for (const c of chunks.values()) { c.g = null; c.n = 0; }
  }

  function apply(m) {
    const t0 = performance.now();
    if (m.type === "traceback") {
      tracebacks.set(m.id, m.text);
      const t = tasks.get(m.id);
      if (t && selected === m.id) showDetail(t);
      return;
    }
    if (m.type === "full") {
      clear();
      for (const t of m.tasks) addTask(t);
      addRows(m.tasks);
    } else if (m.type === "patch") {
      for (const id of m.removed) removeTask(id);
      for (const t of m.new) addTask(t);
      addRows(m.new);
      for (const [id, state, pid, node, start, end] of m.changed) {
        const t = tasks.get(id);
        if (!t) continue;
        Object.assign(t, { state, pid, node, start, end });
        updateTask(t);
      }
    } else {
      return;
    }
    for (const gr of grown) drawGroup(gr);
    grown.clear();
    noteRows();
    for (const [id, text] of Object.entries(m.tracebacks || {})) tracebacks.set(id, text);
    drawFolded(m.folded || []);
    drawSummary(m);
    resize();
    const t1 = performance.now();
    void root.offsetHeight;  // style and layout now, inside the measured time (as before a paint)
    const t2 = performance.now();
    applyTimes.push(t1 - t0);
    renderTimes.push(t2 - t0);
    if (renderTimes.length > 10000) { renderTimes.shift(); applyTimes.shift(); }
  }

  return { apply, select, renderTimes, applyTimes, tasks, destroy() { root.replaceChildren(); } };
}

// anywidget entry point: the kernel sends `full` / `patch` / `traceback` messages.
function render({ model, el: host }) {
  host.style.setProperty("--jv-graph-h", `${model.get("height") || 360}px`);
  const views = createViews(host, {
    request: (msg) => model.send(msg),
    onSelect: (t) => model.send({ type: "selected", id: t.id }),
  });
  globalThis.__jrayViews = globalThis.__jrayViews || [];
  globalThis.__jrayViews.push(views);
  const onMsg = (msg) => views.apply(msg);
  model.on("msg:custom", onMsg);
  model.send({ type: "hello" });
  return () => { model.off("msg:custom", onMsg); views.destroy(); };
}

export default { render };
