// Polls the JSON API and redraws; the API is the only data source of the page.
"use strict";
const fmt = new Intl.NumberFormat();
let chartReady = false;

function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); }

function render(data) {
  const t = data.today;
  document.getElementById("total-in").textContent = fmt.format(t.in);
  document.getElementById("total-out").textContent = fmt.format(t.out);
  document.getElementById("occupancy").textContent = fmt.format(t.occupancy);
  document.getElementById("pending").textContent = fmt.format(data.uplink.pending ?? 0);
  const up = document.getElementById("uplink");
  up.textContent = data.uplink.connected ? "uplink connected" : "uplink offline";
  up.className = "badge " + (data.uplink.connected ? "ok" : "bad");

  const lines = document.querySelector("#lines tbody");
  lines.replaceChildren();
  for (const l of t.lines) { const tr = document.createElement("tr"); cell(tr, l.camera); cell(tr, l.line); cell(tr, fmt.format(l.in)); cell(tr, fmt.format(l.out)); lines.appendChild(tr); }
  const cams = document.querySelector("#cameras tbody");
  cams.replaceChildren();
  for (const c of data.cameras) {
    const tr = document.createElement("tr");
    cell(tr, c.id); cell(tr, c.state); cell(tr, c.fps);
    cell(tr, c.last_frame_age_s == null ? "–" : c.last_frame_age_s + " s ago"); cell(tr, c.reconnects);
    cams.appendChild(tr);
  }
  const x = data.minutes.map(m => new Date(m.minute.replace("Z", ":00Z")));
  const traces = [
    { x, y: data.minutes.map(m => m.in), type: "bar", name: "in", marker: { color: "#2b8a3e" } },
    { x, y: data.minutes.map(m => m.out), type: "bar", name: "out", marker: { color: "#c92a2a" } },
  ];
  const layout = { barmode: "group", margin: { t: 10, r: 10, b: 40, l: 40 }, height: 260, legend: { orientation: "h" } };
  if (window.Plotly) {
    Plotly.react("chart", traces, layout, { displayModeBar: false, responsive: true });
    chartReady = true;
  }
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const response = await fetch("/api/summary", { cache: "no-store" });
    if (response.ok) render(await response.json());
  } catch (e) { document.getElementById("uplink").textContent = "dashboard offline"; }
}
refresh();
setInterval(refresh, 2000);
