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
  // Fetches the table and swaps it in; one fetch at a time, with one more if a change came in
  // meanwhile. While the keyboard focus is inside the table (a Change link, an Unassign
  // button), the swap waits until it leaves, so the focus is never lost.
  async function refresh() {
    if (fetching) { again = true; return; }
    if (holder.contains(document.activeElement)) {
      holder.addEventListener("focusout", () => setTimeout(refresh, 0), { once: true });
      return;
    }
    fetching = true;
    try {
      const r = await fetch(holder.dataset.fragment, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
        // A redirect means the session ended: reload (to the login page) rather than put
        // the login form into the table.
        redirect: "manual",
      });
      if (r.type === "opaqueredirect") { window.location.reload(); return; }
      if (r.ok) holder.innerHTML = await r.text();
    } catch (_) {
      // The next event (or a reload) tries again.
    } finally {
      fetching = false;
    }
    if (again) { again = false; refresh(); }
  }
  const source = new EventSource(holder.dataset.events);
  // "ready" on every (re)connection: refresh once to catch what happened in between.
  source.addEventListener("ready", () => { live.hidden = false; refresh(); });
  source.addEventListener("change", refresh);
  // The browser reconnects by itself (the server ends each stream after a while); when it
  // gives up (session ended, too many streams) the badge goes and the page stays as it is.
  source.addEventListener("error", () => { live.hidden = true; });
  window.addEventListener("pagehide", () => source.close());
});
