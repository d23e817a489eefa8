// Secrets shown once (a new API token's key, an invitation link): a Copy button beside the
// read-only field, <button data-copy="FIELD-ID">. The field stays selectable without this file.

for (const button of document.querySelectorAll("button[data-copy]")) {
  const field = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copy-status");
  if (!field) continue;
  field.addEventListener("focus", () => field.select());
  button.addEventListener("click", async () => {
    field.focus();
    field.select();
    let copied = false;
    try {
      await navigator.clipboard.writeText(field.value);
      copied = true;
    } catch {
      // No clipboard API (an insecure origin, or permission refused): the older command.
      copied = document.execCommand("copy");
    }
    if (status) status.textContent = copied ? "Copied." : "Press Ctrl+C (⌘C) to copy the selected text.";
  });
}
