// The console's one script (no inline script anywhere: the CSP allows only this file).
// - the queue table's body is refreshed every 5 s;
// - a running redrive's page polls its progress twice a second and reloads once it is done
//   (the finished page is rendered by the server, with what moved).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const rows = document.getElementById("queue-rows");
  if (rows) {
    setInterval(async () => {
      const response = await fetch(rows.dataset.refresh, { credentials: "same-origin" });
      if (response.ok) rows.innerHTML = await response.text();
    }, 5000);
  }
  const run = document.getElementById("redrive-run");
  if (run && run.dataset.finished === "no") {
    const show = (id, value) => { document.getElementById(id).textContent = String(value); };
    const timer = setInterval(async () => {
      const response = await fetch(run.dataset.progress, { credentials: "same-origin" });
      if (!response.ok) return;
      const progress = await response.json();
      const bar = document.getElementById("run-progress");
      bar.max = Math.max(progress.total, 1);
      bar.value = progress.done;
      show("run-done", progress.done);
      show("run-total", progress.total);
      show("run-moved", progress.moved);
      show("run-gone", progress.gone);
      if (progress.finished) {
        clearInterval(timer);
        window.location.reload();
      }
    }, 500);
  }
});
