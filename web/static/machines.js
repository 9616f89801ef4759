// The machines page: keeps the inventory table live. A Server-Sent Events stream
// (/ui/machines/events) says when something changed (a machine asked to boot, an assignment
// or the default changed); the table is then fetched as a fragment and swapped in. Without
// this script the page is the same and is reloaded by hand.
"use strict";
window.bootfactory.enhance("#machines-table[data-events]", (holder) => {
  if (!window.EventSource) return;
  const live = document.getElementById("live");
  let fetching = false;
  let again = false;
  async function refresh() {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      do {
        again = false;
        const r = await fetch(holder.dataset.fragment, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (!r.ok) break;
        const html = await r.text();
        const focused = document.activeElement && holder.contains(document.activeElement);
        if (!focused) holder.innerHTML = html;
        else again = false;
      } while (again);
    } catch (_) {
      // The next event (or a reload) tries again.
    } finally {
      fetching = false;
    }
  }
  let source = null;
  function open() {
    source = new EventSource(holder.dataset.events);
    source.addEventListener("ready", () => { live.hidden = false; refresh(); });
    source.addEventListener("change", refresh);
    source.addEventListener("error", () => {
      live.hidden = true;
      // The browser reconnects by itself unless the server refused (session ended, too
      // many streams): then stop and leave the page as it is.
      if (source.readyState === EventSource.CLOSED) source = null;
    });
  }
  open();
  window.addEventListener("pagehide", () => { if (source) source.close(); });
});
