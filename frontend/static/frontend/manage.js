// Manager pages: small progressive enhancements; every page works without this file.
//
// (An import's progress bar is the shared job component, followed by jobs.js.)
// - Imports: show only the options of the format chosen in the upload form.

const $ = (id) => document.getElementById(id);

function formatOptions() {
  const select = $("id_format");
  if (!select) return;
  const sync = () => {
    for (const box of document.querySelectorAll(".format-options")) box.hidden = box.dataset.format !== select.value;
  };
  select.addEventListener("change", sync);
  sync();
}

formatOptions();
