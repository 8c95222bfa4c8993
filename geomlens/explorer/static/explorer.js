// geomlens explorer: positions x layers grid of per-layer lenses (anywidget ES module).
// Reads the gzip payload written by geomlens/explorer/payload.py. No external resources.

const MEASURE_LABELS = {
  rank_final: "rank of final top-1", rank_next: "rank of next token",
  "ndcg@10": "NDCG@10 vs final p", jsd: "JSD vs final p", step_norm: "step norm",
  attn_share: "attention share",
};

function toBytes(x) {
  if (x instanceof Uint8Array) return x;
  if (x instanceof DataView) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (x && x.buffer instanceof ArrayBuffer) return new Uint8Array(x.buffer, x.byteOffset || 0, x.byteLength);
  return new Uint8Array(0);
}

function f16(u) {
  const s = u & 0x8000 ? -1 : 1, e = (u >> 10) & 0x1f, f = u & 0x3ff;
  if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + f / 1024);
}

const TYPED = { uint16: Uint16Array, int32: Int32Array, float32: Float32Array, float16: Uint16Array };

async function decodePayload(raw) {
  const bytes = toBytes(raw);
  if (!bytes.length) return null;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const buf = await new Response(stream).arrayBuffer();
  const n = new DataView(buf).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const start = 4 + n + ((8 - ((4 + n) % 8)) % 8);
  for (const seq of header.seqs) {
    seq.a = {};
    for (const [name, [dt, off, shape]] of Object.entries(seq.arrays)) {
      const count = shape.reduce((x, y) => x * y, 1);
      const arr = new TYPED[dt](buf.slice(start + off, start + off + count * TYPED[dt].BYTES_PER_ELEMENT));
      seq.a[name] = { data: arr, shape, f16: dt === "float16" };
    }
  }
  return header;
}

function at(arr, ...idx) {
  let flat = 0;
  for (let i = 0; i < idx.length; i++) flat = flat * arr.shape[i] + idx[i];
  const v = arr.data[flat];
  return arr.f16 ? f16(v) : v;
}

function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") el.textContent = v;
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v);
  }
  for (const c of [].concat(children)) if (c) el.appendChild(c);
  return el;
}

function showToken(t) {
  return JSON.stringify(t).slice(1, -1).replace(/ /g, "\u2423");
}

// measure value -> [0, 1], 1 = strong agreement / large
function unit(measure, v, scale) {
  if (v === undefined || Number.isNaN(v) || v < 0 && measure.startsWith("rank")) return null;
  if (measure.startsWith("rank")) return 1 - Math.log1p(v) / Math.log1p(scale.vocab);
  if (measure === "ndcg@10") return Math.max(0, Math.min(1, v));
  if (measure === "jsd") return 1 - Math.min(1, v / Math.LN2);
  if (measure === "step_norm") return scale.maxStep > 0 ? v / scale.maxStep : 0;
  return Math.max(0, Math.min(1, v));
}

function colour(t) {
  if (t === null) return "#eeeeee";
  const c0 = [247, 251, 255], c1 = [8, 69, 148];
  const c = c0.map((a, i) => Math.round(a + (c1[i] - a) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function diverging(d) {
  if (d === null || Number.isNaN(d)) return "#eeeeee";
  const t = Math.max(-1, Math.min(1, d));
  const c = t > 0 ? [33, 102, 172] : [178, 24, 43];
  const a = Math.abs(t);
  const m = [255, 255, 255].map((w, i) => Math.round(w + (c[i] - w) * a));
  return `rgb(${m[0]},${m[1]},${m[2]})`;
}

function measureValue(seq, measure, r, p, l) {
  const a = seq.a;
  if (measure === "rank_final") return at(a.rank_final, r, p, l);
  if (measure === "rank_next") return at(a.rank_next, r, p, l);
  if (measure === "ndcg@10") return at(a.ndcg, r, p, l);
  if (measure === "jsd") return at(a.jsd, r, p, l);
  if (measure === "step_norm") return at(a.step_norm, r, p);
  return at(a.attn_share, r, p);
}

function scaleOf(data, seq) {
  let maxStep = 0;
  for (const v of seq.a.step_norm.data) if (v > maxStep) maxStep = v;
  return { vocab: Math.max(2, data.vocab_size || 50000), maxStep };
}

function renderGrid(data, s, st, opts) {
  const seq = data.seqs[s];
  const l = data.lenses.indexOf(st.lens);
  const table = h("table", { class: "gl-grid", role: "grid", "data-grid": opts.name,
                             "aria-label": `${opts.name} grid, lens ${st.lens}` });
  const head = h("tr", {}, [h("th", { text: "layer \\ pos" })]);
  seq.tokens.forEach((t, p) => head.appendChild(
    h("th", { class: "gl-input", "data-pos": p, title: `pos ${p}`, text: showToken(data.vocab[t]) })));
  table.appendChild(head);
  if (l < 0) return table;
  const scale = scaleOf(data, seq);
  for (let r = seq.rows.length - 1; r >= 0; r--) {
    const [layer, kind] = seq.rows[r];
    const tr = h("tr", {}, [h("th", { class: "gl-rowhead", text: `${layer} ${kind}` })]);
    for (let p = 0; p < seq.tokens.length; p++) {
      const id = at(seq.a.top_ids, r, p, l, 0);
      const token = data.vocab[id];
      const v = measureValue(seq, st.measure, r, p, l);
      let bg = colour(unit(st.measure, v, scale)), diff = false;
      if (opts.base) {
        const b = opts.base, bl = b.data.lenses.indexOf(st.lens);
        const bid = at(b.data.seqs[s].a.top_ids, r, p, bl, 0);
        diff = b.data.vocab_ids[bid] !== data.vocab_ids[id];
        if (opts.name === "difference") {
          const bv = measureValue(b.data.seqs[s], st.measure, r, p, bl);
          bg = diverging((unit(st.measure, v, scale) ?? 0) - (unit(st.measure, bv, scale) ?? 0));
        }
      }
      const td = h("td", {
        class: "gl-cell" + (diff ? " gl-diff" : ""), "data-layer": layer, "data-hook": kind,
        "data-row": r, "data-pos": p, "data-lens": st.lens, "data-token": token,
        "data-token-id": data.vocab_ids[id], "data-measure": String(v), tabindex: "0",
        title: `layer ${layer} ${kind}, pos ${p}: ${showToken(token)} (${MEASURE_LABELS[st.measure]} ${fmt(v)})`,
        style: `background:${bg};color:${unit(st.measure, v, scale) > 0.6 && opts.name !== "difference" ? "#fff" : "#111"}`,
        text: showToken(token),
      });
      td.addEventListener("mouseenter", () => opts.onCell(r, p, false));
      td.addEventListener("click", () => opts.onCell(r, p, true));
      tr.appendChild(td);
    }
    table.appendChild(tr);
  }
  return table;
}

function fmt(v) {
  if (v === undefined || v === null || Number.isNaN(v)) return "n/a";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
}

function renderDetail(data, s, r, p, st, movers) {
  const seq = data.seqs[s];
  const [layer, kind] = seq.rows[r];
  const box = h("div", { class: "gl-detail", "data-layer": layer, "data-hook": kind, "data-pos": p });
  const input = showToken(data.vocab[seq.tokens[p]]);
  const fin = showToken(data.vocab[seq.final_top1[p]]);
  box.appendChild(h("div", { class: "gl-detail-title",
    text: `layer ${layer} ${kind}, pos ${p} (input ${input}; final top-1 ${fin})` }));
  const cols = h("div", { class: "gl-lenses" });
  data.lenses.forEach((lens, l) => {
    const valueName = lens === "logit" ? "prob" : "distance";
    const t = h("table", { class: "gl-topk", "data-lens": lens }, [
      h("caption", { text: lens === "distance_raw" ? `${lens} (nearest W_E rows)` : lens }),
      h("tr", {}, [h("th", { text: "#" }), h("th", { text: "token" }), h("th", { text: valueName })]),
    ]);
    for (let k = 0; k < seq.a.top_ids.shape[3]; k++) {
      const id = at(seq.a.top_ids, r, p, l, k);
      t.appendChild(h("tr", {}, [
        h("td", { text: String(k) }),
        h("td", { class: "gl-detail-token", "data-token": data.vocab[id], "data-token-id": data.vocab_ids[id],
                  "data-rank": k, text: showToken(data.vocab[id]) }),
        h("td", { text: fmt(at(seq.a.top_values, r, p, l, k)) }),
      ]));
    }
    const rn = at(seq.a.rank_next, r, p, l);
    t.appendChild(h("tr", { class: "gl-stats" }, [h("td", {
      colspan: "3", text: `rank final top-1 ${at(seq.a.rank_final, r, p, l)}, next ${rn < 0 ? "n/a" : rn}; ` +
        `NDCG@10 ${fmt(at(seq.a.ndcg, r, p, l))}, JSD ${fmt(at(seq.a.jsd, r, p, l))}` })]));
    cols.appendChild(t);
  });
  box.appendChild(cols);
  box.appendChild(h("div", { class: "gl-move",
    text: `step norm ${fmt(at(seq.a.step_norm, r, p))}, attention share ${fmt(at(seq.a.attn_share, r, p))}, ` +
          `MLP share ${fmt(1 - at(seq.a.attn_share, r, p))} (block ${layer})` }));
  box.appendChild(renderMovers(movers, fin));
  return box;
}

function renderMovers(movers, fin) {
  const box = h("div", { class: "gl-movers" });
  if (!movers) return h("div", { class: "gl-movers", text: interactiveView ? "movers: click the cell (the kernel computes them)" : "movers: precomputed for the last position; open the view in a notebook for the others" });
  if (movers === "pending") return h("div", { class: "gl-movers", text: "movers: computing..." });
  if (movers.error) return h("div", { class: "gl-movers", text: `movers: ${movers.error}` });
  box.appendChild(h("div", { text: `heads and neurons that pushed h most toward ${fin}:` }));
  const t = h("table", { class: "gl-movers-table" }, [h("tr", {}, ["part", "push", "step share", "projected top tokens"]
    .map((x) => h("th", { text: x })))]);
  for (const m of movers.rows) {
    const name = m.component === "attn" ? `head ${m.head}` : `neuron ${m.neuron}`;
    t.appendChild(h("tr", {}, [h("td", { text: name }), h("td", { text: fmt(m.push) }),
      h("td", { text: fmt(m.step_share) }), h("td", { text: m.top_tokens.map(showToken).join(" ") })]));
  }
  box.appendChild(t);
  return box;
}

function renderPath(data, s, p) {
  const path = data.extra[s].paths[p];
  const W = 320, H = 240, pad = 24;
  const all = path.points.concat(path.near_points);
  const xs = all.map((q) => q[0]), ys = all.map((q) => q[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "gl-path");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `trajectory of position ${p}`);
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    svg.appendChild(e);
  };
  path.near_points.forEach((q, i) => {
    el("circle", { cx: sx(q[0]), cy: sy(q[1]), r: 2.5, class: "gl-near" });
    el("text", { x: sx(q[0]) + 3, y: sy(q[1]) - 3, class: "gl-near-label" }, showToken(data.vocab[path.near[i]]));
  });
  el("polyline", { points: path.points.map((q) => `${sx(q[0])},${sy(q[1])}`).join(" "), class: "gl-line" });
  path.points.forEach((q, i) => el("circle", { cx: sx(q[0]), cy: sy(q[1]), r: 3, class: "gl-point",
                                                "data-step": i }, null));
  el("text", { x: 4, y: 12, class: "gl-path-title" },
     `pos ${p}: h^0..h^${path.points.length - 1}, PCA plane keeps ${(100 * path.explained).toFixed(0)}% of variance`);
  return svg;
}

function select(options, value, onChange, label) {
  const s = h("select", { "aria-label": label, "data-control": label });
  for (const [v, t] of options) {
    const o = h("option", { value: v, text: t });
    if (String(v) === String(value)) o.selected = true;
    s.appendChild(o);
  }
  s.addEventListener("change", () => onChange(s.value));
  return s;
}

let interactiveView = false;

async function render({ model, el }) {
  const root = h("div", { class: "geomlens-explorer" });
  el.appendChild(root);
  let data = await decodePayload(model.get("payload"));
  let changed = await decodePayload(model.get("changed"));
  const interactive = typeof model.send === "function" && !model.standalone;
  interactiveView = interactive;
  const st = { seq: 0, lens: data.lenses[0], measure: "rank_final", sel: null, pinned: false,
               target: "mlp", method: "zero", layer: 0 };
  const movers = {};
  const draw = () => {
    root.innerHTML = "";
    const seq = data.seqs[st.seq];
    const bar = h("div", { class: "gl-controls" }, [
      h("span", { class: "gl-title", text: `${data.model}: ${seq.tokens.length} tokens x ${data.n_layers} layers` }),
      data.seqs.length > 1 ? select(data.seqs.map((_, i) => [i, `text ${i}`]), st.seq,
                                    (v) => { st.seq = +v; st.sel = null; draw(); }, "sequence") : null,
      h("label", { text: "lens " }), select(data.lenses.map((x) => [x, x]), st.lens, (v) => { st.lens = v; draw(); }, "lens"),
      h("label", { text: "colour " }), select(data.measures.map((x) => [x, MEASURE_LABELS[x]]), st.measure,
                                              (v) => { st.measure = v; draw(); }, "colour"),
    ]);
    if (interactive) bar.appendChild(interventionControls());
    root.appendChild(bar);
    if (model.get("status")) root.appendChild(h("div", { class: "gl-status", text: model.get("status") }));
    const onCell = (r, p, pin) => {
      if (st.pinned && !pin) return;
      st.sel = [r, p];
      st.pinned = pin ? true : st.pinned;
      if (pin && interactive) requestMovers(r, p);
      drawSide();
    };
    const grids = h("div", { class: "gl-grids" });
    grids.appendChild(h("div", { class: "gl-grid-wrap" }, [h("div", { class: "gl-grid-title", text: "original" }),
                                                            renderGrid(data, st.seq, st, { name: "original", onCell })]));
    if (changed && changed.lenses.includes(st.lens)) {
      const base = { data };
      grids.appendChild(h("div", { class: "gl-grid-wrap" }, [
        h("div", { class: "gl-grid-title", text: `changed: ${changed.label} (outlined: top-1 differs)` }),
        renderGrid(changed, st.seq, st, { name: "changed", onCell: () => {}, base })]));
      grids.appendChild(h("div", { class: "gl-grid-wrap" }, [
        h("div", { class: "gl-grid-title", text: "difference of the colour measure (blue: changed agrees more)" }),
        renderGrid(changed, st.seq, st, { name: "difference", onCell: () => {}, base })]));
    } else if (changed) {
      grids.appendChild(h("div", { class: "gl-status", text: `changed run (${changed.label}) has lens ${changed.lenses.join(", ")}` }));
    }
    root.appendChild(grids);
    const side = h("div", { class: "gl-side" });
    root.appendChild(side);
    const drawSide = () => {
      side.innerHTML = "";
      if (!st.sel) { side.appendChild(h("div", { class: "gl-hint", text: "hover a cell for its detail; click to pin it" })); return; }
      const [r, p] = st.sel;
      const layer = data.seqs[st.seq].rows[r][0];
      const key = `${p}:${layer}`;
      const mv = movers[`${st.seq}:${key}`] || (data.extra[st.seq].movers || {})[key];
      side.appendChild(renderDetail(data, st.seq, r, p, st, mv));
      side.appendChild(renderPath(data, st.seq, p));
    };
    st.drawSide = drawSide;
    drawSide();
  };
  const requestMovers = (r, p) => {
    const layer = data.seqs[st.seq].rows[r][0];
    const key = `${st.seq}:${p}:${layer}`;
    if (movers[key] || (data.extra[st.seq].movers || {})[`${p}:${layer}`]) return;
    movers[key] = "pending";
    model.send({ type: "movers", seq: st.seq, layer, pos: p });
  };
  const interventionControls = () => {
    const layers = Array.from({ length: data.n_layers }, (_, i) => [i, `block ${i}`]);
    const go = h("button", { text: "apply", "data-control": "apply" });
    go.addEventListener("click", () => {
      model.set("status", "recomputing...");
      model.save_changes && model.save_changes();
      model.send({ type: "intervene", target: st.target, layer: st.layer, method: st.method, lens: st.lens });
    });
    const reset = h("button", { text: "reset", "data-control": "reset" });
    reset.addEventListener("click", () => model.send({ type: "reset" }));
    return h("span", { class: "gl-intervene" }, [
      h("label", { text: " change " }),
      select([["attn", "attention"], ["mlp", "MLP"], ["kv_first", "layer-0 K/V from"]], st.target, (v) => { st.target = v; }, "target"),
      select(layers, st.layer, (v) => { st.layer = +v; }, "layer"),
      select([["zero", "zero"], ["mean", "mean"]], st.method, (v) => { st.method = v; }, "method"),
      go, reset,
    ]);
  };
  model.on("change:changed", async () => { changed = await decodePayload(model.get("changed")); draw(); });
  model.on("change:status", () => draw());
  model.on("msg:custom", (msg) => {
    if (msg.type === "movers") {
      movers[`${msg.seq}:${msg.pos}:${msg.layer}`] = msg.data;
      if (st.drawSide) st.drawSide();
    }
  });
  draw();
  return () => { root.remove(); };
}

export default { render };
