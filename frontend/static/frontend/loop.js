// The Loop page (frontend/templates/frontend/rlloop/loop.html): the leaderboard's interval
// bars, the win-rate heatmap, and the proxy-vs-human charts. Data comes from the
// "loop-data" json_script block; texts go in through textContent; positions through the
// CSSOM (no inline style attributes under the CSP). Charts are plot.js's.

import { heatmap, lineChart } from "./plot.js";

document.documentElement.classList.add("js");

function pageData(id) {
  const el = document.getElementById(id);
  return el ? JSON.parse(el.textContent) : null;
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

// Each interval cell becomes a bar on one scale shared by the whole column, the estimate a tick.
function drawIntervals() {
  const cells = [...document.querySelectorAll("#leaderboard .interval")];
  const spans = cells.map((c) => [Number(c.dataset.low), Number(c.dataset.high), Number(c.dataset.value)]);
  const all = spans.flat().filter(Number.isFinite);
  if (!all.length) return;
  let lo = Math.min(...all);
  let hi = Math.max(...all);
  const pad = (hi - lo) * 0.05 || 10;
  lo -= pad;
  hi += pad;
  const at = (v) => `${((v - lo) / (hi - lo)) * 100}%`;
  cells.forEach((cell, i) => {
    const [low, high, value] = spans[i];
    const text = cell.textContent;
    cell.textContent = "";
    cell.classList.add("drawn");
    const track = document.createElement("span");
    track.className = "interval-track";
    track.setAttribute("aria-hidden", "true");
    const bar = document.createElement("span");
    bar.className = "interval-bar";
    bar.style.left = at(low);
    bar.style.width = `calc(${at(high)} - ${at(low)})`;
    const tick = document.createElement("span");
    tick.className = "interval-tick";
    tick.style.left = at(value);
    track.append(bar, tick);
    const label = document.createElement("span");
    label.className = "interval-text";
    label.textContent = text;
    cell.append(track, label);
  });
}

function drawMatrix(board) {
  const container = document.getElementById("win-matrix");
  if (!container || !board.names.length) return;
  const labels = board.names.map((name) => {
    const row = board.rows.find((r) => r.name === name);
    return row && row.policy ? row.policy.label : name;
  });
  heatmap(container, {
    labels,
    matrix: board.win_rate,
    min: 0,
    max: 1,
    valueLabel: "win rate",
    format: (v) => v.toFixed(2),
    notes: board.counts.map((line) => line.map((n) => `${n} vote${n === 1 ? "" : "s"}`)),
    title: "Win rate of each source (row) against each other source (column)",
  });
}

function span(values) {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  const pad = (hi - lo) * 0.15 || Math.abs(hi) * 0.2 || 1;
  return [lo - pad, hi + pad];
}

function drawProxy(proxy) {
  const points = proxy.policies.filter((p) => finite(p.kl) && finite(p.score));
  const scoreBox = document.getElementById("proxy-chart");
  if (scoreBox && points.length) {
    const [xMin, xMax] = span(points.map((p) => p.kl));
    const [yMin, yMax] = span(points.map((p) => p.score));
    lineChart(scoreBox, {
      series: [{ name: "mean reward-model score", points: points.map((p) => [p.kl, p.score]), labels: points.map((p) => p.label) }],
      xLabel: "KL from the reference (nats per response)",
      yLabel: "mean score (proxy)",
      title: "Reward-model score of each policy's samples against their KL",
      xMin: Math.max(0, xMin), xMax, yMin, yMax,
      height: 280,
      legend: false,
    });
  }
  // The reference against itself is even by definition: it anchors the curve at its own KL.
  const judged = proxy.policies
    .filter((p) => finite(p.kl) && ((p.win_rate && finite(p.win_rate.rate)) || p.is_reference))
    .map((p) => (p.is_reference ? { ...p, win_rate: { rate: 0.5, low: null, high: null } } : p))
    .sort((a, b) => a.kl - b.kl);
  if (!judged.some((p) => !p.is_reference)) judged.length = 0;
  const humanBox = document.getElementById("human-chart");
  if (humanBox && judged.length) {
    const xs = judged.map((p) => p.kl);
    const [xMin, xMax] = span(xs);
    const series = [
      { name: "win rate vs reference", points: judged.map((p) => [p.kl, p.win_rate.rate]), labels: judged.map((p) => p.label), line: judged.length > 1 },
    ];
    const withInterval = judged.filter((p) => finite(p.win_rate.low));
    if (withInterval.length) {
      series.push({ name: "interval low", points: withInterval.map((p) => [p.kl, p.win_rate.low]), dashed: true, line: withInterval.length > 1 });
      series.push({ name: "interval high", points: withInterval.map((p) => [p.kl, p.win_rate.high]), dashed: true, line: withInterval.length > 1 });
    }
    lineChart(humanBox, {
      series,
      xLabel: "KL from the reference (nats per response)",
      yLabel: "human win rate",
      title: "How often annotators preferred each policy to the reference",
      xMin: Math.max(0, xMin), xMax, yMin: 0, yMax: 1,
      height: 280,
      legend: true,
    });
  }
}

// A running cycle moves on when a job ends, in the worker: follow its API and reload when its step or state changes.
function followCycles() {
  const rows = [...document.querySelectorAll("#cycle-table tr[data-state='running']")];
  if (!rows.length) return;
  const poll = async () => {
    for (const row of rows) {
      try {
        const answer = await fetch(row.dataset.api, { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!answer.ok) continue;
        const cycle = await answer.json();
        if (cycle.state !== row.dataset.state || cycle.step !== row.dataset.step) {
          window.location.reload();
          return;
        }
      } catch {
        // The server is away for a moment: try again at the next tick.
      }
    }
    window.setTimeout(poll, 3000);
  };
  window.setTimeout(poll, 3000);
}

// The cycle form's PPO estimate, live as its numbers change: updates × rollouts × new tokens at
// the pace of the project's last PPO round (on whatever machine ran it; the sampling and the
// reward model come on top).
function estimateCycle(pace) {
  const form = document.getElementById("cycle-form");
  const out = document.getElementById("cycle-estimate");
  if (!form || !out || !pace) return;
  const value = (name, fallback) => {
    const input = form.querySelector(`[name="cycle-${name}"]`);
    const n = input ? Number(input.value || input.placeholder) : NaN;
    return Number.isFinite(n) && n > 0 ? n : fallback;
  };
  const update = () => {
    const updates = value("updates", 8);
    const rollouts = value("rollouts", pace.rollouts);
    const tokens = value("max_new_tokens", pace.tokens);
    const seconds = updates * rollouts * tokens * pace.seconds_per_rollout_token;
    const time = seconds < 90 ? `${Math.max(1, Math.round(seconds))} s` : seconds < 5400 ? `${Math.round(seconds / 60)} min` : `${(seconds / 3600).toFixed(1)} h`;
    out.textContent =
      `PPO step: about ${time} at the pace of round ${pace.round} ` +
      `(${pace.seconds_per_update.toFixed(1)} s per update of ${pace.rollouts} rollouts of up to ${pace.tokens} tokens on the machine that ran it).`;
  };
  form.addEventListener("input", update);
  update();
}

followCycles();
const data = pageData("loop-data");
if (data) estimateCycle(data.ppo_pace);
if (data) {
  drawIntervals();
  drawMatrix(data.leaderboard);
  drawProxy(data.proxy);
}
