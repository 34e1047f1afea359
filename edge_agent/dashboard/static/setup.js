// Setup: draw counting lines (with the "in" direction) and zones on a pixelated
// snapshot of each camera; Save sends them to PUT /api/cameras/{id}/layout.
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const svg = document.getElementById("overlay");
const img = document.getElementById("snapshot");
const stage = document.getElementById("stage");
const status = document.getElementById("status");
const KIND_COLORS = { zone: "#3182ce", shelf: "#dd6b20", staff: "#805ad5" };

const state = {
  cameras: [], camera: null, lines: [], zones: [], selected: null, mode: "select", draft: [],
  drag: null, dirty: false, canSave: false, width: 1600, height: 900,
};

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}
const clamp = (v) => Math.min(1, Math.max(0, v));
const round = (v) => Math.round(v * 10000) / 10000;
const px = (p) => [p[0] * state.width, p[1] * state.height];

function nextId(prefix, items) {
  const used = new Set(items.map((i) => i.id));
  for (let n = 1; ; n++) if (!used.has(prefix + "-" + n)) return prefix + "-" + n;
}

function setDirty(dirty) {
  state.dirty = dirty;
  document.getElementById("dirty").hidden = !dirty;
}

function setMode(mode) {
  state.mode = mode;
  state.draft = [];
  document.getElementById("finish-zone").hidden = mode !== "zone";
  document.getElementById("hint").textContent = t(mode === "line" ? "setup.hint.line" : mode === "zone" ? "setup.hint.zone" : "setup.hint.select");
  stage.classList.toggle("drawing", mode !== "select");
  render();
}

function pointFromEvent(event) {
  const rect = svg.getBoundingClientRect();
  return [round(clamp((event.clientX - rect.left) / rect.width)), round(clamp((event.clientY - rect.top) / rect.height))];
}

// -- drawing ----------------------------------------------------------------------------
function render() {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${state.width} ${state.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const unit = Math.min(state.width, state.height);
  // Picture units per screen pixel: keep handles finger-sized and labels readable on a phone.
  const scale = state.width / (svg.getBoundingClientRect().width || state.width);
  const handleR = Math.max(unit * 0.022, 12 * scale);
  const font = Math.max(unit * 0.045, 13 * scale);

  state.zones.forEach((zone, index) => {
    const selected = state.selected?.type === "zone" && state.selected.index === index;
    const color = KIND_COLORS[zone.kind] || KIND_COLORS.zone;
    const g = svgEl("g", { class: "item zone" + (selected ? " selected" : ""), "data-type": "zone", "data-index": index, "data-id": zone.id });
    g.append(svgEl("polygon", { points: zone.polygon.map((p) => px(p).join(",")).join(" "), fill: color, "fill-opacity": selected ? 0.35 : 0.2,
      stroke: color, "stroke-width": selected ? 4 : 2.5, "vector-effect": "non-scaling-stroke" }));
    const c = zone.polygon.reduce((a, p) => [a[0] + p[0] / zone.polygon.length, a[1] + p[1] / zone.polygon.length], [0, 0]);
    const label = svgEl("text", { x: px(c)[0], y: px(c)[1], "font-size": font, class: "tag", "text-anchor": "middle" });
    label.textContent = zone.name || zone.id;  // the product is in the list beside the picture
    g.append(label);
    if (selected) zone.polygon.forEach((p, i) => g.append(handle(p, "zone", index, i, handleR, color)));
    svg.append(g);
  });

  state.lines.forEach((line, index) => {
    const selected = state.selected?.type === "line" && state.selected.index === index;
    const g = svgEl("g", { class: "item line" + (selected ? " selected" : ""), "data-type": "line", "data-index": index, "data-id": line.id });
    const [a, b] = line.points.map(px);
    g.append(svgEl("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "hit", stroke: "transparent", "stroke-width": 24, "vector-effect": "non-scaling-stroke" }));
    g.append(svgEl("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], stroke: selected ? "#f6e05e" : "#ecc94b", "stroke-width": selected ? 5 : 3.5, "vector-effect": "non-scaling-stroke" }));
    // The "in" arrow: right-hand side looking from the first point to the second (y down).
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    const sign = line.in_side === "right" ? 1 : -1;
    const nx = (-dy / len) * sign, ny = (dx / len) * sign;
    const m = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
    const L = Math.max(unit * 0.12, 36 * scale), head = Math.max(unit * 0.035, 10 * scale);
    const tip = [m[0] + nx * L, m[1] + ny * L];
    g.append(svgEl("line", { x1: m[0], y1: m[1], x2: tip[0], y2: tip[1], stroke: "#38a169", "stroke-width": 4, "vector-effect": "non-scaling-stroke", class: "arrow" }));
    g.append(svgEl("polygon", { fill: "#38a169", class: "arrow-head",
      points: [tip, [tip[0] - nx * head - ny * head * 0.7, tip[1] - ny * head + nx * head * 0.7],
        [tip[0] - nx * head + ny * head * 0.7, tip[1] - ny * head - nx * head * 0.7]].map((p) => p.join(",")).join(" ") }));
    const inLabel = svgEl("text", { x: tip[0] + nx * font * 0.9, y: tip[1] + ny * font * 0.9 + font * 0.35, "font-size": font * 0.9, class: "tag in", "text-anchor": "middle" });
    inLabel.textContent = t("common.in");
    g.append(inLabel);
    const lx = Math.min(Math.max(a[0], font * 0.3), state.width - font * 4);
    const ly = Math.min(Math.max(a[1] - font * 0.5, font), state.height - font * 0.3);
    const label = svgEl("text", { x: lx, y: ly, "font-size": font, class: "tag" });
    label.textContent = line.name || line.id;
    g.append(label);
    if (selected) line.points.forEach((p, i) => g.append(handle(p, "line", index, i, handleR, "#f6e05e")));
    svg.append(g);
  });

  if (state.draft.length) {
    const pts = state.draft.map((p) => px(p).join(",")).join(" ");
    svg.append(svgEl("polyline", { points: pts, fill: "none", stroke: "#fff", "stroke-dasharray": "6 4", "stroke-width": 3, "vector-effect": "non-scaling-stroke" }));
    state.draft.forEach((p) => svg.append(svgEl("circle", { cx: px(p)[0], cy: px(p)[1], r: handleR * 0.8, fill: "#fff", class: "draft" })));
  }
  renderLists();
  renderEditor();
}

function handle(p, type, index, point, r, color) {
  const [x, y] = px(p);
  return svgEl("circle", { cx: x, cy: y, r, fill: color, stroke: "#1a202c", "stroke-width": 2, "vector-effect": "non-scaling-stroke",
    class: "handle", "data-type": type, "data-index": index, "data-point": point });
}

function renderLists() {
  const list = (node, items, type) => {
    node.replaceChildren();
    items.forEach((item, index) => {
      const selected = state.selected?.type === type && state.selected.index === index;
      const extra = type === "zone" ? " · " + t("setup.kind." + item.kind) + (item.product ? " · " + item.product : "") : "";
      const li = el("li", { class: selected ? "selected" : "", "data-id": item.id }, el("button", { type: "button", text: (item.name ? item.name + " (" + item.id + ")" : item.id) + extra }));
      li.firstChild.addEventListener("click", () => { state.selected = { type, index }; setMode("select"); });
      node.append(li);
    });
    if (!items.length) node.append(el("li", { class: "empty", text: t("common.none") }));
  };
  list(document.getElementById("line-list"), state.lines, "line");
  list(document.getElementById("zone-list"), state.zones, "zone");
}

function selectedItem() {
  if (!state.selected) return null;
  return (state.selected.type === "line" ? state.lines : state.zones)[state.selected.index] || null;
}

function renderEditor() {
  const item = selectedItem();
  const editor = document.getElementById("editor");
  editor.hidden = !item;
  document.getElementById("delete").disabled = !item || !state.canSave;
  if (!item) return;
  const isLine = state.selected.type === "line";
  document.getElementById("line-fields").hidden = !isLine;
  document.getElementById("zone-fields").hidden = isLine;
  const active = document.activeElement;
  const set = (id, value) => { const node = document.getElementById(id); if (node !== active) node.value = value ?? ""; };
  set("f-id", item.id);
  set("f-name", item.name);
  if (!isLine) { set("f-kind", item.kind); set("f-product", item.product); }
  for (const node of editor.querySelectorAll("input, select, button")) node.disabled = !state.canSave;
}

// -- interaction --------------------------------------------------------------------------
svg.addEventListener("pointerdown", (event) => {
  if (!state.camera) return;
  const target = event.target;
  if (target.classList.contains("handle") && state.canSave) {
    state.drag = { type: target.dataset.type, index: +target.dataset.index, point: +target.dataset.point };
    svg.setPointerCapture(event.pointerId);
    event.preventDefault();
    return;
  }
  if (state.mode === "line" && state.canSave) {
    state.draft.push(pointFromEvent(event));
    if (state.draft.length === 2) {
      const [p1, p2] = state.draft;
      if (p1[0] === p2[0] && p1[1] === p2[1]) { state.draft = [p1]; return; }
      state.lines.push({ id: nextId("line", state.lines), name: null, points: [p1, p2], in_side: "right" });
      state.selected = { type: "line", index: state.lines.length - 1 };
      setDirty(true);
      setMode("select");
      return;
    }
    render();
    return;
  }
  if (state.mode === "zone" && state.canSave) {
    const p = pointFromEvent(event);
    if (state.draft.length >= 3) {
      const [fx, fy] = px(state.draft[0]), [qx, qy] = px(p);
      if (Math.hypot(fx - qx, fy - qy) < Math.min(state.width, state.height) * 0.03) { finishZone(); return; }
    }
    state.draft.push(p);
    render();
    return;
  }
  const group = target.closest("g.item");
  state.selected = group ? { type: group.dataset.type, index: +group.dataset.index } : null;
  render();
});
svg.addEventListener("pointermove", (event) => {
  if (!state.drag) return;
  const item = (state.drag.type === "line" ? state.lines : state.zones)[state.drag.index];
  const points = state.drag.type === "line" ? item.points : item.polygon;
  points[state.drag.point] = pointFromEvent(event);
  setDirty(true);
  render();
});
const endDrag = () => { state.drag = null; };
svg.addEventListener("pointerup", endDrag);
svg.addEventListener("pointercancel", endDrag);

function finishZone() {
  if (state.draft.length < 3) return;
  state.zones.push({ id: nextId("zone", state.zones), name: null, polygon: state.draft, kind: "zone", product: null });
  state.selected = { type: "zone", index: state.zones.length - 1 };
  setDirty(true);
  setMode("select");
}

document.getElementById("add-line").addEventListener("click", () => { state.selected = null; setMode("line"); });
document.getElementById("add-zone").addEventListener("click", () => { state.selected = null; setMode("zone"); });
document.getElementById("finish-zone").addEventListener("click", finishZone);
document.getElementById("delete").addEventListener("click", () => {
  if (!state.selected) return;
  (state.selected.type === "line" ? state.lines : state.zones).splice(state.selected.index, 1);
  state.selected = null;
  setDirty(true);
  render();
});
document.getElementById("flip").addEventListener("click", () => {
  const item = selectedItem();
  if (!item) return;
  item.in_side = item.in_side === "right" ? "left" : "right";
  setDirty(true);
  render();
});
const bind = (id, key, empty = null) => document.getElementById(id).addEventListener("input", (event) => {
  const item = selectedItem();
  if (!item) return;
  item[key] = event.target.value.trim() === "" ? empty : event.target.value.trim();
  setDirty(true);
  render();
});
bind("f-id", "id", "");
bind("f-name", "name");
bind("f-product", "product");
document.getElementById("f-kind").addEventListener("change", (event) => {
  const item = selectedItem();
  if (item) { item.kind = event.target.value; setDirty(true); render(); }
});
document.getElementById("editor").addEventListener("submit", (event) => event.preventDefault());

document.getElementById("save").addEventListener("click", async () => {
  if (!state.camera) return;
  status.className = "status";
  status.textContent = t("setup.saving");
  try {
    const result = await api("/api/cameras/" + encodeURIComponent(state.camera) + "/layout", {
      method: "PUT", body: { lines: state.lines, zones: state.zones },
    });
    state.lines = result.lines;
    state.zones = result.zones;
    const camera = state.cameras.find((c) => c.id === state.camera);
    camera.lines = structuredClone(result.lines);
    camera.zones = structuredClone(result.zones);
    setDirty(false);
    status.className = "status ok";
    status.textContent = t("setup.saved");
    render();
  } catch (e) {
    status.className = "status error";
    const errors = e.data && e.data.errors;
    status.textContent = errors ? errors.map((x) => x.field + ": " + x.message).join("\n") : t("error.generic", { msg: e.detail || e.message });
  }
});

function showCamera(id) {
  const camera = state.cameras.find((c) => c.id === id);
  state.camera = id;
  state.lines = structuredClone(camera.lines);
  state.zones = structuredClone(camera.zones);
  state.selected = null;
  setDirty(false);
  status.textContent = "";
  if (camera.snapshot) {
    state.width = camera.snapshot.width;
    state.height = camera.snapshot.height;
    img.src = camera.snapshot.url + "?t=" + Date.now();
    img.hidden = false;
    document.getElementById("no-snapshot").hidden = true;
  } else {
    state.width = 1600;
    state.height = 900;
    img.hidden = true;
    img.removeAttribute("src");
    document.getElementById("no-snapshot").hidden = false;
  }
  stage.style.aspectRatio = state.width + " / " + state.height;
  setMode("select");
}

async function loadSetup() {
  try {
    const data = await api("/api/setup");
    state.cameras = data.cameras;
    state.canSave = data.can_save;
    document.getElementById("toolbar").hidden = !state.canSave;
    const readonly = document.getElementById("readonly");
    readonly.hidden = state.canSave;
    if (!state.canSave && BOOT.role === "admin" && data.cannot_save_reason) {
      readonly.textContent = t("setup.cannotsave", { why: data.cannot_save_reason });
    }
    const select = document.getElementById("camera");
    select.replaceChildren(...data.cameras.map((c) => el("option", { value: c.id, text: c.id })));
    select.addEventListener("change", () => {
      if (state.dirty && !confirm(t("setup.unsaved"))) { select.value = state.camera; return; }
      showCamera(select.value);
    });
    if (data.cameras.length) showCamera(data.cameras[0].id);
    else status.textContent = t("common.none");
    stamp();
  } catch (e) { showError(status, e); }
}
new ResizeObserver(() => { if (state.camera) render(); }).observe(stage);
window.addEventListener("beforeunload", (event) => { if (state.dirty) event.preventDefault(); });
loadSetup();
