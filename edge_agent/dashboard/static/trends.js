// Trends: hourly or daily series over a chosen range, per door and per zone.
"use strict";
const form = document.getElementById("range");
const params = new URLSearchParams(location.search);
document.getElementById("start").value = params.get("start") || storeToday(-6);
document.getElementById("end").value = params.get("end") || storeToday();
document.getElementById("granularity").value = params.get("granularity") || "day";

function labels(data) {
  return data.buckets.map(data.granularity === "hour" ? fmt.dayHour : fmt.day);
}

async function loadTrends() {
  const query = new URLSearchParams({
    start: document.getElementById("start").value,
    end: document.getElementById("end").value,
    granularity: document.getElementById("granularity").value,
  });
  history.replaceState(null, "", "?" + query);
  try {
    const data = await api("/api/trends?" + query);
    showError("error", null);
    const x = labels(data);
    const xaxis = categoryAxis("total-chart");
    plot("total-chart", [
      { x, y: data.total.in, type: "bar", name: t("common.in"), marker: { color: "#2f855a" } },
      { x, y: data.total.out, type: "bar", name: t("common.out"), marker: { color: "#c53030" } },
    ], { barmode: "group", xaxis, yaxis: countAxis([data.total.in, data.total.out]) });
    plot("doors-chart", data.doors.map((door) => ({
      x, y: door.in, type: "scatter", mode: "lines+markers", name: door.camera + " · " + door.line,
    })), { xaxis, yaxis: countAxis(data.doors.map((d) => d.in)), showlegend: true });
    plot("zones-chart", data.zones.map((zone) => ({
      x, y: zone.entries, type: "scatter", mode: "lines+markers",
      name: (zone.product ? zone.product + " · " : "") + zone.camera + " · " + zone.zone,
    })), { xaxis, yaxis: countAxis(data.zones.map((z) => z.entries)), showlegend: true });
    stamp();
  } catch (e) { showError("error", e); }
}
form.addEventListener("submit", (event) => { event.preventDefault(); loadTrends(); });
loadTrends();
