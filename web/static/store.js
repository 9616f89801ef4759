// The store page: uploads a bundle with a progress bar (upload progress, then the import's
// NDJSON events), then shows the result and the refreshed lists without a page load.
// Without this file the form posts normally and the server answers with the result page.
"use strict";
window.bootfactory.enhance("form#upload", (form) => {
  const bar = form.querySelector("#upload-progress");
  const status = form.querySelector("#upload-status");
  const button = form.querySelector("button[type=submit]");
  const fileInput = form.querySelector("input[type=file]");
  const human = (n) => {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  };
  const say = (text, state) => {
    status.textContent = text;
    status.className = state ? "alert " + state : "";
    form.dataset.state = state || "busy";
  };
  // The page at `url`'s lists replace this page's (the form and its status stay).
  const refresh = async () => {
    const r = await fetch(window.location.pathname, { credentials: "same-origin" });
    if (!r.ok) return;
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    for (const id of ["totals", "versions", "held"]) {
      const fresh = doc.getElementById(id);
      const old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }
  };
  form.addEventListener("submit", (ev) => {
    const file = fileInput.files && fileInput.files[0];
    if (!file) return; // the browser's own "required" message, or the server's answer
    ev.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/x-ndjson");
    xhr.setRequestHeader("X-Bundle-Size", String(file.size));
    bar.hidden = false;
    bar.max = file.size || 1;
    bar.value = 0;
    button.disabled = true;
    say("Uploading " + file.name + "…");
    let seen = 0;
    let outcome = null;
    const lines = () => {
      const text = xhr.responseText || "";
      const end = text.lastIndexOf("\n");
      if (end < seen) return;
      for (const line of text.slice(seen, end).split("\n")) {
        if (!line.trim()) continue;
        let e;
        try { e = JSON.parse(line); } catch (_) { continue; }
        if (e.event === "progress") {
          if (e.total) bar.max = e.total;
          bar.value = Math.min(e.bytes, bar.max);
          say("Importing: " + human(e.bytes) + (e.total ? " of " + human(e.total) : ""));
        } else if (e.event === "message") {
          say(e.text);
        } else if (e.event === "done" || e.event === "error") {
          outcome = e;
        }
      }
      seen = end + 1;
    };
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      bar.max = e.total;
      bar.value = e.loaded;
      say("Uploading " + file.name + ": " + human(e.loaded) + " of " + human(e.total));
    });
    xhr.addEventListener("progress", lines);
    xhr.addEventListener("load", async () => {
      button.disabled = false;
      const type = xhr.getResponseHeader("content-type") || "";
      if (type.startsWith("application/x-ndjson")) lines();
      if (xhr.status >= 400 || (outcome && outcome.event === "error")) {
        let message = outcome && outcome.message;
        if (!message) {
          const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
          const alert = doc.querySelector("main .alert.error");
          message = alert ? alert.textContent : "the server answered " + xhr.status;
        }
        bar.value = 0;
        say("Not imported (nothing of it was kept): " + message, "error");
        return;
      }
      if (!outcome) {
        say("The import ended without a result: reload the page to see what the store holds.", "error");
        return;
      }
      const report = outcome.report || {};
      const images = (report.images || []).length;
      bar.value = bar.max;
      say("Done: " + images + " image" + (images === 1 ? "" : "s") + " named, " +
        (report.blobs_written || 0) + " blobs written, " + (report.blobs_skipped || 0) +
        " already stored" + ((report.skipped || []).length ? "; skipped: " + report.skipped.join("; ") : "") + ".", "ok");
      form.reset();
      await refresh();
    });
    xhr.addEventListener("error", () => {
      button.disabled = false;
      say("The upload failed: the connection was lost.", "error");
    });
    xhr.send(new FormData(form));
  });
});
