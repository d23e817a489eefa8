// Manager pages: small progressive enhancements; every page works without this file.
//
// - Imports: while the job on screen is queued or running, poll its API endpoint and move
//   the progress bar; when it ends, reload so the server renders the result and the
//   importer's errors (file / line / field) in the page.
// - Imports: show only the options of the format chosen in the upload form.

const $ = (id) => document.getElementById(id);

function followImport() {
  const job = $("job");
  if (!job || !job.dataset.statusUrl) return;
  const url = job.dataset.statusUrl;
  let delay = 400;
  const poll = async () => {
    let data = null;
    try {
      const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (res.ok) data = await res.json();
    } catch {
      data = null; // a network blip: try again with the next tick
    }
    if (data) {
      const progress = Math.max(0, Math.min(1, Number(data.progress) || 0));
      $("job-progress").value = progress;
      $("job-percent").textContent = `${Math.round(progress * 100)}%`;
      const state = $("job-state");
      state.textContent = data.state.charAt(0).toUpperCase() + data.state.slice(1);
      state.className = `state state-${data.state}`;
      job.dataset.state = data.state;
      if (data.state === "succeeded" || data.state === "failed") {
        window.location.replace(window.location.href);
        return;
      }
    }
    delay = Math.min(delay * 1.5, 3000);
    setTimeout(poll, delay);
  };
  setTimeout(poll, delay);
}

function formatOptions() {
  const select = $("id_format");
  if (!select) return;
  const sync = () => {
    for (const box of document.querySelectorAll(".format-options")) box.hidden = box.dataset.format !== select.value;
  };
  select.addEventListener("change", sync);
  sync();
}

followImport();
formatOptions();
