// The agreement dashboard: draws the trend, the kappa heatmap and the threshold preview from
// the page's json_script data, and sorts the annotator table. Also exports drawPreview for
// the export page. No inline script: everything comes from #dashboard-data.

import { heatmap, lineChart } from "./plot.js";

const fmtInt = (v) => (Number.isFinite(v) ? Math.round(v).toLocaleString("en") : "–");

// The preview curves: pairs kept (y) against the threshold (x), one series per min_votes.
// ``mark`` {threshold, minVotes} rings the cell of the given settings.
export function drawPreview(container, preview, mark = {}) {
  const curves = preview.curves || [];
  const last = curves.length ? curves[curves.length - 1].min_votes : 0;
  // Curves that coincide (every pair has the same number of votes, say) become one series
  // whose name lists them: lines drawn on top of each other would hide all but the last.
  const series = [];
  curves.forEach((curve, i) => {
    const previous = series[series.length - 1];
    if (previous && previous.kept.every((k, j) => k === curve.kept[j])) {
      previous.last = curve.min_votes;
      return;
    }
    series.push({ first: curve.min_votes, last: curve.min_votes, kept: curve.kept, index: i });
  });
  const named = series.map((s) => ({
    name: s.first === s.last
      ? `≥ ${s.first} vote${s.first === 1 ? "" : "s"}`
      : `≥ ${s.first} … ${s.last} votes (same curve)`,
    points: preview.thresholds.map((t, i) => [t, s.kept[i]]),
  }));
  let highlight = null;
  if (Number.isFinite(mark.threshold) && Number.isFinite(mark.minVotes) && curves.length) {
    const m = Math.min(Math.max(1, Math.round(mark.minVotes)), last);
    const curve = curves[m - 1];
    // The largest grid threshold not above the chosen one: what that threshold keeps at most.
    let index = 0;
    preview.thresholds.forEach((t, i) => { if (t <= mark.threshold + 1e-9) index = i; });
    const exact = Math.abs(preview.thresholds[index] - mark.threshold) < 1e-9;
    highlight = {
      x: preview.thresholds[index],
      y: curve.kept[index],
      label: `${exact ? "" : "≤ "}${fmtInt(curve.kept[index])} pairs`,
    };
  }
  if (!preview.units) {
    named.length = 0; // nothing voted yet: the chart says "No data yet" rather than drawing zeros
    highlight = null;
  }
  return lineChart(container, {
    series: named,
    yIntegers: true,
    legend: true,
    xLabel: "Majority threshold (winner's vote share)",
    yLabel: "Response pairs kept",
    yMin: 0,
    yMax: Math.max(1, preview.units || 0),
    xMin: 0.5,
    xMax: 1,
    title: "Threshold preview: response pairs kept by threshold and minimum votes",
    description: `${preview.units || 0} response pairs have at least one vote.`,
    xFormat: (v) => (Number.isFinite(v) ? v.toFixed(3).replace(/0+$/, "").replace(/\.$/, "") : "–"),
    yFormat: fmtInt,
    highlight,
  });
}

function drawTrend(container, trend) {
  const isTime = trend.by !== "count";
  // The x axis starts at the first checkpoint with a figure (earlier ones had no response pair with two
  // votes), and a trend needs two such checkpoints: with fewer the chart says so instead of drawing a dot.
  const defined = trend.points.filter((p) => trend.statistics.some((name) => Number.isFinite(p[name])));
  const enough = defined.length >= 2;
  const series = enough
    ? trend.statistics.map((name) => ({
      name: trend.labels[name],
      // A period's calendar date as UTC midnight, so the axis shows the server's dates whatever the browser's zone.
      points: defined.map((p) => [isTime ? Date.parse(p.period) : p.judgements, p[name]]),
    }))
    : [];
  const values = defined.flatMap((p) => trend.statistics.map((name) => p[name])).filter(Number.isFinite);
  const low = values.length ? Math.min(0, ...values) : 0;
  lineChart(container, {
    series,
    xLabel: isTime
      ? trend.by === "day" ? "Day of submission (cumulative to its end)" : "Week of submission, from Monday (cumulative to its end)"
      : "Judgements submitted",
    yLabel: "Agreement",
    yMin: Math.floor(low * 10) / 10,
    yMax: 1,
    xType: isTime ? "time" : "number",
    xFormat: isTime ? undefined : fmtInt,
    xIntegers: !isTime,
    yFormat: (v) => (Number.isFinite(v) ? String(Number(v.toFixed(3))) : "–"),
    title: "Agreement over time (cumulative)",
    description: `${trend.judgements} judgements, ${defined.length} checkpoints with a figure.`,
    emptyText: trend.judgements ? "Not enough data for a trend" : "No data yet",
  });
}

function drawHeatmap(container, data) {
  if (!data.labels.length) {
    container.textContent = "No annotators yet.";
    return;
  }
  heatmap(container, {
    labels: data.labels,
    matrix: data.matrix,
    notes: data.notes,
    min: -1,
    max: 1,
    valueLabel: "Cohen's kappa",
    title: "Cohen's kappa between each two annotators",
    format: (v) => v.toFixed(2),
  });
}

// Sortable table: a click (or Enter / Space on the header button) sorts by that column;
// a second click reverses. Cells carry data-sort; empty values sort last either way.
export function sortableTable(table) {
  const headers = [...table.tHead.rows[0].cells];
  headers.forEach((th, column) => {
    const button = th.querySelector("button");
    if (!button) return;
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = th.dataset.type === "number";
      const body = table.tBodies[0];
      const rows = [...body.rows].map((row, index) => ({ row, index, key: row.cells[column].dataset.sort ?? "" }));
      rows.sort((a, b) => {
        const emptyA = a.key === "";
        const emptyB = b.key === "";
        if (emptyA || emptyB) return emptyA === emptyB ? a.index - b.index : emptyA ? 1 : -1;
        const order = numeric ? Number(a.key) - Number(b.key) : a.key.localeCompare(b.key, "en", { numeric: true });
        return (ascending ? order : -order) || a.index - b.index;
      });
      for (const { row } of rows) body.appendChild(row);
    });
  });
}

function init() {
  const root = document.getElementById("dashboard");
  const source = document.getElementById("dashboard-data");
  if (!root || !source) return;
  document.documentElement.classList.add("js");
  const data = JSON.parse(source.textContent);
  drawTrend(document.getElementById("trend-chart"), data.trend);
  drawHeatmap(document.getElementById("kappa-heatmap"), data.heatmap);
  drawPreview(document.getElementById("preview-chart"), data.preview, {
    threshold: data.project.threshold,
    minVotes: data.project.min_votes,
  });
  const table = document.getElementById("annotator-table");
  if (table) sortableTable(table);
  const select = document.getElementById("trend-by");
  if (select) select.addEventListener("change", () => select.form.requestSubmit());
  root.dataset.ready = "true";
}

init();
