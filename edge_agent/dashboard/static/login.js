// The login form posts JSON to /api/login, then goes where the person was headed.
"use strict";
document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("login-error");
  error.textContent = "";
  const username = document.getElementById("username").value.trim();
  const password = document.getElementById("password").value;
  try {
    await api("/api/login", { method: "POST", body: { username, password } });
    const next = new URLSearchParams(location.search).get("next") || "/";
    location.assign(next.startsWith("/") && !next.startsWith("//") ? next : "/");
  } catch (e) {
    if (e.status === 429) {
      const match = /(\d+) s/.exec(e.detail || "");
      error.textContent = t("login.throttled", { s: match ? match[1] : "60" });
    } else if (e.status === 401 && /set-password/.test(e.detail || "")) {
      error.textContent = t("login.noaccount");
    } else if (e.status === 401) {
      error.textContent = t("login.failed");
    } else {
      error.textContent = t("error.generic", { msg: e.detail || e.message });
    }
  }
});
