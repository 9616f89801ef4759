// bootfactory web UI: progressive enhancement only. Every page works without this file;
// with it, copy buttons copy, and pages that opt in get live parts (data-* attributes).
// No framework, no external requests. Page-specific behaviour registers itself in
// `bootfactory.enhancers` keyed by a data attribute and runs on DOMContentLoaded.
"use strict";
(function () {
  const enhancers = [];
  window.bootfactory = {
    // Runs `fn(element)` for every element matching `selector` once the page is loaded.
    enhance(selector, fn) { enhancers.push([selector, fn]); },
    // The CSRF token of the admin pages (from the logout form), for script requests.
    csrf() {
      const input = document.querySelector('input[name="csrf"]');
      return input ? input.value : "";
    },
    base: "",
  };
  // Copy buttons: <button data-copy="#element-id">Copy</button>.
  window.bootfactory.enhance("[data-copy]", (button) => {
    button.hidden = false;
    const label = button.textContent;
    button.addEventListener("click", async () => {
      const target = document.querySelector(button.dataset.copy);
      if (!target) return;
      const text = target.value !== undefined ? target.value : target.textContent;
      try {
        await navigator.clipboard.writeText(text.trim());
        button.textContent = "Copied";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(target);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = label; }, 2000);
    });
  });
  document.addEventListener("DOMContentLoaded", () => {
    window.bootfactory.base = document.body.dataset.base || "";
    for (const [selector, fn] of enhancers) {
      document.querySelectorAll(selector).forEach((el) => fn(el));
    }
  });
})();
