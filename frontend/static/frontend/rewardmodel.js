// Reward-model pages: live curves and log on a run's page, from the updates of the shared
// progress component (jobs.js, "job:update" events). Data comes from the #rm-run-data
// json_script block; every text goes in through textContent, never innerHTML, and server
// paths in the log are replaced (text.js).

import { lineChart } from "./plot.js";
import { scrubPaths, setTime } from "./text.js";


function pageData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

// --- a run's page -----------------------------------------------------------------------

function seriesOf(history, kind, key) {
  return history.filter((p) => p.kind === kind && typeof p[key] === "number").map((p) => [p.step, p[key]]);
}

// An axis that spans the data with a margin, never below ``floor``: a loss going from 0.693
// to 0.664 drawn from 0 would look flat.
export function fittedRange(values, floor = -Infinity) {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return {};
  const lo = finite.reduce((m, v) => (v < m ? v : m), Infinity);
  const hi = finite.reduce((m, v) => (v > m ? v : m), -Infinity);
  const pad = (hi - lo || Math.abs(hi) * 0.1 || 1) * 0.1;
  return { yMin: Math.max(floor, lo - pad), yMax: hi + pad };
}

function drawCharts(history) {
  const lossEl = document.getElementById("loss-chart");
  const accEl = document.getElementById("accuracy-chart");
  if (!lossEl || !accEl) return;
  if (!history.some((p) => p.kind === "step")) return;
  const train = seriesOf(history, "step", "loss");
  const validation = seriesOf(history, "eval", "loss");
  lineChart(lossEl, {
    series: [
      { name: "train (per step)", points: train },
      { name: "validation (per epoch)", points: validation, dashed: true },
    ],
    xLabel: "optimizer step",
    yLabel: "Bradley–Terry loss",
    ...fittedRange([...train, ...validation].map((p) => p[1]), 0),
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

// The same words as the log's progress lines (rewardmodel.jobs.duration_text).
export function durationText(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

// Speed from the newest step point that has one (the worker measures it); time left from it
// while the run is running.
function showSpeed(run) {
  const speedEl = document.getElementById("run-speed");
  const etaEl = document.getElementById("run-eta");
  if (!speedEl || !etaEl) return;
  const history = run.metrics_history || run.history || [];
  let rate = null;
  for (let i = history.length - 1; i >= 0; i--) {
    const p = history[i];
    if (p.kind === "step" && Number.isFinite(p.steps_per_second) && p.steps_per_second > 0) {
      rate = p.steps_per_second;
      break;
    }
  }
  speedEl.textContent = rate === null ? "–" : rate >= 1 ? `${rate.toFixed(1)} steps/s` : `${(1 / rate).toFixed(1)} s/step`;
  const left = run.total_steps ? run.total_steps - run.step : null;
  if (run.state !== "running" || rate === null || left === null) {
    etaEl.textContent = run.state === "succeeded" ? "done" : "–";
  } else {
    etaEl.textContent = durationText(left / rate);
  }
}

function updateRun(run) {
  showSpeed(run);
  document.getElementById("run-attempts").textContent = `${run.attempts} of ${run.max_attempts}`;
  document.getElementById("run-checkpoint").textContent =
    run.checkpoint_step === null ? "none yet" : `step ${run.checkpoint_step}`;
  if (run.heartbeat_at) setTime(document.getElementById("run-heartbeat"), run.heartbeat_at, { timeOnly: true });
  const log = document.getElementById("run-log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = run.log_tail.map((line) => `${scrubPaths(line)}\n`).join("");
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// Thinning can keep the length of the history while changing it: key on the last point too.
function historyKey(history) {
  const last = history[history.length - 1];
  return last ? `${history.length}:${last.kind}:${last.step}` : "0";
}

function initRun(data) {
  let drawn = historyKey(data.history);
  drawCharts(data.history);
  showSpeed(data);
  const log = document.getElementById("run-log");
  if (log) log.scrollTop = log.scrollHeight;
  // The progress component (jobs.js) polls the run; its updates carry the curves and the log.
  document.addEventListener("job:update", (event) => {
    const run = event.detail;
    updateRun(run);
    if (historyKey(run.metrics_history) !== drawn) {
      drawn = historyKey(run.metrics_history);
      drawCharts(run.metrics_history);
    }
  });
}

// --- the list page's scoring playground ------------------------------------------------

// "Add a response" copies the last response field (the form takes as many as are posted,
// up to data-max); without the script the page shows a fixed number of fields.
function initPlayground() {
  const box = document.getElementById("playground-responses");
  const add = document.getElementById("add-response");
  if (!box || !add) return;
  const max = Number(box.dataset.max) || 12;
  const count = () => box.querySelectorAll("textarea").length;
  const refresh = () => {
    add.hidden = count() >= max;
  };
  add.addEventListener("click", () => {
    const n = count() + 1;
    const copy = box.lastElementChild.cloneNode(true);
    copy.classList.remove("invalid");
    for (const error of copy.querySelectorAll(".field-error")) error.remove();
    const area = copy.querySelector("textarea");
    const label = copy.querySelector("label");
    area.name = area.name.replace(/_\d+$/, `_${n}`);
    area.id = area.id.replace(/_\d+$/, `_${n}`);
    area.textContent = "";
    area.value = "";
    label.htmlFor = area.id;
    label.textContent = `Response ${n}`;
    box.appendChild(copy);
    area.focus();
    refresh();
  });
  refresh();
}

const run = pageData("rm-run-data");
if (run) initRun(run);
initPlayground();
