// The wizard's extensions step: filters the list as one types (the page's own "Search"
// button does the same on the server without JavaScript). Selected extensions always stay
// visible, like upstream's list. Enter in the search box filters instead of submitting.
"use strict";
window.bootfactory.enhance("[data-filter]", (input) => {
  const list = document.querySelector(input.dataset.filter);
  if (!list) return;
  const none = document.getElementById("ext-none");
  const items = Array.from(list.querySelectorAll("[data-search]"));
  const apply = () => {
    const needle = input.value.trim().toLowerCase();
    let shown = 0;
    for (const item of items) {
      const box = item.querySelector("input[type=checkbox]");
      const show = needle === "" || (box && box.checked) || item.dataset.search.includes(needle);
      item.hidden = !show;
      if (show) shown += 1;
    }
    if (none) none.hidden = shown !== 0 || list.querySelector("input:checked") !== null;
  };
  input.addEventListener("input", apply);
  // "Next" moves on: the search text is not a choice, so it stays out of the next URL. (The
  // field is enabled again when the browser brings this page back from its history.)
  if (input.form) {
    input.form.addEventListener("submit", (event) => {
      if (!event.submitter || event.submitter.name !== "op") input.disabled = true;
    });
  }
  window.addEventListener("pageshow", () => { input.disabled = false; });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      apply();
    }
  });
  apply();
});
