// Shared by every page: texts, Intl formatting, the JSON API client, charts.
"use strict";
const BOOT = JSON.parse(document.getElementById("boot").textContent);
const LANG = BOOT.lang;
const TZ = BOOT.timezone;

function t(key, vars) {
  let text = BOOT.texts[key] ?? key;
  for (const [name, value] of Object.entries(vars || {})) text = text.replaceAll("{" + name + "}", value);
  return text;
}

const numberFormat = new Intl.NumberFormat(LANG);
const percentFormat = new Intl.NumberFormat(LANG, { style: "percent", maximumFractionDigits: 1 });
const signedPercent = new Intl.NumberFormat(LANG, { style: "percent", maximumFractionDigits: 0, signDisplay: "exceptZero" });
const fmt = {
  n: (v) => (v == null ? "–" : numberFormat.format(v)),
  pct: (v) => (v == null ? "–" : percentFormat.format(v)),
  change: (v) => (v == null ? "" : signedPercent.format(v)),
  // Store-local wall clock, whatever the phone's own time zone is.
  time: (d) => new Intl.DateTimeFormat(LANG, { timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(d),
  hour: (iso) => new Intl.DateTimeFormat(LANG, { timeZone: TZ, hour: "numeric" }).format(new Date(iso)),
  clock: (iso) => new Intl.DateTimeFormat(LANG, { timeZone: TZ, hour: "2-digit", minute: "2-digit" }).format(new Date(iso)),
  dayHour: (iso) => new Intl.DateTimeFormat(LANG, { timeZone: TZ, month: "short", day: "numeric", hour: "2-digit" }).format(new Date(iso)),
  // A local calendar day "YYYY-MM-DD" (no time zone shift).
  day: (ymd) => new Intl.DateTimeFormat(LANG, { timeZone: "UTC", month: "short", day: "numeric", weekday: "short" }).format(new Date(ymd + "T00:00:00Z")),
  weekday: (ymd) => new Intl.DateTimeFormat(LANG, { timeZone: "UTC", weekday: "long" }).format(new Date(ymd + "T00:00:00Z")),
  dateTime: (d) => new Intl.DateTimeFormat(LANG, { timeZone: TZ, dateStyle: "medium", timeStyle: "short" }).format(d),
  bytes: (b) => {
    if (b == null) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return new Intl.NumberFormat(LANG, { maximumFractionDigits: 1 }).format(b) + " " + units[i];
  },
  seconds: (s) => (s == null ? "–" : t("common.seconds", { n: new Intl.NumberFormat(LANG, { maximumFractionDigits: 1 }).format(s) })),
};

// Today in the store's time zone as YYYY-MM-DD.
function storeToday(offsetDays = 0) {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  const d = new Date(parts + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + offsetDays);
  return d.toISOString().slice(0, 10);
}

class ApiError extends Error {
  constructor(status, detail, data) { super(detail); this.status = status; this.detail = detail; this.data = data; }
}

async function api(path, options = {}) {
  const method = options.method || "GET";
  const headers = { Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = BOOT.csrf || "";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401 && BOOT.page !== "login") {
    location.assign("/login?next=" + encodeURIComponent(location.pathname));
    throw new ApiError(401, "log in");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, (data && data.detail) || response.statusText, data);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function fillTable(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren();
  if (!rows.length) {
    const cols = table.querySelectorAll("thead th").length;
    body.append(el("tr", {}, el("td", { colspan: cols, class: "empty", text: t("common.none") })));
    return;
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) {
      const numeric = typeof cell === "object" && cell !== null && cell.num;
      tr.append(el("td", numeric ? { class: "num", text: cell.text } : { text: cell ?? "–" }));
    }
    body.append(tr);
  }
}
const num = (text) => ({ num: true, text });

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value] of pairs) dl.append(el("dt", { text: label }), el("dd", { text: value ?? "–" }));
}

const CHART_FONT = 'system-ui, "Noto Sans CJK SC", "WenQuanYi Micro Hei", sans-serif';
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];

function plot(id, traces, layout = {}) {
  if (!window.Plotly) return;
  const base = {
    font: { family: CHART_FONT, size: 12 },
    margin: { t: 30, r: 10, b: 60, l: 45 },
    height: 280,
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
    paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    colorway: COLORS,
    separators: numberFormat.format(1.5).includes(",") ? ",." : ".,",
  };
  Plotly.react(id, traces, { ...base, ...layout }, { displayModeBar: false, responsive: true, locale: LANG });
}

// As many category labels as fit the chart's width (phones get fewer).
function categoryAxis(id, extra = {}) {
  const width = document.getElementById(id)?.clientWidth || 360;
  return { type: "category", tickangle: -40, nticks: Math.max(4, Math.floor(width / 60)), automargin: true, ...extra };
}

// Counts are whole numbers: no 0.5 ticks on small charts.
function countAxis(values) {
  const max = Math.max(0, ...values.flat());
  return max <= 8 ? { dtick: 1, rangemode: "tozero" } : { rangemode: "tozero" };
}

function showError(target, error) {
  const node = typeof target === "string" ? document.getElementById(target) : target;
  if (node) node.textContent = error ? t("error.generic", { msg: error.detail || error.message }) : "";
}

// Header: language switch and logout, on every page.
document.getElementById("lang-switch")?.addEventListener("change", (event) => {
  document.cookie = "lang=" + event.target.value + "; path=/; max-age=31536000; samesite=strict";
  location.reload();
});
document.getElementById("logout")?.addEventListener("click", async () => {
  try { await api("/api/logout", { method: "POST" }); } finally { location.assign("/login"); }
});
function setLive(ok) {
  const badge = document.getElementById("live");
  if (!badge) return;
  badge.textContent = ok ? t("live.on") : t("live.off");
  badge.className = "badge " + (ok ? "ok" : "warn");
}
function stamp() {
  const node = document.getElementById("updated");
  if (node) node.textContent = t("live.updated", { time: fmt.time(new Date()) });
}
