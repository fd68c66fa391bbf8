// Refreshes the queue table every 5 s (the whole page stays server-rendered; no inline script).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("queue-rows");
  if (!rows) return;
  setInterval(async () => {
    const response = await fetch(rows.dataset.refresh, { credentials: "same-origin" });
    if (response.ok) rows.innerHTML = await response.text();
  }, 5000);
});
