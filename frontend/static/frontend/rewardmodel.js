// Reward-model pages: live progress bars on the list, live curves and log on a run's page.
// Data comes from json_script blocks (#rm-list-data, #rm-run-data) and same-origin JSON
// polls; every text goes in through textContent, never innerHTML. No inline script.

import { lineChart } from "./plot.js";

const POLL_MS = 2000;
const LIVE = new Set(["queued", "running"]);

function pageData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function setState(el, state, cancelling) {
  if (!el) return;
  el.className = `state state-${state}`;
  el.textContent = state + (cancelling && state === "running" ? " (cancelling)" : "");
}

// --- the list page ----------------------------------------------------------------------

function updateRow(row, run) {
  const field = (name) => row.querySelector(`[data-field="${name}"]`);
  setState(field("state"), run.state, run.cancel_requested);
  const bar = field("progress");
  if (bar) {
    bar.value = run.progress;
    bar.textContent = run.progress.toFixed(2);
  }
  const steps = field("steps");
  if (steps) steps.textContent = run.total_steps ? `${run.step}/${run.total_steps}` : "";
  const attempts = field("attempts");
  if (attempts) attempts.textContent = `${run.attempts}/${run.max_attempts}`;
  const result = field("result");
  if (result) {
    result.replaceChildren();
    if (run.version) result.textContent = `v${run.version}`;
    else if (run.error) {
      const span = document.createElement("span");
      span.className = "error-text";
      span.textContent = run.error;
      result.append(span);
    }
  }
}

function initList(data) {
  const table = document.getElementById("runs");
  if (!table) return;
  const rows = () => Array.from(table.querySelectorAll("tr[data-run]"));
  const anyLive = () => rows().some((row) => LIVE.has(row.querySelector('[data-field="state"]').textContent.split(" ")[0]));
  let wasLive = anyLive();
  async function poll() {
    if (!anyLive()) return;
    try {
      const { runs } = await getJSON(data.runs_url);
      const byId = new Map(runs.map((run) => [String(run.id), run]));
      for (const row of rows()) {
        const run = byId.get(row.dataset.run);
        if (run) updateRow(row, run);
      }
      // A run just finished: reload once so the version table shows the new version.
      if (wasLive && !runs.some((run) => LIVE.has(run.state)) && runs.some((run) => run.version)) {
        window.location.reload();
        return;
      }
      wasLive = runs.some((run) => LIVE.has(run.state));
    } catch (err) {
      console.warn(err);
    }
    window.setTimeout(poll, POLL_MS);
  }
  window.setTimeout(poll, POLL_MS);
}

// --- a run's page -----------------------------------------------------------------------

function seriesOf(history, kind, key) {
  return history.filter((p) => p.kind === kind && typeof p[key] === "number").map((p) => [p.step, p[key]]);
}

function drawCharts(history) {
  const lossEl = document.getElementById("loss-chart");
  const accEl = document.getElementById("accuracy-chart");
  if (!lossEl || !accEl) return;
  if (!history.some((p) => p.kind === "step")) return;
  lineChart(lossEl, {
    series: [
      { name: "train (per step)", points: seriesOf(history, "step", "loss") },
      { name: "validation (per epoch)", points: seriesOf(history, "eval", "loss"), dashed: true },
    ],
    xLabel: "optimizer step",
    yLabel: "Bradley–Terry loss",
    yMin: 0,
  });
  lineChart(accEl, {
    series: [
      { name: "train (per step)", points: seriesOf(history, "step", "accuracy") },
      { name: "validation (per epoch)", points: seriesOf(history, "eval", "accuracy"), dashed: true },
    ],
    xLabel: "optimizer step",
    yLabel: "pairwise accuracy",
    yMin: 0,
    yMax: 1,
  });
}

function updateRun(run) {
  setState(document.getElementById("run-state"), run.state, run.cancel_requested);
  const bar = document.getElementById("run-progress");
  bar.value = run.progress;
  bar.textContent = run.progress.toFixed(2);
  document.getElementById("run-steps").textContent = run.total_steps
    ? `step ${run.step} of ${run.total_steps}`
    : "waiting for a worker";
  document.getElementById("run-attempts").textContent = `${run.attempts} of ${run.max_attempts}`;
  document.getElementById("run-checkpoint").textContent =
    run.checkpoint_step === null ? "none yet" : `step ${run.checkpoint_step}`;
  document.getElementById("run-resumed").textContent =
    run.resumed_from_step === null ? "–" : `step ${run.resumed_from_step}`;
  if (run.heartbeat_at) document.getElementById("run-heartbeat").textContent = new Date(run.heartbeat_at).toLocaleTimeString();
  if (run.version) document.getElementById("run-result").textContent = `v${run.version}`;
  const error = document.getElementById("run-error");
  error.textContent = run.error || "";
  error.hidden = !run.error;
  const log = document.getElementById("run-log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = run.log_tail.map((line) => `${line}\n`).join("");
  if (atBottom) log.scrollTop = log.scrollHeight;
  if (!LIVE.has(run.state)) {
    const form = document.getElementById("cancel-form");
    if (form) form.remove();
  }
}

// Thinning can keep the length of the history while changing it: key on the last point too.
function historyKey(history) {
  const last = history[history.length - 1];
  return last ? `${history.length}:${last.kind}:${last.step}` : "0";
}

function initRun(data) {
  let drawn = historyKey(data.history);
  drawCharts(data.history);
  const log = document.getElementById("run-log");
  if (log) log.scrollTop = log.scrollHeight;
  if (data.finished) return;
  async function poll() {
    try {
      const run = await getJSON(data.api_url);
      updateRun(run);
      if (historyKey(run.metrics_history) !== drawn) {
        drawn = historyKey(run.metrics_history);
        drawCharts(run.metrics_history);
      }
      if (!LIVE.has(run.state)) return;
    } catch (err) {
      console.warn(err);
    }
    window.setTimeout(poll, POLL_MS);
  }
  window.setTimeout(poll, POLL_MS);
}

const list = pageData("rm-list-data");
if (list) initList(list);
const run = pageData("rm-run-data");
if (run) initRun(run);
