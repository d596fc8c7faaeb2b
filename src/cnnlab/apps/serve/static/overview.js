// The network at a glance: every layer's maps for the current image, left to right, and one value worked out.
// Uses app.js's helpers ($, el, api, state, invertParam); app.js calls showOverview() after each classification.
"use strict";

const ov = {
  seq: 0, workSeq: 0,
  reply: null,         // the latest /api/layers reply
  layers: new Map(),   // name -> layer entry (with every map fetched so far)
  expanded: new Set(), // blocks shown layer by layer (large models start with each block as its last layer)
  grouped: false,
  pick: null,          // {layer, channel, row, col}: the value being worked out
};
const THUMB = 60;        // px: every map is drawn this size, whatever its resolution (1x1 maps smaller)
const COLLAPSE_OVER = 24; // layers: more than this and each block starts folded into its output

function fmt(v, digits = 4) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return String(+v.toPrecision(digits));
}

function imageForm() {
  const form = new FormData();
  form.append("image", state.image, "image.png");
  return form;
}

// ---------------------------------------------------------------- fetching

async function showOverview() {
  if (!state.image || !state.model || !state.model.can_explain) return;
  const seq = ++ov.seq;
  const query = new URLSearchParams({ channels: $("ov-channels").value, invert: invertParam() });
  setStatus("ov-status", "");
  $("overview").setAttribute("aria-busy", "true");
  try {
    const reply = await api(`/api/layers?${query}`, { method: "POST", body: imageForm() });
    if (seq !== ov.seq) return;
    ov.reply = reply;
    ov.layers = new Map(reply.layers.map((l) => [l.name, l]));
    ov.grouped = reply.layers.length > COLLAPSE_OVER && reply.layers.some((l) => l.group);
    drawNetwork();
    $("ov-note").textContent = `${state.imageLabel}: ${reply.layers.length} layers with maps, the first ` +
      `${$("ov-channels").value} maps of each. Click a map to see how one of its values was computed.` +
      (reply.notes.length ? ` ${reply.notes.join(" ")}` : "");
    if (ov.pick && ov.layers.has(ov.pick.layer)) workOut(ov.pick);
    else hideDetail();
  } catch (err) {
    if (seq === ov.seq) setStatus("ov-status", `Could not draw the network: ${err.message}`);
  } finally {
    if (seq === ov.seq) $("overview").removeAttribute("aria-busy");
  }
}

function clearOverview() {
  ov.seq++;  // drop any reply still on its way
  ov.reply = null;
  $("ov-net").replaceChildren();
  hideDetail();
}

async function showAllMaps(name) {
  const layer = ov.layers.get(name);
  const query = new URLSearchParams({ layer: name, channels: String(layer.shape[0]), invert: invertParam() });
  try {
    const reply = await api(`/api/layers?${query}`, { method: "POST", body: imageForm() });
    ov.layers.set(name, reply.layers[0]);
    drawNetwork();
    const col = $("ov-net").querySelector(`[data-layer="${CSS.escape(name)}"]`);
    if (col) col.querySelector(".ov-map").focus();
  } catch (err) {
    setStatus("ov-status", `Could not fetch every map of ${name}: ${err.message}`);
  }
}

// ---------------------------------------------------------------- drawing the network

// One map of a layer: a crop of the layer's sprite (one PNG of all its maps), `size` px on its longer side.
function mapCrop(layer, k, size, alt) {
  const s = layer.sprite;
  const scale = size / Math.max(s.height, s.width);
  const w = s.width * scale, h = s.height * scale;
  const img = el("img", { src: s.image, alt });
  Object.assign(img.style, { width: `${s.columns * w}px`, left: `${-(k % s.columns) * w}px`,
                             top: `${-Math.floor(k / s.columns) * h}px` });
  const box = el("span", { className: "crop" }, [img]);
  Object.assign(box.style, { width: `${w}px`, height: `${h}px` });
  return box;
}

function legend(layer) {
  const sc = layer.scale;
  const bar = el("span", { className: "bar" });
  bar.style.background = `linear-gradient(to right, ${sc.colours.join(", ")})`;
  const labels = [fmt(sc.low, 2), sc.low < 0 && sc.high > 0 ? "0" : "", fmt(sc.high, 2)];
  return el("div", { className: "legend", title: sc.about }, [
    bar, el("span", { className: "ends" }, labels.map((t) => el("span", { textContent: t }))),
  ]);
}

function describe(layer, m) {
  const [, h, w] = layer.shape;
  return `${layer.name} (${layer.type}), channel ${m.channel}${m.name ? ` (${m.name})` : ""}: ${h}x${w}, ` +
    `values ${fmt(m.min)} to ${fmt(m.max)}; the layer's scale runs from ${fmt(layer.scale.low)} to ` +
    `${fmt(layer.scale.high)}`;
}

function mapButton(layer, m) {
  const [, h, w] = layer.shape;
  const text = describe(layer, m);
  const button = el("button", { type: "button", className: "ov-map", title: text },
                    [mapCrop(layer, m.channel, h * w === 1 ? 22 : THUMB, text)]);
  button.dataset.layer = layer.name;
  button.dataset.channel = m.channel;
  const hover = () => { $("ov-hover").textContent = text; };
  button.addEventListener("mouseenter", hover);
  button.addEventListener("focus", hover);
  button.addEventListener("click", (e) => {
    const r = button.querySelector(".crop").getBoundingClientRect();
    const byMouse = e.detail > 0 && r.width > 0;
    const row = byMouse ? Math.floor((e.clientY - r.top) / r.height * h) : Math.floor(h / 2);
    const col = byMouse ? Math.floor((e.clientX - r.left) / r.width * w) : Math.floor(w / 2);
    workOut({ layer: layer.name, channel: m.channel, row: clamp(row, h), col: clamp(col, w) });
  });
  return button;
}

function clamp(v, n) { return Math.max(0, Math.min(n - 1, v)); }

function column(layer, { input = false } = {}) {
  const [c, h, w] = layer.shape;
  const short = layer.group && layer.name.startsWith(`${layer.group}.`) ? layer.name.slice(layer.group.length + 1)
    : layer.name;  // inside a block's box, the block's name is its header
  const head = el("div", { className: "ov-head", title: layer.name }, [
    el("strong", { textContent: short }),
    el("span", { textContent: input ? "normalized" : layer.type }),
    el("span", { textContent: `${c}x${h}x${w}` }),
  ]);
  const col = el("div", { className: `ov-col kind-${layer.kind || "input"}` }, [head]);
  col.dataset.layer = layer.name;
  if (input) {
    col.append(el("img", { src: layer.image, className: "ov-input pixelated",
                           alt: `the image as the model sees it, ${c}x${h}x${w}` }));
  }
  col.append(legend(layer));
  const maps = el("div", { className: "ov-maps" }, layer.maps.map((m) => input
    ? el("span", { className: "ov-map static", title: describe(layer, m) },
         [mapCrop(layer, m.channel, THUMB, describe(layer, m))])
    : mapButton(layer, m)));
  col.append(maps);
  if (!input && layer.maps.length < c) {
    col.append(el("button", { type: "button", className: "more", textContent: `show all ${c}`,
                              onclick: () => showAllMaps(layer.name) }));
  }
  return col;
}

function groupBox(name, layers) {
  const open = !ov.grouped || ov.expanded.has(name);
  const toggle = el("button", { type: "button", className: "group-toggle",
                                textContent: `${name} ${open ? "\u25BE" : "\u25B8"}` });
  toggle.setAttribute("aria-expanded", String(open));
  toggle.title = open ? "fold this block into its output" : `show its ${layers.length} layers`;
  toggle.addEventListener("click", () => {
    if (open) ov.expanded.delete(name); else ov.expanded.add(name);
    ov.grouped = true;
    drawNetwork();
    $("ov-net").querySelector(`[data-group="${CSS.escape(name)}"] .group-toggle`).focus();
  });
  const shown = open ? layers : layers.slice(-1);
  const box = el("div", { className: "ov-group" }, [toggle, el("div", { className: "ov-cols" },
                                                              shown.map((l) => column(l)))]);
  box.dataset.group = name;
  return box;
}

function outputColumn(head) {
  const best = Math.max(...head.classes.map((c) => c.probability));
  const rows = head.classes.map((c) => {
    const fill = el("span", { className: "fill" });
    fill.style.width = `${(100 * c.probability).toFixed(1)}%`;
    const b = el("button", { type: "button", className: "ov-class" }, [
      el("span", { className: "name", textContent: c.class }),
      el("span", { className: "logit", textContent: c.logit === null ? "" : fmt(c.logit, 3) }),
      el("span", { className: "track" }, [fill]),
      el("span", { className: "pct", textContent: pct(c.probability) }),
    ]);
    b.setAttribute("aria-label", `class ${c.class}: score ${fmt(c.logit)}, probability ${pct(c.probability)}; ` +
                                 "show how it was computed");
    b.dataset.index = c.index;
    if (c.probability === best) b.classList.add("top");
    b.disabled = !head.layer;
    // One logit (the evidence for class 1) explains both classes.
    const output = Math.min(c.index, head.outputs - 1);
    b.addEventListener("click", () => workOut({ layer: head.layer, channel: output, row: 0, col: 0 }));
    return b;
  });
  const path = head.after_maps.map((l) => `${l.name} (${l.shape.join("x")})`).join(" \u2192 ");
  return el("div", { className: "ov-col ov-out" }, [
    el("div", { className: "ov-head" }, [el("strong", { textContent: "output" }),
      el("span", { textContent: path || "scores" }), el("span", { textContent: "scores \u2192 softmax" })]),
    el("div", { className: "ov-class-head" }, ["class", "score", "probability", ""].map((t) =>
      el("span", { textContent: t }))),
    ...rows,
    el("p", { className: "hint", textContent: `${head.listed} classes; click one for its score, worked out` }),
  ]);
}

function drawNetwork() {
  const reply = ov.reply;
  const parts = [column(reply.input, { input: true })];
  let i = 0;
  const layers = reply.layers.map((l) => ov.layers.get(l.name) || l);
  while (i < layers.length) {
    const g = layers[i].group;
    let j = i;
    while (j < layers.length && layers[j].group === g) j++;
    if (g) parts.push(groupBox(g, layers.slice(i, j)));
    else parts.push(...layers.slice(i, j).map((l) => column(l)));
    i = j;
  }
  parts.push(outputColumn(reply.head));
  $("ov-net").replaceChildren(...parts);
  $("ov-net").dataset.layers = String(reply.layers.length);
  $("ov-expand").hidden = !reply.layers.some((l) => l.group);
  if (ov.pick) markPick();
}
