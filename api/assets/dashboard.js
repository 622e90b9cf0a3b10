// depositd dashboard: the one script, for the copy buttons next to a secret shown once (an API
// key, a webhook signing secret). Everything else works without it; without it (or without the
// clipboard API) the button stays hidden and the field is selectable as before.
// Same-origin only: the dashboard's Content-Security-Policy allows no other script.
"use strict";
document.querySelectorAll("button[data-copy]").forEach((button) => {
  const field = document.getElementById(button.dataset.copy);
  if (!field || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    } catch (_) {
      field.focus();
      field.select();
      button.textContent = "Press Ctrl+C to copy";
    }
  });
});
