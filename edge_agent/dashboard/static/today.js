// Today: first the JSON API, then live updates pushed by the server (EventSource).
"use strict";

function renderToday(data) {
  const d = data.today;
  document.getElementById("total-in").textContent = fmt.n(d.in);
  document.getElementById("total-out").textContent = fmt.n(d.out);
  document.getElementById("occupancy").textContent = fmt.n(d.occupancy);
  document.getElementById("pending").textContent = fmt.n(data.uplink.pending ?? 0);
  const up = document.getElementById("uplink");
  up.textContent = data.uplink.connected ? t("uplink.connected") : t("uplink.offline");
  up.className = "badge " + (data.uplink.connected ? "ok" : "bad");

  const lw = d.last_week;
  const weekday = fmt.weekday(lw.date);
  const lastweek = document.getElementById("lastweek");
  lastweek.textContent = lw.in_same_time || lw.in_whole_day
    ? t("today.lastweek", { day: weekday, n: fmt.n(lw.in_same_time) }) + (lw.change == null ? "" : " (" + fmt.change(lw.change) + ")")
    : t("today.lastweek.none", { day: fmt.day(lw.date) });
  lastweek.className = "detail " + (lw.change > 0 ? "up" : lw.change < 0 ? "down" : "");

  const busiest = d.busiest_hour;
  document.getElementById("busiest").textContent = busiest ? fmt.hour(busiest.hour) : "–";
  document.getElementById("busiest-detail").textContent = busiest ? t("today.busiest.detail", { n: fmt.n(busiest.in) }) : t("today.busiest.none");

  const conv = d.conversion;
  document.getElementById("conversion").textContent = conv.configured ? fmt.pct(conv.rate) : "–";
  document.getElementById("conversion-detail").textContent = conv.configured
    ? t("today.conversion.detail", { receipts: fmt.n(conv.receipts), visitors: fmt.n(d.in) })
    : t("today.conversion.none");

  fillTable(document.getElementById("lines"), d.lines.map((l) => [l.camera, l.line, num(fmt.n(l.in)), num(fmt.n(l.out))]));

  const hours = d.hours.map(fmt.hour);
  plot("hours-chart", [
    { x: hours, y: d.hourly_in, type: "bar", name: t("today.hours.today"), marker: { color: "#2b6cb0" } },
    { x: hours, y: lw.hourly_in, type: "scatter", mode: "lines", name: t("today.hours.lastweek") + " (" + weekday + ")",
      line: { color: "#a0aec0", dash: "dot", width: 2 } },
  ], { xaxis: categoryAxis("hours-chart"), yaxis: countAxis([d.hourly_in, lw.hourly_in]) });
  const minutes = data.minutes.map((m) => fmt.clock(m.minute.replace("Z", ":00Z")));
  plot("chart", [
    { x: minutes, y: data.minutes.map((m) => m.in), type: "bar", name: t("common.in"), marker: { color: "#2f855a" } },
    { x: minutes, y: data.minutes.map((m) => m.out), type: "bar", name: t("common.out"), marker: { color: "#c53030" } },
  ], { barmode: "group", xaxis: categoryAxis("chart", { tickangle: 0, nticks: 6 }),
        yaxis: countAxis([data.minutes.map((m) => m.in), data.minutes.map((m) => m.out)]) });
  stamp();
}

async function loadToday() {
  try { renderToday(await api("/api/summary")); } catch (e) { if (e.status !== 401) setLive(false); }
}

function connectLive() {
  const source = new EventSource("/api/stream");
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("summary", (event) => { setLive(true); renderToday(JSON.parse(event.data)); });
  source.addEventListener("logout", () => location.assign("/login?next=/"));
  source.addEventListener("error", () => {
    setLive(false);
    // The browser reconnects by itself; if the session ended, go to the login page.
    api("/api/me").catch(() => {});
  });
}

loadToday().then(connectLive);
