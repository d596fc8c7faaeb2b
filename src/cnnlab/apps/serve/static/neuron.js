// One value worked out, under the network overview: /api/neuron's numbers as tables, sums and formulas.
// Uses app.js's helpers and overview.js's state (ov, fmt, mapCrop, imageForm).
"use strict";

const BIG = 288;          // px: the chosen map, enlarged
const CHANNEL_TABLES = 3; // input channels drawn as patch/kernel/product tables; the others as their sums
const MAX_TABLES = 128;   // ... until asked for all of them, up to this many
const LISTED = 12;        // rows of a 1x1 conv's channel list

async function workOut(pick) {
  ov.pick = pick;
  const seq = ++ov.workSeq;
  showDetail(pick);
  const query = new URLSearchParams({ layer: pick.layer, channel: String(pick.channel), row: String(pick.row),
                                      col: String(pick.col), invert: invertParam() });
  try {
    const r = await api(`/api/neuron?${query}`, { method: "POST", body: imageForm() });
    if (seq !== ov.workSeq) return;
    $("ov-work").replaceChildren(...renderWorked(r));
    $("ov-work").dataset.kind = r.kind;
    $("ov-work").dataset.agrees = String(r.agrees);
    $("ov-work").dataset.layer = r.layer;
  } catch (err) {
    if (seq === ov.workSeq) {
      $("ov-work").replaceChildren(el("p", { className: "status", textContent: err.message }));
      delete $("ov-work").dataset.kind;
    }
  }
}

function hideDetail() {
  ov.pick = null;
  $("ov-detail").hidden = true;
}

// The chosen map enlarged, the chosen value marked; row and column inputs for the keyboard.
function showDetail(pick) {
  $("ov-detail").hidden = false;
  const layer = ov.layers.get(pick.layer);
  const view = $("ov-big");
  $("ov-map-panel").hidden = !layer;
  if (!layer) {  // the last linear layer: no map
    view.replaceChildren();
    markPick();
    return;
  }
  const [, h, w] = layer.shape;
  const width = Math.min(BIG, $("ov-detail").clientWidth - 24 || BIG);
  const k = layer.maps.findIndex((m) => m.channel === pick.channel);
  const crop = mapCrop(layer, k, width, `${layer.name} channel ${pick.channel}, enlarged: click a value`);
  crop.classList.add("clickable");
  const mark = el("span", { className: "marker" });
  const sx = parseFloat(crop.style.width) / w, sy = parseFloat(crop.style.height) / h;
  Object.assign(mark.style, { left: `${pick.col * sx}px`, top: `${pick.row * sy}px`,
                              width: `${Math.max(sx, 4)}px`, height: `${Math.max(sy, 4)}px` });
  crop.append(mark);
  crop.addEventListener("click", (e) => {
    const r = crop.getBoundingClientRect();
    workOut({ ...pick, row: clamp(Math.floor((e.clientY - r.top) / r.height * h), h),
              col: clamp(Math.floor((e.clientX - r.left) / r.width * w), w) });
  });
  view.replaceChildren(crop);
  $("ov-row").max = h - 1;
  $("ov-col").max = w - 1;
  $("ov-row").value = pick.row;
  $("ov-col").value = pick.col;
  $("ov-map-title").textContent = `${pick.layer}, channel ${pick.channel}: ${h}x${w}`;
  markPick();
}

function markPick() {
  for (const b of $("ov-net").querySelectorAll(".ov-map.picked")) b.classList.remove("picked");
  if (!ov.pick) return;
  const sel = `.ov-map[data-layer="${CSS.escape(ov.pick.layer)}"][data-channel="${ov.pick.channel}"]`;
  const b = $("ov-net").querySelector(sel);
  if (b) b.classList.add("picked");
}

function setupDetail() {
  const go = () => {
    if (!ov.pick) return;
    const layer = ov.layers.get(ov.pick.layer);
    const [, h, w] = layer.shape;
    workOut({ ...ov.pick, row: clamp(Number($("ov-row").value), h), col: clamp(Number($("ov-col").value), w) });
  };
  $("ov-go").addEventListener("click", go);
  for (const id of ["ov-row", "ov-col"]) {
    $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  }
  $("ov-channels").addEventListener("change", showOverview);
  $("ov-expand").addEventListener("click", () => {
    const all = ov.reply.layers.filter((l) => l.group).map((l) => l.group);
    const open = all.every((g) => ov.expanded.has(g));
    ov.expanded = open ? new Set() : new Set(all);
    ov.grouped = true;
    $("ov-expand").textContent = open ? "Show every layer of every block" : "Fold each block into its output";
    drawNetwork();
  });
}

// ---------------------------------------------------------------- the worked value, by kind

function grid(rows, cls = () => "") {
  return el("table", { className: "sum" }, rows.map((row, i) =>
    el("tr", {}, row.map((v, j) => el("td", { className: cls(i, j), textContent: v === null ? "pad" : fmt(v, 3) })))));
}

function labelled(title, node) {
  return el("div", { className: "sum-block" }, [el("h4", { textContent: title }), node]);
}

function checkLine(computed, r, what) {
  const ok = r.agrees;
  return el("p", { className: ok ? "ok" : "status" }, [
    `${what} = ${fmt(computed, 6)}; the forward pass gave ${fmt(r.value, 6)} `,
    el("strong", { textContent: ok ? "\u2713 the same" : "\u2717 they differ" }),
  ]);
}

function renderWorked(r, allChannels = false) {
  const title = el("h4", { textContent: r.kind === "dense"
    ? `${r.layer}, output ${r.channel}${r.class ? ` (class ${r.class})` : ""} = ${fmt(r.value, 6)}`
    : `${r.layer} (${r.type}), channel ${r.channel}, row ${r.row}, column ${r.col} = ${fmt(r.value, 6)}` });
  const body = { conv: renderConv, pool: renderPool, dense: renderDense }[r.kind];
  const parts = [title, ...(body ? body(r, allChannels) : [stepLine(r, true)])];
  if (r.chain && r.chain.length > 1) parts.push(renderChain(r));
  return parts;
}

function renderConv(r, allChannels) {
  const [c0, c1] = r.in_channels;
  const [kh, kw] = [r.kernel[0].length, r.kernel[0][0].length];
  const pads = r.pads;
  const padText = pads.top + pads.bottom + pads.left + pads.right
    ? `padded by ${pads.top} top, ${pads.bottom} bottom, ${pads.left} left, ${pads.right} right (${
      r.padding_mode === "zeros" ? "zeros" : r.padding_mode}, shaded)` : "not padded";
  const which = c1 - c0 === 1 ? `channel ${c0}` : `channels ${c0} to ${c1 - 1}`;
  const group = r.groups === 1 ? "" : c1 - c0 === 1
    ? " (a depthwise conv: each output channel reads one input channel)"
    : ` (group ${Math.floor(c0 / (c1 - c0))} of ${r.groups})`;
  const intro = el("p", { textContent:
    `The ${kh}x${kw} kernel of output channel ${r.channel} reads ${which} of ${r.input_from}${group}, ` +
    `${padText}, stride ${r.stride.join("x")}${r.dilation.some((d) => d > 1) ? `, dilation ${r.dilation.join("x")}` : ""}` +
    `; at (${r.row}, ${r.col}) its window starts at input row ${r.window.row0}, column ${r.window.col0}.` });
  const sums = r.products.map((ch) => ch.flat().reduce((a, b) => a + b, 0));
  const parts = [intro, sourceView(r)];
  if (kh * kw === 1) parts.push(pointwiseList(r, sums));
  else {
    const pad = (i, j) => (r.padding[i][j] ? "pad" : "");
    const tables = allChannels ? Math.min(sums.length, MAX_TABLES) : Math.min(CHANNEL_TABLES, sums.length);
    for (let k = 0; k < tables; k++) {
      parts.push(el("div", { className: "channel-work" }, [
        labelled(`input channel ${c0 + k}: patch`, grid(r.patch[k], pad)),
        labelled("\u00d7 kernel", grid(r.kernel[k])),
        labelled("= products", grid(r.products[k])),
        el("p", { className: "partial", textContent: `sum ${fmt(sums[k], 5)}` }),
      ]));
    }
    if (sums.length > tables) {
      parts.push(el("p", { textContent: `The other ${sums.length - tables} input channels, each its own ` +
        `sum of ${kh * kw} products: ` + sums.slice(tables).map((s, i) => `${c0 + tables + i}: ${fmt(s, 3)}`)
        .join(", ") }));
      parts.push(el("button", { type: "button", className: "more", textContent:
        `Show the patch, kernel and products of ${sums.length > MAX_TABLES ? `the first ${MAX_TABLES}` : "every"} ` +
        "input channel", onclick: () => $("ov-work").replaceChildren(...renderWorked(r, true)) }));
    }
  }
  const total = sums.reduce((a, b) => a + b, 0);
  parts.push(el("p", { className: "total", textContent: `sum of all ${sums.length * kh * kw} products ` +
    `${fmt(total, 6)} + bias ${fmt(r.bias, 6)}${r.has_bias ? "" : " (no bias)"} = ${fmt(r.sum, 6)}` }));
  parts.push(checkLine(r.sum, r, "sum"));
  return parts;
}

function pointwiseList(r, sums) {
  const order = sums.map((s, k) => k).sort((a, b) => Math.abs(sums[b]) - Math.abs(sums[a]));
  const top = order.slice(0, LISTED);
  const rest = order.slice(LISTED).reduce((a, k) => a + sums[k], 0);
  const rows = top.map((k) => el("tr", {}, [r.in_channels[0] + k, r.patch[k][0][0], r.kernel[k][0][0], sums[k]]
    .map((v, j) => el("td", { textContent: j ? fmt(v, 4) : String(v) }))));
  const table = el("table", { className: "sum" }, [
    el("tr", {}, ["input channel", "value", "\u00d7 weight", "= product"].map((t) => el("th", { textContent: t }))),
    ...rows]);
  const more = order.length > LISTED
    ? [el("p", { textContent: `\u2026 and ${order.length - LISTED} more channels, their products summing to ${fmt(rest, 5)}` })]
    : [];
  return el("div", {}, [el("p", { textContent: "A 1x1 kernel: one weight per input channel, largest products first." }),
                        table, ...more]);
}

// Where the window sits: the first input channel it reads, with the window boxed (when that map was fetched).
function sourceView(r) {
  const src = r.input_from === "input" ? ov.reply.input : ov.layers.get(r.input_from);
  const channel = r.kind === "pool" ? r.channel : r.in_channels[0];
  const k = src ? src.maps.findIndex((m) => m.channel === channel) : -1;
  if (k < 0) return el("span");
  const [, h, w] = src.shape;
  const size = 132;
  const crop = mapCrop(src, k, size, `${src.name} channel ${channel}, the window boxed`);
  const sx = parseFloat(crop.style.width) / w, sy = parseFloat(crop.style.height) / h;
  const [r0, c0, rows, cols] = r.kind === "pool"
    ? [r.rows[0], r.cols[0], r.rows[r.rows.length - 1] - r.rows[0] + 1, r.cols[r.cols.length - 1] - r.cols[0] + 1]
    : [r.window.row0, r.window.col0, r.dilation[0] * (r.kernel[0].length - 1) + 1,
       r.dilation[1] * (r.kernel[0][0].length - 1) + 1];
  const box = el("span", { className: "marker" });
  Object.assign(box.style, { left: `${c0 * sx}px`, top: `${r0 * sy}px`, width: `${cols * sx}px`,
                             height: `${rows * sy}px` });
  crop.append(box);
  return el("figure", { className: "source-view" }, [crop,
    el("figcaption", { textContent: `${src.name}, channel ${channel}: the window` })]);
}

function renderPool(r) {
  const kept = r.kept_index || [-1, -1];
  const cls = (i, j) => (r.window[i][j] === null ? "pad" : i === kept[0] && j === kept[1] ? "kept" : "");
  const what = r.op === "max"
    ? `the largest value of the ${r.rows.length}x${r.cols.length} window, at input row ${r.kept[0]}, column ${r.kept[1]}`
    : `the mean of the ${r.rows.length}x${r.cols.length} window: its sum divided by ${r.divisor}`;
  return [
    el("p", { textContent: `${r.type} keeps ${what} (rows ${r.rows[0]} to ${r.rows[r.rows.length - 1]}, columns ` +
      `${r.cols[0]} to ${r.cols[r.cols.length - 1]} of ${r.input_from}, channel ${r.channel}).` }),
    sourceView(r),
    labelled("window", grid(r.window, cls)),
    checkLine(r.result, r, r.op === "max" ? "max" : "mean"),
  ];
}

function stepLine(s, alone = false) {
  if (s.note) return el("p", { textContent: `${s.layer || ""}: ${s.note}; value ${fmt(s.value, 6)}` });
  const text = `${alone ? `${s.function}: ` : ""}${s.formula}, with x = ${fmt(s.input, 6)}` +
    (s.mean !== undefined ? ` (mean ${fmt(s.mean)}, var ${fmt(s.var)}, eps ${fmt(s.eps)}, weight ${fmt(s.weight)}, ` +
      `bias ${fmt(s.bias)})` : "") + ` = ${fmt(s.result, 6)}`;
  return alone ? el("div", {}, [el("p", { textContent: text }), checkLine(s.result, s, "result")])
    : el("span", { textContent: text });
}

function renderChain(r) {
  const items = r.chain.map((s) => el("li", { className: s.layer === r.layer ? "here" : "" }, [
    el("strong", { textContent: `${s.layer} (${s.type})` }), ": ",
    s.kind === "conv" || s.kind === "pool" ? `${fmt(s.value, 6)}` : stepLine(s),
    s.agrees === false ? " \u2717" : "",
  ]));
  return el("div", { className: "chain" }, [
    el("h4", { textContent: "At this position, layer after layer" }), el("ol", {}, items)]);
}

function renderDense(r) {
  const rows = r.contributions.map((c) => el("tr", {}, [
    c.position ? `${r.input_from} ch ${c.position[0]}${r.input_shape[1] * r.input_shape[2] > 1
      ? ` (${c.position[1]}, ${c.position[2]})` : ""}` : `${r.input_from || "input"} [${c.index}]`,
    fmt(c.input, 4), fmt(c.weight, 4), fmt(c.product, 4)].map((t) => el("td", { textContent: t }))));
  const table = el("table", { className: "sum" }, [
    el("tr", {}, ["input", "value", "\u00d7 weight", "= product"].map((t) => el("th", { textContent: t }))), ...rows]);
  const parts = [
    el("p", { textContent: `${r.type} ${r.layer}: output ${r.channel} = bias + the sum of its ${r.inputs} inputs ` +
      `(from ${r.input_from}) times their weights. The ${r.contributions.length} largest products:` }),
    table,
    el("p", { className: "total", textContent: `${fmt(r.others.sum, 5)} from the other ${r.others.count} inputs; ` +
      `+ bias ${fmt(r.bias, 5)} = ${fmt(r.sum, 6)}` }),
    checkLine(r.sum, r, "sum"),
  ];
  if (r.note) parts.push(el("p", { className: "hint", textContent: `Note: ${r.note}: class score ${fmt(r.logit, 6)}.` }));
  if (r.softmax) parts.push(renderSoftmax(r.softmax, r));
  return parts;
}

function renderSoftmax(s, r) {
  if (s.function !== "softmax") {
    return el("div", { className: "chain" }, [el("h4", { textContent: "Probability" }),
      el("p", { textContent: s.function === "sigmoid"
        ? `${s.formula}, with z = ${fmt(s.logit, 6)}: p(class 1) = ${fmt(s.result, 6)}, p(class 0) = ${fmt(s.class_0, 6)}`
        : s.note }),
      s.function === "sigmoid" ? checkLine(s.result, s, "p(class 1)") : el("span")]);
  }
  const rows = s.terms.map((t) => el("tr", { className: t.index === r.channel ? "here" : "" },
    [t.class, fmt(t.logit, 5), fmt(t.exp, 5), fmt(t.exp / s.exp_sum, 4)].map((v) => el("td", { textContent: v }))));
  return el("div", { className: "chain" }, [
    el("h4", { textContent: "Then the softmax: scores into probabilities" }),
    el("p", { textContent: `${s.formula}; max z = ${fmt(s.max, 5)}` }),
    el("table", { className: "sum" }, [el("tr", {}, ["class", "score z", "exp(z - max)", "probability"].map((t) =>
      el("th", { textContent: t }))), ...rows]),
    el("p", { className: "total", textContent: `sum of exp over all ${s.classes} classes = ${fmt(s.exp_sum, 6)}; ` +
      `p = ${fmt(s.exp, 6)} / ${fmt(s.exp_sum, 6)} = ${fmt(s.result, 6)}` }),
    checkLine(s.result, s, "probability"),
  ]);
}

document.addEventListener("DOMContentLoaded", setupDetail);
