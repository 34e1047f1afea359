// Health: cameras, sensor nodes, storage, uplink, POS, jobs; refreshed every 5 s.
"use strict";

function age(seconds) { return seconds == null ? "–" : t("health.ago", { n: fmt.n(Math.round(seconds)) }); }
function when(iso) { return iso ? fmt.dateTime(new Date(iso)) : "–"; }
function yesNo(v) { return v == null ? "–" : v ? t("common.yes") : t("common.no"); }

function renderHealth(h) {
  fillTable(document.getElementById("cameras"), h.cameras.map((c) => [
    c.id, t("state." + c.state), num(fmt.n(c.fps)), age(c.last_frame_age_s), num(fmt.n(c.reconnects)),
    num(fmt.n(c.frames_dropped)), c.last_error || "",
  ]));
  const sensors = document.getElementById("sensors");
  const nodes = Array.isArray(h.sensors) ? h.sensors : h.sensors && typeof h.sensors === "object"
    ? (h.sensors.nodes ? h.sensors.nodes : Object.entries(h.sensors).map(([id, v]) => ({ id, ...v }))) : [];
  if (!nodes.length) {
    sensors.replaceChildren(el("p", { class: "hint", text: t("health.sensors.none") }));
  } else {
    const table = el("table", {}, el("thead", {}, el("tr", {},
      ...[t("health.node"), t("health.kind"), t("health.lastseen"), t("health.errors")].map((text) => el("th", { text })))), el("tbody"));
    sensors.replaceChildren(el("div", { class: "scroll" }, table));
    fillTable(table, nodes.map((n) => [
      n.id ?? n.node_id ?? "?", n.kind ?? "–",
      n.last_seen_age_s != null ? age(n.last_seen_age_s) : when(n.last_seen),
      num(fmt.n(n.errors ?? n.rejected ?? n.malformed ?? 0)),
    ]));
  }
  const s = h.storage;
  facts(document.getElementById("storage"), [
    [t("health.dbsize"), fmt.bytes(s.database_bytes)],
    [t("health.budget"), s.budget_used == null ? "–" : fmt.pct(s.budget_used) + " / " + fmt.bytes(s.budget_bytes)],
    [t("health.disk"), fmt.pct(s.disk_used) + " (" + fmt.bytes(s.disk_free_bytes) + " " + t("health.free") + ")"],
    [t("health.oldest"), when(s.oldest_data)],
  ]);
  const u = h.uplink;
  facts(document.getElementById("uplink-facts"), [
    [t("health.connected"), yesNo(u.connected)],
    [t("health.broker"), u.broker],
    [t("health.pending"), fmt.n(u.pending)],
    [t("health.lastack"), when(u.last_ack_at)],
    [t("health.reconnects"), fmt.n(u.reconnects)],
    [t("health.error"), u.last_error],
  ]);
  const p = h.pos;
  facts(document.getElementById("pos"), p ? [
    [t("health.connected"), yesNo(p.connected)],
    [t("health.receipts"), fmt.n(p.stored)],
    [t("health.rejected"), fmt.n(p.rejected)],
    [t("health.error"), p.last_error],
  ] : [[t("health.pos"), t("health.pos.none")]]);
  const uptime = h.uptime_s;
  facts(document.getElementById("detector"), [
    [t("health.backend"), h.detector.backend],
    [t("health.ms"), h.detector.median_ms == null ? "–" : fmt.n(h.detector.median_ms) + " ms"],
    [t("health.stages"), Object.entries(h.detector.stage_ms || {})
      .map(([stage, ms]) => t("health.stage." + stage) + " " + fmt.n(ms) + " ms").join(" · ") || "–"],
    [t("health.running"), t("health.minutes", { n: fmt.n(Math.round(uptime / 60)) })],
  ]);
  fillTable(document.getElementById("jobs"), Object.entries(h.jobs).map(([name, j]) => [
    name, j.last_run ? fmt.dateTime(new Date(j.last_run * 1000)) : "–", num(fmt.n(j.runs)), j.last_error || "",
  ]));
  stamp();
}

async function loadHealth() {
  try { renderHealth(await api("/api/health")); setLive(true); } catch (e) { setLive(false); }
}
loadHealth();
setInterval(loadHealth, 5000);
