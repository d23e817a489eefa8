// The one progress component of every job kind (frontend/_job_progress.html): while a job
// is queued or running, poll its generic API endpoint (/api/v1/projects/{p}/jobs/{kind}/{id}/)
// and move its bar, percent, steps, state and error. Each update is also sent as a
// "job:update" event (detail: the job) for pages that draw more (curves, logs); when the job
// ends, "job:finished" fires and, with data-on-finish="reload", the page reloads so the
// server renders the kind's own result. Text goes in through textContent only.

import { formatTimes } from "./text.js";

const LIVE = new Set(["queued", "running"]);
const FIRST_MS = 500;
const MAX_MS = 3000;

function render(box, job) {
  const part = (name) => document.getElementById(`${box.dataset.prefix}-${name}`);
  const progress = Math.max(0, Math.min(1, Number(job.progress) || 0));
  const bar = part("progress");
  if (bar) {
    bar.value = progress;
    bar.textContent = `${Math.round(progress * 100)}%`;
  }
  const percent = part("percent");
  if (percent) percent.textContent = `${Math.round(progress * 100)}%`;
  const steps = part("steps");
  if (steps) steps.textContent = job.total_steps ? `${job.step}/${job.total_steps}` : "";
  const state = part("state");
  if (state) {
    state.className = `state state-${job.state}`;
    // The same words the page was rendered with ("Running", "Succeeded", ...).
    const label = job.state.charAt(0).toUpperCase() + job.state.slice(1);
    state.textContent = label + (job.cancel_requested && job.state === "running" ? " (cancelling)" : "");
  }
  const error = part("error");
  if (error) {
    error.textContent = job.error || "";
    error.hidden = !job.error;
  }
  if (!LIVE.has(job.state)) {
    const cancel = part("cancel");
    if (cancel) cancel.remove();
  }
  box.dataset.state = job.state;
}

export function followJob(box) {
  if (!LIVE.has(box.dataset.state) || box.dataset.following) return;
  box.dataset.following = "true";
  let delay = FIRST_MS;
  const poll = async () => {
    let job = null;
    try {
      const response = await fetch(box.dataset.jobUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) job = await response.json();
    } catch {
      job = null; // a network blip: try again on the next tick
    }
    if (job) {
      render(box, job);
      box.dispatchEvent(new CustomEvent("job:update", { detail: job, bubbles: true }));
      if (!LIVE.has(job.state)) {
        box.dispatchEvent(new CustomEvent("job:finished", { detail: job, bubbles: true }));
        if (box.dataset.onFinish === "reload") window.location.reload();
        return;
      }
    }
    delay = Math.min(delay * 1.5, MAX_MS);
    window.setTimeout(poll, delay);
  };
  window.setTimeout(poll, delay);
}

export function followJobs(root = document) {
  for (const box of root.querySelectorAll(".job-progress[data-job-url]")) followJob(box);
}

formatTimes();
followJobs();
