// cnnlab web page: classify an upload or a drawing, look inside the network, play with convolution kernels.
// overview.js and neuron.js draw the whole network for the image and work out one of its values.
// Plain JavaScript, no build step, no network access beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  model: null,
  image: null,        // the Blob being classified (an upload or the cropped drawing)
  imageLabel: "",
  predictSeq: 0,      // each request gets a number; a reply older than the latest is dropped
  explainSeq: 0,
  convSeq: 0,
  convInputKey: "",   // what the playground's input image shows: re-sent only when it changes
  conv: null,         // the latest /api/convolve reply
  kernels: [],
};

// ---------------------------------------------------------------- helpers

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function pct(p) { return `${(100 * p).toFixed(1)}%`; }

function setStatus(id, text) { $(id).textContent = text || ""; }

// ---------------------------------------------------------------- the model

// A small test set's accuracy is uncertain: say how much (the 95% interval the run computed) and from how many.
function accuracyInterval(m) {
  if (!m.test_acc_ci || m.test_images == null || m.test_images >= 1000) return "";
  return ` (95% interval ${pct(m.test_acc_ci[0])} to ${pct(m.test_acc_ci[1])}, ${m.test_images} test images)`;
}

async function loadModel() {
  const m = await api("/api/model");
  state.model = m;
  const [c, h, w] = m.input_size;
  const acc = m.test_acc != null ? `, test accuracy ${pct(m.test_acc)}${accuracyInterval(m)}` : "";
  $("model-line").textContent =
    `Model: ${m.name}${m.dataset ? ` trained on ${m.dataset}` : ""}, ${m.classes.length} classes, ` +
    `input ${c}x${h}x${w}${acc}.`;
  document.body.dataset.model = m.name;
  // The drawing canvas only makes sense for 28x28 gray inputs (digits, MNIST-like models).
  $("draw-box").hidden = !(c === 1 && h === 28 && w === 28);
  if (!m.can_explain) $("inside-note").textContent = "This model cannot be explained here (an exported file).";
}

// ---------------------------------------------------------------- classify

async function classify(blob, label) {
  state.image = blob;
  state.imageLabel = label;
  $("photo").querySelector('option[value="upload"]').disabled = false;
  const seq = ++state.predictSeq;
  const form = new FormData();
  form.append("image", blob, "image.png");
  const topk = Math.min(10, state.model ? state.model.classes.length : 5);
  setStatus("status", "");
  showOverview();  // the whole network for this image, fetched beside the prediction
  try {
    const query = new URLSearchParams({ topk: String(topk), input_image: "true", invert: invertParam() });
    const reply = await api(`/api/predict?${query}`, { method: "POST", body: form });
    if (seq !== state.predictSeq) return;
    showPredictions(reply, label);
  } catch (err) {
    if (seq === state.predictSeq) setStatus("status", `Could not classify ${label}: ${err.message}`);
    return;
  }
  if ($("inside-details").open) explain();
  if ($("photo").value === "upload") convolve(true);
}

function showPredictions(reply, label) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const p of reply.predictions) {
    const fill = el("span", { className: "fill" });
    fill.style.width = `${(100 * p.probability).toFixed(1)}%`;
    const li = el("li", {}, [
      el("span", { className: "name", textContent: p.class }),
      el("span", { className: "track" }, [fill]),
      el("span", { className: "pct", textContent: pct(p.probability) }),
    ]);
    li.dataset.class = p.class;
    li.dataset.probability = String(p.probability);
    li.setAttribute("aria-label", `${p.class}: ${pct(p.probability)}`);
    bars.append(li);
  }
  showNotes(reply);
  $("to-overview").hidden = !state.model.can_explain;
  const top = reply.predictions[0];
  const topLine = $("top-line");
  topLine.textContent = `${top.class} (${pct(top.probability)})`;
  topLine.dataset.class = top.class;
  topLine.dataset.source = label;
  const seen = $("seen");
  seen.src = reply.input_image;
  seen.hidden = false;
  const [c, h, w] = state.model.input_size;
  $("seen-caption").textContent =
    `The image as the model sees it: ${c}x${h}x${w} (${c === 1 ? "gray" : "RGB"}), each pixel drawn as a block.`;
}

function invertParam() { return $("invert").checked ? "true" : "false"; }

// What the server noticed about the input: inverted first, then how it is unlike the training images.
function showNotes(reply) {
  const notes = [];
  if (reply.inverted) notes.push("Inverted: its background is the opposite of the training images'.");
  for (const w of reply.warnings || []) notes.push(`Note: ${w}.`);
  $("input-notes").replaceChildren(...notes.map((text) => el("li", { textContent: text })));
  $("input-notes").dataset.inverted = String(Boolean(reply.inverted));
}

function showUpload(file) {
  const preview = $("preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(file);
  preview.src = preview.dataset.url;
  $("preview-figure").hidden = false;
  $("source-line").textContent = `${file.name || "dropped image"}, ${(file.size / 1024).toFixed(1)} KiB`;
}

function onFile(file) {
  if (!file) return;
  showUpload(file);
  classify(file, file.name || "upload");
}

function setupUpload() {
  $("file").addEventListener("change", (e) => onFile(e.target.files[0]));
  $("invert").addEventListener("change", () => { if (state.image) classify(state.image, state.imageLabel); });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    onFile(e.dataTransfer.files[0]);
  });
}

// ---------------------------------------------------------------- the drawing canvas

function setupCanvas() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const send = debounce(sendDrawing, 200);
  const point = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true;
    canvas.setPointerCapture(e.pointerId);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 20;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(...point(e));
    ctx.lineTo(...point(e));
    ctx.stroke();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineTo(...point(e));
    ctx.stroke();
    send();  // live: predictions follow the pen, at most every 200 ms of quiet
  });
  const stop = () => { if (drawing) { drawing = false; send(); } };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("clear").addEventListener("click", () => {
    clear();
    state.predictSeq++;  // drop any reply still on its way
    $("bars").replaceChildren();
    $("top-line").textContent = "No image yet.";
    $("input-notes").replaceChildren();
    delete $("top-line").dataset.class;
    $("to-overview").hidden = true;
    clearOverview();
  });
}

// The drawing's bounding box, centred in a black square with a margin, like the training digits.
function croppedDrawing() {
  const canvas = $("canvas");
  const { width: w, height: h } = canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, w, h).data;
  let x0 = w, y0 = h, x1 = -1, y1 = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (data[(y * w + x) * 4] > 16) {
        if (x < x0) x0 = x; if (x > x1) x1 = x;
        if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
    }
  }
  if (x1 < 0) return null;
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1, side = Math.max(bw, bh);
  // The bundled digits fill their 8x8 frame; MNIST digits sit in a 20x20 box inside 28x28.
  const margin = Math.round(side * (state.model && state.model.dataset === "digits" ? 0.08 : 0.2));
  const size = side + 2 * margin;
  const out = el("canvas", { width: size, height: size });
  const o = out.getContext("2d");
  o.fillStyle = "#000";
  o.fillRect(0, 0, size, size);
  o.drawImage(canvas, x0, y0, bw, bh, margin + (side - bw) / 2, margin + (side - bh) / 2, bw, bh);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

async function sendDrawing() {
  const blob = await croppedDrawing();
  if (!blob) return;
  $("preview-figure").hidden = true;
  classify(blob, "drawing");
}

// ---------------------------------------------------------------- inside the network

async function explain() {
  if (!state.image || !state.model || !state.model.can_explain) return;
  const seq = ++state.explainSeq;
  const layer = $("layer").value;
  const form = new FormData();
  form.append("image", state.image, "image.png");
  const query = new URLSearchParams({ channels: "16", invert: invertParam() });
  if (layer) query.set("layer", layer);
  setStatus("inside-status", "");
  $("inside").setAttribute("aria-busy", "true");
  try {
    const reply = await api(`/api/explain?${query}`, { method: "POST", body: form });
    if (seq === state.explainSeq) showExplanation(reply);
  } catch (err) {
    if (seq === state.explainSeq) setStatus("inside-status", `Could not explain: ${err.message}`);
  } finally {
    if (seq === state.explainSeq) $("inside").removeAttribute("aria-busy");
  }
}

function showExplanation(reply) {
  $("inside-note").textContent = `Showing ${state.imageLabel}. ${reply.notes.join(" ")}`;
  const select = $("layer");
  const names = reply.layers.map((l) => l.name);
  if (select.options.length !== names.length || [...select.options].some((o, i) => o.value !== names[i])) {
    select.replaceChildren(...reply.layers.map((l) =>
      el("option", { value: l.name, textContent: `${l.name} (${l.type}, ${l.shape.join("x")})` })));
  }
  select.disabled = names.length === 0;
  const fm = reply.feature_maps;
  if (fm.layer) select.value = fm.layer;
  const info = reply.layers.find((l) => l.name === fm.layer);
  const grid = $("fmaps");
  grid.replaceChildren(...fm.maps.map((m) => el("figure", {}, [
    el("img", { src: m.image, alt: `${fm.layer} channel ${m.channel}`,
                title: `channel ${m.channel}: from ${m.min.toFixed(3)} (black) to ${m.max.toFixed(3)} (white)` }),
    el("figcaption", { textContent: `ch ${m.channel}` }),
  ])));
  grid.dataset.layer = fm.layer || "";
  $("fmap-caption").textContent = info
    ? `${fm.layer}: ${info.shape[0]} maps of ${info.shape[1]}x${info.shape[2]}` +
      `${fm.maps.length < info.shape[0] ? `, the first ${fm.maps.length} shown` : ""}. ` +
      `${fm.scaling.charAt(0).toUpperCase()}${fm.scaling.slice(1)}.`
    : "No layer with spatial feature maps.";
  const cam = $("gradcam");
  if (reply.gradcam.image) {
    cam.src = reply.gradcam.image;
    cam.hidden = false;
    $("gradcam-caption").textContent =
      `Grad-CAM at ${reply.gradcam.layer} for class ${reply.target.class}: ${reply.gradcam.about}.`;
  } else {
    cam.hidden = true;
    $("gradcam-caption").textContent = "No Grad-CAM for this model.";
  }
}

function setupInside() {
  $("inside-details").addEventListener("toggle", () => { if ($("inside-details").open) explain(); });
  $("layer").addEventListener("change", explain);
}

// ---------------------------------------------------------------- the convolution playground

function kernelSize() { return Number($("ksize").value); }

function buildKernelGrid(values) {
  const n = values.length;
  $("ksize").value = String(n);
  const grid = $("kernel");
  grid.style.gridTemplateColumns = `repeat(${n}, max-content)`;
  const cells = [];
  values.forEach((row, r) => row.forEach((v, c) => {
    const input = el("input", { type: "number", step: "any", value: String(+v.toFixed(5)) });
    input.id = `k-${r}-${c}`;
    input.setAttribute("aria-label", `weight row ${r + 1}, column ${c + 1}`);
    input.addEventListener("input", () => { $("preset").value = ""; convolveSoon(); });
    cells.push(input);
  }));
  grid.replaceChildren(...cells);
}

function readKernel() {
  const n = kernelSize();
  const rows = [];
  let ok = true;
  for (let r = 0; r < n; r++) {
    const row = [];
    for (let c = 0; c < n; c++) {
      const input = $(`k-${r}-${c}`);
      const v = input.value.trim() === "" ? NaN : Number(input.value);
      input.setAttribute("aria-invalid", String(!Number.isFinite(v)));
      ok = ok && Number.isFinite(v);
      row.push(Number.isFinite(v) ? v : input.value);  // the server names the bad cell in its reply
    }
    rows.push(row);
  }
  return { rows, ok };
}

function usePreset(name) {
  const k = state.kernels.find((x) => x.name === name);
  if (!k) return;
  buildKernelGrid(k.kernel);
  $("kernel-about").textContent = k.description;
  convolve(false);
}

function identity(n) {
  return Array.from({ length: n }, (_, r) => Array.from({ length: n }, (_, c) =>
    (r === (n - 1) / 2 && c === (n - 1) / 2 ? 1 : 0)));
}

async function convolve(withInput, pixel) {
  const { rows } = readKernel();
  const photo = $("photo").value;
  const mode = $("mode").value;
  const key = `${photo}|${mode}|${photo === "upload" ? state.predictSeq : ""}`;
  const includeInput = withInput || key !== state.convInputKey;
  const body = {
    kernel: rows, stride: Number($("stride").value), padding: Number($("padding").value), mode,
    include_input: includeInput,
  };
  if (pixel) body.pixel = pixel;
  let options;
  if (photo === "upload" && state.image) {
    const form = new FormData();
    form.append("image", state.image, "image.png");
    for (const [k, v] of Object.entries(body)) form.append(k, typeof v === "object" ? JSON.stringify(v) : String(v));
    options = { method: "POST", body: form };
  } else {
    body.image = photo === "upload" ? "sample" : photo;
    options = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  const seq = ++state.convSeq;
  setStatus("conv-status", "");
  try {
    const reply = await api("/api/convolve", options);
    if (seq !== state.convSeq) return;
    if (includeInput) state.convInputKey = key;
    showConvolution(reply);
  } catch (err) {
    if (seq === state.convSeq) setStatus("conv-status", err.message);
  }
}

const convolveSoon = debounce(() => convolve(false), 250);

function showConvolution(reply) {
  state.conv = reply;
  const inp = reply.input, out = reply.output;
  if (inp.image) $("conv-in").src = inp.image;
  $("conv-in-caption").textContent = `input: ${inp.height}x${inp.width}, ${inp.channels} channel(s)`;
  const img = $("conv-out");
  img.src = out.image;
  img.dataset.height = out.height;
  img.dataset.width = out.width;
  $("conv-out-caption").textContent =
    `output: ${out.height}x${out.width}, ${out.channels} channel(s), values ${out.min.toFixed(3)} to ` +
    `${out.max.toFixed(3)}. Display: ${out.scaling}.`;
  const s = reply.size;
  $("conv-size").textContent =
    `height: ${s.height_worked}\n\nwidth: ${s.width_worked}\n\noutput: ${s.height} x ${s.width}`;
  const sum = reply.kernel.flat().reduce((a, b) => a + b, 0);
  if (!$("preset").value) $("kernel-about").textContent = `custom kernel, weights sum to ${+sum.toFixed(4)}`;
  $("pix-i").max = out.height - 1;
  $("pix-j").max = out.width - 1;
  if (reply.pixel) showPixel(reply);
  else { $("win-box").hidden = true; $("out-box").hidden = true; $("pixel-out").replaceChildren(); }
}

function table(rows) {
  return el("table", { className: "sum" }, rows.map((row) =>
    el("tr", {}, row.map((v) => el("td", { textContent: String(+Number(v).toFixed(3)) })))));
}

function showPixel(reply) {
  const p = reply.pixel, inp = reply.input, out = reply.output;
  const n = reply.kernel.length;
  const blocks = p.channels.map((ch) => el("div", { className: "sum-block" }, [
    el("h4", { textContent: ch.channel === "gray" ? "window x kernel" : `${ch.channel} channel` }),
    table(ch.window), el("span", { textContent: "times the kernel, element by element:" }),
    table(ch.products), el("p", { textContent: `sum = ${ch.sum.toFixed(4)}` }),
  ]));
  $("pixel-out").replaceChildren(
    el("p", { textContent: `Output pixel (${p.i}, ${p.j}). ${p.padded_input}. ${p.combine}.` }),
    ...blocks,
    el("pre", { textContent: p.text }),
  );
  // Where the window sits on the input (padding lies outside the picture) and which output pixel it made.
  const inImg = $("conv-in"), outImg = $("conv-out");
  const sx = inImg.clientWidth / inp.width, sy = inImg.clientHeight / inp.height;
  place($("win-box"), (p.col0 - reply.padding) * sx, (p.row0 - reply.padding) * sy, n * sx, n * sy);
  const ox = outImg.clientWidth / out.width, oy = outImg.clientHeight / out.height;
  place($("out-box"), p.j * ox, p.i * oy, Math.max(ox, 3), Math.max(oy, 3));
}

function place(box, left, top, width, height) {
  Object.assign(box.style, { left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px` });
  box.hidden = false;
}

function setupPlayground() {
  const preset = $("preset");
  for (const k of state.kernels) {
    preset.append(el("option", { value: k.name, textContent: `${k.name} (${k.kernel.length}x${k.kernel.length})` }));
  }
  preset.addEventListener("change", () => { if (preset.value) usePreset(preset.value); });
  $("ksize").addEventListener("change", () => {
    preset.value = "";
    buildKernelGrid(identity(kernelSize()));
    convolve(false);
  });
  for (const id of ["stride", "padding", "mode", "photo"]) $(id).addEventListener("change", () => convolve(false));
  $("conv-out").addEventListener("click", (e) => {
    const img = e.currentTarget;
    const i = Math.floor(e.offsetY / img.clientHeight * Number(img.dataset.height));
    const j = Math.floor(e.offsetX / img.clientWidth * Number(img.dataset.width));
    $("pix-i").value = i;
    $("pix-j").value = j;
    convolve(false, [i, j]);
  });
  $("pix-go").addEventListener("click", () => convolve(false, [Number($("pix-i").value), Number($("pix-j").value)]));
  preset.value = state.kernels.some((k) => k.name === "sobel_x") ? "sobel_x" : state.kernels[0].name;
  usePreset(preset.value);
}

// ---------------------------------------------------------------- start

async function start() {
  setupUpload();
  setupCanvas();
  setupInside();
  try {
    await loadModel();
    state.kernels = await api("/api/kernels");
    setupPlayground();
    document.body.dataset.ready = "true";
  } catch (err) {
    setStatus("status", `The server did not answer: ${err.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start);
