// Refreshes the page's content in place (the server renders it; this only swaps the HTML) and
// sends the cancel button's request. No other script, no external asset.
(function () {
  "use strict";
  const content = document.getElementById("content");
  const flash = document.getElementById("flash");
  if (!content) return;
  const period = 1000 * Number(content.dataset.refreshS || 5);

  function say(text, bad) {
    flash.textContent = text;
    flash.className = bad ? "error" : "ok";
    flash.hidden = !text;
  }

  async function refresh() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (r.status === 401) { window.location.reload(); return; }
      if (!r.ok) { say("refresh failed: HTTP " + r.status, true); return; }
      content.innerHTML = await r.text();
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      say("server unreachable: " + err, true);
    }
  }

  content.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-cancel]");
    if (!button) return;
    button.disabled = true;
    const id = button.dataset.cancel;
    const r = await fetch("/ui/campaigns/" + id + "/cancel", { method: "POST", credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    say(r.ok ? "campaign " + id + " cancelled" : "cancel refused: " + (body.detail || r.status), !r.ok);
    await refresh();
  });

  window.rtsegRefresh = refresh;  // lets a test (or a console) refresh at once
  setInterval(refresh, period);
})();
