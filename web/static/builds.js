// Builds page (/ui/builds): keeps the running and recent builds current without a reload.
// While builds run (or a warm-up form was just sent and its answer is awaited, or one was
// started in the background and its first build is not listed yet), the page
// polls the HTML fragment /ui/builds/live every 1.5 s with the session cookie and swaps the
// #live section; whenever builds finished since the cached assets were fetched (the newest
// finished build changed), it fetches the fragment with the cached assets and swaps #cached
// too. Without JavaScript the page shows the same on reload.
"use strict";
(function () {
  const INTERVAL_MS = 1500;
  // After the last build ends the page keeps watching this long, for the next build of a
  // warm-up that runs its builds one after another.
  const SETTLE_MS = 6000;
  window.bootfactory.enhance("#live[data-src]", (initial) => {
    let pending = false;   // a warm-up form was submitted: its builds are about to run
    let timer = null;
    let everRunning = Number(initial.dataset.running) > 0;
    let idleSince = null;
    // The newest finished build the shown cached assets already include.
    const loadedNewest = initial.dataset.newest || "";
    let cachedAt = loadedNewest;
    // A warm-up was just started in the background: its first build may not be listed yet.
    const expectUntil = document.getElementById("warm-continuing") ? Date.now() + 60000 : 0;
    const live = () => document.getElementById("live");
    const running = () => Number(live().dataset.running) > 0;
    const newest = () => live().dataset.newest || "";

    const swap = (html) => {
      const tpl = document.createElement("template");
      tpl.innerHTML = html;
      for (const id of ["live", "cached"]) {
        const fresh = tpl.content.getElementById(id);
        const old = document.getElementById(id);
        if (fresh && old) old.replaceWith(fresh);
      }
    };

    const poll = async (withCached) => {
      timer = null;
      const src = initial.dataset.src + (withCached ? "?cached=1" : "");
      try {
        const r = await fetch(src, { credentials: "same-origin", redirect: "manual", headers: { Accept: "text/html" } });
        // A redirect (the session ended) or an error: stop; a reload shows why.
        if (r.type === "opaqueredirect" || !r.ok) return;
        swap(await r.text());
        if (withCached) cachedAt = newest();
      } catch (_) {
        // Network hiccup: try again on the next tick.
      }
      schedule();
    };

    const schedule = () => {
      if (timer !== null) return;
      const now = running();
      // A build that finished since the page was loaded counts as seen running: a fast
      // warm-up's builds can start and end between two polls.
      everRunning = everRunning || now || newest() !== loadedNewest;
      if (now || pending) {
        idleSince = null;
        timer = setTimeout(() => poll(false), INTERVAL_MS);
      } else if (newest() !== cachedAt) {
        // Builds finished since the cached assets were fetched: fetch them with the rest.
        timer = setTimeout(() => poll(true), 0);
      } else if (!everRunning && Date.now() < expectUntil) {
        // A background warm-up whose first build is not listed yet.
        timer = setTimeout(() => poll(false), INTERVAL_MS);
      } else if (everRunning) {
        if (idleSince === null) idleSince = Date.now();
        if (Date.now() - idleSince < SETTLE_MS) timer = setTimeout(() => poll(false), INTERVAL_MS);
      }
    };

    const form = document.getElementById("warm-form");
    if (form) {
      form.addEventListener("submit", () => {
        // The page stays until the answer arrives: show the builds meanwhile.
        pending = true;
        const button = document.getElementById("warm-submit");
        if (button) {
          button.disabled = true;
          button.textContent = "Warming…";
        }
        schedule();
      });
    }
    schedule();
  });
})();
