// Live refresh: re-fetch the page's JSON endpoint and swap in the fragments the server rendered
// (and escaped). No framework, nothing loaded from elsewhere.
"use strict";
(function () {
  const root = document.querySelector("[data-live]");
  if (!root) return;
  const every = Number(root.dataset.every) || 2000;
  let count = 0;
  async function refresh() {
    try {
      const response = await fetch(root.dataset.live, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.ok) {
        const data = await response.json();
        for (const [name, html] of Object.entries(data.fragments || {})) {
          const target = root.querySelector(`[data-fragment="${name}"]`);
          if (target) target.innerHTML = html;
        }
        count += 1;
        root.dataset.refreshes = String(count);
      }
    } catch (error) {
      // The dashboard restarted or the network blinked: the next tick tries again.
    }
    window.setTimeout(refresh, every);
  }
  window.setTimeout(refresh, every);
})();
