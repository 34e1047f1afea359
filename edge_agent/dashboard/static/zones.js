// Zones & products: shelf ranking, hot products, dwell, heatmap over the reference picture.
"use strict";
const params = new URLSearchParams(location.search);
document.getElementById("start").value = params.get("start") || storeToday();
document.getElementById("end").value = params.get("end") || storeToday();
let lastZones = null;

function zoneLabel(z) { return z.name || z.zone; }

function binLabels(bins) {
  return bins.map((edge, i) => (i + 1 < bins.length ? edge + "–" + bins[i + 1] : "≥ " + edge) + (LANG === "zh-CN" ? " 秒" : " s"));
}

async function loadZones() {
  const query = new URLSearchParams({ start: document.getElementById("start").value, end: document.getElementById("end").value });
  history.replaceState(null, "", "?" + query);
  try {
    const data = await api("/api/zones?" + query);
    lastZones = data;
    showError("error", null);
    const hot = document.getElementById("hot-products");
    hot.replaceChildren();
    for (const p of data.hot_products) {
      hot.append(el("li", {}, el("strong", { text: p.product }), " ",
        el("span", { text: t("zones.interactions") + " " + fmt.n(p.interactions) + " · " + t("zones.rate") + " " + fmt.pct(p.interaction_rate) })));
    }
    if (!data.hot_products.length) hot.append(el("li", { class: "empty", text: t("zones.hot.none") }));
    fillTable(document.getElementById("shelves"), data.shelves.map((s, i) => [
      String(i + 1), zoneLabel(s), s.product || "–", num(fmt.n(s.interactions)), num(fmt.n(s.entries)),
      num(fmt.pct(s.interaction_rate)), num(fmt.seconds(s.median_dwell_s)),
    ]));
    const all = data.shelves.concat(data.zones);
    const bins = binLabels(data.dwell_bins);
    plot("dwell-chart", all.map((z) => ({ x: bins, y: z.dwell_histogram, type: "bar", name: zoneLabel(z) })),
      { barmode: "stack", xaxis: { type: "category" }, yaxis: countAxis(bins.map((_, i) => all.reduce((a, z) => a + z.dwell_histogram[i], 0))), showlegend: true });
    const names = all.map(zoneLabel);
    const th = data.thresholds;
    plot("split-chart", [
      { y: names, x: all.map((z) => z.passing), type: "bar", orientation: "h", name: t("zones.passing", { a: th.passing_seconds }), marker: { color: "#cbd5e0" } },
      { y: names, x: all.map((z) => z.browsing), type: "bar", orientation: "h", name: t("zones.browsing"), marker: { color: "#63b3ed" } },
      { y: names, x: all.map((z) => z.engaged), type: "bar", orientation: "h", name: t("zones.engaged", { b: th.engaged_seconds }), marker: { color: "#2b6cb0" } },
    ], { barmode: "stack", margin: { t: 10, r: 10, b: 60, l: 110 }, height: Math.max(200, 60 + 40 * names.length),
        xaxis: countAxis(all.map((z) => z.passing + z.browsing + z.engaged)) });
    await loadHeatmap();
    stamp();
  } catch (e) { showError("error", e); }
}

async function loadCameras() {
  const setup = await api("/api/setup");
  const select = document.getElementById("heat-camera");
  select.replaceChildren(...setup.cameras.map((c) => el("option", { value: c.id, text: c.id })));
  select.addEventListener("change", loadHeatmap);
}

async function loadHeatmap() {
  const camera = document.getElementById("heat-camera").value;
  const hint = document.getElementById("heat-hint");
  if (!camera) { hint.textContent = t("common.none"); return; }
  const query = new URLSearchParams({ start: document.getElementById("start").value, end: document.getElementById("end").value });
  const data = await api("/api/cameras/" + encodeURIComponent(camera) + "/heatmap?" + query);
  const w = data.width || 16, h = data.height || 9;
  const max = Math.max(1, ...data.zones.map((z) => z.entries));
  // Each zone filled from pale yellow to deep red by its share of the busiest zone's entries.
  const grid = data.grid;
  // The analytics' occupancy grid where there is one; zones are then outlined only.
  const traces = grid ? [{
    type: "heatmap", z: grid.cells, x0: w / grid.cols / 2, dx: w / grid.cols, y0: h / grid.rows / 2, dy: h / grid.rows,
    zsmooth: "best", showscale: false, hoverinfo: "skip", zmin: 0,
    colorscale: [[0, "rgba(255,255,0,0)"], [0.15, "rgba(255,210,0,0.35)"], [1, "rgba(220,20,0,0.8)"]],
  }] : [];
  traces.push(...data.zones.map((z) => {
    const share = grid ? 0 : z.entries / max;
    const color = `rgba(255, ${Math.round(220 - 190 * share)}, ${Math.round(80 - 60 * share)}, ${grid ? 0 : 0.25 + 0.5 * share})`;
    const xs = z.polygon.map((p) => p[0] * w).concat([z.polygon[0][0] * w]);
    const ys = z.polygon.map((p) => p[1] * h).concat([z.polygon[0][1] * h]);
    return { x: xs, y: ys, type: "scatter", mode: "lines", fill: "toself", fillcolor: color,
      line: { color: "rgba(120,20,0,0.9)", width: 2 }, name: (z.name || z.id) + ": " + fmt.n(z.entries) + " " + t("zones.heatmap.entries"),
      hoverinfo: "name" };
  }));
  const labels = data.zones.map((z) => ({
    x: z.polygon.reduce((a, p) => a + p[0], 0) / z.polygon.length * w,
    y: z.polygon.reduce((a, p) => a + p[1], 0) / z.polygon.length * h,
    text: "<b>" + fmt.n(z.entries) + "</b>", showarrow: false, font: { color: "#fff", size: 16 },
    bgcolor: "rgba(0,0,0,0.55)", borderpad: 3,
  }));
  const width = document.getElementById("heatmap").clientWidth || 360;
  plot("heatmap", traces, {
    height: Math.round(width * h / w) + 20, margin: { t: 0, r: 0, b: 20, l: 0 }, showlegend: false,
    xaxis: { range: [0, w], visible: false, fixedrange: true },
    yaxis: { range: [h, 0], visible: false, fixedrange: true, scaleanchor: "x" },
    images: data.reference ? [{ source: data.reference + "?t=" + Date.now(), xref: "x", yref: "y", x: 0, y: 0, sizex: w, sizey: h,
      sizing: "stretch", layer: "below" }] : [],
    annotations: labels,
  });
  hint.textContent = data.reference ? "" : t("zones.heatmap.noimage");
}

document.getElementById("range").addEventListener("submit", (event) => { event.preventDefault(); loadZones(); });
loadCameras().then(loadZones).catch((e) => showError("error", e));
