// Policy pages (frontend/templates/frontend/rlloop/): the reward-vs-KL plot and the new-round
// form on the list page; a round's live curves, samples, setup and log on its own page.
//
// A round's page follows the updates of the shared progress component (jobs.js,
// "job:update" events: the generic job API, with the metric history and the log tail); the
// sample tables and the setup are not in those, so each update that brings a new metric
// point also fetches the round's own API once. Data comes from json_script blocks; every
// text goes in through textContent, never innerHTML. Plots are plot.js's.

import { lineChart } from "./plot.js";
import { scrubPaths, setTime } from "./text.js";

document.documentElement.classList.add("js");

function pageData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function el(name, attrs = {}, text = null) {
  const node = document.createElement(name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

// [lo, hi] of the values widened by a share of their span, so that no marker sits on an axis.
function padded(values, share, floorAtZero) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const span = hi - lo || Math.abs(hi) * 0.2 || 1;
  lo -= span * share;
  hi += span * share;
  if (floorAtZero && Math.min(...values) >= 0) lo = Math.max(0, lo);
  return [lo, hi];
}

// --- the list page ----------------------------------------------------------------------

function drawRewardVsKl(series) {
  const container = document.getElementById("reward-kl-chart");
  if (!container || !series.some((s) => s.points.length)) return;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const [xMin, xMax] = padded(xs, 0.12, true);
  const [yMin, yMax] = padded(ys, 0.12, false);
  lineChart(container, {
    series: series.map((s) => ({ name: s.name, points: s.points, labels: s.labels, line: false })),
    xLabel: "KL to the reference (nats per response)",
    yLabel: "mean score",
    title: "Reward against KL of the succeeded PPO rounds",
    xMin, xMax, yMin, yMax,
    height: 300,
    legend: series.length > 1,
  });
}

function initRoundForm(form) {
  const sync = () => {
    const chosen = form.querySelector('input[name="method"]:checked');
    const method = chosen ? chosen.value : form.dataset.method;
    for (const fieldset of form.querySelectorAll(".method-options")) fieldset.hidden = fieldset.dataset.for !== method;
    const source = form.querySelector('select[name="sft_source"]');
    const responseSource = form.querySelector('select[name="response_source"]');
    if (source && responseSource) responseSource.closest(".field").hidden = source.value !== "demonstrations";
  };
  form.addEventListener("change", (event) => {
    if (event.target.name === "method" || event.target.name === "sft_source") sync();
  });
  sync();
}

// --- a round's page -----------------------------------------------------------------------

// PPO's curves, by the cleanrl names rlloop.ppo records. A series without points (the gold
// score of a round that watches no gold reward model) is left out of its chart.
const PPO_CHARTS = [
  {
    id: "score", title: "Score", yLabel: "reward-model score",
    series: [
      { key: "objective/scores", name: "score" },
      { key: "objective/gold_scores", name: "gold score" },
      { key: "objective/rlhf_reward", name: "score − β·KL", dashed: true },
    ],
  },
  { id: "kl", title: "KL to the reference", yLabel: "nats per response", series: [{ key: "objective/kl", name: "KL" }] },
  { id: "entropy", title: "Entropy", yLabel: "nats per response", series: [{ key: "objective/entropy", name: "entropy" }] },
  { id: "clipfrac", title: "Clip fraction", yLabel: "share clipped", yMin: 0, series: [{ key: "losses/clipfrac", name: "clip fraction" }] },
  { id: "value-loss", title: "Value loss", yLabel: "value loss", series: [{ key: "losses/value_loss", name: "value loss" }] },
  { id: "length", title: "Response length", yLabel: "tokens", yMin: 0, series: [{ key: "val/response_length", name: "mean length" }] },
];
// Other methods (SFT, later ones): a chart per recorded metric, "X" and "eval/X" together.
const NOT_CURVES = new Set(["kind", "step", "epoch"]);
const MAX_CHARTS = 9;

function genericCharts(history) {
  const keys = [];
  const seen = new Set();
  for (const point of history) {
    for (const [key, value] of Object.entries(point)) {
      if (!NOT_CURVES.has(key) && typeof value === "number" && !seen.has(key)) {
        seen.add(key);
        keys.push(key);
      }
    }
  }
  const charts = [];
  for (const key of keys) {
    if (key.startsWith("eval/") && seen.has(key.slice(5))) continue; // drawn with its training curve
    const series = [{ key, name: key.startsWith("eval/") ? "validation" : "training" }];
    if (seen.has(`eval/${key}`)) series.push({ key: `eval/${key}`, name: "validation", dashed: true });
    charts.push({ id: key, title: key, yLabel: key, series });
  }
  return charts.slice(0, MAX_CHARTS);
}

function pointsOf(history, key) {
  return history.filter((p) => typeof p[key] === "number" && typeof p.step === "number").map((p) => [p.step, p[key]]);
}

function drawCharts(data, history) {
  const grid = document.getElementById("round-charts");
  if (!grid) return;
  const specs = (data.method === "ppo" ? PPO_CHARTS : genericCharts(history)).filter((spec) =>
    spec.series.some((s) => pointsOf(history, s.key).length),
  );
  if (!specs.length) return;
  const placeholder = document.getElementById("charts-placeholder");
  if (placeholder) placeholder.remove();
  for (const spec of specs) {
    let chart = [...grid.querySelectorAll(".chart")].find((c) => c.dataset.chart === spec.id);
    if (!chart) {
      const panel = el("section", { class: "panel chart-panel" });
      panel.append(el("h3", {}, spec.title));
      chart = el("div", { class: "chart" });
      chart.dataset.chart = spec.id;
      panel.append(chart);
      grid.append(panel);
    }
    const series = spec.series
      .map((s) => ({ name: s.name, points: pointsOf(history, s.key), dashed: s.dashed }))
      .filter((s) => s.points.length);
    lineChart(chart, {
      series,
      xLabel: data.method === "ppo" ? "update" : "optimizer step",
      yLabel: spec.yLabel,
      title: spec.title,
      yMin: spec.yMin,
      // The whole run's length once known, so that a live curve grows into its chart.
      xMin: data.total ? 0 : undefined,
      xMax: data.total ? Math.max(data.total, ...history.map((p) => (typeof p.step === "number" ? p.step : 0))) : undefined,
      height: 220,
      xIntegers: true,
      legend: series.length > 1,
    });
  }
}

// Over-optimisation, when the round watches a gold reward model: each model's score against
// the KL to the reference, as its gain over the round's first updates in that model's own
// held-out score standard deviations (the two score on their own scales), as means over
// SMOOTH updates (one update's rollouts are a noisy mean). The proxy rising while the gold
// stalls or falls as KL grows is what over-optimisation looks like (Gao et al. 2022).
const SMOOTH = 3;

function trailingMean(values) {
  return values.map((_, i) => {
    const window = values.slice(Math.max(0, i - SMOOTH + 1), i + 1);
    return window.reduce((a, b) => a + b, 0) / window.length;
  });
}

function drawOveroptimisation(data, history) {
  const box = document.getElementById("overopt-chart");
  if (!box || !data.score_sd) return;
  // The proxy's own score (raw_scores: before any length or eos adjustment), else what was recorded.
  const proxyKey = history.some((p) => typeof p["objective/raw_scores"] === "number") ? "objective/raw_scores" : "objective/scores";
  const rows = history.filter(
    (p) => typeof p["objective/kl"] === "number" && typeof p[proxyKey] === "number" && typeof p["objective/gold_scores"] === "number",
  );
  if (rows.length < 2) return;
  box.closest(".panel").hidden = false;
  const kl = trailingMean(rows.map((p) => p["objective/kl"]));
  const series = [
    { key: proxyKey, name: "proxy (the reward model trained against)", sd: data.score_sd.proxy },
    { key: "objective/gold_scores", name: "gold (watching)", sd: data.score_sd.gold },
  ].map((s) => {
    const values = rows.map((p) => p[s.key]);
    const start = values.slice(0, SMOOTH).reduce((a, b) => a + b, 0) / Math.min(SMOOTH, values.length);
    const smooth = trailingMean(values.map((v) => (v - start) / s.sd));
    return { name: s.name, points: smooth.map((v, i) => [kl[i], v]), line: true };
  });
  lineChart(box, {
    series,
    xLabel: `KL to the reference (nats, mean of ${SMOOTH} updates)`,
    yLabel: "score gain (held-out sd)",
    title: "Proxy and gold score against KL",
    description: `Each reward model's mean score of the update's rollouts, minus its mean over the first ${SMOOTH} updates, in that model's held-out score standard deviations, averaged over ${SMOOTH} updates.`,
    xMin: 0,
    height: 260,
    legend: true,
  });
}

function number(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(3) : "–";
}

function sampleTable(rows) {
  const wrap = el("div", { class: "table-wrap" });
  const table = el("table", { class: "grid samples", id: "samples-table" });
  const head = el("tr");
  // The gold reward model's column only when the round watched one (as _samples.html does).
  const gold = rows.length > 0 && "gold" in rows[0];
  const numbers = gold ? ["score", "shaped_score", "gold", "kl"] : ["score", "shaped_score", "kl"];
  const labels = { score: "Score", shaped_score: "Shaped", gold: "Gold", kl: "KL" };
  for (const [label, cls] of [["Prompt", ""], ["Response", ""], ...numbers.map((key) => [labels[key], "num"])]) {
    head.append(el("th", cls ? { scope: "col", class: cls } : { scope: "col" }, label));
  }
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr");
    tr.append(el("td", { class: "text" }, String(row.prompt ?? "")));
    tr.append(el("td", { class: "text" }, String(row.response ?? "")));
    for (const key of numbers) tr.append(el("td", { class: "num" }, number(row[key])));
    body.append(tr);
  }
  table.append(body);
  wrap.append(table);
  return wrap;
}

function stepWord(data) {
  return data.method === "ppo" ? "update" : "step";
}

function renderSamples(data, tables, pinned) {
  const target = document.getElementById("samples");
  if (!target || !tables.length) return;
  const chosen = tables.find((t) => String(t.step) === pinned) || tables[tables.length - 1];
  target.replaceChildren(sampleTable(chosen.rows || []));
  const step = document.getElementById("samples-step");
  if (step) step.textContent = `at ${stepWord(data)} ${chosen.step}`;
  const pick = document.getElementById("samples-pick");
  const select = document.getElementById("samples-select");
  if (pick && select) {
    pick.hidden = tables.length < 2;
    select.replaceChildren(...tables.map((t) => {
      const option = el("option", { value: String(t.step) }, `${stepWord(data)} ${t.step}`);
      option.selected = t === chosen;
      return option;
    }));
  }
}

function renderInfo(info) {
  const table = document.getElementById("round-info");
  if (!table || !info || !Object.keys(info).length) return;
  const items = [];
  for (const [key, value] of Object.entries(info)) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) if (v === null || typeof v !== "object") items.push([`${key}.${k}`, v]);
    } else if (!Array.isArray(value)) {
      items.push([key, value]);
    }
  }
  items.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const body = el("tbody");
  for (const [key, value] of items) {
    const tr = el("tr");
    tr.append(el("th", { scope: "row" }, key));
    const td = el("td");
    td.append(el("code", {}, value === null ? "None" : scrubPaths(value)));
    tr.append(td);
    body.append(tr);
  }
  table.replaceChildren(body);
}

function updateFacts(data, job) {
  const set = (id, text) => {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
  };
  set("round-attempts", `${job.attempts} of ${job.max_attempts}`);
  set("round-checkpoint", job.checkpoint_step === null || job.checkpoint_step === undefined ? "none yet" : `${stepWord(data)} ${job.checkpoint_step}`);
  if (job.heartbeat_at) setTime(document.getElementById("round-heartbeat"), job.heartbeat_at, { timeOnly: true });
  const log = document.getElementById("round-log");
  if (log && Array.isArray(job.log_tail)) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = job.log_tail.map((line) => `${scrubPaths(line)}\n`).join("");
    if (atBottom) log.scrollTop = log.scrollHeight;
  }
}

// Thinning can keep the length of the history while changing it: key on the last point too.
function historyKey(history) {
  const last = history[history.length - 1];
  return last ? `${history.length}:${last.kind}:${last.step}` : "0";
}

function initRound(data) {
  let drawn = historyKey(data.history);
  let tables = data.samples || [];
  let pinned = null; // the sample step a person chose; null follows the newest
  drawCharts(data, data.history);
  drawOveroptimisation(data, data.history);
  const log = document.getElementById("round-log");
  if (log) log.scrollTop = log.scrollHeight;

  const select = document.getElementById("samples-select");
  if (select) {
    const choose = () => {
      const newest = tables.length ? String(tables[tables.length - 1].step) : null;
      pinned = select.value === newest ? null : select.value;
    };
    choose(); // the server may have rendered an older table (?samples=N)
    select.addEventListener("change", () => {
      choose();
      renderSamples(data, tables, pinned);
    });
  }

  // The round's own API: the sample tables and the setup, once per new metric point.
  let fetching = false;
  let again = false;
  const refresh = async () => {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      const response = await fetch(data.api, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) {
        const round = await response.json();
        tables = round.samples || [];
        renderSamples(data, tables, pinned);
        renderInfo(round.info);
      }
    } catch {
      // a network blip: the next update fetches again
    } finally {
      fetching = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  };

  document.addEventListener("job:update", (event) => {
    const job = event.detail;
    if (job.total_steps) data.total = job.total_steps;
    updateFacts(data, job);
    const history = job.metrics_history || [];
    if (historyKey(history) !== drawn) {
      drawn = historyKey(history);
      drawCharts(data, history);
      drawOveroptimisation(data, history);
      refresh();
    }
  });
}

const listData = pageData("rl-list-data");
if (listData) drawRewardVsKl(listData.rewardVsKl || []);
const roundForm = document.getElementById("round-form");
if (roundForm) initRoundForm(roundForm);
const roundData = pageData("rl-round-data");
if (roundData) initRound(roundData);
